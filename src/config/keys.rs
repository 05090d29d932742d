//! The table of every configuration key: its dotted path, its kind and its form.

/// What a configuration key holds, to turn an environment string into a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Text,
    Integer,
    Bool,
    /// A list of strings; comma-separated in the environment.
    List,
}

/// One configuration key: its dotted path, its kind, and the form a value takes.
#[derive(Debug)]
pub struct Key {
    pub path: &'static str,
    pub kind: KeyKind,
    pub form: &'static str,
}

/// Every configuration key. The env var of a key is `CAIRN_` + the path in upper case,
/// dots as underscores.
pub const KEYS: &[Key] = &[
    Key {
        path: "data_dir",
        kind: KeyKind::Text,
        form: "a directory path",
    },
    Key {
        path: "http.listen",
        kind: KeyKind::Text,
        form: "ADDR:PORT or off",
    },
    Key {
        path: "https.listen",
        kind: KeyKind::Text,
        form: "ADDR:PORT or off",
    },
    Key {
        path: "https.cert",
        kind: KeyKind::Text,
        form: "a PEM certificate chain path",
    },
    Key {
        path: "https.key",
        kind: KeyKind::Text,
        form: "a PEM private key path",
    },
    Key {
        path: "limits.max_body_bytes",
        kind: KeyKind::Text,
        form: "a size such as 64MiB",
    },
    Key {
        path: "limits.max_model_bytes",
        kind: KeyKind::Text,
        form: "a size such as 1GiB",
    },
    Key {
        path: "limits.body_read_timeout",
        kind: KeyKind::Text,
        form: "a duration such as 30s",
    },
    Key {
        path: "limits.min_body_rate",
        kind: KeyKind::Text,
        form: "a size per second such as 16KiB",
    },
    Key {
        path: "limits.header_read_timeout",
        kind: KeyKind::Text,
        form: "a duration such as 10s",
    },
    Key {
        path: "limits.idle_timeout",
        kind: KeyKind::Text,
        form: "a duration such as 75s",
    },
    Key {
        path: "limits.max_connections",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "limits.max_connections_per_address",
        kind: KeyKind::Integer,
        form: "a number of connections, 0 for no limit",
    },
    Key {
        path: "limits.shutdown_deadline",
        kind: KeyKind::Text,
        form: "a duration such as 30s",
    },
    Key {
        path: "limits.max_event_streams",
        kind: KeyKind::Integer,
        form: "a number of streams, 0 for none",
    },
    Key {
        path: "log.level",
        kind: KeyKind::Text,
        form: "a filter such as info or cairn=debug",
    },
    Key {
        path: "log.format",
        kind: KeyKind::Text,
        form: "plain or json",
    },
    Key {
        path: "health.min_free_disk",
        kind: KeyKind::Text,
        form: "a size such as 256MiB",
    },
    Key {
        path: "metrics.public",
        kind: KeyKind::Bool,
        form: "true or false",
    },
    Key {
        path: "auth.session_idle",
        kind: KeyKind::Text,
        form: "a duration such as 30m",
    },
    Key {
        path: "auth.session_absolute",
        kind: KeyKind::Text,
        form: "a duration such as 12h",
    },
    Key {
        path: "auth.key_rate_per_second",
        kind: KeyKind::Integer,
        form: "requests per second, 0 for no limit",
    },
    Key {
        path: "auth.key_burst",
        kind: KeyKind::Integer,
        form: "a number of requests",
    },
    Key {
        path: "auth.address_rate_per_second",
        kind: KeyKind::Integer,
        form: "requests per second, 0 for no limit",
    },
    Key {
        path: "auth.address_burst",
        kind: KeyKind::Integer,
        form: "a number of requests",
    },
    Key {
        path: "auth.audit_retention",
        kind: KeyKind::Text,
        form: "a duration such as 90days",
    },
    Key {
        path: "auth.audit_max_entries",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "auth.ipv6_prefix",
        kind: KeyKind::Integer,
        form: "a prefix length from 1 to 128",
    },
    Key {
        path: "engine.max_model_memory",
        kind: KeyKind::Text,
        form: "a size such as 2GiB",
    },
    Key {
        path: "engine.max_tensor_bytes",
        kind: KeyKind::Text,
        form: "a size such as 1GiB",
    },
    Key {
        path: "engine.intra_op_threads",
        kind: KeyKind::Integer,
        form: "a thread count (0: every core)",
    },
    Key {
        path: "registry.require_signature",
        kind: KeyKind::Bool,
        form: "true or false",
    },
    Key {
        path: "registry.trusted_keys",
        kind: KeyKind::List,
        form: "a list of name:BASE64 ed25519 public keys (comma-separated in the environment)",
    },
    Key {
        path: "registry.demo_model",
        kind: KeyKind::Bool,
        form: "true or false",
    },
    Key {
        path: "scheduler.workers",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "scheduler.kind_concurrency",
        kind: KeyKind::List,
        form: "a list of kind=N (comma-separated in the environment)",
    },
    Key {
        path: "scheduler.max_queued",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "scheduler.kind_max_queued",
        kind: KeyKind::List,
        form: "a list of kind=N (comma-separated in the environment)",
    },
    Key {
        path: "scheduler.max_attempts",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "scheduler.retry_base",
        kind: KeyKind::Text,
        form: "a duration such as 1s",
    },
    Key {
        path: "scheduler.retry_cap",
        kind: KeyKind::Text,
        form: "a duration such as 5m",
    },
    Key {
        path: "scheduler.soft_time_limit",
        kind: KeyKind::Text,
        form: "a duration such as 10m",
    },
    Key {
        path: "scheduler.hard_time_limit",
        kind: KeyKind::Text,
        form: "a duration longer than the soft limit, such as 15m",
    },
    Key {
        path: "scheduler.cancel_grace",
        kind: KeyKind::Text,
        form: "a duration such as 10s",
    },
    Key {
        path: "scheduler.aging_step",
        kind: KeyKind::Text,
        form: "a duration such as 30s",
    },
    Key {
        path: "scheduler.retention",
        kind: KeyKind::Text,
        form: "a duration such as 7days",
    },
    Key {
        path: "scheduler.retention_max_tasks",
        kind: KeyKind::Integer,
        form: "a positive integer",
    },
    Key {
        path: "scheduler.purge_schedule",
        kind: KeyKind::Text,
        form: "a cron expression such as `0 17 * * * *`, or off",
    },
    Key {
        path: "scheduler.run_ahead",
        kind: KeyKind::Text,
        form: "a duration such as 2ms (0s: off)",
    },
];

impl Key {
    #[must_use]
    pub fn env_name(&self) -> String {
        format!("CAIRN_{}", self.path.replace('.', "_").to_ascii_uppercase())
    }
}
