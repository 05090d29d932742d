//! The per-request pipeline: request id, body limit, route match, authentication,
//! access check, CSRF, rate limit, handler (isolated from panics), metrics, access log.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, header};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::Response;
use super::error::ApiError;
use super::handlers;
pub use super::request_body::BodyReader;
use super::router::Miss;
use super::routes::{Route, RouteId};
use super::server::Scheme;
use crate::app::App;
use crate::auth::{AuthError, Principal};
use crate::telemetry::metrics::{RequestLabels, RouteLabels};

mod admission;

use admission::admit;
pub use admission::still_admitted;

pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");
pub const CSRF_HEADER: header::HeaderName = header::HeaderName::from_static("x-csrf-token");

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The admin socket in the data dir.
    Local,
}

impl Peer {
    #[must_use]
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Tcp(addr) => Some(addr.ip()),
            Self::Local => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => addr.ip().fmt(f),
            Self::Local => f.write_str("local-socket"),
        }
    }
}

/// What a handler gets: the app, the request, the matched route, the caller.
pub struct Ctx {
    pub app: Arc<App>,
    /// The request head; the body is taken by [`Ctx::body`].
    pub head: http::request::Parts,
    body: Option<Incoming>,
    pub route: &'static Route,
    pub params: Vec<(String, String)>,
    pub peer: Peer,
    pub scheme: Scheme,
    /// Set for every route whose access is not `Public`.
    pub principal: Option<Principal>,
}

impl Ctx {
    /// The path parameter `name` of the route template.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The authenticated caller.
    ///
    /// # Errors
    /// 401 when the route let an anonymous caller through.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_ref()
            .ok_or_else(|| AuthError::Unauthenticated.into())
    }

    /// A query parameter, percent-decoding `+` and `%XX`.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<String> {
        self.head.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
    }

    /// Reads the whole body, at most the route's limit ([`body_limit`]).
    ///
    /// # Errors
    /// 413 past the limit; 400 when the client stops sending mid-body; 408 when it stalls.
    pub async fn body(&mut self) -> Result<Bytes, ApiError> {
        let limit = body_limit(&self.app, self.route.id);
        let mut reader = self.body_reader()?;
        let mut first: Option<Bytes> = None;
        let mut rest: Vec<u8> = Vec::new();
        while let Some(chunk) = reader.next().await? {
            if reader.received() > limit {
                return Err(too_large(&self.app, self.route.id));
            }
            match &first {
                None => first = Some(chunk),
                Some(head) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(head);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        Ok(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            Bytes::from(rest)
        })
    }

    /// The body as a stream of chunks, with the read timeout and minimum rate applied.
    ///
    /// # Errors
    /// The body was already taken.
    pub fn body_reader(&mut self) -> Result<BodyReader, ApiError> {
        let body = self
            .body
            .take()
            .ok_or_else(|| ApiError::internal("the request body was already read"))?;
        let limits = &self.app.config.limits;
        Ok(BodyReader::new(
            body,
            limits.body_read_timeout,
            limits.min_body_rate.0,
        ))
    }

    /// Reads and parses a JSON body.
    ///
    /// # Errors
    /// 415 for another content type, 400 for malformed JSON or wrong fields (with the
    /// position and the field), 413 past the size limit.
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let content_type = self
            .head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let body = self.body().await?;
        let mut parser = serde_json::Deserializer::from_slice(&body);
        let parsed = serde_path_to_error::deserialize(&mut parser)
            .map_err(|e| (e.path().to_string(), e.into_inner()))
            .and_then(|value| parser.end().map(|()| value).map_err(|e| (String::new(), e)));
        parsed.map_err(|(path, e)| {
            let code = if e.is_data() {
                "invalid_request"
            } else {
                "invalid_json"
            };
            // The field is named where serde knows it (a wrong type or value of a field).
            let field = if path.is_empty() || path == "." || !e.is_data() {
                String::new()
            } else {
                format!(" (field {path})")
            };
            ApiError::bad_request(code, format!("request body: {e}{field}"))
        })
    }
}

