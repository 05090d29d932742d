//! Admission of a request: authentication as the route requires, access, CSRF and the
//! rate limit; and the same credentials checked again for long-lived responses.

use std::sync::Arc;

use http::header;

use super::{CSRF_HEADER, Peer};
use crate::app::App;
use crate::auth::{AuthError, Credential, Principal, keys, sessions};
use crate::http::ApiError;
use crate::http::routes::{Access, Route, RouteId};
use crate::telemetry::metrics::ReasonLabels;

/// Authenticates the caller as the route requires, checks access and CSRF, and takes a
/// rate-limit token. Returns the principal for non-public routes.
pub(super) async fn admit(
    app: &Arc<App>,
    head: &http::request::Parts,
    route: &'static Route,
    peer: Peer,
) -> Result<Option<Principal>, ApiError> {
    let needs_identity = match route.access {
        Access::Public => false,
        Access::Metrics => !app.config.metrics.public,
        Access::Authenticated | Access::Scope(_) => true,
    };
    let auth = &app.auth;
    let denied = |reason: &'static str| {
        app.metrics
            .auth
            .denied
            .get_or_create(&ReasonLabels { reason })
            .inc();
    };
    if !needs_identity {
        if matches!(route.id, RouteId::Login | RouteId::Setup)
            && let Some(ip) = peer.ip()
        {
            auth.admit_address(ip)?;
        }
        return Ok(None);
    }
    let principal = match authenticate(app, &head.headers, peer).await {
        Ok(principal) => principal,
        Err(error) => {
            denied(match error {
                AuthError::KeyExpired => "key_expired",
                AuthError::KeyRevoked => "key_revoked",
                AuthError::MalformedHeader => "malformed_header",
                AuthError::SessionExpired => "session_expired",
                AuthError::Unauthenticated => "unauthenticated",
                _ => "bad_credentials",
            });
            // Throttle guessing from one address even when every guess fails.
            if let Some(ip) = peer.ip() {
                auth.admit_address(ip)?;
            }
            return Err(error.into());
        }
    };
    let required = match route.access {
        Access::Scope(scope) => Some(scope),
        Access::Metrics => Some(crate::auth::Scope::MetricsRead),
        Access::Public | Access::Authenticated => None,
    };
    if let Some(scope) = required
        && !principal.scopes.contains(scope)
    {
        denied("forbidden");
        auth.record_denied(
            &principal,
            &peer.to_string(),
            &format!("{} {}", head.method, route.path),
            &format!("needs {}", scope.as_str()),
        );
        return Err(AuthError::Forbidden(scope.as_str()).into());
    }
    // A password is changed from a console session (it needs the current password, and
    // is throttled like a login), never with an API key: a leaked inference key must not
    // be a way to guess its owner's password.
    if route.id == RouteId::ChangePassword && matches!(principal.credential, Credential::Key { .. })
    {
        denied("forbidden");
        auth.record_denied(
            &principal,
            &peer.to_string(),
            &format!("{} {}", head.method, route.path),
            "needs a console session",
        );
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "forbidden",
            "a password is changed from a console session (log in), not with an API key",
        ));
    }
    if let Credential::Session { csrf, .. } = &principal.credential
        && !head.method.is_safe()
    {
        check_csrf(head, csrf).inspect_err(|_| denied("csrf"))?;
    }
    match principal.credential {
        Credential::Key { key_id } => auth.admit_key(key_id, required, peer.ip())?,
        Credential::Session { .. } => {
            if let Some(ip) = peer.ip() {
                auth.admit_address(ip)?;
            }
        }
        Credential::LocalSocket => {}
    }
    Ok(Some(principal))
}

/// Whether the credentials of an admitted request still let it use `route`: its key or
/// session still valid, its scope still granted. Long-lived responses (event streams) ask
/// again from time to time, so a revoked key or an ended session stops them too.
pub async fn still_admitted(
    app: &Arc<App>,
    headers: &http::HeaderMap,
    route: &'static Route,
    peer: Peer,
) -> bool {
    let required = match route.access {
        Access::Public => return true,
        Access::Metrics if app.config.metrics.public => return true,
        Access::Metrics => Some(crate::auth::Scope::MetricsRead),
        Access::Scope(scope) => Some(scope),
        Access::Authenticated => None,
    };
    authenticate(app, headers, peer)
        .await
        .is_ok_and(|principal| required.is_none_or(|scope| principal.scopes.contains(scope)))
}

async fn authenticate(
    app: &Arc<App>,
    headers: &http::HeaderMap,
    peer: Peer,
) -> Result<Principal, AuthError> {
    if peer == Peer::Local {
        return Ok(crate::auth::local_admin());
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        let (scheme, key) = text.split_once(' ').ok_or(AuthError::MalformedHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") || !key.trim().starts_with(keys::PREFIX) {
            return Err(AuthError::MalformedHeader);
        }
        return app.auth.authenticate_key(key.trim());
    }
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    match sessions::from_cookies(cookies) {
        Some(token) => app.auth.authenticate_session(token).await,
        None => Err(AuthError::Unauthenticated),
    }
}

/// A cookie-authenticated state change must echo the session's CSRF token, and, when the
/// browser says where it comes from, come from this origin.
fn check_csrf(head: &http::request::Parts, csrf: &[u8; 32]) -> Result<(), AuthError> {
    let sent = head
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(sessions::parse_csrf)
        .ok_or(AuthError::Csrf)?;
    if !keys::mac_matches(csrf, &sent) {
        return Err(AuthError::Csrf);
    }
    if let Some(origin) = head
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let host = head
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| head.uri.authority().map(http::uri::Authority::as_str))
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if origin == "null" || origin_host != host {
            return Err(AuthError::Csrf);
        }
    }
    Ok(())
}
