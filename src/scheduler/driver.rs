//! The scheduler loop: one tokio task that owns the [`Core`], feeds it commands (the
//! control lane first), commit acknowledgements, attempt outcomes and timer wake-ups, and
//! carries out what it asks: writes to the writer, attempts onto the runtime, events to
//! the feed. Each step of the core runs under `catch_unwind`, so a bug in one command
//! cannot stop the scheduler.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::core::{Core, Reply};
use super::feed::Feed;
use super::model::Failure;
use super::run::{Attempt, Services, execute};
use super::writer::{Committed, Writer};
use super::{NewSchedule, NewTask};
use crate::store::schema::TaskRecord;

/// What the API asks of the loop.
#[derive(Debug)]
pub(super) enum Command {
    Submit {
        tasks: Vec<NewTask>,
        creator: String,
        reply: Reply<Vec<u64>>,
    },
    Cancel {
        id: u64,
        reply: Reply<()>,
    },
    Pause {
        id: u64,
        reply: Reply<()>,
    },
    Resume {
        id: u64,
        reply: Reply<()>,
    },
    Retry {
        id: u64,
        record: Box<TaskRecord>,
        reply: Reply<()>,
    },
    Delete {
        id: u64,
        reply: Reply<()>,
    },
    Purge {
        max_age_ms: Option<u64>,
        max_tasks: Option<u64>,
        reply: Reply<u64>,
    },
    CreateSchedule {
        spec: NewSchedule,
        creator: String,
        reply: Reply<u64>,
    },
    DeleteSchedule {
        id: u64,
        reply: Reply<()>,
    },
    /// Start no more work; stop when nothing runs or after `grace`.
    Drain {
        grace: Duration,
        reply: oneshot::Sender<()>,
    },
}

/// What attempts report.
#[derive(Debug)]
pub(super) enum Event {
    Done {
        id: u64,
        attempt: u32,
        outcome: Result<String, Failure>,
    },
    Progress {
        id: u64,
        attempt: u32,
        percent: u8,
        message: String,
    },
}

/// Wall-clock milliseconds derived from tokio's clock, so paused time in tests moves
/// both together.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    base: Instant,
    base_ms: u64,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            base_ms: super::wall_ms(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }

    pub fn instant_at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

pub(super) struct Driver {
    pub core: Core,
    pub clock: Clock,
    pub writer: Option<Writer>,
    pub control_rx: mpsc::UnboundedReceiver<Command>,
    pub control_tx: mpsc::UnboundedSender<Command>,
    pub submit_rx: mpsc::Receiver<Command>,
    pub events_rx: mpsc::UnboundedReceiver<Event>,
    pub events_tx: mpsc::UnboundedSender<Event>,
    pub commits_rx: mpsc::UnboundedReceiver<Committed>,
    pub services: Arc<Services>,
    pub feed: Arc<Feed>,
    pub handles: HashMap<u64, AbortHandle>,
    pub inline: VecDeque<Committed>,
    pub stop_at: Option<Instant>,
    pub drained: Vec<oneshot::Sender<()>>,
}

/// Items taken per wake-up before the step's writes go out.
const STEP_ITEMS: usize = 4096;

