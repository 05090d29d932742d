//! The inference engine: ONNX models received at run time, interpreted on burn tensor
//! operations (GPU through wgpu with the `gpu` feature, CPU through burn's flex backend),
//! with cairn's own kernels for the hot operators on the CPU ([`fast`], [`kernels`]).
//!
//! Runs models made of the operators [`ops::translate`] accepts, with the element types of
//! [`elementwise`]; [`runner::Runner`] is the async front (dedicated threads, bounded
//! queue) the serving layer calls.
//!
//! Architecture invariants:
//! - Loading is total: [`Model::load_with`] runs every step (parse, plan, constant
//!   folding, the CPU plan) under one panic guard ([`limits::guarded`]), and so does each
//!   operator at load and at run time, so a bad model or input is an [`EngineError`],
//!   never a panic; errors from an operator name its node ([`EngineError::Node`]).
//! - Every size computed from model data or input shapes is checked arithmetic, and every
//!   tensor is capped at [`LoadLimits::max_tensor_bytes`] (its volume, zero dimensions
//!   counted as one, so no product of its dimensions overflows): inputs at `run`,
//!   initializers at load, and each operator's output (and scratch buffers) *before* it
//!   is allocated where it can outgrow its inputs (broadcasts, products, windows,
//!   Concat, ConstantOfShape), then every step's outputs once more after it ran.
//! - Attributes no input can make valid (zero strides, dilations or kernel sizes, zero
//!   groups) are refused at load. Constant folding stops past
//!   [`LoadLimits::fold_budget`], or when what it computed passes one capped tensor plus
//!   eight times the file.
//! - The only `unsafe` GEMM call ([`kernels::matmul`]) is preceded by overflow-checked
//!   bounds assertions that hold in release builds too.
//! - Weights are uploaded once at load (once per initializer, however many nodes read
//!   it) and shared by every run (tensor clones are reference counts);
//!   [`Model::weight_bytes`] counts what stays resident.
//! - A step takes (not clones) an intermediate when no later step reads it, so memory is
//!   freed as soon as its last reader ran; on the CPU its buffer is then kept for a later
//!   output ([`kernels::reuse`]), and what a run leaves is held by the model (bounded)
//!   for the next run. A kernel takes a kept buffer only if it writes every element.
//!
//! Not bounded yet: the total memory of intermediates alive at once in a run (each is
//! capped, not their sum), and compute time (a model may legitimately ask for a huge
//! amount of arithmetic on small tensors).

pub mod device;
pub mod elementwise;
pub mod fast;
mod fold;
pub mod front;
pub mod kernels;
pub mod limits;
pub mod model;
pub mod npy;
pub mod ops;
pub mod proto;
pub mod runner;
pub mod shapes;
pub mod threads;
pub mod value;

pub use limits::LoadLimits;
pub use model::{Inspection, Model, TensorSpec, inspect};

