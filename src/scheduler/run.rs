//! What each kind does when it runs. Blocking work (file copies, hashing, model loads,
//! inference) goes to the blocking pool and checks the attempt's cancellation token
//! between steps; the soft time limit and cancel trip that token.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::driver::{Command, Event};
use super::kinds::{FailMode, Kind};
use super::model::Failure;
use crate::engine::device::{DeviceChoice, Precision, select_with};
use crate::engine::{LoadLimits, Model};
use crate::registry::Registry;
use crate::store::{Store, StoreError};

/// What tasks work on.
#[derive(Debug, Clone)]
pub struct Services {
    pub store: Arc<Store>,
    /// `None` in tests that run without models: the model kinds then fail.
    pub registry: Option<Arc<Registry>>,
    pub data_dir: PathBuf,
}

/// One attempt's handles.
pub(super) struct Attempt {
    pub id: u64,
    pub attempt: u32,
    pub token: CancellationToken,
    pub services: Arc<Services>,
    pub events: mpsc::UnboundedSender<Event>,
    pub control: mpsc::UnboundedSender<Command>,
}

impl Attempt {
    fn progress(&self, percent: u8, message: impl Into<String>) {
        let _ = self.events.send(Event::Progress {
            id: self.id,
            attempt: self.attempt,
            percent,
            message: message.into(),
        });
    }

    fn check(&self) -> Result<(), Failure> {
        if self.token.is_cancelled() {
            Err(Failure::terminal("canceled"))
        } else {
            Ok(())
        }
    }
}

