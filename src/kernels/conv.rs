//! Conv2d and MaxPool2d(2) kernels: forward, input gradient, weight
//! gradient, on blocks of `n` samples.
//!
//! # Layouts
//!
//! As PyTorch's: a sample's activations are C × H × W, row-major; a block
//! of `n` samples is contiguous (NCHW). The conv weight is
//! `[c_out][c_in][k][k]`, the bias `[c_out]`. The kernel is square with an
//! odd side K, stride 1, and 'same' zero padding p = (K − 1)/2, so the
//! output is H × W like the input. MaxPool2d(2) has window 2 × 2 and
//! stride 2; the output is ⌊H/2⌋ × ⌊W/2⌋ (an odd last row or column is
//! dropped, as in PyTorch).
//!
//! # The direct kernels (paths `Portable`, `Avx2`, `Avx512`)
//!
//! Each sample is first copied into a zero-bordered scratch image `xp`,
//! C × (H+2p) × S with row stride S = W + 2p, plus `MAX_LANES` floats of
//! slack. Output pixel (y, x) of the convolution then reads `xp` at
//! (y + kh, x + kw) with no bounds test, and a row segment of L
//! consecutive outputs reads L consecutive floats of `xp`: the kernels are
//! vectorised along x, L = 16 (AVX-512) or 8 (AVX2, portable) lanes. A
//! row of W outputs takes ⌈W/L⌉ vectors; lanes past W compute garbage that
//! is never stored (on the target shapes 14 and 28 wide, 87.5% of the
//! lanes are useful).
//!
//! Forward (and the input gradient, which is the forward of `d_out` with
//! the weight transposed in channels and flipped in space — see
//! [`conv2d_backward_input`]):
//!
//! ```text
//! for each sample:                      pad it into xp
//!   for each block of CB output channels     (weights packed [ci][kh][kw][CB])
//!     for each block of R row vectors (y, x0)   ← register block: R × CB accumulators
//!       acc = bias
//!       for ci, kh, kw:                 load R input vectors, broadcast CB weights,
//!                                       R·CB fused multiply-adds
//!       store R × CB output vectors
//! ```
//!
//! Weight gradient, `dw[co][ci][kh][kw] = Σ_s Σ_y Σ_x d_out[s][co][y][x] ·
//! xp[s][ci][y+kh][x+kw]`: one accumulator *vector* per weight, whose lane
//! j sums the products of the pixels x ≡ j (mod L); the lanes are added by
//! `Vector::reduce_sum` at the end. `d_out` is copied into a scratch
//! `dp` whose rows are padded with zeros to whole vectors, so the garbage
//! lanes of `xp` (neighbouring pixels, or zeros) are multiplied by 0. (With
//! an infinite input pixel that can make a weight's gradient NaN where the
//! exact sum would be ±∞; finite inputs are unaffected.)
//!
//! ```text
//! for each chunk of WG_CHUNK samples:   pad them into xp, dp
//!   for each block of CB output channels, ci, kh, taps kw0..kw0+TB:
//!     load CB × TB accumulator vectors          ← register block
//!     for each sample of the chunk, y, x0:  load CB d_out vectors, TB input
//!                                           vectors, CB·TB fused multiply-adds
//!     store them back
//! reduce each accumulator vector to its weight
//! ```
//!
//! The block shapes (R, CB, TB) are chosen per ISA and channel count by
//! `fwd_block` and `wg_shape`; the register budgets are the 32 vector
//! registers of AVX-512 and the 16 of AVX2.
//!
//! # Determinism
//!
//! Every output element is one fixed sequence of operations that depends
//! only on the path and the geometry, never on the blocking:
//!
//! * forward / input gradient: `bias + Σ` over (ci, kh, kw) in that order,
//!   one multiply-add per term (fused on the AVX paths). A sample's output
//!   depends only on that sample, so it has the same bits whatever block of
//!   `n` it is computed in, at any position;
//! * weight gradient: lane j of an accumulator adds its terms in the order
//!   (sample, y, x0), samples 0, 1, …, n−1; then the fixed lane tree. The
//!   chunking of samples is invisible (the accumulators are stored and
//!   reloaded exactly), and so is the cut of `co_range`: splitting the
//!   channels into several calls gives the very same bits.
//!
//! The paths differ in the last bits from each other (fused or unfused
//! multiply-add, 8 or 16 lanes in the weight-gradient sums); hence the
//! [`KernelPath`] argument.
//!
//! # The `Gemm` path
//!
//! im2col + `matrixmultiply::sgemm`, one sample at a time (col2im is never
//! needed: the input gradient is again a forward). It is the independent
//! second implementation and the speed baseline the direct kernels were
//! measured against (they are 2–4× faster). Its bits are matrixmultiply's:
//! each element is one fused multiply-add chain in k order, in blocks of
//! k = 256, then `alpha·ab + beta·c`. matrixmultiply 0.3.11 builds its
//! AVX-512 kernel (default feature `avx512`, rustc ≥ 1.89) and picks it
//! by run-time detection, else AVX2 + FMA, else AVX, else scalar; the
//! AVX-512 and AVX2 + FMA kernels do the same arithmetic per element, so
//! this path has the same bits on both (checked on these shapes), while a
//! CPU without FMA would differ.
//!
//! # Scratch
//!
//! Every conv function takes the caller's `&mut Vec<f32>`, grows it when
//! short and never shrinks it; its contents on entry do not matter. One
//! scratch per thread, reused, means no allocation per call.
//!
//! # Pooling
//!
//! [`maxpool2_forward`], [`maxpool2_backward`]: branch-free selections (the
//! backward in explicit AVX2 where available), the same bits on every
//! ISA, hence no path argument. The maximum of a window is taken in
//! row-major order (0,0), (0,1), (1,0), (1,1) with the rule `v > max ||
//! v.is_nan()`, as PyTorch's CPU `max_pool2d` (`cpu_max_pool` in
//! `aten/src/ATen/native/cpu/MaxPoolKernel.cpp`): on a tie the *first*
//! maximum wins, a NaN wins over any number (the last NaN if several). The
//! backward pass recomputes that argmax from the input.
//!
//! Training runs a conv and its pool as one ([`super::pool`]):
//! [`conv2d_relu_maxpool2_forward`] pools each sample's output while it is
//! in L1 and keeps the argmax bytes, and [`conv2d_backward_input_pooled`]
//! and [`conv2d_weight_grad_pooled`] route the pooled gradient by them
//! straight into the padded copies they make anyway. Neither the conv's
//! output nor the gradient there is ever stored whole; the bits are those
//! of the separate kernels.
//!
//! Speed: `cargo bench --bench kernels -- 'conv|pool'`.

// The register blocks index fixed-size accumulator arrays with loop
// counters on purpose: the loops unroll completely and the arrays live in
// registers; iterator chains obscure that.
#![allow(clippy::needless_range_loop)]

use std::hint::select_unpredictable;
use std::ops::Range;

use super::dispatch::KernelPath;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Vector};

/// Widest vector in lanes: the slack after every padded image, so the
/// last vector of a row may read past the image's end.
const MAX_LANES: usize = 16;
/// Samples per chunk of the weight gradient: every accumulator block
/// streams over the chunk's padded copies (22 KiB a sample for the 6 → 16
/// channel 14 × 14 layer, 25 KiB for 1 → 6 at 28 × 28), which stay in
/// cache. Measured (AVX-512, GFLOP/s, conv1 / conv2): 2: 72 / 85,
/// 4: 73 / 89, 8: 69 / 88, 16: 71 / 89. The chunking changes no bit.
const WG_CHUNK: usize = 4;

/// The geometry of a 'same' convolution: `c_in` → `c_out` channels, H × W
/// pixels, a square K × K kernel (K odd), stride 1, padding (K − 1)/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl ConvGeom {
    /// # Panics
    /// If `k` is even (a 'same' convolution needs a centre pixel).
    pub fn new(c_in: usize, c_out: usize, h: usize, w: usize, k: usize) -> Self {
        let g = Self {
            c_in,
            c_out,
            h,
            w,
            k,
        };
        g.validate();
        g
    }

    /// The zero padding on each side, (K − 1)/2.
    pub fn pad(&self) -> usize {
        self.k / 2
    }

    /// Floats per input sample, `c_in · H · W`.
    pub fn in_len(&self) -> usize {
        prod(&[self.c_in, self.h, self.w])
    }

    /// Floats per output sample, `c_out · H · W`.
    pub fn out_len(&self) -> usize {
        prod(&[self.c_out, self.h, self.w])
    }

    /// Floats in the weight, `c_out · c_in · K · K`.
    pub fn weight_len(&self) -> usize {
        prod(&[self.c_out, self.c_in, self.k, self.k])
    }

    /// Floating-point operations of the forward pass per sample, `2 · c_out
    /// · c_in · K² · H · W` (multiply and add counted apart); the input
    /// gradient and the weight gradient cost the same.
    pub fn flops_per_sample(&self) -> u64 {
        2 * prod(&[self.c_out, self.c_in, self.k, self.k, self.h, self.w]) as u64
    }

    fn validate(&self) {
        assert!(
            self.k % 2 == 1,
            "conv kernel size must be odd, got {}",
            self.k
        );
        // Every size derived below is a sub-product of these, and the
        // padded scratch images add at most 2p per dimension.
        let add = |a: usize, b: usize| a.checked_add(b).expect("tensor size overflows usize");
        let _ = prod(&[
            self.c_in.max(self.c_out),
            add(self.h, self.k),
            add(add(self.w, self.k), MAX_LANES),
            self.k,
            self.k,
            MAX_LANES,
        ]);
        let _ = prod(&[self.c_out, self.c_in, self.k, self.k, MAX_LANES]);
    }
}

