//! The CPU plan: which steps run on cairn's own kernels ([`super::kernels`]) instead of
//! burn ops, and which neighbours fuse (Conv ← BatchNormalization folded into the weights,
//! Conv/Gemm/MatMul/Add ← Relu as an epilogue).
//!
//! Invariants:
//! - Only CPU plans hold host values ([`Value::Dense`]); a step on the general path gets
//!   them converted to burn tensors first, so every operator sees the types it expects.
//! - A host step keeps its own copy of the constant operands it absorbed (packed weights,
//!   folded biases); those inputs are dropped from the step, so no run clones them.
//! - A fusion only takes a value that exactly one step reads and that is no graph output.

use std::collections::{HashMap, HashSet};

use burn::tensor::{DType, Device, TensorData};
use onnx_ir::Node;
use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

use super::EngineError;
use super::kernels::{self, Conv2d, Dense, Pool, PoolKind};
use super::model::Step;
use super::ops;
use super::shapes::{pads_2d, resolve_reshape};
use super::value::{Float, Value};

/// How one step runs.
#[derive(Debug, Clone)]
pub enum Kernel {
    /// burn tensor operations ([`ops::run`]).
    Burn,
    Host(HostOp),
}

/// A step on cairn's own CPU kernels.
#[derive(Debug, Clone)]
pub enum HostOp {
    /// Passes its input through (Identity, Dropout at inference).
    Pass,
    Conv {
        conv: Conv2d,
        padding: Padding,
    },
    Pool {
        pool: Pool,
        padding: Padding,
    },
    GlobalAveragePool,
    /// `A · B` (Gemm, or MatMul with a constant 2-D B), B held here.
    Gemm(Gemm),
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    Add {
        relu: bool,
    },
    Relu,
    Softmax,
    Flatten {
        axis: usize,
    },
    Reshape,
    Concat {
        axis: usize,
    },
}

/// A window op's padding, resolved against the input size at run time (SAME_* depends on
/// it).
#[derive(Debug, Clone)]
pub struct Padding {
    padding: PaddingConfig2d,
    auto_pad: AutoPad,
}

impl Padding {
    fn of(padding: &PaddingConfig2d, auto_pad: &AutoPad) -> Self {
        Self {
            padding: padding.clone(),
            auto_pad: auto_pad.clone(),
        }
    }

