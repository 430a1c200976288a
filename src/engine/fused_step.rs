//! Softmax regression on u8 samples, with the fused SIMD kernels: the
//! default path, and the notebook's model.
//!
//! Each step has two phases:
//!
//! 1. forward + softmax-CE, in chunks of [`ROW_CHUNK`] batch rows, reading
//!    the u8 rows in place from the samples (the memory map);
//! 2. weight gradient + update, in chunks of [`COL_CHUNK`] feature
//!    columns, each updating its columns of W in place; chunk 0 also
//!    updates b and records the batch loss.
//!
//! Each output element is computed inside one chunk by a fixed sequence of
//! operations (see [`crate::kernels::fused`]), so the bits never depend on
//! which worker ran it.

use crate::kernels::{fused, softmax_ce, KernelPath};
use crate::parallel::{split_range, SharedSlice};

use super::phased::{Flow, StepPlan};
use super::EpochCtx;

/// Batch rows per forward chunk: a multiple of the AVX-512 kernel's 3-row
/// block, and few enough chunks per step (9 at batch 100) that claiming
/// them costs little.
pub const ROW_CHUNK: usize = 12;
/// Feature columns per gradient chunk: one 64-byte line of each u8 row,
/// and a C × 64 gradient block that stays in L1 until it is applied.
pub const COL_CHUNK: usize = 64;

/// The fused plan over an epoch's shared context.
pub struct FusedStep<'s> {
    ctx: &'s EpochCtx<'s>,
    path: KernelPath,
    images: &'s [u8],
    k: usize,
    c: usize,
    logits: SharedSlice<'s, f32>,
    g: SharedSlice<'s, f32>,
    losses: SharedSlice<'s, f32>,
}

/// Per-step buffers of the fused plan, sized for the largest batch.
pub struct FusedBuffers {
    logits: Vec<f32>,
    g: Vec<f32>,
    losses: Vec<f32>,
}

impl FusedBuffers {
    pub fn new(batch: usize, classes: usize) -> Self {
        Self {
            logits: vec![0.0; batch * classes],
            g: vec![0.0; batch * classes],
            losses: vec![0.0; batch],
        }
    }
}

impl<'s> FusedStep<'s> {
    /// A plan for softmax regression with `k` features and `c` classes
    /// (tensor 0 is W `[c, k]`, tensor 1 is b `[c]`, in that order in the
    /// buffer) on `path`.
    ///
    /// # Panics
    /// If the samples are not u8 or `path` is not fused.
    pub fn new(
        ctx: &'s EpochCtx<'s>,
        path: KernelPath,
        k: usize,
        c: usize,
        bufs: &'s mut FusedBuffers,
    ) -> Self {
        assert!(path.is_fused(), "FusedStep needs a fused kernel path");
        let images = ctx.samples.as_u8().expect("FusedStep needs u8 samples");
        assert_eq!(ctx.params.len(), c * k + c, "parameters must be W then b");
        Self {
            ctx,
            path,
            images,
            k,
            c,
            logits: SharedSlice::new(&mut bufs.logits),
            g: SharedSlice::new(&mut bufs.g),
            losses: SharedSlice::new(&mut bufs.losses),
        }
    }

    /// Forward pass and softmax-CE for rows `chunk·ROW_CHUNK ..` of step
    /// `step`'s batch.
    fn forward_chunk(&self, step: usize, chunk: usize) {
        let (k, c) = (self.k, self.c);
        let batch = self.ctx.batch(step);
        let inv_b = 1.0 / batch.len() as f32;
        let span = chunk * ROW_CHUNK..((chunk + 1) * ROW_CHUNK).min(batch.len());
        // SAFETY: forward phase (see `run`): the parameters are only read
        // in this phase, and this chunk's rows of logits, g and losses
        // belong to it alone.
        let (params, logits, g, losses) = unsafe {
            (
                self.ctx.params.get(0..c * k + c),
                self.logits.get_mut(span.start * c..span.end * c),
                self.g.get_mut(span.start * c..span.end * c),
                self.losses.get_mut(span.clone()),
            )
        };
        let (wt, bias) = params.split_at(c * k);
        let rows = &batch[span];
        let scale = self.ctx.samples.scale();
        fused::forward(self.path, self.images, k, rows, wt, bias, scale, logits);
        let label = |i: usize| self.ctx.samples.label(rows[i] as usize) as usize;
        softmax_ce::block(self.path, logits, c, label, inv_b, g, losses);
    }

