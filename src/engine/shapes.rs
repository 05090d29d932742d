//! Shape arithmetic of ONNX operators, separate from the tensor work: Reshape targets,
//! Unsqueeze axes, broadcasting ranks, SAME padding.

use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

use super::EngineError;
use super::limits::product;

/// The highest rank of a shape the engine computes with (integer tensors; float tensors
/// stop at [`super::value::MAX_RANK`]).
pub const MAX_SHAPE_RANK: usize = 32;

/// Resolves ONNX padding for a 2-D window op: explicit pads, or SAME_* computed from the
/// input size.
///
/// # Errors
/// A zero stride or kernel size, or sizes past `usize`.
pub fn pads_2d(
    padding: &PaddingConfig2d,
    auto_pad: &AutoPad,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<[(usize, usize); 2], EngineError> {
    match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = [(0, 0); 2];
            for i in 0..2 {
                let bad = || {
                    EngineError::Invalid(format!(
                        "SAME padding of input {input:?} with kernel {kernel:?}, strides \
                         {stride:?}, dilations {dilation:?}"
                    ))
                };
                if stride[i] == 0 {
                    return Err(bad());
                }
                let out = input[i].div_ceil(stride[i]);
                let effective = kernel[i]
                    .checked_sub(1)
                    .and_then(|k| k.checked_mul(dilation[i]))
                    .and_then(|k| k.checked_add(1))
                    .ok_or_else(bad)?;
                let total = out
                    .saturating_sub(1)
                    .checked_mul(stride[i])
                    .and_then(|v| v.checked_add(effective))
                    .ok_or_else(bad)?
                    .saturating_sub(input[i]);
                let small = total / 2;
                pads[i] = if matches!(auto_pad, AutoPad::SameUpper) {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            Ok(pads)
        }
        AutoPad::Valid => Ok([(0, 0); 2]),
        AutoPad::NotSet => Ok(match padding {
            PaddingConfig2d::Valid => [(0, 0); 2],
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                [(*top, *bottom), (*left, *right)]
            }
        }),
    }
}

/// Output sizes of a 2-D window op (height, width); `None` as for [`window_out`].
#[must_use]
pub fn window_out_2d(
    input: [usize; 2],
    pads: [(usize, usize); 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    ceil: bool,
) -> Option<[usize; 2]> {
    Some([
        window_out(input[0], pads[0], kernel[0], stride[0], dilation[0], ceil)?,
        window_out(input[1], pads[1], kernel[1], stride[1], dilation[1], ceil)?,
    ])
}

/// Output size of a window op along one axis; `None` when the window does not fit, a
/// size is zero, or the arithmetic overflows.
#[must_use]
pub fn window_out(
    input: usize,
    pads: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil: bool,
) -> Option<usize> {
    let padded = input.checked_add(pads.0)?.checked_add(pads.1)?;
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    if stride == 0 || dilation == 0 || padded < span {
        return None;
    }
    let steps = padded - span;
    let mut out = if ceil {
        steps.div_ceil(stride) + 1
    } else {
        steps / stride + 1
    };
    // A ceil-mode window must start inside the input or its left padding.
    if ceil && (out - 1).checked_mul(stride)? >= input + pads.0 {
        out -= 1;
    }
    (out > 0).then_some(out)
}

/// ONNX Reshape: `0` copies the input dimension, `-1` takes what is left. The result
/// holds exactly the input's element count.
///
/// # Errors
/// Targets that are malformed, overflow, or do not hold the input's elements.
pub fn resolve_reshape(input: &[usize], target: &[i64]) -> Result<Vec<usize>, EngineError> {
    let total = product(input)
        .ok_or_else(|| EngineError::Invalid(format!("Reshape of input {input:?}: too large")))?;
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 => shape.push(*input.get(i).ok_or_else(|| {
                EngineError::Invalid(format!("Reshape: 0 at {i} past input rank"))
            })?),
            d if d > 0 => shape.push(usize::try_from(d).unwrap_or(usize::MAX)),
            _ => {
                return Err(EngineError::Invalid(format!(
                    "Reshape: bad target {target:?}"
                )));
            }
        }
    }
    let known = product(&shape).ok_or_else(|| {
        EngineError::Invalid(format!(
            "Reshape {input:?} to {target:?}: the target is too large"
        ))
    })?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(EngineError::Invalid(format!(
                "Reshape {input:?} to {target:?}: sizes do not divide"
            )));
        }
        shape[i] = total / known;
    } else if known != total {
        return Err(EngineError::Invalid(format!(
            "Reshape {input:?} ({total} values) to {target:?} ({known} values)"
        )));
    }
    Ok(shape)
}

/// The shape after inserting ones at `axes` (negative axes count from the end of the
/// output).
///
/// # Errors
/// Axes out of range, or a result above [`MAX_SHAPE_RANK`].
pub fn unsqueezed(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, EngineError> {
    let rank = dims.len() + axes.len();
    if rank > MAX_SHAPE_RANK {
        return Err(EngineError::Invalid(format!(
            "Unsqueeze to rank {rank} (at most {MAX_SHAPE_RANK})"
        )));
    }
    let mut positions: Vec<usize> = axes
        .iter()
        .map(|a| {
            let a = if *a < 0 {
                *a + i64::try_from(rank).unwrap_or(0)
            } else {
                *a
            };
            usize::try_from(a)
                .ok()
                .filter(|a| *a < rank)
                .ok_or_else(|| EngineError::Invalid(format!("Unsqueeze axis {a} for rank {rank}")))
        })
        .collect::<Result<_, _>>()?;
    positions.sort_unstable();
    positions.dedup();
    let mut source = dims.iter();
    Ok((0..rank)
        .map(|i| {
            if positions.contains(&i) {
                1
            } else {
                *source.next().unwrap_or(&1)
            }
        })
        .collect())
}

/// `dims` left-padded with ones to `rank` (NumPy broadcasting).
#[must_use]
pub fn pad_dims(dims: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank.saturating_sub(dims.len())];
    out.extend_from_slice(dims);
    out
}

#[cfg(test)]
mod tests {
    use super::{resolve_reshape, unsqueezed};

    #[test]
    fn reshape_targets() {
        assert_eq!(resolve_reshape(&[2, 3, 4], &[0, -1]).unwrap(), vec![2, 12]);
        assert_eq!(resolve_reshape(&[2, 3, 4], &[-1]).unwrap(), vec![24]);
        assert!(resolve_reshape(&[2, 3, 4], &[5, -1]).is_err());
        assert!(resolve_reshape(&[2, 3, 4], &[-1, -1]).is_err());
        assert!(resolve_reshape(&[2, 3, 4], &[4, 5]).is_err());
        // The element count of [2^62, 4] wraps to 0 in unchecked arithmetic.
        assert!(resolve_reshape(&[0, 4], &[1 << 62, 4]).is_err());
        assert!(resolve_reshape(&[0, 4], &[-1, 1 << 62, 4]).is_err());
        assert_eq!(unsqueezed(&[3, 4], &[0, -1]).unwrap(), vec![1, 3, 4, 1]);
        assert!(unsqueezed(&[3], &[5]).is_err());
    }
}
