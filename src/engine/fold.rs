//! Load-time rewrites of a device plan (the GPU's; the CPU plan has its own in
//! [`super::fast`]): BatchNormalization folded into the convolution before it, NaN guards
//! fused so they stay on the device, and convolution weights laid out as the GPU kernels
//! read them. All change only constants and steps, before the first run; a pattern that
//! does not match exactly is left alone.

use std::collections::{HashMap, HashSet};

use burn::tensor::{Device, Tensor, TensorData};

use super::EngineError;
use super::model::Step;
use super::ops::Op;
use super::value::{Float, Value};

/// Host f32 values of a float constant.
fn host_f32(value: &Value) -> Option<(Vec<f32>, Vec<usize>)> {
    match value {
        Value::Float(f) => {
            let dims = f.dims();
            let data = f.clone().into_data().convert::<f32>().try_to_vec().ok()?;
            Some((data, dims))
        }
        _ => None,
    }
}

/// The plan's constants by slot, editable.
pub(super) struct Constants<'a> {
    pub(super) values: &'a mut Vec<(usize, Value)>,
    pub(super) slot_count: &'a mut usize,
}

impl Constants<'_> {
    fn get(&self, slot: Option<usize>) -> Option<&Value> {
        let slot = slot?;
        self.values.iter().find(|(s, _)| *s == slot).map(|(_, v)| v)
    }

    fn add(&mut self, value: Value) -> usize {
        let slot = *self.slot_count;
        *self.slot_count += 1;
        self.values.push((slot, value));
        slot
    }
}

/// Who reads and who writes each slot of a plan.
struct Wiring {
    /// Steps reading the slot.
    readers: HashMap<usize, usize>,
    /// The step writing the slot.
    producer: HashMap<usize, usize>,
}

impl Wiring {
    fn of(steps: &[Step]) -> Self {
        let mut readers: HashMap<usize, usize> = HashMap::new();
        for step in steps {
            for slot in step.inputs.iter().flatten() {
                *readers.entry(*slot).or_default() += 1;
            }
        }
        let producer = steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.outputs.iter().map(move |o| (*o, i)))
            .collect();
        Self { readers, producer }
    }
}

/// Drops the steps marked in `removed` (same indexes as `steps`).
fn drop_removed(steps: &mut Vec<Step>, removed: &[bool]) {
    let mut index = 0;
    steps.retain(|_| {
        index += 1;
        !removed[index - 1]
    });
}

