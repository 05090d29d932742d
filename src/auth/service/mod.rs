//! The `Auth` service: authentication of each request, sessions, usage and audit; the
//! account operations live in `users.rs` and `keys.rs`.

mod admit;
mod key_admin;
mod login;
mod users;
mod views;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::audit::{AuditLimiter, AuditLog, Event, Retention};
use super::rate::{AddressBuckets, KeyBucket, RateLimitConfig};
use super::throttle::LoginThrottle;
use super::{AuthError, Principal, Role, Scope, ScopeSet, keys};
use crate::store::schema::{KeyRecord, UsageRecord, UserRecord};
use crate::store::{AuditQuery, Store, StoredUser, unix_now};
use crate::telemetry::metrics::AuthMetrics;

pub use views::{
    AuditEntry, KeyView, LoginOutcome, NewKey, NewUser, RateView, UsageView, UserPatch, UserView,
};

/// Settings of the `[auth]` config section, in domain form.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub session_idle: Duration,
    pub session_absolute: Duration,
    pub key_rate: RateLimitConfig,
    pub address_rate: RateLimitConfig,
    pub audit: Retention,
    /// IPv6 clients are keyed on this many leading bits of their address (rate limits,
    /// login throttling, connection counts): one /64 is one client, however it rotates.
    pub ipv6_prefix: u8,
}

/// Request counters of one key since start, plus what the store held at start.
#[derive(Debug, Default)]
struct KeyUsage {
    by_class: [AtomicU64; Scope::ALL.len() + 1],
    /// Metric handles, made on first use so idle classes add no series.
    counters:
        [std::sync::OnceLock<prometheus_client::metrics::counter::Counter>; Scope::ALL.len() + 1],
    last_used_at: AtomicU64,
    last_addr: Mutex<Option<IpAddr>>,
}

#[derive(Debug)]
struct KeyEntry {
    user_id: u64,
    name: String,
    scopes: ScopeSet,
    mac: [u8; 32],
    created_at: u64,
    expires_at: Option<u64>,
    revoked_at: Option<u64>,
    bucket: Arc<KeyBucket>,
    usage: Arc<KeyUsage>,
    custom_rate: bool,
}

#[derive(Debug, Clone)]
struct UserEntry {
    username: String,
    role: Role,
    disabled: bool,
}

/// Every key and user, immutable; replaced whole on any change.
#[derive(Debug, Default)]
struct Snapshot {
    keys: HashMap<u64, KeyEntry>,
    users: HashMap<u64, UserEntry>,
}

/// Usage class names, by `Scope as usize`; the last class is "other" (public, session).
const CLASS_NAMES: [&str; Scope::ALL.len() + 1] = [
    "infer",
    "models:read",
    "models:write",
    "tasks:read",
    "tasks:write",
    "metrics:read",
    "fleet:read",
    "keys:manage",
    "users:manage",
    "other",
];

