//! Depthwise convolution with channels as the vector lanes, for the layers the plane-by-plane
//! path ([`super::super::window`]) serves badly: small planes (a 7×7 output fills 7 of a
//! chunk's 8 lanes and pays a plane's setup for 49 values). [`LANES`] channels at a time
//! are interleaved into a bordered scratch (`[rows][columns][lane]`), every output is then
//! one vector of LANES channels, a tap one load and one FMA at any stride or dilation
//! (two output rows by up to [`MAX_RUN`] columns summed at once), and the block is
//! written back as planes.
//!
//! Invariants:
//! - The scratch's border (the padding) is zeroed when it is sized; each block rewrites only
//!   the interior lanes of its channels.
//! - A block's missing lanes (past the last channel) have zero weights and bias; what they
//!   compute is never stored.

use super::super::conv::Conv2d;
use super::interleave::{Placement, deinterleave, interleave};

/// Channels per block: one AVX2 register.
pub(in crate::engine::kernels) const LANES: usize = 8;

/// Outputs of a row summed at once: independent chains, 6 accumulators, a weight and a
/// load in 16 registers.
const MAX_RUN: usize = 6;

/// Pixels of the bordered scratch the blocked path takes at most (a 256 KiB scratch per
/// thread).
const MAX_PADDED: usize = 1 << 13;

/// One layer's geometry on one input size.
#[derive(Clone, Copy)]
pub(in crate::engine::kernels) struct Geometry {
    pub input: [usize; 2],
    pub output: [usize; 2],
    pub pads: [(usize, usize); 2],
}

impl Geometry {
    /// Whether a depthwise layer on this geometry takes the blocked path: input and output
    /// both under 16 columns across, where the plane-by-plane path wastes lanes and a
    /// plane's setup is a large part of it, and a bordered scratch of at most
    /// [`MAX_PADDED`] pixels (pads are the model's to choose: the scratch is [`LANES`]
    /// times the padded plane the size checks bound). MobileNetV3-Small, one thread: its
    /// 7×7 5×5 layers took 63 µs plane by plane and 39 blocked, its 14×14 ones 74 and 55,
    /// the 14→7 stride-2 one 68 and 35. Wider inputs cost more to copy than they save: its
    /// 28→14 stride-2 layer took 36 µs plane by plane and 48 blocked.
    pub(in crate::engine::kernels) fn suits_blocks(&self) -> bool {
        let ([h, w], [(t, b), (l, r)]) = (self.input, self.pads);
        let pixels = h
            .checked_add(t)
            .and_then(|v| v.checked_add(b))
            .zip(w.checked_add(l).and_then(|v| v.checked_add(r)))
            .and_then(|(rows, columns)| rows.checked_mul(columns));
        w < 16 && self.output[1] < 16 && pixels.is_some_and(|p| p <= MAX_PADDED)
    }

    /// Rows and columns of the bordered scratch.
    fn padded(&self) -> [usize; 2] {
        let ([h, w], [(t, b), (l, r)]) = (self.input, self.pads);
        [h + t + b, w + l + r]
    }
}

/// A thread's buffers: the bordered input block and the block of outputs.
#[derive(Default)]
pub(in crate::engine::kernels) struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
}

impl Conv2d {
    /// The weights as blocks of [`LANES`] channels, tap-major (`[block][tap][lane]`), the
    /// lanes past the last channel zero.
    pub(in crate::engine::kernels) fn depthwise_blocks(&self) -> Vec<f32> {
        let taps = self.kernel[0] * self.kernel[1];
        let channels = self.out_channels;
        let blocks = channels.div_ceil(LANES);
        let mut packed = vec![0f32; blocks * taps * LANES];
        for (c, weights) in self
            .weight
            .chunks_exact(taps.max(1))
            .enumerate()
            .take(channels)
        {
            let (block, lane) = (c / LANES, c % LANES);
            for (t, &w) in weights.iter().enumerate() {
                packed[(block * taps + t) * LANES + lane] = w;
            }
        }
        packed
    }

