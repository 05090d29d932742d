//! cairn's own f32 CPU kernels for the hot operators, on host buffers: convolution as
//! im2col + GEMM (the `gemm` crate), fused bias and ReLU epilogues, direct pooling loops,
//! row softmax. The execution plan picks them on the CPU device; burn ops stay the general
//! path. Every kernel works on row-major (NCHW) data and checks the sizes it is given.

use super::EngineError;
use super::limits::product;
pub use super::shapes::{window_out, window_out_2d};

mod batched;
pub mod broadcast;
mod conv;
mod depthwise;
mod direct;
mod gemv;
pub mod panels;
mod phases;
mod pointwise;
mod pool;
mod product;
mod reduce;
pub mod reuse;
mod unfold;
mod window;
mod winograd;
pub use batched::batched_matmul;
pub use conv::{Conv2d, Hard, Packed};
pub use pointwise::{erf, erf_fast, exp_fast, gelu, hard, scale_shift, sigmoid, silu};
pub use pool::{Pool, PoolKind, global_average_pool};
pub use product::matmul;
use product::{matmul_columns, matmul_into_rows, matmul_one_thread};
pub use reduce::{Reduce, reduce};

/// A dense row-major f32 tensor on the host. Its values are shared, not copied, when a
/// value is cloned (a tensor several steps read, a constant every run starts from); a
/// kernel that writes in place takes them with [`Dense::values_mut`], which copies only
/// while another reader holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub data: std::sync::Arc<Vec<f32>>,
    pub shape: Vec<usize>,
}

impl Dense {
    /// # Errors
    /// The data length is not the product of the shape.
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<Self, EngineError> {
        if product(&shape) != Some(data.len()) {
            return Err(EngineError::Internal(format!(
                "{} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(Self {
            data: std::sync::Arc::new(data),
            shape,
        })
    }

    /// The values, to write in place: copied first if another value shares them.
    pub fn values_mut(&mut self) -> &mut Vec<f32> {
        std::sync::Arc::make_mut(&mut self.data)
    }

    /// The values, moved out when no other value shares them.
    #[must_use]
    pub fn into_values(mut self) -> Vec<f32> {
        match std::sync::Arc::get_mut(&mut self.data) {
            Some(values) => std::mem::take(values),
            None => self.data.as_ref().clone(),
        }
    }
}

/// The last holder of a tensor's values hands its buffer to [`reuse`], for a later
/// step's output in the same run.
impl Drop for Dense {
    fn drop(&mut self) {
        if let Some(values) = std::sync::Arc::get_mut(&mut self.data) {
            reuse::keep(std::mem::take(values));
        }
    }
}

/// Products of at least this many multiply-adds are split across the intra-op pool; below
/// it, waking threads costs more than it saves.
const PARALLEL_MACS: usize = 1 << 18;

/// Element-wise passes over at least this many values are split across the intra-op pool
/// (about 10 µs of work on one core; a split costs about 2 µs while the workers are awake).
pub(crate) const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Runs `work` over `values` in one piece, or over the pool in one piece per thread when
/// there are enough values; pieces are whole multiples of `granule` (a row, a plane), and
/// `work` is told where its piece starts (in values).
pub(super) fn spread_chunks(
    values: &mut [f32],
    granule: usize,
    work: impl Fn(usize, &mut [f32]) + Sync,
) {
    spread_costly_chunks(values, granule, 1, work);
}

/// [`spread_chunks`] for work that costs `cost` times a plain pass a value (softmax's
/// `exp`s and its three passes: 5; an `erf`: 3): split from `PARALLEL_ELEMENTS / cost`
/// values, where the work is as long as a plain pass's at the usual threshold.
pub(super) fn spread_costly_chunks(
    values: &mut [f32],
    granule: usize,
    cost: usize,
    work: impl Fn(usize, &mut [f32]) + Sync,
) {
    let threads = super::threads::ways();
    let granule = granule.max(1);
    let granules = values.len() / granule;
    if values.len() < PARALLEL_ELEMENTS / cost.max(1) || threads < 2 || granules < 2 {
        work(0, values);
        return;
    }
    use rayon::prelude::*;
    super::threads::entering_parallel_region();
    let piece = granules.div_ceil(threads) * granule;
    values
        .par_chunks_mut(piece)
        .enumerate()
        .for_each(|(i, chunk)| work(i * piece, chunk));
}

/// A loop over host buffers whose body is inlined into [`on_best_cpu`]'s copies.
pub(super) trait Loop {
    fn run(self);
}

/// Runs `work` compiled for AVX-512 (16 lanes) or AVX2 (8) when the CPU has it, else for
/// the baseline (4): AVX2 was about 4× faster than the scalar loops it replaced on this
/// machine's EPYC, and AVX-512 halves the compute-bound loops again (GELU over BERT's
/// 32×512 activations: 14.1 → 7.2 µs). Every `Loop::run` is `#[inline(always)]`, so its
/// body is compiled with the features of the copy it runs in. The loops compute each
/// element alone (sums in fixed 8-lane order), so every copy gives the same results.
pub(super) fn on_best_cpu(work: impl Loop) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(work: impl Loop) {
            work.run();
        }
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512(work: impl Loop) {
            work.run();
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { avx512(work) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { avx2(work) };
            return;
        }
    }
    work.run();
}

/// Adds `bias` to every value, then clamps at zero when `relu`.
pub fn bias_relu(values: &mut [f32], bias: f32, relu: bool) {
    struct BiasRelu<'a>(&'a mut [f32], f32, bool);
    impl Loop for BiasRelu<'_> {
        #[inline(always)]
        fn run(self) {
            let Self(values, bias, relu) = self;
            if relu {
                values.iter_mut().for_each(|v| *v = fmax(*v + bias, 0.0));
            } else if bias != 0.0 {
                values.iter_mut().for_each(|v| *v += bias);
            }
        }
    }
    on_best_cpu(BiasRelu(values, bias, relu));
}

