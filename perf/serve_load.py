#!/usr/bin/env python3
"""Usage: perf/serve_load.py [--bin PATH] [--load PATH] [--model FILE] [--clients N] [--scenario ROWS:REQUESTS ...] [--json-out FILE] [-- SERVE_ARGS...]

A bounded load test of `idx-softmax serve` on loopback. Starts the server on
a free port (with SERVE_ARGS), then, for each scenario, runs the load
generator (`examples/serve_load.rs`: --clients keep-alive connections on one
thread, each sending `/v2/models/NAME/infer` requests of ROWS MNIST test
images, as tritonclient sends them, until REQUESTS are answered after a
warm-up) and captures its output to a file before parsing it. Prints the
machine, then per scenario: errors, throughput, and latency percentiles;
the server's batch sizes from /metrics; and the verdict of the issue's
target (0 errors, p99 <= 20 ms for single-sample requests). Exit 1 when the
target is missed.

Builds nothing: `cargo build --release --example serve_load` first. Without
--model, trains a 784-256-10 MLP (one epoch) into a temporary directory.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

P99_TARGET_MS = 20.0


def machine():
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=bl.default_binary())
    ap.add_argument("--load", default=os.path.join(
        os.path.dirname(bl.default_binary()), "examples", "serve_load"))
    ap.add_argument("--model", help="a model file [default: train a 784-256-10 MLP]")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--scenario", nargs="+", default=["1:20000", "100:2000"],
                    help="ROWS:REQUESTS, one run each [default: 1:20000 100:2000]")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--json-out", metavar="FILE", help="save every result")
    ap.add_argument("serve_args", nargs=argparse.REMAINDER)
    o = ap.parse_args()
    binary = bl.require_binary(o.bin)
    if not os.access(o.load, os.X_OK):
        sys.exit(f"error: {o.load} not found: cargo build --release --example serve_load")
    serve_args = [a for a in o.serve_args if a != "--"]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        model = o.model
        if model is None:
            model = os.path.join(tmp, "mlp.safetensors")
            subprocess.run([binary, "--hidden", "256", "--save", model, "--json"],
                           check=True, stdout=subprocess.DEVNULL)
        log_path = os.path.join(tmp, "serve.log")
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [binary, "serve", "--model", model, "--port", "0", *serve_args],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        first = server.stdout.readline()
        m = re.search(r"serving .* as (\S+) on (http://\S+)", first)
        if not m:
            server.kill()
            sys.exit(f"error: the server did not start: {first!r}\n" + open(log_path).read())
        name, url = m.group(1), m.group(2)
        results = []
        try:
            for scenario in o.scenario:
                rows, requests = (int(v) for v in scenario.split(":"))
                before = urllib.request.urlopen(url + "/metrics").read().decode()
                out_path = os.path.join(tmp, f"load-{rows}.json")
                with open(out_path, "w") as out:
                    t0 = time.perf_counter()
                    subprocess.run(
                        [o.load, url, name, "--clients", str(o.clients), "--requests",
                         str(requests), "--rows", str(rows), "--warmup", str(o.warmup)],
                        stdout=out, check=True)
                    wall = time.perf_counter() - t0
                after = urllib.request.urlopen(url + "/metrics").read().decode()
                with open(out_path) as f:
                    r = json.loads(f.read().strip().splitlines()[-1])
                passes = metric(after, "idx_softmax_batch_rows_count") - metric(
                    before, "idx_softmax_batch_rows_count")
                batched = metric(after, "idx_softmax_batch_requests_sum") - metric(
                    before, "idx_softmax_batch_requests_sum")
                r["forward_passes"] = passes
                r["mean_requests_per_pass"] = batched / passes if passes else None
                r["_wall_seconds"] = wall
                results.append(r)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
        if code != 0:
            print(f"warning: the server exited with status {code}", file=sys.stderr)

    print(f"machine: {machine()}")
    print(f"server: {binary} serve {' '.join(serve_args)}".rstrip())
    print(f"load: {o.load}, {o.clients} clients on one thread, keep-alive\n")
    print("| rows/request | requests | errors | requests/s | samples/s | p50 ms | p90 ms | p99 ms | max ms | requests/forward pass |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r["latency_ms"]
        per_pass = r["mean_requests_per_pass"]
        print(f"| {r['rows']} | {r['requests']} | {r['errors']} | {r['requests_per_second']:.0f} "
              f"| {r['samples_per_second']:.0f} | {lat['p50']:.2f} | {lat['p90']:.2f} "
              f"| {lat['p99']:.2f} | {lat['max']:.2f} | {per_pass:.1f} |")
        if r["errors"]:
            print(f"first error ({r['rows']} rows): {r['first_error']}")
    if o.json_out:
        with open(o.json_out, "w") as f:
            json.dump({"machine": machine(), "clients": o.clients, "serve_args": serve_args,
                       "results": results}, f, indent=1)
    single = [r for r in results if r["rows"] == 1]
    ok = all(r["errors"] == 0 for r in results) and all(
        r["latency_ms"]["p99"] <= P99_TARGET_MS for r in single)
    print(f"\ntarget (0 errors; p99 <= {P99_TARGET_MS:g} ms for 1 sample at {o.clients} clients): "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
