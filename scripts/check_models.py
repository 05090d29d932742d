#!/usr/bin/env python3
"""Runs exporter-made models through `cairn model run` and compares with the reference.

Each MODEL.onnx beside a MODEL.npz (inputs as `in:<name>`, onnxruntime's outputs as
`out:<name>`, the layout of ../shared/models) is run at batch 1 on the given device and,
where the batch axis is dynamic, at batch 4 (the reference for batch 4 computed by
onnxruntime on the repeated input). Prints one line per model and run; exits 1 if any
output differs beyond rtol 1e-3, atol 1e-4.

    scripts/check_models.py [--cairn target/debug/cairn] [--device cpu] DIR_OR_FILES...
"""
import argparse, os, subprocess, sys, tempfile, time
import numpy as np

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default="target/debug/cairn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    models = []
    for p in args.paths:
        if os.path.isdir(p):
            models += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".onnx"))
        else:
            models.append(p)
    failed = 0
    for model in models:
        ref = np.load(model[:-5] + ".npz")
        inputs = {k[3:]: ref[k] for k in ref.files if k.startswith("in:")}
        outputs = {k[4:]: ref[k] for k in ref.files if k.startswith("out:")}
        for batch in [int(b) for b in args.batches.split(",")]:
            name = os.path.basename(model)
            if batch != 1:
                try:
                    import onnx, onnxruntime as ort
                    m = onnx.load(model)
                    dims = m.graph.input[0].type.tensor_type.shape.dim
                    if dims and dims[0].HasField("dim_value"):
                        print(f"{name} b{batch}: skipped (batch fixed at {dims[0].dim_value})")
                        continue
                    ins = {k: np.concatenate([v] * batch) for k, v in inputs.items()}
                    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
                    names = [o.name for o in sess.get_outputs()]
                    try:
                        outs = dict(zip(names, sess.run(None, ins)))
                    except Exception as e:  # the export fixed the batch inside the graph
                        print(f"{name} b{batch}: skipped (onnxruntime cannot run it: "
                              f"{str(e).splitlines()[0][:120]})")
                        continue
                except ImportError:
                    print(f"{name} b{batch}: skipped (no onnxruntime)")
                    continue
            else:
                ins, outs = inputs, outputs
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [args.cairn, "model", "run", model, "--device", args.device,
                       "--output-dir", tmp]
                for k, v in ins.items():
                    path = os.path.join(tmp, f"in_{len(cmd)}.npy")
                    np.save(path, v)
                    cmd += ["--input", f"{k}={path}"]
                t = time.time()
                r = subprocess.run(cmd, capture_output=True, text=True)
                took = time.time() - t
                if r.returncode != 0:
                    failed += 1
                    print(f"{name} b{batch}: FAILED to run: {r.stderr.strip()[-600:]}")
                    continue
                worst = []
                ok = True
                for k, want in outs.items():
                    got = np.load(os.path.join(tmp, k + ".npy"))
                    if got.shape != want.shape and got.size == want.size:
                        got = got.reshape(want.shape)
                    if got.shape != want.shape:
                        ok = False
                        worst.append(f"{k}: shape {got.shape} != {want.shape}")
                        continue
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    tol = 1e-4 + 1e-3 * np.abs(want.astype(np.float64))
                    if not np.all(diff <= tol):
                        ok = False
                    worst.append(f"{k}: max abs diff {diff.max() if diff.size else 0:.2e}")
                failed += 0 if ok else 1
                print(f"{name} b{batch} {args.device}: {'ok' if ok else 'MISMATCH'} "
                      f"({'; '.join(worst)}; {took:.2f} s)")
    sys.exit(1 if failed else 0)

main()
