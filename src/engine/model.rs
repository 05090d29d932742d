//! Loading an ONNX model into an execution plan, and running it.
//!
//! Load: parse with onnx-ir (guarded against panics), read the raw `ModelProto` for the
//! model's own input/output names and element types, refuse unsupported operators (by
//! name) and dtypes, assign every value a slot, preload initializers and constants once,
//! and record after which step each intermediate can be freed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{DType, Device, TensorData};
use onnx_ir::{Message, ModelProto, Node, OnnxGraphBuilder, ValueSource};

use super::EngineError;
use super::elementwise;
use super::fast::{self, Kernel};
use super::ops;
use super::value::{Float, Value};

/// An input or output of a model, under the model's own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ONNX element type name: `FLOAT`, `INT64`, ...
    pub dtype: String,
    /// `None` for a dynamic dimension (batch, say).
    pub shape: Vec<Option<usize>>,
}

/// What `cairn model inspect` prints.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Operator → count, sorted by name.
    pub ops: Vec<(String, usize)>,
    pub unsupported: Vec<String>,
    pub opset: Option<i64>,
}

pub(super) struct Step {
    pub(super) node: usize,
    /// The ONNX operator name, for the operator and for errors.
    pub(super) op: String,
    /// Slot per node input; `None` for an absent optional input.
    pub(super) inputs: Vec<Option<usize>>,
    /// Whether this step is the last reader of the input's slot (so it may take it).
    pub(super) last_use: Vec<bool>,
    pub(super) outputs: Vec<usize>,
    pub(super) kernel: Kernel,
}

/// A loaded, runnable model.
pub struct Model {
    nodes: Vec<Node>,
    steps: Vec<Step>,
    slot_count: usize,
    constants: Vec<(usize, Value)>,
    inputs: Vec<(usize, TensorSpec)>,
    outputs: Vec<(usize, TensorSpec)>,
    device: Device,
    /// A CPU plan: float inputs stay in host memory for cairn's own kernels.
    host: bool,
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

impl TensorSpec {
    /// The tensor element type, if the engine holds it (see [`super::elementwise`]).
    #[must_use]
    pub fn element_type(&self) -> Option<DType> {
        let dtype = match self.dtype.as_str() {
            "FLOAT" => DType::F32,
            "FLOAT16" => DType::F16,
            "INT64" => DType::I64,
            "INT32" => DType::I32,
            "INT16" => DType::I16,
            "INT8" => DType::I8,
            "UINT32" => DType::U32,
            "UINT16" => DType::U16,
            "UINT8" => DType::U8,
            "BOOL" => DType::Bool(burn::tensor::BoolStore::Native),
            _ => return None,
        };
        Some(dtype)
    }
}

fn onnx_type_name(elem_type: i32) -> &'static str {
    match elem_type {
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BFLOAT16",
        _ => "UNSUPPORTED",
    }
}

/// Converts host data from the model or a client into a runtime value.
///
/// # Errors
/// Element types the interpreter does not run.
pub fn value_from_data(data: TensorData, device: &Device) -> Result<Value, EngineError> {
    match data.dtype() {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            Ok(Value::Float(Float::from_data(data, device)?))
        }
        DType::Bool(_) => {
            let shape = data.shape().to_vec();
            let values: Vec<bool> = data
                .convert_dtype(DType::Bool(burn::tensor::BoolStore::Native))
                .try_to_vec()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
            Ok(Value::Int {
                data: values.into_iter().map(i64::from).collect(),
                shape,
            })
        }
        DType::I64
        | DType::I32
        | DType::I16
        | DType::I8
        | DType::U8
        | DType::U16
        | DType::U32
        | DType::U64 => {
            let shape = data.shape().to_vec();
            let values: Vec<i64> = data
                .convert::<i64>()
                .try_to_vec()
                .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
            Ok(Value::Int {
                data: values,
                shape,
            })
        }
        other => Err(EngineError::Unsupported(format!("{other:?} tensors"))),
    }
}

