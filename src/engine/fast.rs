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

use onnx_ir::node::padding::{AutoPad, PaddingConfig2d};

use super::EngineError;
use super::elementwise::Arithmetic;
use super::kernels::{self, Conv2d, Dense, Pool, PoolKind};
use super::limits::{F32, at_node, guarded};
use super::model::Step;
use super::ops::{Ints, Op, Reduction, Unary, Variadic};
use super::shapes::pads_2d;
use super::value::Value;

mod fuse;
mod gate;
mod residual;
mod run;
mod shuffle;
#[cfg(test)]
mod tests;
pub use run::{dense_data, dense_from_data, to_burn};

/// How one step runs.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per step, a few hundred per model; boxing would add a pointer chase"
)]
pub enum Kernel {
    /// burn tensor operations ([`super::ops::Op::run`]).
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
    /// A Mul of two values and the 1×1 convolution that alone reads the product: a
    /// squeeze-and-excite gate folded into the weights ([`gate`]).
    GatedConv {
        conv: Conv2d,
        padding: Padding,
    },
    /// A 1×1 convolution and the Add that alone reads it, computed onto the Add's other
    /// operand, then ReLU when `relu` ([`residual`]).
    ResidualConv {
        conv: Conv2d,
        padding: Padding,
        relu: bool,
    },
    Pool {
        pool: Pool,
        padding: Padding,
    },
    GlobalAveragePool,
    /// ReduceMean/Sum/Max/Min over one contiguous run of axes of a float tensor (others go
    /// to burn).
    Reduce {
        kind: kernels::Reduce,
        axes: Ints,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// `A · B` (Gemm, or MatMul with a constant 2-D B), B held here.
    Gemm(Gemm),
    /// MatMul of two computed float tensors of rank ≥ 2, batched (others go to burn).
    MatMul,
    BatchNorm {
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    /// Add, Sub, Mul or Div with broadcasting, then ReLU when `relu`; a constant float
    /// second operand is held here.
    Binary {
        op: Arithmetic,
        relu: bool,
        constant: Option<Dense>,
    },
    /// Where on a condition and two float tensors, with broadcasting.
    Where,
    Relu,
    Sigmoid,
    /// `x · sigmoid(x)` (SiLU, Swish) in place: a Sigmoid and the Mul that reads it.
    Silu,
    Erf,
    Gelu {
        tanh: bool,
    },
    /// LayerNormalization with constant scale and bias, over rows of `scale.len()` values;
    /// its inputs stay on the step, so other shapes go to burn unchanged.
    LayerNorm {
        epsilon: f32,
        scale: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// HardSwish (`x · relu6(x + 3) / 6`) or HardSigmoid (`clamp(αx + β, 0, 1)`), in place.
    Hard {
        swish: bool,
        alpha: f32,
        beta: f32,
    },
    /// Softmax over the last axis (other axes go to burn).
    Softmax {
        axis: usize,
    },
    Flatten {
        axis: usize,
    },
    Reshape(Ints),
    Concat {
        axis: usize,
    },
    /// A channel shuffle (Concat, Reshape, Transpose, Reshape, and the Split after it) as
    /// one copy ([`shuffle`]).
    Shuffle(Box<shuffle::Shuffle>),
    /// Squeeze, Unsqueeze, Transpose, Split, Shape, Size, Gather, Slice and nearest
    /// Resize: the general operator, which takes host values as they are (no conversion
    /// to burn and back).
    Layout,
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
    ) -> Result<[(usize, usize); 2], EngineError> {
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
    /// B, `k × n`: in the panel kernel's layout (scaled by `scale` there) when
    /// `panels`, else row-major for the `gemm` crate.
    b: Vec<f32>,
    panels: bool,
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

impl Gemm {
    /// A product with the row-major `k × n` weights `b`, packed into panels when the CPU
    /// runs the panel kernel.
    fn new(
        b: Vec<f32>,
        k: usize,
        n: usize,
        trans_a: bool,
        scale: f32,
        bias: Option<Vec<f32>>,
        matmul: bool,
    ) -> Self {
        let panels = kernels::panels::available();
        let (b, scale) = if panels {
            (kernels::panels::pack(&b, k, n, (n, 1), scale), 1.0)
        } else {
            (b, scale)
        };
        Self {
            b,
            panels,
            k,
            n,
            trans_a,
            scale,
            bias,
            relu: false,
            matmul,
        }
    }
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

/// A `rows × cols` weight as the row-major `k × n` B the kernel reads: `(k, n, data)`.
fn row_major_b(
    b: Vec<f32>,
    rows: usize,
    cols: usize,
    transposed: bool,
) -> (usize, usize, Vec<f32>) {
    if !transposed {
        return (rows, cols, b);
    }
    let mut t = vec![0f32; b.len()];
    for (r, row) in b.chunks_exact(cols.max(1)).enumerate() {
        for (col, v) in row.iter().enumerate() {
            t[col * rows + r] = *v;
        }
    }
    (cols, rows, t)
}

fn choose(step: &mut Step, constants: &HashMap<usize, &Value>) -> Option<HostOp> {
    let input = |i: usize| step.inputs.get(i).copied().flatten();
    let op = match &step.op {
        Op::Identity if step.outputs.len() == 1 => HostOp::Pass,
        Op::Unary(Unary::Relu) => HostOp::Relu,
        Op::Unary(Unary::Sigmoid) => HostOp::Sigmoid,
        Op::Unary(Unary::Erf) => HostOp::Erf,
        Op::Gelu { tanh } => HostOp::Gelu { tanh: *tanh },
        Op::LayerNorm {
            epsilon, outputs, ..
        } if *outputs == 1 && step.outputs.len() == 1 => {
            let (scale, _) = constant_f32(constants, input(1))?;
            let bias = match input(2) {
                None => None,
                Some(_) => Some(
                    constant_f32(constants, input(2))
                        .filter(|(b, _)| b.len() == scale.len())?
                        .0,
                ),
            };
            HostOp::LayerNorm {
                epsilon: *epsilon,
                scale,
                bias,
            }
        }
        Op::Unary(Unary::HardSwish) => HostOp::Hard {
            swish: true,
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        Op::HardSigmoid { alpha, beta } => HostOp::Hard {
            swish: false,
            alpha: *alpha,
            beta: *beta,
        },
        Op::Softmax { axis, log: false } => HostOp::Softmax { axis: *axis },
        Op::Flatten { axis } => HostOp::Flatten { axis: *axis },
        Op::Reshape(target) => HostOp::Reshape(target.clone()),
        Op::Squeeze(_)
        | Op::Unsqueeze(_)
        | Op::Transpose(_)
        | Op::Split { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::Gather { .. }
        | Op::Slice { .. } => HostOp::Layout,
        Op::Resize(r) if matches!(r.mode, onnx_ir::node::resize::ResizeMode::Nearest) => {
            HostOp::Layout
        }
        Op::Concat { axis } => HostOp::Concat { axis: *axis },
        Op::Arithmetic(op) if step.inputs.len() == 2 => {
            // A constant first operand of Add or Mul (torch exports `bias + x`) is put
            // second, so it is held here and the product is made in place in `x`.
            let (first, second) = (input(0), input(1));
            let swap = matches!(op, Arithmetic::Add | Arithmetic::Mul)
                && constant_f32(constants, second).is_none()
                && constant_f32(constants, first).is_some();
            // A constant float second operand (a scale, a bias) is converted once, here.
            let constant = constant_f32(constants, if swap { first } else { second })
                .and_then(|(data, shape)| Dense::new(data, shape).ok());
            if swap {
                step.inputs.swap(0, 1);
            }
            if constant.is_some() {
                step.inputs.truncate(1);
            }
            HostOp::Binary {
                op: *op,
                relu: false,
                constant,
            }
        }
        Op::Variadic(Variadic::Sum) if step.inputs.len() == 2 => HostOp::Binary {
            op: Arithmetic::Add,
            relu: false,
            constant: None,
        },
        Op::Where if step.inputs.len() == 3 => HostOp::Where,
        Op::GlobalPool { max: false } => HostOp::GlobalAveragePool,
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => HostOp::Reduce {
            kind: match kind {
                Reduction::Mean => kernels::Reduce::Mean,
                Reduction::Sum => kernels::Reduce::Sum,
                Reduction::Max => kernels::Reduce::Max,
                Reduction::Min => kernels::Reduce::Min,
                _ => return None,
            },
            axes: axes.clone(),
            keepdims: *keepdims,
            noop_with_empty_axes: *noop_with_empty_axes,
        },
        Op::Conv(c) => {
            let (weight, shape) = constant_f32(constants, input(1))?;
            let [cout, cin_g, kh, kw] = <[usize; 4]>::try_from(shape.as_slice()).ok()?;
            let groups = c.groups.max(1);
            let in_channels = cin_g.checked_mul(groups)?;
            if [kh, kw] != c.kernel_size
                || cout % groups != 0
                || c.stride.contains(&0)
                || c.dilation.contains(&0)
            {
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
                    in_channels,
                    groups,
                    kernel: [kh, kw],
                    stride: c.stride,
                    dilation: c.dilation,
                    relu: false,
                    hard: None,
                    packed: kernels::Packed::None,
                },
                padding: Padding::of(&c.padding, &c.auto_pad),
            }
        }
        Op::MaxPool(c) if step.outputs.len() == 1 => HostOp::Pool {
            pool: Pool {
                kernel: c.kernel_size,
                stride: c.strides,
                dilation: c.dilation,
                ceil: c.ceil_mode,
                kind: PoolKind::Max,
            },
            padding: Padding::of(&c.padding, &c.auto_pad),
        },
        Op::AvgPool(c) => HostOp::Pool {
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
        },
        Op::Gemm(c) => {
            let (b, shape) = constant_f32(constants, input(1))?;
            let [rows, cols] = <[usize; 2]>::try_from(shape.as_slice()).ok()?;
            // B is stored row-major `k × n` for the kernel, transposed once here if need be.
            let (k, n_out, b) = row_major_b(b, rows, cols, c.trans_b != 0);
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
            HostOp::Gemm(Gemm::new(b, k, n_out, c.trans_a != 0, c.alpha, bias, false))
        }
        Op::Linear { transpose_weight } => {
            let (w, shape) = constant_f32(constants, input(1))?;
            let [rows, cols] = <[usize; 2]>::try_from(shape.as_slice()).ok()?;
            let (k, n_out, b) = row_major_b(w, rows, cols, *transpose_weight);
            let bias = match input(2) {
                None => None,
                Some(_) => {
                    let (values, _) = constant_f32(constants, input(2))?;
                    match values.len() {
                        1 => Some(vec![values[0]; n_out]),
                        len if len == n_out => Some(values),
                        _ => return None,
                    }
                }
            };
            step.inputs.truncate(1);
            HostOp::Gemm(Gemm::new(b, k, n_out, false, 1.0, bias, true))
        }
        Op::MatMul => match constant_f32(constants, input(1)) {
            Some((b, shape)) if shape.len() == 2 => {
                let [k, n_out] = [shape[0], shape[1]];
                step.inputs.truncate(1);
                HostOp::Gemm(Gemm::new(b, k, n_out, false, 1.0, None, true))
            }
            _ => HostOp::MatMul,
        },
        Op::BatchNorm { epsilon } if step.outputs.len() == 1 => {
            let mut params = Vec::with_capacity(4);
            for i in 1..=4 {
                params.push(constant_f32(constants, input(i))?.0);
            }
            let channels = params[0].len();
            if params.iter().any(|p| p.len() != channels) {
                return None;
            }
            let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
            let eps = *epsilon;
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
///
/// # Errors
/// A step whose planning failed (a panic caught, named by its node).
pub(super) fn plan(
    names: &[String],
    steps: &mut Vec<Step>,
    constants: &mut [(usize, Value)],
    outputs: &HashSet<usize>,
) -> Result<(), EngineError> {
    let constant_map: HashMap<usize, &Value> = constants.iter().map(|(s, v)| (*s, v)).collect();
    for step in steps.iter_mut() {
        let chosen = guarded(|| Ok(choose(step, &constant_map)))
            .map_err(|e| at_node(&names[step.node], &step.onnx, e))?;
        if let Some(op) = chosen {
            step.last_use.truncate(step.inputs.len());
            step.kernel = Kernel::Host(op);
        }
    }
    // A float constant that only host steps read is held as host values: it no longer
    // goes through a read-back from burn at every run (an attention mask's fill values, a
    // bias that is Add's first operand).
    let burn_reads: HashSet<usize> = steps
        .iter()
        .filter(|s| matches!(s.kernel, Kernel::Burn))
        .flat_map(|s| s.inputs.iter().flatten().copied())
        .collect();
    guarded(|| {
        for (slot, value) in constants.iter_mut() {
            if let Value::Float(f) = value
                && !burn_reads.contains(slot)
            {
                let shape = f.dims();
                if let Ok(data) = f.clone().into_data().convert::<f32>().try_to_vec::<f32>()
                    && let Ok(dense) = Dense::new(data, shape)
                {
                    *value = Value::Dense(dense);
                }
            }
        }
        Ok(())
    })?;
    guarded(|| {
        fuse::silu(steps, outputs);
        fuse::gelu(steps, outputs);
        fuse::neighbours(steps, outputs);
        gate::fuse(steps, outputs);
        residual::fuse(steps, outputs);
        shuffle::fuse(steps, outputs);
        // Weights are final once fusions have folded scales into them.
        for step in steps.iter_mut() {
            if let Kernel::Host(
                HostOp::Conv { conv, .. }
                | HostOp::GatedConv { conv, .. }
                | HostOp::ResidualConv { conv, .. },
            ) = &mut step.kernel
            {
                conv.prepare();
            }
        }
        Ok(())
    })
}

impl HostOp {
    /// Bytes of the weights this step holds (packed copies, folded scales and biases).
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        let floats = match self {
            Self::Conv { conv, .. }
            | Self::GatedConv { conv, .. }
            | Self::ResidualConv { conv, .. } => {
                conv.weight.len() + conv.bias.len() + conv.packed.len()
            }
            Self::Gemm(g) => g.b.len() + g.bias.as_ref().map_or(0, Vec::len),
            Self::BatchNorm { scale, shift, .. } => scale.len() + shift.len(),
            Self::Binary {
                constant: Some(c), ..
            } => c.data.len(),
            Self::LayerNorm { scale, bias, .. } => scale.len() + bias.as_ref().map_or(0, Vec::len),
            _ => 0,
        };
        u64::try_from(floats.saturating_mul(F32)).unwrap_or(u64::MAX)
    }
}
