//! Fused, numerically stable softmax + cross-entropy.
//!
//! For one row of logits z (C classes) with label y, over a batch of B rows:
//!
//! ```text
//! m    = max_c z_c                       (shift: exp never overflows)
//! s    = Σ_c exp(z_c − m)
//! p_c  = exp(z_c − m) / s                (softmax)
//! loss = −log p_y = m + ln s − z_y       (cross-entropy, no log of 0)
//! g_c  = (p_c − [c = y]) / B             (∂ mean loss / ∂ z_c)
//! ```
//!
//! The gradient of cross-entropy through softmax collapses to `p − onehot`,
//! which is why the two are fused: one pass over the row yields both the
//! loss and the gradient the weight update needs.
//!
//! Two entry points, one per job: [`block`] is the training step's (f32,
//! a block of rows, a vectorised exponential), [`log_sum_exp`] and
//! [`probabilities`] are evaluation's and prediction's (f64, one row).

/// `ln Σ_c e^{z_c}`, shifted by the maximum and summed in f64: the
/// evaluation's and prediction's softmax (`p_c = e^{z_c − lse}`,
/// `loss = lse − z_y`), where exactness matters more than speed.
pub fn log_sum_exp(z: &[f32]) -> f64 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
    m + s.ln()
}

/// Softmax probabilities of `z`, in f64 (through [`log_sum_exp`]).
pub fn probabilities(z: &[f32]) -> Vec<f64> {
    let lse = log_sum_exp(z);
    z.iter().map(|&v| (v as f64 - lse).exp()).collect()
}

/// `e^x` for `x ≤ 0`, to within 2 ulp (checked against f64 in tests), in
/// straight-line arithmetic that LLVM vectorises: Cody–Waite range
/// reduction `x = n·ln2 + r`, a degree-6 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Inputs below −87.3 give ≈1e−38 instead of a
/// subnormal or 0, which a softmax cannot tell apart.
///
/// It is written without `f32::round` or `mul_add` (library calls on
/// baseline x86-64) and without FMA contraction, so the scalar and every
/// vectorised form give the same bits.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
                                     // A select rather than f32::max, so that NaN passes through.
    let x = if x < -87.3 { -87.3 } else { x };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor/minimax coefficients for e^r on |r| ≤ ln2/2.
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = (p * r) * r + r + 1.0;
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    p * scale
}

/// [`exp_neg`] over a slice, in place.
#[inline(always)]
fn exp_neg_slice(v: &mut [f32]) {
    for x in v {
        *x = exp_neg(*x);
    }
}

/// [`exp_neg_slice`] compiled for AVX-512F: a safe `#[target_feature]` fn
/// (its only requirement is the ISA, so only its callers need `unsafe`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_neg_slice_avx512(v: &mut [f32]) {
    exp_neg_slice(v)
}

/// [`exp_neg_slice`] compiled for AVX2 and FMA (safe, as above).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_neg_slice_avx2(v: &mut [f32]) {
    exp_neg_slice(v)
}

/// Softmax-CE for a block of rows with a vectorised exponential: the fused
/// training step's softmax. `logits` and `g` are rows × C;
/// `label(i)` is row i's label. Writes `g = (p − onehot) · inv_batch` and
/// the per-row losses.
///
/// The exponentials of the whole block run as one vector loop (the rows
/// are contiguous), which is what makes this fast: C = 10 is too short a
/// vector on its own. Every training path (fused and gemm) uses it; the
/// gemm path passes `Portable` for the same bits on every CPU.
pub fn block(
    path: super::KernelPath,
    logits: &[f32],
    c: usize,
    label: impl Fn(usize) -> usize,
    inv_batch: f32,
    g: &mut [f32],
    losses: &mut [f32],
) {
    assert_eq!(logits.len(), losses.len() * c, "logits must be rows × C");
    assert_eq!(g.len(), logits.len(), "g must be rows × C");
    // Chunks of at most 256 rows, so the maxima fit in a stack array.
    const CHUNK: usize = 256;
    let mut maxima = [0.0f32; CHUNK];
    for (chunk, ((z, gs), loss)) in logits
        .chunks(CHUNK * c)
        .zip(g.chunks_mut(CHUNK * c))
        .zip(losses.chunks_mut(CHUNK))
        .enumerate()
    {
        let rows = loss.len();
        // 1. Shift each row by its maximum, so every exponent is ≤ 0.
        for r in 0..rows {
            let zr = &z[r * c..(r + 1) * c];
            let m = zr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            maxima[r] = m;
            for (gi, &zi) in gs[r * c..(r + 1) * c].iter_mut().zip(zr) {
                *gi = zi - m;
            }
        }
        // 2. One vector loop of exponentials over the whole chunk.
        match path {
            // SAFETY: each arm runs only when the CPU has that ISA.
            #[cfg(target_arch = "x86_64")]
            super::KernelPath::Avx512 if path.is_available() => unsafe { exp_neg_slice_avx512(gs) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            super::KernelPath::Avx2 if path.is_available() => unsafe { exp_neg_slice_avx2(gs) },
            _ => exp_neg_slice(gs),
        }
        // 3. Normalise, subtract the one-hot, and take the loss.
        for r in 0..rows {
            let y = label(chunk * CHUNK + r);
            let gr = &mut gs[r * c..(r + 1) * c];
            let s: f32 = gr.iter().sum();
            let scale = inv_batch / s;
            for gi in gr.iter_mut() {
                *gi *= scale;
            }
            gr[y] -= inv_batch;
            loss[r] = maxima[r] + s.ln() - z[r * c + y];
        }
    }
}
