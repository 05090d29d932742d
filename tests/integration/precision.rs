//! The float precision of a deployment (`precision: f32 | f16`) over the REST API.

use serde_json::{Value, json};

use crate::harness::{Options, Server, client};
use crate::serving::{deploy, example, wait_ready};

/// Precision is a per-deployment setting: f16 refused on the CPU, kept as asked (and
/// reported as what runs) on `auto`, and stored across a restart.
#[tokio::test]
async fn precision_is_set_per_deployment_and_survives_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(Options::default().data_dir(data.path()));
    let admin = server.admin_key();
    wait_ready(&server, &admin, "digits").await;
    for (body, says) in [
        (
            json!({"version": 1, "device": "cpu", "precision": "f16"}),
            "f16 runs on a GPU",
        ),
        (
            json!({"version": 1, "precision": "f64"}),
            "precision: f32 or f16",
        ),
        (json!({"version": 1, "precision": 16}), "precision"),
    ] {
        let r = client()
            .post(server.url("/api/v1/models/digits/deploy"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
        assert!(v["code"].is_string(), "{v}");
    }
    let v = deploy(
        &server,
        &admin,
        "digits",
        json!({"version": 1, "precision": "f16"}),
    )
    .await;
    let d = &v["deployment"];
    assert_eq!(d["precision"], "f16", "{v}");
    // No real GPU here (lavapipe is passed over by `auto`): the CPU computes in f32.
    let running = if d["device_kind"] == "gpu" {
        "f16"
    } else {
        "f32"
    };
    assert_eq!(d["precision_running"], running, "{v}");
    let answer: Value = client()
        .post(server.url("/v2/models/digits/infer"))
        .bearer_auth(&admin)
        .json(&example())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let probabilities = answer["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(probabilities.len(), 10, "{answer}");
    assert_eq!(answer["outputs"][0]["datatype"], "FP32", "{answer}");
    // Stored: after a restart the deployment is back with its precision; then f32 again.
    assert!(server.stop().success());
    let server = Server::start(Options::default().data_dir(data.path()));
    wait_ready(&server, &admin, "digits").await;
    let models: Value = client()
        .get(server.url("/api/v1/models/digits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["deployment"]["precision"], "f16", "{models}");
    let v = deploy(&server, &admin, "digits", json!({"version": 1})).await;
    assert_eq!(v["deployment"]["precision"], "f32", "{v}");
    assert_eq!(v["deployment"]["precision_running"], "f32", "{v}");
}
