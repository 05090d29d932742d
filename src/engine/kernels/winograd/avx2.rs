//! The Winograd transforms' AVX2 loops (the layer takes this path only where the panel
//! kernel runs, so AVX2 and FMA are there).

use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps,
    _mm256_permute4x64_pd, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_sub_ps,
};

use super::{Columns, ROWS};

/// `Bᵀ` over the four rows of every tile, 8 lanes from each group's first tile (the
/// 2 past its 6 land in the next depth's slot or the tile's slack).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn columns(c: &Columns<'_>, out: &mut [f32]) {
    c.check(out);
    let per_matrix = c.groups * c.tile_stride;
    let (along, out) = (c.along.as_ptr(), out.as_mut_ptr());
    for g in 0..c.groups {
        for j in 0..4 {
            // SAFETY: loads end at (15 · stride) + 6g + 8 ≤ 16 · stride, stores at
            // 15 · per_matrix + g · tile_stride + 6 · depth + 8 ≤ 16 · per_matrix
            // (checked above).
            unsafe {
                let row = |i: usize| _mm256_loadu_ps(along.add((i * 4 + j) * c.stride + g * ROWS));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let at = |i: usize| {
                    out.add((i * 4 + j) * per_matrix + g * c.tile_stride + c.depth * ROWS)
                };
                _mm256_storeu_ps(at(0), _mm256_sub_ps(r0, r2));
                _mm256_storeu_ps(at(1), _mm256_add_ps(r1, r2));
                _mm256_storeu_ps(at(2), _mm256_sub_ps(r2, r1));
                _mm256_storeu_ps(at(3), _mm256_sub_ps(r1, r3));
            }
        }
    }
}

/// `d B` for the first tiles of `src` in whole groups of 8 (tile `x` reads
/// `src[2x .. 2x + 4]`; `src` holds `2 · tiles + 2` values, `tiles` the outputs'
/// length); returns how many tiles it did.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn along_inside(src: &[f32], outputs: [&mut [f32]; 4]) -> usize {
    let [o0, o1, o2, o3] = outputs;
    let tiles = o0.len().min(o1.len()).min(o2.len()).min(o3.len());
    let tiles = tiles.min(src.len().saturating_sub(2) / 2);
    let mut x = 0;
    while x + 8 <= tiles {
        // SAFETY: reads src[2x .. 2x + 18] ⊆ src[.. 2 · tiles + 2]; writes o[x .. x + 8]
        // with x + 8 ≤ tiles.
        unsafe {
            let p = src.as_ptr().add(2 * x);
            let (even, odd) = split(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            let (next_even, next_odd) =
                split(_mm256_loadu_ps(p.add(2)), _mm256_loadu_ps(p.add(10)));
            _mm256_storeu_ps(o0.as_mut_ptr().add(x), _mm256_sub_ps(even, next_even));
            _mm256_storeu_ps(o1.as_mut_ptr().add(x), _mm256_add_ps(odd, next_even));
            _mm256_storeu_ps(o2.as_mut_ptr().add(x), _mm256_sub_ps(next_even, odd));
            _mm256_storeu_ps(o3.as_mut_ptr().add(x), _mm256_sub_ps(odd, next_odd));
        }
        x += 8;
    }
    x
}

/// The even and the odd values of 16 consecutive ones, in order.
#[inline]
#[target_feature(enable = "avx2")]
fn split(low: __m256, high: __m256) -> (__m256, __m256) {
    // [l0 l2 h0 h2 | l4 l6 h4 h6], then the middle 64-bit halves swapped.
    let even = _mm256_shuffle_ps::<0b10_00_10_00>(low, high);
    let odd = _mm256_shuffle_ps::<0b11_01_11_01>(low, high);
    let order =
        |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    (order(even), order(odd))
}