    fn resolve(
        &self,
        x: &Dense,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> [(usize, usize); 2] {
        let input = match x.shape.as_slice() {
            [_, _, h, w] => [*h, *w],
            _ => [0, 0],
        };
        pads_2d(
            &self.padding,
            &self.auto_pad,
            input,
            kernel,
            stride,
            dilation,
        )
    }
}

/// `Y = scale · op(A) · B + bias`, then ReLU when fused.
#[derive(Debug, Clone)]
pub struct Gemm {
    /// B, `k × n`, read through `b_strides` (row, column).
    b: Vec<f32>,
    b_strides: (usize, usize),
    k: usize,
    n: usize,
    trans_a: bool,
    scale: f32,
    /// `beta · C` as one row of `n` (C broadcast over rows), if any.
    bias: Option<Vec<f32>>,
    relu: bool,
    /// MatMul semantics: A of any rank ≥ 2, leading dimensions kept.
    matmul: bool,
}

/// Host f32 values of a constant operand, or `None` when it is not a float constant.
fn constant_f32(
    constants: &HashMap<usize, &Value>,
    slot: Option<usize>,
) -> Option<(Vec<f32>, Vec<usize>)> {
    match constants.get(&slot?)? {
        Value::Float(f) => {
            let shape = f.dims();
            let data = f
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .ok()?;
            Some((data, shape))
        }
        _ => None,
    }
}

fn choose(node: &Node, step: &mut Step, constants: &HashMap<usize, &Value>) -> Option<HostOp> {
    let input = |i: usize| step.inputs.get(i).copied().flatten();
    let op = match node {
        Node::Identity(_) | Node::Dropout(_) if step.outputs.len() == 1 => HostOp::Pass,
        Node::Relu(_) => HostOp::Relu,
        Node::Softmax(_) => HostOp::Softmax,
        Node::Flatten(n) => HostOp::Flatten {
            axis: n.config.axis,
        },
        Node::Reshape(_) => HostOp::Reshape,
        Node::Concat(n) => HostOp::Concat {
            axis: n.config.axis,
        },
        Node::Add(_) => HostOp::Add { relu: false },
        Node::Sum(_) if step.inputs.len() == 2 => HostOp::Add { relu: false },
        Node::GlobalAveragePool(_) => HostOp::GlobalAveragePool,
        Node::Conv2d(n) => {
            let c = &n.config;
            let (weight, shape) = constant_f32(constants, input(1))?;
            let [cout, cin_g, kh, kw] = <[usize; 4]>::try_from(shape.as_slice()).ok()?;
            let groups = c.groups.max(1);
            if [kh, kw] != c.kernel_size || cout % groups != 0 || c.stride.contains(&0) {
                return None;
            }
            let bias = match input(2) {
                None => vec![0.0; cout],
                Some(_) => {
                    constant_f32(constants, input(2))
                        .filter(|(b, _)| b.len() == cout)?
                        .0
                }
            };
            step.inputs.truncate(1);
            HostOp::Conv {
                conv: Conv2d {
                    weight,
                    bias,
                    out_channels: cout,
                    in_channels: cin_g * groups,
                    groups,
                    kernel: [kh, kw],
                    stride: c.stride,
                    dilation: c.dilation,
                    relu: false,
                },
                padding: Padding::of(&c.padding, &c.auto_pad),
            }
        }
        Node::MaxPool2d(n) if step.outputs.len() == 1 => {
            let c = &n.config;
            HostOp::Pool {
                pool: Pool {
                    kernel: c.kernel_size,
                    stride: c.strides,
                    dilation: c.dilation,
                    ceil: c.ceil_mode,
                    kind: PoolKind::Max,
                },
                padding: Padding::of(&c.padding, &c.auto_pad),
            }
        }
        Node::AveragePool2d(n) => {
            let c = &n.config;
            HostOp::Pool {
                pool: Pool {
                    kernel: c.kernel_size,
                    stride: c.strides,
                    dilation: c.dilation,
                    ceil: c.ceil_mode,
                    kind: PoolKind::Average {
                        count_include_pad: c.count_include_pad,
                    },
                },
                padding: Padding::of(&c.padding, &c.auto_pad),
            }
        }
        Node::Gemm(n) => {
            let c = &n.config;
            let (b, shape) = constant_f32(constants, input(1))?;
            let [rows, cols] = <[usize; 2]>::try_from(shape.as_slice()).ok()?;
            // B is stored row-major `k × n` for the kernel, transposed once here if need be.
            let (k, n_out, b) = if c.trans_b != 0 {
                let mut t = vec![0f32; b.len()];
                for (r, row) in b.chunks_exact(cols).enumerate() {
                    for (col, v) in row.iter().enumerate() {
                        t[col * rows + r] = *v;
                    }
                }
                (cols, rows, t)
            } else {
                (rows, cols, b)
            };
            let b_strides = (n_out, 1);
            let bias = match input(2) {
                None => None,
                Some(_) => {
                    let (values, shape) = constant_f32(constants, input(2))?;
                    let row: Vec<f32> = match (values.len(), shape.as_slice()) {
                        (1, _) => vec![values[0]; n_out],
                        (len, [_] | [1, _]) if len == n_out => values,
                        _ => return None,
                    };
                    Some(row.into_iter().map(|v| v * c.beta).collect())
                }
            };
            step.inputs.truncate(1);
            HostOp::Gemm(Gemm {
                b,
                b_strides,
                k,
                n: n_out,
                trans_a: c.trans_a != 0,
                scale: c.alpha,
                bias,
                relu: false,
                matmul: false,
            })
        }
        Node::MatMul(_) => {
            let (b, shape) = constant_f32(constants, input(1))?;
            let [k, n_out] = <[usize; 2]>::try_from(shape.as_slice()).ok()?;
            step.inputs.truncate(1);
            HostOp::Gemm(Gemm {
                b,
                b_strides: (n_out, 1),
                k,
                n: n_out,
                trans_a: false,
                scale: 1.0,
                bias: None,
                relu: false,
                matmul: true,
            })
        }
        Node::BatchNormalization(n) if step.outputs.len() == 1 => {
            let epsilon = match &n.config {
                onnx_ir::node::batch_norm::BatchNormConfig::Static(c) => c.epsilon,
                onnx_ir::node::batch_norm::BatchNormConfig::Runtime(c) => c.epsilon,
            };
            let mut params = Vec::with_capacity(4);
            for i in 1..=4 {
                params.push(constant_f32(constants, input(i))?.0);
            }
            let channels = params[0].len();
            if params.iter().any(|p| p.len() != channels) {
                return None;
            }
            let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
            #[expect(clippy::cast_possible_truncation, reason = "epsilon of an f32 model")]
            let eps = epsilon as f32;
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var)
                .map(|(g, v)| g / (v + eps).sqrt())
                .collect();
            let shift = beta
                .iter()
                .zip(mean)
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            step.inputs.truncate(1);
            HostOp::BatchNorm {
                scale,
                shift,
                relu: false,
            }
        }
        _ => return None,
    };
    Some(op)
}

