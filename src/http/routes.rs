//! The route table: every route of cairn, its method, its path template, and what a
//! caller needs to reach it. Later features add rows here and arms to `handlers::dispatch`.
//!
//! Architecture invariant: a route exists only as a row of [`ROUTES`], and every row
//! states its [`Access`]; the router is built from this table alone.

use http::Method;

use crate::auth::Scope;

/// What a caller must present to reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated: health checks, login, setup, the console's static files.
    Public,
    /// Any valid session or API key.
    Authenticated,
    /// A session whose role grants the scope, or a key that carries it (and whose owner's
    /// role grants it).
    Scope(Scope),
    /// `/metrics`: `Scope(MetricsRead)`, or public when `metrics.public` is set.
    Metrics,
}

/// Which handler serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Healthz,
    Readyz,
    V2Live,
    V2Ready,
    V2Metadata,
    Metrics,
    SystemInfo,
    ConsoleIndex,
    Asset,
    OpenApi,
    SetupStatus,
    Setup,
    Login,
    Logout,
    Session,
    ListUsers,
    CreateUser,
    Me,
    UpdateMe,
    ChangePassword,
    GetUser,
    UpdateUser,
    DeleteUser,
    ListKeys,
    CreateKey,
    GetKey,
    RevokeKey,
    Audit,
}

#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// matchit syntax: `{name}` for a segment, `{*rest}` for the tail.
    pub path: &'static str,
    pub id: RouteId,
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
}

const fn route(
    method: Method,
    path: &'static str,
    id: RouteId,
    access: Access,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        id,
        access,
        summary,
    }
}

use Access::{Authenticated, Public};

const fn scope(scope: Scope) -> Access {
    Access::Scope(scope)
}

pub static ROUTES: &[Route] = &[
    route(
        Method::GET,
        "/healthz",
        RouteId::Healthz,
        Access::Public,
        "Liveness: the process answers",
    ),
    route(
        Method::GET,
        "/readyz",
        RouteId::Readyz,
        Access::Public,
        "Readiness: store writable, disk space above the threshold",
    ),
    route(
        Method::GET,
        "/v2/health/live",
        RouteId::V2Live,
        Access::Public,
        "KServe V2 liveness",
    ),
    route(
        Method::GET,
        "/v2/health/ready",
        RouteId::V2Ready,
        Access::Public,
        "KServe V2 readiness",
    ),
    route(
        Method::GET,
        "/v2",
        RouteId::V2Metadata,
        Authenticated,
        "KServe V2 server metadata",
    ),
    route(
        Method::GET,
        "/metrics",
        RouteId::Metrics,
        Access::Metrics,
        "Prometheus metrics",
    ),
    route(
        Method::GET,
        "/api/v1/system/info",
        RouteId::SystemInfo,
        Authenticated,
        "Version, device identity, uptime",
    ),
    route(
        Method::GET,
        "/",
        RouteId::ConsoleIndex,
        Access::Public,
        "The web console",
    ),
    route(
        Method::GET,
        "/assets/{*path}",
        RouteId::Asset,
        Access::Public,
        "Embedded static files",
    ),
    route(
        Method::GET,
        "/openapi.json",
        RouteId::OpenApi,
        Access::Public,
        "This API as an OpenAPI 3.1 document",
    ),
    route(
        Method::GET,
        "/api/v1/setup",
        RouteId::SetupStatus,
        Public,
        "Whether first-boot setup is still open",
    ),
    route(
        Method::POST,
        "/api/v1/setup",
        RouteId::Setup,
        Public,
        "Create the first admin with the one-time setup token",
    ),
    route(
        Method::POST,
        "/api/v1/auth/login",
        RouteId::Login,
        Public,
        "Log in; sets the session cookie, returns the CSRF token",
    ),
    route(
        Method::POST,
        "/api/v1/auth/logout",
        RouteId::Logout,
        Authenticated,
        "End this console session",
    ),
    route(
        Method::GET,
        "/api/v1/auth/session",
        RouteId::Session,
        Authenticated,
        "Who the caller is and what they may do",
    ),
    route(
        Method::GET,
        "/api/v1/users",
        RouteId::ListUsers,
        scope(Scope::UsersManage),
        "List users",
    ),
    route(
        Method::POST,
        "/api/v1/users",
        RouteId::CreateUser,
        scope(Scope::UsersManage),
        "Create a user",
    ),
    route(
        Method::GET,
        "/api/v1/users/me",
        RouteId::Me,
        Authenticated,
        "The caller's own account",
    ),
    route(
        Method::PATCH,
        "/api/v1/users/me",
        RouteId::UpdateMe,
        Authenticated,
        "Change the caller's display name",
    ),
    route(
        Method::POST,
        "/api/v1/users/me/password",
        RouteId::ChangePassword,
        Authenticated,
        "Change the caller's password (needs the current one)",
    ),
    route(
        Method::GET,
        "/api/v1/users/{id}",
        RouteId::GetUser,
        scope(Scope::UsersManage),
        "One user",
    ),
    route(
        Method::PATCH,
        "/api/v1/users/{id}",
        RouteId::UpdateUser,
        scope(Scope::UsersManage),
        "Change a user's role, state, name or password",
    ),
    route(
        Method::DELETE,
        "/api/v1/users/{id}",
        RouteId::DeleteUser,
        scope(Scope::UsersManage),
        "Delete a user (sessions end, keys are revoked)",
    ),
    route(
        Method::GET,
        "/api/v1/keys",
        RouteId::ListKeys,
        scope(Scope::KeysManage),
        "The caller's API keys (`?all=true`: everyone's, for admins)",
    ),
    route(
        Method::POST,
        "/api/v1/keys",
        RouteId::CreateKey,
        scope(Scope::KeysManage),
        "Create an API key; the secret is shown once",
    ),
    route(
        Method::GET,
        "/api/v1/keys/{id}",
        RouteId::GetKey,
        scope(Scope::KeysManage),
        "One API key with its usage",
    ),
    route(
        Method::DELETE,
        "/api/v1/keys/{id}",
        RouteId::RevokeKey,
        scope(Scope::KeysManage),
        "Revoke an API key",
    ),
    route(
        Method::GET,
        "/api/v1/audit",
        RouteId::Audit,
        scope(Scope::UsersManage),
        "Security events, newest first, with filters and paging",
    ),
];
