//! Depthwise convolution (one input and one output channel per group), computed directly
//! rather than as many one-row GEMMs.

use super::{Conv2d, Dense, Loop, PARALLEL_MACS, bias_relu};

/// Kernel taps the register path takes (7×7 and below).
const MAX_TAPS: usize = 49;

/// `out[i] = bias + Σ weight · padded[origin + offset + i]` over the taps, ReLU when
/// asked, 8 outputs at a time with every tap summed in registers; `out.len()` is a
/// multiple of 8 and `padded` has room for the last chunk's reads.
struct Taps<'a> {
    padded: &'a [f32],
    origin: usize,
    taps: &'a [(usize, f32)],
    out: &'a mut [f32],
    bias: f32,
    relu: bool,
}

impl Loop for Taps<'_> {
    #[inline(always)]
    fn run(self) {
        // 32 outputs per step in four independent sums, so the adds of one tap do not
        // wait on the previous tap's (one chain measured latency-bound); then 8 at a time.
        let wide = self.out.len() / 32 * 32;
        let (head, tail) = self.out.split_at_mut(wide);
        for (i, out32) in head.chunks_exact_mut(32).enumerate() {
            let mut acc = [self.bias; 32];
            for &(offset, weight) in self.taps {
                let src = &self.padded[self.origin + offset + i * 32..][..32];
                for (a, v) in acc.iter_mut().zip(src) {
                    *a += weight * v;
                }
            }
            if self.relu {
                acc.iter_mut().for_each(|a| *a = super::fmax(*a, 0.0));
            }
            out32.copy_from_slice(&acc);
        }
        let origin = self.origin + wide;
        for (i, out8) in tail.chunks_exact_mut(8).enumerate() {
            let mut acc = [self.bias; 8];
            for &(offset, weight) in self.taps {
                let src = &self.padded[origin + offset + i * 8..][..8];
                for (a, v) in acc.iter_mut().zip(src) {
                    *a += weight * v;
                }
            }
            if self.relu {
                acc.iter_mut().for_each(|a| *a = super::fmax(*a, 0.0));
            }
            out8.copy_from_slice(&acc);
        }
    }
}

impl Conv2d {
    /// Depthwise convolution (one input and one output channel per group) computed
    /// directly: per kernel tap, a scaled input row added into each output row, a
    /// contiguous loop the compiler vectorizes when the stride is 1. Channels spread over
    /// the intra-op pool when the layer is large enough.
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
        let [dh, dw] = self.dilation;
        let channels = self.out_channels;
        let plane = oh * ow;
        // The plane padded once; outputs are computed 8 at a time with every tap summed in
        // registers from contiguous loads of the padded rows, `pw` wide (the columns past
        // `ow` are dropped). Stride 2 across computes every position and keeps every other
        // one (2× the multiply-adds, but contiguous); stride 2 down skips rows.
        let (pw, ph) = (w + pads[1].0 + pads[1].1, h + pads[0].0 + pads[0].1);
        let ow1 = ow.saturating_sub(1) * sw + 1;
        let wide = oh > 0 && ow > 0 && sh <= 2 && sw <= 2 && kh * kw <= MAX_TAPS;
        let one_wide = |index: usize, dst: &mut [f32], scratch: &mut Vec<f32>| {
            if sw == 2 {
                self.depthwise_phases(x, index, [h, w], [oh, ow], pads, dst, scratch);
                return;
            }
            let c = index % channels;
            let input = &x.data[index * h * w..][..h * w];
            let weight = &self.weight[c * kh * kw..][..kh * kw];
            // [padded plane + slack | wide output]. The slack covers the reads of the last
            // 8-wide chunk; the border stays zero from one channel to the next, as only
            // the interior is rewritten.
            let plane_len = ph * pw + pw + 8;
            let wide_len = if sh == 1 { oh * pw } else { ow1 }.next_multiple_of(8);
            if scratch.len() != plane_len + wide_len {
                scratch.clear();
                scratch.resize(plane_len + wide_len, 0.0);
            }
            let (padded, wide) = scratch.split_at_mut(plane_len);
            // `max(1)`: an input with no columns has no rows to copy (windows of padding).
            for (y, row) in input.chunks_exact(w.max(1)).enumerate() {
                padded[(y + pads[0].0) * pw + pads[1].0..][..w].copy_from_slice(row);
            }
            let mut taps = [(0usize, 0f32); MAX_TAPS];
            for ky in 0..kh {
                for kx in 0..kw {
                    taps[ky * kw + kx] = (ky * dh * pw + kx * dw, weight[ky * kw + kx]);
                }
            }
            let taps = &taps[..kh * kw];
            let (bias, relu) = (self.bias[c], self.relu);
            let keep = |dst_row: &mut [f32], wide_row: &[f32]| {
                if sw == 1 {
                    dst_row.copy_from_slice(&wide_row[..ow]);
                } else {
                    for (d, v) in dst_row.iter_mut().zip(wide_row.iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            };
            if sh == 1 {
                // Every row: the whole plane `pw` wide in one contiguous pass.
                super::on_best_cpu(Taps {
                    padded,
                    origin: 0,
                    taps,
                    out: wide,
                    bias,
                    relu,
                });
                for (oy, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
                    keep(dst_row, &wide[oy * pw..]);
                }
            } else {
                // Every other row: each computed at stride 1 across.
                for (oy, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
                    let origin = oy * sh * pw;
                    super::on_best_cpu(Taps {
                        padded,
                        origin,
                        taps,
                        out: &mut *wide,
                        bias,
                        relu,
                    });
                    keep(dst_row, wide);
                }
            }
        };
        let one = |index: usize, dst: &mut [f32]| {
            let c = index % channels;
            let input = &x.data[index * h * w..][..h * w];
            let weight = &self.weight[c * kh * kw..][..kh * kw];
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
                        if sw == 1 {
                            let src = &row[start..start + (last - first)];
                            for (d, v) in dst_row[first..last].iter_mut().zip(src) {
                                *d += wv * v;
                            }
                        } else {
                            for (i, d) in dst_row[first..last].iter_mut().enumerate() {
                                *d += wv * row[start + i * sw];
                            }
                        }
                    }
                }
            }
            bias_relu(dst, self.bias[c], self.relu);
        };
        let work = out.len().saturating_mul(kh * kw);
        if plane == 0 {
            return;
        }
        let parallel = work >= PARALLEL_MACS && crate::engine::threads::ways() > 1;
        if parallel {
            crate::engine::threads::entering_parallel_region();
        }
        match (wide, parallel) {
            (true, true) => {
                use rayon::prelude::*;
                out.par_chunks_mut(plane).enumerate().for_each_init(
                    Vec::new,
                    |scratch, (index, dst)| {
                        one_wide(index, dst, scratch);
                    },
                );
            }
            (true, false) => {
                let mut scratch = Vec::new();
                for (index, dst) in out.chunks_mut(plane).enumerate() {
                    one_wide(index, dst, &mut scratch);
                }
            }
            (false, true) => {
                use rayon::prelude::*;
                out.par_chunks_mut(plane)
                    .enumerate()
                    .for_each(|(index, dst)| one(index, dst));
            }
            (false, false) => {
                for (index, dst) in out.chunks_mut(plane).enumerate() {
                    one(index, dst);
                }
            }
        }
    }
}

