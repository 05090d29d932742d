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
    group.bench_function("put_small_record_durable", |b| {
        b.iter(|| store.probe_write().unwrap())
    });
    group.finish();
}

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.http.listen = Listen::On("127.0.0.1:0".parse().unwrap());
    config.https.listen = Listen::Off;
    let running = runtime
        .block_on(cairn::app::start(config, cairn::auth::Bootstrap::default()))
        .unwrap();
    let url = format!("http://{}/healthz", running.http_addr.unwrap());
    let client = reqwest::Client::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("http");
    group.bench_function("healthz_round_trip_http1", |b| {
        b.iter(|| {
            runtime.block_on(async {
                client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        });
    });
    group.bench_function("healthz_round_trip_h2c", |b| {
        b.iter(|| {
            runtime.block_on(async { h2.get(&url).send().await.unwrap().bytes().await.unwrap() })
        });
    });
    group.finish();
    running.shutdown();
    runtime.block_on(running.wait()).unwrap();
}

/// The cost of checking a bearer key (goal: at most 5 µs) and of a login's password hash.
fn auth(c: &mut Criterion) {
    use cairn::auth::{NewKey, NewUser, Role, Scope, local_admin, open_offline, passwords};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_lock, auth) = open_offline(dir.path()).unwrap();
    let key = runtime.block_on(async {
        auth.create_user(NewUser {
            username: "bench".into(),
            password: "bench-password".into(),
            role: Role::Operator,
            display_name: None,
        })
        .await
        .unwrap();
        let new = NewKey {
            name: "bench".into(),
            scopes: vec![Scope::Infer],
            expires_at: None,
            rate: None,
            for_user: Some("bench".into()),
        };
        auth.create_key(&local_admin(), new).await.unwrap().1
    });
    let mut group = c.benchmark_group("auth");
    group.bench_function("key_check", |b| {
        b.iter(|| auth.authenticate_key(&key).unwrap())
    });
    group.bench_function("key_check_and_admit", |b| {
        b.iter(|| {
            let principal = auth.authenticate_key(&key).unwrap();
            auth.admit_key(principal.key_id().unwrap(), Some(Scope::Infer), None)
                .unwrap();
        });
    });
    let phc = passwords::hash("correct horse battery").unwrap();
    group.sample_size(20);
    group.bench_function("login_password_verify_argon2id", |b| {
        b.iter(|| assert!(passwords::verify("correct horse battery", &phc)));
    });
    group.finish();
}

criterion_group!(benches, store, http, auth);
criterion_main!(benches);
