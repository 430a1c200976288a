//! Softmax regression with the fused SIMD kernels, on u8 or f32 samples:
//! the default path, and the notebook's model.
//!
//! Each step has two phases per block of [`BLOCK_ROWS`] batch rows (one
//! block at the notebook's batch of 100):
//!
//! 1. forward + softmax-CE of the block's rows, in chunks of [`ROW_CHUNK`]
//!    rows, reading the rows in place from the samples (the memory map, or
//!    the caller's array);
//! 2. the weight gradient over the block's rows, in chunks of
//!    [`COL_CHUNK`] feature columns, continuing the sums of the blocks
//!    before; in the last block, each chunk then updates its columns of W
//!    in place, and chunk 0 also updates b and records the batch loss.
//!
//! Why blocks: the gradient reads every row of the batch once per column
//! chunk. 100 rows (78 KB) stay in a core's cache between the two phases;
//! 1000 rows (784 KB), next to the rows of the next batch loaded ahead,
//! did not, and batch 1000 ran 15–20% slower
//! per sample than batch 100 on one thread. The sums continue bit for bit
//! ([`crate::kernels::fused::weight_grad_continue`]), so blocks change no result.
//!
//! Each output element is computed inside one chunk by a fixed sequence of
//! operations (see [`crate::kernels::fused`]), so the bits never depend on
//! which worker ran it.

use crate::engine::parallel::SharedSlice;
use crate::kernels::{softmax_ce, KernelPath};

use super::phased::{Flow, StepPlan};
use super::EpochCtx;

/// Batch rows per forward chunk: a multiple of the AVX-512 kernel's 3-row
/// block, and few enough chunks per step (9 at batch 100) that claiming
/// them costs little.
pub const ROW_CHUNK: usize = 12;
/// Feature columns per gradient chunk: one 64-byte line of each u8 row,
/// and a C × 64 gradient block that stays in L1 until it is applied.
pub const COL_CHUNK: usize = 64;
/// Batch rows per block: a multiple of [`ROW_CHUNK`]; 94 KB of u8 rows,
/// which the gradient phase reads once per column chunk.
pub const BLOCK_ROWS: usize = 120;

/// Row blocks of a step over a batch of `batch` rows (at least 1).
fn blocks_for(batch: usize) -> usize {
    batch.div_ceil(BLOCK_ROWS).max(1)
}

/// The fused plan over an epoch's shared context.
pub struct FusedStep<'s> {
    ctx: &'s EpochCtx<'s>,
    path: KernelPath,
    k: usize,
    c: usize,
    /// Row blocks per step.
    blocks: usize,
    logits: SharedSlice<'s, f32>,
    g: SharedSlice<'s, f32>,
    losses: SharedSlice<'s, f32>,
    /// The weight-gradient sums between blocks: C × [`COL_CHUNK`] per
    /// column chunk, chunk after chunk (unused with one block).
    dw: SharedSlice<'s, f32>,
}

/// Per-step buffers of the fused plan, sized for the largest batch.
pub struct FusedBuffers {
    logits: Vec<f32>,
    g: Vec<f32>,
    losses: Vec<f32>,
    dw: Vec<f32>,
}

impl FusedBuffers {
    pub fn new(batch: usize, features: usize, classes: usize) -> Self {
        let dw = if blocks_for(batch) > 1 {
            classes * features.div_ceil(COL_CHUNK) * COL_CHUNK
        } else {
            0
        };
        Self {
            logits: vec![0.0; batch * classes],
            g: vec![0.0; batch * classes],
            losses: vec![0.0; batch],
            dw: vec![0.0; dw],
        }
    }
}

impl<'s> FusedStep<'s> {
    /// A plan for softmax regression with `k` features and `c` classes
    /// (tensor 0 is W `[c, k]`, tensor 1 is b `[c]`, in that order in the
    /// buffer) on `path`.
    ///
    /// # Panics
    /// If `path` is not fused.
    pub fn new(
        ctx: &'s EpochCtx<'s>,
        path: KernelPath,
        k: usize,
        c: usize,
        bufs: &'s mut FusedBuffers,
    ) -> Self {
        assert!(path.is_fused(), "FusedStep needs a fused kernel path");
        assert_eq!(ctx.params.len(), c * k + c, "parameters must be W then b");
        // The first batch is the largest (only the last may be short).
        let blocks = blocks_for(ctx.batch(0).len());
        assert!(
            blocks == 1 || bufs.dw.len() >= c * k.div_ceil(COL_CHUNK) * COL_CHUNK,
            "FusedBuffers too small for this batch"
        );
        Self {
            ctx,
            path,
            k,
            c,
            blocks,
            logits: SharedSlice::new(&mut bufs.logits),
            g: SharedSlice::new(&mut bufs.g),
            losses: SharedSlice::new(&mut bufs.losses),
            dw: SharedSlice::new(&mut bufs.dw),
        }
    }

    /// Batch positions of row block `block` of step `step` (empty for a
    /// block past the end of a short last batch).
    fn block_rows(&self, step: usize, block: usize) -> std::ops::Range<usize> {
        let b = self.ctx.batch(step).len();
        (block * BLOCK_ROWS).min(b)..((block + 1) * BLOCK_ROWS).min(b)
    }

