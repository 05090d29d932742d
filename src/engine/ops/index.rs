//! Indexing: Gather, GatherElements and Slice, on float tensors (burn's select, gather and
//! narrow, on the tensor's device) and integer tensors (host index maps).

use burn::tensor::{Int, Tensor, TensorData};

use super::shape::{elem, float_device, int_index_tensor, take_positions};
use super::{axis_of, host, lift_to};
use crate::engine::EngineError;
use crate::engine::kernels::Dense;
use crate::engine::limits::Cap;
use crate::engine::value::{Float, Value, each_rank, with_rank};

pub(super) fn gather(
    x: Value,
    axis: usize,
    indices: &[i64],
    index_shape: Vec<usize>,
    cap: Cap,
) -> Result<Value, EngineError> {
    let dims = x.dims();
    if axis >= dims.len() {
        return Err(EngineError::Invalid(format!(
            "Gather axis {axis} on shape {dims:?}"
        )));
    }
    let picks: Vec<usize> = indices
        .iter()
        .map(|i| host::index_of(*i, dims[axis], "Gather"))
        .collect::<Result<_, _>>()?;
    let mut out_shape = dims[..axis].to_vec();
    out_shape.extend_from_slice(&index_shape);
    out_shape.extend_from_slice(&dims[axis + 1..]);
    cap.check(&out_shape, elem(&x))?;
    match x {
        Value::Int { data, shape } => {
            let (data, shape) = host::gather(&data, &shape, axis, &picks, &index_shape);
            Ok(Value::Int { data, shape })
        }
        Value::Dense(d) => {
            let (data, _) = host::gather(&d.data, &d.shape, axis, &picks, &index_shape);
            let shape = if out_shape.is_empty() {
                vec![1]
            } else {
                out_shape
            };
            Ok(Value::Dense(Dense::new(data, shape)?))
        }
        other => {
            let f = other.float()?;
            let index = int_index_tensor(&picks, &float_device(&f));
            let picked = each_rank!(f, t => t.select(axis, index.clone()));
            let shape = if out_shape.is_empty() {
                vec![1]
            } else {
                out_shape
            };
            Ok(Value::Float(picked.reshape(&shape)?))
        }
    }
}

pub(super) fn gather_elements(
    x: Value,
    axis: usize,
    indices: &[i64],
    index_shape: &[usize],
    cap: Cap,
) -> Result<Value, EngineError> {
    let dims = x.dims();
    if axis >= dims.len() || index_shape.len() != dims.len() {
        return Err(EngineError::Invalid(format!(
            "GatherElements of {dims:?} by indices {index_shape:?} on axis {axis}"
        )));
    }
    if let Some(d) = (0..dims.len()).find(|d| *d != axis && index_shape[*d] > dims[*d]) {
        return Err(EngineError::Invalid(format!(
            "GatherElements: indices {index_shape:?} exceed data {dims:?} on axis {d}"
        )));
    }
    let picks: Vec<usize> = indices
        .iter()
        .map(|i| host::index_of(*i, dims[axis], "GatherElements"))
        .collect::<Result<_, _>>()?;
    cap.check(index_shape, elem(&x))?;
    match x {
        Value::Int { data, shape } => Ok(Value::Int {
            data: host::gather_elements(&data, &shape, axis, &picks, index_shape),
            shape: index_shape.to_vec(),
        }),
        other => {
            let f = other.float()?;
            let device = float_device(&f);
            let rank = dims.len();
            let data: Vec<i64> = picks
                .iter()
                .map(|p| i64::try_from(*p).unwrap_or(i64::MAX))
                .collect();
            // burn's gather wants index and data shapes equal off the axis: narrow first.
            let mut f = f;
            for (d, size) in index_shape.iter().enumerate() {
                if d != axis && *size != dims[d] {
                    f = each_rank!(f, t => t.narrow(d, 0, *size));
                }
            }
            Ok(Value::Float(with_rank!(rank, D => {
                let index: Tensor<D, Int> = Tensor::from_data(
                    TensorData::new(data.clone(), index_shape.to_vec()),
                    &device,
                );
                lift_to::<D>(f.clone())?.gather(axis, index)
            })))
        }
    }
}

/// The positions ONNX Slice takes along one axis of `size`.
fn slice_positions(
    size: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Vec<usize>, EngineError> {
    if step == 0 {
        return Err(EngineError::Invalid("Slice step 0".into()));
    }
    let s = i64::try_from(size).unwrap_or(i64::MAX);
    let norm = |v: i64| if v < 0 { v.saturating_add(s) } else { v };
    let (start, end) = (norm(start), norm(end));
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, end) = (start.clamp(0, s), end.clamp(0, s));
        while i < end {
            out.push(usize::try_from(i).unwrap_or(0));
            i = i.saturating_add(step);
        }
    } else {
        let (mut i, end) = (start.clamp(-1, s - 1), end.clamp(-1, s - 1));
        while i > end {
            out.push(usize::try_from(i).unwrap_or(0));
            i = i.saturating_add(step);
        }
    }
    Ok(out)
}

pub(super) fn slice(
    x: Value,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Value, EngineError> {
    let dims = x.dims();
    let rank = dims.len();
    if starts.len() != ends.len()
        || axes.is_some_and(|a| a.len() != starts.len())
        || steps.is_some_and(|s| s.len() != starts.len())
    {
        return Err(EngineError::Invalid(format!(
            "Slice: starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ \
             in length"
        )));
    }
    let mut picks: Vec<Vec<usize>> = dims.iter().map(|d| (0..*d).collect()).collect();
    let mut touched = vec![false; rank];
    for i in 0..starts.len() {
        let axis = match axes {
            Some(a) => axis_of(a[i], rank, "Slice")?,
            None => i,
        };
        if axis >= rank || touched[axis] {
            return Err(EngineError::Invalid(format!(
                "Slice: axis {axis} repeated or out of range for rank {rank}"
            )));
        }
        touched[axis] = true;
        let step = steps.map_or(1, |s| s[i]);
        picks[axis] = slice_positions(dims[axis], starts[i], ends[i], step)?;
    }
    match x {
        Value::Int { data, shape } => Ok(Value::Int {
            data: host::select_axes(&data, &shape, &picks),
            shape: picks.iter().map(Vec::len).collect(),
        }),
        Value::Dense(d) => Ok(Value::Dense(Dense::new(
            host::select_axes(&d.data, &d.shape, &picks),
            picks.iter().map(Vec::len).collect(),
        )?)),
        other => {
            let mut f = other.float()?;
            if picks.iter().any(Vec::is_empty) {
                let shape: Vec<usize> = picks.iter().map(Vec::len).collect();
                let device = float_device(&f);
                return Ok(Value::Float(Float::from_data(
                    TensorData::new(Vec::<f32>::new(), shape),
                    &device,
                )?));
            }
            for (axis, p) in picks.iter().enumerate() {
                f = take_positions(f, axis, p)?;
            }
            Ok(Value::Float(f))
        }
    }
}
