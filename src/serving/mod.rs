//! Serving: the deployments of models and inference on them.
//!
//! One deployment per model. A deploy loads and warms the new version fully on a blocking
//! thread, then swaps it into the live map in one atomic step (`ArcSwap`); requests that
//! hold the old deployment finish on it, and its threads end when the last one is done.
//! So a switch, an undeploy or a rollback never fails a request in flight.
//!
//! Deployments are recorded in the store and restored at start; readiness waits for the
//! restore. A deployment that fails to load keeps the previous one serving and says why
//! (the API's `error`, `cairn_deployment_failures_total`, the log).

pub mod batcher;
mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

pub use self::settings::DeploySettings;

use self::batcher::{Answer, BatchSettings, Counters, Pool, SubmitError, Tensors};
use self::settings::device_name;
use crate::engine::device::{Precision, select_with};
use crate::engine::{EngineError, Model, TensorSpec};
use crate::registry::{Registry, RegistryError};
use crate::store::schema::{Deployed, DeploymentRecord, VersionRecord};
use crate::store::{Store, StoreError, unix_now};
use crate::telemetry::metrics::{DeploymentMetrics, ServingMetrics};

/// Why a deployment or an inference failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MemoryExceeded(String),
    #[error("the deployment failed to load, the previous one stays: {0}")]
    LoadFailed(String),
    #[error("the model's queue is full ({0} requests waiting); retry shortly")]
    Busy(usize),
    #[error("{0}")]
    Input(String),
    #[error("inference failed: {0}")]
    Engine(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A loaded, serving version of a model.
pub struct Deployment {
    pub model_name: String,
    pub settings: DeploySettings,
    pub device_kind: &'static str,
    /// What the model computes in (f32 where `auto` with f16 landed on the CPU).
    pub precision_running: Precision,
    pub weight_bytes: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub deployed_at: u64,
    pub counters: Arc<Counters>,
    /// This deployment's metric handles (looked up once, here).
    pub metrics: DeploymentMetrics,
    pool: Pool,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("model", &self.model_name)
            .field("version", &self.settings.version)
            .finish_non_exhaustive()
    }
}

/// Counts of a deployment, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    pub success: u64,
    pub failure: u64,
    pub executions: u64,
    pub queue_us_total: u64,
    pub compute_us_total: u64,
    pub waiting: u64,
    pub last_inference_ms: u64,
}

/// A deployment as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    pub version: u32,
    /// `serving`, `loading` or `failed`.
    pub state: &'static str,
    /// Why the last deploy (or restore) of this model failed, if it did.
    pub error: Option<String>,
    pub device: &'static str,
    pub device_kind: Option<&'static str>,
    /// What was asked for: `f32` or `f16`.
    pub precision: &'static str,
    /// What the model computes in while it serves (f32 on the CPU whatever was asked).
    pub precision_running: Option<&'static str>,
    pub instances: u32,
    pub max_batch_size: u32,
    pub max_batch_delay_us: u32,
    pub queue_capacity: u32,
    pub weight_bytes: u64,
    pub deployed_at: u64,
    pub previous_version: Option<u32>,
    pub stats: Option<StatsView>,
}

impl Deployment {
    /// Runs one request (queued behind others, possibly batched with them).
    ///
    /// # Errors
    /// `Busy` when the queue is full; the engine's refusal of the inputs.
    pub async fn infer(&self, inputs: Tensors) -> Result<Answer, ServeError> {
        let answer = self.pool.submit(inputs).map_err(|e| match e {
            SubmitError::Busy(n) => ServeError::Busy(n),
            SubmitError::Closed => ServeError::NotReady("the model is unloading".into()),
        })?;
        answer
            .await
            .map_err(|_| ServeError::NotReady("the model is unloading".into()))
    }

    #[must_use]
    pub fn stats(&self) -> StatsView {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        StatsView {
            success: get(&c.success),
            failure: get(&c.failure),
            executions: get(&c.executions),
            queue_us_total: get(&c.queue_ns) / 1000,
            compute_us_total: get(&c.compute_ns) / 1000,
            waiting: get(&self.pool.waiting),
            last_inference_ms: get(&c.last_inference_ms),
        }
    }
}

