use crate::harness::run_cli;

#[test]
fn precedence_is_file_then_env_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/from-file\"\n[http]\nlisten = \"127.0.0.1:1111\"\n[https]\nlisten = \"127.0.0.1:2222\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "config",
            "show",
            "--config",
            file,
            "--https-listen",
            "127.0.0.1:4444",
        ],
        &[
            ("CAIRN_HTTPS_LISTEN", "127.0.0.1:3333"),
            ("CAIRN_LOG_LEVEL", "debug"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let shown: toml::Table = out.parse().unwrap();
    assert_eq!(
        shown["data_dir"].as_str(),
        Some("/srv/from-file"),
        "file value kept"
    );
    assert_eq!(
        shown["http"]["listen"].as_str(),
        Some("127.0.0.1:1111"),
        "file value kept"
    );
    assert_eq!(
        shown["log"]["level"].as_str(),
        Some("debug"),
        "env beats file"
    );
    assert_eq!(
        shown["https"]["listen"].as_str(),
        Some("127.0.0.1:4444"),
        "flag beats env"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.toml");
    std::fs::write(&file, "[limits]\nmax_body_size = \"1MiB\"\n").unwrap();
    let (code, _, err) = run_cli(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("max_body_size") && err.contains("limits"),
        "{err}"
    );
    // The same mistake at serve time stops the server before it binds anything.
    let (code, _, err) = run_cli(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("max_body_size"), "{err}");
}

#[test]
fn bad_values_and_unknown_env_are_rejected() {
    let (code, _, err) = run_cli(
        &["config", "check"],
        &[("CAIRN_LIMITS_MAX_BODY_BYTES", "huge")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("limits.max_body_bytes") && err.contains("64MiB"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["config", "check", "--http-listen", "nowhere"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("http.listen") && err.contains("ADDR:PORT"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["config", "check"], &[("CAIRN_HTTP_LISTNE", "off")]);
    assert_eq!(code, 1);
    assert!(err.contains("CAIRN_HTTP_LISTNE"), "{err}");
    let (code, out, _) = run_cli(&["config", "check"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("configuration OK"));
}

#[test]
fn version_reports_build_facts() {
    let (code, out, _) = run_cli(&["version", "--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(v["build_date"].as_str().unwrap().len(), 10);
    for sub in [
        &["serve", "--help"][..],
        &["config", "show", "--help"],
        &["version", "--help"],
    ] {
        let (code, out, _) = run_cli(sub, &[]);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"));
    }
}
