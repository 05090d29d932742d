//! Bootstrap, sessions, CSRF, login throttling, API keys, rate limits and the audit log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, Options, Server, client, login, run_cli, run_cli_stdin};

fn base(server: &Server) -> String {
    format!("http://{}", server.http.unwrap())
}

#[tokio::test]
async fn setup_token_creates_the_first_admin_once() {
    let server = Server::start(Options::default().no_admin());
    let path = server.data_dir.join("setup-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let logged = server.logs.text();
    assert!(
        !logged.contains(&token) && logged.contains(path.to_str().unwrap()),
        "the log says where the token is, never the token"
    );
    let c = client();
    let status: Value = c
        .get(server.url("/api/v1/setup"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["required"], true);
    let wrong = c
        .post(server.url("/api/v1/setup"))
        .json(&json!({"token": "wrong", "username": "root", "password": "root-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let weak = c
        .post(server.url("/api/v1/setup"))
        .json(&json!({"token": token, "username": "root", "password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), 400);
    let created = c
        .post(server.url("/api/v1/setup"))
        .json(&json!({"token": token, "username": "root", "password": "root-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["role"], "admin");
    assert!(!path.exists(), "the token file goes with the token");
    let again = c
        .post(server.url("/api/v1/setup"))
        .json(&json!({"token": token, "username": "root2", "password": "root-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 410);
    let status: Value = c
        .get(server.url("/api/v1/setup"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["required"], false);
    login(&base(&server), "root", "root-password-1").await;
}

#[tokio::test]
async fn env_password_creates_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options::default().data_dir(&data));
    assert!(!data.join("setup-token").exists());
    let session = login(&base(&server), "admin", ADMIN_PASSWORD).await;
    // Change the admin's password; a restart with the env var set must not reset it.
    let response = client()
        .post(server.url("/api/v1/users/me/password"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"current_password": ADMIN_PASSWORD, "new_password": "brand-new-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(server.stop().success());
    let server = Server::start(Options::default().data_dir(&data));
    login(&base(&server), "admin", "brand-new-password").await;
    let old = client()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    // The password file variant.
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-a-file-pass\n").unwrap();
    let other = Server::start(
        Options::default()
            .no_admin()
            .env("CAIRN_ADMIN_PASSWORD_FILE", file.to_str().unwrap()),
    );
    login(&base(&other), "admin", "from-a-file-pass").await;
}

#[tokio::test]
async fn cli_creates_users_offline_and_online() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Offline: no server holds the data dir.
    let (code, out, err) = run_cli_stdin(
        &[
            "admin",
            "create-user",
            "--data-dir",
            d,
            "--username",
            "boss",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "boss-password-1",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("boss"));
    let (code, _, err) = run_cli(
        &[
            "admin",
            "create-user",
            "--data-dir",
            d,
            "--username",
            "x",
            "--password-stdin",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("username") || err.contains("password"),
        "{err}"
    );
    let server = Server::start(Options::default().no_admin().data_dir(&data));
    assert!(
        !data.join("setup-token").exists(),
        "an admin exists: no setup token"
    );
    login(&base(&server), "boss", "boss-password-1").await;
    // Online: through the admin socket of the running server.
    server.create_user("helper", "operator", "helper-password-1");
    login(&base(&server), "helper", "helper-password-1").await;
    let key = server.key_for("helper", "infer");
    let who: Value = client()
        .get(server.url("/api/v1/auth/session"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["username"], "helper");
    assert_eq!(who["scopes"], json!(["infer"]));
    // A key never exceeds its owner's role.
    let (code, _, err) = run_cli(
        &[
            "admin",
            "create-key",
            "--data-dir",
            d,
            "--user",
            "helper",
            "--scopes",
            "users:manage",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("beyond the operator role"), "{err}");
}

#[tokio::test]
async fn sessions_cookies_csrf_and_logout() {
    let server = Server::start(Options::default().https());
    let b = base(&server);
    let response = client()
        .post(format!("{b}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: no Secure flag"
    );
    let session = login(&b, "admin", ADMIN_PASSWORD).await;
    let second = login(&b, "admin", ADMIN_PASSWORD).await;
    assert_ne!(
        session.cookie, second.cookie,
        "a new session id at every login"
    );
    let c = client();
    // Reads need no CSRF token; writes do.
    let me = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let body = json!({"username": "newbie", "password": "newbie-password", "role": "viewer"});
    let no_csrf = c
        .post(format!("{b}/api/v1/users"))
        .header("cookie", &session.cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let v: Value = no_csrf.json().await.unwrap();
    assert_eq!(v["code"], "csrf");
    let cross_origin = c
        .post(format!("{b}/api/v1/users"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_origin.status(), 403);
    let same_origin = c
        .post(format!("{b}/api/v1/users"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .header("origin", &b)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 201);
    // Bearer keys need no CSRF token.
    let key = server.admin_key();
    let with_key = c
        .post(format!("{b}/api/v1/users"))
        .bearer_auth(&key)
        .json(&json!({"username": "newbie2", "password": "newbie-password", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 201);
    // Logout ends that session only.
    let out = c
        .post(format!("{b}/api/v1/auth/logout"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let gone = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
    let other = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &second.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // Over TLS the cookie is Secure.
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).unwrap();
    let tls = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let response = tls
        .post(server.https_url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
}

#[tokio::test]
async fn sessions_survive_restart_and_password_change_ends_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options::default().data_dir(&data));
    let session = login(&base(&server), "admin", ADMIN_PASSWORD).await;
    assert!(server.stop().success());
    let server = Server::start(Options::default().data_dir(&data));
    let b = base(&server);
    let c = client();
    let me = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "the session outlives the restart");
    let other = login(&b, "admin", ADMIN_PASSWORD).await;
    let wrong = c
        .post(format!("{b}/api/v1/users/me/password"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"current_password": "not-it-at-all", "new_password": "another-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let changed = c
        .post(format!("{b}/api/v1/users/me/password"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"current_password": ADMIN_PASSWORD, "new_password": "another-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    let kept = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        kept.status(),
        200,
        "the session that changed the password stays"
    );
    let ended = c
        .get(format!("{b}/api/v1/users/me"))
        .header("cookie", &other.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 401, "other sessions end");
}

#[tokio::test]
async fn session_idle_expiry() {
    let server = Server::start(Options::default().env("CAIRN_AUTH_SESSION_IDLE", "1s"));
    let session = login(&base(&server), "admin", ADMIN_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let me = client()
        .get(server.url("/api/v1/users/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    let v: Value = me.json().await.unwrap();
    assert_eq!(v["code"], "session_expired");
}

#[tokio::test]
async fn failed_logins_are_throttled_and_reveal_nothing() {
    let server = Server::start(Options::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let c = client();
    let attempt = |username: &'static str| {
        let c = c.clone();
        let url = server.url("/api/v1/auth/login");
        async move {
            c.post(url)
                .json(&json!({"username": username, "password": "wrong-password"}))
                .send()
                .await
                .unwrap()
        }
    };
    let real = attempt("admin").await;
    let ghost = attempt("nobody-here").await;
    assert_eq!(real.status(), 401);
    assert_eq!(ghost.status(), 401);
    let (real, ghost): (Value, Value) = (real.json().await.unwrap(), ghost.json().await.unwrap());
    assert_eq!(
        real, ghost,
        "the same answer whether the user exists or not"
    );
    let mut throttled = None;
    for _ in 0..6 {
        let response = attempt("admin").await;
        if response.status() == 429 {
            throttled = Some(response);
            break;
        }
    }
    let response = throttled.expect("throttled after repeated failures");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Even the right password waits now.
    let right = c
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
    let audit_key = server.admin_key();
    let audit: Value = c
        .get(server.url("/api/v1/audit?kind=login_failed"))
        .bearer_auth(&audit_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit["entries"].as_array().unwrap().len() >= 5);
}

#[tokio::test]
async fn users_admin_rules_and_audit_paging() {
    let server = Server::start(Options::default());
    let admin = server.admin_key();
    let c = client();
    for (body, code) in [
        (
            json!({"username": "Bad Name", "password": "long-enough-pw", "role": "viewer"}),
            400,
        ),
        (
            json!({"username": "fine", "password": "short", "role": "viewer"}),
            400,
        ),
        (
            json!({"username": "fine", "password": "long-enough-pw", "role": "god"}),
            400,
        ),
        (
            json!({"username": "fine", "password": "long-enough-pw", "role": "viewer"}),
            201,
        ),
        (
            json!({"username": "fine", "password": "long-enough-pw", "role": "viewer"}),
            409,
        ),
    ] {
        let response = c
            .post(server.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), code, "{body}");
    }
    let users: Value = c
        .get(server.url("/api/v1/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "admin")
        .unwrap()["id"]
        .clone();
    let fine_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "fine")
        .unwrap()["id"]
        .clone();
    let demote = c
        .patch(server.url(&format!("/api/v1/users/{admin_id}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(demote.status(), 409, "the last admin stays");
    let fine_session = login(&base(&server), "fine", "long-enough-pw").await;
    let disable = c
        .patch(server.url(&format!("/api/v1/users/{fine_id}")))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), 200);
    let me = c
        .get(server.url("/api/v1/users/me"))
        .header("cookie", &fine_session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "disabling ends sessions");
    let relogin = c
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "fine", "password": "long-enough-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(relogin.status(), 401);
    // Audit: filters and paging.
    let page: Value = c
        .get(server.url("/api/v1/audit?kind=user_created&limit=1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "user_created");
    let next = page["next_before"].as_u64().expect("more pages");
    let rest: Value = c
        .get(server.url(&format!("/api/v1/audit?kind=user_created&before={next}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        rest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() < next)
    );
    let updates: Value = c
        .get(server.url("/api/v1/audit?kind=user_updated"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updates["entries"][0]["detail"], "disabled=true");
    let bad = c
        .get(server.url("/api/v1/audit?limit=abc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
