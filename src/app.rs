//! The running appliance: the shared state every request sees, and its life cycle
//! (start, serve, drain, stop).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::auth::{Auth, AuthConfig, Bootstrap, RateLimitConfig};
use crate::config::Config;
use crate::http::router::Router;
use crate::http::server::{self, Listeners};
use crate::http::tls::Tls;
use crate::registry::{Registry, RegistryConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::serving::{DeploySettings, Serving};
use crate::store::{DeviceIdentity, STORE_FILE, Store};
use crate::system::health::{self, Readiness};
use crate::system::lock::DataDirLock;
use crate::telemetry::Metrics;

/// State shared by every connection and request, behind one `Arc`.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub auth: Arc<Auth>,
    pub registry: Arc<Registry>,
    pub serving: Arc<Serving>,
    pub scheduler: Arc<Scheduler>,
    pub device: DeviceIdentity,
    pub router: Router,
    /// `None` when the HTTPS listener is off.
    pub tls: Option<Arc<Tls>>,
    pub started_at: Instant,
    /// Where inference runs and why, for readiness (`kind: reason`).
    pub engine_device: Option<String>,
    /// Set when shutdown begins: readiness turns false so balancers stop sending work.
    pub draining: AtomicBool,
    /// One permit per open event stream (`limits.max_event_streams`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// The last readiness report, reused for a second so probes cannot hammer fsync.
    readiness_cache: Mutex<Option<(Instant, Arc<Readiness>)>>,
    /// Held while a probe runs: concurrent callers wait for its report instead of running
    /// their own (single flight), so a burst of `/readyz` runs one probe per second.
    readiness_flight: tokio::sync::Mutex<()>,
    /// `cairn_readiness_probes_total`.
    readiness_probes: Counter,
}

const READINESS_TTL: Duration = Duration::from_secs(1);

impl App {
    fn cached_readiness(&self) -> Option<Arc<Readiness>> {
        match self.readiness_cache.lock().expect("poisoned").as_ref() {
            Some((at, report)) if at.elapsed() < READINESS_TTL => Some(Arc::clone(report)),
            _ => None,
        }
    }

    /// Runs (or reuses) the readiness checks off the tokio workers: at most one probe at a
    /// time, and callers that waited for it take its report.
    pub async fn readiness(self: &Arc<Self>) -> Arc<Readiness> {
        if let Some(report) = self.cached_readiness() {
            return report;
        }
        let _flight = self.readiness_flight.lock().await;
        if let Some(report) = self.cached_readiness() {
            return report;
        }
        self.readiness_probes.inc();
        let app = Arc::clone(self);
        let report = tokio::task::spawn_blocking(move || {
            health::check(
                &app.store,
                &app.config.data_dir,
                app.config.health.min_free_disk.0,
                app.draining.load(Ordering::Relaxed),
            )
        })
        .await
        .unwrap_or_else(|e| Readiness {
            ready: false,
            checks: vec![health::Check {
                name: "probe",
                ok: false,
                detail: e.to_string(),
            }],
        });
        let mut report = report;
        let restored = self.serving.restored();
        report.checks.push(health::Check {
            name: "models",
            ok: restored,
            detail: if restored {
                format!("{} deployed model(s) serving", self.serving.all().len())
            } else {
                "restoring deployments".into()
            },
        });
        report.ready &= restored;
        if let Some(detail) = &self.engine_device {
            report.checks.push(health::Check {
                name: "engine",
                ok: true,
                detail: detail.clone(),
            });
        }
        let report = Arc::new(report);
        *self.readiness_cache.lock().expect("poisoned") =
            Some((Instant::now(), Arc::clone(&report)));
        report
    }

    fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        *self.readiness_cache.lock().expect("poisoned") = None;
    }
}

/// Under the data dir: what cubecl learns about the GPU (autotune results).
pub const GPU_CACHE_DIR: &str = "gpu-cache";

/// Picks the inference device (`auto`: a real GPU, else the CPU) off the runtime, logs and
/// reports it.
async fn select_engine_device(metrics: &mut Metrics, data_dir: &Path) -> Option<String> {
    use crate::engine::device::{DeviceChoice, keep_gpu_cache_in, select};
    let cache = data_dir.join(GPU_CACHE_DIR);
    let selected = tokio::task::spawn_blocking(move || {
        keep_gpu_cache_in(&cache);
        select(DeviceChoice::Auto)
    })
    .await
    .ok()?
    .ok()?;
    let adapter = selected.adapter.clone().unwrap_or_default();
    let f16 = selected.kind == "gpu" && adapter.f16;
    tracing::info!(kind = selected.kind, adapter = %adapter.name, reason = %selected.reason, "inference device");
    metrics.register_engine_device(crate::telemetry::metrics::EngineDeviceLabels {
        kind: selected.kind.to_owned(),
        adapter: adapter.name,
        device_type: adapter.device_type,
        backend: adapter.backend,
        driver: adapter.driver,
    });
    let precisions = if f16 { "; precision f16 available" } else { "" };
    Some(format!(
        "{}: {}{precisions}",
        selected.kind, selected.reason
    ))
}

