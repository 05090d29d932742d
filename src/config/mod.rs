//! Configuration: one TOML file, `CAIRN_*` environment variables and command-line
//! flags, merged in that order of precedence (file < env < flag) and validated once
//! at start.
//!
//! Every key is listed in [`KEYS`]; the environment variable of a key is derived from
//! its dotted path (`limits.max_body_bytes` → `CAIRN_LIMITS_MAX_BODY_BYTES`). Unknown
//! keys, unknown `CAIRN_*` variables and bad values are errors that name the key and
//! the expected form.

mod keys;
mod scheduler;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use keys::{KEYS, Key, KeyKind};
pub use scheduler::SchedulerSection;
pub use values::{ByteSize, Listen, LogFormat};

/// Variables with the `CAIRN_` prefix that are not configuration keys.
pub const NON_CONFIG_ENV: &[&str] = &[
    "CAIRN_CONFIG",
    "CAIRN_ADMIN_PASSWORD",
    "CAIRN_ADMIN_PASSWORD_FILE",
    "CAIRN_LOG",
];

/// The effective configuration of a `cairn serve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the TLS material and the lock live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub metrics: MetricsConfig,
    pub auth: AuthSection,
    pub engine: EngineSection,
    pub registry: RegistrySection,
    pub scheduler: SchedulerSection,
}

/// Inference limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// The weights of all deployed models together may not exceed this (a deploy that
    /// would is refused with 409).
    pub max_model_memory: ByteSize,
    /// No tensor a model makes (at load or per request) may exceed this.
    pub max_tensor_bytes: ByteSize,
    /// Threads one inference may spread over on the CPU (convolution and GEMM tiles,
    /// large element-wise ops); 0 takes every core. Shared by all concurrent inferences.
    pub intra_op_threads: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            max_model_memory: ByteSize(2 << 30),
            max_tensor_bytes: ByteSize(1 << 30),
            intra_op_threads: 0,
        }
    }
}

/// The model registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Refuse model versions without a valid signature from one of `trusted_keys`.
    pub require_signature: bool,
    /// Ed25519 public keys that may sign models: `name:BASE64` (or bare `BASE64`), as
    /// `cairn model keygen` prints them.
    pub trusted_keys: Vec<String>,
    /// Install and deploy the built-in demo model (`digits`) on the first start of a store.
    pub demo_model: bool,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            require_signature: false,
            trusted_keys: Vec::new(),
            demo_model: true,
        }
    }
}

