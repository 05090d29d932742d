//! The codec on requests as clients send them, and on their mistakes.
use super::*;

fn spec(dtype: &str, shape: Vec<Option<usize>>) -> TensorSpec {
    TensorSpec {
        name: "x".into(),
        dtype: dtype.into(),
        shape,
    }
}

/// Parse and decode the first input of `body`, as the handler does.
fn decode(body: &str, spec: &TensorSpec, binary: &[u8], max: usize) -> Result<TensorData, String> {
    let request: RequestHeader<'_> = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let input = request.inputs.into_iter().next().expect("one input");
    decode_input(input, spec, &mut &binary[..], max).map_err(|e| e.0)
}

#[test]
fn nested_and_flat_data_decode_alike_in_any_field_order() {
    let s = spec("FLOAT", vec![None, Some(2)]);
    for body in [
        r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}]}"#,
        r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#,
        // `data` before its type: kept unparsed, then read.
        r#"{"inputs":[{"data":[1,2.5,3,4],"name":"x","shape":[2,2],"datatype":"FP32"}]}"#,
    ] {
        let t = decode(body, &s, &[], 1 << 20).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.5, 3.0, 4.0]);
        assert_eq!(t.shape().to_vec(), vec![2, 2]);
    }
}

#[test]
fn mistakes_name_the_input_and_the_expectation() {
    let s = spec("FLOAT", vec![None, Some(2)]);
    let cases = [
        (
            r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
            "dimension 1 is 3, the model takes 2",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT64","data":[1,2]}]}"#,
            "the model takes FP32",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1]}]}"#,
            "needs 2",
        ),
        (
            r#"{"inputs":[{"data":[1],"name":"x","shape":[1,2],"datatype":"FP32"}]}"#,
            "needs 2",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2,3]}]}"#,
            "more values",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,"a"]}]}"#,
            "input x",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}"#,
            "rank",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[-1,2],"datatype":"FP32","data":[1,2]}]}"#,
            "positive",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[4611686018427387904,2],"datatype":"FP32","data":[1,2]}]}"#,
            "larger",
        ),
        (
            r#"{"inputs":[{"shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
            "missing field `name`",
        ),
    ];
    for (body, want) in cases {
        let err = decode(body, &s, &[], 1 << 20).unwrap_err();
        assert!(err.contains(want), "{body}: {err}");
    }
}

#[test]
fn integers_are_range_checked_and_binary_is_sliced() {
    let s = spec("INT8", vec![Some(2)]);
    let body = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[1,300]}]}"#;
    assert!(decode(body, &s, &[], 100).is_err());
    let s = spec("FLOAT", vec![Some(2)]);
    let body = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let bytes: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let t = decode(body, &s, &bytes, 100).unwrap();
    assert_eq!(t.as_slice::<f32>().unwrap(), &[1.5, -2.0]);
    assert!(decode(body, &s, &bytes[..4], 100).is_err());
}
