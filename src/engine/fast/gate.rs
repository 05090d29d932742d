//! Squeeze-and-excite's gate folded into the convolution after it. MobileNetV3 and
//! EfficientNet multiply each block's activations by a per-channel gate (`x · s`, `s` of
//! shape `[n, c, 1, 1]`) and feed the product to a 1×1 convolution alone. For one image
//! that is the convolution with its weights' input columns scaled by `s`: `cout · cin`
//! multiplies instead of a pass over `c · h · w` values, which is less work wherever the
//! plane has more pixels than the layer has output channels (MobileNetV3: every gate but
//! the three on 7×7 planes), and one step fewer either way.

use std::collections::HashSet;

use super::{HostOp, Kernel, Padding};
use crate::engine::EngineError;
use crate::engine::elementwise::Arithmetic;
use crate::engine::kernels::{self, Conv2d, Dense};
use crate::engine::limits::Cap;
use crate::engine::model::Step;

/// A Mul of two computed values whose product only a 1×1, stride-1, ungrouped
/// convolution reads (as its input) becomes one [`HostOp::GatedConv`] on the
/// convolution's step, reading the Mul's two operands.
pub(super) fn fuse(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let readers = super::fuse::readers(steps);
    let mut removed = vec![false; steps.len()];
    for m in 0..steps.len() {
        let is_mul = matches!(
            steps[m].kernel,
            Kernel::Host(HostOp::Binary {
                op: Arithmetic::Mul,
                relu: false,
                constant: None,
            })
        );
        let ([Some(a), Some(b)], [product]) = (&steps[m].inputs[..], &steps[m].outputs[..]) else {
            continue;
        };
        let (a, b, product) = (*a, *b, *product);
        if !is_mul || outputs.contains(&product) {
            continue;
        }
        let Some([c]) = readers.get(&product).map(Vec::as_slice) else {
            continue;
        };
        let c = *c;
        let pointwise = matches!(&steps[c].kernel, Kernel::Host(HostOp::Conv { conv, .. })
            if conv.groups == 1
                && conv.kernel == [1, 1]
                && conv.stride == [1, 1]
                && conv.dilation == [1, 1]);
        if !pointwise || steps[c].inputs[..] != [Some(product)] {
            continue;
        }
        let Kernel::Host(HostOp::Conv { conv, padding }) =
            std::mem::replace(&mut steps[c].kernel, Kernel::Host(HostOp::Pass))
        else {
            continue;
        };
        steps[c].kernel = Kernel::Host(HostOp::GatedConv { conv, padding });
        steps[c].inputs = vec![Some(a), Some(b)];
        steps[c].last_use = vec![false; 2];
        removed[m] = true;
    }
    super::fuse::drop_removed(steps, &removed);
}

/// The convolution of `a · b`: with the gate folded into the weights where one operand
/// is a `[1, c, 1, 1]` gate of the other's channels and that is less work, else the
/// product and then the convolution, as the two steps would run.
///
/// # Errors
/// Shapes the Mul or the convolution refuses.
pub(super) fn run(
    conv: &Conv2d,
    padding: &Padding,
    a: Dense,
    b: Dense,
    cap: Cap,
) -> Result<Dense, EngineError> {
    let (x, gate) = if is_gate_of(&b, &a, conv) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if is_gate_of(gate, x, conv) {
        let plane = x.shape[2] * x.shape[3];
        if conv.out_channels <= plane
            && let Some(scaled) = conv.with_scaled_inputs(&gate.data)
        {
            let pads = padding.resolve(x, conv.kernel, conv.stride, conv.dilation)?;
            let out = scaled.run(x, pads, cap);
            scaled.recycle();
            return out;
        }
    }
    let x = kernels::broadcast::binary(Arithmetic::Mul, a, &b, false, cap)?;
    let pads = padding.resolve(&x, conv.kernel, conv.stride, conv.dilation)?;
    conv.run(&x, pads, cap)
}

/// `gate` is `[1, c, 1, 1]` for an `x` of one image of `[1, c, h, w]`, `c` the layer's
/// input channels.
fn is_gate_of(gate: &Dense, x: &Dense, conv: &Conv2d) -> bool {
    let c = conv.in_channels;
    x.shape.len() == 4 && x.shape[0] == 1 && x.shape[1] == c && gate.shape[..] == [1, c, 1, 1]
}
