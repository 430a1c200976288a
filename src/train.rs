//! The training loop: minibatch SGD on softmax cross-entropy.
//!
//! One epoch is: reshuffle the training order (seeded Fisher–Yates), then
//! for each batch of B rows:
//!
//! ```text
//! forward      logits = X·W + b                       (B × C)
//! loss         ℓ_r = −log softmax(logits_r)[y_r]       per row
//! backward     G = (softmax(logits) − onehot(y)) / B   (B × C)
//!              dW = Xᵀ·G,  db = Σ_rows G
//! update       W −= lr·dW,  b −= lr·db
//! ```
//!
//! # Threads and determinism
//!
//! On the fused path, `T` persistent workers (hosted by a rayon pool for the
//! whole epoch) run each step in two phases separated by a [`SpinBarrier`]:
//!
//! 1. forward + softmax-CE: worker t takes rows `split_range(B, T, t)`;
//! 2. weight gradient + update: worker t takes feature columns
//!    `split_range(K/16 blocks, T, t)` and updates its columns of W in
//!    place; worker 0 also updates b and sums the batch loss.
//!
//! Each element of every result is computed by one worker with a fixed
//! sequence of operations (see [`crate::kernels::fused`]), and every
//! reduction runs in a fixed order, so the final weights are bitwise
//! identical for any thread count: same seed, same binary, same kernel
//! path, same bits.
//!
//! The gemm path runs the step on the calling thread with single
//! `matrixmultiply` calls (whose result does not depend on threads) and
//! spreads the row gather and softmax-CE over the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::dataset::{Dataset, Labels, Split, U8_SCALE};
use crate::kernels::{fused, gemm, sgd, softmax_ce, KernelPath};
use crate::metrics::{self, Evaluation};
use crate::model::Model;
use crate::optim::Sgd;
use crate::parallel::{split_range, SharedSlice, SpinBarrier};

/// The default `--seed`.
pub const DEFAULT_SEED: u64 = 42;

/// Columns per call of the fused gradient kernel: small enough that the
/// C × COLS gradient block stays in L1 before it is applied.
const GRAD_COLS: usize = 64;
/// Feature columns are dealt to workers in blocks of this many (one
/// AVX-512 vector), keeping every worker's columns vector-aligned.
const COL_BLOCK: usize = 16;
/// The worker that updates the bias and sums the loss.
const LEADER: usize = 0;
/// Mixed into the seed for the validation split's own random stream, so
/// the split does not shift the initialisation or the shuffles.
const VAL_SPLIT_STREAM: u64 = 0x7661_6c5f_7370_6c74; // "val_splt"

/// Everything that defines a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Total epochs of the run (a resumed run continues up to this many).
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate, momentum, weight decay, schedule.
    pub sgd: Sgd,
    pub seed: u64,
    /// Fraction of the training set held out for validation (0 for none).
    /// The split is drawn from the seed, so it is the same on every run.
    pub val_split: f32,
    /// Size of the rayon pool. The fused path runs `min(threads, CPUs)`
    /// workers (see [`TrainConfig::workers`]); the result is the same bits
    /// either way.
    pub threads: usize,
    pub kernel: KernelPath,
    /// Run exactly `threads` fused workers even when that is more than the
    /// CPUs available. Off by default: oversubscribed workers only wait on
    /// each other at the barriers. The determinism tests turn it on to
    /// exercise every worker count on any machine.
    pub oversubscribe: bool,
}

impl TrainConfig {
    /// The number of fused-path workers this configuration runs.
    pub fn workers(&self) -> usize {
        if self.oversubscribe {
            self.threads
        } else {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.threads.min(cpus).max(1)
        }
    }
}

impl Default for TrainConfig {
    /// The notebook's settings, on every core, with the best kernel.
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 100,
            sgd: Sgd::plain(0.1),
            seed: DEFAULT_SEED,
            val_split: 0.0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: KernelPath::best(),
            oversubscribe: false,
        }
    }
}

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Epoch and step are 1-based.
    #[error("non-finite loss at epoch {epoch}, step {step} (try a smaller --lr; check the data for NaN)")]
    NonFinite { epoch: usize, step: usize },
    #[error("{0}")]
    Config(String),
}