struct Raw {
    inputs: Vec<(String, i32, Vec<Option<usize>>)>,
    outputs: Vec<(String, i32, Vec<Option<usize>>)>,
    opset: Option<i64>,
    /// Casts to element types the engine does not hold (onnx-ir reads some of them, the
    /// 8- and 4-bit floats and integers, silently as f32).
    bad_casts: Vec<String>,
}

fn value_info(info: &onnx_ir::ValueInfoProto) -> (String, i32, Vec<Option<usize>>) {
    let tensor = info.type_.tensor_type();
    let shape = tensor
        .shape
        .dim
        .iter()
        .map(|d| {
            if d.has_dim_value() {
                usize::try_from(d.dim_value()).ok().filter(|v| *v > 0)
            } else {
                None
            }
        })
        .collect();
    (info.name.clone(), tensor.elem_type, shape)
}

fn read_raw(bytes: &[u8]) -> Result<Raw, EngineError> {
    let model =
        ModelProto::parse_from_bytes(bytes).map_err(|e| EngineError::Parse(e.to_string()))?;
    let graph = &model.graph;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(value_info)
        .collect();
    let outputs = graph.output.iter().map(value_info).collect();
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    let bad_casts = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Cast" || n.op_type == "CastLike")
        .filter_map(|n| {
            let to = n.attribute.iter().find(|a| a.name == "to")?;
            let to = i32::try_from(to.i).unwrap_or(0);
            let name = onnx_type_name(to);
            let spec = TensorSpec {
                name: String::new(),
                dtype: name.to_owned(),
                shape: Vec::new(),
            };
            spec.element_type()
                .is_none()
                .then(|| format!("Cast to {name} (element type {to})"))
        })
        .collect();
    Ok(Raw {
        inputs,
        outputs,
        opset,
        bad_casts,
    })
}

fn parse(bytes: &[u8]) -> Result<(onnx_ir::OnnxGraph, Raw), EngineError> {
    if bytes.is_empty() {
        return Err(EngineError::Parse("the file is empty".into()));
    }
    let raw = read_raw(bytes)?;
    let graph = catch_unwind(AssertUnwindSafe(|| {
        OnnxGraphBuilder::new().parse_bytes(bytes)
    }))
    .map_err(|_| EngineError::Parse("the ONNX front end failed on this model".into()))?
    .map_err(|e| EngineError::Parse(e.to_string()))?;
    if graph.inputs.len() != raw.inputs.len() || graph.outputs.len() != raw.outputs.len() {
        return Err(EngineError::Parse(format!(
            "the graph has {} inputs and {} outputs, the model declares {} and {}",
            graph.inputs.len(),
            graph.outputs.len(),
            raw.inputs.len(),
            raw.outputs.len()
        )));
    }
    Ok((graph, raw))
}

/// Describes a model without preparing it to run.
///
/// # Errors
/// The bytes are not an ONNX model the front end can read.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, EngineError> {
    let (graph, raw) = parse(bytes)?;
    Ok(describe(&graph, &raw))
}

fn describe(graph: &onnx_ir::OnnxGraph, raw: &Raw) -> Inspection {
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    let mut unsupported = std::collections::BTreeSet::new();
    for node in &graph.nodes {
        let name = ops::op_name(node);
        if !ops::is_supported(node) {
            unsupported.insert(name.clone());
        }
        *ops.entry(name).or_default() += 1;
    }
    let spec = |(name, ty, shape): &(String, i32, Vec<Option<usize>>)| TensorSpec {
        name: name.clone(),
        dtype: onnx_type_name(*ty).to_owned(),
        shape: shape.clone(),
    };
    let inputs: Vec<TensorSpec> = raw.inputs.iter().map(spec).collect();
    let outputs: Vec<TensorSpec> = raw.outputs.iter().map(spec).collect();
    for s in inputs.iter().chain(&outputs) {
        if s.element_type().is_none() {
            unsupported.insert(format!("{} tensors ({})", s.dtype, s.name));
        }
    }
    unsupported.extend(raw.bad_casts.iter().cloned());
    Inspection {
        inputs,
        outputs,
        ops: ops.into_iter().collect(),
        unsupported: unsupported.into_iter().collect(),
        opset: raw.opset,
    }
}

