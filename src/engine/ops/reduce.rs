//! Reductions: ReduceMean/Sum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax and
//! ArgMin, Softmax and LogSoftmax.

use burn::tensor::{Device, activation};

use super::{Op, Reduction, axis_of, float_input, host};
use crate::engine::EngineError;
use crate::engine::limits::Cap;
use crate::engine::value::{Float, Value, each_rank};

fn reduce_axis(x: Float, axis: usize, kind: Reduction) -> Float {
    match kind {
        Reduction::Mean => each_rank!(x, t => t.mean_dim(axis)),
        Reduction::Max => each_rank!(x, t => t.max_dim(axis)),
        Reduction::Min => each_rank!(x, t => t.min_dim(axis)),
        Reduction::Prod => each_rank!(x, t => t.prod_dim(axis)),
        _ => each_rank!(x, t => t.sum_dim(axis)),
    }
}

/// Reduces `x` over `axes` (sorted, distinct), keeping them as dims of one.
fn reduce_over(x: Float, axes: &[usize], kind: Reduction) -> Float {
    let x = match kind {
        Reduction::L1 => each_rank!(x, t => t.abs()),
        Reduction::L2 | Reduction::SumSquare => each_rank!(x, t => t.clone().mul(t)),
        _ => x,
    };
    if kind == Reduction::LogSumExp {
        let mut m = x.clone();
        for a in axes {
            m = reduce_axis(m, *a, Reduction::Max);
        }
        let shifted = match (x, m.clone()) {
            (Float::R1(t), Float::R1(m)) => Float::R1(t.sub(m).exp()),
            (Float::R2(t), Float::R2(m)) => Float::R2(t.sub(m).exp()),
            (Float::R3(t), Float::R3(m)) => Float::R3(t.sub(m).exp()),
            (Float::R4(t), Float::R4(m)) => Float::R4(t.sub(m).exp()),
            (Float::R5(t), Float::R5(m)) => Float::R5(t.sub(m).exp()),
            (Float::R6(t), Float::R6(m)) => Float::R6(t.sub(m).exp()),
            (t, _) => t,
        };
        let mut s = shifted;
        for a in axes {
            s = reduce_axis(s, *a, Reduction::Sum);
        }
        return match (s, m) {
            (Float::R1(s), Float::R1(m)) => Float::R1(s.log().add(m)),
            (Float::R2(s), Float::R2(m)) => Float::R2(s.log().add(m)),
            (Float::R3(s), Float::R3(m)) => Float::R3(s.log().add(m)),
            (Float::R4(s), Float::R4(m)) => Float::R4(s.log().add(m)),
            (Float::R5(s), Float::R5(m)) => Float::R5(s.log().add(m)),
            (Float::R6(s), Float::R6(m)) => Float::R6(s.log().add(m)),
            (s, _) => s,
        };
    }
    let mut y = x;
    for a in axes {
        y = reduce_axis(y, *a, kind);
    }
    match kind {
        Reduction::L2 => each_rank!(y, t => t.sqrt()),
        Reduction::LogSum => each_rank!(y, t => t.log()),
        _ => y,
    }
}

