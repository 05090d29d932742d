//! Convolutions with few input channels (a network's stem: 3 channels, 3×3, stride 2)
//! computed directly. As im2col + GEMM such a layer is a product of depth 27 whose
//! unfolding costs more than the product; here each output row is summed tap by tap from
//! the input split into its stride phases, 6 (or 4) output channels × 16 columns at a
//! time (× 64 columns on AVX-512), in bands of output rows that each split only the
//! input rows they read (a band's inputs stay in L1). Threads take bands.

use super::Conv2d;

/// Input channels at most, for the direct path.
pub(super) const MAX_CHANNELS: usize = 4;
/// Output columns per register block.
const COLUMNS: usize = 16;
/// Output channels per register block: 6 × 2 registers of columns is 12 independent
/// accumulators, enough to cover the FMA latency (4 × 2 took 1.09× as long on a 3→24
/// stem at 224×224); blocks of 4 where 6 would leave threads or lanes idle
/// ([`block_channels`]).
const WIDE_BLOCK: usize = 6;
const NARROW_BLOCK: usize = 4;

/// The channel block for `cout` channels: the one that sums the fewest channels (padded
/// to whole blocks), blocks of 4 costing 1.1× as much a channel (8 channels: 2 blocks of
/// 4, where blocks of 6 would sum 12).
fn block_channels(cout: usize) -> usize {
    let summed = |block: usize| cout.div_ceil(block) * block;
    if summed(WIDE_BLOCK) * 10 <= summed(NARROW_BLOCK) * 11 {
        WIDE_BLOCK
    } else {
        NARROW_BLOCK
    }
}

impl Conv2d {
    /// Whether [`Conv2d::run_direct`] takes this layer.
    pub(super) fn direct_fits(&self) -> bool {
        self.groups == 1
            && self.in_channels <= MAX_CHANNELS
            && self.dilation == [1, 1]
            && self.stride.iter().all(|s| (1..=2).contains(s))
            && self.kernel.iter().all(|k| (1..=7).contains(k))
            && super::panels::available()
    }

    /// One image `[c, h, w]` into `out` `[cout, oh, ow]`, in bands of output rows: each
    /// band splits only the input rows it reads (a few KB, which stay in L1 while every
    /// channel block of a column block is summed); threads take bands.
    pub(super) fn run_direct(
        &self,
        input: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let (cin, cout) = (self.in_channels, self.out_channels);
        if oh == 0 || ow == 0 || cout == 0 {
            return;
        }
        // Phase `p` of a padded row holds its columns `j·sw + p`, so tap `kx` of output
        // column x is phase `kx % sw` at `x + kx / sw`: contiguous in x. Rows are long
        // enough for the last block's reads past `ow` (AVX-512 blocks: 2 · COLUMNS).
        let row_len = (w + pads[1].0 + pads[1].1)
            .div_ceil(sw)
            .max(ow.next_multiple_of(2 * COLUMNS) + kw);
        let threads = crate::engine::threads::ways().max(1);
        let band = BAND_ROWS.min(oh.div_ceil(threads)).max(1);
        let band_in_rows = (band - 1) * sh + kh;
        let plane = band_in_rows * row_len;
        // Taps as (offset into a band's phases for its output (0, 0), weight column), and
        // the weights transposed to `[tap][cout]` so a block's channels are adjacent.
        let mut taps = Vec::with_capacity(cin * kh * kw);
        for c in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    taps.push(((kx % sw) * cin + c) * plane + ky * row_len + kx / sw);
                }
            }
        }
        let macs = cout.saturating_mul(oh * ow).saturating_mul(taps.len());
        let parallel = macs >= super::PARALLEL_MACS && threads > 1 && oh > 1;
        let block = block_channels(cout);
        // Padded to whole blocks of channels, zeros past `cout`.
        let stride = cout.next_multiple_of(block);
        let mut weights = vec![0f32; taps.len() * stride];
        for (t, row) in weights.chunks_exact_mut(stride).enumerate() {
            for (o, v) in row.iter_mut().enumerate().take(cout) {
                *v = self.weight[o * taps.len() + t];
            }
        }
        let layer = Band {
            conv: self,
            input,
            size: [h, w],
            pads,
            row_len,
            plane,
            taps: &taps,
            weights: &weights,
            out_size: [oh, ow],
            out: Output(out.as_mut_ptr(), out.len()),
            block,
        };
        // Zeroed once: the columns of padding are never written, rows of padding are
        // cleared band by band.
        let bands = oh.div_ceil(band);
        let run_band = |phases: &mut Vec<f32>, b: usize| {
            phases.resize(sw * cin * plane, 0.0);
            layer.run(phases, b * band..oh.min((b + 1) * band), 0..cout);
        };
        if parallel {
            // Threads take bands of output rows, every channel of them: whole blocks of
            // channels on every thread (split by channels, 64 channels on two threads
            // left one thread 6 blocks of 6 against 5, or blocks of 4, with fewer
            // accumulators).
            // One run of consecutive bands per thread, each with its own phases buffer.
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            let per = bands.div_ceil(threads);
            (0..bands.div_ceil(per)).into_par_iter().for_each(|part| {
                let mut phases = Vec::new();
                (part * per..bands.min((part + 1) * per)).for_each(|b| run_band(&mut phases, b));
            });
        } else {
            let mut phases = Vec::new();
            (0..bands).for_each(|b| run_band(&mut phases, b));
        }
    }
}

