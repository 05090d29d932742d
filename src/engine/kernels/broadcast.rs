//! Element-wise operators with NumPy broadcasting on host tensors: Add, Sub, Mul, Div and
//! Where. Small tensors dominate transformer graphs (bias adds, masks, scales), where a
//! round trip through burn cost more than the arithmetic.
//!
//! The output's dimensions are coalesced first (size-1 dimensions dropped, neighbours
//! that every input reads contiguously merged), so the innermost run reads each input
//! either contiguously or as one repeated value, and the loops over it vectorize.

use super::{Dense, Loop, on_best_cpu};
use crate::engine::EngineError;
use crate::engine::elementwise::{Arithmetic, broadcast_shape};
use crate::engine::limits::{Cap, F32};

/// How `N` inputs are read along the coalesced output dimensions.
struct Layout<const N: usize> {
    dims: Vec<usize>,
    /// Element strides of each input per coalesced dimension (0 where it broadcasts).
    strides: [Vec<usize>; N],
}

impl<const N: usize> Layout<N> {
    fn new(out: &[usize], shapes: [&[usize]; N]) -> Self {
        let rank = out.len();
        let full = shapes.map(|shape| {
            let mut strides = vec![0; rank];
            let mut step = 1;
            for (i, d) in shape.iter().enumerate().rev() {
                strides[rank - shape.len() + i] = if *d == 1 { 0 } else { step };
                step *= d;
            }
            strides
        });
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for (i, &d) in out.iter().enumerate() {
            if d == 1 {
                continue;
            }
            // Merge into the previous (outer) dimension when every input steps over both
            // as over one.
            if let Some(last) = dims.last_mut()
                && (0..N).all(|k| strides[k].last() == Some(&(full[k][i] * d)))
            {
                *last *= d;
                for k in 0..N {
                    if let Some(s) = strides[k].last_mut() {
                        *s = full[k][i];
                    }
                }
                continue;
            }
            dims.push(d);
            for k in 0..N {
                strides[k].push(full[k][i]);
            }
        }
        Self { dims, strides }
    }

    /// Calls `run(offsets, len, inner)` for every innermost run: the inputs' offsets, the
    /// run's length, and each input's stride along it (0 or 1).
    fn for_each_run(&self, run: impl FnMut([usize; N], usize, [usize; N])) {
        self.for_each_run_in(0, self.dims.first().copied().unwrap_or(1), run);
    }

    /// As [`Layout::for_each_run`], for indices `first .. first + count` of the outermost
    /// dimension only (a piece of the output, contiguous in it).
    fn for_each_run_in(
        &self,
        first: usize,
        count: usize,
        mut run: impl FnMut([usize; N], usize, [usize; N]),
    ) {
        let Some((&inner, outer)) = self.dims.split_last() else {
            run([0; N], 1, [0; N]);
            return;
        };
        let inner_strides = std::array::from_fn(|k| self.strides[k][outer.len()]);
        let mut offsets: [usize; N] = std::array::from_fn(|k| first * self.strides[k][0]);
        if outer.is_empty() {
            // One dimension: the piece is part of the one run.
            run(offsets, count, inner_strides);
            return;
        }
        let mut outer = outer.to_vec();
        outer[0] = count;
        let mut index = vec![0usize; outer.len()];
        loop {
            run(offsets, inner, inner_strides);
            // The odometer over the outer dimensions, innermost first.
            let mut axis = outer.len();
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                for (offset, strides) in offsets.iter_mut().zip(&self.strides) {
                    *offset += strides[axis];
                }
                if index[axis] < outer[axis] {
                    break;
                }
                for (offset, strides) in offsets.iter_mut().zip(&self.strides) {
                    *offset -= strides[axis] * outer[axis];
                }
                index[axis] = 0;
            }
        }
    }

    /// Calls `run(dst, offsets, len, inner)` for every innermost run, `dst` its part of
    /// `out` (the output, in order); split over the pool by the outermost dimension when
    /// the output is large.
    fn spread_runs(
        &self,
        out: &mut [f32],
        run: impl Fn(&mut [f32], [usize; N], usize, [usize; N]) + Sync,
    ) {
        let outermost = self.dims.first().copied().unwrap_or(1);
        let block: usize = self.dims.iter().skip(1).product();
        let piece = |first: usize, dst: &mut [f32]| {
            let mut written = 0;
            self.for_each_run_in(first, dst.len() / block.max(1), |offsets, n, strides| {
                run(&mut dst[written..written + n], offsets, n, strides);
                written += n;
            });
        };
        let threads = crate::engine::threads::ways();
        if out.len() >= super::PARALLEL_ELEMENTS && threads > 1 && outermost > 1 && block > 0 {
            use rayon::prelude::*;
            crate::engine::threads::entering_parallel_region();
            let per = outermost.div_ceil(threads);
            out.par_chunks_mut(per * block)
                .enumerate()
                .for_each(|(i, dst)| piece(i * per, dst));
        } else {
            piece(0, out);
        }
    }
}

