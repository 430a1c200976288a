//! The run checkpoint: what `--save` writes and `--resume` reads.
//!
//! The file is an ordinary [`checkpoint`] (safetensors, `weight` [C, K] and
//! `bias` [C] as in PyTorch's `nn.Linear`). With momentum it also holds the
//! optimiser's buffers as `momentum.weight` [C, K] and `momentum.bias` [C].
//! Its string metadata records everything needed to continue the run bit
//! for bit ([`RunMeta`]) plus the latest results ([`Results`]):
//!
//! | key | example | |
//! |-----|---------|-|
//! | `seed`, `batch_size`, `lr`, `momentum`, `nesterov`, `weight_decay`, `schedule`, `val_split`, `kernel` | `42`, `100`, `0.1`, `0.9`, `false`, `0`, `cosine`, `0`, `avx512` | the run's settings |
//! | `epochs` | `10` | the run's planned total |
//! | `epochs_done` | `4` | epochs trained into these weights |
//! | `classes`, `features`, `sample_shape`, `dataset_shape`, `train_samples`, `test_samples`, `data_dir` | `10`, `784`, `28x28`, `60000x28x28`, … | the data |
//! | `test_accuracy`, `test_loss`, `train_loss`, `val_accuracy`, `val_loss` | `0.9032`, … | after epoch `epochs_done` |
//! | `crate_version`, `format` | `0.1.0`, `idx-softmax/1` | set by [`checkpoint::save`] |

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

use idx_softmax::checkpoint::{self, Checkpoint, ExtraTensor};
use idx_softmax::kernels::KernelPath;
use idx_softmax::optim::{Schedule, Sgd};
use idx_softmax::train::TrainState;

/// Name of the momentum buffer of `weight`.
pub const MOMENTUM_WEIGHT: &str = "momentum.weight";
/// Name of the momentum buffer of `bias`.
pub const MOMENTUM_BIAS: &str = "momentum.bias";

/// The settings and data shape of a run, as recorded in its checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RunMeta {
    pub seed: u64,
    /// The run's planned total of epochs.
    pub epochs: usize,
    /// Epochs trained into the saved weights.
    pub epochs_done: usize,
    pub batch_size: usize,
    pub sgd: Sgd,
    pub val_split: f32,
    /// The kernel path that ran (its name).
    pub kernel: String,
    pub classes: usize,
    pub features: usize,
    /// Per-sample shape, e.g. `[28, 28]`.
    pub sample_shape: Vec<usize>,
    pub train_samples: usize,
    pub test_samples: usize,
    /// For the record only.
    pub data_dir: String,
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
fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let dims: Option<Vec<usize>> = s.split('x').map(|d| d.parse().ok()).collect();
    dims.filter(|d| !d.is_empty() && d.iter().all(|&n| n > 0))
}

impl RunMeta {
    /// The metadata to store, with `results`.
    pub fn to_metadata(&self, results: &Results) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_owned(), v);
        };
        put("seed", self.seed.to_string());
        put("epochs", self.epochs.to_string());
        put("epochs_done", self.epochs_done.to_string());
        put("batch_size", self.batch_size.to_string());
        put("lr", self.sgd.lr.to_string());
        put("momentum", self.sgd.momentum.to_string());
        put("nesterov", self.sgd.nesterov.to_string());
        put("weight_decay", self.sgd.weight_decay.to_string());
        put("schedule", self.sgd.schedule.to_string());
        put("val_split", self.val_split.to_string());
        put("kernel", self.kernel.clone());
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
    /// file in errors.
    pub fn from_checkpoint(path: &Path, ck: &Checkpoint) -> Result<Self> {
        let md = &ck.metadata;
        let get = |key: &str| -> Result<&str> {
            md.get(key).map(String::as_str).ok_or_else(|| {
                anyhow!(
                    "{}: no {key:?} in the checkpoint's metadata; --resume needs a file written by --save",
                    path.display()
                )
            })
        };
        fn parse<T: FromStr>(path: &Path, key: &str, v: &str) -> Result<T> {
            v.parse().map_err(|_| {
                anyhow!(
                    "{}: metadata {key:?} is {v:?}, which is not valid",
                    path.display()
                )
            })
        }
        let num = |key: &str| -> Result<usize> { parse(path, key, get(key)?) };
        let float = |key: &str| -> Result<f32> { parse(path, key, get(key)?) };
        let schedule: Schedule = get("schedule")?.parse().map_err(|e: String| {
            anyhow!("{}: metadata \"schedule\" is invalid: {e}", path.display())
        })?;
        let sgd = Sgd {
            lr: float("lr")?,
            momentum: float("momentum")?,
            nesterov: parse(path, "nesterov", get("nesterov")?)?,
            weight_decay: float("weight_decay")?,
            schedule,
        };
        if let Err(e) = sgd.validate() {
            bail!("{}: the recorded optimiser is invalid: {e}", path.display());
        }
        let shape = get("sample_shape")?;
        let sample_shape = parse_shape(shape).ok_or_else(|| {
            anyhow!(
                "{}: metadata \"sample_shape\" is {shape:?}, which is not a shape like 28x28",
                path.display()
            )
        })?;
        Ok(Self {
            seed: parse(path, "seed", get("seed")?)?,
            epochs: num("epochs")?,
            epochs_done: num("epochs_done")?,
            batch_size: num("batch_size")?,
            sgd,
            val_split: float("val_split")?,
            kernel: get("kernel")?.to_owned(),
            classes: num("classes")?,
            features: num("features")?,
            sample_shape,
            train_samples: num("train_samples")?,
            test_samples: num("test_samples")?,
            data_dir: md.get("data_dir").cloned().unwrap_or_default(),
        })
    }
}

