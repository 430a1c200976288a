#!/usr/bin/env python3
"""Usage: perf/augment_compare.py [--runs R] [--passes P] [--n N] [--kinds elastic,affine]
                               [--bin PATH] [--check N] [--json-out FILE]

Times the per-sample deformations of idx_softmax::augment against SciPy's
vectorised equivalent on the same MNIST training images, INTERLEAVED (each
round runs every variant once, the order rotating), R rounds (default 5):

* ours:  examples/augment_bench (one core; per round, the best of --passes
  (default 3) passes over the N samples, each pass a new epoch: the wall
  time of its deformation loop, `best_wall_s`, and its CPU time; best of a
  few because a 0.1 s pass on a shared machine is easily hit by other
  processes, where SciPy's seconds-long pass averages them out);
* SciPy: the same N images as one float32 array (N, 28, 28), its fastest
  formulation measured here:
    elastic: u = rng.uniform(-1, 1, (2, N, 28, 28)) and
             dx, dy = alpha * gaussian_filter(u[k], sigma=(0, s, s),
                                              mode="constant")  (truncate 4),
             batched over the samples; then map_coordinates(image, [y + dy,
             x + dx], order=1, mode="grid-constant") per sample (one batched
             3-D map_coordinates call was ~25 % slower: it interpolates
             along the sample axis too);
    affine:  the parameters drawn with NumPy for all samples (same ranges),
             then affine_transform(image, matrix, offset, order=1,
             mode="grid-constant") per sample (~40 % faster than one
             batched map_coordinates; the two give the same bytes).
  Random draws, smoothing, resampling and the uint8 rounding are all inside
  the timed region, as they are on our side.

Reports the median seconds and ns per sample of each, and the ratio
SciPy / ours (> 1: ours faster).

--check N (default 64) first verifies the claim that our elastic field is
SciPy's: `augment_bench dump` writes our uniforms, fields and outputs for N
images; the script smooths our uniforms with gaussian_filter
(mode="constant", truncate=4.0) and resamples with map_coordinates
(order=1, mode="grid-constant"), and reports the largest field difference
and how many output pixels differ (by at most 1, from f32 vs f64
rounding). --check 0 skips it.

Nothing is built: build the example first,
  cargo build --release --example augment_bench
SciPy: if `import scipy` fails, make a venv:
  python3 -m venv /tmp/venv-aug && /tmp/venv-aug/bin/pip install numpy scipy
and run this script with /tmp/venv-aug/bin/python.
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep perf/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

try:
    import numpy as np
    from scipy import ndimage
except ImportError as e:  # pragma: no cover - environment dependent
    sys.exit(
        f"error: {e}\nThis script needs NumPy and SciPy:\n"
        "  python3 -m venv /tmp/venv-aug && /tmp/venv-aug/bin/pip install numpy scipy\n"
        "  /tmp/venv-aug/bin/python perf/augment_compare.py"
    )

SIGMA, ALPHA = 4.0, 34.0
ROTATE, SCALE, SHEAR, TRANSLATE = 15.0, 0.15, 0.15, 2.0


def default_bench():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(bl.REPO_ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(bl.REPO_ROOT, target)
    return os.path.join(target, "release", "examples", "augment_bench")


def load_mnist_train(n):
    path = os.path.join(bl.REPO_ROOT, "data", "mnist", "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[o : o + 4], "big") for o in (4, 8, 12))
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return images[:n]


def run_ours(bench, kind, n, passes):
    out = subprocess.run(
        [bench, kind, str(passes), str(n)], capture_output=True, text=True, check=True
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith(f"kind={kind} "))
    fields = dict(kv.split("=", 1) for kv in line.split())
    return float(fields["best_wall_s"]), float(fields["best_s"])


def scipy_elastic(images_f32, rng):
    n, h, w = images_f32.shape
    u = rng.uniform(-1.0, 1.0, size=(2, n, h, w)).astype(np.float32)
    dx = ALPHA * ndimage.gaussian_filter(u[0], sigma=(0, SIGMA, SIGMA), mode="constant")
    dy = ALPHA * ndimage.gaussian_filter(u[1], sigma=(0, SIGMA, SIGMA), mode="constant")
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty((n, h, w), np.uint8)
    for k in range(n):
        r = ndimage.map_coordinates(images_f32[k], [yy + dy[k], xx + dx[k]], order=1, mode="grid-constant")
        out[k] = np.floor(r + 0.5)
    return out


def scipy_affine(images_f32, rng):
    n, h, w = images_f32.shape
    v = rng.uniform(-1.0, 1.0, size=(5, n))
    theta = np.deg2rad(ROTATE * v[0])
    s = 1.0 + SCALE * v[1]
    sh = SHEAR * v[2]
    tx, ty = TRANSLATE * v[3], TRANSLATE * v[4]
    cos, sin = np.cos(theta) / s, np.sin(theta) / s
    # The inverse map, as in the engine: src = c + A (p - c - t),
    # A = H^-1 S^-1 R^-1 (x, y order).
    a00, a01, a10, a11 = cos - sh * sin, -sin - sh * cos, sin, cos
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    out = np.empty((n, h, w), np.uint8)
    for k in range(n):
        # SciPy's (row, col) order.
        m = np.array([[a11[k], a10[k]], [a01[k], a00[k]]])
        offset = np.array([cy, cx]) - m @ np.array([cy + ty[k], cx + tx[k]])
        r = ndimage.affine_transform(images_f32[k], m, offset=offset, order=1, mode="grid-constant")
        out[k] = np.floor(r + 0.5)
    return out


SCIPY = {"elastic": scipy_elastic, "affine": scipy_affine}


def check_against_scipy(bench, n):
    """Our fields and outputs vs SciPy on our own uniforms."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump.bin")
        subprocess.run([bench, "dump", path, str(n)], check=True)
        rec = np.dtype(
            [("u", "<f4", (2, 784)), ("dx", "<f4", (28, 28)), ("dy", "<f4", (28, 28)), ("out", "u1", (28, 28))]
        )
        d = np.fromfile(path, dtype=rec)
    images = load_mnist_train(len(d)).astype(np.float64)
    # The documented noise order: within a row, the first 14 uniforms go to
    # columns 0..13, the next 14 to columns 27 down to 14.
    cols = np.concatenate([np.arange(14), np.arange(27, 13, -1)])
    field_err, px_diff, px_max = 0.0, 0, 0
    for k in range(len(d)):
        u = d["u"][k].astype(np.float64).reshape(2, 28, 28)
        noise = np.empty_like(u)
        noise[:, :, cols] = u
        for f, name in ((0, "dx"), (1, "dy")):
            ref = ALPHA * ndimage.gaussian_filter(noise[f], SIGMA, mode="constant", truncate=4.0)
            field_err = max(field_err, float(np.abs(ref - d[name][k]).max()))
        yy, xx = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
        coords = [yy + d["dy"][k].astype(np.float64), xx + d["dx"][k].astype(np.float64)]
        ref = ndimage.map_coordinates(images[k], coords, order=1, mode="grid-constant")
        ref = np.floor(ref + 0.5).astype(np.int32)
        diff = np.abs(ref - d["out"][k].astype(np.int32))
        px_diff += int((diff > 0).sum())
        px_max = max(px_max, int(diff.max()))
    return {"samples": len(d), "max_field_diff_px": field_err, "pixels_differing": px_diff,
            "pixels_total": len(d) * 784, "max_pixel_diff": px_max}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3, help="our passes per round (the best counts)")
    ap.add_argument("--n", type=int, default=60000, help="samples per run (default: all 60000)")
    ap.add_argument("--kinds", default="elastic,affine")
    ap.add_argument("--bin", default=default_bench(), help="the augment_bench example")
    ap.add_argument("--check", type=int, default=64, help="samples for the SciPy agreement check (0: skip)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    bench = args.bin
    if not (os.path.isfile(bench) and os.access(bench, os.X_OK)):
        sys.exit(f"error: {bench} not found.\nBuild it: cargo build --release --example augment_bench")
    kinds = args.kinds.split(",")

    report = {"n": args.n, "runs": args.runs, "scipy": __import__("scipy").__version__,
              "numpy": np.__version__}
    if args.check:
        report["check"] = check_against_scipy(bench, args.check)
        print("agreement with SciPy:", json.dumps(report["check"]))

    images = load_mnist_train(args.n).astype(np.float32)
    rng = np.random.default_rng(42)
    variants = [(k, who) for k in kinds for who in ("ours", "scipy")]
    times = {v: [] for v in variants}
    cpu = {k: [] for k in kinds}
    # Warm-up (page cache, SciPy imports, caches).
    for k in kinds:
        run_ours(bench, k, min(args.n, 2000), 1)
        SCIPY[k](images[:2000], rng)
    for r in range(args.runs):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for k, who in order:
            if who == "ours":
                wall, c = run_ours(bench, k, args.n, args.passes)
                times[(k, who)].append(wall)
                cpu[k].append(c)
            else:
                t = time.perf_counter()
                SCIPY[k](images, rng)
                times[(k, who)].append(time.perf_counter() - t)
    report["results"] = {}
    print(f"\n{args.n} MNIST training images, {args.runs} interleaved rounds, one core each")
    print(f"{'kind':8} {'ours s':>9} {'ours ns/sample':>15} {'(cpu)':>7} {'SciPy s':>9} {'SciPy ns/sample':>16} {'SciPy/ours':>11}")
    for k in kinds:
        ours = statistics.median(times[(k, "ours")])
        ours_cpu = statistics.median(cpu[k])
        theirs = statistics.median(times[(k, "scipy")])
        row = {"ours_s": ours, "ours_cpu_s": ours_cpu, "scipy_s": theirs,
               "ours_ns_per_sample": ours / args.n * 1e9, "scipy_ns_per_sample": theirs / args.n * 1e9,
               "ratio": theirs / ours, "ours_all": times[(k, "ours")], "scipy_all": times[(k, "scipy")]}
        report["results"][k] = row
        print(f"{k:8} {ours:9.4f} {row['ours_ns_per_sample']:15.0f} {ours_cpu / args.n * 1e9:7.0f} "
              f"{theirs:9.3f} {row['scipy_ns_per_sample']:16.0f} {row['ratio']:10.1f}x")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
