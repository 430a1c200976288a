#!/usr/bin/env python3
"""Usage: perf/elastic_lowrank_budget.py [--sigma S] [--alpha A] [--side N] [--samples K] [--ranks LO-HI]

A design study, not the engine's code: what a low-rank elastic field would
cost and how far it would land from the exact one, for the decision in
perf/README.md ("Augmentation", seventh session). The engine computes
alpha * G U G^T exactly in f32 (`src/data/augment.rs`, "Elastic
smoothing"): two folded products per field, N^3 multiply-adds, near the
FP units' peak.

G (SciPy's kernel, radius floor(4 sigma + 1/2), mode="constant") is
symmetric and persymmetric, so its eigenvectors are even or odd about the
centre and its eigenvalues fall fast (sigma 4: 0.93, 0.75, 0.52, ...,
3e-4 at the 11th). Keeping the r largest, G ~ Q L Q^T, gives two ways to
make a field:

  * projected noise: alpha * Q L (Q^T U Q) L Q^T on the same uniform
    noise U: project both sides (each on the folded halves), scale the
    r x r core, expand both sides: r N^2 + r^2 N multiply-adds a field.
    The noise is still Simard's; the field differs from the exact one by
    the modes left out (the error printed);
  * drawn core: the r x r core Q^T U Q drawn directly as normal numbers of
    the same variance (1/3), then expanded: (r N^2 + r^2 N) / 2
    multiply-adds and r^2 normal draws instead of N^2 uniforms. Not
    Simard's noise any more, only the same covariance (up to the same
    truncation), so no per-sample error is printed for it.

Multiply-add counts are not times: the small products run below the
peak, and the noise, folds and conversions around them stay. The
largest error depends on the number of fields sampled. Needs NumPy.
"""

import argparse
import math
import os
import re
import sys

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# SciPy's kernel as a matrix, defined once for both studies.
from elastic_int16_budget import gaussian_matrix  # noqa: E402


def modes(g):
    """G's eigenpairs, largest |eigenvalue| first, each vector even or odd
    about the centre by construction: G is symmetric and persymmetric, so
    it splits into its action on even vectors (v = Jv) and on odd ones
    (v = -Jv), the two folded blocks the engine multiplies by. (Deflating
    G whole lets eigh mix near-equal tiny eigenvalues of both parities.)"""
    n = len(g)
    h = n // 2
    eye = np.eye(n)[:, :h]
    flip = eye[::-1]
    basis = {+1: (eye + flip) / np.sqrt(2), -1: (eye - flip) / np.sqrt(2)}
    lams, vecs, parity = [], [], []
    for sign, b in basis.items():
        lam, v = np.linalg.eigh(b.T @ g @ b)
        lams.append(lam)
        vecs.append(b @ v)
        parity += [sign] * h
    lam, q, parity = np.concatenate(lams), np.hstack(vecs), np.array(parity)
    order = np.argsort(-np.abs(lam), kind="stable")
    return lam[order], q[:, order], parity[order]


def main():
    ap = argparse.ArgumentParser(
        description="A design study: the cost and the error of a low-rank elastic field."
    )
    ap.add_argument("--sigma", type=float, default=4.0, help="0.25 to 64, the engine's range")
    ap.add_argument("--alpha", type=float, default=34.0, help="0 to 1000, the engine's range")
    ap.add_argument("--side", type=int, default=28, help="an even image side N, at most 256")
    ap.add_argument("--samples", type=int, default=2000, help="fields to sample, at least 1")
    ap.add_argument("--ranks", default="6-14", help="ranks to print, LO-HI")
    o = ap.parse_args()
    n = o.side
    if not 2 <= n <= 256 or n % 2:
        ap.error(f"--side: {n} is not an even number in 2..256")
    if not (math.isfinite(o.sigma) and 0.25 <= o.sigma <= 64):
        ap.error(f"--sigma: {o.sigma} is not in 0.25..64")
    if not (math.isfinite(o.alpha) and 0 <= o.alpha <= 1000):
        ap.error(f"--alpha: {o.alpha} is not in 0..1000")
    if not 1 <= o.samples or o.samples * n * n > 50_000_000:
        ap.error(f"--samples: {o.samples} is not in 1..{50_000_000 // (n * n)} for side {n}")
    m = re.fullmatch(r"(\d+)-(\d+)", o.ranks)
    if not m or not 1 <= int(m[1]) <= int(m[2]) <= n:
        ap.error(f"--ranks: {o.ranks!r} is not LO-HI with 1 <= LO <= HI <= {n}")
    lo, hi = int(m[1]), int(m[2])

    g = gaussian_matrix(n, o.sigma)
    lam, q, parity = modes(g)
    # The split is exact: the modes rebuild G, and each has its parity.
    assert np.allclose(q @ np.diag(lam) @ q.T, g, atol=1e-12)
    assert np.allclose(q[::-1], q * parity, atol=1e-12)

    rng = np.random.default_rng(0)
    u = rng.uniform(-1.0, 1.0, size=(o.samples, n, n))
    exact = o.alpha * np.einsum("ij,sjk,lk->sil", g, u, g)
    full = n**3
    print(
        f"sigma {o.sigma}, alpha {o.alpha}, {n} x {n}, {o.samples} fields; "
        f"field std {exact.std():.3f} px; today {full} multiply-adds a field"
    )
    print("eigenvalues: " + " ".join(f"{x:.2g}" for x in lam[: min(hi + 1, n)]))
    print("rank  even/odd  projected: max err px  RMS err px  mult-adds (x today)  drawn core: mult-adds (x today)")
    for r in range(lo, hi + 1):
        qr, lr = q[:, :r], lam[:r]
        core = np.einsum("ja,sjk,kb->sab", qr, u, qr)
        field = o.alpha * np.einsum("ia,a,sab,b,jb->sij", qr, lr, core, lr, qr)
        err = field - exact
        even = int(np.sum(parity[:r] > 0))
        projected = r * n * n + r * r * n
        drawn = projected // 2
        print(
            f"{r:4d}  {even:4d}/{r - even:<4d} {np.abs(err).max():21.2e} {np.sqrt((err**2).mean()):11.2e}"
            f" {projected:10d} ({projected / full:.2f})"
            f" {drawn:24d} ({drawn / full:.2f})"
        )


if __name__ == "__main__":
    main()
