//! Loading an ONNX model into an execution plan, and running it.
//!
//! Load, all of it under one panic guard ([`super::limits::guarded`]): parse with onnx-ir
//! and read the raw `ModelProto` for the model's own input/output names and element types
//! ([`super::front`]), refuse unsupported operators (by name), dtypes and attributes no
//! input can make valid, assign every value a slot, preload initializers once, fold
//! all-constant nodes within the limits, plan the CPU kernels, and record after which step
//! each intermediate can be freed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, TensorData};
use onnx_ir::{ArgType, ValueSource};

mod data;
mod exercise;

use data::check_input;
pub use data::value_from_data;

pub use exercise::StepProfile;

use super::EngineError;
use super::elementwise;
use super::fast::{self, Kernel};
use super::fold;
pub use super::front::{Inspection, TensorSpec, inspect};
use super::front::{describe, node_names, parse};
use super::kernels;
use super::limits::{Cap, LoadLimits, at_node, guarded, value_bytes};
use super::ops::{self, Op};
use super::value::Value;

pub(super) struct Step {
    /// The node's index in the graph (for its name in errors).
    pub(super) node: usize,
    /// The ONNX operator name, for errors.
    pub(super) onnx: String,
    /// The translated operator: all execution reads.
    pub(super) op: Op,
    /// Slot per node input; `None` for an absent optional input.
    pub(super) inputs: Vec<Option<usize>>,
    /// Whether this step is the last reader of the input's slot (so it may take it).
    pub(super) last_use: Vec<bool>,
    pub(super) outputs: Vec<usize>,
    /// Outputs the graph types as scalars (rank 0): see [`as_declared_scalar`].
    pub(super) scalar_outputs: Vec<bool>,
    pub(super) kernel: Kernel,
}

/// An integer output the graph declares a scalar, given as one element of rank 1, made
/// rank 0 again. Float tensors have rank 1 at least here, so a scalar that went through
/// float arithmetic (`Cast(Ceil(Cast(n) / 2))` in an exporter's shape computation) comes
/// back as `[1]`, and an Unsqueeze or Concat after it would see the wrong rank.
fn as_declared_scalar(value: Value, scalar: bool) -> Value {
    match value {
        Value::Int { data, shape } if scalar && shape == [1] => Value::Int {
            data,
            shape: Vec::new(),
        },
        other => other,
    }
}

