//! Fused kernels for u8 or f32 images: the default training path.
//!
//! General sgemm is a poor fit for this workload's skinny shape (C = 10
//! output columns), and it needs the batch gathered (and, for u8, converted
//! to f32) first. These kernels instead read the shuffled rows straight out
//! of the memory map (or the caller's array), u8 rows converted in
//! registers and f32 rows loaded as they are, and keep every accumulator in
//! registers:
//!
//! * [`forward`]: `logits[r][c] = scale · Σ_k x_r[k]·wt[c][k] + bias[c]`.
//!   Vectorised along k; a block of `R` rows × `FG` classes of accumulators
//!   (3 × 5 = 15 zmm registers on AVX-512) shares each weight load across
//!   rows.
//! * [`weight_grad`]: `out[c][j] = Σ_b x_b[k0+j] · g[b][c]` for a block of
//!   feature columns. Vectorised along j; `NV` vectors × `GG` classes of
//!   accumulators (4 × 5 = 20 zmm registers on AVX-512: 64 columns, one
//!   cache line of each row) share each broadcast of `g[b][c]` across
//!   columns.
//!
//! The block shapes per ISA are in the entry points below; the `tuning`
//! tests at the end of this file measured them.
//!
//! Letters as in [`crate::kernels`]: B rows, K features, C classes.
//!
//! # Pixel types
//!
//! Every kernel is generic over the [`Pixel`] type of the rows: `u8` (raw
//! bytes, converted exactly to f32 in registers; the caller scales, 1/255
//! for pixels in [0, 1]) or `f32` (used as they are, `scale` 1). Both run
//! the same register blocks with the same sequence of operations per
//! output element; only the load differs. [`Images`] is the same choice
//! made at run time, for callers that hold either.
//!
//! # Determinism
//!
//! Each output element is computed by one fixed sequence of operations that
//! does not depend on how rows or columns are grouped into blocks: a row's
//! logit always accumulates k in the same lane order and reduces with the
//! same tree; a gradient column always sums b in batch order. So callers may
//! split rows and columns across any number of threads and get the same
//! bits. The tails (K not a multiple of the lane count) follow one fixed
//! sequence too: scalar after the reduction in the forward pass, a
//! zero-padded vector in the gradient. The kernels skip vectors of zero
//! pixels, which add nothing to a sum, not even a rounding: the result is
//! the dense one bit for bit ([`Sparsity`]).

// The register blocks index fixed-size accumulator arrays with loop
// counters on purpose: the loops unroll completely and the arrays live in
// registers; iterator chains obscure that.
#![allow(clippy::needless_range_loop)]

use super::dispatch::KernelPath;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Vector};

/// Classes per accumulator block on the portable path. Ten fits MNIST
/// exactly; any class count runs in blocks of the kernel's group size and
/// then one class at a time.
const GROUP: usize = 10;
/// Widest vector in lanes (for the zero-padded tail buffers).
const MAX_LANES: usize = 16;

/// The element types the fused kernels read in place: `u8` and `f32`
/// (sealed: no other type can implement it).
pub trait Pixel: Copy + Default + Send + Sync + sealed::Sealed + 'static {
    /// Which one this is (the kernels pick their loads by it at compile
    /// time).
    const KIND: PixelKind;
    /// The value as f32 (exact for both types).
    fn to_f32(self) -> f32;
    /// The bits of a little-endian u64 of these values that must all be 0
    /// for every value in it to be zero (+0 or −0 for f32: the sign bits
    /// are masked off). A product with a zero adds nothing to a sum (see
    /// [`Sparsity`]).
    const ZERO_MASK: u64;
}

/// The two [`Pixel`] types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelKind {
    U8,
    F32,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for f32 {}
}

impl Pixel for u8 {
    const KIND: PixelKind = PixelKind::U8;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    const ZERO_MASK: u64 = !0;
}

impl Pixel for f32 {
    const KIND: PixelKind = PixelKind::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    const ZERO_MASK: u64 = 0x7fff_ffff_7fff_ffff;
}

/// Zero pixels skipped, bit for bit.
///
/// MNIST is 81% zero pixels. A product with a zero pixel adds ±0 to a sum,
/// and a sum of products that starts at +0 is never −0 (round to nearest:
/// an exact cancellation gives +0, and +0 + −0 = +0), so adding ±0
/// changes no bit of it. So the kernels skip every vector of pixels that
/// is all zero in every row of a register block (forward: the union of the
/// block's rows; gradient: one row's slice of the column block), and give
/// exactly the dense result. (Were a weight ±∞ or NaN, 0·∞ = NaN would be
/// skipped too: only a diverging run, which the training loop stops anyway,
/// can tell.) On MNIST this leaves 51% of the 8-lane vectors of a 2-row
/// AVX2 block, 74% of the 16-lane vectors of a 3-row AVX-512 block, and
/// 58% (16 columns) / 77% (64 columns) of a row's gradient slices. The
/// lists of non-zero vectors are built branch-free; f32 data without zeros
/// pays for the list and skips nothing.
pub struct Sparsity;