/// Folds `Conv → BatchNormalization` pairs (the BN the convolution's only reader, every
/// parameter a constant) into one convolution with scaled weights and a shifted bias:
/// `W' = W·s`, `b' = (b − μ)·s + β` with `s = γ / √(σ² + ε)` per output channel.
///
/// # Errors
/// Uploading a folded weight fails.
pub(super) fn batch_norms(
    steps: &mut Vec<Step>,
    constants: &mut Constants<'_>,
    pinned: &HashSet<usize>,
    device: &Device,
) -> Result<(), EngineError> {
    let Wiring { readers, producer } = Wiring::of(steps);
    let mut removed = vec![false; steps.len()];
    for j in 0..steps.len() {
        let Op::BatchNorm { epsilon } = steps[j].op else {
            continue;
        };
        let Some(Some(x)) = steps[j].inputs.first().copied() else {
            continue;
        };
        let Some(&i) = producer.get(&x) else {
            continue;
        };
        if !matches!(steps[i].op, Op::Conv(_) | Op::Conv1d(_))
            || readers.get(&x) != Some(&1)
            || pinned.contains(&x)
            || steps[j].outputs.len() != 1
            || removed[i]
        {
            continue;
        }
        let param = |k: usize| {
            constants
                .get(steps[j].inputs.get(k).copied().flatten())
                .and_then(host_f32)
        };
        let (Some(gamma), Some(beta), Some(mean), Some(var)) =
            (param(1), param(2), param(3), param(4))
        else {
            continue;
        };
        let Some((weight, w_dims)) = constants
            .get(steps[i].inputs.get(1).copied().flatten())
            .and_then(host_f32)
        else {
            continue;
        };
        let out_channels = w_dims.first().copied().unwrap_or(0);
        let bias = match steps[i].inputs.get(2).copied().flatten() {
            None => vec![0.0; out_channels],
            Some(slot) => match constants.get(Some(slot)).and_then(host_f32) {
                Some((b, _)) => b,
                None => continue,
            },
        };
        if [&gamma.0, &beta.0, &mean.0, &var.0, &bias]
            .iter()
            .any(|p| p.len() != out_channels)
            || out_channels == 0
            || weight.len() % out_channels != 0
        {
            continue;
        }
        let scale: Vec<f32> = gamma
            .0
            .iter()
            .zip(&var.0)
            .map(|(g, v)| g / (v + epsilon).sqrt())
            .collect();
        let per_channel = weight.len() / out_channels;
        let folded: Vec<f32> = weight
            .chunks_exact(per_channel)
            .zip(&scale)
            .flat_map(|(row, s)| row.iter().map(move |w| w * s))
            .collect();
        let shift: Vec<f32> = (0..out_channels)
            .map(|c| (bias[c] - mean.0[c]) * scale[c] + beta.0[c])
            .collect();
        let w = Float::from_data(TensorData::new(folded, w_dims), device)?;
        let b = Float::from_data(TensorData::new(shift, [out_channels]), device)?;
        let (w, b) = (
            constants.add(Value::Float(w)),
            constants.add(Value::Float(b)),
        );
        steps[i].inputs.truncate(1);
        steps[i].inputs.extend([Some(w), Some(b)]);
        steps[i].last_use = vec![false; 3];
        let outputs = steps[j].outputs.clone();
        steps[i].outputs = outputs;
        removed[j] = true;
    }
    drop_removed(steps, &removed);
    Ok(())
}

/// Fuses `Where(IsNaN(x), c, x)` (the IsNaN read by nothing else, `c` a constant scalar)
/// into one [`Op::ReplaceNan`] on the device. Exporters guard attention's softmax this way
/// (torch's scaled-dot-product attention); unfused, IsNaN and Where run on the host and
/// read the tensor back, a wait for the GPU in every attention layer.
pub(super) fn nan_guards(
    steps: &mut Vec<Step>,
    constants: &Constants<'_>,
    pinned: &HashSet<usize>,
) {
    let Wiring { readers, producer } = Wiring::of(steps);
    let mut removed = vec![false; steps.len()];
    for j in 0..steps.len() {
        let (Op::Where, &[Some(cond), Some(value), Some(x)]) =
            (&steps[j].op, steps[j].inputs.as_slice())
        else {
            continue;
        };
        let Some(&i) = producer.get(&cond) else {
            continue;
        };
        if !matches!(steps[i].op, Op::IsNaN)
            || steps[i].inputs.first().copied().flatten() != Some(x)
            || readers.get(&cond) != Some(&1)
            || pinned.contains(&cond)
            || removed[i]
        {
            continue;
        }
        let Some((values, _)) = constants.get(Some(value)).and_then(host_f32) else {
            continue;
        };
        let &[fill] = values.as_slice() else {
            continue;
        };
        steps[j].op = Op::ReplaceNan(fill);
        steps[j].inputs = vec![Some(x)];
        steps[j].last_use = vec![false];
        removed[i] = true;
    }
    drop_removed(steps, &removed);
}

