"""Exports torchvision models the way users do (torch.onnx.export, TorchScript exporter,
opset 17, dynamic batch, random weights with a fixed seed), each with its input and
onnxruntime's output in a .npz beside it, as ../shared/models holds them; then

    python3 scripts/check_models.py --cairn target/release/cairn --device cpu OUT_DIR

checks cairn against onnxruntime on every one at batch 1 and 4. Needs torch and
torchvision (not installed by scripts/test: gigabytes). Usage:

    python3 scripts/export_torchvision.py OUT_DIR [MODEL ...]
"""
import os, sys
import numpy as np, onnxruntime as ort, torch, torchvision
torch.manual_seed(0)
tv = torchvision.models
def seg(m):
    class W(torch.nn.Module):
        def __init__(s): super().__init__(); s.m = m
        def forward(s, x): return s.m(x)["out"]
    return W()
specs = {
 "resnet18": (lambda: tv.resnet18(), (1,3,224,224)),
 "efficientnet_b0": (lambda: tv.efficientnet_b0(), (1,3,224,224)),
 "mobilenet_v2": (lambda: tv.mobilenet_v2(), (1,3,224,224)),
 "squeezenet1_1": (lambda: tv.squeezenet1_1(), (1,3,224,224)),
 "densenet121": (lambda: tv.densenet121(), (1,3,224,224)),
 "regnet_y_400mf": (lambda: tv.regnet_y_400mf(), (1,3,224,224)),
 "convnext_tiny": (lambda: tv.convnext_tiny(), (1,3,224,224)),
 "mnasnet0_5": (lambda: tv.mnasnet0_5(), (1,3,224,224)),
 "googlenet": (lambda: tv.googlenet(aux_logits=False, init_weights=True), (1,3,224,224)),
 "swin_t": (lambda: tv.swin_t(), (1,3,224,224)),
 "lraspp": (lambda: seg(tv.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)), (1,3,256,256)),
 "deeplabv3_mbv3": (lambda: seg(tv.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False)), (1,3,256,256)),
 "fcn_resnet50": (lambda: seg(tv.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False)), (1,3,224,224)),
 "r3d_18": (lambda: tv.video.r3d_18(), (1,3,8,112,112)),
 "shufflenet_v2_x1_0": (lambda: tv.shufflenet_v2_x1_0(), (1,3,224,224)),
 "vgg11_bn": (lambda: tv.vgg11_bn(), (1,3,224,224)),
 "inception_v3": (lambda: tv.inception_v3(aux_logits=False, init_weights=True), (1,3,299,299)),
 "maxvit_t": (lambda: tv.maxvit_t(), (1,3,224,224)),
}
out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
names = sys.argv[2:] or list(specs)
for name in names:
    try:
        mk, shape = specs[name]
        m = mk().eval()
        x = torch.randn(*shape)
        path = f"{out_dir}/{name}.onnx"
        torch.onnx.export(m, (x,), path, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=17)
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out = s.run(None, {"input": x.numpy()})[0]
        m.eval()  # the exporter restores a wrapper's training mode
        with torch.no_grad(): ref = m(x).numpy()
        np.savez(f"{out_dir}/{name}.npz", **{"in:input": x.numpy(), "out:output": out})
        print(name, "exported; ort vs torch", float(np.abs(out - ref).max()), flush=True)
    except Exception as e:
        print(name, "FAILED", repr(e)[:300], flush=True)
