//! Element-wise kernels on host buffers that need more than one line: a vectorizable
//! `exp` and the logistic function built on it, and a vectorizable `erf` with GELU.

use super::{Loop, on_best_cpu, spread_chunks, spread_costly_chunks};
/// `e^x` for f32 in branch-free arithmetic the compiler vectorizes: `2^n · p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, `p` a degree-6 polynomial (relative error below 2e-7);
/// inputs are clamped to [-87.3, 88.3] (where f32's `e^x` is still normal), NaN stays NaN,
/// and below -87.3 the result is 0: never a subnormal, which every later multiply would
/// pay for in a microcode assist (a softmax over a masked attention row made BERT's
/// `P · V` product 20× slower on an Intel Xeon that way).
#[inline(always)]
#[must_use]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2^23 trick: plain adds, which vectorize on any x86-64
    // (`f32::round` is a libm call without SSE4.1, and stops the loop vectorizing).
    const ROUND: f32 = 12_582_912.0;
    let underflows = x < -87.3;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n sits in t's low mantissa bits: 2^n built by integer adds (a float-to-int cast
    // saturates, which does not vectorize). n + 127 is in 1..=254 for x in the clamp.
    let scale = f32::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23);
    let y = p * scale;
    if x.is_nan() {
        x
    } else if underflows {
        0.0
    } else {
        y
    }
}

/// `v`, or 0 where it is subnormal (below f32's smallest normal in magnitude): outputs
/// that feed products (probabilities, gates) stay off the CPU's slow subnormal path. The
/// change is below 1.2e-38 in absolute terms; NaN stays NaN.
#[inline(always)]
#[must_use]
pub fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v }
}

/// `erf(x)` for f32 in branch-free arithmetic the compiler vectorizes: `x · p(x²) / q(x²)`
/// on `x` clamped to [-4, 4] (past it erf is ±1 in f32), the rational approximation of
/// Eigen's `generic_fast_erf_float`; relative error below 5e-7 against libm, so also
/// accurate near 0 where erf(x) ≈ 2x/√π; never past ±1. NaN stays NaN.
#[inline(always)]
#[must_use]
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_4e-10_f32;
    for c in [
        2.770_681_5e-8,
        -2.101_024e-6,
        -5.692_506_2e-5,
        -7.349_906_4e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_15e-5_f32;
    for c in [
        -2.133_740_5e-4,
        -1.682_827e-3,
        -7.373_329_3e-3,
        -1.426_473_9e-2,
    ] {
        q = q * x2 + c;
    }
    // Near ±4 the quotient can pass ±1 by a few ulps: erf never does.
    (x * p / q).clamp(-1.0, 1.0)
}

/// `erf` in place, vectorized.
pub fn erf(values: &mut [f32]) {
    activate(values, Activation::Erf);
}

/// GELU in place, vectorized: `x/2 · (1 + erf(x/√2))`, or with `tanh` the approximation
/// `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`. Far left, where `1 + erf` cancels, the
/// absolute error is up to `2e-7·|x|` (a few times `1 + erff`'s); the outputs there are
/// below 1e-6.
pub fn gelu(values: &mut [f32], tanh: bool) {
    activate(
        values,
        if tanh {
            Activation::GeluTanh
        } else {
            Activation::Gelu
        },
    );
}

/// The logistic function in place, `1 / (1 + e^-x)`, vectorized.
pub fn sigmoid(values: &mut [f32]) {
    activate(values, Activation::Sigmoid);
}

/// SiLU in place, `x · sigmoid(x) = x / (1 + e^-x)`, vectorized.
pub fn silu(values: &mut [f32]) {
    activate(values, Activation::Silu);
}

/// HardSigmoid in place, `clamp(αx + β, 0, 1)`, or with `swish` HardSwish's `x` times
/// it; vectorized.
pub fn hard(values: &mut [f32], swish: bool, alpha: f32, beta: f32) {
    activate(values, Activation::Hard { swish, alpha, beta });
}

/// [`hard`] on this thread (a kernel's epilogue, on a block it just wrote).
pub(super) fn hard_on_this_thread(values: &mut [f32], swish: bool, alpha: f32, beta: f32) {
    on_best_cpu(Activate(values, Activation::Hard { swish, alpha, beta }));
}