/// The geometry of MaxPool2d(2): `c` channels of H × W in, ⌊H/2⌋ × ⌊W/2⌋
/// out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl PoolGeom {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }
    /// Output rows, ⌊H/2⌋.
    pub fn out_h(&self) -> usize {
        self.h / 2
    }
    /// Output columns, ⌊W/2⌋.
    pub fn out_w(&self) -> usize {
        self.w / 2
    }
    /// Floats per input sample, `c · H · W`.
    pub fn in_len(&self) -> usize {
        prod(&[self.c, self.h, self.w])
    }
    /// Floats per output sample, `c · ⌊H/2⌋ · ⌊W/2⌋`.
    pub fn out_len(&self) -> usize {
        prod(&[self.c, self.out_h(), self.out_w()])
    }
}

/// Checked product: a wrapped size must not pass for a small one.
fn prod(xs: &[usize]) -> usize {
    xs.iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .expect("tensor size overflows usize")
}

// ---------------------------------------------------------------------------
// Public kernels

/// `out[s][co] = bias[co] + Σ_ci weight[co][ci] ⋆ inp[s][ci]` for the `n`
/// samples of `inp` (n × c_in × H × W); `out` (n × c_out × H × W) is
/// overwritten. `scratch` is grown as needed and may hold anything.
///
/// # Panics
/// If a slice length disagrees with `n` and `g`, `g.k` is even, or `path`
/// is not available on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    path: KernelPath,
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    assert_eq!(
        Some(out.len()),
        n.checked_mul(g.out_len()),
        "out must be n × c_out × H × W"
    );
    conv_forward_into(path, Out::Whole(out), inp, weight, bias, n, g, scratch)
}

/// [`conv2d_forward`], then ReLU, then MaxPool2d(2), sample by sample:
/// `out` (n × c_out × ⌊H/2⌋ × ⌊W/2⌋) and `argmax` (a byte per output) are
/// [`super::pool::relu_maxpool2_forward`]'s on the convolution's output, which is
/// computed one sample at a time into `scratch` and never stored whole
/// (see [`super::pool`]). The same bits as the three in sequence.
///
/// # Panics
/// As [`conv2d_forward`], for `out` and `argmax` sized as the pool's
/// output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_maxpool2_forward(
    path: KernelPath,
    out: &mut [f32],
    argmax: &mut [u8],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    let pg = PoolGeom::new(g.c_out, g.h, g.w);
    assert_eq!(
        Some(out.len()),
        n.checked_mul(pg.out_len()),
        "out must be n × c_out × H/2 × W/2"
    );
    assert_eq!(argmax.len(), out.len(), "argmax must be out's size");
    conv_forward_into(
        path,
        Out::ReluPool { out, argmax, g: pg },
        inp,
        weight,
        bias,
        n,
        g,
        scratch,
    )
}

/// [`conv2d_forward`] and [`conv2d_relu_maxpool2_forward`] after their
/// own checks of `out`.
#[allow(clippy::too_many_arguments)]
fn conv_forward_into(
    path: KernelPath,
    out: Out,
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    g.validate();
    assert_eq!(
        Some(inp.len()),
        n.checked_mul(g.in_len()),
        "inp must be n × c_in × H × W"
    );
    assert_eq!(
        weight.len(),
        g.weight_len(),
        "weight must be c_out × c_in × K × K"
    );
    assert_eq!(bias.len(), g.c_out, "bias must have c_out entries");
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU"
    );
    if out.is_empty() {
        return;
    }
    let taps = g.k * g.k;
    let get = |o: usize, i: usize, t: usize| weight[(o * g.c_in + i) * taps + t];
    let layer = Layer {
        c_in: g.c_in,
        c_out: g.c_out,
        h: g.h,
        w: g.w,
        k: g.k,
    };
    match path {
        KernelPath::Gemm => {
            gemm_forward(out, Source::Dense(inp), &get, Some(bias), n, layer, scratch)
        }
        _ => direct_forward(
            path,
            out,
            Source::Dense(inp),
            &get,
            Some(bias),
            n,
            layer,
            scratch,
        ),
    }
}

/// The input gradient: `d_inp` (n × c_in × H × W) = the gradient of
/// `Σ out · d_out` with respect to `inp`, for `d_out` (n × c_out × H × W).
/// `d_inp` is overwritten. It is computed as the forward convolution of
/// `d_out` with the weight `w'[ci][co][kh][kw] = weight[co][ci][K−1−kh][K−1−kw]`
/// (stride 1 and symmetric padding make the adjoint a 'same' convolution
/// again), by the very same kernels.
///
/// # Panics
/// As [`conv2d_forward`].
pub fn conv2d_backward_input(
    path: KernelPath,
    d_inp: &mut [f32],
    d_out: &[f32],
    weight: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    assert_eq!(
        Some(d_out.len()),
        n.checked_mul(g.out_len()),
        "d_out must be n × c_out × H × W"
    );
    backward_input_from(path, d_inp, Source::Dense(d_out), weight, n, g, scratch)
}

/// [`conv2d_backward_input`] for a conv whose output went through ReLU and
/// [`conv2d_relu_maxpool2_forward`]'s pool: `d_out` is routed on the fly
/// from the pool's output gradient `d_pooled` (n × c_out × ⌊H/2⌋ × ⌊W/2⌋,
/// the ReLU's mask already applied) and the forward's `argmax` bytes, as
/// [`super::pool::maxpool2_backward_routed`] would route it; the
/// full-size gradient is never stored. The same bits as routing first.
///
/// # Panics
/// As [`conv2d_backward_input`], for `d_pooled` and `argmax` sized as the
/// pool's output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input_pooled(
    path: KernelPath,
    d_inp: &mut [f32],
    d_pooled: &[f32],
    argmax: &[u8],
    weight: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    let d_out = pooled_source(d_pooled, argmax, n, g);
    backward_input_from(path, d_inp, d_out, weight, n, g, scratch)
}

/// The [`Source`] of a pooled gradient, its lengths checked.
fn pooled_source<'a>(d_pooled: &'a [f32], argmax: &'a [u8], n: usize, g: ConvGeom) -> Source<'a> {
    let pg = PoolGeom::new(g.c_out, g.h, g.w);
    assert_eq!(
        Some(d_pooled.len()),
        n.checked_mul(pg.out_len()),
        "d_pooled must be n × c_out × H/2 × W/2"
    );
    assert_eq!(
        argmax.len(),
        d_pooled.len(),
        "argmax must be d_pooled's size"
    );
    Source::Pooled {
        d_pooled,
        argmax,
        g: pg,
    }
}

/// [`conv2d_backward_input`] and [`conv2d_backward_input_pooled`] after
/// their own checks of `d_out`.
fn backward_input_from(
    path: KernelPath,
    d_inp: &mut [f32],
    d_out: Source,
    weight: &[f32],
    n: usize,
    g: ConvGeom,
    scratch: &mut Vec<f32>,
) {
    g.validate();
    assert_eq!(
        Some(d_inp.len()),
        n.checked_mul(g.in_len()),
        "d_inp must be n × c_in × H × W"
    );
    assert_eq!(
        weight.len(),
        g.weight_len(),
        "weight must be c_out × c_in × K × K"
    );
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU"
    );
    if d_inp.is_empty() {
        return;
    }
    let (k, taps) = (g.k, g.k * g.k);
    // w'[ci][co][t] with t = kh·K + kw reads weight[co][ci][K−1−kh][K−1−kw],
    // whose tap index is K² − 1 − t.
    let get = |o: usize, i: usize, t: usize| weight[(i * g.c_in + o) * taps + (taps - 1 - t)];
    let layer = Layer {
        c_in: g.c_out,
        c_out: g.c_in,
        h: g.h,
        w: g.w,
        k,
    };
    let out = Out::Whole(d_inp);
    match path {
        KernelPath::Gemm => gemm_forward(out, d_out, &get, None, n, layer, scratch),
        _ => direct_forward(path, out, d_out, &get, None, n, layer, scratch),
    }
}

/// The weight and bias gradients of output channels `co_range`: `dw`
/// (co_range.len() × c_in × K × K) and `db` (co_range.len()), the
/// gradients of `Σ out · d_out` summed over the `n` samples in order 0, 1,
/// …, n−1. Both are overwritten.
///
/// The result depends only on the path and the inputs: computing 0..16 in
/// one call or as 0..8 and 8..16 gives the same bits (see the module docs).
///
/// # Panics
/// As [`conv2d_forward`], and if `co_range` is not inside `0..c_out`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad(
    path: KernelPath,
    dw: &mut [f32],
    db: &mut [f32],
    d_out: &[f32],
    inp: &[f32],
    n: usize,
    g: ConvGeom,
    co_range: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    assert_eq!(
        Some(d_out.len()),
        n.checked_mul(g.out_len()),
        "d_out must be n × c_out × H × W"
    );
    let d_out = Source::Dense(d_out);
    weight_grad_from(path, dw, db, d_out, inp, n, g, co_range, scratch)
}

