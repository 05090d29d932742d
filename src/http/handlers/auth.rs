//! Setup, login, logout and the caller's own session.

use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Credential, UserView, sessions};
use crate::http::server::Scheme;
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    token: String,
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct LoginResponse {
    user: UserView,
    /// Send back in `X-CSRF-Token` on every state-changing request of this session.
    csrf_token: String,
    expires_at: u64,
}

pub fn setup_status(ctx: &Ctx) -> Result<Response, ApiError> {
    Ok(response::json(
        StatusCode::OK,
        &json!({ "required": ctx.app.auth.setup_open()? }),
    ))
}

pub async fn setup(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: SetupRequest = ctx.json().await?;
    let user = ctx
        .app
        .auth
        .setup(
            &ctx.app.config.data_dir,
            &request.token,
            request.username,
            request.password,
            ctx.peer.ip(),
            &ctx.peer.to_string(),
        )
        .await?;
    Ok(response::json(StatusCode::CREATED, &user))
}

pub async fn login(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: LoginRequest = ctx.json().await?;
    let outcome = ctx
        .app
        .auth
        .login(&request.username, &request.password, ctx.peer.ip())
        .await?;
    let secure = ctx.scheme == Scheme::Https;
    let cookie = sessions::set_cookie(
        &outcome.token,
        ctx.app.auth.config.session_absolute.as_secs(),
        secure,
    );
    let mut response = response::json(
        StatusCode::OK,
        &LoginResponse {
            user: outcome.user,
            csrf_token: sessions::csrf_hex(&outcome.csrf),
            expires_at: outcome.expires_at,
        },
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn logout(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal()?;
    ctx.app
        .auth
        .logout(principal, &ctx.peer.to_string())
        .await?;
    let mut response = response::bytes(
        StatusCode::NO_CONTENT,
        "application/json",
        bytes::Bytes::new(),
    );
    let cookie = sessions::clear_cookie(ctx.scheme == Scheme::Https);
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(response)
}

pub fn session(ctx: &Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal()?;
    let (via, key_id, csrf) = match &principal.credential {
        Credential::Session { csrf, .. } => ("session", None, Some(sessions::csrf_hex(csrf))),
        Credential::Key { key_id } => ("key", Some(crate::auth::keys::format_id(*key_id)), None),
        Credential::LocalSocket => ("local", None, None),
    };
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "user_id": principal.user_id,
            "username": principal.username,
            "role": principal.role,
            "scopes": principal.scopes.names(),
            "via": via,
            "key_id": key_id,
            "csrf_token": csrf,
        }),
    ))
}
