#!/usr/bin/env python3
"""End-to-end test of cairn's KServe V2 API with NVIDIA's official Triton HTTP client.

Needs a running cairn with the demo model deployed (tests/triton/run.sh starts one):

    CAIRN_URL=127.0.0.1:8080 CAIRN_KEY=cairn_... python3 tests/triton/test_triton_client.py

CAIRN_URL is host:port without a scheme; CAIRN_KEY an API key with scope `infer`;
CAIRN_MODEL (default "digits") and CAIRN_MODEL_FILE (default assets/models/digits.onnx)
name the deployed model and the same ONNX file, which onnxruntime runs as the reference.
Exits non-zero on the first failed check.
"""

import json
import os
import pathlib
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
URL = os.environ.get("CAIRN_URL", "127.0.0.1:8080")
KEY = os.environ.get("CAIRN_KEY", "")
MODEL = os.environ.get("CAIRN_MODEL", "digits")
MODEL_FILE = pathlib.Path(os.environ.get("CAIRN_MODEL_FILE", ROOT / "assets/models/digits.onnx"))
EXAMPLE = ROOT / "assets/models/digits-example.json"


def auth():
    # A fresh dict on every call: tritonclient's infer() adds Inference-Header-Content-Length
    # to the dict it is given, which must not leak into the next request.
    return {"Authorization": f"Bearer {KEY}"}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def stats_success(client):
    stats = client.get_inference_statistics(MODEL, headers=auth())
    entries = [m for m in stats.get("model_stats", []) if m.get("name") == MODEL]
    check(entries, f"no model_stats entry for {MODEL}: {stats}")
    return sum(int(m["inference_stats"]["success"]["count"]) for m in entries)


def expect_error(what, call):
    try:
        call()
    except InferenceServerException as e:
        print(f"  {what}: rejected ({e.status()}: {e.message()})")
        return e
    raise AssertionError(f"{what}: expected InferenceServerException, got success")


def infer(client, x, binary, model_version="", request_id="", compression=None):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer(MODEL, [inp], model_version=model_version, outputs=[out],
                          request_id=request_id, headers=auth(),
                          request_compression_algorithm=compression)
    response = result.get_response()
    check(response.get("model_name") == MODEL, f"model_name in {response}")
    if request_id:
        check(response.get("id") == request_id, f"id {response.get('id')!r} != {request_id!r}")
    (meta,) = [o for o in response["outputs"] if o["name"] == "probabilities"]
    check(meta["datatype"] == "FP32", f"output datatype {meta['datatype']}")
    check(list(meta["shape"]) == [x.shape[0], 10], f"output shape {meta['shape']}")
    if binary:
        check("binary_data_size" in meta.get("parameters", {}),
              f"binary output requested but the response has data inline: {meta}")
    else:
        check("data" in meta, f"JSON output requested but no data: {meta}")
    y = result.as_numpy("probabilities")
    check(y is not None, "no probabilities in the result")
    return y


