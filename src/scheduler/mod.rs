//! The task scheduler: built-in, typed task kinds run in the process, with their whole
//! state in redb, so nothing acknowledged is lost when the power goes.
//!
//! # Threads
//!
//! - One loop (a tokio task, `driver.rs`) owns all in-memory state (`core.rs`): ready
//!   queues per priority and kind with aging, timers, dependency maps, the running set.
//!   Commands arrive on two channels; the control lane (cancel, pause, resume, retry,
//!   delete, purge, schedules) is always served before new submissions.
//! - One writer thread (`cairn-tasks-writer`, `writer.rs`) commits every change: it takes
//!   all batches waiting in its channel into one transaction (group commit) and reports
//!   back to the loop, which only then replies, queues, notifies.
//! - Attempts run as tokio tasks; their blocking work (copies, hashing, model loads,
//!   inference) on the blocking pool, checking a cancellation token.
//!
//! # Durability
//!
//! A submission, a start, a cancel, a finish — every change of status — is committed with
//! `Durability::Immediate` before anyone hears of it (a start is committed while the
//! attempt already runs: a crash in between runs that attempt again). Progress is written
//! without durability (made durable by the next durable commit). After a crash, recovery
//! queues a running task again (counting the attempt) or fails it when it is out of
//! attempts.

pub mod cron;
pub mod kinds;
pub mod model;
pub mod queue;
pub mod run;
pub mod views;

mod attempts;
mod control;
mod core;
mod driver;
mod feed;
mod schedules;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use self::core::{Core, KINDS};
use self::driver::{Clock, Command, Driver};
use self::feed::Feed;
pub use self::feed::FeedRead;
use self::kinds::{KIND_NAMES, Kind, kind_index};
pub use self::model::{Status, TaskEvent};
pub use self::run::Services;
pub use self::schedules::PURGE_SCHEDULE;
pub use self::views::{ScheduleView, TaskView};
pub use self::writer::Faults;
use crate::config::SchedulerSection;
use crate::store::{StoreError, TaskFilter};
use crate::telemetry::metrics::SchedulerMetrics;

/// Unix milliseconds now.
#[must_use]
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a scheduler call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The queue is at capacity; retry later.
    #[error("{0}")]
    Full(String),
    #[error("the task scheduler is shutting down")]
    ShuttingDown,
    #[error("the task store failed: {0}")]
    Store(String),
}

impl From<StoreError> for TaskError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            other => Self::Store(other.to_string()),
        }
    }
}

/// The scheduler's settings, resolved from the config.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub workers: usize,
    /// Per kind (by [`kinds::kind_index`]); `usize::MAX` for no limit.
    pub kind_concurrency: [usize; KINDS],
    pub max_queued: usize,
    pub kind_max_queued: [usize; KINDS],
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub soft_limit_ms: u64,
    pub hard_limit_ms: u64,
    pub cancel_grace_ms: u64,
    pub aging_step_ms: u64,
    pub retention_ms: u64,
    pub retention_max_tasks: u64,
    /// The built-in purge schedule's cron expression; `None`: off.
    pub purge_schedule: Option<String>,
    /// How long a submission that starts at once may be held while its attempt runs
    /// ahead (0: attempts wait for their submission's commit).
    pub run_ahead_ms: u64,
    /// Seeds the back-off jitter (tests); random otherwise.
    pub seed: Option<u64>,
    /// Commit inside the loop instead of on the writer thread (tests with paused time).
    pub inline_writes: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::from_section(&SchedulerSection::default()).expect("the defaults are valid")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

impl SchedulerConfig {
    /// # Errors
    /// A bad `kind=N` row.
    pub fn from_section(section: &SchedulerSection) -> anyhow::Result<Self> {
        let mut kind_concurrency = [usize::MAX; KINDS];
        for (kind, n) in SchedulerSection::parse_kind_limits(
            &section.kind_concurrency,
            "scheduler.kind_concurrency",
        )? {
            kind_concurrency[kind_index(&kind).expect("checked")] = n as usize;
        }
        let mut kind_max_queued = [usize::MAX; KINDS];
        for (kind, n) in SchedulerSection::parse_kind_limits(
            &section.kind_max_queued,
            "scheduler.kind_max_queued",
        )? {
            kind_max_queued[kind_index(&kind).expect("checked")] = n as usize;
        }
        Ok(Self {
            workers: section.workers as usize,
            kind_concurrency,
            max_queued: section.max_queued as usize,
            kind_max_queued,
            max_attempts: section.max_attempts,
            retry_base_ms: millis(section.retry_base),
            retry_cap_ms: millis(section.retry_cap),
            soft_limit_ms: millis(section.soft_time_limit),
            hard_limit_ms: millis(section.hard_time_limit),
            cancel_grace_ms: millis(section.cancel_grace),
            aging_step_ms: millis(section.aging_step).max(1),
            retention_ms: millis(section.retention),
            retention_max_tasks: section.retention_max_tasks,
            purge_schedule: (section.purge_schedule != "off")
                .then(|| section.purge_schedule.clone()),
            run_ahead_ms: millis(section.run_ahead),
            seed: None,
            inline_writes: false,
        })
    }
}

