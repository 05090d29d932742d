//! Failed-login throttling per username and per client address: after a few failures,
//! each further attempt must wait twice as long as the last (capped). Unknown usernames
//! are tracked like real ones, so the throttle reveals nothing.
//!
//! The two sides play different parts. A throttled *address* is refused outright,
//! whatever the password. A throttled *username* only turns wrong passwords into 429s:
//! the right password from an address that is not throttled still gets in, so failures
//! from elsewhere can never lock a user (the admin) out.
//!
//! Memory is bounded by count: each map keeps at most a fixed number of entries and
//! forgets the least recently failed one first. Usernames are checked against the
//! username rules (at most 32 bytes) before they get here, so the count bounds the bytes.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE_FAILURES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(60 * 60);
const MAX_USERS: usize = 10_000;
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn locked_until(self) -> Option<Instant> {
        if self.count < FREE_FAILURES {
            return None;
        }
        let doublings = (self.count - FREE_FAILURES).min(20);
        let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
        Some(self.last + delay)
    }
}

/// A map with at most `capacity` entries that forgets the least recently updated first.
#[derive(Debug)]
pub(super) struct BoundedMap<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64)>,
    /// Update stamp → key, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Updates (or inserts with `default`) the entry of `key`, marking it most recent.
    pub(super) fn update<R>(
        &mut self,
        key: K,
        default: impl FnOnce() -> V,
        change: impl FnOnce(&mut V) -> R,
    ) -> R {
        let stamp = self.next;
        self.next += 1;
        if let Some((value, old)) = self.entries.get_mut(&key) {
            self.order.remove(old);
            *old = stamp;
            self.order.insert(stamp, key);
            return change(value);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let mut value = default();
        let result = change(&mut value);
        self.order.insert(stamp, key.clone());
        self.entries.insert(key, (value, stamp));
        result
    }

    pub(super) fn remove(&mut self, key: &K) {
        if let Some((_, stamp)) = self.entries.remove(key) {
            self.order.remove(&stamp);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug)]
pub struct LoginThrottle {
    by_user: Mutex<BoundedMap<String, Failures>>,
    by_addr: Mutex<BoundedMap<IpAddr, Failures>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::with_capacity(MAX_USERS, MAX_ADDRESSES)
    }
}

fn wait(failures: Option<&Failures>, now: Instant) -> Option<Duration> {
    let until = failures.and_then(|f| f.locked_until())?;
    (until > now).then(|| until - now)
}

impl LoginThrottle {
    fn with_capacity(users: usize, addresses: usize) -> Self {
        Self {
            by_user: Mutex::new(BoundedMap::new(users)),
            by_addr: Mutex::new(BoundedMap::new(addresses)),
        }
    }

    /// `Some(wait)` when attempts from `addr` (already reduced to its key) must be refused
    /// without looking at the password.
    pub fn address_wait(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let addr = addr?;
        wait(
            self.by_addr.lock().expect("poisoned").get(&addr),
            Instant::now(),
        )
    }

    /// `Some(wait)` when `username` has failed too often lately (from anywhere): a wrong
    /// password then answers 429, a right one from an unthrottled address still gets in.
    pub fn user_wait(&self, username: &str) -> Option<Duration> {
        wait(
            self.by_user
                .lock()
                .expect("poisoned")
                .get(&username.to_owned()),
            Instant::now(),
        )
    }

    /// Counts a failure against the username (when it is a valid one) and the address.
    pub fn failed(&self, username: Option<&str>, addr: Option<IpAddr>) {
        let now = Instant::now();
        if let Some(username) = username {
            bump(
                &mut self.by_user.lock().expect("poisoned"),
                username.to_owned(),
                now,
            );
        }
        if let Some(addr) = addr {
            bump(&mut self.by_addr.lock().expect("poisoned"), addr, now);
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.by_user
            .lock()
            .expect("poisoned")
            .remove(&username.to_owned());
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (
            self.by_user.lock().unwrap().len(),
            self.by_addr.lock().unwrap().len(),
        )
    }
}

fn bump<K: Hash + Eq + Clone>(map: &mut BoundedMap<K, Failures>, key: K, now: Instant) {
    map.update(
        key,
        || Failures {
            count: 0,
            last: now,
        },
        |entry| {
            if now.duration_since(entry.last) > MEMORY {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_free_failures_and_grow() {
        let throttle = LoginThrottle::default();
        let addr: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed(Some("ghost"), addr);
        }
        assert!(throttle.address_wait(addr).is_none());
        assert!(throttle.user_wait("ghost").is_none());
        throttle.failed(Some("ghost"), addr);
        let first = throttle.user_wait("ghost").unwrap();
        throttle.failed(Some("ghost"), addr);
        let second = throttle.user_wait("ghost").unwrap();
        assert!(second > first);
        // The address is throttled whatever the username.
        assert!(throttle.address_wait(addr).is_some());
        assert!(throttle.address_wait(Some([10, 0, 0, 2].into())).is_none());
        throttle.succeeded("ghost");
        assert!(throttle.user_wait("ghost").is_none());
    }

    #[test]
    fn maps_stay_bounded_and_forget_the_oldest() {
        let throttle = LoginThrottle::with_capacity(100, 50);
        for i in 0..10_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            throttle.failed(Some(&format!("user{i}")), Some(addr));
        }
        assert_eq!(throttle.sizes(), (100, 50));
        // The newest are kept, the oldest forgotten.
        for _ in 0..FREE_FAILURES {
            throttle.failed(Some("user9999"), None);
        }
        assert!(throttle.user_wait("user9999").is_some());
        assert!(throttle.user_wait("user0").is_none());
        let mut map = BoundedMap::new(2);
        map.update(1, || 0, |v| *v += 1);
        map.update(2, || 0, |v| *v += 1);
        map.update(1, || 0, |v| *v += 1);
        map.update(3, || 0, |v| *v += 1);
        assert_eq!(map.get(&1), Some(&2));
        assert_eq!(map.get(&2), None);
        assert_eq!(map.get(&3), Some(&1));
    }
}
