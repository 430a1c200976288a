//! The network: its [`Architecture`], its layers, and one flat
//! [`ParamStore`].
//!
//! * [`arch`]: what a network is (conv blocks, hidden layers, classes) and
//!   how its tensors are named (as `nn.Sequential` numbers its modules);
//! * [`layers`]: the layers, each a `forward` / `backward_input` pair on a
//!   block of rows plus its weight gradient in fixed chunks;
//! * [`params`]: every parameter in one buffer, with named views.
//!
//! Every weight is laid out as PyTorch's (`[out, in]` for `nn.Linear`,
//! `[c_out, c_in, K, K]` for `nn.Conv2d`), row-major, so a checkpoint loads
//! into the `nn.Sequential` with `load_state_dict`. The training loop
//! ([`crate::run`]) runs the layers through a step plan
//! ([`crate::engine`]); inference calls [`Network::forward_rows`].

pub mod arch;
pub mod layers;
pub mod params;

use rand::Rng;
use rand_distr::StandardNormal;

use crate::data::Samples;
use crate::kernels::conv::{ConvGeom, PoolGeom};
use crate::kernels::{fused, KernelPath};
pub use arch::{parse_sizes, sizes_string, Architecture, ConvBlock, ImageShape, MAX_WIDTH};
pub use layers::{relu_backward, relu_forward, Conv, Layer, Linear, Pool};
pub use params::{ParamStore, TensorSpec};

/// Why a network description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// A feed-forward network: layers and their parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    arch: Architecture,
    /// The linear layers' sizes `[F, H1, …, C]` ([`Architecture::linear_sizes`]).
    sizes: Vec<usize>,
    layers: Vec<Layer>,
    params: ParamStore,
}

impl Network {
    /// A network of `arch` with the given parameters (laid out as
    /// [`Architecture::tensor_specs`]).
    pub fn from_params(arch: &Architecture, params: ParamStore) -> Result<Self, NetworkError> {
        arch.check()?;
        let expected = arch.tensor_specs();
        let got: Vec<(String, Vec<usize>)> = params
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        if got != expected {
            return Err(NetworkError(format!(
                "parameters {got:?} do not match a network {}",
                arch.describe()
            )));
        }
        let mut layers = Vec::new();
        let mut tensor = 0;
        if let Some(image) = arch.image.filter(|_| !arch.conv.is_empty()) {
            let (mut c, mut h, mut w) = (image.channels, image.height, image.width);
            for b in &arch.conv {
                layers.push(Layer::Conv(Conv {
                    geom: ConvGeom::new(c, b.channels, h, w, b.kernel),
                    weight: tensor,
                    bias: tensor + 1,
                }));
                tensor += 2;
                layers.push(Layer::Pool(Pool {
                    geom: PoolGeom::new(b.channels, h, w),
                }));
                (c, h, w) = (b.channels, h / 2, w / 2);
            }
        }
        let sizes = arch.linear_sizes();
        let linears = sizes.len() - 1;
        for l in 0..linears {
            layers.push(Layer::Linear(Linear {
                inputs: sizes[l],
                outputs: sizes[l + 1],
                weight: tensor,
                bias: tensor + 1,
                relu: l + 1 < linears,
            }));
            tensor += 2;
        }
        Ok(Self {
            arch: arch.clone(),
            sizes,
            layers,
            params,
        })
    }

    /// A zero-initialised network of `arch`.
    pub fn zeros_arch(arch: &Architecture) -> Result<Self, NetworkError> {
        arch.check()?;
        Self::from_params(arch, ParamStore::zeros(&arch.tensor_specs()))
    }

    /// A zero-initialised softmax regression or MLP of `sizes` `[K, H1, …,
    /// C]`.
    pub fn zeros(sizes: &[usize]) -> Result<Self, NetworkError> {
        Self::zeros_arch(&Architecture::mlp(sizes))
    }

    /// A freshly initialised softmax regression or MLP of `sizes`
    /// ([`Network::init_arch`]).
    pub fn init(sizes: &[usize], rng: &mut impl Rng) -> Result<Self, NetworkError> {
        Self::init_arch(&Architecture::mlp(sizes), rng)
    }

