//! Values a run's inputs control (pad amounts, split sizes, range bounds, masks, shapes
//! that broadcast): any i64, i64::MIN and MAX included. Found by the `model_run` fuzzer
//! and by an audit of the operators after it; each was a panic (an overflow, or an
//! assertion of burn's) or an allocation past the cap before a check.

use burn::tensor::TensorData;

use super::super::test_graphs::{Graph, info, int, int64s, model, model_at, node, string, with};
use super::super::{Model, cpu};
use super::{input, refused};

fn one_node(
    n: onnx_ir::NodeProto,
    inputs: Vec<onnx_ir::ValueInfoProto>,
    outputs: &[(&str, i32)],
) -> Model {
    Model::load(
        &model(Graph {
            nodes: vec![n],
            inputs,
            outputs: outputs
                .iter()
                .map(|(name, t)| info(name, *t, &[]))
                .collect(),
            initializers: vec![],
        }),
        &cpu(),
    )
    .unwrap()
}

fn ints(values: &[i64]) -> TensorData {
    TensorData::new(values.to_vec(), [values.len()])
}

fn scalar(value: i64) -> TensorData {
    TensorData::new(vec![value], Vec::<usize>::new())
}

#[test]
fn pad_amounts_from_inputs_are_checked_before_use() {
    // Found by the `model_run` fuzzer: an integer Pad whose amounts are a run's input
    // added them unchecked (i64 overflow), and built its index maps before the cap.
    let model = Model::load(
        &model(Graph {
            nodes: vec![with(
                node("Pad", "fuzzed_pad", &["x", "pads"], &["y"]),
                vec![string("mode", "reflect")],
            )],
            inputs: vec![
                info("x", 6, &[Some(2), Some(3)]),
                info("pads", 7, &[Some(4)]),
            ],
            outputs: vec![info("y", 6, &[])],
            initializers: vec![],
        }),
        &cpu(),
    )
    .unwrap();
    let run = |pads: [i64; 4]| {
        let x = TensorData::new(vec![1i32, 2, 3, 4, 5, 6], [2, 3]);
        model.run(vec![
            ("x".into(), x),
            ("pads".into(), TensorData::new(pads.to_vec(), [4])),
        ])
    };
    for pads in [
        [0, i64::MAX, 0, 1],
        [i64::MIN, 0, i64::MAX, 0],
        [0, -4, 0, 0],
        [0, 1 << 40, 0, 1 << 40],
    ] {
        refused(run(pads), Some("fuzzed_pad"));
    }
    // Amounts that fit still pad: reflect by one on each side of the columns.
    let out = run([0, 1, 0, 1]).unwrap();
    assert_eq!(
        out[0].1.try_to_vec::<i32>().unwrap(),
        [2, 1, 2, 3, 2, 5, 4, 5, 6, 5]
    );
}

#[test]
fn an_attention_mask_that_does_not_broadcast_is_refused() {
    // Found by the `model_run` fuzzer: a mask of 4 query rows for 3 reached burn's
    // broadcast assertion (a panic the guard caught) instead of a check.
    let model = Model::load(
        &model_at(
            Graph {
                nodes: vec![with(
                    node(
                        "Attention",
                        "fuzzed_attention",
                        &["q", "k", "v", "mask"],
                        &["y"],
                    ),
                    vec![int("is_causal", 1)],
                )],
                inputs: vec![
                    info("q", 1, &[Some(2), Some(3), None, Some(8)]),
                    info("k", 1, &[Some(2), Some(3), Some(6), Some(8)]),
                    info("v", 1, &[Some(2), Some(3), Some(6), Some(8)]),
                    info("mask", 1, &[Some(2), Some(1), None, Some(6)]),
                ],
                outputs: vec![info("y", 1, &[])],
                initializers: vec![],
            },
            23,
        ),
        &cpu(),
    )
    .unwrap();
    let run = |rows: usize| {
        model.run(vec![
            ("q".into(), input(&[2, 3, 3, 8])),
            ("k".into(), input(&[2, 3, 6, 8])),
            ("v".into(), input(&[2, 3, 6, 8])),
            ("mask".into(), input(&[2, 1, rows, 6])),
        ])
    };
    let text = refused(run(4), Some("fuzzed_attention"));
    assert!(text.contains("mask"), "{text}");
    assert!(run(3).is_ok());
    assert!(run(1).is_ok());
}

