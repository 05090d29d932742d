//! ResNet's residual Add folded into the 1×1 convolution before it: `Add(conv(x), r)`
//! (and its ReLU) becomes one [`HostOp::ResidualConv`] step whose kernel adds the product
//! to `r`'s buffer in place ([`crate::engine::kernels::Conv2d::run_residual`]). The Add
//! was a pass over three tensors after every bottleneck block.

use std::collections::HashSet;

use super::{HostOp, Kernel};
use crate::engine::elementwise::Arithmetic;
use crate::engine::model::Step;

/// An Add of two computed values, one of them the output of a 1×1, stride-1, ungrouped
/// convolution with no activation of its own, read by that Add alone, becomes the
/// convolution onto the other value, at the Add's place in the plan (where both
/// operands exist). Of two such convolutions the later one is fused.
pub(super) fn fuse(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let readers = super::fuse::readers(steps);
    let producer = super::fuse::producers(steps);
    let fusable = |steps: &[Step], slot: usize, add: usize| -> Option<usize> {
        let i = *producer.get(&slot)?;
        let step = &steps[i];
        let Kernel::Host(HostOp::Conv { conv, .. }) = &step.kernel else {
            return None;
        };
        let pointwise = conv.kernel == [1, 1]
            && conv.stride == [1, 1]
            && conv.dilation == [1, 1]
            && conv.groups == 1
            && !conv.relu
            && conv.hard.is_none();
        let alone = readers.get(&slot).map(Vec::as_slice) == Some(&[add][..])
            && !outputs.contains(&slot)
            && step.outputs[..] == [slot]
            && matches!(step.inputs[..], [Some(_)]);
        (pointwise && alone).then_some(i)
    };
    let mut removed = vec![false; steps.len()];
    for j in 0..steps.len() {
        let Kernel::Host(HostOp::Binary {
            op: Arithmetic::Add,
            relu,
            constant: None,
        }) = steps[j].kernel
        else {
            continue;
        };
        let ([Some(a), Some(b)], [_]) = (&steps[j].inputs[..], &steps[j].outputs[..]) else {
            continue;
        };
        let (a, b) = (*a, *b);
        if a == b {
            continue;
        }
        let chosen = [(a, b), (b, a)]
            .into_iter()
            .filter_map(|(y, r)| fusable(steps, y, j).map(|i| (i, r)))
            .filter(|(i, _)| !removed[*i])
            .max_by_key(|(i, _)| *i);
        let Some((i, residual)) = chosen else {
            continue;
        };
        let Kernel::Host(HostOp::Conv { conv, padding }) =
            std::mem::replace(&mut steps[i].kernel, Kernel::Host(HostOp::Pass))
        else {
            continue;
        };
        let x = steps[i].inputs[0];
        let (node, onnx, op) = (steps[i].node, steps[i].onnx.clone(), steps[i].op.clone());
        let add = &mut steps[j];
        add.kernel = Kernel::Host(HostOp::ResidualConv {
            conv,
            padding,
            relu,
        });
        // Named as the convolution, for errors and profiles.
        (add.node, add.onnx, add.op) = (node, onnx, op);
        add.inputs = vec![x, Some(residual)];
        add.last_use = vec![false; 2];
        removed[i] = true;
    }
    super::fuse::drop_removed(steps, &removed);
}
