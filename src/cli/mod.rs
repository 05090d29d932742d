//! The command line: `serve`, `version`, `config check`, `config show`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Loaded, LogFormat, Overrides};
use crate::system::{notify, signals};
use crate::{app, build_info, telemetry};

mod model;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "An ML appliance for edge hardware in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: HTTP(S) API, console, metrics.
    Serve(ConfigArgs),
    /// Print version, commit and build date.
    Version {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Provision users and keys on this device (works with the server stopped or running).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Inspect, run and benchmark an ONNX model on this device (like trtexec).
    #[command(subcommand)]
    Model(ModelTool),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from standard input.
    CreateUser {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        username: String,
        /// admin, operator or viewer.
        #[arg(long, default_value = "viewer")]
        role: crate::auth::Role,
        /// Read the password from standard input (one line). Required: passwords never go
        /// on the command line.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Create an API key for a user and print it (shown once).
    CreateKey {
        #[command(flatten)]
        target: AdminTarget,
        /// The key's owner.
        #[arg(long)]
        user: String,
        /// Comma-separated scopes: infer, models:read, models:write, tasks:read,
        /// tasks:write, metrics:read, fleet:read, keys:manage, users:manage.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<crate::auth::Scope>,
        /// When the key stops working: RFC 3339 (2027-01-31T00:00:00Z) or a duration from
        /// now (90days).
        #[arg(long)]
        expires: Option<String>,
        /// A name to recognise the key by.
        #[arg(long, default_value = "provisioned")]
        name: String,
    },
}

/// Which device data dir an admin command acts on.
#[derive(Debug, Args)]
struct AdminTarget {
    /// The data dir (default: from the configuration, as `serve` would use).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file, for the data dir.
    #[arg(long, short, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl AdminTarget {
    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        Ok(config::load(
            self.config.as_deref(),
            &config::process_env(),
            &Overrides::default(),
        )?
        .config
        .data_dir)
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (file, env, flags) and exit 0 if it is usable.
    Check(ConfigArgs),
    /// Print the effective configuration as TOML, secrets redacted.
    Show(ConfigArgs),
}

/// Where the configuration comes from; each flag overrides file and env.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (store, TLS material, lock).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Plain HTTP listener, ADDR:PORT or `off`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// HTTPS listener, ADDR:PORT or `off`.
    #[arg(long, value_name = "ADDR")]
    https_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per target (`cairn=debug`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["plain", "json"])]
    log_format: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Loaded> {
        let mut flags = Overrides::default();
        if let Some(dir) = &self.data_dir {
            flags.set("data_dir", dir.to_string_lossy());
        }
        for (key, value) in [
            ("http.listen", &self.http_listen),
            ("https.listen", &self.https_listen),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
        ] {
            if let Some(value) = value {
                flags.set(key, value.clone());
            }
        }
        config::load(self.config.as_deref(), &config::process_env(), &flags)
    }
}

/// Runs the command line; the exit code is 0 on success, 1 on error, 2 on usage errors.
#[must_use]
pub fn main() -> ExitCode {
    crate::system::allocator::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Version { json } => {
            version(json);
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            args.load().map(|loaded| match &loaded.file {
                Some(file) => println!("configuration OK ({})", file.display()),
                None => println!("configuration OK (defaults, environment and flags)"),
            })
        }
        Command::Config(ConfigCommand::Show(args)) => args.load().map(|loaded| {
            print!("{}", loaded.config.to_redacted_toml());
        }),
        Command::Admin(command) => admin::run(command),
        Command::Model(ModelTool::Engine(command)) => model::run(command),
        Command::Model(ModelTool::Keygen { out }) => keygen(&out),
        Command::Model(ModelTool::Sign { file, key }) => sign(&file, &key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn version(json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": build_info::VERSION,
                "commit": build_info::GIT_COMMIT,
                "build_date": build_info::BUILD_DATE,
                "linkage": build_info::LINKAGE,
            })
        );
    } else {
        println!(
            "cairn {} (commit {}, built {}, {} C runtime)",
            build_info::VERSION,
            build_info::GIT_COMMIT,
            build_info::BUILD_DATE,
            build_info::LINKAGE
        );
    }
}

fn serve(args: &ConfigArgs) -> anyhow::Result<()> {
    let loaded = args.load()?;
    let config = loaded.config;
    telemetry::logging::init(&config.log.level, config.log.format)?;
    if config.log.format == LogFormat::Plain {
        tracing::info!(
            version = build_info::VERSION,
            commit = build_info::GIT_COMMIT,
            "starting cairn"
        );
    }
    tracing::info!(
        config_file = ?loaded.file,
        data_dir = %config.data_dir.display(),
        "configuration loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-worker")
        .build()?;
    runtime.block_on(async move {
        // Signals first, so a SIGTERM right after "ready" is a graceful stop, not a kill.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut requests = signals::listen(stop_tx)?;
        let running = app::start(config, crate::auth::Bootstrap::from_env()?).await?;
        let shutdown = running.shutdown_handle();
        tokio::spawn(async move {
            if stop_rx.wait_for(|stop| *stop).await.is_ok() {
                shutdown.send_replace(true);
            }
        });
        let status = format!(
            "serving{}{}",
            running
                .http_addr
                .map(|a| format!(" http://{a}"))
                .unwrap_or_default(),
            running
                .https_addr
                .map(|a| format!(" https://{a}"))
                .unwrap_or_default()
        );
        notify::ready(&status);
        let watchdog = notify::spawn_watchdog();
        let tls = running.app.tls.clone();
        let reloads = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                if request == signals::Request::Reload {
                    match &tls {
                        Some(tls) => match tls.reload() {
                            Ok(()) => tracing::info!("TLS certificate reloaded"),
                            Err(e) => tracing::error!(
                                error = format!("{e:#}"),
                                "TLS reload failed; keeping the old certificate"
                            ),
                        },
                        None => tracing::info!("SIGHUP: nothing to reload (HTTPS is off)"),
                    }
                }
            }
        });
        let result = running.wait().await;
        reloads.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        result
    })?;
    // Connections still open after the deadline are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(())
}

