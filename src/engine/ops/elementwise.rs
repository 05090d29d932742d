//! Element-wise operators: arithmetic, activations, comparisons, logic, casts. Floats run
//! on burn; integer and boolean tensors on the host ([`crate::engine::elementwise`]).

use burn::tensor::activation;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::{Bound, FloatBinary, Op, Unary, Variadic, any_input, binary, float_input};
use crate::engine::EngineError;
use crate::engine::elementwise::{self as values, Arithmetic, broadcast_shape};
use crate::engine::limits::{Cap, I64};
use crate::engine::value::{Value, each_rank, to_array, with_rank};

/// Checks the broadcast of `values` against the cap, at 8 bytes an element.
fn check_broadcast(operands: &[&Value], cap: Cap) -> Result<(), EngineError> {
    let dims: Vec<Vec<usize>> = operands.iter().map(|v| v.dims()).collect();
    let shapes: Vec<&[usize]> = dims.iter().map(Vec::as_slice).collect();
    cap.check(&broadcast_shape(&shapes)?, I64).map(|_| ())
}

fn unary<const D: usize>(t: Tensor<D>, u: Unary) -> Tensor<D> {
    match u {
        // One kernel on the GPU (burn's relu and clamp_min build a mask first).
        Unary::Relu => t.clamp(0.0, f32::INFINITY),
        Unary::Sigmoid => activation::sigmoid(t),
        Unary::Tanh => saturated_tanh(t),
        Unary::Exp => t.exp(),
        Unary::Log => t.log(),
        Unary::Sqrt => t.sqrt(),
        Unary::Neg => t.neg(),
        Unary::Abs => t.abs(),
        Unary::Erf => t.erf(),
        Unary::Floor => t.floor(),
        Unary::Ceil => t.ceil(),
        // ONNX rounds half to even, as burn's round does.
        Unary::Round => t.round(),
        Unary::Reciprocal => t.recip(),
        Unary::Sin => t.sin(),
        Unary::Cos => t.cos(),
        Unary::Tan => t.tan(),
        Unary::Asin => t.asin(),
        Unary::Acos => t.acos(),
        Unary::Atan => t.atan(),
        Unary::Sinh => t.sinh(),
        Unary::Cosh => t.cosh(),
        Unary::Asinh => t.asinh(),
        Unary::Acosh => t.acosh(),
        Unary::Atanh => t.atanh(),
        Unary::Sign => t.sign(),
        // log(1 + e^x), stable for large x: max(x, 0) + log1p(e^-|x|).
        Unary::Softplus => {
            let abs = t.clone().abs();
            activation::relu(t).add(abs.neg().exp().log1p())
        }
        Unary::Softsign => t.clone().div(t.abs().add_scalar(1.0)),
        // x · relu6(x + 3) / 6
        Unary::HardSwish => t
            .clone()
            .mul(t.add_scalar(3.0).clamp(0.0, 6.0))
            .div_scalar(6.0),
        // x · tanh(softplus(x)) = x · n / (n + 2) with n = eˣ(eˣ + 2): no cancellation
        // where the result is tiny (x ≪ 0); past x = 20 the ratio is 1 in f32.
        Unary::Mish => {
            let e = t.clone().clamp_max(20.0).exp();
            let n = e.clone().mul(e.add_scalar(2.0));
            t.mul(n.clone().div(n.add_scalar(2.0)))
        }
    }
}

