//! The scheduler's state machine. [`Core`] owns every in-memory structure; it takes
//! commands, commit acknowledgements, attempt outcomes and the time as plain values and
//! answers with store writes and effects, so tests step it with explicit times and no
//! runtime at all. The loop in `driver.rs` feeds it and carries out what it asks.
//!
//! Invariant: a task reaches a queue, a timer or the dependency map only when the write
//! that gave it its status has committed ([`Ack::Place`]); clients hear of a change only
//! after its commit.

use std::collections::{BTreeSet, HashMap, HashSet};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::cron::Cron;
use super::kinds::{KIND_NAMES, Kind};
use super::model::{Failure, Status, Task, TaskEvent};
use super::queue::{Entry, ReadyQueues, Rng, Timer, Timers};
use super::{SchedulerConfig, TaskError};
use crate::store::TaskWrite;
use crate::telemetry::metrics::SchedulerMetrics;

pub(super) const KINDS: usize = KIND_NAMES.len();

pub(super) type Reply<T> = oneshot::Sender<Result<T, TaskError>>;

/// What to do once a group of writes has committed (or failed).
#[derive(Debug)]
pub(super) enum Ack {
    /// New tasks: reply with every id of the submission; on failure, forget the new ones.
    Submitted {
        reply: Reply<Vec<u64>>,
        ids: Vec<u64>,
        new: Vec<u64>,
    },
    Done(Reply<()>),
    Count(Reply<u64>, u64),
    Schedule(Reply<u64>, u64),
    /// Put the task where its status says (queue, timer, dependency map, finished).
    Place {
        id: u64,
        version: u64,
    },
    PlaceSchedule {
        id: u64,
        version: u64,
    },
}

/// Writes and what follows their commit.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub writes: Vec<TaskWrite>,
    pub durable: bool,
    pub acks: Vec<Ack>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.acks.is_empty()
    }
}

/// What the driver must do besides writing.
#[derive(Debug)]
pub(super) enum Effect {
    Start {
        id: u64,
        attempt: u32,
        kind: Kind,
        token: CancellationToken,
    },
    /// The attempt is abandoned (hard limit, cancel grace): stop waiting for it.
    Abort {
        id: u64,
    },
    Event(TaskEvent),
}

/// A task the scheduler holds, with the version of its last status change.
#[derive(Debug)]
pub(super) struct Live {
    pub task: Task,
    pub version: u64,
}

#[derive(Debug)]
pub(super) struct Run {
    pub attempt: u32,
    pub token: CancellationToken,
    pub started_ms: u64,
    pub soft_expired: bool,
    /// The attempt has been handed to the driver. A task started with its submission
    /// ([`Core::starts_at_once`]) is launched once that write has committed, or at once
    /// when it runs ahead (`Core::held`).
    pub launched: bool,
}

/// What is kept of a finished task: enough for dependencies, retention and keys.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    pub status: Status,
    pub finished_ms: u64,
    pub key: Option<String>,
}

/// A periodic schedule as the loop holds it.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    pub name: String,
    pub cron_text: String,
    pub cron: Cron,
    pub kind: Kind,
    pub priority: u8,
    /// Run once for missed firings (else skip them).
    pub run_missed: bool,
    pub enabled: bool,
    pub creator: String,
    pub created_ms: u64,
    pub next_fire_ms: Option<u64>,
    pub last_fire_ms: Option<u64>,
    pub last_task: Option<u64>,
    pub skipped: u64,
    pub version: u64,
}

/// The scheduler's whole in-memory state.
pub(super) struct Core {
    pub cfg: SchedulerConfig,
    pub tasks: HashMap<u64, Live>,
    /// Tasks whose creating write has not committed yet: invisible to commands.
    pub uncommitted: HashSet<u64>,
    pub finished: HashMap<u64, Finished>,
    pub keys: HashMap<String, u64>,
    pub queues: ReadyQueues,
    pub timers: Timers,
    /// Dependency → tasks waiting on it.
    pub waiting_on: HashMap<u64, Vec<u64>>,
    pub running: HashMap<u64, Run>,
    pub running_by_kind: [usize; KINDS],
    /// Tasks in `queued` status, committed or not.
    pub queued: usize,
    pub pending: usize,
    pub pending_by_kind: [usize; KINDS],
    pub schedules: HashMap<u64, Schedule>,
    pub next_id: u64,
    pub next_schedule_id: u64,
    pub rng: Rng,
    /// Shutting down: nothing new starts or is accepted.
    pub draining: bool,
    pub batch: Batch,
    /// Submissions held back while their attempt runs ahead (`Core::submit`): sent to
    /// the writer with the attempt's end, or alone at their release timer.
    pub held: HashMap<u64, Batch>,
    /// Outcomes of attempts that ended while their submission's commit was in flight:
    /// applied once it commits, dropped if it fails.
    pub early: HashMap<u64, (u32, Result<String, Failure>)>,
    /// Tasks whose in-memory state is newer than the store (progress, start), written
    /// without durability at the end of the step.
    pub dirty: BTreeSet<u64>,
    pub effects: Vec<Effect>,
    pub metrics: SchedulerMetrics,
}

