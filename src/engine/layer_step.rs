//! Any network, on u8 or f32 samples: MLPs, CNNs, and softmax regression
//! on the `gemm` path. Each layer runs its own kernels ([`crate::nn::layers`]:
//! sgemm for the linear layers, the conv and pooling kernels), except a
//! linear first layer with a fused kernel path: there the forward product
//! and the weight gradient read the u8 or f32 rows in place with the fused
//! SIMD kernels ([`crate::kernels::fused`]), as softmax regression does,
//! with no gather, no conversion and no packing of the 784-wide operands.
//!
//! For a network of layers `1 … L` with activations `A_0 = X` (the batch
//! as f32), `A_l = layer_l(A_{l−1})` (ReLU included where the layer has
//! one) and logits `A_L`, each step has two phases:
//!
//! 1. **rows** (chunks of [`STEP_ROWS`] batch rows): gather the rows to
//!    f32, run every layer's forward pass, softmax-CE, and the backward
//!    pass through the layers' *inputs*:
//!    `G_L = (p − onehot)/B`, `G_{l−1} = backward_l(G_l) ⊙ [A_{l−1} > 0]`
//!    (the mask where layer l − 1 has a ReLU; for a max-pool l, the same
//!    bits as `backward_l(G_l ⊙ [A_l > 0])`, which is what runs).
//!    All of this is row-local and only reads the weights. A conv and
//!    the max-pool after it run as one kernel
//!    ([`Network::conv_then_pool`]): each sample's conv output is pooled
//!    while it is in L1 and never stored, and the pool's backward routes
//!    by the argmax bytes the forward kept (the same bits as the two
//!    layers apart; 0.95× the time of a LeNet epoch, `perf/README.md`).
//! 2. **weights** (for each layer with parameters, its fixed chunks:
//!    column blocks of a linear layer, channel blocks of a conv layer):
//!    that chunk of the gradient, a reduction over the whole batch in a
//!    fixed order, then the SGD update of those parameters in place. The
//!    step's first chunk records the loss.
//!
//! Every output element is computed inside one chunk, whose shape depends
//! only on the step, so the bits never depend on the worker count.

use crate::kernels::{softmax_ce, KernelPath};
use crate::nn::{relu_backward, Layer, Network};

use super::parallel::SharedSlice;
use super::phased::{Flow, StepPlan};
use super::EpochCtx;

/// Batch rows per forward/backward chunk: large enough that each sgemm
/// call amortises its packing of the weights (at 25 rows the packing was
/// 7% of a LeNet epoch, at 50 rows 4%: the epoch took 0.977× the time, an
/// MLP 784-256-10 epoch 0.975×), and two chunks per batch of 100, one per
/// core of a two-core machine. The rows' results do not depend on it: each
/// row is computed on its own (sgemm's sums run over k, never over rows).
pub const STEP_ROWS: usize = 50;

/// Activations and gradients of every layer, sized for the largest batch.
pub struct LayerBuffers {
    /// `A_0 … A_L`, each `batch × len_l`, one after the other. (The output
    /// of a conv that a max-pool reads is never written: the pair runs as
    /// one kernel.)
    acts: Vec<f32>,
    /// `G_1 … G_L`, each `batch × len_l` (G_0 is never needed, nor the
    /// gradient at a conv's output that a max-pool reads: it is routed
    /// where it is read).
    grads: Vec<f32>,
    /// For each such max-pool, `batch × out_len` argmax bytes.
    argmax: Vec<u8>,
    losses: Vec<f32>,
}

impl LayerBuffers {
    pub fn new(batch: usize, net: &Network) -> Self {
        let total: usize = act_lens(net).iter().map(|s| s * batch).sum();
        let bytes: usize = argmax_lens(net).iter().map(|s| s * batch).sum();
        Self {
            acts: vec![0.0; total],
            grads: vec![0.0; total],
            argmax: vec![0; bytes],
            losses: vec![0.0; batch],
        }
    }
}

