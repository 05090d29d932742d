//! Data movement and shape arithmetic: Reshape, Flatten, Transpose, Concat, (Un)Squeeze,
//! Shape, Size, Gather, GatherElements, Slice, Expand, Tile, Split (Range and
//! ConstantOfShape are in [`super::generate`]). Float tensors move on their device
//! through burn; integer tensors on the host ([`super::host`]).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{Op, any_input, axis_of, expand_to, host, index, lift_to};
use crate::engine::EngineError;
use crate::engine::elementwise::broadcast_shape;
use crate::engine::kernels::Dense;
use crate::engine::limits::{Cap, F32, I64, product};
use crate::engine::shapes::{resolve_reshape, unsqueezed};
use crate::engine::value::{Float, Value, each_rank, to_array, with_rank};

/// Bytes an element of `value` takes.
pub(super) fn elem(value: &Value) -> usize {
    if matches!(value, Value::Int { .. }) {
        I64
    } else {
        F32
    }
}

/// The value with a new shape of the same element count.
pub(crate) fn reshape_value(value: Value, shape: Vec<usize>) -> Result<Value, EngineError> {
    match value {
        Value::Float(f) => {
            let shape = if shape.is_empty() { vec![1] } else { shape };
            Ok(Value::Float(f.reshape(&shape)?))
        }
        Value::Int { data, shape: from } => {
            if product(&shape) != Some(data.len()) {
                return Err(EngineError::Invalid(format!(
                    "cannot reshape {from:?} to {shape:?}: the element counts differ"
                )));
            }
            Ok(Value::Int { data, shape })
        }
        Value::Dense(mut d) => {
            if product(&shape) != Some(d.data.len()) {
                return Err(EngineError::Invalid(format!(
                    "cannot reshape {:?} to {shape:?}: the element counts differ",
                    d.shape
                )));
            }
            d.shape = if shape.is_empty() { vec![1] } else { shape };
            Ok(Value::Dense(d))
        }
    }
}

pub(super) fn int_index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = indices
        .iter()
        .map(|i| i64::try_from(*i).unwrap_or(i64::MAX))
        .collect();
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

pub(super) fn float_device(f: &Float) -> Device {
    match f {
        Float::R1(t) => t.device(),
        Float::R2(t) => t.device(),
        Float::R3(t) => t.device(),
        Float::R4(t) => t.device(),
        Float::R5(t) => t.device(),
        Float::R6(t) => t.device(),
    }
}

/// Selects positions along one axis of a float tensor (contiguous runs as a narrow).
pub(crate) fn take_positions(x: Float, axis: usize, picks: &[usize]) -> Result<Float, EngineError> {
    let size = x.dims()[axis];
    if picks.len() == size && picks.iter().enumerate().all(|(i, p)| i == *p) {
        return Ok(x);
    }
    let contiguous = picks.windows(2).all(|w| w[1] == w[0] + 1);
    if contiguous && !picks.is_empty() {
        let (start, len) = (picks[0], picks.len());
        return Ok(each_rank!(x, t => t.narrow(axis, start, len)));
    }
    let index = int_index_tensor(picks, &float_device(&x));
    Ok(each_rank!(x, t => t.select(axis, index.clone())))
}

pub(super) fn ints_of(value: Value, what: &str) -> Result<(Vec<i64>, Vec<usize>), EngineError> {
    match value {
        Value::Int { data, shape } => Ok((data, shape)),
        other => Err(EngineError::Invalid(format!(
            "{what} takes integer indices, got a float tensor of shape {:?}",
            other.dims()
        ))),
    }
}

fn to_usize(v: &[i64], what: &str) -> Result<Vec<usize>, EngineError> {
    v.iter()
        .map(|d| {
            usize::try_from(*d).map_err(|_| EngineError::Invalid(format!("{what}: dimension {d}")))
        })
        .collect()
}

