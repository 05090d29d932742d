//! Group commit: one thread takes every batch of writes waiting in its channel, applies
//! them in one redb transaction, commits (durably if any batch asked for it) and hands
//! the acknowledgements back to the loop. Under load many submissions share one fsync;
//! alone, a submission waits for exactly one.
//!
//! In tests the writer can run inline (the loop commits itself), so paused tokio time
//! never advances while a commit is in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;

use super::core::{Ack, Batch};
use crate::store::{Store, TaskWrite};

/// Batches taken into one transaction at most.
const MAX_GROUP: usize = 4096;

/// A commit's outcome and what follows it.
#[derive(Debug)]
pub(super) struct Committed {
    pub result: Result<(), String>,
    pub acks: Vec<Ack>,
}

/// Named points where tests make the scheduler fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this-many commits fail as if the disk had.
    pub fail_commits: AtomicU32,
}

impl Faults {
    fn commit_fails(&self) -> bool {
        self.fail_commits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn commit<'a>(
    store: &Store,
    faults: &Faults,
    writes: impl IntoIterator<Item = &'a TaskWrite>,
    durable: bool,
) -> Result<(), String> {
    if faults.commit_fails() {
        return Err("injected fault: the commit failed".into());
    }
    store
        .apply_task_writes(writes, durable)
        .map_err(|e| e.to_string())
}

/// Commits a group; when the group fails, each batch is tried alone so one bad batch
/// does not fail the others.
fn commit_group(store: &Store, faults: &Faults, group: Vec<Batch>) -> Vec<Committed> {
    let durable = group.iter().any(|b| b.durable);
    // The id counters only grow: one write of the highest values stands for all.
    let mut next = None;
    for write in group.iter().flat_map(|b| &b.writes) {
        if let TaskWrite::NextIds { task, schedule } = write {
            let (t, s) = next.unwrap_or((0, 0));
            next = Some((t.max(*task), s.max(*schedule)));
        }
    }
    let counters = next.map(|(task, schedule)| TaskWrite::NextIds { task, schedule });
    let writes = group
        .iter()
        .flat_map(|b| &b.writes)
        .filter(|w| !matches!(w, TaskWrite::NextIds { .. }))
        .chain(counters.as_ref());
    let empty = group.iter().all(|b| b.writes.is_empty());
    let result = if empty {
        Ok(())
    } else {
        commit(store, faults, writes, durable)
    };
    if result.is_ok() || group.len() == 1 {
        let acks = group.into_iter().flat_map(|b| b.acks).collect();
        return vec![Committed { result, acks }];
    }
    group
        .into_iter()
        .map(|b| Committed {
            result: commit(store, faults, &b.writes, b.durable),
            acks: b.acks,
        })
        .collect()
}

pub(super) enum Msg {
    Batch(Batch),
    Stop,
}

/// Where the loop sends its writes.
pub(super) enum Writer {
    Thread {
        tx: std::sync::mpsc::Sender<Msg>,
        handle: Option<std::thread::JoinHandle<()>>,
    },
    Inline {
        store: Arc<Store>,
        faults: Arc<Faults>,
    },
}

impl Writer {
    /// The group-commit thread; its acknowledgements go to `done`.
    pub fn thread(
        store: Arc<Store>,
        faults: Arc<Faults>,
        done: mpsc::UnboundedSender<Committed>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let handle = std::thread::Builder::new()
            .name("cairn-tasks-writer".into())
            .spawn(move || {
                let mut stop = false;
                while !stop {
                    let Ok(first) = rx.recv() else { break };
                    let mut group = Vec::new();
                    match first {
                        Msg::Batch(b) => group.push(b),
                        Msg::Stop => break,
                    }
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Msg::Batch(b)) => group.push(b),
                            Ok(Msg::Stop) => {
                                stop = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    for committed in commit_group(&store, &faults, group) {
                        if done.send(committed).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Self::Thread {
            tx,
            handle: Some(handle),
        })
    }

    /// Sends a batch; inline, commits it now and returns the outcome.
    pub fn send(&mut self, batch: Batch) -> Option<Committed> {
        match self {
            Self::Thread { tx, .. } => {
                if let Err(e) = tx.send(Msg::Batch(batch)) {
                    let Msg::Batch(batch) = e.0 else {
                        return None;
                    };
                    return Some(Committed {
                        result: Err("the task writer has stopped".into()),
                        acks: batch.acks,
                    });
                }
                None
            }
            Self::Inline { store, faults } => {
                commit_group(store, faults, vec![batch]).into_iter().next()
            }
        }
    }

    /// Commits what is queued, then stops the thread (blocking: call off the runtime).
    pub fn stop(&mut self) {
        if let Self::Thread { tx, handle } = self {
            let _ = tx.send(Msg::Stop);
            if let Some(handle) = handle.take() {
                let _ = handle.join();
            }
        }
    }
}