/// A dependency of a submitted task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepRef {
    /// An existing task.
    Task(u64),
    /// Another entry of the same batch, by index.
    Batch(usize),
}

/// A task to submit.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: Kind,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    pub run_at_ms: Option<u64>,
    pub depends_on: Vec<DepRef>,
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<u32>,
    pub soft_limit_ms: Option<u64>,
    pub hard_limit_ms: Option<u64>,
    pub schedule: Option<u64>,
}

impl NewTask {
    #[must_use]
    pub fn new(kind: Kind, priority: u8) -> Self {
        Self {
            kind,
            priority,
            run_at_ms: None,
            depends_on: Vec::new(),
            idempotency_key: None,
            max_attempts: None,
            soft_limit_ms: None,
            hard_limit_ms: None,
            schedule: None,
        }
    }

    #[must_use]
    pub fn with_schedule(mut self, schedule: u64) -> Self {
        self.schedule = Some(schedule);
        self
    }
}

/// A schedule to create.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub kind: Kind,
    pub priority: u8,
    /// After downtime, run once for the firings missed (else skip them).
    pub run_missed: bool,
}

/// The scheduler as the rest of cairn sees it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Scheduler {
    control: mpsc::UnboundedSender<Command>,
    submit: mpsc::Sender<Command>,
    feed: Arc<Feed>,
    services: Arc<Services>,
    loop_done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when shutdown begins: long polls answer at once and event streams end, so
    /// connections can drain.
    closing: tokio::sync::watch::Sender<bool>,
    pub faults: Arc<Faults>,
}

/// Submissions that may wait in the loop's channel before `submit` waits for room.
const SUBMIT_CHANNEL: usize = 65_536;

fn gone<T>(_: T) -> TaskError {
    TaskError::ShuttingDown
}

