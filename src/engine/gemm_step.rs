//! Any network, on u8 or f32 samples: MLPs, and softmax regression on the
//! `gemm` path. The layers' products go through sgemm, except the first
//! layer's on u8 samples with a fused kernel path: there the forward
//! product and the weight gradient read the u8 rows in place with the
//! fused SIMD kernels ([`crate::kernels::fused`]), as softmax regression
//! does, with no gather, no conversion and no packing of the 784-wide
//! operands.
//!
//! For a network of sizes `[s0 = K, s1, …, sL = C]`, with activations
//! `A_0 = X` (the batch as f32), `A_l = relu(A_{l−1}·W_lᵀ + b_l)` and
//! logits `A_L`, each step has two phases:
//!
//! 1. **rows** (chunks of [`GEMM_ROWS`] batch rows): gather the rows to
//!    f32, run every layer's forward pass, softmax-CE, and the backward
//!    pass through the layers' *inputs*:
//!    `G_L = (p − onehot)/B`, `G_{l−1} = (G_l·W_l) ⊙ [A_{l−1} > 0]`.
//!    All of this is row-local and only reads the weights.
//! 2. **columns** (for each layer, chunks of [`GEMM_COLS`] input columns):
//!    `dW_l[:, cols] = G_lᵀ · A_{l−1}[:, cols]`, a reduction over the
//!    whole batch, then the SGD update of those columns of W_l in place.
//!    A layer's first chunk also updates b_l; the step's first chunk
//!    records the loss.
//!
//! Every output element is computed inside one chunk, whose shape depends
//! only on the step, so the bits never depend on the worker count.

use crate::engine::parallel::SharedSlice;
use crate::kernels::{bias_grad, fused, softmax_ce, KernelPath};
use crate::nn::{relu_backward, Linear, Network};

use super::phased::{Flow, StepPlan};
use super::EpochCtx;

/// Batch rows per forward/backward chunk: large enough that each sgemm
/// call amortises its packing of the weights, small enough for four chunks
/// per batch of 100.
pub const GEMM_ROWS: usize = 25;
/// Input columns per weight-gradient chunk.
pub const GEMM_COLS: usize = 64;

/// Activations and gradients of every layer, sized for the largest batch.
pub struct GemmBuffers {
    /// `A_0 … A_L`, each `batch × s_l`, one after the other.
    acts: Vec<f32>,
    /// `G_1 … G_L`, each `batch × s_l` (G_0 is never needed).
    grads: Vec<f32>,
    losses: Vec<f32>,
}

impl GemmBuffers {
    pub fn new(batch: usize, sizes: &[usize]) -> Self {
        let total: usize = sizes.iter().map(|s| s * batch).sum();
        Self {
            acts: vec![0.0; total],
            grads: vec![0.0; total],
            losses: vec![0.0; batch],
        }
    }
}

/// The gemm plan over an epoch's shared context.
pub struct GemmStep<'s> {
    ctx: &'s EpochCtx<'s>,
    net: &'s Network,
    /// The fused path and the u8 rows, when the first layer runs fused.
    fused: Option<(KernelPath, &'s [u8])>,
    linears: Vec<Linear>,
    /// The buffer capacity in rows.
    rows_cap: usize,
    /// Start of layer l's block in `acts` / `grads`.
    offsets: Vec<usize>,
    acts: SharedSlice<'s, f32>,
    grads: SharedSlice<'s, f32>,
    losses: SharedSlice<'s, f32>,
    /// For each layer, the index of its first column chunk in phase 2.
    first_chunk: Vec<usize>,
}

