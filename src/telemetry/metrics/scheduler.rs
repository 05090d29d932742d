//! The metric families of the task scheduler: queue depth, outcomes, retries, failures
//! and run and queue times, by kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskDepthLabels {
    pub status: &'static str,
    pub priority: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskKindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskOutcomeLabels {
    pub kind: &'static str,
    pub status: &'static str,
}

/// Metric handles of the task scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    /// Unfinished tasks by status and priority.
    pub depth: Family<TaskDepthLabels, Gauge>,
    pub finished: Family<TaskOutcomeLabels, Counter>,
    pub retries: Family<TaskKindLabels, Counter>,
    pub failures: Family<TaskKindLabels, Counter>,
    pub run_seconds: Family<TaskKindLabels, Histogram>,
    pub queue_seconds: Family<TaskKindLabels, Histogram>,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            depth: Family::default(),
            finished: Family::default(),
            retries: Family::default(),
            failures: Family::default(),
            run_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 12))
            }),
            queue_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 4.0, 14))
            }),
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "milliseconds as seconds")]
fn ms_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl SchedulerMetrics {
    /// Moves the depth gauge of (`status`, `priority`) by `delta`.
    pub fn set_depth(&self, status: crate::scheduler::Status, priority: u8, delta: i64) {
        self.depth
            .get_or_create(&TaskDepthLabels {
                status: status.as_str(),
                priority,
            })
            .inc_by(delta);
    }

    pub fn finished(&self, kind: &'static str, status: crate::scheduler::Status) {
        self.finished
            .get_or_create(&TaskOutcomeLabels {
                kind,
                status: status.as_str(),
            })
            .inc();
    }

    pub fn retried(&self, kind: &'static str) {
        self.retries.get_or_create(&TaskKindLabels { kind }).inc();
    }

    pub fn failed(&self, kind: &'static str) {
        self.failures.get_or_create(&TaskKindLabels { kind }).inc();
    }

    pub fn ran_for(&self, kind: &'static str, ms: u64) {
        self.run_seconds
            .get_or_create(&TaskKindLabels { kind })
            .observe(ms_to_seconds(ms));
    }

    pub fn queued_for(&self, kind: &'static str, ms: u64) {
        self.queue_seconds
            .get_or_create(&TaskKindLabels { kind })
            .observe(ms_to_seconds(ms));
    }

    pub(super) fn register(&self, cairn: &mut Registry) {
        cairn.register(
            "tasks",
            "Unfinished tasks, by status and priority (queue depth)",
            self.depth.clone(),
        );
        cairn.register(
            "tasks_finished",
            "Tasks that finished, by kind and final status",
            self.finished.clone(),
        );
        cairn.register(
            "task_retries",
            "Failed attempts that were scheduled for a retry, by kind",
            self.retries.clone(),
        );
        cairn.register(
            "task_failures",
            "Tasks that failed for good, by kind",
            self.failures.clone(),
        );
        cairn.register_with_unit(
            "task_run",
            "Time an attempt ran, by kind",
            Unit::Seconds,
            self.run_seconds.clone(),
        );
        cairn.register_with_unit(
            "task_queue",
            "Time a task waited in the queue before an attempt started, by kind",
            Unit::Seconds,
            self.queue_seconds.clone(),
        );
    }
}
