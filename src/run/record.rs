//! The run checkpoint: what `--save` (and Python's `save`) writes and
//! `--resume` (and `load`) reads.
//!
//! The file is an ordinary [`checkpoint`] (safetensors; see there for the
//! tensor names). With momentum it also holds the optimiser's buffer as
//! `momentum.<name>` for each parameter tensor (`momentum.weight`,
//! `momentum.0.weight`, …). Its string metadata records everything needed
//! to continue the run bit for bit ([`RunMeta`]) plus the latest results
//! ([`Results`]):
//!
//! | key | example | |
//! |-----|---------|-|
//! | `seed`, `batch_size`, `lr`, `momentum`, `nesterov`, `weight_decay`, `schedule`, `val_split`, `conv`, `hidden`, `augment`, `kernel` | `42`, `100`, `0.1`, `0.9`, `false`, `0`, `cosine`, `0`, `6x5,16x5` or empty, `256` or empty, `elastic:4,34`, `avx512` | the run's settings |
//! | `epochs` | `10` | the run's planned total |
//! | `epochs_done` | `4` | epochs trained into these weights |
//! | `classes`, `features`, `sample_shape`, `dataset_shape`, `train_samples`, `test_samples`, `data_dir` | `10`, `784`, `28x28`, `60000x28x28`, … | the data |
//! | `class_names` | `["T-shirt/top", …]` | the class names (JSON), when the data has a `labels.txt` or `--labels` is given |
//! | `input_background` | `0` | the training images' typical border, 0 (black) to 1 (white): `predict` inverts an image whose border differs by more than 0.5 |
//! | `test_accuracy`, `test_loss`, `train_loss`, `val_accuracy`, `val_loss` | `0.9032`, … | after epoch `epochs_done` |
//! | `layers`, `crate_version`, `format` | `784-256-10`, `0.1.0`, `idx-softmax/1` | set by [`checkpoint::save`] |

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use super::{TrainConfig, TrainState};
use crate::checkpoint::{self, Checkpoint, CheckpointError, ExtraTensor};
use crate::kernels::KernelPath;
use crate::optim::{Schedule, Sgd};
use crate::setting::{Naming, Setting};

/// Prefix of the momentum buffers' tensor names.
pub const MOMENTUM_PREFIX: &str = "momentum.";

/// A run record problem: one line naming the file.
#[derive(Debug)]
pub enum RecordError {
    Checkpoint(CheckpointError),
    Invalid(String),
    /// The file is a model but not a run checkpoint: its metadata has no
    /// `key`, so the run cannot be continued.
    NotARun {
        path: std::path::PathBuf,
        key: String,
    },
}

impl RecordError {
    /// The message, one line, naming settings by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        match self {
            Self::Checkpoint(e) => e.to_string(),
            Self::Invalid(m) => m.clone(),
            Self::NotARun { path, key } => format!(
                "{}: no {key:?} in the checkpoint's metadata; {} needs a file written by {}",
                path.display(),
                name(Setting::Resume),
                name(Setting::Save)
            ),
        }
    }
}

crate::setting::worded_error!(RecordError);

impl From<CheckpointError> for RecordError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(e)
    }
}

/// The settings and data shape of a run, as recorded in its checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMeta {
    /// The run's settings; `threads` and `oversubscribe` are not recorded
    /// (they never change the bits), and `kernel` holds the path that ran.
    pub config: TrainConfig,
    /// Epochs trained into the saved weights.
    pub epochs_done: usize,
    pub classes: usize,
    pub features: usize,
    /// Per-sample shape, e.g. `[28, 28]`.
    pub sample_shape: Vec<usize>,
    pub train_samples: usize,
    pub test_samples: usize,
    /// Where the training data came from (empty when not from files).
    pub data_dir: String,
    /// Class names (from `labels.txt` or `--labels`), empty when unnamed.
    pub class_names: Vec<String>,
    /// The typical border of the training images, 0 (black) to 1 (white),
    /// for `predict`'s polarity rule; `None` for non-u8 data.
    pub input_background: Option<f32>,
}

/// The results after the last finished epoch, recorded for the reader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Results {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub train_loss: f64,
    /// `(accuracy, loss)` on the validation split, when there is one.
    pub validation: Option<(f64, f64)>,
}

