//! Every route of the route table × every kind of caller → the status its `Access`
//! declaration implies. A new route joins the matrix by being in the table.

use std::time::Duration;

use cairn::auth::{Role, Scope};
use cairn::http::routes::{Access, ROUTES, Route, RouteId};
use reqwest::Method;

use crate::harness::{ADMIN_PASSWORD, Options, Server, Session, client, login};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    Role(Role),
    RightKey,
    WrongKey,
    ExpiredKey,
    RevokedKey,
    DeletedUsersKey,
    Malformed(&'static str),
}

#[derive(Debug, PartialEq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
}

fn expected(route: &Route, caller: Caller) -> Expect {
    let required = match route.access {
        Access::Public => return Expect::Allowed,
        Access::Authenticated => None,
        Access::Scope(scope) => Some(scope),
        Access::Metrics => Some(Scope::MetricsRead),
    };
    match caller {
        Caller::Anonymous
        | Caller::ExpiredKey
        | Caller::RevokedKey
        | Caller::DeletedUsersKey
        | Caller::Malformed(_) => Expect::Unauthorized,
        Caller::Role(role) => match required {
            Some(scope) if !role.scopes().contains(scope) => Expect::Forbidden,
            _ => Expect::Allowed,
        },
        // A password is changed from a console session only, never with a key.
        Caller::RightKey | Caller::WrongKey if route.id == RouteId::ChangePassword => {
            Expect::Forbidden
        }
        Caller::RightKey => Expect::Allowed,
        Caller::WrongKey => {
            if required.is_some() {
                Expect::Forbidden
            } else {
                Expect::Allowed
            }
        }
    }
}

fn concrete_path(route: &Route) -> String {
    route
        .path
        .replace("{*path}", "console/index.html")
        .replace("/users/{id}", "/users/999999")
        .replace("/keys/{id}", "/keys/ffffffffffffffff")
        .replace("{name}", "no-such-model")
        .replace("{version}", "1")
}

/// A scope other than `scope`, for the key that lacks the right one.
fn other_scope(scope: Option<Scope>) -> Scope {
    if scope == Some(Scope::Infer) {
        Scope::ModelsRead
    } else {
        Scope::Infer
    }
}

struct Keys {
    by_scope: Vec<(Scope, String)>,
    expired: String,
    revoked: String,
    deleted_users: String,
}

async fn make_keys(server: &Server, admin: &str) -> Keys {
    let by_scope = Scope::ALL
        .iter()
        .map(|s| (*s, server.key_for("admin", s.as_str())))
        .collect();
    let c = client();
    let created: serde_json::Value = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "short", "scopes": ["infer", "metrics:read", "users:manage", "keys:manage"],
            "expires_at": cairn::store::unix_now() + 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expired = created["key"].as_str().unwrap().to_owned();
    let revoked = server.admin_key();
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let response = c
        .delete(server.url(&format!("/api/v1/keys/{revoked_id}")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.create_user("doomed", "operator", "doomed-password-1");
    let deleted_users = server.key_for("doomed", "infer,models:read,metrics:read,keys:manage");
    let users: serde_json::Value = c
        .get(server.url("/api/v1/users"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doomed = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "doomed")
        .unwrap()["id"]
        .clone();
    let response = c
        .delete(server.url(&format!("/api/v1/users/{doomed}")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Let the short key expire.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    Keys {
        by_scope,
        expired,
        revoked,
        deleted_users,
    }
}

fn key_with(keys: &Keys, scope: Scope) -> &str {
    &keys.by_scope.iter().find(|(s, _)| *s == scope).unwrap().1
}

#[tokio::test]
async fn every_route_against_every_caller() {
    let server = Server::start(Options::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let admin_key = server.admin_key();
    for (name, role) in [("viewer1", "viewer"), ("operator1", "operator")] {
        server.create_user(name, role, "role-password-1");
    }
    let keys = make_keys(&server, &admin_key).await;
    let base = format!("http://{}", server.http.unwrap());
    let mut sessions: Vec<(Role, Session)> = Vec::new();
    for (role, name, password) in [
        (Role::Viewer, "viewer1", "role-password-1"),
        (Role::Operator, "operator1", "role-password-1"),
        (Role::Admin, "admin", ADMIN_PASSWORD),
    ] {
        sessions.push((role, login(&base, name, password).await));
    }
    let callers = [
        Caller::Anonymous,
        Caller::Role(Role::Viewer),
        Caller::Role(Role::Operator),
        Caller::Role(Role::Admin),
        Caller::RightKey,
        Caller::WrongKey,
        Caller::ExpiredKey,
        Caller::RevokedKey,
        Caller::DeletedUsersKey,
        Caller::Malformed("Bearer not-a-key"),
        Caller::Malformed("Basic YWRtaW46cGFzcw=="),
        Caller::Malformed(
            "Bearer cairn_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
    ];
    let c = client();
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in ROUTES {
        let required = match route.access {
            Access::Scope(s) => Some(s),
            Access::Metrics => Some(Scope::MetricsRead),
            _ => None,
        };
        for caller in callers {
            let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
            let mut request = c.request(method.clone(), format!("{base}{}", concrete_path(route)));
            if method != Method::GET && method != Method::DELETE {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            request = match caller {
                Caller::Anonymous => request,
                Caller::Role(role) => {
                    let fresh;
                    let session = if route.id == RouteId::Logout {
                        // Logging out ends the session: use a fresh one.
                        let (name, password) = match role {
                            Role::Viewer => ("viewer1", "role-password-1"),
                            Role::Operator => ("operator1", "role-password-1"),
                            Role::Admin => ("admin", ADMIN_PASSWORD),
                        };
                        fresh = login(&base, name, password).await;
                        &fresh
                    } else {
                        &sessions.iter().find(|(r, _)| *r == role).unwrap().1
                    };
                    request
                        .header("cookie", &session.cookie)
                        .header("x-csrf-token", &session.csrf)
                }
                Caller::RightKey => {
                    request.bearer_auth(key_with(&keys, required.unwrap_or(Scope::Infer)))
                }
                Caller::WrongKey => request.bearer_auth(key_with(&keys, other_scope(required))),
                Caller::ExpiredKey => request.bearer_auth(&keys.expired),
                Caller::RevokedKey => request.bearer_auth(&keys.revoked),
                Caller::DeletedUsersKey => request.bearer_auth(&keys.deleted_users),
                Caller::Malformed(header) => request.header("authorization", header),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response.headers().get("www-authenticate").is_some();
            let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
            let want = expected(route, caller);
            let ok = match want {
                Expect::Allowed => status != 401 && status != 403,
                Expect::Unauthorized => status == 401 && challenge && body["code"].is_string(),
                Expect::Forbidden => status == 403 && body["code"] == "forbidden",
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{} {} as {caller:?}: got {status} {body}, want {want:?}",
                    route.method, route.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, ROUTES.len() * callers.len());
}

#[test]
fn every_route_declares_access_and_public_ones_are_few() {
    let public: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    for path in &public {
        assert!(
            [
                "/healthz",
                "/readyz",
                "/v2/health/live",
                "/v2/health/ready",
                "/",
                "/assets/{*path}",
                "/openapi.json",
                "/api/v1/setup",
                "/api/v1/auth/login"
            ]
            .contains(path),
            "{path} is public: is that intended?"
        );
    }
}
