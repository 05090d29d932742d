//! Store and HTTP round-trip costs of the foundation.
//!
//! `cargo bench --bench foundation`

use std::time::Duration;

use cairn::config::{Config, Listen};
use cairn::store::{STORE_FILE, Store};
use criterion::{Criterion, criterion_group, criterion_main};

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(STORE_FILE)).unwrap();
    let mut group = c.benchmark_group("store");
    group.bench_function("get_small_record", |b| b.iter(|| store.device().unwrap()));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("put_small_record_durable", |b| b.iter(|| store.probe_write().unwrap()));
    group.finish();
}

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data_dir = dir.path().join("data");
    config.http.listen = Listen::On("127.0.0.1:0".parse().unwrap());
    config.https.listen = Listen::Off;
    let running = runtime.block_on(cairn::app::start(config)).unwrap();
    let url = format!("http://{}/healthz", running.http_addr.unwrap());
    let client = reqwest::Client::new();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut group = c.benchmark_group("http");
    group.bench_function("healthz_round_trip_http1", |b| {
        b.iter(|| runtime.block_on(async { client.get(&url).send().await.unwrap().bytes().await.unwrap() }));
    });
    group.bench_function("healthz_round_trip_h2c", |b| {
        b.iter(|| runtime.block_on(async { h2.get(&url).send().await.unwrap().bytes().await.unwrap() }));
    });
    group.finish();
    running.shutdown();
    runtime.block_on(running.wait()).unwrap();
}

criterion_group!(benches, store, http);
criterion_main!(benches);