def main():
    check(KEY, "set CAIRN_KEY")
    reference = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    client = httpclient.InferenceServerClient(url=URL, connection_timeout=10.0, network_timeout=30.0)

    check(client.is_server_live(headers=auth()), "server not live")
    check(client.is_server_ready(headers=auth()), "server not ready")
    check(client.is_model_ready(MODEL, headers=auth()), f"model {MODEL} not ready")
    print("live, ready, model ready")

    meta = client.get_model_metadata(MODEL, headers=auth())
    check(meta["name"] == MODEL, f"metadata name {meta}")
    check(meta.get("versions"), f"metadata has no versions: {meta}")
    version = str(meta["versions"][-1])
    (inp,) = meta["inputs"]
    (outp,) = meta["outputs"]
    check(inp["name"] == "input" and inp["datatype"] == "FP32" and list(inp["shape"]) == [-1, 64],
          f"input metadata {inp}")
    check(outp["name"] == "probabilities" and outp["datatype"] == "FP32"
          and list(outp["shape"]) == [-1, 10], f"output metadata {outp}")
    vmeta = client.get_model_metadata(MODEL, model_version=version, headers=auth())
    check(vmeta["inputs"] == meta["inputs"] and vmeta["outputs"] == meta["outputs"],
          f"versioned metadata differs: {vmeta}")
    print(f"metadata ok (versions {meta['versions']})")

    before = stats_success(client)

    rng = np.random.default_rng(7)
    successes = 0
    for batch in (1, 7):
        x = rng.integers(0, 17, size=(batch, 64)).astype(np.float32)
        (want,) = reference.run(["probabilities"], {"input": x})
        for binary in (False, True):
            got = infer(client, x, binary, request_id=f"b{batch}-{'bin' if binary else 'json'}")
            successes += 1
            check(got.shape == (batch, 10) and got.dtype == np.float32, f"got {got.dtype} {got.shape}")
            check(np.allclose(got, want, rtol=1e-4, atol=1e-5),
                  f"batch {batch} binary={binary}: max abs diff {np.abs(got - want).max()}")
            print(f"  infer batch {batch} {'binary' if binary else 'JSON'}: matches onnxruntime "
                  f"(max abs diff {np.abs(got - want).max():.1e})")

    # Compressed requests (the whole body, binary tensors included), as the client sends them.
    x = rng.integers(0, 17, size=(3, 64)).astype(np.float32)
    (want,) = reference.run(["probabilities"], {"input": x})
    for compression in ("gzip", "deflate"):
        for binary in (False, True):
            got = infer(client, x, binary, compression=compression)
            successes += 1
            check(np.allclose(got, want, rtol=1e-4, atol=1e-5),
                  f"{compression} binary={binary}: max abs diff {np.abs(got - want).max()}")
        print(f"  infer with a {compression} request body: matches onnxruntime")

    # Server metadata names the extensions the client can rely on; statistics count rows.
    server = client.get_server_metadata(headers=auth())
    check("binary_tensor_data" in server.get("extensions", []), f"extensions {server}")
    stats = client.get_inference_statistics(MODEL, headers=auth())["model_stats"][0]
    rows = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in stats["batch_stats"])
    check(rows == int(stats["inference_count"]), f"batch_stats rows {rows} != inference_count in {stats}")

    # The versioned route, and the committed example request (a real test image).
    example = json.loads(EXAMPLE.read_text())
    x = np.array(example["inputs"][0]["data"], dtype=np.float32).reshape(example["inputs"][0]["shape"])
    got = infer(client, x, True, model_version=version)
    successes += 1
    label = int(example["id"].split("-")[1])
    check(int(got.argmax(axis=1)[0]) == label, f"example {example['id']} classified as {got.argmax(axis=1)}")
    print(f"  infer version {version}: example image classified as {label}")

    # Errors: a wrong shape, an unknown model, no key.
    for binary in (False, True):
        bad = httpclient.InferInput("input", [1, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 63), np.float32), binary_data=binary)
        expect_error(f"wrong shape ({'binary' if binary else 'JSON'})",
                     lambda: client.infer(MODEL, [bad], headers=auth()))
    expect_error("unknown model metadata",
                 lambda: client.get_model_metadata("no-such-model", headers=auth()))
    good = httpclient.InferInput("input", [1, 64], "FP32")
    good.set_data_from_numpy(np.zeros((1, 64), np.float32), binary_data=False)
    expect_error("unknown model infer", lambda: client.infer("no-such-model", [good], headers=auth()))
    check(not client.is_model_ready("no-such-model", headers=auth()), "unknown model reported ready")
    expect_error("infer without a key", lambda: client.infer(MODEL, [good]))

    after = stats_success(client)
    check(after > before, f"success count did not increase: {before} -> {after}")
    print(f"statistics: success count {before} -> {after} ({successes} successful requests sent)")

    client.close()
    print("triton client e2e: OK")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, InferenceServerException, KeyError, ValueError) as e:
        print(f"triton client e2e: FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
