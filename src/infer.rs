//! A model's outputs for one input: the one place that computes them, so a
//! different model type changes only [`logits`].

use crate::kernels::gemm;
use crate::model::Model;

/// The model's logits for one input of `model.features` features (scaled
/// as the training data is: u8 × [`crate::dataset::U8_SCALE`]).
///
/// # Panics
///
/// If `features.len()` is not the model's feature count.
pub fn logits(model: &Model, features: &[f32]) -> Vec<f32> {
    assert_eq!(features.len(), model.features, "feature count");
    let mut out = vec![0.0; model.classes];
    gemm::forward(
        features,
        &model.wt,
        &model.bias,
        &mut out,
        1,
        model.features,
    );
    out
}

/// Softmax of `z`, in f64.
pub fn softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Class indices by decreasing score; ties keep the lower class first, so
/// the first entry is the argmax evaluation counts.
pub fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_ranking() {
        let p = softmax(&[1.0, 3.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(ranked(&p), [1, 2, 0, 3]);
        assert_eq!(p[3], 0.0);
    }

    #[test]
    fn logits_are_x_w_plus_b() {
        let m = Model {
            features: 2,
            classes: 2,
            wt: vec![1.0, 2.0, -1.0, 0.5],
            bias: vec![0.25, 0.0],
        };
        assert_eq!(logits(&m, &[1.0, 1.0]), [3.25, -0.5]);
    }
}
