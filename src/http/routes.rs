//! The route table: every route of cairn, its method, its path template, and what a
//! caller needs to reach it. Later features add rows here and arms to `handlers::dispatch`.
//!
//! Architecture invariant: a route exists only as a row of [`ROUTES`], and every row
//! states its [`Access`]; the router is built from this table alone.

use http::Method;

/// What a caller must present to reach a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated: health checks and the console's static files.
    Public,
    /// `/metrics`: public or not by `metrics.public`.
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

const fn route(method: Method, path: &'static str, id: RouteId, access: Access, summary: &'static str) -> Route {
    Route { method, path, id, access, summary }
}

pub static ROUTES: &[Route] = &[
    route(Method::GET, "/healthz", RouteId::Healthz, Access::Public, "Liveness: the process answers"),
    route(Method::GET, "/readyz", RouteId::Readyz, Access::Public, "Readiness: store writable, disk space above the threshold"),
    route(Method::GET, "/v2/health/live", RouteId::V2Live, Access::Public, "KServe V2 liveness"),
    route(Method::GET, "/v2/health/ready", RouteId::V2Ready, Access::Public, "KServe V2 readiness"),
    route(Method::GET, "/v2", RouteId::V2Metadata, Access::Public, "KServe V2 server metadata"),
    route(Method::GET, "/metrics", RouteId::Metrics, Access::Metrics, "Prometheus metrics"),
    route(Method::GET, "/api/v1/system/info", RouteId::SystemInfo, Access::Public, "Version, device identity, uptime"),
    route(Method::GET, "/", RouteId::ConsoleIndex, Access::Public, "The web console"),
    route(Method::GET, "/assets/{*path}", RouteId::Asset, Access::Public, "Embedded static files"),
    route(Method::GET, "/openapi.json", RouteId::OpenApi, Access::Public, "This API as an OpenAPI 3.1 document"),
];
