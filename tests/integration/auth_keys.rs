//! API keys: lifecycle, usage, scopes within the owner's role, and rate limits.

use serde_json::{Value, json};

use crate::harness::{Options, Server, client};

#[tokio::test]
async fn keys_lifecycle_usage_and_rate_limits() {
    let server = Server::start(Options::default());
    let admin = server.admin_key();
    let c = client();
    let created = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "camera-7", "scopes": ["infer", "models:read"], "rate_limit": {"per_second": 1, "burst": 3},
            "expires_at": "2099-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("cairn_{id}_")));
    assert_eq!(created["expires_at"], 4_070_908_800u64);
    // Three in the burst, then 429 with Retry-After.
    for _ in 0..3 {
        let ok = c
            .get(server.url("/api/v1/auth/session"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let limited = c
        .get(server.url("/api/v1/auth/session"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let v: Value = limited.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    // The list never shows a secret, and shows usage.
    let list = c
        .get(server.url("/api/v1/keys?all=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(key.splitn(3, '_').nth(2).unwrap()),
        "no secret in listings"
    );
    let shown: Value = c
        .get(server.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["usage"]["requests"]["other"], 3);
    assert_eq!(shown["usage"]["last_used_addr"], "127.0.0.1");
    assert_eq!(shown["rate_limit"]["per_second"], 1);
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
        metrics.contains(&format!(
            "cairn_api_key_requests_total{{key_id=\"{id}\",class=\"other\"}} 3"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_rate_limited_requests_total{limiter=\"key\"} 1"));
    assert!(metrics.contains(&format!("cairn_api_key_rate_limit{{key_id=\"{id}\"}} 1")));
    // Bad requests are refused with reasons.
    for (body, needle) in [
        (json!({"name": "x", "scopes": ["root"]}), "not a scope"),
        (json!({"name": "x", "scopes": []}), "at least one scope"),
        (
            json!({"name": "x", "scopes": ["infer"], "expires_at": 5}),
            "in the past",
        ),
        (
            json!({"name": "x", "scopes": ["infer"], "expires_at": "soon"}),
            "RFC 3339",
        ),
        (
            json!({"name": "x", "scopes": ["infer"], "colour": "red"}),
            "unknown field",
        ),
    ] {
        let response = c
            .post(server.url("/api/v1/keys"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let v: Value = response.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    let malformed = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let v: Value = malformed.json().await.unwrap();
    assert_eq!(v["code"], "invalid_json");
    let wrong_type = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    // Revocation is immediate.
    let revoked = c
        .delete(server.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = c
        .get(server.url("/api/v1/auth/session"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let v: Value = after.json().await.unwrap();
    assert_eq!(v["code"], "key_revoked");
}

#[tokio::test]
async fn operators_manage_only_their_own_keys() {
    let server = Server::start(Options::default());
    server.create_user("opsy", "operator", "operator-password");
    let op_key = server.key_for("opsy", "keys:manage,infer");
    let admin = server.admin_key();
    let c = client();
    let mine = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&op_key)
        .json(&json!({"name": "mine", "scopes": ["infer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 201);
    let beyond = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(&op_key)
        .json(&json!({"name": "more", "scopes": ["models:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        beyond.status(),
        400,
        "a key cannot grant more than the key that makes it"
    );
    let listed: Value = c
        .get(server.url("/api/v1/keys"))
        .bearer_auth(&op_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["username"] == "opsy")
    );
    let all = c
        .get(server.url("/api/v1/keys?all=true"))
        .bearer_auth(&op_key)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 403);
    let admin_id = admin.split('_').nth(1).unwrap();
    let steal = c
        .delete(server.url(&format!("/api/v1/keys/{admin_id}")))
        .bearer_auth(&op_key)
        .send()
        .await
        .unwrap();
    assert_eq!(steal.status(), 404, "other users' keys are invisible");
}

#[tokio::test]
async fn address_rate_limit_returns_429() {
    let server = Server::start(
        Options::default()
            .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "1")
            .env("CAIRN_AUTH_ADDRESS_BURST", "2"),
    );
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            c.get(server.url("/api/v1/users/me"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(
            c.get(server.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
}
