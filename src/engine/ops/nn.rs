//! The operators whose output can outgrow their inputs (products, windows, concatenation),
//! on burn tensor operations. Each validates its operands and checks its output size
//! against the cap before burn is asked to allocate it, so burn's own shape assertions are
//! never what refuses a model.

use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use onnx_ir::node::avg_pool2d::AvgPool2dConfig;
use onnx_ir::node::conv2d::Conv2dConfig;
use onnx_ir::node::gemm::GemmConfig;
use onnx_ir::node::lrn::LrnConfig;
use onnx_ir::node::max_pool2d::MaxPool2dConfig;

use super::{Op, binary, float_input, lift_to, optional_float};
use crate::engine::EngineError;
use crate::engine::elementwise::Arithmetic;
use crate::engine::elementwise::broadcast_shape;
use crate::engine::limits::{Cap, F32};
use crate::engine::shapes::{pads_2d, window_out_2d};
use crate::engine::value::{Float, Value, each_rank, with_rank};

/// Checks the padded input a window op may build (burn pads before it slides) against
/// the cap.
fn check_padded(
    [batch, channels, h, w]: [usize; 4],
    pads: [(usize, usize); 2],
    cap: Cap,
) -> Result<(), EngineError> {
    let side = |size: usize, (a, b): (usize, usize)| {
        size.checked_add(a)
            .and_then(|v| v.checked_add(b))
            .ok_or_else(|| EngineError::Limit(format!("pads {pads:?} are too large")))
    };
    cap.check(
        &[batch, channels, side(h, pads[0])?, side(w, pads[1])?],
        F32,
    )
    .map(|_| ())
}

