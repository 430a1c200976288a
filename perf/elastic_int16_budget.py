#!/usr/bin/env python3
"""Usage: perf/elastic_int16_budget.py [--sigma S] [--alpha A] [--bits B] [--side N] [--samples K]

A design study, not the engine's code: how far from the exact field an
elastic field smoothed in 16-bit integers would land, for the plan in
perf/README.md ("Augmentation", sixth session). The engine smooths in f32
(`src/data/augment.rs`, "Elastic smoothing"); its two folded products are
at the FP units' peak, and an integer version (int16 x int16 -> int32, two
multiply-adds per 32-bit lane: `vpmaddwd`, `vpdpwssd`) would do them in
half the instructions.

The scheme simulated, exactly (NumPy int64 holds every sum):
  * noise: odd integers u in +-(2^B - 1), uniform, i.e. (u / 2^B) on the
    midpoint grid of (-1, 1);
  * vertical pass on the folded halves (rows k and N-1-k summed and
    subtracted), weights round(P * 2^ev) with the largest ev that keeps
    |w| <= 32767 and every int32 value of the pass below 2^31 for any
    noise (the sums in any order, the unfold, and the left/right fold
    after it);
  * the left/right fold, then a rounding right shift to int16 sized from
    the largest value the fold can reach for any noise;
  * horizontal pass likewise (weights 2^eh), unfold, one f32 scale by
    alpha * 2^shift / 2^(ev + B + eh) after the conversion to f32.
Compared with alpha * G U G^T in float64 on the same noise (G: SciPy's
kernel, radius floor(4 sigma + 1/2), mode="constant"). Also prints the
error with only the vertical pass in integers.
Needs NumPy.
"""

import argparse

import numpy as np


def gaussian_matrix(n, sigma):
    r = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * np.arange(-r, r + 1) ** 2 / sigma**2)
    taps /= taps.sum()
    g = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if abs(i - j) <= r:
                g[i, j] = taps[i - j + r]
    return g


def int_weights(p, m, largest_input, unfold_factor):
    """The largest power-of-two scale 2^e at which the folded matrices P and
    M fit int16 and no int32 value of the pass can overflow: each product's
    running sum (sum of |w| times the largest input), and the unfold
    P·s ± M·d times `unfold_factor` (2 where a fold follows: its largest
    value is sum over a row of |w_P| + |w_M| times the largest input, twice
    over)."""
    for e in range(30, 0, -1):
        wp, wm = (np.round(x * 2.0**e) for x in (p, m))
        fits = max(abs(wp).max(), abs(wm).max()) <= 32767
        sums = max(abs(wp).sum(1).max(), abs(wm).sum(1).max()) * largest_input
        unfold = (abs(wp) + abs(wm)).sum(1).max() * largest_input * unfold_factor
        if fits and sums < 2**31 and unfold < 2**31:
            return e, wp.astype(np.int64), wm.astype(np.int64)
    raise SystemExit("no scale fits")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=34.0)
    ap.add_argument("--bits", type=int, default=12, help="noise bits B (at most 14)")
    ap.add_argument("--side", type=int, default=28, help="an even image side N")
    ap.add_argument("--samples", type=int, default=2000)
    o = ap.parse_args()
    n, h, bits = o.side, o.side // 2, o.bits
    if n < 2 or n % 2:
        ap.error(f"--side: {n} is not an even number of at least 2")
    if not 1 <= bits <= 14:
        ap.error(f"--bits: {bits} is not in 1..14 (the folded noise must fit int16)")
    if not o.sigma > 0 or o.samples < 1:
        ap.error("--sigma must be above 0 and --samples at least 1")
    g = gaussian_matrix(n, o.sigma)
    p = (g[:h, :h] + g[:h, ::-1][:, :h]) / 2
    m = (g[:h, :h] - g[:h, ::-1][:, :h]) / 2
    u = 2 * np.random.default_rng(1).integers(0, 2**bits, (o.samples, n, n)) + 1 - 2**bits
    exact = o.alpha * np.einsum("ij,njk,lk->nil", g, u / 2.0**bits, g)

    # The folded noise u_k +- u_(N-1-k) is at most 2 (2^B - 1) in size.
    folded_max = 2 * (2**bits - 1)
    ev, vp, vm = int_weights(p, m, folded_max, 2)
    s, d = u[:, :h] + u[:, ::-1][:, :h], u[:, :h] - u[:, ::-1][:, :h]
    yp, ym = np.einsum("ik,nkc->nic", vp, s), np.einsum("ik,nkc->nic", vm, d)
    y = np.concatenate([yp + ym, (yp - ym)[:, ::-1]], axis=1)
    vertical_only = o.alpha * np.einsum("nik,jk->nij", y / 2.0 ** (ev + bits), g)

    # The left/right fold of y, the horizontal pass's input: |y[i]| <=
    # (2^B - 1) * sum_j |coefficient of u_j| (rows i and N-1-i have the
    # coefficients vp +- vm), and the fold doubles it. int_weights kept it
    # below 2^31; the shift brings it to int16.
    per_noise = (abs(vp + vm) + abs(vp - vm)).sum(1).max()
    bound = 2 * (2**bits - 1) * per_noise
    assert bound < 2**31
    shift = max(0, int(np.ceil(np.log2((bound + 1) / 32767))))
    fs, fd = y[:, :, :h] + y[:, :, ::-1][:, :, :h], y[:, :, :h] - y[:, :, ::-1][:, :, :h]
    assert max(abs(fs).max(), abs(fd).max()) <= bound
    q = [(x + (1 << shift >> 1)) >> shift for x in (fs, fd)]
    assert max(abs(x).max() for x in q) <= 32767
    eh, hp, hm = int_weights(p, m, 32767, 1)
    op, om = np.einsum("nik,jk->nij", q[0], hp), np.einsum("nik,jk->nij", q[1], hm)
    out = np.concatenate([op + om, (op - om)[:, :, ::-1]], axis=2)
    assert abs(out).max() < 2**31
    # As a kernel would: to f32, then one f32 multiply.
    scale = np.float32(o.alpha * 2.0**shift / 2.0 ** (ev + bits + eh))
    both = out.astype(np.float32) * scale

    print(f"sigma {o.sigma} alpha {o.alpha} side {n} noise bits {bits}, {o.samples} fields; "
          f"field std {exact.std():.3f} px")
    print(f"vertical weights 2^{ev} (largest {max(abs(vp).max(), abs(vm).max())}), "
          f"int16 shift {shift} (largest value {max(abs(x).max() for x in q)}), "
          f"horizontal weights 2^{eh} (largest {max(abs(hp).max(), abs(hm).max())})")
    for name, f in [("vertical pass in integers", vertical_only), ("both passes in integers", both)]:
        e = abs(f - exact)
        print(f"{name:26s} |error| max {e.max():.2e} px, RMS {np.sqrt((e**2).mean()):.2e} px")


if __name__ == "__main__":
    main()
