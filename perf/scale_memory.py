#!/usr/bin/env python3
"""Usage: perf/scale_memory.py [--synthetic-dir /tmp/idx-softmax-synthetic-1m] [--train 1000000]
                            [--runs 3] [--threads 2] [--target-mb 10] [--bin PATH] [--json-out FILE]

Checks that the engine's heap does not grow with the dataset: runs
`idx-softmax --json --threads T` on the bundled MNIST (60k training images)
and on a synthetic 1M-image dataset (generated with perf/make_synthetic.py
into --synthetic-dir if it is not there yet; 792 MB, keep it under /tmp), and
compares their anonymous RSS. The dataset is memory-mapped, so its pages are
file-backed and should not count; the target is that anon RSS on 1M images
stays within --target-mb (default 10 MiB) of the MNIST run.

Three numbers per run, the first available one decides the verdict:
  1. rss_anon_kb  -- the engine's own JSON field (RssAnon from
     /proc/self/status at exit), once the binary prints it;
  2. sampled peak RssAnon -- this script polls /proc/PID/status every 2 ms
     while the engine runs (works with any binary; a spike shorter than the
     interval can be missed, so it is a lower bound of the true peak);
  3. max RSS -- the child's ru_maxrss from wait4(), i.e. exactly what
     `/usr/bin/time -v` prints as "Maximum resident set size". It is the peak
     of anon + file-backed + shared pages: the memory-mapped dataset counts
     in full, so it can NOT judge the heap target and is shown for context.

Each dataset runs --runs times (interleaved); the table shows the largest
value seen (memory is nearly deterministic; the max is the conservative one).
Exit status: 0 when the target is met or cannot be judged, 1 when it is
exceeded, 2 on a run failure. Nothing is built: cargo build --release first.
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

DEFAULT_SYNTH = "/tmp/idx-softmax-synthetic-1m"
PIX = 28 * 28


def synthetic_complete(d, n_train, n_test):
    want = {
        "train-images-idx3-ubyte": 16 + n_train * PIX,
        "train-labels-idx1-ubyte": 8 + n_train,
        "t10k-images-idx3-ubyte": 16 + n_test * PIX,
        "t10k-labels-idx1-ubyte": 8 + n_test,
    }
    return all(os.path.isfile(os.path.join(d, f)) and os.path.getsize(os.path.join(d, f)) == s
               for f, s in want.items())


def main():
    ap = argparse.ArgumentParser(
        description="Anon RSS of idx-softmax on MNIST vs a synthetic 1M-image dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--synthetic-dir", default=DEFAULT_SYNTH,
                    help="synthetic dataset directory (generated here if missing)")
    ap.add_argument("--train", type=int, default=1_000_000, help="synthetic training images")
    ap.add_argument("--test", type=int, default=10_000, help="synthetic test images")
    ap.add_argument("--mnist-dir", default=None, help="default: the engine's bundled MNIST")
    ap.add_argument("--runs", type=int, default=3, help="runs per dataset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target-mb", type=float, default=10.0,
                    help="allowed anon RSS growth, MiB (1 MiB = 1024 kB)")
    ap.add_argument("--bin", default=bl.default_binary(), help="the idx-softmax binary")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.runs < 1 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1")

    binary = bl.require_binary(args.bin)
    synth = os.path.abspath(args.synthetic_dir)
    repo_abs = os.path.realpath(bl.REPO_ROOT) + os.sep
    if (os.path.realpath(synth) + os.sep).startswith(repo_abs):
        print(f"warning: {synth} is inside the repository; prefer /tmp", file=sys.stderr)
    if not synthetic_complete(synth, args.train, args.test):
        print(f"generating the synthetic dataset in {synth} ...", flush=True)
        gen = [sys.executable, os.path.join(bl.PERF_DIR, "make_synthetic.py"), synth,
               "--train", str(args.train), "--test", str(args.test)]
        if subprocess.run(gen).returncode != 0:
            print("error: make_synthetic.py failed", file=sys.stderr)
            return 2

    base = [binary, "--json", "--threads", str(args.threads)]
    datasets = {
        "mnist": base + (["--data-dir", args.mnist_dir] if args.mnist_dir else []),
        f"synthetic-{args.train}": base + ["--data-dir", synth],
    }
    print(f"machine : {bl.machine_summary()}")
    print(f"date    : {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for name, cmd in datasets.items():
        print(f"{name:8}: {' '.join(cmd)}")
    print(f"runs    : {args.runs} per dataset, interleaved; RssAnon polled every 2 ms")
    sys.stdout.flush()

    results = {n: [] for n in datasets}
    try:
        for i in range(args.runs):
            for n, cmd in datasets.items():
                results[n].append(bl.run_json(cmd, measure_mem=True))
    except bl.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def worst(rs, key):
        vals = [r.get(key) for r in rs]
        return max(vals) if vals and all(v is not None for v in vals) else None

    summary = {}
    for n, rs in results.items():
        summary[n] = {
            "train_samples": rs[0].get("train_samples"),
            "rss_anon_kb": worst(rs, "rss_anon_kb"),
            "peak_rss_anon_sampled_kb": worst(rs, "_peak_rss_anon_sampled_kb"),
            "max_rss_kb": worst(rs, "_max_rss_kb"),
            "train_seconds_median": bl.stats(bl.field(rs, "train_seconds"))["median"],
            "test_accuracy": rs[-1].get("test_accuracy"),
            "weights_digests": sorted({r.get("weights_digest") for r in rs}),
        }

    def kb(v):
        return "n/a" if v is None else f"{v:,}"

    print()
    print("| dataset | train samples | rss_anon_kb (engine, at exit) | peak RssAnon kB (sampled) "
          "| max RSS kB (incl. file pages) | median train s | test acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, s in summary.items():
        print(f"| {n} | {s['train_samples']:,} | {kb(s['rss_anon_kb'])} "
              f"| {kb(s['peak_rss_anon_sampled_kb'])} | {kb(s['max_rss_kb'])} "
              f"| {s['train_seconds_median']:.3f} | {s['test_accuracy']:.4f} |")
    print("(largest value over the runs)")
    print()

    small, big = (summary[n] for n in datasets)
    target_kb = args.target_mb * 1024
    verdict, basis, status = None, None, 0
    for key, label in (("rss_anon_kb", "engine's rss_anon_kb"),
                       ("peak_rss_anon_sampled_kb", "sampled peak RssAnon")):
        if small[key] is not None and big[key] is not None:
            diff = big[key] - small[key]
            verdict = "PASS" if diff <= target_kb else "FAIL"
            basis = key
            status = 0 if verdict == "PASS" else 1
            print(f"anon RSS difference (synthetic - mnist), {label}: {diff:+,} kB = "
                  f"{diff / 1024:+.2f} MiB; target <= {args.target_mb:g} MiB: {verdict}")
            if key != "rss_anon_kb":
                print("  (the binary does not print rss_anon_kb yet; this verdict rests on "
                      "2 ms samples of /proc/PID/status)")
            break
    else:
        print("no anon RSS figure available: no verdict.")
    if small["max_rss_kb"] is not None and big["max_rss_kb"] is not None:
        diff = big["max_rss_kb"] - small["max_rss_kb"]
        print(f"max RSS difference (= /usr/bin/time -v): {diff:+,} kB = {diff / 1024:+.2f} MiB; "
              "includes the file-backed pages of the memory-mapped dataset, so not a heap measure.")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"commands": datasets, "summary": summary, "verdict": verdict, "verdict_basis": basis,
                       "target_mb": args.target_mb, "machine": bl.machine_summary(),
                       "results": results}, f, indent=1)
        print(f"wrote {args.json_out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
