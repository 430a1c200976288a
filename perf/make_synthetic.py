#!/usr/bin/env python3
"""Usage: perf/make_synthetic.py OUT_DIR [--train 1000000] [--test 10000] [--seed 1]
                              [--source-dir data/mnist] [--pure-python] [--force]

Writes a synthetic MNIST-shaped IDX dataset into OUT_DIR as raw (uncompressed)
files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte (28x28 u8 images, labels 0-9). The default 1,000,000
training images are 784 MB: put OUT_DIR under /tmp, not in the repository.

Each synthetic image is a real digit from the bundled MNIST (training images
for the training split, test images for the test split, picked at random),
shifted by up to 1 pixel in each direction (a flat rotation of the 784
bytes, so a horizontal shift wraps into the neighbouring row), halved in
intensity and with uniform noise 0..63 added (pixel = (digit >> 1) + noise,
at most 190). Its label is the source digit's label, so the data is learnable
but harder than MNIST: one epoch of idx-softmax's default workload reached
test accuracy ~0.79 with 60k such images and ~0.86 with 1M (measured on the
development machine).

Uses NumPy when it is importable (a few seconds for 1M images); otherwise a
pure-Python path (os.urandom noise, per-byte arithmetic done as big-integer
AND/shift/add over whole chunks) that is slower but still finishes in well
under a minute or two. The two paths are each deterministic for a given seed
but do not produce the same bytes as each other (noise from os.urandom is
never reproducible). Files are written to a temporary name and renamed, so a
half-written dataset never looks complete. Existing complete files are kept
unless --force.
"""

import argparse
import gzip
import os
import random
import struct
import sys
import time

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.join(os.path.dirname(PERF_DIR), "data", "mnist")
ROWS = COLS = 28
PIX = ROWS * COLS
MAX_SHIFT = 1
CHUNK = 16384  # images generated per write


def read_idx_bytes(source_dir, stem, suffix):
    """(dims, payload bytes) of a u8 IDX file, raw or .gz, '-' or '.' naming."""
    for sep in ("-", "."):
        for gz in ("", ".gz"):
            path = os.path.join(source_dir, f"{stem}{sep}{suffix}{gz}")
            if os.path.isfile(path):
                with (gzip.open if gz else open)(path, "rb") as f:
                    data = f.read()
                if data[:3] != b"\x00\x00\x08":
                    sys.exit(f"error: {path}: not a u8 IDX file")
                ndim = data[3]
                dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
                return dims, data[4 + 4 * ndim:]
    sys.exit(f"error: {source_dir}: no {stem}-{suffix}[.gz] (needed as the digit source; "
             "see --source-dir)")


def load_source(source_dir, split):
    stem = "train" if split == "train" else "t10k"
    dims, images = read_idx_bytes(source_dir, f"{stem}-images", "idx3-ubyte")
    _, labels = read_idx_bytes(source_dir, f"{stem}-labels", "idx1-ubyte")
    if tuple(dims[1:]) != (ROWS, COLS):
        sys.exit(f"error: source images are {dims[1:]}, expected 28x28")
    n = dims[0]
    return n, images[:n * PIX], labels[:n]


def image_header(n):
    return struct.pack(">IIII", 0x00000803, n, ROWS, COLS)


def label_header(n):
    return struct.pack(">II", 0x00000801, n)


# --------------------------------------------------------------------------- numpy path


def write_split_numpy(np, img_f, lab_f, n, src, rng):
    src_n, src_img, src_lab = src
    base = np.frombuffer(src_img, dtype=np.uint8).reshape(src_n, PIX)
    base_half = base >> 1
    labels_src = np.frombuffer(src_lab, dtype=np.uint8)
    span = 2 * MAX_SHIFT + 1
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        pick = rng.integers(0, src_n, size=m)
        shift = (rng.integers(0, span, size=m) - MAX_SHIFT) * COLS \
            + (rng.integers(0, span, size=m) - MAX_SHIFT)
        out = base_half[pick]
        for s in np.unique(shift):
            sel = shift == s
            out[sel] = np.roll(out[sel], int(s), axis=1)
        out += rng.integers(0, 64, size=(m, PIX), dtype=np.uint8)
        img_f.write(out.tobytes())
        lab_f.write(labels_src[pick].tobytes())


