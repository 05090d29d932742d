//! Max and average pooling as direct loops, and global average pooling.

use super::window::{Layout, Reduce};
use super::{Dense, Loop, fmax, rank4, window_out_2d};
use crate::engine::EngineError;
use crate::engine::limits::{Cap, F32};

/// [`Pool::run_inside`]'s loops, compiled for the best CPU at hand.
struct Inside<'a> {
    pool: &'a Pool,
    input: &'a [f32],
    size: [usize; 2],
    /// Padding, read as −∞: max pools only (`Pool::padded_max_fits`), strided ones.
    pads: [(usize, usize); 2],
    out_size: [usize; 2],
    out: &'a mut [f32],
}

impl Loop for Inside<'_> {
    #[inline(always)]
    fn run(self) {
        let [h, w] = self.size;
        let [oh, ow] = self.out_size;
        let [kh, kw] = self.pool.kernel;
        let [sh, sw] = self.pool.stride;
        let max = self.pool.kind == PoolKind::Max;
        #[expect(clippy::cast_precision_loss, reason = "window sizes are small")]
        let inv = 1.0 / (kh * kw) as f32;
        let [(top, _), (left, right)] = self.pads;
        let padded = w + left + right;
        // One window row's reduction, its padding columns −∞ from start to end.
        let mut rows = vec![f32::NEG_INFINITY; padded];
        let (mut even, mut odd) = (vec![0f32; padded.div_ceil(2)], vec![0f32; padded / 2]);
        let reduce = |dst: &mut [f32], src: &[f32]| {
            if max {
                dst.iter_mut().zip(src).for_each(|(a, t)| *a = fmax(*a, *t));
            } else {
                dst.iter_mut().zip(src).for_each(|(a, t)| *a += *t);
            }
        };
        if oh == 0 || ow == 0 {
            return;
        }
        if sh == 1 && sw == 1 {
            // Small planes (YOLO's SPPF: 5×5 on 20×20) in whole-plane passes, separably:
            // across, position p = y·w + x reduces p .. p + kw (one contiguous pass per
            // tap; the `kw − 1` positions past each row's end are dropped at the end),
            // then down, p reduces p, p + w, .. p + (kh − 1)·w: kh + kw − 2 passes
            // instead of kh·kw − 1.
            let span = (oh - 1) * w + ow;
            let across = span + (kh - 1) * w;
            let (mut rows_done, mut wide) = (vec![0f32; across], vec![0f32; span]);
            for (plane, dst) in self
                .input
                .chunks_exact(h * w)
                .zip(self.out.chunks_exact_mut(oh * ow))
            {
                rows_done.copy_from_slice(&plane[..across]);
                for i in 1..kw {
                    reduce(&mut rows_done, &plane[i..][..across]);
                }
                wide.copy_from_slice(&rows_done[..span]);
                for j in 1..kh {
                    reduce(&mut wide, &rows_done[j * w..][..span]);
                }
                for (y, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
                    dst_row.copy_from_slice(&wide[y * w..][..ow]);
                    if !max {
                        dst_row.iter_mut().for_each(|v| *v *= inv);
                    }
                }
            }
            return;
        }
        for (plane, dst) in self
            .input
            .chunks_exact(h * w)
            .zip(self.out.chunks_exact_mut(oh * ow))
        {
            for (y, dst_row) in dst.chunks_exact_mut(ow).enumerate() {
                // The window's input rows, padding rows left out (−∞ takes no part in
                // a max); every window has one (`padded_max_fits`).
                let mut window = (0..kh)
                    .map(|j| (y * sh + j).wrapping_sub(top))
                    .filter(|iy| *iy < h);
                let inner = &mut rows[left..left + w];
                if let Some(first) = window.next() {
                    inner.copy_from_slice(&plane[first * w..][..w]);
                }
                for iy in window {
                    reduce(inner, &plane[iy * w..][..w]);
                }
                let w = padded;
                // Across: output x reduces rows[x·sw .. x·sw + kw]. At stride 2 the row is
                // split into its even and odd columns first, so every tap is a contiguous
                // (vectorized) pass: tap j reads phase j % 2 from x + j / 2.
                match sw {
                    1 => {
                        dst_row.copy_from_slice(&rows[..ow]);
                        for j in 1..kw {
                            reduce(dst_row, &rows[j..j + ow]);
                        }
                    }
                    2 => {
                        super::phases::deinterleave(&rows, &mut even, &mut odd);
                        if w % 2 == 1 {
                            even[w / 2] = rows[w - 1];
                        }
                        dst_row.copy_from_slice(&even[..ow]);
                        for j in 1..kw {
                            let phase = if j % 2 == 0 { &even } else { &odd };
                            reduce(dst_row, &phase[j / 2..j / 2 + ow]);
                        }
                    }
                    _ => {
                        for (x, v) in dst_row.iter_mut().enumerate() {
                            let window = &rows[x * sw..x * sw + kw];
                            *v = window
                                .iter()
                                .skip(1)
                                .fold(window[0], |a, t| if max { fmax(a, *t) } else { a + t });
                        }
                    }
                }
                if !max {
                    dst_row.iter_mut().for_each(|v| *v *= inv);
                }
            }
        }
    }
}

