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

    /// Records an event (never blocks).
    pub fn record(&self, event: Event) {
        let record = AuditRecord::V1 {
            at_ms: now_ms(),
            kind: event.kind.to_owned(),
            actor: event.actor,
            addr: event.addr,
            target: event.target,
            detail: event.detail,
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