/// A started appliance: listeners bound, store open.
pub struct Running {
    pub app: Arc<App>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    listeners: server::Serving,
    _lock: DataDirLock,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("http_addr", &self.http_addr)
            .field("https_addr", &self.https_addr)
            .finish_non_exhaustive()
    }
}

/// Locks the data dir, opens the store, loads TLS and binds the listeners.
///
/// # Errors
/// The data dir is locked or unusable, the store cannot open or migrate, TLS material is
/// invalid, or a listener cannot bind.
pub async fn start(config: Config, bootstrap: Bootstrap) -> anyhow::Result<Running> {
    let started_at = Instant::now();
    let start_time_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let store_path = config.data_dir.join(STORE_FILE);
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await?
        .context("cannot open the store")?;
    let store = Arc::new(store);
    let device = store.device()?;
    let tls = match config.https.listen.addr() {
        Some(_) => {
            let (https, dir) = (config.https.clone(), config.data_dir.clone());
            Some(Arc::new(
                tokio::task::spawn_blocking(move || Tls::load_or_generate(&https, &dir)).await??,
            ))
        }
        None => None,
    };
    let mut metrics = Metrics::new(Arc::clone(&store), start_time_unix);
    let readiness_probes = Counter::default();
    metrics.registry_mut().register(
        "readiness_probes",
        "Readiness probes run (a durable store write and statvfs); concurrent checks share one",
        readiness_probes.clone(),
    );
    let intra_op = crate::engine::threads::configure(config.engine.intra_op_threads as usize);
    tracing::info!(threads = intra_op, "intra-op CPU pool");
    let engine_device = select_engine_device(&mut metrics, &config.data_dir).await;
    let auth_config = auth_config(&config);
    metrics
        .auth
        .address_rate_limit
        .set(i64::from(auth_config.address_rate.per_second));
    let auth_metrics = metrics.auth.clone();
    let auth_store = Arc::clone(&store);
    let auth = Arc::new(
        tokio::task::spawn_blocking(move || Auth::new(auth_store, auth_config, auth_metrics))
            .await?
            .context("cannot load users and keys")?,
    );
    auth.bootstrap(&config.data_dir, bootstrap)
        .await
        .context("first-admin bootstrap")?;
    let registry = open_registry(&config, &store).await?;
    let serving = Arc::new(Serving::new(
        Arc::clone(&store),
        Arc::clone(&registry),
        config.engine.max_model_memory.0,
        metrics.serving.clone(),
    ));
    let scheduler = start_scheduler(&config, &store, &registry, &metrics).await?;
    let listeners = Listeners::bind(&config).await?;
    let (http_addr, https_addr) = (listeners.http_addr(), listeners.https_addr());
    let streams = config
        .limits
        .max_event_streams
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    let event_streams = Arc::new(tokio::sync::Semaphore::new(streams));
    let app = Arc::new(App {
        config,
        store,
        metrics,
        auth,
        registry,
        serving,
        scheduler,
        device,
        router: Router::new(),
        tls,
        started_at,
        engine_device,
        draining: AtomicBool::new(false),
        event_streams,
        readiness_cache: Mutex::new(None),
        readiness_flight: tokio::sync::Mutex::new(()),
        readiness_probes,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    spawn_upkeep(Arc::clone(&app), shutdown_rx.clone());
    // Deployments come back (and the demo model arrives) while the listeners already
    // answer; readiness says "restoring deployments" until they are loaded.
    let restoring = Arc::clone(&app);
    tokio::spawn(async move {
        restoring.serving.restore().await;
        install_demo_model(&restoring).await;
        *restoring.readiness_cache.lock().expect("poisoned") = None;
    });
    let serving = server::serve(Arc::clone(&app), listeners, shutdown_rx);
    tracing::info!(
        device = %app.device.id,
        ?http_addr,
        ?https_addr,
        elapsed_ms = started_at.elapsed().as_millis(),
        "cairn is ready"
    );
    Ok(Running {
        app,
        http_addr,
        https_addr,
        shutdown,
        listeners: serving,
        _lock: lock,
    })
}

impl Running {
    /// A sender that starts the shutdown when `true` is sent (signal handlers hold it).
    #[must_use]
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown now.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits for shutdown to be requested, then drains in-flight requests up to the
    /// configured deadline, flushes the store and releases the data-dir lock.
    ///
    /// # Errors
    /// The final store flush failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
        self.app.begin_draining();
        crate::system::notify::stopping();
        let deadline = self.app.config.limits.shutdown_deadline;
        tracing::info!(
            deadline_ms = deadline.as_millis(),
            "shutting down: draining in-flight requests"
        );
        self.app.scheduler.close_waits();
        let drained = self.listeners.drain(deadline).await;
        // Running tasks get a little time to finish; those that do not run again at the
        // next start.
        self.app
            .scheduler
            .shutdown(deadline.min(Duration::from_secs(5)))
            .await;
        if drained {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!("shutdown deadline passed with requests still in flight; closing them");
        }
        let auth = Arc::clone(&self.app.auth);
        if let Err(e) = tokio::task::spawn_blocking(move || auth.save_usage()).await? {
            tracing::warn!(error = %e, "cannot save API key usage");
        }
        self.app.auth.audit.flush().await;
        let store = Arc::clone(&self.app.store);
        tokio::task::spawn_blocking(move || store.flush())
            .await?
            .context("final store flush")?;
        let _ = std::fs::remove_file(
            self.app
                .config
                .data_dir
                .join(crate::http::server::ADMIN_SOCKET),
        );
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

fn auth_config(config: &Config) -> AuthConfig {
    let section = &config.auth;
    AuthConfig {
        session_idle: section.session_idle,
        session_absolute: section.session_absolute,
        key_rate: RateLimitConfig {
            per_second: section.key_rate_per_second,
            burst: section.key_burst,
        },
        address_rate: RateLimitConfig {
            per_second: section.address_rate_per_second,
            burst: section.address_burst,
        },
        audit: crate::auth::audit::Retention {
            max_age: section.audit_retention,
            max_entries: section.audit_max_entries,
        },
        ipv6_prefix: section.ipv6_prefix,
    }
}

/// Periodic upkeep every 30 s: expired sessions, idle rate buckets, key usage to disk.
fn spawn_upkeep(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => app.auth.maintain().await,
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn start_scheduler(
    config: &Config,
    store: &Arc<Store>,
    registry: &Arc<Registry>,
    metrics: &Metrics,
) -> anyhow::Result<Arc<Scheduler>> {
    let services = crate::scheduler::Services {
        store: Arc::clone(store),
        registry: Some(Arc::clone(registry)),
        data_dir: config.data_dir.clone(),
    };
    Scheduler::start(
        SchedulerConfig::from_section(&config.scheduler)?,
        services,
        metrics.scheduler.clone(),
    )
    .await
    .context("cannot start the task scheduler")
}

async fn open_registry(config: &Config, store: &Arc<Store>) -> anyhow::Result<Arc<Registry>> {
    let trusted_keys = config
        .registry
        .trusted_keys
        .iter()
        .map(|k| crate::registry::signing::parse_public_key(k).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let registry_config = RegistryConfig {
        require_signature: config.registry.require_signature,
        trusted_keys,
        max_model_bytes: config.limits.max_model_bytes.0,
        limits: crate::engine::LoadLimits {
            max_tensor_bytes: config.engine.max_tensor_bytes.0,
            ..crate::engine::LoadLimits::default()
        },
    };
    let (store, dir) = (Arc::clone(store), config.data_dir.clone());
    let registry =
        tokio::task::spawn_blocking(move || Registry::open(store, &dir, registry_config))
            .await?
            .context("cannot open the model registry")?;
    Ok(Arc::new(registry))
}

/// The built-in demo model (a digits classifier, `assets/models/digits.onnx`), installed
/// and deployed once on the first start of a store, so a new user has a model to call.
const DEMO_MODEL: &[u8] = include_bytes!("../assets/models/digits.onnx");
const DEMO_NAME: &str = "digits";

async fn install_demo_model(app: &Arc<App>) {
    if !app.config.registry.demo_model || app.config.registry.require_signature {
        return;
    }
    let store = Arc::clone(&app.store);
    match tokio::task::spawn_blocking(move || store.demo_model_done()).await {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) | Err(_) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the demo model flag");
            return;
        }
    }
    let registry = &app.registry;
    let result = async {
        registry
            .create_model(
                DEMO_NAME.into(),
                "Demo: handwritten digits (8x8, values 0-16) from scikit-learn, a 64-32-10 MLP"
                    .into(),
                vec!["demo".into()],
            )
            .await?;
        let version = registry
            .add_version_bytes(DEMO_NAME, bytes::Bytes::from_static(DEMO_MODEL), "cairn")
            .await?;
        anyhow::Ok(version.version)
    }
    .await;
    match result {
        Ok(version) => {
            if let Err(e) = app
                .serving
                .deploy(DEMO_NAME, DeploySettings::new(version))
                .await
            {
                tracing::warn!(error = %e, "cannot deploy the demo model");
            } else {
                tracing::info!(model = DEMO_NAME, version, "demo model deployed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the demo model"),
    }
    let store = Arc::clone(&app.store);
    let _ = tokio::task::spawn_blocking(move || store.set_demo_model_done()).await;
}
