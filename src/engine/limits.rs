//! What an untrusted model may make the engine allocate or spend, and the guard that turns
//! a panic inside an operator into an error naming the node.
//!
//! Every tensor the engine holds has a bounded *volume*: the product of its dimensions,
//! zeros counted as ones, times its element size, is at most
//! [`LoadLimits::max_tensor_bytes`]. So a shape product over any subset of a tensor's
//! dimensions cannot overflow, and an operator computes the size of what it is about to
//! allocate (its output, its scratch buffers) with checked arithmetic and refuses it
//! before allocating ([`Cap::check`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use burn::tensor::TensorData;

use super::EngineError;
use super::value::Value;

/// Limits a model is loaded and run under (kept in the [`super::Model`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadLimits {
    /// The largest tensor the model may hold or make, inputs included, in bytes (f32 as
    /// 4 bytes an element, integer tensors as 8). Also bounds operators' scratch buffers.
    pub max_tensor_bytes: u64,
    /// Wall-clock time constant folding at load may take.
    pub fold_budget: Duration,
}

impl Default for LoadLimits {
    /// 1 GiB tensors, 10 s of constant folding.
    fn default() -> Self {
        Self {
            max_tensor_bytes: 1 << 30,
            fold_budget: Duration::from_secs(10),
        }
    }
}

/// The size cap operators check before they allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    max_bytes: u64,
}

/// Bytes an element of an f32 tensor takes.
pub const F32: usize = 4;
/// Bytes an element of an integer (i64) tensor takes.
pub const I64: usize = 8;

/// The product of `dims`, `None` on overflow.
#[must_use]
pub fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

impl Cap {
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        Self { max_bytes }
    }

    #[must_use]
    pub fn of(limits: &LoadLimits) -> Self {
        Self::new(limits.max_tensor_bytes)
    }

    /// No cap beyond the address space (tests, and callers with their own bounds).
    #[must_use]
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// The element count of a tensor of `shape` (`elem` bytes an element), refused when its
    /// volume (zeros counted as ones) overflows or passes the cap.
    ///
    /// # Errors
    /// [`EngineError::Limit`], saying by how much.
    pub fn check(self, shape: &[usize], elem: usize) -> Result<usize, EngineError> {
        let volume = shape
            .iter()
            .try_fold(elem, |acc, d| acc.checked_mul((*d).max(1)))
            .and_then(|v| u64::try_from(v).ok());
        match volume {
            Some(bytes) if bytes <= self.max_bytes => Ok(product(shape).unwrap_or(0)),
            Some(bytes) => Err(EngineError::Limit(format!(
                "a tensor of shape {shape:?} would take {bytes} bytes, above the limit of {} \
                 (engine.max_tensor_bytes)",
                self.max_bytes
            ))),
            None => Err(EngineError::Limit(format!(
                "a tensor of shape {shape:?} is larger than memory can address"
            ))),
        }
    }

    /// Checks a runtime value.
    ///
    /// # Errors
    /// See [`Cap::check`].
    pub fn value(self, value: &Value) -> Result<(), EngineError> {
        let elem = if matches!(value, Value::Int { .. }) {
            I64
        } else {
            F32
        };
        self.check(&value.dims(), elem).map(|_| ())
    }

    /// Checks host data (an input, an initializer), at the engine's in-memory element size.
    ///
    /// # Errors
    /// See [`Cap::check`].
    pub fn data(self, data: &TensorData) -> Result<(), EngineError> {
        let elem = if data.dtype().is_float() { F32 } else { I64 };
        self.check(data.shape(), elem).map(|_| ())
    }
}

/// The bytes a value holds (its element count times the engine's element size).
#[must_use]
pub fn value_bytes(value: &Value) -> u64 {
    let (count, elem) = match value {
        Value::Int { data, .. } => (data.len(), I64),
        Value::Dense(d) => (d.data.len(), F32),
        Value::Float(f) => (product(&f.dims()).unwrap_or(0), f.element_bytes()),
    };
    u64::try_from(count.saturating_mul(elem)).unwrap_or(u64::MAX)
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Runs `f`, turning a panic into [`EngineError::Internal`].
///
/// # Errors
/// `f`'s own, or the panic.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(EngineError::Internal(format!(
            "an operator failed inside the tensor library: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// `error` as raised by the node named `node`.
#[must_use]
pub fn at_node(node: &str, op: &str, error: EngineError) -> EngineError {
    match error {
        // Already named (a nested step).
        e @ EngineError::Node { .. } => e,
        e => EngineError::Node {
            node: node.to_owned(),
            op: op.to_owned(),
            cause: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_checked_and_capped() {
        let cap = Cap::new(1 << 20);
        assert_eq!(cap.check(&[256, 256], F32).unwrap(), 65536);
        assert!(cap.check(&[512, 1024], F32).is_err());
        assert!(cap.check(&[1 << 62, 4], F32).is_err());
        // A zero makes no elements, but the other dimensions still count.
        assert!(cap.check(&[0, 1 << 62, 4], F32).is_err());
        assert_eq!(cap.check(&[0, 16], F32).unwrap(), 0);
        assert!(Cap::unlimited().check(&[usize::MAX, 2], 1).is_err());
    }

    #[test]
    fn panics_become_errors() {
        let r: Result<(), _> = guarded(|| panic!("boom"));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("boom"), "{e}");
    }
}
