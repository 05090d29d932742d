//! The panel kernel's AVX2 + FMA loops: the register tiles of `Job::run` and the
//! transposing copy of A's rows into tiles.

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_ps, _mm256_broadcast_ss, _mm256_cmpgt_epi32, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_max_ps,
    _mm256_permute2f128_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32,
    _mm256_setzero_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
};

use super::{DEPTH, Job, PANEL, ROWS, Start};

/// Lane masks for the first `cols` of a panel's 16 columns.
#[derive(Clone, Copy)]
struct Columns {
    all: bool,
    low: __m256i,
    high: __m256i,
}

/// Copies depths `0..8·⌊k/8⌋` of up to `ROWS` rows (`None`: zeros) into `tile`
/// (`[p][row]`): an 8 × 8 transpose (two rows of zeros) per 8 depths, each column
/// stored whole over the previous one's two spare lanes, the last masked. Returns the
/// depths copied.
///
/// # Safety
/// AVX2 is present; every row holds `k` values; `tile` holds `ROWS · k`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_rows(rows: &[Option<&[f32]>; ROWS], k: usize, tile: &mut [f32]) -> usize {
    const { assert!(ROWS == 6) };
    assert!(tile.len() >= ROWS * k && rows.iter().flatten().all(|r| r.len() >= k));
    let six = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(6),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let zero = _mm256_setzero_ps();
    let out = tile.as_mut_ptr();
    let mut p = 0;
    while p + 8 <= k {
        // SAFETY: p + 8 ≤ k values read from each row; stores end at (p + 8) · ROWS ≤
        // ROWS · k (the last one masked to 6 lanes).
        unsafe {
            let v: [__m256; ROWS] = std::array::from_fn(|r| {
                rows[r].map_or(zero, |row| _mm256_loadu_ps(row.as_ptr().add(p)))
            });
            let t0 = _mm256_unpacklo_ps(v[0], v[1]);
            let t1 = _mm256_unpackhi_ps(v[0], v[1]);
            let t2 = _mm256_unpacklo_ps(v[2], v[3]);
            let t3 = _mm256_unpackhi_ps(v[2], v[3]);
            let t4 = _mm256_unpacklo_ps(v[4], v[5]);
            let t5 = _mm256_unpackhi_ps(v[4], v[5]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, zero);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, zero);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, zero);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, zero);
            let columns = [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
            ];
            let base = out.add(p * ROWS);
            for (j, column) in columns.into_iter().enumerate() {
                _mm256_storeu_ps(base.add(j * ROWS), column);
            }
            let last = _mm256_permute2f128_ps::<0x31>(s3, s7);
            _mm256_maskstore_ps(base.add(7 * ROWS), six, last);
        }
        p += 8;
    }
    p
}