/// [`conv2d_weight_grad`] with `d_out` routed on the fly from a pooled
/// gradient, as [`conv2d_backward_input_pooled`] takes it. The same bits
/// as routing first.
///
/// # Panics
/// As [`conv2d_weight_grad`], for `d_pooled` and `argmax` sized as the
/// pool's output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad_pooled(
    path: KernelPath,
    dw: &mut [f32],
    db: &mut [f32],
    d_pooled: &[f32],
    argmax: &[u8],
    inp: &[f32],
    n: usize,
    g: ConvGeom,
    co_range: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    let d_out = pooled_source(d_pooled, argmax, n, g);
    weight_grad_from(path, dw, db, d_out, inp, n, g, co_range, scratch)
}

/// [`conv2d_weight_grad`] and [`conv2d_weight_grad_pooled`] after their
/// own checks of `d_out`.
#[allow(clippy::too_many_arguments)]
fn weight_grad_from(
    path: KernelPath,
    dw: &mut [f32],
    db: &mut [f32],
    d_out: Source,
    inp: &[f32],
    n: usize,
    g: ConvGeom,
    co_range: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    g.validate();
    assert!(
        co_range.start <= co_range.end && co_range.end <= g.c_out,
        "co_range {co_range:?} outside 0..{}",
        g.c_out
    );
    let cor = co_range.len();
    assert_eq!(
        Some(inp.len()),
        n.checked_mul(g.in_len()),
        "inp must be n × c_in × H × W"
    );
    assert_eq!(
        dw.len(),
        prod(&[cor, g.c_in, g.k, g.k]),
        "dw must be co_range × c_in × K × K"
    );
    assert_eq!(db.len(), cor, "db must have co_range.len() entries");
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU"
    );
    if n == 0 || g.h == 0 || g.w == 0 {
        dw.fill(0.0);
        db.fill(0.0);
        return;
    }
    if cor == 0 {
        return;
    }
    match path {
        KernelPath::Gemm => gemm_weight_grad(dw, db, d_out, inp, n, g, co_range, scratch),
        _ => direct_weight_grad(path, dw, db, d_out, inp, n, g, co_range, scratch),
    }
}

/// MaxPool2d(2) forward: `out[s][c][oy][ox]` = the maximum of the 2 × 2
/// window at (2·oy, 2·ox) of `inp` (n × c × H × W); `out` is n × c × ⌊H/2⌋ ×
/// ⌊W/2⌋, overwritten. NaN propagates (see the module docs).
///
/// No [`KernelPath`] argument: the result is a selection, not arithmetic,
/// so every ISA gives the same bits; the AVX2 copy is picked at run time.
///
/// # Panics
/// If a slice length disagrees with `n` and `g`.
pub fn maxpool2_forward(out: &mut [f32], inp: &[f32], n: usize, g: PoolGeom) {
    assert_eq!(
        Some(inp.len()),
        n.checked_mul(g.in_len()),
        "inp must be n × c × H × W"
    );
    assert_eq!(
        Some(out.len()),
        n.checked_mul(g.out_len()),
        "out must be n × c × H/2 × W/2"
    );
    if out.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if KernelPath::Avx2.is_available() {
        // SAFETY: AVX2 and FMA were detected; the body is safe code.
        return unsafe { pool_forward_avx2(out, inp, g) };
    }
    pool_forward_body(out, inp, g)
}

/// MaxPool2d(2) backward: `d_inp` (n × c × H × W, overwritten) gets each
/// `d_out` value at the position of its window's maximum (recomputed from
/// `inp`, first maximum on a tie) and 0 everywhere else, the dropped last
/// row or column included. Same bits on every ISA, as
/// [`maxpool2_forward`].
///
/// # Panics
/// If a slice length disagrees with `n` and `g`.
pub fn maxpool2_backward(d_inp: &mut [f32], d_out: &[f32], inp: &[f32], n: usize, g: PoolGeom) {
    assert_eq!(
        Some(inp.len()),
        n.checked_mul(g.in_len()),
        "inp must be n × c × H × W"
    );
    assert_eq!(
        Some(d_inp.len()),
        n.checked_mul(g.in_len()),
        "d_inp must be n × c × H × W"
    );
    assert_eq!(
        Some(d_out.len()),
        n.checked_mul(g.out_len()),
        "d_out must be n × c × H/2 × W/2"
    );
    if d_inp.is_empty() {
        return;
    }
    if g.out_h() == 0 || g.out_w() == 0 {
        d_inp.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if KernelPath::Avx2.is_available() {
        // SAFETY: AVX2 and FMA were detected; the body is safe code.
        return unsafe { pool_backward_avx2(d_inp, d_out, inp, g) };
    }
    pool_backward_body(d_inp, d_out, inp, g)
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_forward_avx2(out: &mut [f32], inp: &[f32], g: PoolGeom) {
    pool_forward_body(out, inp, g)
}

/// [`pool_backward_body`] with explicit AVX2, four windows at a time (the
/// scalar argmax compiles to unpredictable branches, and autovectorised
/// code leaves the short rows, 7 or 14 windows, to a scalar tail). Rows
/// of fewer than 4 windows take the scalar body.
///
/// # Safety
/// The CPU supports AVX2 and FMA; lengths as checked by
/// [`maxpool2_backward`], the output not empty.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_backward_avx2(d_inp: &mut [f32], d_out: &[f32], inp: &[f32], g: PoolGeom) {
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    if ow < 4 {
        return pool_backward_body(d_inp, d_out, inp, g);
    }
    for ((pi, gp), po) in inp
        .chunks_exact(h * w)
        .zip(d_inp.chunks_exact_mut(h * w))
        .zip(d_out.chunks_exact(oh * ow))
    {
        for (oy, grow) in po.chunks_exact(ow).enumerate() {
            let r0 = &pi[2 * oy * w..][..2 * ow];
            let r1 = &pi[(2 * oy + 1) * w..][..2 * ow];
            let (d0, d1) = gp[2 * oy * w..][..w + 2 * ow].split_at_mut(w);
            super::pool::groups_of_4(ow, |x0| {
                let at = 2 * x0..2 * x0 + 8;
                // SAFETY: AVX2 is the caller's promise (the closure is
                // inlined into this function); the slices have the fixed
                // lengths `window4` reads and writes.
                unsafe {
                    window4(
                        r0[at.clone()].try_into().unwrap(),
                        r1[at.clone()].try_into().unwrap(),
                        grow[x0..x0 + 4].try_into().unwrap(),
                        (&mut d0[at.clone()]).try_into().unwrap(),
                        (&mut d1[at]).try_into().unwrap(),
                    )
                };
            });
            if w % 2 == 1 {
                gp[2 * oy * w + w - 1] = 0.0;
                gp[(2 * oy + 1) * w + w - 1] = 0.0;
            }
        }
        if h % 2 == 1 {
            gp[(h - 1) * w..].fill(0.0);
        }
    }
}

/// Four windows: rows `r0` = a0 b0 a1 b1 …, `r1` = c0 d0 c1 d1 …, their
/// gradients `g`; writes the gradient rows `d0`, `d1`. The work is done
/// in the even lanes, with each pair swapped into the odd lanes' place
/// (no lane crossing), by the same rule as [`pool_backward_body`].
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window4(
    r0: &[f32; 8],
    r1: &[f32; 8],
    g: &[f32; 4],
    d0: &mut [f32; 8],
    d1: &mut [f32; 8],
) {
    use core::arch::x86_64::*;
    // SAFETY: AVX2 is the caller's promise; every load and store touches
    // exactly the 8 (or 4) floats of its array.
    unsafe {
        let a = _mm256_loadu_ps(r0.as_ptr());
        let c = _mm256_loadu_ps(r1.as_ptr());
        // Even lanes: b (and d) swapped in from the odd lane beside.
        let b = _mm256_permute_ps::<0b10_11_00_01>(a);
        let d = _mm256_permute_ps::<0b10_11_00_01>(c);
        let takes = |v: __m256, m: __m256| {
            _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, m),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
            )
        };
        let tb = takes(b, a);
        let m = _mm256_blendv_ps(a, b, tb);
        let tc = takes(c, m);
        let m = _mm256_blendv_ps(m, c, tc);
        let td = takes(d, m);
        // The last to take over is the argmax.
        let sc = _mm256_andnot_ps(td, tc);
        let tcd = _mm256_or_ps(tc, td);
        let sb = _mm256_andnot_ps(tcd, tb);
        let sa = _mm256_andnot_ps(
            _mm256_or_ps(tb, tcd),
            _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
        );
        // Masks per output lane: even lanes a (c), odd lanes b (d), whose
        // masks sit in the even lane to their left.
        let m0 = _mm256_blend_ps::<0b1010_1010>(sa, _mm256_permute_ps::<0b10_10_00_00>(sb));
        let m1 = _mm256_blend_ps::<0b1010_1010>(sc, _mm256_permute_ps::<0b10_10_00_00>(td));
        // g0 g0 g1 g1 g2 g2 g3 g3.
        let gg = _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(g.as_ptr())),
            _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
        );
        _mm256_storeu_ps(d0.as_mut_ptr(), _mm256_and_ps(m0, gg));
        _mm256_storeu_ps(d1.as_mut_ptr(), _mm256_and_ps(m1, gg));
    }
}

