#!/usr/bin/env python3
"""Usage: perf/numpy_softmax.py [--backend numpy|torch] [--data-dir DIR] [--epochs N]
                              [--batch-size B] [--lr LR] [--seed S] [--threads T]

Reference peer for idx-softmax: the same softmax-regression workload written
the obvious way in NumPy (or PyTorch with --backend torch, when `import torch`
works), printing one JSON object shaped like `idx-softmax --json`.

Workload (kept faithful to the Rust engine):
  * IDX files read here with the gzip module (raw or .gz, names
    `train-images-idx3-ubyte` or `train-images.idx3-ubyte`, as the engine
    accepts), pre-loaded as one float32 array scaled by 1/255;
  * 784 -> C linear layer, W = randn(784, C) / sqrt(784), b = 0 (same
    distribution as the engine; not the same random bits);
  * softmax cross-entropy, G = (softmax(XW + b) - onehot(y)) / B,
    dW = X^T G, db = sum_rows G, plain SGD W -= lr dW, b -= lr db;
  * the training order is reshuffled every epoch; every batch is trained,
    the last partial one included;
  * train_seconds times only the training loop (shuffle + steps) with
    time.perf_counter; loading and test evaluation are timed separately
    (load_seconds, eval_seconds).

Threads: --threads T sets OMP/OPENBLAS/MKL/... thread counts before NumPy is
imported (and torch.set_num_threads for the torch backend). Without it the
BLAS library picks its own default.

Exit status: 0 on success; 3 when the requested backend cannot be imported
(the reason is printed on stderr and a JSON object with "skipped" on stdout).
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

SKIP_EXIT = 3

ROLES = [
    ("train_images", "train-images", "idx3-ubyte"),
    ("train_labels", "train-labels", "idx1-ubyte"),
    ("test_images", "t10k-images", "idx3-ubyte"),
    ("test_labels", "t10k-labels", "idx1-ubyte"),
]

# IDX type codes -> (numpy dtype string, big-endian on disk).
IDX_TYPES = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def default_data_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "data", "mnist")


def find_file(data_dir, stem, suffix):
    tried = []
    for sep in ("-", "."):
        for gz in ("", ".gz"):
            name = f"{stem}{sep}{suffix}{gz}"
            path = os.path.join(data_dir, name)
            tried.append(name)
            if os.path.isfile(path):
                return path
    raise SystemExit(f"error: {data_dir}: no {stem} file; looked for {', '.join(tried)}")


def read_idx(path, np):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise SystemExit(f"error: {path}: not an IDX file (bad magic)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise SystemExit(f"error: {path}: unknown IDX element type 0x{code:02x}")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_TYPES[code])
    count = 1
    for d in dims:
        count *= d
    offset = 4 + 4 * ndim
    if len(data) < offset + count * dtype.itemsize:
        raise SystemExit(f"error: {path}: truncated ({len(data)} bytes for dims {dims})")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(dims)


def load(data_dir, np):
    files = {role: find_file(data_dir, stem, suffix) for role, stem, suffix in ROLES}
    raw = {role: read_idx(path, np) for role, path in files.items()}

    def images(a):
        a = a.reshape(a.shape[0], -1)
        if a.dtype == np.uint8:
            # Same scaling as the engine (U8_SCALE = 1/255, ToTensor-style).
            return np.ascontiguousarray(a, dtype=np.float32) * np.float32(1.0 / 255.0)
        return np.ascontiguousarray(a, dtype=np.float32)

    xtr, xte = images(raw["train_images"]), images(raw["test_images"])
    ytr = raw["train_labels"].astype(np.int64).reshape(-1)
    yte = raw["test_labels"].astype(np.int64).reshape(-1)
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise SystemExit("error: image and label counts differ")
    return xtr, ytr, xte, yte


def proc_status_kb(field):
    """A `kB` field of /proc/self/status (e.g. RssAnon, VmHWM), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_anon_kb():
    return proc_status_kb("RssAnon")


# --------------------------------------------------------------------------- numpy


