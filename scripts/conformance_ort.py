#!/usr/bin/env python3
"""onnxruntime on the same ONNX node-suite cases, for comparison with cairn's runner.

    python3 scripts/conformance_ort.py NODE_DIR > target/conformance-ort.md

Same tolerances as onnx (rtol 1e-3, atol 1e-7); a case passes when every test data set
matches.
"""
import collections
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load_pb(path):
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def run_case(case):
    model = onnx.load(os.path.join(case, "model.onnx"))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    for data in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
        feeds = {}
        for i, name in enumerate(inputs):
            path = os.path.join(data, f"input_{i}.pb")
            if not os.path.exists(path):
                return False
            feeds[name] = load_pb(path)
        got = session.run(None, feeds)
        for i, value in enumerate(got):
            want = load_pb(os.path.join(data, f"output_{i}.pb"))
            if not np.allclose(np.asarray(value, dtype=np.float64) if value.dtype != object else value,
                               np.asarray(want, dtype=np.float64) if want.dtype != object else want,
                               rtol=1e-3, atol=1e-7, equal_nan=True):
                return False
    return True


def main():
    root = sys.argv[1]
    by_op = collections.defaultdict(lambda: [0, 0])
    for case in sorted(glob.glob(os.path.join(root, "test_*"))):
        try:
            model = onnx.load(os.path.join(case, "model.onnx"))
        except Exception:
            continue
        nodes = [n for n in model.graph.node if n.op_type != "Constant"] or list(model.graph.node)
        op = nodes[0].op_type if nodes else "?"
        try:
            ok = run_case(case)
        except Exception:
            ok = False
        by_op[op][0 if ok else 1] += 1
    passed = sum(v[0] for v in by_op.values())
    total = sum(v[0] + v[1] for v in by_op.values())
    print("| operator | onnxruntime passed | onnxruntime failed |\n|---|---|---|")
    for op in sorted(by_op):
        print(f"| {op} | {by_op[op][0]} | {by_op[op][1]} |")
    print(f"\nonnxruntime {ort.__version__}: {passed} of {total} cases pass.")


if __name__ == "__main__":
    main()
