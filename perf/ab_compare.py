#!/usr/bin/env python3
"""Usage: perf/ab_compare.py --a BIN_A --b BIN_B [--runs N] [--] [ARGS...]

Times two builds of idx-softmax on the same arguments, INTERLEAVED (A B A B
..., the first of each pair alternating), N runs each, and prints min /
median / max of train_seconds (training loop only) for each, the ratio of
the medians B/A, and whether the two printed the same weights_digest (a
change that should not touch the arithmetic must keep it).

Use it to check a speed claim before/after a change, e.g. with the old
commit built in a worktree:

    git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
    perf/ab_compare.py --a /tmp/old/target/release/idx-softmax \\
        --b target/release/idx-softmax --runs 21 -- --threads 2

`--json` is always passed; ARGS are passed to both.
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="binary A (the baseline)")
    ap.add_argument("--b", required=True, help="binary B (the change)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    o = ap.parse_args()
    extra = [a for a in o.args if a != "--"]
    bins = {"A": bl.require_binary(o.a), "B": bl.require_binary(o.b)}
    res = {"A": [], "B": []}
    for i in range(o.runs):
        order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
        for k in order:
            res[k].append(bl.run_json([bins[k], "--json", *extra]))
    print(f"machine: {bl.machine_summary()}; {o.runs} interleaved runs each; args: {' '.join(extra)}")
    med = {}
    for k in ("A", "B"):
        t = bl.stats(bl.field(res[k], "train_seconds"))
        med[k] = t["median"]
        digests = sorted(set(bl.field(res[k], "weights_digest")))
        print(f"{k}: train ms min {t['min']*1e3:.2f}  median {t['median']*1e3:.2f}  "
              f"max {t['max']*1e3:.2f}   digest {','.join(d[:16] for d in digests)}   {bins[k]}")
    same = set(bl.field(res["A"], "weights_digest")) == set(bl.field(res["B"], "weights_digest"))
    print(f"B/A median ratio: {med['B'] / med['A']:.3f}   same weights: {same}")


if __name__ == "__main__":
    main()
