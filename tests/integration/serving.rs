//! Deployments and KServe V2 inference over HTTP: the demo model on first start, JSON and
//! binary tensors, errors, version switches under load with zero failures, rollback,
//! restart with deployments restored, back-pressure, memory cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Options, Server, client};
use crate::models::{create_model, demo_model, fixture, upload};

pub(crate) async fn wait_ready(server: &Server, key: &str, model: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client()
            .get(server.url(&format!("/v2/models/{model}/ready")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{model} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn deploy(server: &Server, key: &str, model: &str, body: Value) -> Value {
    let r = client()
        .post(server.url(&format!("/api/v1/models/{model}/deploy")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

pub(crate) fn example() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/models/digits-example.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn argmax(values: &[Value]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap()
        .0
}

#[tokio::test]
async fn demo_model_answers_kserve_v2_in_json_and_binary() {
    let server = Server::start(Options::default());
    let key = server.key_for("admin", "infer,models:read");
    wait_ready(&server, &key, "digits").await;
    let c = client();
    // Metadata.
    let meta: Value = c
        .get(server.url("/v2/models/digits"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}])
    );
    // The README's example: a real 5.
    let request = example();
    let label: usize = request["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("digit-")
        .parse()
        .unwrap();
    let r = c
        .post(server.url("/v2/models/digits/infer"))
        .bearer_auth(&key)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model_name"], "digits");
    assert_eq!(answer["model_version"], "1");
    assert_eq!(answer["id"], request["id"]);
    let out = &answer["outputs"][0];
    assert_eq!(out["name"], "probabilities");
    assert_eq!(out["shape"], json!([1, 10]));
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(argmax(out["data"].as_array().unwrap()), label);
    // Nested data, two rows.
    let row: Vec<Value> = request["inputs"][0]["data"].as_array().unwrap().clone();
    let nested = json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [row.clone(), row.clone()]}]});
    let v: Value = c
        .post(server.url("/v2/models/digits/versions/1/infer"))
        .bearer_auth(&key)
        .json(&nested)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([2, 10]));
    // Binary tensors both ways.
    let floats: Vec<f32> = row.iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    for f in &floats {
        body.extend_from_slice(&f.to_le_bytes());
    }
    let r = c
        .post(server.url("/v2/models/digits/infer"))
        .bearer_auth(&key)
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 40);
    let probs: Vec<f32> = bytes[json_len..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(probs.len(), 10);
    let best = probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(best, label);
    // The request's binary_data_output is a default: an output's own binary_data false
    // wins (JSON back), and an output that says nothing follows it (binary back).
    for (output_says, binary) in [(json!({"binary_data": false}), false), (json!({}), true)] {
        let r = c
            .post(server.url("/v2/models/digits/infer"))
            .bearer_auth(&key)
            .json(&json!({
                "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": floats}],
                "parameters": {"binary_data_output": true},
                "outputs": [{"name": "probabilities", "parameters": output_says}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers().contains_key("inference-header-content-length"),
            binary
        );
    }
    // Mistakes: 400 naming the input and what was expected; 404 for unknown models.
    let cases = [
        (
            json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0; 63]}]}),
            "dimension 1 is 63, the model takes 64",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": vec![0; 64]}]}),
            "the model takes FP32",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0; 60]}]}),
            "needs 64",
        ),
        (
            json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": vec![0; 64]}]}),
            "no such input",
        ),
        (json!({"inputs": []}), "input input is missing"),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0; 64]}], "outputs": [{"name": "logits"}]}),
            "no such output",
        ),
    ];
    for (request, want) in cases {
        let r = c
            .post(server.url("/v2/models/digits/infer"))
            .bearer_auth(&key)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "{request}: {v}"
        );
    }
    let r = c
        .post(server.url("/v2/models/digits/infer"))
        .bearer_auth(&key)
        .body("{\"inputs\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_json");
    for path in [
        "/v2/models/nope/infer",
        "/v2/models/digits/versions/9/infer",
    ] {
        let r = c
            .post(server.url(path))
            .bearer_auth(&key)
            .json(&example())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // Statistics count what ran.
    let stats: Value = c
        .get(server.url("/v2/models/digits/stats"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let success = stats["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .unwrap();
    assert!(success >= 3, "{stats}");
    // Metrics per model and version.
    let admin = server.admin_key();
    let metrics = c
        .get(server.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "cairn_inference_requests_total{model=\"digits\",version=\"1\",outcome=\"success\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_deployed_version{model=\"digits\"} 1"));
    // The repository extension.
    let index: Value = c
        .post(server.url("/v2/repository/index"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(index[0]["name"], "digits");
    assert_eq!(index[0]["state"], "READY");
    let r = c
        .post(server.url("/v2/repository/models/digits/unload"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(server.url("/v2/models/digits/ready"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    // KServe V2: not ready is a 4xx (400, as Triton answers).
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["code"], "not_ready", "{body}");
    let r = c
        .post(server.url("/v2/repository/models/digits/load"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_ready(&server, &key, "digits").await;
}

#[tokio::test]
async fn version_switches_under_load_fail_nothing_and_survive_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(Options::default().data_dir(data.path()));
    let admin = server.admin_key();
    wait_ready(&server, &admin, "digits").await;
    // Version 2: the same model again; switch back and forth under concurrent load.
    let (status, v2) = upload(&server, &admin, "digits", demo_model()).await;
    assert_eq!(status, 201, "{v2}");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let (url, key, body) = (
            server.url("/v2/models/digits/infer"),
            admin.clone(),
            example(),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("failed: {} {}", r.status(), r.text().await.unwrap());
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for round in 0..6 {
        let version = if round % 2 == 0 { 2 } else { 1 };
        let v = deploy(&server, &admin, "digits", json!({"version": version, "instances": 2, "max_batch_size": 8, "max_batch_delay_us": 200})).await;
        assert_eq!(v["deployment"]["version"], version);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    // Now on version 1 (round 5), previous 2: roll back to 2.
    let r: Value = client()
        .post(server.url("/api/v1/models/digits/rollback"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["deployment"]["version"], 2, "{r}");
    assert_eq!(r["deployment"]["previous_version"], 1);
    assert_eq!(r["deployment"]["instances"], 2);
    // Restart: the deployment comes back before readiness says ready.
    let status = server.stop();
    assert!(status.success());
    let server = Server::start(Options::default().data_dir(data.path()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client()
            .get(server.url("/v2/health/ready"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client()
        .get(server.url("/v2/models/digits/versions/2/ready"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ready means the deployment is back");
    let models: Value = client()
        .get(server.url("/api/v1/models"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["models"].as_array().unwrap().len(),
        1,
        "the demo model is installed once"
    );
}

#[tokio::test]
async fn full_queues_answer_429_and_memory_is_capped() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_REGISTRY_DEMO_MODEL", "false")
            .env("CAIRN_ENGINE_MAX_MODEL_MEMORY", "100KiB"),
    );
    let key = server.admin_key();
    create_model(&server, &key, "cnn").await;
    let (_, v) = upload(&server, &key, "cnn", fixture("cnn.onnx")).await;
    assert_eq!(v["state"], "ready", "{v}");
    deploy(&server, &key, "cnn", json!({"version": 1, "device": "cpu", "instances": 1, "max_batch_size": 1, "queue_capacity": 1})).await;
    // Over the memory cap: a second model is refused.
    create_model(&server, &key, "mlp").await;
    upload(&server, &key, "mlp", fixture("mlp.onnx")).await;
    let r = client()
        .post(server.url("/api/v1/models/mlp/deploy"))
        .bearer_auth(&key)
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "memory_exceeded");
    // One worker, one queue slot, many large requests at once: some must wait their turn
    // with 429 + Retry-After, none fail otherwise.
    let header = json!({"inputs": [{"name": "image", "shape": [64, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 64 * 784 * 4}}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0u8, 64 * 784 * 4));
    let body = bytes::Bytes::from(body);
    let mut requests = Vec::new();
    for _ in 0..48 {
        let (url, key, body, len) = (
            server.url("/v2/models/cnn/infer"),
            key.clone(),
            body.clone(),
            header.len(),
        );
        requests.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .header("inference-header-content-length", len)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }));
    }
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|(s, _)| *s == 200));
    assert!(
        statuses.iter().any(|(s, retry)| *s == 429 && *retry),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_failed_loads_keep_the_old_version() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(Options::default().data_dir(data.path()));
    let admin = server.admin_key();
    wait_ready(&server, &admin, "digits").await;
    // A wide batching window: eight single-row requests at once run in fewer executions.
    deploy(
        &server,
        &admin,
        "digits",
        json!({"version": 1, "max_batch_size": 8, "max_batch_delay_us": 100_000}),
    )
    .await;
    let mut requests = Vec::new();
    for _ in 0..8 {
        let (url, key, body) = (
            server.url("/v2/models/digits/infer"),
            admin.clone(),
            example(),
        );
        requests.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v["outputs"][0]["shape"],
                json!([1, 10]),
                "each gets its own row back"
            );
            argmax(v["outputs"][0]["data"].as_array().unwrap())
        }));
    }
    for r in requests {
        assert_eq!(r.await.unwrap(), 5);
    }
    let stats: Value = client()
        .get(server.url("/v2/models/digits/stats"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], 8, "{stats}");
    assert!(s["execution_count"].as_u64().unwrap() < 8, "{stats}");
    // Triton's batch_stats: the executions by their rows, adding up to the same totals.
    let batches = s["batch_stats"].as_array().unwrap();
    let executions: u64 = batches
        .iter()
        .map(|b| b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    let rows: u64 = batches
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        executions,
        s["execution_count"].as_u64().unwrap(),
        "{stats}"
    );
    assert_eq!(rows, 8, "{stats}");
    assert!(
        batches
            .iter()
            .any(|b| b["batch_size"].as_u64().unwrap() > 1),
        "{stats}"
    );
    // A version whose file has gone fails to load: version 1 keeps serving, and says why.
    let mut other = demo_model();
    other.extend_from_slice(b"");
    let (_, v2) = upload(&server, &admin, "digits", {
        // Different bytes, same model: a trailing unknown protobuf field is ignored by
        // parsers (field 15, varint 0).
        other.extend_from_slice(&[0x78, 0x00]);
        other
    })
    .await;
    assert_eq!(v2["state"], "ready", "{v2}");
    let blob = data
        .path()
        .join("blobs/sha256")
        .join(v2["sha256"].as_str().unwrap());
    std::fs::remove_file(&blob).unwrap();
    let r = client()
        .post(server.url("/api/v1/models/digits/deploy"))
        .bearer_auth(&admin)
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "deploy_failed");
    let model: Value = client()
        .get(server.url("/api/v1/models/digits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["deployment"]["version"], 1);
    assert_eq!(model["deployment"]["state"], "serving");
    assert!(
        model["deployment"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot be read"),
        "{model}"
    );
    let r = client()
        .post(server.url("/v2/models/digits/infer"))
        .bearer_auth(&admin)
        .json(&example())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = client()
        .get(server.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cairn_deployment_failures_total{model=\"digits\"} 1"),
        "{metrics}"
    );
}
