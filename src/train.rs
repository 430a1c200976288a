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
//! On the fused path, `min(threads, CPUs)` persistent workers (hosted by
//! the rayon pool for the whole epoch; one worker runs on the calling
//! thread) share each step's work in two phases:
//!
//! 1. forward + softmax-CE, in chunks of [`ROW_CHUNK`] batch rows;
//! 2. weight gradient + update, in chunks of [`COL_CHUNK`] feature
//!    columns, each updating its columns of W in place; chunk 0 also
//!    updates b and sums the batch loss.
//!
//! Every chunk of the epoch has a number, in phase order. Workers claim the
//! next number with an atomic counter and run a chunk once every chunk of
//! the earlier phases is done ([`CompletionCounter`]). So the split adapts
//! to whichever worker is running: a worker that the OS deschedules holds
//! nobody up unless it is inside a chunk.
//!
//! Which worker runs a chunk never changes its result: each output element
//! is computed inside one chunk by a fixed sequence of operations (see
//! [`crate::kernels::fused`]), and every reduction runs in a fixed order.
//! So the final weights are bitwise identical for any thread count: same
//! seed, same binary, same kernel path, same bits.
//!
//! The gemm path runs the step on the calling thread with single
//! `matrixmultiply` calls (whose result does not depend on threads) and
//! spreads the row gather and softmax-CE over the pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use crate::parallel::{split_range, CachePadded, CompletionCounter, SharedSlice};

/// The default `--seed`.
pub const DEFAULT_SEED: u64 = 42;

