//! ONNX `TensorProto` (the `.pb` files of the conformance suite) to burn `TensorData`.

use burn::tensor::{TensorData, f16};
use onnx_ir::{Message, TensorProto};

use super::EngineError;

fn dims(proto: &TensorProto) -> Result<Vec<usize>, EngineError> {
    proto
        .dims
        .iter()
        .map(|d| {
            usize::try_from(*d).map_err(|_| EngineError::Invalid(format!("negative dimension {d}")))
        })
        .collect()
}

fn from_raw<T: Copy, const N: usize>(raw: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| decode(c.try_into().expect("chunk of N")))
        .collect()
}

/// Decodes a serialized `TensorProto`.
///
/// # Errors
/// Not a tensor, or an element type the engine has no use for.
pub fn decode(bytes: &[u8]) -> Result<(String, TensorData), EngineError> {
    let proto =
        TensorProto::parse_from_bytes(bytes).map_err(|e| EngineError::Parse(e.to_string()))?;
    let shape = dims(&proto)?;
    let raw: &[u8] = &proto.raw_data;
    let has_raw = !raw.is_empty();
    let data = match proto.data_type {
        1 => TensorData::new(
            if has_raw {
                from_raw(raw, f32::from_le_bytes)
            } else {
                proto.float_data.clone()
            },
            shape,
        ),
        11 => TensorData::new(
            if has_raw {
                from_raw(raw, f64::from_le_bytes)
            } else {
                proto.double_data.clone()
            },
            shape,
        ),
        7 => TensorData::new(
            if has_raw {
                from_raw(raw, i64::from_le_bytes)
            } else {
                proto.int64_data.clone()
            },
            shape,
        ),
        6 => TensorData::new(
            if has_raw {
                from_raw(raw, i32::from_le_bytes)
            } else {
                proto.int32_data.clone()
            },
            shape,
        ),
        2 => TensorData::new(
            if has_raw {
                raw.to_vec()
            } else {
                proto
                    .int32_data
                    .iter()
                    .map(|v| u8::try_from(*v).unwrap_or(0))
                    .collect()
            },
            shape,
        ),
        3 => TensorData::new(
            if has_raw {
                raw.iter().map(|b| i8::from_le_bytes([*b])).collect()
            } else {
                proto
                    .int32_data
                    .iter()
                    .map(|v| i8::try_from(*v).unwrap_or(0))
                    .collect()
            },
            shape,
        ),
        10 => TensorData::new(
            if has_raw {
                from_raw(raw, |b| f16::from_bits(u16::from_le_bytes(b)))
            } else {
                proto
                    .int32_data
                    .iter()
                    .map(|v| f16::from_bits(u16::try_from(*v).unwrap_or(0)))
                    .collect()
            },
            shape,
        ),
        5 => TensorData::new(
            if has_raw {
                from_raw(raw, i16::from_le_bytes)
            } else {
                proto
                    .int32_data
                    .iter()
                    .map(|v| i16::try_from(*v).unwrap_or(0))
                    .collect()
            },
            shape,
        ),
        4 => TensorData::new(
            if has_raw {
                from_raw(raw, u16::from_le_bytes)
            } else {
                proto
                    .int32_data
                    .iter()
                    .map(|v| u16::try_from(*v).unwrap_or(0))
                    .collect()
            },
            shape,
        ),
        12 => TensorData::new(
            if has_raw {
                from_raw(raw, u32::from_le_bytes)
            } else {
                proto
                    .uint64_data
                    .iter()
                    .map(|v| u32::try_from(*v).unwrap_or(0))
                    .collect()
            },
            shape,
        ),
        9 => TensorData::new(
            if has_raw {
                raw.iter().map(|b| *b != 0).collect()
            } else {
                proto.int32_data.iter().map(|v| *v != 0).collect()
            },
            shape,
        ),
        other => {
            return Err(EngineError::Unsupported(format!(
                "TensorProto element type {other}"
            )));
        }
    };
    Ok((proto.name.clone(), data))
}
