//! One function per ONNX operator, on burn tensor operations. `SUPPORTED` lists what the
//! interpreter runs; a model with any other operator is refused at load, by name.

use burn::tensor::activation;
use burn::tensor::{Device, Tensor};
use onnx_ir::Node;

use super::EngineError;
use super::elementwise::{self, Arithmetic, Compare, Logic, broadcast_shape};
use super::limits::{Cap, F32, I64};
use super::shapes::{pad_dims, resolve_reshape, unsqueezed};
use super::value::{Float, Value, each_rank, to_array, with_rank};

mod nn;

/// The ONNX operator names the interpreter runs.
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "And",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Equal",
    "Exp",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Greater",
    "GreaterOrEqual",
    "Identity",
    "LRN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sqrt",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// The ONNX operator name of a parsed node (onnx-ir names some by dimension).
#[must_use]
pub fn op_name(node: &Node) -> String {
    match node {
        Node::Conv1d(_) | Node::Conv2d(_) | Node::Conv3d(_) => "Conv".into(),
        Node::MaxPool1d(_) | Node::MaxPool2d(_) => "MaxPool".into(),
        Node::AveragePool1d(_) | Node::AveragePool2d(_) => "AveragePool".into(),
        Node::Lrn(_) => "LRN".into(),
        Node::Custom(custom) => custom.op_type.clone(),
        other => {
            let debug = format!("{other:?}");
            debug
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("?")
                .to_owned()
        }
    }
}

/// Whether the interpreter runs this node (also checks the variant, since some ONNX names
/// map to several variants and only some are implemented).
#[must_use]
pub fn is_supported(node: &Node) -> bool {
    matches!(
        node,
        Node::Abs(_)
            | Node::Add(_)
            | Node::And(_)
            | Node::Cast(_)
            | Node::Equal(_)
            | Node::Greater(_)
            | Node::GreaterOrEqual(_)
            | Node::Less(_)
            | Node::LessOrEqual(_)
            | Node::Not(_)
            | Node::Or(_)
            | Node::Where(_)
            | Node::Xor(_)
            | Node::AveragePool2d(_)
            | Node::BatchNormalization(_)
            | Node::Clip(_)
            | Node::Concat(_)
            | Node::Constant(_)
            | Node::ConstantOfShape(_)
            | Node::Conv2d(_)
            | Node::Div(_)
            | Node::Dropout(_)
            | Node::Exp(_)
            | Node::Flatten(_)
            | Node::Gemm(_)
            | Node::GlobalAveragePool(_)
            | Node::Identity(_)
            | Node::LeakyRelu(_)
            | Node::Lrn(_)
            | Node::Log(_)
            | Node::MatMul(_)
            | Node::MaxPool2d(_)
            | Node::Mul(_)
            | Node::Neg(_)
            | Node::Relu(_)
            | Node::Reshape(_)
            | Node::Sigmoid(_)
            | Node::Softmax(_)
            | Node::Sqrt(_)
            | Node::Sub(_)
            | Node::Sum(_)
            | Node::Tanh(_)
            | Node::Transpose(_)
            | Node::Unsqueeze(_)
    )
}

#[derive(Clone, Copy)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

fn apply<const D: usize>(a: Tensor<D>, b: Tensor<D>, op: Binary) -> Tensor<D> {
    match op {
        Binary::Add => a.add(b),
        Binary::Sub => a.sub(b),
        Binary::Mul => a.mul(b),
        Binary::Div => a.div(b),
    }
}

/// Checks the broadcast of `values` against the cap, at `elem` bytes an element.
fn check_broadcast(values: &[&Value], elem: usize, cap: Cap) -> Result<(), EngineError> {
    let dims: Vec<Vec<usize>> = values.iter().map(|v| v.dims()).collect();
    let shapes: Vec<&[usize]> = dims.iter().map(Vec::as_slice).collect();
    cap.check(&broadcast_shape(&shapes)?, elem).map(|_| ())
}

fn lift_to<const D: usize>(value: Float) -> Result<Tensor<D>, EngineError> {
    let lifted = value.lift(D)?;
    let dims = lifted.dims();
    Ok(lifted.flat().reshape(to_array::<D>(&dims)))
}