pub(super) fn run(
    op: &Op,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let out = match op {
        Op::Flatten { axis } => {
            let x = any_input(&mut inputs, 0)?;
            let dims = x.dims();
            let axis = (*axis).min(dims.len());
            let outer = product(&dims[..axis]).unwrap_or(0);
            let inner = product(&dims[axis..]).unwrap_or(0);
            reshape_value(x, vec![outer, inner])?
        }
        Op::Reshape(target) => {
            let target = target.read(&inputs, "Reshape")?;
            let x = any_input(&mut inputs, 0)?;
            let shape = resolve_reshape(&x.dims(), &target)?;
            reshape_value(x, shape)?
        }
        Op::Unsqueeze(axes) => {
            let axes = axes.read(&inputs, "Unsqueeze")?;
            let x = any_input(&mut inputs, 0)?;
            let shape = unsqueezed(&x.dims(), &axes)?;
            reshape_value(x, shape)?
        }
        Op::Squeeze(axes) => {
            let axes = axes
                .as_ref()
                .map(|a| a.read(&inputs, "Squeeze"))
                .transpose()?;
            let x = any_input(&mut inputs, 0)?;
            let dims = x.dims();
            let drop: Vec<usize> = match axes {
                Some(axes) => axes
                    .iter()
                    .map(|a| axis_of(*a, dims.len(), "Squeeze"))
                    .collect::<Result<_, _>>()?,
                None => (0..dims.len()).filter(|i| dims[*i] == 1).collect(),
            };
            if let Some(bad) = drop.iter().find(|a| dims[**a] != 1) {
                return Err(EngineError::Invalid(format!(
                    "Squeeze axis {bad} of shape {dims:?} is not 1"
                )));
            }
            let shape = dims
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, d)| *d)
                .collect();
            reshape_value(x, shape)?
        }
        Op::Transpose(perm) => transpose(any_input(&mut inputs, 0)?, perm)?,
        Op::Concat { axis } => concat(inputs.into_iter().flatten().collect(), *axis, cap)?,
        Op::Shape { start, end } => {
            let x = any_input(&mut inputs, 0)?;
            let dims = x.dims();
            let end = (*end).min(dims.len());
            let start = (*start).min(end);
            let data: Vec<i64> = dims[start..end]
                .iter()
                .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
                .collect();
            let n = data.len();
            Value::Int {
                data,
                shape: vec![n],
            }
        }
        Op::Size => {
            let x = any_input(&mut inputs, 0)?;
            Value::Int {
                data: vec![i64::try_from(product(&x.dims()).unwrap_or(0)).unwrap_or(i64::MAX)],
                shape: vec![],
            }
        }
        Op::Gather { axis } => {
            let x = any_input(&mut inputs, 0)?;
            let (indices, index_shape) = ints_of(any_input(&mut inputs, 1)?, "Gather")?;
            index::gather(x, *axis, &indices, index_shape, cap)?
        }
        Op::GatherElements { axis } => {
            let x = any_input(&mut inputs, 0)?;
            let (indices, index_shape) = ints_of(any_input(&mut inputs, 1)?, "GatherElements")?;
            index::gather_elements(x, *axis, &indices, &index_shape, cap)?
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let starts = starts.read(&inputs, "Slice starts")?;
            let ends = ends.read(&inputs, "Slice ends")?;
            let axes = axes
                .as_ref()
                .map(|a| a.read(&inputs, "Slice axes"))
                .transpose()?;
            let steps = steps
                .as_ref()
                .map(|s| s.read(&inputs, "Slice steps"))
                .transpose()?;
            let x = any_input(&mut inputs, 0)?;
            index::slice(x, &starts, &ends, axes.as_deref(), steps.as_deref())?
        }
        Op::Expand(shape) => {
            let shape = to_usize(&shape.read(&inputs, "Expand")?, "Expand")?;
            let x = any_input(&mut inputs, 0)?;
            let out = broadcast_shape(&[&x.dims(), &shape])?;
            cap.check(&out, elem(&x))?;
            expand(x, &out)?
        }
        Op::Tile(repeats) => {
            let repeats = to_usize(&repeats.read(&inputs, "Tile")?, "Tile")?;
            let x = any_input(&mut inputs, 0)?;
            tile(x, &repeats, cap)?
        }
        Op::Range {
            start,
            limit,
            delta,
        } => super::generate::range(&inputs, *start, *limit, *delta, device, cap)?,
        Op::Split {
            axis,
            sizes,
            outputs,
        } => {
            let sizes = sizes
                .as_ref()
                .map(|s| s.read(&inputs, "Split"))
                .transpose()?;
            let x = any_input(&mut inputs, 0)?;
            return split(x, *axis, sizes.as_deref(), *outputs);
        }
        Op::ConstantOfShape { shape, fill } => {
            let shape = to_usize(&shape.read(&inputs, "ConstantOfShape")?, "ConstantOfShape")?;
            super::generate::constant_of_shape(shape, fill.clone(), device, cap)?
        }
        Op::Pad { pads, value, mode } => {
            return Ok(vec![super::pad::run(
                pads, *value, *mode, inputs, device, cap,
            )?]);
        }
        Op::DepthToSpace { block, crd } => {
            let x = any_input(&mut inputs, 0)?.float()?;
            let [b, c, h, w] = <[usize; 4]>::try_from(x.dims().as_slice()).map_err(|_| {
                EngineError::Invalid(format!("DepthToSpace of shape {:?}", x.dims()))
            })?;
            let bs = *block;
            let blocks = |what: &str| EngineError::Invalid(format!("{what}: blocks of {bs}"));
            let depth = bs.checked_mul(bs).ok_or_else(|| blocks("DepthToSpace"))?;
            if c % depth != 0 {
                return Err(EngineError::Invalid(format!(
                    "DepthToSpace: {c} channels for blocks of {bs}"
                )));
            }
            let grown = |n: usize| n.checked_mul(bs).ok_or_else(|| blocks("DepthToSpace"));
            let out = [b, c / depth, grown(h)?, grown(w)?];
            cap.check(&out, F32)?;
            let t = x.rank4()?;
            let y = if *crd {
                t.reshape([b, c / depth, bs, bs, h, w])
                    .permute([0, 1, 4, 2, 5, 3])
            } else {
                t.reshape([b, bs, bs, c / depth, h, w])
                    .permute([0, 3, 4, 1, 5, 2])
            };
            Value::Float(Float::R4(y.reshape(out)))
        }
        Op::SpaceToDepth { block } => {
            let x = any_input(&mut inputs, 0)?.float()?;
            let [b, c, h, w] = <[usize; 4]>::try_from(x.dims().as_slice()).map_err(|_| {
                EngineError::Invalid(format!("SpaceToDepth of shape {:?}", x.dims()))
            })?;
            let bs = *block;
            if h % bs != 0 || w % bs != 0 {
                return Err(EngineError::Invalid(format!(
                    "SpaceToDepth: {h}×{w} for blocks of {bs}"
                )));
            }
            let depth = bs
                .checked_mul(bs)
                .and_then(|d| d.checked_mul(c))
                .ok_or_else(|| {
                    EngineError::Invalid(format!("SpaceToDepth: blocks of {bs} on {c} channels"))
                })?;
            cap.check(&[b, depth, h / bs, w / bs], F32)?;
            let y = x
                .rank4()?
                .reshape([b, c, h / bs, bs, w / bs, bs])
                .permute([0, 3, 5, 1, 2, 4])
                .reshape([b, depth, h / bs, w / bs]);
            Value::Float(Float::R4(y))
        }
        other => {
            return Err(EngineError::Internal(format!(
                "{other:?} is not a shape operator"
            )));
        }
    };
    Ok(vec![out])
}

