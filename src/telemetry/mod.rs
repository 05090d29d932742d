//! Telemetry: logs (tracing) and metrics (prometheus-client).
//!
//! Architecture invariant: metric handles are created once at start and cloned into
//! the code that updates them; the request path touches atomics, never a map lock it
//! could avoid.

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
