//! Tests of `kernels::pool`.

use super::*;

#[test]
fn window_spans_match_counting_every_tap() {
    for (k, s, d, pads, size) in [
        (3, 1, 1, (1, 1), 5),
        (3, 2, 2, (2, 0), 7),
        (5, 3, 1, (0, 4), 4),
        (2, 1, 3, (3, 3), 2),
        (4, 2, 1, (0, 0), 9),
    ] {
        let pool = Pool {
            kernel: [k, k],
            stride: [s, s],
            dilation: [d, d],
            ceil: true,
            kind: PoolKind::Max,
        };
        for o in 0..6 {
            let (mut first, mut count, mut padded) = (None, 0, 0);
            for t in 0..k {
                let p = o * s + t * d;
                if p < size + pads.0 + pads.1 {
                    padded += 1;
                }
                if let Some(i) = p.checked_sub(pads.0).filter(|i| *i < size) {
                    first.get_or_insert(i);
                    count += 1;
                }
            }
            assert_eq!(
                pool.span(o, pads, size, 0),
                (first.unwrap_or(0), count, padded),
                "k {k} s {s} d {d} pads {pads:?} size {size} o {o}"
            );
        }
    }
}

#[test]
fn pools_follow_onnx_sizes_and_padding() {
    let x = Dense::new((0..16).map(|v| v as f32).collect(), vec![1, 1, 4, 4]).unwrap();
    let max = Pool {
        kernel: [2, 2],
        stride: [2, 2],
        dilation: [1, 1],
        ceil: false,
        kind: PoolKind::Max,
    };
    let y = run_stale(&max, &x, [(0, 0), (0, 0)]);
    assert_eq!(*y.data, vec![5.0, 7.0, 13.0, 15.0]);
    // 3×3 stride 2 with ceil: the last window hangs over the edge.
    let ceil = Pool {
        kernel: [3, 3],
        stride: [2, 2],
        ceil: true,
        ..max.clone()
    };
    let y = run_stale(&ceil, &x, [(0, 0), (0, 0)]);
    assert_eq!(y.shape, vec![1, 1, 2, 2]);
    assert_eq!(*y.data, vec![10.0, 11.0, 14.0, 15.0]);
    let avg = Pool {
        kind: PoolKind::Average {
            count_include_pad: true,
        },
        kernel: [3, 3],
        stride: [1, 1],
        ..max.clone()
    };
    let y = run_stale(&avg, &x, [(1, 1), (1, 1)]);
    assert_eq!(y.shape, vec![1, 1, 4, 4]);
    assert!((y.data[0] - (0.0 + 1.0 + 4.0 + 5.0) / 9.0).abs() < 1e-6);
    let exclude = Pool {
        kind: PoolKind::Average {
            count_include_pad: false,
        },
        ..avg
    };
    let y = run_stale(&exclude, &x, [(1, 1), (1, 1)]);
    assert!((y.data[0] - 2.5).abs() < 1e-6);
}

/// Padded max pooling (the -∞ copy) against the window taken tap by tap.
/// Planes with no rows or no columns (a fuzzed MaxPool once split them into chunks of
/// 0): an empty output, or windows made only of padding, never a panic.
#[test]
fn empty_planes_pool_without_panicking() {
    for kind in [
        PoolKind::Max,
        PoolKind::Average {
            count_include_pad: false,
        },
    ] {
        let pool = Pool {
            kernel: [2, 2],
            stride: [1, 1],
            dilation: [1, 1],
            ceil: false,
            kind,
        };
        for (shape, pads) in [
            ([1, 2, 0, 8], [(0, 0), (1, 0)]),
            ([1, 2, 0, 8], [(0, 1), (1, 0)]),
            ([1, 2, 0, 8], [(1, 1), (0, 1)]),
            ([1, 2, 3, 0], [(1, 0), (1, 1)]),
            ([1, 2, 0, 0], [(1, 1), (1, 1)]),
        ] {
            let x = Dense::new(Vec::new(), shape.to_vec()).unwrap();
            match pool.run(&x, pads, Cap::unlimited()) {
                Ok(out) => assert_eq!(out.data.len(), out.shape.iter().product::<usize>()),
                Err(e) => assert!(matches!(e, EngineError::Invalid(_)), "{e}"),
            }
        }
    }
}

#[test]
fn padded_max_matches_every_window() {
    // Small, and large enough to split its planes over the pool (where it has 2 threads).
    for (h, w, channels) in [(7, 6, 2), (57, 61, 24)] {
        padded_max_matches_every_window_on(h, w, channels);
    }
}

