//! Naive f64 references for every kernel, for the tests.
//!
//! Written for obviousness, not speed: triple loops, f64 accumulation, no
//! blocking. The fast kernels are checked against these.

/// `logits = X · W + bias` with W given as wt (C × K); X is B × K.
pub fn forward(x: &[f64], wt: &[f64], bias: &[f64], b: usize, k: usize) -> Vec<f64> {
    let c = bias.len();
    let mut out = vec![0.0; b * c];
    for r in 0..b {
        for j in 0..c {
            let mut s = bias[j];
            for p in 0..k {
                s += x[r * k + p] * wt[j * k + p];
            }
            out[r * c + j] = s;
        }
    }
    out
}

/// Per-row cross-entropy losses and `g = (softmax − onehot) / B`, computed
/// the textbook way (softmax, then −ln p_y) in f64.
pub fn softmax_ce(logits: &[f64], labels: &[usize], c: usize) -> (Vec<f64>, Vec<f64>) {
    let b = labels.len();
    let mut losses = vec![0.0; b];
    let mut g = vec![0.0; b * c];
    for r in 0..b {
        let z = &logits[r * c..(r + 1) * c];
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&v| (v - m).exp()).sum();
        for j in 0..c {
            let p = (z[j] - m).exp() / s;
            let y = if j == labels[r] { 1.0 } else { 0.0 };
            g[r * c + j] = (p - y) / b as f64;
        }
        losses[r] = -((z[labels[r]] - m).exp() / s).ln();
    }
    (losses, g)
}

/// `dwt = Gᵀ · X` (C × K).
pub fn weight_grad(x: &[f64], g: &[f64], b: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; c * k];
    for j in 0..c {
        for p in 0..k {
            let mut s = 0.0;
            for r in 0..b {
                s += g[r * c + j] * x[r * k + p];
            }
            out[j * k + p] = s;
        }
    }
    out
}

/// `db = Σ_rows g`.
pub fn bias_grad(g: &[f64], c: usize) -> Vec<f64> {
    let mut out = vec![0.0; c];
    for row in g.chunks_exact(c) {
        for j in 0..c {
            out[j] += row[j];
        }
    }
    out
}

/// Mean cross-entropy of the whole model on (x, labels): the function the
/// finite-difference gradient check differentiates.
pub fn mean_loss(x: &[f64], labels: &[usize], wt: &[f64], bias: &[f64], k: usize) -> f64 {
    let b = labels.len();
    let logits = forward(x, wt, bias, b, k);
    let (losses, _) = softmax_ce(&logits, labels, bias.len());
    losses.iter().sum::<f64>() / b as f64
}
