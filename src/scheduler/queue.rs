//! The in-memory structures of the scheduler loop: ready queues with aging, the timer
//! set, and the back-off with full jitter. Entries are deleted lazily: each carries the
//! task's version, and an entry whose task has moved on is dropped when it is met.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A task ready to run, as its queue holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub enqueued_ms: u64,
    pub id: u64,
    pub version: u64,
}

/// How a queue head ranks: effective priority, then the longest waiting, then the base
/// priority; and where it is.
type Ranked = ((u64, std::cmp::Reverse<u64>, u8), (u8, usize));

/// One FIFO per (priority, kind): the head of each is its oldest task, so the best task
/// overall is the best of the heads.
#[derive(Debug, Default)]
pub struct ReadyQueues {
    queues: BTreeMap<(u8, usize), VecDeque<Entry>>,
}

impl ReadyQueues {
    pub fn push(&mut self, priority: u8, kind: usize, entry: Entry) {
        self.queues
            .entry((priority, kind))
            .or_default()
            .push_back(entry);
    }

    /// Takes the task to run next among kinds that `allowed` admits: the highest effective
    /// priority (`priority + waited / aging_step`), the longest waiting on a tie. Entries
    /// that `live` rejects are dropped on the way.
    pub fn pick(
        &mut self,
        now_ms: u64,
        aging_step_ms: u64,
        allowed: impl Fn(usize) -> bool,
        live: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        let mut best: Option<Ranked> = None;
        for (&(priority, kind), queue) in &mut self.queues {
            if !allowed(kind) {
                continue;
            }
            while queue.front().is_some_and(|e| !live(e)) {
                queue.pop_front();
            }
            let Some(head) = queue.front() else {
                continue;
            };
            let aged = now_ms.saturating_sub(head.enqueued_ms) / aging_step_ms.max(1);
            let rank = (
                u64::from(priority) + aged,
                std::cmp::Reverse(head.enqueued_ms),
                priority,
            );
            if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                best = Some((rank, (priority, kind)));
            }
        }
        let (_, slot) = best?;
        let queue = self.queues.get_mut(&slot)?;
        let entry = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&slot);
        }
        entry
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A scheduled task's `run_at` has come.
    Due { id: u64, version: u64 },
    /// The soft time limit of an attempt.
    Soft { id: u64, attempt: u32 },
    /// The hard time limit of an attempt.
    Hard { id: u64, attempt: u32 },
    /// A canceled attempt's grace is over.
    Grace { id: u64, attempt: u32 },
    /// A schedule fires.
    Cron { schedule: u64, version: u64 },
    /// A submission held while its attempt runs ahead goes to the writer.
    Release { id: u64 },
}

#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(u64, u64, Timer)>,
    seq: u64,
}

impl Timers {
    pub fn add(&mut self, at_ms: u64, timer: Timer) {
        self.seq += 1;
        self.set.insert((at_ms, self.seq, timer));
    }

    /// When the next timer fires.
    #[must_use]
    pub fn next_ms(&self) -> Option<u64> {
        self.set.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns every timer due at `now_ms`, in order.
    pub fn pop_due(&mut self, now_ms: u64) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.set.first() {
            if *at > now_ms {
                break;
            }
            let (_, _, timer) = self.set.pop_first().expect("checked");
            due.push(timer);
        }
        due
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// SplitMix64: enough randomness for jitter, seedable for tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeded from the OS.
    #[must_use]
    pub fn from_os() -> Self {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        Self(u64::from_le_bytes(bytes))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }
}

/// The back-off before the retry that follows failed attempt `attempt` (1-based): full
/// jitter, a uniform time in `0..=min(cap, base * 2^(attempt-1))`.
pub fn backoff_ms(rng: &mut Rng, base_ms: u64, cap_ms: u64, attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(40);
    let ceiling = base_ms.saturating_mul(1u64 << exp).min(cap_ms);
    rng.up_to(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, enqueued_ms: u64) -> Entry {
        Entry {
            enqueued_ms,
            id,
            version: 1,
        }
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = ReadyQueues::default();
        q.push(1, 0, entry(1, 0));
        q.push(5, 0, entry(2, 10));
        q.push(5, 0, entry(3, 5));
        q.push(5, 1, entry(4, 1));
        let order: Vec<u64> = std::iter::from_fn(|| q.pick(20, 1_000_000, |_| true, |_| true))
            .map(|e| e.id)
            .collect();
        // Per queue FIFO; among heads, the longest waiting on equal priority.
        assert_eq!(order, [4, 2, 3, 1]);
    }

    #[test]
    fn aging_lifts_a_starved_task() {
        let mut q = ReadyQueues::default();
        q.push(0, 0, entry(1, 0));
        q.push(9, 0, entry(2, 9_000));
        // At t = 10 s with a 1 s step, the low task has aged by 10 levels: 10 > 9.
        assert_eq!(q.pick(10_000, 1_000, |_| true, |_| true).unwrap().id, 1);
    }

    #[test]
    fn blocked_kinds_and_stale_entries_are_skipped() {
        let mut q = ReadyQueues::default();
        q.push(9, 1, entry(1, 0));
        q.push(5, 0, entry(2, 0));
        q.push(5, 0, entry(3, 0));
        assert_eq!(q.pick(0, 1000, |k| k != 1, |e| e.id != 2).unwrap().id, 3);
        assert!(q.pick(0, 1000, |k| k != 1, |_| true).is_none());
        assert_eq!(q.pick(0, 1000, |_| true, |_| true).unwrap().id, 1);
    }

    #[test]
    fn backoff_has_full_jitter_under_the_cap() {
        let mut rng = Rng::new(7);
        for attempt in 1..=20 {
            let ceiling = (1000u64 << (attempt - 1).min(40)).min(60_000);
            let samples: Vec<u64> = (0..200)
                .map(|_| backoff_ms(&mut rng, 1000, 60_000, attempt))
                .collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            assert!(
                samples.iter().any(|d| *d < ceiling / 2),
                "jitter reaches low values"
            );
        }
    }

    #[test]
    fn timers_fire_in_order() {
        let mut t = Timers::default();
        t.add(30, Timer::Due { id: 3, version: 1 });
        t.add(10, Timer::Due { id: 1, version: 1 });
        t.add(20, Timer::Hard { id: 2, attempt: 1 });
        assert_eq!(t.next_ms(), Some(10));
        assert_eq!(t.pop_due(25).len(), 2);
        assert_eq!(t.len(), 1);
    }
}
