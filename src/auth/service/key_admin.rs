//! API key administration: create (secret returned once), list, show, revoke.

use std::sync::Arc;

use super::{Auth, CLASS_NAMES, KeyView, NewKey, RateView, UsageView, blocking};
use crate::auth::{AuthError, Principal, Scope, ScopeSet, keys};
use crate::store::schema::{KeyRecord, UsageRecord};
use crate::store::unix_now;

impl Auth {
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
        // A key never exceeds its owner's role, nor the caller's own rights: a key can
        // never mint a key with a scope it does not have, whoever the new key is for.
        let ceiling = owner_role.scopes().intersect(principal.scopes);
        if !scopes.is_subset_of(ceiling) {
            let extra: Vec<&str> = ScopeSet(scopes.0 & !ceiling.0).names();
            let why = if scopes.is_subset_of(owner_role.scopes()) {
                match principal.credential {
                    crate::auth::Credential::Key { .. } => {
                        "beyond the scopes of the key making it".to_owned()
                    }
                    _ => "beyond the caller's own rights".to_owned(),
                }
            } else {
                format!("beyond the {} role", owner_role.as_str())
            };
            return Err(AuthError::Invalid(format!(
                "the key cannot have {} ({why})",
                extra.join(", "),
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
}
