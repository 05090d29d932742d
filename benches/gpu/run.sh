#!/bin/bash
# cairn's GPU path on a lent NVIDIA machine against PyTorch CUDA on the same GPU, in one
# device call, run from the repo root there (benches/gpu/README.md has the recipe).
# Carried into the repo root (ignored by git, named in the call's carry list):
#   .gl/                      the Vulkan loader .debs
#   gpu-kit/cairn.xz          the build to measure (release, --features gpu; stripped, xz)
#   gpu-kit/cairn-before.xz   optional: the build to compare with, measured in the same run
#   gpu-kit/models/           optional: MODEL.onnx + MODEL.npz pairs to check on the GPU
# Writes to $OUT: bench.json/txt and micro.json/txt (after), before/ (the same, cairn only),
# profile_b1.txt and profile_b32.txt (ResNet-50 per operator), models.txt (f32, then f16).
#   bash benches/gpu/run.sh [STEP...]   steps: before bench micro profile models (default: all)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=" ${*:-before bench micro profile models} "; want() { [[ "$STEPS" == *" $1 "* ]]; }
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1 RESNET_ONNX=/tmp/resnet50_dyn.onnx
unpack() { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$1" "$2" && chmod +x "$2"; }
unpack gpu-kit/cairn.xz /tmp/cairn
[ -f gpu-kit/cairn-before.xz ] && unpack gpu-kit/cairn-before.xz /tmp/cairn-before
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
vulkaninfo --summary >/dev/null 2>&1 || export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/info.txt"
vulkaninfo --summary 2>&1 | grep -E "deviceName|driverInfo|apiVersion" | tee -a "$OUT/info.txt"
if want before && [ -x /tmp/cairn-before ]; then
    mkdir -p "$OUT/before"
    CAIRN_BIN=/tmp/cairn-before CAIRN_ONLY=1 timeout 150 python3 "$HERE/bench.py" "$OUT/before" 2>&1 | tee "$OUT/before/bench.txt"
    CAIRN_BIN=/tmp/cairn-before CAIRN_ONLY=1 timeout 90 python3 "$HERE/micro.py" "$OUT/before" 2>&1 | tee "$OUT/before/micro.txt"
fi
want bench && CAIRN_BIN=/tmp/cairn timeout 330 python3 "$HERE/bench.py" "$OUT" 2>&1 | tee "$OUT/bench.txt"
want micro && CAIRN_BIN=/tmp/cairn timeout 120 python3 "$HERE/micro.py" "$OUT" 2>&1 | tee "$OUT/micro.txt"
if want profile; then
    [ -f "$RESNET_ONNX" ] || CAIRN_ONLY=1 CAIRN_BIN=/bin/true timeout 60 python3 "$HERE/bench.py" /tmp >/dev/null 2>&1
    for b in 1 32; do
        timeout 60 /tmp/cairn model profile "$RESNET_ONNX" --device gpu --batch $b --iterations 3 --top 15 >"$OUT/profile_b$b.txt" 2>&1
    done
fi
if want models && [ -d gpu-kit/models ]; then
    timeout 150 python3 scripts/check_models.py --cairn /tmp/cairn --device gpu gpu-kit/models 2>&1 | grep -v '^\[' | tee "$OUT/models.txt"
    timeout 150 python3 scripts/check_models.py --cairn /tmp/cairn --device gpu --precision f16 gpu-kit/models 2>&1 | grep -v '^\[' | tee -a "$OUT/models.txt"
fi
