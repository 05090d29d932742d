use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{Options, Server, client};

#[tokio::test]
async fn readiness_fails_when_disk_threshold_is_not_met() {
    let server = Server::start(Options::default().env("CAIRN_HEALTH_MIN_FREE_DISK", "1000000TiB"));
    let response = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let checks = body["checks"].as_array().unwrap();
    let disk = checks.iter().find(|c| c["name"] == "disk").unwrap();
    assert_eq!(disk["ok"], false);
    assert!(
        disk["detail"]
            .as_str()
            .unwrap()
            .contains("health.min_free_disk")
    );
    let store = checks.iter().find(|c| c["name"] == "store").unwrap();
    assert_eq!(store["ok"], true);
    assert_eq!(
        client()
            .get(server.url("/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        400,
        "KServe V2: not ready is a 4xx (Triton's 400); /readyz answers 503"
    );
    // Liveness is a different question.
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(server.url("/v2/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn ready_server_says_so_under_both_names() {
    let server = Server::start(Options::default());
    let body: serde_json::Value = client()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ready"], true, "{body}");
    let engine = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "engine")
        .expect("the inference device is reported");
    assert!(
        engine["detail"].as_str().unwrap().starts_with("cpu: "),
        "{engine}"
    );
    let response = client()
        .get(server.url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let meta: serde_json::Value = client()
        .get(server.url("/v2"))
        .bearer_auth(server.admin_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], "cairn");
    assert_eq!(
        meta["extensions"],
        serde_json::json!(["binary_tensor_data", "model_repository", "statistics"])
    );
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test: apt-get install prometheus (README's test command does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool rejected /metrics:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_requests() {
    let server = Server::start(Options::default());
    for path in ["/healthz", "/readyz", "/nope"] {
        client().get(server.url(path)).send().await.unwrap();
    }
    let key = server.key_for("admin", "metrics:read");
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "not public by default"
    );
    let response = client()
        .get(server.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    promtool_check(&text);
    for needle in [
        "cairn_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "cairn_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "cairn_http_request_duration_seconds_bucket{",
        "cairn_http_requests_in_flight 1",
        "cairn_build_info{version=\"",
        // Without a real GPU inference runs on the CPU, and says so (with the CPU-type
        // Vulkan adapter it passed over, in a GPU build on lavapipe).
        "cairn_engine_device_info{kind=\"cpu\",adapter=\"",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "cairn_store_file_size_bytes ",
        "cairn_api_key_requests_total{key_id=\"",
        "cairn_api_key_rate_limit{key_id=\"",
        "cairn_auth_denied_requests_total{reason=\"unauthenticated\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // Prometheus asks for OpenMetrics and gets it.
    let open = client()
        .get(server.url("/metrics"))
        .bearer_auth(&key)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_can_be_made_public() {
    let server = Server::start(Options::default().env("CAIRN_METRICS_PUBLIC", "true"));
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    promtool_check(&response.text().await.unwrap());
}
