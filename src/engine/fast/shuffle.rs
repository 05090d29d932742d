//! ShuffleNet's channel shuffle as one copy. Its exporters write it as five steps:
//! `Concat` of the two branches on channels, a Reshape to `[n, g, c/g, h, w]`, the
//! Transpose that swaps those two axes, the Reshape back to `[n, c, h, w]`, and usually
//! a `Split` on channels; three of them copy the whole tensor. Fused, each output plane
//! is copied once, straight from the branch that computed it.
//!
//! Invariant: the fused step computes exactly what the five did. Its fast path runs only
//! when the Reshapes resolve (as [`resolve_reshape`] resolves them for a Reshape step) to
//! that channel split; any other shapes take the same steps one after the other.

use std::collections::{HashMap, HashSet};

use super::{HostOp, Kernel};
use crate::engine::EngineError;
use crate::engine::kernels::Dense;
use crate::engine::limits::{Cap, F32};
use crate::engine::model::Step;
use crate::engine::ops::{Ints, Op};
use crate::engine::shapes::resolve_reshape;
use crate::engine::value::Value;

/// The fused steps' constants.
#[derive(Debug, Clone)]
pub struct Shuffle {
    /// The first Reshape's target (`[n, g, c/g, h, w]` as the model wrote it).
    first: Vec<i64>,
    /// The second Reshape's target (`[n, c, h, w]`).
    second: Vec<i64>,
    /// The Split's sizes and output count; `None` where no Split follows.
    split: Option<(Option<Vec<i64>>, usize)>,
}

/// The transpose that swaps the group and channel axes.
const PERM: [usize; 5] = [0, 2, 1, 3, 4];

/// Rewrites each Concat → Reshape → Transpose → Reshape [→ Split] chain of a channel
/// shuffle into one [`HostOp::Shuffle`] on the Concat's step, when every value in between
/// is read by the next step alone and is no graph output.
pub(super) fn fuse(steps: &mut Vec<Step>, outputs: &HashSet<usize>) {
    let readers = super::fuse::readers(steps);
    let mut producer = super::fuse::producers(steps);
    // Inputs computed by host kernels that make only floats (the fast path's values).
    let floats = |steps: &[Step], producer: &HashMap<usize, usize>, step: usize| {
        steps[step].inputs.iter().all(|slot| {
            slot.and_then(|s| producer.get(&s)).is_some_and(|p| {
                matches!(
                    steps[*p].kernel,
                    Kernel::Host(
                        HostOp::Conv { .. }
                            | HostOp::GatedConv { .. }
                            | HostOp::ResidualConv { .. }
                            | HostOp::Pool { .. }
                            | HostOp::Relu
                            | HostOp::BatchNorm { .. }
                            | HostOp::Shuffle(_)
                    )
                )
            })
        })
    };
    // The step that alone reads `step`'s single output, taking it as its first input.
    let next = |steps: &[Step], step: usize| -> Option<usize> {
        let [out] = steps[step].outputs[..] else {
            return None;
        };
        let [reader] = readers.get(&out)?.as_slice() else {
            return None;
        };
        (!outputs.contains(&out) && steps[*reader].inputs.first() == Some(&Some(out)))
            .then_some(*reader)
    };
    let static_reshape = |step: &Step, rank: usize| match &step.kernel {
        Kernel::Host(HostOp::Reshape(Ints::Static(target))) if target.len() == rank => {
            Some(target.clone())
        }
        _ => None,
    };
    let mut removed = vec![false; steps.len()];
    for c in 0..steps.len() {
        if !matches!(steps[c].kernel, Kernel::Host(HostOp::Concat { axis: 1 }))
            || !floats(steps, &producer, c)
        {
            continue;
        }
        let Some(r1) = next(steps, c) else { continue };
        let Some(first) = static_reshape(&steps[r1], 5) else {
            continue;
        };
        let Some(t) = next(steps, r1) else { continue };
        if !matches!(&steps[t].op, Op::Transpose(perm) if perm[..] == PERM) {
            continue;
        }
        let Some(r2) = next(steps, t) else { continue };
        let Some(second) = static_reshape(&steps[r2], 4) else {
            continue;
        };
        // A Split on channels with fixed sizes after it joins too.
        let split = next(steps, r2).and_then(|s| match &steps[s].op {
            Op::Split {
                axis: 1,
                sizes: None,
                outputs,
            } => Some((s, None, *outputs)),
            Op::Split {
                axis: 1,
                sizes: Some(Ints::Static(sizes)),
                outputs,
            } => Some((s, Some(sizes.clone()), *outputs)),
            _ => None,
        });
        let last = split.as_ref().map_or(r2, |(s, _, _)| *s);
        steps[c].outputs = steps[last].outputs.clone();
        steps[c].scalar_outputs = steps[last].scalar_outputs.clone();
        for slot in &steps[c].outputs {
            producer.insert(*slot, c);
        }
        steps[c].kernel = Kernel::Host(HostOp::Shuffle(Box::new(Shuffle {
            first,
            second,
            split: split.map(|(_, sizes, count)| (sizes, count)),
        })));
        for step in [r1, t, r2, last] {
            removed[step] = true;
        }
    }
    super::fuse::drop_removed(steps, &removed);
}

impl Shuffle {
    /// The shuffled (and split) channels of the concatenation of `parts`.
    ///
    /// # Errors
    /// Shapes the five steps would refuse, with their errors.
    pub(super) fn run(&self, parts: Vec<Dense>, cap: Cap) -> Result<Vec<Value>, EngineError> {
        let Some(shape) = joined(&parts) else {
            return self.step_by_step(parts, cap);
        };
        cap.check(&shape, F32)?;
        match self.plan(&shape)? {
            Some(plan) => plan.copy(&parts),
            None => self.step_by_step(parts, cap),
        }
    }

