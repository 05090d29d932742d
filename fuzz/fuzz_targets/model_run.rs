//! Running a loaded model on any inputs is outputs or an error, never a panic, an abort
//! or a hang: the fixture MLP and CNN, or a fuzzed model, on fuzzed shapes and values.
//!
//! Input layout: a selector byte (0: the MLP, 1: the CNN, else a fuzzed model whose length
//! follows as a little-endian u16, then its bytes); then, per model input, one byte per
//! dimension (a dynamic dimension takes it modulo 9; a fixed one keeps its size unless
//! the byte is 255, which makes it 0 or 1 by the next byte's parity) and the values, read
//! from the rest of the data, cycled.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use burn::tensor::{DType, TensorData};
use cairn::engine::{LoadLimits, Model, elementwise};
use libfuzzer_sys::fuzz_target;

mod contained;

const MLP: &[u8] = include_bytes!("../../tests/fixtures/models/mlp.onnx");
const CNN: &[u8] = include_bytes!("../../tests/fixtures/models/cnn.onnx");

/// At most this many elements an input (the limits, not the inputs, are under test).
const MAX_INPUT: usize = 1 << 16;

fn limits() -> LoadLimits {
    LoadLimits {
        max_tensor_bytes: 16 << 20,
        fold_budget: Duration::from_secs(1),
    }
}

fn fixture(index: usize) -> Option<&'static Model> {
    static MODELS: OnceLock<Vec<Model>> = OnceLock::new();
    MODELS
        .get_or_init(|| {
            [MLP, CNN]
                .iter()
                .map(|b| Model::load_with(b, &cairn::engine::cpu(), &limits()).expect("fixture"))
                .collect()
        })
        .get(index)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }
}

fn inputs(model: &Model, data: &mut Reader<'_>) -> Option<Vec<(String, TensorData)>> {
    let mut out = Vec::new();
    for spec in model.inputs() {
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| {
                let b = data.byte();
                match d {
                    None => usize::from(b % 9),
                    Some(_) if b == 255 => usize::from(data.byte() % 2),
                    Some(n) => *n,
                }
            })
            .collect();
        let count = shape
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
            .filter(|n| *n <= MAX_INPUT)?;
        let values: Vec<f32> = if data.0.len() >= 4 {
            data.0
                .chunks_exact(4)
                .cycle()
                .take(count)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            vec![0.0; count]
        };
        let dtype = spec.element_type().unwrap_or(DType::F32);
        let tensor = TensorData::new(values, shape);
        let tensor = if dtype == DType::F32 {
            tensor
        } else {
            elementwise::to_declared(tensor, dtype).ok()?
        };
        out.push((spec.name.clone(), tensor));
    }
    Some(out)
}

fuzz_target!(init: contained::install(), |data: &[u8]| {
    let mut reader = Reader(data);
    let owned;
    let model = match reader.byte() {
        0 => fixture(0),
        1 => fixture(1),
        _ => {
            let len = usize::from(u16::from_le_bytes([reader.byte(), reader.byte()]));
            if reader.0.len() < len {
                return;
            }
            let (bytes, rest) = reader.0.split_at(len);
            reader.0 = rest;
            owned = Model::load_with(bytes, &cairn::engine::cpu(), &limits()).ok();
            owned.as_ref()
        }
    };
    let Some(model) = model else { return };
    if let Some(inputs) = inputs(model, &mut reader) {
        let _ = model.run(inputs);
    }
});
