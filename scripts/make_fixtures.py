#!/usr/bin/env python3
"""Builds the engine's fixture models with onnx.helper and their expected outputs with
onnxruntime (the oracle), at batch 1, 4 and 32.

    pip install onnx==1.22.0 onnxruntime numpy
    python3 scripts/make_fixtures.py        # writes tests/fixtures/models/

The outputs are committed, so the Rust tests need no Python; rerun this after changing a
model.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")
RNG = np.random.default_rng(20261127)


def weight(name, *shape, scale=0.1):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def mlp():
    """Gemm → Relu → Gemm → Relu → Gemm → Softmax, 64 → 128 → 64 → 10."""
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], transB=1),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    inits = [weight("w1", 128, 64), weight("b1", 128), weight("w2", 64, 128), weight("b2", 64),
             weight("w3", 10, 64), weight("b3", 10)]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (64,)


def cnn():
    """Conv → Relu → MaxPool → Conv → Relu → MaxPool → Flatten → Gemm, on 1×28×28."""
    nodes = [
        helper.make_node("Conv", ["image", "c1w", "c1b"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["scores"], transB=1),
    ]
    inits = [weight("c1w", 8, 1, 3, 3, scale=0.3), weight("c1b", 8), weight("c2w", 16, 8, 3, 3),
             weight("c2b", 16), weight("fw", 10, 16 * 7 * 7, scale=0.05), weight("fb", 10)]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (1, 28, 28)


def bn(prefix, channels):
    return [numpy_helper.from_array((1 + 0.2 * RNG.standard_normal(channels)).astype(np.float32), f"{prefix}g"),
            weight(f"{prefix}b", channels),
            weight(f"{prefix}m", channels),
            numpy_helper.from_array(RNG.uniform(0.5, 1.5, channels).astype(np.float32), f"{prefix}v")]


def resblock():
    """A ResNet basic block: Conv → BatchNormalization → Relu → Conv → BatchNormalization
    → Add (the skip) → Relu → GlobalAveragePool → Flatten → Gemm, on 8×12×12 (what the
    GPU plan folds)."""
    nodes = [
        helper.make_node("Conv", ["x", "k1", "k1b"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "n1g", "n1b", "n1m", "n1v"], ["b1"], epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Conv", ["r1", "k2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "n2g", "n2b", "n2m", "n2v"], ["b2"], epsilon=1e-5),
        helper.make_node("Add", ["b2", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = [weight("k1", 8, 8, 3, 3, scale=0.2), weight("k1b", 8), *bn("n1", 8),
             weight("k2", 8, 8, 3, 3, scale=0.2), *bn("n2", 8), weight("fw", 5, 8, scale=0.5),
             weight("fb", 5)]
    graph = helper.make_graph(
        nodes, "resblock",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (8, 12, 12)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, build in [("mlp", mlp), ("cnn", cnn), ("resblock", resblock)]:
        model, sample = build()
        onnx.checker.check_model(model)
        path = os.path.join(OUT, f"{name}.onnx")
        onnx.save(model, path)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        output_name = session.get_outputs()[0].name
        for batch in (1, 4, 32):
            x = RNG.standard_normal((batch, *sample)).astype(np.float32)
            (y,) = session.run([output_name], {input_name: x})
            np.save(os.path.join(OUT, f"{name}_b{batch}_{input_name}.npy"), x)
            np.save(os.path.join(OUT, f"{name}_b{batch}_{output_name}.npy"), y)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
