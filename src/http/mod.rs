//! The HTTP layer: listeners, TLS, the route table, the request pipeline and handlers.
//!
//! Architecture invariant: only this module knows HTTP and JSON. Handlers translate a
//! request into calls on domain modules and their results (or errors, through
//! [`ApiError`]) into responses; no domain module sees a request.

pub mod body;
pub mod error;
pub mod handlers;
pub mod request_body;
pub mod response;
pub mod router;
pub mod routes;
pub mod server;
pub mod service;
pub mod sse;
pub mod tls;

pub use error::ApiError;

pub use body::Body;
pub type Response = http::Response<Body>;
