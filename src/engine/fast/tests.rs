//! The CPU plan's rewrites, each on a small graph: the fused or rewritten plan (its step
//! count, which steps run on cairn's kernels) and its values against a reference.

use burn::tensor::TensorData;

use crate::engine::test_graphs::{Graph, float, floats, info, ints, model, model_at, node, with};
use crate::engine::{Model, cpu};

fn run(bytes: &[u8], feed: &[(&str, Vec<f32>, Vec<usize>)]) -> (Vec<Vec<f32>>, Vec<bool>) {
    let loaded = Model::load(bytes, &cpu()).unwrap();
    let feed: Vec<(String, TensorData)> = feed
        .iter()
        .map(|(name, values, shape)| {
            (
                (*name).to_owned(),
                TensorData::new(values.clone(), shape.clone()),
            )
        })
        .collect();
    let host = loaded
        .profile(&feed, 1)
        .unwrap()
        .iter()
        .map(|s| s.host)
        .collect();
    let outputs = loaded
        .run(feed)
        .unwrap()
        .into_iter()
        .map(|(_, data)| data.convert::<f32>().try_to_vec().unwrap())
        .collect();
    (outputs, host)
}

/// The plan's step count and the first output's values for `feed`.
fn steps_and_output(bytes: &[u8], feed: Vec<(String, TensorData)>) -> (usize, Vec<f32>) {
    let loaded = Model::load(bytes, &cpu()).unwrap();
    let steps = loaded.profile(&feed, 1).unwrap().len();
    let out = loaded.run(feed).unwrap();
    (steps, out[0].1.try_to_vec::<f32>().unwrap())
}

/// A fused plan's values agree with the unfused plan's within `tolerance` (relative past 1).
fn assert_agree(fused: &[f32], unfused: &[f32], tolerance: f32, what: &str) {
    assert_eq!(fused.len(), unfused.len(), "{what}");
    for (a, b) in fused.iter().zip(unfused) {
        assert!(
            (a - b).abs() <= tolerance * b.abs().max(1.0),
            "{a} vs {b}: {what}"
        );
    }
}

/// SiLU (`Mul(x, Sigmoid(x))`) runs as one fused step on the CPU, and unfused when the
/// Sigmoid is also a graph output; both agree with `x / (1 + e^-x)`.
#[test]
fn silu_fused_or_not_is_x_times_its_sigmoid() {
    for sigmoid_is_output in [false, true] {
        let mut outputs = vec![info("y", 1, &[])];
        if sigmoid_is_output {
            outputs.push(info("s", 1, &[]));
        }
        let bytes = model(Graph {
            nodes: vec![
                node("Sigmoid", "gate", &["x"], &["s"]),
                node("Mul", "silu", &["s", "x"], &["y"]),
            ],
            inputs: vec![info("x", 1, &[Some(2), Some(5)])],
            outputs,
            initializers: vec![],
        });
        let loaded = Model::load(&bytes, &cpu()).unwrap();
        let xs = vec![-20.0f32, -3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.0, 5.0, 30.0];
        let feed = vec![("x".to_owned(), TensorData::new(xs.clone(), vec![2, 5]))];
        let steps = loaded.profile(&feed, 1).unwrap().len();
        assert_eq!(steps, if sigmoid_is_output { 2 } else { 1 });
        let out = loaded.run(feed).unwrap();
        assert_eq!(out.len(), 1 + usize::from(sigmoid_is_output));
        let y: Vec<f32> = out[0].1.try_to_vec().unwrap();
        for (got, x) in y.iter().zip(&xs) {
            let want = x / (1.0 + (-x).exp());
            assert!(
                (got - want).abs() <= 1e-6 * want.abs() + 1e-7,
                "{got} vs {want}"
            );
        }
    }
}

