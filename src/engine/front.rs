//! The ONNX front end: parsing (guarded against panics), the model's own input and
//! output names and element types from the raw `ModelProto`, and what `cairn model
//! inspect` reports.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::DType;
use onnx_ir::{Message, ModelProto, OnnxGraphBuilder};

use super::EngineError;
use super::limits::guarded;
use super::ops;

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

pub(super) struct Raw {
    inputs: Vec<(String, i32, Vec<Option<usize>>)>,
    outputs: Vec<(String, i32, Vec<Option<usize>>)>,
    opset: Option<i64>,
    /// Casts to element types the engine does not hold (onnx-ir reads some of them, the
    /// 8- and 4-bit floats and integers, silently as f32).
    bad_casts: Vec<String>,
    /// Every node's ONNX operator and the model's own name for it, in file order.
    nodes: Vec<(String, String)>,
}

impl Raw {
    /// The first graph input or output whose element type the engine does not hold.
    fn unheld_io_type(&self) -> Option<String> {
        let (kind, (name, elem_type, _)) = self
            .inputs
            .iter()
            .map(|io| ("input", io))
            .chain(self.outputs.iter().map(|io| ("output", io)))
            .find(|(_, (_, elem_type, _))| {
                let spec = TensorSpec {
                    name: String::new(),
                    dtype: onnx_type_name(*elem_type).to_owned(),
                    shape: Vec::new(),
                };
                spec.element_type().is_none()
            })?;
        Some(format!(
            "{kind} {name} has element type {} ({elem_type}); cairn holds FLOAT, FLOAT16, \
             INT8/16/32/64, UINT8/16/32 and BOOL tensors",
            onnx_type_name(*elem_type)
        ))
    }
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
    if let Some(t) = graph
        .initializer
        .iter()
        .find(|t| !t.external_data.is_empty())
    {
        return Err(EngineError::Unsupported(format!(
            "weights in external data files (initializer {} and others): cairn loads one \
             self-contained .onnx file; inline them with python3 -c \"import onnx; \
             onnx.save_model(onnx.load('model.onnx'), 'inlined.onnx', \
             save_as_external_data=False)\" (models under 2 GB)",
            t.name
        )));
    }
    // onnx-ir indexes a node's first output while folding constants; every ONNX
    // operator has one, so a node without is refused here rather than caught as a panic.
    if let Some(node) = graph.node.iter().find(|n| n.output.is_empty()) {
        return Err(EngineError::Parse(format!(
            "node '{}' ({}) has no outputs; every ONNX operator produces at least one",
            node.name, node.op_type
        )));
    }
    let initializers: std::collections::HashMap<&str, _> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // onnx-ir folds a Reshape of constants with unchecked products; a constant target
    // shape whose element count overflows is refused here, naming the node.
    for node in graph.node.iter().filter(|n| n.op_type == "Reshape") {
        let Some(target) = node
            .input
            .get(1)
            .and_then(|name| initializers.get(name.as_str()))
        else {
            continue;
        };
        let dims: Vec<i64> = if target.raw_data.is_empty() {
            target.int64_data.clone()
        } else {
            target
                .raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect()
        };
        let count = dims
            .iter()
            .filter(|d| **d > 0)
            .try_fold(1i64, |a, d| a.checked_mul(*d));
        if count.is_none() {
            return Err(EngineError::Limit(format!(
                "node '{}' (Reshape): target shape {dims:?} has more elements than can be counted",
                node.name
            )));
        }
    }
    check_geometry(graph, &initializers)?;
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains_key(i.name.as_str()))
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
    let nodes = graph
        .node
        .iter()
        .map(|n| (n.op_type.clone(), n.name.clone()))
        .collect();
    Ok(Raw {
        inputs,
        outputs,
        opset,
        bad_casts,
        nodes,
    })
}