/// Floats per sample of `A_0 … A_L`.
fn act_lens(net: &Network) -> Vec<usize> {
    let mut lens = vec![net.features()];
    lens.extend(net.layers().iter().map(Layer::out_len));
    lens
}

/// Argmax bytes per sample of each layer: a max-pool's output length where
/// it follows a conv ([`Network::conv_then_pool`]), else 0.
fn argmax_lens(net: &Network) -> Vec<usize> {
    (0..net.layers().len())
        .map(
            |l| match l.checked_sub(1).and_then(|c| net.conv_then_pool(c)) {
                Some((_, pool)) => pool.geom.out_len(),
                None => 0,
            },
        )
        .collect()
}

/// The step plan over an epoch's shared context.
pub struct LayerStep<'s> {
    ctx: &'s EpochCtx<'s>,
    net: &'s Network,
    path: KernelPath,
    /// Whether the first (linear) layer reads the rows (u8 or f32) in
    /// place with the fused kernels.
    fused: bool,
    /// Floats per sample of `A_0 … A_L`.
    lens: Vec<usize>,
    /// The buffer capacity in rows.
    rows_cap: usize,
    /// Start of `A_l`'s block in `acts` (and `G_l`'s in `grads`).
    offsets: Vec<usize>,
    acts: SharedSlice<'s, f32>,
    grads: SharedSlice<'s, f32>,
    losses: SharedSlice<'s, f32>,
    /// Argmax bytes per sample of each layer, and where its block starts.
    argmax_lens: Vec<usize>,
    argmax_offsets: Vec<usize>,
    argmax: SharedSlice<'s, u8>,
    /// For each layer, the index of its first chunk in phase 2 (and the
    /// total at the end).
    first_chunk: Vec<usize>,
}

impl<'s> LayerStep<'s> {
    /// A plan for `net` (whose parameters the context's buffer holds; `net`
    /// supplies only the layout) on `path`, with buffers for batches up to
    /// `batch_size` rows.
    ///
    /// # Panics
    /// If the buffers are too small for the batch.
    pub fn new(
        ctx: &'s EpochCtx<'s>,
        net: &'s Network,
        path: KernelPath,
        bufs: &'s mut LayerBuffers,
    ) -> Self {
        let fused = net.fused_first_layer(path);
        let lens = act_lens(net);
        let rows_cap = ctx.batch_size.min(ctx.order.len());
        let mut offsets = Vec::with_capacity(lens.len());
        let mut at = 0;
        for &s in &lens {
            offsets.push(at);
            at += s * rows_cap;
        }
        let argmax_lens = argmax_lens(net);
        let mut argmax_offsets = Vec::with_capacity(argmax_lens.len());
        let mut bytes = 0;
        for &s in &argmax_lens {
            argmax_offsets.push(bytes);
            bytes += s * rows_cap;
        }
        assert!(
            bufs.acts.len() >= at && bufs.losses.len() >= rows_cap && bufs.argmax.len() >= bytes,
            "LayerBuffers too small"
        );
        assert_eq!(
            ctx.params.len(),
            net.params().len(),
            "parameter buffer layout"
        );
        let mut first_chunk = Vec::with_capacity(net.layers().len() + 1);
        let mut n = 0;
        for layer in net.layers() {
            first_chunk.push(n);
            n += layer.grad_chunks();
        }
        first_chunk.push(n);
        Self {
            ctx,
            net,
            path,
            fused,
            lens,
            rows_cap,
            offsets,
            acts: SharedSlice::new(&mut bufs.acts),
            grads: SharedSlice::new(&mut bufs.grads),
            losses: SharedSlice::new(&mut bufs.losses),
            argmax_lens,
            argmax_offsets,
            argmax: SharedSlice::new(&mut bufs.argmax),
            first_chunk,
        }
    }

    /// `A_l`'s (or `G_l`'s) block for rows `rows` of the batch.
    fn span(&self, l: usize, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let s = self.lens[l];
        debug_assert!(rows.end <= self.rows_cap);
        self.offsets[l] + rows.start * s..self.offsets[l] + rows.end * s
    }

