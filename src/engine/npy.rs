//! NumPy `.npy` files in and out of the engine (the npyz crate does the format).

use std::path::Path;

use burn::tensor::TensorData;
use npyz::WriterBuilder;

use super::EngineError;

/// Reads a `.npy` file: f32 (f64 is converted), i64, i32 or bool.
///
/// # Errors
/// Unreadable file, or another element type.
pub fn read(path: &Path) -> Result<TensorData, EngineError> {
    let bytes =
        std::fs::read(path).map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?;
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(usize::MAX))
        .collect();
    let descr = npy.dtype().descr().trim_matches('\'').to_owned();
    let bad = |e: std::io::Error| EngineError::Input(format!("{}: {e}", path.display()));
    match descr.as_str() {
        "<f4" => Ok(TensorData::new(npy.into_vec::<f32>().map_err(bad)?, shape)),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "f64 inputs of an f32 model"
        )]
        "<f8" => Ok(TensorData::new(
            npy.into_vec::<f64>()
                .map_err(bad)?
                .into_iter()
                .map(|v| v as f32)
                .collect::<Vec<f32>>(),
            shape,
        )),
        "<i8" => Ok(TensorData::new(npy.into_vec::<i64>().map_err(bad)?, shape)),
        "<i4" => Ok(TensorData::new(npy.into_vec::<i32>().map_err(bad)?, shape)),
        "|b1" => Ok(TensorData::new(npy.into_vec::<bool>().map_err(bad)?, shape)),
        other => Err(EngineError::Input(format!(
            "{}: element type {other} (f32, f64, i64, i32 or bool)",
            path.display()
        ))),
    }
}

/// Writes f32 or i64 data as `.npy` (other integer types as i64, bool as bool).
///
/// # Errors
/// I/O failure, or an element type it cannot write.
pub fn write(path: &Path, data: &TensorData) -> Result<(), EngineError> {
    let shape: Vec<u64> = data.shape().iter().map(|d| *d as u64).collect();
    let invalid = |e: burn::tensor::DataError| EngineError::Invalid(format!("{e:?}"));
    let out = if data.dtype().is_float() {
        let values: Vec<f32> = data
            .clone()
            .convert::<f32>()
            .try_to_vec()
            .map_err(invalid)?;
        encode(&shape, values)?
    } else if matches!(data.dtype(), burn::tensor::DType::Bool(_)) {
        let values: Vec<bool> = data.try_to_vec().map_err(invalid)?;
        encode(&shape, values)?
    } else {
        let values: Vec<i64> = data
            .clone()
            .convert::<i64>()
            .try_to_vec()
            .map_err(invalid)?;
        encode(&shape, values)?
    };
    std::fs::write(path, out).map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
}

fn encode<T: npyz::Serialize + npyz::AutoSerialize>(
    shape: &[u64],
    values: Vec<T>,
) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    writer
        .extend(values)
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(out)
}
