//! Evaluation: mean cross-entropy and argmax accuracy over a split.

use rayon::prelude::*;

use crate::dataset::{Split, U8_SCALE};
use crate::kernels::{fused, gemm, KernelPath};
use crate::model::Model;

/// Rows per evaluation task: fixed, so the order in which losses are summed
/// never depends on the thread count.
const EVAL_ROWS: usize = 250;

/// Loss and accuracy of a model on one split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of samples whose argmax logit is the label.
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
}

/// Cross-entropy of one row of logits and whether its argmax (first
/// maximum) is `label`.
pub fn row_loss_and_hit(z: &[f32], label: usize) -> (f64, bool) {
    let (mut best, mut m) = (0, f32::NEG_INFINITY);
    for (j, &v) in z.iter().enumerate() {
        if v > m {
            best = j;
            m = v;
        }
    }
    let s: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
    (m as f64 + s.ln() - z[label] as f64, best == label)
}

/// Logits of rows `r0..r0 + rows.len()` of `split`, computed with `path`
/// (the gemm path gathers into `xbuf` first). u8 images on a fused path
/// are read in place.
pub fn logits_of_rows(
    model: &Model,
    split: &Split,
    path: KernelPath,
    rows: &[u32],
    xbuf: &mut Vec<f32>,
    out: &mut [f32],
) {
    let k = model.features;
    match split.images.as_u8() {
        Some(images) if path.is_fused() => {
            fused::forward(path, images, k, rows, &model.wt, &model.bias, U8_SCALE, out)
        }
        _ => {
            xbuf.resize(rows.len() * k, 0.0);
            for (x, &r) in xbuf.chunks_exact_mut(k).zip(rows) {
                split.images.row_into_f32(r as usize, x);
            }
            gemm::forward(xbuf, &model.wt, &model.bias, out, rows.len(), k);
        }
    }
}

/// Evaluates `model` on `split` in parallel on the current rayon pool.
pub fn evaluate(model: &Model, split: &Split, path: KernelPath) -> Evaluation {
    let n = split.len();
    let c = model.classes;
    let labels = split.labels.as_slice();
    let chunks: Vec<(f64, usize)> = (0..n.div_ceil(EVAL_ROWS))
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(rows, logits, xbuf): &mut (Vec<u32>, Vec<f32>, Vec<f32>), chunk| {
                let r0 = chunk * EVAL_ROWS;
                let r1 = (r0 + EVAL_ROWS).min(n);
                rows.clear();
                rows.extend(r0 as u32..r1 as u32);
                logits.resize(rows.len() * c, 0.0);
                logits_of_rows(model, split, path, rows, xbuf, logits);
                let mut loss = 0.0;
                let mut correct = 0;
                for (z, &r) in logits.chunks_exact(c).zip(rows.iter()) {
                    let (l, hit) = row_loss_and_hit(z, labels[r as usize] as usize);
                    loss += l;
                    correct += hit as usize;
                }
                (loss, correct)
            },
        )
        .collect();
    let (loss, correct) = chunks
        .iter()
        .fold((0.0, 0), |(l, c), &(cl, cc)| (l + cl, c + cc));
    Evaluation {
        loss: loss / n.max(1) as f64,
        accuracy: correct as f64 / n.max(1) as f64,
        correct,
        total: n,
    }
}
