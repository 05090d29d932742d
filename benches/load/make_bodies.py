#!/usr/bin/env python3
"""Write the wrk request bodies for benches/load/run.sh (deterministic: same bytes every run).

    python3 benches/load/make_bodies.py

body_b1.json, body_b32.json: KServe V2 JSON infer requests for the digits demo model
(input "input", FP32 [n, 64], pixel values 0..16). body_b32.bin: the same 32 images in
Triton's binary tensor data extension: a JSON header, then 32*64 little-endian f32
(8192 bytes); send it with `Inference-Header-Content-Length: <JSON header length>` and
`Content-Type: application/octet-stream` (binary.lua does).
"""

import json
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SEED = 42


def images(n, rng):
    return rng.integers(0, 17, size=(n, 64)).astype(np.float32)


def json_body(x):
    return json.dumps({
        "inputs": [{
            "name": "input",
            "shape": list(x.shape),
            "datatype": "FP32",
            "data": [float(v) for v in x.ravel()],
        }],
    })


def binary_body(x):
    raw = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{
            "name": "input",
            "shape": list(x.shape),
            "datatype": "FP32",
            "parameters": {"binary_data_size": len(raw)},
        }],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    return header, raw


def main():
    rng = np.random.default_rng(SEED)
    x32 = images(32, rng)
    (HERE / "body_b1.json").write_text(json_body(x32[:1]))
    (HERE / "body_b32.json").write_text(json_body(x32))
    header, raw = binary_body(x32)
    (HERE / "body_b32.bin").write_bytes(header + raw)
    print(f"body_b32.bin: JSON header {len(header)} bytes "
          f"(Inference-Header-Content-Length), then {len(raw)} bytes of f32")


if __name__ == "__main__":
    main()
