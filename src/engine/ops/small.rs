//! Operators computed on the host whatever the device (their tensors are small, or they
//! sit at a model's edges: masks, selections, one-hot encodings): Trilu, Hardmax, TopK,
//! OneHot, EyeLike, CumSum, ScatterElements, ScatterND, BitShift. Float inputs are read
//! back and the result uploaded again.

use burn::tensor::{Device, TensorData};

use super::host::{index_of, strides};
use super::{Op, any_input};
use crate::engine::EngineError;
use crate::engine::elementwise::{Host as Buf, host as to_host};
use crate::engine::limits::{Cap, F32, I64};
use crate::engine::value::{Float, Value};

pub(crate) fn from_host(
    buf: Buf,
    shape: Vec<usize>,
    device: &Device,
) -> Result<Value, EngineError> {
    Ok(match buf {
        Buf::I(data) => Value::Int { data, shape },
        Buf::F(data) => {
            let shape = if shape.is_empty() { vec![1] } else { shape };
            Value::Float(Float::from_data(TensorData::new(data, shape), device)?)
        }
    })
}

/// Addition and multiplication that wrap on integers, as the engine's other integer
/// arithmetic does (a CumSum or Scatter-add of large values cannot panic).
trait Arith: Copy + Default + PartialOrd {
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
}

impl Arith for f32 {
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn mul(self, other: Self) -> Self {
        self * other
    }
}

impl Arith for i64 {
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn mul(self, other: Self) -> Self {
        self.wrapping_mul(other)
    }
}

/// Applies `f` to the elements whatever their kind.
macro_rules! each_buf {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            Buf::F($v) => Buf::F($body),
            Buf::I($v) => Buf::I($body),
        }
    };
}

