//! A register-tiled f32 GEMM whose B operand lies in panels of 16 columns (AVX2 + FMA,
//! or AVX-512 where the CPU has it: 4 panels a tile, 2× the AVX2 tile's speed on BERT's
//! and ViT's shapes on a Xeon): `C = start + A · B`, then ReLU. Constant weights (Gemm,
//! Linear, MatMul) are packed once at plan time, so a product never packs B at run time;
//! the `gemm` crate does, per call, and took 1.2–1.4× as long on BERT's and ViT's shapes
//! (`benches/kernels.rs`). 1×1 convolutions stay on the `gemm` crate: unfolding their
//! input into panels cost more than it saved (on AVX-512 too: ShuffleNet 1.12× slower).
//!
//! Invariants:
//! - Panel `j` holds rows `0..k` of columns `16j .. 16j + 16`, row-major, zero past `n`:
//!   the kernel reads whole panels and stores only the `n` valid columns.
//! - Every pointer access is bounded by the asserts in [`multiply`]; parallel tasks write
//!   disjoint column ranges of `C`.

use std::cell::RefCell;

use super::PARALLEL_MACS;

/// Columns per panel: two 8-lane registers.
pub const PANEL: usize = 16;
/// Rows of A per register tile (12 accumulators, 2 B loads, 1 broadcast: 15 of 16 ymm).
pub const ROWS: usize = 6;
/// Depth per pass over a panel: 256 rows of 64 bytes stay in L1 while every row tile of
/// A streams past them.
const DEPTH: usize = 256;

/// Floats of A (256 KiB) from which the AVX-512 tiles prefetch each next row tile: an A
/// that large is weights (or a range of them) read from memory, each pass reading a few
/// KB of every tile, which the hardware prefetcher does not follow (ResNet-50's
/// 512-channel stride-2 layer: 4.2 → 2.2 ms; the whole model 74 → 68 ms against a 1 MiB
/// threshold, which its ranges of weights fell under). BERT's and ViT's activations
/// (under 64K floats) sit in cache, and prefetching them cost 3%.
const PREFETCH_A: usize = 64 << 10;

