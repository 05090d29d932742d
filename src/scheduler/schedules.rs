//! Periodic schedules: create, delete, fire (no overlap), and the built-in purge schedule
//! that follows the config, as methods of [`Core`].

use super::core::{Ack, Core, Reply, Schedule};
use super::cron;
use super::kinds::Kind;
use super::queue::Timer;
use super::{NewSchedule, NewTask, TaskError};
use crate::store::TaskWrite;
use crate::store::schema::ScheduleRecord;

/// The name of the built-in retention schedule.
pub const PURGE_SCHEDULE: &str = "tasks.purge (built in)";

impl Core {
    /// Creates a schedule; it first fires at the next time its expression names.
    pub fn create_schedule(
        &mut self,
        spec: NewSchedule,
        creator: &str,
        reply: Reply<u64>,
        now_ms: u64,
    ) {
        if self.schedules.values().any(|s| s.name == spec.name) {
            let _ = reply.send(Err(TaskError::Conflict(format!("schedule {}", spec.name))));
            return;
        }
        let cron = match cron::parse(&spec.cron) {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(TaskError::Invalid(e)));
                return;
            }
        };
        let id = self.next_schedule_id;
        self.next_schedule_id += 1;
        let schedule = Schedule {
            name: spec.name,
            cron_text: spec.cron,
            next_fire_ms: cron.next_after(now_ms),
            cron,
            kind: spec.kind,
            priority: spec.priority.min(9),
            run_missed: spec.run_missed,
            enabled: true,
            creator: creator.to_owned(),
            created_ms: now_ms,
            last_fire_ms: None,
            last_task: None,
            skipped: 0,
            version: 1,
        };
        self.batch.writes.push(TaskWrite::PutSchedule {
            id,
            record: schedule_record(&schedule),
        });
        self.batch.writes.push(TaskWrite::NextIds {
            task: self.next_id,
            schedule: self.next_schedule_id,
        });
        self.batch.durable = true;
        self.batch.acks.push(Ack::PlaceSchedule { id, version: 1 });
        self.batch.acks.push(Ack::Schedule(reply, id));
        self.schedules.insert(id, schedule);
    }

    pub fn delete_schedule(&mut self, id: u64, reply: Reply<()>) {
        match self.schedules.get(&id) {
            None => {
                let _ = reply.send(Err(TaskError::NotFound(format!("schedule {id}"))));
            }
            Some(s) if s.name == PURGE_SCHEDULE => {
                let _ = reply.send(Err(TaskError::Conflict(
                    "the built-in purge schedule follows scheduler.purge_schedule; set it to off to remove it".into(),
                )));
            }
            Some(_) => {
                self.schedules.remove(&id);
                self.batch.writes.push(TaskWrite::DeleteSchedule { id });
                self.batch.durable = true;
                self.batch.acks.push(Ack::Done(reply));
            }
        }
    }

    pub fn place_schedule(&mut self, id: u64, version: u64) {
        if let Some(s) = self.schedules.get(&id)
            && s.version == version
            && s.enabled
            && let Some(at) = s.next_fire_ms
        {
            self.timers.add(
                at,
                Timer::Cron {
                    schedule: id,
                    version,
                },
            );
        }
    }

    /// A schedule fires: it submits its task unless the previous run is unfinished (no
    /// overlap) or the queue is full; the task and the schedule's new state are one write.
    pub fn fire_schedule(&mut self, id: u64, version: u64, now_ms: u64) {
        let Some(s) = self.schedules.get(&id) else {
            return;
        };
        if s.version != version || self.draining {
            return;
        }
        let overlapping = s.last_task.is_some_and(|t| self.tasks.contains_key(&t));
        let full = self.full(s.kind.index(), 1);
        let next = s.cron.next_after(now_ms);
        let mut task_id = None;
        if overlapping || full.is_some() {
            tracing::info!(schedule = %s.name, overlapping, "schedule firing skipped");
        } else {
            let spec = NewTask::new(s.kind.clone(), s.priority).with_schedule(id);
            let creator = format!("schedule:{}", s.name);
            match self.admit(vec![spec], &creator, now_ms) {
                Ok((ids, new)) => {
                    for t in new {
                        self.uncommitted.remove(&t);
                    }
                    task_id = ids.first().copied();
                }
                Err(e) => tracing::warn!(schedule = id, error = %e, "schedule cannot submit"),
            }
        }
        let s = self.schedules.get_mut(&id).expect("checked");
        s.version += 1;
        s.next_fire_ms = next;
        if task_id.is_some() {
            s.last_fire_ms = Some(now_ms);
            s.last_task = task_id;
        } else {
            s.skipped += 1;
        }
        let (record, version) = (schedule_record(s), s.version);
        self.batch
            .writes
            .push(TaskWrite::PutSchedule { id, record });
        self.batch.writes.push(TaskWrite::NextIds {
            task: self.next_id,
            schedule: self.next_schedule_id,
        });
        self.batch.durable = true;
        self.batch.acks.push(Ack::PlaceSchedule { id, version });
    }

    /// Creates, updates or removes the built-in purge schedule to match the config.
    pub(super) fn ensure_purge_schedule(&mut self, now_ms: u64) -> Vec<TaskWrite> {
        let existing = self
            .schedules
            .iter()
            .find(|(_, s)| s.name == PURGE_SCHEDULE)
            .map(|(id, s)| (*id, s.cron_text.clone()));
        let wanted = self.cfg.purge_schedule.clone();
        match (existing, wanted) {
            (None, None) => Vec::new(),
            (Some((id, _)), None) => {
                self.schedules.remove(&id);
                vec![TaskWrite::DeleteSchedule { id }]
            }
            (Some((_, current)), Some(wanted)) if current == wanted => Vec::new(),
            (existing, Some(wanted)) => {
                let Ok(cron) = cron::parse(&wanted) else {
                    return Vec::new();
                };
                let id = existing.map_or_else(
                    || {
                        let id = self.next_schedule_id;
                        self.next_schedule_id += 1;
                        id
                    },
                    |(id, _)| id,
                );
                let s = Schedule {
                    name: PURGE_SCHEDULE.into(),
                    cron_text: wanted,
                    next_fire_ms: cron.next_after(now_ms),
                    cron,
                    kind: Kind::TasksPurge {
                        max_age_s: None,
                        max_tasks: None,
                    },
                    priority: 9,
                    run_missed: false,
                    enabled: true,
                    creator: "cairn".into(),
                    created_ms: now_ms,
                    last_fire_ms: None,
                    last_task: None,
                    skipped: 0,
                    version: 1,
                };
                let record = schedule_record(&s);
                self.schedules.insert(id, s);
                self.place_schedule(id, 1);
                vec![
                    TaskWrite::PutSchedule { id, record },
                    TaskWrite::NextIds {
                        task: self.next_id,
                        schedule: self.next_schedule_id,
                    },
                ]
            }
        }
    }
}

