//! The engine on the CPU: the fixture MLP and CNN at batch 1 and 32.
//!
//! `cargo bench --bench engine`; compare with `python3 scripts/bench_ort.py` (onnxruntime
//! with IOBinding, same models, same thread count). Set `RAYON_NUM_THREADS=1` for the
//! one-thread figures.

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
}

criterion_group!(benches, engine);
criterion_main!(benches);
