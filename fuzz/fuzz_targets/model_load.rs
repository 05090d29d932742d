//! Loading arbitrary bytes as an ONNX model is an error or a model, never a panic, an
//! abort or a hang; so is warming a loaded model up (one run on inputs of its declared
//! shapes), as the model registry does on upload.
//!
//! Seeds: the crafted models of `src/engine/safety_tests.rs`, in `fuzz/seeds/model_load`
//! (`cargo +nightly fuzz run model_load fuzz/corpus/model_load fuzz/seeds/model_load`).
#![no_main]

use std::time::Duration;

use cairn::engine::{LoadLimits, Model};
use libfuzzer_sys::fuzz_target;

mod contained;

fuzz_target!(init: contained::install(), |data: &[u8]| {
    let device = cairn::engine::cpu();
    let _ = cairn::engine::inspect(data);
    // Small limits: libFuzzer's memory limit is 2 GiB, and the limits are what is tested.
    let limits = LoadLimits {
        max_tensor_bytes: 16 << 20,
        fold_budget: Duration::from_secs(1),
    };
    if let Ok(model) = Model::load_with(data, &device, &limits) {
        let _ = model.inputs();
        let _ = model.weight_bytes();
        let _ = model.warmup();
    }
});
