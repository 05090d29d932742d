//! The async front of a model: inference on dedicated threads, never on tokio workers,
//! behind a bounded queue so callers get back-pressure (`Busy`) instead of unbounded
//! latency.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use burn::tensor::TensorData;

use super::{EngineError, Model};

type Inputs = Vec<(String, TensorData)>;
type Outputs = Result<Vec<(String, TensorData)>, EngineError>;

struct Job {
    inputs: Inputs,
    reply: tokio::sync::oneshot::Sender<Outputs>,
}

/// Why a submission was not run.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the model's queue is full ({0} requests waiting); retry later")]
    Busy(usize),
    #[error("the model is unloading")]
    Closed,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Worker threads sharing one loaded model (its weights are shared, not copied).
pub struct Runner {
    queue: SyncSender<Job>,
    capacity: usize,
    model: Arc<Model>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts `threads` workers with a queue of `capacity` waiting requests. The threads
    /// end when the runner is dropped.
    ///
    /// # Errors
    /// The OS refuses a thread.
    pub fn start(model: Arc<Model>, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel::<Job>(capacity);
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let (model, jobs) = (Arc::clone(&model), Arc::clone(&jobs));
            std::thread::Builder::new()
                .name(format!("cairn-infer-{i}"))
                .spawn(move || worker(&model, &jobs))?;
        }
        Ok(Self {
            queue,
            capacity,
            model,
        })
    }

    /// Queues one inference; resolves when a worker has run it.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `Closed` when the runner is gone, or the engine's error.
    pub async fn submit(&self, inputs: Inputs) -> Result<Vec<(String, TensorData)>, SubmitError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .try_send(Job { inputs, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => SubmitError::Busy(self.capacity),
                TrySendError::Disconnected(_) => SubmitError::Closed,
            })?;
        Ok(answer.await.map_err(|_| SubmitError::Closed)??)
    }

    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }
}

fn worker(model: &Model, jobs: &std::sync::Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let _ = job.reply.send(model.run(job.inputs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Arc<Model> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models/mlp.onnx"
        );
        Arc::new(Model::load(&std::fs::read(path).unwrap(), &crate::engine::cpu()).unwrap())
    }

    #[tokio::test]
    async fn runs_off_the_runtime_and_refuses_past_capacity() {
        let runner = Runner::start(mlp(), 2, 4).unwrap();
        let x = TensorData::new(vec![0.5f32; 64 * 3], [3, 64]);
        let out = runner
            .submit(vec![("input".into(), x.clone())])
            .await
            .unwrap();
        assert_eq!(out[0].1.shape().to_vec(), vec![3, 10]);
        // Flood the queue without awaiting: some submissions must be refused as Busy.
        let futures: Vec<_> = (0..64)
            .map(|_| runner.submit(vec![("input".into(), x.clone())]))
            .collect();
        let results = futures_util::future::join_all(futures).await;
        assert!(results.iter().any(|r| r.is_ok()));
        let err = runner.submit(vec![]).await.unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
