//! Identity and access: users and roles, sessions, API keys and scopes, login throttling,
//! rate limits, the audit log, and first-boot admin bootstrap.
//!
//! # Hot path
//!
//! A request with a bearer key is checked against an in-memory snapshot of every key and
//! user (`ArcSwap`, rebuilt from the store on each change), one HMAC and a constant-time
//! compare: no store read, no lock. Sessions (console) read the store.
//!
//! # Threads
//!
//! Password hashing runs on the blocking pool, bounded by a semaphore (each argon2 hash
//! holds 19 MiB). Audit entries go through a channel to one writer thread that batches
//! commits.

pub mod audit;
mod bootstrap;
pub mod keys;
pub mod passwords;
mod rate;
mod service;
pub mod sessions;
mod throttle;

use serde::{Deserialize, Serialize};

pub use bootstrap::{Bootstrap, SETUP_TOKEN_FILE, SetupToken, local_admin, open_offline};
pub use rate::{RateLimitConfig, RateLimited};
pub use service::{
    AuditEntry, Auth, AuthConfig, KeyView, LoginOutcome, NewKey, NewUser, UserPatch, UserView,
};

/// What a user may do, coarsely. Scopes refine it for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    /// Every scope this role grants; a key never has more than its owner's role.
    #[must_use]
    pub fn scopes(self) -> ScopeSet {
        match self {
            Self::Admin => ScopeSet::ALL,
            Self::Operator => ScopeSet::of(&[
                Scope::Infer,
                Scope::ModelsRead,
                Scope::ModelsWrite,
                Scope::TasksRead,
                Scope::TasksWrite,
                Scope::MetricsRead,
                Scope::FleetRead,
                Scope::KeysManage,
            ]),
            Self::Viewer => ScopeSet::of(&[
                Scope::ModelsRead,
                Scope::TasksRead,
                Scope::MetricsRead,
                Scope::FleetRead,
            ]),
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    pub(crate) fn to_stored(self) -> u8 {
        match self {
            Self::Admin => 0,
            Self::Operator => 1,
            Self::Viewer => 2,
        }
    }

    pub(crate) fn from_stored(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Admin),
            1 => Some(Self::Operator),
            2 => Some(Self::Viewer),
            _ => None,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "`{other}` is not a role: admin, operator or viewer"
            )),
        }
    }
}

/// A permission a route requires and a key may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
#[repr(u8)]
pub enum Scope {
    Infer = 0,
    ModelsRead = 1,
    ModelsWrite = 2,
    TasksRead = 3,
    TasksWrite = 4,
    MetricsRead = 5,
    FleetRead = 6,
    KeysManage = 7,
    UsersManage = 8,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::Infer,
        Scope::ModelsRead,
        Scope::ModelsWrite,
        Scope::TasksRead,
        Scope::TasksWrite,
        Scope::MetricsRead,
        Scope::FleetRead,
        Scope::KeysManage,
        Scope::UsersManage,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infer => "infer",
            Self::ModelsRead => "models:read",
            Self::ModelsWrite => "models:write",
            Self::TasksRead => "tasks:read",
            Self::TasksWrite => "tasks:write",
            Self::MetricsRead => "metrics:read",
            Self::FleetRead => "fleet:read",
            Self::KeysManage => "keys:manage",
            Self::UsersManage => "users:manage",
        }
    }

    /// The usage-statistics class of requests that need this scope.
    #[must_use]
    pub fn class(self) -> usize {
        self as usize
    }
}

impl From<Scope> for &'static str {
    fn from(scope: Scope) -> Self {
        scope.as_str()
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a scope: {}",
                    Self::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// A set of scopes as a bit set (also the stored form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(pub u32);

impl ScopeSet {
    pub const ALL: ScopeSet = ScopeSet((1 << Scope::ALL.len()) - 1);

    #[must_use]
    pub const fn of(scopes: &[Scope]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < scopes.len() {
            bits |= 1 << scopes[i] as u32;
            i += 1;
        }
        Self(bits)
    }

    #[must_use]
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope as u32) != 0
    }

    #[must_use]
    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    #[must_use]
    pub fn intersect(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A console session; state-changing requests must echo `csrf`.
    Session {
        token_hash: [u8; 32],
        csrf: [u8; 32],
    },
    /// A bearer API key.
    Key { key_id: u64 },
    /// The local admin socket in the data dir: whoever can open it owns the device.
    LocalSocket,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: u64,
    pub username: String,
    pub role: Role,
    /// What this request may do: the role's scopes, narrowed by the key's.
    pub scopes: ScopeSet,
    pub credential: Credential,
}

impl Principal {
    /// The caller as it appears in the audit log.
    #[must_use]
    pub fn actor(&self) -> String {
        match &self.credential {
            Credential::Key { key_id } => {
                format!("{} (key {})", self.username, keys::format_id(*key_id))
            }
            _ => self.username.clone(),
        }
    }

    #[must_use]
    pub fn key_id(&self) -> Option<u64> {
        match self.credential {
            Credential::Key { key_id } => Some(key_id),
            _ => None,
        }
    }
}

/// Why an authentication or an account operation failed. Each variant maps to one
/// HTTP status and code in `http::error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <key>` or log in")]
    Unauthenticated,
    #[error("the credentials are not valid")]
    BadCredentials,
    #[error("the API key has expired")]
    KeyExpired,
    #[error("the API key has been revoked")]
    KeyRevoked,
    #[error("the Authorization header is malformed: expected `Bearer cairn_<id>_<secret>`")]
    MalformedHeader,
    #[error("the session has expired; log in again")]
    SessionExpired,
    #[error("this needs the `{0}` permission")]
    Forbidden(&'static str),
    #[error("missing or wrong CSRF token: send the token from login in the X-CSRF-Token header")]
    Csrf,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    SetupUnavailable(&'static str),
    #[error("the setup token is wrong or has expired; restart cairn for a new one")]
    SetupToken,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_scopes_parse() {
        assert!(Role::Viewer.scopes().is_subset_of(Role::Operator.scopes()));
        assert!(Role::Operator.scopes().is_subset_of(Role::Admin.scopes()));
        assert!(!Role::Operator.scopes().contains(Scope::UsersManage));
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("root".parse::<Scope>().is_err());
        assert_eq!(ScopeSet::ALL.names().len(), Scope::ALL.len());
    }
}