/// Lengths checked by [`maxpool2_forward`]; `out` is not empty.
#[inline(always)]
fn pool_forward_body(out: &mut [f32], inp: &[f32], g: PoolGeom) {
    let (w, oh, ow) = (g.w, g.out_h(), g.out_w());
    for (pi, po) in inp.chunks_exact(g.h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, orow) in po.chunks_exact_mut(ow).enumerate() {
            let r0 = &pi[2 * oy * w..][..2 * ow];
            let r1 = &pi[(2 * oy + 1) * w..][..2 * ow];
            for ((o, a), b) in orow
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                *o = pick(pick(pick(a[0], a[1]), b[0]), b[1]);
            }
        }
    }
}

/// Lengths checked by [`maxpool2_backward`]; the output is not empty.
#[inline(always)]
fn pool_backward_body(d_inp: &mut [f32], d_out: &[f32], inp: &[f32], g: PoolGeom) {
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    for ((pi, gp), po) in inp
        .chunks_exact(h * w)
        .zip(d_inp.chunks_exact_mut(h * w))
        .zip(d_out.chunks_exact(oh * ow))
    {
        for (oy, grow) in po.chunks_exact(ow).enumerate() {
            let r0 = &pi[2 * oy * w..][..2 * ow];
            let r1 = &pi[(2 * oy + 1) * w..][..2 * ow];
            let (d0, d1) = gp[2 * oy * w..][..w + 2 * ow].split_at_mut(w);
            let windows = grow
                .iter()
                .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)))
                .zip(d0.chunks_exact_mut(2).zip(d1.chunks_exact_mut(2)));
            for ((&gv, (a, b)), (da, db)) in windows {
                // The argmax without branches (on random data they would
                // mispredict half the time): each later element takes over
                // if it wins by `pick`'s rule against the running maximum.
                // `|` and `&`, not `||` and `&&`, so nothing short-circuits;
                // `sel` selects bit patterns, as integer conditional moves.
                let tb = (a[1] > a[0]) | a[1].is_nan();
                let m = sel(tb, a[1], a[0]);
                let tc = (b[0] > m) | b[0].is_nan();
                let m = sel(tc, b[0], m);
                let td = (b[1] > m) | b[1].is_nan();
                // The last to take over is the argmax.
                let sc = tc & !td;
                let sb = tb & !tc & !td;
                let sa = !(tb | tc | td);
                da[0] = sel(sa, gv, 0.0);
                da[1] = sel(sb, gv, 0.0);
                db[0] = sel(sc, gv, 0.0);
                db[1] = sel(td, gv, 0.0);
            }
            // An odd last column: no window reads it.
            if w % 2 == 1 {
                gp[2 * oy * w + w - 1] = 0.0;
                gp[(2 * oy + 1) * w + w - 1] = 0.0;
            }
        }
        // An odd last row: likewise.
        if h % 2 == 1 {
            gp[(h - 1) * w..].fill(0.0);
        }
    }
}

/// The running maximum `m` meets `v`: PyTorch's rule, `v` wins if it is
/// greater or NaN.
#[inline(always)]
fn pick(m: f32, v: f32) -> f32 {
    sel((v > m) | v.is_nan(), v, m)
}

/// `if c { x } else { y }` without a branch: a float select on x86 becomes
/// a compare-and-jump, an integer one a conditional move.
#[inline(always)]
fn sel(c: bool, x: f32, y: f32) -> f32 {
    f32::from_bits(select_unpredictable(c, x.to_bits(), y.to_bits()))
}

// ---------------------------------------------------------------------------
// Shared pieces

/// The convolution as the kernels see it: the input gradient is a forward
/// with `c_in` and `c_out` swapped.
#[derive(Clone, Copy, Debug)]
struct Layer {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
}

impl Layer {
    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.c_out * self.h * self.w
    }
}

/// A zero-bordered copy of one sample: `c` planes of (H + 2p) rows with
/// stride `s` = W + 2p, then `MAX_LANES` floats of slack.
#[derive(Clone, Copy, Debug)]
struct Padded {
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    /// Row stride, W + 2p.
    s: usize,
    /// Floats per channel, (H + 2p) · s.
    plane: usize,
    /// Floats in all, c · plane + MAX_LANES.
    len: usize,
}

impl Padded {
    fn new(c: usize, h: usize, w: usize, k: usize) -> Self {
        let p = k / 2;
        let s = w + 2 * p;
        let plane = prod(&[h + 2 * p, s]);
        Self {
            c,
            h,
            w,
            p,
            s,
            plane,
            len: prod(&[c, plane]) + MAX_LANES,
        }
    }

    /// Copies sample `s` of `src` (c × H × W) into the interior of `dst`;
    /// the border and the slack keep what they hold (zeros, once cleared).
    fn fill(&self, dst: &mut [f32], src: Source, s: usize) {
        let dst = &mut dst[..self.len];
        if self.w == 0 || self.h == 0 {
            return;
        }
        let len = prod(&[self.c, self.h, self.w]);
        let first = self.p * self.s + self.p;
        src.copy_out(
            s,
            len,
            (self.h, self.w),
            0..self.c,
            &mut dst[first..],
            (self.plane, self.s),
        );
    }
}

