//! Sliding windows over one plane at a time (depthwise convolution, strided max pooling),
//! read as contiguous runs: the plane is copied once into a bordered scratch (split into
//! its even and odd columns at stride 2 across, so every tap still reads a contiguous
//! run), then outputs are reduced 8 columns at a time, [`GROUP`] such chunks at once,
//! every tap of a chunk in registers. Only the outputs kept are computed.
//!
//! Invariant: the scratch's border (padding) is written once, when the scratch is sized
//! ([`Layout::prepare`]); each plane rewrites only the interior.

use super::Loop;

/// Kernel taps the register path takes (7×7 and below).
const MAX_TAPS: usize = 49;

/// Chunks of 8 outputs reduced at once: independent chains, so one tap's adds do not
/// wait on the previous tap's (a single chain measured latency-bound).
const GROUP: usize = 8;
const _: () = assert!(GROUP == 8, "the unrolled sums below name 8 chunks");

/// Output rows per block of the 3×3 path: 6 sums and 9 weights fill 15 of 16 registers.
const ROWS3: usize = 6;

/// What a window reduces to.
#[derive(Clone, Copy)]
pub(super) enum Reduce<'a> {
    /// `bias + Σ weight[t] · tap[t]`, then ReLU when asked (a depthwise convolution).
    Sum {
        weights: &'a [f32],
        bias: f32,
        relu: bool,
    },
    /// The largest tap, NaN losing to a number as in `f32::max` folded from −∞ (max
    /// pooling, border −∞).
    Max,
}

/// How one plane sits in the scratch: `phases` copies (1, or 2 column phases) of
/// `rows × pitch` floats, then slack for the reads of the last chunk; `offsets[t]` is
/// tap t's read position relative to its output's base.
pub(super) struct Layout {
    phases: usize,
    pitch: usize,
    phase_len: usize,
    len: usize,
    offsets: [usize; MAX_TAPS],
    taps: usize,
    /// Base of output row `oy`: `oy · row_step`.
    row_step: usize,
    /// 3×3 at stride and dilation 1 down.
    rows3: bool,
    pads: [(usize, usize); 2],
    /// Input columns (a plane's rows are `input.len() / width`).
    width: usize,
    out_size: [usize; 2],
}

impl Layout {
    /// The layout of a window `kernel` (strides, dilations) over `[h, w]` planes with
    /// `pads`, giving `[oh, ow]` (non-empty) outputs; `None` where the register path does
    /// not apply (strides past 2, more than 49 taps, an empty input).
    pub(super) fn new(
        [kh, kw]: [usize; 2],
        [sh, sw]: [usize; 2],
        [dh, dw]: [usize; 2],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
    ) -> Option<Self> {
        if h == 0 || w == 0 || oh == 0 || ow == 0 || sh > 2 || sw > 2 || kh * kw > MAX_TAPS {
            return None;
        }
        let (rows, width) = (h + pads[0].0 + pads[0].1, w + pads[1].0 + pads[1].1);
        let (phases, pitch) = if sw == 2 {
            (2, width.div_ceil(2))
        } else {
            (1, width)
        };
        let phase_len = rows * pitch;
        let mut offsets = [0; MAX_TAPS];
        for ky in 0..kh {
            for kx in 0..kw {
                let col = kx * dw;
                offsets[ky * kw + kx] = if sw == 2 {
                    (col % 2) * phase_len + ky * dh * pitch + col / 2
                } else {
                    ky * dh * pitch + col
                };
            }
        }
        let taps = kh * kw;
        let row_step = sh * pitch;
        // The last chunk starts at the last row's base + 8·(chunks per row − 1) and reads
        // 8 values past its farthest tap.
        let last = (oh - 1) * row_step + (ow.div_ceil(8) - 1) * 8;
        let reads = last + offsets[..taps].iter().max().copied().unwrap_or(0) + 8;
        Some(Self {
            phases,
            pitch,
            phase_len,
            len: reads.max(phases * phase_len),
            offsets,
            taps,
            row_step,
            rows3: [kh, kw, sh, dh] == [3, 3, 1, 1],
            pads,
            width: w,
            out_size: [oh, ow],
        })
    }

    /// Sizes `scratch` for this layout, its border `border` (0 for a convolution, −∞ for
    /// a max); a scratch already sized keeps its border. A scratch serves one layout only:
    /// another with the same length may put its border where this one's interior was.
    pub(super) fn prepare(&self, scratch: &mut Vec<f32>, border: f32) {
        if scratch.len() != self.len {
            scratch.clear();
            scratch.resize(self.len, border);
        }
    }

