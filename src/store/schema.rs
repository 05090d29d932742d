//! The whole redb schema of cairn: every table, every stored record, the schema version.
//!
//! Architecture invariant: stored records are postcard-encoded enums whose variant is the
//! record's version (`V1`, `V2`, ...). A new variant is added, old ones are never changed,
//! so a record written by an older cairn always decodes. A change to a table's layout bumps
//! [`SCHEMA_VERSION`] and adds a step to `migrations.rs`.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// The schema this build writes. A store with a higher version is refused: cairn never
/// downgrades a store.
///
/// History:
/// - 1: `meta` only (`schema_version`, `created_at` as u64 little-endian unix seconds).
/// - 2: the device identity record (`meta["device"]`) replaces `created_at`.
/// - 3: users, sessions, API keys, key usage, the audit log; `meta["server_secret"]`.
/// - 4: the model registry (models, versions) and deployments.
/// - 5: the task scheduler (tasks, their status and idempotency indexes, schedules).
/// - 6: deployments are [`DeploymentRecord::V2`] (a precision per deployment).
pub const SCHEMA_VERSION: u32 = 6;

/// Small singleton values, by name.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Keys of [`META`].
pub mod meta_key {
    /// `u32` little-endian.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// A [`super::DeviceRecord`].
    pub const DEVICE: &str = "device";
    /// Written by the readiness probe to prove the store takes writes.
    pub const READY_PROBE: &str = "ready_probe";
    /// Schema 1 only: creation time, u64 little-endian unix seconds.
    pub const V1_CREATED_AT: &str = "created_at";
    /// 32 random bytes: the HMAC key for API key secrets.
    pub const SERVER_SECRET: &str = "server_secret";
    /// `u64` little-endian: the next user id.
    pub const NEXT_USER_ID: &str = "next_user_id";
    /// Present once `CAIRN_ADMIN_PASSWORD` has created the first admin.
    pub const ENV_ADMIN_DONE: &str = "env_admin_done";
    /// Present once the demo model was installed (deleting it does not bring it back).
    pub const DEMO_MODEL_DONE: &str = "demo_model_done";
    /// `u64` little-endian: the next task id (ids are never reused).
    pub const NEXT_TASK_ID: &str = "next_task_id";
    /// `u64` little-endian: the next schedule id.
    pub const NEXT_SCHEDULE_ID: &str = "next_schedule_id";
}

/// Users by id.
pub const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// Unique index: username → user id.
pub const USERNAMES: TableDefinition<&str, u64> = TableDefinition::new("usernames");
/// Sessions by SHA-256 of the session token (a stolen store file holds no live token).
pub const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// API keys by key id (the id is the public part of the key string).
pub const API_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("api_keys");
/// Usage counters of API keys, by key id, written periodically.
pub const KEY_USAGE: TableDefinition<u64, &[u8]> = TableDefinition::new("key_usage");
/// The append-only audit log, by sequence number.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Models by name.
pub const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
/// Model versions by (model name, version number).
pub const MODEL_VERSIONS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("model_versions");
/// The deployment of a model, by model name (at most one per model).
pub const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");

/// Tasks by id (ids grow with submission time).
pub const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// Index of every task by (status code, id) → the unix ms of its last change. Recovery
/// reads the live statuses from it; listing by status and retention read it too.
pub const TASKS_BY_STATUS: TableDefinition<(u8, u64), u64> =
    TableDefinition::new("tasks_by_status");
/// Unique index: idempotency key → task id.
pub const TASK_KEYS: TableDefinition<&str, u64> = TableDefinition::new("task_keys");
/// Periodic (cron) schedules by id.
pub const SCHEDULES: TableDefinition<u64, &[u8]> = TableDefinition::new("schedules");

/// One failed attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptErrorRecord {
    pub attempt: u32,
    pub at_ms: u64,
    pub message: String,
    pub retryable: bool,
}

/// A task. Status codes: 0 queued, 1 scheduled, 2 waiting (on dependencies), 3 running,
/// 4 paused, 5 succeeded, 6 failed, 7 canceled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRecord {
    V1 {
        kind: String,
        /// The validated payload, as JSON text.
        payload: String,
        /// 0 (lowest) to 9 (highest).
        priority: u8,
        status: u8,
        creator: String,
        created_ms: u64,
        /// Not before this time (delayed tasks, retry back-off).
        run_at_ms: Option<u64>,
        /// When the task last entered the queue (aging and time in queue count from it).
        enqueued_ms: u64,
        started_ms: Option<u64>,
        finished_ms: Option<u64>,
        /// Attempts started so far.
        attempts: u32,
        max_attempts: u32,
        /// `attempts` when the task was last retried by hand (the limit counts from it).
        retry_base: u32,
        errors: Vec<AttemptErrorRecord>,
        progress: u8,
        progress_message: String,
        /// The result as JSON text.
        result: Option<String>,
        depends_on: Vec<u64>,
        idempotency_key: Option<String>,
        soft_limit_ms: u64,
        hard_limit_ms: u64,
        schedule: Option<u64>,
        /// Why a task ended canceled or failed without running (dependency, operator).
        reason: Option<String>,
        /// Set while a cancel of the running attempt is under way.
        cancel_requested: bool,
    },
}

