//! The CPU plan's fusions: SiLU from a Mul and its Sigmoid, then each step folded into its
//! producer where the producer's kernel can absorb it (BatchNormalization into a Conv's
//! weights, Relu, HardSwish and HardSigmoid as epilogues).

use std::collections::{HashMap, HashSet};

use super::{HostOp, Kernel};
use crate::engine::elementwise::Arithmetic;
use crate::engine::kernels;
use crate::engine::model::Step;
use crate::engine::ops::Op;

/// `x · sigmoid(x)` (SiLU, the activation of every YOLO and EfficientNet) becomes one
/// in-place pass: a Mul whose operands are a value and the Sigmoid of it, when that
/// Sigmoid's output is read by the Mul alone. The Sigmoid step takes the Mul's output (it
/// keeps its node name and operator for errors and profiles).
pub(super) fn silu(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let mut readers: HashMap<usize, usize> = HashMap::new();
    for step in steps.iter() {
        for slot in step.inputs.iter().flatten() {
            *readers.entry(*slot).or_default() += 1;
        }
    }
    let producer = producers(steps);
    let mut removed = vec![false; steps.len()];
    for j in 0..steps.len() {
        if !matches!(steps[j].op, Op::Arithmetic(Arithmetic::Mul)) || steps[j].outputs.len() != 1 {
            continue;
        }
        let [Some(a), Some(b)] = steps[j].inputs[..] else {
            continue;
        };
        for (x, gate) in [(a, b), (b, a)] {
            let Some(&i) = producer.get(&gate) else {
                continue;
            };
            let sigmoid = &steps[i];
            if matches!(sigmoid.kernel, Kernel::Host(HostOp::Sigmoid))
                && sigmoid.inputs[..] == [Some(x)]
                && sigmoid.outputs[..] == [gate]
                && readers.get(&gate) == Some(&1)
                && !outputs.contains(&gate)
            {
                steps[i].kernel = Kernel::Host(HostOp::Silu);
                steps[i].outputs = steps[j].outputs.clone();
                steps[i].scalar_outputs = steps[j].scalar_outputs.clone();
                removed[j] = true;
                break;
            }
        }
    }
    drop_removed(steps, &removed);
}

/// The exact GELU as torch exports it, `(x · (1 + erf(x / √2))) · 0.5` (BERT's and most
/// transformers' activation): five steps, each a pass over the widest tensor of the
/// block, become one [`HostOp::Gelu`] on the Div's step. Each intermediate value must be
/// read by the next step alone and be no graph output.
pub(super) fn gelu(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let mut readers: HashMap<usize, usize> = HashMap::new();
    let mut reader_of: HashMap<usize, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for slot in step.inputs.iter().flatten() {
            *readers.entry(*slot).or_default() += 1;
            reader_of.insert(*slot, i);
        }
    }
    // The only step reading `slot`, if one does and `slot` is no graph output.
    let sole_reader = |slot: usize| -> Option<usize> {
        (readers.get(&slot) == Some(&1) && !outputs.contains(&slot))
            .then(|| reader_of.get(&slot).copied())
            .flatten()
    };
    let constant = |step: &Step, want: Arithmetic, value: f32| {
        matches!(&step.kernel, Kernel::Host(HostOp::Binary { op, relu: false, constant: Some(c) })
            if *op == want && c.data.len() == 1 && (c.data[0] - value).abs() <= 1e-6 * value)
    };
    let single = |step: &Step| match (&step.inputs[..], &step.outputs[..]) {
        ([Some(input)], [output]) => Some((*input, *output)),
        _ => None,
    };
    let mut removed = vec![false; steps.len()];
    for div in 0..steps.len() {
        let matched = (|| {
            let (x, scaled) = single(&steps[div]).filter(|_| {
                constant(&steps[div], Arithmetic::Div, std::f32::consts::SQRT_2)
                    || constant(
                        &steps[div],
                        Arithmetic::Mul,
                        std::f32::consts::FRAC_1_SQRT_2,
                    )
            })?;
            let erf = sole_reader(scaled)?;
            let (_, erf_out) = single(&steps[erf])
                .filter(|_| matches!(steps[erf].kernel, Kernel::Host(HostOp::Erf)))?;
            let add = sole_reader(erf_out)?;
            let (_, shifted) =
                single(&steps[add]).filter(|_| constant(&steps[add], Arithmetic::Add, 1.0))?;
            let mul = sole_reader(shifted)?;
            let product = match (
                &steps[mul].kernel,
                &steps[mul].inputs[..],
                &steps[mul].outputs[..],
            ) {
                (
                    Kernel::Host(HostOp::Binary {
                        op: Arithmetic::Mul,
                        relu: false,
                        constant: None,
                    }),
                    [Some(p), Some(q)],
                    [out],
                ) if (*p, *q) == (x, shifted) || (*p, *q) == (shifted, x) => *out,
                _ => return None,
            };
            let half = sole_reader(product)?;
            single(&steps[half]).filter(|_| constant(&steps[half], Arithmetic::Mul, 0.5))?;
            Some([erf, add, mul, half])
        })();
        let Some(fused) = matched else {
            continue;
        };
        if fused.iter().any(|i| removed[*i]) {
            continue;
        }
        steps[div].kernel = Kernel::Host(HostOp::Gelu { tanh: false });
        steps[div].outputs = steps[fused[3]].outputs.clone();
        steps[div].scalar_outputs = steps[fused[3]].scalar_outputs.clone();
        fused.iter().for_each(|i| removed[*i] = true);
    }
    drop_removed(steps, &removed);
}

