//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3): each 2×2 block
//! of output from a 4×4 block of input in 16 products instead of 36, so the layer's
//! multiply-adds drop 2.25×. The weights are transformed once at plan time into 16
//! matrices `[cin × cout]`, packed as the panel kernel's B; at run time each block of
//! output tiles is transformed, 64 input channels at a time, into 16 matrices
//! `[tiles × 64]` written straight in the panel kernel's A tiles and multiplied,
//! accumulating; then transformed back into the output with the bias and ReLU.
//!
//! Invariants:
//! - `Packed::Winograd` holds, per chunk of `CHUNK` input channels, 16 packed
//!   `[chunk × cout]` matrices: `16 · panels_len(cin, cout)` floats in all
//!   ([`Conv2d::prepare`]).
//! - Tiles are numbered row-major over the output (`t = ty · tiles_x + tx`); a block is a
//!   range of them, and parallel blocks write disjoint 2×2 output tiles.

use super::{Loop, on_best_cpu, panels};
use crate::engine::kernels::{Conv2d, Packed};
use split::Split;

/// Lanes of the transforms' arrays (one AVX2 register); tiles take the first `ROWS`.
const LANES: usize = 8;
const ROWS: usize = panels::ROWS;
/// Floats after each tile of A: a whole register is stored where a tile row takes 6.
const SLACK: usize = LANES - ROWS;
/// Input channels per pass: a block's tiles are transformed and multiplied this many
/// channels at a time, accumulating, so the transformed input stays in L2 cache (all
/// 576 channels of YOLO's deep layer at once went through L3 and cost as much as the
/// products).
const CHUNK: usize = 64;
/// Floats of one pass's transformed input, and of a block's 16 products (512 KiB each,
/// inside a core's L2 cache together): from 192 KiB, YOLO's 576→64 layer on 40×40 and
/// ResNet-50 gained 3–5% on one thread (fewer blocks, each reading the weights again).
const BLOCK_BUDGET: usize = 128 << 10;

type Lanes = [f32; LANES];

impl Conv2d {
    /// Whether this layer runs as Winograd F(2×2, 3×3): ungrouped 3×3, stride and dilation
    /// 1, enough channels on both sides for the transforms to pay (the stems keep the
    /// direct kernel), on a CPU with the panel kernel.
    pub(super) fn winograd_fits(&self) -> bool {
        self.groups == 1
            && self.kernel == [3, 3]
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && self.in_channels >= 16
            && self.out_channels >= 8
            && panels::available()
    }

    /// Plan time, after fusions have folded scales into the weights: the weights packed
    /// for the panel kernel when the layer takes the Winograd path. (1×1 layers stay on
    /// the `gemm` crate: as `Xᵀ · Wᵀ` on the panel kernel they ran 1.2–2.9× slower on
    /// ShuffleNet's shapes, `benches/kernels.rs`.)
    pub fn prepare(&mut self) {
        self.packed = if self.winograd_fits() {
            Packed::Winograd(transform_weights(
                &self.weight,
                self.in_channels,
                self.out_channels,
            ))
        } else if self.unfold_fits() {
            self.unfold_weights()
        } else if self.is_depthwise() && panels::available() {
            Packed::Depthwise(self.depthwise_blocks())
        } else {
            Packed::None
        };
    }

