//! Server metadata, system information and the metrics exposition.

use http::StatusCode;
use serde::Serialize;

use crate::build_info;
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};

pub fn v2_metadata() -> Response {
    #[derive(Serialize)]
    struct Metadata {
        name: &'static str,
        version: &'static str,
        extensions: [&'static str; 3],
    }
    response::json(
        StatusCode::OK,
        &Metadata {
            name: "cairn",
            version: build_info::VERSION,
            // The Triton extensions served: binary tensors in requests and answers,
            // /v2/repository (index, load, unload) and /v2/models/stats.
            extensions: ["binary_tensor_data", "model_repository", "statistics"],
        },
    )
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format
/// for everyone else.
pub fn metrics(ctx: &Ctx) -> Response {
    let wants_open_metrics = ctx
        .head
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_open_metrics {
        response::bytes(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ctx.app.metrics.encode(),
        )
    } else {
        response::bytes(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            ctx.app.metrics.encode_prometheus_text(),
        )
    }
}

pub async fn info(ctx: &Ctx) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Info<'a> {
        version: &'static str,
        commit: &'static str,
        build_date: &'static str,
        device_id: &'a str,
        device_created_at: u64,
        uptime_seconds: u64,
        schema_version: u32,
        store_bytes: u64,
    }
    let store = std::sync::Arc::clone(&ctx.app.store);
    let schema_version = tokio::task::spawn_blocking(move || store.schema_version())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(response::json(
        StatusCode::OK,
        &Info {
            version: build_info::VERSION,
            commit: build_info::GIT_COMMIT,
            build_date: build_info::BUILD_DATE,
            device_id: &ctx.app.device.id,
            device_created_at: ctx.app.device.created_at_unix,
            uptime_seconds: ctx.app.started_at.elapsed().as_secs(),
            schema_version,
            store_bytes: ctx.app.store.file_size(),
        },
    ))
}
