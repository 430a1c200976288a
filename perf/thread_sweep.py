#!/usr/bin/env python3
"""Usage: perf/thread_sweep.py [--threads 1 2 4 8 16] [--runs N] [--batch-size B]
                            [--kernel K] [--data-dir DIR] [--bin PATH] [--json-out FILE]
                            [--oversubscribe]

Runs `idx-softmax --json --threads T` for every T in the list, N times each,
INTERLEAVED (each round runs every thread count once, the order rotating from
round to round), and prints a markdown table: threads, median train_seconds
(ms, with min-max), median samples/s, speedup of the median vs 1 thread (vs
the smallest count when 1 is not in the list), median whole-process wall time,
and weights_digest.

The engine promises bit-identical weights for any thread count, so the script
checks that weights_digest is the same across every run and every thread
count, and exits with status 2 if it is not. Thread counts above the number
of CPUs oversubscribe the cores: expected to be slower, still bit-identical.
Nothing is built: run cargo build --release first.
"""

import argparse
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # keep perf/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(
        description="Thread-count sweep of idx-softmax with a bit-identity check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                    help="thread counts to run")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per thread count")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per thread count first")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--kernel", default=None, help="gemm|portable|avx2|avx512 (default: engine's)")
    ap.add_argument("--data-dir", default=None, help="default: bundled MNIST")
    ap.add_argument("--bin", default=bl.default_binary(), help="the idx-softmax binary")
    ap.add_argument("--json-out", default=None, help="write every run and the summary here")
    ap.add_argument("--oversubscribe", action="store_true",
                    help="pass --oversubscribe: run exactly T workers even beyond the CPUs")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0 or any(t < 1 for t in args.threads):
        ap.error("--runs and every thread count must be >= 1, --warmup >= 0")
    counts = list(dict.fromkeys(args.threads))  # dedupe, keep order

    binary = bl.require_binary(args.bin)
    extra = []
    for flag, val in (("--batch-size", args.batch_size), ("--epochs", args.epochs),
                      ("--kernel", args.kernel), ("--data-dir", args.data_dir)):
        if val is not None:
            extra += [flag, str(val)]
    if args.oversubscribe:
        extra.append("--oversubscribe")

    def cmd(t):
        return [binary, "--json", "--threads", str(t)] + extra

    print(f"machine : {bl.machine_summary()}")
    print(f"date    : {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"command : {' '.join(cmd('T'))}   for T in {' '.join(map(str, counts))}")
    print(f"runs    : {args.runs} timed + {args.warmup} warm-up per thread count, interleaved")
    sys.stdout.flush()

    results = {t: [] for t in counts}
    try:
        for _ in range(args.warmup):
            for t in counts:
                bl.run_json(cmd(t))
        for i in range(args.runs):
            k = i % len(counts)
            for t in counts[k:] + counts[:k]:
                results[t].append(bl.run_json(cmd(t)))
            print(f"  round {i + 1}/{args.runs}: " + "  ".join(
                f"{t}T {bl.fmt_ms(results[t][-1]['train_seconds'])}" for t in counts),
                file=sys.stderr)
    except bl.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    base = 1 if 1 in counts else min(counts)
    summary = {}
    for t in counts:
        rs = results[t]
        summary[t] = {
            "train_seconds": bl.stats(bl.field(rs, "train_seconds")),
            "samples_per_second": bl.stats(bl.field(rs, "samples_per_second")),
            "wall_seconds": bl.stats(bl.field(rs, "_wall_seconds")),
            "eval_seconds": bl.stats(bl.field(rs, "eval_seconds")),
            "digests": sorted({r.get("weights_digest") or "?" for r in rs}),
            "kernel": sorted({str(r.get("kernel")) for r in rs}),
        }
    base_med = summary[base]["train_seconds"]["median"]
    has_eval = any(summary[t]["eval_seconds"] for t in counts)

    print()
    head = ["threads", "median train ms (min–max)", "median samples/s",
            f"speedup vs {base} thread{'s' if base != 1 else ''}", "median wall ms"]
    if has_eval:
        head.append("median eval ms")
    head.append("weights_digest")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * (len(head) - 1) + "---|")
    for t in counts:
        s = summary[t]
        tr = s["train_seconds"]
        row = [str(t),
               f"{bl.fmt_ms(tr['median'])} ({bl.fmt_ms(tr['min'])}–{bl.fmt_ms(tr['max'])})",
               f"{s['samples_per_second']['median']:,.0f}",
               f"{base_med / tr['median']:.2f}x",
               bl.fmt_ms(s["wall_seconds"]["median"])]
        if has_eval:
            row.append(bl.fmt_ms(s["eval_seconds"]["median"]) if s["eval_seconds"] else "-")
        row.append(", ".join(d[:16] for d in s["digests"]))
        print("| " + " | ".join(row) + " |")
    print()

    all_digests = {d for t in counts for d in summary[t]["digests"]}
    kernels = {k for t in counts for k in summary[t]["kernel"]}
    identical = len(all_digests) == 1 and "?" not in all_digests
    if identical:
        print(f"weights_digest: identical across all thread counts and runs "
              f"({next(iter(all_digests))}; kernel {', '.join(sorted(kernels))})")
    else:
        print(f"weights_digest: NOT identical: {len(all_digests)} distinct values "
              f"(kernel {', '.join(sorted(kernels))}) -- the engine promises bit-identical "
              "weights for any thread count")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"command": cmd("T"), "threads": counts, "runs": args.runs,
                       "machine": bl.machine_summary(), "identical": identical,
                       "summary": {str(t): v for t, v in summary.items()},
                       "results": {str(t): v for t, v in results.items()}}, f, indent=1)
        print(f"wrote {args.json_out}")
    return 0 if identical else 2


if __name__ == "__main__":
    sys.exit(main())
