//! Runtime values of the interpreter. Float tensors live on the device as burn tensors,
//! with the rank as a const generic chosen by a `match` (ranks 1 to 6); integer tensors
//! (shapes, indices, axes) stay on the host, where ONNX graphs compute with them.

use burn::tensor::{Device, Tensor, TensorData};

use super::EngineError;

pub const MAX_RANK: usize = 6;

/// A float tensor of any rank from 1 to [`MAX_RANK`]. Scalars are rank 1 of length 1.
#[derive(Debug, Clone)]
pub enum Float {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
    R6(Tensor<6>),
}

/// Whether float tensors created on `device` are f16 (a [`Precision::F16`] GPU device).
///
/// [`Precision::F16`]: super::device::Precision::F16
#[must_use]
pub fn computes_in_f16(device: &Device) -> bool {
    device.settings().float_dtype == burn::tensor::FloatDType::F16
}

/// Finite values past f16's range become ±65504 instead of ±∞ when uploaded to an f16
/// device: exporters write masks as `(1 - mask) · f32::MIN`, which must stay `0` where
/// the mask is 1, not `0 · −∞ = NaN`.
/// Data already in range (every input of a run, nearly every weight) is not copied.
fn saturate_to_f16(data: TensorData) -> Result<TensorData, EngineError> {
    const F16_MAX: f32 = 65504.0;
    let in_range = data
        .as_slice::<f32>()
        .is_ok_and(|values| !values.iter().any(|v| v.is_finite() && v.abs() > F16_MAX));
    if in_range {
        return Ok(data);
    }
    let shape = data.shape().to_vec();
    let mut values: Vec<f32> = data
        .try_into_vec()
        .map_err(|e| EngineError::Internal(format!("{e:?}")))?;
    for v in values.iter_mut().filter(|v| v.is_finite()) {
        *v = v.clamp(-F16_MAX, F16_MAX);
    }
    Ok(TensorData::new(values, shape))
}

/// Applies a rank-preserving expression to a [`Float`] of any rank.
macro_rules! each_rank {
    ($value:expr, $t:ident => $body:expr) => {
        match $value {
            $crate::engine::value::Float::R1($t) => $crate::engine::value::Float::R1($body),
            $crate::engine::value::Float::R2($t) => $crate::engine::value::Float::R2($body),
            $crate::engine::value::Float::R3($t) => $crate::engine::value::Float::R3($body),
            $crate::engine::value::Float::R4($t) => $crate::engine::value::Float::R4($body),
            $crate::engine::value::Float::R5($t) => $crate::engine::value::Float::R5($body),
            $crate::engine::value::Float::R6($t) => $crate::engine::value::Float::R6($body),
        }
    };
}
pub(crate) use each_rank;

/// Dispatches on a runtime rank to code generic over `const D`.
macro_rules! with_rank {
    ($rank:expr, $d:ident => $body:expr) => {
        match $rank {
            1 => {
                const $d: usize = 1;
                $crate::engine::value::Float::R1($body)
            }
            2 => {
                const $d: usize = 2;
                $crate::engine::value::Float::R2($body)
            }
            3 => {
                const $d: usize = 3;
                $crate::engine::value::Float::R3($body)
            }
            4 => {
                const $d: usize = 4;
                $crate::engine::value::Float::R4($body)
            }
            5 => {
                const $d: usize = 5;
                $crate::engine::value::Float::R5($body)
            }
            6 => {
                const $d: usize = 6;
                $crate::engine::value::Float::R6($body)
            }
            other => {
                return Err($crate::engine::EngineError::Unsupported(format!(
                    "rank {other} tensors"
                )))
            }
        }
    };
}
pub(crate) use with_rank;