/// torch's exact GELU, `(x · (1 + erf(x / √2))) · 0.5`, fuses into one step, and agrees
/// with the five steps it replaces (kept when the Erf is also a graph output) and with
/// known values.
#[test]
fn decomposed_gelu_fuses_into_one_step() {
    let xs = vec![-6.0f32, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 8.0];
    let mut results = Vec::new();
    for erf_is_output in [false, true] {
        let mut outputs = vec![info("y", 1, &[])];
        if erf_is_output {
            outputs.push(info("e", 1, &[]));
        }
        let bytes = model(Graph {
            nodes: vec![
                node("Div", "div", &["x", "root2"], &["d"]),
                node("Erf", "erf", &["d"], &["e"]),
                node("Add", "add", &["e", "one"], &["a"]),
                node("Mul", "mul", &["x", "a"], &["m"]),
                node("Mul", "half", &["m", "half"], &["y"]),
            ],
            inputs: vec![info("x", 1, &[Some(2), Some(5)])],
            outputs,
            initializers: vec![
                floats("root2", &[], &[std::f32::consts::SQRT_2]),
                floats("one", &[], &[1.0]),
                floats("half", &[], &[0.5]),
            ],
        });
        let (out, host) = run(&bytes, &[("x", xs.clone(), vec![2, 5])]);
        assert_eq!(host.len(), if erf_is_output { 5 } else { 1 });
        assert!(host.iter().all(|h| *h), "every step on cairn's kernels");
        results.push(out[0].clone());
    }
    for (fused, unfused) in results[0].iter().zip(&results[1]) {
        assert!(
            (fused - unfused).abs() <= 1e-6 * unfused.abs().max(1.0),
            "{fused} vs {unfused}"
        );
    }
    for (x, want) in [
        (-1.0f32, -0.158_655_26f32),
        (1.0, 0.841_344_7),
        (2.0, 1.954_499_7),
    ] {
        let at = xs.iter().position(|v| *v == x).unwrap();
        assert!(
            (results[0][at] - want).abs() < 1e-5,
            "gelu({x}) = {}",
            results[0][at]
        );
    }
}

/// A constant first operand of Add (torch's `bias + x`) is held by the step, and the sum
/// is the same as with the operands the other way round.
#[test]
fn a_constant_first_operand_is_held_by_the_step() {
    let bias = [0.5f32, -1.0, 2.0, 0.0, 3.5];
    let xs: Vec<f32> = (0..10).map(|i| i as f32 - 4.5).collect();
    let bytes = model(Graph {
        nodes: vec![node("Add", "add", &["bias", "x"], &["y"])],
        inputs: vec![info("x", 1, &[Some(2), Some(5)])],
        outputs: vec![info("y", 1, &[])],
        initializers: vec![floats("bias", &[5], &bias)],
    });
    let (out, host) = run(&bytes, &[("x", xs.clone(), vec![2, 5])]);
    assert_eq!(host, [true]);
    let want: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| x + bias[i % 5])
        .collect();
    assert_eq!(out[0], want);
}

/// MatMul of two computed tensors runs on cairn's kernels: batched, with a transposed
/// operand and a rank-2 operand broadcast over the batch, against the index formula.
#[test]
fn matmul_of_computed_tensors_runs_on_the_host() {
    let a: Vec<f32> = (0..24).map(|i| (i % 5) as f32 - 2.0).collect();
    let w: Vec<f32> = (0..40).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
    let v: Vec<f32> = (0..20).map(|i| (i % 3) as f32 - 1.0).collect();
    let bytes = model(Graph {
        nodes: vec![
            with(
                node("Transpose", "t", &["w"], &["wt"]),
                vec![ints("perm", &[0, 2, 1])],
            ),
            node("MatMul", "qk", &["a", "wt"], &["s"]),
            node("MatMul", "sv", &["s", "v"], &["y"]),
        ],
        inputs: vec![
            info("a", 1, &[Some(2), Some(3), Some(4)]),
            info("w", 1, &[Some(2), Some(5), Some(4)]),
            info("v", 1, &[Some(5), Some(4)]),
        ],
        outputs: vec![info("y", 1, &[])],
        initializers: vec![],
    });
    let (out, host) = run(
        &bytes,
        &[
            ("a", a.clone(), vec![2, 3, 4]),
            ("w", w.clone(), vec![2, 5, 4]),
            ("v", v.clone(), vec![5, 4]),
        ],
    );
    assert_eq!(host, [true, true, true]);
    // s[b,i,j] = Σp a[b,i,p]·w[b,j,p]; y[b,i,q] = Σj s[b,i,j]·v[j,q].
    let mut want = vec![0f32; 24];
    for b in 0..2 {
        for i in 0..3 {
            for q in 0..4 {
                want[(b * 3 + i) * 4 + q] = (0..5)
                    .map(|j| {
                        let s: f32 = (0..4)
                            .map(|p| a[(b * 3 + i) * 4 + p] * w[(b * 5 + j) * 4 + p])
                            .sum();
                        s * v[j * 4 + q]
                    })
                    .sum();
            }
        }
    }
    for (got, want) in out[0].iter().zip(&want) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}

