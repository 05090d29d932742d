//! Errors as the HTTP client sees them: a status, a stable machine-readable `code`, and a
//! message that says what to do. Every domain error maps to one row here.

use std::borrow::Cow;

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::{Response, response};
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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new() }
    }

    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    #[must_use]
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /openapi.json for the API")
    }

    #[must_use]
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route accepts {allow}"),
        )
        .with_header(header::ALLOW, HeaderValue::from_str(allow).unwrap_or(HeaderValue::from_static("GET")))
    }

    #[must_use]
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes (limits.max_body_bytes)"),
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
        let body = serde_json::to_vec(&Body { error: &self.message, code: self.code })
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
        let status = match &e {
            StoreError::NewerSchema { .. } | StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
            StoreError::AlreadyOpen | StoreError::Io(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::error!(error = %e, "store error");
        Self::new(status, "store_unavailable", e.to_string())
    }
}
