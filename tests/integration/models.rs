//! The model registry over HTTP: create, upload (raw body, streamed), validation,
//! content-addressed blobs, signatures, deletion rules, truncated uploads.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BIN, Options, Server, client, run_cli};

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name),
    )
    .unwrap()
}

pub fn demo_model() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/digits.onnx")).unwrap()
}

pub async fn create_model(server: &Server, key: &str, name: &str) {
    let r = client()
        .post(server.url("/api/v1/models"))
        .bearer_auth(key)
        .json(&json!({"name": name, "description": "test", "tags": ["t"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

pub async fn upload(server: &Server, key: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = client()
        .post(server.url(&format!("/api/v1/models/{name}/versions")))
        .bearer_auth(key)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn blob_files(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.data_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn temp_files(server: &Server) -> usize {
    std::fs::read_dir(server.data_dir.join("blobs/tmp"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn registry_lifecycle_validation_and_blobs() {
    let server = Server::start(Options::default().env("CAIRN_REGISTRY_DEMO_MODEL", "false"));
    let key = server.admin_key();
    let c = client();
    // Names are validated.
    let bad = c
        .post(server.url("/api/v1/models"))
        .bearer_auth(&key)
        .json(&json!({"name": "../etc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["code"],
        "invalid_request"
    );
    create_model(&server, &key, "mlp").await;
    let again = c
        .post(server.url("/api/v1/models"))
        .bearer_auth(&key)
        .json(&json!({"name": "mlp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    // Upload to a model that does not exist.
    let (status, body) = upload(&server, &key, "nope", fixture("mlp.onnx")).await;
    assert_eq!(status, 404, "{body}");
    // A good model is ready, with its signature read from the file.
    let (status, v1) = upload(&server, &key, "mlp", fixture("mlp.onnx")).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["state"], "ready", "{v1}");
    assert_eq!(
        v1["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 64]})
    );
    assert_eq!(v1["outputs"][0]["name"], "probabilities");
    assert!(v1["weight_bytes"].as_u64().unwrap() > 30_000, "{v1}");
    assert_eq!(v1["signature"], "none");
    // The same bytes again: a new version, one blob.
    let (_, v2) = upload(&server, &key, "mlp", fixture("mlp.onnx")).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["sha256"], v1["sha256"]);
    assert_eq!(
        blob_files(&server),
        vec![v1["sha256"].as_str().unwrap().to_owned()]
    );
    // Garbage and unsupported operators become invalid versions, with the reason.
    let (status, junk) = upload(&server, &key, "mlp", b"not a model at all".to_vec()).await;
    assert_eq!(status, 201);
    assert_eq!(junk["state"], "invalid");
    assert!(junk["error"].as_str().unwrap().contains("ONNX"), "{junk}");
    let mut odd = fixture("mlp.onnx");
    let at = odd.windows(7).position(|w| w == b"Softmax").unwrap();
    odd[at..at + 7].copy_from_slice(b"BitCast");
    let (_, unsupported) = upload(&server, &key, "mlp", odd).await;
    assert_eq!(unsupported["state"], "invalid");
    assert!(
        unsupported["error"].as_str().unwrap().contains("BitCast"),
        "{unsupported}"
    );
    // An empty body is refused.
    let (status, _) = upload(&server, &key, "mlp", Vec::new()).await;
    assert_eq!(status, 400);
    // Invalid versions never deploy.
    let r = c
        .post(server.url("/api/v1/models/mlp/deploy"))
        .bearer_auth(&key)
        .json(&json!({"version": junk["version"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // Deploy v1; a deployed version and its model cannot be deleted.
    let r = c
        .post(server.url("/api/v1/models/mlp/deploy"))
        .bearer_auth(&key)
        .json(&json!({"version": 1, "device": "cpu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .delete(server.url("/api/v1/models/mlp/versions/1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "in_use");
    let r = c
        .delete(server.url("/api/v1/models/mlp"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Version 2 shares the blob: deleting it keeps the file.
    let r = c
        .delete(server.url("/api/v1/models/mlp/versions/2"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        blob_files(&server).len(),
        3,
        "the deployed blob, the junk and the Hardmax one"
    );
    // PATCH and GET.
    let r: Value = c
        .patch(server.url("/api/v1/models/mlp"))
        .bearer_auth(&key)
        .json(&json!({"description": "a small MLP", "tags": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["description"], "a small MLP");
    assert_eq!(r["deployment"]["version"], 1);
    assert_eq!(r["deployment"]["state"], "serving");
    // Undeploy, then the model can go, and with it every blob.
    let r = c
        .post(server.url("/api/v1/models/mlp/undeploy"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(server.url("/api/v1/models/mlp"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(blob_files(&server).is_empty());
    assert_eq!(temp_files(&server), 0);
}

#[tokio::test]
async fn truncated_and_oversized_uploads_leave_nothing() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_REGISTRY_DEMO_MODEL", "false")
            .env("CAIRN_LIMITS_MAX_MODEL_BYTES", "200KiB")
            .env("CAIRN_LIMITS_BODY_READ_TIMEOUT", "1s"),
    );
    let key = server.admin_key();
    create_model(&server, &key, "m").await;
    let addr = server.url("").trim_start_matches("http://").to_owned();
    // Cut the connection half way through the body.
    {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /api/v1/models/m/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100000\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&[7u8; 50_000]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Stall half way: the body read timeout cuts it off with 408.
    {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /api/v1/models/m/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100000\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&[7u8; 1000]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout"), "{text}");
    }
    // Over the size limit: declared (refused unread) and streamed without a length.
    let c = client();
    let r = c
        .post(server.url("/api/v1/models/m/versions"))
        .bearer_auth(&key)
        .body(vec![0u8; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..30).map(|_| Ok(vec![1u8; 10_000])).collect();
    let r = c
        .post(server.url("/api/v1/models/m/versions"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server answers 413 and closes as soon as the stream passes the limit; a client
    // still sending may see that answer or only the closed connection.
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let model: Value = c
        .get(server.url("/api/v1/models/m"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["versions"], json!([]), "{model}");
    // Writer threads notice the end of a cut body at their own pace: allow them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while temp_files(&server) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(temp_files(&server), 0);
    assert!(blob_files(&server).is_empty());
}

#[tokio::test]
async fn signed_models_only_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ci.key");
    let (code, public, err) = run_cli(
        &["model", "keygen", "--out", key_file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let public = public.trim().to_owned();
    assert!(public.starts_with("ci:"), "{public}");
    let model = dir.path().join("mlp.onnx");
    std::fs::write(&model, fixture("mlp.onnx")).unwrap();
    let (code, signature, err) = run_cli(
        &[
            "model",
            "sign",
            model.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let server = Server::start(
        Options::default()
            .env("CAIRN_REGISTRY_REQUIRE_SIGNATURE", "true")
            .env("CAIRN_REGISTRY_TRUSTED_KEYS", &public),
    );
    let key = server.admin_key();
    create_model(&server, &key, "signed").await;
    let (status, body) = upload(&server, &key, "signed", fixture("mlp.onnx")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "signature_required");
    let send = |sig: String| {
        client()
            .post(server.url("/api/v1/models/signed/versions"))
            .bearer_auth(&key)
            .header("x-cairn-signature", sig)
            .body(fixture("mlp.onnx"))
            .send()
    };
    // A signature over other bytes does not verify.
    let mut other = fixture("mlp.onnx");
    other.push(0);
    std::fs::write(&model, &other).unwrap();
    let (_, wrong, _) = run_cli(
        &[
            "model",
            "sign",
            model.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    let r = send(wrong.trim().to_owned()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "signature_invalid"
    );
    let r = send(signature.trim().to_owned()).await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["signature"], "verified");
    assert_eq!(v["signed_by"], "ci");
    // No demo model on a device that requires signatures.
    let models: Value = client()
        .get(server.url("/api/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"].as_array().unwrap().len(), 1);
    let _ = BIN;
}
