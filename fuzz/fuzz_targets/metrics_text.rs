//! The OpenMetrics → Prometheus text rewriter accepts any input without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let out = cairn::telemetry::metrics::openmetrics_to_prometheus_text(text);
    assert!(!out.lines().any(|line| line == "# EOF"));
});