/// Output rows per band.
const BAND_ROWS: usize = 8;

/// The output image `[cout, oh, ow]` as a pointer and its length: threads write disjoint
/// output rows of it (every channel of a band), each write checked against the length.
#[derive(Clone, Copy)]
struct Output(*mut f32, usize);
// SAFETY: threads write disjoint rows, through `Output::row` only.
unsafe impl Send for Output {}
// SAFETY: as above.
unsafe impl Sync for Output {}

impl Output {
    /// The address of `len` output floats at `offset`, checked to lie inside the image. The
    /// caller writes only pixels of its own rows there.
    fn row(self, offset: usize, len: usize) -> *mut f32 {
        assert!(
            offset + len <= self.1,
            "direct convolution: output row out of range"
        );
        // SAFETY: in bounds (checked above).
        unsafe { self.0.add(offset) }
    }
}

/// One body for [`Band::sum_avx2`] and [`Band::sum_avx512`]: the same blocks of two
/// registers of columns × `CH` channels, in the register width and with the
/// intrinsics given (a generic over register types would not inline the intrinsics into
/// each `target_feature` function).
macro_rules! sum_blocks {
    (
        $(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal,
        $zero:ident, $splat:ident, $load:ident, $fma:ident, $max:ident,
        $store:ident, $store_first:ident
    ) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name<const CH: usize>(
            &self,
            phases: &[f32],
            rows: std::ops::Range<usize>,
            channels: std::ops::Range<usize>,
        ) {
            #[allow(clippy::wildcard_imports, reason = "the intrinsics the macro names")]
            use std::arch::x86_64::*;
            const LANES: usize = $lanes;
            const BLOCK: usize = 2 * LANES;
            let [oh, ow] = self.out_size;
            let conv = self.conv;
            let cout = conv.out_channels;
            let stride = cout.next_multiple_of(CH);
            let row_step = conv.stride[0] * self.row_len;
            for y in rows.clone() {
                let origin = (y - rows.start) * row_step;
                for x0 in (0..ow).step_by(BLOCK) {
                    let valid = BLOCK.min(ow - x0);
                    for first in channels.clone().step_by(CH) {
                        let count = CH.min(channels.end - first);
                        let (mut lows, mut highs) = ([$zero(); CH], [$zero(); CH]);
                        for j in 0..count {
                            let b = $splat(conv.bias[first + j]);
                            lows[j] = b;
                            highs[j] = b;
                        }
                        for (t, &offset) in self.taps.iter().enumerate() {
                            // Bounds-checked slices; the loads stay inside them.
                            let src = &phases[origin + offset + x0..][..BLOCK];
                            let w = &self.weights[t * stride + first..][..CH];
                            // SAFETY: each load reads LANES floats inside `src`.
                            let (low, high) =
                                unsafe { ($load(src.as_ptr()), $load(src.as_ptr().add(LANES))) };
                            for j in 0..CH {
                                let wv = $splat(w[j]);
                                lows[j] = $fma(wv, low, lows[j]);
                                highs[j] = $fma(wv, high, highs[j]);
                            }
                        }
                        for j in 0..count {
                            let (mut low, mut high) = (lows[j], highs[j]);
                            if conv.relu {
                                low = $max(low, $zero());
                                high = $max(high, $zero());
                            }
                            let at = ((first + j) * oh + y) * ow + x0;
                            let dst = self.out.row(at, valid);
                            // SAFETY: `row` checked `valid` floats at `dst`, and this thread
                            // owns them; the second register's address is formed only when
                            // it has valid lanes.
                            unsafe {
                                if valid <= LANES {
                                    $store_first(dst, low, valid);
                                } else {
                                    $store(dst, low);
                                    $store_first(dst.add(LANES), high, valid - LANES);
                                }
                            }
                        }
                    }
                }
            }
        }
    };
}