thread_local! {
    /// The forward kernel's lists of non-zero vectors, per register block
    /// of a call: `[count, offsets…]`, `K / LANES + 1` entries each.
    static ACTIVE: core::cell::RefCell<Vec<u32>> = const { core::cell::RefCell::new(Vec::new()) };
    /// The gradient kernel's list of rows with a non-zero slice.
    static ACTIVE_ROWS: core::cell::RefCell<Vec<u32>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Whether the `lanes` values at `p` are all zero (see [`Pixel::ZERO_MASK`]):
/// 8-byte words ORed together (one word for 8 u8 lanes, 8 for 16 f32).
///
/// # Safety
/// `p` is valid for reading `lanes` values, and `lanes · size_of::<P>()`
/// is a multiple of 8.
#[inline(always)]
unsafe fn all_zero<P: Pixel>(p: *const P, lanes: usize) -> bool {
    let words = lanes * core::mem::size_of::<P>() / 8;
    let p = p.cast::<u64>();
    let mut any = 0;
    for w in 0..words {
        // SAFETY: word w lies inside the `lanes` values (caller).
        any |= unsafe { p.add(w).read_unaligned() };
    }
    any & P::ZERO_MASK == 0
}

/// Writes the vector offsets (`kk / lanes`, in order) where any of `xs` is
/// non-zero into `out` and returns how many, without a branch per vector
/// (half of MNIST's are zero, at random).
///
/// # Panics
/// If a row of `xs` is shorter than `nv · lanes` or `out` than `nv`.
#[inline(always)]
fn nonzero_vectors<P: Pixel, const R: usize>(
    xs: [&[P]; R],
    lanes: usize,
    nv: usize,
    out: &mut [u32],
) -> usize {
    assert!(out.len() >= nv && xs.iter().all(|x| x.len() >= nv * lanes));
    assert!((lanes * core::mem::size_of::<P>()).is_multiple_of(8));
    let mut n = 0;
    for i in 0..nv {
        let mut zero = true;
        for x in xs {
            // SAFETY: vector i of a row of at least nv · lanes values
            // (asserted), a whole number of 8-byte words (asserted).
            zero &= unsafe { all_zero(x.as_ptr().add(i * lanes), lanes) };
        }
        // SAFETY: n ≤ i < nv ≤ out.len() (asserted).
        unsafe { *out.get_unchecked_mut(n) = i as u32 };
        n += usize::from(!zero);
    }
    n
}

/// Rows of either [`Pixel`] type, row-major (`n × k`), chosen at run
/// time: what the training step holds. Each method is the generic kernel
/// of the same name on the rows' type.
#[derive(Clone, Copy, Debug)]
pub enum Images<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl<'a> Images<'a> {
    /// The pixels of `samples`, borrowed.
    pub fn of(samples: &'a crate::data::Samples<'_>) -> Self {
        match samples.pixels() {
            crate::data::Pixels::U8(p) => Self::U8(p),
            crate::data::Pixels::F32(p) => Self::F32(p),
        }
    }

    /// [`forward`] on these rows.
    ///
    /// # Panics
    /// As [`forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        self,
        path: KernelPath,
        k: usize,
        rows: &[u32],
        wt: &[f32],
        bias: &[f32],
        scale: f32,
        logits: &mut [f32],
    ) {
        self.forward_ahead(path, k, rows, &[], wt, bias, scale, logits)
    }

    /// [`forward_ahead`] on these rows.
    ///
    /// # Panics
    /// As [`forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_ahead(
        self,
        path: KernelPath,
        k: usize,
        rows: &[u32],
        far: &[u32],
        wt: &[f32],
        bias: &[f32],
        scale: f32,
        logits: &mut [f32],
    ) {
        match self {
            Self::U8(x) => forward_ahead(path, x, k, rows, far, wt, bias, scale, logits),
            Self::F32(x) => forward_ahead(path, x, k, rows, far, wt, bias, scale, logits),
        }
    }

    /// [`weight_grad`] (`cont` false) or [`weight_grad_continue`] (`cont`
    /// true) on these rows.
    ///
    /// # Panics
    /// As [`weight_grad`].
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad(
        self,
        path: KernelPath,
        k: usize,
        rows: &[u32],
        g: &[f32],
        c: usize,
        k0: usize,
        width: usize,
        out: &mut [f32],
        cont: bool,
    ) {
        let start = if cont { Start::Out } else { Start::Zero };
        match self {
            Self::U8(x) => weight_grad_from(path, x, k, rows, g, c, k0, width, out, start),
            Self::F32(x) => weight_grad_from(path, x, k, rows, g, c, k0, width, out, start),
        }
    }

    /// [`prefetch_rows`] on these rows.
    pub fn prefetch_rows(self, k: usize, rows: &[u32]) {
        match self {
            Self::U8(x) => prefetch_rows(x, k, rows),
            Self::F32(x) => prefetch_rows(x, k, rows),
        }
    }
}

/// Elements of `P` per 64-byte cache line.
const fn per_line<P>() -> usize {
    64 / core::mem::size_of::<P>()
}

/// Row `idx` of a row-major `n × k` matrix, bounds-checked once.
#[inline(always)]
fn row<P: Pixel>(images: &[P], k: usize, idx: u32) -> &[P] {
    try_row(images, k, idx).expect("row index out of range")
}

