//! User administration and the caller's own account.

use http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::auth::audit::kind;
use crate::auth::{NewUser, Role, UserPatch};
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};

/// `null` → `Some(None)` (clear), absent → `None` (keep).
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    display_name: Option<Option<String>>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMe {
    #[serde(default, deserialize_with = "double_option")]
    display_name: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

fn user_id(ctx: &Ctx) -> Result<u64, ApiError> {
    let raw = ctx.param("id").unwrap_or_default();
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {raw} not found"),
        )
    })
}

pub async fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let users = ctx.app.auth.list_users().await?;
    Ok(response::json(StatusCode::OK, &json!({ "users": users })))
}

pub async fn create(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: CreateUser = ctx.json().await?;
    let auth = &ctx.app.auth;
    let user = auth
        .create_user(NewUser {
            username: request.username,
            password: request.password,
            role: request.role,
            display_name: request.display_name,
        })
        .await?;
    auth.record(
        ctx.principal()?,
        kind::USER_CREATED,
        &ctx.peer.to_string(),
        &format!("user {} ({})", user.id, user.username),
        &format!("role {}", user.role.as_str()),
        true,
    );
    Ok(response::json(StatusCode::CREATED, &user))
}

pub async fn get(ctx: Ctx) -> Result<Response, ApiError> {
    let user = ctx.app.auth.user(user_id(&ctx)?).await?;
    Ok(response::json(StatusCode::OK, &user))
}

pub async fn update(mut ctx: Ctx) -> Result<Response, ApiError> {
    let id = user_id(&ctx)?;
    let request: UpdateUser = ctx.json().await?;
    let mut changed = Vec::new();
    if let Some(role) = request.role {
        changed.push(format!("role={}", role.as_str()));
    }
    if let Some(disabled) = request.disabled {
        changed.push(format!("disabled={disabled}"));
    }
    if request.display_name.is_some() {
        changed.push("display_name".into());
    }
    if request.password.is_some() {
        changed.push("password".into());
    }
    let user = ctx
        .app
        .auth
        .update_user(
            id,
            UserPatch {
                role: request.role,
                disabled: request.disabled,
                display_name: request.display_name,
                password: request.password,
            },
        )
        .await?;
    ctx.app.auth.record(
        ctx.principal()?,
        kind::USER_UPDATED,
        &ctx.peer.to_string(),
        &format!("user {} ({})", user.id, user.username),
        &changed.join(", "),
        true,
    );
    Ok(response::json(StatusCode::OK, &user))
}

pub async fn delete(ctx: Ctx) -> Result<Response, ApiError> {
    let user = ctx.app.auth.delete_user(user_id(&ctx)?).await?;
    ctx.app.auth.record(
        ctx.principal()?,
        kind::USER_DELETED,
        &ctx.peer.to_string(),
        &format!("user {} ({})", user.id, user.username),
        "",
        true,
    );
    Ok(response::json(StatusCode::OK, &user))
}

pub async fn me(ctx: Ctx) -> Result<Response, ApiError> {
    let principal = ctx.principal()?;
    if principal.user_id == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the local admin socket has no account",
        ));
    }
    let user = ctx.app.auth.user(principal.user_id).await?;
    Ok(response::json(StatusCode::OK, &user))
}

pub async fn update_me(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: UpdateMe = ctx.json().await?;
    let principal = ctx.principal()?.clone();
    let user = match request.display_name {
        Some(name) => ctx.app.auth.update_me(&principal, name).await?,
        None => ctx.app.auth.user(principal.user_id).await?,
    };
    Ok(response::json(StatusCode::OK, &user))
}

pub async fn change_password(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: ChangePassword = ctx.json().await?;
    let principal = ctx.principal()?.clone();
    let result = ctx
        .app
        .auth
        .change_own_password(
            &principal,
            &request.current_password,
            &request.new_password,
            ctx.peer.ip(),
        )
        .await;
    // Throttled attempts are not audited one by one (the throttle already bounds them).
    if let Err(error @ crate::auth::AuthError::Throttled { .. }) = result {
        return Err(error.into());
    }
    ctx.app.auth.record(
        &principal,
        kind::PASSWORD_CHANGED,
        &ctx.peer.to_string(),
        &format!("user {}", principal.user_id),
        if result.is_ok() {
            "other sessions ended"
        } else {
            "refused"
        },
        result.is_ok(),
    );
    result?;
    Ok(response::bytes(
        StatusCode::NO_CONTENT,
        "application/json",
        bytes::Bytes::new(),
    ))
}
