#!/usr/bin/env python3
"""onnxruntime on the engine's fixture models, through IOBinding so Python overhead is not
counted: µs per inference at batch 1 and 32, one thread (like `cargo bench --bench engine`
with RAYON_NUM_THREADS=1).

    pip install onnxruntime numpy
    python3 scripts/bench_ort.py
    python3 scripts/bench_ort.py MODEL.onnx BATCH   # any model, inputs of zeros+ramp
"""
import sys
import os
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")


def bench(model, input_name, batch, seconds=2.0):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(HERE, f"{model}.onnx"), options, providers=["CPUExecutionProvider"])
    x = np.load(os.path.join(HERE, f"{model}_b{batch}_{input_name}.npy"))
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_output(session.get_outputs()[0].name)
    for _ in range(50):
        session.run_with_iobinding(binding)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            session.run_with_iobinding(binding)
        runs += 100
    return (time.perf_counter() - start) / runs * 1e6


def bench_file(path, batch, seconds=5.0):
    """µs per inference of any single-input float model at `batch` (dynamic or fixed)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [batch if i == 0 else d for i, d in enumerate(spec.shape)]
    x = (np.arange(np.prod(shape)) / np.prod(shape)).astype(np.float32).reshape(shape)
    binding = session.io_binding()
    binding.bind_ortvalue_input(spec.name, ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_output(session.get_outputs()[0].name)
    session.run_with_iobinding(binding)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run_with_iobinding(binding)
        runs += 1
    return (time.perf_counter() - start) / runs * 1e6


def main():
    if len(sys.argv) == 3:
        path, batch = sys.argv[1], int(sys.argv[2])
        print(f"onnxruntime {ort.__version__}, 1 thread, IOBinding: {os.path.basename(path)} b{batch}: "
              f"{bench_file(path, batch):.1f} µs")
        return
    print(f"onnxruntime {ort.__version__}, 1 thread, IOBinding")
    for model, input_name in (("mlp", "input"), ("cnn", "image")):
        for batch in (1, 32):
            print(f"{model} b{batch}: {bench(model, input_name, batch):.1f} µs")


if __name__ == "__main__":
    main()