/// Row `idx`, or `None` if it lies outside `images` (checked arithmetic:
/// no wrap-around however large `idx · k` is).
#[inline(always)]
fn try_row<P: Pixel>(images: &[P], k: usize, idx: u32) -> Option<&[P]> {
    let start = (idx as usize).checked_mul(k)?;
    images.get(start..start.checked_add(k)?)
}

/// Asks for the cache line holding `*p` in L1 (`L1` true) or L2. A hint:
/// it never faults and changes no result, whatever the address. The one
/// prefetch of the crate: the kernels, the labels and the shuffle use it.
#[inline(always)]
pub(crate) fn prefetch_line<P, const L1: bool>(p: *const P) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        // SAFETY: prefetch is a hint that never faults, whatever the
        // address (the callers' lie inside a row). SSE is part of the x86-64
        // baseline.
        unsafe {
            if L1 {
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p.cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// What a forward register block loads ahead while it computes, a line at
/// a time inside its loop (so the loads stream in at the rate the block
/// consumes its own rows, never in a burst that fills the miss buffers and
/// stalls the core on the prefetch instruction itself): the same lines of
/// the next register block's rows (`near`, into L1) and of rows for a
/// later call (`far`, into L2). A block's class groups share the lines:
/// group `group` of `groups` takes lines `group, group + groups, …`,
/// spread evenly over its iterations.
#[derive(Clone, Copy)]
struct Ahead<'a, P, const R: usize> {
    /// The next block's rows, empty slices where there are none.
    near: [&'a [P]; R],
    /// The far rows, empty slices where there are none.
    far: [&'a [P]; R],
    group: usize,
    groups: usize,
}

impl<'a, P: Pixel, const R: usize> Ahead<'a, P, R> {
    /// The schedule of a loop of `iterations` over rows of `k` elements.
    #[inline(always)]
    fn start(self, iterations: usize, k: usize) -> AheadRun<'a, P, R> {
        let lines = (k * core::mem::size_of::<P>()).div_ceil(64);
        let mine = lines.saturating_sub(self.group).div_ceil(self.groups);
        let every = iterations
            .checked_div(mine)
            .map_or(usize::MAX, |e| e.max(1));
        AheadRun {
            ahead: self,
            line: self.group,
            end: lines,
            every,
            tick: every,
        }
    }
}

/// [`Ahead`] under way: the next line, and the iterations until it.
struct AheadRun<'a, P, const R: usize> {
    ahead: Ahead<'a, P, R>,
    line: usize,
    end: usize,
    every: usize,
    tick: usize,
}

impl<P: Pixel, const R: usize> AheadRun<'_, P, R> {
    /// One iteration of the loop: every `every`th, the next line.
    #[inline(always)]
    fn step(&mut self) {
        self.tick -= 1;
        if self.tick == 0 {
            self.tick = self.every;
            if self.line < self.end {
                self.load(self.line);
                self.line += self.ahead.groups;
            }
        }
    }

    /// After the loop: the lines it had too few iterations for.
    #[inline(always)]
    fn finish(&mut self) {
        while self.line < self.end {
            self.load(self.line);
            self.line += self.ahead.groups;
        }
    }

    /// Loads line `line` of every near and far row.
    #[inline(always)]
    fn load(&self, line: usize) {
        let at = line * per_line::<P>();
        for r in 0..R {
            if let Some(x) = self.ahead.near[r].get(at) {
                prefetch_line::<P, true>(x);
            }
            if let Some(x) = self.ahead.far[r].get(at) {
                prefetch_line::<P, false>(x);
            }
        }
    }
}

/// Asks the CPU to start loading rows `rows` of the `n × k` matrix into
/// the L2 cache. A hint only: it never faults and changes no result.
///
/// Shuffled rows come from DRAM, and without loading them ahead the
/// forward pass waited on memory for about half its time; the training
/// step loads them inside the forward kernel ([`forward_ahead`]), a line at
/// a time.
pub fn prefetch_rows<P: Pixel>(images: &[P], k: usize, rows: &[u32]) {
    for &idx in rows {
        if let Some(row) = try_row(images, k, idx) {
            for line in row.chunks(per_line::<P>()) {
                prefetch_line::<P, false>(line.as_ptr());
            }
        }
    }
}

/// Computes `logits` (rows.len() × C) for the given rows with the chosen
/// path. `wt` is C × K, `bias` has C entries, `scale` multiplies the raw
/// dot products (1/255 for u8 pixels in [0, 1]; 1 for f32 rows).
///
/// # Panics
///
/// If a slice length disagrees with K and C, a row index is out of range,
/// or `path` is not a fused path available on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn forward<P: Pixel>(
    path: KernelPath,
    images: &[P],
    k: usize,
    rows: &[u32],
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    forward_ahead(path, images, k, rows, &[], wt, bias, scale, logits)
}