/// What one epoch did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch (each batch's loss before its update).
    pub train_loss: f64,
    /// Wall time of the training loop alone (shuffle and steps).
    pub seconds: f64,
    pub samples: usize,
}

impl EpochStats {
    pub fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Buffers for one step, sized once for the largest batch.
struct Workspace {
    logits: Vec<f32>,
    g: Vec<f32>,
    losses: Vec<f32>,
    // Gemm path only.
    x: Vec<f32>,
    dwt: Vec<f32>,
    db: Vec<f32>,
    labels: Vec<u32>,
}

/// Everything a checkpoint must hold to continue a run bit for bit: the
/// model, the momentum buffers and how many epochs are done. The RNG state
/// is not stored: it is a function of the seed and the epochs done, and
/// [`Trainer::resume`] replays it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub model: Model,
    /// Momentum buffer for `wt` (C × K); empty without momentum.
    pub momentum_wt: Vec<f32>,
    /// Momentum buffer for `bias` (C); empty without momentum.
    pub momentum_bias: Vec<f32>,
    pub epochs_done: usize,
}

/// A model being trained on a dataset.
pub struct Trainer<'a> {
    data: &'a Dataset,
    cfg: TrainConfig,
    pool: rayon::ThreadPool,
    model: Model,
    momentum_wt: Vec<f32>,
    momentum_bias: Vec<f32>,
    rng: Xoshiro256PlusPlus,
    /// Training-sample indices, reshuffled each epoch.
    order: Vec<u32>,
    /// Held-out validation indices, sorted.
    val_rows: Vec<u32>,
    epochs_done: usize,
    ws: Workspace,
}

