//! Ungrouped convolutions that neither Winograd nor the direct stem take (strided 3×3,
//! 5×5 and 7×7 windows, dilated ones, narrow layers) as a product on the panel kernel:
//! the weights `[cout × cin·kh·kw]` tiled once at plan time as its A, each block of
//! output pixels unfolded (im2col) straight into its B panels, and the product written
//! into NCHW with the bias and ReLU. Before, im2col wrote a row-major matrix that the
//! `gemm` crate packed again at every call: YOLO's stride-2 layers ran 2–4× slower than
//! onnxruntime's.
//!
//! Invariants: a block's panels hold its pixels' receptive fields, zero where a window
//! covers padding and past the block's last pixel; blocks write disjoint pixels (columns
//! of the `[cout, oh·ow]` output), each through [`panels::multiply_tiled_into`].

use super::panels::{self, PANEL, ROWS, Start};
use super::{Conv2d, PARALLEL_MACS, Packed};

/// Floats of one block's panels: about half a core's L2 cache.
const BLOCK_BUDGET: usize = 32 << 10;

impl Conv2d {
    /// Whether the layer runs on the panel kernel (see the module doc).
    pub(super) fn unfold_fits(&self) -> bool {
        self.groups == 1
            && (self.kernel != [1, 1] || self.stride != [1, 1])
            && !self.winograd_fits()
            && !self.direct_fits()
            && panels::available()
    }

    /// The weights as the panel kernel's A tiles.
    pub(super) fn unfold_weights(&self) -> Packed {
        let k = self.in_channels * self.kernel[0] * self.kernel[1];
        Packed::Unfold(panels::tiled(self.out_channels, k, &self.weight, k))
    }

    /// One image `[cin, h, w]` into `out` `[cout, oh, ow]`.
    pub(super) fn run_unfold(
        &self,
        tiles: &[f32],
        input: &[f32],
        size: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let depth = cin * self.kernel[0] * self.kernel[1];
        let plane = oh * ow;
        if plane == 0 || cout == 0 {
            return;
        }
        assert!(input.len() >= cin * size[0] * size[1] && out.len() >= cout * plane);
        let threads = crate::engine::threads::ways();
        // Pixels per block: whole panels within the budget, and enough blocks to keep
        // every thread busy.
        let mut block = (BLOCK_BUDGET / depth.max(1)) / PANEL * PANEL;
        if threads > 1 {
            block = block.min(plane.div_ceil(threads * 2).next_multiple_of(PANEL));
        }
        let block = block.clamp(PANEL, plane.next_multiple_of(PANEL));
        let blocks = plane.div_ceil(block);
        let layer = Unfold {
            conv: self,
            input,
            size,
            out_width: ow,
            pads,
            depth,
        };
        let out = Shared(out.as_mut_ptr(), cout * plane);
        let run = |scratch: &mut Scratch, b: usize| {
            let first = b * block;
            let count = block.min(plane - first);
            layer.fill(scratch, first, count);
            // SAFETY: this block alone writes columns first..first + count of the output
            // rows; `out` holds cout · plane floats, as asserted above.
            unsafe {
                panels::multiply_tiled_into(
                    cout,
                    count,
                    depth,
                    (tiles, depth * ROWS),
                    &scratch.panels,
                    out.from(first, plane),
                    Start::RowBias(&self.bias),
                    self.relu,
                    1,
                );
            }
        };
        let scratch = || Scratch {
            panels: vec![0.0; depth * block],
            lines: vec![0.0; self.kernel[1] * block],
            phases: Vec::new(),
        };
        let macs = plane.saturating_mul(depth).saturating_mul(cout);
        if threads > 1 && blocks > 1 && macs >= PARALLEL_MACS {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            (0..blocks).into_par_iter().for_each_init(scratch, run);
        } else {
            let mut s = scratch();
            (0..blocks).for_each(|b| run(&mut s, b));
        }
    }
}

/// The output image as a pointer and its length: blocks on several threads write
/// disjoint pixels of it.
#[derive(Clone, Copy)]
struct Shared(*mut f32, usize);
// SAFETY: blocks write disjoint columns, through `multiply_tiled_into` only.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The output from float `offset` on, as `multiply_tiled_into` takes it.
    fn from(self, offset: usize, ldc: usize) -> (*mut f32, usize, usize) {
        assert!(offset <= self.1, "convolution: block past the output");
        // SAFETY: in bounds (checked above).
        (unsafe { self.0.add(offset) }, self.1 - offset, ldc)
    }
}

