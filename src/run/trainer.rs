//! The training loop: minibatch SGD on softmax cross-entropy, for any
//! network ([`crate::nn::Network`]).
//!
//! One epoch is: reshuffle the training order (seeded Fisher–Yates), then
//! for each batch of B rows:
//!
//! ```text
//! forward      A_l = relu(A_{l−1}·W_lᵀ + b_l), logits = A_L (no ReLU)
//! loss         ℓ_r = −log softmax(logits_r)[y_r]        per row
//! backward     G_L = (softmax(logits) − onehot(y)) / B
//!              dW_l = G_lᵀ·A_{l−1},  db_l = Σ_rows G_l
//!              G_{l−1} = (G_l·W_l) ⊙ [A_{l−1} > 0]
//! update       W −= lr·dW,  b −= lr·db   (plus momentum, decay, schedule)
//! ```
//!
//! Softmax regression is the case L = 1, the notebook's model.
//!
//! # Threads and determinism
//!
//! Each step is a plan of phases and chunks ([`crate::engine`]):
//! softmax regression on u8 samples runs the fused SIMD kernels
//! ([`crate::engine::fused_step`]), everything else the layer plan
//! ([`crate::engine::layer_step`]). `min(threads, CPUs)` persistent workers
//! share the chunks ([`crate::engine::phased`]). Which worker runs a chunk
//! never changes its result, and every reduction runs in a fixed order, so
//! the final weights are bitwise identical for any thread count: same
//! seed, same binary, same kernel path, same bits.

use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use std::sync::atomic::AtomicBool;

use super::config::TrainConfig;
use super::spec::SpecError;
use crate::data::augment::{self, Augment, Augmenter};
use crate::data::Samples;
use crate::engine::augment_step::Augmented;
use crate::engine::fused_step::{FusedBuffers, FusedStep};
use crate::engine::layer_step::{LayerBuffers, LayerStep};
use crate::engine::parallel::SharedSlice;
use crate::engine::phased::StepPlan;
use crate::engine::placement::Placement;
use crate::engine::{phased, Augmentation, EpochCtx, SchedulePosition};
use crate::kernels::KernelPath;
use crate::metrics::{self, Evaluation};
use crate::nn::Network;
use crate::nn::NetworkError;
use crate::setting::{Naming, Setting};

/// Mixed into the seed for the validation split's own random stream, so
/// the split does not shift the initialisation or the shuffles.
const VAL_SPLIT_STREAM: u64 = 0x7661_6c5f_7370_6c74; // "val_splt"

/// Why training stopped. [`TrainError::message`] words it with a front
/// end's names for the settings.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainError {
    /// Epoch and step are 1-based.
    NonFinite {
        epoch: usize,
        step: usize,
    },
    /// The interrupt flag was raised during `epoch` (1-based).
    Interrupted {
        epoch: usize,
    },
    Spec(SpecError),
    Network(NetworkError),
    /// A validation split that holds out nothing, or everything.
    Split {
        fraction: f32,
        samples: usize,
        leaves_nothing: bool,
    },
    /// The evaluation set does not fit the training set, or a state to
    /// resume does not fit the run.
    Mismatch(String),
    /// The thread pool could not start.
    Threads(String),
}

impl TrainError {
    /// The message, one line, naming settings by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        match self {
            Self::NonFinite { epoch, step } => format!(
                "non-finite loss at epoch {epoch}, step {step} (try a smaller {}; check the data for NaN)",
                name(Setting::Lr)
            ),
            Self::Interrupted { epoch } => format!("interrupted during epoch {epoch}"),
            Self::Spec(e) => e.message(name),
            Self::Network(e) => e.to_string(),
            Self::Split {
                fraction,
                samples,
                leaves_nothing,
            } => format!(
                "{} {fraction} of {samples} samples {}",
                name(Setting::ValSplit),
                if *leaves_nothing {
                    "leaves nothing to train on"
                } else {
                    "holds out no sample"
                }
            ),
            Self::Mismatch(m) | Self::Threads(m) => m.clone(),
        }
    }
}

