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

use super::conv::Onto;
use super::panels::{self, PANEL, ROWS, Start};
use super::{Conv2d, PARALLEL_MACS, Packed};

/// Weights of a widening 1×1 layer from which it runs on the panel kernel (256 KiB).
const WIDE_POINTWISE: usize = 64 << 10;
/// Floats of one block's panels: about half a core's L2 cache.
const BLOCK_BUDGET: usize = 32 << 10;

impl Conv2d {
    /// Whether the layer runs on the panel kernel (see the module doc); 1×1 layers at
    /// stride 1 only where they widen and their weights are large: the `gemm` crate
    /// packs the weights again at every call, which ResNet-50's 256→1024 and 512→2048
    /// layers paid for (14–18% slower there), while narrowing layers ran faster on it.
    pub(super) fn unfold_fits(&self) -> bool {
        let pointwise = self.kernel == [1, 1] && self.stride == [1, 1];
        let wide_pointwise = self.out_channels > self.in_channels
            && self.out_channels.saturating_mul(self.in_channels) >= WIDE_POINTWISE;
        self.groups == 1
            && (!pointwise || wide_pointwise)
            && !self.winograd_fits()
            && !self.direct_fits()
            && panels::available()
    }

    /// The weights as the panel kernel's A tiles.
    pub(super) fn unfold_weights(&self) -> Packed {
        let k = self.in_channels * self.kernel[0] * self.kernel[1];
        Packed::Unfold(panels::tiled(self.out_channels, k, &self.weight, k))
    }

