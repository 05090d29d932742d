//! Matrix products on host buffers: the `gemm` crate behind strided, checked wrappers,
//! with the shapes it handles badly (one row, one column) on simpler loops.

use super::{PARALLEL_MACS, gemv};

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` (+ `dst` when `accumulate`), with element strides
/// given as (row stride, column stride) so transposed operands need no copy.
///
/// The caller guarantees every slice covers the strided extent; checked here.
#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    accumulate: bool,
    scale: f32,
) {
    gemm_product(m, n, k, (dst, n), lhs, rhs, accumulate, scale, true);
}

/// [`matmul`] on this thread only (the caller splits the work itself).
#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
pub(super) fn matmul_one_thread(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    accumulate: bool,
    scale: f32,
) {
    gemm_product(m, n, k, (dst, n), lhs, rhs, accumulate, scale, false);
}

/// `dst = lhs · rhs` (`+ dst` when `accumulate`) on this thread, into `m` rows of `n`
/// values spaced `row_stride` apart in `dst` (a block of columns of a wider matrix).
pub(super) fn matmul_into_rows(
    m: usize,
    n: usize,
    k: usize,
    (dst, row_stride): (&mut [f32], usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    accumulate: bool,
) {
    gemm_product(m, n, k, (dst, row_stride), lhs, rhs, accumulate, 1.0, false);
}

/// `dst = w · x` (`+ dst` when `accumulate`) on this thread for columns `start..start + n` of a `[m, plane]` output
/// held at `dst` (`len` floats), `w` `[m, k]` and `x` `[k, plane]` row-major: one
/// thread's share of a product split by columns. Writes through the pointer only, so
/// threads writing other columns of the same rows create no aliasing references.
///
/// # Safety
/// `dst` is valid for writes of `len` floats, and no other thread reads or writes
/// columns `start..start + n` of its rows while this runs.
pub(super) unsafe fn matmul_columns(
    (m, k, plane): (usize, usize, usize),
    columns: std::ops::Range<usize>,
    (dst, len): (*mut f32, usize),
    w: &[f32],
    x: &[f32],
    accumulate: bool,
) {
    let (start, n) = (columns.start, columns.len());
    assert!(
        columns.end <= plane
            && m.checked_mul(plane).is_some_and(|e| e <= len)
            && m.checked_mul(k).is_some_and(|e| e <= w.len())
            && k.checked_mul(plane).is_some_and(|e| e <= x.len()),
        "gemm: column block out of range"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: rows 0..m of columns start..start + n lie inside `dst` (m · plane ≤ len,
    // checked) and are this thread's alone (the caller's promise); the operands' reads
    // lie inside their slices (checked).
    unsafe {
        gemm_raw(
            [m, n, k],
            (dst.add(start), plane),
            (w.as_ptr(), k, 1),
            (x.as_ptr().add(start), plane, 1),
            (accumulate, 1.0),
            gemm::Parallelism::None,
        );
    }
}

/// The `gemm` crate's call: `dst = lhs · rhs` (`+ dst` when accumulating), scaled; strides
/// as (row, column), the destination's columns contiguous.
///
/// # Safety
/// Every strided access lies inside its buffer, and nothing else accesses the
/// destination's `m × n` elements while this runs.
unsafe fn gemm_raw(
    [m, n, k]: [usize; 3],
    (dst, dst_rs): (*mut f32, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    (accumulate, scale): (bool, f32),
    parallelism: gemm::Parallelism,
) {
    let signed = |v: usize| isize::try_from(v).unwrap_or(isize::MAX);
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            signed(dst_rs),
            accumulate,
            lhs.0,
            signed(lhs.2),
            signed(lhs.1),
            rhs.0,
            signed(rhs.2),
            signed(rhs.1),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a strided GEMM call is exactly these numbers"
)]
fn gemm_product(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_rs): (&mut [f32], usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    accumulate: bool,
    scale: f32,
    split: bool,
) {
    // Checked in release too, with checked arithmetic: the unsafe call below relies on it.
    let extent = |rows: usize, cols: usize, rs: usize, cs: usize| -> Option<usize> {
        if rows == 0 || cols == 0 {
            Some(0)
        } else {
            (rows - 1)
                .checked_mul(rs)?
                .checked_add((cols - 1).checked_mul(cs)?)?
                .checked_add(1)
        }
    };
    assert!(
        dst_rs >= n && extent(m, n, dst_rs, 1).is_some_and(|e| dst.len() >= e),
        "gemm destination too small"
    );
    assert!(
        extent(m, k, lhs.1, lhs.2).is_some_and(|e| lhs.0.len() >= e),
        "gemm lhs too small"
    );
    assert!(
        extent(k, n, rhs.1, rhs.2).is_some_and(|e| rhs.0.len() >= e),
        "gemm rhs too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_rs..][..n].fill(0.0);
            }
        }
        return;
    }
    if m == 1 && rhs.2 == 1 {
        // One row times a row-major matrix: rows of B scaled and summed (contiguous,
        // vectorized); cheaper than packing for a single row.
        let dst = &mut dst[..n];
        if !accumulate {
            dst.fill(0.0);
        }
        row_times_matrix(dst, lhs.0, lhs.2, rhs.0, rhs.1, k, scale);
        return;
    }
    if n == 1 && lhs.2 == 1 && lhs.1 == k {
        // A row-major matrix times one column: dot products, no packing.
        let column: std::borrow::Cow<'_, [f32]> = if rhs.1 == 1 {
            std::borrow::Cow::Borrowed(&rhs.0[..k])
        } else {
            (0..k).map(|p| rhs.0[p * rhs.1]).collect()
        };
        gemv::matrix_vector(
            m,
            k,
            (dst, dst_rs),
            lhs.0,
            &column,
            accumulate,
            scale,
            split,
        );
        return;
    }
    // SAFETY: the asserts above bound every strided access inside the slices; `dst` is
    // exclusively borrowed and does not alias the operands.
    unsafe {
        gemm_raw(
            [m, n, k],
            (dst.as_mut_ptr(), dst_rs),
            (lhs.0.as_ptr(), lhs.1, lhs.2),
            (rhs.0.as_ptr(), rhs.1, rhs.2),
            (accumulate, scale),
            if split {
                parallelism(m, n, k)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let work = m.saturating_mul(n).saturating_mul(k);
    if work >= PARALLEL_MACS && crate::engine::threads::ways() > 1 {
        crate::engine::threads::entering_parallel_region();
        gemm::Parallelism::Rayon(crate::engine::threads::ways())
    } else {
        gemm::Parallelism::None
    }
}

/// `dst += scale · a · B` for one row `a` (element stride `a_stride`) and a row-major `B`
/// with row stride `b_stride`; AVX2 where the CPU has it.
fn row_times_matrix(
    dst: &mut [f32],
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    b_stride: usize,
    k: usize,
    scale: f32,
) {
    fn portable(
        dst: &mut [f32],
        a: &[f32],
        a_stride: usize,
        b: &[f32],
        b_stride: usize,
        k: usize,
        scale: f32,
    ) {
        let n = dst.len();
        let mut p = 0;
        // Four rows of B per pass over `dst`, so `dst` is loaded and stored a quarter as often.
        while p + 4 <= k {
            let f = [0, 1, 2, 3].map(|i| a[(p + i) * a_stride] * scale);
            let rows = [0, 1, 2, 3].map(|i| &b[(p + i) * b_stride..][..n]);
            for (j, d) in dst.iter_mut().enumerate() {
                *d += f[0] * rows[0][j] + f[1] * rows[1][j] + f[2] * rows[2][j] + f[3] * rows[3][j];
            }
            p += 4;
        }
        for p in p..k {
            let factor = a[p * a_stride] * scale;
            let row = &b[p * b_stride..][..n];
            dst.iter_mut().zip(row).for_each(|(d, v)| *d += factor * v);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(
            dst: &mut [f32],
            a: &[f32],
            a_stride: usize,
            b: &[f32],
            b_stride: usize,
            k: usize,
            scale: f32,
        ) {
            portable(dst, a, a_stride, b, b_stride, k, scale);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { avx2(dst, a, a_stride, b, b_stride, k, scale) };
            return;
        }
    }
    portable(dst, a, a_stride, b, b_stride, k, scale);
}
