//! Deterministic tests of the scheduler: the core stepped with explicit times (no runtime,
//! no clock), optionally over a real store to check what a restart recovers; and the whole
//! scheduler on paused tokio time with the writer inline, with faults injected.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::core::{Core, Effect};
use super::kinds::{FailMode, Kind};
use super::model::{Failure, Status};
use super::{DepRef, NewSchedule, NewTask, SchedulerConfig, TaskError};
use crate::store::{STORE_FILE, Store};
use crate::telemetry::metrics::SchedulerMetrics;

mod starts;

fn config() -> SchedulerConfig {
    SchedulerConfig {
        seed: Some(7),
        purge_schedule: None,
        workers: 1,
        kind_concurrency: [usize::MAX; super::core::KINDS],
        retry_base_ms: 1000,
        retry_cap_ms: 10_000,
        aging_step_ms: 1000,
        soft_limit_ms: 60_000,
        hard_limit_ms: 120_000,
        cancel_grace_ms: 5_000,
        // Attempts wait for their submission's commit, unless a test says otherwise.
        run_ahead_ms: 0,
        ..SchedulerConfig::default()
    }
}

fn sleep() -> Kind {
    Kind::SystemSleep {
        ms: 1,
        fail_attempts: 0,
        fail: None,
    }
}

/// The core with an optional store under it: every write is applied, as the writer would.
struct Bench {
    core: Core,
    store: Option<Arc<Store>>,
    started: Vec<(u64, u32)>,
    aborted: Vec<u64>,
}

impl Bench {
    fn new(cfg: SchedulerConfig) -> Self {
        Self {
            core: Core::new(cfg, SchedulerMetrics::default()),
            store: None,
            started: Vec::new(),
            aborted: Vec::new(),
        }
    }

    /// Runs the core until it has nothing more to write at `now`.
    fn step(&mut self, now: u64) {
        loop {
            self.core.fire_timers(now);
            self.core.dispatch(now);
            let (batch, effects) = self.core.take_output();
            for effect in effects {
                match effect {
                    Effect::Start { id, attempt, .. } => self.started.push((id, attempt)),
                    Effect::Abort { id } => self.aborted.push(id),
                    Effect::Event(_) => {}
                }
            }
            if batch.is_empty() {
                break;
            }
            let result = match &self.store {
                Some(store) => store
                    .apply_task_writes(&batch.writes, batch.durable)
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            };
            self.core.committed(&result, batch.acks, now);
        }
    }

    fn submit(&mut self, tasks: Vec<NewTask>, now: u64) -> Result<Vec<u64>, TaskError> {
        let (reply, mut answer) = oneshot::channel();
        self.core.submit(tasks, "tester", reply, now);
        self.step(now);
        answer.try_recv().expect("answered after the step")
    }

    fn one(&mut self, task: NewTask, now: u64) -> u64 {
        self.submit(vec![task], now).unwrap()[0]
    }

    fn done(&mut self, id: u64, outcome: Result<&str, Failure>, now: u64) {
        let attempt = self.core.running[&id].attempt;
        self.core
            .attempt_done(id, attempt, outcome.map(str::to_owned), now);
        self.step(now);
    }

    fn ask(
        &mut self,
        now: u64,
        command: impl FnOnce(&mut Core, super::core::Reply<()>),
    ) -> Result<(), TaskError> {
        let (reply, mut answer) = oneshot::channel();
        command(&mut self.core, reply);
        self.step(now);
        answer.try_recv().expect("answered")
    }

    fn status(&self, id: u64) -> Status {
        self.core
            .tasks
            .get(&id)
            .map(|l| l.task.status)
            .or_else(|| self.core.finished.get(&id).map(|f| f.status))
            .expect("known task")
    }

    fn started_ids(&self) -> Vec<u64> {
        self.started.iter().map(|(id, _)| *id).collect()
    }
}

fn task(kind: Kind, priority: u8) -> NewTask {
    NewTask::new(kind, priority)
}

