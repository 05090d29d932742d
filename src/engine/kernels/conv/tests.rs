//! Tests of `kernels::conv`.

use super::*;

/// Direct 7-loop convolution, the reference for im2col + GEMM.
fn reference_conv(c: &Conv2d, x: &Dense, pads: [(usize, usize); 2]) -> Dense {
    let [n, ch, h, w] = rank4(&x.shape, "").unwrap();
    let [oh, ow] = window_out_2d([h, w], pads, c.kernel, c.stride, c.dilation, false).unwrap();
    let cin_g = ch / c.groups;
    let cout_g = c.out_channels / c.groups;
    let mut out = vec![0f32; n * c.out_channels * oh * ow];
    for b in 0..n {
        for co in 0..c.out_channels {
            let g = co / cout_g;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = c.bias[co];
                    for ci in 0..cin_g {
                        for ky in 0..c.kernel[0] {
                            for kx in 0..c.kernel[1] {
                                let iy = (y * c.stride[0] + ky * c.dilation[0]) as isize
                                    - pads[0].0 as isize;
                                let ix = (xx * c.stride[1] + kx * c.dilation[1]) as isize
                                    - pads[1].0 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let input = x.data[((b * ch + g * cin_g + ci) * h + iy as usize)
                                    * w
                                    + ix as usize];
                                let weight = c.weight
                                    [((co * cin_g + ci) * c.kernel[0] + ky) * c.kernel[1] + kx];
                                acc += input * weight;
                            }
                        }
                    }
                    if c.relu {
                        acc = acc.max(0.0);
                    }
                    if let Some(hard) = c.hard {
                        let gate = (acc * hard.alpha + hard.beta).clamp(0.0, 1.0);
                        acc = if hard.swish { acc * gate } else { gate };
                    }
                    out[((b * c.out_channels + co) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    Dense::new(out, vec![n, c.out_channels, oh, ow]).unwrap()
}

/// A stride-1, undilated layer without ReLU, weights and bias from `ramp(…, seed)` and
/// `ramp(…, seed + 1)`; tests set the rest with struct update.
fn layer(cin: usize, cout: usize, groups: usize, kernel: [usize; 2], seed: u32) -> Conv2d {
    Conv2d {
        weight: ramp(cout * cin / groups * kernel[0] * kernel[1], seed),
        bias: ramp(cout, seed + 1),
        out_channels: cout,
        in_channels: cin,
        groups,
        kernel,
        stride: [1, 1],
        dilation: [1, 1],
        relu: false,
        hard: None,
        packed: Packed::None,
    }
}

/// `conv` on `x`, its output in a reused buffer of NaNs (every element must be written).
fn run_stale(conv: &Conv2d, x: &Dense, pads: [(usize, usize); 2]) -> Dense {
    let (shape, _) = conv.sizes(&x.shape, pads, Cap::unlimited()).unwrap();
    super::super::reuse::with_stale(shape.iter().product(), || {
        conv.run(x, pads, Cap::unlimited()).unwrap()
    })
}

/// `conv` on `x` against the 7-loop reference, its output in a reused buffer of NaNs;
/// `what` names the case in a failure.
fn matches_the_reference(conv: &Conv2d, x: &Dense, pads: [(usize, usize); 2], what: &str) {
    let got = run_stale(conv, x, pads);
    let want = reference_conv(conv, x, pads);
    assert_eq!(got.shape, want.shape, "{what}");
    for (a, b) in got.data.iter().zip(want.data.iter()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b} ({what})");
    }
}

fn ramp(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16;
            (v % 200) as f32 / 100.0 - 1.0
        })
        .collect()
}

#[test]
fn conv_matches_the_direct_loop() {
    for (groups, cout, kernel, stride, dilation, pads, relu) in [
        (1, 8, [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], false),
        (1, 8, [1, 1], [1, 1], [1, 1], [(0, 0), (0, 0)], true),
        (1, 21, [1, 1], [1, 1], [1, 1], [(0, 0), (0, 0)], false),
        (1, 3, [1, 1], [1, 1], [1, 1], [(1, 0), (0, 1)], true),
        // Few input channels, ungrouped: the direct kernel (stems), every stride mix.
        (1, 5, [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)], true),
        (1, 6, [3, 2], [2, 1], [1, 1], [(0, 2), (1, 0)], false),
        (1, 3, [5, 5], [1, 2], [1, 1], [(2, 2), (2, 2)], true),
        (1, 9, [7, 7], [2, 2], [1, 1], [(3, 3), (3, 3)], false),
        (1, 4, [3, 3], [1, 1], [2, 2], [(2, 2), (2, 2)], false),
        (2, 8, [3, 2], [2, 1], [1, 2], [(0, 2), (1, 0)], true),
        (4, 8, [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)], false),
        // Depthwise (one channel in and out per group): the direct kernel.
        (4, 4, [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)], true),
        (4, 4, [3, 2], [2, 3], [2, 1], [(0, 2), (1, 0)], false),
        (4, 4, [3, 3], [1, 1], [1, 1], [(0, 0), (0, 0)], false),
        (4, 4, [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)], true),
        (4, 4, [5, 3], [2, 1], [1, 2], [(2, 1), (0, 2)], false),
        // Stride 2 across (the even/odd phases), dilated, odd and even left pads.
        (4, 4, [3, 3], [1, 2], [2, 2], [(1, 0), (2, 1)], true),
        (4, 4, [3, 5], [2, 2], [1, 1], [(0, 1), (1, 2)], false),
        (4, 4, [2, 2], [2, 2], [1, 3], [(0, 0), (3, 0)], false),
    ] {
        let cin = 4;
        let mut conv = Conv2d {
            stride,
            dilation,
            relu,
            ..layer(cin, cout, groups, kernel, 1)
        };
        // As built, then as planned (packed for the panel kernel where it fits); an
        // even and an odd width (the stride phases split differently), one tall enough
        // for several bands of the direct kernel, the last one partial, one whose output
        // rows are narrower than a chunk of 8, and one past two 32-column blocks.
        // On AVX-512 CPUs, through the AVX2 paths too; one width with whole blocks of
        // 32 output columns and a tail.
        for prepared in [false, true] {
            if prepared {
                conv.prepare();
            }
            for narrow in [false, true] {
                super::super::panels::NARROW_ONLY.with(|n| n.set(narrow));
                for (h, w) in [(7, 6), (6, 7), (37, 21), (4, 3), (5, 70)] {
                    let x = Dense::new(ramp(2 * cin * h * w, 3), vec![2, cin, h, w]).unwrap();
                    let what = format!("{groups} {kernel:?} {w} {prepared} {narrow}");
                    matches_the_reference(&conv, &x, pads, &what);
                }
            }
            super::super::panels::NARROW_ONLY.with(|n| n.set(false));
        }
    }
}

