//! Augmentation inside the step: a plan whose every step first deforms its
//! batch (chunks of [`AUG_ROWS`] rows, in parallel), then runs another
//! plan's phases on the deformed rows.
//!
//! Sample `i` of epoch `e` is deformed by [`Augmenter::apply`] from its u8
//! pixels, a function of `(seed, e, i)` alone ([`crate::data::augment`]),
//! into row `position` of the epoch's augmentation buffer; the inner plan
//! reads its pixels through [`EpochCtx::pixels`] and
//! [`EpochCtx::pixel_rows`], which point there. No deformation depends on
//! the worker or on the other rows, so the bits are the same at any thread
//! count, and a resumed run deforms its epochs as the uninterrupted run
//! would have. The dataset is never copied: only the B rows of the step
//! are, deformed.

use crate::data::augment::{self, Augmenter};

use super::phased::{Flow, StepPlan};
use super::EpochCtx;

/// Batch rows per augmentation chunk.
pub const AUG_ROWS: usize = 10;

/// `inner`, with every step's batch deformed first.
pub struct Augmented<'s, P> {
    ctx: &'s EpochCtx<'s>,
    augmenter: &'s Augmenter,
    inner: P,
}

impl<'s, P: StepPlan> Augmented<'s, P> {
    /// # Panics
    /// If the context has no augmentation, or its samples are not u8.
    pub fn new(ctx: &'s EpochCtx<'s>, inner: P) -> Self {
        let a = ctx
            .augmentation()
            .expect("Augmented needs an epoch with augmentation");
        assert!(
            ctx.samples.as_u8().is_some(),
            "augmentation deforms u8 samples"
        );
        Self {
            ctx,
            augmenter: a.augmenter,
            inner,
        }
    }

    /// Deforms batch positions `chunk·AUG_ROWS ..` of step `step`.
    fn deform(&self, step: usize, chunk: usize, s: &mut augment::Scratch) {
        let ctx = self.ctx;
        let a = ctx.augmentation().expect("checked in new");
        let batch = ctx.batch(step);
        let images = ctx.samples.as_u8().expect("checked in new");
        let k = ctx.samples.features();
        let span = (chunk * AUG_ROWS).min(batch.len())..((chunk + 1) * AUG_ROWS).min(batch.len());
        // SAFETY: augment phase: batch positions `span` of the rows belong
        // to this chunk alone, and no chunk of this phase reads the rows.
        let out = unsafe { a.rows.get_mut(span.start * k..span.end * k) };
        // The samples are shuffled rows of the data set, so each one's
        // pixels come from DRAM: ask for the rows `AHEAD` samples early,
        // while the deformations before them compute (the loads of the
        // source row were a fifth of the elastic kernel's time in `perf
        // annotate`). A hint only: no bit depends on it.
        const AHEAD: usize = 2;
        let indices = &batch[span];
        let ahead = |i: usize| indices.get(i..(i + 1).min(indices.len())).unwrap_or(&[]);
        for i in 0..AHEAD {
            crate::kernels::fused::prefetch_rows(images, k, ahead(i));
        }
        for (i, (row, &index)) in out.chunks_exact_mut(k).zip(indices).enumerate() {
            crate::kernels::fused::prefetch_rows(images, k, ahead(i + AHEAD));
            let src = &images[index as usize * k..(index as usize + 1) * k];
            self.augmenter
                .apply(a.seed, a.epoch, u64::from(index), src, row, s);
        }
    }
}

impl<P: StepPlan> StepPlan for Augmented<'_, P> {
    type Scratch = (P::Scratch, augment::Scratch);

    fn scratch(&self) -> Self::Scratch {
        (self.inner.scratch(), self.augmenter.scratch())
    }

    fn steps(&self) -> usize {
        self.inner.steps()
    }

    fn phases(&self) -> usize {
        self.inner.phases() + 1
    }

    fn chunks(&self, step: usize, phase: usize) -> usize {
        if phase == 0 {
            self.ctx.batch(step).len().div_ceil(AUG_ROWS).max(1)
        } else {
            self.inner.chunks(step, phase - 1)
        }
    }

    /// Phase protocol: phase 0 writes the step's rows (each chunk its own
    /// positions) and reads only the samples; the inner plan's phases
    /// follow it, reading the rows and writing none of them.
    fn run(&self, step: usize, phase: usize, chunk: usize, s: &mut Self::Scratch) -> Flow {
        if phase == 0 {
            self.deform(step, chunk, &mut s.1);
            Flow::Continue
        } else {
            self.inner.run(step, phase - 1, chunk, &mut s.0)
        }
    }
}