impl Float {
    #[must_use]
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::R1(t) => t.dims().to_vec(),
            Self::R2(t) => t.dims().to_vec(),
            Self::R3(t) => t.dims().to_vec(),
            Self::R4(t) => t.dims().to_vec(),
            Self::R5(t) => t.dims().to_vec(),
            Self::R6(t) => t.dims().to_vec(),
        }
    }

    #[must_use]
    pub fn rank(&self) -> usize {
        match self {
            Self::R1(_) => 1,
            Self::R2(_) => 2,
            Self::R3(_) => 3,
            Self::R4(_) => 4,
            Self::R5(_) => 5,
            Self::R6(_) => 6,
        }
    }

    /// Bytes per element on the device: 4, or 2 on a device computing in f16.
    #[must_use]
    pub fn element_bytes(&self) -> usize {
        let dtype = match self {
            Self::R1(t) => t.dtype(),
            Self::R2(t) => t.dtype(),
            Self::R3(t) => t.dtype(),
            Self::R4(t) => t.dtype(),
            Self::R5(t) => t.dtype(),
            Self::R6(t) => t.dtype(),
        };
        dtype.size()
    }

    /// Host data of the tensor (f32). Counted in [`transfers`] (a read-back on a GPU).
    #[must_use]
    pub fn into_data(self) -> TensorData {
        transfers::read_back(self.dims().iter().product::<usize>() * self.element_bytes());
        let data = match self {
            Self::R1(t) => t.into_data(),
            Self::R2(t) => t.into_data(),
            Self::R3(t) => t.into_data(),
            Self::R4(t) => t.into_data(),
            Self::R5(t) => t.into_data(),
            Self::R6(t) => t.into_data(),
        };
        // A device computing in f16 (`Precision::F16`) hands back f16.
        if data.dtype() == burn::tensor::DType::F32 {
            data
        } else {
            data.convert::<f32>()
        }
    }

    /// Uploads host data (any float dtype; converted to f32).
    ///
    /// # Errors
    /// Rank 0 is stored as rank 1; ranks above [`MAX_RANK`] are unsupported.
    pub fn from_data(data: TensorData, device: &Device) -> Result<Self, EngineError> {
        transfers::uploaded(data.shape().iter().product::<usize>() * 4);
        let data = if data.dtype() == burn::tensor::DType::F32 {
            data
        } else {
            data.convert::<f32>()
        };
        let data = if computes_in_f16(device) {
            saturate_to_f16(data)?
        } else {
            data
        };
        let dims = data.shape().to_vec();
        if dims.is_empty() {
            let value: Vec<f32> = data
                .try_to_vec()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
            return Ok(Self::R1(Tensor::from_data(
                TensorData::new(value, [1]),
                device,
            )));
        }
        Ok(with_rank!(dims.len(), D => Tensor::<D>::from_data(data, device)))
    }

    /// Reshapes to `shape` (same element count), possibly changing the rank.
    ///
    /// # Errors
    /// Element counts differ, or the rank is unsupported.
    pub fn reshape(self, shape: &[usize]) -> Result<Self, EngineError> {
        let have = super::limits::product(&self.dims());
        let want = super::limits::product(shape);
        if have != want || want.is_none() {
            return Err(EngineError::Invalid(format!(
                "cannot reshape {:?} to {shape:?}: the element counts differ",
                self.dims()
            )));
        }
        if shape.len() == self.rank() && shape == self.dims().as_slice() {
            return Ok(self);
        }
        // One reshape straight to the target: through a flat vector, a strided tensor (a
        // GPU convolution's output) would be copied.
        Ok(with_rank!(shape.len(), D => self.to_rank::<D>(to_array::<D>(shape))))
    }

    /// Reshapes to `shape` of rank `D` (same element count, checked by the caller).
    #[must_use]
    pub fn to_rank<const D: usize>(self, shape: [usize; D]) -> Tensor<D> {
        // burn's reshape indexes past the end of an empty tensor's strides (found by the
        // `model_load` fuzzer): an empty result is built, not reshaped.
        if shape.contains(&0) {
            let device = match &self {
                Self::R1(t) => t.device(),
                Self::R2(t) => t.device(),
                Self::R3(t) => t.device(),
                Self::R4(t) => t.device(),
                Self::R5(t) => t.device(),
                Self::R6(t) => t.device(),
            };
            return Tensor::<D>::zeros(shape, &device);
        }
        match self {
            Self::R1(t) => t.reshape(shape),
            Self::R2(t) => t.reshape(shape),
            Self::R3(t) => t.reshape(shape),
            Self::R4(t) => t.reshape(shape),
            Self::R5(t) => t.reshape(shape),
            Self::R6(t) => t.reshape(shape),
        }
    }

    /// All values as a rank-1 tensor.
    #[must_use]
    pub fn flat(self) -> Tensor<1> {
        let n: usize = self.dims().iter().product();
        match self {
            Self::R1(t) => t,
            Self::R2(t) => t.reshape([n]),
            Self::R3(t) => t.reshape([n]),
            Self::R4(t) => t.reshape([n]),
            Self::R5(t) => t.reshape([n]),
            Self::R6(t) => t.reshape([n]),
        }
    }

    /// Left-pads the shape with ones up to `rank` (NumPy broadcasting).
    ///
    /// # Errors
    /// `rank` is below the tensor's rank or unsupported.
    pub fn lift(self, rank: usize) -> Result<Self, EngineError> {
        let dims = self.dims();
        if rank < dims.len() {
            return Err(EngineError::Invalid(format!(
                "cannot lift rank {} to {rank}",
                dims.len()
            )));
        }
        let mut shape = vec![1; rank - dims.len()];
        shape.extend(dims);
        self.reshape(&shape)
    }

    /// The tensor as rank 4.
    ///
    /// # Errors
    /// The tensor has another rank.
    pub fn rank4(self) -> Result<Tensor<4>, EngineError> {
        match self {
            Self::R4(t) => Ok(t),
            other => Err(EngineError::Invalid(format!(
                "expected a rank-4 tensor, got shape {:?}",
                other.dims()
            ))),
        }
    }

    /// The tensor as rank 2.
    ///
    /// # Errors
    /// The tensor has another rank.
    pub fn rank2(self) -> Result<Tensor<2>, EngineError> {
        match self {
            Self::R2(t) => Ok(t),
            other => Err(EngineError::Invalid(format!(
                "expected a rank-2 tensor, got shape {:?}",
                other.dims()
            ))),
        }
    }

    /// The tensor as rank 1.
    ///
    /// # Errors
    /// The tensor has more than one dimension that is not 1.
    pub fn rank1(self) -> Result<Tensor<1>, EngineError> {
        let dims = self.dims();
        let n: usize = dims.iter().product();
        if dims.iter().filter(|d| **d != 1).count() > 1 {
            return Err(EngineError::Invalid(format!(
                "expected a vector, got shape {dims:?}"
            )));
        }
        Ok(self.flat().reshape([n]))
    }
}

