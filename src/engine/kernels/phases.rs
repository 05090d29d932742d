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

/// Each `w`-wide row y of `input` split as [`deinterleave`] does, its pairs written at
/// `first[y·pitch..]` and `second[y·pitch..]`, and a last unpaired value (odd `w`) at
/// `first[y·pitch + w/2]`: a whole plane in one call (one call per row cost more than
/// the shuffles on rows a few dozen wide).
///
/// # Panics
/// `first` or `second` is too short for the rows.
pub(super) fn deinterleave_rows(
    input: &[f32],
    w: usize,
    pitch: usize,
    first: &mut [f32],
    second: &mut [f32],
) {
    if w == 0 {
        return;
    }
    let pairs = w / 2;
    let rows = input.len() / w;
    if rows == 0 {
        return;
    }
    // Every row's writes, checked once (the vector path writes through pointers).
    assert!(
        first.len() >= (rows - 1) * pitch + w.div_ceil(2)
            && second.len() >= (rows - 1) * pitch + pairs
    );
    #[cfg(target_arch = "x86_64")]
    if pairs >= 8 && super::panels::available() {
        // SAFETY: the CPU has AVX2 (checked by `available`); the sizes checked above.
        unsafe { rows_avx2(input, w, pitch, first, second) };
        return;
    }
    for (y, row) in input.chunks_exact(w).enumerate() {
        deinterleave(row, &mut first[y * pitch..], &mut second[y * pitch..]);
        if w % 2 == 1 {
            first[y * pitch + pairs] = row[w - 1];
        }
    }
}

/// [`deinterleave_rows`] for rows of at least 8 pairs: 8 pairs per step, the last step
/// of a row overlapping the one before (rewriting the same values) instead of a scalar
/// tail.
///
/// # Safety
/// The CPU has AVX2; `first` and `second` hold every row's writes, `w / 2 ≥ 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(input: &[f32], w: usize, pitch: usize, first: &mut [f32], second: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm256_permute4x64_pd,
        _mm256_shuffle_ps, _mm256_storeu_ps,
    };
    let pairs = w / 2;
    // [l0 l2 h0 h2 | l4 l6 h4 h6], then the middle 64-bit halves swapped.
    let order =
        |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    let (src, even, odd) = (input.as_ptr(), first.as_mut_ptr(), second.as_mut_ptr());
    for y in 0..input.len() / w {
        let starts = (0..pairs / 8)
            .map(|g| 8 * g)
            .chain((!pairs.is_multiple_of(8)).then_some(pairs - 8));
        for start in starts {
            // SAFETY: pairs start..start + 8 of row y: 16 floats read inside the row,
            // 8 written to each phase row (sizes checked by the caller).
            unsafe {
                let at = src.add(y * w + 2 * start);
                let (low, high) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                let to = y * pitch + start;
                _mm256_storeu_ps(
                    even.add(to),
                    order(_mm256_shuffle_ps::<0b10_00_10_00>(low, high)),
                );
                _mm256_storeu_ps(
                    odd.add(to),
                    order(_mm256_shuffle_ps::<0b11_01_11_01>(low, high)),
                );
            }
        }
        if w % 2 == 1 {
            // SAFETY: inside the checked sizes.
            unsafe { *even.add(y * pitch + pairs) = *src.add(y * w + w - 1) };
        }
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

    #[test]
    fn deinterleave_rows_places_every_row_and_leaves_the_rest() {
        for (w, rows, pitch) in [
            (3usize, 4, 3),
            (14, 3, 9),
            (16, 2, 8),
            (21, 5, 12),
            (56, 3, 29),
        ] {
            let input: Vec<f32> = (0..w * rows).map(|v| v as f32).collect();
            let len = (rows - 1) * pitch + w.div_ceil(2) + 2;
            let (mut first, mut second) = (vec![-1.0; len], vec![-1.0; len]);
            deinterleave_rows(&input, w, pitch, &mut first, &mut second);
            for y in 0..rows {
                let row = &input[y * w..][..w];
                for i in 0..w.div_ceil(2) {
                    assert_eq!(first[y * pitch + i], row[2 * i], "{w} row {y} even {i}");
                }
                for i in 0..w / 2 {
                    assert_eq!(second[y * pitch + i], row[2 * i + 1], "{w} row {y} odd {i}");
                }
                // Past each row's values (the padding of a phase plane): untouched.
                for i in w.div_ceil(2)..pitch.min(len - y * pitch) {
                    assert_eq!(first[y * pitch + i], -1.0, "{w} row {y} past even {i}");
                }
                for i in w / 2..pitch.min(len - y * pitch) {
                    assert_eq!(second[y * pitch + i], -1.0, "{w} row {y} past odd {i}");
                }
            }
        }
    }
}
