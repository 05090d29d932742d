//! Depthwise convolution (one input and one output channel per group), computed
//! directly rather than as many one-row GEMMs.
//!
//! Per channel plane: the input is copied once into a zero-bordered scratch (split into
//! its even and odd columns at stride 2 across, so every tap still reads a contiguous
//! run), then outputs are summed 8 columns at a time, [`GROUP`] such chunks at once, every
//! tap of a chunk in registers. Only the outputs kept are computed.

use super::{Conv2d, Dense, Loop, PARALLEL_MACS, bias_relu};

/// Kernel taps the register path takes (7×7 and below).
const MAX_TAPS: usize = 49;

/// Chunks of 8 outputs summed at once: independent add chains, so one tap's adds do not
/// wait on the previous tap's (a single chain measured latency-bound).
const GROUP: usize = 8;
const _: () = assert!(GROUP == 8, "the unrolled sums below name 8 chunks");

/// How one plane sits in the scratch: `planes` copies (1, or 2 column phases) of
/// `rows × pitch` floats, then slack for the reads of the last chunk; `offsets[t]` is
/// tap t's read position relative to its output's base.
struct Layout {
    phases: usize,
    pitch: usize,
    phase_len: usize,
    len: usize,
    offsets: [usize; MAX_TAPS],
    taps: usize,
    /// Base of output row `oy`: `oy · row_step`.
    row_step: usize,
}

impl Layout {
    fn new(
        conv: &Conv2d,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
    ) -> Self {
        let [kh, kw] = conv.kernel;
        let [sh, sw] = conv.stride;
        let [dh, dw] = conv.dilation;
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
        Self {
            phases,
            pitch,
            phase_len,
            len: reads.max(phases * phase_len),
            offsets,
            taps,
            row_step,
        }
    }
}

/// One channel's outputs from its prepared scratch: chunk k (row `k / per_row`, columns
/// `8·(k % per_row)..`) sums `weight[t] · src[base_k + offsets[t]..][..8]` over the taps.
/// A chunk past the row's end writes its extra lanes into the next row's first columns,
/// which that row's first chunk, stored later, overwrites; the plane's last chunk stores
/// only its own lanes.
struct Chunks<'a> {
    src: &'a [f32],
    offsets: &'a [usize],
    weights: &'a [f32],
    row_step: usize,
    ow: usize,
    dst: &'a mut [f32],
    bias: f32,
    relu: bool,
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
            // SAFETY: the CPU has AVX2 and FMA (checked by `available`).
            unsafe { self.run_avx2() };
            return;
        }
        let (src, offsets, weights, bias, relu) =
            (self.src, self.offsets, self.weights, self.bias, self.relu);
        self.groups(|group, dst| {
            for (&base, &at) in group.bases.iter().zip(&group.ats).take(group.n) {
                let mut sums = [bias; 8];
                for (&offset, &weight) in offsets.iter().zip(weights) {
                    let values = &src[base + offset..][..8];
                    for (sum, value) in sums.iter_mut().zip(values) {
                        *sum += weight * value;
                    }
                }
                if relu {
                    sums.iter_mut().for_each(|v| *v = super::fmax(*v, 0.0));
                }
                let end = (at + 8).min(dst.len());
                copy_short(&mut dst[at..end], &sums[..end - at]);
            }
        });
    }

    /// The group's sums in AVX2 registers, one FMA per tap and chunk, stored straight
    /// from them.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(self) {
        use std::arch::x86_64::{
            __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps,
            _mm256_setzero_ps, _mm256_storeu_ps,
        };
        let (src, offsets, weights, bias, relu) =
            (self.src, self.offsets, self.weights, self.bias, self.relu);
        self.groups(|group, dst| {
            let bases = &group.bases;
            let mut acc: [__m256; GROUP] = [_mm256_set1_ps(bias); GROUP];
            for (&offset, &weight) in offsets.iter().zip(weights) {
                let weight = _mm256_set1_ps(weight);
                // Spelled out per chunk (constant indices), so the sums stay in registers.
                macro_rules! each_chunk {
                    ($($j:literal)*) => {$(
                        // SAFETY: base + offset + 8 ≤ src.len(), checked by `groups`
                        // before any group is summed.
                        let values = unsafe { _mm256_loadu_ps(src.as_ptr().add(bases[$j] + offset)) };
                        acc[$j] = _mm256_fmadd_ps(weight, values, acc[$j]);
                    )*};
                }
                each_chunk!(0 1 2 3 4 5 6 7);
            }
            if relu {
                acc = acc.map(|a| _mm256_max_ps(a, _mm256_setzero_ps()));
            }
            for (j, sums) in acc.into_iter().enumerate().take(group.n) {
                let at = group.ats[j];
                if at + 8 <= dst.len() {
                    // SAFETY: 8 floats inside `dst`.
                    unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(at), sums) };
                } else {
                    let mut last = [0f32; 8];
                    // SAFETY: 8 floats into an array of 8.
                    unsafe { _mm256_storeu_ps(last.as_mut_ptr(), sums) };
                    let len = dst.len() - at;
                    copy_short(&mut dst[at..], &last[..len]);
                }
            }
        });
    }

    /// Every chunk of the plane, [`GROUP`] at a time, handed to `each` with the plane's
    /// output. Stored in order, a chunk past its row's end writes its extra lanes into
    /// the next row's first columns, which that row's first chunk overwrites later.
    #[inline(always)]
    fn groups(self, mut each: impl FnMut(&Group, &mut [f32])) {
        let Self {
            src,
            offsets,
            row_step,
            ow,
            dst,
            ..
        } = self;
        let per_row = ow.div_ceil(8);
        let oh = dst.len() / ow;
        let total = oh * per_row;
        let reach = offsets.iter().max().copied().unwrap_or(0) + 8;
        // Every chunk's reads lie below the last chunk's: checked once, here.
        assert!(total == 0 || (oh - 1) * row_step + (per_row - 1) * 8 + reach <= src.len());
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

/// Copies one channel's input into the scratch's interior (the border stays zero: only
/// the interior is ever written), split into column phases at stride 2 across.
struct Fill<'a> {
    input: &'a [f32],
    w: usize,
    pads: [(usize, usize); 2],
    layout: &'a Layout,
    scratch: &'a mut [f32],
}

