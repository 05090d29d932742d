//! Element-wise kernels on host buffers that need more than one line: a vectorizable
//! `exp` and the logistic function built on it.

/// `e^x` for f32 in branch-free arithmetic the compiler vectorizes: `2^n · p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, `p` a degree-6 polynomial (relative error below 2e-7);
/// inputs are clamped to [-87.3, 88.3] (where f32's `e^x` is still normal), NaN stays NaN.
#[inline(always)]
#[must_use]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2^23 trick: plain adds, which vectorize on any x86-64
    // (`f32::round` is a libm call without SSE4.1, and stops the loop vectorizing).
    const ROUND: f32 = 12_582_912.0;
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
    if x.is_nan() { x } else { y }
}

/// The logistic function in place, `1 / (1 + e^-x)`, vectorized.
pub fn sigmoid(values: &mut [f32]) {
    on_best_cpu(values, Activation::Sigmoid);
}

/// SiLU in place, `x · sigmoid(x) = x / (1 + e^-x)`, vectorized.
pub fn silu(values: &mut [f32]) {
    on_best_cpu(values, Activation::Silu);
}

#[derive(Clone, Copy)]
enum Activation {
    Sigmoid,
    Silu,
}

#[inline(always)]
fn apply(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::Sigmoid => values
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + exp_fast(-*v))),
        Activation::Silu => values.iter_mut().for_each(|v| *v /= 1.0 + exp_fast(-*v)),
    }
}

/// The loop compiled for AVX2 (8 lanes) when the CPU has it, else for the baseline (4):
/// about 4× faster than the scalar loop it replaced on this machine's EPYC.
fn on_best_cpu(values: &mut [f32], activation: Activation) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(values: &mut [f32], activation: Activation) {
            apply(values, activation);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { avx2(values, activation) };
            return;
        }
    }
    apply(values, activation);
}
