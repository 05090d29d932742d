//! A matrix times one column: squeeze-and-excite's fully connected 1×1 convolutions on a
//! 1×1 plane, and any product with one output column. The `gemm` crate packs the whole
//! matrix for such a product; a row of dot products streams it once instead. Inside a
//! model the matrix is cold (MobileNetV3's 576×144 layer read 330 KB in 28 µs, from
//! memory), so a large one is split over the pool: two cores stream it faster than one.

/// Matrices of at least this many floats (128 KiB) are split across the pool.
const PARALLEL_FLOATS: usize = 1 << 15;

/// `dst[i·dst_stride] = scale · Σ_p lhs[i·k + p] · x[p]` (+ its old value when
/// `accumulate`) for each of the `rows` rows of the row-major `lhs`; split across the
/// pool when `split` and the matrix is large.
///
/// # Panics
/// A slice shorter than the sizes say.
#[expect(
    clippy::too_many_arguments,
    reason = "a strided product is exactly these numbers"
)]
pub(super) fn matrix_vector(
    rows: usize,
    k: usize,
    (dst, dst_stride): (&mut [f32], usize),
    lhs: &[f32],
    x: &[f32],
    accumulate: bool,
    scale: f32,
    split: bool,
) {
    // Checked arithmetic: a wrapped product must not pass.
    assert!(
        rows.checked_mul(k).is_some_and(|n| lhs.len() >= n) && x.len() >= k,
        "gemv operand too small"
    );
    assert!(
        rows == 0
            || (rows - 1)
                .checked_mul(dst_stride)
                .is_some_and(|last| dst.len() > last),
        "gemv destination too small"
    );
    let x = &x[..k];
    // Straight into `dst` where it is a plain column; else sums first, then stored.
    let plain = dst_stride == 1 && !accumulate && scale == 1.0;
    let mut sums = if plain { Vec::new() } else { vec![0f32; rows] };
    {
        let out: &mut [f32] = if plain { &mut dst[..rows] } else { &mut sums };
        let threads = crate::engine::threads::ways();
        if split && threads > 1 && rows >= 8 && rows * k >= PARALLEL_FLOATS {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            let per = rows.div_ceil(threads).next_multiple_of(4);
            out.par_chunks_mut(per).enumerate().for_each(|(i, out)| {
                dots(out, &lhs[i * per * k..], x);
            });
        } else {
            dots(out, lhs, x);
        }
    }
    if !plain {
        store(&sums, dst, dst_stride, accumulate, scale);
    }
}

fn store(sums: &[f32], dst: &mut [f32], stride: usize, accumulate: bool, scale: f32) {
    for (i, s) in sums.iter().enumerate() {
        let d = &mut dst[i * stride];
        *d = if accumulate {
            *d + scale * s
        } else {
            scale * s
        };
    }
}

/// `sums[i] = lhs row i · x`, rows of `x.len()` values (AVX2 + FMA where the CPU has it).
fn dots(sums: &mut [f32], lhs: &[f32], x: &[f32]) {
    let k = x.len();
    assert!(
        sums.len().checked_mul(k).is_some_and(|n| lhs.len() >= n),
        "gemv matrix too small"
    );
    if k == 0 {
        sums.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features; the sizes are checked above.
        unsafe { avx2::dots(sums, lhs, x) };
        return;
    }
    for (o, row) in sums.iter_mut().zip(lhs.chunks_exact(k)) {
        let mut lanes = [0f32; 8];
        for (xs, w) in x.chunks_exact(8).zip(row.chunks_exact(8)) {
            for l in 0..8 {
                lanes[l] += w[l] * xs[l];
            }
        }
        let body = k - k % 8;
        let tail: f32 = row[body..].iter().zip(&x[body..]).map(|(w, v)| w * v).sum();
        *o = lanes.iter().sum::<f32>() + tail;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    /// One row at a time, front to back: the matrix is read in one sequential stream,
    /// which the prefetcher follows (four rows at a time, four short streams of
    /// MobileNetV3's 144-wide rows, took 1.5× longer from memory). Four accumulators of
    /// 8 lanes hide the FMA latency; `x` stays in L1.
    ///
    /// # Safety
    /// AVX2 and FMA are present; `lhs` holds `sums.len()` rows of `x.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(sums: &mut [f32], lhs: &[f32], x: &[f32]) {
        let k = x.len();
        assert!(k > 0 && sums.len().checked_mul(k).is_some_and(|n| lhs.len() >= n));
        let (wide, body) = (k - k % 32, k - k % 8);
        for (o, row) in sums.iter_mut().zip(lhs.chunks_exact(k)) {
            let mut acc = [_mm256_setzero_ps(); 4];
            let (w, v) = (row.as_ptr(), x.as_ptr());
            let mut p = 0;
            // SAFETY: every load ends at p + 32 ≤ k or p + 8 ≤ k, inside `row` and `x`.
            unsafe {
                while p < wide {
                    for (j, a) in acc.iter_mut().enumerate() {
                        let at = p + 8 * j;
                        *a = _mm256_fmadd_ps(
                            _mm256_loadu_ps(w.add(at)),
                            _mm256_loadu_ps(v.add(at)),
                            *a,
                        );
                    }
                    p += 32;
                }
                while p < body {
                    acc[0] = _mm256_fmadd_ps(
                        _mm256_loadu_ps(w.add(p)),
                        _mm256_loadu_ps(v.add(p)),
                        acc[0],
                    );
                    p += 8;
                }
            }
            let all = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut lanes = [0f32; 8];
            // SAFETY: 8 floats written to an array of 8.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), all) };
            let tail: f32 = row[body..].iter().zip(&x[body..]).map(|(w, v)| w * v).sum();
            *o = lanes.iter().sum::<f32>() + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_sum_at_every_size_stride_and_split() {
        for (rows, k) in [(1, 1), (3, 7), (4, 8), (5, 17), (144, 576), (257, 130)] {
            #[expect(clippy::cast_precision_loss, reason = "test values")]
            let lhs: Vec<f32> = (0..rows * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            #[expect(clippy::cast_precision_loss, reason = "test values")]
            let x: Vec<f32> = (0..k).map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0).collect();
            let want: Vec<f32> = (0..rows)
                .map(|i| (0..k).map(|p| lhs[i * k + p] * x[p]).sum())
                .collect();
            for (stride, accumulate, scale, split) in [
                (1, false, 1.0, false),
                (1, false, 1.0, true),
                (3, true, 0.5, false),
                (2, false, 2.0, true),
            ] {
                let mut dst = vec![1f32; rows * stride];
                matrix_vector(
                    rows,
                    k,
                    (&mut dst, stride),
                    &lhs,
                    &x,
                    accumulate,
                    scale,
                    split,
                );
                for (i, w) in want.iter().enumerate() {
                    let w = if accumulate {
                        1.0 + scale * w
                    } else {
                        scale * w
                    };
                    let got = dst[i * stride];
                    assert!(
                        (got - w).abs() <= 1e-3 * w.abs().max(1.0),
                        "{rows}×{k} row {i}: {got} vs {w}"
                    );
                }
            }
        }
    }
}
