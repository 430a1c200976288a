//! A training run: the one way in for every front end.
//!
//! ```text
//! RunSpec ──resolve──▶ TrainConfig ──Run::new──▶ Run ──train──▶ reports, files, summary
//!    ▲  (defaults, or a Resume's record)        (data, outputs)
//!  CLI flags, Python parameters
//! ```
//!
//! * [`spec`]: the user's choices ([`RunSpec`]) and every rule about them;
//!   [`RunSpec::resolve`] fills in the defaults ([`TrainConfig::default`],
//!   the one place they are stated) or a checkpoint's record.
//! * [`Run`]: starts or resumes ([`Resume`]), trains every remaining epoch
//!   (each epoch's [`EpochReport`] goes to the caller), rewrites the
//!   checkpoint, the metrics file and the curves after each one,
//!   atomically, and gives the run's record ([`Run::record`]) and summary
//!   ([`Run::summary`]).
//! * [`record`]: what a checkpoint records about its run, both ways.
//! * The [`Trainer`] underneath runs one epoch at a time (shuffles, steps,
//!   evaluations); [`train`] is its shortest use.
//!
//! The CLI turns flags into a spec and prints; Python turns arrays and
//! parameters into one and calls back. Neither drives epochs, builds the
//! record, or states a default.

mod config;
mod metrics_log;
pub mod record;
mod shuffle;
pub mod spec;
mod trainer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;

use crate::data::Samples;
use crate::image::Size;
use crate::kernels::KernelPath;
use crate::metrics;
use crate::model::SavedModel;
use crate::nn::Network;
use crate::plot::{self, EpochPoint};
use crate::setting::{Naming, Setting};

pub use config::{
    available_cpus, f32_as_printed, TrainConfig, CNN_CONV, CNN_HIDDEN, CNN_KERNEL, DEFAULT_SEED,
    MAX_CLASSES, MAX_THREADS, MLP_HIDDEN,
};
pub use metrics_log::MetricsLog;
pub use record::{RecordError, Results, RunMeta};
pub use spec::{Recorded, Resolved, RunSpec, SpecError};
pub use trainer::{
    split_train_val, train, EpochReport, EpochStats, TrainError, TrainState, Trainer,
};

/// A run to continue: what a checkpoint (or a fitted model) recorded.
#[derive(Clone, Debug)]
pub struct Resume {
    /// The run's record; `None` for another tool's network, whose weights
    /// then only start the run (nothing to check them against).
    pub meta: Option<RunMeta>,
    pub state: TrainState,
    /// Names the source in messages: a checkpoint's path, "the fitted
    /// model".
    pub source: String,
}

impl Resume {
    /// The run a model file records (see [`SavedModel::run`]).
    pub fn from_model(model: &SavedModel) -> Result<Self, RecordError> {
        let (meta, state) = model.run()?;
        Ok(Self {
            meta: Some(meta),
            state,
            source: model.path().display().to_string(),
        })
    }

    /// What [`RunSpec::resolve`] checks a resumed spec against (nothing
    /// without a record).
    pub fn recorded(&self) -> Option<Recorded<'_>> {
        self.meta.as_ref().map(|meta| Recorded {
            config: &meta.config,
            classes: meta.classes,
            source: &self.source,
            epochs_done: self.state.epochs_done,
        })
    }
}

/// Where a run's samples came from, for its record.
#[derive(Clone, Debug, Default)]
pub struct DataInfo {
    /// The data directory (as given; recorded absolute). `None` for
    /// samples that are not from files.
    pub dir: Option<PathBuf>,
    /// The training images' file, named in messages.
    pub train_file: Option<PathBuf>,
    /// The class names, recorded for `predict` (empty: unnamed).
    pub class_names: Vec<String>,
}

/// The files a run writes. The checkpoint, the metrics file and the curves
/// are rewritten after every epoch (atomically: each always describes the
/// last finished epoch); the weights picture once, at the end.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub save: Option<PathBuf>,
    pub metrics_json: Option<PathBuf>,
    pub curves: Option<PathBuf>,
    pub weights_png: Option<PathBuf>,
    /// A picture of a few training samples next to their deformations,
    /// written before training.
    pub augmented: Option<PathBuf>,
}