#[test]
fn priority_order_then_aging_lifts_the_starved() {
    let mut b = Bench::new(config());
    let blocker = b.one(task(sleep(), 5), 0);
    let low = b.one(task(sleep(), 1), 0);
    let high = b.one(task(sleep(), 9), 1);
    assert_eq!(b.started_ids(), [blocker]);
    b.done(blocker, Ok("{}"), 2);
    assert_eq!(
        b.started_ids(),
        [blocker, high],
        "the higher priority goes first"
    );
    // A fresh high-priority task arrives just before the slot frees; the low one has
    // waited 20 s (20 aging steps): 1 + 20 > 9.
    let high2 = b.one(task(sleep(), 9), 19_999);
    b.done(high, Ok("{}"), 20_000);
    assert_eq!(b.started_ids(), [blocker, high, low]);
    b.done(low, Ok("{}"), 20_001);
    assert_eq!(b.started_ids(), [blocker, high, low, high2]);
}

#[test]
fn retries_back_off_with_jitter_then_fail() {
    let mut b = Bench::new(config());
    let mut spec = task(sleep(), 5);
    spec.max_attempts = Some(3);
    let id = b.one(spec, 0);
    let mut now = 0;
    for attempt in 1..=2u32 {
        assert_eq!(b.started.last(), Some(&(id, attempt)));
        b.done(id, Err(Failure::retryable("busy")), now);
        assert_eq!(b.status(id), Status::Scheduled);
        let run_at = b.core.tasks[&id].task.run_at_ms.unwrap();
        let ceiling = 1000 << (attempt - 1);
        assert!(
            run_at >= now && run_at <= now + ceiling,
            "attempt {attempt}: {run_at}"
        );
        b.step(run_at.saturating_sub(1).max(now));
        if run_at > now {
            assert_eq!(b.started.len(), attempt as usize, "not before the back-off");
        }
        now = run_at;
        b.step(now);
    }
    b.done(id, Err(Failure::retryable("still busy")), now);
    assert_eq!(b.status(id), Status::Failed, "out of attempts");
    // A terminal error is never retried.
    let id = b.one(task(sleep(), 5), now);
    b.done(id, Err(Failure::terminal("bad input")), now);
    assert_eq!(b.status(id), Status::Failed);
}

#[test]
fn dependencies_run_in_order_and_failures_cascade() {
    let mut cfg = config();
    cfg.workers = 4;
    let mut b = Bench::new(cfg);
    let chain = |first: Kind| {
        let a = task(first, 5);
        let mut b2 = task(sleep(), 5);
        b2.depends_on = vec![DepRef::Batch(0)];
        let mut c = task(sleep(), 5);
        c.depends_on = vec![DepRef::Batch(1)];
        vec![a, b2, c]
    };
    let ids = b.submit(chain(sleep()), 0).unwrap();
    assert_eq!(b.started_ids(), [ids[0]]);
    assert_eq!(b.status(ids[1]), Status::Waiting);
    b.done(ids[0], Ok("{}"), 1);
    assert_eq!(b.started_ids(), [ids[0], ids[1]]);
    b.done(ids[1], Ok("{}"), 2);
    assert_eq!(b.started_ids(), [ids[0], ids[1], ids[2]]);

    let ids = b.submit(chain(sleep()), 3).unwrap();
    b.done(ids[0], Err(Failure::terminal("broken")), 4);
    assert_eq!(b.status(ids[1]), Status::Canceled);
    assert_eq!(
        b.status(ids[2]),
        Status::Canceled,
        "the cascade reaches the end"
    );
    // A new task on a failed dependency is canceled at once.
    let mut late = task(sleep(), 5);
    late.depends_on = vec![DepRef::Task(ids[0])];
    let late = b.one(late, 5);
    assert_eq!(b.status(late), Status::Canceled);

    let mut cyclic = chain(sleep());
    cyclic[0].depends_on = vec![DepRef::Batch(2)];
    let err = b.submit(cyclic, 6).unwrap_err();
    assert!(
        matches!(err, TaskError::Invalid(ref m) if m.contains("cycle")),
        "{err}"
    );
    let mut unknown = task(sleep(), 5);
    unknown.depends_on = vec![DepRef::Task(999)];
    assert!(matches!(
        b.submit(vec![unknown], 6),
        Err(TaskError::Invalid(_))
    ));
}