    /// One plane: `input` (`[h, w]`) copied into the prepared `scratch`'s interior, then
    /// reduced into `dst` (`[oh, ow]`).
    pub(super) fn run(
        &self,
        input: &[f32],
        scratch: &mut [f32],
        dst: &mut [f32],
        reduce: Reduce<'_>,
    ) {
        super::on_best_cpu(Fill {
            input,
            layout: self,
            scratch: &mut *scratch,
        });
        Chunks {
            src: scratch,
            offsets: &self.offsets[..self.taps],
            rows3: self.rows3,
            row_step: self.row_step,
            ow: self.out_size[1],
            dst: &mut dst[..self.out_size[0] * self.out_size[1]],
            reduce,
        }
        .run();
    }
}

/// One plane's outputs from its prepared scratch: chunk k (row `k / per_row`, columns
/// `8·(k % per_row)..`) reduces `src[base_k + offsets[t]..][..8]` over the taps.
/// A chunk past the row's end writes its extra lanes into the next row's first columns,
/// which that row's first chunk, stored later, overwrites; the plane's last chunk stores
/// only its own lanes.
struct Chunks<'a> {
    src: &'a [f32],
    offsets: &'a [usize],
    /// A 3×3 window at stride and dilation 1 down ([`Chunks::run_rows3_avx2`]).
    rows3: bool,
    row_step: usize,
    ow: usize,
    dst: &'a mut [f32],
    reduce: Reduce<'a>,
}

/// One group of chunks: where each reads (`bases`) and writes (`ats`) and how many are
/// real (`n`; the rest repeat the last: independent work, not stored).
struct Group {
    bases: [usize; GROUP],
    ats: [usize; GROUP],
    n: usize,
}

