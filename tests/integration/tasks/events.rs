//! The Server-Sent Events stream of task changes (`GET /api/v1/tasks/events` with
//! `Accept: text/event-stream`): follow a task to its end, resume with `Last-Event-ID`,
//! `reset` for a client too far behind, access, the stream limit, the idle timeout, a
//! console session, and shutdown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{get, post, submit};
use crate::harness::{ADMIN_PASSWORD, Options, Server, login};

/// One block of the stream: an event, a comment, or a `retry:` line.
#[derive(Debug, Default)]
struct Block {
    id: Option<u64>,
    event: String,
    data: String,
    comment: Option<String>,
}

impl Block {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An open stream, read block by block.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

enum Auth<'a> {
    Key(&'a str),
    Cookie(&'a str),
}

async fn open(
    server: &Server,
    auth: &Auth<'_>,
    query: &str,
    last_id: Option<&str>,
) -> reqwest::Response {
    // No overall timeout: a stream lives as long as the test wants.
    let client = reqwest::Client::new();
    let mut request = client
        .get(server.url(&format!("/api/v1/tasks/events{query}")))
        .header("accept", "text/event-stream");
    request = match auth {
        Auth::Key(key) => request.bearer_auth(key),
        Auth::Cookie(cookie) => request.header("cookie", *cookie),
    };
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

impl Stream {
    async fn open(server: &Server, auth: &Auth<'_>, query: &str, last_id: Option<&str>) -> Self {
        let response = open(server, auth, query, last_id).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(headers.get("content-length").is_none());
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next block, `None` at the end of the stream; panics past `timeout`.
    async fn block(&mut self, timeout: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                let mut block = Block::default();
                let mut data = Vec::new();
                for line in text.lines().filter(|line| !line.is_empty()) {
                    if let Some(comment) = line.strip_prefix(':') {
                        block.comment = Some(comment.trim().to_owned());
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => block.id = Some(value.parse().unwrap()),
                        "event" => block.event = value.to_owned(),
                        "data" => data.push(value),
                        "retry" => {}
                        other => panic!("unexpected field {other}: {text:?}"),
                    }
                }
                block.data = data.join("\n");
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("the stream sent nothing in time")
                .expect("the stream failed");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(
                        self.buffer.trim().is_empty(),
                        "a cut block: {:?}",
                        self.buffer
                    );
                    return None;
                }
            }
        }
    }

    /// The next event named `name`, skipping comments and `retry:` blocks.
    async fn event(&mut self, name: &str) -> Block {
        loop {
            let block = self
                .block(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("the stream ended before a `{name}` event"));
            if block.comment.is_none() && !block.event.is_empty() {
                assert_eq!(block.event, name, "{block:?}");
                return block;
            }
        }
    }

    /// Task events until task `id` ends; returns all of them (every task's).
    async fn until_finished(&mut self, id: u64) -> Vec<Block> {
        let mut seen = Vec::new();
        loop {
            let block = self.event("task").await;
            let change = block.json();
            assert_eq!(
                block.id,
                change["seq"].as_u64(),
                "the id is the change's seq"
            );
            let done = change["id"] == id
                && ["succeeded", "failed", "canceled"]
                    .contains(&change["status"].as_str().unwrap());
            seen.push(block);
            if done {
                return seen;
            }
        }
    }
}

fn seqs(blocks: &[Block]) -> Vec<u64> {
    blocks.iter().map(|b| b.id.unwrap()).collect()
}

#[tokio::test]
async fn stream_follows_a_task_resumes_and_resets() {
    // Short idle and header timeouts: a stream must outlive both.
    let server = Server::start(
        Options::default()
            .env("CAIRN_LIMITS_IDLE_TIMEOUT", "1s")
            .env("CAIRN_LIMITS_HEADER_READ_TIMEOUT", "1s")
            .env("CAIRN_LIMITS_BODY_READ_TIMEOUT", "1s"),
    );
    let key = server.admin_key();
    let auth = Auth::Key(&key);
    let mut stream = Stream::open(&server, &auth, "", None).await;
    let ready = stream.event("ready").await;
    let start = ready.json();
    assert_eq!(start["after"], start["latest"], "{start}");
    assert_eq!(ready.id, start["after"].as_u64());
    let after = ready.id.unwrap();
    // The same over HTTP/2 (prior knowledge on plain HTTP).
    let response = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(server.url("/api/v1/tasks/events"))
        .header("accept", "text/event-stream")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut h2 = Stream {
        response,
        buffer: String::new(),
    };
    assert_eq!(h2.event("ready").await.id, Some(after));

    // Quiet for longer than the idle timeout: the streams are still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let task = submit(
        &server,
        &key,
        json!({"kind": "system.sleep", "payload": {"ms": 400}}),
    )
    .await;
    let id = task["id"].as_u64().unwrap();
    let events = stream.until_finished(id).await;
    let ids = seqs(&events);
    assert_eq!(
        ids[0],
        after + 1,
        "nothing before the cursor, nothing skipped"
    );
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {ids:?}"
    );
    let statuses: Vec<String> = events
        .iter()
        .map(Block::json)
        .filter(|c| c["id"] == id)
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    // Created queued, or running at once when a worker was free (one commit for both).
    assert!(
        matches!(
            statuses.first().map(String::as_str),
            Some("queued" | "running")
        ),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|s| s == "running"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("succeeded"));
    assert!(
        events
            .iter()
            .map(Block::json)
            .any(|c| c["progress"].as_u64() > Some(0)),
        "progress reaches the stream"
    );

    // The same JSON as the long poll, change by change.
    let (status, feed) = get(
        &server,
        &key,
        &format!("/api/v1/tasks/events?after={after}"),
    )
    .await;
    assert_eq!(status, 200);
    let polled: Vec<Value> = feed["events"].as_array().unwrap().clone();
    let streamed: Vec<Value> = events.iter().map(Block::json).collect();
    assert_eq!(polled[..streamed.len()], streamed[..]);

    // Resume after the first change with Last-Event-ID (it wins over ?after=): the rest,
    // exactly; ?after= alone does the same.
    let first = ids[0].to_string();
    let after_first = format!("?after={first}");
    for (query, last_id) in [("?after=0", Some(first.as_str())), (&*after_first, None)] {
        let mut resumed = Stream::open(&server, &auth, query, last_id).await;
        let ready = resumed.event("ready").await;
        assert_eq!(ready.id, Some(ids[0]));
        let again = resumed.until_finished(id).await;
        assert_eq!(seqs(&again), ids[1..]);
        assert_eq!(
            again.iter().map(Block::json).collect::<Vec<_>>(),
            streamed[1..]
        );
    }

    // A cursor from before a restart (past the newest change): reset, then on from the
    // newest.
    let latest = *ids.last().unwrap();
    let mut stale = Stream::open(&server, &auth, "", Some(&(latest + 1000).to_string())).await;
    stale.event("ready").await;
    let reset = stale.event("reset").await;
    assert_eq!(reset.id, Some(latest));
    assert_eq!(reset.json()["latest"], latest);
    let next = submit(
        &server,
        &key,
        json!({"kind": "system.sleep", "payload": {"ms": 0}}),
    )
    .await;
    let more = stale.until_finished(next["id"].as_u64().unwrap()).await;
    assert_eq!(more[0].id, Some(latest + 1));

    // A malformed cursor is a JSON error; without the Accept header, the long poll.
    let bad = open(&server, &auth, "", Some("yesterday")).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request", "{body}");
    let (status, feed) = get(&server, &key, "/api/v1/tasks/events?after=0&limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(feed["events"].as_array().unwrap().len(), 1, "{feed}");
}