/// Runs `conv` as an inference runs (on the pool, its workers awake) and checks it against
/// the 7-loop reference.
fn matches_the_direct_loop_as_an_inference(conv: &Conv2d, x: &Dense, pads: [(usize, usize); 2]) {
    matches_within(conv, x, pads, 1e-4);
}

#[test]
fn a_stem_spread_over_the_pool_matches_the_direct_loop() {
    // 3 → 24 channels, 3×3, stride 2 on an odd-sized image: enough multiply-adds for
    // the direct kernel to spread its bands over the pool (where it has 2 threads).
    let (cin, cout) = (3, 24);
    let conv = Conv2d {
        stride: [2, 2],
        relu: true,
        ..layer(cin, cout, 1, [3, 3], 1)
    };
    assert!(conv.direct_fits() || !super::super::panels::available());
    let (h, w) = (199, 171);
    let x = Dense::new(ramp(cin * h * w, 3), vec![1, cin, h, w]).unwrap();
    let pads = [(1, 1), (1, 0)];
    matches_the_direct_loop_as_an_inference(&conv, &x, pads);
}

#[test]
fn a_pointwise_layer_spread_over_the_pool_matches_the_direct_loop() {
    // 64 → 44 channels, 1×1, batch 2: enough multiply-adds to split by output channels
    // (where the pool has 2 threads), the last piece not a whole 8 rows.
    let (cin, cout) = (64, 44);
    let conv = Conv2d {
        relu: true,
        ..layer(cin, cout, 1, [1, 1], 1)
    };
    let (h, w) = (29, 31);
    let x = Dense::new(ramp(2 * cin * h * w, 3), vec![2, cin, h, w]).unwrap();
    let pads = [(0, 0), (0, 0)];
    matches_the_direct_loop_as_an_inference(&conv, &x, pads);
}

