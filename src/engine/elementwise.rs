//! Element types beyond f32: integer and boolean tensors, casts, comparisons, logic and
//! `Where`, computed on the host with NumPy broadcasting.
//!
//! Representation (an invariant the whole engine keeps): every integer type and BOOL
//! is held as i64 on the host ([`Value::Int`]; BOOL as 0/1), every float type as f32
//! (FLOAT16 values rounded through f16 where a cast asks for it). A value takes its
//! declared type again when it leaves the model ([`to_declared`]), or at a `Cast`.

use burn::tensor::{DType, Device, TensorData, f16};

use super::EngineError;
use super::value::{Float, Value};

/// Host elements of a value.
pub(crate) enum Host {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// A value's elements read to the host, by kind (a device read-back for GPU floats).
pub(crate) fn host(value: Value) -> Result<(Host, Vec<usize>), EngineError> {
    let read = |data: TensorData| -> Result<Vec<f32>, EngineError> {
        data.try_to_vec::<f32>()
            .map_err(|e| EngineError::Internal(format!("{e:?}")))
    };
    Ok(match value {
        Value::Int { data, shape } => (Host::I(data), shape),
        Value::Dense(d) => {
            let shape = d.shape.clone();
            (Host::F(d.into_values()), shape)
        }
        Value::Float(f) => {
            let shape = f.dims();
            (Host::F(read(f.into_data())?), shape)
        }
    })
}

/// The NumPy broadcast of `shapes`.
///
/// # Errors
/// The shapes do not broadcast.
pub fn broadcast_shape(shapes: &[&[usize]]) -> Result<Vec<usize>, EngineError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for shape in shapes {
        for (i, d) in shape.iter().enumerate() {
            let o = &mut out[rank - shape.len() + i];
            if *o == 1 {
                *o = *d;
            } else if *d != 1 && *d != *o {
                return Err(EngineError::Invalid(format!(
                    "shapes {shapes:?} do not broadcast"
                )));
            }
        }
    }
    Ok(out)
}

/// For each element of `out`, the index of the element of `shape` it reads.
pub(crate) fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    if shape == out {
        return (0..total).collect();
    }
    let lead = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        strides[lead + i] = if shape[i] == 1 { 0 } else { stride };
        stride *= shape[i];
    }
    let mut index = Vec::with_capacity(total);
    let mut counter = vec![0; out.len()];
    let mut at = 0usize;
    for _ in 0..total {
        index.push(at);
        for d in (0..out.len()).rev() {
            counter[d] += 1;
            at += strides[d];
            if counter[d] < out[d] {
                break;
            }
            at -= strides[d] * counter[d];
            counter[d] = 0;
        }
    }
    index
}

fn zip<A: Copy, B: Copy, R>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    f: impl Fn(A, B) -> R,
) -> Result<(Vec<R>, Vec<usize>), EngineError> {
    let out = broadcast_shape(&[a_shape, b_shape])?;
    let (ia, ib) = (
        broadcast_index(a_shape, &out),
        broadcast_index(b_shape, &out),
    );
    Ok((
        ia.iter().zip(&ib).map(|(i, j)| f(a[*i], b[*j])).collect(),
        out,
    ))
}

fn float_value(data: Vec<f32>, shape: Vec<usize>, device: &Device) -> Result<Value, EngineError> {
    let shape = if shape.is_empty() { vec![1] } else { shape };
    Ok(Value::Float(Float::from_data(
        TensorData::new(data, shape),
        device,
    )?))
}

