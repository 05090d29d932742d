//! The engine on the CPU: the fixture MLP and CNN at batch 1 and 32.
//!
//! `cargo bench --bench engine`: cairn's CPU path (one thread per inference), then
//! onnxruntime on the same models in the same run (`scripts/bench_ort.py`: IOBinding, one
//! thread), where Python has onnxruntime.

use std::path::PathBuf;

use burn::tensor::TensorData;
use cairn::engine::{Model, cpu, npy};
use criterion::{Criterion, criterion_group, criterion_main};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn bench_model(c: &mut Criterion, model_name: &str, input: &str) {
    let bytes = std::fs::read(fixture(&format!("{model_name}.onnx"))).unwrap();
    let model = Model::load(&bytes, &cpu()).unwrap();
    let mut group = c.benchmark_group(format!("engine/{model_name}"));
    for batch in [1, 32] {
        let x: TensorData =
            npy::read(&fixture(&format!("{model_name}_b{batch}_{input}.npy"))).unwrap();
        group.bench_function(format!("b{batch}"), |b| {
            b.iter(|| model.run(vec![(input.to_owned(), x.clone())]).unwrap());
        });
    }
    group.finish();
}

fn engine(c: &mut Criterion) {
    bench_model(c, "mlp", "input");
    bench_model(c, "cnn", "image");
    onnxruntime_peer();
}

/// The peer in the same run: onnxruntime on the same models, one thread, IOBinding.
/// Skipped (with a note) where Python or onnxruntime is missing.
fn onnxruntime_peer() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_ort.py");
    match std::process::Command::new("python3").arg(&script).status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!(
            "onnxruntime peer: {} exited with {status}",
            script.display()
        ),
        Err(e) => eprintln!("onnxruntime peer not run: python3: {e}"),
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
