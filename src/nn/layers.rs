//! The layers: each a `forward` / `backward_input` pair on a block of
//! rows, outputs first (llm.c's style), and, for the layers with
//! parameters, the weight gradient in fixed chunks that the training step
//! runs in parallel.
//!
//! Shapes per sample: a [`Linear`] maps `inputs` to `outputs` floats; a
//! [`Conv`] maps C_in × H × W to C_out × H × W; a [`Pool`] C × H × W to
//! C × ⌊H/2⌋ × ⌊W/2⌋. A block of `rows` samples is contiguous, so the
//! flatten between the conv blocks and the linear layers is free: NCHW
//! rows read as `C·H·W` features, in PyTorch's flatten order.
//!
//! ReLU belongs to the layer before it (`relu()`): `forward` applies it in
//! place, and the training step masks the incoming gradient with the
//! layer's output before `backward_input`'s caller passes it on.

use std::ops::Range;

use crate::kernels::conv::{self, ConvGeom, PoolGeom};
use crate::kernels::{gemm, pool, KernelPath};

use super::params::ParamStore;

/// Input columns per weight-gradient chunk of a linear layer.
pub const LINEAR_COLS: usize = 64;
/// Output channels per weight-gradient chunk of a conv layer.
pub const CONV_CHANNELS: usize = 4;

/// A linear layer: `out = inp · Wᵀ + b`, W `[outputs, inputs]`
/// (`nn.Linear.weight`), then ReLU if `relu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    /// Tensor indices in the [`ParamStore`].
    pub weight: usize,
    pub bias: usize,
    pub relu: bool,
}

/// A 'same' convolution followed by ReLU (`nn.Conv2d` then `nn.ReLU`):
/// weight `[c_out, c_in, K, K]`, bias `[c_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub geom: ConvGeom,
    pub weight: usize,
    pub bias: usize,
}

/// MaxPool2d(2): the maximum of each 2 × 2 window, stride 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub geom: PoolGeom,
}

/// A layer of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Linear(Linear),
    Conv(Conv),
    Pool(Pool),
}

/// ReLU, in place: [`pool::relu`] of every element (`x if x > 0 else
/// +0`, so NaN and −0 become +0).
///
/// A select, not `v.max(0.0)`: `f32::max` leaves the sign of a zero result
/// unspecified, and its vector and scalar code gave −0 and +0 for −0 in
/// the same build.
pub fn relu_forward(x: &mut [f32]) {
    for v in x {
        *v = pool::relu(*v);
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

/// Tensor `i`'s values within the flat buffer `params` (laid out as
/// `store`).
fn tensor<'p>(params: &'p [f32], store: &ParamStore, i: usize) -> &'p [f32] {
    &params[store.tensors()[i].range()]
}

impl Linear {
    /// W and b within the flat buffer `params` (laid out as `store`).
    pub fn tensors<'p>(&self, params: &'p [f32], store: &ParamStore) -> (&'p [f32], &'p [f32]) {
        (
            tensor(params, store, self.weight),
            tensor(params, store, self.bias),
        )
    }

    /// `dw = d_outᵀ · inp[:, col0 .. col0 + width]` (outputs × width) over
    /// `rows` rows: one column block of the weight gradient.
    pub fn weight_grad_cols(
        &self,
        dw: &mut [f32],
        d_out: &[f32],
        inp: &[f32],
        rows: usize,
        cols: Range<usize>,
    ) {
        gemm::weight_grad_cols(
            inp,
            self.inputs,
            d_out,
            self.outputs,
            rows,
            cols.start,
            cols.len(),
            dw,
        );
    }
}

/// A conv weight-gradient kernel as a chunk calls it: `(dw, db, output
/// channels)`.
type ChunkKernel<'k> = dyn FnMut(&mut [f32], &mut [f32], Range<usize>) + 'k;

