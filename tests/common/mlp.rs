//! An f64 reference MLP, written from the textbook equations and nothing
//! of the engine: `Linear → ReLU → … → Linear`, mean softmax
//! cross-entropy, plain backpropagation, and PyTorch's SGD.
//!
//! Parameters are one flat `Vec<f64>` in the engine's store order (for
//! each layer, W `[out, in]` row-major, then b `[out]`), so a
//! [`idx_softmax::nn::Network`]'s buffer converts element for element.

/// `(weight offset, bias offset)` of each linear layer in the flat buffer.
pub fn offsets(sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut at = 0;
    sizes
        .windows(2)
        .map(|w| {
            let (inp, out) = (w[0], w[1]);
            let o = (at, at + out * inp);
            at += out * inp + out;
            o
        })
        .collect()
}

/// Number of parameters of a network of `sizes`.
pub fn param_count(sizes: &[usize]) -> usize {
    sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
}

/// Every layer's pre-activations `Z_l` (n × s_l, l = 1..=L) and
/// activations `A_l` (`A_0 = x`, `A_l = relu(Z_l)` for hidden layers,
/// `A_L = Z_L`, the logits).
pub struct Forward {
    pub z: Vec<Vec<f64>>,
    pub a: Vec<Vec<f64>>,
}

/// The forward pass of `n` rows `x` (n × K).
pub fn forward(sizes: &[usize], params: &[f64], x: &[f64], n: usize) -> Forward {
    assert_eq!(params.len(), param_count(sizes));
    assert_eq!(x.len(), n * sizes[0]);
    let depth = sizes.len() - 1;
    let mut a = vec![x.to_vec()];
    let mut z = vec![Vec::new()];
    for (l, &(wo, bo)) in offsets(sizes).iter().enumerate() {
        let (inp, out) = (sizes[l], sizes[l + 1]);
        let prev = &a[l];
        let mut zl = vec![0.0; n * out];
        for r in 0..n {
            for o in 0..out {
                let mut s = params[bo + o];
                for i in 0..inp {
                    s += prev[r * inp + i] * params[wo + o * inp + i];
                }
                zl[r * out + o] = s;
            }
        }
        let al = if l + 1 < depth {
            zl.iter().map(|&v| v.max(0.0)).collect()
        } else {
            zl.clone()
        };
        z.push(zl);
        a.push(al);
    }
    Forward { z, a }
}

/// Per-row cross-entropy of `logits` (n × C) and `softmax − onehot`.
fn softmax_ce(logits: &[f64], labels: &[usize], c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut losses = Vec::with_capacity(labels.len());
    let mut g = vec![0.0; logits.len()];
    for (r, &y) in labels.iter().enumerate() {
        let z = &logits[r * c..(r + 1) * c];
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        losses.push(m + s.ln() - z[y]);
        for j in 0..c {
            g[r * c + j] = (z[j] - m).exp() / s - if j == y { 1.0 } else { 0.0 };
        }
    }
    (losses, g)
}

/// The mean cross-entropy of the network on `x` (n × K) with `labels`.
pub fn loss(sizes: &[usize], params: &[f64], x: &[f64], labels: &[usize]) -> f64 {
    let n = labels.len();
    let f = forward(sizes, params, x, n);
    let (losses, _) = softmax_ce(&f.a[sizes.len() - 1], labels, sizes[sizes.len() - 1]);
    losses.iter().sum::<f64>() / n as f64
}