/// `28x28` for `[28, 28]`.
pub fn shape_string(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// The inverse of [`shape_string`].
pub fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let dims: Option<Vec<usize>> = s.split('x').map(|d| d.parse().ok()).collect();
    dims.filter(|d| !d.is_empty() && d.iter().all(|&n| n > 0))
}

/// `256,128` for hidden widths `[256, 128]` (empty for none).
fn hidden_string(hidden: &[usize]) -> String {
    hidden
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl RunMeta {
    /// The metadata to store, with `results`.
    pub fn to_metadata(&self, results: &Results) -> BTreeMap<String, String> {
        let cfg = &self.config;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_owned(), v);
        };
        put("seed", cfg.seed.to_string());
        put("epochs", cfg.epochs.to_string());
        put("epochs_done", self.epochs_done.to_string());
        put("batch_size", cfg.batch_size.to_string());
        put("lr", cfg.sgd.lr.to_string());
        put("momentum", cfg.sgd.momentum.to_string());
        put("nesterov", cfg.sgd.nesterov.to_string());
        put("weight_decay", cfg.sgd.weight_decay.to_string());
        put("schedule", cfg.sgd.schedule.to_string());
        put("val_split", cfg.val_split.to_string());
        put("hidden", hidden_string(&cfg.hidden));
        put("conv", crate::nn::arch::conv_string(&cfg.conv));
        put("augment", cfg.augment.record());
        put(
            "kernel",
            cfg.kernel.map_or_else(String::new, |k| k.name().to_owned()),
        );
        put("classes", self.classes.to_string());
        put("features", self.features.to_string());
        put("sample_shape", shape_string(&self.sample_shape));
        put(
            "dataset_shape",
            format!(
                "{}x{}",
                self.train_samples,
                shape_string(&self.sample_shape)
            ),
        );
        put("train_samples", self.train_samples.to_string());
        put("test_samples", self.test_samples.to_string());
        put("data_dir", self.data_dir.clone());
        if !self.class_names.is_empty() {
            put(
                crate::labels::METADATA_KEY,
                crate::labels::to_metadata(&self.class_names),
            );
        }
        if let Some(b) = self.input_background {
            put(INPUT_BACKGROUND, b.to_string());
        }
        put("test_accuracy", results.test_accuracy.to_string());
        put("test_loss", results.test_loss.to_string());
        put("train_loss", results.train_loss.to_string());
        if let Some((acc, loss)) = results.validation {
            put("val_accuracy", acc.to_string());
            put("val_loss", loss.to_string());
        }
        m
    }

    /// Reads the run settings back from `ck`'s metadata; `path` names the
    /// file in errors. The recorded kernel must be one this CPU can run.
    pub fn from_checkpoint(path: &Path, ck: &Checkpoint) -> Result<Self, RecordError> {
        let md = &ck.metadata;
        let bad = |m: String| RecordError::Invalid(format!("{}: {m}", path.display()));
        let get = |key: &str| -> Result<&str, RecordError> {
            md.get(key)
                .map(String::as_str)
                .ok_or_else(|| RecordError::NotARun {
                    path: path.to_owned(),
                    key: key.to_owned(),
                })
        };
        let parse =
            |key: &str, v: &str| -> Result<_, RecordError> { Ok((key.to_owned(), v.to_owned())) };
        fn value<T: FromStr>(path: &Path, (key, v): (String, String)) -> Result<T, RecordError> {
            v.parse().map_err(|_| {
                RecordError::Invalid(format!(
                    "{}: metadata {key:?} is {v:?}, which is not valid",
                    path.display()
                ))
            })
        }
        let num = |key: &str| -> Result<usize, RecordError> { value(path, parse(key, get(key)?)?) };
        let float = |key: &str| -> Result<f32, RecordError> { value(path, parse(key, get(key)?)?) };
        let schedule: Schedule = get("schedule")?
            .parse()
            .map_err(|e: String| bad(format!("metadata \"schedule\" is invalid: {e}")))?;
        let sgd = Sgd {
            lr: float("lr")?,
            momentum: float("momentum")?,
            nesterov: value(path, parse("nesterov", get("nesterov")?)?)?,
            weight_decay: float("weight_decay")?,
            schedule,
        };
        super::spec::check_sgd(&sgd)
            .map_err(|e| bad(format!("the recorded optimiser is invalid: {e}")))?;
        let shape = get("sample_shape")?;
        let sample_shape = parse_shape(shape).ok_or_else(|| {
            bad(format!(
                "metadata \"sample_shape\" is {shape:?}, which is not a shape like 28x28"
            ))
        })?;
        // Files from before hidden layers have no "hidden": softmax.
        let hidden_s = md.get("hidden").map(String::as_str).unwrap_or("");
        let hidden: Vec<usize> = if hidden_s.is_empty() {
            Vec::new()
        } else {
            hidden_s
                .split(',')
                .map(|h| h.parse().ok().filter(|&h| h > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("metadata \"hidden\" is {hidden_s:?}, which is not a list of widths like 256,128")))?
        };
        // Files from before conv layers have no "conv": none.
        let conv_s = md.get("conv").map(String::as_str).unwrap_or("");
        let conv = crate::nn::arch::parse_conv(conv_s).ok_or_else(|| {
            bad(format!(
                "metadata \"conv\" is {conv_s:?}, which is not a list of conv blocks like 6x5,16x5"
            ))
        })?;
        // Files from before augmentation have no "augment": none.
        let augment_s = md.get("augment").map(String::as_str).unwrap_or("none");
        let augment = crate::data::augment::Augment::from_record(augment_s).ok_or_else(|| {
            bad(format!(
                "metadata \"augment\" is {augment_s:?}, which is not an augmentation like elastic:4,34"
            ))
        })?;
        let kernel_s = get("kernel")?;
        let kernel: KernelPath = kernel_s
            .parse()
            .map_err(|e: String| bad(format!("metadata \"kernel\" is invalid: {e}")))?;
        if !kernel.is_available() {
            return Err(bad(format!(
                "was trained with kernel {kernel_s}, which cannot run here: kernel path '{kernel_s}' is not supported by this CPU"
            )));
        }
        let config = TrainConfig {
            epochs: num("epochs")?,
            batch_size: num("batch_size")?,
            sgd,
            seed: value(path, parse("seed", get("seed")?)?)?,
            val_split: float("val_split")?,
            conv,
            hidden,
            augment,
            kernel: Some(kernel),
            ..TrainConfig::default()
        };
        let meta = Self {
            config,
            epochs_done: num("epochs_done")?,
            classes: num("classes")?,
            features: num("features")?,
            sample_shape,
            train_samples: num("train_samples")?,
            test_samples: num("test_samples")?,
            data_dir: md.get("data_dir").cloned().unwrap_or_default(),
            class_names: recorded_names(ck).unwrap_or_default(),
            input_background: recorded_background(ck),
        };
        meta.check_network(path, ck)?;
        Ok(meta)
    }

    /// Checks that the checkpoint's tensors are the network this record
    /// describes (image, conv blocks, hidden widths, classes).
    pub fn check_network(&self, path: &Path, ck: &Checkpoint) -> Result<(), RecordError> {
        let want = self.config.architecture(&self.sample_shape, self.classes);
        if *ck.network.arch() != want {
            return Err(RecordError::Invalid(format!(
                "{}: the tensors make a {} network but the metadata says {}",
                path.display(),
                ck.network.describe(),
                want.describe()
            )));
        }
        if self.sample_shape.iter().product::<usize>() != self.features {
            return Err(RecordError::Invalid(format!(
                "{}: metadata \"sample_shape\" {} does not hold {} features",
                path.display(),
                shape_string(&self.sample_shape),
                self.features
            )));
        }
        Ok(())
    }
}

