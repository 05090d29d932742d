//! Tensors made from scalars and shapes: Range and ConstantOfShape. Both are refused
//! before allocating when the model asks for more than the cap allows.

use burn::tensor::{DType, Device, TensorData};

use super::Scalar;
use crate::engine::EngineError;
use crate::engine::elementwise::{Host, host};
use crate::engine::limits::{Cap, F32, I64};
use crate::engine::value::{Float, Value};

fn scalar(inputs: &[Option<Value>], s: Scalar) -> Result<(f64, bool), EngineError> {
    #[expect(clippy::cast_precision_loss, reason = "Range bounds")]
    match s {
        Scalar::Int(v) => Ok((v as f64, true)),
        Scalar::Float(v) => Ok((v, false)),
        Scalar::Input(i) => {
            let value = inputs.get(i).and_then(Option::as_ref).ok_or_else(|| {
                EngineError::Invalid(format!("Range: input {i} must be a scalar"))
            })?;
            // Whatever holds it: an integer, a float tensor, or a host buffer of the plan.
            match host(value.clone())? {
                (Host::I(v), _) if v.len() == 1 => Ok((v[0] as f64, true)),
                (Host::F(v), _) if v.len() == 1 => Ok((f64::from(v[0]), false)),
                _ => Err(EngineError::Invalid("Range bounds must be scalars".into())),
            }
        }
    }
}

pub(super) fn range(
    inputs: &[Option<Value>],
    start: Scalar,
    limit: Scalar,
    delta: Scalar,
    device: &Device,
    cap: Cap,
) -> Result<Value, EngineError> {
    let (start, int_a) = scalar(inputs, start)?;
    let (limit, int_b) = scalar(inputs, limit)?;
    let (delta, int_c) = scalar(inputs, delta)?;
    if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
        return Err(EngineError::Invalid(format!(
            "Range({start}, {limit}, {delta})"
        )));
    }
    let count = ((limit - start) / delta).ceil().max(0.0);
    if count > 1e15 {
        return Err(EngineError::Limit(format!("Range of {count} elements")));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked above"
    )]
    let n = count as usize;
    let ints = int_a && int_b && int_c;
    cap.check(&[n], if ints { I64 } else { F32 })?;
    #[expect(clippy::cast_possible_truncation, reason = "integer range")]
    if ints {
        let (s, d) = (start as i64, delta as i64);
        return Ok(Value::Int {
            data: (0..n)
                .map(|i| s.wrapping_add(d.wrapping_mul(i64::try_from(i).unwrap_or(i64::MAX))))
                .collect(),
            shape: vec![n],
        });
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "f32 range"
    )]
    let data: Vec<f32> = (0..n).map(|i| (start + delta * i as f64) as f32).collect();
    Ok(Value::Float(Float::from_data(
        TensorData::new(data, [n]),
        device,
    )?))
}

pub(super) fn constant_of_shape(
    shape: Vec<usize>,
    fill: Option<TensorData>,
    device: &Device,
    cap: Cap,
) -> Result<Value, EngineError> {
    let is_int = fill
        .as_ref()
        .is_some_and(|v| !matches!(v.dtype(), DType::F32 | DType::F64 | DType::F16));
    // Refused before allocating: a few bytes of model can ask for any size.
    let count = cap.check(&shape, if is_int { I64 } else { F32 })?;
    if is_int {
        let v: Vec<i64> = fill
            .map(|f| f.convert::<i64>().try_to_vec::<i64>())
            .transpose()
            .map_err(|e| EngineError::Invalid(format!("{e:?}")))?
            .unwrap_or_default();
        return Ok(Value::Int {
            data: vec![v.first().copied().unwrap_or(0); count],
            shape,
        });
    }
    let v: Vec<f32> = fill
        .map(|f| f.convert::<f32>().try_to_vec::<f32>())
        .transpose()
        .map_err(|e| EngineError::Invalid(format!("{e:?}")))?
        .unwrap_or_default();
    Ok(Value::Float(Float::from_data(
        TensorData::new(vec![v.first().copied().unwrap_or(0.0); count], shape),
        device,
    )?))
}