/// A periodic schedule: a cron expression that submits a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleRecord {
    V1 {
        name: String,
        cron: String,
        kind: String,
        payload: String,
        priority: u8,
        /// 0 skip missed runs, 1 run once for all missed runs.
        missed: u8,
        enabled: bool,
        creator: String,
        created_ms: u64,
        next_fire_ms: Option<u64>,
        last_fire_ms: Option<u64>,
        /// The task the last firing submitted (no overlap: a firing while it is unfinished
        /// is skipped).
        last_task: Option<u64>,
        /// Firings skipped because the previous run was still unfinished.
        skipped: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelRecord {
    V1 {
        description: String,
        tags: Vec<String>,
        created_at: u64,
        updated_at: u64,
        /// The number the next uploaded version gets (never reused).
        next_version: u32,
    },
}

/// An input or output of a model version: ONNX element type name, dims (-1 dynamic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpecRecord {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionRecord {
    V1 {
        /// SHA-256 of the blob: its name under `blobs/sha256/`.
        sha256: [u8; 32],
        size: u64,
        /// `None`: ready; `Some(reason)`: invalid, never deployable.
        invalid: Option<String>,
        created_at: u64,
        created_by: String,
        inputs: Vec<TensorSpecRecord>,
        outputs: Vec<TensorSpecRecord>,
        ops: Vec<(String, u32)>,
        /// 0 unsigned, 1 verified, 2 signed by a key that is not trusted.
        signature: u8,
        signed_by: Option<String>,
        weight_bytes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySettingsRecord {
    pub version: u32,
    /// 0 auto, 1 gpu, 2 cpu.
    pub device: u8,
    pub instances: u32,
    pub max_batch_size: u32,
    pub max_batch_delay_us: u32,
    pub queue_capacity: u32,
}

/// [`DeploySettingsRecord`] and the float precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySettingsRecordV2 {
    pub version: u32,
    /// 0 auto, 1 gpu, 2 cpu.
    pub device: u8,
    /// 0 f32, 1 f16.
    pub precision: u8,
    pub instances: u32,
    pub max_batch_size: u32,
    pub max_batch_delay_us: u32,
    pub queue_capacity: u32,
}

impl From<&DeploySettingsRecord> for DeploySettingsRecordV2 {
    fn from(v1: &DeploySettingsRecord) -> Self {
        Self {
            version: v1.version,
            device: v1.device,
            precision: 0,
            instances: v1.instances,
            max_batch_size: v1.max_batch_size,
            max_batch_delay_us: v1.max_batch_delay_us,
            queue_capacity: v1.queue_capacity,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentRecord {
    V1 {
        current: DeploySettingsRecord,
        /// What `rollback` returns to.
        previous: Option<DeploySettingsRecord>,
        deployed_at: u64,
    },
    /// Schema 6: settings carry a precision.
    V2(Deployed),
}

/// A deployment in the latest layout: what code reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub current: DeploySettingsRecordV2,
    /// What `rollback` returns to.
    pub previous: Option<DeploySettingsRecordV2>,
    pub deployed_at: u64,
}

impl DeploymentRecord {
    /// The record in the latest layout; older ones gain the defaults (precision f32).
    #[must_use]
    pub fn latest(self) -> Deployed {
        match self {
            Self::V1 {
                current,
                previous,
                deployed_at,
            } => Deployed {
                current: (&current).into(),
                previous: previous.as_ref().map(Into::into),
                deployed_at,
            },
            Self::V2(deployed) => deployed,
        }
    }
}

impl From<Deployed> for DeploymentRecord {
    fn from(deployed: Deployed) -> Self {
        Self::V2(deployed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRecord {
    V1 {
        username: String,
        display_name: Option<String>,
        /// 0 admin, 1 operator, 2 viewer.
        role: u8,
        /// PHC string (argon2id).
        password_hash: String,
        disabled: bool,
        created_at: u64,
        updated_at: u64,
        password_changed_at: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionRecord {
    V1 {
        user_id: u64,
        created_at: u64,
        last_seen: u64,
        csrf: [u8; 32],
        addr: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRecord {
    V1 {
        user_id: u64,
        name: String,
        /// Bit set of scopes (see `auth::Scope`).
        scopes: u32,
        /// HMAC-SHA256 of the secret under the server secret.
        mac: [u8; 32],
        created_at: u64,
        expires_at: Option<u64>,
        revoked_at: Option<u64>,
        /// Per-key rate limit; `None` takes the configured default.
        rate_per_second: Option<u32>,
        burst: Option<u32>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageRecord {
    #[default]
    Empty,
    V1 {
        by_class: Vec<u64>,
        last_used_at: u64,
        last_addr: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRecord {
    V1 {
        at_ms: u64,
        kind: String,
        actor: String,
        addr: String,
        target: String,
        detail: String,
        ok: bool,
    },
}

/// The identity of this device, created on first start. Fleet tools key on `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceRecord {
    V1 { id: [u8; 16], created_at_unix: u64 },
}

/// Encodes a record for storage.
///
/// # Panics
/// Never for cairn's records: postcard only fails on unsupported serde features.
#[must_use]
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    postcard::to_allocvec(record).expect("records are postcard-encodable")
}