pub(super) fn schedule_record(s: &Schedule) -> ScheduleRecord {
    ScheduleRecord::V1 {
        name: s.name.clone(),
        cron: s.cron_text.clone(),
        kind: s.kind.name().to_owned(),
        payload: s.kind.payload_json(),
        priority: s.priority,
        missed: u8::from(s.run_missed),
        enabled: s.enabled,
        creator: s.creator.clone(),
        created_ms: s.created_ms,
        next_fire_ms: s.next_fire_ms,
        last_fire_ms: s.last_fire_ms,
        last_task: s.last_task,
        skipped: s.skipped,
    }
}

pub(super) fn schedule_from_record(record: ScheduleRecord) -> Result<Schedule, String> {
    let ScheduleRecord::V1 {
        name,
        cron: cron_text,
        kind,
        payload,
        priority,
        missed,
        enabled,
        creator,
        created_ms,
        next_fire_ms,
        last_fire_ms,
        last_task,
        skipped,
    } = record;
    let payload: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| format!("payload: {e}"))?;
    Ok(Schedule {
        name,
        cron: cron::parse(&cron_text)?,
        cron_text,
        kind: Kind::parse(&kind, &payload)?,
        priority,
        run_missed: missed == 1,
        enabled,
        creator,
        created_ms,
        next_fire_ms,
        last_fire_ms,
        last_task,
        skipped,
        version: 1,
    })
}
