//! Configuration loading: precedence, errors that name the key, the key table.
use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_need_no_file() {
    let loaded = load(None, &BTreeMap::new(), &Overrides::default()).unwrap();
    assert_eq!(
        loaded.config.http.listen,
        Listen::On("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(loaded.config.limits.max_body_bytes, ByteSize(64 << 20));
}

#[test]
fn precedence_is_file_then_env_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.toml");
    std::fs::write(
        &file,
        "[http]\nlisten = \"127.0.0.1:1\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let env = env(&[
        ("CAIRN_HTTP_LISTEN", "127.0.0.1:2"),
        ("CAIRN_LOG_LEVEL", "debug"),
    ]);
    let mut flags = Overrides::default();
    flags.set("http.listen", "off");
    let loaded = load(Some(&file), &env, &flags).unwrap();
    assert_eq!(loaded.config.http.listen, Listen::Off);
    assert_eq!(loaded.config.log.level, "debug");
}

#[test]
fn unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.toml");
    std::fs::write(&file, "[limits]\nmax_body = 3\n").unwrap();
    let err = load(Some(&file), &BTreeMap::new(), &Overrides::default()).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("limits"), "{text}");
    assert!(text.contains("max_body"), "{text}");
}

#[test]
fn bad_values_name_key_and_form() {
    // Found by fuzzing: this once panicked inside tracing-subscriber.
    let err = from_text(
        "[log]\nlevel = \"\u{feff}[\"\n",
        &BTreeMap::new(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("log.level"));
    let err = load(
        None,
        &env(&[("CAIRN_LIMITS_IDLE_TIMEOUT", "soon")]),
        &Overrides::default(),
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("limits.idle_timeout") && text.contains("duration"),
        "{text}"
    );
    let err = load(
        None,
        &env(&[("CAIRN_LIMITS_MAX_CONNECTIONS", "x")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("CAIRN_LIMITS_MAX_CONNECTIONS"));
    let err = load(
        None,
        &env(&[("CAIRN_HTTP_LISTN", "x")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("unknown environment variable CAIRN_HTTP_LISTN"));
    // Variables outside every section belong to someone else.
    load(None, &env(&[("CAIRN_BIN", "x")]), &Overrides::default()).unwrap();
}

/// `KEYS` lists exactly the leaves of `Config`.
#[test]
fn key_table_matches_config_fields() {
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => leaves(&path, inner, out),
                _ => out.push(path),
            }
        }
    }
    let mut config = Config::default();
    config.https.cert = Some("c".into());
    config.https.key = Some("k".into());
    let table: toml::Table = toml::from_str(&config.to_redacted_toml()).unwrap();
    let mut found = Vec::new();
    leaves("", &table, &mut found);
    found.sort();
    let mut listed: Vec<String> = KEYS.iter().map(|k| k.path.to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn every_key_round_trips_through_env() {
    for key in KEYS {
        assert!(key.env_name().starts_with("CAIRN_"));
    }
    let shown = Config::default().to_redacted_toml();
    let back: Config = toml::from_str(&shown).unwrap();
    assert_eq!(back, Config::default());
}
