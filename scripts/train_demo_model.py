#!/usr/bin/env python3
"""Train cairn's demo model and export it to assets/models/digits.onnx.

A small MLP (64 -> 32 -> 10, ReLU, softmax) on scikit-learn's bundled 8x8 digits
(`load_digits()`: 1797 images, 64 pixels valued 0..16, 10 classes), trained with numpy only
(minibatch SGD with momentum, fixed seed) on 80% of the images; the other 20% are the test
set. The ONNX graph uses only Gemm (transB=1), Relu and Softmax (axis=1) at opset 17 and
takes raw pixel values: the 1/16 input scaling is folded into the first layer's weights.

Also writes assets/models/digits-example.json (a KServe V2 infer request with one test
image; its "id" names the true digit). Deterministic: every run writes the same bytes.

    python3 scripts/train_demo_model.py
"""

import os

# One BLAS thread: the same summation order, hence the same weights, on every run.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "assets" / "models"
MODEL_PATH = OUT_DIR / "digits.onnx"
EXAMPLE_PATH = OUT_DIR / "digits-example.json"

SEED = 20240601
HIDDEN = 32
EPOCHS = 150
BATCH = 32
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
DOC = "cairn demo: scikit-learn digits"


def split(n, rng):
    order = rng.permutation(n)
    n_test = n // 5
    return order[n_test:], order[:n_test]


def forward(x, w1, b1, w2, b2):
    """Same math as the ONNX graph: Gemm(transB=1) -> Relu -> Gemm(transB=1) -> Softmax."""
    h = np.maximum(x @ w1.T + b1, 0)
    z = h @ w2.T + b2
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return h, e / e.sum(axis=1, keepdims=True)


def train(x, y, rng):
    n, d = x.shape
    w1 = rng.normal(0.0, np.sqrt(2.0 / d), (HIDDEN, d))
    b1 = np.zeros(HIDDEN)
    w2 = rng.normal(0.0, np.sqrt(2.0 / HIDDEN), (10, HIDDEN))
    b2 = np.zeros(10)
    params = [w1, b1, w2, b2]
    velocity = [np.zeros_like(p) for p in params]
    onehot = np.eye(10)[y]
    for _ in range(EPOCHS):
        order = rng.permutation(n)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            xb, tb = x[idx], onehot[idx]
            h, p = forward(xb, *params)
            dz = (p - tb) / len(idx)  # softmax cross-entropy gradient
            gw2 = dz.T @ h + WEIGHT_DECAY * params[2]
            gb2 = dz.sum(axis=0)
            dh = (dz @ params[2]) * (h > 0)
            gw1 = dh.T @ xb + WEIGHT_DECAY * params[0]
            gb1 = dh.sum(axis=0)
            for p_, v, g in zip(params, velocity, (gw1, gb1, gw2, gb2)):
                v *= MOMENTUM
                v -= LR * g
                p_ += v
    return params


def export(w1, b1, w2, b2):
    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "fc1.weight"),
        numpy_helper.from_array(b1.astype(np.float32), "fc1.bias"),
        numpy_helper.from_array(w2.astype(np.float32), "fc2.weight"),
        numpy_helper.from_array(b2.astype(np.float32), "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name=DOC,
        producer_version="1",
        doc_string=DOC,
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    digits = load_digits()
    x_raw = digits.data.astype(np.float64)  # 0..16
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    train_idx, test_idx = split(len(y), rng)

    w1, b1, w2, b2 = train(x_raw[train_idx] / 16.0, y[train_idx], rng)
    w1 = w1 / 16.0  # fold the input scaling: the model takes raw 0..16 pixels

    # Accuracy of the exported (float32) weights on raw pixels.
    f32 = [a.astype(np.float32) for a in (w1, b1, w2, b2)]
    x_test = x_raw[test_idx].astype(np.float32)
    _, p_train = forward(x_raw[train_idx].astype(np.float32), *f32)
    _, p_test = forward(x_test, *f32)
    train_acc = float((p_train.argmax(1) == y[train_idx]).mean())
    test_acc = float((p_test.argmax(1) == y[test_idx]).mean())
    print(f"train accuracy {train_acc:.4f} ({len(train_idx)} images)")
    print(f"test accuracy  {test_acc:.4f} ({len(test_idx)} images)")

    model = export(w1, b1, w2, b2)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    MODEL_PATH.write_bytes(data)
    print(f"wrote {MODEL_PATH.relative_to(ROOT)} ({len(data)} bytes)")

    # onnxruntime must agree with the numpy forward pass.
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    (p_ort,) = session.run(["probabilities"], {"input": x_test})
    max_diff = float(np.abs(p_ort - p_test).max())
    print(f"onnxruntime vs numpy: max abs diff {max_diff:.2e}")
    if not np.allclose(p_ort, p_test, rtol=1e-4, atol=1e-5):
        sys.exit("onnxruntime disagrees with the numpy forward pass")
    if test_acc < 0.95:
        sys.exit(f"test accuracy {test_acc:.4f} below 0.95")

    # One real, correctly classified test image as a V2 infer request.
    first = next(i for i in range(len(test_idx)) if p_test[i].argmax() == y[test_idx[i]])
    label = int(y[test_idx[first]])
    example = {
        "id": f"digit-{label}",
        "inputs": [{
            "name": "input",
            "shape": [1, 64],
            "datatype": "FP32",
            "data": [float(v) for v in x_test[first]],
        }],
        "outputs": [{"name": "probabilities"}],
    }
    EXAMPLE_PATH.write_text(json.dumps(example) + "\n")
    print(f"wrote {EXAMPLE_PATH.relative_to(ROOT)} (a {label}, test image {int(test_idx[first])})")


if __name__ == "__main__":
    main()
