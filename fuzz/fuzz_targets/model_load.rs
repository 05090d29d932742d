//! Loading arbitrary bytes as an ONNX model is an error or a model, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let device = cairn::engine::cpu();
    let _ = cairn::engine::inspect(data);
    if let Ok(model) = cairn::engine::Model::load(data, &device) {
        let _ = model.inputs();
    }
});
