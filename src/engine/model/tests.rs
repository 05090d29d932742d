use burn::tensor::TensorData;

use super::*;
use crate::engine::test_graphs::{Graph, floats, info, int, int64s, model, node, with};

#[test]
fn garbage_is_an_error_not_a_panic() {
    let device = Device::flex();
    for bytes in [
        &b""[..],
        b"not onnx at all",
        &[0xff; 64],
        &[8, 1, 18, 3, 1, 2],
    ] {
        assert!(Model::load(bytes, &device).is_err());
    }
}

#[test]
fn a_scalar_through_float_arithmetic_stays_a_scalar() {
    // MobileViT's export computes a patch count so: Unsqueeze(Cast(Ceil(Cast(n) / 2)))
    // then Concat with a 1-D shape. Were the scalar `[1]` after its float detour, the
    // Unsqueeze would make `[1, 1]` and the Concat fail.
    let bytes = model(Graph {
        nodes: vec![
            with(node("Cast", "to_float", &["n"], &["f"]), vec![int("to", 1)]),
            node("Div", "half", &["f", "two"], &["h"]),
            node("Ceil", "up", &["h"], &["c"]),
            with(node("Cast", "to_int", &["c"], &["i"]), vec![int("to", 7)]),
            node("Unsqueeze", "lift", &["i", "axes"], &["u"]),
            with(
                node("Concat", "shape", &["u", "three"], &["y"]),
                vec![int("axis", 0)],
            ),
        ],
        inputs: vec![info("n", 7, &[])],
        outputs: vec![info("y", 7, &[Some(2)])],
        initializers: vec![
            floats("two", &[], &[2.0]),
            int64s("axes", &[1], &[0]),
            int64s("three", &[1], &[3]),
        ],
    });
    let model = Model::load(&bytes, &Device::flex()).expect("loads");
    let n = TensorData::new(vec![5i64], Vec::<usize>::new());
    let out = model.run(vec![("n".into(), n)]).expect("runs");
    let y = &out[0].1;
    assert_eq!(y.shape().to_vec(), vec![2]);
    assert_eq!(y.try_to_vec::<i64>().expect("int64"), vec![3, 3]);
}
