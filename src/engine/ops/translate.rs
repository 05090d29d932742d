//! ONNX node → [`Op`], once per node at load. Attributes no input can make valid are
//! refused here (zero strides, kernels, dilations or groups; SAME padding with stride 0),
//! so execution never meets them.

use onnx_ir::Node;
use onnx_ir::node::avg_pool2d::AvgPool2dConfig;
use onnx_ir::node::conv2d::Conv2dConfig;
use onnx_ir::node::max_pool2d::MaxPool2dConfig;

use super::attrs::{
    avg_pool, conv_transpose, conv2d, f32_of, max_pool, nonzero, onnx_name, pad_1d, reduce, same,
    usize_ints,
};

use super::{Bound, Floats, Ints, Op, Reduction, ResizeOp, Scalar, Unary, Variadic};
use crate::engine::EngineError;
use crate::engine::elementwise::{self, Arithmetic, Compare, Logic};

/// Translates one node.
///
/// # Errors
/// [`EngineError::Unsupported`] naming the operator when cairn does not run it (or not
/// in this form), [`EngineError::Invalid`] for attributes no input can make valid.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per operator: the table itself"
)]
pub fn translate(node: &Node) -> Result<Op, EngineError> {
    use onnx_ir::node as n;
    let unary = |u| Ok(Op::Unary(u));
    match node {
        Node::Identity(_) | Node::Dropout(_) => Ok(Op::Identity),
        Node::Constant(c) => c
            .outputs
            .first()
            .and_then(onnx_ir::Argument::value)
            .or_else(|| c.inputs.first().and_then(onnx_ir::Argument::value))
            .map(Op::Constant)
            .ok_or_else(|| EngineError::Invalid("Constant without a value".into())),
        Node::Add(_) => Ok(Op::Arithmetic(Arithmetic::Add)),
        Node::Sub(_) => Ok(Op::Arithmetic(Arithmetic::Sub)),
        Node::Mul(_) => Ok(Op::Arithmetic(Arithmetic::Mul)),
        Node::Div(_) => Ok(Op::Arithmetic(Arithmetic::Div)),
        Node::Pow(_) => Ok(Op::Pow),
        Node::Mod(m) => Ok(Op::Mod {
            fmod: m.config.fmod,
        }),
        Node::Equal(_) => Ok(Op::Compare(Compare::Equal)),
        Node::Greater(_) => Ok(Op::Compare(Compare::Greater)),
        Node::GreaterOrEqual(_) => Ok(Op::Compare(Compare::GreaterOrEqual)),
        Node::Less(_) => Ok(Op::Compare(Compare::Less)),
        Node::LessOrEqual(_) => Ok(Op::Compare(Compare::LessOrEqual)),
        Node::And(_) => Ok(Op::Logic(Logic::And)),
        Node::Or(_) => Ok(Op::Logic(Logic::Or)),
        Node::Xor(_) => Ok(Op::Logic(Logic::Xor)),
        Node::Not(_) => Ok(Op::Not),
        Node::Where(_) => Ok(Op::Where),
        Node::Cast(c) if elementwise::is_supported(c.config.to) => Ok(Op::Cast(c.config.to)),
        Node::CastLike(c) if elementwise::is_supported(c.config.to) => Ok(Op::Cast(c.config.to)),
        Node::Cast(c) => Err(EngineError::Unsupported(format!(
            "Cast to {:?}",
            c.config.to
        ))),
        Node::Relu(_) => unary(Unary::Relu),
        Node::Sigmoid(_) => unary(Unary::Sigmoid),
        Node::Tanh(_) => unary(Unary::Tanh),
        Node::Exp(_) => unary(Unary::Exp),
        Node::Log(_) => unary(Unary::Log),
        Node::Sqrt(_) => unary(Unary::Sqrt),
        Node::Neg(_) => unary(Unary::Neg),
        Node::Abs(_) => unary(Unary::Abs),
        Node::Erf(_) => unary(Unary::Erf),
        Node::Floor(_) => unary(Unary::Floor),
        Node::Ceil(_) => unary(Unary::Ceil),
        Node::Round(_) => unary(Unary::Round),
        Node::Reciprocal(_) => unary(Unary::Reciprocal),
        Node::Sin(_) => unary(Unary::Sin),
        Node::Cos(_) => unary(Unary::Cos),
        Node::Tan(_) => unary(Unary::Tan),
        Node::Asin(_) => unary(Unary::Asin),
        Node::Acos(_) => unary(Unary::Acos),
        Node::Atan(_) => unary(Unary::Atan),
        Node::Sinh(_) => unary(Unary::Sinh),
        Node::Cosh(_) => unary(Unary::Cosh),
        Node::Asinh(_) => unary(Unary::Asinh),
        Node::Acosh(_) => unary(Unary::Acosh),
        Node::Atanh(_) => unary(Unary::Atanh),
        Node::Sign(_) => unary(Unary::Sign),
        Node::Softplus(_) => unary(Unary::Softplus),
        Node::Softsign(_) => unary(Unary::Softsign),
        Node::HardSwish(_) => unary(Unary::HardSwish),
        Node::Mish(_) => unary(Unary::Mish),
        Node::LeakyRelu(l) => Ok(Op::LeakyRelu(f32_of(l.config.alpha))),
        Node::Elu(e) => Ok(Op::Elu(f32_of(e.config.alpha))),
        Node::Selu(s) => Ok(Op::Selu {
            alpha: f32_of(s.config.alpha),
            gamma: f32_of(s.config.gamma),
        }),
        Node::Celu(c) => Ok(Op::Celu(f32_of(c.config.alpha))),
        Node::ThresholdedRelu(t) => Ok(Op::ThresholdedRelu(f32_of(t.config.alpha))),
        Node::HardSigmoid(h) => Ok(Op::HardSigmoid {
            alpha: f32_of(h.config.alpha),
            beta: f32_of(h.config.beta),
        }),
        Node::Gelu(g) => Ok(Op::Gelu {
            tanh: matches!(g.config.approximate, n::gelu::GeluApproximate::Tanh),
        }),
        Node::PRelu(_) => Ok(Op::PRelu),
        Node::Clip(c) => {
            let bound = |b: &Option<n::clip::ClipInput>| match b {
                None => Bound::None,
                Some(n::clip::ClipInput::Static(v)) => Bound::Static(f32_of(*v)),
                Some(n::clip::ClipInput::Runtime(r)) => Bound::Input(r.input_index),
            };
            Ok(Op::Clip {
                min: bound(&c.config.min),
                max: bound(&c.config.max),
            })
        }
        Node::IsNaN(_) => Ok(Op::IsNaN),
        Node::IsInf(i) => Ok(Op::IsInf {
            negative: i.config.detect_negative,
            positive: i.config.detect_positive,
        }),
        Node::Max(_) => Ok(Op::Variadic(Variadic::Max)),
        Node::Min(_) => Ok(Op::Variadic(Variadic::Min)),
        Node::Sum(_) => Ok(Op::Variadic(Variadic::Sum)),
        Node::Mean(_) => Ok(Op::Variadic(Variadic::Mean)),
        Node::Conv2d(c) => conv2d(&c.config),
        Node::Conv1d(c) => {
            let c = &c.config;
            let config = Conv2dConfig {
                kernel_size: [1, c.kernel_size],
                stride: [1, c.stride],
                padding: pad_1d(&c.padding),
                dilation: [1, c.dilation],
                groups: c.groups,
                auto_pad: c.auto_pad.clone(),
            };
            conv2d(&config)?;
            Ok(Op::Conv1d(config))
        }
        Node::Einsum(e) => Ok(Op::Einsum(Box::new(super::einsum::Equation::parse(
            &e.config.equation,
            e.inputs.len(),
        )?))),
        Node::Conv3d(c) => {
            super::volume::validate(&c.config)?;
            Ok(Op::Conv3d(Box::new(c.config.clone())))
        }
        Node::ConvTranspose2d(t) => {
            let c = &t.config;
            conv_transpose(super::nn::ConvTransposeOp {
                kernel: c.kernel_size,
                stride: c.stride,
                dilation: c.dilation,
                pads: c.padding,
                output_padding: c.padding_out,
                groups: c.groups,
                same_upper: same(&c.auto_pad),
                output_shape: c.output_shape,
                one_d: false,
            })
        }
        Node::ConvTranspose1d(t) => {
            let c = &t.config;
            conv_transpose(super::nn::ConvTransposeOp {
                kernel: [1, c.kernel_size],
                stride: [1, c.stride],
                dilation: [1, c.dilation],
                pads: [0, c.padding],
                output_padding: [0, c.padding_out],
                groups: c.groups,
                same_upper: same(&c.auto_pad),
                output_shape: c.output_shape.map(|s| [1, s]),
                one_d: true,
            })
        }
        Node::MaxPool2d(p) => {
            max_pool(&p.config)?;
            Ok(Op::MaxPool(p.config.clone()))
        }
        Node::MaxPool1d(p) => {
            let c = &p.config;
            let config = MaxPool2dConfig {
                kernel_size: [1, c.kernel_size],
                strides: [1, c.stride],
                padding: pad_1d(&c.padding),
                dilation: [1, c.dilation],
                ceil_mode: c.ceil_mode,
                auto_pad: c.auto_pad.clone(),
                storage_order: c.storage_order,
            };
            max_pool(&config)?;
            Ok(Op::MaxPool1d(config))
        }
        Node::AveragePool2d(p) => {
            avg_pool(&p.config)?;
            Ok(Op::AvgPool(p.config.clone()))
        }
        Node::AveragePool1d(p) => {
            let c = &p.config;
            let config = AvgPool2dConfig {
                kernel_size: [1, c.kernel_size],
                strides: [1, c.stride],
                padding: pad_1d(&c.padding),
                count_include_pad: c.count_include_pad,
                dilation: [1, c.dilation],
                ceil_mode: c.ceil_mode,
                auto_pad: c.auto_pad.clone(),
            };
            avg_pool(&config)?;
            Ok(Op::AvgPool1d(config))
        }
        Node::GlobalAveragePool(_) => Ok(Op::GlobalPool { max: false }),
        Node::GlobalMaxPool(_) => Ok(Op::GlobalPool { max: true }),
        Node::Gemm(g) => Ok(Op::Gemm(g.config.clone())),
        Node::MatMul(_) => Ok(Op::MatMul),
        Node::Linear(l) => Ok(Op::Linear {
            transpose_weight: l.config.transpose_weight,
        }),
        Node::BatchNormalization(b) => Ok(Op::BatchNorm {
            epsilon: f32_of(match &b.config {
                n::batch_norm::BatchNormConfig::Static(c) => c.epsilon,
                n::batch_norm::BatchNormConfig::Runtime(c) => c.epsilon,
            }),
        }),
        Node::LayerNormalization(l) => Ok(Op::LayerNorm {
            axis: l.config.axis,
            epsilon: f32_of(l.config.epsilon),
            outputs: l.outputs.len(),
        }),
        Node::InstanceNormalization(i) => Ok(Op::InstanceNorm {
            epsilon: f32_of(i.config.epsilon),
        }),
        Node::Lrn(l) => Ok(Op::Lrn(l.config.clone())),
        Node::Softmax(s) => Ok(Op::Softmax {
            axis: s.config.axis,
            log: false,
        }),
        Node::LogSoftmax(s) => Ok(Op::Softmax {
            axis: s.config.axis,
            log: true,
        }),
        Node::Flatten(f) => Ok(Op::Flatten {
            axis: f.config.axis,
        }),
        Node::Reshape(r) => Ok(Op::Reshape(match &r.config.shape {
            n::reshape::ReshapeInput::Static(s) => Ints::Static(s.clone()),
            n::reshape::ReshapeInput::Runtime(r) => Ints::Input(r.input_index),
        })),
        Node::Transpose(t) => Ok(Op::Transpose(
            t.config
                .perm
                .iter()
                .map(|p| usize::try_from(*p).unwrap_or(usize::MAX))
                .collect(),
        )),
        Node::Concat(c) => Ok(Op::Concat {
            axis: c.config.axis,
        }),
        Node::Unsqueeze(u) => Ok(Op::Unsqueeze(match &u.config {
            n::unsqueeze::UnsqueezeConfig::Static(a) => Ints::Static(a.clone()),
            n::unsqueeze::UnsqueezeConfig::Runtime(r) => Ints::Input(r.input_index),
        })),
        Node::Squeeze(s) => Ok(Op::Squeeze(s.config.axes.as_ref().map(|a| match a {
            n::squeeze::SqueezeInput::Static(a) => Ints::Static(a.clone()),
            n::squeeze::SqueezeInput::Runtime(r) => Ints::Input(r.input_index),
        }))),
        Node::Shape(s) => Ok(Op::Shape {
            start: s.config.start,
            end: s.config.end,
        }),
        Node::Size(_) => Ok(Op::Size),
        Node::Gather(g) => Ok(Op::Gather {
            axis: g.config.axis,
        }),
        Node::GatherElements(g) => Ok(Op::GatherElements {
            axis: g.config.axis,
        }),
        Node::Slice(s) => {
            let ints = |i: &n::slice::SliceInput| match i {
                n::slice::SliceInput::Static(v) => Ints::Static(v.clone()),
                n::slice::SliceInput::Runtime(r) => Ints::Input(r.input_index),
            };
            Ok(Op::Slice {
                starts: ints(&s.config.starts),
                ends: ints(&s.config.ends),
                axes: s.config.axes.as_ref().map(ints),
                steps: s.config.steps.as_ref().map(ints),
            })
        }
        Node::Expand(e) => Ok(Op::Expand(match &e.config {
            n::expand::ExpandConfig::Static(s) => Ints::Static(s.clone()),
            n::expand::ExpandConfig::Runtime(r) => Ints::Input(r.input_index),
        })),
        Node::Tile(t) => Ok(Op::Tile(match &t.config.repeats {
            n::tile::TileInput::Static(r) => usize_ints(r),
            n::tile::TileInput::Runtime(r) => Ints::Input(r.input_index),
        })),
        Node::Range(r) => {
            let scalar = |i: &n::range::RangeInput| match i {
                n::range::RangeInput::Static(v) => Scalar::Int(*v),
                n::range::RangeInput::StaticFloat(v) => Scalar::Float(*v),
                n::range::RangeInput::Runtime(r) => Scalar::Input(r.input_index),
            };
            Ok(Op::Range {
                start: scalar(&r.config.start),
                limit: scalar(&r.config.limit),
                delta: scalar(&r.config.delta),
            })
        }
        Node::Split(s) => {
            let c = &s.config;
            let sizes = match &c.split_sizes {
                Some(n::split::SplitSizesInput::Static(v)) => Some(usize_ints(v)),
                Some(n::split::SplitSizesInput::Runtime(r)) => Some(Ints::Input(r.input_index)),
                None => None,
            };
            let outputs = s.outputs.len();
            if outputs == 0 {
                return Err(EngineError::Invalid("Split with no outputs".into()));
            }
            Ok(Op::Split {
                axis: c.axis,
                sizes,
                outputs,
            })
        }
        Node::ConstantOfShape(c) => Ok(Op::ConstantOfShape {
            shape: match &c.config.shape {
                n::constant_of_shape::ConstantOfShapeShape::Static(s) => Ints::Static(s.clone()),
                n::constant_of_shape::ConstantOfShapeShape::Runtime(r) => {
                    Ints::Input(r.input_index)
                }
            },
            fill: c.config.value.clone(),
        }),
        Node::Resize(r) | Node::Upsample(r) => {
            let c = &r.config;
            if c.antialias != 0 {
                return Err(EngineError::Unsupported("Resize with antialias".into()));
            }
            if matches!(
                c.coordinate_transformation_mode,
                n::resize::CoordinateTransformMode::TfCropAndResize
            ) {
                return Err(EngineError::Unsupported(
                    "Resize with tf_crop_and_resize".into(),
                ));
            }
            Ok(Op::Resize(Box::new(ResizeOp {
                mode: c.mode.clone(),
                transform: c.coordinate_transformation_mode.clone(),
                nearest: c.nearest_mode.clone(),
                cubic_a: c.cubic_coeff_a,
                exclude_outside: c.exclude_outside != 0,
                extrapolation: c.extrapolation_value,
                scales: c.scales.as_ref().map(|s| match s {
                    n::resize::ResizeScales::Static(v) => Floats::Static(v.clone()),
                    n::resize::ResizeScales::Runtime(r) => Floats::Input(r.input_index),
                }),
                sizes: c.sizes.as_ref().map(|s| match s {
                    n::resize::ResizeSizes::Static(v) => usize_ints(v),
                    n::resize::ResizeSizes::Runtime(r) => Ints::Input(r.input_index),
                }),
            })))
        }
        Node::Attention(a) => {
            use n::attention::AttentionQkMatmulOutputMode as Mode;
            let c = &a.config;
            Ok(Op::Attention(Box::new(super::attention::AttentionOp {
                q_heads: c.q_num_heads,
                kv_heads: c.kv_num_heads,
                scale: c.scale.map(f32_of),
                softcap: f32_of(c.softcap),
                causal: c.is_causal,
                qk_mode: match c.qk_matmul_output_mode {
                    Mode::Matmul => 0,
                    Mode::MatmulAfterSoftcap => 1,
                    Mode::MatmulPlusAttentionMask => 2,
                    Mode::MatmulAfterSoftmax => 3,
                },
                outputs: a.outputs.len(),
            })))
        }
        Node::Pad(p) => {
            use n::pad::{AxesInput, ConstantValueInput, PadInput, PadMode};
            let c = &p.config;
            Ok(Op::Pad {
                pads: match &c.pads {
                    PadInput::Static(v) => super::PadAmounts::Static(v.clone()),
                    PadInput::Runtime { input, axes } => super::PadAmounts::Input {
                        pads: input.input_index,
                        axes: axes.as_ref().map(|a| match a {
                            AxesInput::Static(a) => usize_ints(a),
                            AxesInput::Runtime(r) => Ints::Input(r.input_index),
                        }),
                    },
                },
                value: match &c.constant_value {
                    ConstantValueInput::Static(v) => Bound::Static(*v),
                    ConstantValueInput::Runtime(r) => Bound::Input(r.input_index),
                },
                mode: match c.mode {
                    PadMode::Constant => super::PadMode::Constant,
                    PadMode::Reflect => super::PadMode::Reflect,
                    PadMode::Edge => super::PadMode::Edge,
                },
            })
        }
        Node::DepthToSpace(d) => Ok(Op::DepthToSpace {
            block: nonzero(d.config.block_size, "blocksize")?,
            crd: matches!(d.config.mode, n::depth_to_space::DepthToSpaceMode::Crd),
        }),
        Node::SpaceToDepth(d) => Ok(Op::SpaceToDepth {
            block: nonzero(d.config.block_size, "blocksize")?,
        }),
        Node::Trilu(t) => Ok(Op::Trilu {
            upper: t.config.upper,
            k: match &t.config.diagonal {
                n::trilu::TriluDiagonal::Static(k) => Some(*k),
                n::trilu::TriluDiagonal::Runtime(_) => None,
            },
        }),
        Node::Hardmax(h) => Ok(Op::Hardmax {
            axis: h.config.axis,
        }),
        Node::TopK(t) => Ok(Op::TopK {
            axis: t.config.axis,
            k: match &t.config.k {
                n::topk::TopKInput::Static(k) => Some(*k),
                n::topk::TopKInput::Runtime(_) => None,
            },
            largest: t.config.largest,
            sorted: t.config.sorted,
        }),
        Node::OneHot(o) => Ok(Op::OneHot {
            depth: match &o.config.depth {
                n::one_hot::OneHotDepthInput::Static(d) => Some(*d),
                n::one_hot::OneHotDepthInput::Runtime(_) => None,
            },
            values: match &o.config.values {
                n::one_hot::OneHotValuesInput::Static(v) => Some(*v),
                n::one_hot::OneHotValuesInput::Runtime(_) => None,
            },
            axis: o.config.axis,
        }),
        Node::EyeLike(e) => Ok(Op::EyeLike {
            k: e.config.k,
            dtype: e.config.dtype,
        }),
        Node::CumSum(c) => Ok(Op::CumSum {
            axis: match &c.config.axis {
                n::cumsum::CumSumAxis::Static(a) => Some(*a),
                n::cumsum::CumSumAxis::Runtime(_) => None,
            },
            exclusive: c.config.exclusive,
            reverse: c.config.reverse,
        }),
        Node::ScatterElements(s) | Node::Scatter(s) => {
            use n::scatter_elements::ScatterElementsReduction as R;
            Ok(Op::Scatter {
                nd: false,
                axis: s.config.axis,
                reduction: match s.config.reduction {
                    R::None => 0,
                    R::Add => 1,
                    R::Mul => 2,
                    R::Max => 3,
                    R::Min => 4,
                },
            })
        }
        Node::ScatterND(s) => {
            use n::scatter_nd::ScatterNDReduction as R;
            Ok(Op::Scatter {
                nd: true,
                axis: 0,
                reduction: match s.config.reduction {
                    R::None => 0,
                    R::Add => 1,
                    R::Mul => 2,
                    R::Max => 3,
                    R::Min => 4,
                },
            })
        }
        Node::BitShift(b) => Ok(Op::BitShift {
            left: matches!(b.config.direction, n::bitshift::Direction::Left),
        }),
        Node::Shrink(s) => Ok(Op::Shrink {
            lambda: f32_of(s.config.lambda),
            bias: f32_of(s.config.bias),
        }),
        Node::GroupNormalization(g) => Ok(Op::GroupNorm {
            groups: g.config.num_groups,
            epsilon: f32_of(g.config.epsilon),
        }),
        Node::MeanVarianceNormalization(m) => Ok(Op::MeanVarianceNorm {
            axes: m.config.axes.clone(),
        }),
        Node::NonZero(_) => Ok(Op::NonZero),
        Node::LpNormalization(l) => Ok(Op::LpNorm {
            axis: l.config.axis,
            p: l.config.p,
        }),
        Node::ReduceMean(r) => Ok(reduce(Reduction::Mean, &r.config)),
        Node::ReduceSum(r) => Ok(reduce(Reduction::Sum, &r.config)),
        Node::ReduceMax(r) => Ok(reduce(Reduction::Max, &r.config)),
        Node::ReduceMin(r) => Ok(reduce(Reduction::Min, &r.config)),
        Node::ReduceProd(r) => Ok(reduce(Reduction::Prod, &r.config)),
        Node::ReduceL1(r) => Ok(reduce(Reduction::L1, &r.config)),
        Node::ReduceL2(r) => Ok(reduce(Reduction::L2, &r.config)),
        Node::ReduceLogSum(r) => Ok(reduce(Reduction::LogSum, &r.config)),
        Node::ReduceLogSumExp(r) => Ok(reduce(Reduction::LogSumExp, &r.config)),
        Node::ReduceSumSquare(r) => Ok(reduce(Reduction::SumSquare, &r.config)),
        Node::ArgMax(a) => Ok(Op::ArgExtreme {
            max: true,
            axis: a.config.axis,
            keepdims: a.config.keepdims,
            last: a.config.select_last_index,
        }),
        Node::ArgMin(a) => Ok(Op::ArgExtreme {
            max: false,
            axis: a.config.axis,
            keepdims: a.config.keepdims,
            last: a.config.select_last_index,
        }),
        other => Err(EngineError::Unsupported(onnx_name(other))),
    }
}
