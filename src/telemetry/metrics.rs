//! The Prometheus registry and the metric families of the HTTP layer and the process.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;
use crate::system::proc_stats;

mod scheduler;
mod serving;

pub use scheduler::{SchedulerMetrics, TaskDepthLabels, TaskKindLabels, TaskOutcomeLabels};
pub use serving::{
    DeploymentMetrics, InferOutcomeLabels, ModelLabels, ModelVersionLabels, ServingMetrics,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/v2/models/{name}/infer`), never the raw path: bounded cardinality.
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The public id of an API key (never its secret).
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyClassLabels {
    pub key_id: String,
    /// The scope the route needs (`other` for public and session-only routes).
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimiterLabels {
    pub limiter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Metric handles of identity and access.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    pub key_requests: Family<KeyClassLabels, Counter>,
    pub key_rate_limit: Family<KeyLabels, Gauge>,
    pub address_rate_limit: Gauge,
    pub rate_limited: Family<LimiterLabels, Counter>,
    pub logins: Family<OutcomeLabels, Counter>,
    pub denied: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    build_date: &'static str,
}

/// Where inference runs, as the engine's device choice reported it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineDeviceLabels {
    /// `gpu` or `cpu`.
    pub kind: String,
    /// The wgpu adapter's name, type, backend and driver: the one in use, or under `cpu`
    /// the CPU-type adapter passed over (empty when there is none).
    pub adapter: String,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
}

/// Metric handles of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub in_flight: Gauge,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_total: Family<ListenerLabels, Counter>,
    pub tls_handshake_failures: Counter,
}

/// The registry and every handle, shared by the whole process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub auth: AuthMetrics,
    pub serving: ServingMetrics,
    pub scheduler: SchedulerMetrics,
}

impl Metrics {
    /// Registers `cairn_engine_device_info`, once, at start.
    pub fn register_engine_device(&mut self, labels: EngineDeviceLabels) {
        self.registry.sub_registry_with_prefix("cairn").register(
            "engine_device",
            "The device inference runs on: kind (gpu or cpu) and the GPU adapter, if any",
            Info::new(labels),
        );
    }

    #[must_use]
    pub fn new(store: Arc<Store>, start_time_unix: f64) -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.5, 14))
            }),
            in_flight: Gauge::default(),
            connections_open: Family::default(),
            connections_total: Family::default(),
            tls_handshake_failures: Counter::default(),
        };
        let cairn = registry.sub_registry_with_prefix("cairn");
        cairn.register(
            "build",
            "Version, commit and build date of this binary",
            Info::new(BuildLabels {
                version: crate::build_info::VERSION,
                commit: crate::build_info::GIT_COMMIT,
                build_date: crate::build_info::BUILD_DATE,
            }),
        );
        cairn.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        cairn.register_with_unit(
            "http_request_duration",
            "Time from request head to response head, by route template and method",
            Unit::Seconds,
            http.duration.clone(),
        );
        cairn.register(
            "http_requests_in_flight",
            "HTTP requests being handled now",
            http.in_flight.clone(),
        );
        cairn.register(
            "http_connections_open",
            "Client connections open now, by listener",
            http.connections_open.clone(),
        );
        cairn.register(
            "http_connections",
            "Client connections accepted, by listener",
            http.connections_total.clone(),
        );
        cairn.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            http.tls_handshake_failures.clone(),
        );
        let auth = AuthMetrics::default();
        cairn.register(
            "api_key_requests",
            "Requests made with each API key, by the scope their route needs",
            auth.key_requests.clone(),
        );
        cairn.register(
            "api_key_rate_limit",
            "Requests per second allowed to each active API key",
            auth.key_rate_limit.clone(),
        );
        cairn.register(
            "address_rate_limit",
            "Requests per second allowed to each client address without a key (0: no limit)",
            auth.address_rate_limit.clone(),
        );
        cairn.register(
            "rate_limited_requests",
            "Requests refused with 429, by limiter (key or address)",
            auth.rate_limited.clone(),
        );
        cairn.register("logins", "Login attempts, by outcome", auth.logins.clone());
        cairn.register(
            "auth_denied_requests",
            "Requests refused with 401 or 403, by reason",
            auth.denied.clone(),
        );
        let serving = ServingMetrics::default();
        serving.register(cairn);
        let scheduler = SchedulerMetrics::default();
        scheduler.register(cairn);
        registry.register_collector(Box::new(ProcessCollector {
            store,
            start_time_unix,
        }));
        Self {
            registry,
            http,
            auth,
            serving,
            scheduler,
        }
    }

    /// The text exposition (OpenMetrics-compatible Prometheus text), ending in `# EOF`.
    ///
    /// # Panics
    /// Never: writing into a `String` cannot fail.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("write to String");
        out
    }

    /// The classic Prometheus text format (0.0.4), for clients that do not ask for
    /// OpenMetrics: `promtool`, curl, older scrapers.
    #[must_use]
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode())
    }

    /// Registers metrics of a later subsystem under the `cairn_` prefix.
    pub fn registry_mut(&mut self) -> &mut Registry {
        self.registry.sub_registry_with_prefix("cairn")
    }
}

/// Process and store statistics, read at each scrape.
#[derive(Debug)]
struct ProcessCollector {
    store: Arc<Store>,
    start_time_unix: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = proc_stats::read();
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, value: f64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "byte and fd counts fit an f64 for metrics"
        )]
        {
            gauge(
                "process_resident_memory",
                "Resident set size",
                Some(&Unit::Bytes),
                stats.resident_bytes as f64,
            )?;
            gauge(
                "process_virtual_memory",
                "Virtual memory size",
                Some(&Unit::Bytes),
                stats.virtual_bytes as f64,
            )?;
            gauge(
                "process_open_fds",
                "Open file descriptors",
                None,
                stats.open_fds as f64,
            )?;
            gauge(
                "process_max_fds",
                "Limit of open file descriptors",
                None,
                stats.max_fds as f64,
            )?;
            gauge(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                self.start_time_unix,
            )?;
            gauge(
                "cairn_store_file_size",
                "Size of the store file",
                Some(&Unit::Bytes),
                self.store.file_size() as f64,
            )?;
        }
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Rewrites an OpenMetrics exposition as Prometheus text 0.0.4: `# UNIT` and `# EOF`
/// go, `info` families become `gauge` families named `*_info`, and counter families take
/// the `_total` name their samples carry.
#[must_use]
pub fn openmetrics_to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (family, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                "stateset" | "gaugehistogram" => (name.to_owned(), "gauge"),
                other => (name.to_owned(), other),
            };
            if let Some((help_name, help)) = pending_help.take()
                && help_name == name
            {
                out.push_str("# HELP ");
                out.push_str(&family);
                out.push(' ');
                out.push_str(help);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&family);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // Not part of the classic format.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_text_renames_counters_and_info() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
                    # HELP a_build Build.\n# TYPE a_build info\n# UNIT a_build x\na_build_info{v=\"1\"} 1\n# EOF\n";
        let text = super::openmetrics_to_prometheus_text(open);
        assert_eq!(
            text,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n"
        );
    }
}