/// Sessions, rate limits and the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// A console session ends after this long without a request.
    #[serde(with = "values::duration")]
    pub session_idle: Duration,
    /// A console session ends this long after login, whatever its use.
    #[serde(with = "values::duration")]
    pub session_absolute: Duration,
    /// Default requests per second per API key (0: unlimited); keys may set their own.
    pub key_rate_per_second: u32,
    pub key_burst: u32,
    /// Requests per second per client address without an API key (0: unlimited).
    pub address_rate_per_second: u32,
    pub address_burst: u32,
    /// Audit entries older than this are dropped.
    #[serde(with = "values::duration")]
    pub audit_retention: Duration,
    pub audit_max_entries: u64,
    /// IPv6 clients are keyed on this many leading bits of their address for rate limits,
    /// login throttling and connection counts (one /64 is one client); 1 to 128.
    pub ipv6_prefix: u8,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            key_rate_per_second: 50_000,
            key_burst: 100_000,
            address_rate_per_second: 50,
            address_burst: 100,
            audit_retention: Duration::from_secs(90 * 86400),
            audit_max_entries: 100_000,
            ipv6_prefix: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Plain HTTP listener, `off` to disable. Loopback by default: on the LAN, use HTTPS.
    pub listen: Listen,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    pub listen: Listen,
    /// PEM certificate chain; when unset, a self-signed certificate is generated in the data dir.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: ByteSize,
    /// Largest model file accepted by an upload (the upload route's body limit).
    pub max_model_bytes: ByteSize,
    /// A request body that sends nothing for this long is cut off (408).
    #[serde(with = "values::duration")]
    pub body_read_timeout: Duration,
    /// Past the first `body_read_timeout`, a body must arrive at least this fast on average
    /// (bytes per second), or it is cut off (408).
    pub min_body_rate: ByteSize,
    /// A client must send complete request headers within this time.
    #[serde(with = "values::duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this time.
    #[serde(with = "values::duration")]
    pub idle_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 client: its `auth.ipv6_prefix`) may hold
    /// at once; more are closed on accept. 0: no limit.
    pub max_connections_per_address: usize,
    /// On SIGTERM, in-flight requests get this long to finish.
    #[serde(with = "values::duration")]
    pub shutdown_deadline: Duration,
    /// Server-Sent Event streams (`GET /api/v1/tasks/events`) open at once; past it 503
    /// (clients use the long poll). 0: no streams.
    pub max_event_streams: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `cairn=debug,hyper=warn`, ...
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// `/readyz` fails when the data dir's file system has less free space than this.
    pub min_free_disk: ByteSize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without authentication.
    pub public: bool,
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = std::env::var_os("STATE_DIRECTORY")
            // systemd may pass several colon-separated dirs; the first is ours.
            .and_then(|dirs| {
                dirs.to_str()
                    .and_then(|d| d.split(':').next().map(PathBuf::from))
            })
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("./cairn-data"));
        Self {
            data_dir,
            http: HttpConfig::default(),
            https: HttpsConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            health: HealthConfig::default(),
            metrics: MetricsConfig::default(),
            auth: AuthSection::default(),
            engine: EngineSection::default(),
            registry: RegistrySection::default(),
            scheduler: SchedulerSection::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 8080))),
        }
    }
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            listen: Listen::On(SocketAddr::from(([0, 0, 0, 0], 8443))),
            cert: None,
            key: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize(64 * 1024 * 1024),
            max_model_bytes: ByteSize(1 << 30),
            body_read_timeout: Duration::from_secs(30),
            min_body_rate: ByteSize(16 * 1024),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            max_connections_per_address: 256,
            shutdown_deadline: Duration::from_secs(30),
            max_event_streams: 64,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Plain,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            min_free_disk: ByteSize(256 * 1024 * 1024),
        }
    }
}

/// Overrides given on the command line, highest precedence.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `(dotted key, value as typed)`.
    pub values: Vec<(&'static str, String)>,
}

impl Overrides {
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.values.push((key, value.into()));
    }
}

/// Where the effective configuration came from, for `config show` and the start log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

/// Loads the configuration: `file` (if any) < `env` (the `CAIRN_*` variables) < `flags`.
///
/// # Errors
/// An unreadable file, TOML syntax errors, unknown keys or env vars, and bad values,
/// each with the key named.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &Overrides,
) -> anyhow::Result<Loaded> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?,
        None => String::new(),
    };
    let config = from_text(&text, env, flags).map_err(|e| match file {
        Some(path) => e.context(format!("config file {}", path.display())),
        None => e,
    })?;
    Ok(Loaded {
        config,
        file: file.map(Path::to_path_buf),
    })
}

/// Parses and validates configuration text with env and flag overrides (the part of
/// [`load`] that does no I/O; fuzzed).
///
/// # Errors
/// TOML syntax errors, unknown keys or env vars, and bad values, each with the key named.
pub fn from_text(
    text: &str,
    env: &BTreeMap<String, String>,
    flags: &Overrides,
) -> anyhow::Result<Config> {
    let mut table = text
        .parse::<toml::Table>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, value) in env {
        if !name.starts_with("CAIRN_") || NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = KEYS.iter().find(|k| k.env_name() == *name) else {
            // A misspelt key of a known section is an error; other `CAIRN_*` variables
            // (scripts' own, say) are not ours to judge.
            let in_a_section = KEYS.iter().any(|k| {
                let section = k.path.split('.').next().unwrap_or("");
                k.path.contains('.')
                    && name.starts_with(&format!("CAIRN_{}_", section.to_ascii_uppercase()))
            });
            if !in_a_section {
                continue;
            }
            bail!(
                "unknown environment variable {name}: cairn knows {}",
                KEYS.iter()
                    .map(Key::env_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        insert(&mut table, key, value).with_context(|| format!("environment variable {name}"))?;
    }
    for (path, value) in &flags.values {
        let key = KEYS
            .iter()
            .find(|k| k.path == *path)
            .expect("flags map to known keys");
        insert(&mut table, key, value).with_context(|| format!("flag for {path}"))?;
    }
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let form = KEYS.iter().find(|k| k.path == path).map(|k| k.form);
            match form {
                Some(form) => {
                    anyhow::anyhow!("config key `{path}`: {}; expected {form}", e.inner())
                }
                None => anyhow::anyhow!("config key `{path}`: {}", e.inner()),
            }
        })?;
    config.validate()?;
    Ok(config)
}