fn binary(a: Float, b: Float, op: Binary, cap: Cap) -> Result<Float, EngineError> {
    let rank = a.rank().max(b.rank());
    let (da, db) = (a.dims(), b.dims());
    let (la, lb) = (pad_dims(&da, rank), pad_dims(&db, rank));
    let mut out = Vec::with_capacity(rank);
    for (x, y) in la.iter().zip(&lb) {
        if x != y && *x != 1 && *y != 1 {
            return Err(EngineError::Invalid(format!(
                "shapes {da:?} and {db:?} do not broadcast"
            )));
        }
        out.push(if *x == 1 { *y } else { *x });
    }
    cap.check(&out, F32)?;
    Ok(with_rank!(rank, D => apply::<D>(lift_to::<D>(a)?, lift_to::<D>(b)?, op)))
}

/// Takes input `i` as a float tensor.
fn float_input(inputs: &mut [Option<Value>], i: usize, op: &str) -> Result<Float, EngineError> {
    inputs
        .get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| EngineError::Invalid(format!("{op}: input {i} is missing")))?
        .float()
}

/// Takes input `i` whatever its element type.
fn any_input(inputs: &mut [Option<Value>], i: usize, op: &str) -> Result<Value, EngineError> {
    inputs
        .get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| EngineError::Invalid(format!("{op}: input {i} is missing")))
}

fn optional_float(inputs: &mut [Option<Value>], i: usize) -> Result<Option<Float>, EngineError> {
    inputs
        .get_mut(i)
        .and_then(Option::take)
        .map(Value::float)
        .transpose()
}

