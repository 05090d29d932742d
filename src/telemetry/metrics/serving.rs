//! The metric families of serving: requests, queue and compute time, batch rows and the
//! live deployments, per model and version.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelVersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InferOutcomeLabels {
    pub model: String,
    pub version: String,
    /// `success`, `invalid` (a 4xx: the request's fault), `busy` (429), `error` (5xx).
    pub outcome: &'static str,
}

/// Metric handles of serving: per model and version.
#[derive(Debug, Clone)]
pub struct ServingMetrics {
    pub requests: Family<InferOutcomeLabels, Counter>,
    pub queue_seconds: Family<ModelVersionLabels, Histogram>,
    pub compute_seconds: Family<ModelVersionLabels, Histogram>,
    pub batch_rows: Family<ModelVersionLabels, Histogram>,
    pub in_flight: Family<ModelLabels, Gauge>,
    pub deployed_version: Family<ModelLabels, Gauge>,
    pub weight_bytes: Family<ModelLabels, Gauge>,
    pub deploy_failures: Family<ModelLabels, Counter>,
}

impl Default for ServingMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            queue_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 3.0, 14))
            }),
            compute_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 3.0, 14))
            }),
            batch_rows: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 12))
            }),
            in_flight: Family::default(),
            deployed_version: Family::default(),
            weight_bytes: Family::default(),
            deploy_failures: Family::default(),
        }
    }
}

/// The serving metric handles of one deployment, looked up once when it is loaded so the
/// request path touches only atomics.
#[derive(Debug, Clone)]
pub struct DeploymentMetrics {
    pub success: Counter,
    pub invalid: Counter,
    pub busy: Counter,
    pub error: Counter,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batch_rows: Histogram,
    pub in_flight: Gauge,
}

impl ServingMetrics {
    /// The handles of `model`'s `version`.
    #[must_use]
    pub fn for_deployment(&self, model: &str, version: u32) -> DeploymentMetrics {
        let outcome = |outcome| {
            self.requests
                .get_or_create(&InferOutcomeLabels {
                    model: model.to_owned(),
                    version: version.to_string(),
                    outcome,
                })
                .clone()
        };
        let labels = ModelVersionLabels {
            model: model.to_owned(),
            version: version.to_string(),
        };
        DeploymentMetrics {
            success: outcome("success"),
            invalid: outcome("invalid"),
            busy: outcome("busy"),
            error: outcome("error"),
            queue_seconds: self.queue_seconds.get_or_create(&labels).clone(),
            compute_seconds: self.compute_seconds.get_or_create(&labels).clone(),
            batch_rows: self.batch_rows.get_or_create(&labels).clone(),
            in_flight: self
                .in_flight
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                })
                .clone(),
        }
    }

    /// A deploy or restore of `model` failed.
    pub fn failure(&self, model: &str) {
        self.deploy_failures
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .inc();
    }

    /// The live version and its weights, or none (0).
    pub fn set_live(&self, model: &str, live: Option<(u32, u64)>) {
        let labels = ModelLabels {
            model: model.to_owned(),
        };
        let (version, bytes) = live.unwrap_or((0, 0));
        self.deployed_version
            .get_or_create(&labels)
            .set(i64::from(version));
        self.weight_bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(super) fn register(&self, cairn: &mut Registry) {
        cairn.register(
            "inference_requests",
            "Inference requests, by model, version and outcome",
            self.requests.clone(),
        );
        cairn.register_with_unit(
            "inference_queue",
            "Time requests waited in the model's queue",
            Unit::Seconds,
            self.queue_seconds.clone(),
        );
        cairn.register_with_unit(
            "inference_compute",
            "Time the engine ran the batch a request was in",
            Unit::Seconds,
            self.compute_seconds.clone(),
        );
        cairn.register(
            "inference_batch_rows",
            "Rows of the batches requests ran in (dynamic batching)",
            self.batch_rows.clone(),
        );
        cairn.register(
            "inference_in_flight",
            "Inference requests being served now, by model",
            self.in_flight.clone(),
        );
        cairn.register(
            "deployed_version",
            "The version of each model that serves (0: none)",
            self.deployed_version.clone(),
        );
        cairn.register(
            "deployment_weight_bytes",
            "Resident weight bytes of each model's deployment",
            self.weight_bytes.clone(),
        );
        cairn.register(
            "deployment_failures",
            "Deploys and restores that failed to load, by model",
            self.deploy_failures.clone(),
        );
    }
}
