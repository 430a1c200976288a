//! One training epoch, for any network: the step plans and the scheduler
//! that runs them.
//!
//! * [`phased`]: the scheduler (tickets and a completion counter), once,
//!   and [`bench`](mod@bench), its answer to a worker that loses its CPU;
//! * [`fused_step`]: softmax regression (u8 or f32 samples) with the fused SIMD
//!   kernels, two phases per block of 120 batch rows;
//! * [`layer_step`]: any network (softmax regression, an MLP, a CNN) on u8 or
//!   f32 samples, each layer on its own kernels, two phases per step.
//!
//! Both plans share [`EpochCtx`]: the batch order, the parameters and
//! momentum (one flat buffer each, see [`crate::nn::ParamStore`]), the
//! loss sum and the failure flag.

pub mod augment_step;
pub mod bench;
pub mod fused_step;
pub mod layer_step;
pub mod parallel;
pub mod phased;
pub mod placement;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::data::augment::Augmenter;
use crate::data::Samples;
use crate::kernels::fused::Images;
use crate::optim::Sgd;
use parallel::{CachePadded, SharedSlice};
use phased::Flow;

/// An epoch's place in the run, for the learning-rate schedule.
#[derive(Clone, Copy, Debug)]
pub struct SchedulePosition {
    /// 0-based.
    pub epoch: usize,
    /// Global index of the epoch's first step.
    pub first_step: usize,
    pub total_steps: usize,
}

impl SchedulePosition {
    /// The learning rate for step `step` (0-based, within the epoch).
    pub fn lr(&self, sgd: &Sgd, step: usize) -> f32 {
        sgd.lr_at(self.epoch, self.first_step + step, self.total_steps)
    }
}

/// What every step plan of an epoch shares.
pub struct EpochCtx<'s> {
    pub samples: &'s Samples<'s>,
    /// The epoch's shuffled sample indices; batches are consecutive runs.
    pub order: &'s [u32],
    pub batch_size: usize,
    pub sgd: Sgd,
    pub schedule: SchedulePosition,
    /// The network's parameters, laid out as its [`crate::nn::ParamStore`].
    pub params: SharedSlice<'s, f32>,
    /// The momentum buffer, same layout; empty without momentum.
    pub momentum: SharedSlice<'s, f32>,
    /// Written once a step; on cache lines of their own, so that the write
    /// does not evict the read-mostly fields above from the other cores'
    /// caches (it cost 9–16% of a 2-thread epoch, measured with
    /// perf/ab_compare.py).
    outcome: CachePadded<Outcome>,
    progress: &'s (dyn Fn(u64) + Sync),
    /// Raised by another thread to stop the epoch at the next step's end
    /// (Ctrl-C in Python).
    stop: Option<&'s AtomicBool>,
    /// With augmentation, where the step's deformed rows go.
    augment: Option<Augmentation<'s>>,
}

/// An epoch's augmentation: each step's batch is deformed into `rows`
/// (batch position `i` at row `i`) by the [`augment_step::Augmented`]
/// plan's first phase, and the step's other phases read it there.
pub struct Augmentation<'s> {
    pub augmenter: &'s Augmenter,
    /// The run's seed and the epoch (0-based): with the sample's index,
    /// they decide its deformation.
    pub seed: u64,
    pub epoch: u64,
    /// `batch_size × features` u8.
    pub rows: SharedSlice<'s, u8>,
    /// `0, 1, …, batch_size − 1`: the row indices the kernels read.
    pub positions: &'s [u32],
}

/// The epoch's running result.
struct Outcome {
    /// The loss sum (f64 bits), updated once per step by the step's
    /// designated chunk: the phase order makes those updates sequential.
    loss_sum: AtomicU64,
    /// 1-based step whose loss was not finite ([`INTERRUPTED`] when the
    /// stop flag ended the epoch); 0 while all is well.
    failed_step: AtomicUsize,
}

/// [`EpochCtx::outcome`]'s error when the stop flag ended the epoch.
pub const INTERRUPTED: usize = usize::MAX;

