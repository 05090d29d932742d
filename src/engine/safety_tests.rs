//! Crafted models that used to take the process down (issue 9, part 1), each built here
//! as a `ModelProto`. Every one must be refused with an error the engine raised on
//! purpose: not a panic, not an abort, and not a panic caught by the guard
//! ([`EngineError::Internal`]), so the checks hold in release builds, where arithmetic
//! wraps instead of panicking.

use std::time::Duration;

use burn::tensor::TensorData;
use onnx_ir::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};

use super::test_graphs::{
    Graph, floats, info, int, int64s, ints, model, node, ramp, string, tensor, with,
};
use super::{EngineError, LoadLimits, Model, cpu};

mod inputs;

/// One node over constant operands (folded at load), with output `y`.
fn folded(n: NodeProto, initializers: Vec<TensorProto>) -> Vec<u8> {
    model(Graph {
        nodes: vec![n],
        inputs: vec![],
        outputs: vec![info("y", 1, &[])],
        initializers,
    })
}

/// Valid models for the run target's seeds, with their inputs' dimension bytes.
fn runnable() -> Vec<(&'static str, Vec<u8>, &'static [u8])> {
    let einsum = model(Graph {
        nodes: vec![with(
            node("Einsum", "attention_scores", &["q", "k"], &["y"]),
            vec![string("equation", "bhid,bhjd->bhij")],
        )],
        inputs: vec![info("q", 1, &[None; 4]), info("k", 1, &[None; 4])],
        outputs: vec![info("y", 1, &[])],
        initializers: vec![],
    });
    let volume = model(Graph {
        nodes: vec![with(
            node("Conv", "volume", &["x", "w"], &["y"]),
            vec![
                ints("kernel_shape", &[2, 3, 2]),
                ints("pads", &[1, 0, 2, 0, 1, 1]),
                int("group", 2),
            ],
        )],
        inputs: vec![info("x", 1, &[None, Some(2), None, None, None])],
        outputs: vec![info("y", 1, &[])],
        initializers: vec![ramp("w", &[4, 1, 2, 3, 2])],
    });
    vec![
        ("einsum_attention", einsum, &[1, 2, 4, 3, 1, 2, 5, 3]),
        ("conv_volume", volume, &[1, 2, 3, 4, 5]),
    ]
}

