//! The operator table. Each ONNX node is translated once, at load ([`translate`]), into a
//! typed [`Op`]: its attributes resolved and validated, its runtime operands named by input
//! position. "Supported" means "translated": a node [`translate`] refuses is reported by
//! its ONNX name, and execution never looks at the parsed node again.
//!
//! Operators live by family: [`elementwise`] (arithmetic, activations, comparisons, casts),
//! [`nn`] (convolution, pooling, products, normalization), [`shape`] (data movement and
//! shape arithmetic), [`reduce`] (reductions, softmax), [`resize`]. Float tensors run on
//! burn (the CPU or the GPU); integer tensors (shapes, indices) on the host, through
//! [`host`]. The CPU plan may replace a step's burn path with cairn's own kernels
//! ([`super::fast`]); that choice is made on the `Op`, too.

use burn::tensor::{DType, Device, Tensor, TensorData};
use onnx_ir::node::avg_pool2d::AvgPool2dConfig;
use onnx_ir::node::conv2d::Conv2dConfig;
use onnx_ir::node::gemm::GemmConfig;
use onnx_ir::node::lrn::LrnConfig;
use onnx_ir::node::max_pool2d::MaxPool2dConfig;

use super::EngineError;
use super::elementwise::{Arithmetic, Compare, Logic, broadcast_shape};
use super::limits::{Cap, F32};
use super::value::{Float, Value, to_array, with_rank};

pub mod attention;
mod attrs;
mod einsum;
pub mod elementwise;
mod generate;
pub mod host;
pub mod index;
pub mod nn;
pub mod norm;
pub mod pad;
pub mod reduce;
pub mod resize;
pub mod shape;
pub mod small;
mod translate;
mod volume;

pub use attrs::onnx_name;
pub use translate::translate;

/// An operand that is either fixed in the model or read from one of the node's inputs at
/// run time (ONNX moved many attributes to inputs: shapes, axes, pads, sizes).
#[derive(Debug, Clone, PartialEq)]
pub enum Ints {
    Static(Vec<i64>),
    Input(usize),
}

impl Ints {
    /// The values, from the model or from input `i`.
    ///
    /// # Errors
    /// The input is absent or not an integer tensor.
    pub fn read(&self, inputs: &[Option<Value>], what: &str) -> Result<Vec<i64>, EngineError> {
        match self {
            Self::Static(v) => Ok(v.clone()),
            Self::Input(i) => Ok(inputs
                .get(*i)
                .and_then(Option::as_ref)
                .ok_or_else(|| EngineError::Invalid(format!("{what}: input {i} is missing")))?
                .ints()?
                .to_vec()),
        }
    }

    /// [`Ints::read`] of an optional input: `None` when the node left it out.
    ///
    /// # Errors
    /// The input is given but not an integer tensor.
    pub fn read_optional(
        &self,
        inputs: &[Option<Value>],
        what: &str,
    ) -> Result<Option<Vec<i64>>, EngineError> {
        match self {
            Self::Input(i) if inputs.get(*i).is_none_or(Option::is_none) => Ok(None),
            other => other.read(inputs, what).map(Some),
        }
    }
}

/// A scalar operand (Range's bounds), fixed or from an input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Input(usize),
}

