//! The KServe V2 / Open Inference Protocol wire format: JSON requests and responses, and
//! Triton's binary tensor data extension (a JSON header of `Inference-Header-Content-Length`
//! bytes followed by raw little-endian tensors).
//!
//! Tensor data is parsed straight into typed buffers: the JSON header keeps each `data`
//! as an unparsed slice (`RawValue`), which is then read once, flattening nested arrays,
//! into a `Vec` of the tensor's element type. No `serde_json::Value` per element.

use std::fmt;

use burn::tensor::{BoolStore, DType, TensorData, f16};
use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::value::RawValue;

use crate::engine::TensorSpec;
use crate::registry::v2_datatype;

mod element;
mod response;

use element::{TypedSeed, parse_flat};
pub use response::{JsonData, OutputParameters, OutputTensor, ResponseHeader};

/// Parameters of a request, an input or an output; unknown ones are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Parameters {
    #[serde(default)]
    pub binary_data_size: Option<u64>,
    #[serde(default)]
    pub binary_data: Option<bool>,
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

/// One input of a request. Its `data` is parsed straight into a typed tensor while the
/// JSON is read when `shape` and `datatype` come before it (as every client sends them);
/// otherwise it is kept unparsed and read once its type is known.
#[derive(Debug)]
pub struct InputHeader<'a> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub parameters: Option<Parameters>,
    pub data: Option<Data<'a>>,
}

#[derive(Debug)]
pub enum Data<'a> {
    /// The JSON text, for a `data` that came before its shape or type.
    Raw(&'a RawValue),
    /// Already decoded, with exactly the elements the given shape holds.
    Parsed(TensorData),
}

impl<'de: 'a, 'a> Deserialize<'de> for InputHeader<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InputVisitor(std::marker::PhantomData))
    }
}

struct InputVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InputVisitor<'a> {
    type Value = InputHeader<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input: {name, shape, datatype, data or parameters.binary_data_size}")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut shape, mut datatype) = (None::<String>, None::<Vec<i64>>, None);
        let (mut parameters, mut data) = (None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => name = Some(map.next_value()?),
                "shape" => shape = Some(map.next_value()?),
                "datatype" => datatype = Some(map.next_value::<String>()?),
                "parameters" => parameters = map.next_value()?,
                "data" => {
                    let typed = datatype.as_deref().and_then(dtype_of).zip(
                        shape
                            .as_deref()
                            .and_then(|s| dims(s).ok())
                            .filter(|(_, count)| *count <= MAX_JSON_ELEMENTS),
                    );
                    data = Some(match typed {
                        Some((dtype, (dims, count))) => {
                            Data::Parsed(map.next_value_seed(TypedSeed {
                                dtype,
                                dims,
                                count,
                                name: name.as_deref().unwrap_or("?"),
                            })?)
                        }
                        None => Data::Raw(map.next_value()?),
                    });
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(InputHeader {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters,
            data,
        })
    }
}

/// More values than a JSON body can hold (at one byte each, with commas) are not parsed
/// eagerly: the shape is surely wrong, and the later checks say so.
const MAX_JSON_ELEMENTS: usize = 1 << 26;

/// The dims of a given shape and their element count.
fn dims(shape: &[i64]) -> Result<(Vec<usize>, usize), ()> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| ()))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or(())?;
    Ok((dims, count))
}

#[derive(Debug, Deserialize)]
pub struct OutputRequest {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
pub struct RequestHeader<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    #[serde(borrow)]
    pub inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    pub outputs: Option<Vec<OutputRequest>>,
}

/// A request's mistake, answered with 400.
#[derive(Debug)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, BadRequest> {
    Err(BadRequest(message.into()))
}

/// The burn element type of a V2 datatype the engine runs.
#[must_use]
pub fn dtype_of(datatype: &str) -> Option<DType> {
    Some(match datatype {
        "FP32" => DType::F32,
        "FP16" => DType::F16,
        "INT64" => DType::I64,
        "INT32" => DType::I32,
        "INT16" => DType::I16,
        "INT8" => DType::I8,
        "UINT32" => DType::U32,
        "UINT16" => DType::U16,
        "UINT8" => DType::U8,
        "BOOL" => DType::Bool(BoolStore::Native),
        _ => return None,
    })
}

