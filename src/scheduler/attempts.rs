//! An attempt's life in the core: started from the queue or with its submission, booked
//! (worker, time limits), handed to the driver once, ended (success, retry with back-off,
//! failure, cancel), and its progress.

use tokio_util::sync::CancellationToken;

use super::core::{Core, Effect, Run};
use super::kinds::KIND_NAMES;
use super::model::{AttemptError, Failure, Status};
use super::queue::{Timer, backoff_ms};

impl Core {
    pub(super) fn start(&mut self, id: u64, now_ms: u64) {
        let Some(live) = self.tasks.get_mut(&id) else {
            return;
        };
        let t = &mut live.task;
        let old = t.status;
        t.status = Status::Running;
        t.attempts += 1;
        t.started_ms = Some(now_ms);
        t.finished_ms = None;
        live.version += 1;
        let (kind, priority) = (t.kind.index(), t.priority);
        self.count(kind, priority, Some(old), Some(Status::Running));
        self.open_run(id, now_ms);
        // The start is committed durably (in the step's group), so the attempt counts
        // after a crash; the attempt itself begins without waiting for that commit.
        self.dirty.insert(id);
        self.batch.durable = true;
        self.launch(id);
        self.event(id, now_ms);
    }

    /// Whether a task of `kind` submitted now may start with its submission: a worker
    /// and its kind's limit are free and no queued task is passed over. Its submission
    /// write then records the start, and one commit stands for both.
    pub fn starts_at_once(&self, kind: usize) -> bool {
        !self.draining
            && self.queued == 0
            && self.running.len() < self.cfg.workers
            && self.running_by_kind[kind] < self.cfg.kind_concurrency[kind]
    }

    /// Books the attempt a task (already marked running) is starting: its worker, its
    /// time limits. [`Core::launch`] hands it to the driver.
    pub fn open_run(&mut self, id: u64, now_ms: u64) {
        let Some(live) = self.tasks.get(&id) else {
            return;
        };
        let t = &live.task;
        let (attempt, kind) = (t.attempts, t.kind.index());
        let (soft, hard) = (t.soft_limit_ms, t.hard_limit_ms);
        self.metrics
            .queued_for(KIND_NAMES[kind], now_ms.saturating_sub(t.enqueued_ms));
        self.running_by_kind[kind] += 1;
        self.running.insert(
            id,
            Run {
                attempt,
                token: CancellationToken::new(),
                started_ms: now_ms,
                soft_expired: false,
                launched: false,
            },
        );
        self.timers.add(now_ms + soft, Timer::Soft { id, attempt });
        self.timers.add(now_ms + hard, Timer::Hard { id, attempt });
    }

    /// Hands a booked attempt to the driver, once.
    pub(super) fn launch(&mut self, id: u64) {
        let (Some(run), Some(live)) = (self.running.get_mut(&id), self.tasks.get(&id)) else {
            return;
        };
        if run.launched {
            return;
        }
        run.launched = true;
        self.effects.push(Effect::Start {
            id,
            attempt: run.attempt,
            kind: live.task.kind.clone(),
            token: run.token.clone(),
        });
    }

    /// An attempt ended (or was abandoned).
    pub fn attempt_done(
        &mut self,
        id: u64,
        attempt: u32,
        outcome: Result<String, Failure>,
        now_ms: u64,
    ) {
        let Some(run) = self.running.get(&id) else {
            return;
        };
        if run.attempt != attempt {
            return;
        }
        if self.uncommitted.contains(&id) && !self.held.contains_key(&id) {
            // Ran ahead and ended while its submission commits: that commit comes first.
            self.early.insert(id, (attempt, outcome));
            return;
        }
        let run = self.running.remove(&id).expect("checked");
        let Some(live) = self.tasks.get(&id) else {
            return;
        };
        let kind = live.task.kind.index();
        self.running_by_kind[kind] -= 1;
        self.metrics
            .ran_for(KIND_NAMES[kind], now_ms.saturating_sub(run.started_ms));
        let outcome = outcome.map_err(|f| {
            if run.soft_expired && !live.task.cancel_requested {
                Failure::terminal(format!("soft time limit passed: {}", f.message))
            } else {
                f
            }
        });
        let (base, cap) = (self.cfg.retry_base_ms, self.cfg.retry_cap_ms);
        let delay = backoff_ms(&mut self.rng, base, cap, attempt);
        let cancel_requested = live.task.cancel_requested;
        let attempts_left = live.task.attempts_left();
        if let Err(f) = &outcome {
            if !cancel_requested && f.retryable && attempts_left > 0 {
                self.metrics.retried(KIND_NAMES[kind]);
            } else if !cancel_requested {
                self.metrics.failed(KIND_NAMES[kind]);
            }
        }
        self.transition(id, true, |t| match outcome {
            Ok(result) => {
                t.status = Status::Succeeded;
                t.result = Some(result);
                t.progress = 100;
                t.finished_ms = Some(now_ms);
            }
            Err(f) => {
                t.errors.push(AttemptError {
                    attempt,
                    at_ms: now_ms,
                    message: f.message.clone(),
                    retryable: f.retryable,
                });
                if cancel_requested {
                    t.status = Status::Canceled;
                    t.finished_ms = Some(now_ms);
                } else if f.retryable && attempts_left > 0 {
                    t.status = Status::Scheduled;
                    t.run_at_ms = Some(now_ms + delay);
                } else {
                    t.status = Status::Failed;
                    t.finished_ms = Some(now_ms);
                    t.reason = Some(f.message);
                }
            }
        });
        // A held submission and its attempt's end: one transaction, one commit.
        self.release(id);
    }

    /// A running task reports progress (written lazily, without durability).
    pub fn progress(&mut self, id: u64, attempt: u32, percent: u8, message: String, now_ms: u64) {
        if self.running.get(&id).is_none_or(|r| r.attempt != attempt) {
            return;
        }
        if let Some(live) = self.tasks.get_mut(&id) {
            live.task.progress = percent.min(100);
            live.task.progress_message = message;
            self.dirty.insert(id);
            self.event(id, now_ms);
        }
    }
}
