//! cairn: an ML appliance for edge hardware in one binary.
//!
//! # Layout
//!
//! Modules are cut by domain; data flows one way, `http` → domain → `store`:
//!
//! - [`config`]: the TOML file, `CAIRN_*` env and flags, validated at start.
//! - [`store`]: the redb file, its schema, migrations; the only code that opens tables.
//! - [`http`]: listeners, TLS, route table, request pipeline, handlers; the only code
//!   that knows HTTP and JSON.
//! - [`registry`]: models, versions, content-addressed blobs, validation, signatures.
//! - [`serving`]: deployments (load, warm, switch, roll back) and batched inference.
//! - [`scheduler`]: built-in task kinds, queued, prioritised and persisted in the store.
//! - [`engine`]: the ONNX interpreter on burn, with cairn's own CPU kernels.
//! - [`console`]: the embedded web console files.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`system`]: the data-dir lock, signals, systemd notify, disk and process stats.
//! - [`app`]: the shared state and the life cycle of `cairn serve`.
//! - [`cli`]: the command line.
//!
//! # Threads
//!
//! One multi-threaded tokio runtime serves all connections. Anything that blocks (redb
//! transactions, fsync, hashing) runs on `spawn_blocking`, never on a worker thread.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod engine;
pub mod http;
pub mod registry;
pub mod scheduler;
pub mod serving;
pub mod store;
pub mod system;
pub mod telemetry;

/// Facts embedded by `build.rs`.
pub mod build_info {
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    pub const GIT_COMMIT: &str = env!("GIT_COMMIT_CAIRN");
    pub const BUILD_DATE: &str = env!("BUILD_DATE_CAIRN");
    /// `static` when the C runtime is linked in (the CPU-only build), else `dynamic`.
    pub const LINKAGE: &str = if cfg!(target_feature = "crt-static") {
        "static"
    } else {
        "dynamic"
    };
}