/// [`forward`] that also loads rows `far` (indices into `images`, for a
/// later call) into the L2 cache while it computes, a line at a time
/// inside its loop: the far row `i` is loaded alongside row `i` of `rows`
/// (any far rows beyond `rows.len()` at the end). A hint only: any `far`
/// changes no result, and an index out of range is ignored.
///
/// The training step passes the rows of its next row block: shuffled rows
/// come from DRAM, and loaded in bursts (a whole row block at a time) the
/// prefetch instructions themselves stalled the core on full miss buffers
/// for ~10% of an epoch.
///
/// # Panics
///
/// As [`forward`].
#[allow(clippy::too_many_arguments)]
pub fn forward_ahead<P: Pixel>(
    path: KernelPath,
    images: &[P],
    k: usize,
    rows: &[u32],
    far: &[u32],
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    let c = bias.len();
    // Checked products: a wrapped size must not pass for a small one.
    assert_eq!(Some(wt.len()), c.checked_mul(k), "wt must be C × K");
    assert_eq!(
        Some(logits.len()),
        rows.len().checked_mul(c),
        "logits must be rows × C"
    );
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU"
    );
    match path {
        // SAFETY: availability of the ISA was asserted above; the kernels
        // only index through bounds-checked row slices and the asserted
        // lengths.
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => unsafe {
            forward_avx512(images, k, rows, far, wt, bias, scale, logits)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA availability asserted above; lengths as for Avx512.
        KernelPath::Avx2 => unsafe { forward_avx2(images, k, rows, far, wt, bias, scale, logits) },
        // SAFETY: the portable path needs no ISA; lengths asserted above, rows bounds-checked.
        KernelPath::Portable => unsafe {
            forward_rows::<P, Portable, 1, GROUP>(images, k, rows, far, wt, bias, scale, logits)
        },
        _ => panic!("{path} is not a fused kernel path"),
    }
}

/// Computes the unscaled weight gradient for feature columns
/// `k0 .. k0 + width`: `out[c][j] = Σ_b x_b[k0 + j] · g[b][c]`, summing b
/// in the order of `rows`. `g` is rows.len() × C; `out` is C × width.
///
/// # Panics
///
/// As [`forward`], and if the column block runs past K.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad<P: Pixel>(
    path: KernelPath,
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
) {
    weight_grad_from(path, images, k, rows, g, c, k0, width, out, Start::Zero)
}

/// [`weight_grad`] that continues the sums already in `out` (from earlier
/// rows) instead of starting at zero: every sum gets the very operations,
/// in the same order, that one [`weight_grad`] call over all the rows
/// would give it, so splitting a batch into row blocks changes no bit.
///
/// # Panics
///
/// As [`weight_grad`].
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_continue<P: Pixel>(
    path: KernelPath,
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
) {
    weight_grad_from(path, images, k, rows, g, c, k0, width, out, Start::Out)
}

/// Where the gradient sums start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Zero,
    /// From the values in `out`.
    Out,
}

#[allow(clippy::too_many_arguments)]
fn weight_grad_from<P: Pixel>(
    path: KernelPath,
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    // Checked arithmetic: a wrapped size must not pass for a small one.
    assert_eq!(
        Some(g.len()),
        rows.len().checked_mul(c),
        "g must be rows × C"
    );
    assert_eq!(
        Some(out.len()),
        c.checked_mul(width),
        "out must be C × width"
    );
    assert!(
        k0.checked_add(width).is_some_and(|end| end <= k),
        "column block past K"
    );
    for &idx in rows {
        // Bounds-check every row once here; the kernels then read inside it.
        let _ = row(images, k, idx);
    }
    assert!(
        path.is_available(),
        "kernel path {path} is not available on this CPU"
    );
    match path {
        // SAFETY: ISA availability asserted; every row index was checked
        // above, and the kernels read only columns k0..k0+width ≤ K of them.
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => unsafe { grad_avx512(images, k, rows, g, c, k0, width, out, start) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA availability asserted above; rows and columns checked as for Avx512.
        KernelPath::Avx2 => unsafe { grad_avx2(images, k, rows, g, c, k0, width, out, start) },
        // SAFETY: the portable path needs no ISA; rows and columns checked above.
        KernelPath::Portable => unsafe {
            weight_grad_cols::<P, Portable, 1, GROUP>(images, k, rows, g, c, k0, width, out, start)
        },
        _ => panic!("{path} is not a fused kernel path"),
    }
}

// ---------------------------------------------------------------------------
// ISA entry points: each instantiates the generic kernel with its vector
// type inside a function compiled for that ISA.

/// # Safety
/// The CPU supports AVX-512F; slice lengths and row indices as asserted in
/// [`forward`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_avx512<P: Pixel>(
    images: &[P],
    k: usize,
    rows: &[u32],
    far: &[u32],
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    // SAFETY: the caller checked AVX-512F; see `forward`.
    unsafe { forward_rows::<P, Avx512, 3, 5>(images, k, rows, far, wt, bias, scale, logits) }
}

/// # Safety
/// The CPU supports AVX2 and FMA; slice lengths and row indices as
/// asserted in [`forward`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_avx2<P: Pixel>(
    images: &[P],
    k: usize,
    rows: &[u32],
    far: &[u32],
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    // SAFETY: the caller checked AVX2 and FMA; see `forward`.
    unsafe { forward_rows::<P, Avx2, 2, 5>(images, k, rows, far, wt, bias, scale, logits) }
}