    /// Layer `l`'s argmax bytes for rows `rows` of the batch.
    fn argmax_span(&self, l: usize, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let s = self.argmax_lens[l];
        debug_assert!(rows.end <= self.rows_cap && s > 0);
        self.argmax_offsets[l] + rows.start * s..self.argmax_offsets[l] + rows.end * s
    }

    /// Phase 1 for rows `chunk·STEP_ROWS ..` of step `step`'s batch.
    fn rows_chunk(&self, step: usize, chunk: usize, s: &mut Scratch) {
        let batch = self.ctx.batch(step);
        let inv_b = 1.0 / batch.len() as f32;
        let r = chunk * STEP_ROWS..((chunk + 1) * STEP_ROWS).min(batch.len());
        let n = r.len();
        let layers = self.net.layers();
        let depth = layers.len();
        let c = self.net.classes();
        let store = self.net.params();
        // SAFETY: rows phase (see `run`): the parameters are only read in
        // this phase.
        let params = unsafe { self.ctx.params.get(0..self.ctx.params.len()) };

        let rows = &self.ctx.pixel_rows(step)[r.clone()];
        let k = self.net.features();
        // SAFETY: rows phase: no chunk writes the (augmented) rows.
        let images = unsafe { self.ctx.pixels() };
        // A_0: the rows as f32, unless the first layer reads them in place.
        if !self.fused {
            // SAFETY: rows phase: rows `r` of every layer's activations,
            // gradients and losses belong to this chunk alone.
            let x = unsafe { self.acts.get_mut(self.span(0, r.clone())) };
            for (row, pos) in x.chunks_exact_mut(k).zip(r.clone()) {
                // SAFETY: as for `images`.
                unsafe { self.ctx.row_into_f32(step, pos, row) };
            }
        }
        // Forward.
        let mut l = 0;
        while l < depth {
            let layer = &layers[l];
            if let Some((conv, _)) = self.net.conv_then_pool(l) {
                // The conv, its ReLU and the pool: A_{l+2} and layer l + 1's
                // argmax, from A_l (A_{l+1} is not written).
                // SAFETY: as above; A_l and A_{l+2} are distinct blocks.
                let (inp, out, argmax) = unsafe {
                    (
                        self.acts.get(self.span(l, r.clone())),
                        self.acts.get_mut(self.span(l + 2, r.clone())),
                        self.argmax.get_mut(self.argmax_span(l + 1, r.clone())),
                    )
                };
                conv.forward_pooled(self.path, out, argmax, inp, params, store, n, &mut s.kernel);
                l += 2;
                continue;
            }
            // SAFETY: as above; layers l and l + 1 are distinct blocks.
            let (inp, out) = unsafe {
                (
                    self.acts.get(self.span(l, r.clone())),
                    self.acts.get_mut(self.span(l + 1, r.clone())),
                )
            };
            match (self.fused.then_some(images), layer) {
                (Some(images), Layer::Linear(lin)) if l == 0 => {
                    let (w, b) = lin.tensors(params, store);
                    let scale = self.ctx.samples.scale();
                    images.forward(self.path, k, rows, w, b, scale, out);
                    if lin.relu {
                        crate::nn::relu_forward(out);
                    }
                }
                _ => layer.forward(self.path, out, inp, params, store, n, &mut s.kernel),
            }
            l += 1;
        }
        // Softmax-CE: G_L.
        // SAFETY: as above.
        let (logits, g, losses) = unsafe {
            (
                self.acts.get(self.span(depth, r.clone())),
                self.grads.get_mut(self.span(depth, r.clone())),
                self.losses.get_mut(r.clone()),
            )
        };
        let label = |i: usize| self.ctx.label(step, r.start + i) as usize;
        // The portable exponential: the same bits on every CPU.
        softmax_ce::block(KernelPath::Portable, logits, c, label, inv_b, g, losses);
        // The same positions' labels of the next step, a step ahead.
        self.ctx.labels_ahead(step + 1, r.clone());
        // Backward through the layers' inputs: G_{l−1} from G_l (layer l is
        // layers[l − 1], reading A_{l−1}).
        for l in (1..depth).rev() {
            let layer = &layers[l];
            // A max-pool after a ReLU: the mask goes on the pool's output
            // gradient, before the pool routes it, instead of on the 4×
            // larger gradient after. The same bits: the pool sends each
            // window's gradient to the window's maximum, whose value is the
            // pool's output there, and zeros everywhere else (zeros the mask
            // keeps); and G_{l+1} feeds nothing but this pool's backward.
            let mask_before = matches!(layer, Layer::Pool(_)) && layers[l - 1].relu();
            if mask_before {
                // SAFETY: as above; G_{l+1} and A_{l+1} of this chunk's
                // rows, written by it, read by no other chunk of the phase.
                let (g_out, a_out) = unsafe {
                    (
                        self.grads.get_mut(self.span(l + 1, r.clone())),
                        self.acts.get(self.span(l + 1, r.clone())),
                    )
                };
                relu_backward(g_out, a_out);
            }
            if self.net.conv_then_pool(l - 1).is_some() {
                // A pool after a conv: nothing to do. The conv's passes
                // route G_{l+1} (masked above) by the argmax bytes
                // themselves, so G_l, like A_l, is never written.
                continue;
            }
            // SAFETY: as above; G_{l+1}, G_l and A_l are distinct blocks
            // (grads and acts are separate buffers).
            let (g_out, g_in, a_in) = unsafe {
                (
                    self.grads.get(self.span(l + 1, r.clone())),
                    self.grads.get_mut(self.span(l, r.clone())),
                    self.acts.get(self.span(l, r.clone())),
                )
            };
            if let Some((conv, _)) = self.net.conv_then_pool(l) {
                // SAFETY: as above; layer l + 1's argmax bytes of this
                // chunk's rows, written by its forward pass. G_{l+2} is
                // another block of grads than G_l.
                let (argmax, d_pooled) = unsafe {
                    (
                        self.argmax.get(self.argmax_span(l + 1, r.clone())),
                        self.grads.get(self.span(l + 2, r.clone())),
                    )
                };
                conv.backward_input_pooled(
                    self.path,
                    g_in,
                    d_pooled,
                    argmax,
                    params,
                    store,
                    n,
                    &mut s.kernel,
                );
            } else {
                layer.backward_input(
                    self.path,
                    g_in,
                    g_out,
                    a_in,
                    params,
                    store,
                    n,
                    &mut s.kernel,
                );
            }
            if layers[l - 1].relu() && !mask_before {
                relu_backward(g_in, a_in);
            }
        }
    }