impl Driver {
    fn guarded(&mut self, what: &str, step: impl FnOnce(&mut Core, u64)) {
        let now = self.clock.now_ms();
        if std::panic::catch_unwind(AssertUnwindSafe(|| step(&mut self.core, now))).is_err() {
            tracing::error!(step = what, "a scheduler step panicked; the loop goes on");
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Submit {
                tasks,
                creator,
                reply,
            } => self.guarded("submit", |c, now| c.submit(tasks, &creator, reply, now)),
            Command::Cancel { id, reply } => {
                self.guarded("cancel", |c, now| c.cancel(id, reply, now))
            }
            Command::Pause { id, reply } => self.guarded("pause", |c, _| c.pause(id, reply)),
            Command::Resume { id, reply } => {
                self.guarded("resume", |c, now| c.resume(id, reply, now))
            }
            Command::Retry { id, record, reply } => {
                self.guarded("retry", |c, now| c.retry(id, *record, reply, now));
            }
            Command::Delete { id, reply } => self.guarded("delete", |c, _| c.delete(id, reply)),
            Command::Purge {
                max_age_ms,
                max_tasks,
                reply,
            } => self.guarded("purge", |c, now| {
                let age = max_age_ms.unwrap_or(c.cfg.retention_ms);
                let count = max_tasks.unwrap_or(c.cfg.retention_max_tasks);
                c.purge(age, count, reply, now);
            }),
            Command::CreateSchedule {
                spec,
                creator,
                reply,
            } => self.guarded("schedule", |c, now| {
                c.create_schedule(spec, &creator, reply, now)
            }),
            Command::DeleteSchedule { id, reply } => {
                self.guarded("unschedule", |c, _| c.delete_schedule(id, reply));
            }
            Command::Drain { grace, reply } => {
                self.core.drain();
                let at = Instant::now() + grace;
                self.stop_at = Some(self.stop_at.map_or(at, |s| s.min(at)));
                self.drained.push(reply);
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Done {
                id,
                attempt,
                outcome,
            } => {
                self.handles.remove(&id);
                self.guarded("done", |c, now| c.attempt_done(id, attempt, outcome, now));
            }
            Event::Progress {
                id,
                attempt,
                percent,
                message,
            } => self.guarded("progress", |c, now| {
                c.progress(id, attempt, percent, message, now)
            }),
        }
    }

    fn committed(&mut self, committed: Committed) {
        self.guarded("commit", |c, now| {
            c.committed(&committed.result, committed.acks, now)
        });
    }

    /// Takes whatever else is ready without waiting, control lane first.
    fn take_ready(&mut self) {
        for _ in 0..STEP_ITEMS {
            if let Ok(command) = self.control_rx.try_recv() {
                self.command(command);
            } else if let Ok(committed) = self.commits_rx.try_recv() {
                self.committed(committed);
            } else if let Ok(event) = self.events_rx.try_recv() {
                self.event(event);
            } else if let Some(committed) = self.inline.pop_front() {
                self.committed(committed);
            } else if let Ok(command) = self.submit_rx.try_recv() {
                self.command(command);
            } else {
                break;
            }
        }
    }

    /// Timers, dispatch, then out with the step's writes and effects.
    fn flush(&mut self) {
        self.guarded("tick", |c, now| {
            c.fire_timers(now);
            c.dispatch(now);
        });
        let (batch, effects) = self.core.take_output();
        if !batch.is_empty()
            && let Some(writer) = self.writer.as_mut()
            && let Some(committed) = writer.send(batch)
        {
            self.inline.push_back(committed);
        }
        for effect in effects {
            match effect {
                super::core::Effect::Start {
                    id,
                    attempt,
                    kind,
                    token,
                } => {
                    let ctx = Attempt {
                        id,
                        attempt,
                        token,
                        services: Arc::clone(&self.services),
                        events: self.events_tx.clone(),
                        control: self.control_tx.clone(),
                    };
                    let events = self.events_tx.clone();
                    let handle = tokio::spawn(async move {
                        let outcome = AssertUnwindSafe(execute(kind, ctx))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Err(Failure::terminal("the task panicked")));
                        let _ = events.send(Event::Done {
                            id,
                            attempt,
                            outcome,
                        });
                    });
                    self.handles.insert(id, handle.abort_handle());
                }
                super::core::Effect::Abort { id } => {
                    if let Some(handle) = self.handles.remove(&id) {
                        handle.abort();
                    }
                }
                super::core::Effect::Event(event) => self.feed.publish(event),
            }
        }
    }

    fn done_draining(&self) -> bool {
        self.core.draining
            && (self.core.running.is_empty() || self.stop_at.is_some_and(|s| Instant::now() >= s))
            && self.inline.is_empty()
    }

    pub async fn run(mut self) {
        let far = || Instant::now() + Duration::from_secs(86_400);
        loop {
            self.take_ready();
            self.flush();
            if !self.inline.is_empty() {
                continue;
            }
            if self.done_draining() {
                break;
            }
            let wake = self.core.next_wake_ms().map(|ms| self.clock.instant_at(ms));
            let stop = self.stop_at;
            tokio::select! {
                biased;
                command = self.control_rx.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(committed) = self.commits_rx.recv() => self.committed(committed),
                Some(event) = self.events_rx.recv() => self.event(event),
                Some(command) = self.submit_rx.recv() => self.command(command),
                () = tokio::time::sleep_until(wake.unwrap_or_else(far)), if wake.is_some() => {}
                () = tokio::time::sleep_until(stop.unwrap_or_else(far)), if stop.is_some() => {}
            }
        }
        self.stop().await;
    }

    /// Writes what is left, stops the writer, answers the last acknowledgements.
    async fn stop(mut self) {
        for handle in self.handles.values() {
            handle.abort();
        }
        self.flush();
        if let Some(mut writer) = self.writer.take() {
            let writer = tokio::task::spawn_blocking(move || {
                writer.stop();
                writer
            })
            .await;
            drop(writer);
        }
        while let Some(committed) = self.inline.pop_front() {
            self.committed(committed);
        }
        while let Ok(committed) = self.commits_rx.try_recv() {
            self.committed(committed);
        }
        let (_, effects) = self.core.take_output();
        for effect in effects {
            if let super::core::Effect::Event(event) = effect {
                self.feed.publish(event);
            }
        }
        tracing::info!(
            running = self.core.running.len(),
            "task scheduler stopped; unfinished attempts run again at the next start"
        );
        for reply in self.drained.drain(..) {
            let _ = reply.send(());
        }
    }
}