pub struct Auth {
    store: Arc<Store>,
    secret: Vec<u8>,
    snapshot: ArcSwap<Snapshot>,
    /// Usage as stored at start, added to the live counters when shown or saved.
    usage_base: Mutex<HashMap<u64, UsageRecord>>,
    pub config: AuthConfig,
    pub(super) throttle: LoginThrottle,
    addresses: AddressBuckets,
    /// One `permission_denied` row per actor and minute; the rest are counted into it.
    denied_audit: AuditLimiter,
    /// One failed-setup row per client address and minute.
    pub(super) setup_audit: AuditLimiter,
    hashing: tokio::sync::Semaphore,
    pub audit: AuditLog,
    pub(super) setup: Mutex<Option<super::SetupToken>>,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

fn stored_role(raw: u8) -> Result<Role, AuthError> {
    Role::from_stored(raw)
        .ok_or_else(|| AuthError::Internal(format!("stored role {raw} is unknown")))
}

pub(super) fn user_view(user: &StoredUser) -> Result<UserView, AuthError> {
    let UserRecord::V1 {
        username,
        display_name,
        role,
        disabled,
        created_at,
        updated_at,
        password_changed_at,
        ..
    } = &user.record;
    Ok(UserView {
        id: user.id,
        username: username.clone(),
        display_name: display_name.clone(),
        role: stored_role(*role)?,
        disabled: *disabled,
        created_at: *created_at,
        updated_at: *updated_at,
        password_changed_at: *password_changed_at,
    })
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
}

impl Auth {
    /// Loads keys and users into memory and starts the audit writer.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn new(
        store: Arc<Store>,
        config: AuthConfig,
        metrics: AuthMetrics,
    ) -> Result<Self, AuthError> {
        let secret = store.server_secret()?;
        let usage_base = store.key_usage()?.into_iter().collect();
        let auth = Self {
            audit: AuditLog::start(Arc::clone(&store), config.audit),
            addresses: AddressBuckets::new(config.address_rate),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            ),
            store,
            secret,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            usage_base: Mutex::new(usage_base),
            config,
            throttle: LoginThrottle::default(),
            denied_audit: AuditLimiter::new(Duration::from_secs(60), 10_000),
            setup_audit: AuditLimiter::new(Duration::from_secs(60), 10_000),
            setup: Mutex::new(None),
            metrics,
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Rebuilds the in-memory snapshot from the store, keeping live counters and buckets.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn reload(&self) -> Result<(), AuthError> {
        let old = self.snapshot.load();
        let mut users = HashMap::new();
        for user in self.store.list_users()? {
            let UserRecord::V1 {
                username,
                role,
                disabled,
                ..
            } = user.record;
            users.insert(
                user.id,
                UserEntry {
                    username,
                    role: stored_role(role)?,
                    disabled,
                },
            );
        }
        let mut keys = HashMap::new();
        for key in self.store.list_keys()? {
            let KeyRecord::V1 {
                user_id,
                name,
                scopes,
                mac,
                created_at,
                expires_at,
                revoked_at,
                rate_per_second,
                burst,
            } = key.record;
            let rate = match rate_per_second {
                Some(per_second) => RateLimitConfig {
                    per_second,
                    burst: burst.unwrap_or(per_second),
                },
                None => self.config.key_rate,
            };
            let previous = old.keys.get(&key.id);
            let bucket = match previous {
                Some(p) if p.bucket.config == rate => Arc::clone(&p.bucket),
                _ => Arc::new(KeyBucket::new(rate)),
            };
            let usage =
                previous.map_or_else(|| Arc::new(KeyUsage::default()), |p| Arc::clone(&p.usage));
            let labels = crate::telemetry::metrics::KeyLabels {
                key_id: keys::format_id(key.id),
            };
            if revoked_at.is_some() {
                self.metrics.key_rate_limit.remove(&labels);
            } else {
                self.metrics
                    .key_rate_limit
                    .get_or_create(&labels)
                    .set(i64::from(rate.per_second));
            }
            keys.insert(
                key.id,
                KeyEntry {
                    user_id,
                    name,
                    scopes: ScopeSet(scopes),
                    mac,
                    created_at,
                    expires_at,
                    revoked_at,
                    bucket,
                    usage,
                    custom_rate: rate_per_second.is_some(),
                },
            );
        }
        self.snapshot.store(Arc::new(Snapshot { keys, users }));
        Ok(())
    }

    /// Periodic upkeep: forget idle address buckets, drop expired sessions, save usage.
    pub async fn maintain(self: &Arc<Self>) {
        self.addresses.shrink();
        let auth = Arc::clone(self);
        let _ = blocking(move || {
            let now = unix_now();
            let idle = now.saturating_sub(auth.config.session_idle.as_secs());
            let absolute = now.saturating_sub(auth.config.session_absolute.as_secs());
            auth.store.prune_sessions(idle, absolute)?;
            auth.save_usage()
        })
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "auth upkeep failed"));
    }

    /// Writes the usage counters of every key to the store. Blocking.
    ///
    /// # Errors
    /// I/O failure.
    pub fn save_usage(&self) -> Result<(), AuthError> {
        let snapshot = self.snapshot.load();
        let records: Vec<(u64, UsageRecord)> = snapshot
            .keys
            .keys()
            .map(|id| (*id, self.usage_record(&snapshot, *id)))
            .collect();
        self.store.put_key_usage(&records)?;
        Ok(())
    }

    fn usage_record(&self, snapshot: &Snapshot, id: u64) -> UsageRecord {
        let base = self
            .usage_base
            .lock()
            .expect("poisoned")
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let (mut by_class, mut last_used_at, mut last_addr) = match base {
            UsageRecord::V1 {
                by_class,
                last_used_at,
                last_addr,
            } => (by_class, last_used_at, last_addr),
            UsageRecord::Empty => (Vec::new(), 0, String::new()),
        };
        by_class.resize(CLASS_NAMES.len(), 0);
        if let Some(entry) = snapshot.keys.get(&id) {
            for (total, live) in by_class.iter_mut().zip(&entry.usage.by_class) {
                *total += live.load(Ordering::Relaxed);
            }
            let live_at = entry.usage.last_used_at.load(Ordering::Relaxed);
            if live_at > 0 {
                last_used_at = live_at;
                if let Some(addr) = *entry.usage.last_addr.lock().expect("poisoned") {
                    last_addr = addr.to_string();
                }
            }
        }
        UsageRecord::V1 {
            by_class,
            last_used_at,
            last_addr,
        }
    }

    // ----- audit ----------------------------------------------------------------------

    /// Records an event on behalf of `principal`.
    pub fn record(
        &self,
        principal: &Principal,
        kind: &'static str,
        addr: &str,
        target: &str,
        detail: &str,
        ok: bool,
    ) {
        self.audit.record(Event {
            kind,
            actor: principal.actor(),
            addr: addr.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
            ok,
        });
    }

    /// Records a request refused for a missing permission: one row per actor and minute,
    /// which says how many more were refused since the last one (a key hammering a route
    /// it may not use cannot flood the log).
    pub fn record_denied(&self, principal: &Principal, addr: &str, target: &str, detail: &str) {
        let actor = principal.actor();
        let Some(folded) = self.denied_audit.admit(&actor) else {
            return;
        };
        let detail = if folded > 0 {
            format!(
                "{detail} (and {folded} more refused requests of this caller in the minute before)"
            )
        } else {
            detail.to_owned()
        };
        self.audit.record(Event {
            kind: super::audit::kind::PERMISSION_DENIED,
            actor,
            addr: addr.to_owned(),
            target: target.to_owned(),
            detail,
            ok: false,
        });
    }

    /// Reads the audit log (after committing what is pending).
    ///
    /// # Errors
    /// I/O failure.
    pub async fn audit_entries(
        self: &Arc<Self>,
        query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, AuthError> {
        self.audit.flush().await;
        let auth = Arc::clone(self);
        let records = blocking(move || Ok(auth.store.query_audit(&query)?)).await?;
        Ok(records
            .into_iter()
            .map(|(seq, record)| {
                let crate::store::schema::AuditRecord::V1 {
                    at_ms,
                    kind,
                    actor,
                    addr,
                    target,
                    detail,
                    ok,
                } = record;
                AuditEntry {
                    seq,
                    at_ms,
                    kind,
                    actor,
                    addr,
                    target,
                    detail,
                    ok,
                }
            })
            .collect())
    }

    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// See [`Auth::client_key`].
#[must_use]
pub fn client_key(addr: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

fn check_display_name(name: Option<String>) -> Result<Option<String>, AuthError> {
    match name {
        Some(name) if name.chars().count() > 100 || name.chars().any(char::is_control) => Err(
            AuthError::Invalid("display_name: at most 100 printable characters".into()),
        ),
        Some(name) if name.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    #[test]
    fn ipv6_clients_are_keyed_on_their_prefix() {
        let key = |text: &str, prefix| super::client_key(text.parse::<IpAddr>().unwrap(), prefix);
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 64),
            key("2001:db8:1:2:bbbb::9", 64)
        );
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        assert_eq!(
            key("2001:db8:1:2::1", 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 48), key("2001:db8:0:ffff::2", 48));
        // IPv4 and IPv4-mapped IPv6 are one address each.
        assert_eq!(
            key("::ffff:10.0.0.1", 64),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("10.0.0.1", 64), key("10.0.0.2", 64));
    }
}
