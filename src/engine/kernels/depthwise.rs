//! Depthwise convolution (one input and one output channel per group), computed
//! directly rather than as many one-row GEMMs: per channel plane, a window sum
//! ([`super::window`]) with the channel's weights; on small planes, [`LANES`] channels
//! at a time as the vector lanes ([`blocked`]).

use super::conv::Packed;
use super::window::{Layout, Reduce};
use super::{Conv2d, Dense, PARALLEL_MACS, bias_relu};

/// Depthwise layers split over the pool from this many multiply-adds, a quarter of
/// [`PARALLEL_MACS`]: they are memory-bound, and the 1×1 layer before one usually split
/// its output channels, so each thread finds its channels in its own cache. ShuffleNet's
/// 3×3 layers on 28×28 and 14×14 (85–170K multiply-adds), two threads: 9.8–13.2 µs on
/// one of them, 7.0–9.6 split.
const PARALLEL_DEPTHWISE: usize = PARALLEL_MACS / 4;

mod blocked;
mod interleave;
use blocked::LANES;

impl Conv2d {
    /// One input and one output channel per group.
    pub(super) fn is_depthwise(&self) -> bool {
        self.groups > 0 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Depthwise convolution (one input and one output channel per group). Channels
    /// spread over the intra-op pool when the layer is large enough. Returns whether the
    /// fused HardSwish or HardSigmoid was applied (the blocked path applies it).
    pub(super) fn run_depthwise(
        &self,
        x: &Dense,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) -> bool {
        let geometry = blocked::Geometry {
            input: [h, w],
            output: [oh, ow],
            pads,
        };
        if let Packed::Depthwise(blocks) = &self.packed
            && h * w > 0
            && geometry.suits_blocks()
        {
            self.run_blocked(blocks, x, geometry, out);
            return true;
        }
        self.run_planes(x, [h, w], [oh, ow], pads, out);
        false
    }

    /// [`Conv2d::run_depthwise`] one plane at a time ([`super::window`]).
    fn run_planes(
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
        if work >= PARALLEL_DEPTHWISE && crate::engine::threads::ways() > 1 {
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

    /// [`Conv2d::run_depthwise`] [`LANES`] channels at a time ([`blocked`]).
    fn run_blocked(&self, blocks: &[f32], x: &Dense, geometry: blocked::Geometry, out: &mut [f32]) {
        let channels = self.out_channels;
        let (input, output) = (geometry.input, geometry.output);
        let (plane_in, plane_out) = (input[0] * input[1], output[0] * output[1]);
        if plane_out == 0 || plane_in == 0 || channels == 0 {
            return;
        }
        let taps = self.kernel[0] * self.kernel[1];
        // (first channel, its block's input planes, its output planes), image by image.
        let mut work: Vec<(usize, &[f32], &mut [f32])> = Vec::new();
        let macs = out.len().saturating_mul(taps);
        for (dst, image) in out
            .chunks_exact_mut(channels * plane_out)
            .zip(x.data.chunks_exact(channels * plane_in))
        {
            for (b, (dst, src)) in dst
                .chunks_mut(LANES * plane_out)
                .zip(image.chunks(LANES * plane_in))
                .enumerate()
            {
                work.push((b * LANES, src, dst));
            }
        }
        let one = |scratch: &mut blocked::Scratch,
                   (first, src, dst): &mut (usize, &[f32], &mut [f32])| {
            let packed = &blocks[*first * taps..][..taps * LANES];
            self.depthwise_block(packed, *first, geometry, src, dst, scratch);
        };
        if macs >= PARALLEL_DEPTHWISE && crate::engine::threads::ways() > 1 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            work.par_iter_mut()
                .for_each_init(blocked::Scratch::default, one);
        } else {
            let mut scratch = blocked::Scratch::default();
            for item in &mut work {
                one(&mut scratch, item);
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