    /// One image `[cin, h, w]` (`(input, [h, w])`) into `out` `[cout, oh, ow]`.
    pub(super) fn run_unfold(
        &self,
        tiles: &[f32],
        (input, size): (&[f32], [usize; 2]),
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
        onto: Onto,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let depth = cin * self.kernel[0] * self.kernel[1];
        let plane = oh * ow;
        if plane == 0 || cout == 0 {
            return;
        }
        assert!(input.len() >= cin * size[0] * size[1] && out.len() >= cout * plane);
        let threads = crate::engine::threads::ways();
        let padded = plane.next_multiple_of(PANEL);
        // Whole when the image's panels stay in L2 cache, or when the weights need
        // ranges (each range then reads every panel) and the panels fit the budget; else
        // a block at a time, each still in L2 when its product reads it (YOLO's 16→32
        // layer at stride 2 to 80×80 ran 1.5× slower unfolded whole, from L3).
        let unfolded = depth.saturating_mul(padded);
        let whole = unfolded <= L2_UNFOLD
            || (unfolded <= SHARED_UNFOLD && cout.saturating_mul(depth) > A_BUDGET);
        let cut = Cut::new(plane, depth, cout, threads, whole);
        let layer = Unfold {
            conv: self,
            input,
            size,
            out_width: ow,
            pads,
            depth,
        };
        let out = Shared(out.as_mut_ptr(), cout * plane);
        // Task `task`'s product, from the panels of its block.
        let multiply = |task: usize, block_panels: &[f32]| {
            let (b, r) = (task / cut.ranges, task % cut.ranges);
            let (pixels, row) = (cut.pixels(b), r * cut.rows);
            let (first, count) = (pixels.start, pixels.len());
            let rows = cut.rows.min(cout - row);
            // SAFETY: this task alone writes rows row..row + rows, columns first..first +
            // count of the output; `out` holds cout · plane floats, as asserted above.
            unsafe {
                panels::multiply_tiled_into(
                    rows,
                    count,
                    depth,
                    (&tiles[row / ROWS * depth * ROWS..], depth * ROWS),
                    block_panels,
                    out.from(row * plane + first, plane),
                    if onto.accumulate {
                        Start::AccumulateRowBias(&self.bias[row..])
                    } else {
                        Start::RowBias(&self.bias[row..])
                    },
                    onto.relu,
                    1,
                );
            }
        };
        let lines = |width: usize| Lines {
            lines: vec![0.0; self.kernel[1] * width],
            phases: Vec::new(),
        };
        let tasks = cut.blocks * cut.ranges;
        let macs = plane.saturating_mul(depth).saturating_mul(cout);
        let parallel = threads > 1 && tasks > 1 && macs >= PARALLEL_MACS;
        use rayon::prelude::*;
        if parallel {
            crate::engine::threads::entering_parallel_region();
        }
        if whole {
            // The image unfolded once (a share of its panels per thread), then every
            // task's product reads its block's panels.
            let mut unfolded = super::reuse::for_overwrite(depth * padded);
            let share = if parallel {
                padded.div_ceil(PANEL).div_ceil(threads)
            } else {
                padded / PANEL
            };
            let fill = |own: &mut Lines, (j, panels): (usize, &mut [f32])| {
                let first = j * share * PANEL;
                layer.fill(own, panels, first, (share * PANEL).min(plane - first));
            };
            let chunk = depth * PANEL * share;
            if parallel {
                unfolded
                    .par_chunks_mut(chunk)
                    .enumerate()
                    .for_each_init(|| lines(share * PANEL), fill);
            } else {
                let mut own = lines(share * PANEL);
                unfolded
                    .chunks_mut(chunk)
                    .enumerate()
                    .for_each(|piece| fill(&mut own, piece));
            }
            let task = |task: usize| {
                let first = cut.pixels(task / cut.ranges).start;
                multiply(task, &unfolded[first / PANEL * depth * PANEL..]);
            };
            if parallel {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
            super::reuse::keep(unfolded);
            return;
        }
        // A block at a time into each thread's own panels; a thread's tasks come in runs
        // of one block's ranges, so it unfolds each block once.
        let width = cut.width();
        let own = || (lines(width), vec![0.0; depth * width], None);
        let task = |(own, block_panels, holds): &mut (Lines, Vec<f32>, Option<usize>),
                    task: usize| {
            let b = task / cut.ranges;
            if *holds != Some(b) {
                let pixels = cut.pixels(b);
                layer.fill(own, block_panels, pixels.start, pixels.len());
                *holds = Some(b);
            }
            multiply(task, block_panels);
        };
        if parallel {
            (0..tasks).into_par_iter().for_each_init(own, task);
        } else {
            let mut own = own();
            (0..tasks).for_each(|t| task(&mut own, t));
        }
    }
}

/// Floats of an image unfolded whole, once for all its tasks (16 MiB).
const SHARED_UNFOLD: usize = 4 << 20;
/// Floats of an image unfolded whole that stay in a core's L2 cache (1 MiB).
const L2_UNFOLD: usize = 256 << 10;
/// Floats of weights one task multiplies by (768 KiB: inside a core's L2 cache).
const A_BUDGET: usize = 192 << 10;

/// How a layer's product is cut into tasks: blocks of pixels × ranges of output channels.
/// The kernel streams A (the weights) once per group of 4 panels, so an image small
/// enough is unfolded whole, once, and cut into ranges of weights that stay in L2 while
/// every group streams past them (each weight read from memory once), threads sharing
/// out the ranges first; a larger image goes a block at a time (at least a register
/// tile of the AVX-512 kernel, 64 pixels) into each thread's own panels.
///
/// ResNet-50's 512-channel stride-2 3×3 layer (49 pixels, 9.4 MB of weights), cut into
/// blocks of 16 pixels, read its weights 4 times at a quarter of the tile's width: 5.1 ms
/// in the model, against 4.2 as one block, and 2.2 with the kernel's prefetch of the next
/// row tile (one thread). With weights in ranges that fit L2 and the image unfolded once
/// for all of them, such layers gained 1.6–1.8× on 2 threads (1.3–1.5× before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    plane: usize,
    /// Panels of 16 pixels in the image, shared out evenly among the blocks.
    panels: usize,
    blocks: usize,
    /// Output channels per range: whole tiles of A's rows.
    rows: usize,
    ranges: usize,
}