/// Something a run reports without stopping.
#[derive(Clone, Debug, PartialEq)]
pub enum RunWarning {
    /// The training loss at `epoch` shows the run has diverged.
    Diverged {
        epoch: usize,
        loss: f64,
        classes: usize,
    },
    /// A resumed cosine schedule spans a new total ([`spec::resume_warning`]).
    Schedule(String),
}

impl RunWarning {
    /// The warning, one line, naming settings by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        match self {
            Self::Diverged {
                epoch,
                loss,
                classes,
            } => format!(
                "epoch {epoch}: the training loss {loss:.4e} is over {} x ln({classes}) = {:.1}, far above where training starts: the run has diverged; try a smaller {}",
                metrics::DIVERGENCE_FACTOR,
                metrics::DIVERGENCE_FACTOR * (*classes as f64).ln(),
                name(Setting::Lr)
            ),
            Self::Schedule(m) => m.clone(),
        }
    }
}

/// Why a run could not start or go on.
#[derive(Debug)]
pub enum RunError {
    Spec(SpecError),
    Train(TrainError),
    Record(RecordError),
    /// Resuming on data other than the checkpoint's (as far as shapes tell).
    OtherData(String),
    /// An output file could not be written.
    Output {
        path: PathBuf,
        msg: String,
    },
}

impl RunError {
    /// The message, one line, naming settings by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        match self {
            Self::Spec(e) => e.message(name),
            Self::Train(e) => e.message(name),
            Self::Record(e) => e.message(name),
            Self::OtherData(m) => m.clone(),
            Self::Output { path, msg } => format!("{}: {msg}", path.display()),
        }
    }
}

crate::setting::worded_error!(RunError);

impl From<SpecError> for RunError {
    fn from(e: SpecError) -> Self {
        Self::Spec(e)
    }
}

impl From<TrainError> for RunError {
    fn from(e: TrainError) -> Self {
        Self::Train(e)
    }
}

impl From<RecordError> for RunError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

