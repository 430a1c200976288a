//! A network's outputs for one input: the one place that computes them, so
//! a different network type changes only [`logits`].

use crate::nn::Network;

/// The network's logits for one input of `net.features()` features (scaled
/// as the training data is: u8 × [`crate::pixels::U8_SCALE`]).
///
/// # Panics
///
/// If `features.len()` is not the network's feature count.
pub fn logits(net: &Network, features: &[f32]) -> Vec<f32> {
    assert_eq!(features.len(), net.features(), "feature count");
    let mut out = vec![0.0; net.classes()];
    net.forward_f32(features, 1, &mut Vec::new(), &mut out);
    out
}

/// Softmax of `z`, in f64: evaluation's own
/// ([`crate::kernels::softmax_ce::probabilities`]).
pub use crate::kernels::softmax_ce::probabilities as softmax;

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
    fn logits_are_the_networks_forward_pass() {
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let net = Network::init(&[4, 3, 2], &mut rng).unwrap();
        let x = [0.5, -1.0, 0.25, 2.0];
        let mut want = vec![0.0; 2];
        net.forward_f32(&x, 1, &mut Vec::new(), &mut want);
        assert_eq!(logits(&net, &x), want);
    }
}
