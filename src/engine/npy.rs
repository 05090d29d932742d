//! NumPy `.npy` files in and out of the engine (the npyz crate does the format).

use std::path::Path;

use burn::tensor::TensorData;
use npyz::WriterBuilder;

use super::EngineError;

/// Reads an f32 `.npy` file (f64 is converted).
///
/// # Errors
/// Unreadable file, or an element type other than f32/f64.
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
    let values: Vec<f32> = match descr.as_str() {
        "<f4" => npy
            .into_vec::<f32>()
            .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?,
        #[expect(
            clippy::cast_possible_truncation,
            reason = "f64 inputs of an f32 model"
        )]
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(EngineError::Input(format!(
                "{}: element type {other} (only f32 and f64)",
                path.display()
            )));
        }
    };
    Ok(TensorData::new(values, shape))
}

/// Writes f32 data as `.npy`.
///
/// # Errors
/// I/O failure, or data that is not f32.
pub fn write(path: &Path, data: &TensorData) -> Result<(), EngineError> {
    let values: Vec<f32> = data
        .try_to_vec()
        .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
    let shape: Vec<u64> = data.shape().iter().map(|d| *d as u64).collect();
    let mut out = Vec::new();
    {
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut out)
            .begin_nd()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        writer
            .extend(values)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
    }
    std::fs::write(path, out).map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
}