/// `shape` as a fixed-size array (the caller checked the length).
#[must_use]
pub fn to_array<const D: usize>(shape: &[usize]) -> [usize; D] {
    let mut out = [1usize; D];
    out.copy_from_slice(&shape[..D]);
    out
}

/// A runtime value: a float tensor on the device, or an integer tensor on the host.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "values live in one slot vector; boxing costs an allocation per step"
)]
pub enum Value {
    Float(Float),
    Int {
        data: Vec<i64>,
        shape: Vec<usize>,
    },
    /// An f32 tensor in host memory, for cairn's own CPU kernels (CPU plans only).
    Dense(super::kernels::Dense),
}

impl Value {
    /// # Errors
    /// The value is not a float tensor.
    pub fn float(self) -> Result<Float, EngineError> {
        match self {
            Self::Float(f) => Ok(f),
            Self::Int { shape, .. } => Err(EngineError::Invalid(format!(
                "expected a float tensor, got an int64 tensor of shape {shape:?}"
            ))),
            Self::Dense(d) => Err(EngineError::Internal(format!(
                "a host tensor of shape {:?} reached a burn operator unconverted",
                d.shape
            ))),
        }
    }

    /// # Errors
    /// The value is not an integer tensor.
    pub fn ints(&self) -> Result<&[i64], EngineError> {
        match self {
            Self::Int { data, .. } => Ok(data),
            Self::Float(f) => Err(EngineError::Invalid(format!(
                "expected an int64 tensor, got a float tensor of shape {:?}",
                f.dims()
            ))),
            Self::Dense(d) => Err(EngineError::Invalid(format!(
                "expected an int64 tensor, got a float tensor of shape {:?}",
                d.shape
            ))),
        }
    }

    #[must_use]
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Float(f) => f.dims(),
            Self::Int { shape, .. } => shape.clone(),
            Self::Dense(d) => d.shape.clone(),
        }
    }
}

/// Host ↔ device transfers of float tensors (uploads and read-backs, with their bytes),
/// counted process-wide; `cairn model profile` reports them per run. On the CPU device
/// they are host copies between burn and cairn's kernels.
pub mod transfers {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static UPLOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    pub static READ_BACKS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    std::thread_local! {
        /// Uploads and read-backs made by this thread (see [`on_this_thread`]).
        static HERE: std::cell::Cell<[u64; 2]> = const { std::cell::Cell::new([0, 0]) };
    }

    pub(super) fn uploaded(bytes: usize) {
        count(&UPLOADS, 0, bytes);
    }

    pub(super) fn read_back(bytes: usize) {
        count(&READ_BACKS, 1, bytes);
    }

    /// Adds to the process-wide `counter` and to this thread's count `here`.
    fn count(counter: &[AtomicU64; 2], here: usize, bytes: usize) {
        counter[0].fetch_add(1, Ordering::Relaxed);
        counter[1].fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
        HERE.with(|counts| {
            let mut now = counts.get();
            now[here] += 1;
            counts.set(now);
        });
    }

    /// `(uploads, read-backs)` made so far by this thread: what one step moved, whatever
    /// other threads (other inferences, other tests) do meanwhile.
    #[must_use]
    pub fn on_this_thread() -> [u64; 2] {
        HERE.with(std::cell::Cell::get)
    }

    /// `(uploads, upload bytes, read-backs, read-back bytes)` so far.
    #[must_use]
    pub fn snapshot() -> [u64; 4] {
        [
            UPLOADS[0].load(Ordering::Relaxed),
            UPLOADS[1].load(Ordering::Relaxed),
            READ_BACKS[0].load(Ordering::Relaxed),
            READ_BACKS[1].load(Ordering::Relaxed),
        ]
    }
}