pub(super) fn run(
    op: &Op,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let out = match op {
        Op::Softmax { axis, log } => {
            let x = float_input(&mut inputs, 0)?;
            let axis = *axis;
            if axis >= x.rank() {
                return Err(EngineError::Invalid(format!(
                    "Softmax axis {axis} on rank {}",
                    x.rank()
                )));
            }
            Value::Float(if *log {
                each_rank!(x, t => activation::log_softmax(t, axis))
            } else {
                each_rank!(x, t => activation::softmax(t, axis))
            })
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = axes
                .read_optional(&inputs, "Reduce axes")?
                .unwrap_or_default();
            let x = super::any_input(&mut inputs, 0)?;
            let dims = x.dims();
            let rank = dims.len();
            if axes.is_empty() && *noop_with_empty_axes {
                return Ok(vec![x]);
            }
            let mut axes: Vec<usize> = if axes.is_empty() {
                (0..rank).collect()
            } else {
                axes.iter()
                    .map(|a| axis_of(*a, rank, "Reduce"))
                    .collect::<Result<_, _>>()?
            };
            axes.sort_unstable();
            axes.dedup();
            let kept: Vec<usize> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| if axes.contains(&i) { 1 } else { *d })
                .collect();
            let shape: Vec<usize> = if *keepdims {
                kept.clone()
            } else {
                dims.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| *d)
                    .collect()
            };
            let shape = if shape.is_empty() { vec![1] } else { shape };
            if axes.iter().any(|a| dims[*a] == 0) {
                // A reduction over nothing is the reduction's identity.
                let fill = match kind {
                    Reduction::Prod => 1.0,
                    Reduction::Max | Reduction::LogSum | Reduction::LogSumExp => f32::NEG_INFINITY,
                    Reduction::Min => f32::INFINITY,
                    Reduction::Mean => f32::NAN,
                    _ => 0.0,
                };
                let n = cap.check(&shape, crate::engine::limits::F32)?;
                return Ok(vec![Value::Float(Float::from_data(
                    burn::tensor::TensorData::new(vec![fill; n], shape),
                    device,
                )?)]);
            }
            let x = match x {
                Value::Int { data, .. } => {
                    return Ok(vec![Value::Int {
                        data: int_reduce(&data, &dims, &kept, *kind)?,
                        shape,
                    }]);
                }
                other => other.float()?,
            };
            let y = reduce_over(x, &axes, *kind);
            Value::Float(y.reshape(&shape)?)
        }
        Op::ArgExtreme {
            max,
            axis,
            keepdims,
            last,
        } => {
            let x = float_input(&mut inputs, 0)?;
            let dims = x.dims();
            let axis = *axis;
            if axis >= dims.len() || dims[axis] == 0 {
                return Err(EngineError::Invalid(format!(
                    "ArgMax/ArgMin axis {axis} of shape {dims:?}"
                )));
            }
            // The last extreme is the first one of the flipped axis.
            let x = if *last {
                each_rank!(x, t => t.flip([axis]))
            } else {
                x
            };
            let max = *max;
            let data = match x {
                Float::R1(t) => arg(t, axis, max),
                Float::R2(t) => arg(t, axis, max),
                Float::R3(t) => arg(t, axis, max),
                Float::R4(t) => arg(t, axis, max),
                Float::R5(t) => arg(t, axis, max),
                Float::R6(t) => arg(t, axis, max),
            }?;
            let size = i64::try_from(dims[axis]).unwrap_or(i64::MAX);
            let data = if *last {
                data.into_iter().map(|i| size - 1 - i).collect()
            } else {
                data
            };
            let mut shape = dims.clone();
            if *keepdims {
                shape[axis] = 1;
            } else {
                shape.remove(axis);
            }
            Value::Int { data, shape }
        }
        other => {
            return Err(EngineError::Internal(format!(
                "{other:?} is not a reduction"
            )));
        }
    };
    Ok(vec![out])
}

fn arg<const D: usize>(
    t: burn::tensor::Tensor<D>,
    axis: usize,
    max: bool,
) -> Result<Vec<i64>, EngineError> {
    let index = if max { t.argmax(axis) } else { t.argmin(axis) };
    index
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| EngineError::Internal(format!("{e:?}")))
}

/// A reduction of an integer (or boolean) tensor to the `kept` shape (reduced axes at 1).
fn int_reduce(
    data: &[i64],
    dims: &[usize],
    kept: &[usize],
    kind: Reduction,
) -> Result<Vec<i64>, EngineError> {
    let (init, f): (i64, fn(i64, i64) -> i64) = match kind {
        Reduction::Max => (i64::MIN, i64::max),
        Reduction::Min => (i64::MAX, i64::min),
        Reduction::Sum | Reduction::Mean => (0, i64::wrapping_add),
        Reduction::Prod => (1, i64::wrapping_mul),
        Reduction::L1 => (0, |a, x| a.wrapping_add(x.wrapping_abs())),
        Reduction::SumSquare => (0, |a, x| a.wrapping_add(x.wrapping_mul(x))),
        other => {
            return Err(EngineError::Unsupported(format!(
                "{other:?} of an integer tensor"
            )));
        }
    };
    let out_strides = host::strides(kept);
    let in_strides = host::strides(dims);
    let total: usize = kept.iter().product();
    let mut out = vec![init; total];
    let mut counts = vec![0i64; total];
    for (flat, v) in data.iter().enumerate() {
        let mut at = 0;
        for d in 0..dims.len() {
            let coordinate = (flat / in_strides[d]) % dims[d];
            if kept[d] != 1 {
                at += coordinate * out_strides[d];
            }
        }
        out[at] = f(out[at], *v);
        counts[at] += 1;
    }
    if kind == Reduction::Mean {
        for (o, c) in out.iter_mut().zip(&counts) {
            *o = o.checked_div(*c).unwrap_or(0);
        }
    }
    Ok(out)
}