/// The serving service.
pub struct Serving {
    store: Arc<Store>,
    registry: Arc<Registry>,
    max_model_memory: u64,
    live: ArcSwap<HashMap<String, Arc<Deployment>>>,
    /// Last deploy failure per model (cleared by a successful deploy).
    failures: Mutex<HashMap<String, String>>,
    /// Deploys, undeploys and rollbacks run one at a time.
    switching: tokio::sync::Mutex<()>,
    restored: AtomicBool,
    metrics: ServingMetrics,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("live", &self.live.load().len())
            .finish_non_exhaustive()
    }
}

impl Serving {
    #[must_use]
    pub fn new(
        store: Arc<Store>,
        registry: Arc<Registry>,
        max_model_memory: u64,
        metrics: ServingMetrics,
    ) -> Self {
        Self {
            store,
            registry,
            max_model_memory,
            live: ArcSwap::from_pointee(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            switching: tokio::sync::Mutex::new(()),
            restored: AtomicBool::new(false),
            metrics,
        }
    }

    #[must_use]
    pub fn metrics(&self) -> &ServingMetrics {
        &self.metrics
    }

    /// Whether every stored deployment has been loaded (or has failed) since start.
    #[must_use]
    pub fn restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }

    /// The live deployment of `model`, if any.
    #[must_use]
    pub fn get(&self, model: &str) -> Option<Arc<Deployment>> {
        self.live.load().get(model).cloned()
    }

