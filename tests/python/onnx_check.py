"""Checks the ONNX models tests/onnx.rs writes (needs `onnx`, `onnxruntime`
and `numpy`):

    python3 onnx_check.py DIR

DIR holds manifest.json (a list of {"dir", "arch", "opset", "ir_version"}),
input.npy (a [batch, 784] float32 batch of pixels scaled by 1/255) and, per
model, DIR/<dir>/model.onnx, metadata.json and one .npy per weight, named
as PyTorch's nn.Sequential names them ("0.weight", ...; "weight"/"bias" for
softmax regression).

For each model:

* the file parses, and protobuf re-serialises it to the same bytes (the
  writer's encoding is canonical);
* `onnx.checker.check_model(full_check=True)` accepts it, and strict shape
  inference gives the shapes the layers should have;
* IR version, opset, graph inputs and outputs, metadata_props are as
  written (seen by onnx and by onnxruntime);
* onnxruntime's outputs, for the whole batch and for one row, match a
  float64 NumPy forward pass of the weights written beside the model, for
  the architecture named in the manifest (built here, independently of
  the graph): probabilities within 1e-5, logits within 1e-4.

Prints one "ok DIR ..." line per model; exits non-zero at the first failure.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

PROB_ATOL = 1e-5
LOGIT_ATOL = 1e-4


def linear(x, p, name):
    """x @ W.T + b, W [out, in] as PyTorch's Linear."""
    prefix = f"{name}." if name else ""
    return x @ p[prefix + "weight"].T + p[prefix + "bias"]


def relu(x):
    return np.maximum(x, 0.0)


def conv2d(x, p, name, pad):
    """Cross-correlation of NCHW x, stride 1, zero padding `pad`."""
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


def max_pool2(x):
    """2x2 windows, stride 2, an odd last row/column dropped (floor)."""
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def forward(arch, p, x):
    """Logits of architecture `arch` in float64."""
    if arch == "softmax":
        return linear(x, p, "")
    if arch == "mlp":
        return linear(relu(linear(x, p, "0")), p, "2")
    if arch == "cnn":
        h = x.reshape(-1, 1, 28, 28)
        h = max_pool2(relu(conv2d(h, p, "0", 2)))
        h = max_pool2(relu(conv2d(h, p, "3", 2)))
        h = h.reshape(h.shape[0], -1)
        h = relu(linear(h, p, "7"))
        h = relu(linear(h, p, "9"))
        return linear(h, p, "11")
    raise SystemExit(f"unknown architecture {arch!r}")


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# Shapes strict shape inference must give the named intermediate values
# (None: the batch dimension, which a Reshape to -1 leaves unnamed).
EXPECTED_SHAPES = {
    "mlp": {"hidden": ["batch", 32], "hidden_relu": ["batch", 32]},
    "cnn": {
        "image": [None, 1, 28, 28],
        "conv1": [None, 6, 28, 28],
        "pool1": [None, 6, 14, 14],
        "conv2": [None, 16, 14, 14],
        "pool2": [None, 16, 7, 7],
        "features": [None, 784],
        "fc1": [None, 120],
        "fc2_relu": [None, 84],
    },
}


def dims(value_info):
    """A value's shape: dim_param names, dim_value sizes, "?" if neither."""
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_param"):
            out.append(d.dim_param)
        elif d.HasField("dim_value"):
            out.append(d.dim_value)
        else:
            out.append("?")
    return out


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_model(root, entry, x):
    name = entry["dir"]
    d = root / name
    raw = (d / "model.onnx").read_bytes()
    model = onnx.load_from_string(raw)
    check(model.SerializeToString() == raw, f"{name}: protobuf re-serialises to other bytes")
    onnx.checker.check_model(model, full_check=True)

    check(model.ir_version == entry["ir_version"], f"{name}: ir_version {model.ir_version}")
    opsets = [(o.domain, o.version) for o in model.opset_import]
    check(opsets == [("", entry["opset"])], f"{name}: opset_import {opsets}")
    check(model.producer_name == "idx-softmax", f"{name}: producer {model.producer_name!r}")

    g = model.graph
    io = [(v.name, dims(v)) for v in g.input], [(v.name, dims(v)) for v in g.output]
    expected_io = (
        [("input", ["batch", 784])],
        [("probabilities", ["batch", 10]), ("logits", ["batch", 10])],
    )
    check(io == expected_io, f"{name}: graph inputs/outputs {io}")

    meta = json.loads((d / "metadata.json").read_text())
    props = {p.key: p.value for p in model.metadata_props}
    check(props == meta, f"{name}: metadata_props {props}")
    check(len(json.loads(props["class_names"])) == 10, f"{name}: class_names")

    inferred = onnx.shape_inference.infer_shapes(
        model, check_type=True, strict_mode=True, data_prop=True
    )
    shapes = {v.name: dims(v) for v in inferred.graph.value_info}
    for value, want in EXPECTED_SHAPES.get(entry["arch"], {}).items():
        got = shapes.get(value)
        check(got is not None, f"{name}: no inferred shape for {value}")
        check(
            all(w is None or w == g_ for w, g_ in zip(want, got)) and len(want) == len(got),
            f"{name}: inferred shape of {value} is {got}, expected {want}",
        )

    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    check(
        [i.name for i in session.get_inputs()] == ["input"]
        and session.get_inputs()[0].shape == ["batch", 784],
        f"{name}: onnxruntime inputs {session.get_inputs()}",
    )
    check(
        [o.name for o in session.get_outputs()] == ["probabilities", "logits"],
        f"{name}: onnxruntime outputs",
    )
    check(
        session.get_modelmeta().custom_metadata_map == meta,
        f"{name}: onnxruntime metadata {session.get_modelmeta().custom_metadata_map}",
    )

    params = {f.stem: np.load(f).astype(np.float64) for f in d.glob("*.npy")}
    want_logits = forward(entry["arch"], params, x.astype(np.float64))
    want_probs = softmax(want_logits)
    worst = (0.0, 0.0)
    for batch in (x, x[:1]):
        probs, logits = session.run(None, {"input": batch})
        n = len(batch)
        check(probs.shape == (n, 10) and logits.shape == (n, 10), f"{name}: shapes")
        check(probs.dtype == np.float32, f"{name}: dtype {probs.dtype}")
        dp = np.abs(probs - want_probs[:n]).max()
        dl = np.abs(logits - want_logits[:n]).max()
        check(dp <= PROB_ATOL, f"{name}: probabilities differ by {dp:.3g} (batch {n})")
        check(dl <= LOGIT_ATOL, f"{name}: logits differ by {dl:.3g} (batch {n})")
        worst = max(worst[0], dp), max(worst[1], dl)
    nodes = ",".join(n.op_type for n in g.node)
    print(
        f"ok {name}: ir {model.ir_version}, opset {entry['opset']}, {len(raw)} bytes, "
        f"max |dprob| {worst[0]:.2g}, max |dlogit| {worst[1]:.2g}; {nodes}"
    )


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    root = Path(sys.argv[1])
    manifest = json.loads((root / "manifest.json").read_text())
    x = np.load(root / "input.npy")
    check(x.dtype == np.float32 and x.shape[1] == 784, f"input.npy {x.dtype} {x.shape}")
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    for entry in manifest:
        check_model(root, entry, x)


if __name__ == "__main__":
    main()