fn output_error(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Output {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

/// Refuses, before any work, a picture asked for in a format it cannot be
/// written in (decided by the extension: [`plot::format_of`]).
fn check_formats(outputs: &Outputs) -> Result<(), RunError> {
    let pictures = [
        (&outputs.curves, plot::CHART_FORMATS),
        (&outputs.weights_png, plot::WEIGHTS_FORMATS),
    ];
    for (path, formats) in pictures {
        if let Some(p) = path {
            plot::format_of(p, formats).map_err(|e| output_error(p, e.reason()))?;
        }
    }
    Ok(())
}

/// A training run on a set of samples.
pub struct Run<'a> {
    trainer: Trainer<'a>,
    train_set: &'a Samples<'a>,
    /// The record a checkpoint gets (`epochs_done` kept current).
    meta: RunMeta,
    /// Whether `meta.input_background` has been measured (it reads 2000
    /// images: only a run that records itself pays for it).
    background_measured: bool,
    data: DataInfo,
    outputs: Outputs,
    /// Extra metadata pairs for the checkpoint (the run's own keys win).
    extra_metadata: BTreeMap<String, String>,
    log: MetricsLog,
    curve: Vec<EpochPoint>,
    /// The rows trained on, for the curves' training accuracy.
    curve_rows: Option<Vec<u32>>,
    reports: Vec<EpochReport>,
    start_epoch: usize,
    resumed_from: Option<String>,
    warnings: Vec<RunWarning>,
    results: Option<Results>,
    picture: Option<Size>,
    /// The augmentation picture's size, when one was drawn.
    augmented_picture: Option<Size>,
    /// Epochs to train per call of [`Run::train`]; all when `None`.
    limit: Option<usize>,
}

impl<'a> Run<'a> {
    /// Starts a run of `config` on `train` (evaluated on `test`, if given,
    /// after every epoch), or continues `resume`'s. Checks everything
    /// before any work: the configuration, the network, and when resuming
    /// that the data has the checkpoint's shape and that the kernel path
    /// that will run is the one that trained it (another rounds
    /// differently).
    pub fn new(
        config: TrainConfig,
        train: &'a Samples<'a>,
        test: Option<&'a Samples<'a>>,
        data: DataInfo,
        resume: Option<Resume>,
        outputs: Outputs,
    ) -> Result<Self, RunError> {
        check_formats(&outputs)?;
        let kernel = config.kernel_path()?;
        let mut warnings = Vec::new();
        let (trainer, resumed_from) = match resume {
            Some(r) => {
                if let Some(meta) = &r.meta {
                    check_same_data(meta, &r.source, train, &data)?;
                    if Some(kernel) != meta.config.kernel {
                        return Err(SpecError::Mismatch {
                            setting: Setting::Kernel,
                            given: kernel.to_string(),
                            recorded: meta.config.kernel.map_or("?", |k| k.name()).to_owned(),
                            source: r.source.clone(),
                        }
                        .into());
                    }
                    if let Some(w) = spec::resume_warning(&meta.config, &config, &r.source) {
                        warnings.push(RunWarning::Schedule(w));
                    }
                }
                let t = Trainer::resume(train, test, config.clone(), r.state)?;
                (t, Some(r.source))
            }
            None => (Trainer::new(train, test, config.clone())?, None),
        };
        let augmented_picture = match &outputs.augmented {
            Some(path) => {
                let (Some(augmenter), Some(images)) = (trainer.augmenter(), train.as_u8()) else {
                    return Err(output_error(
                        path,
                        "there is no augmentation to show (the run has none)",
                    ));
                };
                Some(
                    plot::augmented_png(path, images, augmenter, config.seed)
                        .map_err(|e| output_error(path, e))?,
                )
            }
            None => None,
        };
        let start_epoch = trainer.epochs_done();
        let meta = RunMeta {
            config: TrainConfig {
                kernel: Some(kernel),
                ..config
            },
            epochs_done: start_epoch,
            classes: train.classes(),
            features: train.features(),
            sample_shape: train.sample_shape().to_vec(),
            train_samples: train.len(),
            test_samples: test.map_or(0, |t| t.len()),
            // Absolute, so that eval, predict and resuming find it from
            // any working directory.
            data_dir: data.dir.as_ref().map_or_else(String::new, |d| {
                std::fs::canonicalize(d)
                    .unwrap_or_else(|_| d.clone())
                    .display()
                    .to_string()
            }),
            class_names: data.class_names.clone(),
            input_background: None,
        };
        let curve_rows = outputs
            .curves
            .is_some()
            .then(|| split_train_val(train.len(), meta.config.val_split, meta.config.seed))
            .transpose()?
            .map(|(rows, _)| rows);
        Ok(Self {
            log: MetricsLog::new(outputs.metrics_json.clone(), start_epoch),
            trainer,
            train_set: train,
            meta,
            background_measured: false,
            data,
            outputs,
            extra_metadata: BTreeMap::new(),
            curve: Vec::new(),
            curve_rows,
            reports: Vec::new(),
            start_epoch,
            resumed_from,
            warnings,
            results: None,
            picture: None,
            augmented_picture,
            limit: None,
        })
    }

    /// Trains at most `epochs` epochs per call of [`Run::train`]
    /// (Python's `partial_fit` trains one).
    pub fn limit_epochs(&mut self, epochs: usize) {
        self.limit = Some(epochs);
    }

    /// Makes `flag`, raised by another thread, stop the epoch in progress
    /// at the end of a step; [`Run::train`] then fails with
    /// [`TrainError::Interrupted`] and the run is spent.
    pub fn set_stop_flag(&mut self, flag: &'a AtomicBool) {
        self.trainer.set_stop_flag(flag);
    }

    /// Extra metadata for the checkpoint; the run's own keys win.
    pub fn set_extra_metadata(&mut self, extra: BTreeMap<String, String>) {
        self.extra_metadata = extra;
    }

    /// Trains every remaining epoch (at most the limit), calling
    /// `on_epoch` with each report after the epoch's files are written.
    /// `progress(samples)` is called now and then from worker threads with
    /// the samples trained so far in this call.
    pub fn train(
        &mut self,
        progress: &(dyn Fn(u64) + Sync),
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<(), RunError> {
        let per_epoch = self.trainer.train_samples() as u64;
        let base = AtomicU64::new(0);
        let progress = |done: u64| progress(base.load(Ordering::Relaxed) + done);
        let mut trained = 0;
        while self.trainer.epochs_done() < self.meta.config.epochs
            && self.limit.is_none_or(|l| trained < l)
        {
            let mut report = self.trainer.run_epoch(&progress)?;
            base.fetch_add(per_epoch, Ordering::Relaxed);
            trained += 1;
            let stats = report.stats;
            let classes = self.train_set.classes();
            if metrics::diverged(stats.train_loss, classes)
                && !self
                    .warnings
                    .iter()
                    .any(|w| matches!(w, RunWarning::Diverged { .. }))
            {
                let w = RunWarning::Diverged {
                    epoch: stats.epoch,
                    loss: stats.train_loss,
                    classes,
                };
                report.warning = Some(w.clone());
                self.warnings.push(w);
            }
            if let Some(rows) = &self.curve_rows {
                let net = self.trainer.network();
                let kernel = self.meta.config.kernel.unwrap_or(KernelPath::Gemm);
                report.train = Some(metrics::evaluate_rows(net, self.train_set, kernel, rows));
            }
            self.meta.epochs_done = stats.epoch;
            self.results = Some(Results {
                test_accuracy: report.test.as_ref().map_or(f64::NAN, |t| t.accuracy),
                test_loss: report.test.as_ref().map_or(f64::NAN, |t| t.loss),
                train_loss: stats.train_loss,
                validation: report.validation.as_ref().map(|v| (v.accuracy, v.loss)),
            });
            self.write_epoch_files(&report)?;
            on_epoch(&report);
            self.reports.push(report);
        }
        if self.trainer.epochs_done() == self.meta.config.epochs && self.picture.is_none() {
            if let Some(path) = &self.outputs.weights_png {
                let shape = self.train_set.sample_shape();
                let &[h, w] = shape else {
                    return Err(output_error(
                        path,
                        "the weights picture needs 2-D samples (height x width)",
                    ));
                };
                self.picture = Some(
                    plot::weights_png(self.trainer.network(), h, w, path)
                        .map_err(|e| output_error(path, e))?,
                );
            }
        }
        Ok(())
    }

    /// After an epoch: the metrics line, the checkpoint, the curves.
    fn write_epoch_files(&mut self, report: &EpochReport) -> Result<(), RunError> {
        if let Some(path) = &self.outputs.metrics_json {
            self.log
                .push(&report.to_json())
                .map_err(|e| output_error(path, e))?;
        }
        if let Some(path) = self.outputs.save.clone() {
            self.save(&path)?;
        }
        if let Some(path) = &self.outputs.curves {
            self.curve.push(EpochPoint {
                epoch: report.stats.epoch,
                train_loss: report.stats.train_loss,
                train_accuracy: report.train.as_ref().map(|t| t.accuracy),
                val_loss: report.validation.as_ref().map(|v| v.loss),
                val_accuracy: report.validation.as_ref().map(|v| v.accuracy),
                test_loss: report.test.as_ref().map_or(f64::NAN, |t| t.loss),
                test_accuracy: report.test.as_ref().map_or(f64::NAN, |t| t.accuracy),
            });
            plot::training_curves(path, &self.curve).map_err(|e| output_error(path, e))?;
        }
        Ok(())
    }

    /// Writes the run's checkpoint (network, momentum, record, latest
    /// results) to `path`, atomically.
    pub fn save(&mut self, path: &Path) -> Result<(), RunError> {
        let results = self.results.unwrap_or(Results {
            test_accuracy: f64::NAN,
            test_loss: f64::NAN,
            train_loss: f64::NAN,
            validation: None,
        });
        let state = self.trainer.state();
        let meta = self.record().clone();
        record::save_with(path, &state, &meta, &results, &self.extra_metadata)?;
        Ok(())
    }

    /// What a checkpoint of the run records (the training images' typical
    /// background is measured on the first call).
    pub fn record(&mut self) -> &RunMeta {
        if !self.background_measured {
            self.meta.input_background = crate::preprocess::samples_background(self.train_set);
            self.background_measured = true;
        }
        &self.meta
    }

    /// The results after the last epoch trained, if any.
    pub fn results(&self) -> Option<Results> {
        self.results
    }

    /// A snapshot of the training state (network, momentum, epochs done).
    pub fn state(&self) -> TrainState {
        self.trainer.state()
    }

    pub fn network(&self) -> &Network {
        self.trainer.network()
    }

    /// The resolved configuration, with the kernel path that runs.
    pub fn config(&self) -> &TrainConfig {
        &self.meta.config
    }

    /// The kernel path that runs.
    pub fn kernel(&self) -> KernelPath {
        self.trainer.kernel()
    }

    /// The step's workers.
    pub fn workers(&self) -> usize {
        self.trainer.workers()
    }

    /// Samples trained on per epoch (the training set less the
    /// validation split).
    pub fn train_samples(&self) -> usize {
        self.trainer.train_samples()
    }

    /// The epoch the run started from (0 unless resumed).
    pub fn start_epoch(&self) -> usize {
        self.start_epoch
    }

    /// Whence the run was resumed.
    pub fn resumed_from(&self) -> Option<&str> {
        self.resumed_from.as_deref()
    }

    /// The reports of the epochs trained by this `Run`.
    pub fn reports(&self) -> &[EpochReport] {
        &self.reports
    }

    /// The warnings so far (each also in its epoch's report, or, for a
    /// resumed schedule, from the start).
    pub fn warnings(&self) -> &[RunWarning] {
        &self.warnings
    }

    /// The weights picture's size, once written.
    pub fn picture(&self) -> Option<Size> {
        self.picture
    }

    /// The augmentation picture's size (`Outputs::augmented`), written
    /// before training.
    pub fn augmented_picture(&self) -> Option<Size> {
        self.augmented_picture
    }

    /// The run as one JSON object: its settings, the last results, the
    /// timings, the digest and every epoch's record (what `--json` prints);
    /// warnings worded by `name`.
    pub fn summary(&self, name: Naming<'_>) -> serde_json::Value {
        let cfg = &self.meta.config;
        let reports = &self.reports;
        let train_seconds: f64 = reports.iter().map(|r| r.stats.seconds).sum();
        let samples: usize = reports.iter().map(|r| r.stats.samples).sum();
        let mut out = cfg.settings_json();
        let more = json!({
            "start_epoch": self.start_epoch,
            "threads": cfg.threads,
            "workers": self.workers(),
            "kernel": self.kernel().name(),
            "layers": self.network().describe(),
            "train_seconds": train_seconds,
            "samples_per_second": samples as f64 / train_seconds,
            "benchings": reports.iter().map(|r| r.stats.benchings).sum::<u32>(),
            "weights_digest": self.network().digest(),
            "train_samples": self.train_samples(),
            "classes": self.meta.classes,
            "per_epoch": reports.iter().map(EpochReport::to_json).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| w.message(name)).collect::<Vec<_>>(),
        });
        merge(&mut out, more);
        if let Some(dir) = &self.data.dir {
            out["data_dir"] = json!(dir.display().to_string());
        }
        if let Some(last) = reports.last() {
            out["train_loss"] = json!(last.stats.train_loss);
            out["eval_seconds"] = json!(last.eval_seconds);
            if let Some(test) = &last.test {
                out["test_accuracy"] = json!(test.accuracy);
                out["test_loss"] = json!(test.loss);
                out["test_samples"] = json!(test.total);
            }
            if let Some(val) = &last.validation {
                out["val_loss"] = json!(val.loss);
                out["val_accuracy"] = json!(val.accuracy);
                out["val_samples"] = json!(val.total);
            }
        }
        for (key, path) in [
            ("saved", &self.outputs.save),
            ("metrics_json", &self.outputs.metrics_json),
            ("plot", &self.outputs.curves),
        ] {
            if let Some(p) = path {
                out[key] = json!(p.display().to_string());
            }
        }
        if let (Some(p), Some(_)) = (&self.outputs.weights_png, self.picture) {
            out["weights_png"] = json!(p.display().to_string());
        }
        if let Some(p) = &self.outputs.augmented {
            out["augmented_png"] = json!(p.display().to_string());
        }
        if let Some(r) = &self.resumed_from {
            out["resumed_from"] = json!(r);
        }
        out
    }
}

/// Adds `more`'s keys to the object `out`.
fn merge(out: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(o), serde_json::Value::Object(m)) = (out.as_object_mut(), more) {
        o.extend(m);
    }
}

/// Checks that the data is the data the checkpoint was trained on, as far
/// as shapes tell: the same sample shape and number of training samples.
fn check_same_data(
    meta: &RunMeta,
    source: &str,
    train: &Samples<'_>,
    data: &DataInfo,
) -> Result<(), RunError> {
    let shape = train.sample_shape();
    if shape != meta.sample_shape.as_slice() || train.len() != meta.train_samples {
        let what = data.train_file.as_ref().map_or_else(
            || "the training data".to_owned(),
            |p| p.display().to_string(),
        );
        return Err(RunError::OtherData(format!(
            "{source} was trained on {} training samples of {}, but {what} holds {} of {}",
            meta.train_samples,
            record::shape_string(&meta.sample_shape),
            train.len(),
            record::shape_string(shape)
        )));
    }
    Ok(())
}
