#!/usr/bin/env python3
"""Usage: perf/mlp_compare.py [--runs N] [--threads T] [--recipes a,b,...]
                            [--torch-python PY] [--bin PATH] [--json-out FILE]

Times `idx-softmax --hidden ...` against the PyTorch peer (perf/torch_mlp.py)
on the same MLP recipes, INTERLEAVED: each round runs every (recipe,
implementation) pair once, the order rotating from round to round. Reports
min / median / max of train_seconds (training loop only), the median test
accuracy, median whole-process wall time of ours, and the ratio
torch/ours of the median train_seconds (> 1: ours is faster).

Recipes (784-256-10, batch 100):
  one     1 epoch, lr 0.05, momentum 0.9
  cosine4 4 epochs, lr 0.1, momentum 0.9, cosine schedule
  fast    the README's fastest recipe to >= 0.98 (see FAST below)

PyTorch runs with --torch-python (default: this interpreter); where it
cannot import torch, only ours is timed and the ratio is left out.
Nothing is built: the release binary must exist.
"""

import argparse
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PEER = os.path.join(bl.PERF_DIR, "torch_mlp.py")

# name -> (epochs, batch, lr, momentum, schedule, hidden)
RECIPES = {
    "one": (1, 100, 0.05, 0.9, "constant", [256]),
    "cosine4": (4, 100, 0.1, 0.9, "cosine", [256]),
}
# The fastest recipe to >= 0.98 found so far (README "Recipes").
FAST = (5, 200, 0.2, 0.9, "cosine", [256])
RECIPES["fast"] = FAST


def ours_cmd(binary, recipe, threads):
    epochs, batch, lr, mom, sched, hidden = recipe
    cmd = [binary, "--json", "--threads", str(threads), "--epochs", str(epochs),
           "--batch-size", str(batch), "--lr", str(lr), "--momentum", str(mom),
           "--schedule", sched]
    for h in hidden:
        cmd += ["--hidden", str(h)]
    return cmd


def torch_cmd(python, recipe, threads):
    epochs, batch, lr, mom, sched, hidden = recipe
    cmd = [python, PEER, "--threads", str(threads), "--epochs", str(epochs),
           "--batch-size", str(batch), "--lr", str(lr), "--momentum", str(mom),
           "--schedule", sched]
    for h in hidden:
        cmd += ["--hidden", str(h)]
    return cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default="one,cosine4,fast")
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--bin", default=bl.default_binary())
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    binary = bl.require_binary(args.bin)
    names = [r for r in args.recipes.split(",") if r]
    for r in names:
        if r not in RECIPES:
            ap.error(f"unknown recipe {r!r} (known: {', '.join(RECIPES)})")
    probe = subprocess.run([args.torch_python, "-c", "import torch"], capture_output=True, text=True)
    have_torch = probe.returncode == 0
    if not have_torch:
        print(f"torch unavailable under {args.torch_python}: only ours is timed", file=sys.stderr)

    jobs = []
    for r in names:
        jobs.append((r, "ours"))
        if have_torch:
            jobs.append((r, "torch"))
    results = {job: [] for job in jobs}
    for i in range(args.runs):
        shift = i % len(jobs)
        for job in jobs[shift:] + jobs[:shift]:
            r, impl = job
            cmd = (ours_cmd(binary, RECIPES[r], args.threads) if impl == "ours"
                   else torch_cmd(args.torch_python, RECIPES[r], args.threads))
            results[job].append(bl.run_json(cmd))

    print(f"machine: {bl.machine_summary()}; {args.runs} interleaved rounds, {args.threads} thread(s)")
    print(f"{'recipe':8} {'impl':6} {'train s min':>11} {'median':>8} {'max':>8} {'accuracy':>9} {'wall s':>7}")
    summary = {}
    for job in jobs:
        r, impl = job
        t = bl.stats(bl.field(results[job], "train_seconds"))
        acc = bl.stats(bl.field(results[job], "test_accuracy"))
        wall = bl.stats(bl.field(results[job], "_wall_seconds"))
        summary[f"{r}/{impl}"] = {"train_seconds": t, "test_accuracy": acc, "wall_seconds": wall}
        print(f"{r:8} {impl:6} {t['min']:11.3f} {t['median']:8.3f} {t['max']:8.3f} "
              f"{acc['median']:9.4f} {wall['median']:7.3f}")
    if have_torch:
        for r in names:
            o = summary[f"{r}/ours"]["train_seconds"]["median"]
            p = summary[f"{r}/torch"]["train_seconds"]["median"]
            summary[f"{r}/ratio"] = p / o
            print(f"{r}: torch/ours = {p / o:.2f}x  (ours = {o / p:.2f} of torch's time)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