impl Chunks<'_> {
    fn run(self) {
        #[cfg(target_arch = "x86_64")]
        if super::panels::available() {
            let oh = self.dst.len() / self.ow;
            match self.reduce {
                Reduce::Sum {
                    weights,
                    bias,
                    relu,
                } if self.rows3 && oh >= ROWS3 => {
                    // SAFETY: the CPU has AVX2 and FMA (checked by `available`).
                    unsafe { self.run_rows3_avx2(weights, bias, relu) };
                }
                // SAFETY: the CPU has AVX2 and FMA (checked by `available`).
                _ => unsafe { self.run_avx2() },
            }
            return;
        }
        self.run_portable();
    }

    /// A 3×3 sum at stride 1 down (depthwise 3×3, MobileNetV2's and ShuffleNet's
    /// layers) in blocks of [`ROWS3`] output rows of one column chunk: each input row's
    /// three taps are loaded once and added into every output row that reads them, the 9
    /// weights held in registers; half the loads of the chunk-by-chunk path. Columns
    /// run right to left, so a chunk past its row's end spills only into columns a later
    /// (leftward) chunk rewrites; the plane's last chunk stores only its own lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_rows3_avx2(self, weights: &[f32], bias: f32, relu: bool) {
        use std::arch::x86_64::{
            __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps,
            _mm256_setzero_ps,
        };
        // The reads are those of the chunk-by-chunk path.
        let (per_row, oh) = self.checked_sizes();
        let Self {
            src,
            offsets,
            row_step,
            ow,
            dst,
            ..
        } = self;
        assert!(offsets.len() == 9 && weights.len() == 9 && oh >= ROWS3);
        let across = [offsets[0], offsets[1], offsets[2]];
        let w: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(weights[t]));
        // SAFETY (every `load`): inside the reads checked above.
        let load = |at: usize| unsafe { _mm256_loadu_ps(src.as_ptr().add(at)) };
        for col in (0..per_row).rev() {
            let mut top = 0;
            while top < oh {
                // The last block overlaps the one before (same values stored again).
                let first = top.min(oh - ROWS3);
                let mut acc = [_mm256_set1_ps(bias); ROWS3];
                // Input row `first + i` feeds output row `first + r` through kernel row
                // i − r; spelled out so every index is a constant.
                macro_rules! input_row {
                    ($i:literal) => {{
                        let base = (first + $i) * row_step + col * 8;
                        for (kx, &offset) in across.iter().enumerate() {
                            let v = load(base + offset);
                            macro_rules! feed {
                                ($r:literal) => {
                                    if $i >= $r && $i - $r < 3 {
                                        acc[$r] =
                                            _mm256_fmadd_ps(w[($i - $r) * 3 + kx], v, acc[$r]);
                                    }
                                };
                            }
                            feed!(0);
                            feed!(1);
                            feed!(2);
                            feed!(3);
                            feed!(4);
                            feed!(5);
                        }
                    }};
                }
                input_row!(0);
                input_row!(1);
                input_row!(2);
                input_row!(3);
                input_row!(4);
                input_row!(5);
                input_row!(6);
                input_row!(7);
                if relu {
                    acc = acc.map(|a| _mm256_max_ps(a, _mm256_setzero_ps()));
                }
                for (r, values) in acc.into_iter().enumerate() {
                    store8(dst, (first + r) * ow + col * 8, values);
                }
                top = first + ROWS3;
            }
        }
    }

    /// [`Chunks::run`] on CPUs without AVX2: one chunk at a time.
    fn run_portable(self) {
        let (src, offsets, reduce) = (self.src, self.offsets, self.reduce);
        self.groups(|group, dst| {
            for (&base, &at) in group.bases.iter().zip(&group.ats).take(group.n) {
                let tap = |offset: usize| &src[base + offset..][..8];
                let out = match reduce {
                    Reduce::Sum {
                        weights,
                        bias,
                        relu,
                    } => {
                        let mut out = [bias; 8];
                        for (&offset, &weight) in offsets.iter().zip(weights) {
                            for (sum, value) in out.iter_mut().zip(tap(offset)) {
                                *sum += weight * value;
                            }
                        }
                        if relu {
                            out.iter_mut().for_each(|v| *v = super::fmax(*v, 0.0));
                        }
                        out
                    }
                    Reduce::Max => {
                        let mut out = [f32::NEG_INFINITY; 8];
                        for &offset in offsets {
                            for (best, value) in out.iter_mut().zip(tap(offset)) {
                                *best = super::fmax(*best, *value);
                            }
                        }
                        out
                    }
                };
                let end = (at + 8).min(dst.len());
                copy_short(&mut dst[at..end], &out[..end - at]);
            }
        });
    }

    /// The group's values in AVX2 registers (one FMA or max per tap and chunk), stored
    /// straight from them.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(self) {
        use std::arch::x86_64::{
            __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps,
            _mm256_setzero_ps,
        };
        let (src, offsets, reduce) = (self.src, self.offsets, self.reduce);
        // SAFETY (every `load`): base + offset + 8 ≤ src.len(), checked by `groups`
        // before any group is handed over.
        let load = |at: usize| unsafe { _mm256_loadu_ps(src.as_ptr().add(at)) };
        self.groups(|group, dst| {
            let bases = &group.bases;
            let mut acc: [__m256; GROUP];
            // Spelled out per chunk (constant indices), so the values stay in registers.
            macro_rules! each_chunk {
                ($step:expr) => {{
                    let mut step = $step;
                    step(0);
                    step(1);
                    step(2);
                    step(3);
                    step(4);
                    step(5);
                    step(6);
                    step(7);
                }};
            }
            match reduce {
                Reduce::Sum {
                    weights,
                    bias,
                    relu,
                } => {
                    acc = [_mm256_set1_ps(bias); GROUP];
                    for (&offset, &weight) in offsets.iter().zip(weights) {
                        let weight = _mm256_set1_ps(weight);
                        each_chunk!(|j: usize| {
                            acc[j] = _mm256_fmadd_ps(weight, load(bases[j] + offset), acc[j]);
                        });
                    }
                    if relu {
                        acc = acc.map(|a| _mm256_max_ps(a, _mm256_setzero_ps()));
                    }
                }
                Reduce::Max => {
                    // From −∞, the tap first: `_mm256_max_ps` returns its second operand
                    // where either is NaN, so a NaN tap loses as in `f32::max`.
                    acc = [_mm256_set1_ps(f32::NEG_INFINITY); GROUP];
                    for &offset in offsets {
                        each_chunk!(|j: usize| {
                            acc[j] = _mm256_max_ps(load(bases[j] + offset), acc[j]);
                        });
                    }
                }
            }
            for (j, values) in acc.into_iter().enumerate().take(group.n) {
                store8(dst, group.ats[j], values);
            }
        });
    }

    /// Chunks per row and output rows, once every chunk's reads are checked to lie inside
    /// `src` (the last chunk's farthest tap is the farthest read): the kernels load
    /// through pointers.
    fn checked_sizes(&self) -> (usize, usize) {
        let per_row = self.ow.div_ceil(8);
        let oh = self.dst.len() / self.ow;
        let reach = self.offsets.iter().max().copied().unwrap_or(0) + 8;
        assert!(oh == 0 || (oh - 1) * self.row_step + (per_row - 1) * 8 + reach <= self.src.len());
        (per_row, oh)
    }

    /// Every chunk of the plane, [`GROUP`] at a time, handed to `each` with the plane's
    /// output. Stored in order, a chunk past its row's end writes its extra lanes into
    /// the next row's first columns, which that row's first chunk overwrites later.
    #[inline(always)]
    fn groups(self, mut each: impl FnMut(&Group, &mut [f32])) {
        let (per_row, oh) = self.checked_sizes();
        let Self {
            row_step, ow, dst, ..
        } = self;
        let total = oh * per_row;
        // Chunk k's row and column, stepped (no divisions in the loop: they cost more
        // than a 3×3 chunk's sums).
        let (mut row, mut col) = (0, 0);
        let mut k = 0;
        while k < total {
            let n = (total - k).min(GROUP);
            let mut group = Group {
                bases: [0; GROUP],
                ats: [0; GROUP],
                n,
            };
            for j in 0..n {
                group.bases[j] = row * row_step + col * 8;
                group.ats[j] = row * ow + col * 8;
                col += 1;
                if col == per_row {
                    (row, col) = (row + 1, 0);
                }
            }
            let last = group.bases[n - 1];
            group.bases[n..].fill(last);
            each(&group, dst);
            k += n;
        }
    }
}