    /// One image `[cin, h, w]` into `out` `[cout, oh, ow]`.
    pub(super) fn run_winograd(
        &self,
        weights: &[f32],
        input: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let tiles_x = ow.div_ceil(2);
        let tiles = oh.div_ceil(2) * tiles_x;
        if tiles == 0 || cout == 0 {
            return;
        }
        assert!(input.len() >= cin * h * w && out.len() >= cout * oh * ow);
        assert_eq!(
            Some(weights.len()),
            panels::panels_len(cin, cout).map(|p| 16 * p),
            "Winograd weights not prepared"
        );
        let threads = crate::engine::threads::ways();
        let plan = Split::new(tiles, cin, cout, threads);
        let out = Shared(out.as_mut_ptr(), cout * oh * ow);
        let layer = Layer {
            conv: self,
            weights,
            input,
            size: [h, w],
            out_size: [oh, ow],
            pads,
            tiles_x,
        };
        let tasks = plan.blocks * plan.ranges;
        let scratch = || Scratch {
            transformed: vec![0.0; 16 * (plan.block / ROWS) * (cin.min(CHUNK) * ROWS + SLACK)],
            products: vec![0.0; 16 * plan.block * plan.width],
            rows: Vec::new(),
        };
        let run = |s: &mut Scratch, task: usize| {
            let (b, r) = (task / plan.ranges, task % plan.ranges);
            let first = b * plan.block;
            let start = r * plan.width;
            let channels = start..cout.min(start + plan.width);
            layer.block(s, first..tiles.min(first + plan.block), channels, out);
        };
        let macs = tiles.saturating_mul(16 * cin).saturating_mul(cout);
        if threads > 1 && tasks > 1 && macs >= super::PARALLEL_MACS {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            (0..tasks).into_par_iter().for_each_init(scratch, run);
        } else {
            let mut s = scratch();
            (0..tasks).for_each(|task| run(&mut s, task));
        }
    }
}

/// The output image `[cout, oh, ow]` as a pointer and its length: blocks on several
/// threads write disjoint tiles of it, each write checked against the length.
#[derive(Clone, Copy)]
struct Shared(*mut f32, usize);
// SAFETY: blocks write disjoint pixels, through `OutputTransform` only.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

/// One thread's buffers, reused from block to block.
struct Scratch {
    /// 16 matrices of `block × CHUNK` in the panel kernel's A tiles, each tile `SLACK`
    /// floats longer than its values.
    transformed: Vec<f32>,
    /// 16 products of `block × cout`, row-major.
    products: Vec<f32>,
    /// One channel's `d B`, for each of a tile's 4 rows and every tile of the block (see
    /// `InputTransform`).
    rows: Vec<f32>,
}

/// `U = G g Gᵀ` for every output and input channel: per chunk of `CHUNK` input channels,
/// 16 packed `[chunk × cout]` matrices.
fn transform_weights(weight: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &weight[(co * cin + ci) * 9..][..9];
            // G g: 4×3.
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = a;
                t[1][j] = 0.5 * (a + b + c);
                t[2][j] = 0.5 * (a - b + c);
                t[3][j] = c;
            }
            // (G g) Gᵀ: 4×4.
            for (i, row) in t.iter().enumerate() {
                let [a, b, c] = *row;
                let values = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                for (j, v) in values.into_iter().enumerate() {
                    u[((i * 4 + j) * cin + ci) * cout + co] = v;
                }
            }
        }
    }
    let mut packed = Vec::new();
    for c0 in (0..cin).step_by(CHUNK) {
        let channels = CHUNK.min(cin - c0);
        for e in 0..16 {
            let matrix = &u[(e * cin + c0) * cout..][..channels * cout];
            packed.extend(panels::pack(matrix, channels, cout, (cout, 1), 1.0));
        }
    }
    packed
}

/// One layer's run on one image: what every block reads.
struct Layer<'a> {
    conv: &'a Conv2d,
    /// The transformed weights (`Packed::Winograd`).
    weights: &'a [f32],
    input: &'a [f32],
    size: [usize; 2],
    out_size: [usize; 2],
    pads: [(usize, usize); 2],
    tiles_x: usize,
}

