//! Pad (constant, edge, reflect; negative amounts crop), on float tensors through their
//! device (index maps and concatenation) and on integer tensors on the host.

use burn::tensor::{Device, TensorData};

use super::shape::{concat, take_positions};
use super::{Bound, Ints, PadAmounts, PadMode, any_input, axis_of, host};
use crate::engine::EngineError;
use crate::engine::limits::{Cap, F32, I64, product};
use crate::engine::value::{Float, Value};

pub(super) fn run(
    pads: &PadAmounts,
    value: Bound,
    mode: PadMode,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Value, EngineError> {
    let rank = inputs
        .first()
        .and_then(Option::as_ref)
        .map_or(0, |v| v.dims().len());
    let amounts: Vec<(i64, i64)> = match pads {
        PadAmounts::Static(p) => p
            .iter()
            .map(|(b, e)| {
                (
                    i64::try_from(*b).unwrap_or(i64::MAX),
                    i64::try_from(*e).unwrap_or(i64::MAX),
                )
            })
            .collect(),
        PadAmounts::Input { pads, axes } => {
            let raw = Ints::Input(*pads).read(&inputs, "Pad pads")?;
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .read(&inputs, "Pad axes")?
                    .iter()
                    .map(|a| axis_of(*a, rank, "Pad"))
                    .collect::<Result<_, _>>()?,
                None => (0..rank).collect(),
            };
            if raw.len() != 2 * axes.len() {
                return Err(EngineError::Invalid(format!(
                    "Pad: {} pads for {} axes",
                    raw.len(),
                    axes.len()
                )));
            }
            let mut all = vec![(0, 0); rank];
            for (i, a) in axes.iter().enumerate() {
                all[*a] = (raw[i], raw[i + axes.len()]);
            }
            all
        }
    };
    let fill = match value {
        Bound::None => 0.0,
        Bound::Static(v) => v,
        Bound::Input(i) => match inputs.get(i).and_then(Option::as_ref) {
            None => 0.0,
            Some(Value::Int { data, .. }) =>
            {
                #[expect(clippy::cast_precision_loss, reason = "a pad value")]
                data.first().map_or(0.0, |v| *v as f32)
            }
            Some(other) => other
                .clone()
                .float()?
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?
                .first()
                .copied()
                .unwrap_or(0.0),
        },
    };
    let x = any_input(&mut inputs, 0)?;
    if let Value::Int { data, shape } = x {
        return pad_ints(&data, &shape, &amounts, mode, fill, cap);
    }
    let x = x.float()?;
    if amounts.len() != x.rank() {
        return Err(EngineError::Invalid(format!(
            "Pad: {} pad pairs for rank {}",
            amounts.len(),
            x.rank()
        )));
    }
    let mut y = x;
    for (axis, (begin, end)) in amounts.into_iter().enumerate() {
        y = pad_axis(y, axis, begin, end, mode, fill, device, cap)?;
    }
    Ok(Value::Float(y))
}