    /// Phase 2, chunk `chunk`: a chunk of one layer's weight gradient and
    /// its update.
    fn weights_chunk(&self, step: usize, chunk: usize, s: &mut Scratch) -> Flow {
        let l = self.first_chunk.partition_point(|&f| f <= chunk) - 1;
        let layer = &self.net.layers()[l];
        let j = chunk - self.first_chunk[l];
        let b = self.ctx.batch(step).len();
        let lr = self.ctx.schedule.lr(&self.ctx.sgd, step);
        let store = self.net.params();
        // SAFETY: weights phase: activations, gradients and losses are
        // only read in this phase.
        let (a_in, g_out) = unsafe {
            (
                self.acts.get(self.span(l, 0..b)),
                self.grads.get(self.span(l + 1, 0..b)),
            )
        };
        // Every update below touches only this chunk's parameters: the
        // layer's chunks cover disjoint runs of its tensors, and no chunk of
        // this phase reads the parameters.
        let apply = |range: std::ops::Range<usize>, grad: &[f32], scale: f32| {
            // SAFETY: weights phase: `range` belongs to this chunk alone
            // (see above); nothing reads the parameters (or momentum).
            unsafe { self.ctx.update(lr, range, grad, scale) };
        };
        // SAFETY: weights phase: no chunk writes the (augmented) rows.
        let images = unsafe { self.ctx.pixels() };
        if let Some((conv, _)) = self.net.conv_then_pool(l) {
            // The output gradient routed from the pool's (G_{l+2}), as in
            // the rows phase.
            // SAFETY: weights phase: gradients and argmax bytes are only
            // read.
            let (d_pooled, argmax) = unsafe {
                (
                    self.grads.get(self.span(l + 2, 0..b)),
                    self.argmax.get(self.argmax_span(l + 1, 0..b)),
                )
            };
            conv.weight_grad_chunk_pooled(
                self.path,
                j,
                &mut s.grad,
                d_pooled,
                argmax,
                a_in,
                store,
                b,
                &mut s.kernel,
                &mut |range, grad| apply(range, grad, 1.0),
            );
        } else {
            match (self.fused.then_some(images), layer) {
                (Some(images), Layer::Linear(lin)) if l == 0 => {
                    // The fused kernel sums raw pixels: their scale (u8's) comes
                    // in the update.
                    let cols = j * crate::nn::layers::LINEAR_COLS
                        ..((j + 1) * crate::nn::layers::LINEAR_COLS).min(lin.inputs);
                    let width = cols.len();
                    let k = self.net.features();
                    let batch = self.ctx.pixel_rows(step);
                    let dw = &mut s.grad[..lin.outputs * width];
                    let o = lin.outputs;
                    images.weight_grad(self.path, k, batch, g_out, o, cols.start, width, dw, false);
                    let w0 = store.tensors()[lin.weight].offset;
                    let scale = self.ctx.samples.scale();
                    for o in 0..lin.outputs {
                        let at = w0 + o * lin.inputs + cols.start;
                        apply(at..at + width, &dw[o * width..(o + 1) * width], scale);
                    }
                    if j == 0 {
                        let db = &mut s.grad[..lin.outputs];
                        crate::kernels::bias_grad(g_out, db);
                        apply(store.tensors()[lin.bias].range(), db, 1.0);
                    }
                }
                _ => layer.weight_grad_chunk(
                    self.path,
                    j,
                    &mut s.grad,
                    g_out,
                    a_in,
                    store,
                    b,
                    &mut s.kernel,
                    &mut |range, grad| apply(range, grad, 1.0),
                ),
            }
        }
        if chunk == 0 {
            // SAFETY: weights phase: losses are only read.
            let losses = unsafe { self.losses.get(0..b) };
            return self.ctx.finish_step(step, losses);
        }
        Flow::Continue
    }
}

