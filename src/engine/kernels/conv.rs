//! 2-D convolution as im2col + GEMM: one product per image and group, several images per
//! product for small ungrouped layers, a deep layer's unfolded input built a few channels
//! at a time; depthwise layers go to `depthwise.rs`.

use super::{Dense, PARALLEL_MACS, bias_relu, fmax, matmul, rank4, window_out_2d};
use crate::engine::EngineError;
use crate::engine::limits::{Cap, F32};
pub(super) use pointwise::Onto;

/// A 2-D convolution's fixed parameters, weights packed as `[cout, cin/groups · kh · kw]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_channels: usize,
    pub in_channels: usize,
    pub groups: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub relu: bool,
    /// A HardSwish or HardSigmoid fused after the bias (`relu` is false then): applied
    /// while each block is in cache on the 1×1 paths, as a pass over the output on the
    /// others.
    pub hard: Option<Hard>,
    /// The weights packed for the path the layer takes, set by [`Conv2d::prepare`].
    pub packed: Packed,
}

/// HardSigmoid, `clamp(αx + β, 0, 1)`, or with `swish` HardSwish, `x` times it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hard {
    pub swish: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl Hard {
    /// Over a block this thread just wrote.
    pub(super) fn apply(self, values: &mut [f32]) {
        super::pointwise::hard_on_this_thread(values, self.swish, self.alpha, self.beta);
    }
}

/// A convolution's weights packed for the panel kernel at plan time.
#[derive(Debug, Clone, Default)]
pub enum Packed {
    /// im2col + the `gemm` crate, the direct or the depthwise kernel: the plain weights.
    #[default]
    None,
    /// Winograd F(2×2, 3×3): 16 transformed matrices per chunk of input channels.
    Winograd(Vec<f32>),
    /// The weights as the panel kernel's A tiles, for im2col into its panels.
    Unfold(Vec<f32>),
    /// A depthwise layer's weights in blocks of channels, tap-major
    /// (`depthwise/blocked.rs`), beside the plain ones its other path reads.
    Depthwise(Vec<f32>),
}