impl Scheduler {
    /// Recovers the stored state (blocking the caller's thread on the store: call it from
    /// a blocking context or at start) and starts the loop and the writer.
    ///
    /// # Errors
    /// The store cannot be read or the recovery writes cannot be committed.
    pub async fn start(
        config: SchedulerConfig,
        services: Services,
        metrics: SchedulerMetrics,
    ) -> Result<Arc<Self>, TaskError> {
        let services = Arc::new(services);
        let store = Arc::clone(&services.store);
        let (loaded, schedules) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((store.load_tasks()?, store.schedules()?))
        })
        .await
        .map_err(|e| TaskError::Store(e.to_string()))??;
        let clock = Clock::new();
        let inline = config.inline_writes;
        let mut core = Core::new(config, metrics);
        let recovered = core.recover(loaded, schedules, clock.now_ms());
        if !recovered.is_empty() {
            tracing::info!(changes = recovered.len(), "task recovery after restart");
            let store = Arc::clone(&services.store);
            tokio::task::spawn_blocking(move || store.apply_task_writes(&recovered, true))
                .await
                .map_err(|e| TaskError::Store(e.to_string()))??;
        }
        let faults = Arc::new(Faults::default());
        let (commits_tx, commits_rx) = mpsc::unbounded_channel();
        let writer = if inline {
            writer::Writer::Inline {
                store: Arc::clone(&services.store),
                faults: Arc::clone(&faults),
            }
        } else {
            writer::Writer::thread(Arc::clone(&services.store), Arc::clone(&faults), commits_tx)
                .map_err(|e| TaskError::Store(format!("cannot start the task writer: {e}")))?
        };
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (submit_tx, submit_rx) = mpsc::channel(SUBMIT_CHANNEL);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let feed = Arc::new(Feed::new());
        let driver = Driver {
            core,
            clock,
            writer: Some(writer),
            control_rx,
            control_tx: control_tx.clone(),
            submit_rx,
            events_rx,
            events_tx,
            commits_rx,
            services: Arc::clone(&services),
            feed: Arc::clone(&feed),
            handles: std::collections::HashMap::new(),
            inline: std::collections::VecDeque::new(),
            stop_at: None,
            drained: Vec::new(),
        };
        let handle = tokio::spawn(driver.run());
        Ok(Arc::new(Self {
            control: control_tx,
            submit: submit_tx,
            feed,
            services,
            loop_done: tokio::sync::Mutex::new(Some(handle)),
            closing: tokio::sync::watch::Sender::new(false),
            faults,
        }))
    }

    async fn ask<T>(
        &self,
        lane_control: bool,
        make: impl FnOnce(oneshot::Sender<Result<T, TaskError>>) -> Command,
    ) -> Result<T, TaskError> {
        let (reply, answer) = oneshot::channel();
        let command = make(reply);
        if lane_control {
            self.control.send(command).map_err(gone)?;
        } else {
            self.submit.send(command).await.map_err(gone)?;
        }
        answer.await.map_err(gone)?
    }

    /// Submits tasks (a batch may name its own entries as dependencies); answers their ids
    /// once they are committed.
    ///
    /// # Errors
    /// `Full` past capacity, `Invalid` for unknown dependencies or cycles.
    pub async fn submit(&self, tasks: Vec<NewTask>, creator: &str) -> Result<Vec<u64>, TaskError> {
        let creator = creator.to_owned();
        self.ask(false, |reply| Command::Submit {
            tasks,
            creator,
            reply,
        })
        .await
    }

    /// # Errors
    /// `NotFound`; `Conflict` when the task already finished.
    pub async fn cancel(&self, id: u64) -> Result<(), TaskError> {
        self.ask(true, |reply| Command::Cancel { id, reply }).await
    }

    /// # Errors
    /// `NotFound`; `Conflict` unless the task waits.
    pub async fn pause(&self, id: u64) -> Result<(), TaskError> {
        self.ask(true, |reply| Command::Pause { id, reply }).await
    }

    /// # Errors
    /// `NotFound`; `Conflict` unless the task is paused.
    pub async fn resume(&self, id: u64) -> Result<(), TaskError> {
        self.ask(true, |reply| Command::Resume { id, reply }).await
    }

    /// # Errors
    /// `NotFound`; `Conflict` unless the task failed or was canceled; `Full`.
    pub async fn retry(&self, id: u64) -> Result<(), TaskError> {
        let record = self
            .read(move |store| store.task(id))
            .await?
            .ok_or_else(|| TaskError::NotFound(format!("task {id}")))?;
        self.ask(true, |reply| Command::Retry {
            id,
            record: Box::new(record),
            reply,
        })
        .await
    }

    /// # Errors
    /// `NotFound`; `Conflict` while the task has not finished.
    pub async fn delete(&self, id: u64) -> Result<(), TaskError> {
        self.ask(true, |reply| Command::Delete { id, reply }).await
    }

    /// Deletes finished tasks past the configured retention; answers how many.
    ///
    /// # Errors
    /// The store failed.
    pub async fn purge(&self) -> Result<u64, TaskError> {
        self.ask(true, |reply| Command::Purge {
            max_age_ms: None,
            max_tasks: None,
            reply,
        })
        .await
    }

    /// # Errors
    /// `Invalid` cron expression, `Conflict` for a name in use.
    pub async fn create_schedule(
        &self,
        spec: NewSchedule,
        creator: &str,
    ) -> Result<u64, TaskError> {
        let creator = creator.to_owned();
        self.ask(true, |reply| Command::CreateSchedule {
            spec,
            creator,
            reply,
        })
        .await
    }

    /// # Errors
    /// `NotFound`; `Conflict` for the built-in schedule.
    pub async fn delete_schedule(&self, id: u64) -> Result<(), TaskError> {
        self.ask(true, |reply| Command::DeleteSchedule { id, reply })
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&crate::store::Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, TaskError> {
        let store = Arc::clone(&self.services.store);
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| TaskError::Store(e.to_string()))?
            .map_err(TaskError::from)
    }

    /// One task.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get(&self, id: u64) -> Result<TaskView, TaskError> {
        let record = self
            .read(move |store| store.task(id))
            .await?
            .ok_or_else(|| TaskError::NotFound(format!("task {id}")))?;
        Ok(TaskView::from_record(id, &record))
    }

    /// One task, once it has finished or `wait` has passed (a long poll).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn wait(&self, id: u64, wait: Duration) -> Result<TaskView, TaskError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.feed.changes.subscribe();
        let mut closing = self.closing.subscribe();
        loop {
            let view = self.get(id).await?;
            if view.status.is_finished() || *closing.borrow() {
                return Ok(view);
            }
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout_at(deadline, changes.recv()) => next,
                    _ = closing.wait_for(|c| *c) => return Ok(view),
                };
                match next {
                    Err(_) => return Ok(view),
                    Ok(Ok(event)) if event.id == id && event.status.is_finished() => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(_)) => return Ok(view),
                }
            }
        }
    }

    /// A page of tasks, newest first, and the cursor of the next page.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list(
        &self,
        filter: TaskFilter,
    ) -> Result<(Vec<TaskView>, Option<u64>), TaskError> {
        let (page, cursor) = self.read(move |store| store.list_tasks(&filter)).await?;
        Ok((
            page.iter()
                .map(|(id, r)| TaskView::from_record(*id, r))
                .collect(),
            cursor,
        ))
    }

    /// Every schedule.
    ///
    /// # Errors
    /// The store failed.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, TaskError> {
        let all = self.read(crate::store::Store::schedules).await?;
        Ok(all
            .iter()
            .map(|(id, r)| ScheduleView::from_record(*id, r))
            .collect())
    }

    /// Stops: nothing new starts; running attempts get up to `grace` to finish; every
    /// pending write is committed. Attempts still running stay `running` in the store and
    /// run again at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let (reply, done) = oneshot::channel();
        if self.control.send(Command::Drain { grace, reply }).is_ok() {
            let _ = done.await;
        }
        if let Some(handle) = self.loop_done.lock().await.take() {
            let _ = handle.await;
        }
    }

    /// The known kind names.
    #[must_use]
    pub fn kinds() -> &'static [&'static str] {
        KIND_NAMES
    }
}
