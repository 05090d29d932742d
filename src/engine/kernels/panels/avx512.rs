//! The panel kernel's AVX-512 loops. One register holds a panel's 16 columns, so a tile
//! of 6 rows spans up to 4 panels: 24 accumulators of the 32 registers, each broadcast
//! of A feeding 4 FMAs and each load of B 6 (the AVX2 tile: 2 and 6, at half the width).
//! A and B keep the layouts the AVX2 kernel reads.

use std::arch::x86_64::{
    __mmask16, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps,
};

use super::{Job, PANEL, ROWS, Start};

/// Panels per register tile.
pub(super) const WIDE: usize = 4;
/// Depth per pass over a group of panels: 4 panels × 128 rows × 64 bytes, 32 KiB, stay in
/// L1 while every row tile of A streams past them.
const DEPTH: usize = 128;
/// Every lane of a panel.
const ALL: __mmask16 = 0xFFFF;

/// # Safety
/// As [`Job::run`], on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(job: &Job<'_>, first: usize, end: usize) {
    let mut panel = first;
    while panel < end {
        let count = WIDE.min(end - panel);
        // SAFETY: panels panel..panel + count < end lie inside the product.
        unsafe {
            match count {
                4 => group::<4>(job, panel),
                3 => group::<3>(job, panel),
                2 => group::<2>(job, panel),
                _ => group::<1>(job, panel),
            }
        }
        panel += count;
    }
}

/// Panels `panel..panel + P` for every row, in passes of `DEPTH`.
///
/// # Safety
/// As [`run`]; the `P` panels lie inside the product.
#[inline(always)]
unsafe fn group<const P: usize>(job: &Job<'_>, panel: usize) {
    let mut masks = [ALL; P];
    for (j, mask) in masks.iter_mut().enumerate() {
        let cols = PANEL.min(job.n - (panel + j) * PANEL);
        if cols < PANEL {
            *mask = (1u16 << cols) - 1;
        }
    }
    let mut p0 = 0;
    while p0 < job.k.max(1) {
        let depth = DEPTH.min(job.k - p0);
        let pass = Pass {
            job,
            panel,
            p0,
            depth,
            masks,
            first: p0 == 0,
            relu: job.relu && p0 + depth >= job.k,
        };
        let mut i = 0;
        while i < job.m {
            let rows = ROWS.min(job.m - i);
            // SAFETY: rows i..i + rows < m, depths p0..p0 + depth ≤ k.
            unsafe {
                match rows {
                    6 => pass.tile::<6>(i),
                    5 => pass.tile::<5>(i),
                    4 => pass.tile::<4>(i),
                    3 => pass.tile::<3>(i),
                    2 => pass.tile::<2>(i),
                    _ => pass.tile::<1>(i),
                }
            }
            i += rows;
        }
        if job.k == 0 {
            break;
        }
        p0 += depth;
    }
}

/// One pass of depths `p0..p0 + depth` over `P` panels.
struct Pass<'j, 'a, const P: usize> {
    job: &'j Job<'a>,
    panel: usize,
    p0: usize,
    depth: usize,
    /// The valid columns of each panel.
    masks: [__mmask16; P],
    /// Whether C starts from the job's start (else from the previous pass's sums).
    first: bool,
    relu: bool,
}

impl<const P: usize> Pass<'_, '_, P> {
    /// Rows `row..row + R` × `P` panels of C, in `R · P` registers.
    ///
    /// # Safety
    /// The tile lies inside the asserted extents; AVX-512F is present.
    #[inline(always)]
    #[expect(
        clippy::needless_range_loop,
        reason = "index loops over the constants R and P unroll and keep the sums in \
                  registers; an iterator chain over the 2-D array kept a copy on the stack"
    )]
    unsafe fn tile<const R: usize>(&self, row: usize) {
        let job = self.job;
        // SAFETY (all pointer arithmetic and accesses below): row + R ≤ m; the panels
        // exist in B (whole, zero-padded) and their valid columns of C and of a column
        // bias are masked; p0 + depth ≤ k; as asserted in `multiply_tiled_into`.
        unsafe {
            let c = job.c.add(row * job.ldc + self.panel * PANEL);
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            match job.start.on_pass(self.first) {
                Start::Zero => {}
                Start::Accumulate => {
                    for r in 0..R {
                        for j in 0..P {
                            let at = c.add(r * job.ldc + j * PANEL);
                            acc[r][j] = _mm512_maskz_loadu_ps(self.masks[j], at);
                        }
                    }
                }
                Start::RowBias(bias) => {
                    for r in 0..R {
                        let v = _mm512_set1_ps(bias[row + r]);
                        for j in 0..P {
                            acc[r][j] = v;
                        }
                    }
                }
                Start::AccumulateRowBias(bias) => {
                    for r in 0..R {
                        let v = _mm512_set1_ps(bias[row + r]);
                        for j in 0..P {
                            let at = c.add(r * job.ldc + j * PANEL);
                            acc[r][j] = _mm512_add_ps(_mm512_maskz_loadu_ps(self.masks[j], at), v);
                        }
                    }
                }
                Start::ColumnBias(bias) => {
                    for j in 0..P {
                        let at = bias.as_ptr().add((self.panel + j) * PANEL);
                        let v = _mm512_maskz_loadu_ps(self.masks[j], at);
                        for r in 0..R {
                            acc[r][j] = v;
                        }
                    }
                }
            }
            let a = job.a.add((row / ROWS) * job.tile_stride + self.p0 * ROWS);
            let b = job.b.add((self.panel * job.k + self.p0) * PANEL);
            let panel_stride = job.k * PANEL;
            // The next row tile's A, a few lines per pass of the loop below, where A is
            // weights streamed from memory: the next tile lies `tile_stride` on, too far
            // for the hardware prefetcher to follow from one tile to the next.
            let next = a.wrapping_add(job.tile_stride);
            // The next row tile's C, one line per depth, where this pass starts from a
            // residual in C: written long before, it comes from L3 or memory, and the
            // next tile's first loads would wait for it.
            let residual = matches!(job.start, Start::AccumulateRowBias(_)) && self.first;
            let next_c = c.wrapping_add(R * job.ldc);
            for p in 0..self.depth {
                if residual && p < R * P {
                    let at = next_c.wrapping_add((p / P) * job.ldc + (p % P) * PANEL);
                    _mm_prefetch::<_MM_HINT_T0>(at.cast());
                }
                if job.prefetch_a && p % 4 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(p * ROWS).cast());
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(p * ROWS + 16).cast());
                }
                let mut bv = [_mm512_setzero_ps(); P];
                for j in 0..P {
                    bv[j] = _mm512_loadu_ps(b.add(j * panel_stride + p * PANEL));
                }
                for r in 0..R {
                    let av = _mm512_set1_ps(*a.add(p * ROWS + r));
                    for j in 0..P {
                        acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
                    }
                }
            }
            if self.relu {
                let zero = _mm512_setzero_ps();
                for r in 0..R {
                    for j in 0..P {
                        acc[r][j] = _mm512_max_ps(acc[r][j], zero);
                    }
                }
            }
            for r in 0..R {
                for j in 0..P {
                    let at = c.add(r * job.ldc + j * PANEL);
                    if self.masks[j] == ALL {
                        _mm512_storeu_ps(at, acc[r][j]);
                    } else {
                        _mm512_mask_storeu_ps(at, self.masks[j], acc[r][j]);
                    }
                }
            }
        }
    }
}