    /// Weight gradient and SGD update for columns `chunk·COL_CHUNK ..`;
    /// chunk 0 also updates the bias and records the batch loss.
    fn gradient_chunk(&self, step: usize, chunk: usize, s: &mut Scratch) -> Flow {
        let (k, c) = (self.k, self.c);
        let batch = self.ctx.batch(step);
        let b = batch.len();
        let lr = self.ctx.schedule.lr(&self.ctx.sgd, step);
        let cols = chunk * COL_CHUNK..((chunk + 1) * COL_CHUNK).min(k);
        let width = cols.len();

        // Shuffled rows come from DRAM: start loading a share of the next
        // batch now, while this phase works on rows already in cache.
        if step + 1 < self.ctx.steps() {
            let next = self.ctx.batch(step + 1);
            let share = split_range(next.len(), self.chunks(step, 1), chunk);
            fused::prefetch_rows(self.images, k, &next[share]);
        }

        // SAFETY: gradient phase: g is only read in this phase.
        let g = unsafe { self.g.get(0..b * c) };
        let dw = &mut s.grad_block[..c * width];
        fused::weight_grad(
            self.path,
            self.images,
            k,
            batch,
            g,
            c,
            cols.start,
            width,
            dw,
        );
        // The kernel sums raw u8 pixels: their scale is applied here.
        let scale = self.ctx.samples.scale();
        for cls in 0..c {
            let at = cls * k + cols.start;
            // SAFETY: gradient phase: these columns of W (and of its
            // momentum) belong to this chunk alone; nothing reads W.
            unsafe {
                self.ctx.update(
                    lr,
                    at..at + width,
                    &dw[cls * width..(cls + 1) * width],
                    scale,
                )
            };
        }
        if chunk != 0 {
            return Flow::Continue;
        }
        crate::kernels::bias_grad(g, &mut s.db);
        // SAFETY: gradient phase: only chunk 0 touches the bias (and its
        // momentum) and reads the losses, written in the forward phase.
        let losses = unsafe {
            self.ctx.update(lr, c * k..c * k + c, &s.db, 1.0);
            self.losses.get(0..b)
        };
        self.ctx.finish_step(step, losses)
    }
}

/// A worker's gradient block and bias gradient.
pub struct Scratch {
    grad_block: Vec<f32>,
    db: Vec<f32>,
}

impl StepPlan for FusedStep<'_> {
    type Scratch = Scratch;

    fn scratch(&self) -> Scratch {
        Scratch {
            grad_block: vec![0.0; self.c * COL_CHUNK],
            db: vec![0.0; self.c],
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
            self.ctx.batch(step).len().div_ceil(ROW_CHUNK)
        } else {
            self.k.div_ceil(COL_CHUNK)
        }
    }

    /// Phase protocol (what makes the `SharedSlice` accesses sound, with
    /// the scheduler's ordering of phases):
    /// * forward phase: chunks read the parameters; chunk i writes only
    ///   rows `i·ROW_CHUNK ..` of `logits`, `g` and `losses`;
    /// * gradient phase: chunks read `g`; chunk j writes only columns
    ///   `j·COL_CHUNK ..` of W (and its momentum); chunk 0 alone reads
    ///   `losses` and writes b (and its momentum).
    fn run(&self, step: usize, phase: usize, chunk: usize, s: &mut Scratch) -> Flow {
        if phase == 0 {
            self.forward_chunk(step, chunk);
            Flow::Continue
        } else {
            self.gradient_chunk(step, chunk, s)
        }
    }
}