/// The per-sample shape a checkpoint records, if it records a valid one
/// (files from other tools need not).
pub fn recorded_shape(ck: &Checkpoint) -> Option<Vec<usize>> {
    ck.metadata.get("sample_shape").and_then(|s| parse_shape(s))
}

/// The checks every command that loads a model runs (`eval`, `predict`,
/// `--resume`): what the metadata records about the model must agree with
/// its tensors. Files from other tools may leave a key out; a key that is
/// there must be valid and agree: `classes` and `features` with the weight's
/// shape, `sample_shape` with `features`.
pub fn validate(path: &Path, ck: &Checkpoint) -> Result<()> {
    let m = &ck.model;
    let md = &ck.metadata;
    for (key, actual) in [("classes", m.classes), ("features", m.features)] {
        if let Some(v) = md.get(key) {
            match v.parse::<usize>() {
                Ok(n) if n == actual => {}
                Ok(n) => bail!(
                    "{}: the weight is {} x {} (classes x features), but the metadata says {key} = {n}",
                    path.display(),
                    m.classes,
                    m.features
                ),
                Err(_) => bail!(
                    "{}: metadata {key:?} is {v:?}, which is not valid",
                    path.display()
                ),
            }
        }
    }
    if let Some(v) = md.get("sample_shape") {
        let shape = parse_shape(v).ok_or_else(|| {
            anyhow!(
                "{}: metadata \"sample_shape\" is {v:?}, which is not a shape like 28x28",
                path.display()
            )
        })?;
        let n: Option<usize> = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(m.features) {
            bail!(
                "{}: metadata \"sample_shape\" is {v}, but the weight takes {} features",
                path.display(),
                m.features
            );
        }
    }
    Ok(())
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
    ck.metadata.get("kernel").and_then(|k| k.parse().ok())
}

/// Saves `state` with `meta` and `results` to `path`, atomically.
pub fn save(path: &Path, state: &TrainState, meta: &RunMeta, results: &Results) -> Result<()> {
    let m = &state.model;
    let wt_shape = [m.classes, m.features];
    let bias_shape = [m.classes];
    let mut extra: Vec<ExtraTensor<'_>> = Vec::new();
    if meta.sgd.has_momentum() {
        extra.push((MOMENTUM_WEIGHT, &wt_shape, &state.momentum_wt));
        extra.push((MOMENTUM_BIAS, &bias_shape, &state.momentum_bias));
    }
    checkpoint::save(path, m, &extra, &meta.to_metadata(results))?;
    Ok(())
}

/// Loads a run checkpoint for `--resume`: the checkpoint, its settings and
/// the training state (model, momentum buffers, epochs done).
pub fn load(path: &Path) -> Result<(Checkpoint, RunMeta, TrainState)> {
    let ck = checkpoint::load(path)?;
    let meta = RunMeta::from_checkpoint(path, &ck)?;
    validate(path, &ck)?;
    let m = &ck.model;
    let (momentum_wt, momentum_bias) = if meta.sgd.has_momentum() {
        (
            momentum_tensor(path, &ck, MOMENTUM_WEIGHT, &[m.classes, m.features])?,
            momentum_tensor(path, &ck, MOMENTUM_BIAS, &[m.classes])?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let state = TrainState {
        model: ck.model.clone(),
        momentum_wt,
        momentum_bias,
        epochs_done: meta.epochs_done,
    };
    Ok((ck, meta, state))
}

/// The extra tensor `name`, which must have `shape`.
fn momentum_tensor(path: &Path, ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = ck.extra.get(name).ok_or_else(|| {
        anyhow!(
            "{}: the run uses momentum but the file has no {name:?} tensor",
            path.display()
        )
    })?;
    if t.shape != shape {
        bail!(
            "{}: tensor {name:?} has shape {:?}, expected {shape:?}",
            path.display(),
            t.shape
        );
    }
    Ok(t.data.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use idx_softmax::model::Model;

    fn meta() -> RunMeta {
        RunMeta {
            seed: 7,
            epochs: 3,
            epochs_done: 2,
            batch_size: 10,
            sgd: Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-4,
                schedule: "step:2:0.5".parse().unwrap(),
            },
            val_split: 0.1,
            kernel: "portable".into(),
            classes: 2,
            features: 6,
            sample_shape: vec![2, 3],
            train_samples: 50,
            test_samples: 20,
            data_dir: "d".into(),
        }
    }

    #[test]
    fn metadata_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.safetensors");
        let model = Model {
            features: 6,
            classes: 2,
            wt: (0..12).map(|i| i as f32 / 3.0).collect(),
            bias: vec![0.5, -0.5],
        };
        let state = TrainState {
            momentum_wt: model.wt.iter().map(|w| -w).collect(),
            momentum_bias: vec![1.0, 2.0],
            model,
            epochs_done: 2,
        };
        let results = Results {
            test_accuracy: 0.5,
            test_loss: 1.0,
            train_loss: 2.0,
            validation: Some((0.25, 3.0)),
        };
        save(&path, &state, &meta(), &results).unwrap();
        let (ck, got, got_state) = load(&path).unwrap();
        assert_eq!(got, meta());
        assert_eq!(got_state, state);
        assert_eq!(recorded_shape(&ck), Some(vec![2, 3]));
        assert_eq!(ck.metadata["dataset_shape"], "50x2x3");
        assert_eq!(ck.metadata["val_accuracy"], "0.25");
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