fn floats(host: Host) -> Vec<f32> {
    match host {
        Host::F(v) => v,
        #[expect(clippy::cast_precision_loss, reason = "as NumPy converts")]
        Host::I(v) => v.into_iter().map(|x| x as f32).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// A comparison → BOOL (0/1).
///
/// # Errors
/// Shapes that do not broadcast.
pub fn compare(a: Value, b: Value, op: Compare) -> Result<Value, EngineError> {
    let ((a, sa), (b, sb)) = (host(a)?, host(b)?);
    fn test<T: PartialOrd>(op: Compare) -> impl Fn(T, T) -> i64 {
        move |x, y| {
            i64::from(match op {
                Compare::Equal => x == y,
                Compare::Greater => x > y,
                Compare::GreaterOrEqual => x >= y,
                Compare::Less => x < y,
                Compare::LessOrEqual => x <= y,
            })
        }
    }
    let (data, shape) = match (a, b) {
        (Host::I(a), Host::I(b)) => zip(&a, &sa, &b, &sb, test::<i64>(op))?,
        (a, b) => zip(&floats(a), &sa, &floats(b), &sb, test::<f32>(op))?,
    };
    Ok(Value::Int { data, shape })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    And,
    Or,
    Xor,
}

fn ints(value: Value, op: &str) -> Result<(Vec<i64>, Vec<usize>), EngineError> {
    match value {
        Value::Int { data, shape } => Ok((data, shape)),
        other => Err(EngineError::Invalid(format!(
            "{op} takes integer or boolean tensors, got a float tensor of shape {:?}",
            other.dims()
        ))),
    }
}

/// A logical operator on BOOL tensors.
///
/// # Errors
/// Float operands or shapes that do not broadcast.
pub fn logic(a: Value, b: Value, op: Logic) -> Result<Value, EngineError> {
    let ((a, sa), (b, sb)) = (
        ints(a, "a logical operator")?,
        ints(b, "a logical operator")?,
    );
    let (data, shape) = zip(&a, &sa, &b, &sb, |x, y| {
        let (x, y) = (x != 0, y != 0);
        i64::from(match op {
            Logic::And => x && y,
            Logic::Or => x || y,
            Logic::Xor => x != y,
        })
    })?;
    Ok(Value::Int { data, shape })
}

/// Logical negation of a BOOL tensor.
///
/// # Errors
/// A float operand.
pub fn not(a: Value) -> Result<Value, EngineError> {
    let (data, shape) = ints(a, "Not")?;
    Ok(Value::Int {
        data: data.into_iter().map(|v| i64::from(v == 0)).collect(),
        shape,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    Add,
    Sub,
    Mul,
    Div,
}

/// Integer arithmetic (wrapping, division truncating toward zero, as C and ONNX Runtime
/// do).
///
/// # Errors
/// Division by zero, or shapes that do not broadcast.
pub fn int_arithmetic(a: Value, b: Value, op: Arithmetic) -> Result<Value, EngineError> {
    let ((a, sa), (b, sb)) = (
        ints(a, "integer arithmetic")?,
        ints(b, "integer arithmetic")?,
    );
    if matches!(op, Arithmetic::Div) && b.contains(&0) {
        return Err(EngineError::Invalid("integer division by zero".into()));
    }
    let (data, shape) = zip(&a, &sa, &b, &sb, |x: i64, y: i64| match op {
        Arithmetic::Add => x.wrapping_add(y),
        Arithmetic::Sub => x.wrapping_sub(y),
        Arithmetic::Mul => x.wrapping_mul(y),
        Arithmetic::Div => x.wrapping_div(y),
    })?;
    Ok(Value::Int { data, shape })
}

/// `Where(cond, a, b)`: elements of `a` where `cond` holds, else of `b`.
///
/// # Errors
/// A float condition, mixed float and integer branches, or shapes that do not broadcast.
pub fn select(cond: Value, a: Value, b: Value, device: &Device) -> Result<Value, EngineError> {
    let (cond, sc) = ints(cond, "Where's condition")?;
    let ((a, sa), (b, sb)) = (host(a)?, host(b)?);
    let out = broadcast_shape(&[&sc, &sa, &sb])?;
    let (ic, ia, ib) = (
        broadcast_index(&sc, &out),
        broadcast_index(&sa, &out),
        broadcast_index(&sb, &out),
    );
    let pick = |i: usize| cond[ic[i]] != 0;
    match (a, b) {
        (Host::I(a), Host::I(b)) => Ok(Value::Int {
            data: (0..ic.len())
                .map(|i| if pick(i) { a[ia[i]] } else { b[ib[i]] })
                .collect(),
            shape: out,
        }),
        (Host::F(a), Host::F(b)) => float_value(
            (0..ic.len())
                .map(|i| if pick(i) { a[ia[i]] } else { b[ib[i]] })
                .collect(),
            out,
            device,
        ),
        _ => Err(EngineError::Invalid(
            "Where: the branches have different element types".into(),
        )),
    }
}

/// Wraps an i64 into the range of the integer type `to`, as a C cast does.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "wrapping is the cast's meaning"
)]
fn wrap(v: i64, to: DType) -> i64 {
    match to {
        DType::I32 => i64::from(v as i32),
        DType::I16 => i64::from(v as i16),
        DType::I8 => i64::from(v as i8),
        DType::U32 => i64::from(v as u32),
        DType::U16 => i64::from(v as u16),
        DType::U8 => i64::from(v as u8),
        DType::Bool(_) => i64::from(v != 0),
        _ => v,
    }
}

/// Whether the engine holds this element type (see the module invariant).
#[must_use]
pub fn is_supported(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32
            | DType::F16
            | DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
            | DType::U32
            | DType::U16
            | DType::U8
            | DType::Bool(_)
    )
}

/// ONNX `Cast` to `to`.
///
/// # Errors
/// A target type the engine does not hold.
pub fn cast(value: Value, to: DType, device: &Device) -> Result<Value, EngineError> {
    if !is_supported(to) {
        return Err(EngineError::Unsupported(format!("Cast to {to:?}")));
    }
    let (data, shape) = host(value)?;
    match to {
        DType::F32 => float_value(floats(data), shape, device),
        DType::F16 => float_value(
            floats(data)
                .into_iter()
                .map(|v| f16::from_f32(v).to_f32())
                .collect(),
            shape,
            device,
        ),
        _ => {
            let ints: Vec<i64> = match data {
                Host::I(v) => v.into_iter().map(|x| wrap(x, to)).collect(),
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "float to integer truncates toward zero"
                )]
                Host::F(v) => v
                    .into_iter()
                    .map(|x| {
                        if matches!(to, DType::Bool(_)) {
                            i64::from(x != 0.0)
                        } else {
                            wrap(x as i64, to)
                        }
                    })
                    .collect(),
            };
            Ok(Value::Int { data: ints, shape })
        }
    }
}

