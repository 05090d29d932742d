//! The audit log, for admins: `GET /api/v1/audit?kind=&actor=&since=&until=&before=&limit=`.

use http::StatusCode;
use serde_json::json;

use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};
use crate::store::AuditQuery;

const MAX_LIMIT: usize = 1000;

fn number(ctx: &Ctx, name: &str) -> Result<Option<u64>, ApiError> {
    ctx.query(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("query parameter `{name}` must be a whole number"),
                )
            })
        })
        .transpose()
}

pub async fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let limit = number(&ctx, "limit")?.map_or(100, |l| usize::try_from(l).unwrap_or(MAX_LIMIT));
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let query = AuditQuery {
        kind: ctx.query("kind"),
        actor: ctx.query("actor"),
        since_ms: number(&ctx, "since")?,
        until_ms: number(&ctx, "until")?,
        before_seq: number(&ctx, "before")?,
        limit,
    };
    let entries = ctx.app.auth.audit_entries(query).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(response::json(
        StatusCode::OK,
        &json!({ "entries": entries, "next_before": next }),
    ))
}
