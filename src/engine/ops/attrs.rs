//! Attribute checks and conversions shared by the operator table ([`super::translate`]):
//! window attributes no input can make valid, 1-D configurations as 2-D ones, ONNX names.

use onnx_ir::Node;
use onnx_ir::node::avg_pool2d::AvgPool2dConfig;
use onnx_ir::node::conv2d::Conv2dConfig;
use onnx_ir::node::max_pool2d::MaxPool2dConfig;
use onnx_ir::node::padding::{AutoPad, PaddingConfig1d, PaddingConfig2d};

use super::{Ints, Op, Reduction};
use crate::engine::EngineError;

/// The ONNX operator name of a parsed node (onnx-ir names some by dimension).
#[must_use]
pub fn onnx_name(node: &Node) -> String {
    match node {
        Node::Conv1d(_) | Node::Conv2d(_) | Node::Conv3d(_) => "Conv".into(),
        Node::ConvTranspose1d(_) | Node::ConvTranspose2d(_) | Node::ConvTranspose3d(_) => {
            "ConvTranspose".into()
        }
        Node::MaxPool1d(_) | Node::MaxPool2d(_) | Node::MaxPool3d(_) => "MaxPool".into(),
        Node::AveragePool1d(_) | Node::AveragePool2d(_) | Node::AveragePool3d(_) => {
            "AveragePool".into()
        }
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

#[expect(
    clippy::cast_possible_truncation,
    reason = "attributes of an f32 model"
)]
pub(super) fn f32_of(v: f64) -> f32 {
    v as f32
}

/// Kernel sizes, strides and dilations of at least 1, along each of `N` spatial axes.
pub(super) fn window<const N: usize>(
    kernel: [usize; N],
    stride: [usize; N],
    dilation: [usize; N],
) -> Result<(), EngineError> {
    for (name, values) in [
        ("kernel_shape", kernel),
        ("strides", stride),
        ("dilations", dilation),
    ] {
        if values.contains(&0) {
            return Err(EngineError::Invalid(format!(
                "{name} {values:?}: every value must be at least 1"
            )));
        }
    }
    Ok(())
}

pub(super) fn same_pad(auto_pad: &AutoPad, stride: [usize; 2]) -> Result<(), EngineError> {
    if matches!(auto_pad, AutoPad::SameUpper | AutoPad::SameLower) && stride.contains(&0) {
        return Err(EngineError::Invalid(format!(
            "SAME padding with strides {stride:?}"
        )));
    }
    Ok(())
}

pub(super) fn pad_1d(p: &PaddingConfig1d) -> PaddingConfig2d {
    match p {
        PaddingConfig1d::Valid => PaddingConfig2d::Valid,
        PaddingConfig1d::Explicit(left, right) => PaddingConfig2d::Explicit(0, *left, 0, *right),
    }
}

pub(super) fn conv2d(c: &Conv2dConfig) -> Result<Op, EngineError> {
    window(c.kernel_size, c.stride, c.dilation)?;
    if c.groups == 0 {
        return Err(EngineError::Invalid("group 0".into()));
    }
    same_pad(&c.auto_pad, c.stride)?;
    Ok(Op::Conv(c.clone()))
}

pub(super) fn max_pool(c: &MaxPool2dConfig) -> Result<(), EngineError> {
    window(c.kernel_size, c.strides, c.dilation)?;
    same_pad(&c.auto_pad, c.strides)
}

pub(super) fn avg_pool(c: &AvgPool2dConfig) -> Result<(), EngineError> {
    window(c.kernel_size, c.strides, c.dilation)?;
    same_pad(&c.auto_pad, c.strides)
}

pub(super) fn same(auto_pad: &AutoPad) -> Option<bool> {
    match auto_pad {
        AutoPad::SameUpper => Some(true),
        AutoPad::SameLower => Some(false),
        _ => None,
    }
}

pub(super) fn conv_transpose(c: super::nn::ConvTransposeOp) -> Result<Op, EngineError> {
    window(c.kernel, c.stride, c.dilation)?;
    if c.groups == 0 {
        return Err(EngineError::Invalid("group 0".into()));
    }
    Ok(Op::ConvTranspose(Box::new(c)))
}

pub(super) fn nonzero(v: usize, what: &str) -> Result<usize, EngineError> {
    if v == 0 {
        Err(EngineError::Invalid(format!("{what} 0")))
    } else {
        Ok(v)
    }
}

pub(super) fn usize_ints(v: &[usize]) -> Ints {
    Ints::Static(
        v.iter()
            .map(|x| i64::try_from(*x).unwrap_or(i64::MAX))
            .collect(),
    )
}

pub(super) fn reduce(kind: Reduction, c: &onnx_ir::node::reduce::ReduceConfig) -> Op {
    use onnx_ir::node::reduce::ReduceAxes;
    Op::Reduce {
        kind,
        axes: match &c.axes {
            ReduceAxes::Static(axes) => usize_ints(axes),
            ReduceAxes::Runtime(r) => Ints::Input(r.input_index),
        },
        keepdims: c.keepdims,
        noop_with_empty_axes: c.noop_with_empty_axes,
    }
}
