//! The 1×1 convolutions (stride 1, no padding) on the `gemm` crate, bias, ReLU and a
//! fused HardSwish or HardSigmoid applied while each block is in cache, and a
//! convolution whose output a residual Add reads alone, computed onto the residual.

use super::{Conv2d, Packed, SharedOutput};
use crate::engine::EngineError;
use crate::engine::elementwise::Arithmetic;
use crate::engine::kernels::{Dense, PARALLEL_MACS, bias_relu, rank4};
use crate::engine::limits::Cap;

/// Weights (4 MiB) past which a narrowing layer splits by output channels even on one
/// image: split by columns, every thread's `gemm` call packs all of them again
/// (ResNet-50's 2048→512 layers on 7×7, two threads: 0.66 → 0.57 ms by channels; its
/// 1024→256 ones on 14×14 were 20% slower so).
const WHOLE_WEIGHTS: usize = 1 << 20;

/// How a path finishes its output.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine::kernels) struct Onto {
    /// The product is added to what the output holds (a residual) instead of replacing it.
    pub(in crate::engine::kernels) accumulate: bool,
    /// ReLU after the bias (and the residual).
    pub(in crate::engine::kernels) relu: bool,
}

impl Onto {
    /// Over the output, then the layer's own ReLU.
    pub(in crate::engine::kernels) fn over(conv: &Conv2d) -> Self {
        Self {
            accumulate: false,
            relu: conv.relu,
        }
    }
}

impl Conv2d {
    /// `relu(conv(x) + residual)` where `residual` has the output's shape: ResNet's
    /// `Add(conv, shortcut)` and its ReLU in one step. The 1×1 layers (on the `gemm`
    /// crate and on the panel kernel) add their products to the residual's buffer in
    /// place, each block while it is in cache, which saves the Add's pass over three
    /// tensors (ResNet-50: 16 of them, 4% of the model's time); other layers, and a
    /// residual that broadcasts, run the two steps one after the other.
    ///
    /// # Errors
    /// See [`Conv2d::sizes`]; a residual that does not broadcast to the output.
    pub fn run_residual(
        &self,
        x: &Dense,
        pads: [(usize, usize); 2],
        cap: Cap,
        residual: Dense,
        relu: bool,
    ) -> Result<Dense, EngineError> {
        let ([batch, cout, oh, ow], _) = self.sizes(&x.shape, pads, cap)?;
        let [_, channels, h, w] = rank4(&x.shape, "Conv")?;
        let plane = oh * ow;
        let pointwise = self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.groups == 1
            && pads == [(0, 0), (0, 0)]
            && [oh, ow] == [h, w];
        let unfold = matches!(self.packed, Packed::Unfold(_)) && !(pointwise && plane == 1);
        let onto = residual.shape == [batch, cout, oh, ow]
            && !self.relu
            && self.hard.is_none()
            && plane > 1
            && channels > 0
            && (unfold || pointwise);
        if !onto {
            let y = self.run(x, pads, cap)?;
            return crate::engine::kernels::broadcast::binary(
                Arithmetic::Add,
                y,
                &residual,
                relu,
                cap,
            );
        }
        let onto = Onto {
            accumulate: true,
            relu,
        };
        let mut out = residual.into_values();
        let image = channels * h * w;
        match &self.packed {
            Packed::Unfold(tiles) if unfold => {
                for (n, dst) in out.chunks_exact_mut(cout * plane).enumerate() {
                    let input = &x.data[n * image..][..image];
                    self.run_unfold(tiles, (input, [h, w]), [oh, ow], pads, dst, onto);
                }
            }
            _ => {
                let macs = out.len().saturating_mul(channels);
                let split = macs >= PARALLEL_MACS && crate::engine::threads::ways() >= 2;
                if !(split && self.pointwise_by_channels(x, plane, &mut out, onto)) {
                    for (n, dst) in out.chunks_exact_mut(cout * plane).enumerate() {
                        let input = &x.data[n * image..][..image];
                        self.pointwise_rows(0, cout, input, plane, dst, onto);
                    }
                }
            }
        }
        Dense::new(out, vec![batch, cout, oh, ow])
    }

