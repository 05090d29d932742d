//! Convolution over volumes: ONNX Conv on rank-5 inputs (`[N, C, D, H, W]`, video and
//! medical models: torchvision's r3d_18, 3-D U-Nets), run by burn's `conv3d` on either
//! device.
//!
//! Invariant: everything burn's `conv3d` asserts (channels and groups agreeing, the
//! kernel fitting the padded input, symmetric pads) is checked here first, so a model
//! that breaks it gets an error naming the shapes, never a panic.

use burn::tensor::Tensor;
use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use onnx_ir::node::conv3d::Conv3dConfig;
use onnx_ir::node::padding::{AutoPad, PaddingConfig2d, PaddingConfig3d};

use crate::engine::EngineError;
use crate::engine::limits::{Cap, F32};
use crate::engine::shapes::{pads_2d, window_out_2d};
use crate::engine::value::Float;

use super::nn::conv_operands;

/// Checks a Conv3d's attributes at load: windows of at least 1, groups of at least 1.
pub(super) fn validate(c: &Conv3dConfig) -> Result<(), EngineError> {
    super::attrs::window(c.kernel_size, c.stride, c.dilation)?;
    if c.groups == 0 {
        return Err(EngineError::Invalid("group 0".into()));
    }
    Ok(())
}

/// Pads (begin, end) along depth, height and width.
fn pads_3d(c: &Conv3dConfig, input: [usize; 3]) -> Result<[(usize, usize); 3], EngineError> {
    if let AutoPad::NotSet = c.auto_pad {
        return Ok(match c.padding {
            PaddingConfig3d::Valid => [(0, 0); 3],
            PaddingConfig3d::Explicit(front, top, left, back, bottom, right) => {
                [(front, back), (top, bottom), (left, right)]
            }
        });
    }
    // SAME and VALID are per axis: two axes at a time through the 2-D rule.
    let [k, s, d] = [c.kernel_size, c.stride, c.dilation];
    let valid = PaddingConfig2d::Valid;
    let [depth, height] = pads_2d(
        &valid,
        &c.auto_pad,
        [input[0], input[1]],
        [k[0], k[1]],
        [s[0], s[1]],
        [d[0], d[1]],
    )?;
    let [width, _] = pads_2d(
        &valid,
        &c.auto_pad,
        [input[2], 1],
        [k[2], 1],
        [s[2], 1],
        [d[2], 1],
    )?;
    Ok([depth, height, width])
}

/// Output depth, height and width.
fn out_sizes(
    c: &Conv3dConfig,
    input: [usize; 3],
    pads: [(usize, usize); 3],
) -> Result<[usize; 3], EngineError> {
    let [k, s, d] = [c.kernel_size, c.stride, c.dilation];
    let first = window_out_2d(
        [input[0], input[1]],
        [pads[0], pads[1]],
        [k[0], k[1]],
        [s[0], s[1]],
        [d[0], d[1]],
        false,
    );
    let last = window_out_2d(
        [input[2], 1],
        [pads[2], (0, 0)],
        [k[2], 1],
        [s[2], 1],
        [d[2], 1],
        false,
    );
    match (first, last) {
        (Some([od, oh]), Some([ow, _])) if od > 0 && oh > 0 && ow > 0 => Ok([od, oh, ow]),
        _ => Err(EngineError::Invalid(format!(
            "a {k:?} window (strides {s:?}, dilations {d:?}, pads {pads:?}) does not fit \
             input {input:?}"
        ))),
    }
}

