//! Evaluation: mean cross-entropy and argmax accuracy over a split.

use rayon::prelude::*;

use crate::dataset::{Split, U8_SCALE};
use crate::kernels::{fused, gemm, KernelPath};
use crate::model::Model;

/// Rows per evaluation task: fixed, so the order in which losses are summed
/// never depends on the thread count.
const EVAL_ROWS: usize = 250;

/// Loss, accuracy and confusion matrix of a model on a set of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of samples whose argmax logit is the label.
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    /// Number of classes (C).
    pub classes: usize,
    /// C × C counts, row = true label, column = predicted class.
    pub confusion: Vec<u64>,
}

impl Evaluation {
    /// Of the samples predicted as `class`, the fraction that are (NaN if
    /// none was predicted).
    pub fn precision(&self, class: usize) -> f64 {
        let c = self.classes;
        let predicted: u64 = (0..c).map(|t| self.confusion[t * c + class]).sum();
        self.confusion[class * c + class] as f64 / predicted as f64
    }

    /// Of the samples of `class`, the fraction predicted as such (NaN if
    /// the class has no sample).
    pub fn recall(&self, class: usize) -> f64 {
        let c = self.classes;
        let actual: u64 = self.confusion[class * c..(class + 1) * c].iter().sum();
        self.confusion[class * c + class] as f64 / actual as f64
    }
}

/// How many times the loss of a uniform guess (ln C) a training loss may
/// reach before [`diverged`] calls the run diverged.
pub const DIVERGENCE_FACTOR: f64 = 100.0;

/// Whether a (finite) mean training loss means the run has diverged: it has
/// grown far beyond where training starts, the loss of a uniform guess,
/// ln C (2.30 for 10 classes), to over [`DIVERGENCE_FACTOR`] × ln C. A
/// learning rate that is far too large (`--lr 1e30`) ends there.
pub fn diverged(train_loss: f64, classes: usize) -> bool {
    train_loss > DIVERGENCE_FACTOR * (classes.max(2) as f64).ln()
}

/// Cross-entropy of one row of logits and its argmax (the first maximum).
pub fn row_loss_and_argmax(z: &[f32], label: usize) -> (f64, usize) {
    let (mut best, mut m) = (0, f32::NEG_INFINITY);
    for (j, &v) in z.iter().enumerate() {
        if v > m {
            best = j;
            m = v;
        }
    }
    let s: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
    (m as f64 + s.ln() - z[label] as f64, best)
}

/// Logits of the given rows of `split`, computed with `path` (the gemm
/// path gathers into `xbuf` first). u8 images on a fused path are read in
/// place.
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

/// Evaluates `model` on all of `split`, in parallel on the current rayon
/// pool.
pub fn evaluate(model: &Model, split: &Split, path: KernelPath) -> Evaluation {
    let n = split.len();
    evaluate_chunks(model, split, path, n, |chunk, rows| {
        let r0 = chunk * EVAL_ROWS;
        rows.extend(r0 as u32..(r0 + EVAL_ROWS).min(n) as u32);
    })
}

/// Evaluates `model` on the samples `rows` of `split`.
pub fn evaluate_rows(model: &Model, split: &Split, path: KernelPath, rows: &[u32]) -> Evaluation {
    evaluate_chunks(model, split, path, rows.len(), |chunk, out| {
        out.extend_from_slice(&rows[chunk * EVAL_ROWS..((chunk + 1) * EVAL_ROWS).min(rows.len())]);
    })
}

/// The shared engine of the two above: `n` samples in chunks of
/// [`EVAL_ROWS`], `fill(chunk, rows)` listing each chunk's sample indices.
fn evaluate_chunks(
    model: &Model,
    split: &Split,
    path: KernelPath,
    n: usize,
    fill: impl Fn(usize, &mut Vec<u32>) + Sync,
) -> Evaluation {
    let c = model.classes;
    let labels = &split.labels;
    // Each chunk returns its loss sum and its (label, prediction) pairs:
    // O(rows) memory, where a per-chunk confusion matrix would be O(C²).
    let chunks: Vec<(f64, Vec<(u32, u32)>)> = (0..n.div_ceil(EVAL_ROWS))
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(rows, logits, xbuf): &mut (Vec<u32>, Vec<f32>, Vec<f32>), chunk| {
                rows.clear();
                fill(chunk, rows);
                logits.resize(rows.len() * c, 0.0);
                logits_of_rows(model, split, path, rows, xbuf, logits);
                let mut loss = 0.0;
                let mut pairs = Vec::with_capacity(rows.len());
                for (z, &r) in logits.chunks_exact(c).zip(rows.iter()) {
                    let label = labels.get(r as usize);
                    let (l, predicted) = row_loss_and_argmax(z, label as usize);
                    loss += l;
                    pairs.push((label, predicted as u32));
                }
                (loss, pairs)
            },
        )
        .collect();
    // Reduce in chunk order: the same sum whatever the thread count.
    let mut loss = 0.0;
    let mut confusion = vec![0u64; c * c];
    for (l, pairs) in &chunks {
        loss += l;
        for &(label, predicted) in pairs {
            confusion[label as usize * c + predicted as usize] += 1;
        }
    }
    let correct = (0..c).map(|j| confusion[j * c + j]).sum::<u64>() as usize;
    Evaluation {
        loss: loss / n.max(1) as f64,
        accuracy: correct as f64 / n.max(1) as f64,
        correct,
        total: n,
        classes: c,
        confusion,
    }
}
