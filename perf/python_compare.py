#!/usr/bin/env python3
"""Usage: perf/python_compare.py [--runs N] [--bin PATH] [--skip-sklearn] [--json-out FILE]

The Python package's targets (issue 10), measured in one run on the bundled
MNIST:

1. Converged recipe (epochs=8, batch_size=200, lr=0.2, momentum=0.9,
   schedule="cosine") on float32 MNIST (pixels / 255 as float32):
   idx_softmax.SoftmaxRegression vs sklearn.linear_model.LogisticRegression()
   (defaults: lbfgs, max_iter=100) on the same float32 arrays. Target: >= 50x
   faster at equal test accuracy (+-0.002).
2. MLP: idx_softmax.MLPClassifier(hidden_layer_sizes=(256,)) vs
   sklearn.neural_network.MLPClassifier with the same settings (SGD, batch
   100, lr 0.1 constant, no momentum, no L2, shuffled), seconds per epoch
   (2 epochs each; scikit-learn on float32, ours on float32 and on the
   uint8 views of load_idx). Target: >= 2.5x faster per epoch.
3. Overhead: SoftmaxRegression.fit from Python (uint8 views of the mapped
   files, the recipe above) vs the CLI's training-loop time (train_seconds)
   for the same run, interleaved, median of --runs. Target: within 10%.
4. Float input at the fused kernels' speed (issue 20): the recipe above
   (SoftmaxRegression) and one MLPClassifier((256,)) epoch, fitted on the
   uint8 views, on float32 (X / 255) and on float64 input with the same
   values (converted once to float32 by the package), interleaved, medians
   of --runs; whole `fit` calls. Target: float32 and float64 within 15% of
   uint8. (--only-float runs this part alone.)

Needs the package installed (pip install ./python), scikit-learn, and the
release CLI (cargo build --release). Prints one line per measurement and,
with --json-out, writes them all.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECIPE = dict(epochs=8, batch_size=200, lr=0.2, momentum=0.9, schedule="cosine")
CLI_RECIPE = ["--epochs", "8", "--batch-size", "200", "--lr", "0.2",
              "--momentum", "0.9", "--schedule", "cosine"]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "idx-softmax"))
    ap.add_argument("--skip-sklearn", action="store_true",
                    help="only the overhead measurement (no scikit-learn fits)")
    ap.add_argument("--only-float", action="store_true",
                    help="only the float-input measurement (part 4)")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    import numpy as np
    import sklearn
    from sklearn.exceptions import ConvergenceWarning

    import idx_softmax
    from idx_softmax import MLPClassifier, SoftmaxRegression, load_idx

    X8, y, X8t, yt = load_idx()
    X32 = X8.astype(np.float32) / np.float32(255)
    X32t = X8t.astype(np.float32) / np.float32(255)
    cpus = idx_softmax.available_cpus()
    print(f"# {X8.shape[0]} train, {X8t.shape[0]} test; {cpus} CPU(s); "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__}")
    results = {"cpus": cpus, "numpy": np.__version__, "sklearn": sklearn.__version__}
    if args.only_float:
        float_input(args, np, X8, y, X32, results)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(results, f, indent=2)
        return

    # 1. converged recipe vs LogisticRegression, float32 input
    times = []
    for _ in range(args.runs):
        s, ours = timed(lambda: SoftmaxRegression(**RECIPE).fit(X32, y))
        times.append(s)
    ours_s, ours_acc = statistics.median(times), ours.score(X32t, yt)
    print(f"softmax  idx_softmax float32  {ours_s:.3f} s (median of {args.runs})  "
          f"accuracy {ours_acc:.4f}  kernel {ours.kernel_}")
    results["softmax_ours"] = {"seconds": ours_s, "accuracy": ours_acc, "kernel": ours.kernel_}
    if not args.skip_sklearn:
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk_s, sk = timed(lambda: LogisticRegression().fit(X32, y))
        sk_acc = sk.score(X32t, yt)
        print(f"softmax  sklearn LogisticRegression()  {sk_s:.3f} s  accuracy {sk_acc:.4f}  "
              f"n_iter {int(np.max(sk.n_iter_))}")
        print(f"softmax  speedup {sk_s / ours_s:.1f}x (target >= 50x)  accuracy difference "
              f"{ours_acc - sk_acc:+.4f} (target within +-0.002)")
        results["softmax_sklearn"] = {"seconds": sk_s, "accuracy": sk_acc}
        results["softmax_speedup"] = sk_s / ours_s

    # 2. MLP per epoch, same settings: ours on float32 (as scikit-learn gets)
    # and on the uint8 views load_idx gives (fused first layer)
    epochs = 2
    ours_ep = {}
    for label, Xa, Xat in [("float32", X32, X32t), ("uint8", X8, X8t)]:
        times = []
        for _ in range(max(1, args.runs // 2)):
            s, mlp = timed(
                lambda: MLPClassifier(hidden_layer_sizes=(256,), epochs=epochs).fit(Xa, y))
            times.append(s)
        ours_ep[label] = statistics.median(times) / epochs
        acc = mlp.score(Xat, yt)
        print(f"mlp      idx_softmax MLPClassifier((256,)) {label}  {ours_ep[label]:.3f} s/epoch  "
              f"accuracy after {epochs} {acc:.4f}  kernel {mlp.kernel_}")
        results[f"mlp_ours_{label}"] = {"seconds_per_epoch": ours_ep[label], "accuracy": acc,
                                        "kernel": mlp.kernel_}
    if not args.skip_sklearn:
        from sklearn.neural_network import MLPClassifier as SkMLP

        sk_mlp = SkMLP(hidden_layer_sizes=(256,), solver="sgd", batch_size=100,
                       learning_rate="constant", learning_rate_init=0.1, momentum=0.0,
                       nesterovs_momentum=False, alpha=0.0, max_iter=epochs, shuffle=True,
                       tol=0.0, n_iter_no_change=10**9, random_state=42)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk_s, _ = timed(lambda: sk_mlp.fit(X32, y))
        sk_ep = sk_s / sk_mlp.n_iter_
        sk_mlp_acc = sk_mlp.score(X32t, yt)
        print(f"mlp      sklearn MLPClassifier((256,), sgd)  {sk_ep:.3f} s/epoch  "
              f"accuracy after {sk_mlp.n_iter_} {sk_mlp_acc:.4f}")
        print(f"mlp      speedup per epoch {sk_ep / ours_ep['float32']:.1f}x on float32, "
              f"{sk_ep / ours_ep['uint8']:.1f}x on uint8 (target >= 2.5x)")
        results["mlp_sklearn"] = {"seconds_per_epoch": sk_ep, "accuracy": sk_mlp_acc}
        results["mlp_speedup"] = {k: sk_ep / v for k, v in ours_ep.items()}

    # 3. overhead of a fit from Python vs the CLI's training loop (uint8)
    py_s, cli_s = [], []
    for _ in range(2 * args.runs + 1):
        s, ours8 = timed(lambda: SoftmaxRegression(**RECIPE).fit(X8, y))
        py_s.append(s)
        out = subprocess.run([args.bin, "--json", *CLI_RECIPE], capture_output=True,
                             text=True, check=True)
        run = json.loads(out.stdout)
        cli_s.append(run["train_seconds"])
    same = ours8.weights_digest_ == run["weights_digest"]
    py_m, cli_m = statistics.median(py_s), statistics.median(cli_s)
    print(f"overhead Python fit {py_m:.4f} s vs CLI training loop {cli_m:.4f} s "
          f"(medians of {len(py_s)}, interleaved): {100 * (py_m / cli_m - 1):+.1f}% "
          f"(target within 10%); same weights: {same}")
    results["overhead"] = {"python_fit_seconds": py_m, "cli_train_seconds": cli_m,
                           "ratio": py_m / cli_m, "same_digest": same}
    float_input(args, np, X8, y, X32, results)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


def float_input(args, np, X8, y, X32, results):
    """Part 4: uint8 vs float32 vs float64 input, same fits, interleaved."""
    from idx_softmax import MLPClassifier, SoftmaxRegression

    X64 = X32.astype(np.float64)
    inputs = [("uint8", X8), ("float32", X32), ("float64", X64)]
    fits = [
        ("softmax recipe", lambda X: SoftmaxRegression(**RECIPE).fit(X, y)),
        ("mlp 1 epoch", lambda X: MLPClassifier(hidden_layer_sizes=(256,), epochs=1).fit(X, y)),
    ]
    for name, fit in fits:
        times = {label: [] for label, _ in inputs}
        kernels, digests = {}, {}
        for r in range(args.runs):
            order = inputs if r % 2 == 0 else inputs[::-1]
            for label, X in order:
                s, est = timed(lambda: fit(X))
                times[label].append(s)
                kernels[label] = est.kernel_
                digests[label] = est.weights_digest_
        base = statistics.median(times["uint8"])
        for label, _ in inputs:
            m = statistics.median(times[label])
            print(f"float    {name:15s} {label:8s} {m:.4f} s (median of {args.runs}, "
                  f"min {min(times[label]):.4f})  x{m / base:.3f} of uint8 (target <= 1.15)  "
                  f"kernel {kernels[label]}")
            results[f"float_{name.replace(' ', '_')}_{label}"] = {
                "seconds": m, "ratio_to_uint8": m / base, "kernel": kernels[label]}
        print(f"float    {name:15s} float32 and float64 give the same weights: "
              f"{digests['float32'] == digests['float64']}")


if __name__ == "__main__":
    main()
