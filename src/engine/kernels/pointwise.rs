//! Element-wise kernels on host buffers that need more than one line: a vectorizable
//! `exp` and the logistic function built on it.

/// `e^x` for f32 in branch-free arithmetic the compiler vectorizes: `2^n · p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, `p` a degree-6 polynomial (relative error below 2e-7);
/// inputs are clamped to [-87.3, 88.3] (where f32's `e^x` is still normal), NaN stays NaN.
#[inline]
#[must_use]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    #[expect(clippy::cast_possible_truncation, reason = "n is within ±128")]
    let scale = f32::from_bits(((n as i32 + 127).clamp(0, 255) as u32) << 23);
    let y = p * scale;
    if x.is_nan() { x } else { y }
}

/// The logistic function in place, `1 / (1 + e^-x)`, vectorized.
pub fn sigmoid(values: &mut [f32]) {
    for v in values {
        *v = 1.0 / (1.0 + exp_fast(-*v));
    }
}