/// Where a Clip bound comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    None,
    Static(f32),
    Input(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum PadAmounts {
    Static(Vec<(usize, usize)>),
    Input { pads: usize, axes: Option<Ints> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// Float functions of one tensor, element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Erf,
    Floor,
    Ceil,
    Round,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Sign,
    Softplus,
    Softsign,
    HardSwish,
    Mish,
}

/// Reductions over axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// Resize's settings, resolved.
#[derive(Debug, Clone)]
pub struct ResizeOp {
    pub mode: onnx_ir::node::resize::ResizeMode,
    pub transform: onnx_ir::node::resize::CoordinateTransformMode,
    pub nearest: onnx_ir::node::resize::NearestMode,
    pub cubic_a: f32,
    pub exclude_outside: bool,
    pub extrapolation: f32,
    pub scales: Option<Floats>,
    pub sizes: Option<Ints>,
}

/// Float operands fixed in the model or read from an input (Resize's scales).
#[derive(Debug, Clone, PartialEq)]
pub enum Floats {
    Static(Vec<f32>),
    Input(usize),
}

/// One translated node.
#[derive(Debug, Clone)]
pub enum Op {
    // Element-wise (`elementwise`).
    /// Identity and Dropout (inference).
    Identity,
    Constant(TensorData),
    Arithmetic(Arithmetic),
    Pow,
    Mod {
        fmod: bool,
    },
    Compare(Compare),
    Logic(Logic),
    Not,
    Where,
    /// Cast and CastLike (whose target type onnx-ir resolves).
    Cast(DType),
    Unary(Unary),
    LeakyRelu(f32),
    Shrink {
        lambda: f32,
        bias: f32,
    },
    Elu(f32),
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu(f32),
    ThresholdedRelu(f32),
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    Gelu {
        tanh: bool,
    },
    PRelu,
    Clip {
        min: Bound,
        max: Bound,
    },
    IsNaN,
    /// `Where(IsNaN(x), value, x)` fused by the GPU plan ([`crate::engine::fold`]):
    /// exporters guard attention's softmax this way, and unfused it reads the tensor back.
    ReplaceNan(f32),
    IsInf {
        negative: bool,
        positive: bool,
    },
    /// Variadic Max / Min / Sum / Mean.
    Variadic(Variadic),
    // Neural-network layers (`nn`).
    Conv(Conv2dConfig),
    /// A 1-D operator run as 2-D on a height of one.
    Conv1d(Conv2dConfig),
    /// Einsum (`ops/einsum.rs`): the equation parsed at load.
    Einsum(Box<einsum::Equation>),
    /// Conv over volumes (`ops/volume.rs`).
    Conv3d(Box<onnx_ir::node::conv3d::Conv3dConfig>),
    ConvTranspose(Box<nn::ConvTransposeOp>),
    MaxPool(MaxPool2dConfig),
    MaxPool1d(MaxPool2dConfig),
    AvgPool(AvgPool2dConfig),
    AvgPool1d(AvgPool2dConfig),
    GlobalPool {
        max: bool,
    },
    Gemm(GemmConfig),
    MatMul,
    /// onnx-ir's rewrite of Gemm / MatMul + Add with constant weights: `x · W (+ b)`.
    Linear {
        transpose_weight: bool,
    },
    BatchNorm {
        epsilon: f32,
    },
    LayerNorm {
        axis: i64,
        epsilon: f32,
        /// 1, or 3 with the optional Mean and InvStdDev outputs.
        outputs: usize,
    },
    InstanceNorm {
        epsilon: f32,
    },
    Lrn(LrnConfig),
    LpNorm {
        axis: usize,
        p: i64,
    },
    GroupNorm {
        groups: usize,
        epsilon: f32,
    },
    MeanVarianceNorm {
        axes: Vec<usize>,
    },
    NonZero,
    Softmax {
        axis: usize,
        log: bool,
    },
    // Data movement and shapes (`shape`).
    Flatten {
        axis: usize,
    },
    Reshape(Ints),
    Transpose(Vec<usize>),
    Concat {
        axis: usize,
    },
    Unsqueeze(Ints),
    Squeeze(Option<Ints>),
    Shape {
        start: usize,
        end: usize,
    },
    Size,
    Gather {
        axis: usize,
    },
    GatherElements {
        axis: usize,
    },
    Slice {
        starts: Ints,
        ends: Ints,
        axes: Option<Ints>,
        steps: Option<Ints>,
    },
    Expand(Ints),
    Tile(Ints),
    Range {
        start: Scalar,
        limit: Scalar,
        delta: Scalar,
    },
    Split {
        axis: usize,
        sizes: Option<Ints>,
        outputs: usize,
    },
    ConstantOfShape {
        shape: Ints,
        fill: Option<TensorData>,
    },
    Resize(Box<ResizeOp>),
    Attention(Box<attention::AttentionOp>),
    Pad {
        /// `(begin, end)` per axis, or read at run time: input `pads` (ONNX order: all
        /// begins then all ends, over `axes` when given).
        pads: PadAmounts,
        value: Bound,
        mode: PadMode,
    },
    DepthToSpace {
        block: usize,
        /// CRD (column-row-depth) order; DCR otherwise.
        crd: bool,
    },
    SpaceToDepth {
        block: usize,
    },
    // Computed on the host whatever the device (`small`).
    Trilu {
        upper: bool,
        /// The diagonal offset, or `None` to read it from input 1 (0 when absent).
        k: Option<i64>,
    },
    Hardmax {
        axis: usize,
    },
    TopK {
        axis: usize,
        k: Option<usize>,
        largest: bool,
        sorted: bool,
    },
    OneHot {
        depth: Option<usize>,
        values: Option<[f32; 2]>,
        axis: i64,
    },
    EyeLike {
        k: i64,
        dtype: Option<DType>,
    },
    CumSum {
        axis: Option<usize>,
        exclusive: bool,
        reverse: bool,
    },
    /// ScatterElements (`nd` false) and ScatterND; reduction 0 none, 1 add, 2 mul, 3 max,
    /// 4 min.
    Scatter {
        nd: bool,
        axis: usize,
        reduction: u8,
    },
    BitShift {
        left: bool,
    },
    // Reductions (`reduce`).
    Reduce {
        kind: Reduction,
        axes: Ints,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    ArgExtreme {
        max: bool,
        axis: usize,
        keepdims: bool,
        last: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variadic {
    Max,
    Min,
    Sum,
    Mean,
}

impl Op {
    /// Runs the operator. `inputs[i]` is `None` for an absent optional input. Every
    /// output that can outgrow the inputs is checked against `cap` before it is allocated.
    ///
    /// # Errors
    /// Shapes or element types the operator cannot take.
    pub fn run(
        &self,
        inputs: Vec<Option<Value>>,
        device: &Device,
        cap: Cap,
    ) -> Result<Vec<Value>, EngineError> {
        match self {
            Self::Conv(_)
            | Self::Conv1d(_)
            | Self::Conv3d(_)
            | Self::ConvTranspose(_)
            | Self::MaxPool(_)
            | Self::MaxPool1d(_)
            | Self::AvgPool(_)
            | Self::AvgPool1d(_)
            | Self::GlobalPool { .. }
            | Self::Gemm(_)
            | Self::MatMul
            | Self::Linear { .. }
            | Self::Lrn(_) => nn::run(self, inputs, cap),
            Self::BatchNorm { .. }
            | Self::LayerNorm { .. }
            | Self::InstanceNorm { .. }
            | Self::LpNorm { .. }
            | Self::GroupNorm { .. }
            | Self::MeanVarianceNorm { .. } => norm::run(self, inputs, cap),
            Self::Trilu { .. }
            | Self::Hardmax { .. }
            | Self::TopK { .. }
            | Self::OneHot { .. }
            | Self::EyeLike { .. }
            | Self::CumSum { .. }
            | Self::Scatter { .. }
            | Self::BitShift { .. }
            | Self::NonZero => small::run(self, inputs, device, cap),
            Self::Softmax { .. } | Self::Reduce { .. } | Self::ArgExtreme { .. } => {
                reduce::run(self, inputs, device, cap)
            }
            Self::Flatten { .. }
            | Self::Reshape(_)
            | Self::Transpose(_)
            | Self::Concat { .. }
            | Self::Unsqueeze(_)
            | Self::Squeeze(_)
            | Self::Shape { .. }
            | Self::Size
            | Self::Gather { .. }
            | Self::GatherElements { .. }
            | Self::Slice { .. }
            | Self::Expand(_)
            | Self::Tile(_)
            | Self::Range { .. }
            | Self::Split { .. }
            | Self::ConstantOfShape { .. }
            | Self::DepthToSpace { .. }
            | Self::Pad { .. }
            | Self::SpaceToDepth { .. } => shape::run(self, inputs, device, cap),
            Self::Resize(r) => resize::run(r, inputs, device, cap),
            Self::Attention(a) => attention::run(a, inputs, cap),
            Self::Einsum(equation) => einsum::run(equation, inputs, cap),
            _ => elementwise::run(self, inputs, device, cap),
        }
    }
}

/// Takes input `i` as a float tensor.
pub(crate) fn float_input(inputs: &mut [Option<Value>], i: usize) -> Result<Float, EngineError> {
    any_input(inputs, i)?.float()
}

/// Takes input `i` whatever its element type.
pub(crate) fn any_input(inputs: &mut [Option<Value>], i: usize) -> Result<Value, EngineError> {
    inputs
        .get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| EngineError::Invalid(format!("input {i} is missing")))
}

pub(crate) fn optional_float(
    inputs: &mut [Option<Value>],
    i: usize,
) -> Result<Option<Float>, EngineError> {
    inputs
        .get_mut(i)
        .and_then(Option::take)
        .map(Value::float)
        .transpose()
}

/// The tensor at rank `D`, left-padded with ones (the caller checked `D` ≥ its rank).
pub(crate) fn lift_to<const D: usize>(value: Float) -> Result<Tensor<D>, EngineError> {
    let dims = value.dims();
    if dims.len() > D {
        return Err(EngineError::Invalid(format!(
            "cannot lift rank {} to {D}",
            dims.len()
        )));
    }
    // Leading ones only: a strided tensor keeps its layout (no copy on the GPU).
    let mut shape = [1usize; D];
    shape[D - dims.len()..].copy_from_slice(&dims);
    Ok(value.to_rank::<D>(shape))
}

/// Float functions of two tensors, with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatBinary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
}

impl From<Arithmetic> for FloatBinary {
    fn from(op: Arithmetic) -> Self {
        match op {
            Arithmetic::Add => Self::Add,
            Arithmetic::Sub => Self::Sub,
            Arithmetic::Mul => Self::Mul,
            Arithmetic::Div => Self::Div,
        }
    }
}

fn apply<const D: usize>(a: Tensor<D>, b: Tensor<D>, op: FloatBinary) -> Tensor<D> {
    match op {
        FloatBinary::Add => a.add(b),
        FloatBinary::Sub => a.sub(b),
        FloatBinary::Mul => a.mul(b),
        FloatBinary::Div => a.div(b),
        FloatBinary::Pow => a.powf(b),
        FloatBinary::Max => a.max_pair(b),
        FloatBinary::Min => a.min_pair(b),
    }
}

/// A float function of two tensors with NumPy broadcasting, the output checked against
/// the cap before it is computed.
pub(crate) fn binary(
    a: Float,
    b: Float,
    op: impl Into<FloatBinary>,
    cap: Cap,
) -> Result<Float, EngineError> {
    let op = op.into();
    let rank = a.rank().max(b.rank());
    let out = broadcast_shape(&[&a.dims(), &b.dims()])?;
    cap.check(&out, F32)?;
    if matches!(op, FloatBinary::Max | FloatBinary::Min) && a.dims() != b.dims() {
        // burn's pairwise max/min want equal shapes.
        let a = expand_to(a, &out)?;
        let b = expand_to(b, &out)?;
        return Ok(with_rank!(rank, D => apply::<D>(lift_to::<D>(a)?, lift_to::<D>(b)?, op)));
    }
    Ok(with_rank!(rank, D => apply::<D>(lift_to::<D>(a)?, lift_to::<D>(b)?, op)))
}

/// Broadcasts a float tensor to `shape` (its rank at most the shape's; the caller checked
/// the size).
pub(crate) fn expand_to(x: Float, shape: &[usize]) -> Result<Float, EngineError> {
    if x.dims() == shape {
        return Ok(x);
    }
    Ok(with_rank!(shape.len(), D => lift_to::<D>(x)?.expand(to_array::<D>(shape))))
}

/// A normalized axis (negative counts from the end).
///
/// # Errors
/// The axis is outside `-rank..rank`.
pub(crate) fn axis_of(axis: i64, rank: usize, what: &str) -> Result<usize, EngineError> {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    let a = if axis < 0 { axis + r } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|a| *a < rank)
        .ok_or_else(|| EngineError::Invalid(format!("{what}: axis {axis} for rank {rank}")))
}