crate::setting::worded_error!(TrainError);

impl From<SpecError> for TrainError {
    fn from(e: SpecError) -> Self {
        Self::Spec(e)
    }
}

impl From<NetworkError> for TrainError {
    fn from(e: NetworkError) -> Self {
        Self::Network(e)
    }
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
    /// Times a worker lost its CPU for long enough to be benched (see
    /// [`crate::engine::bench`](mod@crate::engine::bench)): a sign of other work on the machine.
    pub benchings: u32,
}

impl EpochStats {
    pub fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }
}

/// Everything a checkpoint must hold to continue a run bit for bit: the
/// network, the momentum buffer and how many epochs are done. The RNG
/// state is not stored: it is a function of the seed and the epochs done,
/// and [`Trainer::resume`] replays it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub network: Network,
    /// Laid out as the network's parameters; empty without momentum.
    pub momentum: Vec<f32>,
    pub epochs_done: usize,
}

/// One report per epoch: training stats and the evaluations.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    pub stats: EpochStats,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
    /// On the evaluation set the trainer was given, if any.
    pub test: Option<Evaluation>,
    /// On the held-out part of the training set, with a validation split.
    pub validation: Option<Evaluation>,
    /// On the rows trained on, when asked for (the training curves need
    /// it; see [`super::Run`]).
    pub train: Option<Evaluation>,
    /// Wall time of the evaluations.
    pub eval_seconds: f64,
    /// Set when the training loss shows the run has diverged
    /// ([`crate::metrics::diverged`]), on the first epoch it does.
    pub warning: Option<super::RunWarning>,
}

impl EpochReport {
    /// The epoch as a JSON object: the `per_epoch` entries of a run's
    /// summary, the lines of its metrics file, Python's per-epoch
    /// callback.
    pub fn to_json(&self) -> serde_json::Value {
        use super::config::f32_as_printed;
        let mut v = serde_json::json!({
            "epoch": self.stats.epoch,
            "train_loss": self.stats.train_loss,
            "lr": f32_as_printed(self.lr),
            "seconds": self.stats.seconds,
            "eval_seconds": self.eval_seconds,
            "samples_per_second": self.stats.samples_per_second(),
            "benchings": self.stats.benchings,
        });
        for (key, ev) in [
            ("test", &self.test),
            ("val", &self.validation),
            ("train", &self.train),
        ] {
            if let Some(ev) = ev {
                v[format!("{key}_loss")] = serde_json::json!(ev.loss);
                v[format!("{key}_accuracy")] = serde_json::json!(ev.accuracy);
            }
        }
        v
    }
}

/// A network being trained on a set of samples.
pub struct Trainer<'a> {
    train: &'a Samples<'a>,
    test: Option<&'a Samples<'a>>,
    cfg: TrainConfig,
    kernel: KernelPath,
    pool: rayon::ThreadPool,
    placement: Arc<Placement>,
    network: Network,
    momentum: Vec<f32>,
    rng: Xoshiro256PlusPlus,
    /// Training-sample indices, reshuffled each epoch.
    order: Vec<u32>,
    /// Held-out validation indices, sorted.
    val_rows: Vec<u32>,
    epochs_done: usize,
    /// Raised by another thread to stop the current epoch.
    stop: Option<&'a AtomicBool>,
    /// The deformations of the training samples, with augmentation.
    augmenter: Option<Augmenter>,
}

