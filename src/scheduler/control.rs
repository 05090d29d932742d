//! The commands of the scheduler loop (submit, cancel, pause, resume, retry, delete,
//! purge) and restart recovery, as methods of [`Core`].

use super::core::{Ack, Batch, Core, Finished, Live, Reply};
use super::kinds::KIND_NAMES;
use super::model::{AttemptError, Status, Task};
use super::queue::Timer;
use super::schedules::{schedule_from_record, schedule_record};
use super::{DepRef, NewTask, TaskError};
use crate::store::schema::ScheduleRecord;
use crate::store::{LoadedTasks, TaskWrite};

mod commands;

impl Core {
    fn full_total(&self, adding: usize) -> Option<TaskError> {
        (adding > 0 && self.pending + adding > self.cfg.max_queued).then(|| {
            TaskError::Full(format!(
                "the task queue is full ({} tasks waiting, scheduler.max_queued); retry later",
                self.pending
            ))
        })
    }

    fn full_kind(&self, kind: usize, adding: usize) -> Option<TaskError> {
        (adding > 0 && self.pending_by_kind[kind] + adding > self.cfg.kind_max_queued[kind]).then(
            || {
                TaskError::Full(format!(
                    "the queue of {} is full ({} waiting, scheduler.kind_max_queued); retry later",
                    KIND_NAMES[kind], self.pending_by_kind[kind]
                ))
            },
        )
    }

    pub(super) fn full(&self, kind: usize, adding: usize) -> Option<TaskError> {
        self.full_total(adding)
            .or_else(|| self.full_kind(kind, adding))
    }

    fn known(&self, id: u64) -> bool {
        (self.tasks.contains_key(&id) && !self.uncommitted.contains(&id))
            || self.finished.contains_key(&id)
    }