/// A worker's gradient chunk and the kernels' scratch.
pub struct Scratch {
    grad: Vec<f32>,
    kernel: Vec<f32>,
}

impl StepPlan for LayerStep<'_> {
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        let widest = self
            .net
            .layers()
            .iter()
            .map(Layer::grad_len)
            .max()
            .unwrap_or(0);
        Scratch {
            grad: vec![0.0; widest],
            kernel: Vec::new(),
        }
    }

    fn steps(&self) -> usize {
        self.ctx.steps()
    }

    fn phases(&self) -> usize {
        2
    }

    fn chunks(&self, step: usize, phase: usize) -> usize {
        if phase == 0 {
            self.ctx.batch(step).len().div_ceil(STEP_ROWS)
        } else {
            self.first_chunk[self.net.layers().len()]
        }
    }

    /// Phase protocol (with the scheduler's ordering of phases):
    /// * rows phase: chunks read the parameters; chunk i writes only rows
    ///   `i·STEP_ROWS ..` of every activation, gradient, argmax block and
    ///   the losses;
    /// * weights phase: chunks read activations, gradients, argmax bytes
    ///   and losses; a chunk writes only its own run of one layer's
    ///   parameters (and momentum).
    fn run(&self, step: usize, phase: usize, chunk: usize, s: &mut Scratch) -> Flow {
        if phase == 0 {
            self.rows_chunk(step, chunk, s);
            Flow::Continue
        } else {
            self.weights_chunk(step, chunk, s)
        }
    }
}
