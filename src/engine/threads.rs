//! The CPU threads one inference spreads over (convolution and GEMM tiles, burn-flex's
//! parallel operators): rayon's global pool, sized once per process from
//! `engine.intra_op_threads`. Concurrent inferences share it, so the cores are never
//! oversubscribed however many requests run at once.

use std::sync::OnceLock;

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
