//! The append-only audit log of security events. Events go through a channel to one
//! writer thread, which commits them in batches (one fsync for many events), prunes by
//! age and count, and flushes on demand (before reads, at shutdown).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::store::Store;
use crate::store::schema::AuditRecord;

/// Event kinds, as stored and filtered on.
pub mod kind {
    pub const LOGIN_OK: &str = "login_ok";
    pub const LOGIN_FAILED: &str = "login_failed";
    pub const LOGOUT: &str = "logout";
    pub const SETUP: &str = "setup";
    pub const USER_CREATED: &str = "user_created";
    pub const USER_UPDATED: &str = "user_updated";
    pub const USER_DELETED: &str = "user_deleted";
    pub const PASSWORD_CHANGED: &str = "password_changed";
    pub const KEY_CREATED: &str = "key_created";
    pub const KEY_REVOKED: &str = "key_revoked";
    pub const PERMISSION_DENIED: &str = "permission_denied";
}

/// One event before it is stored.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub actor: String,
    pub addr: String,
    pub target: String,
    pub detail: String,
    pub ok: bool,
}

/// Retention of the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_entries: u64,
}

/// Longest stored actor, address and free text, in bytes (longer ones end in `…`).
pub const MAX_ACTOR: usize = 64;
const MAX_ADDR: usize = 64;
const MAX_TEXT: usize = 512;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…`.
#[must_use]
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Folds repeated events of one key (an actor, an address) into one row per window: the
/// first event of a window is written, the others are counted and reported on the next
/// row written for that key. Bounded by count like the login throttle.
#[derive(Debug)]
pub struct AuditLimiter {
    window: Duration,
    keys: std::sync::Mutex<super::throttle::BoundedMap<String, LimiterWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct LimiterWindow {
    started: Option<Instant>,
    folded: u64,
}

impl AuditLimiter {
    #[must_use]
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            keys: std::sync::Mutex::new(super::throttle::BoundedMap::new(capacity)),
        }
    }

    /// `Some(n)` when a row may be written now (`n` events of this key were folded since
    /// the last row); `None` when this event is folded into a later row.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let window = self.window;
        self.keys.lock().expect("poisoned").update(
            key.to_owned(),
            || LimiterWindow {
                started: None,
                folded: 0,
            },
            |entry| match entry.started {
                Some(started) if now.duration_since(started) < window => {
                    entry.folded += 1;
                    None
                }
                _ => {
                    let folded = entry.folded;
                    *entry = LimiterWindow {
                        started: Some(now),
                        folded: 0,
                    };
                    Some(folded)
                }
            },
        )
    }
}

enum Message {
    Event(AuditRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AuditLog {
    /// Starts the writer thread. It ends when every `AuditLog` clone is dropped, after
    /// writing what it holds.
    ///
    /// # Panics
    /// When the OS refuses a thread.
    #[must_use]
    pub fn start(store: Arc<Store>, retention: Retention) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("cairn-audit".into())
            .spawn(move || writer(&store, &rx, retention))
            .expect("spawn audit writer");
        Self { tx }
    }

    /// Records an event (never blocks). Long fields are cut (an anonymous caller chooses
    /// the actor of a failed login).
    pub fn record(&self, event: Event) {
        let record = AuditRecord::V1 {
            at_ms: now_ms(),
            kind: event.kind.to_owned(),
            actor: clip(event.actor, MAX_ACTOR),
            addr: clip(event.addr, MAX_ADDR),
            target: clip(event.target, MAX_TEXT),
            detail: clip(event.detail, MAX_TEXT),
            ok: event.ok,
        };
        if self.tx.send(Message::Event(record)).is_err() {
            tracing::error!("audit writer is gone; event lost");
        }
    }

    /// Waits until every event recorded so far is committed.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

fn writer(store: &Store, rx: &Receiver<Message>, retention: Retention) {
    const BATCH: usize = 512;
    const PRUNE_EVERY: Duration = Duration::from_secs(3600);
    let mut last_prune = Instant::now()
        .checked_sub(PRUNE_EVERY)
        .unwrap_or_else(Instant::now);
    let mut pending = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    loop {
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for message in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH))
        {
            match message {
                Message::Event(record) => pending.push(record),
                Message::Flush(done) => waiters.push(done),
            }
        }
        if !pending.is_empty() {
            if let Err(e) = store.append_audit(&pending) {
                tracing::error!(error = %e, lost = pending.len(), "cannot write audit entries");
            }
            pending.clear();
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let cutoff = now_ms()
                .saturating_sub(u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX));
            match store.prune_audit(cutoff, retention.max_entries) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "pruned audit log"),
                Err(e) => tracing::warn!(error = %e, "cannot prune audit log"),
            }
        }
    }
    if !pending.is_empty() {
        let _ = store.append_audit(&pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_and_folding() {
        assert_eq!(clip("short".into(), 10), "short");
        let long = clip("é".repeat(100), 64);
        assert!(long.len() <= 64 && long.ends_with('…'), "{long}");
        let limiter = AuditLimiter::new(Duration::from_secs(60), 10);
        assert_eq!(limiter.admit("key"), Some(0));
        assert_eq!(limiter.admit("key"), None);
        assert_eq!(limiter.admit("key"), None);
        assert_eq!(limiter.admit("other"), Some(0));
        let quick = AuditLimiter::new(Duration::ZERO, 10);
        assert_eq!(quick.admit("key"), Some(0));
        assert_eq!(quick.admit("key"), Some(0));
    }
}