/// # Safety
/// The CPU supports AVX-512F; lengths, row indices and the column block as
/// checked in [`weight_grad`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_avx512<P: Pixel>(
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    // SAFETY: the caller checked AVX-512F; see `weight_grad`.
    unsafe { weight_grad_cols::<P, Avx512, 4, 5>(images, k, rows, g, c, k0, width, out, start) }
}

/// # Safety
/// The CPU supports AVX2 and FMA; lengths, row indices and the column block
/// as checked in [`weight_grad`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_avx2<P: Pixel>(
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    // SAFETY: the caller checked AVX2 and FMA; see `weight_grad`.
    unsafe { weight_grad_cols::<P, Avx2, 2, 5>(images, k, rows, g, c, k0, width, out, start) }
}

// ---------------------------------------------------------------------------
// Forward: orchestration over rows and class groups, then the register block.

/// Class groups up to which a forward call goes row block by row block
/// (each block through every class group, the few weight rows staying in
/// L1); with more (an MLP's first layer, 784 → 256: W is 800 KB), class
/// group by class group, so that each group's `FG` weight rows stay in L1
/// while every row block of the call uses them (row blocks outermost, W
/// streamed from L2 once per block: 32 bytes a cycle on AVX2, the L2's
/// limit).
const FEW_GROUPS: usize = 2;

/// # Safety
/// `V`'s ISA is available; slice lengths as asserted in [`forward`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_rows<P: Pixel, V: Vector, const R: usize, const FG: usize>(
    images: &[P],
    k: usize,
    rows: &[u32],
    far: &[u32],
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    let c = bias.len();
    let nv = k / V::LANES;
    let stride = nv + 1;
    let full = rows.len() / R;
    let blocks = full + rows.len() % R;
    let groups = c / FG + c % FG;
    // Taken out of the thread-local and put back at the end: the work runs
    // here, not in a closure through `LocalKey::with`, which is not
    // compiled for the ISA (every intrinsic in it became a call).
    let mut active = ACTIVE.take();
    if active.len() < blocks * stride {
        active.resize(blocks * stride, 0);
    }
    for b in 0..blocks {
        let list = &mut active[b * stride..(b + 1) * stride];
        let r = block_first(b, full, R);
        let n = if b < full {
            let xs: [&[P]; R] = core::array::from_fn(|i| row(images, k, rows[r + i]));
            nonzero_vectors(xs, V::LANES, nv, &mut list[1..])
        } else {
            nonzero_vectors([row(images, k, rows[r])], V::LANES, nv, &mut list[1..])
        };
        list[0] = n as u32;
    }
    let (lists, x) = (
        &active[..],
        Rows {
            images,
            k,
            rows,
            far,
        },
    );
    if groups <= FEW_GROUPS {
        for b in 0..blocks {
            let list = block_list(lists, b, stride);
            // SAFETY: forwarded contract; `lists` holds each block's
            // offsets, all below k / LANES.
            unsafe {
                if b < full {
                    forward_one::<P, V, R, FG>(
                        x,
                        b * R,
                        list,
                        0..groups,
                        true,
                        wt,
                        bias,
                        scale,
                        logits,
                    )
                } else {
                    let r = block_first(b, full, R);
                    forward_one::<P, V, 1, FG>(x, r, list, 0..groups, true, wt, bias, scale, logits)
                }
            }
        }
    } else {
        for gi in 0..groups {
            for b in 0..blocks {
                let list = block_list(lists, b, stride);
                let gs = gi..gi + 1;
                // SAFETY: as above.
                unsafe {
                    if b < full {
                        forward_one::<P, V, R, FG>(
                            x,
                            b * R,
                            list,
                            gs,
                            gi == 0,
                            wt,
                            bias,
                            scale,
                            logits,
                        )
                    } else {
                        let r = block_first(b, full, R);
                        forward_one::<P, V, 1, FG>(x, r, list, gs, gi == 0, wt, bias, scale, logits)
                    }
                }
            }
        }
    }
    ACTIVE.set(active);
    // Far rows beyond this call's rows, at once.
    if far.len() > rows.len() {
        prefetch_rows(images, k, &far[rows.len()..]);
    }
}

/// A forward call's rows.
#[derive(Clone, Copy)]
struct Rows<'a, P> {
    images: &'a [P],
    k: usize,
    rows: &'a [u32],
    far: &'a [u32],
}

impl<'a, P: Pixel> Rows<'a, P> {
    /// Row `i` of `list` for loading ahead: empty if absent (a hint never
    /// panics).
    #[inline(always)]
    fn hint(self, list: &[u32], i: usize) -> &'a [P] {
        list.get(i)
            .and_then(|&x| try_row(self.images, self.k, x))
            .unwrap_or(&[])
    }
}

/// The first row of register block `b` (`full` blocks of `r` rows, then
/// single rows).
#[inline(always)]
fn block_first(b: usize, full: usize, r: usize) -> usize {
    if b < full {
        b * r
    } else {
        full * r + (b - full)
    }
}

/// Block `b`'s list of non-zero vectors (`[count, offsets…]`, `stride`
/// entries a block).
#[inline(always)]
fn block_list(lists: &[u32], b: usize, stride: usize) -> &[u32] {
    let l = &lists[b * stride..(b + 1) * stride];
    &l[1..1 + l[0] as usize]
}