    /// Every live deployment.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Deployment>> {
        self.live.load().values().cloned().collect()
    }

    /// Loads every stored deployment (at start). Failures are recorded, not fatal.
    pub async fn restore(&self) {
        let stored = {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || store.list_deployments())
                .await
                .unwrap_or_else(|e| Err(StoreError::Io(e.to_string())))
        };
        match stored {
            Ok(stored) => {
                for (name, record) in stored {
                    let Deployed {
                        current,
                        deployed_at,
                        ..
                    } = record.latest();
                    let settings = DeploySettings::from_record(&current);
                    let _guard = self.switching.lock().await;
                    match self.load(&name, settings, deployed_at).await {
                        Ok(deployment) => {
                            self.publish(&name, Some(deployment));
                            tracing::info!(model = %name, version = settings.version, "deployment restored");
                        }
                        Err(e) => self.record_failure(&name, settings.version, &e),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the stored deployments"),
        }
        self.restored.store(true, Ordering::Release);
    }

    fn record_failure(&self, model: &str, version: u32, error: &ServeError) {
        tracing::error!(model, version, error = %error, "deployment failed");
        self.metrics.failure(model);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned(), error.to_string());
    }

    fn publish(&self, model: &str, deployment: Option<Arc<Deployment>>) {
        self.live.rcu(|live| {
            let mut next = HashMap::clone(live);
            match &deployment {
                Some(d) => next.insert(model.to_owned(), Arc::clone(d)),
                None => next.remove(model),
            };
            next
        });
        self.metrics.set_live(
            model,
            deployment
                .as_ref()
                .map(|d| (d.settings.version, d.weight_bytes)),
        );
        if deployment.is_some() {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(model);
        }
    }

    /// Loads and warms a version on a blocking thread and starts its workers.
    async fn load(
        &self,
        model: &str,
        settings: DeploySettings,
        deployed_at: u64,
    ) -> Result<Arc<Deployment>, ServeError> {
        settings.check()?;
        let (_, record) = self.registry.version(model, settings.version).await?;
        let VersionRecord::V1 {
            sha256,
            invalid,
            weight_bytes,
            ..
        } = &record;
        if let Some(reason) = invalid {
            return Err(ServeError::Conflict(format!(
                "version {} of {model} is invalid and cannot be deployed: {reason}",
                settings.version
            )));
        }
        // The new version's weights count while the old ones are still resident.
        let others: u64 = self
            .all()
            .iter()
            .filter(|d| d.model_name != model)
            .map(|d| d.weight_bytes)
            .sum();
        if others.saturating_add(*weight_bytes) > self.max_model_memory {
            return Err(ServeError::MemoryExceeded(format!(
                "deploying version {} of {model} ({weight_bytes} bytes of weights) would pass \
                 engine.max_model_memory ({} bytes; {others} in use by other models)",
                settings.version, self.max_model_memory
            )));
        }
        let metrics = self.metrics.for_deployment(model, settings.version);
        let (registry, sha256, name) = (Arc::clone(&self.registry), *sha256, model.to_owned());
        let loaded = tokio::task::spawn_blocking(move || {
            let bytes = registry
                .read_blob(&sha256)
                .map_err(|e| ServeError::LoadFailed(e.to_string()))?;
            let selected = select_with(settings.device, settings.precision)
                .map_err(|e| ServeError::LoadFailed(e.to_string()))?;
            let model = Model::load_with(&bytes, &selected.device, registry.limits())
                .and_then(|m| m.warmup().map(|()| m))
                .map_err(|e: EngineError| ServeError::LoadFailed(e.to_string()))?;
            // On a GPU, the largest batch the deployment forms gets its kernels compiled
            // (and tuned) now, not on the first request that size.
            let largest = settings.max_batch_size as usize;
            if selected.kind == "gpu"
                && largest > 1
                && let Err(e) = model.warmup_at(largest)
            {
                tracing::warn!(model = %name, batch = largest, error = %e, "warm-up at the largest batch failed; that size compiles on first use");
            }
            let model = Arc::new(model);
            let counters = Arc::new(Counters::default());
            let pool = Pool::start(
                &name,
                Arc::clone(&model),
                BatchSettings {
                    instances: settings.instances as usize,
                    max_batch_size: settings.max_batch_size as usize,
                    max_batch_delay: Duration::from_micros(u64::from(settings.max_batch_delay_us)),
                    queue_capacity: settings.queue_capacity as usize,
                },
                Arc::clone(&counters),
            )
            .map_err(|e| ServeError::LoadFailed(format!("cannot start workers: {e}")))?;
            Ok::<_, ServeError>(Deployment {
                model_name: name,
                settings,
                device_kind: selected.kind,
                precision_running: selected.precision,
                weight_bytes: model.weight_bytes(),
                inputs: model.inputs().into_iter().cloned().collect(),
                outputs: model.outputs().into_iter().cloned().collect(),
                deployed_at,
                counters,
                metrics,
                pool,
            })
        })
        .await
        .map_err(|e| ServeError::LoadFailed(format!("the loader failed: {e}")))??;
        Ok(Arc::new(loaded))
    }

    /// Deploys a version: load and warm it, then switch traffic to it at once.
    ///
    /// # Errors
    /// Unknown model or version, an invalid version, memory cap, a failed load (the previous
    /// deployment keeps serving).
    pub async fn deploy(&self, model: &str, settings: DeploySettings) -> Result<(), ServeError> {
        let _guard = self.switching.lock().await;
        let previous = self.stored(model).await?;
        let deployed_at = unix_now();
        let deployment = match self.load(model, settings, deployed_at).await {
            Ok(d) => d,
            Err(e) => {
                if matches!(e, ServeError::LoadFailed(_)) {
                    self.record_failure(model, settings.version, &e);
                }
                return Err(e);
            }
        };
        let previous = previous.map(|record| record.latest().current);
        let previous = previous.filter(|p| p.version != settings.version);
        let record = DeploymentRecord::from(Deployed {
            current: settings.record(),
            previous,
            deployed_at,
        });
        self.put(model, Some(record)).await?;
        self.publish(model, Some(deployment));
        tracing::info!(model, version = settings.version, "deployed");
        Ok(())
    }

    /// Goes back to the deployment before the current one.
    ///
    /// # Errors
    /// Nothing to roll back to; as `deploy`.
    pub async fn rollback(&self, model: &str) -> Result<(), ServeError> {
        let previous = match self.stored(model).await?.map(DeploymentRecord::latest) {
            Some(Deployed {
                previous: Some(previous),
                ..
            }) => previous,
            _ => {
                return Err(ServeError::Conflict(format!(
                    "model {model} has no previous deployment to roll back to"
                )));
            }
        };
        self.deploy(model, DeploySettings::from_record(&previous))
            .await
    }

    /// Stops serving a model; requests in flight finish.
    ///
    /// # Errors
    /// Not deployed.
    pub async fn undeploy(&self, model: &str) -> Result<(), ServeError> {
        let _guard = self.switching.lock().await;
        if self.stored(model).await?.is_none() {
            return Err(ServeError::Conflict(format!(
                "model {model} is not deployed"
            )));
        }
        self.put(model, None).await?;
        self.publish(model, None);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(model);
        tracing::info!(model, "undeployed");
        Ok(())
    }

    async fn stored(&self, model: &str) -> Result<Option<DeploymentRecord>, ServeError> {
        let (store, name) = (Arc::clone(&self.store), model.to_owned());
        tokio::task::spawn_blocking(move || store.deployment(&name))
            .await
            .map_err(|e| ServeError::Store(StoreError::Io(e.to_string())))?
            .map_err(ServeError::from)
    }

    async fn put(&self, model: &str, record: Option<DeploymentRecord>) -> Result<(), ServeError> {
        let (store, name) = (Arc::clone(&self.store), model.to_owned());
        tokio::task::spawn_blocking(move || store.put_deployment(&name, record.as_ref()))
            .await
            .map_err(|e| ServeError::Store(StoreError::Io(e.to_string())))?
            .map_err(ServeError::from)
    }

    /// The deployment of `model` as the API shows it: the stored one, with live state.
    ///
    /// # Errors
    /// Store failure.
    pub async fn view(&self, model: &str) -> Result<Option<DeploymentView>, ServeError> {
        let stored = self.stored(model).await?;
        Ok(self.view_of(model, stored))
    }

    /// Views of every model's deployment (one store read).
    ///
    /// # Errors
    /// Store failure.
    pub async fn views(&self) -> Result<HashMap<String, DeploymentView>, ServeError> {
        let store = Arc::clone(&self.store);
        let all = tokio::task::spawn_blocking(move || store.list_deployments())
            .await
            .map_err(|e| ServeError::Store(StoreError::Io(e.to_string())))??;
        Ok(all
            .into_iter()
            .filter_map(|(name, record)| self.view_of(&name, Some(record)).map(|view| (name, view)))
            .collect())
    }

    fn view_of(&self, model: &str, stored: Option<DeploymentRecord>) -> Option<DeploymentView> {
        let Deployed {
            current,
            previous,
            deployed_at,
        } = stored?.latest();
        let settings = DeploySettings::from_record(&current);
        let live = self.get(model);
        let error = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .cloned();
        let live_here = live.filter(|d| d.settings.version == settings.version);
        let state = match (&live_here, &error) {
            (Some(_), _) => "serving",
            (None, Some(_)) => "failed",
            (None, None) if !self.restored() => "loading",
            (None, None) => "failed",
        };
        Some(DeploymentView {
            version: settings.version,
            state,
            error,
            device: device_name(settings.device),
            device_kind: live_here.as_ref().map(|d| d.device_kind),
            precision: settings.precision.as_str(),
            precision_running: live_here.as_ref().map(|d| d.precision_running.as_str()),
            instances: settings.instances,
            max_batch_size: settings.max_batch_size,
            max_batch_delay_us: settings.max_batch_delay_us,
            queue_capacity: settings.queue_capacity,
            weight_bytes: live_here.as_ref().map_or(0, |d| d.weight_bytes),
            deployed_at,
            previous_version: previous.map(|p| p.version),
            stats: live_here.map(|d| d.stats()),
        })
    }
}