    /// Submits tasks (one, or a batch whose members may depend on each other by index).
    /// The reply comes after the commit.
    pub fn submit(
        &mut self,
        specs: Vec<NewTask>,
        creator: &str,
        reply: Reply<Vec<u64>>,
        now_ms: u64,
    ) {
        // A key naming a task whose submission is still held answers with that task: the
        // held writes go out first, so this answer cannot be committed before them.
        let held_keys: Vec<u64> = specs
            .iter()
            .filter_map(|s| s.idempotency_key.as_ref().and_then(|k| self.keys.get(k)))
            .filter(|id| self.held.contains_key(id))
            .copied()
            .collect();
        for id in held_keys {
            self.release(id);
        }
        let mark = (self.batch.writes.len(), self.batch.acks.len());
        match self.admit(specs, creator, now_ms) {
            Ok((ids, new)) if self.runs_ahead(&new) => {
                // One task starting at once: its attempt begins now and its submission
                // is held for up to `run_ahead_ms`. An attempt that ends within it is
                // committed with its submission (one fsync for the round trip); else
                // the release timer sends the submission alone. Nothing is answered or
                // published before that commit.
                let id = new[0];
                let writes = self.batch.writes.split_off(mark.0);
                let mut acks = self.batch.acks.split_off(mark.1);
                acks.push(Ack::Submitted { reply, ids, new });
                self.held.insert(
                    id,
                    Batch {
                        writes,
                        durable: true,
                        acks,
                    },
                );
                self.timers
                    .add(now_ms + self.cfg.run_ahead_ms, Timer::Release { id });
                self.launch(id);
            }
            Ok((ids, new)) => {
                self.batch.durable = true;
                self.batch.writes.push(TaskWrite::NextIds {
                    task: self.next_id,
                    schedule: self.next_schedule_id,
                });
                self.batch.acks.push(Ack::Submitted { reply, ids, new });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Whether a submission's attempt runs ahead of its commit: one new task, started
    /// with its submission, of a kind whose work leaves nothing outside the store.
    fn runs_ahead(&self, new: &[u64]) -> bool {
        let [id] = new else { return false };
        self.cfg.run_ahead_ms > 0
            && self.running.contains_key(id)
            && self
                .tasks
                .get(id)
                .is_some_and(|l| l.task.kind.may_run_ahead())
    }

    pub(super) fn admit(
        &mut self,
        specs: Vec<NewTask>,
        creator: &str,
        now_ms: u64,
    ) -> Result<(Vec<u64>, Vec<u64>), TaskError> {
        if self.draining {
            return Err(TaskError::ShuttingDown);
        }
        if specs.is_empty() {
            return Err(TaskError::Invalid("no task to submit".into()));
        }
        // Idempotency: a known key answers with its task and creates nothing.
        let existing: Vec<Option<u64>> = specs
            .iter()
            .map(|s| {
                s.idempotency_key
                    .as_ref()
                    .and_then(|k| self.keys.get(k).copied())
            })
            .collect();
        let mut adding = [0usize; super::core::KINDS];
        for (spec, found) in specs.iter().zip(&existing) {
            if found.is_none() {
                adding[spec.kind.index()] += 1;
            }
        }
        let total: usize = adding.iter().sum();
        if let Some(e) = self.full_total(total) {
            return Err(e);
        }
        for (kind, n) in adding.iter().enumerate() {
            if let Some(e) = self.full_kind(kind, *n) {
                return Err(e);
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            for dep in &spec.depends_on {
                match dep {
                    DepRef::Task(id) if !self.known(*id) => {
                        return Err(TaskError::Invalid(format!(
                            "task {i} depends on task {id}, which does not exist"
                        )));
                    }
                    DepRef::Batch(j) if *j >= specs.len() || *j == i => {
                        return Err(TaskError::Invalid(format!(
                            "task {i} depends on batch entry {j}, which is not another entry of this batch"
                        )));
                    }
                    DepRef::Batch(j) if existing[*j].is_some() => {}
                    _ => {}
                }
            }
        }
        check_cycles(&specs)?;
        // Ids first (batch references need them), then the tasks.
        let ids: Vec<u64> = existing
            .iter()
            .map(|found| found.unwrap_or_else(|| self.take_id()))
            .collect();
        let mut new = Vec::new();
        let mut created = Vec::new();
        for ((spec, found), id) in specs.into_iter().zip(&existing).zip(&ids) {
            if found.is_some() {
                continue;
            }
            let depends_on = spec
                .depends_on
                .iter()
                .map(|d| match d {
                    DepRef::Task(t) => *t,
                    DepRef::Batch(j) => ids[*j],
                })
                .collect();
            let task = Task {
                id: *id,
                priority: spec.priority.min(9),
                status: Status::Queued,
                creator: creator.to_owned(),
                created_ms: now_ms,
                run_at_ms: spec.run_at_ms,
                enqueued_ms: now_ms,
                started_ms: None,
                finished_ms: None,
                attempts: 0,
                max_attempts: spec.max_attempts.unwrap_or(self.cfg.max_attempts).max(1),
                retry_base: 0,
                errors: Vec::new(),
                progress: 0,
                progress_message: String::new(),
                result: None,
                depends_on,
                idempotency_key: spec.idempotency_key,
                soft_limit_ms: spec.soft_limit_ms.unwrap_or(self.cfg.soft_limit_ms),
                hard_limit_ms: spec.hard_limit_ms.unwrap_or(self.cfg.hard_limit_ms),
                schedule: spec.schedule,
                reason: None,
                cancel_requested: false,
                kind: spec.kind,
            };
            if let Some(key) = &task.idempotency_key {
                self.keys.insert(key.clone(), *id);
            }
            self.uncommitted.insert(*id);
            new.push(*id);
            created.push(task);
        }
        // Statuses once every new task is known (a batch member may wait on another).
        for task in &created {
            self.tasks.insert(
                task.id,
                Live {
                    task: task.clone(),
                    version: 0,
                },
            );
        }
        for mut task in created {
            let (mut status, reason) = self.entry_status(&task, now_ms);
            let at_once = status == Status::Queued && self.starts_at_once(task.kind.index());
            if at_once {
                status = Status::Running;
                task.attempts = 1;
                task.started_ms = Some(now_ms);
            }
            task.status = status;
            if status.is_finished() {
                task.finished_ms = Some(now_ms);
                task.reason = reason;
            }
            self.count(task.kind.index(), task.priority, None, Some(status));
            let id = task.id;
            self.batch.writes.push(TaskWrite::Put {
                id,
                record: task.to_record(),
                new: true,
            });
            // Placing a running task launches its attempt: after the commit.
            self.batch.acks.push(Ack::Place { id, version: 1 });
            self.tasks.insert(id, Live { task, version: 1 });
            if at_once {
                self.open_run(id, now_ms);
            }
        }
        Ok((ids, new))
    }

    /// Rebuilds the state from the store after a start. Tasks that were running when the
    /// process stopped are queued again (the attempt counts) or fail when out of
    /// attempts; missed schedule firings are skipped or run once. Returns the writes that
    /// record this, to commit before the loop starts.
    pub fn recover(
        &mut self,
        loaded: LoadedTasks,
        schedules: Vec<(u64, ScheduleRecord)>,
        now_ms: u64,
    ) -> Vec<TaskWrite> {
        let mut writes = Vec::new();
        self.next_id = loaded.next_task_id;
        self.next_schedule_id = loaded.next_schedule_id;
        for (key, id) in loaded.keys {
            self.keys.insert(key, id);
        }
        for (id, status, finished_ms) in loaded.finished {
            let key = None;
            if let Some(status) = Status::from_code(status) {
                self.finished.insert(
                    id,
                    Finished {
                        status,
                        finished_ms,
                        key,
                    },
                );
            }
        }
        for (key, id) in &self.keys {
            if let Some(f) = self.finished.get_mut(id) {
                f.key = Some(key.clone());
            }
        }
        let mut placed = Vec::new();
        for (id, record) in loaded.active {
            let mut task = match Task::from_record(id, record) {
                Ok(task) => task,
                Err(e) => {
                    tracing::error!(task = id, error = %e, "a stored task cannot be read; it is left as it is");
                    continue;
                }
            };
            if task.status == Status::Running {
                let attempt = task.attempts;
                let message = format!("interrupted: cairn stopped during attempt {attempt}");
                if task.cancel_requested {
                    task.status = Status::Canceled;
                    task.finished_ms = Some(now_ms);
                } else if task.attempts_left() == 0 {
                    task.status = Status::Failed;
                    task.finished_ms = Some(now_ms);
                    task.reason = Some(message.clone());
                } else {
                    task.status = Status::Queued;
                    task.enqueued_ms = now_ms;
                }
                task.errors.push(AttemptError {
                    attempt,
                    at_ms: now_ms,
                    message,
                    retryable: true,
                });
                writes.push(TaskWrite::Put {
                    id,
                    record: task.to_record(),
                    new: false,
                });
            }
            self.count(task.kind.index(), task.priority, None, Some(task.status));
            placed.push(id);
            self.tasks.insert(id, Live { task, version: 1 });
        }
        for id in placed {
            self.place(id, 1, now_ms);
        }
        for (id, record) in schedules {
            match schedule_from_record(record) {
                Ok(mut s) => {
                    if s.next_fire_ms.is_some_and(|at| at <= now_ms) {
                        s.next_fire_ms = if s.run_missed {
                            Some(now_ms)
                        } else {
                            s.cron.next_after(now_ms)
                        };
                        writes.push(TaskWrite::PutSchedule {
                            id,
                            record: schedule_record(&s),
                        });
                    }
                    let version = s.version;
                    self.schedules.insert(id, s);
                    self.place_schedule(id, version);
                }
                Err(e) => {
                    tracing::error!(schedule = id, error = %e, "a stored schedule cannot be read; it does not run")
                }
            }
        }
        writes.extend(self.ensure_purge_schedule(now_ms));
        // The recovery writes go to the store directly; what they change is already placed.
        self.batch = super::core::Batch::default();
        self.effects.clear();
        self.dirty.clear();
        writes
    }
}

/// Rejects a batch whose entries depend on each other in a cycle.
fn check_cycles(specs: &[NewTask]) -> Result<(), TaskError> {
    // 0 unvisited, 1 on the path, 2 done.
    fn visit(i: usize, specs: &[NewTask], state: &mut [u8]) -> Result<(), usize> {
        match state[i] {
            1 => return Err(i),
            2 => return Ok(()),
            _ => {}
        }
        state[i] = 1;
        for dep in &specs[i].depends_on {
            if let DepRef::Batch(j) = dep {
                visit(*j, specs, state)?;
            }
        }
        state[i] = 2;
        Ok(())
    }
    let mut state = vec![0u8; specs.len()];
    for i in 0..specs.len() {
        visit(i, specs, &mut state).map_err(|at| {
            TaskError::Invalid(format!(
                "the dependencies of this batch form a cycle (through entry {at})"
            ))
        })?;
    }
    Ok(())
}
