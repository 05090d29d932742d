//! Failed-login throttling per username and per client address: after a few failures,
//! each further attempt must wait twice as long as the last (capped), whatever the
//! password. Unknown usernames are tracked like real ones, so the throttle reveals nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE_FAILURES: u32 = 5;
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(60 * 60);
const MAX_TRACKED: usize = 100_000;

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

#[derive(Debug, Default)]
pub struct LoginThrottle {
    by_user: Mutex<HashMap<String, Failures>>,
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// `Some(wait)` when this attempt must be refused without checking the password.
    pub fn check(&self, username: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let user = self
            .by_user
            .lock()
            .expect("poisoned")
            .get(username)
            .and_then(|f| f.locked_until());
        let addr = addr.and_then(|a| {
            self.by_addr
                .lock()
                .expect("poisoned")
                .get(&a)
                .and_then(|f| f.locked_until())
        });
        [user, addr]
            .into_iter()
            .flatten()
            .max()
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        bump(
            &mut self.by_user.lock().expect("poisoned"),
            username.to_owned(),
            now,
        );
        if let Some(addr) = addr {
            bump(&mut self.by_addr.lock().expect("poisoned"), addr, now);
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.by_user.lock().expect("poisoned").remove(username);
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, key: K, now: Instant) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| now.duration_since(f.last) < MEMORY);
    }
    let entry = map.entry(key).or_insert(Failures {
        count: 0,
        last: now,
    });
    if now.duration_since(entry.last) > MEMORY {
        entry.count = 0;
    }
    entry.count += 1;
    entry.last = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_free_failures_and_grow() {
        let throttle = LoginThrottle::default();
        let addr: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for _ in 0..FREE_FAILURES - 1 {
            throttle.failed("ghost", addr);
        }
        assert!(throttle.check("ghost", addr).is_none());
        throttle.failed("ghost", addr);
        let first = throttle.check("ghost", None).unwrap();
        throttle.failed("ghost", addr);
        let second = throttle.check("ghost", None).unwrap();
        assert!(second > first);
        // The address is throttled for other usernames too.
        assert!(throttle.check("someone-else", addr).is_some());
        throttle.succeeded("ghost");
        assert!(throttle.check("ghost", None).is_none());
    }
}