/// Max or average pooling parameters.
#[derive(Debug, Clone)]
pub struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil: bool,
    pub kind: PoolKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// Average; `count_include_pad` divides by the window clipped to the padded input.
    Average {
        count_include_pad: bool,
    },
}

impl Pool {
    /// The output shape `[n, c, oh, ow]` on an input of `shape` with `pads`, checked
    /// against `cap`.
    ///
    /// # Errors
    /// A window larger than the padded input, or an output above the cap.
    pub fn out_shape(
        &self,
        shape: &[usize],
        pads: [(usize, usize); 2],
        cap: Cap,
    ) -> Result<[usize; 4], EngineError> {
        let [batch, channels, h, w] = rank4(shape, "pool")?;
        let bad = || EngineError::Invalid(format!("pool: window larger than input {h}×{w}"));
        let [oh, ow] = window_out_2d(
            [h, w],
            pads,
            self.kernel,
            self.stride,
            self.dilation,
            self.ceil,
        )
        .ok_or_else(bad)?;
        let out = [batch, channels, oh, ow];
        cap.check(&out, F32)?;
        Ok(out)
    }

    /// Runs on `x` `[n, c, h, w]` with pads `[(top, bottom), (left, right)]`.
    ///
    /// # Errors
    /// See [`Pool::out_shape`].
    pub fn run(
        &self,
        x: &Dense,
        pads: [(usize, usize); 2],
        cap: Cap,
    ) -> Result<Dense, EngineError> {
        let [batch, channels, oh, ow] = self.out_shape(&x.shape, pads, cap)?;
        let [_, _, h, w] = rank4(&x.shape, "pool")?;
        // Every output element is written below.
        let mut out = super::reuse::for_overwrite(batch * channels * oh * ow);
        if out.is_empty() {
            return Dense::new(out, vec![batch, channels, oh, ow]);
        }
        let [(top, bottom), (left, right)] = pads;
        if self.padded_max_fits([h, w], [oh, ow], pads) {
            cap.check(&[batch, channels, h + top + bottom, w + left + right], F32)?;
        }
        // Whole planes per piece, so the pieces spread over the pool when there are many
        // values to read.
        let (plane, out_plane) = (h * w, oh * ow);
        let taps = self.kernel[0] + self.kernel[1] - 1;
        let work = x.data.len().max(out.len()).saturating_mul(taps);
        let threads = crate::engine::threads::ways();
        let planes = batch * channels;
        if work >= super::PARALLEL_ELEMENTS && threads > 1 && planes > 1 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            let per = planes.div_ceil(threads);
            out.par_chunks_mut(per * out_plane)
                .enumerate()
                .for_each(|(i, dst)| {
                    let count = dst.len() / out_plane;
                    let src = &x.data[i * per * plane..][..count * plane];
                    self.run_planes(src, [h, w], [oh, ow], pads, dst);
                });
        } else {
            self.run_planes(&x.data, [h, w], [oh, ow], pads, &mut out);
        }
        Dense::new(out, vec![batch, channels, oh, ow])
    }

    /// Max with padding (YOLO's SPPF: 5×5, stride 1, pads 2): pads below the kernel leave
    /// a real value in every window, so padding with -∞ changes nothing, and the padded
    /// planes take the vectorized path.
    fn padded_max_fits(
        &self,
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        [(top, bottom), (left, right)]: [(usize, usize); 2],
    ) -> bool {
        let (ph, pw) = (h + top + bottom, w + left + right);
        self.kind == PoolKind::Max
            && self.dilation == [1, 1]
            && h > 0
            && w > 0
            && top.max(bottom) < self.kernel[0]
            && left.max(right) < self.kernel[1]
            && (oh - 1) * self.stride[0] + self.kernel[0] <= ph
            && (ow - 1) * self.stride[1] + self.kernel[1] <= pw
    }

    /// Planes `input` (`[h, w]` each) into `out` (`[oh, ow]` each).
    fn run_planes(
        &self,
        input: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        pads: [(usize, usize); 2],
        out: &mut [f32],
    ) {
        let inside = pads == [(0, 0), (0, 0)]
            && self.dilation == [1, 1]
            && (oh - 1) * self.stride[0] + self.kernel[0] <= h
            && (ow - 1) * self.stride[1] + self.kernel[1] <= w;
        // Strided max pools (the stems' 3×3 at stride 2): every tap a contiguous run of
        // the plane's column phases, the padding −∞ (never the max: every window holds a
        // value, `padded_max_fits`). On ShuffleNet's [24, 112, 112] (3×3, stride 2):
        // 91–92 µs against 96–97 for the row reduction below, the same hour.
        let windowed = self.kind == PoolKind::Max
            && self.stride != [1, 1]
            && (inside || self.padded_max_fits([h, w], [oh, ow], pads));
        if let Some(layout) = windowed
            .then(|| {
                Layout::new(
                    self.kernel,
                    self.stride,
                    self.dilation,
                    [h, w],
                    [oh, ow],
                    pads,
                )
            })
            .flatten()
        {
            let mut scratch = Vec::new();
            layout.prepare(&mut scratch, f32::NEG_INFINITY);
            for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                layout.run(plane, &mut scratch, dst, Reduce::Max);
            }
            return;
        }
        if inside {
            self.run_inside(input, [h, w], [oh, ow], out);
            return;
        }
        let [(top, bottom), (left, right)] = pads;
        let (ph, pw) = (h + top + bottom, w + left + right);
        if self.padded_max_fits([h, w], [oh, ow], pads) && self.stride != [1, 1] {
            // Row by row, the padding columns kept in the row buffer: no padded copy.
            self.run_rows(input, [h, w], pads, [oh, ow], out);
            return;
        }
        if self.padded_max_fits([h, w], [oh, ow], pads) {
            // Sized against the cap by `run`, for all planes at once.
            let mut padded = vec![f32::NEG_INFINITY; out.len() / (oh * ow) * ph * pw];
            for (plane, dst) in input
                .chunks_exact(h * w)
                .zip(padded.chunks_exact_mut(ph * pw))
            {
                for (row, dst_row) in plane
                    .chunks_exact(w)
                    .zip(dst[top * pw..].chunks_exact_mut(pw))
                {
                    dst_row[left..left + w].copy_from_slice(row);
                }
            }
            self.run_inside(&padded, [ph, pw], [oh, ow], out);
            return;
        }
        // Per output column: the first valid input column and how many follow.
        let cols: Vec<(usize, usize, usize)> =
            (0..ow).map(|x| self.span(x, pads[1], w, 1)).collect();
        // Indexed, not `chunks_exact(h · w)`: a plane may have no values (windows of
        // padding only).
        for (p, dst) in out.chunks_exact_mut(oh * ow).enumerate() {
            let plane = &input[p * h * w..][..h * w];
            for y in 0..oh {
                let (y0, ny, ypadded) = self.span(y, pads[0], h, 0);
                let dst_row = &mut dst[y * ow..][..ow];
                for (x, v) in dst_row.iter_mut().enumerate() {
                    let (x0, nx, xpadded) = cols[x];
                    *v = self.reduce(plane, w, (y0, ny), (x0, nx), ypadded * xpadded);
                }
            }
        }
    }

    /// Every window lies inside the input (no padding, no dilation): the window's rows are
    /// first reduced element-wise (contiguous, vectorized), then each output's `kw`
    /// neighbours along that row (vectorized again at strides 1 and 2).
    fn run_inside(&self, input: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2], out: &mut [f32]) {
        self.run_rows(input, [h, w], [(0, 0), (0, 0)], [oh, ow], out);
    }

    /// [`Pool::run_inside`] with `pads` read as −∞ (strided max pools).
    fn run_rows(
        &self,
        input: &[f32],
        size: [usize; 2],
        pads: [(usize, usize); 2],
        out_size: [usize; 2],
        out: &mut [f32],
    ) {
        super::on_best_cpu(Inside {
            pool: self,
            input,
            size,
            pads,
            out_size,
            out,
        });
    }

    /// The window of output index `o` along `axis`: first valid input index, how many valid
    /// taps, and how many taps fall inside the padded input (for `count_include_pad`).
    fn span(
        &self,
        o: usize,
        pads: (usize, usize),
        size: usize,
        axis: usize,
    ) -> (usize, usize, usize) {
        let (k, s, d) = (
            self.kernel[axis],
            self.stride[axis],
            self.dilation[axis].max(1),
        );
        // Taps are at `start + t·d` for t < k, in padded coordinates; counted in closed
        // form (a window can be as large as a crafted pad makes it).
        let start = o.saturating_mul(s);
        let taps_below = |end: usize| {
            if start >= end {
                0
            } else {
                (end - start).div_ceil(d).min(k)
            }
        };
        let padded = taps_below(size.saturating_add(pads.0).saturating_add(pads.1));
        let low = taps_below(pads.0);
        let high = taps_below(pads.0.saturating_add(size));
        let count = high.saturating_sub(low);
        let first = if count == 0 {
            0
        } else {
            start + low * d - pads.0
        };
        (first, count, padded)
    }

    fn reduce(
        &self,
        plane: &[f32],
        w: usize,
        (y0, ny): (usize, usize),
        (x0, nx): (usize, usize),
        padded: usize,
    ) -> f32 {
        let (dy, dx) = (self.dilation[0], self.dilation[1]);
        match self.kind {
            PoolKind::Max => {
                let mut best = f32::NEG_INFINITY;
                for j in 0..ny {
                    let row = &plane[(y0 + j * dy) * w..];
                    for i in 0..nx {
                        best = best.max(row[x0 + i * dx]);
                    }
                }
                best
            }
            PoolKind::Average { count_include_pad } => {
                let mut sum = 0.0;
                for j in 0..ny {
                    let row = &plane[(y0 + j * dy) * w..];
                    for i in 0..nx {
                        sum += row[x0 + i * dx];
                    }
                }
                let count = if count_include_pad { padded } else { ny * nx };
                #[expect(clippy::cast_precision_loss, reason = "window sizes are small")]
                let count = count.max(1) as f32;
                sum / count
            }
        }
    }
}

/// Mean over each `[h, w]` plane of `[n, c, h, w]` → `[n, c, 1, 1]`.
///
/// # Errors
/// The input is not rank 4.
pub fn global_average_pool(x: &Dense) -> Result<Dense, EngineError> {
    let [batch, channels, h, w] = rank4(&x.shape, "GlobalAveragePool")?;
    let out = if h * w == 0 {
        vec![0.0; batch * channels]
    } else {
        super::reduce(&x.data, [batch * channels, h * w, 1], super::Reduce::Mean)
    };
    Dense::new(out, vec![batch, channels, 1, 1])
}

#[cfg(test)]
mod tests;