/// `a op b` with broadcasting, then ReLU when `relu`; in `a`'s buffer when it has the
/// output's shape.
///
/// # Errors
/// Shapes that do not broadcast, or an output above the cap.
pub fn binary(
    op: Arithmetic,
    mut a: Dense,
    b: &Dense,
    relu: bool,
    cap: Cap,
) -> Result<Dense, EngineError> {
    let shape = broadcast_shape(&[&a.shape, &b.shape])?;
    let len = cap.check(&shape, F32)?;
    if a.shape == shape {
        if len > 0 {
            let layout = Layout::new(&shape, [&b.shape]);
            layout.spread_runs(a.values_mut(), |dst, [ib], n, [sb]| {
                let b = &b.data[ib..ib + if sb == 0 { 1 } else { n }];
                match op {
                    Arithmetic::Add => on_best_cpu(InPlace(dst, b, |x, y| x + y, relu)),
                    Arithmetic::Sub => on_best_cpu(InPlace(dst, b, |x, y| x - y, relu)),
                    Arithmetic::Mul => on_best_cpu(InPlace(dst, b, |x, y| x * y, relu)),
                    Arithmetic::Div => on_best_cpu(InPlace(dst, b, |x, y| x / y, relu)),
                }
            });
        }
        return Ok(a);
    }
    // The runs cover every output element.
    let mut out = super::reuse::for_overwrite(len);
    if len > 0 {
        let layout = Layout::new(&shape, [&a.shape, &b.shape]);
        layout.spread_runs(&mut out, |dst, [ia, ib], n, [sa, sb]| {
            let a = &a.data[ia..ia + if sa == 0 { 1 } else { n }];
            let b = &b.data[ib..ib + if sb == 0 { 1 } else { n }];
            match op {
                Arithmetic::Add => on_best_cpu(Run(dst, a, b, |x, y| x + y, relu)),
                Arithmetic::Sub => on_best_cpu(Run(dst, a, b, |x, y| x - y, relu)),
                Arithmetic::Mul => on_best_cpu(Run(dst, a, b, |x, y| x * y, relu)),
                Arithmetic::Div => on_best_cpu(Run(dst, a, b, |x, y| x / y, relu)),
            }
        });
    }
    Dense::new(out, shape)
}

/// One innermost run: each operand is the run's values or one value repeated.
struct Run<'a, F>(&'a mut [f32], &'a [f32], &'a [f32], F, bool);

impl<F: Fn(f32, f32) -> f32> Loop for Run<'_, F> {
    #[inline(always)]
    fn run(self) {
        let Self(dst, a, b, f, relu) = self;
        let n = dst.len();
        match (a.len() == n, b.len() == n) {
            (true, true) => dst
                .iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(d, (x, y))| *d = f(*x, *y)),
            (true, false) => {
                let y = b[0];
                dst.iter_mut().zip(a).for_each(|(d, x)| *d = f(*x, y));
            }
            (false, true) => {
                let x = a[0];
                dst.iter_mut().zip(b).for_each(|(d, y)| *d = f(x, *y));
            }
            (false, false) => dst.fill(f(a[0], b[0])),
        }
        if relu {
            dst.iter_mut().for_each(|v| *v = super::fmax(*v, 0.0));
        }
    }
}

/// One innermost run computed over the first operand's own values.
struct InPlace<'a, F>(&'a mut [f32], &'a [f32], F, bool);

impl<F: Fn(f32, f32) -> f32> Loop for InPlace<'_, F> {
    #[inline(always)]
    fn run(self) {
        let Self(dst, b, f, relu) = self;
        if b.len() == dst.len() {
            dst.iter_mut().zip(b).for_each(|(d, y)| *d = f(*d, *y));
        } else {
            let y = b[0];
            dst.iter_mut().for_each(|d| *d = f(*d, y));
        }
        if relu {
            dst.iter_mut().for_each(|v| *v = super::fmax(*v, 0.0));
        }
    }
}

