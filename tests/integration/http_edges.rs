use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Options, Server, client, message_is};

fn raw_exchange(server: &Server, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.http.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and whatever body arrives before the server closes or pauses.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if length.is_some_and(|len| body.len() >= len) {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_json() {
    let server = Server::start(Options::default());
    let response = client()
        .get(server.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));

    let response = client()
        .delete(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");

    let response = client().head(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn declared_oversized_body_gets_413_unread() {
    let server = Server::start(Options::default().env("CAIRN_LIMITS_MAX_BODY_BYTES", "1KiB"));
    let text = raw_exchange(
        &server,
        b"POST /api/v1/anything HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1025\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"code\":\"payload_too_large\""), "{text}");
    assert!(text.contains("1024 bytes"), "{text}");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server = Server::start(Options::default().env("CAIRN_LIMITS_HEADER_READ_TIMEOUT", "500ms"));
    let mut stream = TcpStream::connect(server.http.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Trickle one header byte at a time, never finishing the head.
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if stream.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        stream.set_nonblocking(true).unwrap();
        let read = stream.read(&mut buf);
        stream.set_nonblocking(false).unwrap();
        match read {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                // hyper may answer 408 before closing: also a cut-off.
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a client trickling headers must be disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off near the 500ms limit"
    );
    // The server still serves others.
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_LIMITS_IDLE_TIMEOUT", "700ms")
            .env("CAIRN_LIMITS_HEADER_READ_TIMEOUT", "30s"),
    );
    let mut stream = TcpStream::connect(server.http.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_start = Instant::now();
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes the idle connection");
    let idle = idle_start.elapsed();
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
}

#[tokio::test]
async fn request_id_is_echoed_and_logged() {
    let server = Server::start(Options::default().arg("--log-level").arg("cairn=debug"));
    let response = client()
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    let line = server.logs.wait_for(Duration::from_secs(5), |v| {
        message_is(v, "request") && v.to_string().contains("trace-abc-123")
    });
    assert!(
        line.is_some(),
        "the access log line carries the request id:\n{}",
        server.logs.text()
    );
    // Without one, the server makes one up, different each time.
    let a = client().get(server.url("/healthz")).send().await.unwrap();
    let b = client().get(server.url("/healthz")).send().await.unwrap();
    let (a, b) = (
        a.headers()["x-request-id"].clone(),
        b.headers()["x-request-id"].clone(),
    );
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge() {
    let server = Server::start(Options::default());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(server.url("/v2/health/live")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["live"], true);
}

#[tokio::test]
async fn console_assets_have_etags_and_gzip() {
    let server = Server::start(Options::default());
    let response = client()
        .get(server.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'));
    let plain = client().get(server.url("/")).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.text().await.unwrap().contains("<title>cairn</title>"));
    let again = client()
        .get(server.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = client()
        .get(server.url("/assets/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let openapi: serde_json::Value = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v2/health/ready"]["get"].is_object());
}
