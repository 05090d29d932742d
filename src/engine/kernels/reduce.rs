//! Reductions over one contiguous run of axes: the input seen as `[outer, reduced, inner]`
//! (a spatial mean of NCHW: `inner` 1; a mean over the sequence of `[n, l, d]`: `inner` d),
//! vectorized along rows or, for `inner` 1, with 8 partial sums per row.

use super::{Loop, on_best_cpu};

/// What the reduction computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
    Min,
}

/// Reduces `x` seen as `[outer, reduced, inner]` over its middle axis into `[outer, inner]`.
/// `reduced` must be at least 1 (a reduction over nothing is the caller's case).
///
/// # Panics
/// `x` does not hold `outer · reduced · inner` values, or `reduced` is 0.
#[must_use]
pub fn reduce(x: &[f32], [outer, reduced, inner]: [usize; 3], kind: Reduce) -> Vec<f32> {
    assert!(reduced > 0, "reduce: nothing to reduce");
    assert_eq!(x.len(), outer * reduced * inner, "reduce: size");
    let mut out = vec![0f32; outer * inner];
    if out.is_empty() {
        return out;
    }
    let block = reduced * inner;
    let threads = crate::engine::threads::ways();
    if x.len() >= super::PARALLEL_ELEMENTS && threads > 1 && outer > 1 {
        use rayon::prelude::*;
        crate::engine::threads::entering_parallel_region();
        let per = outer.div_ceil(threads);
        out.par_chunks_mut(per * inner)
            .zip(x.par_chunks(per * block))
            .for_each(|(out, x)| {
                on_best_cpu(Rows {
                    x,
                    out,
                    reduced,
                    inner,
                    kind,
                })
            });
    } else {
        on_best_cpu(Rows {
            x,
            out: &mut out,
            reduced,
            inner,
            kind,
        });
    }
    out
}

struct Rows<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    reduced: usize,
    inner: usize,
    kind: Reduce,
}

impl Loop for Rows<'_> {
    #[inline(always)]
    fn run(self) {
        let Self {
            x,
            out,
            reduced,
            inner,
            kind,
        } = self;
        #[expect(clippy::cast_precision_loss, reason = "a mean's count")]
        let scale = 1.0 / reduced as f32;
        let combine = |a: f32, b: f32| match kind {
            Reduce::Sum | Reduce::Mean => a + b,
            Reduce::Max => a.max(b),
            Reduce::Min => a.min(b),
        };
        if inner == 1 {
            // One value per row: 8 independent partial results, so the loop vectorizes.
            for (v, row) in out.iter_mut().zip(x.chunks_exact(reduced)) {
                let mut lanes = [row[0]; 8];
                if matches!(kind, Reduce::Sum | Reduce::Mean) {
                    lanes = [0.0; 8];
                }
                let mut chunks = row.chunks_exact(8);
                for chunk in &mut chunks {
                    for (l, t) in lanes.iter_mut().zip(chunk) {
                        *l = combine(*l, *t);
                    }
                }
                let mut total = lanes.into_iter().reduce(combine).unwrap_or_default();
                for t in chunks.remainder() {
                    total = combine(total, *t);
                }
                *v = total;
            }
        } else {
            // Whole rows of `inner` values at a time, contiguous.
            for (dst, block) in out
                .chunks_exact_mut(inner)
                .zip(x.chunks_exact(reduced * inner))
            {
                dst.copy_from_slice(&block[..inner]);
                for row in block.chunks_exact(inner).skip(1) {
                    for (a, t) in dst.iter_mut().zip(row) {
                        *a = combine(*a, *t);
                    }
                }
            }
        }
        if kind == Reduce::Mean {
            out.iter_mut().for_each(|v| *v *= scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_the_index_formula() {
        for [outer, reduced, inner] in [
            [1, 1, 1],
            [3, 7, 1],
            [2, 49, 1],
            [4, 3136, 1],
            [2, 5, 3],
            [3, 1, 9],
            [5, 17, 64],
            [40, 2000, 1],
        ] {
            let x: Vec<f32> = (0..outer * reduced * inner)
                .map(|i| ((i * 7919) % 211) as f32 / 50.0 - 2.0)
                .collect();
            for kind in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min] {
                let got = reduce(&x, [outer, reduced, inner], kind);
                for o in 0..outer {
                    for i in 0..inner {
                        let taps = (0..reduced).map(|r| x[(o * reduced + r) * inner + i]);
                        let want = match kind {
                            Reduce::Sum => taps.map(f64::from).sum::<f64>() as f32,
                            Reduce::Mean => {
                                (taps.map(f64::from).sum::<f64>() / reduced as f64) as f32
                            }
                            Reduce::Max => taps.fold(f32::NEG_INFINITY, f32::max),
                            Reduce::Min => taps.fold(f32::INFINITY, f32::min),
                        };
                        let v = got[o * inner + i];
                        assert!(
                            (v - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{kind:?} {outer}×{reduced}×{inner} at ({o}, {i}): {v} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
