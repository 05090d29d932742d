//! The first admin, three ways: `cairn admin create-user` (offline, or through the local
//! socket of a running server), `CAIRN_ADMIN_PASSWORD[_FILE]` on first start, or a
//! one-time setup token (written 0600 to `DATA_DIR/setup-token`, valid 30 minutes; the
//! log says where the file is, never the token).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audit::{self, Event};
use super::service::{Auth, NewUser, UserView};
use super::{AuthError, Role, keys, passwords, sessions};

pub const SETUP_TOKEN_FILE: &str = "setup-token";
pub const SETUP_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// A live setup token: only its hash is kept.
#[derive(Debug, Clone)]
pub struct SetupToken {
    hash: [u8; 32],
    expires: Instant,
    /// A setup with this token is creating the first admin: others are refused until it
    /// fails (then the token is free again) or succeeds (then the token is gone).
    claimed: bool,
}

/// How the first admin may be created at start.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    /// From `CAIRN_ADMIN_PASSWORD` or the file named by `CAIRN_ADMIN_PASSWORD_FILE`.
    pub admin_password: Option<String>,
}

impl Bootstrap {
    /// Reads `CAIRN_ADMIN_PASSWORD` / `CAIRN_ADMIN_PASSWORD_FILE`.
    ///
    /// # Errors
    /// Both are set, or the file cannot be read.
    pub fn from_env() -> anyhow::Result<Self> {
        let direct = std::env::var("CAIRN_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        let file = std::env::var_os("CAIRN_ADMIN_PASSWORD_FILE").filter(|f| !f.is_empty());
        let admin_password = match (direct, file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set CAIRN_ADMIN_PASSWORD or CAIRN_ADMIN_PASSWORD_FILE, not both")
            }
            (Some(password), None) => Some(password),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "CAIRN_ADMIN_PASSWORD_FILE {}: {e}",
                        Path::new(&path).display()
                    )
                })?;
                Some(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            (None, None) => None,
        };
        Ok(Self { admin_password })
    }
}