impl Cut {
    /// Panels in a register tile of the AVX-512 kernel.
    const WIDE: usize = 4;
    /// Output channels per range at least, so unfolding a block again stays cheap beside
    /// its product.
    const MIN_ROWS: usize = 4 * ROWS;

    /// `whole`: the image is unfolded once for every task (else each block by the tasks
    /// that multiply it).
    fn new(plane: usize, depth: usize, cout: usize, threads: usize, whole: bool) -> Self {
        let panels = plane.div_ceil(PANEL).max(1);
        let most_rows = cout.div_ceil(Self::MIN_ROWS).max(1);
        let (mut blocks, mut ranges) = if whole {
            // One block, and ranges of weights that stay in L2 cache while every group
            // of panels streams past them: each weight is read from memory once.
            (
                1,
                cout.div_ceil((A_BUDGET / depth.max(1)).max(Self::MIN_ROWS)),
            )
        } else {
            let per_block = (BLOCK_BUDGET / (depth.max(1) * PANEL)).max(Self::WIDE);
            (panels.div_ceil(per_block), 1)
        };
        if threads > 1 {
            let wanted = 2 * threads;
            if blocks * ranges < wanted {
                ranges = ranges.max(wanted.div_ceil(blocks).min(most_rows));
                blocks = blocks.max(wanted.div_ceil(ranges));
            }
            // Whole rounds of tasks for the threads, where the panels allow.
            if ranges == 1 {
                blocks = blocks.next_multiple_of(threads);
            }
        }
        let rows = cout.div_ceil(ranges).next_multiple_of(ROWS).max(ROWS);
        Self {
            plane,
            panels,
            blocks: blocks.clamp(1, panels),
            rows,
            ranges: cout.div_ceil(rows).max(1),
        }
    }

    /// The pixels of block `b`: whole panels from the first, the image's last pixel at most.
    fn pixels(&self, b: usize) -> std::ops::Range<usize> {
        let panel = |b: usize| b * self.panels / self.blocks;
        (panel(b) * PANEL).min(self.plane)..(panel(b + 1) * PANEL).min(self.plane)
    }