/// `dst.copy_from_slice(src)` for the short rows of an image (14 or 28
/// floats on MNIST), inline: `copy_from_slice` of a length known only at
/// run time is a call to `memcpy`, and the padding copies make tens of
/// thousands of them a step (7% of a LeNet epoch, in `perf record`).
///
/// Rows of up to 32 floats are copied without a loop, in blocks of 8 (or
/// 4) floats, the last block ending at the row's end and overlapping the
/// one before (the same values written twice). A loop of fixed-size
/// copies is not enough: LLVM recognises it as a `memcpy` and calls it
/// (2–4% of a LeNet epoch went to those calls, with `Padded::fill`).
/// Longer rows are left to `memcpy`, whose call is then cheap beside
/// the copy.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    fn block<const N: usize>(dst: &mut [f32], src: &[f32], at: usize) {
        let s: &[f32; N] = src[at..at + N].try_into().expect("N floats");
        let d: &mut [f32; N] = (&mut dst[at..at + N]).try_into().expect("N floats");
        *d = *s;
    }
    let n = src.len();
    assert_eq!(dst.len(), n);
    match n {
        0..4 => {
            for (x, y) in dst.iter_mut().zip(src) {
                *x = *y;
            }
        }
        4..8 => {
            block::<4>(dst, src, 0);
            block::<4>(dst, src, n - 4);
        }
        8..=32 => {
            block::<8>(dst, src, 0);
            if n > 16 {
                block::<8>(dst, src, 8);
            }
            if n > 24 {
                block::<8>(dst, src, 16);
            }
            block::<8>(dst, src, n - 8);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Splits the front of `scratch` (grown if short) into pieces of the given
/// sizes.
fn carve<const N: usize>(scratch: &mut Vec<f32>, sizes: [usize; N]) -> [&mut [f32]; N] {
    let total = sizes
        .iter()
        .try_fold(0usize, |a, &x| a.checked_add(x))
        .expect("scratch size overflows usize");
    if scratch.len() < total {
        scratch.resize(total, 0.0);
    }
    let mut rest = &mut scratch[..total];
    sizes.map(|len| {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        piece
    })
}

/// Whether `values` floats and `bytes` argmax bytes are the pool `g`'s
/// output for `n` samples of `len` floats (the pool's input, a conv's
/// output).
fn pooled_fits(g: PoolGeom, n: usize, len: usize, values: usize, bytes: usize) -> bool {
    g.in_len() == len && Some(values) == n.checked_mul(g.out_len()) && bytes == values
}

/// Where the kernels read a sample (c × H × W floats: the forward's input,
/// the input gradient's and the weight gradient's d_out).
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Sample s at `[s · len ..]`.
    Dense(&'a [f32]),
    /// The gradient at a conv's output, routed on the fly through the
    /// max-pool that followed it: sample s of the pool's output gradient
    /// (c × ⌊H/2⌋ × ⌊W/2⌋) and of its argmax bytes, by
    /// [`super::pool::route_plane`], plane by plane, into the
    /// kernel's own padded copy. The full-size gradient is never stored.
    Pooled {
        d_pooled: &'a [f32],
        argmax: &'a [u8],
        g: PoolGeom,
    },
}

impl Source<'_> {
    /// Floats of scratch a reader needs to see `len` floats of a sample
    /// in place: none when they are stored, `len` when they are routed.
    fn scratch_len(&self, len: usize) -> usize {
        match self {
            Source::Dense(_) => 0,
            Source::Pooled { .. } => len,
        }
    }

    /// Whether it holds `n` samples of `len` floats.
    fn holds(&self, n: usize, len: usize) -> bool {
        match self {
            Source::Dense(x) => x.len() == n * len,
            Source::Pooled {
                d_pooled,
                argmax,
                g,
            } => pooled_fits(*g, n, len, d_pooled.len(), argmax.len()),
        }
    }

    /// Copies channels `ch` of sample `s` (c × H × W, `len` floats in all)
    /// into `dst`, channel `ch.start + i`'s row y at `i · cstride + y ·
    /// rstride` (W floats); nothing else of `dst` is written.
    #[inline(always)]
    fn copy_out(
        &self,
        s: usize,
        len: usize,
        (h, w): (usize, usize),
        ch: Range<usize>,
        dst: &mut [f32],
        (cstride, rstride): (usize, usize),
    ) {
        match *self {
            Source::Dense(x) => {
                let x = &x[s * len..][..len];
                for (i, c) in ch.enumerate() {
                    for y in 0..h {
                        let at = i * cstride + y * rstride;
                        copy_row(&mut dst[at..at + w], &x[(c * h + y) * w..][..w]);
                    }
                }
            }
            Source::Pooled {
                d_pooled,
                argmax,
                g,
            } => {
                let (oh, ow) = (g.out_h(), g.out_w());
                assert!(g.h == h && g.w == w, "the pool's input is the conv's H × W");
                let olen = g.out_len();
                let (d, a) = (&d_pooled[s * olen..][..olen], &argmax[s * olen..][..olen]);
                let per = oh * ow;
                for (i, c) in ch.enumerate() {
                    let (dc, ac) = (&d[c * per..][..per], &a[c * per..][..per]);
                    super::pool::route_plane(&mut dst[i * cstride..], rstride, (h, w), dc, ac);
                }
            }
        }
    }
}

/// Where the forward kernels put each sample's output (c_out × H × W
/// floats, `Layer::out_len`).
enum Out<'a> {
    /// Sample s at `[s · out_len ..]` of the whole block's output.
    Whole(&'a mut [f32]),
    /// Each sample into the one-sample scratch `y`, then ReLU and the pool
    /// from there into sample s of `out` and `argmax`.
    ReluPool {
        out: &'a mut [f32],
        argmax: &'a mut [u8],
        g: PoolGeom,
    },
}

impl Out<'_> {
    /// Nothing to write.
    fn is_empty(&self) -> bool {
        match self {
            Out::Whole(o) => o.is_empty(),
            Out::ReluPool { out, .. } => out.is_empty(),
        }
    }

    /// Floats of one-sample scratch `y` that [`Self::sample`] needs.
    fn scratch_len(&self, out_len: usize) -> usize {
        match self {
            Out::Whole(_) => 0,
            Out::ReluPool { .. } => out_len,
        }
    }

    /// Whether it holds the output of `n` samples of `out_len` floats.
    fn holds(&self, n: usize, out_len: usize) -> bool {
        match self {
            Out::Whole(o) => o.len() == n * out_len,
            Out::ReluPool { out, argmax, g } => {
                pooled_fits(*g, n, out_len, out.len(), argmax.len())
            }
        }
    }

    /// Where sample s's output goes: its place in the block, or `y`
    /// (at least `out_len` floats).
    #[inline(always)]
    fn sample<'s>(&'s mut self, s: usize, out_len: usize, y: &'s mut [f32]) -> &'s mut [f32] {
        match self {
            Out::Whole(o) => &mut o[s * out_len..][..out_len],
            Out::ReluPool { .. } => &mut y[..out_len],
        }
    }

    /// Sample s's output is complete (in `y` if it went there).
    #[inline(always)]
    fn done(&mut self, s: usize, y: &[f32]) {
        if let Out::ReluPool { out, argmax, g } = self {
            let (len, g) = (g.out_len(), *g);
            crate::kernels::pool::relu_maxpool2_forward(
                &mut out[s * len..][..len],
                &mut argmax[s * len..][..len],
                &y[..g.in_len()],
                1,
                g,
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn isa_of(path: KernelPath) -> Isa {
    match path {
        KernelPath::Portable => Isa::Portable,
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => Isa::Avx2,
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => Isa::Avx512,
        _ => panic!("{path} is not a direct conv kernel path"),
    }
}

// ---------------------------------------------------------------------------
// Direct forward (and input gradient)

/// Vector lanes of the ISA.
fn lanes_of(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Avx512::LANES,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Avx2::LANES,
        Isa::Portable => Portable::LANES,
    }
}

/// The register block (CB output channels, R row vectors) of the forward
/// kernel, for `npos` row vectors per channel. The ISA's table lists the
/// blocks it has (R · CB accumulators fill 16 to 24 of AVX-512's 32
/// registers, 12 of AVX2's 16); among those whose CB divides `c_out` (no
/// channel is padded; CB = 1 always qualifies) this takes the least
/// estimated cost: the FMAs, with the repeated positions that fill the
/// last block, ⌈npos/R⌉·R − npos, counted three times, times 1 + (R +
/// CB)/(2·R·CB) for the loads per FMA. The weight on the repeats is
/// measured: the 6 → 16 layer's forward on AVX-512, 14 row vectors of 14
/// pixels, ran at 83 GFLOP/s as 8 × 3 (15 positions for 14), 96 as 8 × 2;
/// its input gradient, into 6 channels, at 81 as 6 × 4 (16 for 14), 92 as
/// 3 × 7 (`cargo bench --bench kernels -- 'conv.*/avx512/100'`).
///
/// AVX2 has only blocks of 12 accumulators (8 for CB = 1): with the 8 of
/// its former 4 × 2 and 2 × 4 blocks, two FMA units of latency 4 had no
/// slack, and the 6 → 16 layer's forward ran at 61 GFLOP/s; as 2 × 6 it
/// runs at 77 (the 1 → 6 layer's, as 3 × 4 instead of 6 × 2: 60 → 70;
/// `cargo bench --bench kernels -- 'conv.*/avx2/100'`, AMD EPYC Zen 4).
fn fwd_block(isa: Isa, c_out: usize, npos: usize) -> (usize, usize) {
    let table = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => FWD_AVX512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => FWD_AVX2,
        Isa::Portable => FWD_PORTABLE,
    };
    let cost = |&(cb, r): &(usize, usize)| {
        let repeats = npos.div_ceil(r) * r - npos;
        (npos + 3 * repeats) as f64 * (1.0 + (r + cb) as f64 / (2 * r * cb) as f64)
    };
    *table
        .iter()
        .filter(|(cb, _)| c_out.is_multiple_of(*cb))
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("every table has a block of CB = 1")
}

/// Arguments of the direct forward, passed by value into the ISA entry
/// points. The slices' lengths are checked by [`direct_forward`].
struct FwdArgs<'a> {
    out: Out<'a>,
    /// One sample's output, where `out` needs it (else empty).
    y: &'a mut [f32],
    inp: Source<'a>,
    /// The weight packed by [`direct_forward`]: blocks of `cb` output
    /// channels, each `[ci][kh][kw][cb]`.
    wp: &'a [f32],
    /// `c_out` biases (zeros for the input gradient).
    bias: &'a [f32],
    /// Scratch for one padded sample, `pd.len` floats.
    xp: &'a mut [f32],
    n: usize,
    layer: Layer,
    pd: Padded,
    cb: usize,
    /// Row vectors per block (with `cb`, an entry of the ISA's table).
    r: usize,
}

/// Packs the weight given by `get(o, i, tap)` for the chosen block width,
/// clears the padded image, and runs the ISA's kernel.
#[allow(clippy::too_many_arguments)]
fn direct_forward(
    path: KernelPath,
    out: Out,
    inp: Source,
    get: &dyn Fn(usize, usize, usize) -> f32,
    bias: Option<&[f32]>,
    n: usize,
    layer: Layer,
    scratch: &mut Vec<f32>,
) {
    let isa = isa_of(path);
    let (cb, r) = fwd_block(isa, layer.c_out, layer.h * layer.w.div_ceil(lanes_of(isa)));
    let taps = layer.k * layer.k;
    let wlen = prod(&[layer.c_out, layer.c_in, taps]);
    let pd = Padded::new(layer.c_in, layer.h, layer.w, layer.k);
    let ylen = out.scratch_len(layer.out_len());
    let [wp, bp, xp, y] = carve(scratch, [wlen, layer.c_out, pd.len, ylen]);
    // wp[b][i][t][c] = w(b·cb + c, i, t).
    let mut at = 0;
    for b in 0..layer.c_out / cb {
        for i in 0..layer.c_in {
            for t in 0..taps {
                for c in 0..cb {
                    wp[at] = get(b * cb + c, i, t);
                    at += 1;
                }
            }
        }
    }
    match bias {
        Some(b) => bp.copy_from_slice(b),
        None => bp.fill(0.0),
    }
    xp.fill(0.0);
    assert!(inp.holds(n, layer.in_len()));
    assert!(out.holds(n, layer.out_len()));
    assert!(layer.h > 0 && layer.w > 0 && layer.c_out.is_multiple_of(cb));
    let args = FwdArgs {
        out,
        y,
        inp,
        wp,
        bias: bp,
        xp,
        n,
        layer,
        pd,
        cb,
        r,
    };
    match isa {
        // SAFETY: the path's availability was asserted by the public
        // function; the lengths the kernels rely on were asserted above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { forward_avx512(args) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { forward_avx2(args) },
        // SAFETY: the portable vectors need no ISA; lengths as above.
        Isa::Portable => unsafe { forward_portable(args) },
    }
}

/// One entry point per ISA: instantiates [`forward_samples`] for each
/// (CB, R) pair of its table, and defines the table `fwd_block` chooses from
/// (one list, so the two cannot disagree).
macro_rules! forward_entry {
    (
        $(#[cfg($cfg:meta)])?
        $(#[target_feature(enable = $feat:literal)])?
        $name:ident, $table:ident, $v:ty, [$(($cb:literal, $r:literal)),*]
    ) => {
        $(#[cfg($cfg)])?
        const $table: &[(usize, usize)] = &[$(($cb, $r)),*];

        /// # Safety
        /// The CPU supports the ISA of the vector type; the slices in
        /// `args` have the lengths [`direct_forward`] asserts.
        $(#[cfg($cfg)])?
        $(#[target_feature(enable = $feat)])?
        unsafe fn $name(args: FwdArgs) {
            match (args.cb, args.r) {
                // SAFETY: forwarded contract; cb = $cb divides c_out.
                $(($cb, $r) => unsafe { forward_samples::<$v, $r, $cb>(args) },)*
                (cb, r) => unreachable!("no forward kernel for {cb} channels × {r} rows"),
            }
        }
    };
}

forward_entry!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    forward_avx512,
    FWD_AVX512,
    Avx512,
    [(8, 3), (8, 2), (6, 4), (4, 6), (3, 7), (2, 8), (1, 12)]
);
forward_entry!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    forward_avx2,
    FWD_AVX2,
    Avx2,
    [(6, 2), (3, 4), (2, 6), (1, 8)]
);
forward_entry!(
    forward_portable,
    FWD_PORTABLE,
    Portable,
    [(6, 1), (4, 1), (3, 2), (2, 3), (1, 4)]
);

/// All samples: pad each into `xp`, then the blocks.
///
/// # Safety
/// `V`'s ISA is available; the lengths as asserted in [`direct_forward`]:
/// `inp` holds n samples of in_len floats, `out` n of out_len (and `y`
/// one, where `out` pools), `wp` c_out · c_in · K² floats, `bias` c_out,
/// `xp` `pd.len`, H and W > 0, CB divides c_out.
#[inline(always)]
unsafe fn forward_samples<V: Vector, const R: usize, const CB: usize>(a: FwdArgs) {
    let FwdArgs {
        mut out,
        y,
        inp,
        wp,
        bias,
        xp,
        n,
        layer,
        pd,
        ..
    } = a;
    let out_len = layer.out_len();
    for s in 0..n {
        pd.fill(xp, inp, s);
        let dst = out.sample(s, out_len, y);
        // SAFETY: forwarded contract; `xp` now holds sample s padded.
        unsafe { forward_sample::<V, R, CB>(dst, xp, wp, bias, layer, pd) };
        out.done(s, y);
    }
}

/// One sample: `out` (c_out × H × W) from the padded image `xp`.
///
/// # Safety
/// `V`'s ISA is available; `out` is c_out × H × W, `xp` has `pd.len`
/// floats, `wp` c_out · c_in · K², `bias` c_out; H, W > 0; CB divides c_out.
#[inline(always)]
unsafe fn forward_sample<V: Vector, const R: usize, const CB: usize>(
    out: &mut [f32],
    xp: &[f32],
    wp: &[f32],
    bias: &[f32],
    layer: Layer,
    pd: Padded,
) {
    let l = V::LANES;
    let (h, w, k) = (layer.h, layer.w, layer.k);
    let (s, plane) = (pd.s, pd.plane);
    let nvx = w.div_ceil(l);
    let npos = h * nvx;
    let block_len = layer.c_in * k * k * CB;
    // Bounds of every vector load below. The furthest reads from the
    // position base (h−1)·s + (nvx−1)·L at offset (c_in−1)·plane + (K−1)·s
    // + (K−1) and spans L floats, ending at c_in·plane + (nvx·L − W) − 1
    // (using plane = (H + K − 1)·s, s = W + K − 1); nvx·L − W < L ≤
    // MAX_LANES, which the slack covers.
    debug_assert!(layer.c_in * plane + nvx * l - w <= pd.len);
    assert!(xp.len() >= pd.len && wp.len() == layer.c_out * layer.c_in * k * k);
    assert!(out.len() == layer.out_len() && bias.len() == layer.c_out);
    let xptr = xp.as_ptr();
    let hw = h * w;
    // The loop order of a tap: the R input vectors held while each of the
    // CB weights is broadcast in turn (R·CB accumulators + R + 1
    // registers), or, where that does not fit the register file but the
    // CB broadcast weights held while each input vector is loaded in turn
    // does (R·CB + CB + 1): AVX2's 2 × 6 block, 12 independent chains on
    // 16 registers. The same multiply-adds into the same accumulators in
    // the same order: no bit depends on it.
    let weights_first = R * CB + R + 1 > V::REGISTERS && R * CB + CB < V::REGISTERS;
    for b in 0..layer.c_out / CB {
        let wblock = &wp[b * block_len..][..block_len];
        let mut v0 = 0;
        while v0 < npos {
            // Position r of the block is row vector v0 + r, at (y, x0):
            // it reads xp from y·s + x0 and writes each channel plane
            // from y·W + x0. Past the end it repeats the last vector
            // (computed, never stored), so the block is always full.
            let mut base = [0usize; R];
            let mut dst = [0usize; R];
            let (mut y, mut xv) = (v0 / nvx, v0 % nvx);
            for r in 0..R {
                base[r] = y * s + xv * l;
                dst[r] = y * w + xv * l;
                if v0 + r + 1 < npos {
                    xv += 1;
                    if xv == nvx {
                        (y, xv) = (y + 1, 0);
                    }
                }
            }
            // SAFETY: the ISA is the caller's promise (for all `V` calls
            // in this block).
            let mut acc = [[unsafe { V::zero() }; CB]; R];
            for c in 0..CB {
                // SAFETY: as above.
                let bv = unsafe { V::splat(bias[b * CB + c]) };
                for r in 0..R {
                    acc[r][c] = bv;
                }
            }
            let mut wq = wblock.as_ptr();
            for ci in 0..layer.c_in {
                for kh in 0..k {
                    let row = ci * plane + kh * s;
                    for kw in 0..k {
                        let o = row + kw;
                        if weights_first {
                            // SAFETY: wq walks wblock (c_in · K² · CB floats)
                            // CB at a time, once per (ci, kh, kw).
                            let wv: [V; CB] =
                                core::array::from_fn(|c| unsafe { V::splat(*wq.add(c)) });
                            for r in 0..R {
                                // SAFETY: base[r] + o + L ≤ pd.len ≤ xp.len()
                                // by the bound above; the ISA as above.
                                let x = unsafe { V::load(xptr.add(base[r] + o)) };
                                for c in 0..CB {
                                    // SAFETY: the ISA as above.
                                    acc[r][c] = unsafe { V::mul_add(x, wv[c], acc[r][c]) };
                                }
                            }
                        } else {
                            // SAFETY: as in the other order.
                            let xs: [V; R] =
                                core::array::from_fn(|r| unsafe { V::load(xptr.add(base[r] + o)) });
                            for c in 0..CB {
                                // SAFETY: as in the other order.
                                let wv = unsafe { V::splat(*wq.add(c)) };
                                for r in 0..R {
                                    // SAFETY: the ISA as above.
                                    acc[r][c] = unsafe { V::mul_add(xs[r], wv, acc[r][c]) };
                                }
                            }
                        }
                        // SAFETY: stays inside wblock or one past its end.
                        wq = unsafe { wq.add(CB) };
                    }
                }
            }
            // The stores go in increasing (r, then channel) order, whole
            // vectors wherever the vector ends inside its channel's plane:
            // a vector whose tail runs past its row then lands in later
            // rows of the same channel, which are stored afterwards (by a
            // later r or block) and overwrite it. (Only the last row of a
            // plane needs cutting.)
            let full = v0 + R <= npos && dst[R - 1] + l <= hw;
            if full {
                // The common case, with constant indices into `acc` (the
                // loops unroll, so `acc` stays in registers).
                let optr = out.as_mut_ptr();
                for r in 0..R {
                    for c in 0..CB {
                        // SAFETY: dst[r] + L ≤ dst[R−1] + L ≤ H·W, so the
                        // L floats lie inside channel b·CB + c's plane of
                        // `out` (c_out·H·W floats); the ISA as above.
                        let at = (b * CB + c) * hw + dst[r];
                        debug_assert!(at + l <= out.len());
                        // SAFETY: as above.
                        unsafe { acc[r][c].store(optr.add(at)) };
                    }
                }
            } else {
                // Spill to a stack tile with constant indices, then copy
                // with runtime lengths (indexing `acc` itself in a runtime
                // loop would make LLVM keep it in memory throughout).
                let mut tile = [[[0.0f32; MAX_LANES]; CB]; R];
                for r in 0..R {
                    for c in 0..CB {
                        // SAFETY: a tile row has MAX_LANES ≥ L floats; the
                        // ISA as above.
                        unsafe { acc[r][c].store(tile[r][c].as_mut_ptr()) };
                    }
                }
                for r in 0..R.min(npos - v0) {
                    let len = if dst[r] + l <= hw { l } else { w - dst[r] % w };
                    for c in 0..CB {
                        let at = (b * CB + c) * hw + dst[r];
                        copy_row(&mut out[at..at + len], &tile[r][c][..len]);
                    }
                }
            }
            v0 += R;
        }
    }
}

// ---------------------------------------------------------------------------
// Direct weight gradient

/// (TB, CB) of the weight-gradient register block: TB taps (all K of a
/// kernel row for K ≤ 7, else 1) × CB output channels, CB the largest of
/// 8, 6, 4, 3, 2, 1 that divides the channel count and fits the ISA's
/// registers (CB · TB accumulators + CB d_out vectors + 1 input vector).
fn wg_shape(isa: Isa, k: usize, cor: usize) -> (usize, usize) {
    let tb = if matches!(k, 1 | 3 | 5 | 7) { k } else { 1 };
    let (acc_budget, regs) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (24, 32),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (12, 16),
        // Two SSE registers per 8-lane vector on x86-64.
        Isa::Portable => (6, 9),
    };
    let cb = [8, 6, 4, 3, 2, 1]
        .into_iter()
        .find(|&cb| cb * tb <= acc_budget && cb * tb + cb < regs && cor.is_multiple_of(cb))
        .unwrap_or(1);
    (tb, cb)
}

/// Arguments of the direct weight gradient (lengths checked by
/// [`direct_weight_grad`]).
struct WgArgs<'a> {
    dw: &'a mut [f32],
    db: &'a mut [f32],
    d_out: Source<'a>,
    inp: &'a [f32],
    n: usize,
    g: ConvGeom,
    co: Range<usize>,
    /// One accumulator vector (L floats) per weight of `dw`, then one per
    /// bias.
    acc: &'a mut [f32],
    /// `WG_CHUNK` padded input samples, `pd.len` floats each.
    xp: &'a mut [f32],
    /// `WG_CHUNK` samples of d_out for `co`, rows padded to whole vectors
    /// with zeros: `[slot][c][y][nvx · L]`.
    dp: &'a mut [f32],
    pd: Padded,
    tb: usize,
    cb: usize,
}

#[allow(clippy::too_many_arguments)]
fn direct_weight_grad(
    path: KernelPath,
    dw: &mut [f32],
    db: &mut [f32],
    d_out: Source,
    inp: &[f32],
    n: usize,
    g: ConvGeom,
    co: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    let isa = isa_of(path);
    let l = lanes_of(isa);
    let cor = co.len();
    let (tb, cb) = wg_shape(isa, g.k, cor);
    let pd = Padded::new(g.c_in, g.h, g.w, g.k);
    let acc_len = prod(&[dw.len() + cor, l]);
    let xp_len = prod(&[WG_CHUNK, pd.len]);
    let dp_len = prod(&[WG_CHUNK, cor, g.h, g.w.div_ceil(l), l]);
    let [acc, xp, dp] = carve(scratch, [acc_len, xp_len, dp_len]);
    acc.fill(0.0);
    xp.fill(0.0);
    dp.fill(0.0);
    assert!(cor.is_multiple_of(cb) && g.k.is_multiple_of(tb) && g.h > 0 && g.w > 0);
    let args = WgArgs {
        dw,
        db,
        d_out,
        inp,
        n,
        g,
        co,
        acc,
        xp,
        dp,
        pd,
        tb,
        cb,
    };
    match isa {
        // SAFETY: the path's availability was asserted by the public
        // function; the lengths were asserted there and above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { wgrad_avx512(args) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { wgrad_avx2(args) },
        // SAFETY: the portable vectors need no ISA; lengths as above.
        Isa::Portable => unsafe { wgrad_portable(args) },
    }
}

/// One entry point per ISA: instantiates [`wgrad_all`] for each (TB, CB)
/// pair that [`wg_shape`] can choose.
macro_rules! wgrad_entry {
    ($(#[$attr:meta])* $name:ident, $v:ty, [$(($tb:literal, $cb:literal)),*]) => {
        /// # Safety
        /// The CPU supports the ISA of the vector type; the slices in
        /// `args` have the lengths [`direct_weight_grad`] asserts.
        $(#[$attr])*
        unsafe fn $name(args: WgArgs) {
            match (args.tb, args.cb) {
                // SAFETY: forwarded contract; TB divides K, CB divides
                // the channel count.
                $(($tb, $cb) => unsafe { wgrad_all::<$v, $tb, $cb>(args) },)*
                (tb, cb) => unreachable!("no weight-gradient kernel for {tb} taps × {cb} channels"),
            }
        }
    };
}

wgrad_entry!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    wgrad_avx512,
    Avx512,
    [
        (1, 8),
        (1, 6),
        (1, 4),
        (1, 3),
        (1, 2),
        (1, 1),
        (3, 6),
        (3, 4),
        (3, 3),
        (3, 2),
        (3, 1),
        (5, 4),
        (5, 3),
        (5, 2),
        (5, 1),
        (7, 3),
        (7, 2),
        (7, 1)
    ]
);
wgrad_entry!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    wgrad_avx2,
    Avx2,
    [
        (1, 6),
        (1, 4),
        (1, 3),
        (1, 2),
        (1, 1),
        (3, 3),
        (3, 2),
        (3, 1),
        (5, 2),
        (5, 1),
        (7, 1)
    ]
);
wgrad_entry!(
    wgrad_portable,
    Portable,
    [
        (1, 4),
        (1, 3),
        (1, 2),
        (1, 1),
        (3, 2),
        (3, 1),
        (5, 1),
        (7, 1)
    ]
);

/// The whole weight gradient: chunks of samples, then the lane sums.
///
/// # Safety
/// `V`'s ISA is available; the slices of `a` have the lengths
/// [`direct_weight_grad`] gives them; TB divides K and CB divides
/// `co.len()`; H, W > 0.
#[inline(always)]
unsafe fn wgrad_all<V: Vector, const TB: usize, const CB: usize>(a: WgArgs) {
    let WgArgs {
        dw,
        db,
        d_out,
        inp,
        n,
        g,
        co,
        acc,
        xp,
        dp,
        pd,
        ..
    } = a;
    let l = V::LANES;
    let (h, w, k, c_in) = (g.h, g.w, g.k, g.c_in);
    let cor = co.len();
    let nvx = w.div_ceil(l);
    let drow = nvx * l;
    let dchan = h * drow;
    let dslot = cor * dchan;
    let out_len = g.out_len();
    let nw = dw.len();
    assert!(acc.len() == (nw + cor) * l && nw == cor * c_in * k * k);
    assert!(xp.len() == WG_CHUNK * pd.len && dp.len() == WG_CHUNK * dslot);
    for s0 in (0..n).step_by(WG_CHUNK) {
        let m = WG_CHUNK.min(n - s0);
        for j in 0..m {
            let s = s0 + j;
            pd.fill(&mut xp[j * pd.len..][..pd.len], Source::Dense(inp), s);
            let dst = &mut dp[j * dslot..][..dslot];
            d_out.copy_out(s, out_len, (h, w), co.clone(), dst, (dchan, drow));
        }
        // Bias: lane sums of d_out over (sample, y, x0).
        for c in 0..cor {
            let at = (nw + c) * l;
            // SAFETY: acc has (nw + cor)·L floats; the ISA is the caller's
            // promise (for every `V` call in this function).
            let mut v = unsafe { V::load(acc.as_ptr().add(at)) };
            for j in 0..m {
                for q in 0..h * nvx {
                    // SAFETY: slot j, channel c, vector q of dp: in bounds.
                    let d = unsafe { V::load(dp.as_ptr().add(j * dslot + c * dchan + q * l)) };
                    // SAFETY: as above.
                    v = unsafe { V::mul_add(d, V::splat(1.0), v) };
                }
            }
            // SAFETY: as for the load.
            unsafe { v.store(acc.as_mut_ptr().add(at)) };
        }
        // SAFETY: forwarded contract; the first m slots hold samples.
        unsafe { wgrad_chunk::<V, TB, CB>(acc, xp, dp, m, g, cor, pd) };
    }
    for (e, out) in dw.iter_mut().chain(db.iter_mut()).enumerate() {
        // SAFETY: e < nw + cor, so L floats at e·L lie inside acc; the ISA
        // as above.
        *out = unsafe { V::load(acc.as_ptr().add(e * l)).reduce_sum() };
    }
}

/// Adds the `m` samples in the slots of `xp` and `dp` to the accumulators.
///
/// # Safety
/// As [`wgrad_all`]; `m` ≤ WG_CHUNK.
#[inline(always)]
unsafe fn wgrad_chunk<V: Vector, const TB: usize, const CB: usize>(
    acc: &mut [f32],
    xp: &[f32],
    dp: &[f32],
    m: usize,
    g: ConvGeom,
    cor: usize,
    pd: Padded,
) {
    let l = V::LANES;
    let (h, k, c_in) = (g.h, g.k, g.c_in);
    let nvx = g.w.div_ceil(l);
    let drow = nvx * l;
    let dchan = h * drow;
    let dslot = cor * dchan;
    // The input loads read slot j at ci·plane + (y + kh)·s + x0 + kw,
    // L floats: at most c_in·plane + nvx·L − W − 1 < pd.len, as in
    // `forward_sample`. The d_out loads stay inside slot j's dslot floats.
    assert!(m <= WG_CHUNK && xp.len() == WG_CHUNK * pd.len && dp.len() == WG_CHUNK * dslot);
    assert!(acc.len() >= cor * c_in * k * k * l);
    let (xptr, dptr) = (xp.as_ptr(), dp.as_ptr());
    for b in 0..cor / CB {
        for ci in 0..c_in {
            for kh in 0..k {
                for t0 in (0..k).step_by(TB) {
                    // Accumulator of (channel b·CB + c, ci, kh, t0 + t).
                    let at =
                        |c: usize, t: usize| (((b * CB + c) * c_in + ci) * k + kh) * k + t0 + t;
                    let mut a: [[V; TB]; CB] = core::array::from_fn(|c| {
                        core::array::from_fn(|t| {
                            // SAFETY: at(c, t) < cor·c_in·K², so the L
                            // floats at at·L are inside acc; the ISA is
                            // the caller's promise (for every `V` call in
                            // this block).
                            unsafe { V::load(acc.as_ptr().add(at(c, t) * l)) }
                        })
                    });
                    for j in 0..m {
                        // SAFETY: offsets inside slot j (bounds above).
                        let xs = unsafe { xptr.add(j * pd.len + ci * pd.plane + kh * pd.s + t0) };
                        // SAFETY: as above.
                        let ds = unsafe { dptr.add(j * dslot + b * CB * dchan) };
                        for y in 0..h {
                            for xv in 0..nvx {
                                let q = y * drow + xv * l;
                                // SAFETY: channel b·CB + c < cor, vector q of
                                // its plane in slot j.
                                let d: [V; CB] = core::array::from_fn(|c| unsafe {
                                    V::load(ds.add(c * dchan + q))
                                });
                                for t in 0..TB {
                                    // SAFETY: see the bound above.
                                    let x = unsafe { V::load(xs.add(y * pd.s + xv * l + t)) };
                                    for c in 0..CB {
                                        // SAFETY: the ISA as above.
                                        a[c][t] = unsafe { V::mul_add(d[c], x, a[c][t]) };
                                    }
                                }
                            }
                        }
                    }
                    for c in 0..CB {
                        for t in 0..TB {
                            // SAFETY: as for the load.
                            unsafe { a[c][t].store(acc.as_mut_ptr().add(at(c, t) * l)) };
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The Gemm path: im2col + sgemm

/// `col[(ci·K + kh)·K + kw][y·W + x] = xp[ci][y + kh][x + kw]`: the
/// (c·K²) × (H·W) matrix whose product with the weight is the convolution.
fn im2col(col: &mut [f32], xp: &[f32], pd: Padded, k: usize) {
    let (h, w) = (pd.h, pd.w);
    let hw = h * w;
    for ci in 0..pd.c {
        for kh in 0..k {
            for kw in 0..k {
                let r = (ci * k + kh) * k + kw;
                for y in 0..h {
                    let src = &xp[ci * pd.plane + (y + kh) * pd.s + kw..][..w];
                    col[r * hw + y * w..][..w].copy_from_slice(src);
                }
            }
        }
    }
}

/// `out = wmat · im2col(inp) (+ bias)` per sample, wmat c_out × (c_in·K²).
fn gemm_forward(
    mut out: Out,
    inp: Source,
    get: &dyn Fn(usize, usize, usize) -> f32,
    bias: Option<&[f32]>,
    n: usize,
    layer: Layer,
    scratch: &mut Vec<f32>,
) {
    let (hw, k) = (layer.h * layer.w, layer.k);
    let rows = prod(&[layer.c_in, k, k]);
    let pd = Padded::new(layer.c_in, layer.h, layer.w, k);
    let ylen = out.scratch_len(layer.out_len());
    let [wmat, xp, col, y] = carve(
        scratch,
        [prod(&[layer.c_out, rows]), pd.len, prod(&[rows, hw]), ylen],
    );
    // The weight as a c_out × (c_in·K²) matrix (a copy for the forward,
    // the flipped transpose for the input gradient).
    for (o, wrow) in wmat.chunks_exact_mut(rows.max(1)).enumerate() {
        for (i, wci) in wrow.chunks_exact_mut(k * k).enumerate() {
            for (t, v) in wci.iter_mut().enumerate() {
                *v = get(o, i, t);
            }
        }
    }
    xp.fill(0.0);
    let (in_len, out_len) = (layer.in_len(), layer.out_len());
    assert!(out.holds(n, out_len) && inp.holds(n, in_len));
    for s in 0..n {
        let o = out.sample(s, out_len, y);
        match bias {
            Some(b) => {
                for (row, &bv) in o.chunks_exact_mut(hw).zip(b) {
                    row.fill(bv);
                }
            }
            None => o.fill(0.0),
        }
        if rows > 0 {
            pd.fill(xp, inp, s);
            im2col(col, xp, pd, k);
            // SAFETY: m = c_out, k = rows, n = H·W. A = wmat with strides
            // (rows, 1): c_out·rows floats (carved); B = col with strides
            // (hw, 1): rows·hw floats (carved); C = o with strides (hw, 1):
            // c_out·hw floats, a distinct &mut. beta = 1 adds to the bias (or
            // zeros) just written.
            unsafe {
                matrixmultiply::sgemm(
                    layer.c_out,
                    rows,
                    hw,
                    1.0,
                    wmat.as_ptr(),
                    rows as isize,
                    1,
                    col.as_ptr(),
                    hw as isize,
                    1,
                    1.0,
                    o.as_mut_ptr(),
                    hw as isize,
                    1,
                );
            }
        }
        out.done(s, y);
    }
}

/// `dw += d_out[s][co] · im2col(inp[s])ᵀ` sample by sample, in order.
#[allow(clippy::too_many_arguments)]
fn gemm_weight_grad(
    dw: &mut [f32],
    db: &mut [f32],
    d_out: Source,
    inp: &[f32],
    n: usize,
    g: ConvGeom,
    co: Range<usize>,
    scratch: &mut Vec<f32>,
) {
    let (hw, k, cor) = (g.h * g.w, g.k, co.len());
    let rows = prod(&[g.c_in, k, k]);
    let pd = Padded::new(g.c_in, g.h, g.w, k);
    // d_out's channels `co` of one sample, where they must be routed.
    let dlen = d_out.scratch_len(prod(&[cor, hw]));
    let [xp, col, dd] = carve(scratch, [pd.len, prod(&[rows, hw]), dlen]);
    xp.fill(0.0);
    dw.fill(0.0);
    db.fill(0.0);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    assert!(dw.len() == cor * rows && d_out.holds(n, out_len) && inp.len() == n * in_len);
    for s in 0..n {
        let dos: &[f32] = match d_out {
            Source::Dense(d) => &d[s * out_len + co.start * hw..][..cor * hw],
            Source::Pooled { .. } => {
                d_out.copy_out(s, out_len, (g.h, g.w), co.clone(), dd, (hw, g.w));
                dd
            }
        };
        for (dbc, row) in db.iter_mut().zip(dos.chunks_exact(hw)) {
            for &v in row {
                *dbc += v;
            }
        }
        if rows == 0 {
            continue;
        }
        pd.fill(xp, Source::Dense(inp), s);
        im2col(col, xp, pd, k);
        // SAFETY: m = cor, k = H·W, n = rows. A = the co rows of d_out[s]
        // with strides (hw, 1): cor·hw floats (the slice `dos`); B = colᵀ
        // read from col with strides (1, hw): rows·hw floats; C = dw with
        // strides (rows, 1): cor·rows floats (asserted), a distinct &mut.
        // beta = 1 continues the sum over the earlier samples (dw was
        // zeroed).
        unsafe {
            matrixmultiply::sgemm(
                cor,
                hw,
                rows,
                1.0,
                dos.as_ptr(),
                hw as isize,
                1,
                col.as_ptr(),
                1,
                hw as isize,
                1.0,
                dw.as_mut_ptr(),
                rows as isize,
                1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_tables_cover_every_choice() {
        // Every (R, CB) and (TB, CB) the choosers can return has an arm in
        // the entry points' matches: run them all on a tiny case (a
        // missing arm would hit `unreachable!`).
        let mut scratch = Vec::new();
        for path in KernelPath::available().into_iter().filter(|p| p.is_fused()) {
            for (c_out, (h, w)) in (1..=17).flat_map(|c| [(c, (3, 4)), (c, (14, 14)), (c, (7, 28))])
            {
                for k in [1, 3, 5, 7, 9] {
                    let g = ConvGeom::new(2, c_out, h, w, k);
                    let inp = vec![1.0; g.in_len()];
                    let wt = vec![1.0; g.weight_len()];
                    let mut out = vec![0.0; g.out_len()];
                    conv2d_forward(
                        path,
                        &mut out,
                        &inp,
                        &wt,
                        &vec![0.0; c_out],
                        1,
                        g,
                        &mut scratch,
                    );
                    let mut dw = vec![0.0; g.weight_len()];
                    let mut db = vec![0.0; c_out];
                    conv2d_weight_grad(
                        path,
                        &mut dw,
                        &mut db,
                        &out,
                        &inp,
                        1,
                        g,
                        0..c_out,
                        &mut scratch,
                    );
                }
            }
        }
    }

    /// The AVX2 pool backward against the scalar body (which the public
    /// function only reaches for rows of fewer than 4 windows on x86), on
    /// data full of ties, signed zeros and NaN.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pool_backward_avx2_matches_scalar() {
        if !KernelPath::Avx2.is_available() {
            return;
        }
        let vals = [0.0, -0.0, 1.0, 2.0, f32::NAN, f32::NEG_INFINITY, 2.0, 1.0];
        let mut state = 1u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for (h, w) in [
            (28, 28),
            (14, 14),
            (5, 9),
            (8, 8),
            (3, 15),
            (2, 10),
            (7, 11),
        ] {
            let g = PoolGeom::new(3, h, w);
            let n = 2;
            let inp: Vec<f32> = (0..n * g.in_len()).map(|_| vals[next() % 8]).collect();
            let d_out: Vec<f32> = (0..n * g.out_len())
                .map(|_| (next() % 100) as f32 - 50.0)
                .collect();
            let mut want = vec![f32::NAN; inp.len()];
            let mut got = vec![f32::NAN; inp.len()];
            pool_backward_body(&mut want, &d_out, &inp, g);
            // SAFETY: AVX2 and FMA detected above; lengths as the public
            // function checks them.
            unsafe { pool_backward_avx2(&mut got, &d_out, &inp, g) };
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{g:?}");
        }
    }

    #[test]
    fn carve_splits_in_order() {
        let mut s = vec![7.0; 2];
        let [a, b] = carve(&mut s, [3, 2]);
        assert_eq!((a.len(), b.len()), (3, 2));
        assert!(s.len() >= 5);
    }
}