fn transpose(x: Value, perm: &[usize]) -> Result<Value, EngineError> {
    let rank = x.dims().len();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        perm.to_vec()
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(EngineError::Invalid(format!(
            "Transpose perm {perm:?} for rank {rank}"
        )));
    }
    Ok(match x {
        Value::Int { data, shape } => {
            let (data, shape) = host::transpose(&data, &shape, &perm);
            Value::Int { data, shape }
        }
        Value::Dense(d) => {
            let (data, shape) = host::transpose(&d.data, &d.shape, &perm);
            Value::Dense(Dense::new(data, shape)?)
        }
        other => {
            let f = other.float()?;
            Value::Float(with_rank!(rank, D => lift_to::<D>(f)?.permute(to_array::<D>(&perm))))
        }
    })
}

/// Concat of float or integer tensors along `axis`.
pub(crate) fn concat(parts: Vec<Value>, axis: usize, cap: Cap) -> Result<Value, EngineError> {
    let first = parts
        .first()
        .ok_or_else(|| EngineError::Invalid("Concat of nothing".into()))?
        .dims();
    let rank = first.len();
    if axis >= rank {
        return Err(EngineError::Invalid(format!(
            "Concat axis {axis} on rank {rank}"
        )));
    }
    let mut out = first.clone();
    out[axis] = 0;
    for p in &parts {
        let dims = p.dims();
        if dims.len() != rank || (0..rank).any(|i| i != axis && dims[i] != first[i]) {
            return Err(EngineError::Invalid(format!(
                "Concat of shapes {first:?} and {dims:?} on axis {axis}"
            )));
        }
        out[axis] = out[axis]
            .checked_add(dims[axis])
            .ok_or_else(|| EngineError::Limit(format!("Concat along axis {axis}: too large")))?;
    }
    let ints = parts.iter().any(|p| matches!(p, Value::Int { .. }));
    cap.check(&out, if ints { I64 } else { F32 })?;
    if ints {
        let parts: Vec<(Vec<i64>, Vec<usize>)> = parts
            .into_iter()
            .map(|p| ints_of(p, "Concat"))
            .collect::<Result<_, _>>()?;
        let (data, shape) = host::concat(&parts, axis);
        return Ok(Value::Int { data, shape });
    }
    let parts: Vec<Float> = parts
        .into_iter()
        .map(Value::float)
        .collect::<Result<_, _>>()?;
    Ok(Value::Float(with_rank!(rank, D => {
        let tensors = parts.into_iter().map(lift_to::<D>).collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(tensors, axis)
    })))
}