#[test]
fn cancel_waits_for_the_attempt_then_abandons_it() {
    let mut b = Bench::new(config());
    let id = b.one(task(sleep(), 5), 0);
    let queued = b.one(task(sleep(), 5), 0);
    b.ask(1, |c, r| c.cancel(queued, r, 1)).unwrap();
    assert_eq!(
        b.status(queued),
        Status::Canceled,
        "a waiting task ends at once"
    );
    b.ask(1, |c, r| c.cancel(id, r, 1)).unwrap();
    assert!(b.core.running[&id].token.is_cancelled());
    assert_eq!(b.status(id), Status::Running);
    // The attempt stops cooperatively.
    b.done(id, Err(Failure::terminal("canceled while sleeping")), 2);
    assert_eq!(b.status(id), Status::Canceled);
    // One that ignores the token is abandoned after the grace time.
    let stubborn = b.one(task(sleep(), 5), 10);
    b.ask(10, |c, r| c.cancel(stubborn, r, 10)).unwrap();
    b.step(5_009);
    assert_eq!(b.status(stubborn), Status::Running);
    b.step(5_010);
    assert_eq!(b.status(stubborn), Status::Canceled);
    assert_eq!(b.aborted, [stubborn]);
    assert!(matches!(
        b.ask(5_011, |c, r| c.cancel(stubborn, r, 5_011)),
        Err(TaskError::Conflict(_))
    ));
    assert!(matches!(
        b.ask(5_011, |c, r| c.cancel(12_345, r, 5_011)),
        Err(TaskError::NotFound(_))
    ));
}

#[test]
fn time_limits_soft_then_hard() {
    let mut b = Bench::new(config());
    let mut spec = task(sleep(), 5);
    spec.soft_limit_ms = Some(100);
    spec.hard_limit_ms = Some(200);
    let soft = b.one(spec.clone(), 0);
    b.step(100);
    assert!(
        b.core.running[&soft].token.is_cancelled(),
        "the soft limit trips the token"
    );
    b.done(soft, Err(Failure::terminal("canceled")), 150);
    assert_eq!(b.status(soft), Status::Failed);
    let hard = b.one(spec, 1_000);
    b.step(1_199);
    assert_eq!(b.status(hard), Status::Running);
    b.step(1_200);
    assert_eq!(b.status(hard), Status::Failed);
    assert_eq!(b.aborted, [hard]);
    // A late report from the abandoned attempt changes nothing.
    b.core.attempt_done(hard, 1, Ok("{}".into()), 1_300);
    b.step(1_300);
    assert_eq!(b.status(hard), Status::Failed);
}

#[test]
fn capacity_is_bounded_in_total_and_per_kind() {
    let mut cfg = config();
    cfg.max_queued = 3;
    cfg.kind_max_queued[super::kinds::kind_index("store.backup").unwrap()] = 1;
    let mut b = Bench::new(cfg);
    b.one(task(sleep(), 5), 0); // running: not counted
    b.one(task(Kind::StoreBackup, 5), 0);
    assert!(matches!(
        b.submit(vec![task(Kind::StoreBackup, 5)], 0),
        Err(TaskError::Full(_))
    ));
    b.one(task(sleep(), 5), 0);
    b.one(task(sleep(), 5), 0);
    let err = b.submit(vec![task(sleep(), 5)], 0).unwrap_err();
    assert!(
        matches!(err, TaskError::Full(ref m) if m.contains("max_queued")),
        "{err}"
    );
    // Cancel is always accepted, and makes room.
    let waiting: Vec<u64> = b
        .core
        .tasks
        .iter()
        .filter(|(_, l)| l.task.status == Status::Queued)
        .map(|(id, _)| *id)
        .collect();
    b.ask(1, |c, r| c.cancel(waiting[0], r, 1)).unwrap();
    b.one(task(sleep(), 5), 1);
}

#[test]
fn pause_resume_retry_delete_and_idempotency() {
    let (_dir, store) = store();
    let mut b = restart(&store, config(), 0);
    let blocker = b.one(task(sleep(), 5), 0);
    let mut keyed = task(sleep(), 5);
    keyed.idempotency_key = Some("nightly".into());
    let id = b.one(keyed.clone(), 0);
    assert_eq!(b.one(keyed, 0), id, "the same key answers the same task");
    b.ask(1, |c, r| c.pause(id, r)).unwrap();
    b.done(blocker, Ok("{}"), 2);
    assert_eq!(b.status(id), Status::Paused, "a paused task does not start");
    assert!(matches!(
        b.ask(2, |c, r| c.delete(id, r)),
        Err(TaskError::Conflict(_))
    ));
    b.ask(3, |c, r| c.resume(id, r, 3)).unwrap();
    assert_eq!(b.started_ids(), [blocker, id]);
    b.done(id, Err(Failure::terminal("nope")), 4);
    let record = store.task(id).unwrap().unwrap();
    b.ask(5, |c, r| c.retry(id, record.clone(), r, 5)).unwrap();
    assert_eq!(b.started_ids(), [blocker, id, id]);
    assert_eq!(b.started.last(), Some(&(id, 2)));
    b.done(id, Ok("{}"), 6);
    assert!(matches!(
        b.ask(7, |c, r| c.retry(id, record.clone(), r, 7)),
        Err(TaskError::Conflict(_))
    ));
    b.ask(7, |c, r| c.delete(id, r)).unwrap();
    assert!(!b.core.keys.contains_key("nightly"));
    assert!(matches!(
        b.ask(8, |c, r| c.delete(id, r)),
        Err(TaskError::NotFound(_))
    ));
}

