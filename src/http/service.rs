//! The per-request pipeline: request id, route match, body limit, access check,
//! handler (isolated from panics), metrics and the access log.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use super::error::ApiError;
use super::handlers;
use super::router::Miss;
use super::routes::Route;
use super::server::Scheme;
use super::Response;
use crate::app::App;
use crate::telemetry::metrics::{RequestLabels, RouteLabels};

pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// What a handler gets: the app, the request, the matched route and its parameters.
pub struct Ctx {
    pub app: Arc<App>,
    /// The request head; the body is taken by [`Ctx::body`].
    pub head: http::request::Parts,
    body: Option<Incoming>,
    pub route: &'static Route,
    pub params: Vec<(String, String)>,
    pub peer: SocketAddr,
    pub scheme: Scheme,
}

impl Ctx {
    /// The path parameter `name` of the route template.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Reads the whole body, at most `limits.max_body_bytes`.
    ///
    /// # Errors
    /// 413 past the limit; 400 when the client stops sending mid-body.
    pub async fn body(&mut self) -> Result<Bytes, ApiError> {
        let limit = self.app.config.limits.max_body_bytes.0;
        let Some(body) = self.body.take() else {
            return Err(ApiError::internal("the request body was already read"));
        };
        let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::payload_too_large(limit)),
            Err(e) => Err(ApiError::bad_request(
                "body_incomplete",
                format!("the request body could not be read to its end: {e}"),
            )),
        }
    }
}

/// Serves one request. Never fails: every error becomes a JSON response.
pub async fn handle(app: &Arc<App>, peer: SocketAddr, scheme: Scheme, request: Request<Incoming>) -> Response {
    let started = Instant::now();
    let request_id = request_id(&request);
    let method_label = method_label(request.method());
    let found = app.router.find(request.method(), request.uri().path());
    let route_label = found.as_ref().map_or("unmatched", |m| m.route.path);
    let span = tracing::info_span!(
        "request",
        id = %request_id.to_str().unwrap_or("-"),
        method = method_label,
        route = route_label,
    );
    let metrics = &app.metrics.http;
    metrics.in_flight.inc();
    let mut response = async {
        // A declared body over the limit is refused before anything else, unread.
        if let Some(length) = content_length(&request)
            && length > app.config.limits.max_body_bytes.0
        {
            return ApiError::payload_too_large(app.config.limits.max_body_bytes.0).into_response();
        }
        let matched = match found {
            Ok(matched) => matched,
            Err(Miss::NotFound) => return ApiError::not_found().into_response(),
            Err(Miss::MethodNotAllowed(allow)) => return ApiError::method_not_allowed(&allow).into_response(),
        };
        let (head, body) = request.into_parts();
        let ctx = Ctx {
            app: Arc::clone(app),
            head,
            body: Some(body),
            route: matched.route,
            params: matched.params,
            peer,
            scheme,
        };
        let id = matched.route.id;
        match AssertUnwindSafe(handlers::dispatch(id, ctx)).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "handler panicked");
                ApiError::internal("the request failed inside cairn; see the device log for this request id")
                    .into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    metrics.in_flight.dec();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics.requests.get_or_create(&RequestLabels { route: route_label, method: method_label, status }).inc();
    metrics
        .duration
        .get_or_create(&RouteLabels { route: route_label, method: method_label })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_us = elapsed.as_micros(), %peer, "request failed");
        } else {
            tracing::debug!(status, elapsed_us = elapsed.as_micros(), %peer, "request");
        }
    });
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The client's `X-Request-Id` when it is short printable ASCII, or a new one.
fn request_id(request: &Request<Incoming>) -> HeaderValue {
    if let Some(given) = request.headers().get(REQUEST_ID)
        && !given.is_empty()
        && given.len() <= 128
        && given.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return given.clone();
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        u64::from_le_bytes(seed)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Distinct per process (random base) and per request (counter), no allocation beyond the value.
    let mut buf = [0u8; 16];
    let value = base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for (i, byte) in buf.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *byte = b"0123456789abcdef"[usize::try_from(nibble).unwrap_or(0)];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

/// Bounded label values: the standard methods by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