/// The V2 datatype of a tensor the engine returned.
#[must_use]
pub fn datatype_of(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "FP32",
        DType::F16 => "FP16",
        DType::F64 => "FP64",
        DType::I64 => "INT64",
        DType::I32 => "INT32",
        DType::I16 => "INT16",
        DType::I8 => "INT8",
        DType::U64 => "UINT64",
        DType::U32 => "UINT32",
        DType::U16 => "UINT16",
        DType::U8 => "UINT8",
        DType::Bool(_) => "BOOL",
        _ => "UNSUPPORTED",
    }
}

/// Checks one input against the model's spec and decodes its data (from JSON, or from
/// `binary` when the input carries `binary_data_size`).
///
/// # Errors
/// Unknown name, wrong datatype, rank, dims or element count, malformed values.
pub fn decode_input(
    input: InputHeader<'_>,
    spec: &TensorSpec,
    binary: &mut &[u8],
    max_elements: usize,
) -> Result<TensorData, BadRequest> {
    let name = &input.name;
    let want = v2_datatype(&spec.dtype);
    if input.datatype != want {
        return bad(format!(
            "input {name}: datatype {} given, the model takes {want}",
            input.datatype
        ));
    }
    let dtype = dtype_of(&input.datatype)
        .ok_or_else(|| BadRequest(format!("input {name}: datatype {want} is not supported")))?;
    if input.shape.len() != spec.shape.len() {
        return bad(format!(
            "input {name}: shape {:?} has rank {}, the model takes rank {} ({})",
            input.shape,
            input.shape.len(),
            spec.shape.len(),
            shape_text(&spec.shape)
        ));
    }
    let mut shape = Vec::with_capacity(input.shape.len());
    let mut count: usize = 1;
    for (i, (&given, want)) in input.shape.iter().zip(&spec.shape).enumerate() {
        let Ok(dim) = usize::try_from(given) else {
            return bad(format!(
                "input {name}: dimension {i} is {given}; dimensions are positive"
            ));
        };
        if let Some(want) = want
            && *want != dim
        {
            return bad(format!(
                "input {name}: dimension {i} is {dim}, the model takes {want} ({})",
                shape_text(&spec.shape)
            ));
        }
        count = count
            .checked_mul(dim)
            .filter(|c| *c <= max_elements)
            .ok_or_else(|| {
                BadRequest(format!(
                    "input {name}: shape {:?} is larger than this device accepts",
                    input.shape
                ))
            })?;
        shape.push(dim);
    }
    let binary_size = input.parameters.as_ref().and_then(|p| p.binary_data_size);
    match (binary_size, input.data) {
        (Some(_), Some(_)) => bad(format!(
            "input {name}: give either data or binary_data_size, not both"
        )),
        (Some(size), None) => {
            let expected = count * dtype.size();
            if u64::try_from(expected).ok() != Some(size) {
                return bad(format!(
                    "input {name}: binary_data_size is {size}, shape {:?} of {want} needs {expected} bytes",
                    input.shape
                ));
            }
            if binary.len() < expected {
                return bad(format!(
                    "input {name}: the body holds {} bytes of binary data, {expected} are needed",
                    binary.len()
                ));
            }
            let (mine, rest) = binary.split_at(expected);
            *binary = rest;
            let mut bytes = mine.to_vec();
            if matches!(dtype, DType::Bool(_)) {
                for b in &mut bytes {
                    *b = u8::from(*b != 0);
                }
            }
            TensorData::try_from_bytes_vec(bytes, shape, dtype)
                .map_err(|e| BadRequest(format!("input {name}: {e:?}")))
        }
        (None, None) => bad(format!(
            "input {name}: no data (give `data` or binary_data_size)"
        )),
        (None, Some(Data::Parsed(tensor))) => {
            // Parsed with the shape given, now checked against the model.
            debug_assert_eq!(tensor.shape().to_vec(), shape);
            Ok(tensor)
        }
        (None, Some(Data::Raw(raw))) => {
            let parsed = match dtype {
                DType::F32 => parse_flat::<f32>(raw, count, shape),
                DType::F16 => parse_flat::<f16>(raw, count, shape),
                DType::I64 => parse_flat::<i64>(raw, count, shape),
                DType::I32 => parse_flat::<i32>(raw, count, shape),
                DType::I16 => parse_flat::<i16>(raw, count, shape),
                DType::I8 => parse_flat::<i8>(raw, count, shape),
                DType::U32 => parse_flat::<u32>(raw, count, shape),
                DType::U16 => parse_flat::<u16>(raw, count, shape),
                DType::U8 => parse_flat::<u8>(raw, count, shape),
                DType::Bool(_) => parse_flat::<bool>(raw, count, shape),
                _ => Err(format!("datatype {want} is not supported")),
            };
            parsed.map_err(|e| BadRequest(format!("input {name}: data {e}")))
        }
    }
}