/// Batch rows per forward chunk: a multiple of the AVX-512 kernel's 3-row
/// block, and few enough chunks per step (9 at batch 100) that claiming
/// them costs little.
pub const ROW_CHUNK: usize = 12;
/// Feature columns per gradient chunk: one 64-byte line of each u8 row,
/// and a C × 64 gradient block that stays in L1 until it is applied.
pub const COL_CHUNK: usize = 64;
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
    /// CPUs available. Off by default: an oversubscribed worker that the OS
    /// deschedules inside a chunk holds up the end of its phase, and
    /// waiting workers take CPU time from it. The determinism tests turn it
    /// on to exercise every worker count on any machine.
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
        let mut builder = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("train-{i}"));
        if let Some(cores) = pinning_plan(&cfg) {
            builder = builder.start_handler(move |i| {
                // Best effort: a refused request leaves the thread unpinned.
                if let Some(&core) = cores.get(i) {
                    let _ = core_affinity::set_for_current(core);
                }
            });
        }
        let pool = builder.build().map_err(|e| {
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
    ///
    /// After an error the trainer is spent: its model holds the diverged
    /// weights and its RNG has moved past the epoch's shuffle, so neither
    /// [`Self::state`] nor another epoch continues the run faithfully.
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
            tickets: CachePadded(AtomicUsize::new(0)),
            done: CompletionCounter::new(),
            loss_sum: AtomicU64::new(0f64.to_bits()),
            failed_step: AtomicUsize::new(0),
            progress,
        };
        if ctx.workers == 1 {
            ctx.worker();
        } else {
            // Pool threads beyond the worker count return at once.
            self.pool.broadcast(|b| {
                if b.index() < ctx.workers {
                    ctx.worker()
                }
            });
        }
        match ctx.failed_step.load(Ordering::Relaxed) {
            0 => Ok(f64::from_bits(ctx.loss_sum.load(Ordering::Relaxed))),
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

/// The CPU for each of the first `min(threads, CPUs)` pool threads (the
/// ones that run the fused workers), when those workers occupy every CPU
/// this process may use and `IDX_SOFTMAX_NO_PIN` is unset. Threads beyond
/// the CPU count stay unpinned. With fewer workers than CPUs nothing is
/// pinned: concurrent runs would otherwise all pile onto the first CPUs.
///
/// Why: an epoch lasts ~15 ms, shorter than the OS takes to notice that
/// two freshly woken workers share one CPU while another sits idle; on the
/// 2-CPU development VM about half of all single-epoch runs then ran as if
/// on one core. Pinning places them once. Results do not depend on it.
fn pinning_plan(cfg: &TrainConfig) -> Option<Vec<core_affinity::CoreId>> {
    if cfg.threads < 2 || std::env::var_os(NO_PIN_ENV).is_some() {
        return None;
    }
    let cores = core_affinity::get_core_ids()?;
    (cores.len() >= 2 && cfg.threads >= cores.len()).then_some(cores)
}

/// Environment variable that turns CPU pinning of the pool threads off.
pub const NO_PIN_ENV: &str = "IDX_SOFTMAX_NO_PIN";

/// Splits `0..n` into training and validation indices, both sorted. The
/// validation rows are a seeded random `fraction` of the set, drawn from a
/// stream of their own. Public so that `eval --split val` draws the same
/// rows again from a checkpoint's seed.
pub fn split_train_val(
    n: usize,
    fraction: f32,
    seed: u64,
) -> Result<(Vec<u32>, Vec<u32>), TrainError> {
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
///
/// Phases are numbered through the epoch: step s has phase 2s (forward,
/// [`FusedEpoch::forward_chunk`]) and 2s + 1 (gradient,
/// [`FusedEpoch::gradient_chunk`]).
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
    /// The next chunk number to claim (on its own cache lines: every claim
    /// writes it).
    tickets: CachePadded<AtomicUsize>,
    /// Chunks finished.
    done: CompletionCounter,
    /// The epoch's loss sum (f64 bits), updated by gradient chunk 0 of each
    /// step: the phase order makes those updates sequential.
    loss_sum: AtomicU64,
    /// 1-based step whose loss was not finite; 0 while all is well.
    failed_step: AtomicUsize,
    progress: &'s (dyn Fn(u64) + Sync),
}

impl FusedEpoch<'_> {
    fn steps(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// The rows of step `step`'s batch.
    fn batch(&self, step: usize) -> &[u32] {
        let start = step * self.batch_size;
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// Number of chunks in phase `phase` (even: forward, odd: gradient).
    fn chunks(&self, phase: usize) -> usize {
        if phase.is_multiple_of(2) {
            self.batch(phase / 2).len().div_ceil(ROW_CHUNK)
        } else {
            self.k.div_ceil(COL_CHUNK)
        }
    }

    /// One worker's epoch: claim chunk numbers until the epoch is done.
    ///
    /// Phase protocol (what makes the `SharedSlice` accesses sound):
    /// * a chunk runs only after every chunk of the earlier phases has
    ///   finished ([`CompletionCounter::wait_for`]), so consecutive phases
    ///   never overlap, and each phase sees all writes of the earlier ones;
    /// * forward phase: chunks read `wt` and `bias`; chunk i writes only
    ///   rows `i·ROW_CHUNK ..` of `logits`, `g` and `losses`;
    /// * gradient phase: chunks read `g`; chunk j writes only columns
    ///   `j·COL_CHUNK ..` of `wt` (and its momentum buffer); chunk 0 alone
    ///   reads `losses` and writes `bias` (and its momentum buffer).
    fn worker(&self) {
        let c = self.c;
        let mut grad_block = vec![0.0f32; c * COL_CHUNK];
        let mut db = vec![0.0f32; c];
        let phases = 2 * self.steps();
        // A panic in a chunk must not leave the other workers waiting for
        // it forever: they give up, and `broadcast` re-raises the panic.
        let _abandon = self.done.abandon_on_panic();
        // This worker's view of the phase that holds its latest ticket.
        let (mut phase, mut phase_start, mut phase_len) = (0, 0, self.chunks(0));
        loop {
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            while ticket >= phase_start + phase_len {
                phase += 1;
                if phase >= phases {
                    return;
                }
                phase_start += phase_len;
                phase_len = self.chunks(phase);
            }
            if !self.done.wait_for(phase_start) {
                // Abandoned: another worker panicked, or the loss diverged.
                return;
            }
            let chunk = ticket - phase_start;
            if phase.is_multiple_of(2) {
                self.forward_chunk(phase / 2, chunk);
            } else {
                self.gradient_chunk(phase / 2, chunk, &mut grad_block, &mut db);
            }
            self.done.complete(phase_start + phase_len);
        }
    }

    /// Forward pass and softmax-CE for rows `chunk·ROW_CHUNK ..` of step
    /// `step`'s batch.
    fn forward_chunk(&self, step: usize, chunk: usize) {
        let (k, c) = (self.k, self.c);
        let batch = self.batch(step);
        let inv_b = 1.0 / batch.len() as f32;
        let span = chunk * ROW_CHUNK..((chunk + 1) * ROW_CHUNK).min(batch.len());
        // SAFETY: forward phase of the protocol on `worker`: wt and bias are
        // only read in this phase, and this chunk's rows of logits, g and
        // losses belong to it alone.
        let (wt, bias, logits, g, losses) = unsafe {
            (
                self.wt.get(0..c * k),
                self.bias.get(0..c),
                self.logits.get_mut(span.start * c..span.end * c),
                self.g.get_mut(span.start * c..span.end * c),
                self.losses.get_mut(span.clone()),
            )
        };
        let rows = &batch[span];
        fused::forward(self.path, self.images, k, rows, wt, bias, U8_SCALE, logits);
        let label = |i: usize| self.labels.get(rows[i] as usize) as usize;
        softmax_ce::block(self.path, logits, c, label, inv_b, g, losses);
    }

    /// Weight gradient and SGD update for columns `chunk·COL_CHUNK ..`;
    /// chunk 0 also updates the bias and sums the batch loss.
    fn gradient_chunk(&self, step: usize, chunk: usize, grad_block: &mut [f32], db: &mut [f32]) {
        let (k, c) = (self.k, self.c);
        let batch = self.batch(step);
        let b = batch.len();
        let lr = self.schedule.lr(&self.sgd, step);
        let has_momentum = self.sgd.has_momentum();
        let cols = chunk * COL_CHUNK..((chunk + 1) * COL_CHUNK).min(k);
        let width = cols.len();

        // Shuffled rows come from DRAM: start loading a share of the next
        // batch now, while this phase works on rows already in cache.
        if step + 1 < self.steps() {
            let next = self.batch(step + 1);
            let share = split_range(next.len(), self.chunks(2 * step + 1), chunk);
            fused::prefetch_rows(self.images, k, &next[share]);
        }

        // SAFETY: gradient phase: g is only read in this phase.
        let g = unsafe { self.g.get(0..b * c) };
        let dw = &mut grad_block[..c * width];
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
        for cls in 0..c {
            let at = cls * k + cols.start;
            let mspan = if has_momentum { at..at + width } else { 0..0 };
            // SAFETY: gradient phase: these columns of wt (and of its
            // momentum buffer) belong to this chunk alone.
            let (w, m) = unsafe {
                (
                    self.wt.get_mut(at..at + width),
                    self.momentum_wt.get_mut(mspan),
                )
            };
            // The kernel sums raw u8 pixels: 1/255 is applied here.
            self.sgd
                .apply(lr, w, &dw[cls * width..(cls + 1) * width], U8_SCALE, m);
        }

        if chunk == 0 {
            let mspan = if has_momentum { 0..c } else { 0..0 };
            // SAFETY: gradient phase: only chunk 0 touches bias, its
            // momentum buffer and losses.
            let (bias, losses, m) = unsafe {
                (
                    self.bias.get_mut(0..c),
                    self.losses.get(0..b),
                    self.momentum_bias.get_mut(mspan),
                )
            };
            sgd::bias_grad(g, db);
            self.sgd.apply(lr, bias, db, 1.0, m);
            let batch_loss: f64 = losses.iter().map(|&l| l as f64).sum();
            if !batch_loss.is_finite() {
                // Stop here: the chunks of this phase still running finish,
                // and every worker returns instead of starting the next one.
                self.failed_step.store(step + 1, Ordering::SeqCst);
                self.done.abandon();
                return;
            }
            // Sequential across steps (phase order), so a plain
            // load-add-store is exact and ordered.
            let sum = f64::from_bits(self.loss_sum.load(Ordering::Relaxed)) + batch_loss;
            self.loss_sum.store(sum.to_bits(), Ordering::Relaxed);
            let done = ((step + 1) * self.batch_size).min(self.order.len()) as u64;
            if step % 16 == 15 || step + 1 == self.steps() {
                (self.progress)(done);
            }
        }
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
    let mut reports = Vec::with_capacity(epochs.min(1024));
    for _ in 0..epochs {
        let report = trainer.run_epoch(progress)?;
        on_epoch(&report);
        reports.push(report);
    }
    Ok((trainer.model, reports))
}