/// Picks host kernels for a CPU plan, then fuses neighbours.
pub(super) fn plan(
    nodes: &[Node],
    steps: &mut Vec<Step>,
    constants: &[(usize, Value)],
    outputs: &HashSet<usize>,
) {
    let constant_map: HashMap<usize, &Value> = constants.iter().map(|(s, v)| (*s, v)).collect();
    for step in steps.iter_mut() {
        if let Some(op) = choose(&nodes[step.node], step, &constant_map) {
            step.last_use.truncate(step.inputs.len());
            step.kernel = Kernel::Host(op);
        }
    }
    fuse(steps, outputs);
}

/// Folds a step into its producer where the producer's kernel can absorb it.
fn fuse(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for slot in step.inputs.iter().flatten() {
            readers.entry(*slot).or_default().push(i);
        }
    }
    let mut removed = vec![false; steps.len()];
    for i in 0..steps.len() {
        if removed[i] {
            continue;
        }
        while let [out] = steps[i].outputs[..] {
            if outputs.contains(&out) {
                break;
            }
            let Some([j]) = readers.get(&out).map(Vec::as_slice) else {
                break;
            };
            let j = *j;
            let Kernel::Host(next) = steps[j].kernel.clone() else {
                break;
            };
            if steps[j].inputs.first() != Some(&Some(out)) || steps[j].inputs.len() != 1 {
                break;
            }
            let Kernel::Host(current) = &mut steps[i].kernel else {
                break;
            };
            if !absorb(current, &next) {
                break;
            }
            let new_outputs = steps[j].outputs.clone();
            steps[i].outputs = new_outputs;
            removed[j] = true;
        }
    }
    let mut index = 0;
    steps.retain(|_| {
        index += 1;
        !removed[index - 1]
    });
}

/// Whether `current` took over `next` (its only reader).
fn absorb(current: &mut HostOp, next: &HostOp) -> bool {
    match (current, next) {
        (
            HostOp::Conv { conv, .. },
            HostOp::BatchNorm {
                scale,
                shift,
                relu: false,
            },
        ) if !conv.relu && scale.len() == conv.out_channels => {
            let per_channel = conv.weight.len() / conv.out_channels;
            for (c, row) in conv.weight.chunks_exact_mut(per_channel).enumerate() {
                row.iter_mut().for_each(|w| *w *= scale[c]);
                conv.bias[c] = conv.bias[c] * scale[c] + shift[c];
            }
            true
        }
        (HostOp::Conv { conv, .. }, HostOp::Relu) if !conv.relu => {
            conv.relu = true;
            true
        }
        (HostOp::Gemm(g), HostOp::Relu) if !g.relu => {
            g.relu = true;
            true
        }
        (HostOp::Add { relu }, HostOp::Relu) | (HostOp::BatchNorm { relu, .. }, HostOp::Relu)
            if !*relu =>
        {
            *relu = true;
            true
        }
        _ => false,
    }
}

/// A host value from whatever a step received.
fn dense(value: Value) -> Result<Dense, EngineError> {
    match value {
        Value::Dense(d) => Ok(d),
        Value::Float(f) => {
            let shape = f.dims();
            let data = f
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| EngineError::Internal(format!("{e:?}")))?;
            Dense::new(data, shape)
        }
        Value::Int { shape, .. } => Err(EngineError::Invalid(format!(
            "expected a float tensor, got an int64 tensor of shape {shape:?}"
        ))),
    }
}

/// Host data as `TensorData` without a copy.
#[must_use]
pub fn dense_data(d: Dense) -> TensorData {
    TensorData::new(d.data, d.shape)
}

/// Host f32 input data as a host value (a copy only when the bytes are not f32).
///
/// # Errors
/// The data cannot be read as f32.
pub fn dense_from_data(data: TensorData) -> Result<Value, EngineError> {
    let shape = data.shape().to_vec();
    let data = if data.dtype() == DType::F32 {
        data
    } else {
        data.convert::<f32>()
    };
    // Bytes from a request body need not be 4-aligned; those are read value by value.
    let aligned = data
        .as_bytes()
        .as_ptr()
        .align_offset(std::mem::align_of::<f32>())
        == 0;
    let values = if aligned {
        data.try_into_vec::<f32>()
            .map_err(|e| EngineError::Internal(format!("{e:?}")))?
    } else {
        data.iter::<f32>().collect()
    };
    let shape = if shape.is_empty() { vec![1] } else { shape };
    Ok(Value::Dense(Dense::new(values, shape)?))
}