/// Host data as the model declares an output: `dtype` is the ONNX element type.
///
/// # Errors
/// Data that cannot be read back.
pub fn to_declared(data: TensorData, dtype: DType) -> Result<TensorData, EngineError> {
    if data.dtype() == dtype {
        return Ok(data);
    }
    let shape = data.shape().to_vec();
    let bad = |e| EngineError::Internal(format!("{e:?}"));
    Ok(match dtype {
        DType::F32 => data.convert::<f32>(),
        DType::F16 => data.convert::<f16>(),
        DType::Bool(_) => {
            let values: Vec<f32> = data.convert::<f32>().try_to_vec().map_err(bad)?;
            TensorData::new(
                values.into_iter().map(|v| v != 0.0).collect::<Vec<bool>>(),
                shape,
            )
        }
        _ => {
            let values: Vec<i64> = if data.dtype().is_float() {
                // burn's float-to-int conversion panics on NaN, ±∞ and out-of-range values
                // (found by the `model_run` fuzzer); `as` saturates (NaN → 0).
                #[expect(clippy::cast_possible_truncation, reason = "saturating on purpose")]
                let ints = data
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(bad)?
                    .into_iter()
                    .map(|v| v as i64)
                    .collect();
                ints
            } else {
                data.convert::<i64>().try_to_vec().map_err(bad)?
            };
            let wrapped = values.into_iter().map(|v| wrap(v, dtype));
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "wrapped above"
            )]
            match dtype {
                DType::I32 => TensorData::new(wrapped.map(|v| v as i32).collect::<Vec<_>>(), shape),
                DType::I16 => TensorData::new(wrapped.map(|v| v as i16).collect::<Vec<_>>(), shape),
                DType::I8 => TensorData::new(wrapped.map(|v| v as i8).collect::<Vec<_>>(), shape),
                DType::U32 => TensorData::new(wrapped.map(|v| v as u32).collect::<Vec<_>>(), shape),
                DType::U16 => TensorData::new(wrapped.map(|v| v as u16).collect::<Vec<_>>(), shape),
                DType::U8 => TensorData::new(wrapped.map(|v| v as u8).collect::<Vec<_>>(), shape),
                _ => TensorData::new(wrapped.collect::<Vec<_>>(), shape),
            }
        }
    })
}

/// A float tensor of any value (integers converted as NumPy does).
///
/// # Errors
/// A rank burn cannot hold.
pub fn to_float(value: Value, device: &Device) -> Result<Float, EngineError> {
    match value {
        Value::Float(f) => Ok(f),
        other => {
            let (h, shape) = host(other)?;
            match float_value(floats(h), shape, device)? {
                Value::Float(f) => Ok(f),
                _ => Err(EngineError::Internal("float_value made no float".into())),
            }
        }
    }
}

/// Integer power (exponents below zero give 0, as integer division would).
///
/// # Errors
/// Shapes that do not broadcast.
pub fn int_pow(a: Value, b: Value) -> Result<Value, EngineError> {
    let ((a, sa), (b, sb)) = (ints(a, "Pow")?, ints(b, "Pow")?);
    let (data, shape) = zip(&a, &sa, &b, &sb, |x: i64, y: i64| {
        u32::try_from(y).map_or(0, |y| x.wrapping_pow(y))
    })?;
    Ok(Value::Int { data, shape })
}