/// The per-sample shape a checkpoint records, if it records a valid one
/// (files from other tools need not).
pub fn recorded_shape(ck: &Checkpoint) -> Option<Vec<usize>> {
    ck.metadata.get("sample_shape").and_then(|s| parse_shape(s))
}

/// Metadata key of [`RunMeta::input_background`].
pub const INPUT_BACKGROUND: &str = "input_background";

/// The class names a checkpoint records, if valid for its class count.
pub fn recorded_names(ck: &Checkpoint) -> Option<Vec<String>> {
    ck.metadata
        .get(crate::labels::METADATA_KEY)
        .and_then(|v| crate::labels::from_metadata(v, ck.network.classes()))
}

/// The training images' typical border a checkpoint records, if any.
pub fn recorded_background(ck: &Checkpoint) -> Option<f32> {
    ck.metadata
        .get(INPUT_BACKGROUND)
        .and_then(|v| v.parse::<f32>().ok())
        .filter(|b| (0.0..=1.0).contains(b))
}

/// The checks every command that loads a model runs (`eval`, `predict`,
/// `--resume`, Python's `load`): what the metadata records about the model
/// must agree with its tensors. Files from other tools may leave a key out;
/// a key that is there must be valid and agree: `classes` and `features`
/// with the network's outputs and inputs, `hidden` with its hidden widths,
/// `sample_shape` with `features`. (The `layers` key is checked by
/// [`checkpoint::load`].)
pub fn validate(path: &Path, ck: &Checkpoint) -> Result<(), RecordError> {
    let net = &ck.network;
    let md = &ck.metadata;
    let bad = |m: String| Err(RecordError::Invalid(format!("{}: {m}", path.display())));
    for (key, actual) in [("classes", net.classes()), ("features", net.features())] {
        if let Some(v) = md.get(key) {
            match v.parse::<usize>() {
                Ok(n) if n == actual => {}
                Ok(n) => {
                    return bad(format!(
                        "the tensors make a {} network ({} features, {} classes), but the metadata says {key} = {n}",
                        net.describe(),
                        net.features(),
                        net.classes()
                    ))
                }
                Err(_) => return bad(format!("metadata {key:?} is {v:?}, which is not valid")),
            }
        }
    }
    if let Some(v) = md.get("conv") {
        if *v != net.arch().conv_string() {
            return bad(format!(
                "metadata \"conv\" is {v:?}, but the tensors make a {} network",
                net.describe()
            ));
        }
    }
    if let Some(v) = md.get("hidden") {
        if *v != hidden_string(net.hidden()) {
            return bad(format!(
                "metadata \"hidden\" is {v:?}, but the tensors make a {} network",
                net.describe()
            ));
        }
    }
    if let Some(v) = md.get("sample_shape") {
        let Some(shape) = parse_shape(v) else {
            return bad(format!(
                "metadata \"sample_shape\" is {v:?}, which is not a shape like 28x28"
            ));
        };
        let n: Option<usize> = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(net.features()) {
            return bad(format!(
                "metadata \"sample_shape\" is {v}, but the network takes {} features",
                net.features()
            ));
        }
    }
    Ok(())
}