impl Packed {
    /// Floats held.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Winograd(v) | Self::Unfold(v) | Self::Depthwise(v) => v.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Conv2d {
    /// The output shape `[n, cout, oh, ow]` on an input of `shape` with `pads`, and the
    /// elements of the unfolded-input scratch buffer (`cin/groups · kh · kw · oh · ow`),
    /// both checked against `cap`.
    ///
    /// # Errors
    /// Shapes that do not match the weights, a window larger than the padded input, or
    /// sizes above the cap.
    pub fn sizes(
        &self,
        shape: &[usize],
        pads: [(usize, usize); 2],
        cap: Cap,
    ) -> Result<([usize; 4], usize), EngineError> {
        let [batch, channels, h, w] = rank4(shape, "Conv")?;
        if channels != self.in_channels || self.groups == 0 || channels % self.groups != 0 {
            return Err(EngineError::Invalid(format!(
                "Conv: input has {channels} channels, the weights expect {} in {} groups",
                self.in_channels, self.groups
            )));
        }
        let bad = || EngineError::Invalid(format!("Conv: kernel larger than input {h}×{w}"));
        let [oh, ow] = window_out_2d([h, w], pads, self.kernel, self.stride, self.dilation, false)
            .ok_or_else(bad)?;
        let out = [batch, self.out_channels, oh, ow];
        cap.check(&out, F32)?;
        // The padded plane the depthwise kernel builds (one row more), and its wide output.
        let padded = |size: usize, (a, b): (usize, usize)| {
            size.checked_add(a)
                .and_then(|v| v.checked_add(b))
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| EngineError::Limit(format!("Conv: pads {pads:?} are too large")))
        };
        cap.check(&[2, padded(h, pads[0])?, padded(w, pads[1])?], F32)?;
        let col = cap.check(
            &[
                channels / self.groups,
                self.kernel[0],
                self.kernel[1],
                oh,
                ow,
            ],
            F32,
        )?;
        Ok((out, col))
    }

    /// Runs on `x` `[n, c, h, w]` with pads `[(top, bottom), (left, right)]`.
    ///
    /// # Errors
    /// See [`Conv2d::sizes`].
    pub fn run(
        &self,
        x: &Dense,
        pads: [(usize, usize); 2],
        cap: Cap,
    ) -> Result<Dense, EngineError> {
        let ([batch, _, oh, ow], _) = self.sizes(&x.shape, pads, cap)?;
        let [_, channels, h, w] = rank4(&x.shape, "Conv")?;
        let groups = self.groups;
        let cin_g = channels / groups;
        let cout_g = self.out_channels / groups;
        let k = cin_g * self.kernel[0] * self.kernel[1];
        let plane = oh * ow;
        let direct = self.kernel == [1, 1]
            && self.stride == [1, 1]
            && pads == [(0, 0), (0, 0)]
            && oh == h
            && ow == w;
        // Every path below writes each output element, except a product of depth 0.
        let len = batch * self.out_channels * plane;
        let mut out = if k == 0 {
            vec![0f32; len]
        } else {
            super::reuse::for_overwrite(len)
        };
        // One image at a time into its output planes, on the path the plan packed for.
        let per_image = |out: &mut [f32], image: &dyn Fn(&[f32], &mut [f32])| {
            let size = channels * h * w;
            for (n, dst) in out
                .chunks_exact_mut((self.out_channels * plane).max(1))
                .enumerate()
            {
                image(&x.data[n * size..][..size], dst);
            }
        };
        match &self.packed {
            Packed::Winograd(packed) => {
                per_image(&mut out, &|input, dst| {
                    self.run_winograd(packed, input, [h, w], [oh, ow], pads, dst);
                });
                return self.finish(out, [batch, self.out_channels, oh, ow], false);
            }
            // A widening 1×1 layer on a single pixel (squeeze-and-excite's) is a product
            // with one column: the fully connected path below.
            Packed::Unfold(tiles) if !(direct && plane == 1) => {
                per_image(&mut out, &|input, dst| {
                    self.run_unfold(
                        tiles,
                        (input, [h, w]),
                        [oh, ow],
                        pads,
                        dst,
                        Onto::over(self),
                    );
                });
                return self.finish(out, [batch, self.out_channels, oh, ow], false);
            }
            Packed::None | Packed::Unfold(_) | Packed::Depthwise(_) => {}
        }
        if self.direct_fits() && !direct {
            let image = channels * h * w;
            for (n, dst) in out
                .chunks_exact_mut((self.out_channels * plane).max(1))
                .enumerate()
            {
                self.run_direct(&x.data[n * image..][..image], [h, w], [oh, ow], pads, dst);
            }
            return self.finish(out, [batch, self.out_channels, oh, ow], false);
        }
        if groups == 1 && !direct && batch > 1 {
            self.run_batched(x, [h, w], [oh, ow], pads, &mut out);
            return self.finish(out, [batch, self.out_channels, oh, ow], false);
        }
        if cin_g == 1 && cout_g == 1 {
            let activated = self.run_depthwise(x, [h, w], [oh, ow], pads, &mut out);
            return self.finish(out, [batch, self.out_channels, oh, ow], activated);
        }
        // 1×1 layers: too small to split, on this thread a block of columns at a time;
        // else split by output channels, except a few channels over many columns (a
        // segmentation head), which stay on the general path, whose product splits by
        // columns.
        if direct && groups == 1 && plane == 1 {
            self.fully_connected(&x.data, batch, &mut out);
            return self.finish(out, [batch, self.out_channels, oh, ow], true);
        }
        if direct && groups == 1 {
            let macs = out.len().saturating_mul(channels);
            if macs < PARALLEL_MACS || crate::engine::threads::ways() < 2 {
                let image = channels * plane;
                for (n, dst) in out
                    .chunks_exact_mut((self.out_channels * plane).max(1))
                    .enumerate()
                {
                    let input = &x.data[n * image..][..image];
                    self.pointwise_rows(0, self.out_channels, input, plane, dst, Onto::over(self));
                }
                return self.finish(out, [batch, self.out_channels, oh, ow], true);
            }
            if self.pointwise_by_channels(x, plane, &mut out, Onto::over(self)) {
                return self.finish(out, [batch, self.out_channels, oh, ow], true);
            }
        }
        // One GEMM per image and group; grouped (depthwise) convolutions are many small
        // ones, spread across the intra-op pool with a scratch buffer per thread.
        // A deep layer's unfolded input (YOLO's 576-channel 3×3 on 40×40: 33 MB) is built
        // and multiplied a few input channels at a time, accumulating, so the buffer
        // stays in cache: that layer went from 32.7 to 19–21 ms (one thread).
        let taps = self.kernel[0] * self.kernel[1];
        let chunk_channels = if direct {
            cin_g
        } else {
            Self::channel_chunk(cin_g, taps, plane)
        };
        let work = |col: &mut Vec<f32>, index: usize, dst: &mut [f32]| {
            let (n, g) = (index / groups, index % groups);
            let input = &x.data[(n * channels + g * cin_g) * h * w..][..cin_g * h * w];
            let weight = &self.weight[g * cout_g * k..][..cout_g * k];
            if direct {
                matmul(
                    cout_g,
                    plane,
                    k,
                    dst,
                    (weight, k, 1),
                    (input, plane, 1),
                    false,
                    1.0,
                );
                return;
            }
            for first in (0..cin_g).step_by(chunk_channels.max(1)) {
                let count = chunk_channels.min(cin_g - first);
                let rows = count * taps;
                self.im2col(
                    &input[first * h * w..][..count * h * w],
                    count,
                    [h, w],
                    [oh, ow],
                    pads,
                    (col.as_mut_slice(), plane, 0),
                );
                matmul(
                    cout_g,
                    plane,
                    rows,
                    dst,
                    (&weight[first * taps..], k, 1),
                    (&col[..rows * plane], plane, 1),
                    first > 0,
                    1.0,
                );
            }
        };
        let scratch = || {
            if direct {
                Vec::new()
            } else {
                vec![0f32; chunk_channels * taps * plane]
            }
        };
        let chunk = (cout_g * plane).max(1);
        let total_macs = batch
            .saturating_mul(self.out_channels)
            .saturating_mul(plane)
            .saturating_mul(k);
        if groups > 1 && total_macs >= PARALLEL_MACS && crate::engine::threads::ways() > 1 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each_init(scratch, |col, (index, dst)| work(col, index, dst));
        } else {
            let mut col = scratch();
            for (index, dst) in out.chunks_mut(chunk).enumerate() {
                work(&mut col, index, dst);
            }
        }
        if plane > 0 {
            let cout = self.out_channels;
            super::spread_chunks(&mut out, plane, |start, out| {
                let first = start / plane;
                for (row, channel) in out.chunks_exact_mut(plane).zip((first..).map(|c| c % cout)) {
                    bias_relu(row, self.bias[channel], self.relu);
                }
            });
        }
        self.finish(out, [batch, self.out_channels, oh, ow], false)
    }

    /// The output as a tensor, the fused HardSwish or HardSigmoid applied where the path
    /// did not (`activated`).
    fn finish(
        &self,
        mut out: Vec<f32>,
        shape: [usize; 4],
        activated: bool,
    ) -> Result<Dense, EngineError> {
        if let Some(hard) = self.hard
            && !activated
        {
            super::hard(&mut out, hard.swish, hard.alpha, hard.beta);
        }
        Dense::new(out, shape.to_vec())
    }

    /// Input channels unfolded per GEMM: all of them while the unfolded buffer is small
    /// (4 MiB), else as many as keep it near 1 MiB, but never a GEMM depth below 256.
    fn channel_chunk(channels: usize, taps: usize, plane: usize) -> usize {
        const WHOLE: usize = 4 << 20;
        const BUDGET: usize = 1 << 20;
        let per_channel = (taps * plane * 4).max(1);
        if channels.saturating_mul(per_channel) <= WHOLE {
            return channels;
        }
        (BUDGET / per_channel)
            .max(256_usize.div_ceil(taps.max(1)))
            .clamp(1, channels.max(1))
    }

    /// Several images per GEMM (ungrouped convolutions): their unfolded fields side by
    /// side in one `[k, images·oh·ow]` matrix, so the weights are packed once per chunk
    /// and small layers do not pay a GEMM call per image. The product is scattered back
    /// to NCHW with the bias and ReLU on the way. Chunks keep the unfolded buffer near
    /// `COL_BUDGET`, inside a core's L2 cache (4 MiB chunks measured 65% slower).
    fn run_batched(
        &self,
        x: &Dense,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        const COL_BUDGET: usize = 256 << 10;
        let batch = x.shape[0];
        let (channels, cout) = (self.in_channels, self.out_channels);
        let k = channels * self.kernel[0] * self.kernel[1];
        let plane = oh * ow;
        let chunk = (COL_BUDGET / (k * plane * 4).max(1)).clamp(1, batch);
        let mut col = vec![0f32; k * plane * chunk];
        let mut product = vec![0f32; cout * plane * chunk];
        for start in (0..batch).step_by(chunk) {
            let count = chunk.min(batch - start);
            let width = count * plane;
            for i in 0..count {
                let input = &x.data[(start + i) * channels * h * w..][..channels * h * w];
                self.im2col(
                    input,
                    channels,
                    [h, w],
                    [oh, ow],
                    pads,
                    (&mut col, width, i * plane),
                );
            }
            let product = &mut product[..cout * width];
            matmul(
                cout,
                width,
                k,
                product,
                (&self.weight, k, 1),
                (&col, width, 1),
                false,
                1.0,
            );
            for (co, row) in product.chunks_exact(width).enumerate() {
                for (i, src) in row.chunks_exact(plane).enumerate() {
                    let dst = &mut out[((start + i) * cout + co) * plane..][..plane];
                    let bias = self.bias[co];
                    if self.relu {
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d = fmax(v + bias, 0.0));
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d = v + bias);
                    }
                }
            }
        }
    }

    /// Unfolds the receptive fields of one image group into rows of `col`
    /// (`(buffer, row stride, column offset)`): row `c·kh·kw + ky·kw + kx` holds the
    /// `oh·ow` taps of that kernel position, zeros where the window covers padding.
    fn im2col(
        &self,
        input: &[f32],
        channels: usize,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        (col, row_stride, offset): (&mut [f32], usize, usize),
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let plane = oh * ow;
        for c in 0..channels {
            let image = &input[c * h * w..][..h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut col[((c * kh + ky) * kw + kx) * row_stride + offset..][..plane];
                    for y in 0..oh {
                        let out_row = &mut row[y * ow..][..ow];
                        let iy = (y * sh + ky * dh).wrapping_sub(pads[0].0);
                        if iy >= h {
                            out_row.fill(0.0);
                            continue;
                        }
                        let in_row = &image[iy * w..][..w];
                        let x_off = kx * dw;
                        if sw == 1 {
                            // Valid outputs x satisfy 0 <= x + x_off - pad_left < w.
                            let lo = pads[1].0.saturating_sub(x_off).min(ow);
                            let hi = (w + pads[1].0).saturating_sub(x_off).clamp(lo, ow);
                            out_row[..lo].fill(0.0);
                            out_row[hi..].fill(0.0);
                            if lo < hi {
                                let start = lo + x_off - pads[1].0;
                                out_row[lo..hi].copy_from_slice(&in_row[start..start + (hi - lo)]);
                            }
                            continue;
                        }
                        for (x, v) in out_row.iter_mut().enumerate() {
                            let ix = (x * sw + x_off).wrapping_sub(pads[1].0);
                            *v = if ix < w { in_row[ix] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

mod pointwise;
mod squeeze;
#[cfg(test)]
mod tests;

/// A convolution's output as a pointer and its length, for pieces on several threads that
/// write disjoint columns of its rows.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32, usize);
// SAFETY: pieces write disjoint columns, each access checked against the length.
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    fn raw(self) -> (*mut f32, usize) {
        (self.0, self.1)
    }

    /// `len` floats at `at`, checked to lie inside the output.
    ///
    /// # Safety
    /// No other reference to them exists while the block lives.
    unsafe fn block<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.1),
            "pointwise: block out of range"
        );
        // SAFETY: inside the output (checked); unaliased (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}