# --------------------------------------------------------------------------- pure-python path


def write_split_pure(img_f, lab_f, n, src, rnd):
    src_n, src_img, src_lab = src
    nbytes = CHUNK * PIX
    halve_mask = int.from_bytes(b"\x7f" * nbytes, "little")
    noise_mask = int.from_bytes(b"\x3f" * nbytes, "little")
    span = 2 * MAX_SHIFT + 1
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        size = m * PIX
        parts, labs = [], bytearray(m)
        for i in range(m):
            j = rnd.randrange(src_n)
            s = (rnd.randrange(span) - MAX_SHIFT) * COLS + (rnd.randrange(span) - MAX_SHIFT)
            img = src_img[j * PIX:(j + 1) * PIX]
            parts.append(img[-s:] + img[:-s] if s else img)  # np.roll(img, s)
            labs[i] = src_lab[j]
        if m != CHUNK:
            hm = halve_mask & ((1 << (8 * size)) - 1)
            nm = noise_mask & ((1 << (8 * size)) - 1)
        else:
            hm, nm = halve_mask, noise_mask
        digits = (int.from_bytes(b"".join(parts), "little") >> 1) & hm
        noise = int.from_bytes(os.urandom(size), "little") & nm
        # Per byte: (digit >> 1) + noise <= 127 + 63: no carry crosses a byte.
        img_f.write((digits + noise).to_bytes(size, "little"))
        lab_f.write(bytes(labs))


# --------------------------------------------------------------------------- main


def complete(path, expected_size):
    return os.path.isfile(path) and os.path.getsize(path) == expected_size


def main():
    ap = argparse.ArgumentParser(
        description="Write a synthetic MNIST-shaped raw IDX dataset (MNIST digits, shifted, plus noise).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("out_dir", help="directory to write into (created if missing); use /tmp")
    ap.add_argument("--train", type=int, default=1_000_000, help="training images")
    ap.add_argument("--test", type=int, default=10_000, help="test images")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source-dir", default=DEFAULT_SOURCE, help="MNIST IDX files to draw digits from")
    ap.add_argument("--pure-python", action="store_true", help="do not use NumPy even if importable")
    ap.add_argument("--force", action="store_true", help="rewrite files that already look complete")
    args = ap.parse_args()
    if args.train < 1 or args.test < 1:
        ap.error("--train and --test must be >= 1")

    np = None
    if not args.pure_python:
        try:
            import numpy as np
        except ImportError:
            print("numpy not importable: using the pure-Python path", file=sys.stderr)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    for split, n, stem in (("train", args.train, "train"), ("test", args.test, "t10k")):
        img_path = os.path.join(args.out_dir, f"{stem}-images-idx3-ubyte")
        lab_path = os.path.join(args.out_dir, f"{stem}-labels-idx1-ubyte")
        if not args.force and complete(img_path, 16 + n * PIX) and complete(lab_path, 8 + n):
            print(f"{split}: {img_path} and labels already complete ({n} images); kept")
            continue
        src = load_source(args.source_dir, split)
        seed = args.seed * 2 + (split == "test")
        tmp_img, tmp_lab = img_path + ".part", lab_path + ".part"
        with open(tmp_img, "wb") as img_f, open(tmp_lab, "wb") as lab_f:
            img_f.write(image_header(n))
            lab_f.write(label_header(n))
            if np is not None:
                write_split_numpy(np, img_f, lab_f, n, src, np.random.default_rng(seed))
            else:
                write_split_pure(img_f, lab_f, n, src, random.Random(seed))
        os.replace(tmp_lab, lab_path)
        os.replace(tmp_img, img_path)
        print(f"{split}: wrote {n} images ({(16 + n * PIX) / 1e6:.1f} MB) to {img_path}")
    print(f"done in {time.perf_counter() - t0:.1f} s ({'numpy' if np is not None else 'pure python'})")


if __name__ == "__main__":
    main()
