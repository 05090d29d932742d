//! The feed of task changes: a ring of the last [`FEED_LEN`] events with a sequence number
//! each, read by the long poll (`events`), by event streams (`read_events` + the
//! `event_seq` watch) and, through the broadcast channel, by waiters on one task.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::Scheduler;
use super::model::TaskEvent;

/// Events the feed keeps for clients that fall behind.
pub(super) const FEED_LEN: usize = 4096;

/// Task changes for the long-poll feed, event streams and waiters.
#[derive(Debug)]
pub(super) struct Feed {
    ring: Mutex<VecDeque<TaskEvent>>,
    pub seq: watch::Sender<u64>,
    pub changes: broadcast::Sender<TaskEvent>,
}

/// What a reader gets after its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRead {
    /// Every event after the cursor (up to the limit asked for), oldest first; empty when
    /// the cursor is the newest.
    Events(Vec<TaskEvent>),
    /// The ring no longer holds every event after the cursor (it fell more than
    /// [`FEED_LEN`] events behind), or the cursor is from before a restart (sequence
    /// numbers start again at 1): the reader must reload, then follow from `latest`.
    Behind { latest: u64 },
}

impl Feed {
    pub fn new() -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(FEED_LEN)),
            seq: watch::Sender::new(0),
            changes: broadcast::Sender::new(FEED_LEN),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<TaskEvent>> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn publish(&self, mut event: TaskEvent) {
        let mut ring = self.ring();
        event.seq = *self.seq.borrow() + 1;
        if ring.len() == FEED_LEN {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        drop(ring);
        self.seq.send_replace(event.seq);
        let _ = self.changes.send(event);
    }

    /// Events after `seq`, oldest first (at most the last [`FEED_LEN`]).
    pub fn after(&self, seq: u64, limit: usize) -> Vec<TaskEvent> {
        self.ring()
            .iter()
            .filter(|e| e.seq > seq)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Events after `seq`, or [`FeedRead::Behind`] when some of them are gone.
    pub fn read(&self, seq: u64, limit: usize) -> FeedRead {
        let ring = self.ring();
        // The ring, not the watch, is the truth here: `publish` updates the watch after it
        // lets go of the ring.
        let (Some(first), Some(last)) = (ring.front(), ring.back()) else {
            return if seq == 0 {
                FeedRead::Events(Vec::new())
            } else {
                FeedRead::Behind { latest: 0 }
            };
        };
        if seq > last.seq || seq.saturating_add(1) < first.seq {
            return FeedRead::Behind { latest: last.seq };
        }
        // Sequence numbers in the ring are consecutive.
        let start = usize::try_from(seq + 1 - first.seq).unwrap_or(usize::MAX);
        FeedRead::Events(
            ring.range(start.min(ring.len())..)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

impl Scheduler {
    /// Events after `seq`; when there are none, waits up to `wait` for the next.
    pub async fn events(&self, seq: u64, wait: Duration, limit: usize) -> Vec<TaskEvent> {
        // A cursor from before a restart (sequence numbers start again at 1) reads from the
        // start.
        let seq = if seq > self.last_event() { 0 } else { seq };
        let mut latest = self.feed.seq.subscribe();
        let found = self.feed.after(seq, limit);
        if !found.is_empty() || wait.is_zero() {
            return found;
        }
        let mut closing = self.closing.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(wait, latest.wait_for(|s| *s > seq)) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        self.feed.after(seq, limit)
    }

    /// Events after `seq` without waiting, or word that the reader fell behind (for
    /// streams, which must not skip a change silently).
    #[must_use]
    pub fn read_events(&self, seq: u64, limit: usize) -> FeedRead {
        self.feed.read(seq, limit)
    }

    /// A watch of the newest sequence number: it changes with every event. Mark it seen
    /// (`borrow_and_update`) before [`Scheduler::read_events`], then wait for `changed`.
    #[must_use]
    pub fn event_seq(&self) -> watch::Receiver<u64> {
        self.feed.seq.subscribe()
    }

    /// A watch that turns `true` when shutdown begins: long-lived readers end then.
    #[must_use]
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Shutdown begins: long polls answer now and event streams end.
    pub fn close_waits(&self) {
        self.closing.send_replace(true);
    }

    /// The newest event's sequence number.
    #[must_use]
    pub fn last_event(&self) -> u64 {
        *self.feed.seq.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Status;

    fn event(id: u64) -> TaskEvent {
        TaskEvent {
            seq: 0,
            id,
            kind: "system.sleep",
            status: Status::Running,
            progress: 0,
            message: String::new(),
            at_ms: 0,
        }
    }

    fn seqs(read: &FeedRead) -> Vec<u64> {
        match read {
            FeedRead::Events(events) => events.iter().map(|e| e.seq).collect(),
            FeedRead::Behind { .. } => panic!("behind: {read:?}"),
        }
    }

    #[test]
    fn reads_after_a_cursor_and_says_when_it_fell_behind() {
        let feed = Feed::new();
        assert_eq!(feed.read(0, 10), FeedRead::Events(Vec::new()));
        // A cursor from a previous run of the process.
        assert_eq!(feed.read(7, 10), FeedRead::Behind { latest: 0 });
        for id in 0..5 {
            feed.publish(event(id));
        }
        assert_eq!(seqs(&feed.read(0, 10)), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(&feed.read(3, 10)), [4, 5]);
        assert_eq!(seqs(&feed.read(1, 2)), [2, 3]);
        assert_eq!(seqs(&feed.read(5, 10)), Vec::<u64>::new());
        assert_eq!(feed.read(6, 10), FeedRead::Behind { latest: 5 });
        let total = u64::try_from(FEED_LEN).unwrap() + 10;
        for id in 5..total {
            feed.publish(event(id));
        }
        // Events 1..=10 are gone: a reader at 9 misses 10; one at 10 misses nothing.
        assert_eq!(feed.read(9, 10), FeedRead::Behind { latest: total });
        assert_eq!(feed.read(0, 10), FeedRead::Behind { latest: total });
        assert_eq!(seqs(&feed.read(10, 2)), [11, 12]);
        assert_eq!(seqs(&feed.read(total - 1, 10)), [total]);
    }
}