    /// One block of up to [`LANES`] channels: `input` holds their planes (`[lanes, h, w]`),
    /// `out` receives theirs (`[lanes, oh, ow]`), `packed` is the block's weights.
    pub(in crate::engine::kernels) fn depthwise_block(
        &self,
        packed: &[f32],
        first_channel: usize,
        geometry: Geometry,
        input: &[f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let [h, w] = geometry.input;
        let [oh, ow] = geometry.output;
        let [rows, columns] = geometry.padded();
        let lanes = out.len() / (oh * ow).max(1);
        assert!(
            (1..=LANES).contains(&lanes)
                && input.len() == lanes * h * w
                && out.len() == lanes * oh * ow
                && packed.len() == self.kernel[0] * self.kernel[1] * LANES,
            "depthwise block sizes"
        );
        let padded = rows * columns * LANES;
        if scratch.input.len() != padded {
            scratch.input.clear();
            scratch.input.resize(padded, 0.0);
        }
        scratch.output.resize(oh * ow * LANES, 0.0);
        let [(top, _), (left, _)] = geometry.pads;
        let place = Placement {
            size: [h, w],
            columns,
            top,
            left,
        };
        interleave(input, lanes, place, &mut scratch.input);
        let mut bias = [0f32; LANES];
        for (lane, b) in bias.iter_mut().enumerate().take(lanes) {
            *b = self.bias[first_channel + lane];
        }
        sum_block(self, packed, bias, geometry, scratch);
        if let Some(hard) = self.hard {
            hard.apply(&mut scratch.output);
        }
        deinterleave(&scratch.output, lanes, out);
    }
}

/// Every output of a block from the bordered scratch into `scratch.output`
/// (`[oh][ow][lane]`), bias and ReLU included.
fn sum_block(
    conv: &Conv2d,
    packed: &[f32],
    bias: [f32; LANES],
    g: Geometry,
    scratch: &mut Scratch,
) {
    let [kh, kw] = conv.kernel;
    let [sh, sw] = conv.stride;
    let [dh, dw] = conv.dilation;
    let [oh, ow] = g.output;
    let [rows, columns] = g.padded();
    // The farthest read (the last output's last tap) and write, checked once for the
    // unchecked loads and stores of the vector path.
    // Checked arithmetic: a product that wrapped would pass a bound it breaks.
    let reach = |outputs: usize, stride: usize, taps: usize, dilation: usize| {
        outputs
            .checked_sub(1)?
            .checked_mul(stride)?
            .checked_add(taps.checked_sub(1)?.checked_mul(dilation)?)
    };
    let within = |n: Option<usize>, bound: usize| n.is_some_and(|n| n < bound);
    assert!(
        within(reach(oh, sh, kh, dh), rows)
            && within(reach(ow, sw, kw, dw), columns)
            && scratch.input.len() >= rows * columns * LANES
            && scratch.output.len() >= oh * ow * LANES
            && packed.len() >= kh * kw * LANES,
        "depthwise window inside the padded input"
    );
    let shape = Shape {
        kernel: [kh, kw],
        stride: [sh, sw],
        dilation: [dh, dw],
        columns,
        relu: conv.relu,
        ow,
    };
    let (input, output) = (&scratch.input[..], &mut scratch.output[..]);
    #[cfg(target_arch = "x86_64")]
    if super::super::panels::available() {
        // SAFETY: the CPU has AVX2 and FMA; every read and write is inside the buffers
        // (checked above).
        unsafe { avx2::sum_block(shape, packed, bias, input, output, oh) };
        return;
    }
    sum_portable(shape, packed, bias, input, output, oh);
}

/// [`sum_block`] on any CPU.
fn sum_portable(
    shape: Shape,
    packed: &[f32],
    bias: [f32; LANES],
    input: &[f32],
    output: &mut [f32],
    oh: usize,
) {
    for_each_run(oh, shape.ow, |at, rows, n| {
        for oy in at.oy..at.oy + rows {
            shape.sum(packed, bias, input, Position { oy, ox: at.ox }, n, output);
        }
    });
}

/// The outputs in blocks of two rows (one for an odd last row) by runs of at most
/// [`MAX_RUN`] columns, as even as they go (a 7-wide row is 4 + 3, not 6 + 1): `run(start,
/// rows, columns)`. Two rows share each weight load and give twice the independent sums.
#[inline(always)]
fn for_each_run(oh: usize, ow: usize, mut run: impl FnMut(Position, usize, usize)) {
    let runs = ow.div_ceil(MAX_RUN);
    let length = ow.div_ceil(runs.max(1));
    for oy in (0..oh).step_by(2) {
        let rows = (oh - oy).min(2);
        let mut ox = 0;
        while ox < ow {
            let n = length.min(ow - ox);
            run(Position { oy, ox }, rows, n);
            ox += n;
        }
    }
}

/// What the inner loop needs of the layer.
#[derive(Clone, Copy)]
struct Shape {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Columns of the bordered scratch.
    columns: usize,
    relu: bool,
    /// Output columns.
    ow: usize,
}

#[derive(Clone, Copy)]
struct Position {
    oy: usize,
    ox: usize,
}

impl Shape {
    /// Outputs `ox..ox + n` of row `oy`, on any CPU.
    fn sum(
        &self,
        packed: &[f32],
        bias: [f32; LANES],
        input: &[f32],
        at: Position,
        n: usize,
        out: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let mut acc = [bias; MAX_RUN];
        let acc = &mut acc[..n];
        for ky in 0..kh {
            let row = (at.oy * sh + ky * dh) * self.columns;
            for kx in 0..kw {
                let weights = &packed[(ky * kw + kx) * LANES..][..LANES];
                for (r, sums) in acc.iter_mut().enumerate() {
                    let pixel = row + (at.ox + r) * sw + kx * dw;
                    let values = &input[pixel * LANES..][..LANES];
                    for ((sum, w), v) in sums.iter_mut().zip(weights).zip(values) {
                        *sum += w * v;
                    }
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let dst = &mut out[((at.oy * self.ow) + at.ox + r) * LANES..][..LANES];
            for (d, &s) in dst.iter_mut().zip(sums) {
                *d = if self.relu {
                    super::super::fmax(s, 0.0)
                } else {
                    s
                };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::{LANES, Position, Shape, for_each_run};

    /// [`super::sum_block`] in AVX2 registers: per tap one weight vector, then one load
    /// and one FMA per output of the run.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the reads and writes are those `super::sum_block`
    /// checked.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_block(
        shape: Shape,
        packed: &[f32],
        bias: [f32; LANES],
        input: &[f32],
        out: &mut [f32],
        oh: usize,
    ) {
        // SAFETY: 8 floats.
        let bias = unsafe { _mm256_loadu_ps(bias.as_ptr()) };
        let (packed, input, out) = (packed.as_ptr(), input.as_ptr(), out.as_mut_ptr());
        for_each_run(oh, shape.ow, |at, rows, n| {
            macro_rules! sum {
                ($r:literal, $n:literal) => {
                    // SAFETY: as this function's.
                    unsafe { run::<$r, $n>(shape, packed, bias, input, at, out) }
                };
            }
            match (rows, n) {
                (1, 1) => sum!(1, 1),
                (1, 2) => sum!(1, 2),
                (1, 3) => sum!(1, 3),
                (1, 4) => sum!(1, 4),
                (1, 5) => sum!(1, 5),
                (1, _) => sum!(1, 6),
                (_, 1) => sum!(2, 1),
                (_, 2) => sum!(2, 2),
                (_, 3) => sum!(2, 3),
                (_, 4) => sum!(2, 4),
                (_, 5) => sum!(2, 5),
                _ => sum!(2, 6),
            }
        });
    }

    /// Outputs `ox..ox + N` of rows `oy..oy + R`.
    ///
    /// # Safety
    /// As [`sum_block`]'s; inlined into it, with its features.
    #[inline(always)]
    unsafe fn run<const R: usize, const N: usize>(
        shape: Shape,
        packed: *const f32,
        bias: __m256,
        input: *const f32,
        at: Position,
        out: *mut f32,
    ) {
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.stride;
        let [dh, dw] = shape.dilation;
        let mut acc = [[bias; N]; R];
        let step = sw * LANES;
        let row_step = sh * shape.columns * LANES;
        // SAFETY (every pointer below): inside the buffers, as the caller checked.
        unsafe {
            for ky in 0..kh {
                let top = input.add(((at.oy * sh + ky * dh) * shape.columns + at.ox * sw) * LANES);
                let weights = packed.add(ky * kw * LANES);
                for kx in 0..kw {
                    let w = _mm256_loadu_ps(weights.add(kx * LANES));
                    let first = top.add(kx * dw * LANES);
                    for (r, row) in acc.iter_mut().enumerate() {
                        for (c, sums) in row.iter_mut().enumerate() {
                            let at = first.add(r * row_step + c * step);
                            *sums = _mm256_fmadd_ps(_mm256_loadu_ps(at), w, *sums);
                        }
                    }
                }
            }
            for (r, row) in acc.into_iter().enumerate() {
                let dst = out.add(((at.oy + r) * shape.ow + at.ox) * LANES);
                for (c, sums) in row.into_iter().enumerate() {
                    let sums = if shape.relu {
                        _mm256_max_ps(sums, _mm256_setzero_ps())
                    } else {
                        sums
                    };
                    _mm256_storeu_ps(dst.add(c * LANES), sums);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A narrow geometry whose pads, the model's choice, would make the blocked scratch huge
    /// (a 1×1 window at stride 100000 down gives 21 rows) stays on the plane path, whose
    /// scratch the size checks bound; a 7×7 one takes the blocked path.
    #[test]
    fn huge_pads_keep_a_layer_off_the_blocked_path() {
        let huge = Geometry {
            input: [1, 8],
            output: [21, 8],
            pads: [(1_000_000, 1_000_000), (0, 0)],
        };
        assert!(!huge.suits_blocks());
        let overflowing = Geometry {
            pads: [(usize::MAX, 1), (0, 0)],
            ..huge
        };
        assert!(!overflowing.suits_blocks());
        let small = Geometry {
            input: [7, 7],
            output: [7, 7],
            pads: [(2, 2), (2, 2)],
        };
        assert!(small.suits_blocks());
    }

    /// The AVX2 sums and the portable ones agree on every output (lanes included) of a
    /// strided, dilated 5×3 window over a 9×13 output: odd rows (a last single row), runs
    /// of 5 and 4 columns.
    #[test]
    fn the_vector_sums_match_the_portable_ones() {
        if !super::super::super::panels::available() {
            return;
        }
        let shape = Shape {
            kernel: [5, 3],
            stride: [2, 1],
            dilation: [1, 2],
            columns: 20,
            relu: true,
            ow: 13,
        };
        let (oh, rows) = (9, 2 * 8 + 4 + 1);
        let ramp = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 201) as f32 / 100.0 - 1.0)
                .collect()
        };
        let input = ramp(rows * shape.columns * LANES, 3);
        let packed = ramp(15 * LANES, 5);
        let bias = [0.5, -0.25, 0.0, 1.0, -1.0, 0.125, 0.75, -0.5];
        let mut portable = vec![f32::NAN; oh * shape.ow * LANES];
        sum_portable(shape, &packed, bias, &input, &mut portable, oh);
        let mut vector = vec![f32::NAN; oh * shape.ow * LANES];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA; the farthest read, row (9 − 1)·2 + 4 = 20 <
        // 21 and column 12 + 4 = 16 < 20, and every write are inside the buffers.
        unsafe {
            avx2::sum_block(shape, &packed, bias, &input, &mut vector, oh);
        }
        for (i, (a, b)) in vector.iter().zip(&portable).enumerate() {
            assert!((a - b).abs() < 1e-5, "output {i}: {a} vs {b}");
        }
    }
}