fn insert(table: &mut toml::Table, key: &Key, raw: &str) -> anyhow::Result<()> {
    let value = match key.kind {
        KeyKind::Text => toml::Value::String(raw.to_owned()),
        KeyKind::Integer => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("`{raw}` is not {}", key.form))?,
        ),
        KeyKind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        ),
        KeyKind::Bool => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("`{raw}` is not {}", key.form))?,
        ),
    };
    let mut parts = key.path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return Ok(());
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("config key `{part}` must be a table"))?;
    }
    Ok(())
}

impl Config {
    /// Checks the relations serde cannot express.
    ///
    /// # Errors
    /// A message naming the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            bail!("config key `data_dir`: must not be empty; expected a directory path");
        }
        if self.http.listen == Listen::Off && self.https.listen == Listen::Off {
            bail!("config keys `http.listen` and `https.listen` are both off: nothing would serve");
        }
        if self.https.cert.is_some() != self.https.key.is_some() {
            bail!("config keys `https.cert` and `https.key` go together: set both or neither");
        }
        if let (Listen::On(a), Listen::On(b)) = (self.http.listen, self.https.listen)
            && a == b
            && a.port() != 0
        {
            bail!("config keys `http.listen` and `https.listen` are both {a}");
        }
        if self.limits.max_connections == 0 {
            bail!("config key `limits.max_connections`: must be at least 1");
        }
        if self.limits.max_body_bytes.0 == 0 {
            bail!("config key `limits.max_body_bytes`: must be at least 1 byte");
        }
        for (key, value) in [
            (
                "limits.header_read_timeout",
                self.limits.header_read_timeout,
            ),
            ("limits.idle_timeout", self.limits.idle_timeout),
        ] {
            if value.is_zero() {
                bail!("config key `{key}`: must be longer than zero");
            }
        }
        if self.auth.session_idle.is_zero() || self.auth.session_absolute < self.auth.session_idle {
            bail!(
                "config keys `auth.session_idle` and `auth.session_absolute`: idle must be above zero and at most absolute"
            );
        }
        if self.limits.max_model_bytes.0 == 0 || self.limits.body_read_timeout.is_zero() {
            bail!(
                "config keys `limits.max_model_bytes` and `limits.body_read_timeout`: must be above zero"
            );
        }
        if self.engine.intra_op_threads > 1024 {
            bail!("config key `engine.intra_op_threads`: at most 1024 (0 takes every core)");
        }
        if self.engine.max_tensor_bytes.0 == 0 {
            bail!("config key `engine.max_tensor_bytes`: must be at least 1 byte");
        }
        for key in &self.registry.trusted_keys {
            if let Err(e) = crate::registry::signing::parse_public_key(key) {
                bail!("config key `registry.trusted_keys`: `{key}`: {e}");
            }
        }
        if self.registry.require_signature && self.registry.trusted_keys.is_empty() {
            bail!(
                "config key `registry.require_signature` is true but `registry.trusted_keys` is empty: no model could be accepted"
            );
        }
        if self.auth.audit_max_entries == 0 {
            bail!("config key `auth.audit_max_entries`: must be at least 1");
        }
        self.scheduler.validate()?;
        if !(1..=128).contains(&self.auth.ipv6_prefix) {
            bail!(
                "config key `auth.ipv6_prefix`: {} is not a prefix length from 1 to 128",
                self.auth.ipv6_prefix
            );
        }
        // tracing-subscriber's directive parser can panic on non-ASCII text (found by
        // fuzzing); filters are ASCII anyway.
        if !self
            .log
            .level
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
        {
            bail!("config key `log.level`: only ASCII is allowed; expected a filter such as info");
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            anyhow::anyhow!("config key `log.level`: {e}; expected a filter such as info")
        })?;
        Ok(())
    }

    /// The configuration as TOML with secrets redacted (none are stored in the file
    /// today: key material lives in files the config only points to).
    ///
    /// # Panics
    /// Never: every field serializes.
    #[must_use]
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// The `CAIRN_*` variables of this process.
#[must_use]
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("CAIRN_"))
        .collect()
}

#[cfg(test)]
mod tests;