impl Loop for Fill<'_> {
    #[inline(always)]
    fn run(self) {
        let Self {
            input,
            w,
            pads,
            layout,
            scratch,
        } = self;
        let (top, left) = (pads[0].0, pads[1].0);
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

impl Conv2d {
    /// Depthwise convolution (one input and one output channel per group). Channels
    /// spread over the intra-op pool when the layer is large enough.
    pub(super) fn run_depthwise(
        &self,
        x: &Dense,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let channels = self.out_channels;
        let plane = oh * ow;
        if plane == 0 {
            return;
        }
        let fast = h > 0 && w > 0 && sh <= 2 && sw <= 2 && kh * kw <= MAX_TAPS;
        let layout = fast.then(|| Layout::new(self, [h, w], [oh, ow], pads));
        let one = |index: usize, dst: &mut [f32], scratch: &mut Vec<f32>| {
            let c = index % channels;
            let input = &x.data[index * h * w..][..h * w];
            let weights = &self.weight[c * kh * kw..][..kh * kw];
            match &layout {
                Some(layout) => {
                    if scratch.len() != layout.len {
                        scratch.clear();
                        scratch.resize(layout.len, 0.0);
                    }
                    super::on_best_cpu(Fill {
                        input,
                        w,
                        pads,
                        layout,
                        scratch,
                    });
                    Chunks {
                        src: scratch,
                        offsets: &layout.offsets[..layout.taps],
                        weights,
                        row_step: layout.row_step,
                        ow,
                        dst,
                        bias: self.bias[c],
                        relu: self.relu,
                    }
                    .run();
                }
                None => self.depthwise_plain(input, weights, [h, w], [oh, ow], pads, dst, c),
            }
        };
        let work = out.len().saturating_mul(kh * kw);
        if work >= PARALLEL_MACS && crate::engine::threads::ways() > 1 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            out.par_chunks_mut(plane).enumerate().for_each_init(
                Vec::new,
                |scratch, (index, dst)| {
                    one(index, dst, scratch);
                },
            );
        } else {
            let mut scratch = Vec::new();
            for (index, dst) in out.chunks_mut(plane).enumerate() {
                one(index, dst, &mut scratch);
            }
        }
    }

    /// One channel of the layers the register path does not take (strides past 2,
    /// kernels past 7×7, empty inputs): per tap, a scaled input row added into each
    /// output row.
    #[expect(
        clippy::too_many_arguments,
        reason = "one plane of a convolution: its data, sizes, pads and channel"
    )]
    fn depthwise_plain(
        &self,
        input: &[f32],
        weight: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        dst: &mut [f32],
        c: usize,
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        dst.fill(0.0);
        for ky in 0..kh {
            for kx in 0..kw {
                let wv = weight[ky * kw + kx];
                // Output columns whose tap falls inside the row: ox·sw + kx·dw - left ∈ [0, w).
                let shift = kx * dw;
                let first = pads[1].0.saturating_sub(shift).div_ceil(sw);
                let last = (w + pads[1].0).saturating_sub(shift).div_ceil(sw).min(ow);
                if first >= last {
                    continue;
                }
                for oy in 0..oh {
                    let Some(iy) = (oy * sh + ky * dh).checked_sub(pads[0].0) else {
                        continue;
                    };
                    if iy >= h {
                        continue;
                    }
                    let row = &input[iy * w..][..w];
                    let dst_row = &mut dst[oy * ow..][..ow];
                    let start = first * sw + shift - pads[1].0;
                    for (i, d) in dst_row[first..last].iter_mut().enumerate() {
                        *d += wv * row[start + i * sw];
                    }
                }
            }
        }
        bias_relu(dst, self.bias[c], self.relu);
    }
}