impl<'s> EpochCtx<'s> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        samples: &'s Samples<'s>,
        order: &'s [u32],
        batch_size: usize,
        sgd: Sgd,
        schedule: SchedulePosition,
        params: &'s mut [f32],
        momentum: &'s mut [f32],
        progress: &'s (dyn Fn(u64) + Sync),
        stop: Option<&'s AtomicBool>,
    ) -> Self {
        Self {
            samples,
            order,
            batch_size,
            sgd,
            schedule,
            params: SharedSlice::new(params),
            momentum: SharedSlice::new(momentum),
            outcome: CachePadded(Outcome {
                loss_sum: AtomicU64::new(0f64.to_bits()),
                failed_step: AtomicUsize::new(0),
            }),
            progress,
            stop,
            augment: None,
        }
    }

    /// Deforms every step's batch first ([`augment_step`]).
    pub fn with_augmentation(mut self, augment: Augmentation<'s>) -> Self {
        self.augment = Some(augment);
        self
    }

    pub fn augmentation(&self) -> Option<&Augmentation<'s>> {
        self.augment.as_ref()
    }

    /// The rows the fused kernels read: the samples' (u8 or f32), or, with
    /// augmentation, the step's deformed u8 rows.
    ///
    /// # Safety
    /// With augmentation, only in a phase after the step's augment phase
    /// and before the next step's: no chunk writes the rows meanwhile.
    pub unsafe fn pixels(&self) -> Images<'_> {
        match &self.augment {
            // SAFETY: the caller's phase writes no row (its contract).
            Some(a) => Images::U8(unsafe { a.rows.get(0..a.rows.len()) }),
            None => Images::of(self.samples),
        }
    }

    /// The rows of [`Self::pixels`] that hold step `step`'s batch: the
    /// samples' indices, or, with augmentation, the positions 0, 1, ….
    pub fn pixel_rows(&self, step: usize) -> &'s [u32] {
        let batch = self.batch(step);
        match &self.augment {
            Some(a) => &a.positions[..batch.len()],
            None => batch,
        }
    }

    /// The label of batch position `i` of step `step`.
    #[inline]
    pub fn label(&self, step: usize, i: usize) -> u32 {
        self.samples.label(self.batch(step)[i] as usize)
    }

    /// Loads ahead the labels of batch positions `positions` of step
    /// `step` (nothing past the last step); the steps call it for the next
    /// step while they compute this one (their rows are loaded ahead by the
    /// kernels). A hint only.
    pub fn labels_ahead(&self, step: usize, positions: std::ops::Range<usize>) {
        if step < self.steps() {
            let batch = self.batch(step);
            let end = positions.end.min(batch.len());
            let samples = &batch[positions.start.min(end)..end];
            self.samples.prefetch_labels(samples);
        }
    }

    /// Batch position `i` of step `step` as f32 (u8 × the pixel scale):
    /// the sample's row, or its deformation.
    ///
    /// # Safety
    /// As [`Self::pixels`].
    pub unsafe fn row_into_f32(&self, step: usize, i: usize, out: &mut [f32]) {
        match &self.augment {
            Some(a) => {
                let k = out.len();
                // SAFETY: the caller's phase writes no row (its contract).
                let row = unsafe { a.rows.get(i * k..(i + 1) * k) };
                crate::data::pixels::u8_to_f32(row, out);
            }
            None => self.samples.row_into_f32(self.batch(step)[i] as usize, out),
        }
    }

    pub fn steps(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// The sample indices of step `step`'s batch.
    pub fn batch(&self, step: usize) -> &'s [u32] {
        let start = step * self.batch_size;
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// Records step `step`'s per-row `losses`: adds them to the epoch's
    /// sum, reports progress now and then, and abandons the epoch if the
    /// loss is not finite or the stop flag is up. Called by exactly one
    /// chunk per step, in a phase after the losses were written.
    pub fn finish_step(&self, step: usize, losses: &[f32]) -> Flow {
        // One relaxed load a step: the flag is raised rarely, and seeing
        // it a step late costs nothing.
        if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            self.outcome
                .failed_step
                .store(INTERRUPTED, Ordering::SeqCst);
            return Flow::Abandon;
        }
        let batch_loss: f64 = losses.iter().map(|&l| l as f64).sum();
        if !batch_loss.is_finite() {
            self.outcome.failed_step.store(step + 1, Ordering::SeqCst);
            return Flow::Abandon;
        }
        // Sequential across steps (phase order), so a plain load-add-store
        // is exact and ordered.
        let sum = f64::from_bits(self.outcome.loss_sum.load(Ordering::Relaxed)) + batch_loss;
        self.outcome
            .loss_sum
            .store(sum.to_bits(), Ordering::Relaxed);
        if step % 16 == 15 || step + 1 == self.steps() {
            let done = ((step + 1) * self.batch_size).min(self.order.len()) as u64;
            (self.progress)(done);
        }
        Flow::Continue
    }

    /// The epoch's outcome: the loss sum, or the 1-based step that failed
    /// ([`INTERRUPTED`] if the stop flag ended it).
    pub fn outcome(&self) -> Result<f64, usize> {
        match self.outcome.failed_step.load(Ordering::Relaxed) {
            0 => Ok(f64::from_bits(
                self.outcome.loss_sum.load(Ordering::Relaxed),
            )),
            step => Err(step),
        }
    }

    /// Applies the SGD update to `params[range]` from the raw gradient
    /// `grad` (true gradient = `grad_scale · grad`), with the momentum
    /// buffer's same range.
    ///
    /// # Safety
    /// The caller's chunk must be the only one touching `range` of the
    /// parameters (and momentum) during this phase, and no chunk of the
    /// phase may read it.
    pub unsafe fn update(
        &self,
        lr: f32,
        range: std::ops::Range<usize>,
        grad: &[f32],
        grad_scale: f32,
    ) {
        let mspan = if self.sgd.has_momentum() {
            range.clone()
        } else {
            0..0
        };
        // SAFETY: exclusive access to `range` of both buffers during this
        // phase, as the caller guarantees.
        let (w, m) = unsafe { (self.params.get_mut(range), self.momentum.get_mut(mspan)) };
        self.sgd.apply(lr, w, grad, grad_scale, m);
    }
}
