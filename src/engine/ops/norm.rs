//! Normalization: BatchNormalization (when the plan did not fold it into a convolution),
//! LayerNormalization (with its optional Mean and InvStdDev outputs),
//! InstanceNormalization, GroupNormalization, MeanVarianceNormalization, LpNormalization.

use super::{Op, binary, float_input, optional_float};
use crate::engine::EngineError;
use crate::engine::elementwise::Arithmetic;
use crate::engine::limits::Cap;
use crate::engine::value::{Float, Value, each_rank};

/// `(x - mean) / sqrt(var + epsilon)` over the trailing axes from `axis` (population
/// variance, as LayerNormalization and InstanceNormalization define it), with the mean and
/// `1 / sqrt(var + epsilon)` shaped `dims[..axis] + [1; rank - axis]`.
fn normalize_from(x: Float, axis: usize, epsilon: f32) -> Result<[Float; 3], EngineError> {
    let dims = x.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis..].iter().product();
    let flat = x.reshape(&[outer, inner])?.rank2()?;
    let (var, mean) = flat.clone().var_mean_bias(1);
    let inv = var.add_scalar(epsilon).sqrt().recip();
    let normed = flat.sub(mean.clone()).mul(inv.clone());
    let mut stat_shape = dims[..axis].to_vec();
    stat_shape.resize(dims.len(), 1);
    Ok([
        Float::R2(normed).reshape(&dims)?,
        Float::R2(mean).reshape(&stat_shape)?,
        Float::R2(inv).reshape(&stat_shape)?,
    ])
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per operator reads best as one match"
)]
pub(super) fn run(
    op: &Op,
    mut inputs: Vec<Option<Value>>,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let out = match op {
        Op::BatchNorm { epsilon } => {
            let x = float_input(&mut inputs, 0)?;
            let rank = x.rank();
            let channels = *x
                .dims()
                .get(1)
                .ok_or_else(|| EngineError::Invalid("BatchNormalization of rank 1".into()))?;
            let mut params = Vec::with_capacity(4);
            for i in 1..=4 {
                let p = float_input(&mut inputs, i)?;
                let mut shape = vec![1; rank];
                shape[1] = channels;
                params.push(p.reshape(&shape)?);
            }
            let [scale, bias, mean, var]: [Float; 4] = params
                .try_into()
                .map_err(|_| EngineError::Internal("four parameters".into()))?;
            let eps = *epsilon;
            let inv = each_rank!(var, t => t.add_scalar(eps).sqrt().recip());
            let centered = binary(x, mean, Arithmetic::Sub, cap)?;
            let normed = binary(centered, inv, Arithmetic::Mul, cap)?;
            let scaled = binary(normed, scale, Arithmetic::Mul, cap)?;
            binary(scaled, bias, Arithmetic::Add, cap)?
        }
        Op::LayerNorm {
            axis,
            epsilon,
            outputs,
        } => {
            let x = float_input(&mut inputs, 0)?;
            let scale = float_input(&mut inputs, 1)?;
            let bias = optional_float(&mut inputs, 2)?;
            let axis = super::axis_of(*axis, x.rank(), "LayerNormalization")?;
            let [normed, mean, inv] = normalize_from(x, axis, *epsilon)?;
            let scaled = binary(normed, scale, Arithmetic::Mul, cap)?;
            let y = match bias {
                Some(b) => binary(scaled, b, Arithmetic::Add, cap)?,
                None => scaled,
            };
            let mut out = vec![Value::Float(y), Value::Float(mean), Value::Float(inv)];
            out.truncate((*outputs).clamp(1, 3));
            return Ok(out);
        }
        Op::InstanceNorm { epsilon } => {
            let x = float_input(&mut inputs, 0)?;
            let scale = float_input(&mut inputs, 1)?;
            let bias = float_input(&mut inputs, 2)?;
            let rank = x.rank();
            let dims = x.dims();
            if rank < 3 {
                return Err(EngineError::Invalid(format!(
                    "InstanceNormalization of shape {dims:?}"
                )));
            }
            let [normed, _, _] = normalize_from(x, 2, *epsilon)?;
            let mut shape = vec![1; rank];
            shape[1] = dims[1];
            let scaled = binary(normed, scale.reshape(&shape)?, Arithmetic::Mul, cap)?;
            binary(scaled, bias.reshape(&shape)?, Arithmetic::Add, cap)?
        }
        Op::GroupNorm { groups, epsilon } => {
            let x = float_input(&mut inputs, 0)?;
            let scale = float_input(&mut inputs, 1)?;
            let bias = float_input(&mut inputs, 2)?;
            let dims = x.dims();
            let groups = *groups;
            if dims.len() < 3 || groups == 0 || dims[1] % groups != 0 {
                return Err(EngineError::Invalid(format!(
                    "GroupNormalization of {dims:?} in {groups} groups"
                )));
            }
            let mut grouped = vec![dims[0], groups, dims[1] / groups];
            grouped.extend(&dims[2..]);
            let [normed, _, _] = normalize_from(x.reshape(&grouped)?, 2, *epsilon)?;
            let mut shape = vec![1; dims.len()];
            shape[1] = dims[1];
            let normed = normed.reshape(&dims)?;
            let scaled = binary(normed, scale.reshape(&shape)?, Arithmetic::Mul, cap)?;
            binary(scaled, bias.reshape(&shape)?, Arithmetic::Add, cap)?
        }
        Op::MeanVarianceNorm { axes } => {
            let x = float_input(&mut inputs, 0)?;
            let rank = x.rank();
            if axes.iter().any(|a| *a >= rank) {
                return Err(EngineError::Invalid(format!(
                    "MeanVarianceNormalization axes {axes:?} of rank {rank}"
                )));
            }
            let axes = axes.clone();
            let mean_over = |t: Float| -> Float {
                let mut t = t;
                for a in &axes {
                    t = each_rank!(t, u => u.mean_dim(*a));
                }
                t
            };
            let mean = mean_over(x.clone());
            let centered = binary(x, mean, Arithmetic::Sub, cap)?;
            let var = mean_over(each_rank!(centered.clone(), t => t.clone().mul(t)));
            let std = each_rank!(var, t => t.sqrt().add_scalar(1e-9));
            binary(centered, std, Arithmetic::Div, cap)?
        }
        Op::LpNorm { axis, p } => {
            let x = float_input(&mut inputs, 0)?;
            let axis = *axis;
            if axis >= x.rank() || !matches!(p, 1 | 2) {
                return Err(EngineError::Invalid(format!(
                    "LpNormalization p={p} on axis {axis} of rank {}",
                    x.rank()
                )));
            }
            let l1 = *p == 1;
            each_rank!(x, t => {
                let norm = if l1 {
                    t.clone().abs().sum_dim(axis)
                } else {
                    t.clone().mul(t.clone()).sum_dim(axis).sqrt()
                };
                // An all-zero slice stays zero (0/0 would be NaN).
                let zero = norm.clone().equal_elem(0.0).float();
                t.div(norm.add(zero))
            })
        }
        other => {
            return Err(EngineError::Internal(format!(
                "{other:?} is not a normalization"
            )));
        }
    };
    Ok(vec![Value::Float(out)])
}