    /// The fast path's plan where the Reshapes resolve to a channel split of `[n, c, h, w]`;
    /// `Ok(None)` for other shapes, an error where a Reshape refuses them.
    fn plan(&self, &[n, c, h, w]: &[usize; 4]) -> Result<Option<Plan>, EngineError> {
        let grouped = resolve_reshape(&[n, c, h, w], &self.first)?;
        let swapped: Vec<usize> = PERM.iter().map(|a| grouped[*a]).collect();
        let back = resolve_reshape(&swapped, &self.second)?;
        let [_, groups, per_group, _, _] = grouped[..] else {
            return Ok(None);
        };
        if grouped[0] != n || groups * per_group != c || back[..2] != [n, c] {
            return Ok(None);
        }
        let sizes = self.sizes(c)?;
        Ok(Some(Plan {
            n,
            groups,
            per_group,
            plane: h * w,
            out_plane: [back[2], back[3]],
            sizes,
        }))
    }

    /// The output channel counts: the Split's, or every channel in one output.
    fn sizes(&self, channels: usize) -> Result<Vec<usize>, EngineError> {
        let Some((sizes, outputs)) = &self.split else {
            return Ok(vec![channels]);
        };
        let sizes: Vec<usize> = match sizes {
            Some(s) => s
                .iter()
                .map(|v| usize::try_from(*v))
                .collect::<Result<_, _>>()
                .map_err(|_| EngineError::Invalid(format!("Split sizes {s:?}")))?,
            None => {
                let part = channels.div_ceil(*outputs);
                (0..*outputs)
                    .map(|i| part.min(channels.saturating_sub(i * part)))
                    .collect()
            }
        };
        if sizes.len() != *outputs || sizes.iter().sum::<usize>() != channels {
            return Err(EngineError::Invalid(format!(
                "Split of {channels} on axis 1 into {sizes:?} for {outputs} outputs"
            )));
        }
        Ok(sizes)
    }

    /// The five steps one after the other, for shapes the fast path does not take.
    fn step_by_step(&self, parts: Vec<Dense>, cap: Cap) -> Result<Vec<Value>, EngineError> {
        let joined = super::run::concat(parts, 1, cap)?;
        let grouped = resolve_reshape(&joined.shape, &self.first)?;
        let (data, swapped) = crate::engine::ops::host::transpose(&joined.data, &grouped, &PERM);
        let back = resolve_reshape(&swapped, &self.second)?;
        if self.split.is_none() {
            return Ok(vec![Value::Dense(Dense::new(data, back)?)]);
        }
        if back.len() < 2 {
            return Err(EngineError::Invalid(format!(
                "Split axis 1 on shape {back:?}"
            )));
        }
        let sizes = self.sizes(back[1])?;
        let inner: usize = back[2..].iter().product();
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for size in sizes {
            let mut part = Vec::with_capacity(back[0] * size * inner);
            for o in 0..back[0] {
                part.extend_from_slice(&data[(o * back[1] + start) * inner..][..size * inner]);
            }
            let mut shape = back.clone();
            shape[1] = size;
            out.push(Value::Dense(Dense::new(part, shape)?));
            start += size;
        }
        Ok(out)
    }
}

/// The shape of the parts joined on channels, where all are `[n, c_i, h, w]` alike.
fn joined(parts: &[Dense]) -> Option<[usize; 4]> {
    let first: [usize; 4] = parts.first()?.shape.as_slice().try_into().ok()?;
    let mut channels = 0usize;
    for part in parts {
        let [n, c, h, w]: [usize; 4] = part.shape.as_slice().try_into().ok()?;
        if [n, h, w] != [first[0], first[2], first[3]] {
            return None;
        }
        channels = channels.checked_add(c)?;
    }
    Some([first[0], channels, first[2], first[3]])
}

/// The fast path: shuffled channel `i · groups + j` is channel `j · per_group + i` of the
/// concatenation; outputs take the shuffled channels in turn, `sizes` each.
struct Plan {
    n: usize,
    groups: usize,
    per_group: usize,
    plane: usize,
    out_plane: [usize; 2],
    sizes: Vec<usize>,
}

impl Plan {
    fn copy(&self, parts: &[Dense]) -> Result<Vec<Value>, EngineError> {
        // Concatenation channel → (part, its channel there).
        let mut source = Vec::with_capacity(self.groups * self.per_group);
        for (p, part) in parts.iter().enumerate() {
            source.extend((0..part.shape[1]).map(|c| (p, c)));
        }
        let mut shuffled = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &size in &self.sizes {
            let mut values =
                crate::engine::kernels::reuse::for_overwrite(self.n * size * self.plane);
            for (index, dst) in values.chunks_exact_mut(self.plane.max(1)).enumerate() {
                let (image, channel) = (index / size.max(1), shuffled + index % size.max(1));
                let (i, j) = (channel / self.groups, channel % self.groups);
                let (p, c) = source[j * self.per_group + i];
                let part = &parts[p];
                dst.copy_from_slice(
                    &part.data[(image * part.shape[1] + c) * self.plane..][..self.plane],
                );
            }
            shuffled += size;
            let shape = vec![self.n, size, self.out_plane[0], self.out_plane[1]];
            out.push(Value::Dense(Dense::new(values, shape)?));
        }
        Ok(out)
    }
}