fn expand(x: Value, out: &[usize]) -> Result<Value, EngineError> {
    match x {
        Value::Int { data, shape } => {
            let index = crate::engine::elementwise::broadcast_index(&shape, out);
            Ok(Value::Int {
                data: index.into_iter().map(|i| data[i]).collect(),
                shape: out.to_vec(),
            })
        }
        other => Ok(Value::Float(expand_to(other.float()?, out)?)),
    }
}

fn tile(x: Value, repeats: &[usize], cap: Cap) -> Result<Value, EngineError> {
    let dims = x.dims();
    if repeats.len() != dims.len() {
        return Err(EngineError::Invalid(format!(
            "Tile: {} repeats for rank {}",
            repeats.len(),
            dims.len()
        )));
    }
    let out: Vec<usize> = dims
        .iter()
        .zip(repeats)
        .map(|(d, r)| d.checked_mul(*r))
        .collect::<Option<_>>()
        .ok_or_else(|| EngineError::Limit("Tile: too large".into()))?;
    cap.check(&out, elem(&x))?;
    match x {
        Value::Int { data, shape } => {
            let picks: Vec<Vec<usize>> = out
                .iter()
                .zip(&shape)
                .map(|(o, d)| (0..*o).map(|i| i % d.max(&1)).collect())
                .collect();
            Ok(Value::Int {
                data: host::select_axes(&data, &shape, &picks),
                shape: out,
            })
        }
        other => {
            let f = other.float()?;
            Ok(Value::Float(each_rank!(f, t => t.repeat(repeats))))
        }
    }
}

fn split(
    x: Value,
    axis: usize,
    sizes: Option<&[i64]>,
    outputs: usize,
) -> Result<Vec<Value>, EngineError> {
    let dims = x.dims();
    if axis >= dims.len() {
        return Err(EngineError::Invalid(format!(
            "Split axis {axis} on shape {dims:?}"
        )));
    }
    let total = dims[axis];
    let sizes: Vec<usize> = match sizes {
        Some(s) => to_usize(s, "Split")?,
        None => {
            // Equal parts, the last smaller when the axis does not divide (opset 18).
            let part = total.div_ceil(outputs);
            (0..outputs)
                .map(|i| part.min(total.saturating_sub(i * part)))
                .collect()
        }
    };
    let sum = sizes.iter().try_fold(0usize, |a, s| a.checked_add(*s));
    if sizes.len() != outputs || sum != Some(total) {
        return Err(EngineError::Invalid(format!(
            "Split of {total} on axis {axis} into {sizes:?} for {outputs} outputs"
        )));
    }
    if let Value::Dense(d) = &x {
        // Host data: each part is `outer` contiguous runs of `size · inner` values.
        let outer: usize = dims[..axis].iter().product();
        let inner: usize = dims[axis + 1..].iter().product();
        let mut start = 0;
        let mut out = Vec::with_capacity(outputs);
        for size in sizes {
            let mut part = Vec::with_capacity(outer * size * inner);
            for o in 0..outer {
                part.extend_from_slice(&d.data[(o * total + start) * inner..][..size * inner]);
            }
            let mut shape = dims.clone();
            shape[axis] = size;
            out.push(Value::Dense(Dense::new(part, shape)?));
            start += size;
        }
        return Ok(out);
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(outputs);
    for size in sizes {
        let picks: Vec<usize> = (start..start + size).collect();
        start += size;
        out.push(match &x {
            Value::Int { data, shape } => {
                let mut all: Vec<Vec<usize>> = shape.iter().map(|d| (0..*d).collect()).collect();
                all[axis] = picks;
                let mut s = shape.clone();
                s[axis] = size;
                Value::Int {
                    data: host::select_axes(data, shape, &all),
                    shape: s,
                }
            }
            other => {
                let f = other.clone().float()?;
                if size == 0 {
                    let mut s = dims.clone();
                    s[axis] = 0;
                    Value::Float(Float::from_data(
                        TensorData::new(Vec::<f32>::new(), s),
                        &float_device(&f),
                    )?)
                } else {
                    Value::Float(take_positions(f, axis, &picks)?)
                }
            }
        });
    }
    Ok(out)
}