fn padded_max_matches_every_window_on(h: usize, w: usize, channels: usize) {
    let values: Vec<f32> = (0..channels * h * w)
        .map(|v| ((v * 37) % 23) as f32 - 11.0)
        .collect();
    let x = Dense::new(values, vec![1, channels, h, w]).unwrap();
    for (k, s, pads) in [
        (5, 1, [(2, 2), (2, 2)]),
        (3, 2, [(1, 0), (0, 2)]),
        (2, 1, [(1, 1), (1, 1)]),
    ] {
        let pool = Pool {
            kernel: [k, k],
            stride: [s, s],
            dilation: [1, 1],
            ceil: false,
            kind: PoolKind::Max,
        };
        let y = run_stale(&pool, &x, pads);
        let [_, _, oh, ow] = <[usize; 4]>::try_from(y.shape.as_slice()).unwrap();
        for c in 0..channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    for ty in 0..k {
                        for tx in 0..k {
                            let iy = (oy * s + ty).checked_sub(pads[0].0).filter(|i| *i < h);
                            let ix = (ox * s + tx).checked_sub(pads[1].0).filter(|i| *i < w);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                best = best.max(x.data[(c * h + iy) * w + ix]);
                            }
                        }
                    }
                    assert_eq!(
                        y.data[(c * oh + oy) * ow + ox],
                        best,
                        "k {k} s {s} at {c},{oy},{ox}"
                    );
                }
            }
        }
    }
}

/// Windows inside the input (the whole-plane, even/odd and generic paths), max and
/// average, odd and even widths, against the window taken tap by tap.
#[test]
fn inside_pools_match_every_window() {
    let (h, w) = (9, 11);
    let values: Vec<f32> = (0..2 * h * w)
        .map(|v| ((v * 37) % 23) as f32 - 11.0)
        .collect();
    let x = Dense::new(values, vec![1, 2, h, w]).unwrap();
    for (kernel, stride) in [
        ([3, 3], [1, 1]),
        ([5, 2], [1, 1]),
        ([2, 5], [1, 1]),
        ([9, 11], [1, 1]),
        ([3, 3], [2, 2]),
        ([2, 2], [2, 2]),
        ([3, 4], [1, 2]),
        ([2, 3], [2, 1]),
        ([3, 3], [3, 3]),
    ] {
        for kind in [
            PoolKind::Max,
            PoolKind::Average {
                count_include_pad: false,
            },
        ] {
            let pool = Pool {
                kernel,
                stride,
                dilation: [1, 1],
                ceil: false,
                kind,
            };
            let y = run_stale(&pool, &x, [(0, 0), (0, 0)]);
            let [_, _, oh, ow] = <[usize; 4]>::try_from(y.shape.as_slice()).unwrap();
            for c in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let taps = (0..kernel[0]).flat_map(|ty| {
                            (0..kernel[1]).map(move |tx| {
                                ((c * h + oy * stride[0] + ty) * w) + ox * stride[1] + tx
                            })
                        });
                        let want = match kind {
                            PoolKind::Max => {
                                taps.map(|i| x.data[i]).fold(f32::NEG_INFINITY, f32::max)
                            }
                            PoolKind::Average { .. } => {
                                taps.map(|i| x.data[i]).sum::<f32>()
                                    / (kernel[0] * kernel[1]) as f32
                            }
                        };
                        let got = y.data[(c * oh + oy) * ow + ox];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{kernel:?} {stride:?} {kind:?} at {c},{oy},{ox}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// Strided max pooling (the column-phase path, padded and not) lets NaN lose to a number,
/// as `f32::max` does, wherever it falls in a window.
#[test]
fn strided_max_pools_let_nan_lose() {
    let (h, w) = (12, 21);
    let values: Vec<f32> = (0..3 * h * w)
        .map(|v| {
            if v % 7 == 3 {
                f32::NAN
            } else {
                ((v * 37) % 23) as f32 - 11.0
            }
        })
        .collect();
    let x = Dense::new(values, vec![1, 3, h, w]).unwrap();
    for pads in [[(0, 0), (0, 0)], [(1, 1), (1, 0)]] {
        let pool = Pool {
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
            ceil: false,
            kind: PoolKind::Max,
        };
        let y = run_stale(&pool, &x, pads);
        let [_, _, oh, ow] = <[usize; 4]>::try_from(y.shape.as_slice()).unwrap();
        for c in 0..3 {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut want = f32::NEG_INFINITY;
                    for ty in 0..3 {
                        for tx in 0..3 {
                            let iy = (oy * 2 + ty).checked_sub(pads[0].0).filter(|i| *i < h);
                            let ix = (ox * 2 + tx).checked_sub(pads[1].0).filter(|i| *i < w);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                want = want.max(x.data[(c * h + iy) * w + ix]);
                            }
                        }
                    }
                    let got = y.data[(c * oh + oy) * ow + ox];
                    assert_eq!(got, want, "{pads:?} at {c},{oy},{ox}");
                }
            }
        }
    }
}

/// `pool` on `x`, its output in a reused buffer of NaNs (every element must be written).
fn run_stale(pool: &Pool, x: &Dense, pads: [(usize, usize); 2]) -> Dense {
    let [n, c, oh, ow] = pool.out_shape(&x.shape, pads, Cap::unlimited()).unwrap();
    super::super::reuse::with_stale(n * c * oh * ow, || {
        pool.run(x, pads, Cap::unlimited()).unwrap()
    })
}
