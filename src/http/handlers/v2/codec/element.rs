//! Reading JSON tensor data into typed buffers: element types with range checks, the
//! visitor that flattens nested arrays, and the seed that reads `data` during the parse.

use std::fmt;

use burn::tensor::{DType, TensorData, f16};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Reads `data` of a known type and shape into a tensor, during the JSON parse.
pub(super) struct TypedSeed<'n> {
    pub(super) dtype: DType,
    pub(super) dims: Vec<usize>,
    pub(super) count: usize,
    pub(super) name: &'n str,
}

impl<'de> DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = TensorData;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        fn read<'de, T: Element + burn::tensor::Element, D: de::Deserializer<'de>>(
            d: D,
            seed: TypedSeed<'_>,
        ) -> Result<TensorData, D::Error> {
            let mut out = Vec::with_capacity(seed.count.min(1 << 20));
            Flat::<T> {
                out: &mut out,
                depth: 0,
                limit: seed.count,
            }
            .deserialize(d)
            .map_err(|e| de::Error::custom(format!("input {}: data {e}", seed.name)))?;
            if out.len() != seed.count {
                return Err(de::Error::custom(format!(
                    "input {}: data has {} values, its shape {:?} needs {}",
                    seed.name,
                    out.len(),
                    seed.dims,
                    seed.count
                )));
            }
            Ok(TensorData::new(out, seed.dims))
        }
        match self.dtype {
            DType::F32 => read::<f32, D>(d, self),
            DType::F16 => read::<f16, D>(d, self),
            DType::I64 => read::<i64, D>(d, self),
            DType::I32 => read::<i32, D>(d, self),
            DType::I16 => read::<i16, D>(d, self),
            DType::I8 => read::<i8, D>(d, self),
            DType::U32 => read::<u32, D>(d, self),
            DType::U16 => read::<u16, D>(d, self),
            DType::U8 => read::<u8, D>(d, self),
            _ => read::<bool, D>(d, self),
        }
    }
}

/// An element type that JSON numbers (or booleans) convert into, with range checks.
pub(super) trait Element: Sized {
    const NAME: &'static str;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

macro_rules! float_element {
    ($t:ty, $name:literal, $conv:expr) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            fn from_f64(v: f64) -> Option<Self> {
                Some($conv(v))
            }
            #[expect(clippy::cast_precision_loss, reason = "JSON integers as floats")]
            fn from_i64(v: i64) -> Option<Self> {
                Some($conv(v as f64))
            }
            #[expect(clippy::cast_precision_loss, reason = "JSON integers as floats")]
            fn from_u64(v: u64) -> Option<Self> {
                Some($conv(v as f64))
            }
        }
    };
}

#[expect(clippy::cast_possible_truncation, reason = "FP32 tensors hold f32")]
fn to_f32(v: f64) -> f32 {
    v as f32
}
float_element!(f32, "FP32", to_f32);
float_element!(f16, "FP16", f16::from_f64);

macro_rules! int_element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            fn from_f64(_: f64) -> Option<Self> {
                None
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    };
}
int_element!(i64, "INT64");
int_element!(i32, "INT32");
int_element!(i16, "INT16");
int_element!(i8, "INT8");
int_element!(u32, "UINT32");
int_element!(u16, "UINT16");
int_element!(u8, "UINT8");

impl Element for bool {
    const NAME: &'static str = "BOOL";
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Reads nested JSON arrays of scalars into one flat `Vec`, in row-major order.
struct Flat<'v, T> {
    out: &'v mut Vec<T>,
    depth: usize,
    limit: usize,
}

impl<'de, T: Element> DeserializeSeed<'de> for Flat<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<T: Element> Flat<'_, T> {
    fn push<E: de::Error>(&mut self, v: Option<T>, what: &dyn fmt::Display) -> Result<(), E> {
        if self.out.len() >= self.limit {
            return Err(E::custom(format!(
                "more values than the shape holds ({})",
                self.limit
            )));
        }
        match v {
            Some(v) => {
                self.out.push(v);
                Ok(())
            }
            None => Err(E::custom(format!(
                "{what} is not a valid {} value",
                T::NAME
            ))),
        }
    }
}

impl<'de, T: Element> Visitor<'de> for Flat<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} values, in arrays", T::NAME)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > 32 {
            return Err(de::Error::custom("arrays nested deeper than 32"));
        }
        let (out, depth, limit) = (self.out, self.depth, self.limit);
        while seq
            .next_element_seed(Flat {
                out: &mut *out,
                depth: depth + 1,
                limit,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), &v)
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), &v)
    }
    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), &v)
    }
    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), &v)
    }
}

pub(super) fn parse_flat<T: Element + burn::tensor::Element>(
    raw: &RawValue,
    count: usize,
    shape: Vec<usize>,
) -> Result<TensorData, String> {
    let mut out = Vec::with_capacity(count);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flat::<T> {
        out: &mut out,
        depth: 0,
        limit: count,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    if out.len() != count {
        return Err(format!(
            "has {} values, its shape {shape:?} needs {count}",
            out.len()
        ));
    }
    Ok(TensorData::new(out, shape))
}
