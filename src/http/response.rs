//! Response builders. These bodies are built in memory first (`Body::full`), so a handler
//! error can still become a clean JSON error; the few streamed responses
//! ([`super::sse`]) check everything that can fail before they answer.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::{Body, Response};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

#[must_use]
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, JSON);
    response
}

/// Serializes `value` as the JSON body.
#[must_use]
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => {
            super::ApiError::internal(format!("response does not serialize: {e}")).into_response()
        }
    }
}

#[must_use]
pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
