//! The CPU threads one inference spreads over (convolution and GEMM tiles, burn-flex's
//! parallel operators): rayon's global pool, sized once per process from
//! `engine.intra_op_threads`. Concurrent inferences share it, so the cores are never
//! oversubscribed however many requests run at once.
//!
//! An inference with parallel work, running alone, runs on a pool thread ([`spread`]), not
//! beside the pool: a caller outside it would make one thread more than the pool has cores
//! for, and the workers that spin between parallel regions would take the caller's core
//! (on 2 cores, ShuffleNet ran 25% slower on 2 threads than on 1 that way). Beside other
//! inferences, each runs on its caller's thread and splits into its share of the pool
//! ([`ways`]): on 2 cores and 2 requests, one thread each, the throughput of one thread
//! per inference (measured: 277–297 inferences/s of MobileNetV3 at 2 and 4 callers,
//! against 253–288 with one thread; spinning workers had cost 10–25% and a 3× p99).
//!
//! While such an inference runs, the other workers stay awake ([`stay_awake`]): each polls
//! for work to steal instead of going to sleep between two parallel regions. A sleeping
//! rayon worker takes tens of µs to wake on a VM (a fork of two 10 µs halves after 300 µs
//! of serial work: 33 µs median, 155 µs p90, against 12 µs and 13 µs with the workers
//! awake), which is more than a split of a layer of a small model saves.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Inferences running now, in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// How many pieces a kernel splits its work into now: the pool's threads shared among the
/// inferences running at once. Under load (as many inferences as threads) each runs on
/// one thread, so splitting costs nothing where it cannot gain.
#[must_use]
pub fn ways() -> usize {
    (intra_op() / ACTIVE.load(Ordering::Relaxed).max(1)).max(1)
}

thread_local! {
    /// Parallel regions this thread started: what [`spread`] learns from.
    static REGIONS: Cell<u64> = const { Cell::new(0) };
    /// Inferences running on this thread (nested when a worker runs another's).
    static RUNNING: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as running an inference while `run` runs (unwinding included).
struct Running;

impl Running {
    fn on_this_thread<R>(run: impl FnOnce() -> R) -> R {
        RUNNING.with(|r| r.set(r.get() + 1));
        let _running = Self;
        run()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(r.get().saturating_sub(1)));
    }
}

/// Counts an inference in [`ACTIVE`] while it lives.
struct Active;

impl Active {
    /// Counts one more, and tells whether others were running.
    fn start() -> (Self, bool) {
        let others = ACTIVE.fetch_add(1, Ordering::Relaxed);
        (Self, others > 0)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Parallel regions this thread has started so far.
#[must_use]
pub fn parallel_regions() -> u64 {
    REGIONS.with(Cell::get)
}

/// A kernel is about to split its work over the pool.
pub fn entering_parallel_region() {
    REGIONS.with(|r| r.set(r.get() + 1));
}

/// Runs one inference: on a pool thread when the last run through `hint` split work over
/// the pool and no other inference is running, else here, saving the two hand-offs
/// (about 7 µs, which a model too small to split would notice). Either way, whether this
/// run split work sets `hint` for the next, so a model learns its place on its first run
/// (and again when its batch grows).
pub fn spread<R: Send>(hint: &AtomicBool, run: impl FnOnce() -> R + Send) -> R {
    if intra_op() <= 1 {
        return run();
    }
    let (_active, concurrent) = Active::start();
    let counted = move || {
        let before = REGIONS.with(Cell::get);
        let out = Running::on_this_thread(run);
        (out, REGIONS.with(Cell::get) != before)
    };
    // Beside other inferences, here: each gets its share of the pool ([`ways`]; on two
    // cores, none), and none waits on a hand-off or on a worker busy with another.
    let (out, split) = if hint.load(Ordering::Relaxed) && !concurrent {
        let done = AtomicBool::new(false);
        rayon::scope(|scope| {
            let owner = rayon::current_thread_index();
            let done = &done;
            for _ in 1..ways() {
                scope.spawn(move |_| stay_awake(done, owner));
            }
            let out = counted();
            done.store(true, Ordering::Release);
            out
        })
    } else {
        counted()
    };
    hint.store(split, Ordering::Relaxed);
    out
}

/// A worker idle this long in one inference goes back to sleep: a long serial stretch
/// (or a model that stopped splitting) does not keep a core busy for nothing.
const STAY_AWAKE_IDLE: Duration = Duration::from_millis(2);

/// Keeps a worker polling for work until the inference on `owner` is `done`: it runs
/// whatever it steals (the inference's splits) and spins in between. On the owner itself
/// (which pops one of these from its own queue while waiting for a split) it returns at
/// once, so the inference never waits on it. None is started beside other inferences,
/// and one returns when others start: [`spread`] then runs each on its caller's thread.
fn stay_awake(done: &AtomicBool, owner: Option<usize>) {
    // Nor on a worker inside an inference of its own (waiting for one of its splits):
    // spinning there would hold that inference up until this one ended.
    if rayon::current_thread_index() == owner || RUNNING.with(Cell::get) > 0 {
        return;
    }
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    // Until the inference ends, or others start (each then runs on its caller's thread,
    // which a spinning worker would only slow down).
    while !done.load(Ordering::Acquire) && ACTIVE.load(Ordering::Relaxed) <= 1 {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
            continue;
        }
        // A short pause between polls keeps this core off the owner's queue's cache line.
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(64) && idle_since.elapsed() > STAY_AWAKE_IDLE {
            return;
        }
    }
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
        let check = || -> Result<(), &'static str> {
            let hint = AtomicBool::new(true);
            let expect = |ok: bool, what| if ok { Ok(()) } else { Err(what) };
            expect(spread(&hint, on_pool), "a first run goes to the pool")?;
            expect(!hint.load(Ordering::Relaxed), "it split nothing")?;
            expect(!spread(&hint, on_pool), "so the next stays on the caller")?;
            spread(&hint, entering_parallel_region);
            expect(
                hint.load(Ordering::Relaxed),
                "a run that splits sends the next to the pool",
            )?;
            expect(spread(&hint, on_pool), "and that one runs on the pool")
        };
        // Other tests in this binary run inferences at the same time, and beside another
        // inference each stays on its caller by design: the sequence must hold whenever
        // it runs alone, so it gets a few tries.
        let mut outcome = check();
        for _ in 0..50 {
            if outcome.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            outcome = check();
        }
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn concurrent_inferences_that_split_all_finish() {
        // Eight callers at once, each inference splitting work 50 times: the workers kept
        // awake by one inference run the others' splits and whole inferences, and nobody
        // waits on a spinning worker for good.
        use rayon::prelude::*;
        let callers: Vec<_> = (0..8u64)
            .map(|seed| {
                std::thread::spawn(move || {
                    let hint = AtomicBool::new(true);
                    (0..50u64)
                        .map(|round| {
                            spread(&hint, || {
                                entering_parallel_region();
                                (0..1000u64)
                                    .into_par_iter()
                                    .map(|i| i * seed + round)
                                    .sum::<u64>()
                            })
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        for (seed, caller) in (0..8u64).zip(callers) {
            let want: u64 = (0..50u64).map(|round| 499_500 * seed + 1000 * round).sum();
            assert_eq!(caller.join().expect("caller"), want);
        }
    }
}
