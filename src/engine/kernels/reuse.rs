//! Activation buffers reused from step to step and run to run. A tensor freed at its last
//! use hands its buffer to a later step's output instead of that output taking a fresh
//! one, which the allocator zero-fills: on MobileNetV3 and ShuffleNetV2 that zero-filling
//! was 5–8% of a run, for values every kernel then overwrote. What a run leaves unused
//! goes back to its model ([`Kept`]) for the next run, as an arena would.
//!
//! Invariants:
//! - Buffers are kept only on a thread inside [`within_run`], at most [`MAX_KEPT`] of
//!   them; when the run ends (or unwinds) they go back to the model's [`Kept`], at most
//!   [`MAX_KEPT_FLOATS`] in all (what it held before is freed), and are freed with the
//!   model.
//! - [`for_overwrite`] returns initialized memory (zeros, or an earlier tensor's values);
//!   its callers write every element before the tensor is read.

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

/// Buffers kept at most; past it the one freed longest ago goes (a step's output is
/// most often the size of a tensor freed a few steps before).
const MAX_KEPT: usize = 32;
/// Floats a model keeps between runs at most (16 MiB: a mobile network's whole working
/// set; a larger one keeps its most recently freed buffers).
const MAX_KEPT_FLOATS: usize = 4 << 20;
/// Smaller buffers are not kept: zero-filling them costs less than finding one (all are,
/// in tests, so that kernels' tests see stale buffers).
const MIN_FLOATS: usize = if cfg!(test) { 1 } else { 4096 };

/// The buffers one model's last run left unused, for its next run.
#[derive(Default)]
pub struct Kept(Mutex<Vec<Vec<f32>>>);

impl Kept {
    /// Floats held.
    #[must_use]
    pub fn floats(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(Vec::capacity)
            .sum()
    }
}

thread_local! {
    /// The buffers freed during this thread's current run; `None` outside a run.
    static FREE: RefCell<Option<Vec<Vec<f32>>>> = const { RefCell::new(None) };
}

/// Runs `run` (one inference of the model that owns `kept`) with buffer reuse on this
/// thread, starting from the buffers its last run left; what this run leaves goes back
/// to `kept` when it returns or unwinds. Concurrent runs of one model each start from
/// what the other left, or from nothing.
pub fn within_run<T>(kept: &Kept, run: impl FnOnce() -> T) -> T {
    struct Reset<'a> {
        outer: Option<Vec<Vec<f32>>>,
        kept: &'a Kept,
    }
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            let Ok(Some(left)) =
                FREE.try_with(|free| std::mem::replace(&mut *free.borrow_mut(), outer))
            else {
                return;
            };
            // The most recently freed first, within the bound.
            let mut floats = 0;
            let mut keep: Vec<Vec<f32>> = left
                .into_iter()
                .rev()
                .filter(|buffer| {
                    floats += buffer.capacity();
                    floats <= MAX_KEPT_FLOATS
                })
                .collect();
            keep.reverse();
            *self.kept.0.lock().unwrap_or_else(PoisonError::into_inner) = keep;
        }
    }
    let start = std::mem::take(&mut *kept.0.lock().unwrap_or_else(PoisonError::into_inner));
    let outer = FREE
        .try_with(|free| free.borrow_mut().replace(start))
        .ok()
        .flatten();
    let _reset = Reset { outer, kept };
    run()
}

/// `len` floats for an output whose every element the caller writes: a buffer freed
/// earlier in this run (holding its old values) that fits, else a fresh zeroed one.
#[must_use]
pub fn for_overwrite(len: usize) -> Vec<f32> {
    let kept = if len >= MIN_FLOATS {
        FREE.try_with(|free| {
            let mut free = free.try_borrow_mut().ok()?;
            let list = free.as_mut()?;
            // The most recently freed that holds `len` floats and no more than twice that:
            // the likeliest to be still in cache.
            let index = list
                .iter()
                .rposition(|v| v.capacity() >= len && v.capacity() / 2 <= len)?;
            Some(list.remove(index))
        })
        .ok()
        .flatten()
    } else {
        None
    };
    match kept {
        Some(mut buffer) => {
            if buffer.len() >= len {
                buffer.truncate(len);
            } else {
                buffer.resize(len, 0.0);
            }
            buffer
        }
        None => vec![0f32; len],
    }
}

/// Keeps a freed tensor's buffer for a later [`for_overwrite`] of this run; outside a
/// run, it is freed; past [`MAX_KEPT`], the one kept longest goes.
pub(super) fn keep(buffer: Vec<f32>) {
    if buffer.capacity() < MIN_FLOATS {
        return;
    }
    let _ = FREE.try_with(|free| {
        if let Ok(mut free) = free.try_borrow_mut()
            && let Some(list) = free.as_mut()
        {
            if list.len() == MAX_KEPT {
                list.remove(0);
            }
            list.push(buffer);
        }
    });
}

/// Runs `f` in a run whose next output of `len` floats reuses a buffer of NaNs: a kernel
/// that leaves an element unwritten shows it.
#[cfg(test)]
pub(crate) fn with_stale<T>(len: usize, f: impl FnOnce() -> T) -> T {
    within_run(&Kept::default(), || {
        keep(vec![f32::NAN; len]);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_freed_in_a_run_is_reused_then_kept_for_the_next() {
        let model = Kept::default();
        let kept = within_run(&model, || {
            let first = for_overwrite(10_000);
            let address = first.as_ptr();
            keep(first);
            let again = for_overwrite(9_000);
            assert_eq!(again.len(), 9_000);
            assert_eq!(again.as_ptr(), address, "the freed buffer is reused");
            // Too large for it: a fresh, zeroed one.
            keep(again);
            let larger = for_overwrite(30_000);
            assert!(larger.iter().all(|v| *v == 0.0));
            FREE.with(|free| free.borrow().as_ref().map_or(0, Vec::len))
        });
        assert_eq!(kept, 1, "the smaller buffer stays kept during the run");
        assert!(
            FREE.with(|free| free.borrow().is_none()),
            "the thread keeps nothing after"
        );
        assert_eq!(
            model.floats(),
            10_000,
            "the model keeps it for its next run"
        );
        keep(vec![0.0; 10_000]);
        assert!(
            FREE.with(|free| free.borrow().is_none()),
            "nothing kept outside a run"
        );
        within_run(&model, || {
            let reused = for_overwrite(10_000);
            assert_eq!(model.floats(), 0, "a run takes the model's buffers");
            assert_eq!(reused.capacity(), 10_000);
        });
    }

    #[test]
    fn a_model_keeps_a_bounded_number_of_floats() {
        let model = Kept::default();
        within_run(&model, || {
            for _ in 0..MAX_KEPT {
                keep(vec![0.0; MAX_KEPT_FLOATS / 4]);
            }
        });
        assert_eq!(model.floats(), MAX_KEPT_FLOATS);
    }

    #[test]
    fn a_panicking_run_leaves_nothing_kept() {
        let model = Kept::default();
        let result = std::panic::catch_unwind(|| {
            within_run(&model, || {
                keep(vec![1.0; 10_000]);
                panic!("a kernel panicked");
            })
        });
        assert!(result.is_err());
        assert!(FREE.with(|free| free.borrow().is_none()));
        assert_eq!(model.floats(), 10_000);
    }
}