/// `cairn model ...`: the engine's commands and model signing.
#[derive(Debug, Subcommand)]
pub enum ModelTool {
    #[command(flatten)]
    Engine(model::ModelCommand),
    /// Make an ed25519 signing key: writes the private key to OUT (0600) and prints the
    /// public key as `registry.trusted_keys` takes it.
    Keygen {
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
    /// Sign a model file: prints the signature to send as `X-Cairn-Signature` on upload.
    Sign {
        file: PathBuf,
        /// A private key file written by `cairn model keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (private, public) = crate::registry::signing::generate().map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    writeln!(file, "{private}")?;
    let name = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("key")
        .replace(':', "_");
    println!("{name}:{public}");
    eprintln!(
        "private key written to {}; add the line above to registry.trusted_keys on the devices",
        out.display()
    );
    Ok(())
}

fn sign(file: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    use sha2::Digest as _;
    let private = std::fs::read_to_string(key)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", key.display()))?;
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    let signature =
        crate::registry::signing::sign(&private, &digest).map_err(anyhow::Error::msg)?;
    println!("{signature}");
    Ok(())
}

mod admin {
    //! `cairn admin`: offline through the store when no server runs, else through the
    //! running server's admin socket in the data dir.

    use std::io::BufRead;
    use std::path::Path;

    use anyhow::Context;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use serde_json::{Value, json};

    use super::AdminCommand;
    use crate::auth::{NewKey, NewUser, open_offline};
    use crate::http::server::ADMIN_SOCKET;
    use crate::system::lock::LockError;

    pub fn run(command: AdminCommand) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            match command {
                AdminCommand::CreateUser { target, username, role, password_stdin: _ } => {
                    let mut password = String::new();
                    std::io::stdin().lock().read_line(&mut password).context("reading the password from stdin")?;
                    let password = password.trim_end_matches(['\n', '\r']).to_owned();
                    let dir = target.data_dir()?;
                    let created = match open_offline(&dir) {
                        Ok((_lock, auth)) => {
                            let user = auth.create_user(NewUser { username, password, role, display_name: None }).await?;
                            auth.record(
                                &crate::auth::local_admin(),
                                crate::auth::audit::kind::USER_CREATED,
                                "local-cli",
                                &format!("user {} ({})", user.id, user.username),
                                &format!("role {}", role.as_str()),
                                true,
                            );
                            auth.audit.flush().await;
                            serde_json::to_value(user)?
                        }
                        Err(e) if is_busy(&e) => {
                            let body = json!({ "username": username, "password": password, "role": role });
                            via_socket(&dir, "POST", "/api/v1/users", &body).await?
                        }
                        Err(e) => return Err(e),
                    };
                    println!("created user {} ({}), id {}", created["username"], created["role"], created["id"]);
                }
                AdminCommand::CreateKey { target, user, scopes, expires, name } => {
                    let dir = target.data_dir()?;
                    let expires_at = expires.as_deref().map(parse_expiry).transpose()?;
                    let key = match open_offline(&dir) {
                        Ok((_lock, auth)) => {
                            let principal = crate::auth::local_admin();
                            let (view, key) = auth
                                .create_key(&principal, NewKey { name, scopes, expires_at, rate: None, for_user: Some(user) })
                                .await?;
                            auth.record(
                                &principal,
                                crate::auth::audit::kind::KEY_CREATED,
                                "local-cli",
                                &format!("key {} of {}", view.id, view.username),
                                &format!("scopes {}", view.scopes.join(" ")),
                                true,
                            );
                            auth.audit.flush().await;
                            key
                        }
                        Err(e) if is_busy(&e) => {
                            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                            let body = json!({ "name": name, "scopes": scopes, "user": user, "expires_at": expires_at });
                            let created = via_socket(&dir, "POST", "/api/v1/keys", &body).await?;
                            created["key"].as_str().context("the server returned no key")?.to_owned()
                        }
                        Err(e) => return Err(e),
                    };
                    println!("{key}");
                }
            }
            Ok(())
        })
    }

    fn is_busy(error: &anyhow::Error) -> bool {
        matches!(
            error.downcast_ref::<LockError>(),
            Some(LockError::Busy { .. })
        )
    }

    fn parse_expiry(text: &str) -> anyhow::Result<u64> {
        if let Ok(at) = humantime::parse_rfc3339_weak(text) {
            return Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_secs());
        }
        let span = humantime::parse_duration(text).with_context(|| {
            format!(
                "--expires `{text}`: use RFC 3339 (2027-01-31T00:00:00Z) or a duration (90days)"
            )
        })?;
        Ok(crate::store::unix_now() + span.as_secs())
    }

    /// One HTTP/1.1 request to the running server's admin socket.
    async fn via_socket(
        data_dir: &Path,
        method: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let socket = data_dir.join(ADMIN_SOCKET);
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .with_context(|| {
                format!(
                    "a server holds {} but its admin socket {} does not answer",
                    data_dir.display(),
                    socket.display()
                )
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "the server refused ({status}): {}",
                value["error"].as_str().unwrap_or("no detail")
            );
        }
        Ok(value)
    }
}