/// # Safety
/// As [`Job::run`], on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run(job: &Job<'_>, first: usize, end: usize) {
    for panel in first..end {
        let cols = PANEL.min(job.n - panel * PANEL);
        let count = _mm256_set1_epi32(i32::try_from(cols).unwrap_or(16));
        let columns = Columns {
            all: cols == PANEL,
            low: _mm256_cmpgt_epi32(count, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            high: _mm256_cmpgt_epi32(count, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15)),
        };
        let mut p0 = 0;
        while p0 < job.k.max(1) {
            let depth = DEPTH.min(job.k - p0);
            let first_pass = p0 == 0;
            let last_pass = p0 + depth >= job.k;
            let mut i = 0;
            while i < job.m {
                let rows = ROWS.min(job.m - i);
                let tile = Tile {
                    job,
                    row: i,
                    panel,
                    p0,
                    depth,
                    columns,
                    first_pass,
                    relu: job.relu && last_pass,
                };
                // SAFETY: rows i..i+rows < m, depths p0..p0+depth ≤ k.
                unsafe {
                    match rows {
                        6 => tile.run::<6>(),
                        5 => tile.run::<5>(),
                        4 => tile.run::<4>(),
                        3 => tile.run::<3>(),
                        2 => tile.run::<2>(),
                        _ => tile.run::<1>(),
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
}

struct Tile<'j, 'a> {
    job: &'j Job<'a>,
    row: usize,
    panel: usize,
    p0: usize,
    depth: usize,
    columns: Columns,
    first_pass: bool,
    relu: bool,
}

impl Tile<'_, '_> {
    /// `R` rows × 16 columns of C over `depth` rows of B, in 2·R registers.
    ///
    /// # Safety
    /// The tile lies inside the asserted extents; AVX2 and FMA are present.
    #[inline(always)]
    unsafe fn run<const R: usize>(&self) {
        let job = self.job;
        let cols = self.columns;
        // SAFETY (all pointer arithmetic and accesses below): row + R ≤ m, the panel's
        // valid columns are masked, p0 + depth ≤ k, as asserted in `multiply`.
        unsafe {
            let c = job.c.add(self.row * job.ldc + self.panel * PANEL);
            let mut low = [_mm256_setzero_ps(); R];
            let mut high = [_mm256_setzero_ps(); R];
            match job.start.on_pass(self.first_pass) {
                Start::Zero => {}
                Start::Accumulate => {
                    for r in 0..R {
                        (low[r], high[r]) = load(c.add(r * job.ldc), cols);
                    }
                }
                Start::RowBias(bias) => {
                    for r in 0..R {
                        low[r] = _mm256_set1_ps(bias[self.row + r]);
                        high[r] = low[r];
                    }
                }
                Start::AccumulateRowBias(bias) => {
                    for r in 0..R {
                        let v = _mm256_set1_ps(bias[self.row + r]);
                        let (l, h) = load(c.add(r * job.ldc), cols);
                        (low[r], high[r]) = (_mm256_add_ps(l, v), _mm256_add_ps(h, v));
                    }
                }
                Start::ColumnBias(bias) => {
                    let (l, h) = load(bias.as_ptr().add(self.panel * PANEL), cols);
                    low = [l; R];
                    high = [h; R];
                }
            }
            let a = job
                .a
                .add((self.row / ROWS) * job.tile_stride + self.p0 * ROWS);
            let mut b = job.b.add((self.panel * job.k + self.p0) * PANEL);
            for p in 0..self.depth {
                let b_low = _mm256_loadu_ps(b);
                let b_high = _mm256_loadu_ps(b.add(8));
                for r in 0..R {
                    let av = _mm256_broadcast_ss(&*a.add(p * ROWS + r));
                    low[r] = _mm256_fmadd_ps(av, b_low, low[r]);
                    high[r] = _mm256_fmadd_ps(av, b_high, high[r]);
                }
                b = b.add(PANEL);
            }
            if self.relu {
                let zero = _mm256_setzero_ps();
                for r in 0..R {
                    low[r] = _mm256_max_ps(low[r], zero);
                    high[r] = _mm256_max_ps(high[r], zero);
                }
            }
            for r in 0..R {
                store(c.add(r * job.ldc), cols, low[r], high[r]);
            }
        }
    }
}

/// The valid columns of 16 at `at`.
#[inline(always)]
unsafe fn load(at: *const f32, cols: Columns) -> (__m256, __m256) {
    // SAFETY: the masks cover only columns inside the row.
    unsafe {
        if cols.all {
            (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)))
        } else {
            (
                _mm256_maskload_ps(at, cols.low),
                _mm256_maskload_ps(at.add(8), cols.high),
            )
        }
    }
}

#[inline(always)]
unsafe fn store(at: *mut f32, cols: Columns, low: __m256, high: __m256) {
    // SAFETY: the masks cover only columns inside the row.
    unsafe {
        if cols.all {
            _mm256_storeu_ps(at, low);
            _mm256_storeu_ps(at.add(8), high);
        } else {
            _mm256_maskstore_ps(at, cols.low, low);
            _mm256_maskstore_ps(at.add(8), cols.high, high);
        }
    }
}