/// `dst.copy_from_slice(src)` for a few values, without a call to `memcpy` (whose cost
/// per call dominated planes a few columns wide).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let (dst, src) = (&mut dst[..src.len()], src);
    let mut dst_chunks = dst.chunks_exact_mut(8);
    let mut src_chunks = src.chunks_exact(8);
    for (d, s) in (&mut dst_chunks).zip(&mut src_chunks) {
        let s: &[f32; 8] = s.try_into().expect("8 values");
        d.copy_from_slice(s);
    }
    let (mut d, mut s) = (dst_chunks.into_remainder(), src_chunks.remainder());
    for width in [4, 2, 1] {
        if s.len() >= width {
            d[..width].copy_from_slice(&s[..width]);
            (d, s) = (&mut d[width..], &s[width..]);
        }
    }
}

/// Stores 8 sums at `dst[at..]`, or only those inside `dst` (the plane's last chunk).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
fn store8(dst: &mut [f32], at: usize, values: std::arch::x86_64::__m256) {
    use std::arch::x86_64::_mm256_storeu_ps;
    if at + 8 <= dst.len() {
        // SAFETY: 8 floats inside `dst`.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(at), values) };
    } else {
        let mut last = [0f32; 8];
        // SAFETY: 8 floats into an array of 8.
        unsafe { _mm256_storeu_ps(last.as_mut_ptr(), values) };
        let len = dst.len() - at;
        copy_short(&mut dst[at..], &last[..len]);
    }
}

/// Copies one plane's input into the scratch's interior (the border stays as
/// [`Layout::prepare`] wrote it: only the interior is ever written), split into column
/// phases at stride 2 across.
struct Fill<'a> {
    input: &'a [f32],
    layout: &'a Layout,
    scratch: &'a mut [f32],
}

