"""Shared helpers for the perf/ scripts (stdlib only; not a script itself).

Everything here runs programs and summarises numbers; nothing builds.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(PERF_DIR)


def default_binary():
    """target/release/idx-softmax under $CARGO_TARGET_DIR if set, else the repo's target/."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(REPO_ROOT, target)
    return os.path.join(target, "release", "idx-softmax")


def require_binary(path):
    """Exit with a hint when the release binary is missing (we never build)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(
            f"error: {path} not found (or not executable).\n"
            f"Build it first:  cd {REPO_ROOT} && cargo build --release\n"
            "(or point --bin at an existing binary)"
        )
    return path


class RunError(RuntimeError):
    pass


def _proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_json(cmd, env=None, measure_mem=False, poll_seconds=0.002):
    """Run `cmd`, parse the last non-empty stdout line as JSON, and add
    `_wall_seconds` (whole process: perf_counter from spawn to reaping).

    With measure_mem, also add
      `_max_rss_kb`: the child's peak RSS from wait4()'s rusage (ru_maxrss) --
          the number `/usr/bin/time -v` prints as "Maximum resident set size";
          anon + file-backed + shared pages;
      `_peak_rss_anon_sampled_kb`: the largest RssAnon read from
          /proc/PID/status, polled every poll_seconds while the child runs
          (a sample: a spike shorter than the interval can be missed).
    Raises RunError on a non-zero exit or unparsable output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        peak_anon = None
        if measure_mem:
            while True:
                pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                a = _proc_status_kb(p.pid, "RssAnon")
                if a is not None and (peak_anon is None or a > peak_anon):
                    peak_anon = a
                time.sleep(poll_seconds)
        else:
            _, status, rusage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if p.returncode != 0:
        raise RunError(
            f"{' '.join(cmd)} exited with {p.returncode}\n--- stderr ---\n{stderr.strip()}"
        )
    lines = [l for l in stdout.splitlines() if l.strip()]
    if not lines:
        raise RunError(f"{' '.join(cmd)} printed nothing on stdout\n{stderr.strip()}")
    try:
        res = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise RunError(f"{' '.join(cmd)}: last stdout line is not JSON ({e}): {lines[-1][:200]}")
    if not isinstance(res, dict):
        raise RunError(f"{' '.join(cmd)}: last stdout line is not a JSON object")
    res["_wall_seconds"] = wall
    if measure_mem:
        res["_max_rss_kb"] = rusage.ru_maxrss  # kB on Linux
        res["_peak_rss_anon_sampled_kb"] = peak_anon
    return res


def stats(values):
    """min / median / max / n of the non-None values, or None when empty."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "n": len(vals),
        "min": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
    }


def field(results, name):
    """results[i][name] for every result that has it (others give None)."""
    return [r.get(name) for r in results]


def machine_summary():
    """One line naming the CPU and core count (from lscpu when present)."""
    model, cpus = None, os.cpu_count()
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith("Model name:"):
                    model = line.split(":", 1)[1].strip()
        except OSError:
            pass
    return f"{model or 'unknown CPU'}, {cpus} logical CPU(s)"


def fmt_ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"