/// A narrowing 1×1 layer on one image (a projection) splits by columns where the pool has
/// two threads: every output channel of each thread's pixels, the last piece short; ReLU
/// and HardSwish epilogues per piece.
#[test]
fn a_projection_spread_over_the_pool_by_columns_matches_the_direct_loop() {
    let (cin, cout) = (96, 40);
    let swish = Hard {
        swish: true,
        alpha: 1.0 / 6.0,
        beta: 0.5,
    };
    for (relu, hard) in [(true, None), (false, Some(swish))] {
        let conv = Conv2d {
            relu,
            hard,
            ..layer(cin, cout, 1, [1, 1], 9)
        };
        for (h, w) in [(14, 14), (7, 7), (5, 11)] {
            let x = Dense::new(ramp(cin * h * w, 3), vec![1, cin, h, w]).unwrap();
            matches_the_direct_loop_as_an_inference(&conv, &x, [(0, 0), (0, 0)]);
        }
    }
}

#[test]
fn fully_connected_layers_on_one_pixel_match_the_direct_loop() {
    // Squeeze-and-excite's 1×1 layers on a 1×1 plane: dot products, split over the pool
    // when the weights are large (144 × 576), on one thread when small; ReLU; a batch of
    // two is one product.
    for (cin, cout) in [(576, 144), (144, 576), (24, 7), (9, 100)] {
        let conv = Conv2d {
            relu: true,
            ..layer(cin, cout, 1, [1, 1], 3)
        };
        for batch in [1, 2] {
            // Small inputs, so sums of 576 products stay near 1 (the tolerance is absolute).
            let small = ramp(batch * cin, 3).iter().map(|v| v / 64.0).collect();
            let x = Dense::new(small, vec![batch, cin, 1, 1]).unwrap();
            let pads = [(0, 0), (0, 0)];
            matches_the_reference(&conv, &x, pads, &format!("{cin}→{cout} on 1×1"));
            matches_the_direct_loop_as_an_inference(&conv, &x, pads);
        }
    }
}

#[test]
fn a_pointwise_layer_past_l2_in_column_blocks_matches_the_direct_loop() {
    // 5 → 48 channels, 1×1, on 80×83 (6640 columns): past one product's 128k output
    // floats on one or two threads (blocks of 688 or 1376 columns, the last one short).
    let (cin, cout) = (5, 48);
    let conv = Conv2d {
        relu: true,
        ..layer(cin, cout, 1, [1, 1], 5)
    };
    let (h, w) = (80, 83);
    let x = Dense::new(ramp(2 * cin * h * w, 7), vec![2, cin, h, w]).unwrap();
    let pads = [(0, 0), (0, 0)];
    matches_the_reference(&conv, &x, pads, "column blocks");
    matches_the_direct_loop_as_an_inference(&conv, &x, pads);
    // The blocks themselves, whatever the pool's size: channels 0..48 and 8..28 of the
    // first image (blocks of 688 and 1648 columns, each with a short last one).
    let want = reference_conv(&conv, &x, pads);
    let plane = h * w;
    for (first, m) in [(0, 48), (8, 20)] {
        let mut dst = vec![f32::NAN; m * plane];
        conv.pointwise_rows(
            first,
            m,
            &x.data[..cin * plane],
            plane,
            &mut dst,
            super::Onto::over(&conv),
        );
        let rows = &want.data[first * plane..][..m * plane];
        for (a, b) in dst.iter().zip(rows) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b} (channels {first}..+{m})");
        }
    }
}

/// HardSwish and HardSigmoid fused into the layer: in the column blocks of 1×1 layers
/// (one product, blocks past L2, split over the pool by channels), and as a pass after
/// every other path (Winograd, the direct stem, depthwise, strided im2col).
#[test]
fn fused_hard_activations_match_the_direct_loop() {
    let swish = Hard {
        swish: true,
        alpha: 1.0 / 6.0,
        beta: 0.5,
    };
    let sigmoid = Hard {
        swish: false,
        alpha: 0.2,
        beta: 0.5,
    };
    // (in, out, groups, kernel, stride, pads, batch, side)
    type Case = (
        usize,
        usize,
        usize,
        [usize; 2],
        usize,
        usize,
        usize,
        [usize; 2],
    );
    let cases: [Case; 7] = [
        (8, 21, 1, [1, 1], 1, 0, 1, [7, 6]),
        (144, 576, 1, [1, 1], 1, 0, 2, [1, 1]),
        (5, 48, 1, [1, 1], 1, 0, 1, [80, 83]),
        (64, 44, 1, [1, 1], 1, 0, 2, [29, 31]),
        (16, 8, 1, [3, 3], 1, 1, 1, [9, 13]),
        (3, 24, 1, [3, 3], 2, 1, 1, [57, 61]),
        (12, 12, 12, [3, 3], 2, 1, 1, [30, 31]),
    ];
    for (cin, cout, groups, kernel, stride, pad, batch, [h, w]) in cases {
        for hard in [swish, sigmoid] {
            let mut conv = Conv2d {
                stride: [stride, stride],
                hard: Some(hard),
                ..layer(cin, cout, groups, kernel, 11)
            };
            conv.prepare();
            let x = Dense::new(ramp(batch * cin * h * w, 5), vec![batch, cin, h, w]).unwrap();
            let pads = [(pad, pad), (pad, pad)];
            let what = format!("{cin}→{cout} {kernel:?} {hard:?}");
            matches_the_reference(&conv, &x, pads, &what);
            matches_the_direct_loop_as_an_inference(&conv, &x, pads);
        }
    }
}