    /// A 1×1 convolution (stride 1, no padding) split over the pool by output channels,
    /// bias and ReLU included: each thread writes (and leaves in its cache) whole channel
    /// planes, as the depthwise and element-wise steps that usually follow split them.
    /// Returns false, doing nothing, where the layer is too small to split or has fewer
    /// than 8 output channels.
    pub(super) fn pointwise_by_channels(
        &self,
        x: &Dense,
        plane: usize,
        out: &mut [f32],
        onto: Onto,
    ) -> bool {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let threads = crate::engine::threads::ways();
        let macs = out.len().saturating_mul(cin);
        if threads < 2 || macs < PARALLEL_MACS || plane == 0 || cout < 8 {
            return false;
        }
        use rayon::prelude::*;
        let images = out.len() / (cout * plane);
        if images == 1 && cout < cin && plane >= 16 * threads && cin * cout < WHOLE_WEIGHTS {
            self.pointwise_by_columns(x, plane, out, onto);
            return true;
        }
        crate::engine::threads::entering_parallel_region();
        // One piece per thread and image, in whole blocks of 4 channels.
        let rows = cout.div_ceil(threads).next_multiple_of(4);
        let pieces = cout.div_ceil(rows);
        let image = cin * plane;
        let parts: Vec<(usize, &mut [f32])> = out
            .chunks_exact_mut(cout * plane)
            .flat_map(|o| o.chunks_mut(rows * plane).enumerate())
            .collect();
        debug_assert_eq!(parts.len(), images * pieces);
        parts
            .into_par_iter()
            .enumerate()
            .for_each(|(index, (piece, dst))| {
                let n = index / pieces;
                let first = piece * rows;
                let m = dst.len() / plane;
                self.pointwise_rows(first, m, &x.data[n * image..][..image], plane, dst, onto);
            });
        true
    }

    /// [`Conv2d::pointwise_by_channels`] for one image of a narrowing layer (fewer output
    /// channels than input: MobileNet's projections), split by columns instead: each
    /// thread computes every output channel of its pixels, a product whose rows are not
    /// halved (a 240→40 layer on 14×14, two threads: 31 µs, against 44 split by channels
    /// and 58 on the `gemm` crate's own split). What follows a projection (an Add, a 1×1
    /// layer) does not read it by channels.
    fn pointwise_by_columns(&self, x: &Dense, plane: usize, out: &mut [f32], onto: Onto) {
        use rayon::prelude::*;
        let (cin, cout) = (self.in_channels, self.out_channels);
        let threads = crate::engine::threads::ways();
        crate::engine::threads::entering_parallel_region();
        // Whole panels of 16 columns per thread.
        let cols = plane.div_ceil(threads).next_multiple_of(16);
        let dst = SharedOutput(out.as_mut_ptr(), out.len());
        (0..plane.div_ceil(cols)).into_par_iter().for_each(|piece| {
            let columns = piece * cols..plane.min((piece + 1) * cols);
            // SAFETY: `dst` is `out`, borrowed for the whole loop; pieces write disjoint
            // columns.
            unsafe {
                crate::engine::kernels::matmul_columns(
                    (cout, cin, plane),
                    columns.clone(),
                    dst.raw(),
                    &self.weight,
                    &x.data,
                    onto.accumulate,
                );
            }
            for channel in 0..cout {
                // SAFETY: this piece's columns of one row, written by no other piece.
                let block = unsafe { dst.block(channel * plane + columns.start, columns.len()) };
                bias_relu(block, self.bias[channel], onto.relu);
                if let Some(hard) = self.hard {
                    hard.apply(block);
                }
            }
        });
    }

    /// Output channels `first..first + m` of a 1×1 convolution (stride 1, no padding) of
    /// one image, bias and ReLU (or the fused HardSwish or HardSigmoid) included.
    /// Past a core's L2 cache (MobileNetV3's 16→72
    /// layer at 56×56 writes 900 KB) a block of columns at a time, so the bias pass finds
    /// each block still in cache instead of reading the planes back from memory: 1.3×
    /// faster on that layer (`benches/kernels.rs`, one thread). Below it, one product:
    /// more calls cost more than they save there.
    pub(super) fn pointwise_rows(
        &self,
        first: usize,
        m: usize,
        input: &[f32],
        plane: usize,
        dst: &mut [f32],
        onto: Onto,
    ) {
        /// Floats of output in one product: half a MiB, a core's L2 on the smaller parts.
        const WHOLE: usize = 128 << 10;
        /// Floats of output per block past that: well inside L2.
        const BLOCK: usize = 32 << 10;
        let cin = self.in_channels;
        let weight = &self.weight[first * cin..][..m * cin];
        let cols = if m.saturating_mul(plane) <= WHOLE {
            plane
        } else {
            (BLOCK / m.max(1)).max(64).next_multiple_of(16).min(plane)
        };
        for start in (0..plane).step_by(cols.max(1)) {
            let n = cols.min(plane - start);
            crate::engine::kernels::matmul_into_rows(
                m,
                n,
                cin,
                (&mut dst[start..], plane),
                (weight, cin, 1),
                (&input[start..], plane, 1),
                onto.accumulate,
            );
            for (row, channel) in dst.chunks_exact_mut(plane).zip(first..) {
                let block = &mut row[start..][..n];
                bias_relu(block, self.bias[channel], onto.relu);
                if let Some(hard) = self.hard {
                    hard.apply(block);
                }
            }
        }
    }
}