impl Loop for Fill<'_> {
    #[inline(always)]
    fn run(self) {
        let Self {
            input,
            layout,
            scratch,
        } = self;
        let w = layout.width;
        let (top, left) = (layout.pads[0].0, layout.pads[1].0);
        let pitch = layout.pitch;
        if layout.phases == 1 {
            for (y, row) in input.chunks_exact(w).enumerate() {
                copy_short(&mut scratch[(y + top) * pitch + left..][..w], row);
            }
            return;
        }
        let (even, odd) = scratch.split_at_mut(layout.phase_len);
        // Input column ix is padded column ix + left: phase (ix + left) % 2, at
        // (ix + left) / 2.
        let at = top * pitch + left / 2;
        let (first, second) = if left.is_multiple_of(2) {
            (&mut even[at..], &mut odd[at..])
        } else {
            (&mut odd[at..], &mut even[at + 1..])
        };
        super::phases::deinterleave_rows(input, w, pitch, first, second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both reductions, on the AVX2 path (where the CPU has it) and the portable one,
    /// against the window taken tap by tap: strides 1 and 2, dilation, uneven pads, rows
    /// narrower and wider than a chunk.
    #[test]
    fn both_paths_match_every_window() {
        let cases = [
            ([3, 3], [1, 1], [1, 1], [9, 21], [(1, 1), (1, 1)]),
            ([5, 5], [2, 2], [1, 1], [14, 14], [(2, 2), (2, 2)]),
            ([3, 3], [2, 2], [1, 1], [11, 7], [(1, 0), (0, 1)]),
            ([3, 2], [1, 2], [2, 1], [10, 19], [(2, 1), (1, 0)]),
            ([7, 7], [1, 1], [1, 1], [7, 7], [(3, 3), (3, 3)]),
            // 3×3 at stride 1 down (blocks of rows; the last overlapping), across at
            // stride 2 and dilated, rows narrower than a chunk.
            ([3, 3], [1, 2], [1, 1], [13, 30], [(1, 1), (0, 1)]),
            ([3, 3], [1, 1], [1, 2], [8, 5], [(1, 1), (2, 2)]),
            ([3, 3], [1, 1], [1, 1], [28, 28], [(1, 1), (1, 1)]),
        ];
        for (kernel, stride, dilation, [h, w], pads) in cases {
            let input: Vec<f32> = (0..h * w).map(|v| ((v * 37) % 23) as f32 - 11.0).collect();
            let weights: Vec<f32> = (0..kernel[0] * kernel[1])
                .map(|v| v as f32 * 0.25 - 1.0)
                .collect();
            let out_size = |axis: usize| {
                let (a, b) = pads[axis];
                let padded = [h, w][axis] + a + b;
                (padded - (kernel[axis] - 1) * dilation[axis] - 1) / stride[axis] + 1
            };
            let [oh, ow] = [out_size(0), out_size(1)];
            let layout = Layout::new(kernel, stride, dilation, [h, w], [oh, ow], pads).unwrap();
            let sum = Reduce::Sum {
                weights: &weights,
                bias: 0.5,
                relu: false,
            };
            for (reduce, border) in [(sum, 0.0), (Reduce::Max, f32::NEG_INFINITY)] {
                let mut want = vec![0f32; oh * ow];
                for (i, v) in want.iter_mut().enumerate() {
                    let (oy, ox) = (i / ow, i % ow);
                    let taps = (0..kernel[0]).flat_map(|ky| (0..kernel[1]).map(move |kx| (ky, kx)));
                    let tap = |(ky, kx): (usize, usize)| {
                        let iy = (oy * stride[0] + ky * dilation[0])
                            .checked_sub(pads[0].0)
                            .filter(|i| *i < h);
                        let ix = (ox * stride[1] + kx * dilation[1])
                            .checked_sub(pads[1].0)
                            .filter(|i| *i < w);
                        iy.zip(ix).map_or(border, |(iy, ix)| input[iy * w + ix])
                    };
                    *v = match reduce {
                        Reduce::Sum { bias, .. } => {
                            taps.map(|t| weights[t.0 * kernel[1] + t.1] * tap(t))
                                .sum::<f32>()
                                + bias
                        }
                        Reduce::Max => taps.map(tap).fold(f32::NEG_INFINITY, f32::max),
                    };
                }
                let mut scratch = Vec::new();
                layout.prepare(&mut scratch, border);
                let mut got = vec![f32::NAN; oh * ow];
                layout.run(&input, &mut scratch, &mut got, reduce);
                let mut portable = vec![f32::NAN; oh * ow];
                Chunks {
                    src: &scratch,
                    offsets: &layout.offsets[..layout.taps],
                    rows3: false,
                    row_step: layout.row_step,
                    ow,
                    dst: &mut portable,
                    reduce,
                }
                .run_portable();
                for (i, ((g, p), w)) in got.iter().zip(&portable).zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 1e-4,
                        "{kernel:?} {stride:?} at {i}: {g} vs {w}"
                    );
                    assert!(
                        (p - w).abs() < 1e-4,
                        "{kernel:?} {stride:?} portable at {i}: {p} vs {w}"
                    );
                }
            }
        }
    }
}
