//! The model: `logits = x·W + b`, with W kept transposed as `wt` (C × K).

use rand::Rng;
use rand_distr::StandardNormal;
use sha2::{Digest, Sha256};

/// A linear layer from K features to C classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// K.
    pub features: usize,
    /// C.
    pub classes: usize,
    /// W transposed: C × K, row-major (PyTorch's `nn.Linear.weight`).
    pub wt: Vec<f32>,
    /// C entries.
    pub bias: Vec<f32>,
}

impl Model {
    /// The notebook's initialisation: `W = randn(K, C) / sqrt(K)`, `b = 0`.
    /// Draws are taken in W's row-major (K × C) order, as `torch.randn`
    /// fills a K × C tensor, and stored transposed.
    pub fn init(features: usize, classes: usize, rng: &mut impl Rng) -> Self {
        let mut wt = vec![0.0f32; classes * features];
        let scale = 1.0 / (features as f64).sqrt();
        for k in 0..features {
            for c in 0..classes {
                let z: f64 = rng.sample(StandardNormal);
                wt[c * features + k] = (z * scale) as f32;
            }
        }
        Self {
            features,
            classes,
            wt,
            bias: vec![0.0; classes],
        }
    }

    /// Hex SHA-256 of `wt` then `bias`, as little-endian f32 bytes: equal
    /// digests mean bitwise-equal models.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for v in self.wt.iter().chain(&self.bias) {
            h.update(v.to_le_bytes());
        }
        crate::dataset::hex(&h.finalize())
    }

    /// Whether every weight and bias is finite.
    pub fn is_finite(&self) -> bool {
        self.wt.iter().chain(&self.bias).all(|v| v.is_finite())
    }
}
