//! What the API shows of tasks and schedules (serde JSON), built from stored records.

use serde::Serialize;
use serde_json::Value;

use super::model::Status;
use crate::store::schema::{ScheduleRecord, TaskRecord};

#[derive(Debug, Clone, Serialize)]
pub struct AttemptErrorView {
    pub attempt: u32,
    pub at_ms: u64,
    pub error: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: u64,
    pub kind: String,
    pub payload: Value,
    pub priority: u8,
    pub status: Status,
    pub creator: String,
    pub created_ms: u64,
    pub run_at_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub errors: Vec<AttemptErrorView>,
    pub progress: u8,
    pub progress_message: String,
    pub result: Option<Value>,
    pub depends_on: Vec<u64>,
    pub idempotency_key: Option<String>,
    pub schedule: Option<u64>,
    /// Why the task was canceled or failed.
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub soft_time_limit_ms: u64,
    pub hard_time_limit_ms: u64,
}

fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl TaskView {
    #[must_use]
    pub fn from_record(id: u64, record: &TaskRecord) -> Self {
        let TaskRecord::V1 {
            kind,
            payload,
            priority,
            status,
            creator,
            created_ms,
            run_at_ms,
            enqueued_ms: _,
            started_ms,
            finished_ms,
            attempts,
            max_attempts,
            retry_base: _,
            errors,
            progress,
            progress_message,
            result,
            depends_on,
            idempotency_key,
            soft_limit_ms,
            hard_limit_ms,
            schedule,
            reason,
            cancel_requested,
        } = record;
        Self {
            id,
            kind: kind.clone(),
            payload: json_or_text(payload),
            priority: *priority,
            status: Status::from_code(*status).unwrap_or(Status::Failed),
            creator: creator.clone(),
            created_ms: *created_ms,
            run_at_ms: *run_at_ms,
            started_ms: *started_ms,
            finished_ms: *finished_ms,
            attempts: *attempts,
            max_attempts: *max_attempts,
            errors: errors
                .iter()
                .map(|e| AttemptErrorView {
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    error: e.message.clone(),
                    retryable: e.retryable,
                })
                .collect(),
            progress: *progress,
            progress_message: progress_message.clone(),
            result: result.as_deref().map(json_or_text),
            depends_on: depends_on.clone(),
            idempotency_key: idempotency_key.clone(),
            schedule: *schedule,
            reason: reason.clone(),
            cancel_requested: *cancel_requested,
            soft_time_limit_ms: *soft_limit_ms,
            hard_time_limit_ms: *hard_limit_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub id: u64,
    pub name: String,
    pub cron: String,
    pub kind: String,
    pub payload: Value,
    pub priority: u8,
    /// `skip` or `run_once`.
    pub missed: &'static str,
    pub enabled: bool,
    pub creator: String,
    pub created_ms: u64,
    pub next_fire_ms: Option<u64>,
    pub last_fire_ms: Option<u64>,
    pub last_task: Option<u64>,
    pub skipped: u64,
}

impl ScheduleView {
    #[must_use]
    pub fn from_record(id: u64, record: &ScheduleRecord) -> Self {
        let ScheduleRecord::V1 {
            name,
            cron,
            kind,
            payload,
            priority,
            missed,
            enabled,
            creator,
            created_ms,
            next_fire_ms,
            last_fire_ms,
            last_task,
            skipped,
        } = record;
        Self {
            id,
            name: name.clone(),
            cron: cron.clone(),
            kind: kind.clone(),
            payload: json_or_text(payload),
            priority: *priority,
            missed: if *missed == 1 { "run_once" } else { "skip" },
            enabled: *enabled,
            creator: creator.clone(),
            created_ms: *created_ms,
            next_fire_ms: *next_fire_ms,
            last_fire_ms: *last_fire_ms,
            last_task: *last_task,
            skipped: *skipped,
        }
    }
}