impl Conv {
    /// This conv, its ReLU and the max-pool `pool` that reads its output,
    /// as one kernel ([`conv::conv2d_relu_maxpool2_forward`]): `out` (rows
    /// × the pool's out_len) the pool's output, `argmax` a byte per output
    /// for [`Conv::backward_input_pooled`] and
    /// [`Conv::weight_grad_chunk_pooled`]. The conv's own output is never
    /// stored. The same bits as the two layers' `forward`s.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_pooled(
        &self,
        path: KernelPath,
        out: &mut [f32],
        argmax: &mut [u8],
        inp: &[f32],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
    ) {
        let (w, b) = (
            tensor(params, store, self.weight),
            tensor(params, store, self.bias),
        );
        conv::conv2d_relu_maxpool2_forward(path, out, argmax, inp, w, b, rows, self.geom, scratch);
    }

    /// [`Layer::backward_input`] of this conv when a max-pool followed it
    /// ([`Conv::forward_pooled`]): the gradient at its output is routed on
    /// the fly from the pool's output gradient `d_pooled` (masked by the
    /// ReLU) and the `argmax` bytes, never stored whole. The same bits as
    /// [`crate::kernels::pool::maxpool2_backward_routed`] then
    /// [`Layer::backward_input`].
    #[allow(clippy::too_many_arguments)]
    pub fn backward_input_pooled(
        &self,
        path: KernelPath,
        d_inp: &mut [f32],
        d_pooled: &[f32],
        argmax: &[u8],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
    ) {
        let w = tensor(params, store, self.weight);
        conv::conv2d_backward_input_pooled(
            path, d_inp, d_pooled, argmax, w, rows, self.geom, scratch,
        );
    }

    /// [`Layer::weight_grad_chunk`] of this conv when a max-pool followed
    /// it, with its output gradient routed as in
    /// [`Conv::backward_input_pooled`].
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad_chunk_pooled(
        &self,
        path: KernelPath,
        j: usize,
        grad: &mut [f32],
        d_pooled: &[f32],
        argmax: &[u8],
        inp: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
        apply: &mut dyn FnMut(Range<usize>, &[f32]),
    ) {
        self.weight_grad_chunk_with(j, grad, store, apply, &mut |dw, db, co| {
            conv::conv2d_weight_grad_pooled(
                path, dw, db, d_pooled, argmax, inp, rows, self.geom, co, scratch,
            )
        })
    }

    /// Chunk `j` (output channels `j·CONV_CHANNELS ..`): `kernel(dw, db,
    /// channels)` computes it into `grad`, then `apply` gets the filters'
    /// and biases' runs of the parameter buffer.
    fn weight_grad_chunk_with(
        &self,
        j: usize,
        grad: &mut [f32],
        store: &ParamStore,
        apply: &mut dyn FnMut(Range<usize>, &[f32]),
        kernel: &mut ChunkKernel,
    ) {
        let (g, t) = (self.geom, store.tensors());
        let co = j * CONV_CHANNELS..((j + 1) * CONV_CHANNELS).min(g.c_out);
        let per = g.c_in * g.k * g.k;
        let (dw, rest) = grad.split_at_mut(co.len() * per);
        let db = &mut rest[..co.len()];
        kernel(dw, db, co.clone());
        let w0 = t[self.weight].offset + co.start * per;
        let b0 = t[self.bias].offset + co.start;
        apply(w0..w0 + dw.len(), dw);
        apply(b0..b0 + db.len(), db);
    }
}

impl Layer {
    /// Floats per sample in.
    pub fn in_len(&self) -> usize {
        match self {
            Self::Linear(l) => l.inputs,
            Self::Conv(c) => c.geom.in_len(),
            Self::Pool(p) => p.geom.in_len(),
        }
    }

    /// Floats per sample out.
    pub fn out_len(&self) -> usize {
        match self {
            Self::Linear(l) => l.outputs,
            Self::Conv(c) => c.geom.out_len(),
            Self::Pool(p) => p.geom.out_len(),
        }
    }

    /// Whether a ReLU follows.
    pub fn relu(&self) -> bool {
        match self {
            Self::Linear(l) => l.relu,
            Self::Conv(_) => true,
            Self::Pool(_) => false,
        }
    }