/// The body limit of the routes that take a password (anonymous callers reach two of
/// them): their JSON is a few hundred bytes, so a big body is refused before it is read.
pub const CREDENTIALS_BODY_LIMIT: u64 = 16 * 1024;

/// The largest body `route` accepts.
#[must_use]
pub fn body_limit(app: &App, route: RouteId) -> u64 {
    let limits = &app.config.limits;
    match route {
        RouteId::Login | RouteId::Setup | RouteId::ChangePassword => {
            CREDENTIALS_BODY_LIMIT.min(limits.max_body_bytes.0)
        }
        RouteId::UploadVersion => limits.max_model_bytes.0,
        _ => limits.max_body_bytes.0,
    }
}

/// The 413 of `route`, naming the limit that applies.
fn too_large(app: &App, route: RouteId) -> ApiError {
    let limit = body_limit(app, route);
    match route {
        RouteId::UploadVersion => ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the model file is larger than limits.max_model_bytes ({limit} bytes)"),
        ),
        RouteId::Login | RouteId::Setup | RouteId::ChangePassword => ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes for this route"),
        ),
        _ => ApiError::payload_too_large(limit),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves one request. Never fails: every error becomes a JSON response.
pub async fn handle(
    app: &Arc<App>,
    peer: Peer,
    scheme: Scheme,
    request: Request<Incoming>,
) -> Response {
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
        // A declared body over the route's limit is refused before anything else, unread
        // (uploads have their own, larger limit; the credential routes a small one; every
        // other path, unknown ones included, the general one). An unread body is never
        // drained: the connection closes after the answer, so it holds no slot.
        if let Some(length) = content_length(&request) {
            let limits = &app.config.limits;
            match found.as_ref() {
                Ok(m) if length > body_limit(app, m.route.id) => {
                    return too_large(app, m.route.id).into_response();
                }
                Err(_) if length > limits.max_body_bytes.0 => {
                    return ApiError::payload_too_large(limits.max_body_bytes.0).into_response();
                }
                _ => {}
            }
        }
        let matched = match found {
            Ok(matched) => matched,
            Err(Miss::NotFound) => return ApiError::not_found().into_response(),
            Err(Miss::MethodNotAllowed(allow)) => {
                return ApiError::method_not_allowed(&allow).into_response();
            }
        };
        let (head, body) = request.into_parts();
        let principal = match admit(app, &head, matched.route, peer).await {
            Ok(principal) => principal,
            Err(error) => return error.into_response(),
        };
        let ctx = Ctx {
            app: Arc::clone(app),
            head,
            body: Some(body),
            route: matched.route,
            params: matched.params,
            peer,
            scheme,
            principal,
        };
        let id = matched.route.id;
        match AssertUnwindSafe(handlers::dispatch(id, ctx))
            .catch_unwind()
            .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "handler panicked");
                ApiError::internal(
                    "the request failed inside cairn; see the device log for this request id",
                )
                .into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    metrics.in_flight.dec();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route_label,
            method: method_label,
            status,
        })
        .inc();
    metrics
        .duration
        .get_or_create(&RouteLabels {
            route: route_label,
            method: method_label,
        })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_us = elapsed.as_micros(), %peer, "request failed");
        } else {
            tracing::debug!(status, elapsed_us = elapsed.as_micros(), %peer, "request");
        }
    });
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id);
    // Every answer, JSON included: browsers must not guess another type.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if scheme == Scheme::Https {
        // Browsers ignore it from a certificate they do not trust (RFC 6797 §8.1), so the
        // generated self-signed certificate can still be clicked through.
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client's `X-Request-Id` when it is short printable ASCII, or a new one.
fn request_id(request: &Request<Incoming>) -> HeaderValue {
    if let Some(given) = request.headers().get(REQUEST_ID)
        && !given.is_empty()
        && given.len() <= 128
        && given.as_bytes().iter().all(u8::is_ascii_graphic)
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
    // Distinct per process (random base) and per request (an odd multiplier is a bijection).
    let value = base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut buf = [0u8; 16];
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

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