/// Stores the first `n` (1..=8) lanes of `v` at `at`.
///
/// # Safety
/// AVX2 is present; `n` floats at `at` are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_first_avx2(at: *mut f32, v: std::arch::x86_64::__m256, n: usize) {
    use std::arch::x86_64::_mm256_storeu_ps;
    // SAFETY: a whole register where it fits, else through a stack copy of `n` floats.
    unsafe {
        if n >= 8 {
            _mm256_storeu_ps(at, v);
        } else {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), at, n);
        }
    }
}

/// Stores the first `n` (1..=16) lanes of `v` at `at`, masked.
///
/// # Safety
/// AVX-512F is present; `n` floats at `at` are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_first_avx512(at: *mut f32, v: std::arch::x86_64::__m512, n: usize) {
    use std::arch::x86_64::_mm512_mask_storeu_ps;
    let lanes = if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
    // SAFETY: the mask enables only the `n` writable floats.
    unsafe { _mm512_mask_storeu_ps(at, lanes, v) };
}

/// A block of output columns: row `y`, columns `x0..x0 + valid`, whose inputs start at
/// `origin` in a band's phases.
struct Columns {
    y: usize,
    x0: usize,
    valid: usize,
    origin: usize,
}

/// What every band of one layer shares.
struct Band<'a> {
    conv: &'a Conv2d,
    input: &'a [f32],
    size: [usize; 2],
    pads: [(usize, usize); 2],
    row_len: usize,
    /// Floats per phase and channel in a band's buffer.
    plane: usize,
    taps: &'a [usize],
    /// `[tap][cout]`, `cout` rounded up to whole blocks.
    weights: &'a [f32],
    out_size: [usize; 2],
    out: Output,
    /// Output channels per register block, `WIDE_BLOCK` or `NARROW_BLOCK`.
    block: usize,
}

