//! The response side of the codec: output tensors and the response header, their
//! values serialized straight from the tensor buffers.

use burn::tensor::{DType, TensorData, f16};
use serde::Serialize;

/// An output's data: JSON values, or a size whose bytes follow the JSON header.
#[derive(Serialize)]
pub struct OutputTensor<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
pub struct OutputParameters {
    pub binary_data_size: usize,
}

/// A tensor's values for JSON, serialized as a flat array straight from its buffer.
pub struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let data = self.0;
        let err = |e: burn::tensor::DataError| S::Error::custom(format!("{e:?}"));
        match data.dtype() {
            DType::F32 => data.as_slice::<f32>().map_err(err)?.serialize(s),
            DType::F16 => s.collect_seq(
                data.as_slice::<f16>()
                    .map_err(err)?
                    .iter()
                    .map(|v| v.to_f32()),
            ),
            DType::I64 => data.as_slice::<i64>().map_err(err)?.serialize(s),
            DType::I32 => data.as_slice::<i32>().map_err(err)?.serialize(s),
            DType::I16 => data.as_slice::<i16>().map_err(err)?.serialize(s),
            DType::I8 => data.as_slice::<i8>().map_err(err)?.serialize(s),
            DType::U32 => data.as_slice::<u32>().map_err(err)?.serialize(s),
            DType::U16 => data.as_slice::<u16>().map_err(err)?.serialize(s),
            DType::U8 => data.as_slice::<u8>().map_err(err)?.serialize(s),
            DType::Bool(_) => s.collect_seq(data.as_bytes().iter().map(|b| *b != 0)),
            other => Err(S::Error::custom(format!("{other:?} outputs"))),
        }
    }
}

#[derive(Serialize)]
pub struct ResponseHeader<'a> {
    pub model_name: &'a str,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub outputs: Vec<OutputTensor<'a>>,
}