/// onnx-ir indexes a convolution's or pool's per-axis attributes by the kernel's rank
/// without checking their lengths (and reduces a scalar's rank by one for ArgMax). Lengths that disagree with the kernel (the rank less 2
/// of its weight, else of its input, where the model declares them; else the first of
/// them given) or with each other are refused here, naming the node, as onnxruntime
/// refuses them.
fn check_geometry(
    graph: &onnx_ir::GraphProto,
    initializers: &std::collections::HashMap<&str, &onnx_ir::TensorProto>,
) -> Result<(), EngineError> {
    const PER_AXIS: [(&str, usize); 6] = [
        ("kernel_shape", 1),
        ("strides", 1),
        ("dilations", 1),
        ("output_padding", 1),
        ("output_shape", 1),
        ("pads", 2),
    ];
    let spatial_ops = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"];
    let declared = declared_ranks(graph, initializers);
    // onnx-ir takes one from the rank of an ArgMax/ArgMin's input unchecked; it reads a
    // graph input without a shape as a scalar.
    let scalar = |name: &str| {
        declared.get(name).map_or_else(
            || graph.input.iter().any(|i| i.name == name),
            |rank| *rank == 0,
        )
    };
    if let Some(node) = graph.node.iter().find(|n| {
        (n.op_type == "ArgMax" || n.op_type == "ArgMin")
            && n.input.first().is_some_and(|x| scalar(x))
    }) {
        return Err(EngineError::Parse(format!(
            "node '{}' ({}): the input is a scalar, with no axis to reduce",
            node.name, node.op_type
        )));
    }
    let spatial = |name: Option<&String>| {
        name.and_then(|n| declared.get(n.as_str()))
            .map(|rank| rank.saturating_sub(2))
    };
    for node in graph
        .node
        .iter()
        .filter(|n| spatial_ops.contains(&n.op_type.as_str()))
    {
        let length = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.ints.len())
        };
        let weight = node
            .input
            .get(1)
            .filter(|_| node.op_type.starts_with("Conv"));
        let mut axes = spatial(weight).or_else(|| spatial(node.input.first()));
        for (name, per_axis) in PER_AXIS {
            let Some(len) = length(name) else { continue };
            let fits = match axes {
                Some(k) => len == per_axis * k,
                None => len % per_axis == 0,
            };
            if !fits {
                return Err(EngineError::Parse(format!(
                    "node '{}' ({}): {name} has {len} values for a kernel of {} axes",
                    node.name,
                    node.op_type,
                    axes.map_or_else(|| "?".to_owned(), |k| k.to_string())
                )));
            }
            axes = axes.or(Some(len / per_axis));
        }
    }
    Ok(())
}

/// The ranks of the graph's inputs that declare a shape, and of its initializers.
fn declared_ranks<'g>(
    graph: &'g onnx_ir::GraphProto,
    initializers: &std::collections::HashMap<&'g str, &'g onnx_ir::TensorProto>,
) -> std::collections::HashMap<&'g str, usize> {
    graph
        .input
        .iter()
        .filter(|i| i.type_.tensor_type().shape.is_some())
        .map(|i| (i.name.as_str(), i.type_.tensor_type().shape.dim.len()))
        .chain(initializers.iter().map(|(name, t)| (*name, t.dims.len())))
        .collect()
}

