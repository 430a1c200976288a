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

use rayon::prelude::*;

/// Loss of one row, writing `g = (softmax(z) − onehot(label)) · inv_batch`.
///
/// # Panics
/// If `label ≥ z.len()` or the lengths of `z` and `g` differ.
#[inline]
pub fn row(z: &[f32], label: usize, inv_batch: f32, g: &mut [f32]) -> f32 {
    assert_eq!(z.len(), g.len(), "softmax_ce::row: length mismatch");
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0f32;
    for (gi, &zi) in g.iter_mut().zip(z) {
        let e = (zi - m).exp();
        *gi = e;
        s += e;
    }
    let scale = inv_batch / s;
    for gi in g.iter_mut() {
        *gi *= scale;
    }
    g[label] -= inv_batch;
    m + s.ln() - z[label]
}

/// Rows per parallel task in [`rows`]: fixed, so the split never depends
/// on the thread count.
pub const ROWS_PER_TASK: usize = 16;

/// [`row`] for every row of `logits` (B × C), in parallel on the current
/// rayon pool. Writes `g` (B × C) and the per-row `losses` (B).
pub fn rows(
    logits: &[f32],
    labels: &[u32],
    c: usize,
    inv_batch: f32,
    g: &mut [f32],
    losses: &mut [f32],
) {
    let b = labels.len();
    assert_eq!(logits.len(), b * c, "logits must be B × C");
    assert_eq!(g.len(), b * c, "g must be B × C");
    assert_eq!(losses.len(), b, "losses must have B entries");
    g.par_chunks_mut(ROWS_PER_TASK * c)
        .zip(losses.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, (g, losses))| {
            let r0 = task * ROWS_PER_TASK;
            for (i, (g_row, loss)) in g.chunks_exact_mut(c).zip(losses.iter_mut()).enumerate() {
                let r = r0 + i;
                *loss = row(
                    &logits[r * c..(r + 1) * c],
                    labels[r] as usize,
                    inv_batch,
                    g_row,
                );
            }
        });
}
