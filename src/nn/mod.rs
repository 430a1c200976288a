//! The network: a list of layers over one [`ParamStore`].
//!
//! A network of sizes `[K, H1, …, Hn, C]` is
//! `Linear(K→H1), ReLU, Linear(H1→H2), ReLU, …, Linear(Hn→C)`, followed by
//! softmax cross-entropy ([`crate::kernels::softmax_ce`]). Sizes `[K, C]`
//! are softmax regression, the notebook's model.
//!
//! Parameters are named as in PyTorch: `weight` and `bias` for softmax
//! regression (one `nn.Linear`), and `nn.Sequential`'s `0.weight`,
//! `0.bias`, `2.weight`, … for an MLP, the ReLUs taking the odd indices.
//! Every weight is `[out, in]`, row-major (`nn.Linear.weight`).
//!
//! Each layer is a `forward` / `backward` pair on a block of rows, outputs
//! first, dimensions last (llm.c's style). The training loop
//! ([`crate::run`]) calls them through a step plan; inference calls
//! [`Network::forward_rows`].

pub mod params;

use rand::Rng;
use rand_distr::StandardNormal;

use crate::data::samples::Samples;
use crate::kernels::{fused, gemm, KernelPath};
pub use params::{ParamStore, TensorSpec};

/// Largest accepted layer width (inputs, hidden units or classes).
pub const MAX_WIDTH: usize = 1 << 20;

/// One linear layer: `out = inp · Wᵀ + b`, W `[outputs, inputs]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    /// Tensor indices in the [`ParamStore`].
    pub weight: usize,
    pub bias: usize,
}

impl Linear {
    /// `out = inp · Wᵀ + b` for `rows` rows (`out`: rows × outputs,
    /// `inp`: rows × inputs).
    pub fn forward(
        &self,
        out: &mut [f32],
        inp: &[f32],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
    ) {
        let (w, b) = self.tensors(params, store);
        gemm::forward(inp, w, b, out, rows, self.inputs);
    }

    /// `d_inp = d_out · W` (rows × inputs): the gradient passed to the
    /// layer below. (The weight gradient is taken by column blocks in the
    /// training step; see [`Linear::weight_grad_cols`].)
    pub fn backward_input(
        &self,
        d_inp: &mut [f32],
        d_out: &[f32],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
    ) {
        let (w, _) = self.tensors(params, store);
        gemm::input_grad(d_out, w, d_inp, rows, self.outputs, self.inputs);
    }

    /// `dw = d_outᵀ · inp[:, col0 .. col0 + width]` (outputs × width) over
    /// `rows` rows: one column block of the weight gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad_cols(
        &self,
        dw: &mut [f32],
        d_out: &[f32],
        inp: &[f32],
        rows: usize,
        col0: usize,
        width: usize,
    ) {
        gemm::weight_grad_cols(inp, self.inputs, d_out, self.outputs, rows, col0, width, dw);
    }

    /// W and b within the flat buffer `params` (laid out as `store`).
    pub fn tensors<'p>(&self, params: &'p [f32], store: &ParamStore) -> (&'p [f32], &'p [f32]) {
        let t = store.tensors();
        (
            &params[t[self.weight].range()],
            &params[t[self.bias].range()],
        )
    }
}

/// ReLU, in place: `x = max(x, 0)`.
pub fn relu_forward(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// ReLU's backward, in place: `d[i] = 0` where the forward output
/// `out[i]` was not positive.
pub fn relu_backward(d: &mut [f32], out: &[f32]) {
    // A select, not a branch: the compiler turns it into a vector blend
    // (the branch compiled to a conditional store per element).
    for (g, &o) in d.iter_mut().zip(out) {
        *g = if o > 0.0 { *g } else { 0.0 };
    }
}

/// A layer of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Linear(Linear),
    Relu,
}

/// Why a network description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// A feed-forward network: layers and their parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// `[K, H1, …, C]`.
    sizes: Vec<usize>,
    layers: Vec<Layer>,
    params: ParamStore,
}