/// `condition ? x : y` with broadcasting (the condition as 0 / non-zero integers).
///
/// # Errors
/// Shapes that do not broadcast, or an output above the cap.
pub fn select(
    (condition, condition_shape): (&[i64], &[usize]),
    x: &Dense,
    y: &Dense,
    cap: Cap,
) -> Result<Dense, EngineError> {
    let shape = broadcast_shape(&[condition_shape, &x.shape, &y.shape])?;
    let len = cap.check(&shape, F32)?;
    if crate::engine::limits::product(condition_shape) != Some(condition.len()) {
        return Err(EngineError::Internal(format!(
            "Where: {} conditions for shape {condition_shape:?}",
            condition.len()
        )));
    }
    let mut out = vec![0f32; len];
    if len > 0 {
        let layout = Layout::new(&shape, [condition_shape, &x.shape, &y.shape]);
        let mut written = 0;
        layout.for_each_run(|[ic, ix, iy], n, [sc, sx, sy]| {
            for (i, d) in out[written..written + n].iter_mut().enumerate() {
                *d = if condition[ic + i * sc] != 0 {
                    x.data[ix + i * sx]
                } else {
                    y.data[iy + i * sy]
                };
            }
            written += n;
        });
    }
    Dense::new(out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::elementwise::broadcast_index;

    fn ramp(shape: &[usize], seed: usize) -> Dense {
        let len = shape.iter().product::<usize>();
        let data = (0..len)
            .map(|i| ((i * 7 + seed * 3) % 11) as f32 - 4.5)
            .collect();
        Dense::new(data, shape.to_vec()).unwrap()
    }

    /// Every broadcast pattern of two ranks, against the index formula.
    #[test]
    fn binary_and_select_match_the_broadcast_index() {
        // The last four are large enough to split over the pool (where it has 2 threads):
        // one contiguous run, a per-channel scale, an outer broadcast, an odd outermost.
        let shapes: [(&[usize], &[usize]); 14] = [
            (&[1, 300, 300], &[1, 300, 300]),
            (&[1, 24, 56, 56], &[1, 24, 1, 1]),
            (&[1, 1, 70000], &[5, 1, 1]),
            (&[7, 3, 3200], &[3, 1]),
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4], &[1, 3, 1]),
            (&[1, 2, 32, 32], &[1, 1, 1, 32]),
            (&[5], &[]),
            (&[], &[2, 2]),
            (&[3, 1, 2], &[1, 1, 1]),
            (&[0, 3], &[1, 3]),
            (&[2, 3, 1, 5], &[2, 1, 4, 5]),
        ];
        for (sa, sb) in shapes {
            let (a, b) = (ramp(sa, 1), ramp(sb, 2));
            let out = broadcast_shape(&[sa, sb]).unwrap();
            let (ia, ib) = (broadcast_index(sa, &out), broadcast_index(sb, &out));
            for (op, f) in [
                (Arithmetic::Add, (|x, y| x + y) as fn(f32, f32) -> f32),
                (Arithmetic::Sub, |x, y| x - y),
                (Arithmetic::Mul, |x, y| x * y),
                (Arithmetic::Div, |x, y| x / y),
            ] {
                for relu in [false, true] {
                    // Into a reused buffer of NaNs: every element must be written.
                    let got = super::super::reuse::with_stale(out.iter().product(), || {
                        binary(op, a.clone(), &b, relu, Cap::unlimited()).unwrap()
                    });
                    assert_eq!(got.shape, out);
                    for (i, v) in got.data.iter().enumerate() {
                        let mut want = f(a.data[ia[i]], b.data[ib[i]]);
                        if relu {
                            want = want.max(0.0);
                        }
                        assert_eq!(v.to_bits(), want.to_bits(), "{sa:?} {sb:?} {op:?} at {i}");
                    }
                }
            }
            // Where: the condition in a's shape, x in b's, y a scalar.
            let condition: Vec<i64> = (0..a.data.len()).map(|i| (i % 3 == 0).into()).collect();
            let y = ramp(&[], 5);
            let got = select((&condition, sa), &b, &y, Cap::unlimited()).unwrap();
            assert_eq!(got.shape, out);
            for (i, v) in got.data.iter().enumerate() {
                let want = if condition[ia[i]] != 0 {
                    b.data[ib[i]]
                } else {
                    y.data[0]
                };
                assert_eq!(*v, want, "Where {sa:?} {sb:?} at {i}");
            }
        }
    }
}