    /// Pixels of the widest block, in whole panels.
    fn width(&self) -> usize {
        self.panels.div_ceil(self.blocks) * PANEL
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

/// One thread's buffers for unfolding, reused from block to block.
struct Lines {
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
    fn fill(&self, scratch: &mut Lines, panels: &mut [f32], first: usize, count: usize) {
        if self.conv.kernel == [1, 1]
            && self.conv.stride == [1, 1]
            && self.pads == [(0, 0), (0, 0)]
            && self.size[1] == self.out_width
        {
            self.fill_pointwise(panels, first, count);
            return;
        }
        if self.conv.kernel == [1, 1] && self.pads == [(0, 0), (0, 0)] {
            self.fill_subsampled(panels, first, count);
            return;
        }
        let [h, w] = self.size;
        let [kh, kw] = self.conv.kernel;
        let [sh, sw] = self.conv.stride;
        let [dh, dw] = self.conv.dilation;
        let (ow, left) = (self.out_width, self.pads[1].0);
        let width = count.div_ceil(PANEL) * PANEL;
        let Lines { lines, phases } = scratch;
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

    /// [`Unfold::fill`] for a 1×1 layer at stride 1 without padding: row `c` of panel `j`
    /// is input channel `c` at pixels `first + 16j ..`, copied 16 floats at a time, each
    /// panel written in order (through the general path's lines, ResNet-50's 512→128
    /// layer spent more time in `memmove`'s calls for runs of one image row than in its
    /// product).
    fn fill_pointwise(&self, panels: &mut [f32], first: usize, count: usize) {
        let plane = self.size[0] * self.size[1];
        for (start, valid, panel) in self.panels_of(panels, first, count) {
            for (c, dst) in panel.enumerate() {
                let src = &self.input[c * plane + start..][..valid];
                // Whole panels as one 64-byte move (a slice copy here became a call).
                if let (Ok(whole), Some(values)) = (
                    <&mut [f32; PANEL]>::try_from(&mut *dst),
                    src.first_chunk::<PANEL>(),
                ) {
                    *whole = *values;
                } else {
                    dst[..valid].copy_from_slice(src);
                    dst[valid..].fill(0.0);
                }
            }
        }
    }

    /// [`Unfold::fill`] for a strided 1×1 layer without padding (ResNet's downsampling
    /// shortcuts): each panel's 16 pixels' input offsets found once, then gathered from
    /// every channel (through the general path, every row of every block was split into
    /// its phases and copied in runs of a few dozen floats, in calls).
    fn fill_subsampled(&self, panels: &mut [f32], first: usize, count: usize) {
        let [h, w] = self.size;
        let [sh, sw] = self.conv.stride;
        let ow = self.out_width;
        for (start, valid, panel) in self.panels_of(panels, first, count) {
            let mut offsets = [0usize; PANEL];
            for (lane, offset) in offsets.iter_mut().enumerate().take(valid) {
                let pixel = start + lane;
                *offset = (pixel / ow) * sh * w + (pixel % ow) * sw;
            }
            for (c, dst) in panel.enumerate() {
                let image = &self.input[c * h * w..][..h * w];
                for (d, offset) in dst.iter_mut().zip(&offsets[..valid]) {
                    *d = image[*offset];
                }
                dst[valid..].fill(0.0);
            }
        }
    }

    /// The panels of pixels `first..first + count` as (first pixel, valid pixels, one
    /// 16-float row per input channel), for the 1×1 fills.
    fn panels_of<'p>(
        &self,
        panels: &'p mut [f32],
        first: usize,
        count: usize,
    ) -> impl Iterator<Item = (usize, usize, impl Iterator<Item = &'p mut [f32]>)> {
        let channels = self.conv.in_channels;
        panels
            .chunks_exact_mut(self.depth * PANEL)
            .take(count.div_ceil(PANEL))
            .enumerate()
            .map(move |(j, panel)| {
                let start = first + j * PANEL;
                let valid = PANEL.min(first + count - start);
                (start, valid, panel.chunks_exact_mut(PANEL).take(channels))
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cut covers the image's pixels with blocks of whole panels, in order, none
    /// empty, none wider than its scratch; and the output channels with ranges of whole
    /// row tiles; and a task for every thread where the layer has that many.
    #[test]
    fn cuts_cover_every_pixel_and_channel_once() {
        for plane in [1, 7, 16, 49, 196, 785, 3136, 25600] {
            for depth in [9, 576, 4608] {
                for cout in [1, 8, 100, 512, 2048] {
                    for threads in [1, 2, 3, 8, 16] {
                        for whole in [true, false] {
                            let cut = Cut::new(plane, depth, cout, threads, whole);
                            let what = format!("{plane} {depth} {cout} {threads} {whole}: {cut:?}");
                            let mut next = 0;
                            for b in 0..cut.blocks {
                                let pixels = cut.pixels(b);
                                assert_eq!(pixels.start, next, "{what}");
                                assert!(pixels.start.is_multiple_of(PANEL), "{what}");
                                assert!(
                                    !pixels.is_empty() && pixels.len() <= cut.width(),
                                    "{what}"
                                );
                                next = pixels.end;
                            }
                            assert_eq!(next, plane, "{what}");
                            assert!(cut.rows.is_multiple_of(ROWS), "{what}");
                            assert!(cut.ranges * cut.rows >= cout, "{what}");
                            assert!((cut.ranges - 1) * cut.rows < cout, "{what}");
                            if whole && threads == 1 {
                                assert_eq!(cut.blocks, 1, "{what}");
                            }
                            let most = plane.div_ceil(PANEL) * cout.div_ceil(Cut::MIN_ROWS);
                            assert!(cut.blocks * cut.ranges >= threads.min(most), "{what}");
                        }
                    }
                }
            }
        }
    }
}