impl<'a> Trainer<'a> {
    /// Checks the configuration, starts the pool and initialises the model
    /// from the seed.
    pub fn new(data: &'a Dataset, cfg: TrainConfig) -> Result<Self, TrainError> {
        if cfg.batch_size == 0 || cfg.threads == 0 || cfg.epochs == 0 {
            return Err(TrainError::Config(format!(
                "invalid configuration: epochs {}, batch size {}, threads {}",
                cfg.epochs, cfg.batch_size, cfg.threads
            )));
        }
        cfg.sgd.validate().map_err(TrainError::Config)?;
        if !(cfg.val_split.is_finite() && (0.0..1.0).contains(&cfg.val_split)) {
            return Err(TrainError::Config(format!(
                "validation split must be in [0, 1), got {}",
                cfg.val_split
            )));
        }
        if !cfg.kernel.is_available() {
            return Err(TrainError::Config(format!(
                "kernel path {} is not available on this CPU",
                cfg.kernel
            )));
        }
        let n = data.train.len();
        if n > u32::MAX as usize {
            return Err(TrainError::Config(format!(
                "{n} training samples: at most {} are supported",
                u32::MAX
            )));
        }
        let (order, val_rows) = split_train_val(n, cfg.val_split, cfg.seed)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("train-{i}"))
            .build()
            .map_err(|e| {
                TrainError::Config(format!("cannot start {} threads: {e}", cfg.threads))
            })?;
        let (k, c) = (data.features(), data.classes);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let model = Model::init(k, c, &mut rng);
        let bs = cfg.batch_size.min(order.len());
        let gemm_path = !cfg.kernel.is_fused() || data.train.images.as_u8().is_none();
        let ws = Workspace {
            logits: vec![0.0; bs * c],
            g: vec![0.0; bs * c],
            losses: vec![0.0; bs],
            x: if gemm_path {
                vec![0.0; bs * k]
            } else {
                Vec::new()
            },
            dwt: if gemm_path {
                vec![0.0; c * k]
            } else {
                Vec::new()
            },
            db: vec![0.0; c],
            labels: vec![0; bs],
        };
        let (momentum_wt, momentum_bias) = if cfg.sgd.has_momentum() {
            (vec![0.0; c * k], vec![0.0; c])
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Self {
            data,
            cfg,
            pool,
            model,
            momentum_wt,
            momentum_bias,
            rng,
            order,
            val_rows,
            epochs_done: 0,
            ws,
        })
    }

    /// Continues a run from `state`: the model and momentum come from the
    /// state, and the RNG is replayed (initialisation draws, then one
    /// shuffle per epoch done), so the next epoch is exactly the one an
    /// uninterrupted run would train.
    pub fn resume(
        data: &'a Dataset,
        cfg: TrainConfig,
        state: TrainState,
    ) -> Result<Self, TrainError> {
        let mut trainer = Self::new(data, cfg)?;
        let m = &state.model;
        if (m.features, m.classes) != (trainer.model.features, trainer.model.classes) {
            return Err(TrainError::Config(format!(
                "the checkpoint's model is {} features × {} classes, but the data has {} × {}",
                m.features, m.classes, trainer.model.features, trainer.model.classes
            )));
        }
        if state.epochs_done >= trainer.cfg.epochs {
            return Err(TrainError::Config(format!(
                "the checkpoint has already trained {} epoch(s); ask for more with --epochs",
                state.epochs_done
            )));
        }
        if trainer.cfg.sgd.has_momentum() && !state.momentum_wt.is_empty() {
            if state.momentum_wt.len() != m.wt.len() || state.momentum_bias.len() != m.bias.len() {
                return Err(TrainError::Config(
                    "the checkpoint's momentum buffers do not match its model".into(),
                ));
            }
            trainer.momentum_wt = state.momentum_wt;
            trainer.momentum_bias = state.momentum_bias;
        }
        trainer.model = state.model;
        for _ in 0..state.epochs_done {
            trainer.order.shuffle(&mut trainer.rng);
        }
        trainer.epochs_done = state.epochs_done;
        Ok(trainer)
    }

    /// A snapshot to save as a checkpoint.
    pub fn state(&self) -> TrainState {
        TrainState {
            model: self.model.clone(),
            momentum_wt: self.momentum_wt.clone(),
            momentum_bias: self.momentum_bias.clone(),
            epochs_done: self.epochs_done,
        }
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Number of samples trained on per epoch (the training set less the
    /// validation split).
    pub fn train_samples(&self) -> usize {
        self.order.len()
    }

    /// Evaluates on the held-out validation rows, if there are any.
    pub fn evaluate_validation(&self) -> Option<Evaluation> {
        if self.val_rows.is_empty() {
            return None;
        }
        let path = self.effective_kernel();
        Some(self.pool.install(|| {
            metrics::evaluate_rows(&self.model, &self.data.train, path, &self.val_rows)
        }))
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The kernel path that actually runs: the configured one, except that
    /// non-u8 images always take the gemm path.
    pub fn effective_kernel(&self) -> KernelPath {
        match self.data.train.images.as_u8() {
            Some(_) => self.cfg.kernel,
            None => KernelPath::Gemm,
        }
    }

    /// Evaluates the current model on `split`, on the trainer's pool.
    pub fn evaluate(&self, split: &Split) -> Evaluation {
        let path = self.effective_kernel();
        self.pool
            .install(|| metrics::evaluate(&self.model, split, path))
    }

    /// Runs one epoch. `progress(samples_done)` is called now and then from
    /// a worker thread.
    pub fn train_epoch(
        &mut self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<EpochStats, TrainError> {
        let epoch = self.epochs_done + 1;
        let start = Instant::now();
        self.order.shuffle(&mut self.rng);
        let loss_sum = match self.effective_kernel() {
            KernelPath::Gemm => self.epoch_gemm(epoch, progress)?,
            path => self.epoch_fused(path, epoch, progress)?,
        };
        let seconds = start.elapsed().as_secs_f64();
        let n = self.order.len();
        if !self.model.is_finite() {
            return Err(TrainError::NonFinite {
                epoch,
                step: n.div_ceil(self.cfg.batch_size),
            });
        }
        self.epochs_done = epoch;
        Ok(EpochStats {
            epoch,
            train_loss: loss_sum / n as f64,
            seconds,
            samples: n,
        })
    }

    /// One epoch of training followed by the test evaluation (and the
    /// validation one, with a split): what a training run reports per epoch.
    pub fn run_epoch(
        &mut self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<EpochReport, TrainError> {
        let stats = self.train_epoch(progress)?;
        let eval_start = Instant::now();
        let test = self.evaluate(&self.data.test);
        let eval_seconds = eval_start.elapsed().as_secs_f64();
        let validation = self.evaluate_validation();
        Ok(EpochReport {
            stats,
            test,
            validation,
            eval_seconds,
        })
    }

    /// Where epoch `epoch` (1-based) sits in the learning-rate schedule.
    fn schedule_position(&self, epoch: usize) -> SchedulePosition {
        let steps_per_epoch = self.order.len().div_ceil(self.cfg.batch_size);
        SchedulePosition {
            epoch: epoch - 1,
            first_step: (epoch - 1) * steps_per_epoch,
            total_steps: self.cfg.epochs * steps_per_epoch,
        }
    }

    /// The fused path: persistent workers, two phases per step.
    fn epoch_fused(
        &mut self,
        path: KernelPath,
        epoch: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<f64, TrainError> {
        let images = self
            .data
            .train
            .images
            .as_u8()
            .expect("fused path needs u8 images");
        let (k, c) = (self.model.features, self.model.classes);
        let ctx = FusedEpoch {
            path,
            images,
            labels: &self.data.train.labels,
            order: &self.order,
            k,
            c,
            batch_size: self.cfg.batch_size,
            sgd: self.cfg.sgd,
            schedule: self.schedule_position(epoch),
            workers: self.cfg.workers(),
            wt: SharedSlice::new(&mut self.model.wt),
            bias: SharedSlice::new(&mut self.model.bias),
            momentum_wt: SharedSlice::new(&mut self.momentum_wt),
            momentum_bias: SharedSlice::new(&mut self.momentum_bias),
            logits: SharedSlice::new(&mut self.ws.logits),
            g: SharedSlice::new(&mut self.ws.g),
            losses: SharedSlice::new(&mut self.ws.losses),
            barrier: SpinBarrier::new(self.cfg.workers()),
            failed_step: AtomicUsize::new(0),
            progress,
        };
        // Pool threads beyond the worker count return at once.
        let sums = self.pool.broadcast(|b| {
            if b.index() < ctx.workers {
                ctx.worker(b.index())
            } else {
                0.0
            }
        });
        match ctx.failed_step.load(Ordering::Relaxed) {
            0 => Ok(sums[LEADER]),
            step => Err(TrainError::NonFinite { epoch, step }),
        }
    }

    /// The general path: gather to f32, sgemm, parallel softmax-CE.
    fn epoch_gemm(
        &mut self,
        epoch: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<f64, TrainError> {
        let (k, c) = (self.model.features, self.model.classes);
        let schedule = self.schedule_position(epoch);
        let images = &self.data.train.images;
        let all_labels = &self.data.train.labels;
        let ws = &mut self.ws;
        let model = &mut self.model;
        let order = &self.order;
        let sgd = self.cfg.sgd;
        let (momentum_wt, momentum_bias) = (&mut self.momentum_wt, &mut self.momentum_bias);
        let mut loss_sum = 0.0f64;
        let mut done = 0u64;
        let mut failed = None;
        self.pool.install(|| {
            for (step, batch) in order.chunks(self.cfg.batch_size).enumerate() {
                let b = batch.len();
                let inv_b = 1.0 / b as f32;
                // Gather the batch rows as f32, in parallel (a pure copy).
                ws.x[..b * k]
                    .par_chunks_mut(k)
                    .zip(batch.par_iter())
                    .for_each(|(x, &r)| images.row_into_f32(r as usize, x));
                for (l, &r) in ws.labels.iter_mut().zip(batch) {
                    *l = all_labels.get(r as usize);
                }
                gemm::forward(
                    &ws.x[..b * k],
                    &model.wt,
                    &model.bias,
                    &mut ws.logits[..b * c],
                    b,
                    k,
                );
                softmax_ce::rows(
                    &ws.logits[..b * c],
                    &ws.labels[..b],
                    c,
                    inv_b,
                    &mut ws.g[..b * c],
                    &mut ws.losses[..b],
                );
                gemm::weight_grad(&ws.x[..b * k], &ws.g[..b * c], &mut ws.dwt, b, k, c);
                sgd::bias_grad(&ws.g[..b * c], &mut ws.db);
                let lr = schedule.lr(&sgd, step);
                sgd.apply(lr, &mut model.wt, &ws.dwt, 1.0, momentum_wt);
                sgd.apply(lr, &mut model.bias, &ws.db, 1.0, momentum_bias);
                let batch_loss: f64 = ws.losses[..b].iter().map(|&l| l as f64).sum();
                if !batch_loss.is_finite() {
                    failed = Some(step + 1);
                    return;
                }
                loss_sum += batch_loss;
                done += b as u64;
                progress(done);
            }
        });
        match failed {
            Some(step) => Err(TrainError::NonFinite { epoch, step }),
            None => Ok(loss_sum),
        }
    }
}

/// An epoch's place in the run, for the learning-rate schedule.
#[derive(Clone, Copy, Debug)]
struct SchedulePosition {
    /// 0-based.
    epoch: usize,
    /// Global index of the epoch's first step.
    first_step: usize,
    total_steps: usize,
}

impl SchedulePosition {
    /// The learning rate for step `step` (0-based, within the epoch).
    fn lr(&self, sgd: &Sgd, step: usize) -> f32 {
        sgd.lr_at(self.epoch, self.first_step + step, self.total_steps)
    }
}

/// Splits `0..n` into training and validation indices, both sorted. The
/// validation rows are a seeded random `fraction` of the set, drawn from a
/// stream of their own.
fn split_train_val(n: usize, fraction: f32, seed: u64) -> Result<(Vec<u32>, Vec<u32>), TrainError> {
    let n_val = (n as f64 * fraction as f64).round() as usize;
    if n_val == 0 {
        if fraction > 0.0 {
            return Err(TrainError::Config(format!(
                "validation split {fraction} of {n} samples holds out no sample"
            )));
        }
        return Ok(((0..n as u32).collect(), Vec::new()));
    }
    if n_val >= n {
        return Err(TrainError::Config(format!(
            "validation split {fraction} of {n} samples leaves nothing to train on"
        )));
    }
    let mut all: Vec<u32> = (0..n as u32).collect();
    all.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(
        seed ^ VAL_SPLIT_STREAM,
    ));
    let mut val = all[..n_val].to_vec();
    let mut train = all[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// Shared state of one fused epoch. The `SharedSlice`s follow the phase
/// protocol described in [`FusedEpoch::worker`].
struct FusedEpoch<'s> {
    path: KernelPath,
    images: &'s [u8],
    labels: &'s Labels,
    order: &'s [u32],
    k: usize,
    c: usize,
    batch_size: usize,
    sgd: Sgd,
    schedule: SchedulePosition,
    workers: usize,
    wt: SharedSlice<'s, f32>,
    bias: SharedSlice<'s, f32>,
    /// Empty without momentum.
    momentum_wt: SharedSlice<'s, f32>,
    momentum_bias: SharedSlice<'s, f32>,
    logits: SharedSlice<'s, f32>,
    g: SharedSlice<'s, f32>,
    losses: SharedSlice<'s, f32>,
    barrier: SpinBarrier,
    /// 1-based step whose loss was not finite; 0 while all is well.
    failed_step: AtomicUsize,
    progress: &'s (dyn Fn(u64) + Sync),
}

impl FusedEpoch<'_> {
    /// Worker `t`'s whole epoch. Returns the epoch's loss sum (meaningful
    /// on the leader only).
    ///
    /// Phase protocol, per step:
    /// * phase 1: everyone reads `wt` and `bias`; worker t writes only its
    ///   rows of `logits`, `g` and `losses`;
    /// * barrier;
    /// * phase 2: everyone reads `g`; worker t writes only its columns of
    ///   `wt`; the leader reads `losses` and writes `bias`;
    /// * barrier.
    fn worker(&self, t: usize) -> f64 {
        let (k, c, workers) = (self.k, self.c, self.workers);
        let blocks = k.div_ceil(COL_BLOCK);
        let my_blocks = split_range(blocks, workers, t);
        let my_cols = (my_blocks.start * COL_BLOCK).min(k)..(my_blocks.end * COL_BLOCK).min(k);
        let mut grad_block = vec![0.0f32; c * GRAD_COLS];
        let mut db = vec![0.0f32; c];
        let mut loss_sum = 0.0f64;
        let mut done = 0u64;

        for (step, batch) in self.order.chunks(self.batch_size).enumerate() {
            let b = batch.len();
            let inv_b = 1.0 / b as f32;

            // Phase 1: forward and softmax-CE for my rows.
            let my_rows = split_range(b, workers, t);
            {
                // SAFETY: phase 1 of the protocol above: wt and bias are
                // only read in this phase, and my row ranges of logits, g and
                // losses are disjoint from every other worker's.
                let (wt, bias, logits, g, losses) = unsafe {
                    (
                        self.wt.get(0..c * k),
                        self.bias.get(0..c),
                        self.logits.get_mut(my_rows.start * c..my_rows.end * c),
                        self.g.get_mut(my_rows.start * c..my_rows.end * c),
                        self.losses.get_mut(my_rows.clone()),
                    )
                };
                let rows = &batch[my_rows.clone()];
                fused::forward(self.path, self.images, k, rows, wt, bias, U8_SCALE, logits);
                let label = |i: usize| self.labels.get(rows[i] as usize) as usize;
                softmax_ce::block(self.path, logits, c, label, inv_b, g, losses);
            }
            self.barrier.wait();

            // Phase 2: weight gradient and SGD update for my columns.
            {
                let lr = self.schedule.lr(&self.sgd, step);
                let has_momentum = self.sgd.has_momentum();
                // SAFETY: phase 2: g is only read in this phase.
                let g = unsafe { self.g.get(0..b * c) };
                let mut col = my_cols.start;
                while col < my_cols.end {
                    let width = GRAD_COLS.min(my_cols.end - col);
                    let dw = &mut grad_block[..c * width];
                    fused::weight_grad(self.path, self.images, k, batch, g, c, col, width, dw);
                    for cls in 0..c {
                        let at = cls * k + col;
                        let span = if has_momentum { at..at + width } else { 0..0 };
                        // SAFETY: phase 2: columns my_cols of every row of
                        // wt (and of its momentum buffer) belong to this
                        // worker alone.
                        let (w, m) = unsafe {
                            (
                                self.wt.get_mut(at..at + width),
                                self.momentum_wt.get_mut(span),
                            )
                        };
                        // The kernel sums raw u8 pixels: 1/255 is applied here.
                        self.sgd
                            .apply(lr, w, &dw[cls * width..(cls + 1) * width], U8_SCALE, m);
                    }
                    col += width;
                }
                if t == LEADER {
                    // SAFETY: phase 2: only the leader touches bias and
                    // losses in this phase.
                    let span = if has_momentum { 0..c } else { 0..0 };
                    let (bias, losses, m) = unsafe {
                        (
                            self.bias.get_mut(0..c),
                            self.losses.get(0..b),
                            self.momentum_bias.get_mut(span),
                        )
                    };
                    sgd::bias_grad(g, &mut db);
                    self.sgd.apply(lr, bias, &db, 1.0, m);
                    let batch_loss: f64 = losses.iter().map(|&l| l as f64).sum();
                    if !batch_loss.is_finite() {
                        self.failed_step.store(step + 1, Ordering::Relaxed);
                    }
                    loss_sum += batch_loss;
                    done += b as u64;
                    if step % 16 == 15 || done as usize == self.order.len() {
                        (self.progress)(done);
                    }
                }
            }
            self.barrier.wait();
            // Every worker sees the same flag after the barrier, so all stop
            // at the same step.
            if self.failed_step.load(Ordering::Relaxed) != 0 {
                break;
            }
        }
        loss_sum
    }
}

/// One report per epoch: training stats and the test evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub stats: EpochStats,
    pub test: Evaluation,
    /// On the held-out part of the training set, with a validation split.
    pub validation: Option<Evaluation>,
    /// Wall time of the test evaluation.
    pub eval_seconds: f64,
}

/// Trains for `cfg.epochs` epochs, evaluating on the test split after each
/// one and passing the report to `on_epoch`.
pub fn train(
    data: &Dataset,
    cfg: TrainConfig,
    progress: &(dyn Fn(u64) + Sync),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<(Model, Vec<EpochReport>), TrainError> {
    let epochs = cfg.epochs;
    let mut trainer = Trainer::new(data, cfg)?;
    let mut reports = Vec::with_capacity(epochs);
    for _ in 0..epochs {
        let report = trainer.run_epoch(progress)?;
        on_epoch(&report);
        reports.push(report);
    }
    Ok((trainer.model, reports))
}