impl Core {
    pub fn new(cfg: SchedulerConfig, metrics: SchedulerMetrics) -> Self {
        let rng = cfg.seed.map_or_else(Rng::from_os, Rng::new);
        Self {
            cfg,
            tasks: HashMap::new(),
            uncommitted: HashSet::new(),
            finished: HashMap::new(),
            keys: HashMap::new(),
            queues: ReadyQueues::default(),
            timers: Timers::default(),
            waiting_on: HashMap::new(),
            running: HashMap::new(),
            running_by_kind: [0; KINDS],
            queued: 0,
            pending: 0,
            pending_by_kind: [0; KINDS],
            schedules: HashMap::new(),
            next_id: 1,
            next_schedule_id: 1,
            rng,
            draining: false,
            batch: Batch::default(),
            held: HashMap::new(),
            early: HashMap::new(),
            dirty: BTreeSet::new(),
            effects: Vec::new(),
            metrics,
        }
    }

    /// Takes what this step produced: the writes (progress and start writes appended) and
    /// the effects.
    pub fn take_output(&mut self) -> (Batch, Vec<Effect>) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(live) = self.tasks.get(&id)
                && !self.uncommitted.contains(&id)
            {
                self.batch.writes.push(TaskWrite::Put {
                    id,
                    record: live.task.to_record(),
                    new: false,
                });
            }
        }
        (
            std::mem::take(&mut self.batch),
            std::mem::take(&mut self.effects),
        )
    }

    /// Sends a held submission to the writer: its writes go before this step's (which
    /// may end its attempt), with the id counters as they are now.
    pub(super) fn release(&mut self, id: u64) {
        let Some(mut held) = self.held.remove(&id) else {
            return;
        };
        held.writes.push(TaskWrite::NextIds {
            task: self.next_id,
            schedule: self.next_schedule_id,
        });
        held.writes.append(&mut self.batch.writes);
        held.acks.append(&mut self.batch.acks);
        self.batch.writes = held.writes;
        self.batch.acks = held.acks;
        self.batch.durable = true;
    }

    /// Counts a task entering `status` (and leaving `old`) in capacity and metrics.
    pub fn count(&mut self, kind: usize, priority: u8, old: Option<Status>, new: Option<Status>) {
        if let Some(old) = old {
            if old == Status::Queued {
                self.queued -= 1;
            }
            if old.is_pending() {
                self.pending -= 1;
                self.pending_by_kind[kind] -= 1;
            }
            if !old.is_finished() {
                self.metrics.set_depth(old, priority, -1);
            }
        }
        if let Some(new) = new {
            if new == Status::Queued {
                self.queued += 1;
            }
            if new.is_pending() {
                self.pending += 1;
                self.pending_by_kind[kind] += 1;
            }
            if !new.is_finished() {
                self.metrics.set_depth(new, priority, 1);
            }
        }
    }

    /// Changes a task and writes it; `Place` follows the commit.
    pub fn transition(&mut self, id: u64, durable: bool, change: impl FnOnce(&mut Task)) {
        let Some(live) = self.tasks.get_mut(&id) else {
            return;
        };
        let old = live.task.status;
        change(&mut live.task);
        live.version += 1;
        let (new, kind, priority, version) = (
            live.task.status,
            live.task.kind.index(),
            live.task.priority,
            live.version,
        );
        let record = live.task.to_record();
        self.count(kind, priority, Some(old), Some(new));
        self.dirty.remove(&id);
        self.batch.writes.push(TaskWrite::Put {
            id,
            record,
            new: false,
        });
        self.batch.durable |= durable;
        self.batch.acks.push(Ack::Place { id, version });
    }

    pub fn event(&mut self, id: u64, now_ms: u64) {
        if let Some(live) = self.tasks.get(&id) {
            let t = &live.task;
            self.effects.push(Effect::Event(TaskEvent {
                seq: 0,
                id,
                kind: t.kind.name(),
                status: t.status,
                progress: t.progress,
                message: t.progress_message.clone(),
                at_ms: now_ms,
            }));
        }
    }

    /// The status a task takes when it (re-)enters the queue: canceled if a dependency
    /// failed, waiting while one is unfinished, scheduled before `run_at`, else queued.
    pub fn entry_status(&self, task: &Task, now_ms: u64) -> (Status, Option<String>) {
        let mut blocked = false;
        for dep in &task.depends_on {
            match self.finished.get(dep) {
                Some(f) if f.status == Status::Succeeded => {}
                Some(f) => {
                    return (
                        Status::Canceled,
                        Some(format!("dependency {dep} {}", f.status.as_str())),
                    );
                }
                None => blocked = true,
            }
        }
        if blocked {
            (Status::Waiting, None)
        } else if task.run_at_ms.is_some_and(|at| at > now_ms) {
            (Status::Scheduled, None)
        } else {
            (Status::Queued, None)
        }
    }

    /// Acts on a commit: replies, placements, or (on failure) forgetting new tasks.
    pub fn committed(&mut self, result: &Result<(), String>, acks: Vec<Ack>, now_ms: u64) {
        for ack in acks {
            match ack {
                Ack::Place { id, version } => {
                    if result.is_err() && self.uncommitted.contains(&id) {
                        continue;
                    }
                    if let Err(e) = result {
                        tracing::error!(task = id, error = %e, "a task change was not stored; the scheduler goes on with it in memory");
                    }
                    self.place(id, version, now_ms);
                }
                Ack::PlaceSchedule { id, version } => self.place_schedule(id, version),
                Ack::Submitted { reply, ids, new } => match result {
                    Ok(()) => {
                        for id in &new {
                            self.uncommitted.remove(id);
                        }
                        let _ = reply.send(Ok(ids));
                        for id in new {
                            if let Some((attempt, outcome)) = self.early.remove(&id) {
                                self.attempt_done(id, attempt, outcome, now_ms);
                            }
                        }
                    }
                    Err(e) => {
                        for id in new {
                            self.early.remove(&id);
                            self.forget_uncommitted(id);
                        }
                        let _ = reply.send(Err(TaskError::Store(e.clone())));
                    }
                },
                Ack::Done(reply) => {
                    let _ = reply.send(result.clone().map_err(TaskError::Store));
                }
                Ack::Count(reply, n) => {
                    let _ = reply.send(result.clone().map(|()| n).map_err(TaskError::Store));
                }
                Ack::Schedule(reply, id) => {
                    let _ = reply.send(result.clone().map(|()| id).map_err(TaskError::Store));
                }
            }
        }
    }

    fn forget_uncommitted(&mut self, id: u64) {
        self.uncommitted.remove(&id);
        if let Some(live) = self.tasks.remove(&id) {
            let t = live.task;
            if let Some(run) = self.running.remove(&id) {
                self.running_by_kind[t.kind.index()] -= 1;
                // An attempt that ran ahead of its failed submission is stopped.
                if run.launched {
                    run.token.cancel();
                    self.effects.push(Effect::Abort { id });
                }
            }
            self.count(t.kind.index(), t.priority, Some(t.status), None);
            if let Some(key) = t.idempotency_key {
                self.keys.remove(&key);
            }
        }
    }

    /// Puts a committed task where its status says.
    pub fn place(&mut self, id: u64, version: u64, now_ms: u64) {
        let Some(live) = self.tasks.get(&id) else {
            return;
        };
        if live.version != version {
            return;
        }
        let task = &live.task;
        match task.status {
            Status::Queued => {
                let entry = Entry {
                    enqueued_ms: task.enqueued_ms,
                    id,
                    version,
                };
                self.queues.push(task.priority, task.kind.index(), entry);
            }
            Status::Scheduled => {
                let at = task.run_at_ms.unwrap_or(now_ms);
                self.timers.add(at, Timer::Due { id, version });
            }
            Status::Waiting => {
                let (status, reason) = self.entry_status(task, now_ms);
                match status {
                    Status::Waiting => {
                        for dep in task.depends_on.clone() {
                            if !self.finished.contains_key(&dep) {
                                self.waiting_on.entry(dep).or_default().push(id);
                            }
                        }
                    }
                    status => self.leave_waiting(id, status, reason, now_ms),
                }
            }
            Status::Running => self.launch(id),
            Status::Paused => {}
            Status::Succeeded | Status::Failed | Status::Canceled => {
                self.event(id, now_ms);
                self.retire(id, now_ms);
                return;
            }
        }
        self.event(id, now_ms);
    }

    fn leave_waiting(&mut self, id: u64, status: Status, reason: Option<String>, now_ms: u64) {
        self.transition(id, status != Status::Queued, |t| {
            t.status = status;
            t.enqueued_ms = now_ms;
            if status.is_finished() {
                t.finished_ms = Some(now_ms);
                t.reason = reason;
            }
        });
    }

    /// A finished task leaves memory; its dependents move on.
    fn retire(&mut self, id: u64, now_ms: u64) {
        let Some(live) = self.tasks.remove(&id) else {
            return;
        };
        let t = live.task;
        self.count(t.kind.index(), t.priority, Some(t.status), None);
        self.metrics.finished(t.kind.name(), t.status);
        self.finished.insert(
            id,
            Finished {
                status: t.status,
                finished_ms: t.finished_ms.unwrap_or(now_ms),
                key: t.idempotency_key,
            },
        );
        for dependent in self.waiting_on.remove(&id).unwrap_or_default() {
            let Some(live) = self.tasks.get(&dependent) else {
                continue;
            };
            if live.task.status != Status::Waiting {
                continue;
            }
            let (status, reason) = self.entry_status(&live.task, now_ms);
            if status != Status::Waiting {
                self.leave_waiting(dependent, status, reason, now_ms);
            }
        }
    }

    /// Starts queued tasks while workers and per-kind limits allow.
    pub fn dispatch(&mut self, now_ms: u64) {
        if self.draining {
            return;
        }
        while self.running.len() < self.cfg.workers {
            let (tasks, running_by_kind, limits) = (
                &self.tasks,
                &self.running_by_kind,
                &self.cfg.kind_concurrency,
            );
            let picked = self.queues.pick(
                now_ms,
                self.cfg.aging_step_ms,
                |kind| running_by_kind[kind] < limits[kind],
                |e| {
                    tasks
                        .get(&e.id)
                        .is_some_and(|l| l.version == e.version && l.task.status == Status::Queued)
                },
            );
            let Some(entry) = picked else {
                break;
            };
            self.start(entry.id, now_ms);
        }
    }

    /// Fires every timer due at `now_ms`.
    pub fn fire_timers(&mut self, now_ms: u64) {
        for timer in self.timers.pop_due(now_ms) {
            match timer {
                Timer::Due { id, version } => {
                    let due = self.tasks.get(&id).is_some_and(|l| {
                        l.version == version && l.task.status == Status::Scheduled
                    });
                    if due {
                        self.transition(id, false, |t| {
                            t.status = Status::Queued;
                            t.enqueued_ms = now_ms;
                        });
                    }
                }
                Timer::Soft { id, attempt } => {
                    if let Some(run) = self.running.get_mut(&id)
                        && run.attempt == attempt
                    {
                        run.soft_expired = true;
                        run.token.cancel();
                    }
                }
                Timer::Hard { id, attempt } => {
                    if self.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                        self.effects.push(Effect::Abort { id });
                        let limit = self.tasks.get(&id).map_or(0, |l| l.task.hard_limit_ms);
                        self.attempt_done(
                            id,
                            attempt,
                            Err(Failure::terminal(format!(
                                "hard time limit ({} s) passed; the attempt was abandoned",
                                limit / 1000
                            ))),
                            now_ms,
                        );
                    }
                }
                Timer::Grace { id, attempt } => {
                    if self.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                        self.effects.push(Effect::Abort { id });
                        self.attempt_done(
                            id,
                            attempt,
                            Err(Failure::terminal(
                                "canceled; the attempt did not stop within the grace time and was abandoned",
                            )),
                            now_ms,
                        );
                    }
                }
                Timer::Cron { schedule, version } => self.fire_schedule(schedule, version, now_ms),
                Timer::Release { id } => self.release(id),
            }
        }
    }

    /// When the loop must wake next.
    #[must_use]
    pub fn next_wake_ms(&self) -> Option<u64> {
        self.timers.next_ms()
    }

    /// Shutting down: nothing new starts; running attempts may finish. Those still running
    /// when the loop stops stay `running` in the store and are queued again at the next
    /// start.
    pub fn drain(&mut self) {
        self.draining = true;
        let held: Vec<u64> = self.held.keys().copied().collect();
        for id in held {
            self.release(id);
        }
    }

    /// A new task id (ids are never reused).
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
