//! Shape arithmetic of ONNX operators, separate from the tensor work: Reshape targets,
//! Unsqueeze axes, broadcasting ranks, SAME padding.

use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

use super::EngineError;

/// Resolves ONNX padding for a 2-D window op: explicit pads, or SAME_* computed from the
/// input size.
pub fn pads_2d(
    padding: &PaddingConfig2d,
    auto_pad: &AutoPad,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> [(usize, usize); 2] {
    match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut pads = [(0, 0); 2];
            for i in 0..2 {
                let out = input[i].div_ceil(stride[i]);
                let effective = (kernel[i] - 1) * dilation[i] + 1;
                let total = ((out - 1) * stride[i] + effective).saturating_sub(input[i]);
                let small = total / 2;
                pads[i] = if matches!(auto_pad, AutoPad::SameUpper) {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            pads
        }
        AutoPad::Valid => [(0, 0); 2],
        AutoPad::NotSet => match padding {
            PaddingConfig2d::Valid => [(0, 0); 2],
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                [(*top, *bottom), (*left, *right)]
            }
        },
    }
}

/// ONNX Reshape: `0` copies the input dimension, `-1` takes what is left.
pub fn resolve_reshape(input: &[usize], target: &[i64]) -> Result<Vec<usize>, EngineError> {
    let total: usize = input.iter().product();
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
    if let Some(i) = infer {
        let known: usize = shape.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(EngineError::Invalid(format!(
                "Reshape {input:?} to {target:?}: sizes do not divide"
            )));
        }
        shape[i] = total / known;
    }
    Ok(shape)
}

/// The shape after inserting ones at `axes` (negative axes count from the end of the
/// output).
pub fn unsqueezed(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, EngineError> {
    let rank = dims.len() + axes.len();
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

pub fn pad_dims(dims: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank - dims.len()];
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
        assert_eq!(unsqueezed(&[3, 4], &[0, -1]).unwrap(), vec![1, 3, 4, 1]);
        assert!(unsqueezed(&[3], &[5]).is_err());
    }
}