/// The blocked depthwise path (channels as lanes, outputs under 16 columns across):
/// several blocks and a partial last one, 3×3 and 5×5 at strides 1 and 2, dilated,
/// uneven pads, planes whose pixels are and are not a multiple of 8 (the copies' vector
/// and scalar parts), ReLU and the hard activations, batch 2; one layer large enough to
/// spread over the pool.
#[test]
fn blocked_depthwise_matches_the_direct_loop() {
    let swish = Hard {
        swish: true,
        alpha: 1.0 / 6.0,
        beta: 0.5,
    };
    // (channels, kernel, stride, dilation, pads, side)
    type Case = (
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [(usize, usize); 2],
        [usize; 2],
    );
    let cases: [Case; 7] = [
        (20, [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], [7, 7]),
        (20, [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)], [14, 14]),
        (8, [5, 5], [2, 2], [1, 1], [(2, 2), (2, 2)], [14, 14]),
        (13, [3, 3], [2, 1], [2, 1], [(0, 2), (1, 0)], [9, 11]),
        (16, [3, 5], [1, 2], [1, 2], [(2, 1), (0, 3)], [5, 15]),
        (3, [1, 1], [1, 1], [1, 1], [(0, 0), (0, 0)], [2, 3]),
        (72, [5, 5], [1, 1], [1, 1], [(2, 2), (2, 2)], [14, 14]),
    ];
    for (channels, kernel, stride, dilation, pads, [h, w]) in cases {
        for (relu, hard) in [(false, None), (true, None), (false, Some(swish))] {
            let mut conv = Conv2d {
                stride,
                dilation,
                relu,
                hard,
                ..layer(channels, channels, channels, kernel, 17)
            };
            conv.prepare();
            let what = format!("{channels} {kernel:?} {stride:?} {relu} {hard:?}");
            if super::super::panels::available() {
                assert!(matches!(conv.packed, Packed::Depthwise(_)), "{what}");
            }
            let x = Dense::new(ramp(2 * channels * h * w, 7), vec![2, channels, h, w]).unwrap();
            matches_the_reference(&conv, &x, pads, &what);
            matches_the_direct_loop_as_an_inference(&conv, &x, pads);
        }
    }
}

/// Inputs with no rows or no columns whose windows reach only padding, through the
/// direct, depthwise, im2col and Winograd paths: the bias (zero taps), never a panic.
#[test]
fn empty_planes_convolve_without_panicking() {
    for (cin, groups, cout) in [(3, 1, 4), (4, 4, 4), (4, 2, 6), (16, 1, 8)] {
        let mut conv = layer(cin, cout, groups, [3, 3], 13);
        conv.prepare();
        for shape in [[2, cin, 4, 0], [2, cin, 0, 4], [1, cin, 0, 0]] {
            let x = Dense::new(Vec::new(), shape.to_vec()).unwrap();
            let got = run_stale(&conv, &x, [(2, 2), (2, 2)]);
            let want = reference_conv(&conv, &x, [(2, 2), (2, 2)]);
            assert_eq!(got, want, "{cin} {groups} {shape:?}");
        }
    }
}

