#!/usr/bin/env python3
"""Usage: perf/under_load.py [--runs N] [--bin PATH] [--baseline BIN] [-- ARGS...]

The "graceful under load" measurement: before each timed run, one
competing CPU-bound process (a Python busy loop) starts, and it is killed
when the run ends. Interleaved rounds of --threads 1, the default thread
count pinned (the engine pins its workers when they fill every CPU) and
unpinned (IDX_SOFTMAX_NO_PIN=1), the order rotating from round to round.
Prints the median / min / max train_seconds of each, the ratios to the
1-thread median (the target: default threads <= 1.15x the 1-thread time
under the same load) and how often workers were benched for losing their
CPU (`benchings` in --json).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def timed(binary, args, env=None):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.05)  # let the competitor take its core first
    try:
        d = bl.run_json([binary, "--json", *args], env=env)
        return d["train_seconds"], d.get("benchings")
    finally:
        busy.kill()
        busy.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--bin", default=bl.default_binary())
    ap.add_argument("--baseline", metavar="BIN",
                    help="also run another build's 1-thread and pinned variants in the same rounds (before/after)")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    o = ap.parse_args()
    binary = bl.require_binary(o.bin)
    extra = [a for a in o.args if a != "--"]
    cpus = os.cpu_count() or 1
    variants = {
        "1 thread": (binary, ["--threads", "1"], None),
        f"{cpus} threads, pinned": (binary, ["--threads", str(cpus)], None),
        f"{cpus} threads, unpinned": (binary, ["--threads", str(cpus)], dict(os.environ, IDX_SOFTMAX_NO_PIN="1")),
    }
    if o.baseline:
        base_bin = bl.require_binary(o.baseline)
        variants["baseline: 1 thread"] = (base_bin, ["--threads", "1"], None)
        variants[f"baseline: {cpus} threads"] = (base_bin, ["--threads", str(cpus)], None)
    res = {k: [] for k in variants}
    benched = {k: [] for k in variants}
    names = list(variants)
    for r in range(o.runs):
        # Rotate the order from round to round.
        for k in names[r % len(names):] + names[:r % len(names)]:
            exe, args, env = variants[k]
            seconds, benchings = timed(exe, [*args, *extra], env)
            res[k].append(seconds)
            benched[k].append(benchings)
    print(f"machine: {bl.machine_summary()}; {o.runs} interleaved rounds, one busy loop beside each run")
    for k, v in res.items():
        base = statistics.median(res["baseline: 1 thread" if k.startswith("baseline") else "1 thread"])
        m = statistics.median(v)
        b = [x for x in benched[k] if x is not None]
        bs = f"  benchings median {statistics.median(b):g} max {max(b)}" if b else ""
        print(f"{k:24} median {m*1e3:7.2f} ms  min {min(v)*1e3:7.2f}  max {max(v)*1e3:7.2f}  x{m/base:.2f} of 1 thread{bs}")


if __name__ == "__main__":
    main()