def run_numpy(args, np):
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load(args.data_dir, np)
    load_seconds = time.perf_counter() - t0
    n, k = xtr.shape
    c = args.classes or int(ytr.max()) + 1
    rng = np.random.default_rng(args.seed)
    w = (rng.standard_normal((k, c)) / np.sqrt(k)).astype(np.float32)
    b = np.zeros(c, dtype=np.float32)
    lr = np.float32(args.lr)
    bs = args.batch_size
    eye = np.eye(c, dtype=np.float32)

    def evaluate(x, y):
        loss, correct = 0.0, 0
        for i in range(0, x.shape[0], 10000):
            z = x[i : i + 10000] @ w + b
            z = z - z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            yy = y[i : i + 10000]
            loss += float((lse - z[np.arange(len(yy)), yy]).astype(np.float64).sum())
            correct += int((z.argmax(axis=1) == yy).sum())
        return loss / x.shape[0], correct / x.shape[0]

    per_epoch = []
    train_seconds = eval_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        loss_sum = 0.0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            x = xtr[idx]
            y = ytr[idx]
            m = x.shape[0]
            z = x @ w + b
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            rows = np.arange(m)
            loss_sum += float((np.log(s[:, 0]) - z[rows, y]).sum(dtype=np.float64))
            g = e / s
            g -= eye[y]
            g *= np.float32(1.0 / m)
            w -= lr * (x.T @ g)
            b -= lr * g.sum(axis=0)
        secs = time.perf_counter() - start
        train_seconds += secs
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise SystemExit(f"error: non-finite weights after epoch {epoch}")
        e0 = time.perf_counter()
        test_loss, test_acc = evaluate(xte, yte)
        eval_seconds += time.perf_counter() - e0
        per_epoch.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / n,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "seconds": secs,
                "samples_per_second": n / secs,
            }
        )

    blas = None
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    except Exception:  # older numpy: no mode= argument
        pass
    rss = rss_anon_kb()  # while the dataset is still alive
    return {
        "rss_anon_kb": rss,
        "impl": "numpy",
        "version": np.__version__,
        "blas": blas,
        "n_train": n,
        "n_test": int(xte.shape[0]),
        "classes": c,
        "per_epoch": per_epoch,
        "train_seconds": train_seconds,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
    }


# --------------------------------------------------------------------------- torch


def run_torch(args, np, torch):
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load(args.data_dir, np)
    xtr, xte = torch.from_numpy(xtr), torch.from_numpy(xte)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    load_seconds = time.perf_counter() - t0
    n, k = xtr.shape
    c = args.classes or int(ytr.max()) + 1
    gen = torch.Generator().manual_seed(args.seed)
    w = torch.randn(k, c, generator=gen) / k**0.5
    b = torch.zeros(c)
    bs = args.batch_size
    F = torch.nn.functional

    per_epoch = []
    train_seconds = eval_seconds = 0.0
    with torch.no_grad():
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for i in range(0, n, bs):
                idx = order[i : i + bs]
                x, y = xtr[idx], ytr[idx]
                m = x.shape[0]
                z = torch.addmm(b, x, w)
                logp = F.log_softmax(z, dim=1)
                loss_sum += float(-logp.gather(1, y[:, None]).sum(dtype=torch.float64))
                g = logp.exp_()
                g[torch.arange(m), y] -= 1.0
                g.mul_(1.0 / m)
                w.addmm_(x.t(), g, alpha=-args.lr)
                b.sub_(g.sum(0), alpha=args.lr)
            secs = time.perf_counter() - start
            train_seconds += secs
            e0 = time.perf_counter()
            z = torch.addmm(b, xte, w)
            test_loss = float(F.cross_entropy(z, yte, reduction="sum").double()) / len(yte)
            test_acc = float((z.argmax(1) == yte).double().mean())
            eval_seconds += time.perf_counter() - e0
            per_epoch.append(
                {
                    "epoch": epoch,
                    "train_loss": loss_sum / n,
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "seconds": secs,
                    "samples_per_second": n / secs,
                }
            )
    rss = rss_anon_kb()  # while the dataset is still alive
    return {
        "rss_anon_kb": rss,
        "impl": "torch",
        "version": torch.__version__,
        "blas": None,
        "n_train": int(n),
        "n_test": int(xte.shape[0]),
        "classes": c,
        "per_epoch": per_epoch,
        "train_seconds": train_seconds,
        "load_seconds": load_seconds,
        "eval_seconds": eval_seconds,
    }


# --------------------------------------------------------------------------- main


def skip(backend, reason):
    print(f"skipped: {backend} backend unavailable: {reason}", file=sys.stderr)
    print(json.dumps({"impl": backend, "skipped": True, "reason": reason}))
    sys.exit(SKIP_EXIT)


def main():
    p = argparse.ArgumentParser(
        description="NumPy/PyTorch peer of idx-softmax: same workload, JSON on stdout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (default: largest training label + 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS / torch intra-op threads (default: library default)")
    args = p.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        p.error("--epochs and --batch-size must be >= 1 and --lr > 0")

    if args.threads:
        # Must happen before numpy (and its BLAS) is imported.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    try:
        import numpy as np
    except ImportError as e:
        skip(args.backend, f"cannot import numpy: {e}")

    if args.backend == "torch":
        try:
            import torch
        except ImportError as e:
            skip("torch", f"cannot import torch: {e}")
        res = run_torch(args, np, torch)
    else:
        res = run_numpy(args, np)

    last = res["per_epoch"][-1]
    n = res["n_train"]
    out = {
        "impl": res["impl"],
        "version": res["version"],
        "blas": res["blas"],
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "train_loss": last["train_loss"],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "train_seconds": res["train_seconds"],
        "samples_per_second": n * args.epochs / res["train_seconds"],
        "load_seconds": res["load_seconds"],
        "eval_seconds": res["eval_seconds"],
        "rss_anon_kb": res["rss_anon_kb"],
        "vm_hwm_kb": proc_status_kb("VmHWM"),
        "data_dir": args.data_dir,
        "train_samples": n,
        "test_samples": res["n_test"],
        "classes": res["classes"],
        "per_epoch": res["per_epoch"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