/// The register block of rows `r .. r + R` through class groups `gs`,
/// loading the rows ahead (the next block's, and the far rows at the same
/// places) if `load`.
///
/// # Safety
/// As [`forward_block`], for these rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_one<P: Pixel, V: Vector, const R: usize, const FG: usize>(
    x: Rows<'_, P>,
    r: usize,
    active: &[u32],
    gs: core::ops::Range<usize>,
    load: bool,
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    logits: &mut [f32],
) {
    let c = bias.len();
    let xs: [&[P]; R] = core::array::from_fn(|i| row(x.images, x.k, x.rows[r + i]));
    let (near, far) = if load {
        (
            core::array::from_fn(|i| x.hint(x.rows, r + R + i)),
            core::array::from_fn(|i| x.hint(x.far, r + i)),
        )
    } else {
        ([&[][..]; R], [&[][..]; R])
    };
    let out = &mut logits[r * c..(r + R) * c];
    // SAFETY: forwarded contract.
    unsafe { forward_block::<P, V, R, FG>(xs, active, near, far, gs, x.k, wt, bias, scale, out) };
}

/// Logits of `R` rows for class groups `gs` (of `FG` classes, then single
/// classes), through the vectors `active` (offsets `kk / LANES`) where
/// some row is non-zero, loading `near` and `far` ahead (see [`Ahead`]).
///
/// # Safety
/// `V`'s ISA is available; each of `xs` has `k` elements, every offset in
/// `active` is below `k / LANES`, `wt` is C × K with C = `bias.len()`, and
/// `out` holds R × C logits.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block<P: Pixel, V: Vector, const R: usize, const FG: usize>(
    xs: [&[P]; R],
    active: &[u32],
    near: [&[P]; R],
    far: [&[P]; R],
    gs: core::ops::Range<usize>,
    k: usize,
    wt: &[f32],
    bias: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let c = bias.len();
    let full = c / FG;
    for gi in gs.clone() {
        let here = Ahead {
            near,
            far,
            group: gi - gs.start,
            groups: gs.len(),
        };
        if gi < full {
            let c0 = gi * FG;
            // SAFETY: forwarded contract; classes c0..c0+FG ≤ C.
            let dots = unsafe { dot_group::<P, V, R, FG>(xs, active, here, k, wt, c0) };
            for (r, d) in dots.iter().enumerate() {
                for (j, &v) in d.iter().enumerate() {
                    out[r * c + c0 + j] = v * scale + bias[c0 + j];
                }
            }
        } else {
            let c0 = full * FG + (gi - full);
            // SAFETY: as above, one class (c0 < C).
            let dots = unsafe { dot_group::<P, V, R, 1>(xs, active, here, k, wt, c0) };
            for (r, d) in dots.iter().enumerate() {
                out[r * c + c0] = d[0] * scale + bias[c0];
            }
        }
    }
}

/// The register block: dot products of `R` rows with `G` weight rows
/// starting at class `c0`, over the vectors `active` (the others are zero
/// in every row: [`Sparsity`]), then the last `k % LANES` features.
///
/// # Safety
/// `V`'s ISA is available; each of `xs` has `k` elements, every offset in
/// `active` is below `k / LANES`, and classes `c0 .. c0 + G` are rows of
/// `wt` (C × K).
#[inline(always)]
unsafe fn dot_group<P: Pixel, V: Vector, const R: usize, const G: usize>(
    xs: [&[P]; R],
    active: &[u32],
    ahead: Ahead<'_, P, R>,
    k: usize,
    wt: &[f32],
    c0: usize,
) -> [[f32; G]; R] {
    // SAFETY: `V`'s ISA is available (caller). Each x load reads LANES
    // elements at offset kk = i·LANES ≤ k − LANES (i < k / LANES) of a row
    // of length k; each w load reads LANES f32 at the same offset inside
    // row c0+g (< C) of wt (C × K).
    unsafe {
        let mut acc = [[V::zero(); G]; R];
        let mut pf = ahead.start(active.len(), k);
        for &i in active {
            pf.step();
            let kk = i as usize * V::LANES;
            let mut xv = [V::zero(); R];
            for r in 0..R {
                xv[r] = V::load_px(xs[r].as_ptr().add(kk));
            }
            for g in 0..G {
                let w = V::load(wt.as_ptr().add((c0 + g) * k + kk));
                for r in 0..R {
                    acc[r][g] = V::mul_add(xv[r], w, acc[r][g]);
                }
            }
        }
        pf.finish();
        // Loops, not `array::map`, which LLVM left out of line (a call per
        // block).
        let mut dots = [[0f32; G]; R];
        for r in 0..R {
            for g in 0..G {
                dots[r][g] = acc[r][g].reduce_sum();
            }
        }
        // The last k % LANES features, in scalar code after the reduction.
        // No copy into a padded buffer here: a memcpy call in this function
        // would make LLVM keep the accumulators in memory in the hot loop.
        let tail = k - k % V::LANES;
        for (r, dot) in dots.iter_mut().enumerate() {
            for (g, d) in dot.iter_mut().enumerate() {
                let w = &wt[(c0 + g) * k..(c0 + g + 1) * k];
                for i in tail..k {
                    *d += xs[r][i].to_f32() * w[i];
                }
            }
        }
        dots
    }
}

