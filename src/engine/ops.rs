//! One function per ONNX operator, on burn tensor operations. `SUPPORTED` lists what the
//! interpreter runs; a model with any other operator is refused at load, by name.

use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use onnx_ir::Node;

use super::EngineError;
use super::elementwise::{self, Arithmetic, Compare, Logic};
use super::shapes::{pad_dims, pads_2d, resolve_reshape, unsqueezed};
use super::value::{Float, Value, each_rank, to_array, with_rank};

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

fn lift_to<const D: usize>(value: Float) -> Result<Tensor<D>, EngineError> {
    let lifted = value.lift(D)?;
    let dims = lifted.dims();
    Ok(lifted.flat().reshape(to_array::<D>(&dims)))
}

fn binary(a: Float, b: Float, op: Binary) -> Result<Float, EngineError> {
    let rank = a.rank().max(b.rank());
    let (da, db) = (a.dims(), b.dims());
    let (la, lb) = (pad_dims(&da, rank), pad_dims(&db, rank));
    for (x, y) in la.iter().zip(&lb) {
        if x != y && *x != 1 && *y != 1 {
            return Err(EngineError::Invalid(format!(
                "shapes {da:?} and {db:?} do not broadcast"
            )));
        }
    }
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
pub fn run(
    node: &Node,
    op: &str,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
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
                return Ok(vec![elementwise::int_arithmetic(a, b, arithmetic)?]);
            }
            let a = float_input(&mut inputs, 0, op)?;
            let b = float_input(&mut inputs, 1, op)?;
            vec![Value::Float(binary(a, b, kind)?)]
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
            vec![elementwise::logic(a, b, kind)?]
        }
        Node::Not(_) => vec![elementwise::not(any_input(&mut inputs, 0, op)?)?],
        Node::Where(_) => {
            let cond = any_input(&mut inputs, 0, op)?;
            let a = any_input(&mut inputs, 1, op)?;
            let b = any_input(&mut inputs, 2, op)?;
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
            let axis = n.config.axis;
            let parts: Vec<Float> = inputs
                .into_iter()
                .flatten()
                .map(Value::float)
                .collect::<Result<_, _>>()?;
            let rank = parts.first().map_or(1, Float::rank);
            if axis >= rank || parts.iter().any(|p| p.rank() != rank) {
                return Err(EngineError::Invalid(format!(
                    "Concat of ranks differing or axis {axis} >= rank {rank}"
                )));
            }
            vec![Value::Float(with_rank!(rank, D => {
                let tensors = parts.into_iter().map(lift_to::<D>).collect::<Result<Vec<_>, _>>()?;
                Tensor::cat(tensors, axis)
            }))]
        }
        Node::MatMul(_) => {
            let a = float_input(&mut inputs, 0, op)?;
            let b = float_input(&mut inputs, 1, op)?;
            vec![Value::Float(matmul(a, b)?)]
        }
        Node::Gemm(n) => {
            let config = &n.config;
            let a = float_input(&mut inputs, 0, op)?.rank2()?;
            let b = float_input(&mut inputs, 1, op)?.rank2()?;
            let a = if config.trans_a != 0 {
                a.transpose()
            } else {
                a
            };
            let b = if config.trans_b != 0 {
                b.transpose()
            } else {
                b
            };
            let mut y = a.matmul(b);
            if (config.alpha - 1.0).abs() > f32::EPSILON {
                y = y.mul_scalar(config.alpha);
            }
            if let Some(c) = optional_float(&mut inputs, 2)? {
                let c = lift_to::<2>(c)?;
                let c = if (config.beta - 1.0).abs() > f32::EPSILON {
                    c.mul_scalar(config.beta)
                } else {
                    c
                };
                y = y.add(c);
            }
            vec![Value::Float(Float::R2(y))]
        }
        Node::Conv2d(n) => {
            let c = &n.config;
            let x = float_input(&mut inputs, 0, op)?.rank4()?;
            let w = float_input(&mut inputs, 1, op)?.rank4()?;
            let bias = optional_float(&mut inputs, 2)?
                .map(Float::rank1)
                .transpose()?;
            let [_, _, h, wd] = x.dims();
            let padding = pads_2d(
                &c.padding,
                &c.auto_pad,
                [h, wd],
                c.kernel_size,
                c.stride,
                c.dilation,
            );
            let options =
                ConvOptions::new_with_padding(c.stride, padding, c.dilation, c.groups.max(1));
            vec![Value::Float(Float::R4(conv2d(x, w, bias, options)))]
        }
        Node::MaxPool2d(n) => {
            let c = &n.config;
            let x = float_input(&mut inputs, 0, op)?.rank4()?;
            let [_, _, h, w] = x.dims();
            let padding = pads_2d(
                &c.padding,
                &c.auto_pad,
                [h, w],
                c.kernel_size,
                c.strides,
                c.dilation,
            );
            let options = MaxPoolOptions {
                kernel_size: c.kernel_size,
                stride: c.strides,
                padding,
                dilation: c.dilation,
                ceil_mode: c.ceil_mode,
            };
            vec![Value::Float(Float::R4(max_pool2d(x, options)))]
        }
        Node::AveragePool2d(n) => {
            let c = &n.config;
            if c.dilation != [1, 1] {
                return Err(EngineError::Unsupported(
                    "AveragePool with dilations".into(),
                ));
            }
            let x = float_input(&mut inputs, 0, op)?.rank4()?;
            let [_, _, h, w] = x.dims();
            let padding = pads_2d(
                &c.padding,
                &c.auto_pad,
                [h, w],
                c.kernel_size,
                c.strides,
                c.dilation,
            );
            let options = AvgPoolOptions {
                kernel_size: c.kernel_size,
                stride: c.strides,
                padding,
                count_include_pad: c.count_include_pad,
                ceil_mode: c.ceil_mode,
            };
            vec![Value::Float(Float::R4(avg_pool2d(x, options)))]
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
            let centered = binary(x, mean, Binary::Sub)?;
            let normed = binary(centered, inv, Binary::Mul)?;
            let scaled = binary(normed, scale, Binary::Mul)?;
            vec![Value::Float(binary(scaled, bias, Binary::Add)?)]
        }
        Node::Sum(_) => {
            let mut parts = inputs.into_iter().flatten().map(Value::float);
            let mut total = parts
                .next()
                .ok_or_else(|| EngineError::Invalid("Sum of nothing".into()))??;
            for part in parts {
                total = binary(total, part?, Binary::Add)?;
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
            let count: usize = shape.iter().product();
            let fill = n.config.value.clone();
            let is_int = fill.as_ref().is_some_and(|v| {
                !matches!(
                    v.dtype(),
                    burn::tensor::DType::F32 | burn::tensor::DType::F64 | burn::tensor::DType::F16
                )
            });
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
            let c = &n.config;
            let x = float_input(&mut inputs, 0, op)?.rank4()?;
            let size = usize::try_from(c.size)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| EngineError::Invalid(format!("LRN size {}", c.size)))?;
            let [batch, channels, h, w] = x.dims();
            // The window sum over channels as an average pool over a [C, H*W] plane.
            let squared = x
                .clone()
                .powf_scalar(2.0)
                .reshape([batch, 1, channels, h * w]);
            let before = (size - 1) / 2;
            let options = AvgPoolOptions {
                kernel_size: [size, 1],
                stride: [1, 1],
                padding: [(before, size - 1 - before), (0, 0)],
                count_include_pad: true,
                ceil_mode: false,
            };
            let mean = avg_pool2d(squared, options).reshape([batch, channels, h, w]);
            let denominator = mean
                .mul_scalar(c.alpha)
                .add_scalar(c.bias)
                .powf_scalar(c.beta);
            vec![Value::Float(Float::R4(x.div(denominator)))]
        }
        _ => return Err(EngineError::Unsupported(op.to_owned())),
    };
    Ok(out)
}

/// NumPy matmul: rank-1 operands are promoted and the added dimension removed after.
fn matmul(a: Float, b: Float) -> Result<Float, EngineError> {
    let (a_vec, b_vec) = (a.rank() == 1, b.rank() == 1);
    let a = if a_vec { a.lift(2)? } else { a };
    let b = if b_vec {
        let k = b.dims()[0];
        b.reshape(&[k, 1])?
    } else {
        b
    };
    let rank = a.rank().max(b.rank());
    let (ad, bd) = (a.dims(), b.dims());
    if ad[ad.len() - 1] != bd[bd.len() - 2] {
        return Err(EngineError::Invalid(format!(
            "MatMul of {ad:?} and {bd:?}: inner dimensions differ"
        )));
    }
    let out = with_rank!(rank, D => lift_to::<D>(a)?.matmul(lift_to::<D>(b)?));
    let mut dims = out.dims();
    if b_vec {
        dims.pop();
    }
    if a_vec {
        let at = if b_vec {
            dims.len() - 1
        } else {
            dims.len() - 2
        };
        dims.remove(at);
    }
    if dims.is_empty() {
        dims.push(1);
    }
    out.reshape(&dims)
}
