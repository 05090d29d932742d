"""Exports Ultralytics YOLO models as their users do (`model.export(format="onnx",
dynamic=True, opset=17)` at 320×320), built from the package's yaml configs (random
weights, no download), each with its input and onnxruntime's outputs in a .npz beside
it; then

    python3 scripts/check_models.py --cairn target/release/cairn --device cpu OUT_DIR

checks cairn against onnxruntime at batch 1 and 4. Needs torch and ultralytics (8.3; not
installed by scripts/test). Usage:

    YOLO_OFFLINE=1 python3 scripts/export_ultralytics.py OUT_DIR [CONFIG.yaml ...]
"""
import os, shutil, sys
import numpy as np, onnxruntime as ort, torch
from ultralytics import YOLO

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
configs = sys.argv[2:] or ["yolov8n.yaml", "yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolo11n.yaml"]
torch.manual_seed(0)
for cfg in configs:
    name = cfg.replace(".yaml", "")
    try:
        exported = YOLO(cfg).export(format="onnx", imgsz=320, dynamic=True, simplify=False, opset=17)
        path = os.path.join(out_dir, f"{name}.onnx")
        if os.path.abspath(exported) != os.path.abspath(path):
            shutil.move(exported, path)
        x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = s.run(None, {s.get_inputs()[0].name: x})
        np.savez(os.path.join(out_dir, f"{name}.npz"),
                 **{f"in:{s.get_inputs()[0].name}": x},
                 **{f"out:{o.name}": v for o, v in zip(s.get_outputs(), outs)})
        print(name, "exported", [v.shape for v in outs], flush=True)
    except Exception as e:
        print(name, "FAILED", repr(e)[:300], flush=True)
