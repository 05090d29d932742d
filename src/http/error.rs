//! Errors as the HTTP client sees them: a status, a stable machine-readable `code`, and a
//! message that says what to do. Every domain error maps to one row here.

use std::borrow::Cow;

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::{Response, response};
use crate::auth::{AuthError, RateLimited};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// Extra headers the status requires (`Allow`, `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    code: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    #[must_use]
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route; see /openapi.json for the API",
        )
    }

    #[must_use]
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route accepts {allow}"),
        )
        .with_header(
            header::ALLOW,
            HeaderValue::from_str(allow).unwrap_or(HeaderValue::from_static("GET")),
        )
    }

    #[must_use]
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request body is larger than the limit of {limit} bytes (limits.max_body_bytes)"
            ),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    #[must_use]
    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: &self.message,
            code: self.code,
        })
        .unwrap_or_else(|_| b"{\"error\":\"internal\",\"code\":\"internal\"}".to_vec());
        let mut response = response::json_bytes(self.status, body);
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::InUse(_) => (StatusCode::CONFLICT, "in_use"),
            StoreError::NewerSchema { .. } | StoreError::Corrupt(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "store_unavailable")
            }
            StoreError::AlreadyOpen | StoreError::Io(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "store error");
        }
        Self::new(status, code, e.to_string())
    }
}

const BEARER: HeaderValue = HeaderValue::from_static("Bearer realm=\"cairn\"");
const BEARER_INVALID: HeaderValue =
    HeaderValue::from_static("Bearer realm=\"cairn\", error=\"invalid_token\"");

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        let unauthorized = |code, challenge| {
            Self::new(StatusCode::UNAUTHORIZED, code, message.clone())
                .with_header(header::WWW_AUTHENTICATE, challenge)
        };
        match e {
            AuthError::Unauthenticated => unauthorized("unauthenticated", BEARER),
            AuthError::BadCredentials => unauthorized("bad_credentials", BEARER_INVALID),
            AuthError::KeyExpired => unauthorized("key_expired", BEARER_INVALID),
            AuthError::KeyRevoked => unauthorized("key_revoked", BEARER_INVALID),
            AuthError::MalformedHeader => unauthorized("malformed_authorization", BEARER_INVALID),
            AuthError::SessionExpired => unauthorized("session_expired", BEARER),
            AuthError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            AuthError::Csrf => Self::new(StatusCode::FORBIDDEN, "csrf", message),
            AuthError::SetupToken => Self::new(StatusCode::FORBIDDEN, "setup_token", message),
            AuthError::Throttled { retry_after_secs } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "login_throttled", message)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
            }
            AuthError::Invalid(_) => Self::new(StatusCode::BAD_REQUEST, "invalid_request", message),
            AuthError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            AuthError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            AuthError::SetupUnavailable(_) => {
                Self::new(StatusCode::GONE, "setup_complete", message)
            }
            AuthError::Store(store) => store.into(),
            AuthError::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                Self::internal(message)
            }
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        let secs = limited.retry_after.as_secs_f64().ceil().max(1.0);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a small positive whole number"
        )]
        let secs = secs as u64;
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit exceeded; retry in {secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }
}
