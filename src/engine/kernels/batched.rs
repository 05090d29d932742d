//! MatMul of two computed tensors (attention's `Q · Kᵀ` and `P · V`), batched over the
//! leading dimensions with NumPy broadcasting. Before, these went to burn: each product
//! paid a copy into a burn tensor and one back, and the transposes around it ran on
//! burn's lazy views, copied on the next host step.
//!
//! Invariants: both operands have rank ≥ 2 (the caller sends vectors to the general
//! operator); every offset below is inside its operand, as the shapes were checked first.

use super::{Dense, PARALLEL_MACS, matmul, matmul_one_thread};
use crate::engine::EngineError;
use crate::engine::elementwise::broadcast_shape;
use crate::engine::limits::{Cap, F32};

/// `A · B` for `A [..., m, k]` and `B [..., k, n]`, leading dimensions broadcast.
///
/// # Errors
/// Ranks below 2, inner dimensions that differ, batch dimensions that do not broadcast,
/// or an output over the cap.
pub fn batched_matmul(a: &Dense, b: &Dense, cap: Cap) -> Result<Dense, EngineError> {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err(EngineError::Invalid(format!(
            "MatMul: batched operands need rank 2 or more, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        return Err(EngineError::Invalid(format!(
            "MatMul: A {:?} has inner dimension {k}, B {:?} has {k2}",
            a.shape, b.shape
        )));
    }
    let batch = broadcast_shape(&[&a.shape[..ra - 2], &b.shape[..rb - 2]])
        .map_err(|e| EngineError::Invalid(format!("MatMul batch dimensions: {e}")))?;
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let count = cap.check(&shape, F32)?;
    let mut out = vec![0f32; count];
    if count == 0 {
        return Dense::new(out, shape);
    }
    // Each operand's offset for a batch index: matrices are contiguous, a broadcast
    // dimension (size 1 or absent) does not move.
    let offsets = |dims: &[usize], matrix: usize| -> Vec<usize> {
        let mut strides = vec![0usize; batch.len()];
        let mut step = matrix;
        for (i, d) in dims.iter().enumerate().rev() {
            let at = batch.len() - dims.len() + i;
            if *d != 1 {
                strides[at] = step;
            }
            step *= d;
        }
        let mut offsets = Vec::with_capacity(count / (m * n));
        let mut index = vec![0usize; batch.len()];
        loop {
            offsets.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
            let Some(d) = (0..batch.len()).rev().find(|d| index[*d] + 1 < batch[*d]) else {
                break;
            };
            index[d] += 1;
            index[d + 1..].iter_mut().for_each(|i| *i = 0);
        }
        offsets
    };
    let a_at = offsets(&a.shape[..ra - 2], m * k);
    let b_at = offsets(&b.shape[..rb - 2], k * n);
    let product = |(i, c): (usize, &mut [f32]), one_thread: bool| {
        let (a, b) = (&a.data[a_at[i]..][..m * k], &b.data[b_at[i]..][..k * n]);
        if one_thread {
            matmul_one_thread(m, n, k, c, (a, k, 1), (b, n, 1), false, 1.0);
        } else {
            matmul(m, n, k, c, (a, k, 1), (b, n, 1), false, 1.0);
        }
    };
    let threads = crate::engine::threads::ways();
    let work = count.saturating_mul(k);
    if a_at.len() >= threads && threads > 1 && work >= PARALLEL_MACS {
        // Whole matrices per thread: attention's heads, each too small to split well.
        use rayon::prelude::*;
        crate::engine::threads::entering_parallel_region();
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|item| product(item, true));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|item| product(item, false));
    }
    Dense::new(out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 5 + seed * 11) % 19) as f32 / 9.0 - 1.0)
            .collect()
    }

    /// Broadcast batches (absent, size-1 and matching dimensions, on either side), against
    /// the index formula.
    #[test]
    fn batched_products_broadcast_as_numpy_does() {
        let cap = Cap::unlimited();
        for (sa, sb) in [
            (vec![3, 4], vec![4, 5]),
            (vec![2, 3, 4], vec![4, 5]),
            (vec![3, 4], vec![2, 4, 5]),
            (vec![1, 2, 3, 4], vec![2, 1, 4, 5]),
            (vec![2, 3, 7, 16], vec![2, 3, 16, 9]),
            (vec![3, 0, 4], vec![3, 4, 2]),
        ] {
            let a = Dense::new(ramp(sa.iter().product(), 1), sa.clone()).unwrap();
            let b = Dense::new(ramp(sb.iter().product(), 2), sb.clone()).unwrap();
            let c = batched_matmul(&a, &b, cap).unwrap();
            let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
            let batch = &c.shape[..c.shape.len() - 2];
            assert_eq!(c.shape[c.shape.len() - 2..], [m, n]);
            let index_of = |shape: &[usize], at: &[usize]| -> usize {
                // The operand's own batch index from the output's, broadcast dims at 0.
                let lead = &shape[..shape.len() - 2];
                let skip = at.len() - lead.len();
                lead.iter()
                    .zip(&at[skip..])
                    .fold(0, |acc, (d, i)| acc * d + if *d == 1 { 0 } else { *i })
            };
            let batches: usize = batch.iter().product();
            for flat in 0..batches {
                let mut at = vec![0; batch.len()];
                let mut rest = flat;
                for d in (0..batch.len()).rev() {
                    at[d] = rest % batch[d];
                    rest /= batch[d];
                }
                let (ia, ib) = (index_of(&sa, &at), index_of(&sb, &at));
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k)
                            .map(|p| {
                                a.data[ia * m * k + i * k + p] * b.data[ib * k * n + p * n + j]
                            })
                            .sum();
                        let got = c.data[flat * m * n + i * n + j];
                        assert!((got - want).abs() < 1e-4, "{sa:?}·{sb:?}: {got} vs {want}");
                    }
                }
            }
        }
        let bad = Dense::new(vec![0.0; 12], vec![3, 4]).unwrap();
        assert!(
            batched_matmul(&bad, &bad, cap).is_err(),
            "inner dimensions differ"
        );
    }
}