/// ONNX Mod: the sign of the divisor (Python) for integers unless `fmod`; C's fmod for
/// floats.
///
/// # Errors
/// Integer division by zero, or shapes that do not broadcast.
pub fn modulo(a: Value, b: Value, fmod: bool, device: &Device) -> Result<Value, EngineError> {
    let ((a, sa), (b, sb)) = (host(a)?, host(b)?);
    match (a, b) {
        (Host::I(a), Host::I(b)) => {
            if b.contains(&0) {
                return Err(EngineError::Invalid("Mod by zero".into()));
            }
            let (data, shape) = zip(&a, &sa, &b, &sb, |x: i64, y: i64| {
                let r = x.wrapping_rem(y);
                if !fmod && r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            })?;
            Ok(Value::Int { data, shape })
        }
        (a, b) => {
            let (data, shape) = zip(&floats(a), &sa, &floats(b), &sb, |x: f32, y: f32| {
                let r = x % y;
                if !fmod && r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                    r + y
                } else {
                    r
                }
            })?;
            float_value(data, shape, device)
        }
    }
}

/// A BOOL tensor of `test` on each float element (IsNaN, IsInf).
///
/// # Errors
/// An integer operand.
pub fn classify(value: Value, test: impl Fn(f32) -> bool) -> Result<Value, EngineError> {
    let (h, shape) = host(value)?;
    match h {
        Host::F(v) => Ok(Value::Int {
            data: v.into_iter().map(|x| i64::from(test(x))).collect(),
            shape,
        }),
        Host::I(v) => Ok(Value::Int {
            data: vec![0; v.len()],
            shape,
        }),
    }
}

/// Pairwise Max / Min / Sum (Mean sums, the caller divides) of integer tensors.
///
/// # Errors
/// Shapes that do not broadcast.
pub fn int_extreme(a: Value, b: Value, kind: super::ops::Variadic) -> Result<Value, EngineError> {
    use super::ops::Variadic;
    let ((a, sa), (b, sb)) = (ints(a, "Max/Min")?, ints(b, "Max/Min")?);
    let (data, shape) = zip(&a, &sa, &b, &sb, |x: i64, y: i64| match kind {
        Variadic::Max => x.max(y),
        Variadic::Min => x.min(y),
        Variadic::Sum | Variadic::Mean => x.wrapping_add(y),
    })?;
    Ok(Value::Int { data, shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shape(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shape(&[&[2, 3], &[4]]).is_err());
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn casts_wrap_and_truncate_like_c() {
        let device = crate::engine::cpu();
        let v = Value::Int {
            data: vec![300, -1, 5],
            shape: vec![3],
        };
        let Value::Int { data, .. } = cast(v, DType::U8, &device).unwrap() else {
            panic!()
        };
        assert_eq!(data, vec![44, 255, 5]);
        let f = float_value(vec![-1.7, 2.9, 0.0], vec![3], &device).unwrap();
        let Value::Int { data, .. } = cast(f.clone(), DType::I32, &device).unwrap() else {
            panic!()
        };
        assert_eq!(data, vec![-1, 2, 0]);
        let Value::Int { data, .. } =
            cast(f, DType::Bool(burn::tensor::BoolStore::Native), &device).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, vec![1, 1, 0]);
    }

    #[test]
    fn where_and_comparisons_broadcast() {
        let device = crate::engine::cpu();
        let a = Value::Int {
            data: vec![1, 5, 3],
            shape: vec![3],
        };
        let b = Value::Int {
            data: vec![3],
            shape: vec![1],
        };
        let Value::Int { data, .. } = compare(a.clone(), b.clone(), Compare::Greater).unwrap()
        else {
            panic!()
        };
        assert_eq!(data, vec![0, 1, 0]);
        let cond = Value::Int {
            data: vec![1, 0, 1],
            shape: vec![3],
        };
        let Value::Int { data, .. } = select(cond, a, b, &device).unwrap() else {
            panic!()
        };
        assert_eq!(data, vec![1, 3, 3]);
    }

    /// Floats declared as integers saturate (NaN → 0) instead of panicking in burn's
    /// conversion (a `model_run` fuzzer finding).
    #[test]
    fn floats_to_declared_integers_saturate() {
        let data = TensorData::new(
            vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -2.7, 3.9],
            vec![6],
        );
        let ints: Vec<i64> = to_declared(data.clone(), DType::I64)
            .unwrap()
            .try_to_vec()
            .unwrap();
        assert_eq!(ints, [0, i64::MAX, i64::MIN, i64::MAX, -2, 3]);
        let small: Vec<i32> = to_declared(data, DType::I32).unwrap().try_to_vec().unwrap();
        assert_eq!(small[0], 0);
        assert_eq!(small[4..], [-2, 3]);
    }
}