/// The mean loss and its gradient with respect to every parameter (flat,
/// in store order), by backpropagation.
pub fn gradient(sizes: &[usize], params: &[f64], x: &[f64], labels: &[usize]) -> (f64, Vec<f64>) {
    let n = labels.len();
    let depth = sizes.len() - 1;
    let f = forward(sizes, params, x, n);
    let c = sizes[depth];
    let (losses, g) = softmax_ce(&f.a[depth], labels, c);
    // dL/dZ_L = (p − onehot) / n.
    let mut delta: Vec<f64> = g.iter().map(|v| v / n as f64).collect();
    let offs = offsets(sizes);
    let mut grad = vec![0.0; params.len()];
    for l in (0..depth).rev() {
        let (inp, out) = (sizes[l], sizes[l + 1]);
        let (wo, bo) = offs[l];
        let prev = &f.a[l];
        for r in 0..n {
            for o in 0..out {
                let d = delta[r * out + o];
                grad[bo + o] += d;
                for i in 0..inp {
                    grad[wo + o * inp + i] += d * prev[r * inp + i];
                }
            }
        }
        if l > 0 {
            // dL/dA_{l} = delta · W, then through the ReLU of Z_l.
            let zprev = &f.z[l];
            let mut next = vec![0.0; n * inp];
            for r in 0..n {
                for i in 0..inp {
                    if zprev[r * inp + i] > 0.0 {
                        let mut s = 0.0;
                        for o in 0..out {
                            s += delta[r * out + o] * params[wo + o * inp + i];
                        }
                        next[r * inp + i] = s;
                    }
                }
            }
            delta = next;
        }
    }
    (losses.iter().sum::<f64>() / n as f64, grad)
}

/// PyTorch's SGD (dampening 0) on every parameter, in f64.
#[derive(Clone, Copy, Debug)]
pub struct RefSgd {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

impl RefSgd {
    pub fn from(sgd: &idx_softmax::optim::Sgd) -> Self {
        Self {
            momentum: sgd.momentum as f64,
            nesterov: sgd.nesterov,
            weight_decay: sgd.weight_decay as f64,
        }
    }

    /// One update of `params` at learning rate `lr`, `buf` the momentum
    /// buffer (zeros before the first step).
    pub fn step(&self, lr: f64, params: &mut [f64], grad: &[f64], buf: &mut [f64]) {
        let (m, wd) = (self.momentum, self.weight_decay);
        for i in 0..params.len() {
            let g = grad[i] + wd * params[i];
            let d = if m == 0.0 {
                g
            } else {
                buf[i] = m * buf[i] + g;
                if self.nesterov {
                    g + m * buf[i]
                } else {
                    buf[i]
                }
            };
            params[i] -= lr * d;
        }
    }
}

/// Rows `rows` of an f32 matrix (n × k), gathered as f64.
pub fn gather(x: &[f32], k: usize, rows: &[u32]) -> Vec<f64> {
    rows.iter()
        .flat_map(|&r| {
            x[r as usize * k..(r as usize + 1) * k]
                .iter()
                .map(|&v| v as f64)
        })
        .collect()
}

/// The largest |got − want| relative to `1 + |want|`, and where.
pub fn worst_error(got: &[f32], want: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| ((g as f64 - w).abs() / (1.0 + w.abs()), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// A learnable synthetic f32 dataset: `n` rows of `k` features, each a
/// random class prototype in [-1, 1) plus noise in [-0.6, 0.6), and its
/// labels (classes drawn uniformly).
pub fn synthetic_f32(n: usize, k: usize, c: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let protos: Vec<Vec<f32>> = (0..c)
        .map(|_| (0..k).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mut x = Vec::with_capacity(n * k);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let label = rng.random_range(0..c);
        y.push(label as u8);
        x.extend(
            protos[label]
                .iter()
                .map(|&p| p + rng.random_range(-0.6..0.6f32)),
        );
    }
    (x, y)
}

/// `Samples` over f32 rows `x` (n × k) and u8 labels.
pub fn f32_samples<'a>(
    x: &'a [f32],
    labels: &'a [u8],
    k: usize,
    c: usize,
) -> idx_softmax::data::samples::Samples<'a> {
    use idx_softmax::data::samples::{LabelValues, Pixels, Samples};
    Samples::new(
        Pixels::F32(std::borrow::Cow::Borrowed(x)),
        LabelValues::U8(labels),
        k,
        c,
        vec![],
    )
    .unwrap()
}

/// `Samples` over u8 rows `x` (n × k) and u8 labels.
pub fn u8_samples<'a>(
    x: &'a [u8],
    labels: &'a [u8],
    k: usize,
    c: usize,
) -> idx_softmax::data::samples::Samples<'a> {
    use idx_softmax::data::samples::{LabelValues, Pixels, Samples};
    Samples::new(Pixels::U8(x), LabelValues::U8(labels), k, c, vec![]).unwrap()
}