impl Layer<'_> {
    /// Tiles `tiles` × output channels `outputs` (starting on a panel): transform in, 16
    /// products, transform out.
    fn block(
        &self,
        s: &mut Scratch,
        tiles: std::ops::Range<usize>,
        outputs: std::ops::Range<usize>,
        out: Shared,
    ) {
        let (first, count) = (tiles.start, tiles.len());
        let (cin, cout) = (self.conv.in_channels, self.conv.out_channels);
        let width = outputs.len();
        debug_assert!(outputs.start.is_multiple_of(panels::PANEL) && outputs.end <= cout);
        let padded_cout = cout.next_multiple_of(panels::PANEL);
        for c0 in (0..cin).step_by(CHUNK) {
            let channels = CHUNK.min(cin - c0);
            let tile_stride = channels * ROWS + SLACK;
            let per_matrix = count.div_ceil(ROWS) * tile_stride;
            on_best_cpu(InputTransform {
                layer: self,
                first,
                count,
                channels: c0..c0 + channels,
                tile_stride,
                scratch: s,
            });
            // This chunk's 16 weight matrices start after the earlier chunks' 16 each;
            // in each, this range's panels after the earlier channels' ones.
            let weights = &self.weights[16 * c0 * padded_cout..];
            let packed = channels * padded_cout;
            let skip = outputs.start * channels;
            for e in 0..16 {
                panels::multiply_tiled(
                    count,
                    width,
                    channels,
                    (&s.transformed[e * per_matrix..][..per_matrix], tile_stride),
                    &weights[e * packed + skip..(e + 1) * packed],
                    (&mut s.products[e * count * width..][..count * width], width),
                    if c0 == 0 {
                        panels::Start::Zero
                    } else {
                        panels::Start::Accumulate
                    },
                    false,
                    1,
                );
            }
        }
        on_best_cpu(OutputTransform {
            layer: self,
            first,
            count,
            outputs,
            products: &s.products,
            out,
        });
    }
}

/// `V = Bᵀ d B` for every tile of a block and a chunk of input channels.
struct InputTransform<'l, 's> {
    layer: &'l Layer<'l>,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    tile_stride: usize,
    scratch: &'s mut Scratch,
}

impl Loop for InputTransform<'_, '_> {
    /// Separably, channel by channel: row `i` of every tile's 4×4 input becomes `d B`
    /// (4 values a tile, laid out in the block's tile order, so six tiles of A are one
    /// load even across a row's end), then the four rows become `Bᵀ d B`, stored a whole
    /// register at a time into the 16 matrices' tiles (each tile's depth `k` takes 6
    /// floats; the 2 more are overwritten by depth `k + 1` or land in the slack).
    #[inline(always)]
    fn run(self) {
        let Self {
            layer,
            first,
            count,
            channels,
            tile_stride,
            scratch,
        } = self;
        let [h, w] = layer.size;
        let (top, left) = (layer.pads[0].0, layer.pads[1].0);
        let tiles_x = layer.tiles_x;
        let groups = count.div_ceil(ROWS);
        let per_matrix = groups * tile_stride;
        // `along[(i · 4 + j) · stride + tile]`: output j of row i's `d B`.
        let stride = groups * ROWS + LANES;
        let along = &mut scratch.rows;
        along.clear();
        along.resize(16 * stride, 0.0);
        // The input rows the block reads in each channel.
        let rows = (2 * (first / tiles_x)).saturating_sub(top).min(h)
            ..(2 * ((first + count - 1) / tiles_x) + 4)
                .saturating_sub(top)
                .min(h);
        let end = channels.end;
        for (k, c) in channels.enumerate() {
            let plane = &layer.input[c * h * w..][..h * w];
            // Each channel's rows are a few cache lines 4·h·w bytes past the last's: too far
            // for the hardware prefetcher, which left every channel's first load waiting on
            // memory (a quarter of the transform's time).
            if c + 2 < end {
                let ahead = &layer.input[(c + 2) * h * w..][rows.start * w..rows.end * w];
                prefetch(ahead);
            }
            let mut t = first;
            while t < first + count {
                let (ty, tx) = (t / tiles_x, t % tiles_x);
                let run = (tiles_x - tx).min(first + count - t);
                let local = t - first;
                for i in 0..4 {
                    let iy = (2 * ty + i).wrapping_sub(top);
                    let row = (iy < h).then(|| &plane[iy * w..][..w]);
                    let (o0, rest) = along[i * 4 * stride..].split_at_mut(stride);
                    let (o1, rest) = rest.split_at_mut(stride);
                    let (o2, o3) = rest.split_at_mut(stride);
                    along_row(
                        row,
                        left,
                        tx,
                        [
                            &mut o0[local..][..run],
                            &mut o1[local..][..run],
                            &mut o2[local..][..run],
                            &mut o3[local..][..run],
                        ],
                    );
                }
                t += run;
            }
            let columns = Columns {
                along,
                stride,
                groups,
                tile_stride,
                depth: k,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this path runs only where the panel kernel does: AVX2 and FMA.
            unsafe {
                avx2::columns(&columns, &mut scratch.transformed[..16 * per_matrix]);
            }
            #[cfg(not(target_arch = "x86_64"))]
            columns.portable(&mut scratch.transformed[..16 * per_matrix]);
        }
    }
}

/// One channel's `d B` rows, to be combined into `Bᵀ d B` and stored at `depth` of
/// every tile of the 16 matrices.
struct Columns<'a> {
    along: &'a [f32],
    stride: usize,
    groups: usize,
    tile_stride: usize,
    depth: usize,
}