/// The crafted models, by name (also the fuzz seeds, see `write_fuzz_seeds`).
fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let conv = |name: &str, attributes: Vec<AttributeProto>, w: &[i64]| {
        model(Graph {
            nodes: vec![with(node("Conv", name, &["x", "w"], &["y"]), attributes)],
            inputs: vec![info("x", 1, &[None, Some(3), Some(8), Some(8)])],
            outputs: vec![info("y", 1, &[])],
            initializers: vec![ramp("w", w)],
        })
    };
    let pool = |op: &str, name: &str, attributes: Vec<AttributeProto>| {
        model(Graph {
            nodes: vec![with(node(op, name, &["x"], &["y"]), attributes)],
            inputs: vec![info("x", 1, &[None, Some(3), Some(8), Some(8)])],
            outputs: vec![info("y", 1, &[])],
            initializers: vec![],
        })
    };
    vec![
        (
            "folded_gemm_mismatch",
            folded(
                node("Gemm", "crafted_gemm", &["a", "b"], &["y"]),
                vec![ramp("a", &[2, 3]), ramp("b", &[4, 5])],
            ),
        ),
        (
            "folded_conv_mismatch",
            folded(
                with(
                    node("Conv", "crafted_conv", &["a", "w"], &["y"]),
                    vec![ints("kernel_shape", &[3, 3])],
                ),
                vec![ramp("a", &[1, 3, 8, 8]), ramp("w", &[4, 2, 3, 3])],
            ),
        ),
        (
            "folded_concat_mismatch",
            folded(
                with(
                    node("Concat", "crafted_concat", &["a", "b"], &["y"]),
                    vec![int("axis", 0)],
                ),
                vec![ramp("a", &[2, 3]), ramp("b", &[3, 4])],
            ),
        ),
        (
            "zero_channel_conv_batchnorm",
            model(Graph {
                nodes: vec![
                    node("Conv", "crafted_conv", &["x", "w"], &["c"]),
                    node(
                        "BatchNormalization",
                        "crafted_bn",
                        &["c", "gamma", "beta", "mean", "var"],
                        &["y"],
                    ),
                ],
                inputs: vec![info("x", 1, &[None, Some(3), Some(8), Some(8)])],
                outputs: vec![info("y", 1, &[])],
                initializers: vec![
                    floats("w", &[0, 3, 3, 3], &[]),
                    floats("gamma", &[0], &[]),
                    floats("beta", &[0], &[]),
                    floats("mean", &[0], &[]),
                    floats("var", &[0], &[]),
                ],
            }),
        ),
        (
            "conv_same_stride_zero",
            conv(
                "crafted_conv",
                vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[0, 0])],
                &[4, 3, 3, 3],
            ),
        ),
        (
            "maxpool_same_stride_zero",
            pool(
                "MaxPool",
                "crafted_pool",
                vec![
                    ints("kernel_shape", &[2, 2]),
                    string("auto_pad", "SAME_LOWER"),
                    ints("strides", &[0, 1]),
                ],
            ),
        ),
        (
            "maxpool_stride_zero",
            pool(
                "MaxPool",
                "crafted_pool",
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[0, 1])],
            ),
        ),
        (
            "averagepool_stride_zero",
            pool(
                "AveragePool",
                "crafted_pool",
                vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 0])],
            ),
        ),
        (
            "conv_dilation_zero",
            conv(
                "crafted_conv",
                vec![ints("dilations", &[0, 1])],
                &[4, 3, 3, 3],
            ),
        ),
        (
            // A depthwise convolution whose pads and dilation cancel out in its output
            // size, while the padded plane would take terabytes.
            "depthwise_huge_pads",
            conv(
                "crafted_conv",
                vec![
                    int("group", 3),
                    ints("pads", &[1 << 20, 1 << 20, 1 << 20, 1 << 20]),
                    ints("dilations", &[1 << 20, 1 << 20]),
                    ints("kernel_shape", &[3, 3]),
                ],
                &[3, 1, 3, 3],
            ),
        ),
        (
            "constant_of_shape_256gib",
            model(Graph {
                nodes: vec![with(
                    node("ConstantOfShape", "crafted_fill", &["shape"], &["y"]),
                    vec![tensor("value", floats("", &[1], &[1.0]))],
                )],
                inputs: vec![],
                outputs: vec![info("y", 1, &[])],
                initializers: vec![int64s("shape", &[3], &[65536, 65536, 16])],
            }),
        ),
        // Found by the `model_load` fuzzer: onnx-ir indexed the per-axis attributes of a
        // ConvTranspose by the kernel's rank, past the one stride given.
        (
            "conv_transpose_strides_short",
            model(Graph {
                nodes: vec![with(
                    node("ConvTranspose", "crafted_deconv", &["x", "w"], &["y"]),
                    vec![ints("output_padding", &[1, 1]), ints("strides", &[2])],
                )],
                inputs: vec![
                    info("x", 1, &[Some(1), Some(1), Some(3), Some(3)]),
                    info("w", 1, &[Some(1), Some(2), Some(3), Some(3)]),
                ],
                outputs: vec![info("y", 1, &[])],
                initializers: vec![],
            }),
        ),
        (
            "conv_pads_short",
            conv("crafted_conv", vec![ints("pads", &[1, 1])], &[2, 3, 3, 3]),
        ),
        // Found by the `model_run` fuzzer: onnx-ir took one from a scalar's rank.
        (
            "argmax_of_a_scalar",
            model(Graph {
                nodes: vec![with(
                    node("ArgMax", "crafted_argmax", &["x"], &["y"]),
                    vec![int("keepdims", 0)],
                )],
                inputs: vec![info("x", 1, &[])],
                outputs: vec![info("y", 7, &[])],
                initializers: vec![],
            }),
        ),
        ("reshape_2_62", reshape_then_gemm(true)),
        ("reshape_2_62_runtime_shape", reshape_then_gemm(false)),
        (
            "broadcast_add_16gib",
            model(Graph {
                nodes: vec![node("Add", "crafted_add", &["a", "b"], &["y"])],
                inputs: vec![
                    info("a", 1, &[Some(65536), Some(1)]),
                    info("b", 1, &[Some(1), Some(65536)]),
                ],
                outputs: vec![info("y", 1, &[])],
                initializers: vec![],
            }),
        ),
    ]
}