/// The results a checkpoint records after its last epoch, if it records
/// them (files from other tools need not).
pub fn recorded_results(ck: &Checkpoint) -> Option<Results> {
    let get = |k: &str| ck.metadata.get(k).and_then(|v| v.parse::<f64>().ok());
    Some(Results {
        test_accuracy: get("test_accuracy")?,
        test_loss: get("test_loss")?,
        train_loss: get("train_loss")?,
        validation: get("val_accuracy").zip(get("val_loss")),
    })
}

/// The epochs a checkpoint records as trained, if any.
pub fn recorded_epochs_done(ck: &Checkpoint) -> Option<usize> {
    ck.metadata.get("epochs_done").and_then(|e| e.parse().ok())
}

/// The validation split a checkpoint's run held out, as `(fraction, seed,
/// training samples)`, each if recorded.
pub fn recorded_split(ck: &Checkpoint) -> (f32, Option<u64>, Option<usize>) {
    let md = &ck.metadata;
    (
        md.get("val_split")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        md.get("seed").and_then(|v| v.parse().ok()),
        md.get("train_samples").and_then(|v| v.parse().ok()),
    )
}

/// The data directory a checkpoint records, if any.
pub fn recorded_data_dir(ck: &Checkpoint) -> Option<&str> {
    ck.metadata
        .get("data_dir")
        .map(String::as_str)
        .filter(|d| !d.is_empty())
}

/// The kernel path a checkpoint was trained with, if it records one that
/// this CPU can run.
pub fn recorded_kernel(ck: &Checkpoint) -> Option<KernelPath> {
    ck.metadata
        .get("kernel")
        .and_then(|k| k.parse::<KernelPath>().ok())
        .filter(|k| k.is_available())
}

/// Saves `state` with `meta` and `results` to `path`, atomically.
pub fn save(
    path: &Path,
    state: &TrainState,
    meta: &RunMeta,
    results: &Results,
) -> Result<(), RecordError> {
    save_with(path, state, meta, results, &BTreeMap::new())
}