/// The Winograd path: odd and even sizes (partial 2×2 tiles), pads from 0 to 2 on
/// each side, output channels past a multiple of 8, 1×1 images, a batch of 2; and a
/// 512-channel layer cut into several blocks of tiles (spread over the pool when it
/// has more than one thread).
#[test]
fn winograd_matches_the_direct_loop() {
    type Case = (usize, usize, usize, usize, [(usize, usize); 2], bool);
    let cases: [Case; 9] = [
        (16, 8, 7, 6, [(1, 1), (1, 1)], false),
        // Output channels in ranges of 128 (and of 64, to give two threads work).
        (24, 200, 10, 9, [(1, 1), (1, 1)], true),
        (64, 300, 3, 4, [(1, 1), (1, 1)], false),
        (17, 10, 6, 7, [(1, 1), (1, 1)], true),
        (16, 9, 9, 13, [(0, 0), (1, 2)], true),
        (20, 16, 5, 5, [(2, 0), (0, 2)], false),
        (16, 8, 1, 1, [(1, 1), (1, 1)], true),
        (18, 11, 3, 3, [(0, 0), (0, 0)], false),
        (512, 9, 24, 24, [(1, 1), (1, 1)], true),
    ];
    for (cin, cout, h, w, pads, relu) in cases {
        let mut conv = Conv2d {
            relu,
            ..layer(cin, cout, 1, [3, 3], 7)
        };
        conv.prepare();
        assert_eq!(
            matches!(conv.packed, Packed::Winograd(_)),
            super::super::panels::available()
        );
        let x = Dense::new(ramp(2 * cin * h * w, 9), vec![2, cin, h, w]).unwrap();
        let got = run_stale(&conv, &x, pads);
        let want = reference_conv(&conv, &x, pads);
        assert_eq!(got.shape, want.shape);
        let tolerance = 1e-4 * (cin as f32).sqrt();
        for (i, (a, b)) in got.data.iter().zip(want.data.iter()).enumerate() {
            assert!(
                (a - b).abs() < tolerance,
                "{a} vs {b} at {i} ({cin}→{cout} {h}×{w} {pads:?})"
            );
        }
    }
}

/// A layer deep enough that its unfolded input is built a few channels at a time
/// (64 channels, 3×3, 48×48: chunks of 29, 29 and 6); in 2 groups, each whole.
#[test]
fn deep_conv_in_channel_chunks_matches_the_direct_loop() {
    let (cin, cout, side) = (64, 5, 48);
    assert_eq!(Conv2d::channel_chunk(cin, 9, side * side), 29);
    for groups in [1, 2] {
        let conv = Conv2d {
            relu: true,
            ..layer(cin, cout * groups, groups, [3, 3], 4)
        };
        let x = Dense::new(ramp(cin * side * side, 6), vec![1, cin, side, side]).unwrap();
        let pads = [(1, 1), (1, 1)];
        let got = run_stale(&conv, &x, pads);
        let want = reference_conv(&conv, &x, pads);
        assert_eq!(got.shape, want.shape);
        for (a, b) in got.data.iter().zip(want.data.iter()) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b} (groups {groups})");
        }
    }
}

/// Ungrouped layers beyond the stem's few channels that Winograd does not take (strides,
/// 1×1 at stride 2, 5×5 and 7×7 windows, dilation, narrow 3×3): im2col into the panel
/// kernel's panels, with blocks that end inside an output row and images of odd and even
/// sizes; then one layer large enough to split its blocks over the pool.
#[test]
fn unfolded_convolutions_match_the_direct_loop() {
    for (cin, cout, kernel, stride, dilation, pads) in [
        (16, 32, [3, 3], [2, 2], [1, 1], [(1, 1), (1, 1)]),
        (5, 7, [3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)]),
        (6, 13, [1, 1], [2, 2], [1, 1], [(0, 0), (0, 0)]),
        (8, 6, [5, 5], [2, 2], [1, 1], [(2, 2), (2, 2)]),
        (5, 9, [7, 7], [2, 2], [1, 1], [(3, 3), (3, 3)]),
        (17, 8, [3, 3], [1, 1], [2, 2], [(2, 2), (2, 2)]),
        (9, 5, [3, 2], [2, 1], [1, 2], [(0, 2), (1, 0)]),
        (12, 4, [1, 3], [1, 2], [1, 1], [(1, 0), (0, 1)]),
    ] {
        let mut conv = Conv2d {
            stride,
            dilation,
            relu: cout % 2 == 0,
            ..layer(cin, cout, 1, kernel, 4)
        };
        conv.prepare();
        assert_eq!(
            matches!(conv.packed, Packed::Unfold(_)),
            super::super::panels::available(),
            "{cin}→{cout} {kernel:?} {stride:?}"
        );
        for (h, w) in [(7, 6), (9, 11), (23, 17)] {
            let x = Dense::new(ramp(2 * cin * h * w, 6), vec![2, cin, h, w]).unwrap();
            matches_the_reference(&conv, &x, pads, &format!("{cin}→{cout} {kernel:?} {h}×{w}"));
        }
    }
    let mut conv = Conv2d {
        stride: [2, 2],
        relu: true,
        ..layer(16, 32, 1, [3, 3], 7)
    };
    conv.prepare();
    let x = Dense::new(ramp(16 * 81 * 79, 9), vec![1, 16, 81, 79]).unwrap();
    matches_the_direct_loop_as_an_inference(&conv, &x, [(1, 1), (1, 1)]);
}