/// `Gemm(Reshape(x, [2^62, 4]), B)`, B constant (the CPU plan's own GEMM): the element
/// count of the target wraps to 0 in unchecked arithmetic, which a `(0, 4)` input
/// matches. (A MatMul by a constant is a `Linear` to onnx-ir, not run yet.)
fn reshape_then_gemm(constant_shape: bool) -> Vec<u8> {
    let target = [1_i64 << 62, 4];
    let mut inputs = vec![info("x", 1, &[None, Some(4)])];
    let mut initializers = vec![ramp("b", &[4, 3])];
    if constant_shape {
        initializers.push(int64s("shape", &[2], &target));
    } else {
        inputs.push(info("shape", 7, &[Some(2)]));
    }
    model(Graph {
        nodes: vec![
            node("Reshape", "crafted_reshape", &["x", "shape"], &["r"]),
            node("Gemm", "crafted_gemm", &["r", "b"], &["y"]),
        ],
        inputs,
        outputs: vec![info("y", 1, &[])],
        initializers,
    })
}

fn bytes_of(name: &str) -> Vec<u8> {
    crafted()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a crafted model")
        .1
}

/// The innermost cause of an error.
fn root(e: &EngineError) -> &EngineError {
    match e {
        EngineError::Node { cause, .. } => root(cause),
        other => other,
    }
}

/// Asserts a refusal the engine meant (not a caught panic) that names `node`, when given.
fn refused<T: std::fmt::Debug>(result: Result<T, EngineError>, node: Option<&str>) -> String {
    let error = result.expect_err("refused");
    let text = error.to_string();
    eprintln!("refused: {text}");
    assert!(
        !matches!(root(&error), EngineError::Internal(_)),
        "a panic was caught instead of a check: {text}"
    );
    if let Some(node) = node {
        assert!(text.contains(node), "the error names {node}: {text}");
    }
    text
}

fn input(shape: &[usize]) -> TensorData {
    TensorData::new(vec![0.5f32; shape.iter().product()], shape.to_vec())
}

#[test]
fn folded_operators_with_mismatched_constants_are_refused() {
    for (model, node) in [
        ("folded_gemm_mismatch", "crafted_gemm"),
        ("folded_conv_mismatch", "crafted_conv"),
        ("folded_concat_mismatch", "crafted_concat"),
    ] {
        let text = refused(Model::load(&bytes_of(model), &cpu()), None);
        eprintln!("{model}: {text}");
        // onnx-ir's shape inference may see it first; if not, the node is named.
        if !text.starts_with("not a readable ONNX model") {
            assert!(text.contains(node), "{model}: {text}");
        }
    }
}

#[test]
fn zero_channel_conv_then_batchnorm_runs_or_is_refused() {
    match Model::load(&bytes_of("zero_channel_conv_batchnorm"), &cpu()) {
        Ok(model) => {
            let out = model.run(vec![("x".into(), input(&[2, 3, 8, 8]))]);
            match out {
                Ok(out) => {
                    eprintln!("ran: {:?}", out[0].1.shape());
                    assert_eq!(out[0].1.shape().to_vec(), vec![2, 0, 6, 6]);
                }
                Err(e) => {
                    refused::<()>(Err(e), None);
                }
            }
        }
        Err(e) => {
            refused::<()>(Err(e), None);
        }
    }
}

#[test]
fn zero_strides_and_dilations_are_refused_at_load() {
    for (model, node) in [
        ("conv_same_stride_zero", "crafted_conv"),
        ("maxpool_same_stride_zero", "crafted_pool"),
        ("maxpool_stride_zero", "crafted_pool"),
        ("averagepool_stride_zero", "crafted_pool"),
        ("conv_dilation_zero", "crafted_conv"),
    ] {
        let text = refused(Model::load(&bytes_of(model), &cpu()), Some(node));
        assert!(
            text.contains("at least 1") || text.contains("strides"),
            "{text}"
        );
    }
}

#[test]
fn what_onnx_ir_would_misread_is_refused_before_it_parses() {
    for (model, node) in [
        ("conv_transpose_strides_short", "crafted_deconv"),
        ("conv_pads_short", "crafted_conv"),
    ] {
        let text = refused(Model::load(&bytes_of(model), &cpu()), Some(node));
        assert!(text.contains("values for a kernel of 2 axes"), "{text}");
    }
    let text = refused(
        Model::load(&bytes_of("argmax_of_a_scalar"), &cpu()),
        Some("crafted_argmax"),
    );
    assert!(text.contains("scalar"), "{text}");
}