impl Auth {
    /// Makes sure there is a way to get a first admin: creates it from the environment
    /// (once in the life of the store), or issues a setup token.
    ///
    /// # Errors
    /// The environment password is invalid, or the token file cannot be written.
    pub async fn bootstrap(
        self: &Arc<Self>,
        data_dir: &Path,
        bootstrap: Bootstrap,
    ) -> Result<(), AuthError> {
        let token_path = data_dir.join(SETUP_TOKEN_FILE);
        if self.has_admin()? {
            let _ = std::fs::remove_file(&token_path);
            return Ok(());
        }
        let store = Arc::clone(self.store());
        let env_done = tokio::task::spawn_blocking(move || store.env_admin_done())
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))??;
        if let Some(password) = bootstrap.admin_password.filter(|_| !env_done) {
            let user = self
                .create_user(NewUser {
                    username: "admin".into(),
                    password,
                    role: Role::Admin,
                    display_name: None,
                })
                .await
                .map_err(|e| AuthError::Invalid(format!("CAIRN_ADMIN_PASSWORD: {e}")))?;
            let store = Arc::clone(self.store());
            tokio::task::spawn_blocking(move || store.mark_env_admin_done())
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))??;
            self.audit_setup(&user, "environment");
            tracing::info!(username = %user.username, "created the first admin from CAIRN_ADMIN_PASSWORD");
            return Ok(());
        }
        let token = keys::random_token(24).map_err(AuthError::Internal)?;
        write_private(&token_path, &token)
            .map_err(|e| AuthError::Internal(format!("{}: {e}", token_path.display())))?;
        *self.setup.lock().expect("poisoned") = Some(SetupToken {
            hash: sessions::token_hash(&token),
            expires: Instant::now() + SETUP_TOKEN_TTL,
            claimed: false,
        });
        // The token itself stays out of the log: whoever reads the journal (the `adm` or
        // `systemd-journal` group) must not be able to claim the device.
        tracing::warn!(
            file = %token_path.display(),
            "no admin yet: POST /api/v1/setup with the one-time token from {} (readable by \
             cairn's user only, valid 30 minutes) or run `cairn admin create-user`",
            token_path.display()
        );
        Ok(())
    }

    /// Whether the setup route is open (no admin yet).
    ///
    /// # Errors
    /// I/O failure.
    pub fn setup_open(&self) -> Result<bool, AuthError> {
        Ok(!self.has_admin()?)
    }

    /// Creates the first admin with the setup token. The token is claimed before the
    /// password is hashed, so of concurrent setups exactly one creates an admin. Wrong
    /// tokens count as failed logins of the client address (throttled alike), and each
    /// address gets at most one audit row a minute for them.
    ///
    /// # Errors
    /// `SetupUnavailable` once an admin exists; `Invalid` for a bad username or password;
    /// `SetupToken` for a wrong or expired token; `Conflict` while another setup with the
    /// token is under way; `Throttled` after repeated wrong tokens.
    pub async fn setup(
        self: &Arc<Self>,
        data_dir: &Path,
        token: &str,
        username: String,
        password: String,
        peer: Option<std::net::IpAddr>,
        addr: &str,
    ) -> Result<UserView, AuthError> {
        if self.has_admin()? {
            return Err(AuthError::SetupUnavailable(
                "setup is complete: an admin exists",
            ));
        }
        let client = peer.map(|ip| self.client_key(ip));
        if let Some(wait) = self.throttle.address_wait(client) {
            return Err(self.login_throttled(wait));
        }
        passwords::check_username(&username).map_err(AuthError::Invalid)?;
        passwords::check_password(&password).map_err(AuthError::Invalid)?;
        let claimed = {
            let mut live = self.setup.lock().expect("poisoned");
            match live.as_mut() {
                Some(t)
                    if t.expires > Instant::now()
                        && keys::mac_matches(&t.hash, &sessions::token_hash(token)) =>
                {
                    if t.claimed {
                        Err(AuthError::Conflict(
                            "another setup with this token is creating the first admin".into(),
                        ))
                    } else {
                        t.claimed = true;
                        Ok(())
                    }
                }
                _ => Err(AuthError::SetupToken),
            }
        };
        if let Err(error) = claimed {
            if matches!(error, AuthError::SetupToken) {
                self.throttle.failed(None, client);
                let key = client.map(|c| c.to_string()).unwrap_or_default();
                if let Some(folded) = self.setup_audit.admit(&key) {
                    self.audit.record(Event {
                        kind: audit::kind::SETUP,
                        actor: username,
                        addr: addr.to_owned(),
                        target: String::new(),
                        detail: if folded > 0 {
                            format!(
                                "wrong or expired token (and {folded} more from this address in the minute before)"
                            )
                        } else {
                            "wrong or expired token".into()
                        },
                        ok: false,
                    });
                }
            }
            return Err(error);
        }
        let created = self
            .create_user(NewUser {
                username,
                password,
                role: Role::Admin,
                display_name: None,
            })
            .await;
        let mut live = self.setup.lock().expect("poisoned");
        let user = match created {
            Ok(user) => {
                *live = None;
                user
            }
            Err(error) => {
                if let Some(t) = live.as_mut() {
                    t.claimed = false;
                }
                return Err(error);
            }
        };
        drop(live);
        let _ = std::fs::remove_file(data_dir.join(SETUP_TOKEN_FILE));
        self.audit_setup(&user, addr);
        Ok(user)
    }

    fn audit_setup(&self, user: &UserView, via: &str) {
        self.audit.record(Event {
            kind: audit::kind::SETUP,
            actor: user.username.clone(),
            addr: via.to_owned(),
            target: format!("user {}", user.id),
            detail: "first admin created".into(),
            ok: true,
        });
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

/// Opens the auth service of a stopped server, holding the data-dir lock, for
/// `cairn admin` commands.
///
/// # Errors
/// `LockError::Busy` when a server runs (use its local socket instead), or the store
/// cannot open.
pub fn open_offline(
    data_dir: &Path,
) -> anyhow::Result<(crate::system::lock::DataDirLock, Arc<Auth>)> {
    let lock = crate::system::lock::DataDirLock::acquire(data_dir)?;
    let store = Arc::new(crate::store::Store::open(
        &data_dir.join(crate::store::STORE_FILE),
    )?);
    let config = super::AuthConfig {
        session_idle: Duration::from_secs(1),
        session_absolute: Duration::from_secs(1),
        key_rate: super::RateLimitConfig {
            per_second: 0,
            burst: 0,
        },
        address_rate: super::RateLimitConfig {
            per_second: 0,
            burst: 0,
        },
        audit: super::audit::Retention {
            max_age: Duration::from_secs(86400 * 3650),
            max_entries: u64::MAX,
        },
        ipv6_prefix: 64,
    };
    let auth = Auth::new(
        store,
        config,
        crate::telemetry::metrics::AuthMetrics::default(),
    )?;
    Ok((lock, Arc::new(auth)))
}

/// The identity of `cairn admin` commands run on the device itself.
#[must_use]
pub fn local_admin() -> super::Principal {
    super::Principal {
        user_id: 0,
        username: "local-admin".into(),
        role: Role::Admin,
        scopes: super::ScopeSet::ALL,
        credential: super::Credential::LocalSocket,
    }
}