// ---------------------------------------------------------------------------
// Weight gradient: orchestration over column blocks and class groups, then
// the register block.

/// # Safety
/// `V`'s ISA is available; lengths and row indices as checked in
/// [`weight_grad`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_cols<P: Pixel, V: Vector, const NV: usize, const GG: usize>(
    images: &[P],
    k: usize,
    rows: &[u32],
    g: &[f32],
    c: usize,
    k0: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    // Taken out of the thread-local and put back (not used in a closure
    // through `LocalKey::with`, which is not compiled for the ISA).
    let mut active = ACTIVE_ROWS.take();
    if active.len() < rows.len() {
        active.resize(rows.len(), 0);
    }
    let x = Cols { images, k, rows };
    let mut j = 0;
    while j + NV * V::LANES <= width {
        // SAFETY: forwarded contract; columns k0+j .. k0+j+NV·LANES ≤ k0+width ≤ K.
        unsafe { grad_block::<P, V, NV, GG>(x, &mut active, g, c, k0 + j, j, width, out, start) };
        j += NV * V::LANES;
    }
    while j + V::LANES <= width {
        // SAFETY: forwarded contract; columns k0+j .. k0+j+LANES ≤ k0+width ≤ K.
        unsafe { grad_block::<P, V, 1, GG>(x, &mut active, g, c, k0 + j, j, width, out, start) };
        j += V::LANES;
    }
    if j < width {
        let rem = width - j;
        // Every row (the tail is not a whole number of 8-byte words).
        for (b, a) in active[..rows.len()].iter_mut().enumerate() {
            *a = b as u32;
        }
        let all = &active[..rows.len()];
        // SAFETY: forwarded contract; the tail's columns k0+j .. k0+width ≤ K.
        unsafe { grad_tail::<P, V>(x, all, g, c, k0 + j, j, rem, width, out, start) };
    }
    ACTIVE_ROWS.set(active);
}

/// A gradient call's rows.
#[derive(Clone, Copy)]
struct Cols<'a, P> {
    images: &'a [P],
    k: usize,
    rows: &'a [u32],
}

/// Columns `col .. col + NV·LANES` (output columns `j ..`), every class.
///
/// # Safety
/// `V`'s ISA is available; every row index is in bounds, `col + NV·LANES
/// ≤ k`, `g` is rows.len() × `c`, and `j + NV·LANES ≤ width` with `out`
/// being `c` × `width`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_block<P: Pixel, V: Vector, const NV: usize, const GG: usize>(
    x: Cols<'_, P>,
    active: &mut [u32],
    g: &[f32],
    c: usize,
    col: usize,
    j: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    let Cols { images, k, rows } = x;
    // The rows whose slice of these columns is not all zero ([`Sparsity`]),
    // in batch order, without a branch per row.
    assert!(active.len() >= rows.len());
    assert!((NV * V::LANES * core::mem::size_of::<P>()).is_multiple_of(8));
    let mut n = 0;
    for (b, &idx) in rows.iter().enumerate() {
        // SAFETY: the row was bounds-checked by the caller and
        // col + NV·LANES ≤ K, a whole number of 8-byte words (asserted);
        // n ≤ b < rows.len() ≤ active.len() (asserted).
        unsafe {
            let p = images.as_ptr().add(idx as usize * k + col);
            let zero = all_zero(p, NV * V::LANES);
            *active.get_unchecked_mut(n) = b as u32;
            n += usize::from(!zero);
        }
    }
    let active = &active[..n];
    let mut c0 = 0;
    while c0 < c {
        let take = if c0 + GG <= c { GG } else { 1 };
        // SAFETY: rows were bounds-checked by the caller and
        // col + NV·LANES ≤ K, so each x load stays in its row; g reads are
        // inside rows.len() × C; stores land in out[c'][j .. j+NV·LANES]
        // with j + NV·LANES ≤ width.
        unsafe {
            if take == GG {
                let acc = grad_group::<P, V, NV, GG>(
                    load_group::<V, NV, GG>(out, c0, j, width, start),
                    x,
                    active,
                    g,
                    c,
                    c0,
                    #[inline(always)]
                    |p, v| V::load_px(p.add(col + v * V::LANES)),
                );
                store_group::<V, NV, GG>(&acc, out, c0, j, width);
            } else {
                let acc = grad_group::<P, V, NV, 1>(
                    load_group::<V, NV, 1>(out, c0, j, width, start),
                    x,
                    active,
                    g,
                    c,
                    c0,
                    #[inline(always)]
                    |p, v| V::load_px(p.add(col + v * V::LANES)),
                );
                store_group::<V, NV, 1>(&acc, out, c0, j, width);
            }
        }
        c0 += take;
    }
}