/// `(outer, size, inner)` around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn scalar_int(inputs: &[Option<Value>], i: usize, what: &str) -> Result<i64, EngineError> {
    match inputs.get(i).and_then(Option::as_ref) {
        Some(Value::Int { data, .. }) if data.len() == 1 => Ok(data[0]),
        _ => Err(EngineError::Invalid(format!("{what} must be one integer"))),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per operator reads best as one match"
)]
pub(super) fn run(
    op: &Op,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    match op {
        Op::Trilu { upper, k } => {
            let k = match k {
                Some(k) => *k,
                None => inputs
                    .get(1)
                    .and_then(Option::as_ref)
                    .map_or(Ok(0), |_| scalar_int(&inputs, 1, "Trilu's k"))?,
            };
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            let rank = shape.len();
            if rank < 2 {
                return Err(EngineError::Invalid(format!("Trilu of shape {shape:?}")));
            }
            let (rows, cols) = (shape[rank - 2], shape[rank - 1]);
            let keep = |i: usize| {
                let (r, c) = (
                    i64::try_from((i / cols.max(1)) % rows.max(1)).unwrap_or(0),
                    i64::try_from(i % cols.max(1)).unwrap_or(0),
                );
                if *upper { c - r >= k } else { c - r <= k }
            };
            let out = each_buf!(buf, v => v.into_iter().enumerate()
                .map(|(i, x)| if keep(i) { x } else { Default::default() }).collect());
            Ok(vec![from_host(out, shape, device)?])
        }
        Op::Hardmax { axis } => {
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            let Buf::F(v) = buf else {
                return Err(EngineError::Invalid("Hardmax of an integer tensor".into()));
            };
            let (outer, size, inner) = around(&shape, (*axis).min(shape.len().saturating_sub(1)));
            let mut out = vec![0f32; v.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |j: usize| (o * size + j) * inner + i;
                    // The first of equal maxima, as ONNX asks.
                    if let Some(best) =
                        (0..size).reduce(|b, j| if v[at(j)] > v[at(b)] { j } else { b })
                    {
                        out[at(best)] = 1.0;
                    }
                }
            }
            Ok(vec![from_host(Buf::F(out), shape, device)?])
        }
        Op::TopK {
            axis,
            k,
            largest,
            sorted: _,
        } => {
            let k = match k {
                Some(k) => *k,
                None => usize::try_from(scalar_int(&inputs, 1, "TopK's k")?)
                    .map_err(|_| EngineError::Invalid("TopK's k is negative".into()))?,
            };
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            let axis = *axis;
            if axis >= shape.len() || k > shape[axis] {
                return Err(EngineError::Invalid(format!(
                    "TopK of {k} on axis {axis} of {shape:?}"
                )));
            }
            let (outer, size, inner) = around(&shape, axis);
            let mut out_shape = shape.clone();
            out_shape[axis] = k;
            cap.check(&out_shape, I64)?;
            let keys: Vec<f64> = match &buf {
                Buf::F(v) => v.iter().map(|x| f64::from(*x)).collect(),
                #[expect(clippy::cast_precision_loss, reason = "an ordering key")]
                Buf::I(v) => v.iter().map(|x| *x as f64).collect(),
            };
            let mut picks = Vec::with_capacity(outer * k * inner);
            let mut order: Vec<usize> = Vec::with_capacity(size);
            let mut chosen = vec![0usize; outer * k * inner];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |j: usize| (o * size + j) * inner + i;
                    order.clear();
                    order.extend(0..size);
                    // Ties keep the lower index first (a stable sort).
                    order.sort_by(|a, b| {
                        let (x, y) = (keys[at(*a)], keys[at(*b)]);
                        let ord = x.total_cmp(&y);
                        if *largest { ord.reverse() } else { ord }
                    });
                    for (rank, j) in order.iter().take(k).enumerate() {
                        chosen[(o * k + rank) * inner + i] = *j;
                    }
                }
            }
            for (slot, j) in chosen.iter().enumerate() {
                let (o, i) = (slot / (k * inner), slot % inner);
                picks.push((o * size + j) * inner + i);
            }
            let values = each_buf!(buf, v => picks.iter().map(|p| v[*p]).collect());
            let indices = chosen
                .iter()
                .map(|j| i64::try_from(*j).unwrap_or(i64::MAX))
                .collect();
            Ok(vec![
                from_host(values, out_shape.clone(), device)?,
                Value::Int {
                    data: indices,
                    shape: out_shape,
                },
            ])
        }
        Op::OneHot {
            depth,
            values,
            axis,
        } => {
            let depth =
                match depth {
                    Some(d) => *d,
                    None => {
                        let (b, _) =
                            to_host(inputs.get(1).and_then(Option::clone).ok_or_else(|| {
                                EngineError::Invalid("OneHot without depth".into())
                            })?)?;
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "a depth"
                        )]
                        match b {
                            Buf::I(v) => v.first().copied().unwrap_or(0).max(0) as usize,
                            Buf::F(v) => v.first().copied().unwrap_or(0.0).max(0.0) as usize,
                        }
                    }
                };
            let [off, on] = match values {
                Some(v) => *v,
                None => {
                    let (b, _) =
                        to_host(inputs.get(2).and_then(Option::clone).ok_or_else(|| {
                            EngineError::Invalid("OneHot without values".into())
                        })?)?;
                    #[expect(clippy::cast_precision_loss, reason = "on/off values")]
                    let v: Vec<f32> = match b {
                        Buf::F(v) => v,
                        Buf::I(v) => v.into_iter().map(|x| x as f32).collect(),
                    };
                    [
                        v.first().copied().unwrap_or(0.0),
                        v.get(1).copied().unwrap_or(1.0),
                    ]
                }
            };
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            #[expect(clippy::cast_possible_truncation, reason = "indices")]
            let idx: Vec<i64> = match buf {
                Buf::I(v) => v,
                Buf::F(v) => v.into_iter().map(|x| x as i64).collect(),
            };
            let rank = shape.len() + 1;
            let axis = super::axis_of(*axis, rank, "OneHot")?;
            let mut out_shape = shape.clone();
            out_shape.insert(axis, depth);
            let n = cap.check(&out_shape, F32)?;
            let (outer, _, inner) = around(&out_shape, axis);
            let mut out = vec![off; n];
            let d = i64::try_from(depth).unwrap_or(i64::MAX);
            for o in 0..outer {
                for i in 0..inner {
                    let mut v = idx[o * inner + i];
                    if v < 0 {
                        v += d;
                    }
                    if (0..d).contains(&v) {
                        out[(o * depth + usize::try_from(v).unwrap_or(0)) * inner + i] = on;
                    }
                }
            }
            Ok(vec![from_host(Buf::F(out), out_shape, device)?])
        }
        Op::EyeLike { k, dtype } => {
            let x = any_input(&mut inputs, 0)?;
            let shape = x.dims();
            let [rows, cols] = <[usize; 2]>::try_from(shape.as_slice())
                .map_err(|_| EngineError::Invalid(format!("EyeLike of shape {shape:?}")))?;
            cap.check(&shape, I64)?;
            let on = |i: usize| {
                let (r, c) = (
                    i64::try_from(i / cols.max(1)).unwrap_or(0),
                    i64::try_from(i % cols.max(1)).unwrap_or(0),
                );
                c - r == *k
            };
            let float = match dtype {
                Some(d) => d.is_float(),
                None => !matches!(x, Value::Int { .. }),
            };
            let buf = if float {
                Buf::F(
                    (0..rows * cols)
                        .map(|i| if on(i) { 1.0 } else { 0.0 })
                        .collect(),
                )
            } else {
                Buf::I((0..rows * cols).map(|i| i64::from(on(i))).collect())
            };
            Ok(vec![from_host(buf, shape, device)?])
        }
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => {
            let axis = match axis {
                Some(a) => *a,
                None => {
                    let rank = inputs
                        .first()
                        .and_then(Option::as_ref)
                        .map_or(0, |v| v.dims().len());
                    super::axis_of(scalar_int(&inputs, 1, "CumSum's axis")?, rank, "CumSum")?
                }
            };
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            if axis >= shape.len() {
                return Err(EngineError::Invalid(format!(
                    "CumSum axis {axis} of {shape:?}"
                )));
            }
            let (outer, size, inner) = around(&shape, axis);
            fn scan<T: Arith>(
                v: &[T],
                (outer, size, inner): (usize, usize, usize),
                exclusive: bool,
                reverse: bool,
            ) -> Vec<T> {
                let mut out = vec![T::default(); v.len()];
                for o in 0..outer {
                    for i in 0..inner {
                        let mut total = T::default();
                        for step in 0..size {
                            let j = if reverse { size - 1 - step } else { step };
                            let at = (o * size + j) * inner + i;
                            if exclusive {
                                out[at] = total;
                                total = total.add(v[at]);
                            } else {
                                total = total.add(v[at]);
                                out[at] = total;
                            }
                        }
                    }
                }
                out
            }
            let dims = (outer, size, inner);
            let out = each_buf!(buf, v => scan(&v, dims, *exclusive, *reverse));
            Ok(vec![from_host(out, shape, device)?])
        }
        Op::Scatter {
            nd,
            axis,
            reduction,
        } => {
            let (data, shape) = to_host(any_input(&mut inputs, 0)?)?;
            let (indices, index_shape) = match any_input(&mut inputs, 1)? {
                Value::Int { data, shape } => (data, shape),
                _ => {
                    return Err(EngineError::Invalid(
                        "Scatter indices must be integers".into(),
                    ));
                }
            };
            let (updates, _) = to_host(any_input(&mut inputs, 2)?)?;
            let count = match &updates {
                Buf::F(u) => u.len(),
                Buf::I(u) => u.len(),
            };
            let targets = if *nd {
                nd_targets(&shape, &indices, &index_shape, count)?
            } else {
                element_targets(&shape, *axis, &indices, &index_shape)?
            };
            let out = match (data, updates) {
                (Buf::F(mut d), Buf::F(u)) => {
                    apply(&mut d, &targets, &u, *reduction)?;
                    Buf::F(d)
                }
                (Buf::I(mut d), Buf::I(u)) => {
                    apply(&mut d, &targets, &u, *reduction)?;
                    Buf::I(d)
                }
                _ => {
                    return Err(EngineError::Invalid(
                        "Scatter: data and updates differ in type".into(),
                    ));
                }
            };
            Ok(vec![from_host(out, shape, device)?])
        }
        Op::BitShift { left } => {
            let (a, sa) = match any_input(&mut inputs, 0)? {
                Value::Int { data, shape } => (data, shape),
                _ => return Err(EngineError::Invalid("BitShift takes integers".into())),
            };
            let (b, sb) = match any_input(&mut inputs, 1)? {
                Value::Int { data, shape } => (data, shape),
                _ => return Err(EngineError::Invalid("BitShift takes integers".into())),
            };
            let out = crate::engine::elementwise::broadcast_shape(&[&sa, &sb])?;
            cap.check(&out, I64)?;
            let (ia, ib) = (
                crate::engine::elementwise::broadcast_index(&sa, &out),
                crate::engine::elementwise::broadcast_index(&sb, &out),
            );
            let left = *left;
            let data = ia
                .iter()
                .zip(&ib)
                .map(|(i, j)| {
                    let (x, s) = (a[*i], u32::try_from(b[*j]).unwrap_or(64));
                    if s >= 64 {
                        0
                    } else if left {
                        x.wrapping_shl(s)
                    } else {
                        // Unsigned semantics: BitShift is defined on unsigned types.
                        i64::from_ne_bytes((u64::from_ne_bytes(x.to_ne_bytes()) >> s).to_ne_bytes())
                    }
                })
                .collect();
            Ok(vec![Value::Int { data, shape: out }])
        }
        Op::NonZero => {
            let (buf, shape) = to_host(any_input(&mut inputs, 0)?)?;
            let nonzero: Vec<usize> = match &buf {
                Buf::F(v) => (0..v.len()).filter(|i| v[*i] != 0.0).collect(),
                Buf::I(v) => (0..v.len()).filter(|i| v[*i] != 0).collect(),
            };
            let st = strides(&shape);
            let rank = shape.len().max(1);
            let mut data = vec![0i64; rank * nonzero.len()];
            for (j, flat) in nonzero.iter().enumerate() {
                for d in 0..shape.len() {
                    data[d * nonzero.len() + j] =
                        i64::try_from((flat / st[d]) % shape[d]).unwrap_or(i64::MAX);
                }
            }
            Ok(vec![Value::Int {
                data,
                shape: vec![rank, nonzero.len()],
            }])
        }
        other => Err(EngineError::Internal(format!(
            "{other:?} is not a host operator"
        ))),
    }
}

