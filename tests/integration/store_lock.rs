use crate::harness::{Options, Server, client};

#[tokio::test]
async fn old_schema_store_is_migrated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    cairn::store::fixtures::write_schema_v1(&data.join(cairn::store::STORE_FILE), 1_600_000_000);
    let server = Server::start(Options::default().data_dir(&data));
    let info: serde_json::Value = client()
        .get(server.url("/api/v1/system/info"))
        .bearer_auth(server.admin_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["schema_version"], cairn::store::schema::SCHEMA_VERSION);
    assert_eq!(info["device_created_at"], 1_600_000_000);
    assert_eq!(info["device_id"].as_str().unwrap().len(), 32);
    assert!(server.logs.text().contains("migrating store schema"));
    assert!(server.stop().success());
}

#[test]
fn store_from_a_newer_cairn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let path = data.join(cairn::store::STORE_FILE);
    cairn::store::fixtures::write_schema(&path, cairn::store::schema::SCHEMA_VERSION + 5);
    for _ in 0..2 {
        let (logs, status) = Server::try_start(Options::default().data_dir(&data))
            .err()
            .expect("must not start");
        assert_eq!(status.and_then(|s| s.code()), Some(1));
        assert!(
            logs.contains("newer cairn") && logs.contains("never downgrades"),
            "{logs}"
        );
    }
    // The version in the file is untouched.
    let db = redb::Database::open(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(cairn::store::schema::META).unwrap();
    let raw = redb::ReadableTable::get(&meta, cairn::store::schema::meta_key::SCHEMA_VERSION)
        .unwrap()
        .unwrap();
    assert_eq!(
        raw.value(),
        (cairn::store::schema::SCHEMA_VERSION + 5).to_le_bytes()
    );
}

#[tokio::test]
async fn second_server_on_same_data_dir_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Server::start(Options::default().data_dir(&data));
    let second = Server::try_start(Options::default().data_dir(&data));
    let (logs, status) = second.err().expect("second server must not start");
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    assert!(logs.contains("in use by another cairn process"), "{logs}");
    assert!(
        logs.contains(&format!("pid {}", first.child.id())),
        "{logs}"
    );
    // The first one is unharmed.
    let response = client().get(first.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(first.stop().success());
    // The lock goes with the process: the same dir serves again.
    let third = Server::start(Options::default().data_dir(&data));
    assert!(third.stop().success());
}