#[test]
fn purge_keeps_the_newest_within_age_and_count() {
    let mut cfg = config();
    cfg.workers = 8;
    let mut b = Bench::new(cfg);
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let id = b.one(task(sleep(), 5), i * 1000);
        b.done(id, Ok("{}"), i * 1000);
        ids.push(id);
    }
    let (reply, mut answer) = oneshot::channel();
    // Older than 4.5 s at t = 6 s: tasks 0 and 1; past a count of 3: also task 2.
    b.core.purge(4_500, 3, reply, 6_000);
    b.step(6_000);
    assert_eq!(answer.try_recv().unwrap().unwrap(), 3);
    let mut left: Vec<u64> = b.core.finished.keys().copied().collect();
    left.sort_unstable();
    assert_eq!(left, ids[3..]);
}

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join(STORE_FILE)).unwrap());
    (dir, store)
}

fn restart(store: &Arc<Store>, cfg: SchedulerConfig, now: u64) -> Bench {
    let mut b = Bench::new(cfg);
    b.store = Some(Arc::clone(store));
    let writes = b
        .core
        .recover(store.load_tasks().unwrap(), store.schedules().unwrap(), now);
    store.apply_task_writes(&writes, true).unwrap();
    b.step(now);
    b
}

/// A task that finds a worker free starts with its submission: one durable commit records
/// both, and the attempt is launched only after it.
#[test]
fn a_restart_queues_interrupted_tasks_once_and_fails_those_out_of_attempts() {
    let (_dir, store) = store();
    let mut cfg = config();
    cfg.workers = 2;
    let mut b = restart(&store, cfg.clone(), 0);
    let mut once = task(sleep(), 5);
    once.max_attempts = Some(1);
    let spent = b.one(once, 0);
    let again = b.one(task(sleep(), 5), 0);
    let waiting = b.one(task(sleep(), 5), 0);
    assert_eq!(b.started_ids(), [spent, again]);
    drop(b); // the process dies with two attempts running

    let b = restart(&store, cfg, 10);
    assert_eq!(b.status(spent), Status::Failed);
    let record = store.task(spent).unwrap().unwrap();
    let crate::store::schema::TaskRecord::V1 { errors, .. } = record;
    assert!(errors[0].message.contains("interrupted"));
    // The interrupted one runs again as attempt 2; the waiting one keeps its place.
    assert!(b.started.contains(&(again, 2)), "{:?}", b.started);
    assert!(b.started.contains(&(waiting, 1)), "{:?}", b.started);
    assert_eq!(b.started.len(), 2, "no duplicate runs");
}

