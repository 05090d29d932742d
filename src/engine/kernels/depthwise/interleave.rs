//! Planes to pixels and back for the blocked depthwise path: [`LANES`] channel planes
//! become one run of pixels, each the vector of its channels, and the reverse. 8×8
//! transposes in AVX2 registers (24 shuffles per 64 values) where the CPU has them:
//! scalar strided stores made the copies cost more than the convolution they fed.

use super::LANES;

/// Where the pixels go: pixel (y, x) of a plane at `((y + top) · columns + left + x) ·
/// LANES` of the destination.
#[derive(Clone, Copy)]
pub(super) struct Placement {
    pub size: [usize; 2],
    pub columns: usize,
    pub top: usize,
    pub left: usize,
}

impl Placement {
    fn at(&self, y: usize, x: usize) -> usize {
        ((y + self.top) * self.columns + self.left + x) * LANES
    }
}

/// `lanes` planes (`input`, `[lanes][h][w]`) into `dst` as [`Placement`] says, lane `l` of
/// each pixel from plane `l`; the other lanes of `dst` are left as they are, or zeroed
/// on the vector path.
pub(super) fn interleave(input: &[f32], lanes: usize, place: Placement, dst: &mut [f32]) {
    let [h, w] = place.size;
    let plane = h * w;
    assert!(
        lanes <= LANES
            && input.len() == lanes * plane
            && place.left + w <= place.columns
            && (plane == 0 || place.at(h - 1, w - 1) + LANES <= dst.len()),
        "interleave sizes"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::super::panels::available() {
        // SAFETY: the CPU has AVX2 (checked); the sizes are checked above.
        done = unsafe { avx2::interleave(input, lanes, place, dst) };
    }
    for p in done..plane {
        let at = place.at(p / w, p % w);
        for lane in 0..lanes {
            dst[at + lane] = input[lane * plane + p];
        }
    }
}

/// Pixels (`src`, `[plane][LANES]`) back into `lanes` planes (`out`, `[lanes][plane]`).
pub(super) fn deinterleave(src: &[f32], lanes: usize, out: &mut [f32]) {
    let plane = src.len() / LANES;
    assert!(
        lanes <= LANES && src.len() == plane * LANES && out.len() == lanes * plane,
        "deinterleave sizes"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::super::panels::available() {
        // SAFETY: the CPU has AVX2 (checked); the sizes are checked above.
        done = unsafe { avx2::deinterleave(src, lanes, out) };
    }
    for p in done..plane {
        for lane in 0..lanes {
            out[lane * plane + p] = src[p * LANES + lane];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_setzero_ps, _mm256_shuffle_ps,
        _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };

    use super::{LANES, Placement};

    /// Row `i` of the result is column `i` of `rows`.
    #[target_feature(enable = "avx2")]
    fn transpose(rows: [__m256; 8]) -> [__m256; 8] {
        let t = [
            _mm256_unpacklo_ps(rows[0], rows[1]),
            _mm256_unpackhi_ps(rows[0], rows[1]),
            _mm256_unpacklo_ps(rows[2], rows[3]),
            _mm256_unpackhi_ps(rows[2], rows[3]),
            _mm256_unpacklo_ps(rows[4], rows[5]),
            _mm256_unpackhi_ps(rows[4], rows[5]),
            _mm256_unpacklo_ps(rows[6], rows[7]),
            _mm256_unpackhi_ps(rows[6], rows[7]),
        ];
        let s = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        [
            _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
            _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
        ]
    }

    /// [`super::interleave`] 8 pixels at a time (they may cross rows); returns the pixels
    /// done (the rest are under 8).
    ///
    /// # Safety
    /// The CPU has AVX2; the sizes are those `super::interleave` checked.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn interleave(
        input: &[f32],
        lanes: usize,
        place: Placement,
        dst: &mut [f32],
    ) -> usize {
        let [h, w] = place.size;
        let plane = h * w;
        let full = plane / 8 * 8;
        let (mut y, mut x) = (0, 0);
        for p in (0..full).step_by(8) {
            let rows: [__m256; 8] = std::array::from_fn(|lane| {
                if lane < lanes {
                    // SAFETY: p + 8 ≤ plane, inside plane `lane` of `input`.
                    unsafe { _mm256_loadu_ps(input.as_ptr().add(lane * plane + p)) }
                } else {
                    _mm256_setzero_ps()
                }
            });
            for pixel in transpose(rows) {
                // SAFETY: (y, x) is a pixel of the plane, whose LANES values lie inside
                // `dst` (checked for the last pixel, the farthest).
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(place.at(y, x)), pixel) };
                x += 1;
                if x == w {
                    (x, y) = (0, y + 1);
                }
            }
        }
        full
    }

    /// [`super::deinterleave`] 8 pixels at a time; returns the pixels done.
    ///
    /// # Safety
    /// The CPU has AVX2; the sizes are those `super::deinterleave` checked.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn deinterleave(src: &[f32], lanes: usize, out: &mut [f32]) -> usize {
        let plane = src.len() / LANES;
        let full = plane / 8 * 8;
        for p in (0..full).step_by(8) {
            // SAFETY: pixels p..p + 8 lie inside `src`.
            let rows: [__m256; 8] = std::array::from_fn(|i| unsafe {
                _mm256_loadu_ps(src.as_ptr().add((p + i) * LANES))
            });
            for (lane, values) in transpose(rows).into_iter().enumerate().take(lanes) {
                // SAFETY: values p..p + 8 of plane `lane` lie inside `out`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(lane * plane + p), values) };
            }
        }
        full
    }
}