/// Flat positions ScatterElements writes: `indices` replace the coordinate on `axis`.
fn element_targets(
    shape: &[usize],
    axis: usize,
    indices: &[i64],
    index_shape: &[usize],
) -> Result<Vec<usize>, EngineError> {
    if axis >= shape.len() || index_shape.len() != shape.len() {
        return Err(EngineError::Invalid(format!(
            "ScatterElements of indices {index_shape:?} into {shape:?} on axis {axis}"
        )));
    }
    let (st, ist) = (strides(shape), strides(index_shape));
    indices
        .iter()
        .enumerate()
        .map(|(flat, i)| {
            let mut at = 0;
            for d in 0..shape.len() {
                let c = (flat / ist[d]) % index_shape[d];
                let c = if d == axis {
                    index_of(*i, shape[d], "ScatterElements")?
                } else {
                    c
                };
                if c >= shape[d] {
                    return Err(EngineError::Invalid(
                        "ScatterElements index out of range".into(),
                    ));
                }
                at += c * st[d];
            }
            Ok(at)
        })
        .collect()
}

/// Flat positions (of slices of `slice` elements) ScatterND writes, one per index tuple.
fn nd_targets(
    shape: &[usize],
    indices: &[i64],
    index_shape: &[usize],
    updates: usize,
) -> Result<Vec<usize>, EngineError> {
    let depth = *index_shape.last().unwrap_or(&0);
    if depth == 0 || depth > shape.len() {
        return Err(EngineError::Invalid(format!(
            "ScatterND indices {index_shape:?} into {shape:?}"
        )));
    }
    let st = strides(shape);
    let slice: usize = shape[depth..].iter().product();
    // One slice per index tuple: as many positions as updates, counted before any is
    // listed (a few small indices can name a huge number of positions).
    let count = (indices.len() / depth).checked_mul(slice);
    if count != Some(updates) {
        return Err(EngineError::Invalid(format!(
            "ScatterND: indices {index_shape:?} into {shape:?} name {} positions for {updates} \
             updates",
            count.map_or_else(|| "too many".to_owned(), |c| c.to_string())
        )));
    }
    let mut out = Vec::with_capacity(updates);
    for tuple in indices.chunks(depth) {
        let mut at = 0;
        for (d, i) in tuple.iter().enumerate() {
            at += index_of(*i, shape[d], "ScatterND")? * st[d];
        }
        out.extend(at..at + slice);
    }
    Ok(out)
}

fn apply<T: Arith>(
    data: &mut [T],
    targets: &[usize],
    updates: &[T],
    reduction: u8,
) -> Result<(), EngineError> {
    if targets.len() != updates.len() {
        return Err(EngineError::Invalid(format!(
            "Scatter: {} positions for {} updates",
            targets.len(),
            updates.len()
        )));
    }
    for (at, u) in targets.iter().zip(updates) {
        let d = &mut data[*at];
        *d = match reduction {
            1 => d.add(*u),
            2 => d.mul(*u),
            3 => {
                if *u > *d {
                    *u
                } else {
                    *d
                }
            }
            4 => {
                if *u < *d {
                    *u
                } else {
                    *d
                }
            }
            _ => *u,
        };
    }
    Ok(())
}