#[tokio::test]
async fn a_client_too_far_behind_gets_a_reset() {
    let server = Server::start(Options::default());
    let key = server.admin_key();
    // Three changes per task (queued, running, succeeded): more than the 4096 kept.
    let batch: Vec<Value> = (0..1000)
        .map(|_| json!({"kind": "system.sleep", "payload": {"ms": 0}}))
        .collect();
    let mut last = 0;
    for _ in 0..2 {
        let (status, body) = post(&server, &key, "/api/v1/tasks", json!({"tasks": batch})).await;
        assert_eq!(status, 201, "{body}");
        last = body["tasks"][999]["id"].as_u64().unwrap();
    }
    super::wait_done(&server, &key, last).await;
    let auth = Auth::Key(&key);
    let mut stream = Stream::open(&server, &auth, "", Some("1")).await;
    stream.event("ready").await;
    let reset = stream.event("reset").await;
    let latest = reset.id.unwrap();
    assert!(latest > 4096, "{latest}");
    assert_eq!(reset.json()["latest"], latest);
    let task = submit(
        &server,
        &key,
        json!({"kind": "system.sleep", "payload": {"ms": 0}}),
    )
    .await;
    let events = stream.until_finished(task["id"].as_u64().unwrap()).await;
    assert_eq!(
        events[0].id,
        Some(latest + 1),
        "on from the reset, nothing skipped"
    );
}

