//! The task scheduler over HTTP: submit, wait, list, cancel, capacity, dependencies,
//! schedules, the built-in kinds, and SIGKILL in the middle of a task; `events.rs`: the
//! Server-Sent Events stream of changes.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Options, Server, client};

mod events;

async fn post(server: &Server, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(server.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &Server, key: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn submit(server: &Server, key: &str, body: Value) -> Value {
    let (status, task) = post(server, key, "/api/v1/tasks", body).await;
    assert_eq!(status, 201, "{task}");
    task
}

async fn wait_done(server: &Server, key: &str, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, task) = get(server, key, &format!("/api/v1/tasks/{id}?wait=10s")).await;
        assert_eq!(status, 200, "{task}");
        if ["succeeded", "failed", "canceled"].contains(&task["status"].as_str().unwrap()) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never finished: {task}"
        );
    }
}

async fn wait_status(server: &Server, key: &str, id: u64, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, task) = get(server, key, &format!("/api/v1/tasks/{id}")).await;
        if task["status"] == want {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {want}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sleep_task(ms: u64) -> Value {
    json!({"kind": "system.sleep", "payload": {"ms": ms}})
}

#[tokio::test]
async fn submit_wait_list_cancel_and_errors() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_SCHEDULER_WORKERS", "1")
            .env("CAIRN_SCHEDULER_MAX_QUEUED", "3"),
    );
    let key = server.admin_key();
    let task = submit(&server, &key, sleep_task(20)).await;
    let id = task["id"].as_u64().unwrap();
    assert_eq!(task["kind"], "system.sleep");
    assert_eq!(task["creator"], "admin");
    let done = wait_done(&server, &key, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["slept_ms"], 20);
    assert_eq!(done["progress"], 100);

    // Errors: unknown kind, bad payload, unknown id, a cycle.
    let (status, body) = post(&server, &key, "/api/v1/tasks", json!({"kind": "rm -rf"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, _) = post(
        &server,
        &key,
        "/api/v1/tasks",
        json!({"kind": "system.sleep", "payload": {"ms": "x"}}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = get(&server, &key, "/api/v1/tasks/999999").await;
    assert_eq!(status, 404);
    let cycle = json!({"tasks": [
        {"kind": "system.sleep", "payload": {"ms": 1}, "depends_on": ["#1"]},
        {"kind": "system.sleep", "payload": {"ms": 1}, "depends_on": ["#0"]},
    ]});
    let (status, body) = post(&server, &key, "/api/v1/tasks", cycle).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("cycle"));

    // A chain runs in order.
    let chain = json!({"tasks": [
        {"kind": "system.sleep", "payload": {"ms": 30}},
        {"kind": "system.sleep", "payload": {"ms": 1}, "depends_on": ["#0"]},
    ]});
    let (status, body) = post(&server, &key, "/api/v1/tasks", chain).await;
    assert_eq!(status, 201, "{body}");
    let second = body["tasks"][1]["id"].as_u64().unwrap();
    let first = body["tasks"][0]["id"].as_u64().unwrap();
    let second = wait_done(&server, &key, second).await;
    let first = wait_done(&server, &key, first).await;
    assert!(second["started_ms"].as_u64() >= first["finished_ms"].as_u64());

    // The queue is bounded: one runs, three wait, the next is refused with Retry-After.
    let running = submit(&server, &key, sleep_task(60_000)).await["id"]
        .as_u64()
        .unwrap();
    wait_status(&server, &key, running, "running").await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(
            submit(&server, &key, sleep_task(1)).await["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let r = client()
        .post(server.url("/api/v1/tasks"))
        .bearer_auth(&key)
        .json(&sleep_task(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Pause and resume a waiting task; cancel is always accepted.
    let (status, paused) = post(
        &server,
        &key,
        &format!("/api/v1/tasks/{}/pause", waiting[0]),
        json!({}),
    )
    .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let (status, _) = post(
        &server,
        &key,
        &format!("/api/v1/tasks/{}/resume", waiting[0]),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, canceled) = post(
        &server,
        &key,
        &format!("/api/v1/tasks/{running}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{canceled}");
    let canceled = wait_done(&server, &key, running).await;
    assert_eq!(canceled["status"], "canceled");
    for id in &waiting {
        assert_eq!(wait_done(&server, &key, *id).await["status"], "succeeded");
    }
    // A failed task can be retried; a finished one deleted.
    let failing = submit(
        &server,
        &key,
        json!({"kind": "system.sleep", "payload": {"ms": 1, "fail": "terminal"}}),
    )
    .await;
    let failing = failing["id"].as_u64().unwrap();
    assert_eq!(wait_done(&server, &key, failing).await["status"], "failed");
    let (status, _) = post(
        &server,
        &key,
        &format!("/api/v1/tasks/{failing}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let again = wait_done(&server, &key, failing).await;
    assert_eq!(again["attempts"], 2);
    let r = client()
        .delete(server.url(&format!("/api/v1/tasks/{failing}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(&server, &key, &format!("/api/v1/tasks/{failing}"))
            .await
            .0,
        404
    );

    // Listing: filters and a cursor.
    let (status, page) = get(
        &server,
        &key,
        "/api/v1/tasks?status=succeeded&kind=system.sleep&limit=2",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_u64().unwrap();
    let (_, next) = get(
        &server,
        &key,
        &format!("/api/v1/tasks?status=succeeded&limit=2&cursor={cursor}"),
    )
    .await;
    assert!(next["tasks"][0]["id"].as_u64().unwrap() < cursor);
    let (status, _) = get(&server, &key, "/api/v1/tasks?status=sleeping").await;
    assert_eq!(status, 400);

    // The event feed saw the changes.
    let (_, feed) = get(&server, &key, "/api/v1/tasks/events?after=0").await;
    assert!(feed["events"].as_array().unwrap().len() > 5);
    assert!(feed["last"].as_u64().unwrap() > 0);

    let metrics = client()
        .get(server.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "cairn_tasks{",
        "cairn_tasks_finished_total",
        "cairn_task_run_seconds",
        "cairn_task_queue_seconds",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
}

/// SIGKILL while a task runs, several times: every acknowledged task is there after the
/// restart, the interrupted one runs again as its next attempt, and never twice at once.
#[tokio::test]
async fn kill_9_mid_task_recovers_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(Options::default().data_dir(dir.path()));
    let key = server.admin_key();
    let long = submit(
        &server,
        &key,
        json!({"kind": "system.sleep", "payload": {"ms": 600_000}, "max_attempts": 10}),
    )
    .await["id"]
        .as_u64()
        .unwrap();
    wait_status(&server, &key, long, "running").await;
    let mut acknowledged = Vec::new();
    for cycle in 1..=3u64 {
        // Submissions acknowledged just before the kill must survive it.
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.push(json!({"kind": "system.sleep", "payload": {"ms": 1}, "idempotency_key": format!("c{cycle}-{i}")}));
        }
        let (status, body) = post(&server, &key, "/api/v1/tasks", json!({"tasks": batch})).await;
        assert_eq!(status, 201);
        acknowledged.extend(
            body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap()),
        );
        server.signal(Signal::SIGKILL);
        server.wait_exit(Duration::from_secs(10));
        server = Server::start(Options::default().data_dir(dir.path()));
        let task = wait_status(&server, &key, long, "running").await;
        assert_eq!(
            task["attempts"],
            cycle + 1,
            "one new attempt per restart: {task}"
        );
        let errors = task["errors"].as_array().unwrap();
        assert_eq!(errors.len() as u64, cycle);
        assert!(errors[0]["error"].as_str().unwrap().contains("interrupted"));
        for id in &acknowledged {
            let (status, _) = get(&server, &key, &format!("/api/v1/tasks/{id}")).await;
            assert_eq!(status, 200, "task {id} was acknowledged, then lost");
        }
    }
    // Each acknowledged short task ran exactly once.
    for id in &acknowledged {
        let task = wait_done(&server, &key, *id).await;
        assert_eq!(task["status"], "succeeded");
        assert!(task["attempts"].as_u64().unwrap() <= 2, "{task}");
    }
    let (status, _) = post(
        &server,
        &key,
        &format!("/api/v1/tasks/{long}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(wait_done(&server, &key, long).await["status"], "canceled");
    assert!(server.stop().success());
}

#[tokio::test]
async fn schedules_and_built_in_kinds() {
    let server = Server::start(Options::default());
    let key = server.admin_key();
    // The built-in retention schedule exists and cannot be deleted by hand.
    let (status, list) = get(&server, &key, "/api/v1/schedules").await;
    assert_eq!(status, 200);
    let builtin = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tasks.purge")
        .cloned()
        .expect("the purge schedule");
    let r = client()
        .delete(server.url(&format!("/api/v1/schedules/{}", builtin["id"])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let (status, body) = post(
        &server,
        &key,
        "/api/v1/schedules",
        json!({"name": "bad", "cron": "every day", "kind": "system.sleep", "payload": {"ms": 1}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, schedule) = post(
        &server,
        &key,
        "/api/v1/schedules",
        json!({
            "name": "tick", "cron": "* * * * * *", "kind": "system.sleep", "payload": {"ms": 1}
        }),
    )
    .await;
    assert_eq!(status, 201, "{schedule}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = get(
            &server,
            &key,
            "/api/v1/tasks?status=succeeded&kind=system.sleep",
        )
        .await;
        let fired = page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["schedule"] == schedule["id"])
            .count();
        if fired >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the schedule did not fire twice");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client()
        .delete(server.url(&format!("/api/v1/schedules/{}", schedule["id"])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A backup: the store and the model files, with a manifest that checks out.
    let backup = submit(&server, &key, json!({"kind": "store.backup"})).await;
    let backup = wait_done(&server, &key, backup["id"].as_u64().unwrap()).await;
    assert_eq!(backup["status"], "succeeded", "{backup}");
    let path = std::path::PathBuf::from(backup["result"]["path"].as_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(path.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["path"] == "cairn.redb"));
    for file in files {
        let bytes = std::fs::read(path.join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap()
        );
    }
    // The copy is a store cairn can open.
    let copy = cairn::store::Store::open(&path.join("cairn.redb")).unwrap();
    assert_eq!(
        copy.schema_version().unwrap(),
        cairn::store::schema::SCHEMA_VERSION
    );

    for kind in ["store.compact", "system.selftest", "tasks.purge"] {
        let task = submit(&server, &key, json!({"kind": kind})).await;
        let task = wait_done(&server, &key, task["id"].as_u64().unwrap()).await;
        assert_eq!(task["status"], "succeeded", "{task}");
    }

    // The models kinds on the demo model, once it is installed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&server, &key, "/api/v1/models/digits/versions/1")
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the demo model never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bench = submit(&server, &key, json!({"kind": "model.benchmark", "payload": {"model": "digits", "version": 1, "runs": 20}})).await;
    let bench = wait_done(&server, &key, bench["id"].as_u64().unwrap()).await;
    assert_eq!(bench["status"], "succeeded", "{bench}");
    assert!(bench["result"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(bench["result"]["p99_ms"].as_f64() >= bench["result"]["p50_ms"].as_f64());
    assert_eq!(bench["result"]["precision"], "f32", "{bench}");
    let validate = submit(
        &server,
        &key,
        json!({"kind": "model.validate", "payload": {"model": "digits", "version": 1}}),
    )
    .await;
    let validate = wait_done(&server, &key, validate["id"].as_u64().unwrap()).await;
    assert_eq!(validate["result"]["valid"], true, "{validate}");
    let missing = submit(
        &server,
        &key,
        json!({"kind": "model.validate", "payload": {"model": "nope", "version": 1}}),
    )
    .await;
    let missing = wait_done(&server, &key, missing["id"].as_u64().unwrap()).await;
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["attempts"], 1, "a missing model is not retried");
}
