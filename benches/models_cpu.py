#!/usr/bin/env python3
"""cairn against onnxruntime on the CPU, per model, in one run: p50 latency at batch 1 with
one thread and with every core (onnxruntime's default threading), as a markdown table.

    python3 benches/models_cpu.py [--cairn target/release/cairn] [--iterations 40]
                                  [--rounds 6] MODEL.onnx|DIR...

cairn runs `cairn model bench --device cpu --threads 1|0`; onnxruntime runs the same
inputs (floats in [-0.5, 0.5), integers small and non-negative) through IOBinding. The
two alternate in short rounds and the ratio is the median of the rounds' ratios: on a
machine whose speed drifts (a shared VM), each pair sees the same conditions.
"""
import argparse, os, re, subprocess, time
import numpy as np
import onnx
import onnxruntime as ort

TYPES = {1: np.float32, 7: np.int64, 6: np.int32, 9: np.bool_, 10: np.float16}


def given_shapes(path):
    """Input shapes from the .npz beside the model (`in:<name>`), where there is one: a
    model whose image size is dynamic needs a real one (both sides get it; cairn as
    `--shape`)."""
    npz = path[:-5] + ".npz"
    if not os.path.exists(npz):
        return {}
    with np.load(npz) as d:
        return {k[3:]: d[k].shape for k in d.files if k.startswith("in:")}


def inputs_for(path, batch):
    m = onnx.load(path, load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    given = given_shapes(path)
    feeds = {}
    for i in m.graph.input:
        if i.name in init:
            continue
        t = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in t.shape.dim]
        if i.name in given and len(given[i.name]) == len(shape):
            shape = [batch] + list(given[i.name][1:])
        n = int(np.prod(shape))
        dtype = TYPES.get(t.elem_type, np.float32)
        if np.issubdtype(dtype, np.floating):
            v = ((np.arange(n) % 97) / 97.0 - 0.5).astype(dtype)
        else:
            v = (np.arange(n) % 7).astype(dtype)
        feeds[i.name] = v.reshape(shape)
    return feeds


def ort_p50(path, feeds, threads, iterations):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    if threads == 1:
        o.inter_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    b = s.io_binding()
    for k, v in feeds.items():
        b.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v))
    for out in s.get_outputs():
        b.bind_output(out.name)
    for _ in range(5):
        s.run_with_iobinding(b)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        s.run_with_iobinding(b)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def cairn_p50(cairn, path, threads, iterations):
    shapes = [f"--shape={n}=" + "x".join(str(d) for d in (1,) + tuple(s[1:]))
              for n, s in given_shapes(path).items()]
    r = subprocess.run([cairn, "model", "bench", path, "--device", "cpu", "--batch", "1",
                        "--iterations", str(iterations), "--threads", str(threads)] + shapes,
                       capture_output=True, text=True)
    m = re.search(r"p50 ([\d.]+) µs", r.stdout + r.stderr)
    return float(m.group(1)) / 1e3 if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default="target/release/cairn")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    models = []
    for p in a.paths:
        models += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".onnx")) if os.path.isdir(p) else [p]
    cores = os.cpu_count()
    print(f"| model (batch 1, p50 ms) | cairn 1 thread | onnxruntime 1 thread | ratio | cairn {cores} cores | onnxruntime default ({cores} cores) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for path in models:
        feeds = inputs_for(path, 1)
        row = [os.path.basename(path)[:-5]]
        for threads in (1, 0):
            pairs = []
            for _ in range(a.rounds):
                o = ort_p50(path, feeds, threads, a.iterations)
                c = cairn_p50(a.cairn, path, threads, a.iterations)
                if c:
                    pairs.append((c, o))
            if not pairs:
                row += ["failed", "—", "—"]
                continue
            median = lambda xs: sorted(xs)[len(xs) // 2]
            c, o = median([p[0] for p in pairs]), median([p[1] for p in pairs])
            ratio = median([p[0] / p[1] for p in pairs])
            row += [f"{c:.2f}", f"{o:.2f}", f"{ratio:.2f}×"]
        print("| " + " | ".join(row) + " |", flush=True)


main()