/// What `C` holds before the product is added.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    Zero,
    /// `C`'s current values (a product split along `k`).
    Accumulate,
    /// One value per row of `C` (a convolution's bias per output channel).
    RowBias(&'a [f32]),
    /// One value per column of `C` (a fully connected layer's bias).
    ColumnBias(&'a [f32]),
    /// `C`'s current values plus one per row: a convolution's bias over the residual its
    /// output is added to, written in place of the residual.
    AccumulateRowBias(&'a [f32]),
}

impl Start<'_> {
    /// How a pass over part of the depth starts: the first as the product does, the
    /// later ones from the sums already in C.
    fn on_pass(self, first: bool) -> Self {
        if first { self } else { Start::Accumulate }
    }
}

/// Whether this CPU runs the panel kernel; callers keep their other path (the `gemm`
/// crate, which has kernels for other architectures) when it does not.
#[must_use]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 tiles run (4 panels wide; same layouts, so packing does not care),
/// and the other kernels' AVX-512 paths (the direct convolution's).
pub(super) fn wide() -> bool {
    #[cfg(test)]
    if NARROW_ONLY.with(std::cell::Cell::get) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
thread_local! {
    /// Keeps this thread's kernels on their AVX2 paths, so tests check both.
    pub(super) static NARROW_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Floats in the panels of a `k × n` matrix, `None` on overflow.
#[must_use]
pub fn panels_len(k: usize, n: usize) -> Option<usize> {
    n.div_ceil(PANEL).checked_mul(PANEL)?.checked_mul(k)
}

/// Packs a `k × n` matrix read at `b[r · row_stride + c · col_stride]`, scaled by
/// `scale`, into panels.
#[must_use]
pub fn pack(
    b: &[f32],
    k: usize,
    n: usize,
    (row_stride, col_stride): (usize, usize),
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; panels_len(k, n).unwrap_or(0)];
    for panel in 0..n.div_ceil(PANEL) {
        for p in 0..k {
            let dst = &mut out[(panel * k + p) * PANEL..][..PANEL];
            for (lane, d) in dst.iter_mut().enumerate() {
                let c = panel * PANEL + lane;
                if c < n {
                    *d = b[p * row_stride + c * col_stride] * scale;
                }
            }
        }
    }
    out
}

/// `C[m × n] = start + A[m × k] · B`, then ReLU when `relu`; `A` row-major with row stride
/// `lda`, `B` in panels, `C` row-major with row stride `ldc`. Large products spread their
/// panels over the intra-op pool.
///
/// # Panics
/// Slices shorter than the sizes say (checked before any unsafe access).
#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
pub fn multiply(
    m: usize,
    n: usize,
    k: usize,
    (a, lda): (&[f32], usize),
    b: &[f32],
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
    relu: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Checked in release too, like everything `multiply_tiled` checks.
    assert!(lda >= k, "gemm: A's stride below its row length");
    assert!(covers(a.len(), m, lda, k), "gemm: A too small");
    // A in tiles of ROWS rows, depth-major (`[tile][p][row]`), so a tile's broadcasts
    // read one stream instead of ROWS strided rows (ViT's 197×192 · 192×768 ran 35%
    // slower without); the buffer is kept per thread.
    let mut tiles = PACKED_A.with(RefCell::take);
    let tiles_len = tiled_len(m, k).unwrap_or(0);
    if tiles.len() < tiles_len {
        tiles.resize(tiles_len, 0.0);
    }
    tile_rows(m, k, (a, lda), &mut tiles[..tiles_len]);
    let threads = crate::engine::threads::ways();
    multiply_tiled(
        m,
        n,
        k,
        (&tiles, k * ROWS),
        b,
        (c, ldc),
        start,
        relu,
        threads,
    );
    PACKED_A.with(|cell| *cell.borrow_mut() = tiles);
}

/// `A[m × k]` (row stride `lda`) in tiles of `ROWS` rows, as [`multiply_tiled`] reads it
/// with a tile stride of `k · ROWS` (weights tiled once at plan time).
#[must_use]
pub fn tiled(m: usize, k: usize, a: &[f32], lda: usize) -> Vec<f32> {
    let mut tiles = vec![0f32; tiled_len(m, k).unwrap_or(0)];
    if m > 0 {
        assert!(lda >= k && covers(a.len(), m, lda, k), "gemm: A too small");
        tile_rows(m, k, (a, lda), &mut tiles);
    }
    tiles
}

/// Lays `A[m × k]` (row stride `lda`) out in tiles of `ROWS` rows, depth-major
/// (`[tile][p][row]`), rows past `m` zero. On BERT's 32-row products a scalar copy took a
/// fifth of the product's time; AVX2 transposes 8 depths of a tile at once.
fn tile_rows(m: usize, k: usize, (a, lda): (&[f32], usize), tiles: &mut [f32]) {
    for (t, tile) in tiles.chunks_exact_mut((ROWS * k).max(1)).enumerate() {
        let rows: [Option<&[f32]>; ROWS] =
            std::array::from_fn(|r| (t * ROWS + r < m).then(|| &a[(t * ROWS + r) * lda..][..k]));
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2; every row holds k values and the tile ROWS · k.
            done = unsafe { avx2::tile_rows(&rows, k, tile) };
        }
        for p in done..k {
            for (r, row) in rows.iter().enumerate() {
                tile[p * ROWS + r] = row.map_or(0.0, |row| row[p]);
            }
        }
    }
}

/// Whether `len` values hold `count ≥ 1` runs of `run` values, `stride` apart (checked
/// arithmetic: the kernel reads and writes through raw pointers).
fn covers(len: usize, count: usize, stride: usize, run: usize) -> bool {
    (count - 1)
        .checked_mul(stride)
        .and_then(|e| e.checked_add(run))
        .is_some_and(|e| len >= e)
}

/// Floats of an `m × k` A laid out in tiles (see [`multiply_tiled`]), `None` on overflow.
#[must_use]
pub fn tiled_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(ROWS).checked_mul(ROWS)?.checked_mul(k)
}

/// [`multiply`] with A already in tiles of `ROWS` rows, `tile_stride` floats apart
/// (at least `k · ROWS`): row `i`, depth `p` at
/// `(i / ROWS) · tile_stride + p · ROWS + i % ROWS` (a convolution's transforms write it
/// so), on up to `threads` threads of the intra-op pool.
///
/// # Panics
/// Slices shorter than the sizes say (checked before any unsafe access).
#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
pub fn multiply_tiled(
    m: usize,
    n: usize,
    k: usize,
    (tiles, tile_stride): (&[f32], usize),
    b: &[f32],
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
    relu: bool,
    threads: usize,
) {
    // SAFETY: `c` is borrowed mutably for the call, so no other thread touches it.
    unsafe {
        multiply_tiled_into(
            m,
            n,
            k,
            (tiles, tile_stride),
            b,
            (c.as_mut_ptr(), c.len(), ldc),
            start,
            relu,
            threads,
        );
    }
}

