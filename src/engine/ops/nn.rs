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

use super::lift_to;
use crate::engine::EngineError;
use crate::engine::elementwise::broadcast_shape;
use crate::engine::limits::{Cap, F32};
use crate::engine::shapes::{pads_2d, window_out};
use crate::engine::value::{Float, with_rank};

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
    let mut out = [0; 2];
    for i in 0..2 {
        out[i] = window_out(input[i], pads[i], kernel[i], stride[i], dilation[i], ceil)
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "a {kernel:?} window (strides {stride:?}, dilations {dilation:?}, pads \
                     {pads:?}) does not fit input {input:?}"
                ))
            })?;
    }
    Ok(out)
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
    if cin_g.checked_mul(groups) != Some(channels) || cout % groups != 0 {
        return Err(EngineError::Invalid(format!(
            "Conv: input {:?} and weights {:?} in {groups} groups do not match",
            x.dims(),
            w.dims()
        )));
    }
    if [kh, kw] != c.kernel_size {
        return Err(EngineError::Invalid(format!(
            "Conv: kernel_shape {:?}, weights {:?}",
            c.kernel_size,
            w.dims()
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

/// ONNX Concat of float tensors along `axis`.
pub(super) fn concat(parts: Vec<Float>, axis: usize, cap: Cap) -> Result<Float, EngineError> {
    let first = parts
        .first()
        .ok_or_else(|| EngineError::Invalid("Concat of nothing".into()))?
        .dims();
    let rank = first.len();
    if axis >= rank {
        return Err(EngineError::Invalid(format!(
            "Concat axis {axis} on rank {rank}"
        )));
    }
    let mut out = first.clone();
    out[axis] = 0;
    for p in &parts {
        let dims = p.dims();
        if dims.len() != rank || (0..rank).any(|i| i != axis && dims[i] != first[i]) {
            return Err(EngineError::Invalid(format!(
                "Concat of shapes {first:?} and {dims:?} on axis {axis}"
            )));
        }
        out[axis] = out[axis]
            .checked_add(dims[axis])
            .ok_or_else(|| EngineError::Limit(format!("Concat along axis {axis}: too large")))?;
    }
    cap.check(&out, F32)?;
    Ok(with_rank!(rank, D => {
        let tensors = parts.into_iter().map(lift_to::<D>).collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(tensors, axis)
    }))
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
