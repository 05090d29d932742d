//! Data movement on host tensors (integer values: shapes, indices, masks), by index maps.
//! Every function takes the shapes its caller checked against the cap and returns the
//! output shape with the data.

use crate::engine::EngineError;
use crate::engine::limits::product;

/// Row-major strides of `shape`.
#[must_use]
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut out = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        out[i] = out[i + 1] * shape[i + 1];
    }
    out
}

/// A normalized index into a dimension of `size` (negative counts from the end).
///
/// # Errors
/// The index is outside `-size..size`.
pub fn index_of(i: i64, size: usize, what: &str) -> Result<usize, EngineError> {
    let s = i64::try_from(size).unwrap_or(i64::MAX);
    let at = if i < 0 { i + s } else { i };
    usize::try_from(at)
        .ok()
        .filter(|a| *a < size)
        .ok_or_else(|| EngineError::Invalid(format!("{what}: index {i} out of range for {size}")))
}

/// [`select_axes`] of float activations (a nearest Resize, a Slice of a feature map):
/// the output in a reused buffer, its rows split over the intra-op pool, each row gathered
/// from its input row or, where the one before read the same input row (an upsample's
/// repeated rows), copied from it. YOLO's 2× upsample of 512×20×20 took 0.93 ms through
/// [`select_axes`], on fresh pages one pushed value at a time.
#[must_use]
pub fn select_floats(data: &[f32], shape: &[usize], picks: &[Vec<usize>]) -> Vec<f32> {
    let Some((last, outer)) = picks.split_last() else {
        return select_axes(data, shape, picks);
    };
    let total = product(&picks.iter().map(Vec::len).collect::<Vec<_>>()).unwrap_or(0);
    if total == 0 || last.is_empty() {
        return Vec::new();
    }
    let st = strides(shape);
    // The input row of output row `row`: its index along every outer axis, last first.
    let base_of = |mut row: usize| {
        let mut base = 0;
        for (axis, pick) in outer.iter().enumerate().rev() {
            base += pick[row % pick.len()] * st[axis];
            row /= pick.len();
        }
        base
    };
    let width = last.len();
    let mut out = crate::engine::kernels::reuse::for_overwrite(total);
    let whole = shape.last() == Some(&width) && last.iter().enumerate().all(|(i, p)| i == *p);
    crate::engine::kernels::spread_chunks(&mut out, width, |start, chunk| {
        let mut previous = None;
        for i in 0..chunk.len() / width {
            let base = base_of(start / width + i);
            let at = i * width;
            if previous == Some(base) {
                chunk.copy_within(at - width..at, at);
                continue;
            }
            let (row, dst) = (&data[base..], &mut chunk[at..at + width]);
            if whole {
                dst.copy_from_slice(&row[..width]);
            } else {
                for (d, p) in dst.iter_mut().zip(last) {
                    *d = row[*p];
                }
            }
            previous = Some(base);
        }
    });
    out
}

/// Picks, along each axis, the listed positions (a cartesian selection): Slice with any
/// steps, and the per-axis maps of Resize.
#[must_use]
pub fn select_axes<T: Copy>(data: &[T], shape: &[usize], picks: &[Vec<usize>]) -> Vec<T> {
    let st = strides(shape);
    let out_shape: Vec<usize> = picks.iter().map(Vec::len).collect();
    let total = product(&out_shape).unwrap_or(0);
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let Some((last, outer)) = picks.split_last() else {
        out.push(data[0]); // rank 0: the one element
        return out;
    };
    // Rows of the last axis: copied whole when they are taken as they are, else gathered.
    let whole = shape.last() == Some(&last.len()) && last.iter().enumerate().all(|(i, p)| i == *p);
    let mut counter = vec![0usize; outer.len()];
    let mut previous = None;
    loop {
        let base: usize = counter
            .iter()
            .enumerate()
            .map(|(d, c)| outer[d][*c] * st[d])
            .sum();
        let row = &data[base..];
        if previous == Some(base) {
            // The row just written again (a nearest upsample's repeated rows).
            out.extend_from_within(out.len() - last.len()..);
        } else if whole {
            out.extend_from_slice(&row[..last.len()]);
        } else {
            out.extend(last.iter().map(|p| row[*p]));
        }
        previous = Some(base);
        let mut d = outer.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            counter[d] += 1;
            if counter[d] < outer[d].len() {
                break;
            }
            counter[d] = 0;
        }
    }
}