/// [`multiply_tiled`] into `C` given as a pointer and the number of floats behind it, for
/// callers whose threads each write their own columns of one output (a convolution's
/// blocks of pixels, in NCHW).
///
/// # Safety
/// `c` is valid for reads and writes of `c_len` floats, and while the call runs no other
/// thread reads or writes the elements it writes: rows `0..m`, columns `0..n` at row
/// stride `ldc`.
///
/// # Panics
/// Sizes that do not fit the slices and `c_len` (checked before any unsafe access).
#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
pub unsafe fn multiply_tiled_into(
    m: usize,
    n: usize,
    k: usize,
    (tiles, tile_stride): (&[f32], usize),
    b: &[f32],
    (c, c_len, ldc): (*mut f32, usize, usize),
    start: Start<'_>,
    relu: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Checked in release too: the kernel below reads and writes through raw pointers.
    assert!(ldc >= n, "gemm: C's stride below its row length");
    assert!(
        k.checked_mul(ROWS).is_some_and(|t| tile_stride >= t)
            && covers(tiles.len(), m.div_ceil(ROWS), tile_stride, k * ROWS),
        "gemm: A tiles too small"
    );
    assert!(
        panels_len(k, n).is_some_and(|e| b.len() >= e),
        "gemm: B panels too small"
    );
    assert!(covers(c_len, m, ldc, n), "gemm: C too small");
    match start {
        Start::RowBias(bias) | Start::AccumulateRowBias(bias) => {
            assert!(bias.len() >= m, "gemm: row bias too short");
        }
        Start::ColumnBias(bias) => assert!(bias.len() >= n, "gemm: column bias too short"),
        Start::Zero | Start::Accumulate => {}
    }
    let panels = n.div_ceil(PANEL);
    let job = Job {
        m,
        n,
        k,
        a: tiles.as_ptr(),
        tile_stride,
        b: b.as_ptr(),
        c,
        ldc,
        start,
        relu,
        prefetch_a: m.saturating_mul(k) >= PREFETCH_A,
    };
    let work = m.saturating_mul(n).saturating_mul(k);
    if work >= PARALLEL_MACS && threads > 1 && panels > 1 {
        use rayon::prelude::*;
        crate::engine::threads::entering_parallel_region();
        // About four tasks a thread; on AVX-512, whole groups of panels where the panels
        // allow one per thread.
        let mut per_task = panels.div_ceil(threads * 4).max(1);
        if wide() {
            per_task = per_task.max(avx512::WIDE.min(panels.div_ceil(threads)));
        }
        (0..panels.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let first = task * per_task;
                // SAFETY: tasks cover disjoint panels, so disjoint columns of C; the bounds
                // were asserted above.
                unsafe { job.run(first, (first + per_task).min(panels)) };
            });
    } else {
        // SAFETY: as above, one task.
        unsafe { job.run(0, panels) };
    }
}

thread_local! {
    /// [`multiply`]'s buffer for A's tiles, reused from call to call.
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One product's operands as pointers, shared by the tasks that split its panels.
#[derive(Clone, Copy)]
struct Job<'a> {
    m: usize,
    n: usize,
    k: usize,
    /// A in tiles: row `i`, depth `p` at `(i / ROWS) · tile_stride + p · ROWS + i % ROWS`.
    a: *const f32,
    tile_stride: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    start: Start<'a>,
    relu: bool,
    /// Whether the AVX-512 tiles prefetch the next row tile of A (see [`PREFETCH_A`]).
    prefetch_a: bool,
}