impl<'a> Trainer<'a> {
    /// Checks the configuration against the samples, starts the pool and
    /// initialises the network from the seed. `test`, if given, is
    /// evaluated after every epoch by [`Trainer::run_epoch`].
    pub fn new(
        train: &'a Samples<'a>,
        test: Option<&'a Samples<'a>>,
        cfg: TrainConfig,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        let kernel = cfg.kernel_path()?;
        let (k, c) = (train.features(), train.classes());
        if let Some(t) = test {
            if t.features() != k || t.classes() != c {
                return Err(TrainError::Mismatch(format!(
                    "the evaluation set has {} features × {} classes, the training set {k} × {c}",
                    t.features(),
                    t.classes()
                )));
            }
        }
        let arch = cfg.architecture(train.sample_shape(), c);
        let augmenter = match cfg.augment {
            Augment::None => None,
            a => {
                if train.as_u8().is_none() {
                    return Err(SpecError::AugmentNeedsU8.into());
                }
                let shape = augment::shape_of(train.sample_shape()).map_err(SpecError::from)?;
                Some(Augmenter::new(a, shape).map_err(SpecError::from)?)
            }
        };
        let (order, val_rows) = split_train_val(train.len(), cfg.val_split, cfg.seed)?;
        let placement = Arc::new(Placement::plan(cfg.threads, cfg.workers()));
        let pool = build_pool(&cfg, &placement)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let network = Network::init_arch(&arch, &mut rng)?;
        let momentum = if cfg.sgd.has_momentum() {
            vec![0.0; network.params().len()]
        } else {
            Vec::new()
        };
        Ok(Self {
            train,
            test,
            cfg,
            kernel,
            pool,
            placement,
            network,
            momentum,
            rng,
            order,
            val_rows,
            epochs_done: 0,
            stop: None,
            augmenter,
        })
    }

    /// Continues a run from `state`: the network and momentum come from the
    /// state, and the RNG is replayed (initialisation draws, then one
    /// shuffle per epoch done), so the next epoch is exactly the one an
    /// uninterrupted run would train.
    pub fn resume(
        train: &'a Samples<'a>,
        test: Option<&'a Samples<'a>>,
        cfg: TrainConfig,
        state: TrainState,
    ) -> Result<Self, TrainError> {
        let mut trainer = Self::new(train, test, cfg)?;
        if state.network.arch() != trainer.network.arch() {
            return Err(TrainError::Mismatch(format!(
                "the checkpoint's network is {}, but this run builds {}",
                state.network.describe(),
                trainer.network.describe()
            )));
        }
        if state.epochs_done >= trainer.cfg.epochs {
            return Err(TrainError::Spec(SpecError::AlreadyTrained {
                done: state.epochs_done,
                source: "the checkpoint".into(),
            }));
        }
        if trainer.cfg.sgd.has_momentum() && !state.momentum.is_empty() {
            if state.momentum.len() != state.network.params().len() {
                return Err(TrainError::Mismatch(
                    "the checkpoint's momentum buffers do not match its network".into(),
                ));
            }
            trainer.momentum = state.momentum;
        }
        trainer.network = state.network;
        for _ in 0..state.epochs_done {
            super::shuffle::shuffle(&mut trainer.order, &mut trainer.rng);
        }
        trainer.epochs_done = state.epochs_done;
        Ok(trainer)
    }

    /// A snapshot to save as a checkpoint.
    pub fn state(&self) -> TrainState {
        TrainState {
            network: self.network.clone(),
            momentum: self.momentum.clone(),
            epochs_done: self.epochs_done,
        }
    }

    /// Makes `flag` stop the epoch being trained (at the end of a step)
    /// when another thread raises it; the epoch then fails with
    /// [`TrainError::Interrupted`] and the trainer is spent.
    pub fn set_stop_flag(&mut self, flag: &'a AtomicBool) {
        self.stop = Some(flag);
    }