#[test]
fn constant_of_shape_is_capped_not_attempted() {
    let text = refused(
        Model::load(&bytes_of("constant_of_shape_256gib"), &cpu()),
        Some("crafted_fill"),
    );
    assert!(text.contains("max_tensor_bytes"), "{text}");
}

#[test]
fn reshape_whose_size_wraps_is_refused() {
    // The target as a constant: refused at load or at run, never run.
    let bytes = bytes_of("reshape_2_62");
    match Model::load(&bytes, &cpu()) {
        Ok(model) => {
            refused(
                model.run(vec![("x".into(), input(&[0, 4]))]),
                Some("crafted_reshape"),
            );
        }
        Err(e) => {
            refused::<()>(Err(e), None);
        }
    }
    // The target as an input.
    let model = Model::load(&bytes_of("reshape_2_62_runtime_shape"), &cpu()).unwrap();
    let shape = TensorData::new(vec![1_i64 << 62, 4], [2]);
    refused(
        model.run(vec![("x".into(), input(&[0, 4])), ("shape".into(), shape)]),
        Some("crafted_reshape"),
    );
}

#[test]
fn depthwise_scratch_past_the_cap_is_refused() {
    let model = Model::load(&bytes_of("depthwise_huge_pads"), &cpu()).unwrap();
    let text = refused(
        model.run(vec![("x".into(), input(&[1, 3, 8, 8]))]),
        Some("crafted_conv"),
    );
    assert!(
        text.contains("max_tensor_bytes") || text.contains("too large"),
        "{text}"
    );
}

#[test]
fn broadcasts_past_the_cap_are_refused_at_run_time() {
    let model = Model::load(&bytes_of("broadcast_add_16gib"), &cpu()).unwrap();
    let text = refused(
        model.run(vec![
            ("a".into(), input(&[65536, 1])),
            ("b".into(), input(&[1, 65536])),
        ]),
        Some("crafted_add"),
    );
    assert!(text.contains("max_tensor_bytes"), "{text}");
}

#[test]
fn limits_apply_to_inputs_and_folding() {
    let bytes = bytes_of("broadcast_add_16gib");
    let small = LoadLimits {
        max_tensor_bytes: 1024,
        ..LoadLimits::default()
    };
    let model = Model::load_with(&bytes, &cpu(), &small).unwrap();
    assert_eq!(model.limits(), &small);
    let text = refused(
        model.run(vec![
            ("a".into(), input(&[65536, 1])),
            ("b".into(), input(&[1, 65536])),
        ]),
        None,
    );
    assert!(text.contains("input a"), "{text}");
    // Two folded nodes: the second starts past a zero budget.
    let chain = model_bytes_two_folds();
    let none = LoadLimits {
        fold_budget: Duration::ZERO,
        ..LoadLimits::default()
    };
    let text = refused(Model::load_with(&chain, &cpu(), &none), Some("second"));
    assert!(text.contains("fold_budget"), "{text}");
    assert!(Model::load(&chain, &cpu()).is_ok());
}

fn model_bytes_two_folds() -> Vec<u8> {
    model(Graph {
        nodes: vec![
            with(
                node("ConstantOfShape", "first", &["shape"], &["c"]),
                vec![tensor("value", floats("", &[1], &[1.0]))],
            ),
            node("Add", "second", &["c", "c"], &["y"]),
        ],
        inputs: vec![],
        outputs: vec![info("y", 1, &[])],
        initializers: vec![int64s("shape", &[2], &[64, 64])],
    })
}

#[test]
fn weight_bytes_count_the_weights() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/cnn.onnx");
    let bytes = std::fs::read(path).unwrap();
    let proto = ModelProto::parse_from_bytes(&bytes).unwrap();
    let weights: u64 = proto
        .graph
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>().unsigned_abs() * 4)
        .sum();
    let model = Model::load(&bytes, &cpu()).unwrap();
    let file = bytes.len() as u64;
    let counted = model.weight_bytes();
    assert!(weights > 0);
    // Every weight once (packed or as a constant), plus the file the graph keeps; batch
    // norms folded into convolutions take no more room than the weights they were.
    assert!(
        counted >= file + weights / 2,
        "{counted} for {weights} + {file}"
    );
    assert!(
        counted <= file + 2 * weights + 4096,
        "{counted} for {weights} + {file}"
    );
}

