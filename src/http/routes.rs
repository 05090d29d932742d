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
    ListModels,
    CreateModel,
    GetModel,
    UpdateModel,
    DeleteModel,
    UploadVersion,
    GetVersion,
    DeleteVersion,
    Deploy,
    Undeploy,
    Rollback,
    V2ModelMetadata,
    V2VersionMetadata,
    V2ModelReady,
    V2VersionReady,
    V2Infer,
    V2VersionInfer,
    V2ModelStats,
    V2AllStats,
    V2RepositoryIndex,
    V2RepositoryLoad,
    V2RepositoryUnload,
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
    route(
        Method::GET,
        "/api/v1/models",
        RouteId::ListModels,
        scope(Scope::ModelsRead),
        "List models with their versions and deployments",
    ),
    route(
        Method::POST,
        "/api/v1/models",
        RouteId::CreateModel,
        scope(Scope::ModelsWrite),
        "Create a model (name, description, tags)",
    ),
    route(
        Method::GET,
        "/api/v1/models/{name}",
        RouteId::GetModel,
        scope(Scope::ModelsRead),
        "One model with its versions and deployment",
    ),
    route(
        Method::PATCH,
        "/api/v1/models/{name}",
        RouteId::UpdateModel,
        scope(Scope::ModelsWrite),
        "Change a model's description or tags",
    ),
    route(
        Method::DELETE,
        "/api/v1/models/{name}",
        RouteId::DeleteModel,
        scope(Scope::ModelsWrite),
        "Delete a model and its versions (409 while deployed)",
    ),
    route(
        Method::POST,
        "/api/v1/models/{name}/versions",
        RouteId::UploadVersion,
        scope(Scope::ModelsWrite),
        "Upload an ONNX file as a new version (raw body; X-Cairn-Signature optional)",
    ),
    route(
        Method::GET,
        "/api/v1/models/{name}/versions/{version}",
        RouteId::GetVersion,
        scope(Scope::ModelsRead),
        "One version with its validation result",
    ),
    route(
        Method::DELETE,
        "/api/v1/models/{name}/versions/{version}",
        RouteId::DeleteVersion,
        scope(Scope::ModelsWrite),
        "Delete a version (409 while deployed)",
    ),
    route(
        Method::POST,
        "/api/v1/models/{name}/deploy",
        RouteId::Deploy,
        scope(Scope::ModelsWrite),
        "Deploy a version: load and warm it, then switch traffic to it",
    ),
    route(
        Method::POST,
        "/api/v1/models/{name}/undeploy",
        RouteId::Undeploy,
        scope(Scope::ModelsWrite),
        "Stop serving a model",
    ),
    route(
        Method::POST,
        "/api/v1/models/{name}/rollback",
        RouteId::Rollback,
        scope(Scope::ModelsWrite),
        "Return to the previous deployment",
    ),
    route(
        Method::GET,
        "/v2/models/{name}",
        RouteId::V2ModelMetadata,
        scope(Scope::Infer),
        "KServe V2 model metadata",
    ),
    route(
        Method::GET,
        "/v2/models/{name}/versions/{version}",
        RouteId::V2VersionMetadata,
        scope(Scope::Infer),
        "KServe V2 model version metadata",
    ),
    route(
        Method::GET,
        "/v2/models/{name}/ready",
        RouteId::V2ModelReady,
        scope(Scope::Infer),
        "KServe V2 model readiness",
    ),
    route(
        Method::GET,
        "/v2/models/{name}/versions/{version}/ready",
        RouteId::V2VersionReady,
        scope(Scope::Infer),
        "KServe V2 model version readiness",
    ),
    route(
        Method::POST,
        "/v2/models/{name}/infer",
        RouteId::V2Infer,
        scope(Scope::Infer),
        "KServe V2 inference (JSON or binary tensor data)",
    ),
    route(
        Method::POST,
        "/v2/models/{name}/versions/{version}/infer",
        RouteId::V2VersionInfer,
        scope(Scope::Infer),
        "KServe V2 inference on a version",
    ),
    route(
        Method::GET,
        "/v2/models/{name}/stats",
        RouteId::V2ModelStats,
        scope(Scope::Infer),
        "Inference statistics (Triton's statistics extension)",
    ),
    route(
        Method::GET,
        "/v2/models/stats",
        RouteId::V2AllStats,
        scope(Scope::Infer),
        "Inference statistics of every deployed model",
    ),
    route(
        Method::POST,
        "/v2/repository/index",
        RouteId::V2RepositoryIndex,
        scope(Scope::ModelsRead),
        "Model repository index (Triton's repository extension)",
    ),
    route(
        Method::POST,
        "/v2/repository/models/{name}/load",
        RouteId::V2RepositoryLoad,
        scope(Scope::ModelsWrite),
        "Deploy a model's newest ready version (or its current settings)",
    ),
    route(
        Method::POST,
        "/v2/repository/models/{name}/unload",
        RouteId::V2RepositoryUnload,
        scope(Scope::ModelsWrite),
        "Undeploy a model",
    ),
];
