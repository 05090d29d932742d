//! Console sessions: login (throttled, constant answer), session checks, logout, and
//! password hashing off the async workers.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Auth, LoginOutcome, blocking, user_view};
use crate::auth::audit::{self, Event};
use crate::auth::{AuthError, Credential, Principal, keys, passwords, sessions};
use crate::store::schema::{SessionRecord, UserRecord};
use crate::store::unix_now;
use crate::telemetry::metrics::OutcomeLabels;

impl Auth {
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
    pub(super) async fn verify_password(
        &self,
        password: String,
        phc: String,
    ) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || Ok(passwords::verify(&password, &phc))).await
    }

    pub(super) async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        blocking(move || passwords::hash(&password).map_err(AuthError::Internal)).await
    }

    /// Logs in with a username and password.
    ///
    /// An address that failed too often is refused outright (429) without a look at the
    /// password. A username that failed too often (from anywhere) answers 429 to a wrong
    /// password, but the right one from an address that is not throttled gets in: guesses
    /// elsewhere cannot lock a user out. Names and passwords that break the rules are
    /// refused before any lookup or hash, and never stored in the throttle.
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
        let client = addr.map(|a| self.client_key(a));
        if let Some(wait) = self.throttle.address_wait(client) {
            return Err(self.login_throttled(wait));
        }
        let valid = passwords::check_username(username).is_ok()
            && passwords::check_password(password).is_ok();
        if !valid {
            self.login_failed(None, username, client, addr_text);
            return Err(AuthError::BadCredentials);
        }
        let user_locked = self.throttle.user_wait(username);
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
                self.login_failed(Some(username), username, client, addr_text);
                return Err(match user_locked {
                    Some(wait) => self.login_throttled(wait),
                    None => AuthError::BadCredentials,
                });
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
            .get_or_create(&OutcomeLabels { outcome: "ok" })
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

    pub(in crate::auth) fn login_throttled(&self, wait: std::time::Duration) -> AuthError {
        self.metrics
            .logins
            .get_or_create(&OutcomeLabels {
                outcome: "throttled",
            })
            .inc();
        AuthError::Throttled {
            retry_after_secs: wait.as_secs().max(1),
        }
    }

    /// Counts a failed login (against `username` only when it is a valid name) and
    /// audits it (the audit log cuts the actor short).
    fn login_failed(
        &self,
        username: Option<&str>,
        actor: &str,
        client: Option<IpAddr>,
        addr_text: String,
    ) {
        self.throttle.failed(username, client);
        self.metrics
            .logins
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc();
        self.audit.record(Event {
            kind: audit::kind::LOGIN_FAILED,
            actor: audit::clip(actor.to_owned(), audit::MAX_ACTOR),
            addr: addr_text,
            target: String::new(),
            detail: String::new(),
            ok: false,
        });
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
}