impl Columns<'_> {
    /// Checked in release too: the AVX2 version reads and writes through raw pointers.
    fn check(&self, out: &[f32]) {
        let per_matrix = self.groups * self.tile_stride;
        assert!(
            self.stride >= self.groups * ROWS + SLACK
                && self.along.len() >= 16 * self.stride
                && self.tile_stride >= (self.depth + 1) * ROWS + SLACK
                && out.len() >= 16 * per_matrix,
            "Winograd: transform buffers too small"
        );
    }

    /// The same in plain loops, so the module builds unchanged off x86-64 (where
    /// `winograd_fits` is false, so neither version runs).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn portable(&self, out: &mut [f32]) {
        self.check(out);
        let per_matrix = self.groups * self.tile_stride;
        for g in 0..self.groups {
            for j in 0..4 {
                let row = |i: usize| &self.along[(i * 4 + j) * self.stride + g * ROWS..][..LANES];
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                for l in 0..LANES {
                    let at = |i: usize| {
                        (i * 4 + j) * per_matrix + g * self.tile_stride + self.depth * ROWS + l
                    };
                    out[at(0)] = r0[l] - r2[l];
                    out[at(1)] = r1[l] + r2[l];
                    out[at(2)] = r2[l] - r1[l];
                    out[at(3)] = r1[l] - r3[l];
                }
            }
        }
    }
}