impl<'s> GemmStep<'s> {
    /// A plan for `net` (whose parameters the context's buffer holds; `net`
    /// supplies only the layout) on `path`, with buffers for batches up to
    /// `batch_size` rows.
    ///
    /// # Panics
    /// If `path` is fused but the samples are not u8.
    pub fn new(
        ctx: &'s EpochCtx<'s>,
        net: &'s Network,
        path: KernelPath,
        bufs: &'s mut GemmBuffers,
    ) -> Self {
        let fused = path.is_fused().then(|| {
            let images = ctx.samples.as_u8().expect("a fused path needs u8 samples");
            (path, images)
        });
        let sizes = net.sizes();
        let rows_cap = ctx.batch_size.min(ctx.order.len());
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for &s in sizes {
            offsets.push(at);
            at += s * rows_cap;
        }
        assert!(
            bufs.acts.len() >= at && bufs.losses.len() >= rows_cap,
            "GemmBuffers too small"
        );
        assert_eq!(
            ctx.params.len(),
            net.params().len(),
            "parameter buffer layout"
        );
        let linears: Vec<Linear> = net.linears().collect();
        let mut first_chunk = Vec::with_capacity(linears.len() + 1);
        let mut n = 0;
        for lin in &linears {
            first_chunk.push(n);
            n += lin.inputs.div_ceil(GEMM_COLS);
        }
        first_chunk.push(n);
        Self {
            ctx,
            net,
            fused,
            linears,
            rows_cap,
            offsets,
            acts: SharedSlice::new(&mut bufs.acts),
            grads: SharedSlice::new(&mut bufs.grads),
            losses: SharedSlice::new(&mut bufs.losses),
            first_chunk,
        }
    }

    /// Layer l's block (rows `rows` of a `batch × s_l` matrix) in `acts` or
    /// `grads`.
    fn span(&self, l: usize, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let s = self.net.sizes()[l];
        debug_assert!(rows.end <= self.rows_cap);
        self.offsets[l] + rows.start * s..self.offsets[l] + rows.end * s
    }