#[test]
fn schedules_fire_without_overlap_and_survive_a_restart() {
    let (_dir, store) = store();
    let cfg = config();
    let mut b = restart(&store, cfg.clone(), 0);
    let (reply, mut answer) = oneshot::channel();
    let spec = NewSchedule {
        name: "every second".into(),
        cron: "* * * * * *".into(),
        kind: sleep(),
        priority: 5,
        run_missed: true,
    };
    b.core.create_schedule(spec, "tester", reply, 500);
    b.step(500);
    let sid = answer.try_recv().unwrap().unwrap();
    b.step(1_000);
    assert_eq!(b.started.len(), 1, "the first firing");
    let first = b.started[0].0;
    b.step(2_000);
    assert_eq!(
        b.started.len(),
        1,
        "no overlap while the first run is unfinished"
    );
    b.done(first, Ok("{}"), 2_500);
    b.step(3_000);
    assert_eq!(b.started.len(), 2);
    let second = b.started[1].0;
    b.done(second, Ok("{}"), 3_100);
    // A second schedule that skips missed firings.
    let (reply, mut answer) = oneshot::channel();
    let spec = NewSchedule {
        name: "skipper".into(),
        cron: "* * * * * *".into(),
        kind: sleep(),
        priority: 5,
        run_missed: false,
    };
    b.core.create_schedule(spec, "tester", reply, 3_200);
    b.step(3_200);
    let skipper = answer.try_recv().unwrap().unwrap();
    drop(b);
    // Down from 3.2 s to 60 s: `run_once` fires once at start, `skip` waits for its next
    // time; both then follow the expression.
    let mut b = restart(&store, cfg, 60_000);
    let runs: Vec<u64> = b.started_ids();
    assert_eq!(
        runs.len(),
        1,
        "one run for all the missed firings: {runs:?}"
    );
    let task = store.task(runs[0]).unwrap().unwrap();
    let crate::store::schema::TaskRecord::V1 { schedule, .. } = task;
    assert_eq!(schedule, Some(sid));
    let next = |id: u64| {
        let record = store
            .schedules()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == id)
            .unwrap()
            .1;
        let crate::store::schema::ScheduleRecord::V1 {
            next_fire_ms,
            skipped,
            ..
        } = record;
        (next_fire_ms, skipped)
    };
    assert_eq!(next(sid).0, Some(61_000));
    assert_eq!(next(skipper).0, Some(61_000));
    b.step(61_000);
    assert_eq!(
        next(sid).1,
        2,
        "its run is unfinished: this firing is skipped (the second time)"
    );
    assert_eq!(
        next(skipper).1,
        0,
        "the other one submits (and queues behind the one worker)"
    );
    assert_eq!(b.core.pending, 1);
}

#[tokio::test(start_paused = true)]
async fn the_whole_scheduler_on_paused_time() {
    let (dir, store) = store();
    let mut cfg = config();
    cfg.inline_writes = true;
    cfg.workers = 2;
    let services = super::Services {
        store: Arc::clone(&store),
        registry: None,
        data_dir: dir.path().to_path_buf(),
    };
    let scheduler = super::Scheduler::start(cfg, services, SchedulerMetrics::default())
        .await
        .unwrap();
    let long = Kind::SystemSleep {
        ms: 60_000,
        fail_attempts: 0,
        fail: None,
    };
    let id = scheduler.submit(vec![task(long, 5)], "t").await.unwrap()[0];
    let view = scheduler.wait(id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(view.status, Status::Succeeded);
    assert_eq!(view.progress, 100);
    // Retryable failures are retried, the errors kept.
    let flaky = Kind::SystemSleep {
        ms: 10,
        fail_attempts: 2,
        fail: None,
    };
    let id = scheduler.submit(vec![task(flaky, 5)], "t").await.unwrap()[0];
    let view = scheduler.wait(id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(view.status, Status::Succeeded, "{view:?}");
    assert_eq!(view.attempts, 3);
    assert_eq!(view.errors.len(), 2);
    let terminal = Kind::SystemSleep {
        ms: 10,
        fail_attempts: 0,
        fail: Some(FailMode::Terminal),
    };
    let id = scheduler
        .submit(vec![task(terminal, 5)], "t")
        .await
        .unwrap()[0];
    let view = scheduler.wait(id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(view.status, Status::Failed);
    assert_eq!(view.attempts, 1);
    // A failed commit fails the submission and leaves nothing behind.
    scheduler
        .faults
        .fail_commits
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let err = scheduler
        .submit(vec![task(sleep(), 5)], "t")
        .await
        .unwrap_err();
    assert!(
        matches!(err, TaskError::Store(ref m) if m.contains("injected")),
        "{err}"
    );
    let (all, _) = scheduler
        .list(crate::store::TaskFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let id = scheduler.submit(vec![task(sleep(), 5)], "t").await.unwrap()[0];
    assert_eq!(id, 5, "ids are never reused, even after a failed commit");
    let events = scheduler.events(0, Duration::ZERO, 1000).await;
    assert!(events.iter().any(|e| e.status == Status::Running));
    scheduler.shutdown(Duration::from_secs(1)).await;
    assert!(matches!(
        scheduler.submit(vec![task(sleep(), 5)], "t").await,
        Err(TaskError::ShuttingDown)
    ));
}