impl Network {
    /// The tensor names and shapes of a network of `sizes` (see the module
    /// documentation), in buffer order.
    pub fn tensor_specs(sizes: &[usize]) -> Vec<(String, Vec<usize>)> {
        let linears = sizes.len() - 1;
        let mut specs = Vec::with_capacity(2 * linears);
        for l in 0..linears {
            let (inp, out) = (sizes[l], sizes[l + 1]);
            let prefix = if linears == 1 {
                String::new()
            } else {
                format!("{}.", 2 * l)
            };
            specs.push((format!("{prefix}weight"), vec![out, inp]));
            specs.push((format!("{prefix}bias"), vec![out]));
        }
        specs
    }

    /// Checks `sizes`: at least `[K, C]`, every width in `1..=MAX_WIDTH`,
    /// at least 2 classes, and a parameter count that fits in memory
    /// arithmetic.
    pub fn check_sizes(sizes: &[usize]) -> Result<(), NetworkError> {
        if sizes.len() < 2 {
            return Err(NetworkError(format!(
                "a network needs inputs and classes, got sizes {sizes:?}"
            )));
        }
        if let Some(&w) = sizes.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return Err(NetworkError(format!(
                "layer width {w} is outside 1..={MAX_WIDTH}"
            )));
        }
        if sizes[sizes.len() - 1] < 2 {
            return Err(NetworkError("a classifier needs at least 2 classes".into()));
        }
        let total = sizes.windows(2).try_fold(0usize, |acc, w| {
            acc.checked_add(w[0].checked_mul(w[1])?.checked_add(w[1])?)
        });
        if total.is_none_or(|t| t > (1usize << 34)) {
            return Err(NetworkError(format!(
                "a network of sizes {sizes:?} has too many parameters"
            )));
        }
        Ok(())
    }

    /// A network of `sizes` with the given parameters (laid out as
    /// [`Network::tensor_specs`]).
    pub fn from_params(sizes: &[usize], params: ParamStore) -> Result<Self, NetworkError> {
        Self::check_sizes(sizes)?;
        let expected = Self::tensor_specs(sizes);
        let got: Vec<(String, Vec<usize>)> = params
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        if got != expected {
            return Err(NetworkError(format!(
                "parameters {got:?} do not match a network of sizes {sizes:?}"
            )));
        }
        let linears = sizes.len() - 1;
        let mut layers = Vec::with_capacity(2 * linears);
        for l in 0..linears {
            layers.push(Layer::Linear(Linear {
                inputs: sizes[l],
                outputs: sizes[l + 1],
                weight: 2 * l,
                bias: 2 * l + 1,
            }));
            if l + 1 < linears {
                layers.push(Layer::Relu);
            }
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            layers,
            params,
        })
    }

    /// A zero-initialised network of `sizes`.
    pub fn zeros(sizes: &[usize]) -> Result<Self, NetworkError> {
        Self::check_sizes(sizes)?;
        Self::from_params(sizes, ParamStore::zeros(&Self::tensor_specs(sizes)))
    }

    /// A freshly initialised network of `sizes`, drawing from `rng`.
    ///
    /// * Softmax regression (`[K, C]`) keeps the notebook's
    ///   `W = randn(K, C) / √K`, `b = 0`, drawn in W's K × C row-major
    ///   order as `torch.randn` fills it, so the default run's bits are
    ///   unchanged.
    /// * An MLP's layers draw `W = randn(out, in) · √(2 / in)` (He/Kaiming
    ///   normal, for the ReLU that follows) in `[out, in]` order, layer by
    ///   layer, except the last, which takes `randn / √in` (no ReLU
    ///   follows it); every bias starts at 0.
    pub fn init(sizes: &[usize], rng: &mut impl Rng) -> Result<Self, NetworkError> {
        let mut net = Self::zeros(sizes)?;
        let linears = sizes.len() - 1;
        if linears == 1 {
            let (k, c) = (sizes[0], sizes[1]);
            let scale = 1.0 / (k as f64).sqrt();
            let w = net.params.get_mut(0);
            for i in 0..k {
                for j in 0..c {
                    let z: f64 = rng.sample(StandardNormal);
                    w[j * k + i] = (z * scale) as f32;
                }
            }
            return Ok(net);
        }
        for (l, &fan_in) in sizes[..linears].iter().enumerate() {
            let gain = if l + 1 < linears { 2.0 } else { 1.0 };
            let scale = (gain / fan_in as f64).sqrt();
            for v in net.params.get_mut(2 * l) {
                let z: f64 = rng.sample(StandardNormal);
                *v = (z * scale) as f32;
            }
        }
        Ok(net)
    }

    /// `[K, H1, …, C]`.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The hidden widths (empty for softmax regression).
    pub fn hidden(&self) -> &[usize] {
        &self.sizes[1..self.sizes.len() - 1]
    }

    /// K.
    pub fn features(&self) -> usize {
        self.sizes[0]
    }

    /// C.
    pub fn classes(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// Whether this is plain softmax regression (one linear layer).
    pub fn is_linear(&self) -> bool {
        self.sizes.len() == 2
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The linear layers, in order.
    pub fn linears(&self) -> impl Iterator<Item = Linear> + '_ {
        self.layers.iter().filter_map(|l| match l {
            Layer::Linear(lin) => Some(*lin),
            Layer::Relu => None,
        })
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// [`ParamStore::digest`].
    pub fn digest(&self) -> String {
        self.params.digest()
    }

    /// "784-256-10".
    pub fn describe(&self) -> String {
        sizes_string(&self.sizes)
    }

    /// The logits (`rows.len()` × C) of samples `rows`.
    ///
    /// On u8 samples with a fused `path`, the first layer reads the rows in
    /// place with the fused kernel, exactly as the training step does;
    /// otherwise the rows are gathered to f32 first. The other layers run
    /// their forward passes. `ws` is scratch, grown as needed.
    pub fn forward_rows(
        &self,
        samples: &Samples<'_>,
        rows: &[u32],
        path: KernelPath,
        ws: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let k = self.features();
        assert_eq!(samples.features(), k, "forward_rows: feature count");
        assert_eq!(
            out.len(),
            rows.len() * self.classes(),
            "forward_rows: output length"
        );
        let n = rows.len();
        if let (Some(images), true) = (samples.as_u8(), path.is_fused()) {
            let (w, b) = (self.params.get(0), self.params.get(1));
            if self.is_linear() {
                fused::forward(path, images, k, rows, w, b, samples.scale(), out);
                return;
            }
            let mut h = std::mem::take(ws);
            h.resize(n * self.sizes[1], 0.0);
            fused::forward(path, images, k, rows, w, b, samples.scale(), &mut h);
            relu_forward(&mut h);
            self.forward_from(1, &h, n, &mut Vec::new(), out);
            *ws = h;
            return;
        }
        let mut x = std::mem::take(ws);
        x.resize(n * k, 0.0);
        for (row, &r) in x.chunks_exact_mut(k).zip(rows) {
            samples.row_into_f32(r as usize, row);
        }
        self.forward_from(0, &x, n, &mut Vec::new(), out);
        *ws = x;
    }

    /// The logits (n × C) of `n` rows of f32 inputs `x` (n × K), through
    /// every layer's forward pass. `ws` is scratch, grown as needed.
    pub fn forward_f32(&self, x: &[f32], n: usize, ws: &mut Vec<f32>, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.features(), "forward_f32: input length");
        self.forward_from(0, x, n, ws, out);
    }

    /// The logits of `n` rows given the input `x` of linear layer `first`
    /// (after the ReLU before it).
    fn forward_from(&self, first: usize, x: &[f32], n: usize, ws: &mut Vec<f32>, out: &mut [f32]) {
        assert_eq!(out.len(), n * self.classes(), "forward: output length");
        let p = self.params.data();
        let widest = self.hidden().iter().max().copied().unwrap_or(0);
        ws.resize(2 * n * widest, 0.0);
        let (mut cur, mut next) = ws.split_at_mut(n * widest);
        let linears: Vec<Linear> = self.linears().collect();
        let last = linears.len() - 1;
        for (i, lin) in linears.iter().enumerate().skip(first) {
            let inp: &[f32] = if i == first {
                x
            } else {
                &cur[..n * lin.inputs]
            };
            if i == last {
                lin.forward(out, inp, p, &self.params, n);
            } else {
                let o = &mut next[..n * lin.outputs];
                lin.forward(o, inp, p, &self.params, n);
                relu_forward(o);
                std::mem::swap(&mut cur, &mut next);
            }
        }
    }
}

/// `[784, 256, 10]` → "784-256-10".
pub fn sizes_string(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The inverse of [`sizes_string`].
pub fn parse_sizes(s: &str) -> Option<Vec<usize>> {
    let v: Option<Vec<usize>> = s.split('-').map(|d| d.trim().parse().ok()).collect();
    v.filter(|v| v.len() >= 2)
}
