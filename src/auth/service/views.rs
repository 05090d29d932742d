//! What the service takes and shows: user, key, usage and audit views, and the
//! inputs of user and key operations.

use serde::Serialize;

use crate::auth::{RateLimitConfig, Role, Scope};

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

/// One audit log entry as the API shows it (stored records stay inside the domain).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: String,
    pub actor: String,
    pub addr: String,
    pub target: String,
    pub detail: String,
    pub ok: bool,
}
