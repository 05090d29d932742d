#!/usr/bin/env python3
"""Runs exporter-made models through `cairn model run` and compares with the reference.

Each MODEL.onnx beside a MODEL.npz (inputs as `in:<name>`, onnxruntime's outputs as
`out:<name>`, the layout of ../shared/models) is run at batch 1 on the given device and,
where the batch axis is dynamic, at batch 4 (the reference for batch 4 computed by
onnxruntime on the repeated input). Prints one line per model and run; exits 1 if any
output differs beyond rtol 1e-3, atol 1e-4 (atol scaled by the output's largest value when
that is below 1, so tiny outputs are still checked). A model whose reference outputs are
constant is also checked on the features its last node reads (computed by onnxruntime).

With `--precision f16` (a GPU computing in f16) the bound is what f16 can hold: every
output within 3e-2 of its largest magnitude, and each line reports the largest error
relative to that magnitude and, for class scores, whether the top-1 class agrees. A model
whose outputs all sit below f16's smallest normal number (MobileNetV3's random-weight
export: ~1e-9) is reported as skipped: f16 cannot hold them.

    scripts/check_models.py [--cairn target/debug/cairn] [--device cpu] [--precision f32]
                            DIR_OR_FILES...
"""
import argparse, os, subprocess, sys, tempfile, time
import numpy as np

# f16's smallest normal number: outputs below it cannot be told apart in f16.
F16_NORMAL = 6.1e-5


def with_features(model, tmp):
    """A model whose reference outputs are all constant checks nothing (torchvision's ViT
    zero-initializes its head, so its random-weight export outputs zeros). Returns a copy
    that also outputs the features its last node reads (the head's input), or None."""
    import onnx
    m = onnx.load(model)
    inits = {i.name for i in m.graph.initializer}
    extra = []
    for out in m.graph.output:
        prod = [n for n in m.graph.node if out.name in n.output]
        feats = [i for i in prod[0].input if i and i not in inits] if prod else []
        extra += [f for f in feats[:1] if f not in extra]
    if not extra:
        return None
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    for f in extra:
        m.graph.output.append(inferred.get(f) or onnx.helper.make_tensor_value_info(
            f, onnx.TensorProto.FLOAT, None))
    path = os.path.join(tmp, "with_features.onnx")
    onnx.save(m, path)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", default="target/debug/cairn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16"])
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
                run_model = model
                # Constant outputs check nothing: check the features under them too.
                if all(np.ptp(v) == 0 for v in outs.values()):
                    try:
                        import onnxruntime as ort
                        run_model = with_features(model, tmp) or model
                        if run_model != model:
                            sess = ort.InferenceSession(run_model,
                                                        providers=["CPUExecutionProvider"])
                            names = [o.name for o in sess.get_outputs()]
                            outs = dict(zip(names, sess.run(None, ins)))
                    except ImportError:
                        pass
                cmd = [args.cairn, "model", "run", run_model, "--device", args.device,
                       "--precision", args.precision, "--output-dir", tmp]
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
                tiny = [k for k, v in outs.items() if v.size and 0 < np.abs(v).max() < F16_NORMAL]
                if args.precision == "f16" and tiny:
                    peak = max(float(np.abs(outs[k]).max()) for k in tiny)
                    print(f"{name} b{batch} {args.device} f16: skipped (its outputs, up to "
                          f"{peak:.1e}, are below f16's range: this export needs f32)")
                    continue
                for k, want in outs.items():
                    # `cairn model run` writes each output under its name with
                    # characters other than letters, digits and `-_.` as `_`
                    # (`gpu_0/softmax_1` → `gpu_0_softmax_1.npy`).
                    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in k)
                    got = np.load(os.path.join(tmp, safe + ".npy"))
                    if got.shape != want.shape and got.size == want.size:
                        got = got.reshape(want.shape)
                    if got.shape != want.shape:
                        ok = False
                        worst.append(f"{k}: shape {got.shape} != {want.shape}")
                        continue
                    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    # rtol 1e-3, atol 1e-4 — scaled down for outputs that are all tiny
                    # (MobileNetV3's random-weight logits are ~1e-9, under any atol).
                    scale = min(1.0, float(np.abs(want).max())) if want.size else 1.0
                    tol = 1e-4 * scale + 1e-3 * np.abs(want.astype(np.float64))
                    peak = float(np.abs(want).max()) if want.size else 0.0
                    if args.precision == "f16":
                        tol = 3e-2 * peak
                    if not np.all(diff <= tol):
                        ok = False
                    line = f"{k}: max abs diff {diff.max() if diff.size else 0:.2e}"
                    if args.precision == "f16" and want.size:
                        line += f", {diff.max() / max(peak, 1e-30):.2e} of max |ref|"
                        if want.ndim == 2 and want.shape[1] > 1:
                            agree = np.mean(got.argmax(1) == want.argmax(1))
                            line += f", top-1 agrees {agree:.0%}"
                    worst.append(line)
                failed += 0 if ok else 1
                print(f"{name} b{batch} {args.device} {args.precision}: {'ok' if ok else 'MISMATCH'} "
                      f"({'; '.join(worst)}; {took:.2f} s)")
    sys.exit(1 if failed else 0)

main()
