//! The `[scheduler]` section: queue bounds, workers, retries, time limits, retention,
//! run-ahead, and its checks.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::values;

/// The task scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Tasks that run at once, all kinds together.
    pub workers: u32,
    /// Per-kind limits on tasks running at once: `kind=N`.
    pub kind_concurrency: Vec<String>,
    /// Tasks waiting (queued, scheduled, waiting on dependencies, paused), all kinds
    /// together; a submission past it gets 429.
    pub max_queued: u32,
    /// Per-kind limits on waiting tasks: `kind=N`.
    pub kind_max_queued: Vec<String>,
    /// Attempts of a task whose errors are retryable, unless the task says otherwise.
    pub max_attempts: u32,
    /// The back-off before retry n is a random time up to `min(retry_cap, retry_base * 2^(n-1))`.
    #[serde(with = "values::duration")]
    pub retry_base: Duration,
    #[serde(with = "values::duration")]
    pub retry_cap: Duration,
    /// Past this, a running attempt is asked to stop (cooperative cancellation).
    #[serde(with = "values::duration")]
    pub soft_time_limit: Duration,
    /// Past this, a running attempt is abandoned and the task fails.
    #[serde(with = "values::duration")]
    pub hard_time_limit: Duration,
    /// A canceled running task that has not stopped after this long is abandoned.
    #[serde(with = "values::duration")]
    pub cancel_grace: Duration,
    /// A waiting task gains one priority level per this much time in the queue.
    #[serde(with = "values::duration")]
    pub aging_step: Duration,
    /// Finished tasks older than this are purged.
    #[serde(with = "values::duration")]
    pub retention: Duration,
    /// At most this many finished tasks are kept (the oldest go first).
    pub retention_max_tasks: u64,
    /// When the built-in `tasks.purge` runs: a cron expression (seconds first, or the
    /// classic five fields), or `off`.
    pub purge_schedule: String,
    /// A task that can start at once begins while its submission commits; a submission
    /// is held up to this long so that a short task's end shares its commit (0s: off).
    #[serde(with = "values::duration")]
    pub run_ahead: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            workers: 4,
            kind_concurrency: vec![
                "store.backup=1".into(),
                "store.compact=1".into(),
                "model.validate=1".into(),
                "model.benchmark=1".into(),
                "system.selftest=1".into(),
            ],
            max_queued: 10_000,
            kind_max_queued: Vec::new(),
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            soft_time_limit: Duration::from_secs(600),
            hard_time_limit: Duration::from_secs(900),
            cancel_grace: Duration::from_secs(10),
            aging_step: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 86400),
            retention_max_tasks: 10_000,
            purge_schedule: "0 17 * * * *".into(),
            run_ahead: Duration::from_millis(2),
        }
    }
}

impl SchedulerSection {
    /// `kind=N` rows as (kind, N).
    ///
    /// # Errors
    /// A row that is not `kind=N` with a known kind and a whole number.
    pub fn parse_kind_limits(rows: &[String], key: &str) -> anyhow::Result<Vec<(String, u32)>> {
        rows.iter()
            .map(|row| {
                let (kind, n) = row
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("config key `{key}`: `{row}` is not kind=N"))?;
                let kind = kind.trim();
                if crate::scheduler::kinds::kind_index(kind).is_none() {
                    bail!(
                        "config key `{key}`: unknown task kind `{kind}`; expected one of {}",
                        crate::scheduler::kinds::KIND_NAMES.join(", ")
                    );
                }
                let n: u32 = n.trim().parse().map_err(|_| {
                    anyhow::anyhow!("config key `{key}`: `{row}`: N is not a whole number")
                })?;
                Ok((kind.to_owned(), n))
            })
            .collect()
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 {
            bail!("config key `scheduler.workers`: must be at least 1");
        }
        for (key, rows) in [
            ("scheduler.kind_concurrency", &self.kind_concurrency),
            ("scheduler.kind_max_queued", &self.kind_max_queued),
        ] {
            Self::parse_kind_limits(rows, key)?;
        }
        if self.max_attempts == 0 {
            bail!("config key `scheduler.max_attempts`: must be at least 1");
        }
        if self.retry_base.is_zero() || self.retry_cap < self.retry_base {
            bail!(
                "config keys `scheduler.retry_base` and `scheduler.retry_cap`: base must be above zero and at most cap"
            );
        }
        if self.soft_time_limit.is_zero() || self.hard_time_limit <= self.soft_time_limit {
            bail!(
                "config keys `scheduler.soft_time_limit` and `scheduler.hard_time_limit`: the hard limit must be longer than the soft one"
            );
        }
        if self.aging_step.is_zero() || self.cancel_grace.is_zero() {
            bail!(
                "config keys `scheduler.aging_step` and `scheduler.cancel_grace`: must be above zero"
            );
        }
        if self.purge_schedule != "off" {
            crate::scheduler::cron::parse(&self.purge_schedule)
                .map_err(|e| anyhow::anyhow!("config key `scheduler.purge_schedule`: {e}"))?;
        }
        Ok(())
    }
}
