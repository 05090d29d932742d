//! The scheduler's domain types: a task's status, the task as the scheduler holds it, and
//! its conversions to and from the stored record. API views live in `views.rs`.

use serde::{Deserialize, Serialize};

use super::kinds::Kind;
use crate::store::schema::{AttemptErrorRecord, TaskRecord};

/// Where a task is in its life. Codes are stored: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ready to run, in the queue of its priority.
    Queued,
    /// Waiting for `run_at` (a delayed task or the back-off before a retry).
    Scheduled,
    /// Waiting for its dependencies to succeed.
    Waiting,
    Running,
    /// Held by an operator; `resume` puts it back.
    Paused,
    Succeeded,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Self::Queued,
        Self::Scheduled,
        Self::Waiting,
        Self::Running,
        Self::Paused,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Scheduled => 1,
            Self::Waiting => 2,
            Self::Running => 3,
            Self::Paused => 4,
            Self::Succeeded => 5,
            Self::Failed => 6,
            Self::Canceled => 7,
        }
    }

    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Succeeded, failed or canceled: nothing more happens to the task by itself.
    #[must_use]
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// Counts against the queue's capacity (not running, not finished).
    #[must_use]
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::Queued | Self::Scheduled | Self::Waiting | Self::Paused
        )
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at_ms: u64,
    pub message: String,
    pub retryable: bool,
}

/// A task as the scheduler holds it in memory (unfinished tasks only).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: u64,
    pub kind: Kind,
    pub priority: u8,
    pub status: Status,
    pub creator: String,
    pub created_ms: u64,
    pub run_at_ms: Option<u64>,
    pub enqueued_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retry_base: u32,
    pub errors: Vec<AttemptError>,
    pub progress: u8,
    pub progress_message: String,
    pub result: Option<String>,
    pub depends_on: Vec<u64>,
    pub idempotency_key: Option<String>,
    pub soft_limit_ms: u64,
    pub hard_limit_ms: u64,
    pub schedule: Option<u64>,
    pub reason: Option<String>,
    pub cancel_requested: bool,
}

impl Task {
    /// Attempts left before the task fails for good.
    #[must_use]
    pub fn attempts_left(&self) -> u32 {
        self.max_attempts
            .saturating_sub(self.attempts.saturating_sub(self.retry_base))
    }

    #[must_use]
    pub fn to_record(&self) -> TaskRecord {
        let Self {
            id: _,
            kind,
            priority,
            status,
            creator,
            created_ms,
            run_at_ms,
            enqueued_ms,
            started_ms,
            finished_ms,
            attempts,
            max_attempts,
            retry_base,
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
        } = self;
        TaskRecord::V1 {
            kind: kind.name().to_owned(),
            payload: kind.payload_json(),
            priority: *priority,
            status: status.code(),
            creator: creator.clone(),
            created_ms: *created_ms,
            run_at_ms: *run_at_ms,
            enqueued_ms: *enqueued_ms,
            started_ms: *started_ms,
            finished_ms: *finished_ms,
            attempts: *attempts,
            max_attempts: *max_attempts,
            retry_base: *retry_base,
            errors: errors
                .iter()
                .map(|e| AttemptErrorRecord {
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    message: e.message.clone(),
                    retryable: e.retryable,
                })
                .collect(),
            progress: *progress,
            progress_message: progress_message.clone(),
            result: result.clone(),
            depends_on: depends_on.clone(),
            idempotency_key: idempotency_key.clone(),
            soft_limit_ms: *soft_limit_ms,
            hard_limit_ms: *hard_limit_ms,
            schedule: *schedule,
            reason: reason.clone(),
            cancel_requested: *cancel_requested,
        }
    }

    /// # Errors
    /// The record names a kind or status this build does not know, or a payload that no
    /// longer validates.
    pub fn from_record(id: u64, record: TaskRecord) -> Result<Self, String> {
        let TaskRecord::V1 {
            kind,
            payload,
            priority,
            status,
            creator,
            created_ms,
            run_at_ms,
            enqueued_ms,
            started_ms,
            finished_ms,
            attempts,
            max_attempts,
            retry_base,
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
        let payload: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| format!("task {id}: payload is not JSON: {e}"))?;
        Ok(Self {
            id,
            kind: Kind::parse(&kind, &payload).map_err(|e| format!("task {id}: {e}"))?,
            priority,
            status: Status::from_code(status)
                .ok_or_else(|| format!("task {id}: unknown status code {status}"))?,
            creator,
            created_ms,
            run_at_ms,
            enqueued_ms,
            started_ms,
            finished_ms,
            attempts,
            max_attempts,
            retry_base,
            errors: errors
                .into_iter()
                .map(|e| AttemptError {
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    message: e.message,
                    retryable: e.retryable,
                })
                .collect(),
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
        })
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Worth another attempt (a busy resource, a transient I/O error); terminal otherwise.
    pub retryable: bool,
}

impl Failure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn terminal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A change of a task, as the event feed and waiters see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskEvent {
    /// Grows by one per event; the feed's cursor.
    pub seq: u64,
    pub id: u64,
    pub kind: &'static str,
    pub status: Status,
    pub progress: u8,
    pub message: String,
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::from_code(status.code()), Some(status));
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::from_code(8), None);
    }
}
