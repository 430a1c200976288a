#!/usr/bin/env python3
"""Usage: perf/torch_cnn.py [--conv C[xK] ...] [--hidden H ...] [--epochs N]
                          [--batch-size B] [--lr LR] [--momentum M]
                          [--schedule constant|cosine] [--seed S]
                          [--threads T] [--data-dir DIR]

PyTorch peer of `idx-softmax --conv C --hidden H`: the CNN workload written
the way a PyTorch user writes it (its MNIST example's shape), printing one
JSON object shaped like `--json`.

Workload (as the engine's):
  * the four IDX files loaded with perf/numpy_softmax.py's reader, pre-loaded
    as float32 tensors scaled by 1/255, shaped N x 1 x 28 x 28 (loading is
    timed apart);
  * nn.Sequential(Conv2d(1, C1, K, padding=K//2), ReLU, MaxPool2d(2), ...,
    Flatten, Linear(F, H), ReLU, ..., Linear(H, C)) with PyTorch's default
    initialisation (default: --conv 6 --conv 16 --hidden 120 --hidden 84);
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
    p.add_argument("--conv", action="append", default=None)
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
    hidden = args.hidden if args.hidden is not None else [120, 84]
    conv = []
    for b in args.conv or ["6", "16"]:
        c, _, k = b.partition("x")
        conv.append((int(c), int(k or 5)))
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
    side = int(round(k ** 0.5))
    xtr, xte = xtr.reshape(n, 1, side, side), xte.reshape(-1, 1, side, side)
    c = int(ytr.max()) + 1
    layers, ch, hw = [], 1, side
    for co, kk in conv:
        layers += [torch.nn.Conv2d(ch, co, kk, padding=kk // 2), torch.nn.ReLU(),
                   torch.nn.MaxPool2d(2)]
        ch, hw = co, hw // 2
    layers.append(torch.nn.Flatten())
    sizes = [ch * hw * hw, *hidden, c]
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    per_epoch, train_seconds, eval_seconds = tt.train(torch, model, args, xtr, ytr, xte, yte)
    last = per_epoch[-1]
    print(json.dumps({
        "impl": "torch", "version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "layers": f"1x{side}x{side}-" + "-".join(f"conv{co}x{kk}" for co, kk in conv)
                  + "-" + "-".join(map(str, sizes)),
        "test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
        "train_loss": last["train_loss"], "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "momentum": args.momentum, "schedule": args.schedule,
        "threads": args.threads, "train_seconds": train_seconds,
        "samples_per_second": n * args.epochs / train_seconds,
        "load_seconds": load_seconds, "eval_seconds": eval_seconds, "per_epoch": per_epoch,
    }))


if __name__ == "__main__":
    main()