/// Folds a step into its producer where the producer's kernel can absorb it.
pub(super) fn neighbours(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let readers = readers(steps);
    let mut removed = vec![false; steps.len()];
    for i in 0..steps.len() {
        if removed[i] {
            continue;
        }
        while let [out] = steps[i].outputs[..] {
            if outputs.contains(&out) {
                break;
            }
            let Some([j]) = readers.get(&out).map(Vec::as_slice) else {
                break;
            };
            let j = *j;
            let Kernel::Host(next) = steps[j].kernel.clone() else {
                break;
            };
            if steps[j].inputs.first() != Some(&Some(out)) || steps[j].inputs.len() != 1 {
                break;
            }
            let Kernel::Host(current) = &mut steps[i].kernel else {
                break;
            };
            if !absorb(current, &next) {
                break;
            }
            let new_outputs = steps[j].outputs.clone();
            steps[i].outputs = new_outputs;
            steps[i].scalar_outputs = steps[j].scalar_outputs.clone();
            removed[j] = true;
        }
    }
    drop_removed(steps, &removed);
}

/// The steps that read each slot, in step order (a step reading a slot twice, twice).
pub(super) fn readers(steps: &[Step]) -> HashMap<usize, Vec<usize>> {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for slot in step.inputs.iter().flatten() {
            readers.entry(*slot).or_default().push(i);
        }
    }
    readers
}

/// The step that writes each slot.
pub(super) fn producers(steps: &[Step]) -> HashMap<usize, usize> {
    let mut producers = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for slot in &step.outputs {
            producers.insert(*slot, i);
        }
    }
    producers
}

/// Drops the steps a fusion marked as absorbed, keeping the others in order.
pub(super) fn drop_removed(steps: &mut Vec<Step>, removed: &[bool]) {
    let mut index = 0;
    steps.retain(|_| {
        index += 1;
        !removed[index - 1]
    });
}

/// Whether `current` took over `next` (its only reader).
fn absorb(current: &mut HostOp, next: &HostOp) -> bool {
    match (current, next) {
        (
            HostOp::Conv { conv, .. },
            HostOp::BatchNorm {
                scale,
                shift,
                relu: false,
            },
        ) if !conv.relu && conv.hard.is_none() && scale.len() == conv.out_channels => {
            // A zero-channel convolution has nothing to scale; one with no input channels
            // has no weights, only its bias.
            let per_channel = conv
                .weight
                .len()
                .checked_div(conv.out_channels)
                .unwrap_or(0);
            if per_channel > 0 {
                for (c, row) in conv.weight.chunks_exact_mut(per_channel).enumerate() {
                    row.iter_mut().for_each(|w| *w *= scale[c]);
                }
            }
            for (c, b) in conv.bias.iter_mut().enumerate() {
                *b = *b * scale[c] + shift[c];
            }
            true
        }
        (HostOp::Conv { conv, .. }, HostOp::Relu) if !conv.relu && conv.hard.is_none() => {
            conv.relu = true;
            true
        }
        (HostOp::Conv { conv, .. }, &HostOp::Hard { swish, alpha, beta })
            if !conv.relu && conv.hard.is_none() =>
        {
            conv.hard = Some(kernels::Hard { swish, alpha, beta });
            true
        }
        (HostOp::Gemm(g), HostOp::Relu) if !g.relu => {
            g.relu = true;
            true
        }
        (HostOp::Binary { relu, .. }, HostOp::Relu)
        | (HostOp::BatchNorm { relu, .. }, HostOp::Relu)
            if !*relu =>
        {
            *relu = true;
            true
        }
        _ => false,
    }
}