#[test]
fn integer_cumsum_wraps_as_integer_arithmetic_does() {
    let model = Model::load(
        &model(Graph {
            nodes: vec![node("CumSum", "audited_cumsum", &["x", "axis"], &["y"])],
            inputs: vec![info("x", 7, &[Some(3)])],
            outputs: vec![info("y", 7, &[])],
            initializers: vec![int64s("axis", &[], &[0])],
        }),
        &cpu(),
    )
    .unwrap();
    let out = model
        .run(vec![("x".into(), ints(&[i64::MAX, 1, 1]))])
        .unwrap();
    assert_eq!(
        out[0].1.try_to_vec::<i64>().unwrap(),
        [i64::MAX, i64::MIN, i64::MIN + 1]
    );
}

#[test]
fn integer_range_steps_past_i64_in_between() {
    // Four steps of 2^62 from i64::MIN: `delta · 3` alone passes i64::MAX.
    let model = one_node(
        node(
            "Range",
            "audited_range",
            &["start", "limit", "delta"],
            &["y"],
        ),
        vec![
            info("start", 7, &[]),
            info("limit", 7, &[]),
            info("delta", 7, &[]),
        ],
        &[("y", 7)],
    );
    let out = model
        .run(vec![
            ("start".into(), scalar(i64::MIN)),
            ("limit".into(), scalar(i64::MAX)),
            ("delta".into(), scalar(1 << 62)),
        ])
        .unwrap();
    assert_eq!(
        out[0].1.try_to_vec::<i64>().unwrap(),
        [i64::MIN, -(1 << 62), 0, 1 << 62]
    );
}

#[test]
fn split_sizes_that_overflow_their_sum_are_refused() {
    let model = one_node(
        node("Split", "audited_split", &["x", "sizes"], &["a", "b", "c"]),
        vec![info("x", 1, &[Some(3)]), info("sizes", 7, &[Some(3)])],
        &[("a", 1), ("b", 1), ("c", 1)],
    );
    let run = |sizes: &[i64]| {
        model.run(vec![
            ("x".into(), input(&[3])),
            ("sizes".into(), ints(sizes)),
        ])
    };
    refused(run(&[i64::MAX, i64::MAX, 2]), Some("audited_split"));
    assert_eq!(run(&[1, 0, 2]).unwrap().len(), 3);
}

#[test]
fn bitshift_broadcasts_are_capped_before_indexing() {
    let model = one_node(
        with(
            node("BitShift", "audited_shift", &["a", "b"], &["y"]),
            vec![string("direction", "LEFT")],
        ),
        vec![
            info("a", 12, &[None, Some(1)]),
            info("b", 12, &[Some(1), None]),
        ],
        &[("y", 12)],
    );
    let zeros = |shape: [usize; 2]| TensorData::new(vec![1u32; shape[0] * shape[1]], shape);
    let text = refused(
        model.run(vec![
            ("a".into(), zeros([1 << 16, 1])),
            ("b".into(), zeros([1, 1 << 16])),
        ]),
        Some("audited_shift"),
    );
    assert!(text.contains("max_tensor_bytes"), "{text}");
    let out = model
        .run(vec![
            ("a".into(), zeros([2, 1])),
            ("b".into(), zeros([1, 3])),
        ])
        .unwrap();
    assert_eq!(out[0].1.try_to_vec::<u32>().unwrap(), [2; 6]);
}