/// A HardSwish or HardSigmoid after a Conv runs as the Conv's epilogue (one step), and
/// as its own step when the Conv's output is also a graph output; both agree with the
/// product and the activation computed here.
#[test]
fn hard_activations_fuse_into_the_convolution() {
    let (cin, cout, side) = (4usize, 6usize, 3usize);
    let weights: Vec<f32> = (0..cin * cout).map(|i| (i % 7) as f32 - 3.0).collect();
    let bias: Vec<f32> = (0..cout).map(|c| c as f32 * 0.5 - 1.0).collect();
    let xs: Vec<f32> = (0..cin * side * side)
        .map(|i| (i % 5) as f32 - 2.0)
        .collect();
    for (op, swish, alpha, beta) in [
        ("HardSwish", true, 1.0 / 6.0, 0.5),
        ("HardSigmoid", false, 0.2, 0.5),
    ] {
        for conv_is_output in [false, true] {
            let mut outputs = vec![info("y", 1, &[])];
            if conv_is_output {
                outputs.push(info("c", 1, &[]));
            }
            let activation = if swish {
                node(op, "act", &["c"], &["y"])
            } else {
                with(node(op, "act", &["c"], &["y"]), vec![float("alpha", alpha)])
            };
            let bytes = model_at(
                Graph {
                    nodes: vec![
                        with(
                            node("Conv", "conv", &["x", "w", "b"], &["c"]),
                            vec![ints("kernel_shape", &[1, 1])],
                        ),
                        activation,
                    ],
                    inputs: vec![info(
                        "x",
                        1,
                        &[
                            Some(1),
                            Some(cin as i64),
                            Some(side as i64),
                            Some(side as i64),
                        ],
                    )],
                    outputs,
                    initializers: vec![
                        floats("w", &[cout as i64, cin as i64, 1, 1], &weights),
                        floats("b", &[cout as i64], &bias),
                    ],
                },
                14,
            );
            let loaded = Model::load(&bytes, &cpu()).unwrap();
            let feed = vec![(
                "x".to_owned(),
                TensorData::new(xs.clone(), vec![1, cin, side, side]),
            )];
            let steps = loaded.profile(&feed, 1).unwrap().len();
            assert_eq!(steps, if conv_is_output { 2 } else { 1 }, "{op}");
            let y: Vec<f32> = loaded.run(feed).unwrap()[0].1.try_to_vec().unwrap();
            let plane = side * side;
            for co in 0..cout {
                for p in 0..plane {
                    let c: f32 = bias[co]
                        + (0..cin)
                            .map(|ci| weights[co * cin + ci] * xs[ci * plane + p])
                            .sum::<f32>();
                    let gate = (c * alpha + beta).clamp(0.0, 1.0);
                    let want = if swish { c * gate } else { gate };
                    let got = y[co * plane + p];
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{op}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// ShuffleNet's channel shuffle (Concat → Reshape → Transpose → Reshape → Split) runs as
/// one step, and gives exactly what the five steps give (run unfused by making the Concat
/// also a graph output): with the reshapes ShuffleNet writes (a channel split, dynamic
/// batch), and with ones that split the values otherwise (its step-by-step path).
#[test]
fn a_channel_shuffle_fuses_into_one_step() {
    let (cin, side) = (3i64, 4i64);
    // (first target, second target, branch channels)
    let cases: [(&[i64], &[i64], i64); 4] = [
        (&[-1, 2, 5, side, side], &[-1, 10, side, side], 5),
        (&[0, 2, 3, 2, 8], &[0, 6, side, side], 3),
        (&[1, 3, 2, 16, 1], &[1, 6, 8, 2], 3),
        // Not a split of the channels (2 · 6 ≠ 6): the five steps one after the other.
        (&[1, 2, 6, 4, 2], &[1, 6, side, side], 3),
    ];
    for (first, second, branch) in cases {
        let run_with = |cat_is_output: bool| {
            let mut outputs = vec![info("y0", 1, &[]), info("y1", 1, &[])];
            if cat_is_output {
                outputs.push(info("cat", 1, &[]));
            }
            let conv = |name: &str, w: &str, out: &str| {
                with(
                    node("Conv", name, &["x", w], &[out]),
                    vec![ints("kernel_shape", &[1, 1])],
                )
            };
            let bytes = model(Graph {
                nodes: vec![
                    conv("left", "wl", "a"),
                    conv("right", "wr", "b"),
                    with(
                        node("Concat", "cat", &["a", "b"], &["cat"]),
                        vec![crate::engine::test_graphs::int("axis", 1)],
                    ),
                    node("Reshape", "group", &["cat", "first"], &["grouped"]),
                    with(
                        node("Transpose", "swap", &["grouped"], &["swapped"]),
                        vec![ints("perm", &[0, 2, 1, 3, 4])],
                    ),
                    node("Reshape", "back", &["swapped", "second"], &["shuffled"]),
                    with(
                        node("Split", "halves", &["shuffled"], &["y0", "y1"]),
                        vec![crate::engine::test_graphs::int("axis", 1)],
                    ),
                ],
                inputs: vec![info("x", 1, &[None, Some(cin), Some(side), Some(side)])],
                outputs,
                initializers: vec![
                    crate::engine::test_graphs::ramp("wl", &[branch, cin, 1, 1]),
                    floats(
                        "wr",
                        &[branch, cin, 1, 1],
                        &(0..branch * cin)
                            .map(|i| i as f32 - 4.0)
                            .collect::<Vec<_>>(),
                    ),
                    crate::engine::test_graphs::int64s("first", &[5], first),
                    crate::engine::test_graphs::int64s("second", &[4], second),
                ],
            });
            let loaded = Model::load(&bytes, &cpu()).unwrap();
            let xs: Vec<f32> = (0..cin * side * side)
                .map(|i| (i % 9) as f32 - 4.0)
                .collect();
            let feed = vec![(
                "x".to_owned(),
                TensorData::new(xs, vec![1, cin as usize, side as usize, side as usize]),
            )];
            let steps = loaded.profile(&feed, 1).unwrap().len();
            let out = loaded.run(feed).unwrap();
            let values: Vec<(Vec<usize>, Vec<f32>)> = out[..2]
                .iter()
                .map(|(_, d)| (d.shape().to_vec(), d.try_to_vec::<f32>().unwrap()))
                .collect();
            (steps, values)
        };
        let (fused_steps, fused) = run_with(false);
        let (steps, unfused) = run_with(true);
        assert_eq!((fused_steps, steps), (3, 7), "{first:?} {second:?}");
        assert_eq!(fused, unfused, "{first:?} {second:?}");
    }
}

/// A squeeze-and-excite gate (`x · sigmoid(mean(x))`) and the 1×1 convolution that alone
/// reads it run as one step: the gate folded into the weights where the plane has at
/// least as many pixels as the layer has output channels, else the product first (more
/// output channels, a batch of two); either operand order, padded or not. Against the
/// unfused plan (the product made a graph output).
#[test]
fn a_gate_folds_into_the_convolution_after_it() {
    // (channels, output channels, side, batch, gate first, pads)
    let cases = [
        (6, 5, 4, 1, false, 0),
        (6, 5, 4, 1, true, 1),
        (6, 20, 4, 1, false, 0),
        (6, 5, 4, 2, true, 0),
    ];
    for (c, cout, side, batch, gate_first, pad) in cases {
        let run_with = |product_is_output: bool| {
            let mut outputs = vec![info("y", 1, &[])];
            if product_is_output {
                outputs.push(info("gated", 1, &[]));
            }
            let operands = if gate_first {
                ["gate", "x"]
            } else {
                ["x", "gate"]
            };
            let bytes = model(Graph {
                nodes: vec![
                    node("GlobalAveragePool", "squeeze", &["x"], &["mean"]),
                    node("Sigmoid", "excite", &["mean"], &["gate"]),
                    node("Mul", "scale", &operands, &["gated"]),
                    with(
                        node("Conv", "project", &["gated", "w", "b"], &["y"]),
                        vec![ints("kernel_shape", &[1, 1]), ints("pads", &[pad; 4])],
                    ),
                ],
                inputs: vec![info("x", 1, &[None, Some(c), Some(side), Some(side)])],
                outputs,
                initializers: vec![
                    crate::engine::test_graphs::ramp("w", &[cout, c, 1, 1]),
                    crate::engine::test_graphs::ramp("b", &[cout]),
                ],
            });
            let n = usize::try_from(batch * c * side * side).unwrap();
            let xs: Vec<f32> = (0..n).map(|i| (i % 11) as f32 * 0.25 - 1.0).collect();
            let shape = [batch, c, side, side].map(|d| usize::try_from(d).unwrap());
            let feed = vec![("x".to_owned(), TensorData::new(xs, shape.to_vec()))];
            steps_and_output(&bytes, feed)
        };
        let what = format!("{c}→{cout} on {side}×{side}, batch {batch}");
        let (fused_steps, fused) = run_with(false);
        let (steps, unfused) = run_with(true);
        assert_eq!((fused_steps, steps), (3, 4), "{what}");
        assert_agree(&fused, &unfused, 1e-5, &what);
    }
}

/// A residual Add (and its ReLU) after a 1×1 convolution runs as one step, the product
/// added onto the other operand: on the `gemm` crate's path (small layers, one thread and
/// split by channels) and on the panel kernel's (a widening layer of 64K weights), either
/// operand order, a batch of two, and a residual that broadcasts (run as two steps inside
/// the one). Against the unfused plan (the convolution's output made a graph output).
#[test]
fn a_residual_add_folds_into_the_convolution_before_it() {
    // (channels, output channels, side, batch, residual first, relu, residual channels)
    let cases = [
        (6, 5, 4, 1, false, true, 5),
        (6, 5, 4, 2, true, false, 5),
        (32, 64, 24, 1, false, true, 64),
        (128, 512, 6, 1, true, true, 512),
        (128, 512, 12, 2, false, false, 512),
        (6, 5, 4, 1, false, true, 1),
    ];
    for (c, cout, side, batch, residual_first, relu, rc) in cases {
        let run_with = |product_is_output: bool| {
            let mut outputs = vec![info("y", 1, &[])];
            if product_is_output {
                outputs.push(info("p", 1, &[]));
            }
            let operands = if residual_first {
                ["r", "p"]
            } else {
                ["p", "r"]
            };
            let mut nodes = vec![
                with(
                    node("Conv", "project", &["x", "w", "b"], &["p"]),
                    vec![ints("kernel_shape", &[1, 1])],
                ),
                node("Add", "add", &operands, &[if relu { "sum" } else { "y" }]),
            ];
            if relu {
                nodes.push(node("Relu", "relu", &["sum"], &["y"]));
            }
            let bytes = model(Graph {
                nodes,
                inputs: vec![
                    info("x", 1, &[None, Some(c), Some(side), Some(side)]),
                    info("r", 1, &[None, Some(rc), None, None]),
                ],
                outputs,
                initializers: vec![
                    crate::engine::test_graphs::ramp("w", &[cout, c, 1, 1]),
                    crate::engine::test_graphs::ramp("b", &[cout]),
                ],
            });
            let size = |d: i64| usize::try_from(d).unwrap();
            let rside = if rc == 1 { 1 } else { size(side) };
            let xs: Vec<f32> = (0..batch * size(c * side * side))
                .map(|i| (i % 11) as f32 * 0.25 - 1.0)
                .collect();
            let rs: Vec<f32> = (0..batch * size(rc) * rside * rside)
                .map(|i| (i % 7) as f32 * 0.5 - 1.5)
                .collect();
            let feed = vec![
                (
                    "x".to_owned(),
                    TensorData::new(xs, vec![batch, size(c), size(side), size(side)]),
                ),
                (
                    "r".to_owned(),
                    TensorData::new(rs, vec![batch, size(rc), rside, rside]),
                ),
            ];
            steps_and_output(&bytes, feed)
        };
        let what = format!("{c}→{cout} on {side}×{side}, batch {batch}, relu {relu}, {rc}");
        let (fused_steps, fused) = run_with(false);
        let (steps, unfused) = run_with(true);
        assert_eq!((fused_steps, steps), (1, 2), "{what}");
        assert_agree(&fused, &unfused, 1e-4, &what);
    }
}
