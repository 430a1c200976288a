#!/usr/bin/env python3
"""Usage: perf/compare.py [--runs N] [--threads T] [--batch-size B] [--peers numpy,torch]
                       [--data-dir DIR] [--bin PATH] [--warmup W] [--json-out FILE]

Times idx-softmax against the NumPy (and, when importable, PyTorch) peer in
perf/numpy_softmax.py on the same workload, INTERLEAVED: each round runs every
implementation once (the order rotates from round to round, so none always
goes first after an idle gap), N rounds in all. Reports min / median / max of
train_seconds (training loop only: shuffle + steps) for each, median
whole-process wall time, and the ratio peer/ours of the median train_seconds
(> 1 means ours is faster).

Ours runs as `idx-softmax --json --threads T`; the peer as
`numpy_softmax.py --threads T` (BLAS threads set to T). --batch-size, --epochs
and --data-dir pass through to both. Nothing is built: the release binary
must exist (cargo build --release). A peer that cannot be imported is skipped
with the reason printed; the script still exits 0.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep perf/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PEER_SCRIPT = os.path.join(bl.PERF_DIR, "numpy_softmax.py")
PEER_MODULES = {"numpy": ["numpy"], "torch": ["numpy", "torch"]}


def peer_available(python, name):
    """(True, None) or (False, reason)."""
    for mod in PEER_MODULES[name]:
        p = subprocess.run([python, "-c", f"import {mod}"], capture_output=True, text=True)
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["import failed"])[-1]
            return False, f"`{python} -c 'import {mod}'` failed: {last}"
    return True, None


def main():
    ap = argparse.ArgumentParser(
        description="Interleaved timing of idx-softmax vs the NumPy/PyTorch peer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--runs", type=int, default=15, help="timed runs of each implementation")
    ap.add_argument("--threads", type=int, default=2,
                    help="ours: --threads T; peer: BLAS/torch threads T")
    ap.add_argument("--batch-size", type=int, default=None, help="passed through to both")
    ap.add_argument("--epochs", type=int, default=None, help="passed through to both")
    ap.add_argument("--data-dir", default=None, help="passed through to both (default: bundled MNIST)")
    ap.add_argument("--kernel", default=None, help="ours only: --kernel gemm|portable|avx2|avx512")
    ap.add_argument("--peers", default="numpy,torch",
                    help="comma-separated peers to try; missing ones are skipped")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the peers")
    ap.add_argument("--bin", default=bl.default_binary(), help="the idx-softmax binary")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs of each first (page cache, .gz cache, BLAS init)")
    ap.add_argument("--json-out", default=None, help="write every run and the summary here")
    args = ap.parse_args()
    if args.runs < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")

    binary = bl.require_binary(args.bin)

    common = []
    if args.batch_size is not None:
        common += ["--batch-size", str(args.batch_size)]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    if args.data_dir is not None:
        common += ["--data-dir", args.data_dir]

    cmds = {"ours": [binary, "--json", "--threads", str(args.threads)] + common}
    if args.kernel:
        cmds["ours"] += ["--kernel", args.kernel]

    skipped = {}
    for name in [p.strip() for p in args.peers.split(",") if p.strip()]:
        if name not in PEER_MODULES:
            ap.error(f"unknown peer {name!r} (known: {', '.join(PEER_MODULES)})")
        ok, reason = peer_available(args.python, name)
        if ok:
            cmds[name] = [args.python, PEER_SCRIPT, "--backend", name,
                          "--threads", str(args.threads)] + common
        else:
            skipped[name] = reason
            print(f"skipping peer {name}: {reason}")

    print(f"machine : {bl.machine_summary()}")
    print(f"date    : {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for name, cmd in cmds.items():
        print(f"{name:8}: {' '.join(cmd)}")
    print(f"runs    : {args.runs} timed + {args.warmup} warm-up each, interleaved")
    sys.stdout.flush()

    names = list(cmds)
    results = {n: [] for n in names}
    try:
        for w in range(args.warmup):
            for n in names:
                bl.run_json(cmds[n])
        for i in range(args.runs):
            k = i % len(names)
            for n in names[k:] + names[:k]:
                r = bl.run_json(cmds[n])
                if r.get("skipped"):  # the peer found it could not run after all
                    skipped[n] = r.get("reason", "skipped")
                    continue
                results[n].append(r)
            print(f"  round {i + 1}/{args.runs}: " + "  ".join(
                f"{n} {bl.fmt_ms(results[n][-1]['train_seconds'])} ms"
                for n in names if results[n]), file=sys.stderr)
    except bl.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    names = [n for n in names if results[n]]
    summary = {}
    print()
    print("| impl | runs | train ms min | train ms median | train ms max | median samples/s "
          "| median wall ms | median eval ms | median rss_anon MB | test acc (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        rs = results[n]
        t = bl.stats(bl.field(rs, "train_seconds"))
        sps = bl.stats(bl.field(rs, "samples_per_second"))
        wall = bl.stats(bl.field(rs, "_wall_seconds"))
        ev = bl.stats(bl.field(rs, "eval_seconds"))  # ours: only once the field exists
        rss = bl.stats(bl.field(rs, "rss_anon_kb"))
        acc = bl.stats(bl.field(rs, "test_accuracy"))
        summary[n] = {"train_seconds": t, "samples_per_second": sps, "wall_seconds": wall,
                      "eval_seconds": ev, "rss_anon_kb": rss, "test_accuracy": acc}
        cells = [n, str(t["n"]), bl.fmt_ms(t["min"]), bl.fmt_ms(t["median"]),
                 bl.fmt_ms(t["max"]), f"{sps['median']:,.0f}", bl.fmt_ms(wall["median"]),
                 bl.fmt_ms(ev["median"]) if ev else "-",
                 f"{rss['median'] / 1024:.1f}" if rss else "-",
                 f"{acc['median']:.4f}" if acc else "-"]
        print("| " + " | ".join(cells) + " |")
    print()

    digests = {r.get("weights_digest") for r in results.get("ours", [])}
    if "ours" in results and results["ours"]:
        if len(digests) == 1:
            print(f"ours: weights_digest identical in all {len(results['ours'])} runs "
                  f"({next(iter(digests))[:16]}…)")
        else:
            print(f"ours: WARNING: {len(digests)} different weights_digest values across runs")

    peers = [n for n in names if n != "ours"]
    if "ours" not in summary:
        print("ours produced no results")
        return 1
    if not peers:
        print("no peer ran (" + ("; ".join(f"{k}: {v}" for k, v in skipped.items())
                                 or "none requested") + "): nothing to compare")
    ratios = {}
    for n in peers:
        r_train = summary[n]["train_seconds"]["median"] / summary["ours"]["train_seconds"]["median"]
        r_wall = summary[n]["wall_seconds"]["median"] / summary["ours"]["wall_seconds"]["median"]
        ratios[n] = {"train_seconds": r_train, "wall_seconds": r_wall}
        print(f"ratio {n}/ours, median train_seconds: {r_train:.2f}x "
              f"({'ours faster' if r_train > 1 else 'ours slower' if r_train < 1 else 'equal'}); "
              f"median whole-process wall: {r_wall:.2f}x")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"commands": cmds, "runs": args.runs, "threads": args.threads,
                       "machine": bl.machine_summary(), "skipped": skipped,
                       "summary": summary, "ratios": ratios, "results": results}, f, indent=1)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
