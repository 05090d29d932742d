//! The task scheduler through its Rust API on a temp store: durable enqueues per second
//! (many submitters, each waiting for its commit), drain (tasks started and finished per
//! second once released), and the round trip of one no-op task with nothing else running
//! (submit → the attempt runs ahead → submission and end in one commit → the waiter hears
//! of it); and, as the floor under that round trip, one durable commit of one task record
//! on this disk.
//!
//! `cargo bench --bench scheduler`
//!
//! The no-op task is `system.sleep` with `ms: 0`. Every figure includes the fsyncs:
//! submissions and finishes are committed with `Durability::Immediate` (group commit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::scheduler::kinds::Kind;
use cairn::scheduler::{DepRef, NewTask, Scheduler, SchedulerConfig, Services};
use cairn::store::{STORE_FILE, Store, TaskWrite};
use cairn::telemetry::metrics::SchedulerMetrics;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const NOOP: Kind = Kind::SystemSleep {
    ms: 0,
    fail_attempts: 0,
    fail: None,
};

fn scheduler(runtime: &tokio::runtime::Runtime) -> (tempfile::TempDir, Arc<Scheduler>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join(STORE_FILE)).unwrap());
    let scheduler = scheduler_on(runtime, store, dir.path());
    (dir, scheduler)
}

fn scheduler_on(
    runtime: &tokio::runtime::Runtime,
    store: Arc<Store>,
    dir: &std::path::Path,
) -> Arc<Scheduler> {
    let config = SchedulerConfig {
        workers: 64,
        max_queued: 10_000_000,
        purge_schedule: None,
        ..SchedulerConfig::default()
    };
    let services = Services {
        store,
        registry: None,
        data_dir: dir.to_path_buf(),
    };
    runtime
        .block_on(Scheduler::start(
            config,
            services,
            SchedulerMetrics::default(),
        ))
        .unwrap()
}

/// `total` durable submissions from `clients` concurrent submitters, delayed by an hour
/// so that only the enqueue is measured.
async fn enqueue(scheduler: &Arc<Scheduler>, total: usize, clients: usize) -> Duration {
    let run_at = cairn::scheduler::wall_ms() + 3_600_000;
    let started = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..clients {
        let scheduler = Arc::clone(scheduler);
        joins.push(tokio::spawn(async move {
            for _ in 0..total / clients {
                let mut task = NewTask::new(NOOP, 5);
                task.run_at_ms = Some(run_at);
                scheduler.submit(vec![task], "bench").await.unwrap();
            }
        }));
    }
    for join in joins {
        join.await.unwrap();
    }
    started.elapsed()
}

/// `total` tasks held behind one gate task, released at once: the time from the gate's
/// end to the end of the last of them.
async fn drain(scheduler: &Arc<Scheduler>, total: usize) -> Duration {
    let gate = Kind::SystemSleep {
        ms: 300,
        fail_attempts: 0,
        fail: None,
    };
    let mut batch = vec![NewTask::new(gate, 9)];
    for _ in 0..total {
        let mut task = NewTask::new(NOOP, 5);
        task.depends_on = vec![DepRef::Batch(0)];
        batch.push(task);
    }
    let ids = scheduler.submit(batch, "bench").await.unwrap();
    let gate = scheduler
        .wait(ids[0], Duration::from_secs(60))
        .await
        .unwrap();
    let released = gate.finished_ms.unwrap();
    let last = scheduler
        .wait(*ids.last().unwrap(), Duration::from_secs(600))
        .await
        .unwrap();
    assert!(last.status.is_finished(), "{last:?}");
    let mut end = last.finished_ms.unwrap();
    for id in &ids[1..] {
        let view = scheduler.wait(*id, Duration::from_secs(600)).await.unwrap();
        end = end.max(view.finished_ms.unwrap());
    }
    Duration::from_millis(end.saturating_sub(released).max(1))
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, scheduler) = scheduler(&runtime);
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));

    const ENQUEUES: usize = 20_000;
    group.throughput(Throughput::Elements(ENQUEUES as u64));
    group.bench_function("durable_enqueue_256_clients", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(enqueue(&scheduler, ENQUEUES, 256)))
                .sum()
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable_enqueue_1_client", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(enqueue(&scheduler, usize::try_from(iters).unwrap(), 1))
        });
    });

    const DRAIN: usize = 10_000;
    group.throughput(Throughput::Elements(DRAIN as u64));
    group.bench_function("drain_noop", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| runtime.block_on(drain(&scheduler, DRAIN)))
                .sum()
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("round_trip_noop", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let id = scheduler
                        .submit(vec![NewTask::new(NOOP, 5)], "bench")
                        .await
                        .unwrap()[0];
                    let view = scheduler.wait(id, Duration::from_secs(10)).await.unwrap();
                    assert!(view.status.is_finished());
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    runtime.block_on(scheduler.shutdown(Duration::from_secs(1)));
    commit_floor(c);
}

/// The floor under the round trip: one durable redb commit of one task record, alone, on
/// this disk (a round trip makes one when the attempt ends inside `scheduler.run_ahead`).
fn commit_floor(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join(STORE_FILE)).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A real record, as the scheduler writes it for a finished no-op.
    let scheduler = scheduler_on(&runtime, Arc::clone(&store), dir.path());
    let id = runtime
        .block_on(scheduler.submit(vec![NewTask::new(NOOP, 5)], "bench"))
        .unwrap()[0];
    let view = runtime
        .block_on(scheduler.wait(id, Duration::from_secs(10)))
        .unwrap();
    assert!(view.status.is_finished());
    runtime.block_on(scheduler.shutdown(Duration::from_secs(1)));
    let record = store.task(id).unwrap().unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    group.bench_function("durable_commit_one_task", |b| {
        b.iter(|| {
            let write = TaskWrite::Put {
                id,
                record: record.clone(),
                new: false,
            };
            store
                .apply_task_writes(std::iter::once(&write), true)
                .unwrap();
        });
    });
    group.finish();
}

criterion_group!(scheduler_benches, benches);
criterion_main!(scheduler_benches);