/// Holds every 2-D convolution weight as a view of an `[O, KH, KW, I]` buffer: burn's
/// convolutions read the weight channels-last, and would otherwise copy it on every run.
///
/// # Errors
/// Uploading a weight fails.
pub(super) fn conv_weights_channels_last(
    steps: &[Step],
    constants: &mut Constants<'_>,
    device: &Device,
) -> Result<(), EngineError> {
    let weight_slots: HashSet<usize> = steps
        .iter()
        .filter(|s| matches!(s.op, Op::Conv(_)))
        .filter_map(|s| s.inputs.get(1).copied().flatten())
        .collect();
    // A weight also read as something else keeps its layout.
    let other_reads: HashSet<usize> = steps
        .iter()
        .filter(|s| !matches!(s.op, Op::Conv(_)))
        .flat_map(|s| s.inputs.iter().flatten().copied())
        .collect();
    for (slot, value) in constants.values.iter_mut() {
        if !weight_slots.contains(slot) || other_reads.contains(slot) {
            continue;
        }
        let Some((data, dims)) = host_f32(value) else {
            continue;
        };
        let [o, i, kh, kw] = <[usize; 4]>::try_from(dims.as_slice())
            .map_err(|_| EngineError::Invalid(format!("a Conv weight of shape {dims:?}")))?;
        if kh * kw == 1 {
            continue;
        }
        let mut ohwi = vec![0f32; data.len()];
        for oc in 0..o {
            for ic in 0..i {
                for y in 0..kh {
                    for x in 0..kw {
                        ohwi[((oc * kh + y) * kw + x) * i + ic] =
                            data[((oc * i + ic) * kh + y) * kw + x];
                    }
                }
            }
        }
        let t: Tensor<4> = Tensor::from_data(TensorData::new(ohwi, [o, kh, kw, i]), device);
        *value = Value::Float(Float::R4(t.permute([0, 3, 1, 2])));
    }
    Ok(())
}

#[cfg(all(test, feature = "gpu"))]
mod tests {
    use burn::tensor::TensorData;

    use crate::engine::Model;
    use crate::engine::device::{DeviceChoice, select};
    use crate::engine::test_graphs::{Graph, floats, info, model, node};

    /// On wgpu, `Where(IsNaN(x), 0, x)` is one step, and a `Where` on host booleans picks
    /// between device constants on the device: no step reads a float back.
    #[test]
    fn nan_guard_and_where_stay_on_the_device() {
        if std::env::var("CAIRN_TEST_WGPU").as_deref() != Ok("1") {
            eprintln!("CAIRN_TEST_WGPU is not 1: the wgpu path did not run");
            return;
        }
        let device = select(DeviceChoice::Gpu).expect("a Vulkan adapter").device;
        let bytes = model(Graph {
            nodes: vec![
                node("IsNaN", "isnan", &["x"], &["n"]),
                node("Where", "guard", &["n", "zero", "x"], &["y"]),
                node("Where", "pick", &["m", "one", "two"], &["z"]),
            ],
            inputs: vec![
                info("x", 1, &[Some(2), Some(3)]),
                info("m", 9, &[Some(1), Some(3)]),
            ],
            outputs: vec![info("y", 1, &[]), info("z", 1, &[])],
            initializers: vec![
                floats("zero", &[], &[0.0]),
                floats("one", &[], &[1.0]),
                floats("two", &[], &[2.0]),
            ],
        });
        let loaded = Model::load(&bytes, &device).unwrap();
        let x = vec![1.0, f32::NAN, -3.0, f32::NAN, 5.0, 0.5];
        let feed = vec![
            ("x".to_owned(), TensorData::new(x, vec![2, 3])),
            (
                "m".to_owned(),
                TensorData::new(vec![true, false, true], vec![1, 3]),
            ),
        ];
        let profile = loaded.profile(&feed, 1).unwrap();
        assert_eq!(profile.len(), 2, "IsNaN fused into its Where");
        assert!(
            profile.iter().all(|s| s.read_backs == 0),
            "{:?}",
            profile
                .iter()
                .map(|s| (&s.node, s.read_backs))
                .collect::<Vec<_>>()
        );
        let out = loaded.run(feed).unwrap();
        let y: Vec<f32> = out[0].1.clone().try_to_vec().unwrap();
        assert_eq!(y, [1.0, 0.0, -3.0, 0.0, 5.0, 0.5]);
        let z: Vec<f32> = out[1].1.clone().try_to_vec().unwrap();
        assert_eq!(z, [1.0, 2.0, 1.0]);
        assert_eq!(out[1].1.shape().to_vec(), [1, 3]);
    }
}
