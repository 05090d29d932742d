//! Depthwise convolution (one input and one output channel per group), computed
//! directly rather than as many one-row GEMMs: per channel plane, a window sum
//! ([`super::window`]) with the channel's weights.

use super::window::{Layout, Reduce};
use super::{Conv2d, Dense, PARALLEL_MACS, bias_relu};

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
        let channels = self.out_channels;
        let plane = oh * ow;
        if plane == 0 {
            return;
        }
        let layout = Layout::new(
            self.kernel,
            self.stride,
            self.dilation,
            [h, w],
            [oh, ow],
            pads,
        );
        let one = |index: usize, dst: &mut [f32], scratch: &mut Vec<f32>| {
            let c = index % channels;
            let input = &x.data[index * h * w..][..h * w];
            let weights = &self.weight[c * kh * kw..][..kh * kw];
            match &layout {
                Some(layout) => {
                    layout.prepare(scratch, 0.0);
                    let sum = Reduce::Sum {
                        weights,
                        bias: self.bias[c],
                        relu: self.relu,
                    };
                    layout.run(input, scratch, dst, sum);
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
