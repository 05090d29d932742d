//! User accounts: create, list, update, delete, own password and profile.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Auth, NewUser, UserPatch, UserView, blocking, check_display_name, user_view};
use crate::auth::{AuthError, Credential, Principal, Role, passwords};
use crate::store::schema::UserRecord;
use crate::store::{StoreError, StoredUser, unix_now};

impl Auth {
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
            auth.store
                .put_user_guarded(id, &saved, keeps_an_admin)
                .map_err(last_admin_conflict)?;
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
        let auth = Arc::clone(self);
        let user = blocking(move || {
            let user = auth
                .store
                .delete_user_guarded(id, unix_now(), keeps_an_admin)
                .map_err(|e| match e {
                    StoreError::NotFound(what) => AuthError::NotFound(what),
                    other => last_admin_conflict(other),
                })?;
            auth.reload()?;
            Ok(user)
        })
        .await?;
        user_view(&user)
    }

    /// Changes the caller's own password; their other sessions end. A wrong current
    /// password counts as a failed login (same throttle, by username and address).
    ///
    /// # Errors
    /// Wrong current password; invalid new one; `Throttled` after repeated failures.
    pub async fn change_own_password(
        self: &Arc<Self>,
        principal: &Principal,
        current: &str,
        new: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let client = addr.map(|a| self.client_key(a));
        if let Some(wait) = self.throttle.address_wait(client) {
            return Err(self.login_throttled(wait));
        }
        passwords::check_password(new).map_err(AuthError::Invalid)?;
        let id = principal.user_id;
        let username = principal.username.as_str();
        if current.len() > passwords::MAX_PASSWORD_LEN {
            self.throttle.failed(Some(username), client);
            return Err(AuthError::BadCredentials);
        }
        let user_locked = self.throttle.user_wait(username);
        let auth = Arc::clone(self);
        let user = blocking(move || Ok(auth.store.user(id)?))
            .await?
            .ok_or(AuthError::BadCredentials)?;
        let UserRecord::V1 { password_hash, .. } = &user.record;
        if !self
            .verify_password(current.to_owned(), password_hash.clone())
            .await?
        {
            self.throttle.failed(Some(username), client);
            return Err(match user_locked {
                Some(wait) => self.login_throttled(wait),
                None => AuthError::BadCredentials,
            });
        }
        self.throttle.succeeded(username);
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
}

/// The rule checked inside the write transaction of every user change: a change that
/// takes away an enabled admin must leave another one.
fn keeps_an_admin(before: &UserRecord, after: &[StoredUser]) -> Result<(), StoreError> {
    let enabled_admin = |record: &UserRecord| {
        let UserRecord::V1 { role, disabled, .. } = record;
        *role == Role::Admin.to_stored() && !*disabled
    };
    if !enabled_admin(before) || after.iter().any(|u| enabled_admin(&u.record)) {
        return Ok(());
    }
    Err(StoreError::InUse(LAST_ADMIN.into()))
}

const LAST_ADMIN: &str = "this is the last enabled admin; make another admin first";

fn last_admin_conflict(error: StoreError) -> AuthError {
    match error {
        StoreError::InUse(message) if message == LAST_ADMIN => AuthError::Conflict(message),
        other => other.into(),
    }
}
