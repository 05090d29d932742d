//! Every fuzz target's seed corpus, run on stable as an ordinary test: a target whose
//! function stops compiling, or a seed that panics, fails CI without cargo-fuzz (which
//! needs nightly). The bodies mirror the targets in `fuzz/fuzz_targets/`.

use std::path::PathBuf;
use std::time::Duration;

use cairn::engine::{EngineError, LoadLimits, Model};

/// A panic the engine's guard caught (a check missing somewhere), under any node context.
fn caught_panic(e: &EngineError) -> bool {
    match e {
        EngineError::Node { cause, .. } => caught_panic(cause),
        EngineError::Internal(_) => true,
        // The front end's own guard (onnx-ir panicked while parsing).
        EngineError::Parse(m) => m.contains("front end failed"),
        _ => false,
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn model_load_seeds_are_errors_not_crashes() {
    let limits = LoadLimits {
        max_tensor_bytes: 16 << 20,
        fold_budget: Duration::from_secs(1),
    };
    for (name, data) in seeds("model_load") {
        let _ = cairn::engine::inspect(&data);
        match Model::load_with(&data, &cairn::engine::cpu(), &limits) {
            Ok(model) => {
                let _ = model.weight_bytes();
                // Every crafted seed is refused at load or at its first run, except the one
                // whose bad shape comes from an input (the warm-up's zeros do not trigger
                // it) and the zero-channel and empty-plane ones, valid and yielding empty
                // tensors.
                let warmup = model.warmup();
                if let Err(e) = &warmup {
                    assert!(!caught_panic(e), "{name}: a panic was caught: {e}");
                }
                assert!(
                    warmup.is_err()
                        || name.contains("runtime_shape")
                        || name.contains("zero_channel")
                        || name.contains("empty_plane"),
                    "{name} loaded and ran"
                );
            }
            Err(e) => assert!(!caught_panic(&e), "{name}: a panic was caught: {e}"),
        }
    }
}

#[test]
fn v2_infer_seeds_round_trip() {
    for (_, data) in seeds("v2_infer") {
        let Some((&split, rest)) = data.split_first() else {
            continue;
        };
        let at = usize::from(split).min(rest.len());
        let (json, binary) = rest.split_at(rest.len() - at);
        cairn::http::handlers::v2::codec::fuzz_round_trip(json, binary);
    }
}
