//! The one integration-test binary: every test talks to a real `cairn serve` process over
//! real sockets, with a real store in a temp dir.

mod harness;

mod auth_flows;
mod auth_keys;
mod auth_matrix;
mod compression;
mod config_cli;
#[cfg(feature = "engine")]
mod conformance;
mod fuzz_seeds;
mod hardening;
mod health_metrics;
mod http_edges;
mod lifecycle;
#[cfg(feature = "engine")]
mod model_cli;
mod models;
mod precision;
mod serving;
mod store_lock;
mod systemd_unit;
mod tasks;
mod tls;
