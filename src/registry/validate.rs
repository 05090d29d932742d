//! Validation of an uploaded model: parse, check every operator and element type, read
//! the input and output signatures, load and run once on synthetic inputs (CPU), all under
//! the engine's limits. Runs on a blocking thread.

use crate::engine::{self, LoadLimits, Model, TensorSpec};
use crate::store::schema::TensorSpecRecord;

pub(super) struct Checked {
    pub invalid: Option<String>,
    pub inputs: Vec<TensorSpecRecord>,
    pub outputs: Vec<TensorSpecRecord>,
    pub ops: Vec<(String, u32)>,
    pub weight_bytes: u64,
}

pub(super) fn record(spec: &TensorSpec) -> TensorSpecRecord {
    TensorSpecRecord {
        name: spec.name.clone(),
        dtype: spec.dtype.clone(),
        shape: spec
            .shape
            .iter()
            .map(|d| d.map_or(-1, |v| i64::try_from(v).unwrap_or(-1)))
            .collect(),
    }
}

pub(super) fn validate(bytes: &[u8], limits: &LoadLimits) -> Checked {
    let mut checked = Checked {
        invalid: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        ops: Vec::new(),
        weight_bytes: 0,
    };
    let inspection = match engine::inspect(bytes) {
        Ok(inspection) => inspection,
        Err(e) => {
            checked.invalid = Some(e.to_string());
            return checked;
        }
    };
    checked.inputs = inspection.inputs.iter().map(record).collect();
    checked.outputs = inspection.outputs.iter().map(record).collect();
    checked.ops = inspection
        .ops
        .iter()
        .map(|(op, n)| (op.clone(), u32::try_from(*n).unwrap_or(u32::MAX)))
        .collect();
    if !inspection.unsupported.is_empty() {
        checked.invalid = Some(format!(
            "unsupported by this cairn: {}",
            inspection.unsupported.join(", ")
        ));
        return checked;
    }
    match Model::load_with(bytes, &engine::cpu(), limits).and_then(|model| {
        model.warmup()?;
        Ok(model.weight_bytes())
    }) {
        Ok(weight_bytes) => checked.weight_bytes = weight_bytes,
        Err(e) => checked.invalid = Some(e.to_string()),
    }
    checked
}