/// The panel kernel's ways of cutting a layer: weights too deep for one range of output
/// channels (512 channels, 3×3: ranges of 30 and 36), on images of one pixel (on this thread)
/// and a few (over the pool); widening 1×1 layers, on one pixel too (the fully connected
/// path) and a batch of 2; an image too large to unfold whole (each block by its tasks).
#[test]
fn unfolded_layers_cut_by_channels_and_pixels_match_the_direct_loop() {
    // (cin, cout, kernel, stride, pads, batch, side)
    type Case = (usize, usize, [usize; 2], usize, usize, usize, [usize; 2]);
    let cases: [Case; 7] = [
        (512, 50, [3, 3], 2, 1, 1, [2, 2]),
        (512, 100, [3, 3], 2, 1, 1, [7, 7]),
        (128, 520, [1, 1], 1, 0, 2, [5, 7]),
        // Past L2 unfolded: a block of panels at a time, a partial panel last.
        (128, 520, [1, 1], 1, 0, 1, [47, 49]),
        (128, 520, [1, 1], 1, 0, 1, [1, 1]),
        (130, 516, [1, 1], 2, 0, 1, [9, 8]),
        (16, 8, [3, 3], 2, 1, 1, [342, 345]),
    ];
    for (cin, cout, kernel, stride, pad, batch, [h, w]) in cases {
        let mut conv = Conv2d {
            stride: [stride, stride],
            relu: true,
            ..layer(cin, cout, 1, kernel, 5)
        };
        conv.prepare();
        let what = format!("{cin}→{cout} {kernel:?} /{stride} {h}×{w}");
        assert_eq!(
            matches!(conv.packed, Packed::Unfold(_)),
            super::super::panels::available(),
            "{what}"
        );
        let x = Dense::new(ramp(batch * cin * h * w, 8), vec![batch, cin, h, w]).unwrap();
        let pads = [(pad, pad), (pad, pad)];
        let got = run_stale(&conv, &x, pads);
        let want = reference_conv(&conv, &x, pads);
        assert_eq!(got.shape, want.shape, "{what}");
        let tolerance = 1e-4 * (cin as f32).sqrt();
        for (a, b) in got.data.iter().zip(want.data.iter()) {
            assert!((a - b).abs() < tolerance, "{a} vs {b} ({what})");
        }
        matches_within(&conv, &x, pads, tolerance);
    }
    // A narrowing 1×1 layer, or a small one, stays on the `gemm` crate.
    for (cin, cout) in [(520, 128), (64, 256)] {
        let mut conv = layer(cin, cout, 1, [1, 1], 5);
        conv.prepare();
        assert!(matches!(conv.packed, Packed::None), "{cin}→{cout}");
    }
}

/// `conv` on `x` as an inference runs it (on the pool, split where it splits), against
/// the 7-loop reference within `tolerance`.
fn matches_within(conv: &Conv2d, x: &Dense, pads: [(usize, usize); 2], tolerance: f32) {
    let hint = std::sync::atomic::AtomicBool::new(true);
    let (shape, _) = conv.sizes(&x.shape, pads, Cap::unlimited()).unwrap();
    let got = crate::engine::threads::spread(&hint, || {
        super::super::reuse::with_stale(shape.iter().product(), || {
            conv.run(x, pads, Cap::unlimited())
        })
    })
    .unwrap();
    let want = reference_conv(conv, x, pads);
    assert_eq!(got.shape, want.shape);
    for (a, b) in got.data.iter().zip(want.data.iter()) {
        assert!((a - b).abs() < tolerance, "{a} vs {b}");
    }
}