fn float_bound(inputs: &mut [Option<Value>], b: Bound) -> Result<Option<f32>, EngineError> {
    match b {
        Bound::None => Ok(None),
        Bound::Static(v) => Ok(Some(v)),
        Bound::Input(i) => match inputs.get_mut(i).and_then(Option::take) {
            None => Ok(None),
            Some(Value::Int { data, .. }) =>
            {
                #[expect(clippy::cast_precision_loss, reason = "a Clip bound")]
                Ok(data.first().map(|v| *v as f32))
            }
            Some(v) => {
                let data = v.float()?.into_data();
                let values: Vec<f32> = data
                    .try_to_vec()
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
                Ok(values.first().copied())
            }
        },
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
    let x = |inputs: &mut Vec<Option<Value>>| float_input(inputs, 0);
    let out = match op {
        Op::Identity => any_input(&mut inputs, 0)?,
        Op::Constant(data) => crate::engine::model::value_from_data(data.clone(), device)?,
        Op::Arithmetic(kind) => {
            if let (Some(Some(Value::Int { .. })), Some(Some(Value::Int { .. }))) =
                (inputs.first(), inputs.get(1))
            {
                let a = any_input(&mut inputs, 0)?;
                let b = any_input(&mut inputs, 1)?;
                check_broadcast(&[&a, &b], cap)?;
                return Ok(vec![values::int_arithmetic(a, b, *kind)?]);
            }
            let a = float_input(&mut inputs, 0)?;
            let b = float_input(&mut inputs, 1)?;
            Value::Float(binary(a, b, *kind, cap)?)
        }
        Op::Pow => {
            let base = any_input(&mut inputs, 0)?;
            let exponent = any_input(&mut inputs, 1)?;
            if let (Value::Int { .. }, Value::Int { .. }) = (&base, &exponent) {
                check_broadcast(&[&base, &exponent], cap)?;
                return Ok(vec![values::int_pow(base, exponent)?]);
            }
            let is_int = matches!(base, Value::Int { .. });
            let y = binary(
                values::to_float(base, device)?,
                values::to_float(exponent, device)?,
                FloatBinary::Pow,
                cap,
            )?;
            if is_int {
                values::cast(Value::Float(y), burn::tensor::DType::I64, device)?
            } else {
                Value::Float(y)
            }
        }
        Op::Mod { fmod } => {
            let a = any_input(&mut inputs, 0)?;
            let b = any_input(&mut inputs, 1)?;
            check_broadcast(&[&a, &b], cap)?;
            values::modulo(a, b, *fmod, device)?
        }
        Op::Compare(kind) => {
            let a = any_input(&mut inputs, 0)?;
            let b = any_input(&mut inputs, 1)?;
            check_broadcast(&[&a, &b], cap)?;
            values::compare(a, b, *kind)?
        }
        Op::Logic(kind) => {
            let a = any_input(&mut inputs, 0)?;
            let b = any_input(&mut inputs, 1)?;
            check_broadcast(&[&a, &b], cap)?;
            values::logic(a, b, *kind)?
        }
        Op::Not => values::not(any_input(&mut inputs, 0)?)?,
        Op::Where => {
            let cond = any_input(&mut inputs, 0)?;
            let a = any_input(&mut inputs, 1)?;
            let b = any_input(&mut inputs, 2)?;
            check_broadcast(&[&cond, &a, &b], cap)?;
            let on_device = *device != crate::engine::cpu()
                && matches!(cond, Value::Int { .. })
                && [&a, &b].iter().any(|v| matches!(v, Value::Float(_)))
                && [&a, &b].iter().all(|v| !matches!(v, Value::Int { .. }))
                && [&cond, &a, &b].iter().any(|v| !v.dims().is_empty())
                && [&cond, &a, &b].iter().all(|v| !v.dims().contains(&0));
            if on_device {
                select_on_device(cond, a, b, device)?
            } else {
                values::select(cond, a, b, device)?
            }
        }
        Op::Cast(to) => values::cast(any_input(&mut inputs, 0)?, *to, device)?,
        Op::Unary(u) => {
            let u = *u;
            if let Some(Some(Value::Int { .. })) = inputs.first()
                && let Value::Int { data, shape } = any_input(&mut inputs, 0)?
            {
                let f: fn(i64) -> i64 = match u {
                    Unary::Neg => i64::wrapping_neg,
                    Unary::Abs => i64::wrapping_abs,
                    Unary::Sign => i64::signum,
                    Unary::Relu => |v| v.max(0),
                    other => {
                        return Err(EngineError::Invalid(format!(
                            "{other:?} of an integer tensor"
                        )));
                    }
                };
                return Ok(vec![Value::Int {
                    data: data.into_iter().map(f).collect(),
                    shape,
                }]);
            }
            Value::Float(each_rank!(x(&mut inputs)?, t => unary(t, u)))
        }
        Op::LeakyRelu(alpha) => {
            let alpha = f64::from(*alpha);
            Value::Float(each_rank!(x(&mut inputs)?, t => activation::leaky_relu(t, alpha)))
        }
        Op::Elu(alpha) => {
            let a = *alpha;
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                let negative = t.clone().clamp_max(0.0).exp().sub_scalar(1.0).mul_scalar(a);
                activation::relu(t).add(negative)
            }))
        }
        Op::Selu { alpha, gamma } => {
            let (a, g) = (*alpha, *gamma);
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                let negative = t.clone().clamp_max(0.0).exp().sub_scalar(1.0).mul_scalar(a);
                activation::relu(t).add(negative).mul_scalar(g)
            }))
        }
        Op::Celu(alpha) => {
            let a = *alpha;
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                let negative = t.clone().clamp_max(0.0).div_scalar(a).exp().sub_scalar(1.0)
                    .mul_scalar(a);
                activation::relu(t).add(negative)
            }))
        }
        Op::ThresholdedRelu(alpha) => {
            let a = *alpha;
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                let keep = t.clone().greater_elem(a).float();
                t.mul(keep)
            }))
        }
        Op::Shrink { lambda, bias } => {
            let (l, b) = (*lambda, *bias);
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                let low = t.clone().lower_elem(-l).float();
                let high = t.clone().greater_elem(l).float();
                low.mul(t.clone().add_scalar(b)).add(high.mul(t.sub_scalar(b)))
            }))
        }
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (*alpha, *beta);
            Value::Float(each_rank!(x(&mut inputs)?, t => {
                t.mul_scalar(a).add_scalar(b).clamp(0.0, 1.0)
            }))
        }
        Op::Gelu { tanh } => {
            let tanh = *tanh;
            Value::Float(each_rank!(x(&mut inputs)?, t => gelu(t, tanh)))
        }
        Op::PRelu => {
            let v = float_input(&mut inputs, 0)?;
            let slope = float_input(&mut inputs, 1)?;
            // max(0, x) + slope · min(0, x)
            let positive = each_rank!(v.clone(), t => activation::relu(t));
            let negative = each_rank!(v, t => t.clamp_max(0.0));
            let scaled = binary(negative, slope, Arithmetic::Mul, cap)?;
            Value::Float(binary(positive, scaled, Arithmetic::Add, cap)?)
        }
        Op::Clip { min, max } => {
            let min = float_bound(&mut inputs, *min)?;
            let max = float_bound(&mut inputs, *max)?;
            let v = any_input(&mut inputs, 0)?;
            if let Value::Int { data, shape } = v {
                #[expect(clippy::cast_possible_truncation, reason = "bounds of an int tensor")]
                let (lo, hi) = (
                    min.map_or(i64::MIN, |m| m as i64),
                    max.map_or(i64::MAX, |m| m as i64),
                );
                return Ok(vec![Value::Int {
                    data: data.into_iter().map(|x| x.max(lo).min(hi)).collect(),
                    shape,
                }]);
            }
            let mut f = v.float()?;
            if let Some(m) = min {
                f = each_rank!(f, t => t.clamp_min(m));
            }
            if let Some(m) = max {
                f = each_rank!(f, t => t.clamp_max(m));
            }
            Value::Float(f)
        }
        Op::IsNaN => values::classify(any_input(&mut inputs, 0)?, f32::is_nan)?,
        Op::ReplaceNan(value) => match any_input(&mut inputs, 0)? {
            Value::Dense(mut d) => {
                for v in std::sync::Arc::make_mut(&mut d.data)
                    .iter_mut()
                    .filter(|v| v.is_nan())
                {
                    *v = *value;
                }
                Value::Dense(d)
            }
            other => {
                let f = other.float()?;
                Value::Float(each_rank!(f, t => {
                    let nan = t.clone().is_nan();
                    t.mask_fill(nan, *value)
                }))
            }
        },
        Op::IsInf { negative, positive } => {
            let (n, p) = (*negative, *positive);
            values::classify(any_input(&mut inputs, 0)?, move |v: f32| {
                v.is_infinite() && ((v < 0.0 && n) || (v > 0.0 && p))
            })?
        }
        Op::Variadic(kind) => variadic(*kind, inputs, cap)?,
        other => {
            return Err(EngineError::Internal(format!(
                "{other:?} is not an element-wise operator"
            )));
        }
    };
    Ok(vec![out])
}