pub(super) fn parse(bytes: &[u8]) -> Result<(onnx_ir::OnnxGraph, Raw), EngineError> {
    if bytes.is_empty() {
        return Err(EngineError::Parse("the file is empty".into()));
    }
    let (graph, raw) = catch_unwind(AssertUnwindSafe(|| {
        let raw = read_raw(bytes)?;
        // No pattern rewrites: onnx-ir's coalescing of decomposed attention into one
        // Attention node changed what some graphs compute; the graph runs as written.
        let graph = OnnxGraphBuilder::new()
            .simplify(false)
            .parse_bytes(bytes)
            .map_err(|e| match raw.unheld_io_type() {
                // onnx-ir's own message for a STRING input is about a rank-0 tensor.
                Some(reason) => EngineError::Unsupported(reason),
                None => EngineError::Parse(e.to_string()),
            })?;
        Ok::<_, EngineError>((graph, raw))
    }))
    .map_err(|_| EngineError::Parse("the ONNX front end failed on this model".into()))??;
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

/// The name to report each parsed node by: the model's own name where the parsed node can
/// be matched to one (onnx-ir renames every node `{type}{n}`, and may add or remove some:
/// the n-th parsed node of an operator is the n-th of the file when both count the same
/// number of that operator), else onnx-ir's.
pub(super) fn node_names(graph: &onnx_ir::OnnxGraph, raw: &Raw) -> Vec<String> {
    use std::collections::HashMap;
    let mut in_file: HashMap<&str, Vec<&str>> = HashMap::new();
    for (op, name) in &raw.nodes {
        in_file.entry(op.as_str()).or_default().push(name.as_str());
    }
    let ops: Vec<String> = graph.nodes.iter().map(ops::onnx_name).collect();
    let mut parsed: HashMap<&str, usize> = HashMap::new();
    for op in &ops {
        *parsed.entry(op.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    graph
        .nodes
        .iter()
        .zip(&ops)
        .map(|(node, op)| {
            let n = seen.entry(op.as_str()).or_default();
            *n += 1;
            in_file
                .get(op.as_str())
                .filter(|names| names.len() == parsed[op.as_str()])
                .and_then(|names| names.get(*n - 1))
                .filter(|name| !name.is_empty())
                .map_or_else(|| node.name().to_owned(), |name| (*name).to_owned())
        })
        .collect()
}

/// Describes a model without preparing it to run.
///
/// # Errors
/// The bytes are not an ONNX model the front end can read.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, EngineError> {
    guarded(|| {
        let (graph, raw) = parse(bytes)?;
        Ok(describe(&graph, &raw))
    })
}

pub(super) fn describe(graph: &onnx_ir::OnnxGraph, raw: &Raw) -> Inspection {
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    let mut unsupported = std::collections::BTreeSet::new();
    for node in &graph.nodes {
        let name = ops::onnx_name(node);
        // Supported means translated; a node refused for its attributes is reported when
        // the model is loaded, by its name.
        if let Err(super::EngineError::Unsupported(what)) = ops::translate(node) {
            unsupported.insert(what);
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

#[cfg(test)]
mod tests {
    use super::onnx_type_name;

    #[test]
    fn type_names() {
        assert_eq!(onnx_type_name(1), "FLOAT");
        assert_eq!(onnx_type_name(99), "UNSUPPORTED");
    }

    /// A model of strings is refused naming the type, not with the front end's own
    /// message (about a rank-0 tensor).
    #[test]
    fn string_tensors_are_refused_by_their_type() {
        use crate::engine::test_graphs::{Graph, info, model, node};
        let bytes = model(Graph {
            nodes: vec![node("Identity", "same", &["text"], &["copy"])],
            inputs: vec![info("text", 8, &[Some(2)])],
            outputs: vec![info("copy", 8, &[Some(2)])],
            initializers: vec![],
        });
        let e = crate::engine::Model::load(&bytes, &crate::engine::cpu())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("STRING"), "{e}");
    }
}

#[cfg(test)]
mod external_data_tests {
    /// A model whose weights sit in `model.onnx.data` (what torch's exporter writes for
    /// large models) is refused with the way to inline them, not a parse error.
    #[test]
    fn external_weights_are_refused_with_the_way_to_inline_them() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/external_data.onnx");
        let bytes = std::fs::read(path).unwrap();
        let e = super::inspect(&bytes).unwrap_err().to_string();
        assert!(
            e.contains("external data") && e.contains("save_as_external_data=False"),
            "{e}"
        );
    }
}