    /// A freshly initialised network of `arch`, drawing from `rng`.
    ///
    /// * Softmax regression keeps the notebook's `W = randn(K, C) / √K`,
    ///   `b = 0`, drawn in W's K × C row-major order as `torch.randn`
    ///   fills it, so the default run's bits are unchanged.
    /// * An MLP's layers draw `W = randn(out, in) · √(2 / in)` (He/Kaiming
    ///   normal, for the ReLU that follows) in `[out, in]` order, layer by
    ///   layer, except the last, which takes `randn / √in` (no ReLU
    ///   follows it); every bias starts at 0. (Measured better than
    ///   PyTorch's `nn.Linear` default after one epoch: docs/recipes.md.)
    /// * A CNN's layers, conv and linear alike, follow PyTorch's defaults:
    ///   weight and bias uniform in ±1/√fan_in (`kaiming_uniform_` with
    ///   a = √5), fan_in = `c_in·K²` for a conv and `in` for a linear
    ///   layer, drawn layer by layer, weight then bias, in row-major order.
    pub fn init_arch(arch: &Architecture, rng: &mut impl Rng) -> Result<Self, NetworkError> {
        let mut net = Self::zeros_arch(arch)?;
        if arch.is_linear() {
            let (k, c) = (arch.features, arch.classes);
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
        if arch.conv.is_empty() {
            let linears = net.layers.len();
            for (l, layer) in net.layers.clone().iter().enumerate() {
                let Layer::Linear(lin) = layer else { continue };
                let gain = if l + 1 < linears { 2.0 } else { 1.0 };
                let scale = (gain / lin.inputs as f64).sqrt();
                for v in net.params.get_mut(lin.weight) {
                    let z: f64 = rng.sample(StandardNormal);
                    *v = (z * scale) as f32;
                }
            }
            return Ok(net);
        }
        for layer in net.layers.clone() {
            let (weight, bias, fan_in) = match layer {
                Layer::Conv(c) => (c.weight, c.bias, c.geom.c_in * c.geom.k * c.geom.k),
                Layer::Linear(l) => (l.weight, l.bias, l.inputs),
                Layer::Pool(_) => continue,
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            for t in [weight, bias] {
                for v in net.params.get_mut(t) {
                    let u: f64 = rng.random();
                    *v = ((2.0 * u - 1.0) * bound) as f32;
                }
            }
        }
        Ok(net)
    }

    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// The linear layers' sizes `[F, H1, …, C]`: `[K, H1, …, C]` for an
    /// MLP, F the flattened conv output for a CNN.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The hidden widths (empty for softmax regression).
    pub fn hidden(&self) -> &[usize] {
        &self.arch.hidden
    }

    /// Input features per sample (K).
    pub fn features(&self) -> usize {
        self.arch.features
    }

    /// C.
    pub fn classes(&self) -> usize {
        self.arch.classes
    }

    /// Whether this is plain softmax regression (one linear layer).
    pub fn is_linear(&self) -> bool {
        self.arch.is_linear()
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The linear layers, in order.
    pub fn linears(&self) -> impl Iterator<Item = Linear> + '_ {
        self.layers.iter().filter_map(|l| match l {
            Layer::Linear(lin) => Some(*lin),
            _ => None,
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

    /// [`Architecture::describe`]: "784-256-10",
    /// "1x28x28-conv6x5-conv16x5-784-120-84-10".
    pub fn describe(&self) -> String {
        self.arch.describe()
    }

    /// Layers `l` and `l + 1` as a conv and the max-pool that reads its
    /// (ReLU'd) output: the pair the training step runs as one
    /// ([`Conv::forward_pooled`], [`Conv::backward_input_pooled`],
    /// [`Conv::weight_grad_chunk_pooled`]), never storing the conv's output
    /// nor the gradient there.
    pub fn conv_then_pool(&self, l: usize) -> Option<(&Conv, &Pool)> {
        match (self.layers.get(l), self.layers.get(l + 1)) {
            (Some(Layer::Conv(c)), Some(Layer::Pool(p))) => Some((c, p)),
            _ => None,
        }
    }

    /// Whether the first layer reads the samples (u8 or f32) in place with
    /// the fused kernels on `path`: a linear first layer (softmax
    /// regression, an MLP), exactly as the training step does.
    pub fn fused_first_layer(&self, path: KernelPath) -> bool {
        path.is_fused() && matches!(self.layers[0], Layer::Linear(_))
    }

    /// The logits (`rows.len()` × C) of samples `rows`.
    ///
    /// With a fused `path`, a linear first layer reads the rows (u8 or
    /// f32) in place with the fused kernel, exactly as the training step
    /// does; otherwise the rows are gathered to f32 first. The other
    /// layers run their forward passes. `ws` is scratch, grown as needed.
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
        if self.fused_first_layer(path) {
            let images = fused::Images::of(samples);
            self.forward_fused(path, images, samples.scale(), rows, ws, out);
            return;
        }
        let mut x = std::mem::take(ws);
        x.resize(n * k, 0.0);
        for (row, &r) in x.chunks_exact_mut(k).zip(rows) {
            samples.row_into_f32(r as usize, row);
        }
        self.forward_from(path, 0, &x, n, &mut Vec::new(), out);
        *ws = x;
    }

    /// The logits of `rows` of `images`, the first (linear) layer on the
    /// fused kernel of `path` (raw values × `scale`), the others as in
    /// [`Self::forward_from`].
    fn forward_fused(
        &self,
        path: KernelPath,
        images: fused::Images<'_>,
        scale: f32,
        rows: &[u32],
        ws: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let Layer::Linear(l0) = &self.layers[0] else {
            unreachable!("a fused first layer is linear")
        };
        let (k, n) = (self.features(), rows.len());
        let (w, b) = l0.tensors(self.params.data(), &self.params);
        if self.is_linear() {
            images.forward(path, k, rows, w, b, scale, out);
            return;
        }
        let mut x = std::mem::take(ws);
        x.resize(n * l0.outputs, 0.0);
        images.forward(path, k, rows, w, b, scale, &mut x);
        relu_forward(&mut x);
        self.forward_from(path, 1, &x, n, &mut Vec::new(), out);
        *ws = x;
    }

    /// The logits (n × C) of `n` rows of f32 inputs `x` (n × K), through
    /// every layer's forward pass on `path`: the same computation as
    /// [`Self::forward_rows`] on f32 samples holding these rows (a linear
    /// first layer on the fused kernel of a fused `path`). `ws` is scratch,
    /// grown as needed.
    pub fn forward_f32(
        &self,
        path: KernelPath,
        x: &[f32],
        n: usize,
        ws: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        assert_eq!(x.len(), n * self.features(), "forward_f32: input length");
        if self.fused_first_layer(path) {
            assert_eq!(out.len(), n * self.classes(), "forward: output length");
            let rows: Vec<u32> = (0..n as u32).collect();
            self.forward_fused(path, fused::Images::F32(x), 1.0, &rows, ws, out);
            return;
        }
        self.forward_from(path, 0, x, n, ws, out);
    }

    /// The logits of `n` rows given `x`, the input of layer `first`.
    fn forward_from(
        &self,
        path: KernelPath,
        first: usize,
        x: &[f32],
        n: usize,
        ws: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        assert_eq!(out.len(), n * self.classes(), "forward: output length");
        let p = self.params.data();
        let last = self.layers.len() - 1;
        let widest = self.layers[..last]
            .iter()
            .map(Layer::out_len)
            .max()
            .unwrap_or(0);
        ws.resize(2 * n * widest, 0.0);
        let (mut cur, mut next) = ws.split_at_mut(n * widest);
        let mut scratch = Vec::new();
        for (i, layer) in self.layers.iter().enumerate().skip(first) {
            let inp: &[f32] = if i == first {
                x
            } else {
                &cur[..n * layer.in_len()]
            };
            if i == last {
                layer.forward(path, out, inp, p, &self.params, n, &mut scratch);
            } else {
                let o = &mut next[..n * layer.out_len()];
                layer.forward(path, o, inp, p, &self.params, n, &mut scratch);
                std::mem::swap(&mut cur, &mut next);
            }
        }
    }
}