/// The last `rem < LANES` columns, through a zero-padded copy of each row's
/// tail so the per-column sequence of operations is the same as in
/// [`grad_block`].
///
/// # Safety
/// `V`'s ISA is available; every row index is in bounds, the `n` columns
/// from `col` lie inside K, `g` is rows.len() × `c`, and output columns
/// `j .. j + n` lie inside `width`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_tail<P: Pixel, V: Vector>(
    x: Cols<'_, P>,
    all: &[u32],
    g: &[f32],
    c: usize,
    col: usize,
    j: usize,
    rem: usize,
    width: usize,
    out: &mut [f32],
    start: Start,
) {
    for cls in 0..c {
        // SAFETY: as grad_block, but x comes from a padded stack copy of
        // the row's elements col..col+rem (inside the row), the starting sums
        // are loaded from and the result stored through padded buffers
        // (V::LANES ≤ MAX_LANES, so one vector fits in each).
        unsafe {
            let mut from = [0f32; MAX_LANES];
            if start == Start::Out {
                from[..rem].copy_from_slice(&out[cls * width + j..cls * width + j + rem]);
            }
            let acc = grad_group::<P, V, 1, 1>(
                [[V::load(from.as_ptr())]],
                x,
                all,
                g,
                c,
                cls,
                #[inline(always)]
                |p, _| {
                    let mut pad = [P::default(); MAX_LANES];
                    core::ptr::copy_nonoverlapping(p.add(col), pad.as_mut_ptr(), rem);
                    V::load_px(pad.as_ptr())
                },
            );
            let mut buf = [0f32; MAX_LANES];
            acc[0][0].store(buf.as_mut_ptr());
            out[cls * width + j..cls * width + j + rem].copy_from_slice(&buf[..rem]);
        }
    }
}

/// The register block: `NV` vectors of columns × `G` classes, summed over
/// the batch positions `active` in order (the rows whose slice is not all
/// zero: [`Sparsity`]), starting from `init`. `load_x(row_ptr, v)` loads
/// vector `v` of the block from a row.
///
/// # Safety
/// `V`'s ISA is available; every row index is in bounds, every position
/// in `active` is below rows.len(), `col + NV·LANES ≤ k`, and classes
/// `c0 .. c0 + G` are columns of `g` (rows.len() × `c`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_group<P: Pixel, V: Vector, const NV: usize, const G: usize>(
    init: [[V; G]; NV],
    x: Cols<'_, P>,
    active: &[u32],
    g: &[f32],
    c: usize,
    c0: usize,
    load_x: impl Fn(*const P, usize) -> V,
) -> [[V; G]; NV] {
    // SAFETY: see callers; every `rows[b]` was bounds-checked, every b in
    // `active` is below rows.len(), g is rows × C.
    unsafe {
        let mut acc = init;
        for &b in active {
            let b = b as usize;
            let idx = *x.rows.get_unchecked(b);
            let p = x.images.as_ptr().add(idx as usize * x.k);
            let mut xv = [V::zero(); NV];
            for v in 0..NV {
                xv[v] = load_x(p, v);
            }
            let gb = g.as_ptr().add(b * c + c0);
            for cls in 0..G {
                let s = V::splat(*gb.add(cls));
                for v in 0..NV {
                    acc[v][cls] = V::mul_add(xv[v], s, acc[v][cls]);
                }
            }
        }
        acc
    }
}

/// The sums a register block starts from: zeros, or (continuing) the
/// values at the block's place in `out`.
///
/// # Safety
/// `V`'s ISA is available (the loads are bounds-asserted).
#[inline(always)]
unsafe fn load_group<V: Vector, const NV: usize, const G: usize>(
    out: &[f32],
    c0: usize,
    j: usize,
    width: usize,
    start: Start,
) -> [[V; G]; NV] {
    // Plain loops, not `array::from_fn`: its closures are not always
    // inlined into the ISA's entry point, and an out-of-line call per
    // vector (even for `V::zero`) cost 2.5% of an epoch's instructions.
    // SAFETY: the ISA is available (caller).
    let mut acc = [[unsafe { V::zero() }; G]; NV];
    if start == Start::Out {
        for v in 0..NV {
            for cls in 0..G {
                let at = (c0 + cls) * width + j + v * V::LANES;
                assert!(at + V::LANES <= out.len());
                // SAFETY: bounds asserted just above; the ISA is available.
                acc[v][cls] = unsafe { V::load(out.as_ptr().add(at)) };
            }
        }
    }
    acc
}

/// # Safety
/// `V`'s ISA is available (the stores are bounds-asserted).
#[inline(always)]
unsafe fn store_group<V: Vector, const NV: usize, const G: usize>(
    acc: &[[V; G]; NV],
    out: &mut [f32],
    c0: usize,
    j: usize,
    width: usize,
) {
    for v in 0..NV {
        for cls in 0..G {
            let at = (c0 + cls) * width + j + v * V::LANES;
            assert!(at + V::LANES <= out.len());
            // SAFETY: bounds asserted just above; the ISA is available.
            unsafe { acc[v][cls].store(out.as_mut_ptr().add(at)) };
        }
    }
}

/// How the register blocks above were chosen: `cargo run --release
/// --features tuning --example tune_blocks` times candidate block shapes (see
/// `fused/tuning.rs`).
#[cfg(all(feature = "tuning", target_arch = "x86_64"))]
#[doc(hidden)]
pub mod tuning;