/// ONNX Conv on a rank-5 input.
pub(super) fn conv3d_op(
    c: &Conv3dConfig,
    x: Float,
    w: Float,
    bias: Option<Float>,
    cap: Cap,
) -> Result<Float, EngineError> {
    let (Float::R5(x), Float::R5(w)) = (x, w) else {
        return Err(EngineError::Invalid(
            "Conv with a 3-D kernel takes a rank-5 input and rank-5 weights".into(),
        ));
    };
    let [batch, channels, depth, height, width] = x.dims();
    let [cout, cin_g, kd, kh, kw] = w.dims();
    let groups = c.groups.max(1);
    let bias = conv_operands(&x.dims(), &w.dims(), groups, &c.kernel_size, bias)?;
    if cout == 0 {
        return Err(EngineError::Invalid(format!(
            "Conv: weights {:?} have no output channels",
            w.dims()
        )));
    }
    let input = [depth, height, width];
    let pads = pads_3d(c, input)?;
    let [od, oh, ow] = out_sizes(c, input, pads)?;
    cap.check(&[batch, cout, od, oh, ow], F32)?;
    let padded = |i: usize| {
        input[i]
            .checked_add(pads[i].0)
            .and_then(|v| v.checked_add(pads[i].1))
            .ok_or_else(|| EngineError::Limit(format!("pads {pads:?} are too large")))
    };
    cap.check(&[batch, channels, padded(0)?, padded(1)?, padded(2)?], F32)?;
    // The unfolded input the backend may build per image.
    cap.check(&[cin_g, kd, kh, kw, od, oh, ow], F32)?;
    // burn's conv3d pads symmetrically: the larger side's surplus joins the input as
    // zeros, and the convolution pads each axis by its smaller side.
    let mut x = x;
    let mut symmetric = [0usize; 3];
    for (axis, &(begin, end)) in pads.iter().enumerate() {
        symmetric[axis] = begin.min(end);
        let extra = begin.max(end) - symmetric[axis];
        if extra == 0 {
            continue;
        }
        let mut dims = x.dims();
        dims[axis + 2] = extra;
        // In the device's float type, as `x` is (f16 on an f16 deployment).
        let zeros = Tensor::<5>::zeros(dims, &x.device());
        x = if begin > end {
            Tensor::cat(vec![zeros, x], axis + 2)
        } else {
            Tensor::cat(vec![x, zeros], axis + 2)
        };
    }
    let options = ConvOptions::new(c.stride, symmetric, c.dilation, groups);
    Ok(Float::R5(conv3d(x, w, bias, options)))
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use crate::engine::test_graphs::{Graph, floats, info, int, ints, model, node, string, with};
    use crate::engine::{Model, cpu};

    /// Input `[2, 4, 3, 5, 6]`, weights `[4, 2, 2, 3, 2]` (2 groups), a bias.
    const X: [usize; 5] = [2, 4, 3, 5, 6];
    const W: [usize; 5] = [4, 2, 2, 3, 2];

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                #[expect(clippy::cast_precision_loss, reason = "test values")]
                let t = i as f32;
                ((t * 0.37 + seed).sin() * 2.0).round() / 2.0
            })
            .collect()
    }

    /// The input, weights and bias every test runs.
    fn operands() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            values(X.iter().product(), 0.0),
            values(W.iter().product(), 1.0),
            values(W[0], 2.0),
        )
    }

    /// The convolution by its definition, pads (begin, end) per axis.
    fn direct(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        pads: [(usize, usize); 3],
        stride: [usize; 3],
        dilation: [usize; 3],
    ) -> (Vec<usize>, Vec<f32>) {
        let [n, c, d, h, wd] = X;
        let [m, cg, kd, kh, kw] = W;
        let groups = c / cg;
        let size = [d, h, wd];
        let k = [kd, kh, kw];
        let out: Vec<usize> = (0..3)
            .map(|a| {
                (size[a] + pads[a].0 + pads[a].1 - dilation[a] * (k[a] - 1) - 1) / stride[a] + 1
            })
            .collect();
        let mut y = vec![0f32; n * m * out[0] * out[1] * out[2]];
        let mut at = 0;
        for b in 0..n {
            for o in 0..m {
                let g = o / (m / groups);
                for z in 0..out[0] {
                    for r in 0..out[1] {
                        for q in 0..out[2] {
                            let mut sum = bias[o];
                            for ci in 0..cg {
                                for (i, j, l) in (0..kd).flat_map(|i| {
                                    (0..kh).flat_map(move |j| (0..kw).map(move |l| (i, j, l)))
                                }) {
                                    let pos = [
                                        (z * stride[0] + i * dilation[0]) as isize
                                            - pads[0].0 as isize,
                                        (r * stride[1] + j * dilation[1]) as isize
                                            - pads[1].0 as isize,
                                        (q * stride[2] + l * dilation[2]) as isize
                                            - pads[2].0 as isize,
                                    ];
                                    if (0..3).any(|a| pos[a] < 0 || pos[a] >= size[a] as isize) {
                                        continue;
                                    }
                                    let [pz, pr, pq] = pos.map(|p| p as usize);
                                    let ch = g * cg + ci;
                                    let xv = x[(((b * c + ch) * d + pz) * h + pr) * wd + pq];
                                    let wv = w[(((o * cg + ci) * kd + i) * kh + j) * kw + l];
                                    sum += xv * wv;
                                }
                            }
                            y[at] = sum;
                            at += 1;
                        }
                    }
                }
            }
        }
        (vec![n, m, out[0], out[1], out[2]], y)
    }

    fn run(attributes: Vec<onnx_ir::AttributeProto>) -> Result<(Vec<usize>, Vec<f32>), String> {
        let (x, w, bias) = operands();
        let dims = |d: &[usize]| d.iter().map(|&v| v as i64).collect::<Vec<_>>();
        let bytes = model(Graph {
            nodes: vec![with(
                node("Conv", "volume", &["x", "w", "b"], &["y"]),
                attributes,
            )],
            inputs: vec![info("x", 1, &[None, Some(4), Some(3), Some(5), Some(6)])],
            outputs: vec![info("y", 1, &[])],
            initializers: vec![floats("w", &dims(&W), &w), floats("b", &[4], &bias)],
        });
        let model = Model::load(&bytes, &cpu()).map_err(|e| e.to_string())?;
        let out = model
            .run(vec![("x".into(), TensorData::new(x, X.to_vec()))])
            .map_err(|e| e.to_string())?;
        let y = &out[0].1;
        Ok((
            y.shape().to_vec(),
            y.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?,
        ))
    }

    fn assert_close(got: &(Vec<usize>, Vec<f32>), want: &(Vec<usize>, Vec<f32>)) {
        assert_eq!(got.0, want.0, "output shape");
        for (i, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "value {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn a_grouped_strided_dilated_volume_conv_with_uneven_pads_matches_the_definition() {
        let (x, w, bias) = operands();
        let got = run(vec![
            ints("kernel_shape", &[2, 3, 2]),
            ints("pads", &[1, 0, 2, 0, 1, 1]),
            ints("strides", &[1, 2, 1]),
            ints("dilations", &[1, 1, 2]),
            int("group", 2),
        ])
        .expect("runs");
        let want = direct(
            &x,
            &w,
            &bias,
            [(1, 0), (0, 1), (2, 1)],
            [1, 2, 1],
            [1, 1, 2],
        );
        assert_close(&got, &want);
    }

    #[test]
    fn same_padding_pads_each_axis_of_a_volume() {
        let (x, w, bias) = operands();
        let got = run(vec![
            ints("kernel_shape", &[2, 3, 2]),
            string("auto_pad", "SAME_UPPER"),
            ints("strides", &[2, 1, 2]),
            int("group", 2),
        ])
        .expect("runs");
        // SAME_UPPER: out = ceil(in / stride); the odd pad goes at the end.
        let want = direct(
            &x,
            &w,
            &bias,
            [(0, 1), (1, 1), (0, 0)],
            [2, 1, 2],
            [1, 1, 1],
        );
        assert_eq!(got.0, vec![2, 4, 2, 5, 3]);
        assert_close(&got, &want);
    }

    #[test]
    fn a_volume_conv_that_cannot_fit_is_refused_not_a_panic() {
        let too_big = run(vec![ints("kernel_shape", &[2, 3, 2]), int("group", 4)]);
        assert!(
            too_big.is_err_and(|e| e.contains("groups")),
            "groups that do not match"
        );
        let window = run(vec![
            ints("kernel_shape", &[2, 3, 2]),
            ints("dilations", &[9, 1, 1]),
            int("group", 2),
        ]);
        assert!(
            window.is_err_and(|e| e.contains("does not fit")),
            "a window past the input"
        );
        let zero = run(vec![
            ints("kernel_shape", &[2, 3, 2]),
            ints("strides", &[0, 1, 1]),
            int("group", 2),
        ]);
        assert!(zero.is_err_and(|e| e.contains("strides")), "a stride of 0");
    }
}