/// Checks a request's inputs against the model's (every one given once, none unknown) and
/// decodes them, taking binary data from `binary` in order.
///
/// # Errors
/// The first mistake, naming the input and what the model expects.
pub fn decode_inputs(
    given: Vec<InputHeader<'_>>,
    specs: &[TensorSpec],
    mut binary: &[u8],
    max_elements: usize,
) -> Result<Vec<(String, TensorData)>, BadRequest> {
    let mut inputs: Vec<(String, TensorData)> = Vec::with_capacity(given.len());
    for input in given {
        let Some(spec) = specs.iter().find(|s| s.name == input.name) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return bad(format!(
                "input {}: the model has no such input; its inputs are {}",
                input.name,
                names.join(", ")
            ));
        };
        if inputs.iter().any(|(n, _)| *n == input.name) {
            return bad(format!("input {} is given twice", input.name));
        }
        let name = input.name.clone();
        let data = decode_input(input, spec, &mut binary, max_elements)?;
        inputs.push((name, data));
    }
    for spec in specs {
        if !inputs.iter().any(|(n, _)| *n == spec.name) {
            return bad(format!("input {} is missing", spec.name));
        }
    }
    Ok(inputs)
}

/// The whole request path of the codec on arbitrary bytes, for the fuzz target: parse a
/// JSON header, decode its inputs against a fixed set of model inputs, and encode the
/// decoded tensors back as a JSON answer. Never panics.
#[doc(hidden)]
pub fn fuzz_round_trip(json: &[u8], binary: &[u8]) {
    let specs = [
        TensorSpec {
            name: "input".into(),
            dtype: "FLOAT".into(),
            shape: vec![None, Some(4)],
        },
        TensorSpec {
            name: "ids".into(),
            dtype: "INT64".into(),
            shape: vec![None],
        },
        TensorSpec {
            name: "mask".into(),
            dtype: "BOOL".into(),
            shape: vec![Some(2), None],
        },
        TensorSpec {
            name: "half".into(),
            dtype: "FLOAT16".into(),
            shape: vec![None],
        },
    ];
    let Ok(mut request) = serde_json::from_slice::<RequestHeader<'_>>(json) else {
        return;
    };
    let given = std::mem::take(&mut request.inputs);
    let Ok(inputs) = decode_inputs(given, &specs, binary, 1 << 16) else {
        return;
    };
    let outputs = inputs
        .iter()
        .map(|(name, data)| OutputTensor {
            name,
            datatype: datatype_of(data.dtype()),
            shape: data.shape().to_vec(),
            parameters: None,
            data: Some(JsonData(data)),
        })
        .collect();
    let header = ResponseHeader {
        model_name: "fuzz",
        model_version: "1".into(),
        id: request.id.as_deref(),
        outputs,
    };
    let encoded = serde_json::to_vec(&header).expect("decoded tensors always encode");
    assert!(serde_json::from_slice::<serde_json::Value>(&encoded).is_ok());
}

fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "-1".to_owned(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests;
