//! The commands on one task (cancel, pause, resume, retry, delete) and the purge of
//! finished tasks, as methods of [`Core`].

use crate::scheduler::TaskError;
use crate::scheduler::core::{Ack, Core, Live, Reply};
use crate::scheduler::model::{Status, Task};
use crate::scheduler::queue::Timer;
use crate::store::TaskWrite;
use crate::store::schema::TaskRecord;

impl Core {
    fn finished_conflict(&self, id: u64, what: &str) -> TaskError {
        match self.finished.get(&id) {
            Some(f) => TaskError::Conflict(format!(
                "task {id} already finished ({}); {what}",
                f.status.as_str()
            )),
            None => TaskError::NotFound(format!("task {id}")),
        }
    }

    fn active(&self, id: u64) -> Option<&Live> {
        self.tasks
            .get(&id)
            .filter(|_| !self.uncommitted.contains(&id))
    }

    /// Cancels a task: at once when it waits; a running one is asked to stop and is
    /// abandoned after `cancel_grace`. Always accepted, whatever the queue's load.
    pub fn cancel(&mut self, id: u64, reply: Reply<()>, now_ms: u64) {
        let Some(live) = self.active(id) else {
            let _ = reply.send(Err(self.finished_conflict(id, "nothing to cancel")));
            return;
        };
        match live.task.status {
            Status::Running => {
                if let Some(run) = self.running.get(&id) {
                    run.token.cancel();
                    let attempt = run.attempt;
                    self.timers.add(
                        now_ms + self.cfg.cancel_grace_ms,
                        Timer::Grace { id, attempt },
                    );
                }
                self.transition(id, true, |t| {
                    t.cancel_requested = true;
                    t.reason = Some("canceled".into());
                });
            }
            status if status.is_finished() => {
                let _ = reply.send(Err(TaskError::Conflict(format!(
                    "task {id} already finished ({})",
                    status.as_str()
                ))));
                return;
            }
            _ => self.transition(id, true, |t| {
                t.status = Status::Canceled;
                t.finished_ms = Some(now_ms);
                t.reason = Some("canceled".into());
            }),
        }
        self.batch.acks.push(Ack::Done(reply));
    }

    /// Holds a waiting task (queued, scheduled or waiting on dependencies).
    pub fn pause(&mut self, id: u64, reply: Reply<()>) {
        let Some(live) = self.active(id) else {
            let _ = reply.send(Err(self.finished_conflict(id, "nothing to pause")));
            return;
        };
        match live.task.status {
            Status::Paused => {}
            Status::Queued | Status::Scheduled | Status::Waiting => {
                self.transition(id, true, |t| t.status = Status::Paused);
            }
            status => {
                let _ = reply.send(Err(TaskError::Conflict(format!(
                    "task {id} is {}: only a waiting task can be paused (cancel a running one)",
                    status.as_str()
                ))));
                return;
            }
        }
        self.batch.acks.push(Ack::Done(reply));
    }

    /// Puts a paused task back in line.
    pub fn resume(&mut self, id: u64, reply: Reply<()>, now_ms: u64) {
        let Some(live) = self.active(id) else {
            let _ = reply.send(Err(self.finished_conflict(id, "nothing to resume")));
            return;
        };
        if live.task.status != Status::Paused {
            let _ = reply.send(Err(TaskError::Conflict(format!(
                "task {id} is {}, not paused",
                live.task.status.as_str()
            ))));
            return;
        }
        self.reenter(id, now_ms);
        self.batch.acks.push(Ack::Done(reply));
    }

    /// Moves a paused task (resumed, or retried) to its entry status
    /// ([`Core::entry_status`]): queued, scheduled, waiting, or canceled when a dependency
    /// failed.
    fn reenter(&mut self, id: u64, now_ms: u64) {
        let Some(live) = self.tasks.get(&id) else {
            return;
        };
        let (status, reason) = self.entry_status(&live.task, now_ms);
        self.transition(id, true, |t| {
            t.status = status;
            t.enqueued_ms = now_ms;
            if status.is_finished() {
                t.finished_ms = Some(now_ms);
                t.reason = reason;
            }
        });
    }

    /// Runs a failed or canceled task again, with a fresh allowance of attempts. The
    /// caller read its record from the store (finished tasks are not held in memory).
    pub fn retry(&mut self, id: u64, record: TaskRecord, reply: Reply<()>, now_ms: u64) {
        let Some(finished) = self.finished.get(&id) else {
            let e = if self.active(id).is_some() {
                TaskError::Conflict(format!("task {id} has not finished"))
            } else {
                TaskError::NotFound(format!("task {id}"))
            };
            let _ = reply.send(Err(e));
            return;
        };
        if finished.status == Status::Succeeded {
            let _ = reply.send(Err(TaskError::Conflict(format!(
                "task {id} succeeded; submit a new task to run it again"
            ))));
            return;
        }
        let mut task = match Task::from_record(id, record) {
            Ok(task) => task,
            Err(e) => {
                let _ = reply.send(Err(TaskError::Store(e)));
                return;
            }
        };
        if let Some(e) = self.full(task.kind.index(), 1) {
            let _ = reply.send(Err(e));
            return;
        }
        self.finished.remove(&id);
        task.retry_base = task.attempts;
        task.finished_ms = None;
        task.reason = None;
        task.result = None;
        task.cancel_requested = false;
        task.progress = 0;
        task.progress_message.clear();
        task.run_at_ms = None;
        task.status = Status::Paused;
        self.count(task.kind.index(), task.priority, None, Some(Status::Paused));
        self.tasks.insert(id, Live { task, version: 0 });
        self.reenter(id, now_ms);
        self.batch.acks.push(Ack::Done(reply));
    }

    /// Deletes a finished task.
    pub fn delete(&mut self, id: u64, reply: Reply<()>) {
        if let Some(live) = self.active(id) {
            let _ = reply.send(Err(TaskError::Conflict(format!(
                "task {id} is {}; cancel it before deleting it",
                live.task.status.as_str()
            ))));
            return;
        }
        let Some(f) = self.finished.remove(&id) else {
            let _ = reply.send(Err(TaskError::NotFound(format!("task {id}"))));
            return;
        };
        if let Some(key) = f.key {
            self.keys.remove(&key);
        }
        self.batch.writes.push(TaskWrite::Delete { id });
        self.batch.durable = true;
        self.batch.acks.push(Ack::Done(reply));
    }

    /// Deletes finished tasks older than `max_age_ms` and, past `max_tasks`, the oldest.
    pub fn purge(&mut self, max_age_ms: u64, max_tasks: u64, reply: Reply<u64>, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        let mut ids: Vec<(u64, u64)> = self
            .finished
            .iter()
            .map(|(id, f)| (*id, f.finished_ms))
            .collect();
        ids.sort_unstable();
        let keep = usize::try_from(max_tasks).unwrap_or(usize::MAX);
        let over = ids.len().saturating_sub(keep);
        let victims: Vec<u64> = ids
            .iter()
            .enumerate()
            .filter(|(i, (_, finished_ms))| *i < over || *finished_ms < cutoff)
            .map(|(_, (id, _))| *id)
            .collect();
        for id in &victims {
            if let Some(f) = self.finished.remove(id)
                && let Some(key) = f.key
            {
                self.keys.remove(&key);
            }
            self.batch.writes.push(TaskWrite::Delete { id: *id });
        }
        self.batch.durable = true;
        self.batch.acks.push(Ack::Count(
            reply,
            u64::try_from(victims.len()).unwrap_or(u64::MAX),
        ));
    }
}