/// Output size of a window along each spatial axis.
fn window_sizes(
    input: [usize; 2],
    pads: [(usize, usize); 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    ceil: bool,
) -> Result<[usize; 2], EngineError> {
    window_out_2d(input, pads, kernel, stride, dilation, ceil).ok_or_else(|| {
        EngineError::Invalid(format!(
            "a {kernel:?} window (strides {stride:?}, dilations {dilation:?}, pads \
             {pads:?}) does not fit input {input:?}"
        ))
    })
}

/// Checks a Conv's input `x`, weights `w` (`[out, in / groups, kernel...]`) and bias
/// against each other and the `kernel` attribute, as burn would assert them; returns the
/// bias as a vector.
pub(super) fn conv_operands(
    x: &[usize],
    w: &[usize],
    groups: usize,
    kernel: &[usize],
    bias: Option<Float>,
) -> Result<Option<Tensor<1>>, EngineError> {
    let (channels, cout, cin_g) = (x[1], w[0], w[1]);
    if cin_g.checked_mul(groups) != Some(channels) || cout % groups != 0 {
        return Err(EngineError::Invalid(format!(
            "Conv: input {x:?} and weights {w:?} in {groups} groups do not match"
        )));
    }
    if w[2..] != *kernel {
        return Err(EngineError::Invalid(format!(
            "Conv: kernel_shape {kernel:?}, weights {w:?}"
        )));
    }
    let bias = bias.map(Float::rank1).transpose()?;
    if let Some(b) = &bias
        && b.dims() != [cout]
    {
        return Err(EngineError::Invalid(format!(
            "Conv: bias {:?} for {cout} output channels",
            b.dims()
        )));
    }
    Ok(bias)
}

/// ONNX Conv on a rank-4 input.
pub(super) fn conv(
    c: &Conv2dConfig,
    x: Float,
    w: Float,
    bias: Option<Float>,
    cap: Cap,
) -> Result<Float, EngineError> {
    let x = x.rank4()?;
    let w = w.rank4()?;
    let [batch, channels, h, wd] = x.dims();
    let [cout, cin_g, kh, kw] = w.dims();
    let groups = c.groups.max(1);
    let bias = conv_operands(&x.dims(), &w.dims(), groups, &c.kernel_size, bias)?;
    let padding = pads_2d(
        &c.padding,
        &c.auto_pad,
        [h, wd],
        c.kernel_size,
        c.stride,
        c.dilation,
    )?;
    let [oh, ow] = window_sizes([h, wd], padding, c.kernel_size, c.stride, c.dilation, false)?;
    cap.check(&[batch, cout, oh, ow], F32)?;
    check_padded([batch, channels, h, wd], padding, cap)?;
    // The unfolded input a convolution may build per image.
    cap.check(&[cin_g, kh, kw, oh, ow], F32)?;
    let options = ConvOptions::new_with_padding(c.stride, padding, c.dilation, groups);
    Ok(Float::R4(conv2d(x, w, bias, options)))
}

/// ONNX MaxPool on a rank-4 input.
pub(super) fn max_pool(c: &MaxPool2dConfig, x: Float, cap: Cap) -> Result<Float, EngineError> {
    let x = x.rank4()?;
    let [batch, channels, h, w] = x.dims();
    let padding = pads_2d(
        &c.padding,
        &c.auto_pad,
        [h, w],
        c.kernel_size,
        c.strides,
        c.dilation,
    )?;
    let [oh, ow] = window_sizes(
        [h, w],
        padding,
        c.kernel_size,
        c.strides,
        c.dilation,
        c.ceil_mode,
    )?;
    cap.check(&[batch, channels, oh, ow], F32)?;
    check_padded([batch, channels, h, w], padding, cap)?;
    let options = MaxPoolOptions {
        kernel_size: c.kernel_size,
        stride: c.strides,
        padding,
        dilation: c.dilation,
        ceil_mode: c.ceil_mode,
    };
    Ok(Float::R4(max_pool2d(x, options)))
}

/// ONNX AveragePool on a rank-4 input.
pub(super) fn avg_pool(c: &AvgPool2dConfig, x: Float, cap: Cap) -> Result<Float, EngineError> {
    if c.dilation != [1, 1] {
        return Err(EngineError::Unsupported(
            "AveragePool with dilations".into(),
        ));
    }
    let x = x.rank4()?;
    let [batch, channels, h, w] = x.dims();
    let padding = pads_2d(
        &c.padding,
        &c.auto_pad,
        [h, w],
        c.kernel_size,
        c.strides,
        c.dilation,
    )?;
    let [oh, ow] = window_sizes(
        [h, w],
        padding,
        c.kernel_size,
        c.strides,
        c.dilation,
        c.ceil_mode,
    )?;
    cap.check(&[batch, channels, oh, ow], F32)?;
    check_padded([batch, channels, h, w], padding, cap)?;
    let options = AvgPoolOptions {
        kernel_size: c.kernel_size,
        stride: c.strides,
        padding,
        count_include_pad: c.count_include_pad,
        ceil_mode: c.ceil_mode,
    };
    Ok(Float::R4(avg_pool2d(x, options)))
}

/// ONNX Gemm: `alpha · op(A) · op(B) + beta · C`, C broadcast to the product.
pub(super) fn gemm(
    config: &GemmConfig,
    a: Float,
    b: Float,
    c: Option<Float>,
    cap: Cap,
) -> Result<Float, EngineError> {
    let a = a.rank2()?;
    let b = b.rank2()?;
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
    let ([m, k], [k2, n]) = (a.dims(), b.dims());
    if k != k2 {
        return Err(EngineError::Invalid(format!(
            "Gemm of [{m}, {k}] and [{k2}, {n}]: inner dimensions differ"
        )));
    }
    if let Some(c) = &c {
        let dims = c.dims();
        if broadcast_shape(&[&dims, &[m, n]])? != [m, n] {
            return Err(EngineError::Invalid(format!(
                "Gemm: C {dims:?} does not broadcast to [{m}, {n}]"
            )));
        }
    }
    cap.check(&[m, n], F32)?;
    let mut y = a.matmul(b);
    if (config.alpha - 1.0).abs() > f32::EPSILON {
        y = y.mul_scalar(config.alpha);
    }
    if let Some(c) = c {
        let c = lift_to::<2>(c)?;
        let c = if (config.beta - 1.0).abs() > f32::EPSILON {
            c.mul_scalar(config.beta)
        } else {
            c
        };
        y = y.add(c);
    }
    Ok(Float::R2(y))
}

/// NumPy matmul: rank-1 operands are promoted and the added dimension removed after.
pub(super) fn matmul(a: Float, b: Float, cap: Cap) -> Result<Float, EngineError> {
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
    let mut out = broadcast_shape(&[&ad[..ad.len() - 2], &bd[..bd.len() - 2]])?;
    out.extend([ad[ad.len() - 2], bd[bd.len() - 1]]);
    cap.check(&out, F32)?;
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

/// ONNX LRN: the window sum over channels as an average pool over a `[C, H·W]` plane.
pub(super) fn lrn(c: &LrnConfig, x: Float, cap: Cap) -> Result<Float, EngineError> {
    let x = x.rank4()?;
    let size = usize::try_from(c.size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| EngineError::Invalid(format!("LRN size {}", c.size)))?;
    let [batch, channels, h, w] = x.dims();
    // The padded plane the pool reads.
    let padded = channels
        .checked_add(size)
        .ok_or_else(|| EngineError::Invalid(format!("LRN size {size}")))?;
    cap.check(&[batch, padded, h, w], F32)?;
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
    Ok(Float::R4(x.div(denominator)))
}

/// ConvTranspose's settings along the spatial axes (1-D runs as 2-D of height one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvTransposeOp {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Begin = end pads (`auto_pad` NOTSET without `output_shape`).
    pub pads: [usize; 2],
    pub output_padding: [usize; 2],
    pub groups: usize,
    /// `Some(true)` SAME_UPPER, `Some(false)` SAME_LOWER.
    pub same_upper: Option<bool>,
    pub output_shape: Option<[usize; 2]>,
    pub one_d: bool,
}

/// ONNX ConvTranspose: the full transposed convolution (burn's, no padding), then the
/// window the pads, `auto_pad` or `output_shape` keep (asymmetric pads included).
fn conv_transpose(
    c: &ConvTransposeOp,
    x: Float,
    w: Float,
    bias: Option<Float>,
    cap: Cap,
) -> Result<Float, EngineError> {
    let x = x.rank4()?;
    let w = w.rank4()?;
    let [batch, channels, h, wd] = x.dims();
    let [cin, cout_g, kh, kw] = w.dims();
    let groups = c.groups.max(1);
    if cin != channels || channels % groups != 0 || [kh, kw] != c.kernel {
        return Err(EngineError::Invalid(format!(
            "ConvTranspose: input {:?} and weights {:?} in {groups} groups do not match",
            x.dims(),
            w.dims()
        )));
    }
    let cout = cout_g.checked_mul(groups).ok_or_else(|| {
        EngineError::Invalid(format!(
            "ConvTranspose: {groups} groups of {cout_g} outputs"
        ))
    })?;
    let bias = bias.map(Float::rank1).transpose()?;
    let mut window = [(0usize, 0usize); 2];
    let mut full = [0usize; 2];
    let mut output_padding = c.output_padding;
    for (i, input) in [h, wd].into_iter().enumerate() {
        let reach = (c.kernel[i] - 1)
            .checked_mul(c.dilation[i])
            .and_then(|r| r.checked_add(1))
            .ok_or_else(|| EngineError::Limit("ConvTranspose: kernel too large".into()))?;
        let span = input
            .saturating_sub(1)
            .checked_mul(c.stride[i])
            .and_then(|s| s.checked_add(reach))
            .and_then(|s| s.checked_add(c.output_padding[i]))
            .ok_or_else(|| EngineError::Limit("ConvTranspose: output too large".into()))?;
        let mut span = span;
        if let Some(shape) = c.output_shape
            && shape[i] > span
        {
            // A larger output_shape extends the end, as output_padding does.
            output_padding[i] += shape[i] - span;
            span = shape[i];
        }
        full[i] = span;
        let (begin, size) = match (c.output_shape, c.same_upper) {
            (Some(shape), upper) => {
                let total = span - shape[i];
                let begin = if upper == Some(true) {
                    total / 2
                } else {
                    total - total / 2
                };
                (begin, shape[i])
            }
            (None, Some(upper)) => {
                let size = input.saturating_mul(c.stride[i]);
                let total = span.saturating_sub(size);
                (
                    if upper { total / 2 } else { total - total / 2 },
                    size.min(span),
                )
            }
            (None, None) => {
                let size = c.pads[i]
                    .checked_mul(2)
                    .and_then(|p| span.checked_sub(p))
                    .ok_or_else(|| {
                        EngineError::Invalid(format!("ConvTranspose: pads {:?}", c.pads))
                    })?;
                (c.pads[i], size)
            }
        };
        window[i] = (begin, size);
    }
    cap.check(&[batch, cout, full[0], full[1]], F32)?;
    let options = burn::tensor::ops::ConvTransposeOptions::new(
        c.stride,
        [0, 0],
        output_padding,
        c.dilation,
        groups,
    );
    let y = burn::tensor::module::conv_transpose2d(x, w, bias, options);
    Ok(Float::R4(y.narrow(2, window[0].0, window[0].1).narrow(
        3,
        window[1].0,
        window[1].1,
    )))
}

/// A 1-D operator's input `[N, C, L]` as `[N, C, 1, L]`, and back.
fn to_2d(x: Float) -> Result<Float, EngineError> {
    let d = x.dims();
    match d.as_slice() {
        [n, c, l] => x.reshape(&[*n, *c, 1, *l]),
        _ => Err(EngineError::Invalid(format!(
            "a 1-D operator needs a rank-3 input, got {d:?}"
        ))),
    }
}

fn from_2d(y: Float) -> Result<Float, EngineError> {
    let d = y.dims();
    y.reshape(&[d[0], d[1], d[3]])
}

pub(super) fn run(
    op: &Op,
    mut inputs: Vec<Option<Value>>,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let out = match op {
        Op::Conv(c) => {
            let x = float_input(&mut inputs, 0)?;
            let w = float_input(&mut inputs, 1)?;
            let bias = optional_float(&mut inputs, 2)?;
            conv(c, x, w, bias, cap)?
        }
        Op::Conv1d(c) => {
            let x = to_2d(float_input(&mut inputs, 0)?)?;
            let w = to_2d(float_input(&mut inputs, 1)?)?;
            let bias = optional_float(&mut inputs, 2)?;
            from_2d(conv(c, x, w, bias, cap)?)?
        }
        Op::Conv3d(c) => {
            let x = float_input(&mut inputs, 0)?;
            let w = float_input(&mut inputs, 1)?;
            let bias = optional_float(&mut inputs, 2)?;
            super::volume::conv3d_op(c, x, w, bias, cap)?
        }
        Op::ConvTranspose(c) => {
            let (mut x, mut w) = (float_input(&mut inputs, 0)?, float_input(&mut inputs, 1)?);
            if c.one_d {
                (x, w) = (to_2d(x)?, to_2d(w)?);
            }
            let bias = optional_float(&mut inputs, 2)?;
            let y = conv_transpose(c, x, w, bias, cap)?;
            if c.one_d { from_2d(y)? } else { y }
        }
        Op::MaxPool(c) => max_pool(c, float_input(&mut inputs, 0)?, cap)?,
        Op::MaxPool1d(c) => from_2d(max_pool(c, to_2d(float_input(&mut inputs, 0)?)?, cap)?)?,
        Op::AvgPool(c) => avg_pool(c, float_input(&mut inputs, 0)?, cap)?,
        Op::AvgPool1d(c) => from_2d(avg_pool(c, to_2d(float_input(&mut inputs, 0)?)?, cap)?)?,
        Op::GlobalPool { max } => {
            let x = float_input(&mut inputs, 0)?;
            let rank = x.rank();
            if rank < 3 {
                return Err(EngineError::Invalid(format!(
                    "a global pool needs rank >= 3, got {rank}"
                )));
            }
            let max = *max;
            each_rank!(x, t => {
                let mut t = t;
                for dim in (2..rank).rev() {
                    t = if max { t.max_dim(dim) } else { t.mean_dim(dim) };
                }
                t
            })
        }
        Op::Gemm(c) => {
            let a = float_input(&mut inputs, 0)?;
            let b = float_input(&mut inputs, 1)?;
            let bias = optional_float(&mut inputs, 2)?;
            gemm(c, a, b, bias, cap)?
        }
        Op::MatMul => {
            let a = float_input(&mut inputs, 0)?;
            let b = float_input(&mut inputs, 1)?;
            matmul(a, b, cap)?
        }
        Op::Linear { transpose_weight } => {
            let x = float_input(&mut inputs, 0)?;
            let w = float_input(&mut inputs, 1)?;
            let bias = optional_float(&mut inputs, 2)?;
            let w = if *transpose_weight {
                Float::R2(w.rank2()?.transpose())
            } else {
                w
            };
            let y = matmul(x, w, cap)?;
            match bias {
                Some(b) => binary(y, b, Arithmetic::Add, cap)?,
                None => y,
            }
        }
        Op::Lrn(c) => lrn(c, float_input(&mut inputs, 0)?, cap)?,
        other => {
            return Err(EngineError::Internal(format!(
                "{other:?} is not a network operator"
            )));
        }
    };
    Ok(vec![Value::Float(out)])
}