/// Why a model cannot load or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("not a readable ONNX model: {0}")]
    Parse(String),
    #[error("the model uses what cairn cannot run yet: {}", .0.join(", "))]
    UnsupportedOps(Vec<String>),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the graph is inconsistent: {0}")]
    BadGraph(String),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Invalid(String),
    #[error("node {node} ({op}): {cause}")]
    Node {
        node: String,
        op: String,
        cause: Box<EngineError>,
    },
    /// A size or time the model asks for passes a [`LoadLimits`] bound (or memory's).
    #[error("{0}")]
    Limit(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The CPU device (burn's flex backend).
#[must_use]
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod test_graphs;

#[cfg(test)]
mod fixture_tests {
    //! The generated fixtures (`scripts/make_fixtures.py`): outputs match onnxruntime's
    //! within 1e-5 at batch 1, 4 and 32.

    use std::path::PathBuf;

    use super::{Model, cpu, npy};

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
    }

    fn check(model_name: &str, input: &str, output: &str) {
        check_on(model_name, input, output, &cpu());
    }

    /// Within 1e-5 of onnxruntime's f32 outputs.
    fn check_on(model_name: &str, input: &str, output: &str, device: &burn::tensor::Device) {
        check_within(model_name, input, output, device, |_| 1e-5);
    }

    /// Within `tolerance(largest |reference output|)` of onnxruntime's f32 outputs.
    fn check_within(
        model_name: &str,
        input: &str,
        output: &str,
        device: &burn::tensor::Device,
        tolerance: fn(f32) -> f32,
    ) {
        let bytes = std::fs::read(dir().join(format!("{model_name}.onnx"))).unwrap();
        let model = Model::load(&bytes, device).unwrap();
        assert_eq!(model.inputs()[0].name, input);
        assert_eq!(model.outputs()[0].name, output);
        assert_eq!(
            model.inputs()[0].shape[0],
            None,
            "the batch dimension is dynamic"
        );
        // Batches again after larger ones: runs that reuse the buffers earlier ones kept.
        for batch in [1, 4, 32, 4, 1] {
            let x = npy::read(&dir().join(format!("{model_name}_b{batch}_{input}.npy"))).unwrap();
            let want =
                npy::read(&dir().join(format!("{model_name}_b{batch}_{output}.npy"))).unwrap();
            let got = model.run(vec![(input.to_owned(), x)]).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, output);
            assert_eq!(got[0].1.shape(), want.shape(), "{model_name} batch {batch}");
            let (got, want): (Vec<f32>, Vec<f32>) =
                (got[0].1.try_to_vec().unwrap(), want.try_to_vec().unwrap());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let peak = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(
                worst <= tolerance(peak),
                "{model_name} batch {batch}: max abs diff {worst} (largest output {peak})"
            );
        }
    }

    #[test]
    fn mlp_matches_onnxruntime() {
        check("mlp", "input", "probabilities");
    }

    #[test]
    fn cnn_matches_onnxruntime() {
        check("cnn", "image", "scores");
    }

    #[test]
    fn residual_block_matches_onnxruntime() {
        check("resblock", "x", "logits");
    }

    /// The GPU code path on whatever Vulkan adapter there is, in a `--features gpu` build
    /// with `CAIRN_TEST_WGPU=1`. Not in CI yet: Debian 12's lavapipe (Mesa 22.3) crashes
    /// compiling cubecl's pipelines.
    #[cfg(feature = "gpu")]
    #[test]
    fn fixtures_match_on_wgpu() {
        if std::env::var("CAIRN_TEST_WGPU").as_deref() != Ok("1") {
            eprintln!("CAIRN_TEST_WGPU is not 1: the wgpu path did not run");
            return;
        }
        let selected =
            super::device::select(super::device::DeviceChoice::Gpu).expect("a Vulkan adapter");
        assert_eq!(selected.kind, "gpu");
        assert!(selected.adapter.is_some());
        check_on("mlp", "input", "probabilities", &selected.device);
        check_on("cnn", "image", "scores", &selected.device);
        // BatchNormalization folded into the convolutions, weights held channels-last.
        check_on("resblock", "x", "logits", &selected.device);
        // Auto never picks a CPU-type adapter over flex.
        let auto = super::device::select(super::device::DeviceChoice::Auto).unwrap();
        if selected
            .adapter
            .as_ref()
            .is_some_and(|a| a.device_type == "Cpu")
        {
            assert_eq!(auto.kind, "cpu", "{}", auto.reason);
        }
    }

    /// A warm model on the GPU runs from its pool: no step reserves fresh device memory,
    /// its weights stay resident between runs, and no step reads a tensor back.
    #[cfg(feature = "gpu")]
    #[test]
    fn a_warm_run_on_wgpu_reuses_device_memory() {
        if std::env::var("CAIRN_TEST_WGPU").as_deref() != Ok("1") {
            eprintln!("CAIRN_TEST_WGPU is not 1: the wgpu path did not run");
            return;
        }
        let device = super::device::select(super::device::DeviceChoice::Gpu)
            .expect("a Vulkan adapter")
            .device;
        let bytes = std::fs::read(dir().join("resblock.onnx")).unwrap();
        let model = Model::load(&bytes, &device).unwrap();
        let x = npy::read(&dir().join("resblock_b4_x.npy")).unwrap();
        let feed = vec![("x".to_owned(), x)];
        model.run(feed.clone()).unwrap();
        // The pool's figures cover the whole device, which the other wgpu tests of this
        // binary use at the same time: a regression reserves on every try, they on some.
        let mut fresh = u64::MAX;
        for _ in 0..5 {
            let steps = model.profile(&feed, 2).unwrap();
            // Outputs are read back after the steps; no step waits for the device.
            assert_eq!(steps.iter().map(|s| s.read_backs).sum::<u64>(), 0);
            assert!(steps.iter().all(|s| s.live_bytes > 0), "weights resident");
            fresh = steps.iter().map(|s| s.reserved).sum();
            if fresh == 0 {
                break;
            }
        }
        assert_eq!(fresh, 0, "bytes reserved afresh by warm runs");
    }

    /// Precision f16 on whatever Vulkan adapter there is (lavapipe in CI): a second device
    /// whose tensors are f16, within f16's accuracy of onnxruntime's f32 outputs, while
    /// the f32 device beside it keeps its accuracy.
    #[cfg(feature = "gpu")]
    #[test]
    fn fixtures_in_f16_on_wgpu() {
        use super::device::{DeviceChoice, Precision, select_with};
        if std::env::var("CAIRN_TEST_WGPU").as_deref() != Ok("1") {
            eprintln!("CAIRN_TEST_WGPU is not 1: the wgpu path did not run");
            return;
        }
        let half = select_with(DeviceChoice::Gpu, Precision::F16).expect("f16 on the adapter");
        assert_eq!(half.precision, Precision::F16, "{}", half.reason);
        assert!(super::value::computes_in_f16(&half.device));
        for (model, input, output) in [
            ("mlp", "input", "probabilities"),
            ("cnn", "image", "scores"),
            ("resblock", "x", "logits"),
        ] {
            check_within(model, input, output, &half.device, |peak| {
                2e-2 * peak.max(1.0)
            });
        }
        let full = select_with(DeviceChoice::Gpu, Precision::F32).unwrap();
        assert!(!super::value::computes_in_f16(&full.device));
        check_on("mlp", "input", "probabilities", &full.device);
        // f16 is a GPU setting: refused on the CPU, f32 where `auto` picks the CPU.
        let err = select_with(DeviceChoice::Cpu, Precision::F16).unwrap_err();
        assert!(err.to_string().contains("GPU only"), "{err}");
        let auto = select_with(DeviceChoice::Auto, Precision::F16).unwrap();
        if auto.kind == "cpu" {
            assert_eq!(auto.precision, Precision::F32, "{}", auto.reason);
            assert!(auto.reason.contains("f32"), "{}", auto.reason);
        }
    }

    #[test]
    fn wrong_inputs_are_refused_with_reasons() {
        let bytes = std::fs::read(dir().join("mlp.onnx")).unwrap();
        let model = Model::load(&bytes, &cpu()).unwrap();
        let x = burn::tensor::TensorData::new(vec![0f32; 63], [1, 63]);
        let err = model
            .run(vec![("input".into(), x)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dimension 1 must be 64"), "{err}");
        let err = model.run(vec![]).unwrap_err().to_string();
        assert!(err.contains("input input is missing"), "{err}");
    }
}