/// `Where` with float branches on a GPU: the condition (host booleans) is uploaded and the
/// choice made there, so neither branch is read back (a wait for the device).
fn select_on_device(
    cond: Value,
    a: Value,
    b: Value,
    device: &Device,
) -> Result<Value, EngineError> {
    let out = broadcast_shape(&[&cond.dims(), &a.dims(), &b.dims()])?;
    let Value::Int { data, shape } = cond else {
        return Err(EngineError::Internal("Where: a float condition".into()));
    };
    let mask: Vec<bool> = data.iter().map(|v| *v != 0).collect();
    let count = mask.len();
    let (a_dims, b_dims) = (a.dims(), b.dims());
    let (a, b) = (a.float()?, b.float()?);
    Ok(Value::Float(with_rank!(out.len(), D => {
        let full: [usize; D] = to_array(&out);
        // Shapes right-aligned to rank D, as broadcasting reads them.
        let lift = |s: &[usize]| {
            let mut lifted = [1usize; D];
            lifted[D - s.len()..].copy_from_slice(s);
            lifted
        };
        let mask = Tensor::<1, Bool>::from_data(TensorData::new(mask, [count]), device)
            .reshape(lift(&shape))
            .expand(full);
        let a = a.to_rank(lift(&a_dims)).expand(full);
        b.to_rank(lift(&b_dims)).expand(full).mask_where(mask, a)
    })))
}

