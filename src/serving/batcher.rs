//! The worker pool of one deployment: `instances` dedicated threads share a bounded queue;
//! each takes a request, gathers more for up to `max_batch_delay_us` (or whatever is
//! already waiting when the delay is 0) while their shapes agree and the rows fit in
//! `max_batch_size`, runs them as one batch and splits the outputs back.
//!
//! Invariants: a request whose client went away (its reply receiver dropped) is skipped,
//! never run; the queue is bounded, so overload is refused at `submit`, not buffered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::time::{Duration, Instant};

use burn::tensor::TensorData;

use crate::engine::{EngineError, Model};

pub type Tensors = Vec<(String, TensorData)>;

/// What one request gets back, with its time in the queue and in the engine.
#[derive(Debug)]
pub struct Answer {
    pub outputs: Result<Tensors, EngineError>,
    pub queue: Duration,
    pub compute: Duration,
    pub batch_rows: usize,
}

struct Job {
    inputs: Tensors,
    rows: usize,
    queued_at: Instant,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Counters the stats endpoint and the console read.
#[derive(Debug, Default)]
pub struct Counters {
    pub success: AtomicU64,
    pub success_ns: AtomicU64,
    pub failure: AtomicU64,
    pub failure_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub compute_ns: AtomicU64,
    /// Model executions that succeeded (a batch is one).
    pub executions: AtomicU64,
    /// Rows inferred by requests that succeeded (Triton's `inference_count`: each row of
    /// a batched request counts).
    pub inferences: AtomicU64,
    /// Successful executions by their rows: (executions, compute nanoseconds), Triton's
    /// `batch_stats`.
    pub by_batch: std::sync::Mutex<std::collections::BTreeMap<usize, (u64, u64)>>,
    pub last_inference_ms: AtomicU64,
    pub skipped_disconnected: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub instances: usize,
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub queue_capacity: usize,
}

/// Why a request was not queued.
#[derive(Debug)]
pub enum SubmitError {
    Busy(usize),
    Closed,
}

/// A deployment's queue and threads. The threads end once this is dropped and the queue
/// has drained, so requests already queued on an old version still finish after a switch.
pub struct Pool {
    queue: Sender<Job>,
    capacity: usize,
    pub waiting: Arc<AtomicU64>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts the workers.
    ///
    /// # Errors
    /// The OS refuses a thread.
    pub fn start(
        name: &str,
        model: Arc<Model>,
        settings: BatchSettings,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        // A multi-consumer queue: idle workers spin briefly, then park, waiting for work.
        let (queue, jobs) = bounded::<Job>(settings.queue_capacity.max(1));
        let batchable = model
            .inputs()
            .iter()
            .all(|s| s.shape.first() == Some(&None))
            && model
                .outputs()
                .iter()
                .all(|s| s.shape.first() == Some(&None));
        let waiting = Arc::new(AtomicU64::new(0));
        for i in 0..settings.instances.max(1) {
            let worker = Worker {
                model: Arc::clone(&model),
                jobs: jobs.clone(),
                settings,
                batchable,
                counters: Arc::clone(&counters),
                waiting: Arc::clone(&waiting),
            };
            std::thread::Builder::new()
                .name(format!(
                    "cairn-infer-{}-{i}",
                    name.chars().take(4).collect::<String>()
                ))
                .spawn(move || worker.run())?;
        }
        Ok(Self {
            queue,
            capacity: settings.queue_capacity.max(1),
            waiting,
        })
    }

    /// Queues a request; the answer arrives on the returned receiver.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `Closed` when the workers are gone.
    pub fn submit(
        &self,
        inputs: Tensors,
    ) -> Result<tokio::sync::oneshot::Receiver<Answer>, SubmitError> {
        let rows = inputs
            .first()
            .and_then(|(_, t)| t.shape().first().copied())
            .unwrap_or(1);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.queue
            .try_send(Job {
                inputs,
                rows,
                queued_at: Instant::now(),
                reply,
            })
            .map_err(|e| {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => SubmitError::Busy(self.capacity),
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                }
            })?;
        Ok(answer)
    }
}

struct Worker {
    model: Arc<Model>,
    jobs: Receiver<Job>,
    settings: BatchSettings,
    batchable: bool,
    counters: Arc<Counters>,
    waiting: Arc<AtomicU64>,
}

/// Shapes past the first dimension and element types: requests batch only when these agree.
fn signature(inputs: &Tensors) -> Vec<(String, Vec<usize>, burn::tensor::DType)> {
    inputs
        .iter()
        .map(|(name, t)| (name.clone(), t.shape()[1..].to_vec(), t.dtype()))
        .collect()
}

impl Worker {
    fn run(self) {
        loop {
            // Ends once the pool is dropped and the queue has drained.
            let Ok(first) = self.jobs.recv() else { return };
            let batch = self.gather(&self.jobs, first);
            self.execute(batch);
        }
    }

    /// More requests for the batch of `first`, within the delay, while they fit.
    fn gather(&self, jobs: &Receiver<Job>, first: Job) -> Vec<Job> {
        let max_rows = self.settings.max_batch_size;
        let mut batch = vec![first];
        if !self.batchable || max_rows <= 1 || batch[0].rows >= max_rows {
            return batch;
        }
        let shape = signature(&batch[0].inputs);
        let mut rows = batch[0].rows;
        let deadline = Instant::now() + self.settings.max_batch_delay;
        while rows < max_rows {
            let next = if self.settings.max_batch_delay.is_zero() {
                jobs.try_recv().ok()
            } else {
                // Timed out or disconnected: the batch is what we have.
                jobs.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok()
            };
            let Some(job) = next else { break };
            if rows + job.rows > max_rows || signature(&job.inputs) != shape {
                // It runs on its own, right after this batch (never dropped).
                self.execute(vec![job]);
                continue;
            }
            rows += job.rows;
            batch.push(job);
        }
        batch
    }

