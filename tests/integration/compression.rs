//! Compressed inference requests, as tritonclient sends them
//! (`request_compression_algorithm="gzip" | "deflate"`): the whole body compressed, the
//! `Inference-Header-Content-Length` counting the JSON header before compression.

use std::io::Write;

use serde_json::{Value, json};

use crate::harness::{Options, Server, client};
use crate::serving::{example, wait_ready};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn compressed_requests_are_decoded_and_bounded() {
    // A small body limit: the decompressed size is what it bounds.
    let server = Server::start(Options::default().env("CAIRN_LIMITS_MAX_BODY_BYTES", "64KiB"));
    let key = server.key_for("admin", "infer,models:read");
    wait_ready(&server, &key, "digits").await;
    let url = server.url("/v2/models/digits/infer");
    let post = |encoding: &'static str, body: Vec<u8>, header_len: Option<usize>| {
        let mut request = client()
            .post(&url)
            .bearer_auth(&key)
            .header("content-encoding", encoding)
            .header("content-type", "application/json")
            .body(body);
        if let Some(n) = header_len {
            request = request.header("inference-header-content-length", n);
        }
        request.send()
    };
    let plain: Value = client()
        .post(&url)
        .bearer_auth(&key)
        .json(&example())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let json_body = serde_json::to_vec(&example()).unwrap();
    for (encoding, body) in [
        ("gzip", gzip(&json_body)),
        ("deflate", zlib(&json_body)),
        ("identity", json_body.clone()),
    ] {
        let r = post(encoding, body, None).await.unwrap();
        assert_eq!(r.status(), 200, "{encoding}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["outputs"], plain["outputs"], "{encoding}");
    }
    // Binary tensors inside a compressed body: the header length is the uncompressed one.
    let floats: Vec<f32> = example()["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
        "parameters": {"binary_data_size": 256}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    floats
        .iter()
        .for_each(|f| body.extend_from_slice(&f.to_le_bytes()));
    let r = post("gzip", gzip(&body), Some(header.len())).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outputs"], plain["outputs"]);
    // Errors: another coding (415), data that is not what it says (400), a small body
    // that expands past limits.max_body_bytes (413).
    let r = post("br", json_body.clone(), None).await.unwrap();
    assert_eq!(r.status(), 415);
    assert!(
        r.headers()["accept-encoding"]
            .to_str()
            .unwrap()
            .contains("gzip")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unsupported_encoding", "{v}");
    let r = post("gzip, gzip", gzip(&gzip(&json_body)), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "layered codings are refused");
    let r = post("gzip", json_body.clone(), None).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_encoding", "{v}");
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 64 << 10);
    let r = post("gzip", bomb, None).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("decompressed"), "{v}");
}
