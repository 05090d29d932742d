//! Depthwise convolution (one input and one output channel per group), computed directly
//! rather than as many one-row GEMMs.

use super::{Conv2d, Dense, PARALLEL_MACS, bias_relu};

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
        // The plane padded once, the output computed `pw` wide, so every tap is
        // one contiguous multiply-add over the whole plane (small planes would otherwise
        // spend their time in per-row loop overhead); the valid columns are kept.
        let (pw, ph) = (w + pads[1].0 + pads[1].1, h + pads[0].0 + pads[0].1);
        // Strided layers compute the stride-1 output and keep every `stride`-th value:
        // more multiply-adds, but contiguous ones (up to 4× at stride 2).
        let (oh1, ow1) = (oh.saturating_sub(1) * sh + 1, ow.saturating_sub(1) * sw + 1);
        let wide = oh > 0 && ow > 0 && sh <= 2 && sw <= 2;
        let one_wide = |index: usize, dst: &mut [f32], scratch: &mut Vec<f32>| {
            let c = index % channels;
            let input = &x.data[index * h * w..][..h * w];
            let weight = &self.weight[c * kh * kw..][..kh * kw];
            // [padded plane | wide output], the padded plane one row longer so the last
            // tap's contiguous read stays inside it.
            let (plane_len, out_len) = ((ph + 1) * pw, oh1 * pw);
            scratch.clear();
            scratch.resize(plane_len + out_len, 0.0);
            let (padded, out_wide) = scratch.split_at_mut(plane_len);
            for (y, row) in input.chunks_exact(w).enumerate() {
                padded[(y + pads[0].0) * pw + pads[1].0..][..w].copy_from_slice(row);
            }
            for ky in 0..kh {
                for kx in 0..kw {
                    let wv = weight[ky * kw + kx];
                    let src = &padded[ky * dh * pw + kx * dw..][..out_len];
                    for (d, v) in out_wide.iter_mut().zip(src) {
                        *d += wv * v;
                    }
                }
            }
            for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                let wide_row = &out_wide[oy * sh * pw..][..ow1];
                if sw == 1 {
                    row.copy_from_slice(&wide_row[..ow]);
                } else {
                    for (d, v) in row.iter_mut().zip(wide_row.iter().step_by(sw)) {
                        *d = *v;
                    }
                }
            }
            bias_relu(dst, self.bias[c], self.relu);
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
        let parallel = work >= PARALLEL_MACS && crate::engine::threads::intra_op() > 1;
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