/// Asks for `values` in cache ahead of their use.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults, and SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// `d B` along one input row (`None`: a padding row) for `outputs[0].len()` tiles from
/// tile `tx`: tile `x` reads padded columns `2x .. 2x + 4`, input columns less `left`.
/// Rows of `Bᵀ`: (1 0 −1 0), (0 1 1 0), (0 −1 1 0), (0 1 0 −1).
#[inline(always)]
fn along_row(row: Option<&[f32]>, left: usize, tx: usize, outputs: [&mut [f32]; 4]) {
    let [o0, o1, o2, o3] = outputs;
    let run = o0.len();
    let Some(row) = row else {
        for o in [o0, o1, o2, o3] {
            o.fill(0.0);
        }
        return;
    };
    let w = row.len();
    let value = |q: usize| -> f32 {
        let q = q.wrapping_sub(left);
        if q < w { row[q] } else { 0.0 }
    };
    // Tiles whose four columns all lie inside the row: `lo .. hi`.
    let lo = left.div_ceil(2).saturating_sub(tx).min(run);
    let hi = ((w + left).saturating_sub(3).div_ceil(2))
        .saturating_sub(tx)
        .clamp(lo, run);
    for x in (0..lo).chain(hi..run) {
        let q = 2 * (tx + x);
        let (a, b, c, d) = (value(q), value(q + 1), value(q + 2), value(q + 3));
        o0[x] = a - c;
        o1[x] = b + c;
        o2[x] = c - b;
        o3[x] = b - d;
    }
    if lo < hi {
        // Input columns from the first inside tile's first one.
        let src = &row[2 * (tx + lo) - left..][..2 * (hi - lo) + 2];
        let (o0, o1) = (&mut o0[lo..hi], &mut o1[lo..hi]);
        let (o2, o3) = (&mut o2[lo..hi], &mut o3[lo..hi]);
        #[cfg(target_arch = "x86_64")]
        let done = if panels::available() {
            // SAFETY: the CPU has AVX2 (checked); the slices' lengths bound every access.
            unsafe { avx2::along_inside(src, [&mut *o0, &mut *o1, &mut *o2, &mut *o3]) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for x in done..hi - lo {
            let (a, b, c, d) = (src[2 * x], src[2 * x + 1], src[2 * x + 2], src[2 * x + 3]);
            o0[x] = a - c;
            o1[x] = b + c;
            o2[x] = c - b;
            o3[x] = b - d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
mod split;

/// `Y = Aᵀ m A` for every tile of a block and output channel, plus bias and ReLU, into
/// the output image.
struct OutputTransform<'l, 'p> {
    layer: &'l Layer<'l>,
    first: usize,
    count: usize,
    /// The output channels the products hold, `outputs.len()` values per row.
    outputs: std::ops::Range<usize>,
    products: &'p [f32],
    out: Shared,
}

impl Loop for OutputTransform<'_, '_> {
    #[inline(always)]
    fn run(self) {
        let Self {
            layer,
            first,
            count,
            outputs,
            products,
            out,
        } = self;
        let conv = layer.conv;
        let width = outputs.len();
        let [oh, ow] = layer.out_size;
        let plane = oh * ow;
        for local in 0..count {
            let t = first + local;
            let (y, x) = (2 * (t / layer.tiles_x), 2 * (t % layer.tiles_x));
            let (rows, cols) = ((oh - y).min(2), (ow - x).min(2));
            for c0 in outputs.clone().step_by(LANES) {
                let lanes = LANES.min(outputs.end - c0);
                let column = c0 - outputs.start;
                let mut m = [[0f32; LANES]; 16];
                let mut bias = [0f32; LANES];
                // Whole registers in fixed-size copies; the last few channels apart.
                if lanes == LANES {
                    for (e, me) in m.iter_mut().enumerate() {
                        me.copy_from_slice(
                            &products[(e * count + local) * width + column..][..LANES],
                        );
                    }
                    bias.copy_from_slice(&conv.bias[c0..][..LANES]);
                } else {
                    for (e, me) in m.iter_mut().enumerate() {
                        let at = (e * count + local) * width + column;
                        me[..lanes].copy_from_slice(&products[at..][..lanes]);
                    }
                    bias[..lanes].copy_from_slice(&conv.bias[c0..][..lanes]);
                }
                let y4 = output_tile(&m, &bias, conv.relu);
                // The tile's last value in its last channel bounds all its writes.
                let last = (c0 + lanes - 1) * plane + (y + rows - 1) * ow + x + cols - 1;
                assert!(last < out.1, "Winograd: output pixel out of range");
                for (i, row) in y4.iter().enumerate().take(rows) {
                    for (j, values) in row.iter().enumerate().take(cols) {
                        let at = (y + i) * ow + x + j;
                        for (lane, v) in values.iter().enumerate().take(lanes) {
                            // SAFETY: at most `last` (checked); this block's tiles are
                            // written by this block alone.
                            unsafe { *out.0.add((c0 + lane) * plane + at) = *v };
                        }
                    }
                }
            }
        }
    }
}

/// `Aᵀ m A + bias` on 8 lanes, `Aᵀ` = (1 1 1 0), (0 1 −1 −1); then ReLU when `relu`.
#[inline(always)]
fn output_tile(m: &[Lanes; 16], bias: &Lanes, relu: bool) -> [[Lanes; 2]; 2] {
    let mut s = [[[0f32; LANES]; 4]; 2];
    for j in 0..4 {
        for l in 0..LANES {
            let (a, b, c, d) = (m[j][l], m[4 + j][l], m[8 + j][l], m[12 + j][l]);
            s[0][j][l] = a + b + c;
            s[1][j][l] = b - c - d;
        }
    }
    let mut y = [[[0f32; LANES]; 2]; 2];
    for i in 0..2 {
        for l in 0..LANES {
            let r = &s[i];
            let mut v0 = r[0][l] + r[1][l] + r[2][l] + bias[l];
            let mut v1 = r[1][l] - r[2][l] - r[3][l] + bias[l];
            if relu {
                v0 = super::fmax(v0, 0.0);
                v1 = super::fmax(v1, 0.0);
            }
            y[i][0][l] = v0;
            y[i][1][l] = v1;
        }
    }
    y
}