/// One thread's buffers, reused from block to block.
struct Scratch {
    /// `depth` rows of 16 pixels per panel, panel after panel.
    panels: Vec<f32>,
    /// Each kernel column's values for the block's pixels, `kw` lines.
    lines: Vec<f32>,
    /// One input row's even then odd columns (stride 2).
    phases: Vec<f32>,
}

/// What every block of one image shares.
struct Unfold<'a> {
    conv: &'a Conv2d,
    input: &'a [f32],
    size: [usize; 2],
    out_width: usize,
    pads: [(usize, usize); 2],
    depth: usize,
}

impl Unfold<'_> {
    /// The panels of pixels `first..first + count`: row `c·kh·kw + ky·kw + kx` of panel
    /// `j` holds input channel `c` under kernel position `(ky, kx)` for pixels
    /// `first + 16j ..`. Each input row a block reads is split into its stride phases
    /// once (even and odd columns at stride 2), so every kernel column copies a run.
    fn fill(&self, scratch: &mut Scratch, first: usize, count: usize) {
        let [h, w] = self.size;
        let [kh, kw] = self.conv.kernel;
        let [sh, sw] = self.conv.stride;
        let [dh, dw] = self.conv.dilation;
        let (ow, left) = (self.out_width, self.pads[1].0);
        let width = count.div_ceil(PANEL) * PANEL;
        let Scratch {
            panels,
            lines,
            phases,
        } = scratch;
        let lines = &mut lines[..kw * width];
        for line in lines.chunks_exact_mut(width) {
            line[count..].fill(0.0);
        }
        if sw == 2 {
            phases.resize(w.div_ceil(2) + w / 2, 0.0);
        }
        for c in 0..self.conv.in_channels {
            let image = &self.input[c * h * w..][..h * w];
            for ky in 0..kh {
                let mut pixel = first;
                while pixel < first + count {
                    let (y, x0) = (pixel / ow, pixel % ow);
                    let run = (ow - x0).min(first + count - pixel);
                    let at = pixel - first;
                    let iy = (y * sh + ky * dh).wrapping_sub(self.pads[0].0);
                    if iy >= h {
                        for line in lines.chunks_exact_mut(width) {
                            line[at..at + run].fill(0.0);
                        }
                        pixel += run;
                        continue;
                    }
                    let row = &image[iy * w..][..w];
                    if sw == 2 {
                        let (even, odd) = phases.split_at_mut(w.div_ceil(2));
                        super::phases::deinterleave(row, even, odd);
                        if w % 2 == 1 {
                            even[w / 2] = row[w - 1];
                        }
                    }
                    for (kx, line) in lines.chunks_exact_mut(width).enumerate() {
                        let dst = &mut line[at..at + run];
                        // Input column of output column x: x·sw + offset.
                        let offset = (kx * dw).cast_signed() - left.cast_signed();
                        match sw {
                            1 => shifted(dst, row, x0, offset),
                            2 => {
                                let phase = offset.rem_euclid(2);
                                let (even, odd) = phases.split_at(w.div_ceil(2));
                                let source = if phase == 0 { even } else { odd };
                                shifted(dst, source, x0, (offset - phase) / 2);
                            }
                            _ => {
                                for (x, v) in (x0..).zip(dst.iter_mut()) {
                                    let ix = (x * sw + kx * dw).wrapping_sub(left);
                                    *v = if ix < w { row[ix] } else { 0.0 };
                                }
                            }
                        }
                    }
                    pixel += run;
                }
                for (kx, line) in lines.chunks_exact(width).enumerate() {
                    let k = (c * kh + ky) * kw + kx;
                    for (j, values) in line.chunks_exact(PANEL).enumerate() {
                        panels[(j * self.depth + k) * PANEL..][..PANEL].copy_from_slice(values);
                    }
                }
            }
        }
    }
}

/// `dst[i] = source[x0 + i + shift]`, zero where that index is outside `source`.
fn shifted(dst: &mut [f32], source: &[f32], x0: usize, shift: isize) {
    let len = source.len().cast_signed();
    let begin = x0.cast_signed() + shift;
    // Valid i satisfy 0 ≤ begin + i < len.
    let lo = (-begin).clamp(0, dst.len().cast_signed()).cast_unsigned();
    let hi = (len - begin)
        .clamp(lo.cast_signed(), dst.len().cast_signed())
        .cast_unsigned();
    dst[..lo].fill(0.0);
    dst[hi..].fill(0.0);
    if lo < hi {
        let from = (begin + lo.cast_signed()).cast_unsigned();
        dst[lo..hi].copy_from_slice(&source[from..from + (hi - lo)]);
    }
}
