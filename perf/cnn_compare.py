#!/usr/bin/env python3
"""Usage: perf/cnn_compare.py [--runs N] [--threads T] [--recipes a,b,...]
                            [--isa native|avx2] [--torch-python PY]
                            [--bin PATH] [--json-out FILE]

Times `idx-softmax --conv ... --hidden ...` against the PyTorch peer
(perf/torch_cnn.py) on the same CNN recipes, INTERLEAVED: each round runs
every (recipe, implementation) pair once, the order rotating from round to
round. Reports min / median / max of train_seconds (training loop only),
the median test accuracy, the median whole-process wall time, and the ratio
torch/ours of the median train_seconds (> 1: ours is faster). Ours also
reports its peak RSS (from --json's rss and /usr/bin/time where present).

Recipes (LeNet-5's shape, --conv 6 --conv 16 --hidden 120 --hidden 84,
batch 100, SGD momentum 0.9):
  one      1 epoch, lr 0.05
  cosine8  8 epochs, lr 0.05, cosine schedule (the issue's target recipe)

--isa avx2 stands an AVX-512 machine in for an AVX2-only one (such as the
issue's Zen 3) on both sides: ours runs with IDX_SOFTMAX_KERNEL=avx2, PyTorch
with ATEN_CPU_CAPABILITY=avx2 (its own kernels), ONEDNN_MAX_CPU_ISA=AVX2 (its
convolutions) and MKL_ENABLE_INSTRUCTIONS=AVX2 (its matrix products); the
report prints the capability PyTorch says it ran with. One difference is
left: matrixmultiply, which runs our linear layers, picks its kernel from the
CPU with no override, so those (15% of our epoch) still run its AVX-512
kernel. On Zen 4, whose AVX-512 units are two 256-bit halves, that kernel
and its AVX2 + FMA one have the same peak. (--isa native: each side picks
its best.)

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

PEER = os.path.join(bl.PERF_DIR, "torch_cnn.py")

LENET = (["6", "16"], [120, 84])
# name -> (epochs, batch, lr, momentum, schedule, (conv, hidden))
RECIPES = {
    "one": (1, 100, 0.05, 0.9, "constant", LENET),
    "cosine8": (8, 100, 0.05, 0.9, "cosine", LENET),
}


def args_for(recipe, threads):
    epochs, batch, lr, mom, sched, (conv, hidden) = recipe
    cmd = ["--threads", str(threads), "--epochs", str(epochs),
           "--batch-size", str(batch), "--lr", str(lr), "--momentum", str(mom),
           "--schedule", sched]
    for c in conv:
        cmd += ["--conv", c]
    for h in hidden:
        cmd += ["--hidden", str(h)]
    return cmd


# --isa: the environment of each side.
ISA_ENV = {
    "native": ({}, {}),
    "avx2": ({"IDX_SOFTMAX_KERNEL": "avx2"},
             {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
              "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
}


def ours_cmd(binary, recipe, threads):
    return [binary, "--json", *args_for(recipe, threads)]


def torch_cmd(python, recipe, threads):
    return [python, PEER, *args_for(recipe, threads)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default="one")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default="native")
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
            env = dict(os.environ, **ISA_ENV[args.isa][0 if impl == "ours" else 1])
            results[job].append(bl.run_json(cmd, env=env, measure_mem=True, poll_seconds=0.05))

    print(f"machine: {bl.machine_summary()}; {args.runs} interleaved rounds, {args.threads} thread(s)")
    ours_path = sorted({x.get("kernel", "?") for j in jobs if j[1] == "ours" for x in results[j]})
    torch_isa = sorted({x.get("cpu_capability", "?") for j in jobs if j[1] == "torch"
                        for x in results[j]})
    print(f"--isa {args.isa}: ours ran the {', '.join(ours_path)} path"
          + (f"; PyTorch's CPU capability {', '.join(torch_isa)}" if have_torch else ""))
    print(f"{'recipe':8} {'impl':6} {'train s min':>11} {'median':>8} {'max':>8} {'accuracy':>9} {'wall s':>7} {'rss MB':>7}")
    summary = {}
    for job in jobs:
        r, impl = job
        t = bl.stats(bl.field(results[job], "train_seconds"))
        acc = bl.stats(bl.field(results[job], "test_accuracy"))
        wall = bl.stats(bl.field(results[job], "_wall_seconds"))
        rss = [v for v in bl.field(results[job], "_max_rss_kb") if v]
        rss_mb = max(rss) / 1024 if rss else float("nan")
        summary[f"{r}/{impl}"] = {"train_seconds": t, "test_accuracy": acc, "wall_seconds": wall,
                                  "max_rss_mb": rss_mb}
        print(f"{r:8} {impl:6} {t['min']:11.3f} {t['median']:8.3f} {t['max']:8.3f} "
              f"{acc['median']:9.4f} {wall['median']:7.3f} {rss_mb:7.1f}")
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
