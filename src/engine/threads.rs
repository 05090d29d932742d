//! The CPU threads one inference spreads over (convolution and GEMM tiles, burn-flex's
//! parallel operators): rayon's global pool, sized once per process from
//! `engine.intra_op_threads`. Concurrent inferences share it, so the cores are never
//! oversubscribed however many requests run at once.
//!
//! An inference with parallel work runs on a pool thread ([`spread`]), not beside the pool:
//! a caller outside it would make one thread more than the pool has cores for, and the
//! workers that spin between parallel regions would take the caller's core (on 2 cores,
//! ShuffleNet ran 25% slower on 2 threads than on 1 that way).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static THREADS: OnceLock<usize> = OnceLock::new();

/// Sizes the pool (0: every core) and returns its size. The first call wins; later calls
/// (and a pool some library built first) keep the size there is.
pub fn configure(threads: usize) -> usize {
    *THREADS.get_or_init(|| {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            threads
        };
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("cairn-cpu-{i}"))
            .build_global();
        if built.is_ok() {
            n
        } else {
            rayon::current_num_threads()
        }
    })
}

/// The pool's size (every core when nothing configured it).
#[must_use]
pub fn intra_op() -> usize {
    THREADS
        .get()
        .copied()
        .unwrap_or_else(rayon::current_num_threads)
}

thread_local! {
    /// Parallel regions this thread started: what [`spread`] learns from.
    static REGIONS: Cell<u64> = const { Cell::new(0) };
}

/// A kernel is about to split its work over the pool.
pub fn entering_parallel_region() {
    REGIONS.with(|r| r.set(r.get() + 1));
}

/// Runs one inference: on a pool thread when the last run through `hint` split work over
/// the pool, else here, saving the two hand-offs (about 7 µs, which a model too small to
/// split would notice). Either way, whether this run split work sets `hint` for the next,
/// so a model learns its place on its first run (and again when its batch grows).
pub fn spread<R: Send>(hint: &AtomicBool, run: impl FnOnce() -> R + Send) -> R {
    if intra_op() <= 1 {
        return run();
    }
    let counted = move || {
        let before = REGIONS.with(Cell::get);
        let out = run();
        (out, REGIONS.with(Cell::get) != before)
    };
    let (out, split) = if hint.load(Ordering::Relaxed) {
        rayon::scope(|_| counted())
    } else {
        counted()
    };
    hint.store(split, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inference_moves_to_the_pool_only_while_it_splits_work() {
        if intra_op() < 2 {
            eprintln!("one core: nothing to spread");
            return;
        }
        let on_pool = || rayon::current_thread_index().is_some();
        let hint = AtomicBool::new(true);
        assert!(spread(&hint, on_pool), "a first run goes to the pool");
        assert!(!hint.load(Ordering::Relaxed), "it split nothing");
        assert!(!spread(&hint, on_pool), "so the next stays on the caller");
        spread(&hint, entering_parallel_region);
        assert!(
            hint.load(Ordering::Relaxed),
            "a run that splits sends the next to the pool"
        );
        assert!(spread(&hint, on_pool));
    }
}