    /// `out` (rows × out_len) = the layer on `inp` (rows × in_len), ReLU
    /// included. `path` picks the conv kernels; `scratch` is grown as
    /// needed.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        path: KernelPath,
        out: &mut [f32],
        inp: &[f32],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
    ) {
        match self {
            Self::Linear(l) => {
                let (w, b) = l.tensors(params, store);
                gemm::forward(inp, w, b, out, rows, l.inputs);
            }
            Self::Conv(c) => {
                let (w, b) = (
                    tensor(params, store, c.weight),
                    tensor(params, store, c.bias),
                );
                conv::conv2d_forward(path, out, inp, w, b, rows, c.geom, scratch);
            }
            Self::Pool(p) => conv::maxpool2_forward(out, inp, rows, p.geom),
        }
        if self.relu() {
            relu_forward(out);
        }
    }

    /// `d_inp` (rows × in_len) = the gradient with respect to the layer's
    /// input, given `d_out`, the gradient with respect to its output before
    /// the ReLU (already masked), and its input `inp`. Overwrites `d_inp`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_input(
        &self,
        path: KernelPath,
        d_inp: &mut [f32],
        d_out: &[f32],
        inp: &[f32],
        params: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
    ) {
        match self {
            Self::Linear(l) => {
                let (w, _) = l.tensors(params, store);
                gemm::input_grad(d_out, w, d_inp, rows, l.outputs, l.inputs);
            }
            Self::Conv(c) => {
                let w = tensor(params, store, c.weight);
                conv::conv2d_backward_input(path, d_inp, d_out, w, rows, c.geom, scratch);
            }
            Self::Pool(p) => conv::maxpool2_backward(d_inp, d_out, inp, rows, p.geom),
        }
    }

    /// How many chunks the weight gradient is cut into (0 without
    /// parameters). Depends only on the layer, never on the thread count.
    pub fn grad_chunks(&self) -> usize {
        match self {
            Self::Linear(l) => l.inputs.div_ceil(LINEAR_COLS),
            Self::Conv(c) => c.geom.c_out.div_ceil(CONV_CHANNELS),
            Self::Pool(_) => 0,
        }
    }

    /// The largest gradient buffer a chunk needs.
    pub fn grad_len(&self) -> usize {
        match self {
            Self::Linear(l) => l.outputs * LINEAR_COLS + l.outputs,
            Self::Conv(c) => CONV_CHANNELS * (c.geom.c_in * c.geom.k * c.geom.k + 1),
            Self::Pool(_) => 0,
        }
    }

    /// Chunk `j` of the weight (and bias) gradient, summed over the `rows`
    /// samples of `d_out` (the gradient at the layer's output, masked) and
    /// `inp` (its input), computed into `grad` and handed to `apply(range,
    /// g)`: `range` a run of the parameter buffer, `g` its gradient. Linear
    /// layers cut by input columns (every chunk has all the rows of W, a
    /// strip of columns; the first also the bias), conv layers by output
    /// channels (a run of whole filters and their biases). Each gradient
    /// element is computed in exactly one chunk, in an order fixed by the
    /// layer alone.
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad_chunk(
        &self,
        path: KernelPath,
        j: usize,
        grad: &mut [f32],
        d_out: &[f32],
        inp: &[f32],
        store: &ParamStore,
        rows: usize,
        scratch: &mut Vec<f32>,
        apply: &mut dyn FnMut(Range<usize>, &[f32]),
    ) {
        let t = store.tensors();
        match self {
            Self::Linear(l) => {
                let cols = j * LINEAR_COLS..((j + 1) * LINEAR_COLS).min(l.inputs);
                let width = cols.len();
                let (dw, rest) = grad.split_at_mut(l.outputs * width);
                l.weight_grad_cols(dw, d_out, inp, rows, cols.clone());
                let w0 = t[l.weight].offset;
                for o in 0..l.outputs {
                    let at = w0 + o * l.inputs + cols.start;
                    apply(at..at + width, &dw[o * width..(o + 1) * width]);
                }
                if j == 0 {
                    let db = &mut rest[..l.outputs];
                    crate::kernels::bias_grad(&d_out[..rows * l.outputs], db);
                    apply(t[l.bias].range(), db);
                }
            }
            Self::Conv(c) => c.weight_grad_chunk_with(j, grad, store, apply, &mut |dw, db, co| {
                conv::conv2d_weight_grad(path, dw, db, d_out, inp, rows, c.geom, co, scratch)
            }),
            Self::Pool(_) => {}
        }
    }
}
