//! Liveness and readiness, under cairn's names and the KServe V2 names.

use http::StatusCode;
use serde_json::json;

use crate::http::service::Ctx;
use crate::http::{Response, response};

const LIVE: &[u8] = br#"{"status":"ok"}"#;

pub fn healthz() -> Response {
    response::json_bytes(StatusCode::OK, LIVE.to_vec())
}

pub fn v2_live() -> Response {
    response::json_bytes(StatusCode::OK, br#"{"live":true}"#.to_vec())
}

pub async fn readyz(ctx: &Ctx) -> Response {
    let report = ctx.app.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    response::json(status, &*report)
}

/// KServe V2's server readiness: 200 is true, a 4xx false (400, as Triton answers; the
/// probe `/readyz` answers 503).
pub async fn v2_ready(ctx: &Ctx) -> Response {
    let report = ctx.app.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    response::json(
        status,
        &json!({ "ready": report.ready, "checks": report.checks }),
    )
}
