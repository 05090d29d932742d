//! Rows split into their even and odd columns: the input layout of the stride-2 kernels
//! (the direct stem convolution, depthwise convolution), which then read each tap as a
//! contiguous run.

/// `even[i] = row[2i]` and `odd[i] = row[2i + 1]` for every whole pair of `row`; a last
/// unpaired value is the caller's. Vectorized (AVX2 shuffles) where the CPU allows.
///
/// # Panics
/// `even` or `odd` is shorter than the pairs.
pub(super) fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let pairs = row.len() / 2;
    let (even, odd) = (&mut even[..pairs], &mut odd[..pairs]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::panels::available() {
        // SAFETY: the CPU has AVX2 (checked by `available`).
        done = unsafe { avx2(row, even, odd) };
    }
    for (i, pair) in row[2 * done..].chunks_exact(2).enumerate() {
        even[done + i] = pair[0];
        odd[done + i] = pair[1];
    }
}

/// The first pairs of `row` in groups of 8; returns how many pairs it did.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(row: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        __m256, _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm256_permute4x64_pd,
        _mm256_shuffle_ps, _mm256_storeu_ps,
    };
    let groups = (row.len() / 16).min(even.len() / 8).min(odd.len() / 8);
    for g in 0..groups {
        let src = &row[16 * g..][..16];
        let (e, o) = (&mut even[8 * g..][..8], &mut odd[8 * g..][..8]);
        // SAFETY: 16 floats read from `src`, 8 written to each of `e` and `o`.
        unsafe {
            let (low, high) = (
                _mm256_loadu_ps(src.as_ptr()),
                _mm256_loadu_ps(src.as_ptr().add(8)),
            );
            // [l0 l2 h0 h2 | l4 l6 h4 h6], then the middle 64-bit halves swapped.
            let order = |v: __m256| {
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
            };
            _mm256_storeu_ps(
                e.as_mut_ptr(),
                order(_mm256_shuffle_ps::<0b10_00_10_00>(low, high)),
            );
            _mm256_storeu_ps(
                o.as_mut_ptr(),
                order(_mm256_shuffle_ps::<0b11_01_11_01>(low, high)),
            );
        }
    }
    8 * groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deinterleave_splits_every_pair() {
        for len in [0, 1, 2, 15, 16, 17, 33, 64, 113] {
            let row: Vec<f32> = (0..len).map(|v| v as f32).collect();
            let (mut even, mut odd) = (vec![-1.0; len / 2 + 1], vec![-1.0; len / 2 + 1]);
            deinterleave(&row, &mut even, &mut odd);
            for i in 0..len / 2 {
                assert_eq!(
                    (even[i], odd[i]),
                    (row[2 * i], row[2 * i + 1]),
                    "{len} at {i}"
                );
            }
            assert_eq!(
                (even[len / 2], odd[len / 2]),
                (-1.0, -1.0),
                "{len}: past the pairs"
            );
        }
    }
}
