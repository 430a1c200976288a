"""Cross-checks idx-softmax checkpoints against the reference safetensors
implementation (used by tests/checkpoint.rs; needs `safetensors` and `numpy`).

    python3 safetensors_interop.py describe FILE
        Loads FILE with safetensors.numpy.load_file and prints one JSON object:
        {"tensors": {name: {"dtype", "shape", "sha256", "head"}}, "metadata": {...}}
        where sha256 is over the tensor's little-endian, row-major bytes and
        head is its first few values (as float64, exact for f32).

    python3 safetensors_interop.py write FILE
        Writes an nn.Linear-style file (weight [3, 4], bias [3], f32) with
        safetensors.numpy.save_file, as PyTorch users would, and prints the
        same JSON description of what it wrote.
"""

import hashlib
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def describe(tensors, metadata):
    out = {}
    for name, array in sorted(tensors.items()):
        le = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        out[name] = {
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "sha256": hashlib.sha256(le.tobytes()).hexdigest(),
            "head": [float(v) for v in array.reshape(-1)[:5]],
        }
    return {"tensors": out, "metadata": metadata or {}}


def main(argv):
    if len(argv) != 3 or argv[1] not in ("describe", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[2]
    if argv[1] == "write":
        weight = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 7
        bias = np.array([0.25, -1.5, 3.0], dtype=np.float32)
        save_file({"weight": weight, "bias": bias}, path, metadata={"format": "pt"})
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    print(json.dumps(describe(tensors, metadata), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