#[tokio::test]
async fn access_the_stream_limit_and_shutdown() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_LIMITS_MAX_EVENT_STREAMS", "1")
            .env("CAIRN_LIMITS_SHUTDOWN_DEADLINE", "20s"),
    );
    let key = server.admin_key();
    // tasks:read is required, as for the long poll.
    let models_only = server.key_for("admin", "models:read");
    let denied = open(&server, &Auth::Key(&models_only), "", None).await;
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    let anonymous = reqwest::Client::new()
        .get(server.url("/api/v1/tasks/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // One stream at most: the second gets 503 JSON; the long poll still answers.
    let auth = Auth::Key(&key);
    let mut first = Stream::open(&server, &auth, "", None).await;
    first.event("ready").await;
    let second = open(&server, &auth, "", None).await;
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("limits.max_event_streams")
    );
    let (status, _) = get(&server, &key, "/api/v1/tasks/events?after=0").await;
    assert_eq!(status, 200);

    // A client that goes away gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        let response = open(&server, &auth, "", None).await;
        if response.status() == 200 {
            break Stream {
                response,
                buffer: String::new(),
            };
        }
        assert_eq!(response.status(), 503);
        assert!(
            Instant::now() < deadline,
            "the closed stream kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stream.event("ready").await;

    // Shutdown ends the stream at once, and the drain does not wait for it.
    let stopping = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    loop {
        match stream.block(Duration::from_secs(10)).await {
            None => break,
            Some(block) => assert!(block.comment.is_some(), "{block:?}"),
        }
    }
    assert!(stopping.elapsed() < Duration::from_secs(10));
    let mut server = server;
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    assert!(
        server
            .logs
            .wait_for(Duration::from_secs(1), |v| crate::harness::message_is(
                v,
                "all connections closed"
            ))
            .is_some(),
        "the drain finished in time: {}",
        server.logs.text()
    );
}

#[tokio::test]
async fn a_console_session_streams_without_csrf_until_it_logs_out() {
    let server = Server::start(Options::default());
    let session = login(&server.url(""), "admin", ADMIN_PASSWORD).await;
    // EventSource sends the cookie and no headers of its own: a GET needs no CSRF token.
    let auth = Auth::Cookie(&session.cookie);
    let mut stream = Stream::open(&server, &auth, "", None).await;
    stream.event("ready").await;
    let out = reqwest::Client::new()
        .post(server.url("/api/v1/auth/logout"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    // The next check of its credentials (with the keep-alive, every 15 s) ends it.
    let started = Instant::now();
    let mut keep_alive = false;
    while let Some(block) = stream.block(Duration::from_secs(25)).await {
        assert_eq!(block.comment.as_deref(), Some("keep-alive"), "{block:?}");
        keep_alive = true;
    }
    assert!(keep_alive, "a quiet stream gets keep-alives");
    assert!(started.elapsed() < Duration::from_secs(20));
    let again = open(&server, &auth, "", None).await;
    assert_eq!(again.status(), 401);
}