/// Runs one node. `inputs[i]` is `None` for an absent optional input.
///
/// # Errors
/// Shapes or types the operator cannot take, or an unsupported operator.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per operator reads best as one match"
)]
/// `op` is the node's [`op_name`], computed once when the model is planned (it costs a
/// formatting pass, which has no place on the inference path).
/// Every output is checked against `cap` before it is allocated (where it can outgrow the
/// inputs).
pub fn run(
    node: &Node,
    op: &str,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let unary = |inputs: &mut Vec<Option<Value>>,
                 f: fn(Float) -> Float|
     -> Result<Vec<Value>, EngineError> {
        Ok(vec![Value::Float(f(float_input(inputs, 0, op)?))])
    };
    let out = match node {
        Node::Identity(_) | Node::Dropout(_) => {
            vec![
                inputs
                    .get_mut(0)
                    .and_then(Option::take)
                    .ok_or_else(|| EngineError::Invalid(format!("{op}: no input")))?,
            ]
        }
        Node::Constant(constant) => {
            let data = constant
                .outputs
                .first()
                .and_then(onnx_ir::Argument::value)
                .or_else(|| constant.inputs.first().and_then(onnx_ir::Argument::value))
                .ok_or_else(|| EngineError::Invalid("Constant without a value".into()))?;
            vec![super::model::value_from_data(data, device)?]
        }
        Node::Add(_) | Node::Sub(_) | Node::Mul(_) | Node::Div(_) => {
            let kind = match node {
                Node::Add(_) => Binary::Add,
                Node::Sub(_) => Binary::Sub,
                Node::Mul(_) => Binary::Mul,
                _ => Binary::Div,
            };
            if let (Some(Some(Value::Int { .. })), Some(Some(Value::Int { .. }))) =
                (inputs.first(), inputs.get(1))
            {
                let arithmetic = match kind {
                    Binary::Add => Arithmetic::Add,
                    Binary::Sub => Arithmetic::Sub,
                    Binary::Mul => Arithmetic::Mul,
                    Binary::Div => Arithmetic::Div,
                };
                let a = any_input(&mut inputs, 0, op)?;
                let b = any_input(&mut inputs, 1, op)?;
                check_broadcast(&[&a, &b], I64, cap)?;
                return Ok(vec![elementwise::int_arithmetic(a, b, arithmetic)?]);
            }
            let a = float_input(&mut inputs, 0, op)?;
            let b = float_input(&mut inputs, 1, op)?;
            vec![Value::Float(binary(a, b, kind, cap)?)]
        }
        Node::Equal(_)
        | Node::Greater(_)
        | Node::GreaterOrEqual(_)
        | Node::Less(_)
        | Node::LessOrEqual(_) => {
            let kind = match node {
                Node::Equal(_) => Compare::Equal,
                Node::Greater(_) => Compare::Greater,
                Node::GreaterOrEqual(_) => Compare::GreaterOrEqual,
                Node::Less(_) => Compare::Less,
                _ => Compare::LessOrEqual,
            };
            let a = any_input(&mut inputs, 0, op)?;
            let b = any_input(&mut inputs, 1, op)?;
            check_broadcast(&[&a, &b], I64, cap)?;
            vec![elementwise::compare(a, b, kind)?]
        }
        Node::And(_) | Node::Or(_) | Node::Xor(_) => {
            let kind = match node {
                Node::And(_) => Logic::And,
                Node::Or(_) => Logic::Or,
                _ => Logic::Xor,
            };
            let a = any_input(&mut inputs, 0, op)?;
            let b = any_input(&mut inputs, 1, op)?;
            check_broadcast(&[&a, &b], I64, cap)?;
            vec![elementwise::logic(a, b, kind)?]
        }
        Node::Not(_) => vec![elementwise::not(any_input(&mut inputs, 0, op)?)?],
        Node::Where(_) => {
            let cond = any_input(&mut inputs, 0, op)?;
            let a = any_input(&mut inputs, 1, op)?;
            let b = any_input(&mut inputs, 2, op)?;
            check_broadcast(&[&cond, &a, &b], I64, cap)?;
            vec![elementwise::select(cond, a, b, device)?]
        }
        Node::Cast(n) => vec![elementwise::cast(
            any_input(&mut inputs, 0, op)?,
            n.config.to,
            device,
        )?],
        Node::Relu(_) => unary(&mut inputs, |x| each_rank!(x, t => activation::relu(t)))?,
        Node::Sigmoid(_) => unary(&mut inputs, |x| each_rank!(x, t => activation::sigmoid(t)))?,
        Node::Tanh(_) => unary(&mut inputs, |x| each_rank!(x, t => activation::tanh(t)))?,
        Node::Exp(_) => unary(&mut inputs, |x| each_rank!(x, t => t.exp()))?,
        Node::Log(_) => unary(&mut inputs, |x| each_rank!(x, t => t.log()))?,
        Node::Sqrt(_) => unary(&mut inputs, |x| each_rank!(x, t => t.sqrt()))?,
        Node::Neg(_) => unary(&mut inputs, |x| each_rank!(x, t => t.neg()))?,
        Node::Abs(_) => unary(&mut inputs, |x| each_rank!(x, t => t.abs()))?,
        Node::LeakyRelu(n) => {
            let alpha = n.config.alpha;
            let x = float_input(&mut inputs, 0, op)?;
            vec![Value::Float(
                each_rank!(x, t => activation::leaky_relu(t, alpha)),
            )]
        }
        Node::Clip(n) => {
            let bound = |input: &Option<onnx_ir::node::clip::ClipInput>,
                         inputs: &mut Vec<Option<Value>>|
             -> Result<Option<f32>, EngineError> {
                match input {
                    None => Ok(None),
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "ONNX clip bounds of an f32 tensor"
                    )]
                    Some(onnx_ir::node::clip::ClipInput::Static(v)) => Ok(Some(*v as f32)),
                    Some(onnx_ir::node::clip::ClipInput::Runtime(r)) => {
                        match inputs.get_mut(r.input_index).and_then(Option::take) {
                            None => Ok(None),
                            Some(v) => {
                                let data = v.float()?.into_data();
                                let values: Vec<f32> = data
                                    .try_to_vec()
                                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
                                Ok(values.first().copied())
                            }
                        }
                    }
                }
            };
            let min = bound(&n.config.min, &mut inputs)?;
            let max = bound(&n.config.max, &mut inputs)?;
            let x = float_input(&mut inputs, 0, op)?;
            let x = match min {
                Some(m) => each_rank!(x, t => t.clamp_min(m)),
                None => x,
            };
            let x = match max {
                Some(m) => each_rank!(x, t => t.clamp_max(m)),
                None => x,
            };
            vec![Value::Float(x)]
        }
        Node::Softmax(n) => {
            let axis = n.config.axis;
            let x = float_input(&mut inputs, 0, op)?;
            if axis >= x.rank() {
                return Err(EngineError::Invalid(format!(
                    "Softmax axis {axis} on rank {}",
                    x.rank()
                )));
            }
            vec![Value::Float(
                each_rank!(x, t => activation::softmax(t, axis)),
            )]
        }
        Node::Flatten(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            let dims = x.dims();
            let axis = n.config.axis.min(dims.len());
            let outer: usize = dims[..axis].iter().product();
            let inner: usize = dims[axis..].iter().product();
            vec![Value::Float(x.reshape(&[outer, inner])?)]
        }
        Node::Reshape(n) => {
            let target: Vec<i64> = match &n.config.shape {
                onnx_ir::node::reshape::ReshapeInput::Static(shape) => shape.clone(),
                onnx_ir::node::reshape::ReshapeInput::Runtime(r) => inputs
                    .get(r.input_index)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| EngineError::Invalid("Reshape: no shape input".into()))?
                    .ints()?
                    .to_vec(),
            };
            let x = float_input(&mut inputs, 0, op)?;
            let shape = resolve_reshape(&x.dims(), &target)?;
            vec![Value::Float(x.reshape(&shape)?)]
        }
        Node::Transpose(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            let rank = x.rank();
            let perm: Vec<usize> = if n.config.perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                n.config
                    .perm
                    .iter()
                    .map(|p| usize::try_from(*p).unwrap_or(usize::MAX))
                    .collect()
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..rank).collect::<Vec<_>>() {
                return Err(EngineError::Invalid(format!(
                    "Transpose perm {perm:?} for rank {rank}"
                )));
            }
            vec![Value::Float(
                with_rank!(rank, D => lift_to::<D>(x)?.permute(to_array::<D>(&perm))),
            )]
        }
        Node::Concat(n) => {
            let parts: Vec<Float> = inputs
                .into_iter()
                .flatten()
                .map(Value::float)
                .collect::<Result<_, _>>()?;
            vec![Value::Float(nn::concat(parts, n.config.axis, cap)?)]
        }
        Node::MatMul(_) => {
            let a = float_input(&mut inputs, 0, op)?;
            let b = float_input(&mut inputs, 1, op)?;
            vec![Value::Float(nn::matmul(a, b, cap)?)]
        }
        Node::Gemm(n) => {
            let a = float_input(&mut inputs, 0, op)?;
            let b = float_input(&mut inputs, 1, op)?;
            let c = optional_float(&mut inputs, 2)?;
            vec![Value::Float(nn::gemm(&n.config, a, b, c, cap)?)]
        }
        Node::Conv2d(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            let w = float_input(&mut inputs, 1, op)?;
            let bias = optional_float(&mut inputs, 2)?;
            vec![Value::Float(nn::conv(&n.config, x, w, bias, cap)?)]
        }
        Node::MaxPool2d(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            vec![Value::Float(nn::max_pool(&n.config, x, cap)?)]
        }
        Node::AveragePool2d(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            vec![Value::Float(nn::avg_pool(&n.config, x, cap)?)]
        }
        Node::GlobalAveragePool(_) => {
            let x = float_input(&mut inputs, 0, op)?;
            let rank = x.rank();
            if rank < 3 {
                return Err(EngineError::Invalid(format!(
                    "GlobalAveragePool needs rank >= 3, got {rank}"
                )));
            }
            vec![Value::Float(each_rank!(x, t => {
                let mut t = t;
                for dim in (2..rank).rev() {
                    t = t.mean_dim(dim);
                }
                t
            }))]
        }
        Node::BatchNormalization(n) => {
            let epsilon = match &n.config {
                onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => c.epsilon,
                onnx_ir::node::batch_norm::BatchNormConfig::Runtime(c) => c.epsilon,
            };
            let x = float_input(&mut inputs, 0, op)?;
            let rank = x.rank();
            let channels = *x
                .dims()
                .get(1)
                .ok_or_else(|| EngineError::Invalid("BatchNormalization of rank 1".into()))?;
            let mut params = Vec::with_capacity(4);
            for i in 1..=4 {
                let p = float_input(&mut inputs, i, op)?;
                let mut shape = vec![1; rank];
                shape[1] = channels;
                params.push(p.reshape(&shape)?);
            }
            let var = params.pop().expect("four params");
            let mean = params.pop().expect("four params");
            let bias = params.pop().expect("four params");
            let scale = params.pop().expect("four params");
            #[expect(clippy::cast_possible_truncation, reason = "epsilon of an f32 model")]
            let eps = epsilon as f32;
            let inv = each_rank!(var, t => t.add_scalar(eps).sqrt().recip());
            let centered = binary(x, mean, Binary::Sub, cap)?;
            let normed = binary(centered, inv, Binary::Mul, cap)?;
            let scaled = binary(normed, scale, Binary::Mul, cap)?;
            vec![Value::Float(binary(scaled, bias, Binary::Add, cap)?)]
        }
        Node::Sum(_) => {
            let mut parts = inputs.into_iter().flatten().map(Value::float);
            let mut total = parts
                .next()
                .ok_or_else(|| EngineError::Invalid("Sum of nothing".into()))??;
            for part in parts {
                total = binary(total, part?, Binary::Add, cap)?;
            }
            vec![Value::Float(total)]
        }
        Node::Unsqueeze(n) => {
            let axes: Vec<i64> = match &n.config {
                onnx_ir::node::unsqueeze::UnsqueezeConfig::Static(axes) => axes.clone(),
                onnx_ir::node::unsqueeze::UnsqueezeConfig::Runtime(r) => inputs
                    .get(r.input_index)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| EngineError::Invalid("Unsqueeze: no axes input".into()))?
                    .ints()?
                    .to_vec(),
            };
            let value = inputs
                .get_mut(0)
                .and_then(Option::take)
                .ok_or_else(|| EngineError::Invalid("Unsqueeze: no input".into()))?;
            let dims = value.dims();
            let shape = unsqueezed(&dims, &axes)?;
            vec![match value {
                Value::Float(f) => Value::Float(f.reshape(&shape)?),
                Value::Int { data, .. } => Value::Int { data, shape },
                Value::Dense(mut d) => {
                    d.shape = shape;
                    Value::Dense(d)
                }
            }]
        }
        Node::ConstantOfShape(n) => {
            let shape: Vec<i64> = match &n.config.shape {
                onnx_ir::node::constant_of_shape::ConstantOfShapeShape::Static(shape) => {
                    shape.clone()
                }
                onnx_ir::node::constant_of_shape::ConstantOfShapeShape::Runtime(r) => inputs
                    .get(r.input_index)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| EngineError::Invalid("ConstantOfShape: no shape input".into()))?
                    .ints()?
                    .to_vec(),
            };
            let shape: Vec<usize> = shape
                .iter()
                .map(|d| {
                    usize::try_from(*d).map_err(|_| {
                        EngineError::Invalid(format!("ConstantOfShape: dimension {d}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            let fill = n.config.value.clone();
            let is_int = fill.as_ref().is_some_and(|v| {
                !matches!(
                    v.dtype(),
                    burn::tensor::DType::F32 | burn::tensor::DType::F64 | burn::tensor::DType::F16
                )
            });
            // Refused before allocating: a few bytes of model can ask for any size.
            let count = cap.check(&shape, if is_int { I64 } else { F32 })?;
            if is_int {
                let v: Vec<i64> = fill
                    .map(|f| f.convert::<i64>().try_to_vec::<i64>())
                    .transpose()
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?
                    .unwrap_or_default();
                vec![Value::Int {
                    data: vec![v.first().copied().unwrap_or(0); count],
                    shape,
                }]
            } else {
                let v: Vec<f32> = fill
                    .map(|f| f.convert::<f32>().try_to_vec::<f32>())
                    .transpose()
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?
                    .unwrap_or_default();
                let data = burn::tensor::TensorData::new(
                    vec![v.first().copied().unwrap_or(0.0); count],
                    shape,
                );
                vec![Value::Float(Float::from_data(data, device)?)]
            }
        }
        Node::Lrn(n) => {
            let x = float_input(&mut inputs, 0, op)?;
            vec![Value::Float(nn::lrn(&n.config, x, cap)?)]
        }
        _ => return Err(EngineError::Unsupported(op.to_owned())),
    };
    Ok(out)
}