    /// The rows that row block `block` of step `step` loads ahead: the
    /// next block's, or after the last block the next batch's first.
    fn rows_ahead(&self, step: usize, block: usize) -> &'s [u32] {
        let batch = self.ctx.pixel_rows(step);
        if block + 1 < self.blocks {
            &batch[self.block_rows(step, block + 1)]
        } else if step + 1 < self.ctx.steps() {
            let next = self.ctx.pixel_rows(step + 1);
            &next[..next.len().min(BLOCK_ROWS)]
        } else {
            &[]
        }
    }

    /// Forward pass and softmax-CE for rows `chunk·ROW_CHUNK ..` of row
    /// block `block` of step `step`'s batch.
    fn forward_chunk(&self, step: usize, block: usize, chunk: usize) {
        let (k, c) = (self.k, self.c);
        let batch = self.ctx.batch(step);
        let inv_b = 1.0 / batch.len() as f32;
        let rows = self.block_rows(step, block);
        let first = (rows.start + chunk * ROW_CHUNK).min(rows.end);
        let span = first..(first + ROW_CHUNK).min(rows.end);
        if span.is_empty() {
            return;
        }
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
        let first = span.start;
        let rows = &self.ctx.pixel_rows(step)[span.clone()];
        let scale = self.ctx.samples.scale();
        // Shuffled rows come from DRAM: the kernel loads the rows at the
        // same places of the block ahead (the last chunk: all the rest) a
        // line at a time while it computes, so they are in cache when
        // their turn comes, a block later.
        let ahead = self.rows_ahead(step, block);
        let end = if chunk + 1 == self.chunks(step, 2 * block) {
            ahead.len()
        } else {
            ((chunk + 1) * ROW_CHUNK).min(ahead.len())
        };
        let far = &ahead[(chunk * ROW_CHUNK).min(end)..end];
        // SAFETY: forward phase: no chunk writes the (augmented) rows.
        let images = unsafe { self.ctx.pixels() };
        images.forward_ahead(self.path, k, rows, far, wt, bias, scale, logits);
        let label = |i: usize| self.ctx.label(step, first + i) as usize;
        softmax_ce::block(self.path, logits, c, label, inv_b, g, losses);
        // The same positions' labels of the next step, a step ahead.
        self.ctx.labels_ahead(step + 1, span);
    }

    /// Weight gradient over row block `block` for columns
    /// `chunk·COL_CHUNK ..`; in the last block, their SGD update, and chunk
    /// 0 also updates the bias and records the batch loss.
    fn gradient_chunk(&self, step: usize, block: usize, chunk: usize, s: &mut Scratch) -> Flow {
        let (k, c) = (self.k, self.c);
        let batch = self.ctx.batch(step);
        let b = batch.len();
        let rows = self.block_rows(step, block);
        let last = block + 1 == self.blocks;
        let cols = chunk * COL_CHUNK..((chunk + 1) * COL_CHUNK).min(k);
        let width = cols.len();

        // SAFETY: gradient phase: g is only read in this phase.
        let g = unsafe { self.g.get(rows.start * c..rows.end * c) };
        let dw: &mut [f32] = if self.blocks == 1 {
            &mut s.grad_block[..c * width]
        } else {
            let at = chunk * c * COL_CHUNK;
            // SAFETY: gradient phases: chunk `chunk` of every block alone
            // touches this part of the sums, and phases run in order.
            unsafe { self.dw.get_mut(at..at + c * width) }
        };
        let rows = &self.ctx.pixel_rows(step)[rows];
        // Blocks after the first continue the sums (the same bits as one
        // pass over the batch).
        let cont = block > 0;
        // SAFETY: gradient phase: no chunk writes the (augmented) rows.
        let images = unsafe { self.ctx.pixels() };
        images.weight_grad(self.path, k, rows, g, c, cols.start, width, dw, cont);
        if !last {
            return Flow::Continue;
        }
        let lr = self.ctx.schedule.lr(&self.ctx.sgd, step);
        // The kernel sums raw pixels: their scale (u8's) is applied here.
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
        // SAFETY: gradient phase: g is only read in this phase.
        let g = unsafe { self.g.get(0..b * c) };
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
        2 * self.blocks
    }

    fn chunks(&self, step: usize, phase: usize) -> usize {
        if phase.is_multiple_of(2) {
            // At least 1 (the contract), even for an empty block.
            self.block_rows(step, phase / 2)
                .len()
                .div_ceil(ROW_CHUNK)
                .max(1)
        } else {
            self.k.div_ceil(COL_CHUNK)
        }
    }

    /// Phase protocol (what makes the `SharedSlice` accesses sound, with
    /// the scheduler's ordering of phases):
    /// * forward phase of a block: chunks read the parameters; chunk i
    ///   writes only the block's rows `i·ROW_CHUNK ..` of `logits`, `g` and
    ///   `losses`;
    /// * gradient phase of a block: chunks read `g`; chunk j alone reads
    ///   and writes part j of `dw`, and, in the last block, writes columns
    ///   `j·COL_CHUNK ..` of W (and its momentum); chunk 0 of the last
    ///   block alone reads `losses` and writes b (and its momentum).
    fn run(&self, step: usize, phase: usize, chunk: usize, s: &mut Scratch) -> Flow {
        let block = phase / 2;
        if phase.is_multiple_of(2) {
            self.forward_chunk(step, block, chunk);
            Flow::Continue
        } else {
            self.gradient_chunk(step, block, chunk, s)
        }
    }
}
