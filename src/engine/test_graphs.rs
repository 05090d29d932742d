//! ONNX graphs built in code for the engine's tests: crafted models (`safety_tests`) and
//! small graphs whose plans the CPU fusions must rewrite (`fast::tests`).

use onnx_ir::{
    AttributeProto, AttributeType, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

/// A tensor input/output declaration: `None` dimensions are dynamic.
pub(crate) fn info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    let tensor = v.type_.mut_or_insert_default().mut_tensor_type();
    tensor.elem_type = elem_type;
    let shape = tensor.shape.mut_or_insert_default();
    for d in dims {
        shape.dim.push(Default::default());
        let dim = shape.dim.last_mut().expect("just pushed");
        match d {
            Some(v) => dim.set_dim_value(*v),
            None => dim.set_dim_param("batch".into()),
        }
    }
    v
}

pub(crate) fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 1;
    t.dims = dims.to_vec();
    t.float_data = values.to_vec();
    t
}

pub(crate) fn ramp(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    #[expect(clippy::cast_precision_loss, reason = "small test tensors")]
    let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32 / 7.0).collect();
    floats(name, dims, &values)
}

pub(crate) fn int64s(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = 7;
    t.dims = dims.to_vec();
    t.int64_data = values.to_vec();
    t
}

pub(crate) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

pub(crate) fn float(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = value;
    a
}

pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

pub(crate) fn string(name: &str, value: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = value.as_bytes().to_vec().into();
    a
}

pub(crate) fn tensor(name: &str, value: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::TENSOR.into();
    a.t = Some(value).into();
    a
}

pub(crate) fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name.into();
    n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
    n.output = outputs.iter().map(|s| (*s).to_owned()).collect();
    n
}

pub(crate) fn with(mut n: NodeProto, attributes: Vec<AttributeProto>) -> NodeProto {
    n.attribute = attributes;
    n
}

pub(crate) struct Graph {
    pub nodes: Vec<NodeProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    pub initializers: Vec<TensorProto>,
}

pub(crate) fn model(g: Graph) -> Vec<u8> {
    model_at(g, 13)
}

/// [`model`] importing the default domain at `opset`.
pub(crate) fn model_at(g: Graph, opset: i64) -> Vec<u8> {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.opset_import.push(Default::default());
    m.opset_import[0].version = opset;
    let graph = m.graph.mut_or_insert_default();
    graph.name = "crafted".into();
    graph.node = g.nodes;
    graph.input = g.inputs;
    graph.output = g.outputs;
    graph.initializer = g.initializers;
    m.write_to_bytes().expect("a model serializes")
}