/// [`save`], plus `extra_metadata` pairs (the Python front end records its
/// class labels this way); the run's own keys win over them.
pub fn save_with(
    path: &Path,
    state: &TrainState,
    meta: &RunMeta,
    results: &Results,
    extra_metadata: &BTreeMap<String, String>,
) -> Result<(), RecordError> {
    let params = state.network.params();
    let names: Vec<String> = params
        .tensors()
        .iter()
        .map(|t| format!("{MOMENTUM_PREFIX}{}", t.name))
        .collect();
    let mut extra: Vec<ExtraTensor<'_>> = Vec::new();
    if meta.config.sgd.has_momentum() {
        for (t, name) in params.tensors().iter().zip(&names) {
            extra.push((name, &t.shape, &state.momentum[t.range()]));
        }
    }
    let mut metadata = extra_metadata.clone();
    metadata.extend(meta.to_metadata(results));
    checkpoint::save(path, &state.network, &extra, &metadata)?;
    Ok(())
}

/// Loads a run checkpoint to continue it: the checkpoint, its settings and
/// the training state (network, momentum, epochs done).
pub fn load(path: &Path) -> Result<(Checkpoint, RunMeta, TrainState), RecordError> {
    let ck = checkpoint::load(path)?;
    validate(path, &ck)?;
    let (meta, state) = run_state(path, &ck)?;
    Ok((ck, meta, state))
}

/// The run settings and training state a loaded, validated checkpoint
/// `ck` (read from `path`) records.
pub fn run_state(path: &Path, ck: &Checkpoint) -> Result<(RunMeta, TrainState), RecordError> {
    let meta = RunMeta::from_checkpoint(path, ck)?;
    let params = ck.network.params();
    let momentum = if meta.config.sgd.has_momentum() {
        let mut m = vec![0.0; params.len()];
        for t in params.tensors() {
            let name = format!("{MOMENTUM_PREFIX}{}", t.name);
            let buf = ck.extra.get(&name).ok_or_else(|| {
                RecordError::Invalid(format!(
                    "{}: the run uses momentum but the file has no {name:?} tensor",
                    path.display()
                ))
            })?;
            if buf.shape != t.shape {
                return Err(RecordError::Invalid(format!(
                    "{}: tensor {name:?} has shape {:?}, expected {:?}",
                    path.display(),
                    buf.shape,
                    t.shape
                )));
            }
            m[t.range()].copy_from_slice(&buf.data);
        }
        m
    } else {
        Vec::new()
    };
    let state = TrainState {
        network: ck.network.clone(),
        momentum,
        epochs_done: meta.epochs_done,
    };
    Ok((meta, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Network;

    fn meta(hidden: Vec<usize>) -> RunMeta {
        RunMeta {
            config: TrainConfig {
                epochs: 3,
                batch_size: 10,
                sgd: Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-4,
                    schedule: "step:2:0.5".parse().unwrap(),
                },
                seed: 7,
                val_split: 0.1,
                hidden,
                kernel: Some(KernelPath::Portable),
                ..TrainConfig::default()
            },
            epochs_done: 2,
            classes: 2,
            features: 6,
            sample_shape: vec![2, 3],
            train_samples: 50,
            test_samples: 20,
            data_dir: "d".into(),
            class_names: vec!["a".into(), "b".into()],
            input_background: Some(0.25),
        }
    }

    #[test]
    fn metadata_round_trips() {
        for hidden in [vec![], vec![4], vec![4, 3]] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("run.safetensors");
            let mut sizes = vec![6];
            sizes.extend(&hidden);
            sizes.push(2);
            let mut network = Network::zeros(&sizes).unwrap();
            for (i, v) in network.params_mut().data_mut().iter_mut().enumerate() {
                *v = i as f32 / 3.0;
            }
            let state = TrainState {
                momentum: network.params().data().iter().map(|w| -w).collect(),
                network,
                epochs_done: 2,
            };
            let results = Results {
                test_accuracy: 0.5,
                test_loss: 1.0,
                train_loss: 2.0,
                validation: Some((0.25, 3.0)),
            };
            save(&path, &state, &meta(hidden.clone()), &results).unwrap();
            let (ck, got, got_state) = load(&path).unwrap();
            assert_eq!(got, meta(hidden));
            assert_eq!(got_state, state);
            assert_eq!(recorded_shape(&ck), Some(vec![2, 3]));
            assert_eq!(ck.metadata["dataset_shape"], "50x2x3");
            assert_eq!(ck.metadata["val_accuracy"], "0.25");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(parse_shape("28x28"), Some(vec![28, 28]));
        assert_eq!(parse_shape("784"), Some(vec![784]));
        assert_eq!(parse_shape("28x"), None);
        assert_eq!(parse_shape("0x3"), None);
        assert_eq!(shape_string(&[3, 4, 5]), "3x4x5");
    }
}