#[test]
fn the_run_seeds_models_run_and_refuse_shapes_that_do_not_fit() {
    let [(_, einsum, _), (_, volume, _)] = <[_; 2]>::try_from(runnable()).expect("two models");
    let einsum = Model::load(&einsum, &cpu()).expect("Einsum loads");
    let run =
        |q: &[usize], k: &[usize]| einsum.run(vec![("q".into(), input(q)), ("k".into(), input(k))]);
    let out = run(&[1, 2, 4, 3], &[1, 2, 5, 3]).expect("runs");
    assert_eq!(out[0].1.shape().to_vec(), vec![1, 2, 4, 5]);
    let text = refused(run(&[1, 2, 4, 3], &[1, 2, 5, 4]), Some("attention_scores"));
    assert!(text.contains("label d is 3 in one operand and 4"), "{text}");
    let volume = Model::load(&volume, &cpu()).expect("Conv over volumes loads");
    let out = volume
        .run(vec![("x".into(), input(&[1, 2, 3, 4, 5]))])
        .expect("runs");
    // Depth 3 + 1 pad − 2 + 1; height 4 + 1 − 3 + 1; width 5 + 3 − 2 + 1.
    assert_eq!(out[0].1.shape().to_vec(), vec![1, 4, 3, 3, 7]);
    let text = refused(
        volume.run(vec![("x".into(), input(&[1, 2, 1, 1, 1]))]),
        Some("volume"),
    );
    assert!(text.contains("does not fit"), "{text}");
}

/// `CAIRN_WRITE_FUZZ_SEEDS=1 cargo test --features gpu --lib engine::safety_tests`
/// writes the crafted models to `fuzz/seeds/model_load/`, and inputs for them and for the
/// fixtures (in `fuzz_targets/model_run.rs`'s layout) to `fuzz/seeds/model_run/`. The
/// seeds are committed (`fuzz/corpus` is not); pass the seed directory to `cargo fuzz run`
/// after the corpus directory.
#[test]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let models = crafted();
    assert!(models.len() >= 10);
    if std::env::var("CAIRN_WRITE_FUZZ_SEEDS").as_deref() != Ok("1") {
        return;
    }
    let (load, run) = (root.join("model_load"), root.join("model_run"));
    std::fs::create_dir_all(&load).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    // Per input: dimension bytes (a dynamic one is the byte modulo 9), then values.
    let values: Vec<u8> = [0.5f32, -1.0, 3.0, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for (selector, dims) in [(0u8, &[2u8, 64][..]), (1, &[3, 1, 8, 8]), (1, &[0, 255, 0])] {
        let mut seed = vec![selector];
        seed.extend_from_slice(dims);
        seed.extend_from_slice(&values);
        std::fs::write(
            run.join(format!("fixture_{selector}_{}.bin", dims[0])),
            seed,
        )
        .unwrap();
    }
    // Valid models of the operators added late (Einsum, Conv over volumes), for the run
    // target to fuzz their shapes: their dimensions are all dynamic but the channels.
    for (name, bytes, dims) in runnable() {
        let len = u16::try_from(bytes.len()).unwrap();
        let mut seed = vec![2u8];
        seed.extend_from_slice(&len.to_le_bytes());
        seed.extend_from_slice(&bytes);
        seed.extend_from_slice(dims);
        seed.extend_from_slice(&values);
        std::fs::write(run.join(format!("{name}.bin")), seed).unwrap();
    }
    for (name, bytes) in models {
        std::fs::write(load.join(format!("{name}.onnx")), &bytes).unwrap();
        let Ok(len) = u16::try_from(bytes.len()) else {
            continue;
        };
        let mut seed = vec![2u8];
        seed.extend_from_slice(&len.to_le_bytes());
        seed.extend_from_slice(&bytes);
        seed.extend_from_slice(&[2, 4, 2, 8, 8]);
        seed.extend_from_slice(&values);
        std::fs::write(run.join(format!("{name}.bin")), seed).unwrap();
    }
}
