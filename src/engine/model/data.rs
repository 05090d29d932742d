//! Client and model data at the interpreter's edge: host tensors turned into runtime
//! values, and inputs checked against the model's declared types and shapes.

use burn::tensor::{DType, Device, TensorData};

use super::TensorSpec;
use crate::engine::EngineError;
use crate::engine::value::{Float, Value};

/// Converts host data from the model or a client into a runtime value.
///
/// # Errors
/// Element types the interpreter does not run.
pub fn value_from_data(data: TensorData, device: &Device) -> Result<Value, EngineError> {
    match data.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            Ok(Value::Float(Float::from_data(data, device)?))
        }
        DType::Bool(_) => {
            let shape = data.shape().to_vec();
            let values: Vec<bool> = data
                .convert_dtype(DType::Bool(burn::tensor::BoolStore::Native))
                .try_to_vec()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
            Ok(Value::Int {
                data: values.into_iter().map(i64::from).collect(),
                shape,
            })
        }
        DType::I64
        | DType::I32
        | DType::I16
        | DType::I8
        | DType::U8
        | DType::U16
        | DType::U32
        | DType::U64 => {
            let shape = data.shape().to_vec();
            let values: Vec<i64> = data
                .convert::<i64>()
                .try_to_vec()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
            Ok(Value::Int {
                data: values,
                shape,
            })
        }
        other => Err(EngineError::Unsupported(format!("{other:?} tensors"))),
    }
}

/// Whether `data` has the element type and shape `spec` declares (dynamic dimensions
/// take any size).
pub(super) fn check_input(spec: &TensorSpec, data: &TensorData) -> Result<(), EngineError> {
    let dtype_ok = match (spec.element_type(), data.dtype()) {
        (Some(DType::Bool(_)), DType::Bool(_)) => true,
        (Some(want), got) => want == got,
        (None, _) => false,
    };
    if !dtype_ok {
        return Err(EngineError::Input(format!(
            "input {} must be {}, got {:?}",
            spec.name,
            spec.dtype,
            data.dtype()
        )));
    }
    let dims = data.shape().to_vec();
    if dims.len() != spec.shape.len() {
        return Err(EngineError::Input(format!(
            "input {} must have rank {} (shape {:?}), got {dims:?}",
            spec.name,
            spec.shape.len(),
            spec.shape
        )));
    }
    for (i, (want, got)) in spec.shape.iter().zip(&dims).enumerate() {
        if let Some(want) = want
            && want != got
        {
            return Err(EngineError::Input(format!(
                "input {}: dimension {i} must be {want}, got {got} (shape {dims:?})",
                spec.name
            )));
        }
    }
    Ok(())
}
