"""GPU anchors in one run on the lent machine: cairn (wgpu on Vulkan, and CPU) against PyTorch
CUDA and onnxruntime on a ResNet-50, batch 1 / 32 / 256.
cairn runs the onnx wheel's light_resnet50 (Caffe2 ResNet-50 v1) made batch-dynamic;
PyTorch runs torchvision's resnet50 (v1.5, same 4.1 GFLOP class), random weights, fp32.
Usage: bench.py OUTDIR   (CAIRN_BIN names the cairn binary)"""
import json, os, re, subprocess, sys, tempfile, time
import numpy as np, onnx
from onnx import numpy_helper

BIN = os.environ["CAIRN_BIN"]
OUT = sys.argv[1]
res = {}


def log(*a):
    print(*a, flush=True)


# 1. batch-dynamic ResNet-50 from the wheel's light model
light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
m = onnx.load(os.path.join(light, "light_resnet50.onnx"))
g = m.graph
g.input[0].type.tensor_type.shape.dim[0].ClearField("dim_value")
g.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
g.output[0].type.tensor_type.shape.dim[0].ClearField("dim_value")
g.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
for i, t in enumerate(g.initializer):
    if t.name == "OC2_DUMMY_1":
        g.initializer[i].CopyFrom(numpy_helper.from_array(np.array([-1, 2048], np.int64), t.name))
del g.value_info[:]
dyn = os.environ.get("RESNET_ONNX") or os.path.join(tempfile.mkdtemp(), "resnet50_dyn.onnx")
onnx.save(m, dyn)


def cairn_bench(device, batch, iters, precision=None):
    t0 = time.time()
    extra = ["--precision", precision] if precision else []
    r = subprocess.run([BIN, "model", "bench", dyn, "--device", device, "--batch", str(batch),
                        "--iterations", str(iters)] + extra, capture_output=True, text=True,
                       timeout=400)
    txt = r.stdout + r.stderr
    log(f"--- cairn {device} {precision or ''} b{batch} ({time.time() - t0:.0f}s wall)\n"
        f"{txt.strip()[-900:]}")
    p50 = re.search(r"p50 ([\d.]+) µs", txt)
    thr = re.search(r"throughput: (\d+)", txt)
    return {"p50_ms": float(p50.group(1)) / 1e3 if p50 else None,
            "img_s": int(thr.group(1)) if thr else None, "rc": r.returncode}


# 2. cairn on the GPU first (the point of the run), then CPU
for b, it in ((1, 50), (32, 20), (256, 8)):
    try:
        res[f"cairn_gpu_b{b}"] = cairn_bench("gpu", b, it)
    except Exception as e:  # a timeout must not lose the rest
        res[f"cairn_gpu_b{b}"] = {"error": str(e)}
        log("cairn gpu", b, e)
json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1)

if os.environ.get("CAIRN_ONLY"):  # a second cairn build against the same run's anchors
    log(json.dumps(res, indent=1)); sys.exit(0)
# 2b. the opt-in half precision (weights and activations in f16 on the GPU)
for b, it in ((1, 50), (32, 20), (256, 8)):
    try:
        res[f"cairn_gpu_f16_b{b}"] = cairn_bench("gpu", b, it, "f16")
    except Exception as e:
        res[f"cairn_gpu_f16_b{b}"] = {"error": str(e)}
        log("cairn gpu f16", b, e)
json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1)
# 3. PyTorch CUDA, fp32, default (TF32 convs allowed) and strict fp32
try:
    import torch, torchvision
    dev = torch.device("cuda")
    net = torchvision.models.resnet50().eval().to(dev)
    for mode in ("default", "strict_fp32", "fp16"):
        if mode == "fp16":
            net = net.half()
        torch.backends.cudnn.allow_tf32 = mode == "default"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        for b, it in ((1, 100), (32, 50), (256, 20)):
            x = torch.randn(b, 3, 224, 224, device=dev)
            if mode == "fp16":
                x = x.half()
            with torch.inference_mode():
                for _ in range(10):
                    net(x)
                torch.cuda.synchronize()
                times = []
                for _ in range(it):
                    s = time.perf_counter(); net(x); torch.cuda.synchronize(); times.append(time.perf_counter() - s)
            times.sort()
            p50 = times[len(times) // 2]
            res[f"torch_{mode}_b{b}"] = {"p50_ms": p50 * 1e3, "img_s": int(b / p50)}
            log(f"torch {mode} b{b}: p50 {p50 * 1e3:.2f} ms, {b / p50:.0f} img/s")
except Exception as e:
    log("torch failed:", repr(e))
json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1)

# 4. onnxruntime CPU (all cores) and cairn CPU (one thread per inference) for scale
try:
    import onnxruntime as ort
    log("onnxruntime", ort.__version__, ort.get_available_providers())
    s = ort.InferenceSession(dyn, providers=["CPUExecutionProvider"])
    for b, it in ((1, 30), (32, 5)):
        x = np.random.default_rng(0).standard_normal((b, 3, 224, 224)).astype(np.float32)
        s.run(None, {g.input[0].name: x})
        times = []
        for _ in range(it):
            t = time.perf_counter(); s.run(None, {g.input[0].name: x}); times.append(time.perf_counter() - t)
        times.sort(); p50 = times[len(times) // 2]
        res[f"ort_cpu_b{b}"] = {"p50_ms": p50 * 1e3, "img_s": int(b / p50)}
        log(f"onnxruntime cpu b{b}: p50 {p50 * 1e3:.2f} ms")
except Exception as e:
    log("onnxruntime failed:", repr(e))
for b, it in ((1, 10),):
    try:
        res[f"cairn_cpu_b{b}"] = cairn_bench("cpu", b, it)
    except Exception as e:
        log("cairn cpu", e)
json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1)
log(json.dumps(res, indent=1))