/// Gather along `axis` with normalized `indices` of shape `index_shape`: the output shape is
/// `shape[..axis] + index_shape + shape[axis + 1..]`.
#[must_use]
pub fn gather<T: Copy>(
    data: &[T],
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    index_shape: &[usize],
) -> (Vec<T>, Vec<usize>) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dim = shape[axis];
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            let start = (o * dim + i) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend_from_slice(index_shape);
    out_shape.extend_from_slice(&shape[axis + 1..]);
    (out, out_shape)
}

/// GatherElements: `out[i…] = data[i… with axis replaced by indices[i…]]`; indices have the
/// data's rank and normalized values.
#[must_use]
pub fn gather_elements<T: Copy>(
    data: &[T],
    shape: &[usize],
    axis: usize,
    indices: &[usize],
    index_shape: &[usize],
) -> Vec<T> {
    let st = strides(shape);
    let ist = strides(index_shape);
    indices
        .iter()
        .enumerate()
        .map(|(flat, &i)| {
            let mut at = 0;
            for d in 0..index_shape.len() {
                let coordinate = (flat / ist[d]) % index_shape[d];
                at += if d == axis { i } else { coordinate } * st[d];
            }
            data[at]
        })
        .collect()
}

/// Permutes the axes of a row-major tensor (`perm[i]` is the input axis of output axis
/// `i`). Axes of size 1 are dropped and neighbours that stay neighbours are merged first,
/// so ShuffleNet's channel shuffle and attention's head split become copies of whole
/// contiguous blocks; otherwise the innermost output axis is gathered at its stride.
#[must_use]
pub fn transpose<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> (Vec<T>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|p| shape[*p]).collect();
    let total = product(&out_shape).unwrap_or(0);
    if total == 0 {
        return (Vec::new(), out_shape);
    }
    // Input axes kept (size > 1), renumbered; then runs of consecutive input axes in the
    // output order merged into one.
    let kept: Vec<usize> = (0..shape.len()).filter(|a| shape[*a] > 1).collect();
    let order: Vec<usize> = perm
        .iter()
        .filter(|a| shape[**a] > 1)
        .map(|a| kept.iter().position(|k| k == a).unwrap_or(0))
        .collect();
    let sizes: Vec<usize> = kept.iter().map(|a| shape[*a]).collect();
    // Groups of input axes, in output order: each a run `first..=last` of input axes.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &axis in &order {
        match groups.last_mut() {
            Some((_, last)) if *last + 1 == axis => *last = axis,
            _ => groups.push((axis, axis)),
        }
    }
    // The merged input: groups sorted by their input position.
    let mut by_input: Vec<usize> = (0..groups.len()).collect();
    by_input.sort_by_key(|g| groups[*g].0);
    let merged: Vec<usize> = by_input
        .iter()
        .map(|g| sizes[groups[*g].0..=groups[*g].1].iter().product())
        .collect();
    let in_strides = strides(&merged);
    // Output axis j reads merged input axis `by_input.position(j)`.
    let dims: Vec<usize> = (0..groups.len())
        .map(|g| merged[by_input.iter().position(|x| *x == g).unwrap_or(0)])
        .collect();
    let steps: Vec<usize> = (0..groups.len())
        .map(|g| in_strides[by_input.iter().position(|x| *x == g).unwrap_or(0)])
        .collect();
    let mut out = Vec::with_capacity(total);
    let rank = dims.len();
    if rank <= 1 {
        out.extend_from_slice(&data[..total]);
        return (out, out_shape);
    }
    let (inner, inner_step) = (dims[rank - 1], steps[rank - 1]);
    let mut counter = vec![0usize; rank - 1];
    let mut offset = 0usize;
    loop {
        if inner_step == 1 {
            out.extend_from_slice(&data[offset..offset + inner]);
        } else {
            out.extend((0..inner).map(|i| data[offset + i * inner_step]));
        }
        // Next outer index (odometer over the leading output axes).
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return (out, out_shape);
            }
            d -= 1;
            counter[d] += 1;
            offset += steps[d];
            if counter[d] < dims[d] {
                break;
            }
            offset -= steps[d] * dims[d];
            counter[d] = 0;
        }
    }
}

