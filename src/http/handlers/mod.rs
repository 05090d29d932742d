//! Handlers, one file per domain. [`dispatch`] is the one place a [`RouteId`] meets its
//! handler; the match is exhaustive, so a new route without a handler does not compile.

mod health;
mod openapi;
mod static_files;
mod system;

use super::error::ApiError;
use super::routes::RouteId;
use super::service::Ctx;
use super::Response;

pub async fn dispatch(id: RouteId, ctx: Ctx) -> Result<Response, ApiError> {
    match id {
        RouteId::Healthz => Ok(health::healthz()),
        RouteId::Readyz => Ok(health::readyz(&ctx).await),
        RouteId::V2Live => Ok(health::v2_live()),
        RouteId::V2Ready => Ok(health::v2_ready(&ctx).await),
        RouteId::V2Metadata => Ok(system::v2_metadata()),
        RouteId::Metrics => Ok(system::metrics(&ctx)),
        RouteId::SystemInfo => system::info(&ctx).await,
        RouteId::ConsoleIndex => static_files::serve(&ctx, "console/index.html"),
        RouteId::Asset => {
            let path = ctx.param("path").unwrap_or_default().to_owned();
            static_files::serve(&ctx, &path)
        }
        RouteId::OpenApi => Ok(openapi::document()),
    }
}
