//! Callers with a key or a session: password change (7), the setup race (8), the
//! last-admin race (9), the scope ceiling (10), the audit flood (11), admin lockout (5).

use super::*;

// ----- 7: password change needs a session and is throttled -------------------------------

#[test]
fn item7_password_change_needs_a_session_and_is_throttled() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let infer_key = server.key(&["infer"]);
    let auth = format!("Bearer {infer_key}");
    let reply = server.post_json(
        "/api/v1/users/me/password",
        &[("authorization", &auth)],
        &json!({"current_password": ADMIN_PASSWORD, "new_password": "taken-over-password"}),
    );
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.code(), "forbidden");
    let (cookie, csrf) = session(&server, "admin", ADMIN_PASSWORD);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = server.post_json(
            "/api/v1/users/me/password",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            &json!({"current_password": format!("guess-number-{i}"), "new_password": "new-password-123"}),
        );
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(reply.code(), "login_throttled");
            assert!(reply.header("retry-after").is_some());
        }
    }
    assert!(
        statuses.contains(&429),
        "wrong current passwords are throttled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

// ----- 8: setup race ---------------------------------------------------------------------

#[test]
fn item8_concurrent_setups_make_exactly_one_admin() {
    let server = Cairn::start(Start::default().no_admin());
    let token = std::fs::read_to_string(server.data_dir.join("setup-token"))
        .unwrap()
        .trim()
        .to_owned();
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, token, addr) = (Arc::clone(&barrier), token.clone(), server.http);
            std::thread::spawn(move || {
                let body = json!({"token": token, "username": format!("root{i}"), "password": "root-password-1"}).to_string();
                let request = request_bytes(
                    "POST",
                    "/api/v1/setup",
                    &[("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                let mut stream = connect(addr, None);
                barrier.wait();
                stream.write_all(&request).unwrap();
                read_reply(&mut stream).unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    let users = server.local("GET", "/api/v1/users", None).json();
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
}

// ----- 9: last-admin race ----------------------------------------------------------------

fn enabled_admins(server: &Cairn) -> Vec<u64> {
    let users = server.local("GET", "/api/v1/users", None).json();
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin" && u["disabled"] == false)
        .map(|u| u["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn item9_concurrent_demotions_leave_one_admin() {
    let server = Cairn::start(Start::default());
    for round in 0..5 {
        for suffix in ["a", "b"] {
            let reply = server.local(
                "POST",
                "/api/v1/users",
                Some(&json!({"username": format!("adm{round}{suffix}"), "password": "admin-password-2", "role": "admin"})),
            );
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
        let admins = enabled_admins(&server);
        let barrier = Arc::new(Barrier::new(admins.len()));
        let threads: Vec<_> = admins
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (barrier, dir, id) = (Arc::clone(&barrier), server.data_dir.clone(), *id);
                std::thread::spawn(move || {
                    let patch = if i % 2 == 0 {
                        json!({"role": "viewer"})
                    } else {
                        json!({"disabled": true})
                    };
                    barrier.wait();
                    local(&dir, "PATCH", &format!("/api/v1/users/{id}"), Some(&patch)).status
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let left = enabled_admins(&server);
        assert_eq!(left.len(), 1, "round {round}: {statuses:?} left {left:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            1,
            "{statuses:?}"
        );
    }
}

// ----- 10: scope ceiling -----------------------------------------------------------------

#[test]
fn item10_a_key_never_mints_a_key_with_more_scopes() {
    let server = Cairn::start(Start::default());
    let reply = server.local(
        "POST",
        "/api/v1/users",
        Some(&json!({"username": "ops", "password": "ops-password-1", "role": "operator"})),
    );
    assert_eq!(reply.status, 201);
    let manager = server.key(&["keys:manage", "users:manage"]);
    let auth = format!("Bearer {manager}");
    for body in [
        json!({"name": "wider", "scopes": ["infer"], "user": "admin"}),
        json!({"name": "wider", "scopes": ["models:write"], "user": "ops"}),
        json!({"name": "wider", "scopes": ["infer"]}),
    ] {
        let reply = server.post_json("/api/v1/keys", &[("authorization", &auth)], &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
    }
    let reply = server.post_json(
        "/api/v1/keys",
        &[("authorization", &auth)],
        &json!({"name": "narrower", "scopes": ["keys:manage"], "user": "admin"}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
}

// ----- 11: audit flood -------------------------------------------------------------------

#[test]
fn item11_denied_requests_do_not_flood_the_audit_log() {
    let server = Cairn::start(Start::default());
    let key = server.key(&["infer"]);
    let auth = format!("Bearer {key}");
    for _ in 0..300 {
        assert_eq!(
            server
                .get("/api/v1/users", &[("authorization", &auth)])
                .status,
            403
        );
    }
    let rows = server.audit("permission_denied");
    assert!(!rows.is_empty(), "denied requests are still audited");
    assert!(
        rows.len() <= 5,
        "{} audit rows for 300 denied requests",
        rows.len()
    );
}

// ----- 5: admin lockout ------------------------------------------------------------------

#[test]
fn item5_failures_elsewhere_do_not_lock_the_admin_out() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let mut throttled = false;
    for _ in 0..10 {
        let reply = login_from(&server, loopback(2), "admin", "not-the-password");
        assert!(
            reply.status == 401 || reply.status == 429,
            "{}",
            reply.text()
        );
        throttled |= reply.status == 429;
    }
    assert!(throttled, "the guessing address is throttled");
    let reply = login_from(&server, loopback(3), "admin", ADMIN_PASSWORD);
    assert_eq!(
        reply.status,
        200,
        "the admin from another address: {}",
        reply.text()
    );
    let reply = login_from(&server, loopback(2), "admin", ADMIN_PASSWORD);
    assert_eq!(
        reply.status,
        429,
        "the guessing address stays throttled: {}",
        reply.text()
    );
}