/// Converts host values to burn tensors for a step on the general path.
///
/// # Errors
/// A rank burn cannot hold.
pub fn to_burn(
    args: Vec<Option<Value>>,
    device: &Device,
) -> Result<Vec<Option<Value>>, EngineError> {
    args.into_iter()
        .map(|arg| match arg {
            Some(Value::Dense(d)) => {
                Ok(Some(Value::Float(Float::from_data(dense_data(d), device)?)))
            }
            other => Ok(other),
        })
        .collect()
}

fn take(args: &mut [Option<Value>], i: usize, op: &str) -> Result<Value, EngineError> {
    args.get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| EngineError::Invalid(format!("{op}: input {i} is missing")))
}

impl HostOp {
    /// Runs the step; cases outside the kernel's reach go to burn ops unchanged.
    ///
    /// # Errors
    /// Bad shapes, as the operator would report them.
    pub fn run(
        &self,
        node: &Node,
        op: &str,
        mut args: Vec<Option<Value>>,
        device: &Device,
    ) -> Result<Vec<Value>, EngineError> {
        let general = |args: Vec<Option<Value>>| ops::run(node, op, to_burn(args, device)?, device);
        let out = match self {
            Self::Pass => take(&mut args, 0, op)?,
            Self::Relu => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                kernels::relu(&mut x.data);
                Value::Dense(x)
            }
            Self::Softmax => {
                let x = take(&mut args, 0, op)?;
                let axis = match node {
                    Node::Softmax(n) => n.config.axis,
                    _ => usize::MAX,
                };
                let dims = x.dims();
                if axis + 1 != dims.len() {
                    return general(vec![Some(x)]);
                }
                let mut x = dense(x)?;
                kernels::softmax_rows(&mut x.data, dims[axis]);
                Value::Dense(x)
            }
            Self::Flatten { axis } => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                let axis = (*axis).min(x.shape.len());
                let outer = x.shape[..axis].iter().product();
                let inner = x.shape[axis..].iter().product();
                x.shape = vec![outer, inner];
                Value::Dense(x)
            }
            Self::Reshape => {
                let target: Vec<i64> = match node {
                    Node::Reshape(n) => match &n.config.shape {
                        onnx_ir::node::reshape::ReshapeInput::Static(shape) => shape.clone(),
                        onnx_ir::node::reshape::ReshapeInput::Runtime(r) => args
                            .get(r.input_index)
                            .and_then(Option::as_ref)
                            .ok_or_else(|| EngineError::Invalid("Reshape: no shape input".into()))?
                            .ints()?
                            .to_vec(),
                    },
                    _ => return general(args),
                };
                let x = take(&mut args, 0, op)?;
                if matches!(x, Value::Int { .. }) {
                    args[0] = Some(x);
                    return general(args);
                }
                let mut x = dense(x)?;
                let shape = resolve_reshape(&x.shape, &target)?;
                if shape.is_empty() || shape.iter().product::<usize>() != x.data.len() {
                    return general(vec![
                        Some(Value::Dense(x)),
                        args.get_mut(1).and_then(Option::take),
                    ]);
                }
                x.shape = shape;
                Value::Dense(x)
            }
            Self::Concat { axis } => {
                if args
                    .iter()
                    .flatten()
                    .any(|v| matches!(v, Value::Int { .. }))
                {
                    return general(args);
                }
                let parts: Vec<Dense> = args
                    .into_iter()
                    .flatten()
                    .map(dense)
                    .collect::<Result<_, _>>()?;
                Value::Dense(concat(parts, *axis)?)
            }
            Self::Add { relu } => {
                let a = take(&mut args, 0, op)?;
                let b = take(&mut args, 1, op)?;
                if a.dims() != b.dims()
                    || matches!(a, Value::Int { .. })
                    || matches!(b, Value::Int { .. })
                {
                    let mut out = general(vec![Some(a), Some(b)])?;
                    if *relu && let Some(first) = out.first_mut() {
                        let mut d = dense(first.clone())?;
                        kernels::relu(&mut d.data);
                        *first = Value::Dense(d);
                    }
                    return Ok(out);
                }
                let mut a = dense(a)?;
                let b = dense(b)?;
                for (x, y) in a.data.iter_mut().zip(&b.data) {
                    *x += y;
                }
                if *relu {
                    kernels::relu(&mut a.data);
                }
                Value::Dense(a)
            }
            Self::GlobalAveragePool => {
                let x = take(&mut args, 0, op)?;
                if x.dims().len() != 4 {
                    return general(vec![Some(x)]);
                }
                Value::Dense(kernels::global_average_pool(&dense(x)?)?)
            }
            Self::BatchNorm { scale, shift, relu } => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                if x.shape.len() < 2 || x.shape[1] != scale.len() {
                    return Err(EngineError::Invalid(format!(
                        "BatchNormalization: input {:?} for {} channels",
                        x.shape,
                        scale.len()
                    )));
                }
                let plane: usize = x.shape[2..].iter().product();
                let channels = scale.len();
                if plane > 0 {
                    for (i, chunk) in x.data.chunks_exact_mut(plane).enumerate() {
                        let c = i % channels;
                        for v in chunk.iter_mut() {
                            *v = *v * scale[c] + shift[c];
                        }
                        if *relu {
                            kernels::relu(chunk);
                        }
                    }
                }
                Value::Dense(x)
            }
            Self::Conv { conv, padding } => {
                let x = dense(take(&mut args, 0, op)?)?;
                let pads = padding.resolve(&x, conv.kernel, conv.stride, conv.dilation);
                Value::Dense(conv.run(&x, pads)?)
            }
            Self::Pool { pool, padding } => {
                let x = dense(take(&mut args, 0, op)?)?;
                let pads = padding.resolve(&x, pool.kernel, pool.stride, pool.dilation);
                Value::Dense(pool.run(&x, pads)?)
            }
            Self::Gemm(g) => Value::Dense(g.run(dense(take(&mut args, 0, op)?)?)?),
        };
        Ok(vec![out])
    }
}

