#!/usr/bin/env python3
"""Usage: perf/torch_mlp.py [--hidden H ...] [--epochs N] [--batch-size B] [--lr LR]
                          [--momentum M] [--schedule constant|cosine] [--seed S]
                          [--threads T] [--data-dir DIR]

PyTorch peer of `idx-softmax --hidden H`: the MLP workload written the way a
PyTorch user writes it, printing one JSON object shaped like `--json`.

Workload (as the engine's):
  * the four IDX files loaded with perf/numpy_softmax.py's reader, pre-loaded
    as float32 tensors scaled by 1/255 (loading is timed apart);
  * nn.Sequential(Linear(784, H), ReLU, ..., Linear(H, C)) with PyTorch's
    default nn.Linear initialisation;
  * mean cross-entropy (F.cross_entropy), loss.backward(), torch.optim.SGD
    (lr, momentum), optionally a per-step cosine schedule to 0 over the run
    (torch.optim.lr_scheduler.LambdaLR, as the engine's `--schedule cosine`);
  * batches from torch.randperm every epoch, the last partial one included;
  * train_seconds times only the training loop (shuffle + steps).

Threads: --threads T sets torch.set_num_threads(T) (and the OMP/MKL
variables before torch is imported).

Exit status: 0 on success; 3 when torch cannot be imported (JSON with
"skipped" on stdout).
"""

import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_softmax as ns  # noqa: E402  (the IDX loader)
import torch_train as tt  # noqa: E402  (the training loop both peers share)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hidden", type=int, action="append", default=None)
    p.add_argument("--data-dir", default=ns.default_data_dir())
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    hidden = args.hidden or [256]
    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print(f"skipped: cannot import torch: {e}", file=sys.stderr)
        print(json.dumps({"impl": "torch", "skipped": True, "reason": str(e)}))
        sys.exit(ns.SKIP_EXIT)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    xtr, ytr, xte, yte = ns.load(args.data_dir, np)
    xtr, xte = torch.from_numpy(xtr), torch.from_numpy(xte)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    load_seconds = time.perf_counter() - t0
    n, k = xtr.shape
    c = int(ytr.max()) + 1
    sizes = [k, *hidden, c]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    per_epoch, train_seconds, eval_seconds = tt.train(torch, model, args, xtr, ytr, xte, yte)
    last = per_epoch[-1]
    print(json.dumps({
        "impl": "torch", "version": torch.__version__, "layers": "-".join(map(str, sizes)),
        "test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
        "train_loss": last["train_loss"], "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "momentum": args.momentum, "schedule": args.schedule,
        "threads": args.threads, "train_seconds": train_seconds,
        "samples_per_second": n * args.epochs / train_seconds,
        "load_seconds": load_seconds, "eval_seconds": eval_seconds, "per_epoch": per_epoch,
    }))


if __name__ == "__main__":
    main()