/// `activation` over `values`, spread over the pool when they are many.
fn activate(values: &mut [f32], activation: Activation) {
    // What a value costs against a plain pass (measured: GELU 0.44 ns a value on one
    // core, an Add 0.15).
    let cost = match activation {
        Activation::Hard { .. } => 1,
        Activation::Sigmoid | Activation::Silu | Activation::Erf => 3,
        Activation::Gelu | Activation::GeluTanh => 3,
    };
    spread_costly_chunks(values, 1, cost, |_, values| {
        on_best_cpu(Activate(values, activation));
    });
}

/// `x · scale[c] + shift[c]` over each plane of `plane` values, channels cycling through
/// `scale`, then ReLU when `relu`; vectorized.
pub fn scale_shift(values: &mut [f32], plane: usize, scale: &[f32], shift: &[f32], relu: bool) {
    /// Values, plane, scale, shift, ReLU, and the channel of the first plane.
    struct Affine<'a>(&'a mut [f32], usize, &'a [f32], &'a [f32], bool, usize);
    impl Loop for Affine<'_> {
        #[inline(always)]
        fn run(self) {
            let Self(values, plane, scale, shift, relu, first) = self;
            for (i, chunk) in values.chunks_exact_mut(plane.max(1)).enumerate() {
                let c = (first + i) % scale.len();
                let (s, t) = (scale[c], shift[c]);
                if relu {
                    chunk.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0));
                } else {
                    chunk.iter_mut().for_each(|v| *v = *v * s + t);
                }
            }
        }
    }
    if !scale.is_empty() && plane > 0 {
        // Pieces are whole planes; each starts at its own channel.
        spread_chunks(values, plane, |start, values| {
            on_best_cpu(Affine(values, plane, scale, shift, relu, start / plane));
        });
    }
}

#[derive(Clone, Copy)]
enum Activation {
    Hard { swish: bool, alpha: f32, beta: f32 },
    Sigmoid,
    Silu,
    Erf,
    Gelu,
    GeluTanh,
}

/// An activation over a buffer, in place.
struct Activate<'a>(&'a mut [f32], Activation);

impl Loop for Activate<'_> {
    #[inline(always)]
    fn run(self) {
        let Self(values, activation) = self;
        apply(values, activation);
    }
}

/// [`apply`] by name, outside [`on_best_cpu`]: compiled for the baseline CPU, what the
/// vector copies are checked against.
#[cfg(test)]
pub(super) fn apply_one_for_tests(name: &str, values: &mut [f32]) {
    let activation = match name {
        "gelu" => Activation::Gelu,
        "gelu tanh" => Activation::GeluTanh,
        "erf" => Activation::Erf,
        "sigmoid" => Activation::Sigmoid,
        "hardswish" => Activation::Hard {
            swish: true,
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        other => panic!("no activation {other}"),
    };
    apply(values, activation);
}

#[inline(always)]
fn apply(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::Hard {
            swish: true,
            alpha,
            beta,
        } => values
            .iter_mut()
            .for_each(|v| *v *= (*v * alpha + beta).clamp(0.0, 1.0)),
        Activation::Hard {
            swish: false,
            alpha,
            beta,
        } => values
            .iter_mut()
            .for_each(|v| *v = (*v * alpha + beta).clamp(0.0, 1.0)),
        Activation::Sigmoid => values
            .iter_mut()
            .for_each(|v| *v = flush_subnormal(1.0 / (1.0 + exp_fast(-*v)))),
        Activation::Silu => values.iter_mut().for_each(|v| *v /= 1.0 + exp_fast(-*v)),
        Activation::Erf => values.iter_mut().for_each(|v| *v = erf_fast(*v)),
        Activation::Gelu => values
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf_fast(*v * std::f32::consts::FRAC_1_SQRT_2))),
        Activation::GeluTanh => values.iter_mut().for_each(|v| {
            // tanh(u) = 1 - 2 / (1 + e^2u); exp_fast saturates, so tanh does at ±1.
            const K: f32 = 0.797_884_6; // √(2/π)
            let u = K * (*v + 0.044_715 * *v * *v * *v);
            let tanh = 1.0 - 2.0 / (1.0 + exp_fast(2.0 * u));
            *v = 0.5 * *v * (1.0 + tanh);
        }),
    }
}