/// Bytes of the weights the host kernels hold (packed copies, folded scales and biases).
fn host_weight_bytes(steps: &[Step]) -> u64 {
    steps
        .iter()
        .map(|s| match &s.kernel {
            Kernel::Host(op) => op.held_bytes(),
            Kernel::Burn => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// A loaded, runnable model.
pub struct Model {
    /// The name errors give each node (the model's own where known).
    names: Vec<String>,
    steps: Vec<Step>,
    slot_count: usize,
    constants: Vec<(usize, Value)>,
    inputs: Vec<(usize, TensorSpec)>,
    outputs: Vec<(usize, TensorSpec)>,
    device: Device,
    /// A CPU plan: float inputs stay in host memory for cairn's own kernels.
    host: bool,
    /// The last run split work over the intra-op pool: the next goes to a pool thread
    /// ([`super::threads::spread`]).
    parallel: AtomicBool,
    limits: LoadLimits,
    /// The size of the model file (its parsed graph keeps those bytes).
    file_bytes: u64,
    /// Activation buffers the last run left, for the next ([`kernels::reuse`]).
    kept: kernels::reuse::Kept,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

/// Where a constant operand's value comes from, so a weight read by several nodes is
/// uploaded once.
#[derive(PartialEq, Eq, Hash)]
enum ConstantKey {
    Static(onnx_ir::DataId),
    Named(String),
}

/// Constant folding's running totals, against the limits.
struct Folding {
    spent: Duration,
    bytes: u64,
    /// What folding may produce in all: one tensor at the cap, plus a multiple of the file
    /// (every integer and boolean widens to 8 bytes an element).
    allowance: u64,
}

impl Folding {
    /// Computes one all-constant node at load, within the time budget and the allowance.
    #[expect(clippy::too_many_arguments, reason = "one node's folding context")]
    fn run(
        &mut self,
        op: &Op,
        name: &str,
        onnx: &str,
        args: Vec<Option<Value>>,
        device: &Device,
        cap: Cap,
        limits: &LoadLimits,
    ) -> Result<Vec<Value>, EngineError> {
        let named = |e| at_node(name, onnx, e);
        if self.spent > limits.fold_budget {
            return Err(named(EngineError::Limit(format!(
                "constant folding took more than its budget of {:?} (engine.fold_budget)",
                limits.fold_budget
            ))));
        }
        let started = Instant::now();
        let values = guarded(|| op.run(args, device, cap)).map_err(named)?;
        self.spent += started.elapsed();
        for value in &values {
            cap.value(value).map_err(named)?;
            self.bytes = self.bytes.saturating_add(value_bytes(value));
        }
        if self.bytes > self.allowance {
            return Err(named(EngineError::Limit(format!(
                "constants computed at load would take more than {} bytes",
                self.allowance
            ))));
        }
        Ok(values)
    }
}

impl Model {
    /// Parses, validates and plans a model for `device`, under [`LoadLimits::default`].
    ///
    /// # Errors
    /// See [`Model::load_with`].
    pub fn load(bytes: &[u8], device: &Device) -> Result<Self, EngineError> {
        Self::load_with(bytes, device, &LoadLimits::default())
    }

    /// Parses, validates and plans a model for `device`. Total: every step (parse, plan,
    /// constant folding, the CPU plan) runs under one panic guard, every size the model
    /// asks for is checked against `limits` before it is allocated, and errors name the
    /// node. The limits are kept and apply to every run.
    ///
    /// # Errors
    /// Malformed bytes, unsupported operators (all listed by name) or dtypes, a graph that
    /// reads a value nothing produces, attributes no input can make valid, a constant
    /// computation that fails or passes a limit.
    pub fn load_with(
        bytes: &[u8],
        device: &Device,
        limits: &LoadLimits,
    ) -> Result<Self, EngineError> {
        guarded(|| Self::plan(bytes, device, limits))
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the graph: slots, constants, folding, steps"
    )]
    fn plan(bytes: &[u8], device: &Device, limits: &LoadLimits) -> Result<Self, EngineError> {
        let cap = Cap::of(limits);
        let (graph, raw) = parse(bytes)?;
        let inspection = describe(&graph, &raw);
        if !inspection.unsupported.is_empty() {
            return Err(EngineError::UnsupportedOps(inspection.unsupported));
        }
        let names = node_names(&graph, &raw);
        // Each node becomes a typed operator once; nothing after this reads the parsed node.
        let mut translated = Vec::with_capacity(graph.nodes.len());
        for (node, name) in graph.nodes.iter().zip(&names) {
            let onnx = ops::onnx_name(node);
            let op = ops::translate(node).map_err(|e| at_node(name, &onnx, e))?;
            translated.push((onnx, op));
        }
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut slot_count = 0;
        let new_slot = |count: &mut usize| {
            *count += 1;
            *count - 1
        };
        let mut inputs = Vec::new();
        for (arg, spec) in graph.inputs.iter().zip(inspection.inputs) {
            let slot = new_slot(&mut slot_count);
            slots.insert(arg.name.clone(), slot);
            inputs.push((slot, spec));
        }
        let mut constants = Vec::new();
        // Slot → index in `constants`.
        let mut constant_at: HashMap<usize, usize> = HashMap::new();
        let mut uploaded: HashMap<ConstantKey, usize> = HashMap::new();
        let mut folding = Folding {
            spent: Duration::ZERO,
            bytes: 0,
            allowance: limits.max_tensor_bytes.saturating_add(
                u64::try_from(bytes.len())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(8),
            ),
        };
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (index, node) in graph.nodes.iter().enumerate() {
            let (onnx, op) = &translated[index];
            let name = &names[index];
            let named = |e| at_node(name, onnx, e);
            let mut step_inputs = Vec::with_capacity(node.inputs().len());
            for arg in node.inputs() {
                // Static weights come without a name: take their value first.
                let key = match arg.value_source {
                    ValueSource::Static(id) => Some(ConstantKey::Static(id)),
                    ValueSource::Constant => Some(ConstantKey::Named(arg.name.clone())),
                    _ => None,
                };
                if let Some(key) = key {
                    if let Some(slot) = uploaded.get(&key) {
                        step_inputs.push(Some(*slot));
                        continue;
                    }
                    if let Some(data) = arg.value() {
                        cap.data(&data).map_err(named)?;
                        let value = value_from_data(data, device).map_err(named)?;
                        let slot = new_slot(&mut slot_count);
                        constant_at.insert(slot, constants.len());
                        constants.push((slot, value));
                        uploaded.insert(key, slot);
                        step_inputs.push(Some(slot));
                        continue;
                    }
                }
                if arg.is_optional() || arg.name.is_empty() {
                    step_inputs.push(None);
                    continue;
                }
                let slot = *slots.get(&arg.name).ok_or_else(|| {
                    EngineError::BadGraph(format!(
                        "node {name} reads {}, which no node produces",
                        arg.name
                    ))
                })?;
                step_inputs.push(Some(slot));
            }
            let scalar_outputs: Vec<bool> = node
                .outputs()
                .iter()
                .map(|arg| matches!(arg.ty, ArgType::ScalarTensor(_) | ArgType::ScalarNative(_)))
                .collect();
            let outputs: Vec<usize> = node
                .outputs()
                .iter()
                .map(|arg| {
                    let slot = new_slot(&mut slot_count);
                    slots.insert(arg.name.clone(), slot);
                    slot
                })
                .collect();
            // Constants are computed (and uploaded) once, here, not at every run; so is
            // every node whose inputs are all constants (constant folding: shape
            // arithmetic, and weights a model generates, as ConstantOfShape does).
            let folded = step_inputs
                .iter()
                .flatten()
                .all(|slot| constant_at.contains_key(slot));
            if folded {
                let args = step_inputs
                    .iter()
                    .map(|slot| {
                        slot.and_then(|s| constant_at.get(&s).map(|i| constants[*i].1.clone()))
                    })
                    .collect();
                let values = folding.run(op, name, onnx, args, device, cap, limits)?;
                for ((slot, value), scalar) in
                    outputs.iter().copied().zip(values).zip(&scalar_outputs)
                {
                    let value = as_declared_scalar(value, *scalar);
                    constant_at.insert(slot, constants.len());
                    constants.push((slot, value));
                }
                continue;
            }
            steps.push(Step {
                node: index,
                onnx: onnx.clone(),
                op: op.clone(),
                last_use: vec![false; step_inputs.len()],
                inputs: step_inputs,
                outputs,
                scalar_outputs,
                kernel: Kernel::Burn,
            });
        }
        let mut outputs = Vec::new();
        for (arg, spec) in graph.outputs.iter().zip(inspection.outputs) {
            let slot = *slots.get(&arg.name).ok_or_else(|| {
                EngineError::BadGraph(format!("output {} is produced by no node", spec.name))
            })?;
            outputs.push((slot, spec));
        }
        let host = *device == super::cpu();
        let pinned: HashSet<usize> = outputs.iter().map(|(s, _)| *s).collect();
        if host {
            fast::plan(&names, &mut steps, &mut constants, &pinned)?;
        } else {
            let mut editable = fold::Constants {
                values: &mut constants,
                slot_count: &mut slot_count,
            };
            fold::batch_norms(&mut steps, &mut editable, &pinned, device)?;
            fold::nan_guards(&mut steps, &editable, &pinned);
            fold::conv_weights_channels_last(&steps, &mut editable, device)?;
        }
        // Weights the host kernels absorbed, or folding replaced, are not held twice.
        let read: HashSet<usize> = steps
            .iter()
            .flat_map(|s| s.inputs.iter().flatten().copied())
            .chain(outputs.iter().map(|(s, _)| *s))
            .collect();
        constants.retain(|(slot, _)| read.contains(slot));
        mark_last_uses(&mut steps, &constants, &outputs);
        Ok(Self {
            host,
            parallel: AtomicBool::new(host),
            kept: kernels::reuse::Kept::default(),
            names,
            steps,
            slot_count,
            constants,
            inputs,
            outputs,
            device: device.clone(),
            limits: limits.clone(),
            file_bytes: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        })
    }

    /// The limits the model was loaded under, which its runs keep.
    #[must_use]
    pub fn limits(&self) -> &LoadLimits {
        &self.limits
    }

    /// Resident bytes of the loaded weights: the constants the plan holds (initializers
    /// and folded values, at the engine's element sizes), the packed copies the CPU
    /// kernels hold, and the model file's bytes, which the parsed graph keeps (onnx-ir's
    /// tensor store references them) for as long as the model lives.
    #[must_use]
    pub fn weight_bytes(&self) -> u64 {
        let constants = self
            .constants
            .iter()
            .map(|(_, v)| value_bytes(v))
            .fold(0u64, u64::saturating_add);
        let held = host_weight_bytes(&self.steps);
        constants
            .saturating_add(held)
            .saturating_add(self.file_bytes)
    }

    #[must_use]
    pub fn inputs(&self) -> Vec<&TensorSpec> {
        self.inputs.iter().map(|(_, s)| s).collect()
    }

    #[must_use]
    pub fn outputs(&self) -> Vec<&TensorSpec> {
        self.outputs.iter().map(|(_, s)| s).collect()
    }

    /// Runs the model on named inputs; returns every output by name. Total, as loading is:
    /// inputs above the model's `max_tensor_bytes` are refused, and so is every operator
    /// output above it, by the node that would make it.
    ///
    /// # Errors
    /// Missing, unknown, ill-shaped or oversized inputs, or a failure inside an operator.
    pub fn run(
        &self,
        inputs: Vec<(String, TensorData)>,
    ) -> Result<Vec<(String, TensorData)>, EngineError> {
        if !self.host {
            return guarded(|| self.run_unguarded(inputs));
        }
        super::threads::spread(&self.parallel, || {
            guarded(|| kernels::reuse::within_run(&self.kept, || self.run_unguarded(inputs)))
        })
    }

    /// The slot vector of a run: constants and the checked inputs in place.
    fn prepare(
        &self,
        inputs: Vec<(String, TensorData)>,
        cap: Cap,
    ) -> Result<Vec<Option<Value>>, EngineError> {
        let mut slots: Vec<Option<Value>> = vec![None; self.slot_count];
        for (slot, value) in &self.constants {
            slots[*slot] = Some(value.clone());
        }
        let mut given: HashMap<String, TensorData> = inputs.into_iter().collect();
        for (slot, spec) in &self.inputs {
            let data = given
                .remove(&spec.name)
                .ok_or_else(|| EngineError::Input(format!("input {} is missing", spec.name)))?;
            check_input(spec, &data)?;
            cap.data(&data)
                .map_err(|e| EngineError::Input(format!("input {}: {e}", spec.name)))?;
            slots[*slot] = Some(if self.host && data.dtype() == DType::F32 {
                fast::dense_from_data(data)?
            } else {
                value_from_data(data, &self.device)?
            });
        }
        if let Some(extra) = given.keys().next() {
            return Err(EngineError::Input(format!(
                "the model has no input named {extra}"
            )));
        }
        Ok(slots)
    }

    fn run_unguarded(
        &self,
        inputs: Vec<(String, TensorData)>,
    ) -> Result<Vec<(String, TensorData)>, EngineError> {
        let cap = Cap::of(&self.limits);
        let mut slots = self.prepare(inputs, cap)?;
        self.execute(&mut slots, cap)?;
        self.outputs
            .iter()
            .enumerate()
            .map(|(index, (slot, spec))| {
                // Taken where no later output names the same value, so its buffer moves
                // out without a copy.
                let later = self.outputs[index + 1..].iter().any(|(s, _)| s == slot);
                let value = if later {
                    slots[*slot].clone()
                } else {
                    slots[*slot].take()
                };
                let value = value.ok_or_else(|| {
                    EngineError::BadGraph(format!("{} was not computed", spec.name))
                })?;
                let data = match value {
                    // Read back here, on the engine's thread: a device tensor's data is
                    // lazy until its bytes are touched, and the wait belongs to the run.
                    Value::Float(f) => {
                        let data = f.into_data();
                        std::hint::black_box(data.as_bytes().len());
                        data
                    }
                    Value::Int { data, shape } => TensorData::new(data, shape),
                    Value::Dense(d) => fast::dense_data(d),
                };
                let dtype = spec.element_type().unwrap_or(DType::F32);
                Ok((spec.name.clone(), elementwise::to_declared(data, dtype)?))
            })
            .collect()
    }

    fn execute(&self, slots: &mut [Option<Value>], cap: Cap) -> Result<(), EngineError> {
        for step in &self.steps {
            self.execute_step(step, slots, cap)?;
        }
        Ok(())
    }

    fn execute_step(
        &self,
        step: &Step,
        slots: &mut [Option<Value>],
        cap: Cap,
    ) -> Result<(), EngineError> {
        let args: Vec<Option<Value>> = step
            .inputs
            .iter()
            .zip(&step.last_use)
            .map(|(slot, last)| {
                slot.and_then(|s| {
                    if *last {
                        slots[s].take()
                    } else {
                        slots[s].clone()
                    }
                })
            })
            .collect();
        let named = |e| at_node(&self.names[step.node], &step.onnx, e);
        let results = guarded(|| match &step.kernel {
            Kernel::Burn => fast::to_burn(args, &self.device)
                .and_then(|args| step.op.run(args, &self.device, cap)),
            Kernel::Host(host) => host.run(&step.op, args, &self.device, cap),
        })
        .map_err(named)?;
        for (i, (slot, value)) in step.outputs.iter().zip(results).enumerate() {
            // Operators check what they allocate; this catches any that does not.
            cap.value(&value).map_err(named)?;
            // Fusions may give a step more outputs than its node had: those are no scalars.
            let scalar = step.scalar_outputs.get(i).copied().unwrap_or(false);
            slots[*slot] = Some(as_declared_scalar(value, scalar));
        }
        Ok(())
    }
}

/// A step may take (instead of clone) an input whose slot no later step reads, unless the
/// slot is a preloaded constant (reused by every run) or a graph output.
fn mark_last_uses(
    steps: &mut [Step],
    constants: &[(usize, Value)],
    outputs: &[(usize, TensorSpec)],
) {
    let pinned: std::collections::HashSet<usize> = constants
        .iter()
        .map(|(s, _)| *s)
        .chain(outputs.iter().map(|(s, _)| *s))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for step in steps.iter_mut().rev() {
        for (i, slot) in step.inputs.iter().enumerate() {
            if let Some(slot) = slot
                && !pinned.contains(slot)
                && seen.insert(*slot)
            {
                // The first reader met walking backwards is the last one running; a
                // slot read twice by one step is cloned for the earlier argument.
                let later_in_same_step = step.inputs[i + 1..].contains(&Some(*slot));
                step.last_use[i] = !later_in_same_step;
                if later_in_same_step {
                    seen.remove(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