impl Model {
    /// Parses, validates and plans a model for `device`.
    ///
    /// # Errors
    /// Malformed bytes, unsupported operators (all listed by name) or dtypes, or a graph
    /// that reads a value nothing produces.
    pub fn load(bytes: &[u8], device: &Device) -> Result<Self, EngineError> {
        let (graph, raw) = parse(bytes)?;
        let inspection = describe(&graph, &raw);
        if !inspection.unsupported.is_empty() {
            return Err(EngineError::UnsupportedOps(inspection.unsupported));
        }
        let mut slots: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
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
        let mut constant_at: std::collections::HashMap<usize, usize> =
            std::collections::HashMap::new();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (index, node) in graph.nodes.iter().enumerate() {
            let mut step_inputs = Vec::with_capacity(node.inputs().len());
            for arg in node.inputs() {
                // Static weights come without a name: take their value first.
                if matches!(
                    arg.value_source,
                    ValueSource::Static(_) | ValueSource::Constant
                ) && let Some(data) = arg.value()
                {
                    let slot = new_slot(&mut slot_count);
                    constant_at.insert(slot, constants.len());
                    constants.push((slot, value_from_data(data, device)?));
                    step_inputs.push(Some(slot));
                    continue;
                }
                if arg.is_optional() || arg.name.is_empty() {
                    step_inputs.push(None);
                    continue;
                }
                let slot = *slots.get(&arg.name).ok_or_else(|| {
                    EngineError::BadGraph(format!(
                        "node {} reads {}, which no node produces",
                        node.name(),
                        arg.name
                    ))
                })?;
                step_inputs.push(Some(slot));
            }
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
                let op = ops::op_name(node);
                let args = step_inputs
                    .iter()
                    .map(|slot| {
                        slot.and_then(|s| constant_at.get(&s).map(|i| constants[*i].1.clone()))
                    })
                    .collect();
                let values = ops::run(node, &op, args, device).map_err(|e| EngineError::Node {
                    node: node.name().to_owned(),
                    op,
                    source: Box::new(e),
                })?;
                for (slot, value) in outputs.iter().copied().zip(values) {
                    constant_at.insert(slot, constants.len());
                    constants.push((slot, value));
                }
                continue;
            }
            steps.push(Step {
                node: index,
                op: ops::op_name(node),
                last_use: vec![false; step_inputs.len()],
                inputs: step_inputs,
                outputs,
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
        if host {
            let pinned = outputs.iter().map(|(s, _)| *s).collect();
            fast::plan(&graph.nodes, &mut steps, &constants, &pinned);
            // Weights the host kernels absorbed are held by them alone.
            let read: std::collections::HashSet<usize> = steps
                .iter()
                .flat_map(|s| s.inputs.iter().flatten().copied())
                .chain(outputs.iter().map(|(s, _)| *s))
                .collect();
            constants.retain(|(slot, _)| read.contains(slot));
        }
        mark_last_uses(&mut steps, &constants, &outputs);
        Ok(Self {
            host,
            nodes: graph.nodes,
            steps,
            slot_count,
            constants,
            inputs,
            outputs,
            device: device.clone(),
        })
    }

    /// Runs the model once on synthetic inputs (dynamic dimensions set to 1), so the first
    /// real request does not pay for first-use allocations.
    ///
    /// # Errors
    /// The model cannot run on inputs of its declared shapes.
    pub fn warmup(&self) -> Result<(), EngineError> {
        let inputs = self
            .inputs
            .iter()
            .map(|(_, spec)| {
                let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
                let n: usize = shape.iter().product();
                let zeros = TensorData::new(vec![0f32; n], shape);
                let dtype = spec.element_type().unwrap_or(DType::F32);
                Ok((spec.name.clone(), elementwise::to_declared(zeros, dtype)?))
            })
            .collect::<Result<_, EngineError>>()?;
        self.run(inputs).map(|_| ())
    }

    #[must_use]
    pub fn inputs(&self) -> Vec<&TensorSpec> {
        self.inputs.iter().map(|(_, s)| s).collect()
    }

    #[must_use]
    pub fn outputs(&self) -> Vec<&TensorSpec> {
        self.outputs.iter().map(|(_, s)| s).collect()
    }

    /// Runs the model on named f32 inputs; returns every output by name.
    ///
    /// # Errors
    /// Missing, unknown or ill-shaped inputs, or a failure inside an operator.
    pub fn run(
        &self,
        inputs: Vec<(String, TensorData)>,
    ) -> Result<Vec<(String, TensorData)>, EngineError> {
        let mut slots: Vec<Option<Value>> = vec![None; self.slot_count];
        for (slot, value) in &self.constants {
            slots[*slot] = Some(value.clone());
        }
        let mut given: std::collections::HashMap<String, TensorData> = inputs.into_iter().collect();
        for (slot, spec) in &self.inputs {
            let data = given
                .remove(&spec.name)
                .ok_or_else(|| EngineError::Input(format!("input {} is missing", spec.name)))?;
            check_input(spec, &data)?;
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
        catch_unwind(AssertUnwindSafe(|| self.execute(&mut slots))).map_err(|_| {
            EngineError::Internal("an operator failed inside the tensor library".into())
        })??;
        self.outputs
            .iter()
            .map(|(slot, spec)| {
                let value = slots[*slot].clone().ok_or_else(|| {
                    EngineError::BadGraph(format!("{} was not computed", spec.name))
                })?;
                let data = match value {
                    Value::Float(f) => f.into_data(),
                    Value::Int { data, shape } => TensorData::new(data, shape),
                    Value::Dense(d) => fast::dense_data(d),
                };
                let dtype = spec.element_type().unwrap_or(DType::F32);
                Ok((spec.name.clone(), elementwise::to_declared(data, dtype)?))
            })
            .collect()
    }

    fn execute(&self, slots: &mut [Option<Value>]) -> Result<(), EngineError> {
        for step in &self.steps {
            let node = &self.nodes[step.node];
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
            let results = match &step.kernel {
                Kernel::Burn => fast::to_burn(args, &self.device)
                    .and_then(|args| ops::run(node, &step.op, args, &self.device)),
                Kernel::Host(host) => host.run(node, &step.op, args, &self.device),
            }
            .map_err(|e| EngineError::Node {
                node: node.name().to_owned(),
                op: step.op.clone(),
                source: Box::new(e),
            })?;
            for (slot, value) in step.outputs.iter().zip(results) {
                slots[*slot] = Some(value);
            }
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

fn check_input(spec: &TensorSpec, data: &TensorData) -> Result<(), EngineError> {
    let dtype_ok = match (spec.element_type(), data.dtype()) {
        (Some(DType::Bool(_)), DType::Bool(_)) => true,
        (Some(want), got) => want == got,
        (None, _) => false,
    };
    if !dtype_ok {
        return Err(EngineError::Input(format!(
            "input {} must be {}, got {:?}",
            spec.name,
            spec.dtype,
            data.dtype()
        )));
    }
    let dims = data.shape().to_vec();
    if dims.len() != spec.shape.len() {
        return Err(EngineError::Input(format!(
            "input {} must have rank {} (shape {:?}), got {dims:?}",
            spec.name,
            spec.shape.len(),
            spec.shape
        )));
    }
    for (i, (want, got)) in spec.shape.iter().zip(&dims).enumerate() {
        if let Some(want) = want
            && want != got
        {
            return Err(EngineError::Input(format!(
                "input {}: dimension {i} must be {want}, got {got} (shape {dims:?})",
                spec.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let device = Device::flex();
        for bytes in [
            &b""[..],
            b"not onnx at all",
            &[0xff; 64],
            &[8, 1, 18, 3, 1, 2],
        ] {
            assert!(Model::load(bytes, &device).is_err());
        }
    }

    #[test]
    fn type_names() {
        assert_eq!(onnx_type_name(1), "FLOAT");
        assert_eq!(onnx_type_name(99), "UNSUPPORTED");
    }
}