    /// The inferences a request counts for in the statistics: its rows where the model
    /// batches along its first dimension, else one (Triton counts so).
    fn counted_rows(&self, job: &Job) -> usize {
        if self.batchable { job.rows } else { 1 }
    }

    fn execute(&self, batch: Vec<Job>) {
        let started = Instant::now();
        self.waiting
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        // Clients that went away get nothing run for them.
        let (live, gone): (Vec<Job>, Vec<Job>) =
            batch.into_iter().partition(|job| !job.reply.is_closed());
        self.counters
            .skipped_disconnected
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        if live.is_empty() {
            return;
        }
        let rows: usize = live.iter().map(|j| j.rows).sum();
        // Each model run that succeeded: the rows it inferred and its time.
        let mut runs: Vec<(usize, Duration)> = Vec::new();
        let mut run_alone = |job: &Job| {
            let at = Instant::now();
            let result = self.model.run(job.inputs.clone());
            if result.is_ok() {
                runs.push((self.counted_rows(job), at.elapsed()));
            }
            result
        };
        let results: Vec<Result<Tensors, EngineError>> = if live.len() == 1 {
            vec![run_alone(&live[0])]
        } else {
            match merge(&live).and_then(|inputs| self.model.run(inputs)) {
                Ok(outputs) => {
                    let counted = live.iter().map(|j| self.counted_rows(j)).sum();
                    runs.push((counted, started.elapsed()));
                    split(outputs, &live)
                }
                // A batch failed: run each alone, so one bad request fails alone.
                Err(_) => live.iter().map(run_alone).collect(),
            }
        };
        let compute = started.elapsed();
        self.counters
            .executions
            .fetch_add(runs.len() as u64, Ordering::Relaxed);
        if let Ok(mut by_batch) = self.counters.by_batch.lock() {
            for (rows, time) in runs {
                let entry = by_batch.entry(rows).or_default();
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(nanos(time));
            }
        }
        self.counters
            .last_inference_ms
            .store(unix_ms(), Ordering::Relaxed);
        for (job, outputs) in live.into_iter().zip(results) {
            let queue = started.saturating_duration_since(job.queued_at);
            let total = nanos(queue + compute);
            if outputs.is_ok() {
                self.counters.success.fetch_add(1, Ordering::Relaxed);
                self.counters.success_ns.fetch_add(total, Ordering::Relaxed);
                self.counters
                    .inferences
                    .fetch_add(self.counted_rows(&job) as u64, Ordering::Relaxed);
            } else {
                self.counters.failure.fetch_add(1, Ordering::Relaxed);
                self.counters.failure_ns.fetch_add(total, Ordering::Relaxed);
            }
            self.counters
                .queue_ns
                .fetch_add(nanos(queue), Ordering::Relaxed);
            self.counters
                .compute_ns
                .fetch_add(nanos(compute), Ordering::Relaxed);
            let _ = job.reply.send(Answer {
                outputs,
                queue,
                compute,
                batch_rows: rows,
            });
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Concatenates the requests' inputs along the first dimension.
fn merge(jobs: &[Job]) -> Result<Tensors, EngineError> {
    let first = &jobs[0].inputs;
    first
        .iter()
        .map(|(name, head)| {
            let mut bytes = Vec::new();
            let mut rows = 0;
            for job in jobs {
                let (_, t) = job
                    .inputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| EngineError::Input(format!("input {name} is missing")))?;
                bytes.extend_from_slice(t.as_bytes());
                rows += t.shape()[0];
            }
            let mut shape = head.shape().to_vec();
            shape[0] = rows;
            let data = TensorData::try_from_bytes_vec(bytes, shape, head.dtype())
                .map_err(|e| EngineError::Input(format!("input {name}: {e:?}")))?;
            Ok((name.clone(), data))
        })
        .collect()
}

/// Splits batched outputs back into one result per request, by rows.
fn split(outputs: Tensors, jobs: &[Job]) -> Vec<Result<Tensors, EngineError>> {
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    let mut per_job: Vec<Tensors> = (0..jobs.len()).map(|_| Vec::new()).collect();
    for (name, data) in outputs {
        let shape = data.shape().to_vec();
        if shape.first() != Some(&total) {
            let error = format!("output {name} has {shape:?}, not {total} rows: cannot split");
            return jobs
                .iter()
                .map(|_| Err(EngineError::Internal(error.clone())))
                .collect();
        }
        let row_bytes = data.as_bytes().len() / total.max(1);
        let mut offset = 0;
        for (job, out) in jobs.iter().zip(per_job.iter_mut()) {
            let len = job.rows * row_bytes;
            let mut part_shape = shape.clone();
            part_shape[0] = job.rows;
            let part = TensorData::try_from_bytes_vec(
                data.as_bytes()[offset..offset + len].to_vec(),
                part_shape,
                data.dtype(),
            );
            offset += len;
            match part {
                Ok(part) => out.push((name.clone(), part)),
                Err(e) => {
                    return jobs
                        .iter()
                        .map(|_| Err(EngineError::Internal(format!("{e:?}"))))
                        .collect();
                }
            }
        }
    }
    per_job.into_iter().map(Ok).collect()
}