impl Conv2d {
    /// One channel (`index` of the `[n·c]` planes) of a depthwise convolution at stride 2
    /// across: the padded plane is split once into its even and odd columns, so tap `kx`
    /// of output column x is phase `kx·dw % 2` at `x + kx·dw / 2`, a contiguous load, and
    /// only the outputs kept are computed. The scratch's zero border survives from channel
    /// to channel (only the interior is rewritten).
    #[expect(
        clippy::too_many_arguments,
        reason = "one plane of a convolution: its sizes, pads, output and scratch"
    )]
    fn depthwise_phases(
        &self,
        x: &Dense,
        index: usize,
        [h, w]: [usize; 2],
        [_, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        dst: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let [kh, kw] = self.kernel;
        let [sh, _] = self.stride;
        let [dh, dw] = self.dilation;
        let c = index % self.out_channels;
        let input = &x.data[index * h * w..][..h * w];
        let weight = &self.weight[c * kh * kw..][..kh * kw];
        let (ph, pw) = (h + pads[0].0 + pads[0].1, w + pads[1].0 + pads[1].1);
        let half = pw.div_ceil(2);
        let phase_len = ph * half;
        let row_out = ow.next_multiple_of(8);
        // Two phase planes, slack for the last row's reads past `ow`, then one output row.
        let planes_len = 2 * phase_len + half + row_out;
        if scratch.len() != planes_len + row_out {
            scratch.clear();
            scratch.resize(planes_len + row_out, 0.0);
        }
        let (phases, wide) = scratch.split_at_mut(planes_len);
        let left = pads[1].0;
        {
            let (phase0, phase1) = phases.split_at_mut(phase_len);
            for (y, row) in input.chunks_exact(w.max(1)).enumerate() {
                let r = (y + pads[0].0) * half + left / 2;
                // Input column ix is padded column ix + left: phase (ix + left) % 2, at
                // (ix + left) / 2.
                if left.is_multiple_of(2) {
                    super::phases::deinterleave(row, &mut phase0[r..], &mut phase1[r..]);
                } else {
                    super::phases::deinterleave(row, &mut phase1[r..], &mut phase0[r + 1..]);
                }
                if w % 2 == 1 {
                    let col = w - 1 + left;
                    let at = (y + pads[0].0) * half + col / 2;
                    if col.is_multiple_of(2) {
                        phase0[at] = row[w - 1];
                    } else {
                        phase1[at] = row[w - 1];
                    }
                }
            }
        }
        let mut taps = [(0usize, 0f32); MAX_TAPS];
        for ky in 0..kh {
            for kx in 0..kw {
                let col = kx * dw;
                taps[ky * kw + kx] = (
                    (col % 2) * phase_len + ky * dh * half + col / 2,
                    weight[ky * kw + kx],
                );
            }
        }
        let taps = &taps[..kh * kw];
        for (oy, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
            super::on_best_cpu(Taps {
                padded: phases,
                origin: oy * sh * half,
                taps,
                out: &mut wide[..row_out],
                bias: self.bias[c],
                relu: self.relu,
            });
            dst_row.copy_from_slice(&wide[..ow]);
        }
    }
}
