"""Independent predictions for tests/cli_model.rs (needs `safetensors` and
`numpy`): what a PyTorch/numpy user would compute from our checkpoint.

    python3 predict_reference.py MODEL IMAGES INDEX...

MODEL is a safetensors file written by `idx-softmax --save`; IMAGES a raw
(uncompressed) u8 IDX image file such as t10k-images-idx3-ubyte. For each
INDEX, prints one JSON object per line:

    {"test_index": N, "predicted": C, "probabilities": [p_0, ..., p_{C-1}]}

Pixels are scaled as the trainer scales them (u8 times float32(1/255)), the
logits are x @ weight.T + bias in float64, and the probabilities their
softmax.
"""

import json
import sys

import numpy as np
from safetensors.numpy import load_file


def read_idx_u8(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise SystemExit(f"{path}: not a u8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims[0], -1)


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    tensors = load_file(argv[1])
    weight = tensors["weight"].astype(np.float64)  # [classes, features]
    bias = tensors["bias"].astype(np.float64)  # [classes]
    images = read_idx_u8(argv[2])
    for index in map(int, argv[3:]):
        x = images[index].astype(np.float32) * np.float32(1.0 / 255.0)
        z = x.astype(np.float64) @ weight.T + bias
        e = np.exp(z - z.max())
        p = e / e.sum()
        out = {
            "test_index": index,
            "predicted": int(np.argmax(p)),
            "probabilities": [float(v) for v in p],
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