/// The larger of two values, NaN losing to a number (`f32::max`). Not `if a > b { a }
/// else { b }`: written back in place (`*v = fmax(*v, t)`), that select becomes a masked
/// store, microcoded on AMD's cores, which made max pooling 5× slower.
#[inline]
pub(super) fn fmax(a: f32, b: f32) -> f32 {
    a.max(b)
}

/// Clamps every value at zero.
pub fn relu(values: &mut [f32]) {
    spread_chunks(values, 1, |_, values| bias_relu(values, 0.0, true));
}

/// Softmax over each row of `row` values, in place (vectorized `exp`; see `pointwise`).
pub fn softmax_rows(values: &mut [f32], row: usize) {
    pointwise::softmax_rows(values, row);
}

/// Layer normalization of each row of `scale.len()` values, in place: `(x − mean) /
/// √(var + ε) · scale + bias`, mean and (biased) variance over the row, as ONNX
/// LayerNormalization computes them in f32.
pub fn layer_norm_rows(values: &mut [f32], scale: &[f32], bias: Option<&[f32]>, epsilon: f32) {
    pointwise::layer_norm_rows(values, scale, bias, epsilon);
}

pub(super) fn rank4(shape: &[usize], op: &str) -> Result<[usize; 4], EngineError> {
    <[usize; 4]>::try_from(shape).map_err(|_| {
        EngineError::Invalid(format!(
            "{op}: expected a rank-4 input, got shape {shape:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_sigmoid_match_the_library() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            #[expect(clippy::cast_precision_loss, reason = "test points")]
            let x = i as f32 / 100.0 + 0.003;
            let (got, want) = (exp_fast(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(-1000.0), 0.0, "underflow is 0, not a subnormal");
        assert_eq!(exp_fast(-87.5), 0.0);
        assert!(exp_fast(-87.25) >= f32::MIN_POSITIVE);
        assert!(exp_fast(1000.0) > 1e38);
        let mut v = vec![-100.0, -1.0, 0.0, 1.0, 100.0];
        sigmoid(&mut v);
        for (got, x) in v.iter().zip([-100f32, -1.0, 0.0, 1.0, 100.0]) {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((got - want).abs() <= 1e-7 + 1e-6 * want, "{got} vs {want}");
        }
        let points = [-100f32, -20.0, -1.0, -0.0, 0.5, 3.0, 100.0];
        let mut v = points.to_vec();
        silu(&mut v);
        for (got, x) in v.iter().zip(points) {
            let want = x / (1.0 + (-x).exp());
            assert!(
                (got - want).abs() <= 1e-6 * want.abs() + 1e-30,
                "{got} vs {want}"
            );
        }
    }

    /// erf in f64: its Maclaurin series for |x| ≤ 3 (terms below 1e4, so cancellation
    /// costs under 1e-11), past it 1 − erfc by the asymptotic series (erfc(3) = 2e-5 and
    /// the truncation is below 1e-3 of it).
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let a = x.abs();
            let inverse = 1.0 / (2.0 * a * a);
            let series = 1.0 - inverse + 3.0 * inverse.powi(2) - 15.0 * inverse.powi(3)
                + 105.0 * inverse.powi(4);
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            return x.signum() * (1.0 - erfc);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            let n = f64::from(n);
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn fast_erf_and_gelu_match_the_reference() {
        let mut points: Vec<f32> = (-6000..=6000).map(|i| i as f32 / 1000.0 + 3e-4).collect();
        points.extend((-300..=0).map(|e| 10f32.powf(e as f32 / 10.0)));
        points.extend([0.0, -0.0, 1e-30, -1e-30, 4.0, -4.0, 9.0, f32::INFINITY]);
        let mut worst = 0f64;
        let mut erfs = points.clone();
        erf(&mut erfs);
        for (&x, &got) in points.iter().zip(&erfs) {
            let want = erf_reference(f64::from(x));
            let error = (f64::from(got) - want).abs() / want.abs().max(1e-37);
            worst = worst.max(error);
        }
        assert!(worst < 1e-6, "erf: relative error {worst}");
        assert!(erf_fast(f32::NAN).is_nan());
        assert_eq!(erf_fast(f32::NEG_INFINITY), -1.0);
        for tanh in [false, true] {
            let mut v = points.clone();
            gelu(&mut v, tanh);
            for (&x, &got) in points.iter().zip(&v) {
                if !x.is_finite() {
                    continue;
                }
                let x = f64::from(x);
                let want = if tanh {
                    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
                    0.5 * x * (1.0 + u.tanh())
                } else {
                    0.5 * x * (1.0 + erf_reference(x / std::f64::consts::SQRT_2))
                };
                // Far left, 1 + erf(x/√2) cancels: erf's absolute error (up to ~4e-7
                // near ±4, where erff's is 6e-8) times x/2 is what is left.
                assert!(
                    (f64::from(got) - want).abs() <= 2e-6 * want.abs() + 2e-7 * x.abs().max(1.0),
                    "gelu(tanh: {tanh}) of {x}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn layer_norm_rows_match_the_definition() {
        let width = 37; // a tail past the 8 lanes
        let x: Vec<f32> = (0..3 * width)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let scale: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 50.0).collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 10.0 - 1.0).collect();
        for with_bias in [false, true] {
            let mut got = x.clone();
            layer_norm_rows(&mut got, &scale, with_bias.then_some(&bias[..]), 1e-5);
            for (row, out) in x.chunks(width).zip(got.chunks(width)) {
                let n = width as f64;
                let mean = row.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
                let var = row
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                for (i, (v, o)) in row.iter().zip(out).enumerate() {
                    let b = if with_bias { f64::from(bias[i]) } else { 0.0 };
                    let want =
                        (f64::from(*v) - mean) / (var + 1e-5).sqrt() * f64::from(scale[i]) + b;
                    assert!((f64::from(*o) - want).abs() < 1e-5, "{o} vs {want}");
                }
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut v = vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
        softmax_rows(&mut v, 3);
        assert!((v[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((v[3] - 1.0 / 3.0).abs() < 1e-6);
        // A row past the 8 lanes, against the definition.
        let x: Vec<f32> = (0..21).map(|i| (i as f32 - 10.0) * 0.7).collect();
        let mut got = x.clone();
        softmax_rows(&mut got, 21);
        let total: f64 = x.iter().map(|v| f64::from(*v).exp()).sum();
        for (v, g) in x.iter().zip(&got) {
            let want = f64::from(*v).exp() / total;
            assert!(
                (f64::from(*g) - want).abs() <= 1e-6 * want + 1e-9,
                "{g} vs {want}"
            );
        }
    }

    #[test]
    fn the_vector_copies_of_the_activations_agree_with_the_baseline_bit_for_bit() {
        // `on_best_cpu` picks AVX-512, AVX2 or the baseline by the CPU: a model's outputs
        // must not depend on which. The baseline is the loop run outside `on_best_cpu`.
        let values: Vec<f32> = (0..4099u32)
            .map(|i| {
                #[expect(clippy::cast_precision_loss, reason = "test points")]
                let t = i as f32;
                (t * 0.618_034).sin() * 9.0 + (t * 0.001)
            })
            .chain([
                0.0,
                -0.0,
                f32::NAN,
                f32::INFINITY,
                -f32::INFINITY,
                1e-40,
                -88.0,
            ])
            .collect();
        type Run = fn(&mut [f32]);
        let runs: [(&str, Run); 5] = [
            ("gelu", |v| gelu(v, false)),
            ("gelu tanh", |v| gelu(v, true)),
            ("erf", erf),
            ("sigmoid", sigmoid),
            ("hardswish", |v| hard(v, true, 1.0 / 6.0, 0.5)),
        ];
        for (name, run) in runs {
            let mut best = values.clone();
            run(&mut best);
            // The same function with `on_best_cpu` bypassed: compiled for the baseline.
            let mut baseline = values.clone();
            pointwise::apply_one_for_tests(name, &mut baseline);
            for (i, (b, w)) in best.iter().zip(&baseline).enumerate() {
                assert!(
                    b.to_bits() == w.to_bits() || (b.is_nan() && w.is_nan()),
                    "{name}({}): {b} on the best copy, {w} on the baseline",
                    values[i]
                );
            }
        }
    }

    #[test]
    fn softmax_and_sigmoid_never_leave_subnormals() {
        // An attention row masked with f32::MIN (BERT's extended mask) and one whose small
        // terms only become subnormal once divided by the row's sum.
        let mut row: Vec<f32> = (0..32)
            .map(|i| if i % 7 == 0 { f32::MIN } else { 0.1 * i as f32 })
            .collect();
        row.extend((0..32).map(|i| if i == 0 { -87.2 } else { 0.0 }));
        softmax_rows(&mut row, 32);
        let mut gates = vec![-87.0, -87.5, -88.0, -100.0, -1e30, f32::MIN];
        sigmoid(&mut gates);
        for v in row.iter().chain(&gates) {
            assert!(!v.is_subnormal(), "{v:e} is subnormal");
        }
        assert_eq!(row[0], 0.0, "a masked term is exactly 0");
        assert_eq!(row[32], 0.0, "e^-87.2 / 32 is flushed");
        assert!((row[32..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(gates[0] > 0.0, "sigmoid(-87) is still normal");
    }

    #[test]
    fn strided_matmul_reads_transposed_operands() {
        // a = [[1,2],[3,4]], b^T stored = [[5,6],[7,8]] → a · b = [[17,23],[39,53]].
        let a = [1.0, 2.0, 3.0, 4.0];
        let bt = [5.0, 7.0, 6.0, 8.0];
        let mut out = [0.0; 4];
        matmul(2, 2, 2, &mut out, (&a, 2, 1), (&bt, 1, 2), false, 1.0);
        assert_eq!(out, [19.0, 22.0, 43.0, 50.0]);
    }
}
