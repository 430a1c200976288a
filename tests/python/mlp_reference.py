"""Independent evaluation of a saved network for tests/cli_mlp.rs (needs
`safetensors` and `numpy`): what a PyTorch/numpy user would compute from an
`idx-softmax --save` checkpoint, knowing only its documented layout.

    python3 mlp_reference.py MODEL IMAGES LABELS

MODEL is a safetensors file: `weight`/`bias` (softmax regression) or
nn.Sequential's `0.weight`, `0.bias`, `2.weight`, ... (an MLP, ReLU between
the linear layers). IMAGES and LABELS are u8 IDX files (raw or .gz), such
as t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte.

Pixels are scaled as the trainer scales them (u8 times float32(1/255)); the
forward pass is relu(x @ W.T + b) per hidden layer, then x @ W.T + b, in
float64. Prints one JSON object:

    {"layers": "784-256-10", "total": N, "correct": n, "accuracy": a,
     "loss": mean cross-entropy, "confusion": [[...], ...] (true x predicted),
     "predictions": [...], "near_ties": count of samples whose two largest
     logits are within 1e-4 (where float32 and float64 may disagree)}
"""

import gzip
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def read_idx_u8(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise SystemExit(f"{path}: not a u8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims[0], -1)


def layers(tensors):
    """The (weight, bias) pairs in order, by PyTorch's naming."""
    if "weight" in tensors:
        return [(tensors["weight"], tensors["bias"])]
    out = []
    i = 0
    while f"{i}.weight" in tensors:
        out.append((tensors[f"{i}.weight"], tensors[f"{i}.bias"]))
        i += 2
    if not out:
        raise SystemExit("no weight or 0.weight tensor")
    return out


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    net = [(w.astype(np.float64), b.astype(np.float64)) for w, b in layers(load_file(argv[1]))]
    images = read_idx_u8(argv[2])
    labels = read_idx_u8(argv[3]).reshape(-1).astype(np.int64)
    x = (images.astype(np.float32) * np.float32(1.0 / 255.0)).astype(np.float64)
    for i, (w, b) in enumerate(net):
        x = x @ w.T + b
        if i + 1 < len(net):
            x = np.maximum(x, 0.0)
    logits = x
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    loss = float(np.mean(lse - logits[np.arange(len(labels)), labels]))
    pred = logits.argmax(axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    near_ties = int(np.sum(top2[:, 1] - top2[:, 0] < 1e-4))
    c = net[-1][0].shape[0]
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    sizes = [net[0][0].shape[1]] + [w.shape[0] for w, _ in net]
    out = {
        "layers": "-".join(map(str, sizes)),
        "total": int(len(labels)),
        "correct": int((pred == labels).sum()),
        "accuracy": float((pred == labels).mean()),
        "loss": loss,
        "confusion": confusion.tolist(),
        "predictions": pred.tolist(),
        "near_ties": near_ties,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
