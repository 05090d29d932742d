//! Convolutions with few input channels (a network's stem: 3 channels, 3×3, stride 2)
//! computed directly. As im2col + GEMM such a layer is a product of depth 27 whose
//! unfolding costs more than the product; here each output row is summed tap by tap from
//! the input split into its stride phases, 4 output channels × 16 columns at a time.

use super::Conv2d;

/// Input channels at most, for the direct path.
pub(super) const MAX_CHANNELS: usize = 4;
/// Output columns per register block.
const COLUMNS: usize = 16;
/// Output channels per register block.
const CHANNELS: usize = 4;

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

    /// One image `[c, h, w]` into `out` `[cout, oh, ow]`.
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
        let ph = h + pads[0].0 + pads[0].1;
        // Phase `p` of a padded row holds its columns `j·sw + p`, so tap `kx` of output
        // column x is phase `kx % sw` at `x + kx / sw`: contiguous in x. Rows are long
        // enough for the last block's reads past `ow`.
        let row_len = (w + pads[1].0 + pads[1].1)
            .div_ceil(sw)
            .max(ow.next_multiple_of(COLUMNS) + kw);
        let plane = ph * row_len;
        let mut phases = vec![0f32; sw * cin * plane];
        for c in 0..cin {
            // `max(1)`: an input with no columns has no rows to copy (windows of padding).
            for (iy, row) in input[c * h * w..][..h * w]
                .chunks_exact(w.max(1))
                .enumerate()
            {
                let r = iy + pads[0].0;
                if sw == 2 {
                    // Input column ix is padded column ix + left: phase (ix + left) % 2 at
                    // (ix + left) / 2. Pairs split in one vectorizable pass.
                    let (left, m) = (pads[1].0 % 2, pads[1].0 / 2);
                    let base = c * plane + r * row_len;
                    let (first_phase, second_phase) = if left == 0 { (0, 1) } else { (1, 0) };
                    let (a, b) = (
                        first_phase * cin * plane + base,
                        second_phase * cin * plane + base,
                    );
                    for (q, pair) in row.chunks_exact(2).enumerate() {
                        phases[a + m + q] = pair[0];
                        phases[b + m + left + q] = pair[1];
                    }
                    if w % 2 == 1 {
                        let col = w - 1 + pads[1].0;
                        phases[(col % 2) * cin * plane + base + col / 2] = row[w - 1];
                    }
                    continue;
                }
                for phase in 0..sw {
                    // Padded columns j·sw + phase, input columns j·sw + phase − left.
                    let j0 = pads[1].0.saturating_sub(phase).div_ceil(sw);
                    let Some(start) = (j0 * sw + phase).checked_sub(pads[1].0) else {
                        continue;
                    };
                    if start >= w {
                        continue;
                    }
                    let dst = &mut phases[(phase * cin + c) * plane + r * row_len + j0..];
                    for (d, v) in dst.iter_mut().zip(row[start..].iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
        }
        // Taps as (offset into `phases` for output (0, 0), weight column), and the
        // weights transposed to `[tap][cout]` so a block's 4 channels are adjacent.
        let mut taps = Vec::with_capacity(cin * kh * kw);
        for c in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    taps.push(((kx % sw) * cin + c) * plane + ky * row_len + kx / sw);
                }
            }
        }
        // Padded to whole blocks of channels, zeros past `cout`.
        let stride = cout.next_multiple_of(CHANNELS);
        let mut weights = vec![0f32; taps.len() * stride];
        for (t, row) in weights.chunks_exact_mut(stride).enumerate() {
            for (o, v) in row.iter_mut().enumerate().take(cout) {
                *v = self.weight[o * taps.len() + t];
            }
        }
        let block = |first: usize, out: &mut [f32]| {
            let rows = Rows {
                conv: self,
                first,
                phases: &phases,
                taps: &taps,
                weights: &weights,
                row_step: sh * row_len,
                out_size: [oh, ow],
                out,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `direct_fits` admitted this layer only on a CPU with AVX2 and FMA.
            unsafe {
                rows.run_avx2();
            }
            #[cfg(not(target_arch = "x86_64"))]
            drop(rows);
        };
        let macs = cout.saturating_mul(oh * ow).saturating_mul(taps.len());
        if macs >= super::PARALLEL_MACS && crate::engine::threads::intra_op() > 1 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            out.par_chunks_mut(CHANNELS * oh * ow)
                .enumerate()
                .for_each(|(i, out)| block(i * CHANNELS, out));
        } else {
            for (i, out) in out.chunks_mut(CHANNELS * oh * ow).enumerate() {
                block(i * CHANNELS, out);
            }
        }
    }
}

/// Output channels `first ..` (at most [`CHANNELS`]) into `out`, their `[c, oh, ow]`.
struct Rows<'a> {
    conv: &'a Conv2d,
    first: usize,
    phases: &'a [f32],
    taps: &'a [usize],
    /// `[tap][cout]`, `cout` rounded up to whole blocks.
    weights: &'a [f32],
    /// Offset between the inputs of consecutive output rows.
    row_step: usize,
    out_size: [usize; 2],
    out: &'a mut [f32],
}

impl Rows<'_> {
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(self) {
        use std::arch::x86_64::{
            _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps,
            _mm256_setzero_ps, _mm256_storeu_ps,
        };
        let [oh, ow] = self.out_size;
        let cout = self.conv.out_channels;
        let first = self.first;
        let count = CHANNELS.min(cout - first);
        let stride = cout.next_multiple_of(CHANNELS);
        for y in 0..oh {
            let origin = y * self.row_step;
            for x0 in (0..ow).step_by(COLUMNS) {
                let mut acc = [_mm256_setzero_ps(); 2 * CHANNELS];
                for j in 0..count {
                    let b = _mm256_set1_ps(self.conv.bias[first + j]);
                    acc[2 * j] = b;
                    acc[2 * j + 1] = b;
                }
                for (t, &offset) in self.taps.iter().enumerate() {
                    // Bounds-checked slices; the loads stay inside them.
                    let src = &self.phases[origin + offset + x0..][..COLUMNS];
                    let w = &self.weights[t * stride + first..][..CHANNELS];
                    // SAFETY: each load reads 8 floats inside `src`.
                    let (low, high) = unsafe {
                        (
                            _mm256_loadu_ps(src.as_ptr()),
                            _mm256_loadu_ps(src.as_ptr().add(8)),
                        )
                    };
                    for j in 0..CHANNELS {
                        let wv = _mm256_broadcast_ss(&w[j]);
                        acc[2 * j] = _mm256_fmadd_ps(wv, low, acc[2 * j]);
                        acc[2 * j + 1] = _mm256_fmadd_ps(wv, high, acc[2 * j + 1]);
                    }
                }
                let valid = COLUMNS.min(ow - x0);
                for j in 0..count {
                    let mut lanes = [0f32; COLUMNS];
                    let (mut low, mut high) = (acc[2 * j], acc[2 * j + 1]);
                    if self.conv.relu {
                        low = _mm256_max_ps(low, _mm256_setzero_ps());
                        high = _mm256_max_ps(high, _mm256_setzero_ps());
                    }
                    // SAFETY: 16 floats into a 16-float array.
                    unsafe {
                        _mm256_storeu_ps(lanes.as_mut_ptr(), low);
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), high);
                    }
                    self.out[(j * oh + y) * ow + x0..][..valid].copy_from_slice(&lanes[..valid]);
                }
            }
        }
    }
}
