#!/usr/bin/env python3
"""Usage: perf/batch_compare.py [--runs N] [--threads T ...] [--batch-sizes B ...] [--bin PATH]

Per-sample cost of the batch size: the notebook's workload (one epoch,
60,000 samples) at every batch size x thread count, interleaved (the order
rotates from round to round). Prints the median / min / max train_seconds
and, per thread count, each batch size's median relative to the first
batch size's (the target: batch 1000 no slower per sample than batch 100,
i.e. a ratio <= 1.00; an epoch is the same 60,000 samples at any batch).
"""

import argparse
import os
import statistics
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--bin", default=bl.default_binary())
    o = ap.parse_args()
    binary = bl.require_binary(o.bin)
    variants = [(t, b) for t in o.threads for b in o.batch_sizes]
    res = {v: [] for v in variants}
    for r in range(o.runs):
        for t, b in variants[r % len(variants):] + variants[:r % len(variants)]:
            d = bl.run_json([binary, "--json", "--threads", str(t), "--batch-size", str(b)])
            res[(t, b)].append(d["train_seconds"])
    print(f"machine: {bl.machine_summary()}; {o.runs} interleaved rounds")
    for t, b in variants:
        v = res[(t, b)]
        m = statistics.median(v)
        first = statistics.median(res[(t, o.batch_sizes[0])])
        print(f"threads {t:2}  batch {b:5}  median {m*1e3:7.2f} ms  min {min(v)*1e3:7.2f}  max {max(v)*1e3:7.2f}"
              f"  x{m/first:.3f} of batch {o.batch_sizes[0]}")


if __name__ == "__main__":
    main()
