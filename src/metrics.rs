//! Evaluation: mean cross-entropy and argmax accuracy over a split.

use crate::data::Samples;
use crate::infer::Rows;
use crate::kernels::{softmax_ce, KernelPath};
use crate::nn::Network;

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
    (softmax_ce::log_sum_exp(z) - z[label] as f64, best)
}

/// How many of the most probable classes `eval`'s top-k accuracy counts
/// by default.
pub const DEFAULT_TOP_K: usize = 5;

/// Evaluates `net` on all of `samples`, in parallel on the current rayon
/// pool.
pub fn evaluate(net: &Network, samples: &Samples<'_>, path: KernelPath) -> Evaluation {
    evaluate_top_k(net, samples, Rows::All, path, 1).0
}

/// Evaluates `net` on the samples `rows` of `samples`.
pub fn evaluate_rows(
    net: &Network,
    samples: &Samples<'_>,
    path: KernelPath,
    rows: &[u32],
) -> Evaluation {
    evaluate_top_k(net, samples, Rows::Only(rows), path, 1).0
}

/// The evaluation of `net` on `rows` of `samples`, and how many rows rank
/// their label among the `k` most probable classes ([`top_k_correct`]),
/// from one pass of batch inference ([`crate::infer::map_chunks`]).
pub fn evaluate_top_k(
    net: &Network,
    samples: &Samples<'_>,
    rows: Rows<'_>,
    path: KernelPath,
    k: usize,
) -> (Evaluation, usize) {
    let c = net.classes();
    let n = rows.len(samples.len());
    // Each chunk returns its loss sum, its top-k count and its (label,
    // prediction) pairs: O(rows) memory, where a per-chunk confusion
    // matrix would be O(C²).
    let chunks = crate::infer::map_chunks(net, samples, rows, path, |idx, logits| {
        let mut loss = 0.0;
        let mut pairs = Vec::with_capacity(idx.len());
        for (z, &r) in logits.chunks_exact(c).zip(idx) {
            let label = samples.label(r as usize);
            let (l, predicted) = row_loss_and_argmax(z, label as usize);
            loss += l;
            pairs.push((label, predicted as u32));
        }
        let top = top_k_correct(logits, c, idx.iter().map(|&r| samples.label(r as usize)), k);
        (loss, top, pairs)
    });
    // Reduce in chunk order: the same sum whatever the thread count.
    let mut loss = 0.0;
    let mut top = 0;
    let mut confusion = vec![0u64; c * c];
    for (l, t, pairs) in &chunks {
        loss += l;
        top += t;
        for &(label, predicted) in pairs {
            confusion[label as usize * c + predicted as usize] += 1;
        }
    }
    let correct = (0..c).map(|j| confusion[j * c + j]).sum::<u64>() as usize;
    let ev = Evaluation {
        loss: loss / n.max(1) as f64,
        accuracy: correct as f64 / n.max(1) as f64,
        correct,
        total: n,
        classes: c,
        confusion,
    };
    (ev, top)
}

/// F1 scores from an evaluation's confusion matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct F1Scores {
    /// Per class, `2·TP / (2·TP + FP + FN)`; NaN for a class that has no
    /// sample and was never predicted.
    pub per_class: Vec<f64>,
    /// The mean over the classes with a defined F1.
    pub macro_f1: f64,
    /// The mean weighted by each class's number of samples.
    pub weighted_f1: f64,
}

/// Per-class, macro and support-weighted F1 of `ev`.
pub fn f1_scores(ev: &Evaluation) -> F1Scores {
    let c = ev.classes;
    let per_class: Vec<f64> = (0..c)
        .map(|k| {
            let tp = ev.confusion[k * c + k] as f64;
            let actual: u64 = ev.confusion[k * c..(k + 1) * c].iter().sum();
            let predicted: u64 = (0..c).map(|t| ev.confusion[t * c + k]).sum();
            let denom = actual as f64 + predicted as f64;
            if denom == 0.0 {
                f64::NAN
            } else {
                2.0 * tp / denom
            }
        })
        .collect();
    let defined: Vec<f64> = per_class.iter().copied().filter(|f| !f.is_nan()).collect();
    let macro_f1 = defined.iter().sum::<f64>() / defined.len().max(1) as f64;
    let (mut sum, mut total) = (0.0, 0u64);
    for (k, f) in per_class.iter().enumerate() {
        let support: u64 = ev.confusion[k * c..(k + 1) * c].iter().sum();
        if support > 0 {
            sum += f * support as f64;
            total += support;
        }
    }
    F1Scores {
        per_class,
        macro_f1,
        weighted_f1: sum / total.max(1) as f64,
    }
}

/// How many rows of `logits` (`classes` per row) rank their label among the
/// `k` highest. Ties rank the lower class first, as the argmax does, so
/// with `k` = 1 this counts exactly what [`Evaluation::correct`] counts.
pub fn top_k_correct(
    logits: &[f32],
    classes: usize,
    labels: impl IntoIterator<Item = u32>,
    k: usize,
) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(z, label)| {
            let l = *label as usize;
            let zl = z[l];
            let above = z
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > zl || (v == zl && j < l))
                .count();
            above < k
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_from_the_confusion_matrix() {
        // 3 classes; class 2 has one sample and is never predicted.
        let ev = Evaluation {
            loss: 0.0,
            accuracy: 0.75,
            correct: 9,
            total: 12,
            classes: 3,
            confusion: vec![5, 1, 0, 1, 4, 0, 1, 0, 0],
        };
        let f = f1_scores(&ev);
        // Class 0: TP 5, 6 actual, 7 predicted: 10/13.
        assert!((f.per_class[0] - 10.0 / 13.0).abs() < 1e-12);
        assert!((f.per_class[1] - 8.0 / 10.0).abs() < 1e-12);
        assert_eq!(f.per_class[2], 0.0);
        assert!((f.macro_f1 - (10.0 / 13.0 + 0.8) / 3.0).abs() < 1e-12);
        let w = (6.0 * 10.0 / 13.0 + 5.0 * 0.8) / 12.0;
        assert!((f.weighted_f1 - w).abs() < 1e-12);
    }

    #[test]
    fn top_k_counts_ties_like_argmax() {
        let logits = [1.0, 3.0, 2.0, 0.5, 0.5, 0.5];
        assert_eq!(top_k_correct(&logits, 3, [1, 0], 1), 2);
        assert_eq!(top_k_correct(&logits, 3, [2, 2], 1), 0);
        assert_eq!(top_k_correct(&logits, 3, [2, 2], 2), 1);
        assert_eq!(top_k_correct(&logits, 3, [0, 2], 3), 2);
    }
}