/// Pads (or, for negative amounts, crops) one axis.
#[expect(clippy::too_many_arguments, reason = "one axis of a Pad")]
fn pad_axis(
    x: Float,
    axis: usize,
    begin: i64,
    end: i64,
    mode: PadMode,
    fill: f32,
    device: &Device,
    cap: Cap,
) -> Result<Float, EngineError> {
    if begin == 0 && end == 0 {
        return Ok(x);
    }
    let size = x.dims()[axis];
    let crop = |v: i64| usize::try_from(v.min(0).unsigned_abs()).unwrap_or(usize::MAX);
    let (cb, ce) = (crop(begin), crop(end));
    if cb.saturating_add(ce) > size {
        return Err(EngineError::Invalid(format!(
            "Pad crops {cb} + {ce} of an axis of {size}"
        )));
    }
    let mut x = if cb + ce > 0 {
        take_positions(x, axis, &(cb..size - ce).collect::<Vec<_>>())?
    } else {
        x
    };
    let n = size - cb - ce;
    let grow = |v: i64| usize::try_from(v.max(0)).unwrap_or(usize::MAX);
    let (b, e) = (grow(begin), grow(end));
    if b == 0 && e == 0 {
        return Ok(x);
    }
    let mut out = x.dims();
    out[axis] = n
        .checked_add(b)
        .and_then(|v| v.checked_add(e))
        .ok_or_else(|| EngineError::Limit("Pad: too large".into()))?;
    cap.check(&out, F32)?;
    match mode {
        PadMode::Constant => {
            let block = |len: usize| -> Result<Float, EngineError> {
                let mut shape = out.clone();
                shape[axis] = len;
                let count = product(&shape).unwrap_or(0);
                Float::from_data(TensorData::new(vec![fill; count], shape), device)
            };
            let mut parts = Vec::with_capacity(3);
            if b > 0 {
                parts.push(Value::Float(block(b)?));
            }
            parts.push(Value::Float(x));
            if e > 0 {
                parts.push(Value::Float(block(e)?));
            }
            x = concat(parts, axis, cap)?.float()?;
            Ok(x)
        }
        PadMode::Edge | PadMode::Reflect => {
            if n == 0 || (mode == PadMode::Reflect && (n < 2 || b >= n || e >= n)) {
                return Err(EngineError::Invalid(format!(
                    "Pad {mode:?} of {b} and {e} on an axis of {n}"
                )));
            }
            let positions: Vec<usize> = (0..out[axis])
                .map(|i| {
                    let p = i64::try_from(i).unwrap_or(0) - i64::try_from(b).unwrap_or(0);
                    let last = i64::try_from(n - 1).unwrap_or(0);
                    let q = if mode == PadMode::Edge {
                        p.clamp(0, last)
                    } else if p < 0 {
                        -p
                    } else if p > last {
                        2 * last - p
                    } else {
                        p
                    };
                    usize::try_from(q).unwrap_or(0)
                })
                .collect();
            take_positions(x, axis, &positions)
        }
    }
}

/// Pad on an integer tensor: one index map per axis (`None` for the constant).
fn pad_ints(
    data: &[i64],
    shape: &[usize],
    amounts: &[(i64, i64)],
    mode: PadMode,
    fill: f32,
    cap: Cap,
) -> Result<Value, EngineError> {
    if amounts.len() != shape.len() {
        return Err(EngineError::Invalid(format!(
            "Pad: {} pad pairs for rank {}",
            amounts.len(),
            shape.len()
        )));
    }
    // Every length is checked, and the output against the cap, before any map is built:
    // the amounts can come from a run's inputs, so any i64 (i64::MIN and MAX included).
    let mut out = Vec::with_capacity(shape.len());
    for (&n, &(begin, end)) in shape.iter().zip(amounts) {
        let size = i64::try_from(n).unwrap_or(i64::MAX);
        let len = size
            .checked_add(begin)
            .and_then(|v| v.checked_add(end))
            .ok_or_else(|| EngineError::Limit(format!("Pad of {begin} and {end} on {n}")))?;
        if begin < -size || end < -size || len < 0 {
            return Err(EngineError::Invalid(format!(
                "Pad of {begin} and {end} crops more than an axis of {n}"
            )));
        }
        out.push(usize::try_from(len).unwrap_or(usize::MAX));
    }
    let count = cap.check(&out, I64)?;
    // Now -n ≤ begin ≤ len: no position below overflows.
    let mut maps: Vec<Vec<Option<usize>>> = Vec::with_capacity(shape.len());
    for ((&n, &(begin, _)), &len) in shape.iter().zip(amounts).zip(&out) {
        let last = i64::try_from(n).unwrap_or(0) - 1;
        let map = (0..i64::try_from(len).unwrap_or(0))
            .map(|i| {
                let p = i - begin;
                let q = match mode {
                    _ if (0..=last).contains(&p) => Some(p),
                    PadMode::Constant => None,
                    _ if last < 0 => None,
                    PadMode::Edge => Some(p.clamp(0, last)),
                    PadMode::Reflect if p < 0 => Some((-p).min(last)),
                    PadMode::Reflect => Some((2 * last - p).max(0)),
                };
                q.and_then(|q| usize::try_from(q).ok())
            })
            .collect();
        maps.push(map);
    }
    let st = host::strides(shape);
    let ost = host::strides(&out);
    #[expect(clippy::cast_possible_truncation, reason = "an integer pad value")]
    let fill = fill as i64;
    let values = (0..count)
        .map(|flat| {
            let mut at = 0;
            for d in 0..out.len() {
                match maps[d][(flat / ost[d]) % out[d]] {
                    Some(p) => at += p * st[d],
                    None => return fill,
                }
            }
            data[at]
        })
        .collect();
    Ok(Value::Int {
        data: values,
        shape: out,
    })
}