    /// The deformations of the training samples, with augmentation.
    pub fn augmenter(&self) -> Option<&Augmenter> {
        self.augmenter.as_ref()
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Number of samples trained on per epoch (the training set less the
    /// validation split).
    pub fn train_samples(&self) -> usize {
        self.order.len()
    }

    /// The held-out validation rows of the training samples (sorted).
    pub fn validation_rows(&self) -> &[u32] {
        &self.val_rows
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Gives up the trained network.
    pub fn into_network(self) -> Network {
        self.network
    }

    /// The kernel path that runs ([`TrainConfig::kernel_path`]).
    pub fn kernel(&self) -> KernelPath {
        self.kernel
    }

    /// The number of workers a step runs on.
    pub fn workers(&self) -> usize {
        self.cfg.workers()
    }

    /// Evaluates the current network on `samples`, on the trainer's pool
    /// and kernel path (so the logits are the training step's).
    pub fn evaluate(&self, samples: &Samples<'_>) -> Evaluation {
        let path = self.kernel;
        self.pool
            .install(|| metrics::evaluate(&self.network, samples, path))
    }

    /// Evaluates on the held-out validation rows, if there are any.
    pub fn evaluate_validation(&self) -> Option<Evaluation> {
        if self.val_rows.is_empty() {
            return None;
        }
        let path = self.kernel;
        Some(
            self.pool.install(|| {
                metrics::evaluate_rows(&self.network, self.train, path, &self.val_rows)
            }),
        )
    }

    /// Runs one epoch. `progress(samples_done)` is called now and then from
    /// a worker thread.
    ///
    /// After an error the trainer is spent: its network holds the diverged
    /// weights and its RNG has moved past the epoch's shuffle, so neither
    /// [`Self::state`] nor another epoch continues the run faithfully.
    pub fn train_epoch(
        &mut self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<EpochStats, TrainError> {
        let epoch = self.epochs_done + 1;
        let start = Instant::now();
        super::shuffle::shuffle(&mut self.order, &mut self.rng);
        let steps_per_epoch = self.order.len().div_ceil(self.cfg.batch_size);
        let schedule = SchedulePosition {
            epoch: epoch - 1,
            first_step: (epoch - 1) * steps_per_epoch,
            total_steps: self.cfg.epochs * steps_per_epoch,
        };
        let (k, c) = (self.network.features(), self.network.classes());
        let batch = self.cfg.batch_size.min(self.order.len());
        let workers = self.cfg.workers();
        // The fused plan serves softmax regression on u8 samples; the gemm
        // plan everything else, and needs the layout (the values live in
        // the buffer below).
        let fused_softmax = self.kernel.is_fused() && self.network.is_linear();
        let layout = (!fused_softmax).then(|| self.network.clone());
        // With augmentation: the step's deformed rows, and their positions.
        let mut aug_rows = vec![
            0u8;
            if self.augmenter.is_some() {
                batch * k
            } else {
                0
            }
        ];
        let positions: Vec<u32> = (0..batch as u32).collect();
        let mut ctx = EpochCtx::new(
            self.train,
            &self.order,
            self.cfg.batch_size,
            self.cfg.sgd,
            schedule,
            self.network.params_mut().data_mut(),
            &mut self.momentum,
            progress,
            self.stop,
        );
        if let Some(augmenter) = &self.augmenter {
            ctx = ctx.with_augmentation(Augmentation {
                augmenter,
                seed: self.cfg.seed,
                epoch: (epoch - 1) as u64,
                rows: SharedSlice::new(&mut aug_rows),
                positions: &positions,
            });
        }
        let (pool, placement) = (&self.pool, &self.placement);
        let go = |plan: &dyn RunPlan| plan.run_on(workers, pool, placement);
        let run = match &layout {
            None => {
                let mut bufs = FusedBuffers::new(batch, k, c);
                let plan = FusedStep::new(&ctx, self.kernel, k, c, &mut bufs);
                match ctx.augmentation() {
                    Some(_) => go(&Augmented::new(&ctx, plan)),
                    None => go(&plan),
                }
            }
            Some(layout) => {
                let mut bufs = LayerBuffers::new(batch, layout);
                let plan = LayerStep::new(&ctx, layout, self.kernel, &mut bufs);
                match ctx.augmentation() {
                    Some(_) => go(&Augmented::new(&ctx, plan)),
                    None => go(&plan),
                }
            }
        };
        // An abandoned epoch shows in the outcome below (a non-finite loss).
        let loss_sum = ctx.outcome().map_err(|step| match step {
            crate::engine::INTERRUPTED => TrainError::Interrupted { epoch },
            step => TrainError::NonFinite { epoch, step },
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let n = self.order.len();
        if !self.network.params().is_finite() {
            return Err(TrainError::NonFinite {
                epoch,
                step: steps_per_epoch,
            });
        }
        self.epochs_done = epoch;
        Ok(EpochStats {
            epoch,
            train_loss: loss_sum / n as f64,
            seconds,
            samples: n,
            benchings: run.benchings,
        })
    }

    /// One epoch of training followed by the evaluations (the evaluation
    /// set's and, with a split, the validation one): what a training run
    /// reports per epoch.
    pub fn run_epoch(
        &mut self,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<EpochReport, TrainError> {
        let stats = self.train_epoch(progress)?;
        let eval_start = Instant::now();
        let test = self.test.map(|t| self.evaluate(t));
        let validation = self.evaluate_validation();
        let eval_seconds = eval_start.elapsed().as_secs_f64();
        Ok(EpochReport {
            stats,
            lr: self.lr_at_end(stats.epoch),
            test,
            validation,
            train: None,
            eval_seconds,
            warning: None,
        })
    }

    /// The learning rate of the last step of `epoch` (1-based).
    pub fn lr_at_end(&self, epoch: usize) -> f32 {
        let steps = self.order.len().div_ceil(self.cfg.batch_size);
        self.cfg
            .sgd
            .lr_at(epoch - 1, epoch * steps - 1, self.cfg.epochs * steps)
    }
}

/// A step plan, run by the scheduler: lets the trainer pick a plan (and
/// whether it is augmented) at run time and run whichever it picked.
trait RunPlan {
    fn run_on(
        &self,
        workers: usize,
        pool: &rayon::ThreadPool,
        placement: &Placement,
    ) -> phased::Outcome;
}

impl<P: StepPlan> RunPlan for P {
    fn run_on(
        &self,
        workers: usize,
        pool: &rayon::ThreadPool,
        placement: &Placement,
    ) -> phased::Outcome {
        phased::run(self, workers, pool, placement)
    }
}

/// The thread pool of a run, its threads placed per `placement`.
fn build_pool(
    cfg: &TrainConfig,
    placement: &Arc<Placement>,
) -> Result<rayon::ThreadPool, TrainError> {
    let placement = placement.clone();
    rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .thread_name(|i| format!("train-{i}"))
        .start_handler(move |i| placement.start_thread(i))
        .build()
        .map_err(|e| TrainError::Threads(format!("cannot start {} threads: {e}", cfg.threads)))
}

/// Trains for `cfg.epochs` epochs, evaluating on `test` (if given) after
/// each one and passing the report to `on_epoch`.
pub fn train(
    samples: &Samples<'_>,
    test: Option<&Samples<'_>>,
    cfg: TrainConfig,
    progress: &(dyn Fn(u64) + Sync),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<(Network, Vec<EpochReport>), TrainError> {
    let epochs = cfg.epochs;
    let mut trainer = Trainer::new(samples, test, cfg)?;
    let mut reports = Vec::with_capacity(epochs.min(1024));
    for _ in 0..epochs {
        let report = trainer.run_epoch(progress)?;
        on_epoch(&report);
        reports.push(report);
    }
    Ok((trainer.into_network(), reports))
}

/// Splits `0..n` into training and validation indices, both sorted. The
/// validation rows are a seeded random `fraction` of the set, drawn from a
/// stream of their own.
pub fn split_train_val(
    n: usize,
    fraction: f32,
    seed: u64,
) -> Result<(Vec<u32>, Vec<u32>), TrainError> {
    let n_val = (n as f64 * fraction as f64).round() as usize;
    if n_val == 0 {
        if fraction > 0.0 {
            return Err(TrainError::Split {
                fraction,
                samples: n,
                leaves_nothing: false,
            });
        }
        return Ok(((0..n as u32).collect(), Vec::new()));
    }
    if n_val >= n {
        return Err(TrainError::Split {
            fraction,
            samples: n,
            leaves_nothing: true,
        });
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