/// How long `store.compact` waits for open reads (a backup, a long listing) to end.
const COMPACT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The built-in model `system.selftest` runs (the demo model's file).
const SELFTEST_MODEL: &[u8] = include_bytes!("../../assets/models/digits.onnx");

/// Runs one attempt; the result is JSON text.
pub(super) async fn execute(kind: Kind, ctx: Attempt) -> Result<String, Failure> {
    let ctx = Arc::new(ctx);
    let value = match kind {
        Kind::SystemSleep {
            ms,
            fail_attempts,
            fail,
        } => sleep(&ctx, ms, fail_attempts, fail).await?,
        Kind::TasksPurge {
            max_age_s,
            max_tasks,
        } => {
            let (reply, answer) = oneshot::channel();
            ctx.control
                .send(Command::Purge {
                    max_age_ms: max_age_s.map(|s| s.saturating_mul(1000)),
                    max_tasks,
                    reply,
                })
                .map_err(|_| Failure::retryable("the scheduler is stopping"))?;
            let deleted = answer
                .await
                .map_err(|_| Failure::retryable("the scheduler is stopping"))?
                .map_err(|e| Failure::retryable(e.to_string()))?;
            json!({ "deleted": deleted })
        }
        Kind::StoreBackup => blocking(&ctx, backup).await?,
        Kind::StoreCompact => blocking(&ctx, compact).await?,
        Kind::SystemSelftest => blocking(&ctx, selftest).await?,
        Kind::ModelValidate { model, version } => {
            let bytes = model_bytes(&ctx, &model, version).await?;
            blocking(&ctx, move |ctx| validate(ctx, &bytes)).await?
        }
        Kind::ModelBenchmark {
            model,
            version,
            runs,
            device,
            precision,
        } => {
            let bytes = model_bytes(&ctx, &model, version).await?;
            blocking(&ctx, move |ctx| {
                benchmark(ctx, &bytes, runs, (&device, precision))
            })
            .await?
        }
    };
    Ok(value.to_string())
}

async fn blocking(
    ctx: &Arc<Attempt>,
    work: impl FnOnce(&Attempt) -> Result<Value, Failure> + Send + 'static,
) -> Result<Value, Failure> {
    let ctx = Arc::clone(ctx);
    tokio::task::spawn_blocking(move || work(&ctx))
        .await
        .unwrap_or_else(|e| Err(Failure::terminal(format!("the task panicked: {e}"))))
}

async fn sleep(
    ctx: &Attempt,
    ms: u64,
    fail_attempts: u32,
    fail: Option<FailMode>,
) -> Result<Value, Failure> {
    const STEPS: u64 = 20;
    let step = std::time::Duration::from_millis(ms / STEPS);
    let rest = std::time::Duration::from_millis(ms % STEPS);
    for i in 0..=STEPS {
        let wait = if i == STEPS { rest } else { step };
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = ctx.token.cancelled() => return Err(Failure::terminal("canceled while sleeping")),
            }
        }
        if i < STEPS && !step.is_zero() {
            let percent = u8::try_from((i + 1) * 100 / STEPS).unwrap_or(100);
            ctx.progress(
                percent,
                format!("slept {} of {ms} ms", (i + 1) * (ms / STEPS)),
            );
        }
    }
    if ctx.attempt <= fail_attempts {
        return Err(Failure::retryable(format!(
            "injected failure on attempt {}",
            ctx.attempt
        )));
    }
    match fail {
        Some(FailMode::Retryable) => Err(Failure::retryable("injected retryable failure")),
        Some(FailMode::Terminal) => Err(Failure::terminal("injected terminal failure")),
        None => Ok(json!({ "slept_ms": ms })),
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::retryable(format!("{what}: {e}"))
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((crate::registry::blobs::hex(&hasher.finalize()), size))
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// `DATA_DIR/backups/<UTC time>-task<id>/`: `cairn.redb` (every table from one snapshot),
/// `blobs/<sha256>` (the model files that snapshot refers to) and `manifest.json` (size and
/// SHA-256 of each file). Written under a temp name and renamed when complete.
fn backup(ctx: &Attempt) -> Result<Value, Failure> {
    let services = &ctx.services;
    let root = services.data_dir.join("backups");
    std::fs::create_dir_all(&root).map_err(io("cannot create the backup directory"))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let name = format!("{stamp}-task{}", ctx.id);
    let tmp = root.join(format!(".tmp-{name}"));
    let result = write_backup(ctx, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let done = root.join(&name);
    std::fs::rename(&tmp, &done).map_err(io("cannot finish the backup"))?;
    fsync_dir(&root).map_err(io("cannot sync the backup directory"))?;
    let mut value = result.expect("checked");
    value["path"] = Value::String(done.display().to_string());
    Ok(value)
}

fn write_backup(ctx: &Attempt, dir: &Path) -> Result<Value, Failure> {
    let services = &ctx.services;
    std::fs::create_dir_all(dir.join("blobs")).map_err(io("cannot create the backup"))?;
    ctx.progress(5, "copying the store");
    let stats = services
        .store
        .backup_to(&dir.join(crate::store::STORE_FILE))
        .map_err(|e| Failure::retryable(format!("store snapshot: {e}")))?;
    let mut files = vec![PathBuf::from(crate::store::STORE_FILE)];
    let total = stats.blobs.len().max(1);
    for (i, sha) in stats.blobs.iter().enumerate() {
        ctx.check()?;
        let Some(registry) = &services.registry else {
            break;
        };
        let source = registry.blobs.path(sha);
        let name = PathBuf::from("blobs").join(crate::registry::blobs::hex(sha));
        // Blob files never change: a hard link is a copy; another file system gets one.
        if std::fs::hard_link(&source, dir.join(&name)).is_err() {
            std::fs::copy(&source, dir.join(&name)).map_err(|e| {
                Failure::retryable(format!(
                    "model file {} (deleted during the backup?): {e}",
                    source.display()
                ))
            })?;
        }
        files.push(name);
        let percent = 10 + (i + 1) * 70 / total;
        ctx.progress(u8::try_from(percent).unwrap_or(80), "linking model files");
    }
    ctx.progress(85, "writing the manifest");
    let mut manifest_files = Vec::new();
    let mut bytes = 0u64;
    for name in &files {
        ctx.check()?;
        let (sha, size) = sha256_file(&dir.join(name)).map_err(io("cannot hash the backup"))?;
        bytes += size;
        manifest_files
            .push(json!({ "path": name.display().to_string(), "size": size, "sha256": sha }));
    }
    let tables: Vec<Value> = stats
        .tables
        .iter()
        .map(|(name, rows)| json!({ "table": name, "rows": rows }))
        .collect();
    let manifest = json!({
        "format": 1,
        "task": ctx.id,
        "created_ms": crate::scheduler::wall_ms(),
        "schema_version": crate::store::schema::SCHEMA_VERSION,
        "tables": tables,
        "files": manifest_files,
    });
    let mut file = std::fs::File::create(dir.join("manifest.json"))
        .map_err(io("cannot write the manifest"))?;
    file.write_all(
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )
    .and_then(|()| file.sync_all())
    .map_err(io("cannot write the manifest"))?;
    fsync_dir(&dir.join("blobs"))
        .and_then(|()| fsync_dir(dir))
        .map_err(io("cannot sync the backup"))?;
    Ok(json!({ "files": files.len() + 1, "bytes": bytes, "tables": tables }))
}

/// A compact copy of the store (every table rewritten into a fresh file) measured against
/// the live file. The live file cannot be compacted in place while cairn serves (redb
/// needs exclusive access); the report says how much a compaction would give back.
fn compact(ctx: &Attempt) -> Result<Value, Failure> {
    ctx.check()?;
    let started = Instant::now();
    let (before, after) = ctx
        .services
        .store
        .compact(COMPACT_WAIT)
        .map_err(|e| match e {
            StoreError::InUse(m) => Failure::retryable(m),
            e => Failure::retryable(format!("compaction failed: {e}")),
        })?;
    Ok(json!({
        "file_bytes_before": before,
        "file_bytes_after": after,
        "reclaimed_bytes": before.saturating_sub(after),
        "took_ms": started.elapsed().as_millis(),
    }))
}

fn selftest(ctx: &Attempt) -> Result<Value, Failure> {
    let services = &ctx.services;
    let started = Instant::now();
    services
        .store
        .probe_write()
        .map_err(|e| Failure::terminal(format!("the store refuses a write: {e}")))?;
    let store_ms = started.elapsed().as_secs_f64() * 1e3;
    ctx.progress(30, "store takes writes");
    let disk = crate::system::disk_space(&services.data_dir)
        .map_err(|e| Failure::terminal(format!("statvfs of the data dir: {e}")))?;
    ctx.progress(50, "disk space read");
    let started = Instant::now();
    let model = Model::load_with(
        SELFTEST_MODEL,
        &crate::engine::cpu(),
        &LoadLimits::default(),
    )
    .map_err(|e| Failure::terminal(format!("the engine cannot load its test model: {e}")))?;
    model
        .warmup()
        .map_err(|e| Failure::terminal(format!("the engine cannot run its test model: {e}")))?;
    let engine_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(json!({
        "store_write_ms": store_ms,
        "disk_free_bytes": disk.available,
        "disk_total_bytes": disk.total,
        "engine_ms": engine_ms,
    }))
}

async fn model_bytes(ctx: &Attempt, model: &str, version: u32) -> Result<Vec<u8>, Failure> {
    let registry = ctx
        .services
        .registry
        .clone()
        .ok_or_else(|| Failure::terminal("this scheduler has no model registry"))?;
    let (_, record) = registry
        .version(model, version)
        .await
        .map_err(|e| Failure::terminal(e.to_string()))?;
    let crate::store::schema::VersionRecord::V1 { sha256, .. } = record;
    tokio::task::spawn_blocking(move || registry.read_blob(&sha256))
        .await
        .map_err(|e| Failure::terminal(e.to_string()))?
        .map_err(|e| Failure::retryable(e.to_string()))
}

fn limits(ctx: &Attempt) -> LoadLimits {
    ctx.services
        .registry
        .as_ref()
        .map_or_else(LoadLimits::default, |r| r.limits().clone())
}

fn validate(ctx: &Attempt, bytes: &[u8]) -> Result<Value, Failure> {
    let started = Instant::now();
    let model = Model::load_with(bytes, &crate::engine::cpu(), &limits(ctx))
        .map_err(|e| Failure::terminal(format!("the model does not load: {e}")))?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    ctx.progress(60, "loaded");
    let started = Instant::now();
    model
        .warmup()
        .map_err(|e| Failure::terminal(format!("the model does not run: {e}")))?;
    Ok(json!({
        "valid": true,
        "load_ms": load_ms,
        "run_ms": started.elapsed().as_secs_f64() * 1e3,
        "weight_bytes": model.weight_bytes(),
        "inputs": model.inputs().iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "outputs": model.outputs().iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
    }))
}

/// Percentile `p` (0–100) of sorted samples, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within the sample count"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn benchmark(
    ctx: &Attempt,
    bytes: &[u8],
    runs: u32,
    (device, precision): (&str, Precision),
) -> Result<Value, Failure> {
    let choice = match device {
        "gpu" => DeviceChoice::Gpu,
        "auto" => DeviceChoice::Auto,
        _ => DeviceChoice::Cpu,
    };
    let selected = select_with(choice, precision).map_err(|e| Failure::terminal(e.to_string()))?;
    let model = Model::load_with(bytes, &selected.device, &limits(ctx))
        .map_err(|e| Failure::terminal(format!("the model does not load: {e}")))?;
    model
        .warmup()
        .map_err(|e| Failure::terminal(format!("the model does not run: {e}")))?;
    let mut samples = Vec::with_capacity(runs as usize);
    let step = (runs / 20).max(1);
    for i in 0..runs {
        ctx.check()?;
        let started = Instant::now();
        model
            .warmup()
            .map_err(|e| Failure::terminal(format!("run {i} failed: {e}")))?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        if (i + 1) % step == 0 {
            let percent = u8::try_from(u64::from(i + 1) * 100 / u64::from(runs)).unwrap_or(100);
            ctx.progress(percent, format!("{} of {runs} runs", i + 1));
        }
    }
    samples.sort_by(f64::total_cmp);
    #[expect(clippy::cast_precision_loss, reason = "a run count")]
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    Ok(json!({
        "device": selected.kind,
        "precision": selected.precision.as_str(),
        "runs": runs,
        "mean_ms": mean,
        "min_ms": samples.first().copied().unwrap_or(0.0),
        "p50_ms": percentile(&samples, 50.0),
        "p90_ms": percentile(&samples, 90.0),
        "p99_ms": percentile(&samples, 99.0),
        "max_ms": samples.last().copied().unwrap_or(0.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&samples, 50.0) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 99.0) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&[3.0], 90.0) - 3.0).abs() < f64::EPSILON);
    }
}