impl Gemm {
    fn run(&self, a: Dense) -> Result<Dense, EngineError> {
        let (m, k, a_strides, mut shape) = if self.matmul {
            let rank = a.shape.len();
            if rank == 0 {
                return Err(EngineError::Invalid("MatMul of a scalar".into()));
            }
            // A vector A is one row, and its dimension leaves the result (NumPy rules).
            let k = a.shape[rank - 1];
            let m: usize = a.shape[..rank - 1].iter().product();
            (m, k, (k, 1), a.shape[..rank - 1].to_vec())
        } else {
            let [rows, cols] = <[usize; 2]>::try_from(a.shape.as_slice()).map_err(|_| {
                EngineError::Invalid(format!("Gemm: A must be rank 2, got {:?}", a.shape))
            })?;
            if self.trans_a {
                (cols, rows, (1, cols), vec![cols])
            } else {
                (rows, cols, (cols, 1), vec![rows])
            }
        };
        if k != self.k {
            return Err(EngineError::Invalid(format!(
                "{}: A {:?} has inner dimension {k}, B has {}",
                if self.matmul { "MatMul" } else { "Gemm" },
                a.shape,
                self.k
            )));
        }
        let mut out = vec![0f32; m * self.n];
        if let Some(bias) = &self.bias {
            for row in out.chunks_exact_mut(self.n) {
                row.copy_from_slice(bias);
            }
        }
        kernels::matmul(
            m,
            self.n,
            k,
            &mut out,
            (&a.data, a_strides.0, a_strides.1),
            (&self.b, self.b_strides.0, self.b_strides.1),
            self.bias.is_some(),
            self.scale,
        );
        if self.relu {
            kernels::relu(&mut out);
        }
        shape.push(self.n);
        Dense::new(out, shape)
    }
}

fn concat(parts: Vec<Dense>, axis: usize) -> Result<Dense, EngineError> {
    let first = parts
        .first()
        .ok_or_else(|| EngineError::Invalid("Concat of nothing".into()))?;
    let rank = first.shape.len();
    if axis >= rank {
        return Err(EngineError::Invalid(format!(
            "Concat axis {axis} on rank {rank}"
        )));
    }
    for p in &parts {
        if p.shape.len() != rank
            || p.shape
                .iter()
                .enumerate()
                .any(|(i, d)| i != axis && *d != first.shape[i])
        {
            return Err(EngineError::Invalid(format!(
                "Concat of shapes {:?} and {:?} on axis {axis}",
                first.shape, p.shape
            )));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let chunks: Vec<usize> = parts
        .iter()
        .map(|p| p.shape[axis..].iter().product())
        .collect();
    for o in 0..outer {
        for (p, chunk) in parts.iter().zip(&chunks) {
            out.extend_from_slice(&p.data[o * chunk..][..*chunk]);
        }
    }
    Dense::new(out, shape)
}