    /// Phase 1 for rows `chunk·GEMM_ROWS ..` of step `step`'s batch.
    fn rows_chunk(&self, step: usize, chunk: usize) {
        let batch = self.ctx.batch(step);
        let inv_b = 1.0 / batch.len() as f32;
        let r = chunk * GEMM_ROWS..((chunk + 1) * GEMM_ROWS).min(batch.len());
        let n = r.len();
        let depth = self.linears.len();
        let c = self.net.classes();
        let store = self.net.params();
        // SAFETY: rows phase (see `run`): the parameters are only read in
        // this phase.
        let params = unsafe { self.ctx.params.get(0..self.ctx.params.len()) };

        let rows = &batch[r.clone()];
        let k = self.net.features();
        // A_0: the rows as f32, unless the first layer reads them as u8.
        if self.fused.is_none() {
            // SAFETY: rows phase: rows `r` of every layer's activations,
            // gradients and losses belong to this chunk alone.
            let x = unsafe { self.acts.get_mut(self.span(0, r.clone())) };
            for (row, &i) in x.chunks_exact_mut(k).zip(rows) {
                self.ctx.samples.row_into_f32(i as usize, row);
            }
        }
        // Forward.
        for (l, lin) in self.linears.iter().enumerate() {
            // SAFETY: as above; layers l and l + 1 are distinct blocks.
            let (inp, out) = unsafe {
                (
                    self.acts.get(self.span(l, r.clone())),
                    self.acts.get_mut(self.span(l + 1, r.clone())),
                )
            };
            match self.fused {
                Some((path, images)) if l == 0 => {
                    let (w, b) = lin.tensors(params, store);
                    let scale = self.ctx.samples.scale();
                    fused::forward(path, images, k, rows, w, b, scale, out);
                }
                _ => lin.forward(out, inp, params, store, n),
            }
            if l + 1 < depth {
                crate::nn::relu_forward(out);
            }
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
        let label = |i: usize| self.ctx.samples.label(rows[i] as usize) as usize;
        // The portable exponential: the same bits on every CPU.
        softmax_ce::block(KernelPath::Portable, logits, c, label, inv_b, g, losses);
        // Backward through the layers' inputs: G_{l−1} from G_l.
        for l in (1..depth).rev() {
            let lin = &self.linears[l];
            // SAFETY: as above; G_l, G_{l−1} and A_l are distinct blocks
            // (grads and acts are separate buffers).
            let (g_out, g_in, a_in) = unsafe {
                (
                    self.grads.get(self.span(l + 1, r.clone())),
                    self.grads.get_mut(self.span(l, r.clone())),
                    self.acts.get(self.span(l, r.clone())),
                )
            };
            lin.backward_input(g_in, g_out, params, store, n);
            relu_backward(g_in, a_in);
        }
    }

    /// Phase 2, chunk `chunk`: a column block of one layer's weights.
    fn cols_chunk(&self, step: usize, chunk: usize, s: &mut Scratch) -> Flow {
        let l = self.first_chunk.partition_point(|&f| f <= chunk) - 1;
        let lin = &self.linears[l];
        let j = chunk - self.first_chunk[l];
        let b = self.ctx.batch(step).len();
        let lr = self.ctx.schedule.lr(&self.ctx.sgd, step);
        let cols = j * GEMM_COLS..((j + 1) * GEMM_COLS).min(lin.inputs);
        let width = cols.len();
        let store = self.net.params();
        // SAFETY: columns phase: activations, gradients and losses are only
        // read in this phase.
        let (a_in, g_out) = unsafe {
            (
                self.acts.get(self.span(l, 0..b)),
                self.grads.get(self.span(l + 1, 0..b)),
            )
        };
        let dw = &mut s.dw[..lin.outputs * width];
        let batch = self.ctx.batch(step);
        // The fused kernel sums raw u8 pixels: their scale comes in the update.
        let grad_scale = match self.fused {
            Some((path, images)) if l == 0 => {
                let k = self.net.features();
                fused::weight_grad(
                    path,
                    images,
                    k,
                    batch,
                    g_out,
                    lin.outputs,
                    cols.start,
                    width,
                    dw,
                );
                self.ctx.samples.scale()
            }
            _ => {
                lin.weight_grad_cols(dw, g_out, a_in, b, cols.start, width);
                1.0
            }
        };
        let w0 = store.tensors()[lin.weight].offset;
        for o in 0..lin.outputs {
            let at = w0 + o * lin.inputs + cols.start;
            // SAFETY: columns phase: these columns of W_l (and of its
            // momentum) belong to this chunk alone; nothing reads W.
            unsafe {
                self.ctx.update(
                    lr,
                    at..at + width,
                    &dw[o * width..(o + 1) * width],
                    grad_scale,
                )
            };
        }
        if j == 0 {
            let db = &mut s.db[..lin.outputs];
            bias_grad(g_out, db);
            let b0 = store.tensors()[lin.bias].range();
            // SAFETY: columns phase: only layer l's first chunk touches b_l.
            unsafe { self.ctx.update(lr, b0, db, 1.0) };
        }
        if chunk == 0 {
            // SAFETY: columns phase: losses are only read.
            let losses = unsafe { self.losses.get(0..b) };
            return self.ctx.finish_step(step, losses);
        }
        Flow::Continue
    }
}

/// A worker's weight-gradient block and bias gradient.
pub struct Scratch {
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl StepPlan for GemmStep<'_> {
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        let widest = self.linears.iter().map(|l| l.outputs).max().unwrap_or(0);
        Scratch {
            dw: vec![0.0; widest * GEMM_COLS],
            db: vec![0.0; widest],
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
            self.ctx.batch(step).len().div_ceil(GEMM_ROWS)
        } else {
            self.first_chunk[self.linears.len()]
        }
    }

    /// Phase protocol (with the scheduler's ordering of phases):
    /// * rows phase: chunks read the parameters; chunk i writes only rows
    ///   `i·GEMM_ROWS ..` of every activation, gradient and the losses;
    /// * columns phase: chunks read activations, gradients and losses; a
    ///   chunk writes only its column block of one W_l (and momentum), and
    ///   a layer's first chunk alone writes b_l.
    fn run(&self, step: usize, phase: usize, chunk: usize, s: &mut Scratch) -> Flow {
        if phase == 0 {
            self.rows_chunk(step, chunk);
            Flow::Continue
        } else {
            self.cols_chunk(step, chunk, s)
        }
    }
}
