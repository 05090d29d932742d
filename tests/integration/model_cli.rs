//! `cairn model inspect | run | bench` on the generated fixtures.

use crate::harness::run_cli;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models");

#[test]
fn inspect_reports_signature_and_runnability() {
    let (code, out, err) = run_cli(&["model", "inspect", &format!("{MODELS}/cnn.onnx")], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("image FLOAT [?, 1, 28, 28]"), "{out}");
    assert!(out.contains("scores FLOAT [?, 10]"), "{out}");
    assert!(
        out.contains("Conv ×2") && out.contains("runnable: yes"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"definitely not protobuf").unwrap();
    let (code, _, err) = run_cli(&["model", "inspect", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not a readable ONNX model"), "{err}");
}

#[test]
fn run_writes_outputs_under_their_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let (code, out, err) = run_cli(
        &[
            "model",
            "run",
            &format!("{MODELS}/mlp.onnx"),
            "--input",
            &format!("input={MODELS}/mlp_b4_input.npy"),
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("probabilities: [4, 10]"), "{out}");
    let written = cairn::engine::npy::read(&out_dir.join("probabilities.npy")).unwrap();
    let expected = cairn::engine::npy::read(std::path::Path::new(&format!(
        "{MODELS}/mlp_b4_probabilities.npy"
    )))
    .unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (
        written.try_to_vec().unwrap(),
        expected.try_to_vec().unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5));
    // A missing input is named.
    let (code, _, err) = run_cli(
        &[
            "model",
            "run",
            &format!("{MODELS}/mlp.onnx"),
            "--output-dir",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("input input is missing"), "{err}");
}

#[test]
fn bench_takes_an_input_shape_and_refuses_one_that_does_not_fit() {
    let bench = |shape: &str| {
        run_cli(
            &[
                "model",
                "bench",
                &format!("{MODELS}/mlp.onnx"),
                "--iterations",
                "3",
                "--shape",
                shape,
            ],
            &[],
        )
    };
    let (code, out, err) = bench("input=3x64");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(batch 1, 1 caller)") || out.contains("latency p50"),
        "{out}"
    );
    for (shape, why) in [
        ("input=3x65", "input input is [?, 64]"),
        ("input=3", "input input is [?, 64]"),
        ("pixels=3x64", "the model has no input named pixels"),
        ("input=3xbig", "DIMS are sizes joined by x"),
        ("3x64", "expected NAME=DIMS"),
    ] {
        let (code, _, err) = bench(shape);
        assert_eq!(code, 1, "{shape}: {err}");
        assert!(err.contains(why), "{shape}: {err}");
    }
}

#[test]
fn bench_reports_latency_and_throughput() {
    let (code, out, err) = run_cli(
        &[
            "model",
            "bench",
            &format!("{MODELS}/mlp.onnx"),
            "--batch",
            "2",
            "--iterations",
            "5",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    for needle in ["load:", "first run:", "latency p50", "throughput:"] {
        assert!(out.contains(needle), "{out}");
    }
}