/// Concatenates along `axis` (shapes checked by the caller).
#[must_use]
pub fn concat<T: Copy>(parts: &[(Vec<T>, Vec<usize>)], axis: usize) -> (Vec<T>, Vec<usize>) {
    let mut shape = parts[0].1.clone();
    shape[axis] = parts.iter().map(|(_, s)| s[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    let mut out = Vec::with_capacity(product(&shape).unwrap_or(0));
    for o in 0..outer {
        for (data, s) in parts {
            let block: usize = s[axis..].iter().product();
            out.extend_from_slice(&data[o * block..(o + 1) * block]);
        }
    }
    (out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every permutation of a rank-5 shape with a size-1 axis, against the index formula.
    #[test]
    fn transpose_matches_the_index_formula_for_every_permutation() {
        fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
            if items.len() <= 1 {
                return vec![items.to_vec()];
            }
            let mut all = Vec::new();
            for (i, first) in items.iter().enumerate() {
                let mut rest = items.to_vec();
                rest.remove(i);
                for mut tail in permutations(&rest) {
                    tail.insert(0, *first);
                    all.push(tail);
                }
            }
            all
        }
        for shape in [[2, 3, 1, 4, 5], [1, 2, 6, 1, 3]] {
            let data: Vec<i64> = (0..product(&shape).unwrap() as i64).collect();
            let st = strides(&shape);
            for perm in permutations(&[0, 1, 2, 3, 4]) {
                let (got, out_shape) = transpose(&data, &shape, &perm);
                let out_st = strides(&out_shape);
                for (flat, v) in got.iter().enumerate() {
                    let at: usize = (0..5)
                        .map(|j| (flat / out_st[j]) % out_shape[j] * st[perm[j]])
                        .sum();
                    assert_eq!(*v, data[at], "{shape:?} {perm:?} at {flat}");
                }
                assert_eq!(got.len(), data.len());
            }
        }
    }

    #[test]
    fn index_maps() {
        // [[0,1,2],[3,4,5]]
        let data: Vec<i64> = (0..6).collect();
        assert_eq!(
            gather(&data, &[2, 3], 1, &[2, 0], &[2]),
            (vec![2, 0, 5, 3], vec![2, 2])
        );
        assert_eq!(
            transpose(&data, &[2, 3], &[1, 0]),
            (vec![0, 3, 1, 4, 2, 5], vec![3, 2])
        );
        assert_eq!(
            select_axes(&data, &[2, 3], &[vec![1], vec![2, 0]]),
            vec![5, 3]
        );
        assert_eq!(
            concat(&[(data.clone(), vec![2, 3]), (vec![9, 9], vec![2, 1])], 1),
            (vec![0, 1, 2, 9, 3, 4, 5, 9], vec![2, 4])
        );
        assert_eq!(
            gather_elements(&data, &[2, 3], 1, &[2, 2, 0, 1], &[2, 2]),
            vec![2, 2, 3, 4]
        );
        assert!(index_of(-4, 3, "x").is_err());
        assert_eq!(index_of(-1, 3, "x").unwrap(), 2);
    }

    /// The float selection (reused buffer, rows over the pool, repeated rows copied)
    /// gives what the generic one does: a 2× nearest upsample large enough to split, a
    /// row-identity pick, a Slice with steps, rank 1, and empty picks; in a buffer of
    /// NaNs, so an unwritten value shows.
    #[test]
    fn float_selection_matches_the_generic_one() {
        let upsample = |n: usize| (0..2 * n).map(|i| i / 2).collect::<Vec<_>>();
        let cases: Vec<(Vec<usize>, Vec<Vec<usize>>)> = vec![
            (
                vec![1, 64, 20, 20],
                vec![vec![0], (0..64).collect(), upsample(20), upsample(20)],
            ),
            (
                vec![2, 3, 5],
                vec![vec![1, 0], vec![2, 2, 0], (0..5).collect()],
            ),
            (vec![4, 7], vec![vec![0, 2], vec![6, 3, 0]]),
            (vec![9], vec![vec![8, 1, 1]]),
            (vec![3, 4], vec![vec![], vec![1]]),
        ];
        for (shape, picks) in cases {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let want = select_axes(&data, &shape, &picks);
            let len = picks.iter().map(Vec::len).product::<usize>();
            let got = crate::engine::kernels::reuse::with_stale(len, || {
                select_floats(&data, &shape, &picks)
            });
            assert_eq!(got, want, "{shape:?} {picks:?}");
        }
    }
}