// SAFETY: the pointers come from slices borrowed for the whole `multiply` call, and tasks
// write disjoint columns of C.
unsafe impl Send for Job<'_> {}
// SAFETY: as above.
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    /// Computes panels `first..end`.
    ///
    /// # Safety
    /// The bounds asserted in [`multiply`] hold, and no other task writes these panels.
    unsafe fn run(&self, first: usize, end: usize) {
        #[cfg(target_arch = "x86_64")]
        if wide() {
            // SAFETY: the CPU has AVX-512F; bounds as the caller guarantees.
            unsafe { avx512::run(self, first, end) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2 and FMA; bounds as the caller guarantees.
            unsafe { avx2::run(self, first, end) };
            return;
        }
        // SAFETY: as the caller guarantees.
        unsafe { self.portable(first, end) };
    }

    /// The same product in plain loops, for CPUs without AVX2 (callers prefer the `gemm`
    /// crate there; this keeps `multiply` total).
    ///
    /// # Safety
    /// As [`Job::run`].
    unsafe fn portable(&self, first: usize, end: usize) {
        for panel in first..end {
            let cols = PANEL.min(self.n - panel * PANEL);
            for i in 0..self.m {
                let mut acc = [0f32; PANEL];
                // SAFETY (all accesses): rows < m, columns < n, depths < k, within the
                // asserted extents.
                let c_row = unsafe { self.c.add(i * self.ldc + panel * PANEL) };
                for (lane, v) in acc.iter_mut().enumerate().take(cols) {
                    *v = match self.start {
                        Start::Zero => 0.0,
                        Start::Accumulate => unsafe { *c_row.add(lane) },
                        Start::RowBias(bias) => bias[i],
                        Start::ColumnBias(bias) => bias[panel * PANEL + lane],
                        Start::AccumulateRowBias(bias) => (unsafe { *c_row.add(lane) }) + bias[i],
                    };
                }
                for p in 0..self.k {
                    let av = unsafe {
                        *self
                            .a
                            .add((i / ROWS) * self.tile_stride + p * ROWS + i % ROWS)
                    };
                    let row = unsafe { self.b.add((panel * self.k + p) * PANEL) };
                    for (lane, v) in acc.iter_mut().enumerate() {
                        *v += av * unsafe { *row.add(lane) };
                    }
                }
                for (lane, v) in acc.iter().enumerate().take(cols) {
                    let v = if self.relu { super::fmax(*v, 0.0) } else { *v };
                    unsafe { *c_row.add(lane) = v };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
            .collect()
    }

    /// Every start, ReLU, row counts 1–13 (all tile heights), column tails, groups of 1–4
    /// panels, depths across the 128- and 256-row passes and zero, against a triple loop;
    /// on AVX-512 CPUs, through both the AVX-512 and the AVX2 tiles.
    #[test]
    fn the_panel_kernel_matches_the_triple_loop() {
        check_every_shape();
        if wide() {
            NARROW_ONLY.with(|narrow| narrow.set(true));
            check_every_shape();
            NARROW_ONLY.with(|narrow| narrow.set(false));
        }
    }

    fn check_every_shape() {
        for (m, n, k) in [
            (1, 1, 1),
            (7, 16, 3),
            (13, 37, 300),
            (6, 5, 0),
            (3, 33, 513),
            (12, 48, 17),
            (7, 80, 130),
            (6, 100, 257),
        ] {
            let (lda, ldc) = (k + 2, n + 3);
            let a = ramp(m * lda, 1);
            let b = ramp(k * n, 2);
            let packed = pack(&b, k, n, (n, 1), 1.0);
            let row_bias = ramp(m, 3);
            let col_bias = ramp(n, 4);
            for start in 0..5 {
                for relu in [false, true] {
                    let mut c = ramp(m * ldc, 5);
                    let before = c.clone();
                    let how = match start {
                        0 => Start::Zero,
                        1 => Start::Accumulate,
                        2 => Start::RowBias(&row_bias),
                        3 => Start::ColumnBias(&col_bias),
                        _ => Start::AccumulateRowBias(&row_bias),
                    };
                    multiply(m, n, k, (&a, lda), &packed, (&mut c, ldc), how, relu);
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j];
                            if j >= n {
                                assert_eq!(got, before[i * ldc + j], "padding column written");
                                continue;
                            }
                            let mut want = match start {
                                0 => 0.0,
                                1 => before[i * ldc + j],
                                2 => row_bias[i],
                                3 => col_bias[j],
                                _ => before[i * ldc + j] + row_bias[i],
                            };
                            for p in 0..k {
                                want += a[i * lda + p] * b[p * n + j];
                            }
                            if relu {
                                want = want.max(0.0);
                            }
                            assert!(
                                (got - want).abs() < 1e-3,
                                "{m}×{n}×{k} start {start}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
