//! API keys: create (secret shown once), list, show, revoke.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::audit::kind;
use crate::auth::{KeyView, NewKey, RateLimitConfig, Scope};
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};

#[derive(Deserialize)]
#[serde(untagged)]
enum Expiry {
    Unix(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimit {
    per_second: u32,
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
    /// Unix seconds or RFC 3339.
    #[serde(default)]
    expires_at: Option<Expiry>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    /// Owner, when an admin provisions a key for someone else.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Serialize)]
struct Created {
    /// The key itself: shown this once, never again.
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

fn parse_expiry(expiry: Option<Expiry>) -> Result<Option<u64>, ApiError> {
    match expiry {
        None => Ok(None),
        Some(Expiry::Unix(at)) => Ok(Some(at)),
        Some(Expiry::Text(text)) => humantime::parse_rfc3339_weak(&text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Some(d.as_secs()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("expires_at `{text}` is neither unix seconds nor RFC 3339 (2027-01-31T00:00:00Z)"),
                )
            }),
    }
}

pub async fn create(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: CreateKey = ctx.json().await?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    let new = NewKey {
        name: request.name,
        scopes,
        expires_at: parse_expiry(request.expires_at)?,
        rate: request.rate_limit.map(|r| RateLimitConfig {
            per_second: r.per_second,
            burst: r.burst.unwrap_or(r.per_second),
        }),
        for_user: request.user,
    };
    let principal = ctx.principal()?.clone();
    let (view, key) = ctx.app.auth.create_key(&principal, new).await?;
    ctx.app.auth.record(
        &principal,
        kind::KEY_CREATED,
        &ctx.peer.to_string(),
        &format!("key {} of {}", view.id, view.username),
        &format!("scopes {}", view.scopes.join(" ")),
        true,
    );
    Ok(response::json(StatusCode::CREATED, &Created { key, view }))
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let all = ctx.query("all").is_some_and(|v| v == "true" || v == "1");
    let keys = ctx.app.auth.list_keys(ctx.principal()?, all)?;
    Ok(response::json(StatusCode::OK, &json!({ "keys": keys })))
}

pub fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let view = ctx
        .app
        .auth
        .key(ctx.principal()?, ctx.param("id").unwrap_or_default())?;
    Ok(response::json(StatusCode::OK, &view))
}

pub async fn revoke(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal()?.clone();
    let view = ctx
        .app
        .auth
        .revoke_key(&principal, ctx.param("id").unwrap_or_default())
        .await?;
    ctx.app.auth.record(
        &principal,
        kind::KEY_REVOKED,
        &ctx.peer.to_string(),
        &format!("key {} of {}", view.id, view.username),
        "",
        true,
    );
    Ok(response::json(StatusCode::OK, &view))
}
