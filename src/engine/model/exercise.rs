//! Runs on synthetic or given inputs beside serving: the warm-up after a load (at batch 1
//! and, on a GPU, at the largest batch a deployment forms) and the per-step profile.

use std::time::{Duration, Instant};

use burn::tensor::{DType, TensorData};

use super::Model;
use crate::engine::EngineError;
use crate::engine::elementwise;
use crate::engine::kernels;
use crate::engine::limits::{Cap, I64, guarded};
use crate::engine::value::transfers;

/// One step's share of a [`Model::profile`].
#[derive(Debug, Clone)]
pub struct StepProfile {
    pub node: String,
    pub op: String,
    /// Time to issue the step's work.
    pub issue: Duration,
    /// Time until the device finished it (issue included).
    pub total: Duration,
    /// Whether the step split its work over the intra-op pool.
    pub split: bool,
    /// Whether the step ran on cairn's own CPU kernels (else burn's operators).
    pub host: bool,
    /// Float tensors it uploaded and read back, over all runs (on a GPU, each read-back
    /// waits for the device: the steps that do it are where a run syncs with the host).
    pub uploads: u64,
    pub read_backs: u64,
    /// Device memory (bytes) the pool reserved afresh during the step, over all runs: a
    /// real buffer allocation, where a steady run reuses the pool's pages. Zero on the
    /// CPU, whose allocator reports no pool.
    pub reserved: u64,
    /// The largest device memory in live tensors right after the step, over the runs.
    pub live_bytes: u64,
}

impl Model {
    /// Runs the model once on synthetic inputs (dynamic dimensions set to 1), so the first
    /// real request does not pay for first-use allocations.
    ///
    /// # Errors
    /// The model cannot run on inputs of its declared shapes.
    pub fn warmup(&self) -> Result<(), EngineError> {
        self.warmup_at(1)
    }

    /// Runs the model once with every dynamic dimension set to `batch`: on a GPU, the
    /// kernels for that size are compiled (and, with `gpu-tuned`, tuned) here rather than
    /// on the first request of that size.
    ///
    /// # Errors
    /// The model cannot run on inputs of its declared shapes.
    pub fn warmup_at(&self, batch: usize) -> Result<(), EngineError> {
        let cap = Cap::of(&self.limits);
        guarded(|| {
            let inputs = self
                .inputs
                .iter()
                .map(|(_, spec)| {
                    let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(batch)).collect();
                    let n = cap
                        .check(&shape, I64)
                        .map_err(|e| EngineError::Input(format!("input {}: {e}", spec.name)))?;
                    let zeros = TensorData::new(vec![0f32; n], shape);
                    let dtype = spec.element_type().unwrap_or(DType::F32);
                    Ok((spec.name.clone(), elementwise::to_declared(zeros, dtype)?))
                })
                .collect::<Result<_, EngineError>>()?;
            self.run(inputs).map(|_| ())
        })
    }

    /// Runs the model `iterations` times with the device synchronised after every step, and
    /// returns each step's share: the time to issue its work (host) and the time until the
    /// device finished it (host + device), summed over the runs.
    ///
    /// # Errors
    /// As [`Model::run`], or a device that fails to synchronise.
    pub fn profile(
        &self,
        inputs: &[(String, TensorData)],
        iterations: usize,
    ) -> Result<Vec<StepProfile>, EngineError> {
        let cap = Cap::of(&self.limits);
        let sync = || {
            self.device
                .sync()
                .map_err(|e| EngineError::Internal(format!("device sync: {e:?}")))
        };
        let mut profile: Vec<StepProfile> = self
            .steps
            .iter()
            .map(|s| StepProfile {
                node: self.names[s.node].clone(),
                op: s.onnx.clone(),
                issue: Duration::ZERO,
                total: Duration::ZERO,
                split: false,
                host: matches!(s.kernel, crate::engine::fast::Kernel::Host(_)),
                uploads: 0,
                read_backs: 0,
                reserved: 0,
                live_bytes: 0,
            })
            .collect();
        // (reserved, in use) bytes of the device's pool; none on the CPU.
        let pool = || {
            self.device
                .memory_pool_usage()
                .map_or((0, 0), |u| (u.bytes_reserved, u.bytes_in_use))
        };
        // Where a run would go: on the pool, its other workers awake, when the model splits.
        crate::engine::threads::spread(&self.parallel, || {
            for _ in 0..iterations.max(1) {
                // As a run does: reusing the buffers earlier runs kept.
                kernels::reuse::within_run(&self.kept, || -> Result<(), EngineError> {
                    let mut slots = guarded(|| self.prepare(inputs.to_vec(), cap))?;
                    sync()?;
                    for (step, entry) in self.steps.iter().zip(&mut profile) {
                        let regions = crate::engine::threads::parallel_regions();
                        let moved = transfers::on_this_thread();
                        let (reserved, _) = pool();
                        let started = Instant::now();
                        self.execute_step(step, &mut slots, cap)?;
                        entry.issue += started.elapsed();
                        sync()?;
                        entry.total += started.elapsed();
                        entry.split |= crate::engine::threads::parallel_regions() != regions;
                        let now = transfers::on_this_thread();
                        entry.uploads += now[0].saturating_sub(moved[0]);
                        entry.read_backs += now[1].saturating_sub(moved[1]);
                        let (reserved_now, live) = pool();
                        entry.reserved += reserved_now.saturating_sub(reserved);
                        entry.live_bytes = entry.live_bytes.max(live);
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(profile)
    }
}