impl Band<'_> {
    /// Output rows `rows` of output channels `channels`: split the input rows they read
    /// into `phases`, then sum.
    fn run(
        &self,
        phases: &mut [f32],
        rows: std::ops::Range<usize>,
        channels: std::ops::Range<usize>,
    ) {
        self.split(phases, &rows);
        #[cfg(target_arch = "x86_64")]
        match (super::panels::wide(), self.block == WIDE_BLOCK) {
            // SAFETY: the CPU has AVX-512F.
            (true, true) => unsafe { self.sum_wide::<WIDE_BLOCK>(phases, rows, channels) },
            // SAFETY: as above.
            (true, false) => unsafe { self.sum_wide::<NARROW_BLOCK>(phases, rows, channels) },
            // SAFETY: `direct_fits` admitted this layer only on a CPU with AVX2 and FMA.
            (false, true) => unsafe { self.sum_avx2::<WIDE_BLOCK>(phases, rows, channels) },
            // SAFETY: as above.
            (false, false) => unsafe { self.sum_avx2::<NARROW_BLOCK>(phases, rows, channels) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        drop((phases, rows, channels));
    }

    /// The padded input rows of output rows `rows`, split into their stride phases:
    /// `[phase][channel][row of the band][row_len]`.
    fn split(&self, phases: &mut [f32], rows: &std::ops::Range<usize>) {
        let [h, w] = self.size;
        let [sh, sw] = self.conv.stride;
        let cin = self.conv.in_channels;
        let (top, left) = (self.pads[0].0, self.pads[1].0);
        let in_rows = (rows.len() - 1) * sh + self.conv.kernel[0];
        for c in 0..cin {
            for r in 0..in_rows {
                let padded = rows.start * sh + r;
                let row_at = |phase: usize| (phase * cin + c) * self.plane + r * self.row_len;
                let Some(iy) = padded.checked_sub(top).filter(|&iy| iy < h) else {
                    for phase in 0..sw {
                        phases[row_at(phase)..][..self.row_len].fill(0.0);
                    }
                    continue;
                };
                let row = &self.input[(c * h + iy) * w..][..w];
                if sw == 2 {
                    // Input column ix is padded column ix + left: phase (ix + left) % 2 at
                    // (ix + left) / 2.
                    let at = row_at(0) + left / 2;
                    let (phase0, phase1) = phases.split_at_mut(cin * self.plane);
                    if left.is_multiple_of(2) {
                        super::phases::deinterleave(row, &mut phase0[at..], &mut phase1[at..]);
                    } else {
                        super::phases::deinterleave(row, &mut phase1[at..], &mut phase0[at + 1..]);
                    }
                    if w % 2 == 1 {
                        let col = w - 1 + left;
                        phases[row_at(col % 2) + col / 2] = row[w - 1];
                    }
                    continue;
                }
                for phase in 0..sw {
                    // Padded columns j·sw + phase, input columns j·sw + phase − left.
                    let j0 = left.saturating_sub(phase).div_ceil(sw);
                    let Some(start) = (j0 * sw + phase).checked_sub(left) else {
                        continue;
                    };
                    if start >= w {
                        continue;
                    }
                    let dst = &mut phases[row_at(phase) + j0..];
                    for (d, v) in dst.iter_mut().zip(row[start..].iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
    }

    sum_blocks!(
        /// Output rows `rows` of every channel, 16 columns (two AVX2 registers) × `CH`
        /// channels at a time: a column block's inputs are read once from L1 for all its
        /// channel blocks.
        ///
        /// # Safety
        /// The CPU has AVX2 and FMA.
        sum_avx2, "avx2,fma", 8,
        _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_max_ps,
        _mm256_storeu_ps, store_first_avx2
    );

    /// Output rows `rows` of channels `channels` on AVX-512: blocks of up to 64 columns
    /// (4 registers) × `CH` channels, 24 accumulators at 6 channels, so each tap's 4 loads
    /// of input and 6 of weights feed 24 FMAs (the AVX2 layout's 2 registers fed 12, and
    /// a 112-column row took 4 blocks of 32 where this takes 64 + 48).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_wide<const CH: usize>(
        &self,
        phases: &[f32],
        rows: std::ops::Range<usize>,
        channels: std::ops::Range<usize>,
    ) {
        const WIDTH: usize = 4 * COLUMNS;
        let ow = self.out_size[1];
        let row_step = self.conv.stride[0] * self.row_len;
        for first in channels.clone().step_by(CH) {
            let channels = first..channels.end.min(first + CH);
            for y in rows.clone() {
                let origin = (y - rows.start) * row_step;
                for x0 in (0..ow).step_by(WIDTH) {
                    let at = Columns {
                        y,
                        x0,
                        valid: WIDTH.min(ow - x0),
                        origin,
                    };
                    // SAFETY: the CPU has AVX-512F (the caller's promise).
                    unsafe {
                        match at.valid.div_ceil(COLUMNS) {
                            4 => self.wide_block::<CH, 4>(phases, &at, channels.clone()),
                            3 => self.wide_block::<CH, 3>(phases, &at, channels.clone()),
                            2 => self.wide_block::<CH, 2>(phases, &at, channels.clone()),
                            _ => self.wide_block::<CH, 1>(phases, &at, channels.clone()),
                        }
                    }
                }
            }
        }
    }

    /// `R` registers of columns at `at` × every block of `CH` channels in `channels`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `at.valid` ≤ `R` · 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[expect(
        clippy::needless_range_loop,
        reason = "index loops over the constants CH and R unroll and keep the sums in \
                  registers"
    )]
    unsafe fn wide_block<const CH: usize, const R: usize>(
        &self,
        phases: &[f32],
        at: &Columns,
        channels: std::ops::Range<usize>,
    ) {
        use std::arch::x86_64::{
            __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps, _mm512_set1_ps,
            _mm512_setzero_ps,
        };
        let [oh, ow] = self.out_size;
        let conv = self.conv;
        let stride = conv.out_channels.next_multiple_of(CH);
        for first in channels.clone().step_by(CH) {
            let count = CH.min(channels.end - first);
            let mut acc = [[_mm512_setzero_ps(); R]; CH];
            for j in 0..count {
                acc[j] = [_mm512_set1_ps(conv.bias[first + j]); R];
            }
            for (t, &offset) in self.taps.iter().enumerate() {
                // Bounds-checked slices; the loads stay inside them.
                let src = &phases[at.origin + offset + at.x0..][..R * COLUMNS];
                let w = &self.weights[t * stride + first..][..CH];
                let mut v = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    // SAFETY: 16 floats at r · 16 lie inside `src`.
                    v[r] = unsafe { _mm512_loadu_ps(src.as_ptr().add(r * COLUMNS)) };
                }
                for j in 0..CH {
                    let wv = _mm512_set1_ps(w[j]);
                    for r in 0..R {
                        acc[j][r] = _mm512_fmadd_ps(wv, v[r], acc[j][r]);
                    }
                }
            }
            for j in 0..count {
                let row = ((first + j) * oh + at.y) * ow + at.x0;
                let dst = self.out.row(row, at.valid);
                for r in 0..R {
                    let lanes = at.valid.saturating_sub(r * COLUMNS).min(COLUMNS);
                    let mut v: __m512 = acc[j][r];
                    if conv.relu {
                        v = _mm512_max_ps(v, _mm512_setzero_ps());
                    }
                    // SAFETY: `row` checked `valid` floats at `dst`, this thread owns
                    // them, and the store writes lanes r · 16 .. r · 16 + lanes of them
                    // (R · 16 ≥ valid, so lanes ≥ 1).
                    unsafe { store_first_avx512(dst.add(r * COLUMNS), v, lanes) };
                }
            }
        }
    }
}
