//! The `Auth` service: authentication of each request, and the account operations behind
//! the users, keys and session routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::audit::{self, AuditLog, Event, Retention};
use super::rate::{AddressBuckets, KeyBucket, RateLimitConfig, RateLimited};
use super::throttle::LoginThrottle;
use super::{AuthError, Credential, Principal, Role, Scope, ScopeSet, keys, passwords, sessions};
use crate::store::schema::{KeyRecord, SessionRecord, UsageRecord, UserRecord};
use crate::store::{AuditQuery, Store, StoreError, StoredUser, unix_now};
use crate::telemetry::metrics::AuthMetrics;

/// Settings of the `[auth]` config section, in domain form.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub session_idle: Duration,
    pub session_absolute: Duration,
    pub key_rate: RateLimitConfig,
    pub address_rate: RateLimitConfig,
    pub audit: Retention,
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

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: u64,
    pub username: String,
    pub display_name: Option<String>,
    pub role: Role,
    pub disabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    pub password_changed_at: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateView {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    /// Requests by the scope their route needs (`public` and `session` for the rest).
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    pub last_used_at: Option<u64>,
    pub last_used_addr: Option<String>,
}

/// An API key as the API shows it (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub user_id: u64,
    pub username: String,
    pub scopes: Vec<&'static str>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub state: &'static str,
    pub rate_limit: RateView,
    pub usage: UsageView,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub display_name: Option<Option<String>>,
    pub password: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<u64>,
    pub rate: Option<RateLimitConfig>,
    /// Create the key for this user instead of the caller (needs `users:manage`).
    pub for_user: Option<String>,
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    pub token: String,
    pub csrf: [u8; 32],
    pub user: UserView,
    pub expires_at: u64,
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
    throttle: LoginThrottle,
    addresses: AddressBuckets,
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

    /// Checks a bearer key: the hot path (no store access, no lock).
    ///
    /// # Errors
    /// Malformed, unknown, wrong secret, expired, revoked, owner deleted or disabled.
    pub fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let parsed = keys::parse(key).ok_or(AuthError::MalformedHeader)?;
        let snapshot = self.snapshot.load();
        let entry = snapshot
            .keys
            .get(&parsed.id)
            .ok_or(AuthError::BadCredentials)?;
        if !keys::mac_matches(&entry.mac, &keys::mac(&self.secret, parsed.secret)) {
            return Err(AuthError::BadCredentials);
        }
        if entry.revoked_at.is_some() {
            return Err(AuthError::KeyRevoked);
        }
        if entry.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(AuthError::KeyExpired);
        }
        let owner = snapshot
            .users
            .get(&entry.user_id)
            .ok_or(AuthError::BadCredentials)?;
        if owner.disabled {
            return Err(AuthError::BadCredentials);
        }
        Ok(Principal {
            user_id: entry.user_id,
            username: owner.username.clone(),
            role: owner.role,
            scopes: entry.scopes.intersect(owner.role.scopes()),
            credential: Credential::Key { key_id: parsed.id },
        })
    }

    /// Takes a token from the key's bucket and counts the request in its usage.
    ///
    /// # Errors
    /// The key's bucket is empty.
    pub fn admit_key(
        &self,
        key_id: u64,
        class: Option<Scope>,
        addr: Option<IpAddr>,
    ) -> Result<(), RateLimited> {
        let snapshot = self.snapshot.load();
        let Some(entry) = snapshot.keys.get(&key_id) else {
            return Ok(());
        };
        if let Err(limited) = entry.bucket.check() {
            self.metrics
                .rate_limited
                .get_or_create(&crate::telemetry::metrics::LimiterLabels { limiter: "key" })
                .inc();
            return Err(limited);
        }
        let class_index = class.map_or(Scope::ALL.len(), Scope::class);
        entry.usage.by_class[class_index].fetch_add(1, Ordering::Relaxed);
        entry
            .usage
            .last_used_at
            .store(unix_now(), Ordering::Relaxed);
        if let Some(addr) = addr {
            *entry.usage.last_addr.lock().expect("poisoned") = Some(addr);
        }
        entry.usage.counters[class_index]
            .get_or_init(|| {
                self.metrics
                    .key_requests
                    .get_or_create(&crate::telemetry::metrics::KeyClassLabels {
                        key_id: keys::format_id(key_id),
                        class: CLASS_NAMES[class_index],
                    })
                    .clone()
            })
            .inc();
        Ok(())
    }

    /// Takes a token from the client address's bucket (requests without a key).
    ///
    /// # Errors
    /// The address's bucket is empty.
    pub fn admit_address(&self, addr: IpAddr) -> Result<(), RateLimited> {
        self.addresses.check(addr).inspect_err(|_| {
            self.metrics
                .rate_limited
                .get_or_create(&crate::telemetry::metrics::LimiterLabels { limiter: "address" })
                .inc();
        })
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

    // ----- sessions -------------------------------------------------------------------

    /// Checks a session cookie.
    ///
    /// # Errors
    /// Unknown or expired session, or its user is gone or disabled.
    pub async fn authenticate_session(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let hash = sessions::token_hash(token);
        let auth = Arc::clone(self);
        let record = blocking(move || Ok(auth.store.session(&hash)?))
            .await?
            .ok_or(AuthError::SessionExpired)?;
        let SessionRecord::V1 {
            user_id,
            created_at,
            last_seen,
            csrf,
            addr,
        } = record;
        let now = unix_now();
        if now.saturating_sub(last_seen) > self.config.session_idle.as_secs()
            || now.saturating_sub(created_at) > self.config.session_absolute.as_secs()
        {
            let auth = Arc::clone(self);
            let _ = blocking(move || Ok(auth.store.delete_session(&hash)?)).await;
            return Err(AuthError::SessionExpired);
        }
        let snapshot = self.snapshot.load();
        let user = snapshot
            .users
            .get(&user_id)
            .filter(|u| !u.disabled)
            .ok_or(AuthError::SessionExpired)?;
        if now.saturating_sub(last_seen) >= 30 {
            let auth = Arc::clone(self);
            let touched = SessionRecord::V1 {
                user_id,
                created_at,
                last_seen: now,
                csrf,
                addr,
            };
            tokio::task::spawn_blocking(move || auth.store.touch_session(&hash, &touched));
        }
        Ok(Principal {
            user_id,
            username: user.username.clone(),
            role: user.role,
            scopes: user.role.scopes(),
            credential: Credential::Session {
                token_hash: hash,
                csrf,
            },
        })
    }

    /// Verifies a password off the async workers, bounded by the hashing semaphore.
    async fn verify_password(&self, password: String, phc: String) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || Ok(passwords::verify(&password, &phc))).await
    }

    async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || passwords::hash(&password).map_err(AuthError::Internal)).await
    }

    /// Logs in with a username and password.
    ///
    /// # Errors
    /// `Throttled` after repeated failures; `BadCredentials` for a wrong password, an
    /// unknown user or a disabled one, alike.
    pub async fn login(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        addr: Option<IpAddr>,
    ) -> Result<LoginOutcome, AuthError> {
        let addr_text = addr.map(|a| a.to_string()).unwrap_or_default();
        if let Some(wait) = self.throttle.check(username, addr) {
            self.metrics
                .logins
                .get_or_create(&crate::telemetry::metrics::OutcomeLabels {
                    outcome: "throttled",
                })
                .inc();
            return Err(AuthError::Throttled {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let auth = Arc::clone(self);
        let name = username.to_owned();
        let user = blocking(move || Ok(auth.store.user_by_name(&name)?)).await?;
        let phc = user.as_ref().map_or_else(
            || passwords::decoy_hash().to_owned(),
            |u| {
                let UserRecord::V1 { password_hash, .. } = &u.record;
                password_hash.clone()
            },
        );
        let matches = self.verify_password(password.to_owned(), phc).await?;
        let user = match user {
            Some(user)
                if matches && !matches!(user.record, UserRecord::V1 { disabled: true, .. }) =>
            {
                user
            }
            _ => {
                self.throttle.failed(username, addr);
                self.metrics
                    .logins
                    .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: "failed" })
                    .inc();
                self.audit.record(Event {
                    kind: audit::kind::LOGIN_FAILED,
                    actor: username.to_owned(),
                    addr: addr_text,
                    target: String::new(),
                    detail: String::new(),
                    ok: false,
                });
                return Err(AuthError::BadCredentials);
            }
        };
        self.throttle.succeeded(username);
        let token = keys::random_token(32).map_err(AuthError::Internal)?;
        let mut csrf = [0u8; 32];
        getrandom::fill(&mut csrf).map_err(|e| AuthError::Internal(e.to_string()))?;
        let now = unix_now();
        let record = SessionRecord::V1 {
            user_id: user.id,
            created_at: now,
            last_seen: now,
            csrf,
            addr: addr_text.clone(),
        };
        let hash = sessions::token_hash(&token);
        let auth = Arc::clone(self);
        blocking(move || Ok(auth.store.put_session(&hash, &record)?)).await?;
        self.metrics
            .logins
            .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: "ok" })
            .inc();
        self.audit.record(Event {
            kind: audit::kind::LOGIN_OK,
            actor: username.to_owned(),
            addr: addr_text,
            target: String::new(),
            detail: String::new(),
            ok: true,
        });
        Ok(LoginOutcome {
            token,
            csrf,
            user: user_view(&user)?,
            expires_at: now + self.config.session_absolute.as_secs(),
        })
    }

    /// Ends the caller's session.
    ///
    /// # Errors
    /// The caller did not use a session.
    pub async fn logout(
        self: &Arc<Self>,
        principal: &Principal,
        addr: &str,
    ) -> Result<(), AuthError> {
        let Credential::Session { token_hash, .. } = principal.credential else {
            return Err(AuthError::Invalid(
                "only a console session can log out; revoke keys instead".into(),
            ));
        };
        let auth = Arc::clone(self);
        blocking(move || Ok(auth.store.delete_session(&token_hash)?)).await?;
        self.record(principal, audit::kind::LOGOUT, addr, "", "", true);
        Ok(())
    }

    // ----- users ----------------------------------------------------------------------

    /// Creates a user (admin operation, setup, env bootstrap, offline CLI).
    ///
    /// # Errors
    /// Invalid username or password, or the username is taken.
    pub async fn create_user(self: &Arc<Self>, new: NewUser) -> Result<UserView, AuthError> {
        passwords::check_username(&new.username).map_err(AuthError::Invalid)?;
        passwords::check_password(&new.password).map_err(AuthError::Invalid)?;
        let display_name = check_display_name(new.display_name)?;
        let password_hash = self.hash_password(new.password).await?;
        let now = unix_now();
        let record = UserRecord::V1 {
            username: new.username.clone(),
            display_name,
            role: new.role.to_stored(),
            password_hash,
            disabled: false,
            created_at: now,
            updated_at: now,
            password_changed_at: now,
        };
        let auth = Arc::clone(self);
        let user = blocking(move || {
            let id = auth.store.create_user(&record).map_err(|e| match e {
                StoreError::Conflict(_) => {
                    AuthError::Conflict(format!("the username {} is taken", new.username))
                }
                other => other.into(),
            })?;
            auth.reload()?;
            Ok(StoredUser { id, record })
        })
        .await?;
        user_view(&user)
    }

    /// # Errors
    /// I/O failure.
    pub async fn list_users(self: &Arc<Self>) -> Result<Vec<UserView>, AuthError> {
        let auth = Arc::clone(self);
        let users = blocking(move || Ok(auth.store.list_users()?)).await?;
        users.iter().map(user_view).collect()
    }

    /// # Errors
    /// `NotFound`.
    pub async fn user(self: &Arc<Self>, id: u64) -> Result<UserView, AuthError> {
        let auth = Arc::clone(self);
        let user = blocking(move || Ok(auth.store.user(id)?))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("user {id}")))?;
        user_view(&user)
    }

    /// Whether any enabled admin exists.
    ///
    /// # Errors
    /// I/O failure.
    pub fn has_admin(&self) -> Result<bool, AuthError> {
        Ok(self
            .snapshot
            .load()
            .users
            .values()
            .any(|u| u.role == Role::Admin && !u.disabled))
    }

    fn enabled_admins_except(&self, id: u64) -> usize {
        self.snapshot
            .load()
            .users
            .iter()
            .filter(|(uid, u)| **uid != id && u.role == Role::Admin && !u.disabled)
            .count()
    }

    /// Changes a user's role, state, display name or password (admin operation).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when it would leave no enabled admin; invalid values.
    pub async fn update_user(
        self: &Arc<Self>,
        id: u64,
        patch: UserPatch,
    ) -> Result<UserView, AuthError> {
        let auth = Arc::clone(self);
        let current = blocking(move || Ok(auth.store.user(id)?))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("user {id}")))?;
        let UserRecord::V1 {
            username,
            mut display_name,
            mut role,
            mut password_hash,
            mut disabled,
            created_at,
            mut password_changed_at,
            ..
        } = current.record;
        let was_admin = role == Role::Admin.to_stored() && !disabled;
        if let Some(new_role) = patch.role {
            role = new_role.to_stored();
        }
        if let Some(new_disabled) = patch.disabled {
            disabled = new_disabled;
        }
        if let Some(name) = patch.display_name {
            display_name = check_display_name(name)?;
        }
        let password_changed = patch.password.is_some();
        if let Some(password) = patch.password {
            passwords::check_password(&password).map_err(AuthError::Invalid)?;
            password_hash = self.hash_password(password).await?;
            password_changed_at = unix_now();
        }
        let still_admin = role == Role::Admin.to_stored() && !disabled;
        if was_admin && !still_admin && self.enabled_admins_except(id) == 0 {
            return Err(AuthError::Conflict(
                "this is the last enabled admin; make another admin first".into(),
            ));
        }
        let record = UserRecord::V1 {
            username,
            display_name,
            role,
            password_hash,
            disabled,
            created_at,
            updated_at: unix_now(),
            password_changed_at,
        };
        let auth = Arc::clone(self);
        let saved = record.clone();
        blocking(move || {
            auth.store.put_user(id, &saved)?;
            if password_changed || disabled {
                auth.store.delete_user_sessions(id, None)?;
            }
            auth.reload()
        })
        .await?;
        user_view(&StoredUser { id, record })
    }

    /// Deletes a user; their sessions end and their keys are revoked.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for the last enabled admin.
    pub async fn delete_user(self: &Arc<Self>, id: u64) -> Result<UserView, AuthError> {
        let snapshot = self.snapshot.load();
        let target = snapshot
            .users
            .get(&id)
            .ok_or_else(|| AuthError::NotFound(format!("user {id}")))?;
        if target.role == Role::Admin && !target.disabled && self.enabled_admins_except(id) == 0 {
            return Err(AuthError::Conflict(
                "this is the last enabled admin; make another admin first".into(),
            ));
        }
        let auth = Arc::clone(self);
        let user = blocking(move || {
            let user = auth
                .store
                .delete_user(id, unix_now())
                .map_err(|e| match e {
                    StoreError::NotFound(what) => AuthError::NotFound(what),
                    other => other.into(),
                })?;
            auth.reload()?;
            Ok(user)
        })
        .await?;
        user_view(&user)
    }

    /// Changes the caller's own password; their other sessions end.
    ///
    /// # Errors
    /// Wrong current password; invalid new one.
    pub async fn change_own_password(
        self: &Arc<Self>,
        principal: &Principal,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        passwords::check_password(new).map_err(AuthError::Invalid)?;
        let id = principal.user_id;
        let auth = Arc::clone(self);
        let user = blocking(move || Ok(auth.store.user(id)?))
            .await?
            .ok_or(AuthError::BadCredentials)?;
        let UserRecord::V1 { password_hash, .. } = &user.record;
        if !self
            .verify_password(current.to_owned(), password_hash.clone())
            .await?
        {
            return Err(AuthError::BadCredentials);
        }
        let new_hash = self.hash_password(new.to_owned()).await?;
        let UserRecord::V1 {
            username,
            display_name,
            role,
            disabled,
            created_at,
            ..
        } = user.record;
        let now = unix_now();
        let record = UserRecord::V1 {
            username,
            display_name,
            role,
            password_hash: new_hash,
            disabled,
            created_at,
            updated_at: now,
            password_changed_at: now,
        };
        let keep = match principal.credential {
            Credential::Session { token_hash, .. } => Some(token_hash),
            _ => None,
        };
        let auth = Arc::clone(self);
        blocking(move || {
            auth.store.put_user(id, &record)?;
            auth.store.delete_user_sessions(id, keep.as_ref())?;
            Ok(())
        })
        .await
    }

    /// Changes the caller's display name.
    ///
    /// # Errors
    /// An invalid name.
    pub async fn update_me(
        self: &Arc<Self>,
        principal: &Principal,
        display_name: Option<String>,
    ) -> Result<UserView, AuthError> {
        self.update_user(
            principal.user_id,
            UserPatch {
                display_name: Some(display_name),
                ..UserPatch::default()
            },
        )
        .await
    }

    // ----- keys -----------------------------------------------------------------------

    /// Creates an API key for the caller (or, for admins, another user). Returns the view
    /// and the key string, shown once.
    ///
    /// # Errors
    /// Scopes beyond the owner's role, a past expiry, an unknown owner.
    pub async fn create_key(
        self: &Arc<Self>,
        principal: &Principal,
        new: NewKey,
    ) -> Result<(KeyView, String), AuthError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.len() > 100 {
            return Err(AuthError::Invalid(
                "the key needs a name of 1 to 100 bytes".into(),
            ));
        }
        if new.scopes.is_empty() {
            return Err(AuthError::Invalid(
                "the key needs at least one scope".into(),
            ));
        }
        let owner_id = match &new.for_user {
            None => principal.user_id,
            Some(username) => {
                if !principal.scopes.contains(Scope::UsersManage) {
                    return Err(AuthError::Forbidden(Scope::UsersManage.as_str()));
                }
                let snapshot = self.snapshot.load();
                *snapshot
                    .users
                    .iter()
                    .find(|(_, u)| u.username == *username)
                    .ok_or_else(|| AuthError::NotFound(format!("user {username}")))?
                    .0
            }
        };
        let owner_role = self
            .snapshot
            .load()
            .users
            .get(&owner_id)
            .map(|u| u.role)
            .ok_or_else(|| AuthError::NotFound(format!("user {owner_id}")))?;
        let scopes = ScopeSet::of(&new.scopes);
        // A key never exceeds its owner's role, nor (when made for oneself) the caller's own rights.
        let ceiling = if new.for_user.is_some() {
            owner_role.scopes()
        } else {
            principal.scopes
        };
        if !scopes.is_subset_of(ceiling) {
            let extra: Vec<&str> = ScopeSet(scopes.0 & !ceiling.0).names();
            return Err(AuthError::Invalid(format!(
                "the key cannot have {} (beyond the {} role)",
                extra.join(", "),
                owner_role.as_str()
            )));
        }
        let now = unix_now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Invalid("expires_at is in the past".into()));
        }
        if let Some(rate) = new.rate
            && (rate.per_second == 0 || rate.burst == 0)
        {
            return Err(AuthError::Invalid(
                "rate_limit.per_second and burst must be at least 1".into(),
            ));
        }
        let (id, key, mac) = keys::generate(&self.secret).map_err(AuthError::Internal)?;
        let record = KeyRecord::V1 {
            user_id: owner_id,
            name,
            scopes: scopes.0,
            mac,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            rate_per_second: new.rate.map(|r| r.per_second),
            burst: new.rate.map(|r| r.burst),
        };
        let auth = Arc::clone(self);
        blocking(move || {
            auth.store.create_key(id, &record)?;
            auth.reload()
        })
        .await?;
        let view = self
            .key_view(id)
            .ok_or_else(|| AuthError::Internal("key vanished".into()))?;
        Ok((view, key))
    }

    fn key_view(&self, id: u64) -> Option<KeyView> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.keys.get(&id)?;
        let now = unix_now();
        let state = if entry.revoked_at.is_some() {
            "revoked"
        } else if entry.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let UsageRecord::V1 {
            by_class,
            last_used_at,
            last_addr,
        } = self.usage_record(&snapshot, id)
        else {
            return None;
        };
        Some(KeyView {
            id: keys::format_id(id),
            name: entry.name.clone(),
            user_id: entry.user_id,
            username: snapshot
                .users
                .get(&entry.user_id)
                .map(|u| u.username.clone())
                .unwrap_or_default(),
            scopes: entry.scopes.names(),
            created_at: entry.created_at,
            expires_at: entry.expires_at,
            revoked_at: entry.revoked_at,
            state,
            rate_limit: RateView {
                per_second: entry.bucket.config.per_second,
                burst: entry.bucket.config.burst,
            },
            usage: UsageView {
                requests: CLASS_NAMES
                    .iter()
                    .copied()
                    .zip(by_class)
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                last_used_at: (last_used_at > 0).then_some(last_used_at),
                last_used_addr: (!last_addr.is_empty()).then_some(last_addr),
            },
        })
        .map(|mut view| {
            if !entry.custom_rate {
                view.rate_limit = RateView {
                    per_second: self.config.key_rate.per_second,
                    burst: self.config.key_rate.burst,
                };
            }
            view
        })
    }

    /// The caller's keys, or everyone's for `all` (needs `users:manage`).
    ///
    /// # Errors
    /// `all` without the permission.
    pub fn list_keys(&self, principal: &Principal, all: bool) -> Result<Vec<KeyView>, AuthError> {
        if all && !principal.scopes.contains(Scope::UsersManage) {
            return Err(AuthError::Forbidden(Scope::UsersManage.as_str()));
        }
        let snapshot = self.snapshot.load();
        let mut ids: Vec<u64> = snapshot
            .keys
            .iter()
            .filter(|(_, k)| all || k.user_id == principal.user_id)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_by_key(|id| (snapshot.keys[id].created_at, *id));
        Ok(ids.into_iter().filter_map(|id| self.key_view(id)).collect())
    }

    /// One key, if the caller owns it or manages users.
    ///
    /// # Errors
    /// `NotFound` (also for other users' keys, so ids cannot be probed).
    pub fn key(&self, principal: &Principal, id: &str) -> Result<KeyView, AuthError> {
        let id = self.visible_key_id(principal, id)?;
        self.key_view(id)
            .ok_or_else(|| AuthError::NotFound("key".into()))
    }

    fn visible_key_id(&self, principal: &Principal, id: &str) -> Result<u64, AuthError> {
        let not_found = || AuthError::NotFound(format!("key {id}"));
        let parsed = u64::from_str_radix(id, 16).map_err(|_| not_found())?;
        let snapshot = self.snapshot.load();
        let entry = snapshot.keys.get(&parsed).ok_or_else(not_found)?;
        if entry.user_id != principal.user_id && !principal.scopes.contains(Scope::UsersManage) {
            return Err(not_found());
        }
        Ok(parsed)
    }

    /// Revokes a key at once.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn revoke_key(
        self: &Arc<Self>,
        principal: &Principal,
        id: &str,
    ) -> Result<KeyView, AuthError> {
        let key_id = self.visible_key_id(principal, id)?;
        let auth = Arc::clone(self);
        blocking(move || {
            let mut record = auth
                .store
                .list_keys()?
                .into_iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| AuthError::NotFound("key".into()))?
                .record;
            let KeyRecord::V1 { revoked_at, .. } = &mut record;
            revoked_at.get_or_insert(unix_now());
            auth.store.put_key(key_id, &record)?;
            auth.reload()
        })
        .await?;
        self.key_view(key_id)
            .ok_or_else(|| AuthError::NotFound("key".into()))
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

    /// Reads the audit log (after committing what is pending).
    ///
    /// # Errors
    /// I/O failure.
    pub async fn audit_entries(
        self: &Arc<Self>,
        query: AuditQuery,
    ) -> Result<Vec<(u64, crate::store::schema::AuditRecord)>, AuthError> {
        self.audit.flush().await;
        let auth = Arc::clone(self);
        blocking(move || Ok(auth.store.query_audit(&query)?)).await
    }

    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
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