/// Sums in 8 lanes, so the loop vectorizes (a single running sum is a chain the compiler
/// must keep in order).
#[inline(always)]
fn lane_sum(values: &[f32], mut term: impl FnMut(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += term(*v);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| term(*v)).sum::<f32>()
}

/// The largest value, NaN ignored (as `f32::max` does; -∞ for none), in 8 lanes: a single
/// running max is a chain of dependent compares the compiler must keep in order, which
/// made softmax over ViT's 65-wide attention rows 3× slower than its `exp`s. The max is
/// exact, so the lanes give the same value as the chain.
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    // `v > m` is false for a NaN `v`, so NaNs never enter a lane.
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, *v);
        }
    }
    lanes
        .into_iter()
        .chain(rest.iter().copied())
        .fold(f32::NEG_INFINITY, larger)
}

#[inline(always)]
fn softmax_apply(values: &mut [f32], row: usize) {
    for r in values.chunks_exact_mut(row) {
        let max = lane_max(r);
        r.iter_mut().for_each(|v| *v = exp_fast(*v - max));
        let inv = 1.0 / lane_sum(r, |v| v);
        // A term near e^-87 divided by the row's sum would be subnormal.
        r.iter_mut().for_each(|v| *v = flush_subnormal(*v * inv));
    }
}

#[inline(always)]
fn layer_norm_apply(values: &mut [f32], scale: &[f32], bias: Option<&[f32]>, epsilon: f32) {
    let width = scale.len();
    #[expect(clippy::cast_precision_loss, reason = "a row length")]
    let n = width as f32;
    for r in values.chunks_exact_mut(width) {
        let mean = lane_sum(r, |v| v) / n;
        let var = lane_sum(r, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + epsilon).sqrt();
        match bias {
            Some(bias) => {
                for ((v, s), b) in r.iter_mut().zip(scale).zip(bias) {
                    *v = (*v - mean) * inv * s + b;
                }
            }
            None => {
                for (v, s) in r.iter_mut().zip(scale) {
                    *v = (*v - mean) * inv * s;
                }
            }
        }
    }
}

/// Softmax over each row of `row` values, in place; rows stay finite for finite inputs
/// (the row's maximum is subtracted first).
pub fn softmax_rows(values: &mut [f32], row: usize) {
    if row > 0 {
        // 0.7–0.9 ns a value on one core (65-wide rows): 5× a plain pass.
        spread_costly_chunks(values, row, 5, |_, values| {
            on_best_cpu(Softmax(values, row))
        });
    }
}

struct Softmax<'a>(&'a mut [f32], usize);

impl Loop for Softmax<'_> {
    #[inline(always)]
    fn run(self) {
        let Self(values, row) = self;
        softmax_apply(values, row);
    }
}

/// Layer normalization of rows of `scale.len()` values, in place (see `kernels`).
pub fn layer_norm_rows(values: &mut [f32], scale: &[f32], bias: Option<&[f32]>, epsilon: f32) {
    if !scale.is_empty() {
        // Three passes over each row.
        spread_costly_chunks(values, scale.len(), 3, |_, values| {
            on_best_cpu(LayerNorm {
                values,
                scale,
                bias,
                epsilon,
            });
        });
    }
}

struct LayerNorm<'a> {
    values: &'a mut [f32],
    scale: &'a [f32],
    bias: Option<&'a [f32]>,
    epsilon: f32,
}

impl Loop for LayerNorm<'_> {
    #[inline(always)]
    fn run(self) {
        layer_norm_apply(self.values, self.scale, self.bias, self.epsilon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_max_is_the_running_max() {
        let values: Vec<f32> = (0..67u16)
            .map(|i| (f32::from(i) * 0.7).sin() * f32::from(i))
            .collect();
        for len in [0, 1, 7, 8, 9, 16, 65, 67] {
            let row = &values[..len];
            let running = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(lane_max(row).to_bits(), running.to_bits(), "{len} values");
        }
        let with_nan = [1.0, f32::NAN, 3.0, -2.0, f32::NAN, 0.5, 2.0, 1.0, 2.5];
        assert_eq!(lane_max(&with_nan), 3.0, "NaN ignored, as f32::max does");
        assert_eq!(lane_max(&[f32::NAN; 9]), f32::NEG_INFINITY);
        assert_eq!(lane_max(&[f32::NEG_INFINITY, -1e30]), -1e30);
    }
}