/// tanh, saturated past |x| = 20 (where f32's tanh is ±1): a GPU's tanh built from
/// exponentials gives NaN (∞/∞) for large inputs.
fn saturated_tanh<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.clamp(-20.0, 20.0).tanh()
}

fn gelu<const D: usize>(t: Tensor<D>, tanh: bool) -> Tensor<D> {
    if tanh {
        // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        let inner = t
            .clone()
            .add(t.clone().powf_scalar(3.0).mul_scalar(0.044_715))
            .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
        t.mul(saturated_tanh(inner).add_scalar(1.0)).mul_scalar(0.5)
    } else {
        // 0.5 x (1 + erf(x / √2))
        t.clone()
            .mul(t.div_scalar(std::f64::consts::SQRT_2).erf().add_scalar(1.0))
            .mul_scalar(0.5)
    }
}

fn variadic(kind: Variadic, inputs: Vec<Option<Value>>, cap: Cap) -> Result<Value, EngineError> {
    let present: Vec<Value> = inputs.into_iter().flatten().collect();
    let count = present.len();
    if count == 0 {
        return Err(EngineError::Invalid("no inputs".into()));
    }
    if present.iter().all(|v| matches!(v, Value::Int { .. })) {
        let mut parts = present.into_iter();
        let mut total = parts.next().unwrap_or(Value::Int {
            data: vec![],
            shape: vec![0],
        });
        for part in parts {
            check_broadcast(&[&total, &part], cap)?;
            total = values::int_extreme(total, part, kind)?;
        }
        if kind == Variadic::Mean {
            let divisor = Value::Int {
                data: vec![i64::try_from(count).unwrap_or(1)],
                shape: vec![],
            };
            total = values::int_arithmetic(total, divisor, Arithmetic::Div)?;
        }
        return Ok(total);
    }
    let mut parts = present.into_iter().map(Value::float);
    let mut total = parts
        .next()
        .ok_or_else(|| EngineError::Invalid("no inputs".into()))??;
    let op = match kind {
        Variadic::Max => FloatBinary::Max,
        Variadic::Min => FloatBinary::Min,
        Variadic::Sum | Variadic::Mean => FloatBinary::Add,
    };
    for part in parts {
        total = binary(total, part?, op, cap)?;
    }
    if kind == Variadic::Mean {
        #[expect(clippy::cast_precision_loss, reason = "an input count")]
        let n = count as f32;
        total = each_rank!(total, t => t.div_scalar(n));
    }
    Ok(Value::Float(total))
}
