//! A saved model: a checkpoint and what its run recorded, read in one
//! place. `eval`, `predict`, `--resume`, Python's `load` and the server
//! all open a model file with [`SavedModel::load`] and ask it, never the
//! checkpoint's metadata keys, what the run recorded: the sample shape,
//! the kernel path, the class names, the images' background, the data
//! directory, the validation split, the results.
//!
//! Files from other tools (a PyTorch `state_dict` saved as safetensors)
//! load too: they hold a network and little else, and every question
//! about the run answers `None`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint, FORMAT_KEY};
use crate::data::Split;
use crate::kernels::KernelPath;
use crate::nn::Network;
use crate::run::record::{self, RecordError, Results, RunMeta};
use crate::run::{spec, split_train_val, SpecError, TrainError, TrainState};
use crate::setting::{Naming, Setting};

/// Which rows of a dataset a model is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// The test files.
    Test,
    /// The training rows the model learned from (without the held-out
    /// validation rows).
    Train,
    /// The validation rows its run held out, drawn again from its seed.
    Val,
}

impl Rows {
    pub fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Train => "train",
            Self::Val => "val",
        }
    }
}

/// Why a model cannot be used as asked. One line, naming the files.
#[derive(Debug)]
pub enum ModelError {
    /// The file is not a valid model.
    Record(RecordError),
    /// The data's samples do not fit the model (the message names both).
    Samples(String),
    /// A test label is outside the model's classes.
    Label {
        data: PathBuf,
        index: usize,
        value: u32,
        classes: usize,
    },
    /// The validation rows are asked for, but the run held out none.
    NoValSplit {
        model: PathBuf,
    },
    /// The run held out validation rows but recorded no seed to draw them.
    NoSeed {
        model: PathBuf,
    },
    Train(TrainError),
}

impl ModelError {
    /// The message, one line, naming settings by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        match self {
            Self::Record(e) => e.message(name),
            Self::Samples(msg) => msg.clone(),
            Self::Label {
                data,
                index,
                value,
                classes,
            } => format!(
                "{}: label {index} is {value}, but the model has {classes} classes",
                data.display()
            ),
            Self::NoValSplit { model } => format!(
                "{}: the run held out no validation split (train with {} F to have one)",
                model.display(),
                name(Setting::ValSplit)
            ),
            Self::NoSeed { model } => format!(
                "{}: records a validation split but no seed to draw it from",
                model.display()
            ),
            Self::Train(e) => e.message(name),
        }
    }
}

crate::setting::worded_error!(ModelError);

impl From<RecordError> for ModelError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

impl From<TrainError> for ModelError {
    fn from(e: TrainError) -> Self {
        Self::Train(e)
    }
}

/// A model file, loaded and validated.
#[derive(Clone, Debug)]
pub struct SavedModel {
    path: PathBuf,
    ck: Checkpoint,
}

impl SavedModel {
    /// Reads and checks `path`: the checkpoint's own checks
    /// ([`checkpoint::load`]), then that what its metadata records about
    /// the model agrees with its tensors ([`record::validate`]).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let ck = checkpoint::load(path).map_err(RecordError::from)?;
        record::validate(path, &ck)?;
        Ok(Self {
            path: path.to_owned(),
            ck,
        })
    }

    /// A model from bytes already read (a pickle), named `path` in
    /// messages.
    pub fn from_checkpoint(path: &Path, ck: Checkpoint) -> Result<Self, ModelError> {
        record::validate(path, &ck)?;
        Ok(Self {
            path: path.to_owned(),
            ck,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn network(&self) -> &Network {
        &self.ck.network
    }

    /// Whether this crate wrote the file as a run checkpoint (so the run
    /// can be continued).
    pub fn is_run(&self) -> bool {
        self.ck.metadata.contains_key(FORMAT_KEY)
    }

    /// The run's settings and training state, to continue it.
    pub fn run(&self) -> Result<(RunMeta, TrainState), RecordError> {
        record::run_state(&self.path, &self.ck)
    }

    /// The state to continue training from: the run's, or, for a file
    /// from another tool, its network with no momentum and no epoch done.
    pub fn state(&self) -> Result<TrainState, RecordError> {
        if self.is_run() {
            return Ok(self.run()?.1);
        }
        Ok(TrainState {
            network: self.ck.network.clone(),
            momentum: Vec::new(),
            epochs_done: 0,
        })
    }

    /// The per-sample shape the run trained on, if recorded.
    pub fn sample_shape(&self) -> Option<Vec<usize>> {
        record::recorded_shape(&self.ck)
    }

    /// The `(height, width)` of the images the model takes, if it takes
    /// 2-D images ([`crate::preprocess::input_shape`]).
    pub fn input_shape(&self) -> Option<(usize, usize)> {
        crate::preprocess::input_shape(self.sample_shape().as_deref(), self.network().features())
    }

    /// The kernel path that trained the model, if recorded and available
    /// here.
    pub fn kernel(&self) -> Option<KernelPath> {
        record::recorded_kernel(&self.ck)
    }

    /// The kernel path to run the model on u8 (or not) samples, given the
    /// one asked for ([`spec::inference_kernel`]).
    pub fn inference_kernel(
        &self,
        requested: Option<KernelPath>,
        u8_samples: bool,
    ) -> Result<KernelPath, SpecError> {
        spec::check_kernel_env()?;
        let fused_ok = u8_samples || !self.network().arch().conv.is_empty();
        spec::inference_kernel(requested, self.kernel(), fused_ok)
    }

    /// The class names the run recorded, if any (and valid for the class
    /// count).
    pub fn class_names(&self) -> Option<Vec<String>> {
        record::recorded_names(&self.ck)
    }

    /// The training images' typical border, 0 (black) to 1 (white), if
    /// recorded.
    pub fn background(&self) -> Option<f32> {
        record::recorded_background(&self.ck)
    }

    /// The data directory the run trained on, if recorded.
    pub fn data_dir(&self) -> Option<&str> {
        record::recorded_data_dir(&self.ck)
    }

    /// The epochs trained into the weights, if recorded.
    pub fn epochs_done(&self) -> Option<usize> {
        record::recorded_epochs_done(&self.ck)
    }

    /// The results after the last epoch, if recorded.
    pub fn results(&self) -> Option<Results> {
        record::recorded_results(&self.ck)
    }

    /// Every metadata pair, for callers that keep keys of their own (the
    /// Python package's class labels).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.ck.metadata
    }

    /// The model as an ONNX file's bytes ([`crate::onnx::export`]), its
    /// class names and run record in the metadata.
    pub fn to_onnx(&self) -> Result<Vec<u8>, crate::onnx::GraphError> {
        let md = crate::onnx::metadata(
            self.metadata(),
            self.class_names(),
            self.network().classes(),
        );
        crate::onnx::export(self.network(), &md)
    }

    /// Checks that the model takes `split`'s samples: the same feature
    /// count and, when the run recorded one, the same sample shape (a
    /// 28×28 model refuses 14×56 images).
    pub fn check_samples(&self, split: &Split) -> Result<(), ModelError> {
        let net = self.network();
        let k = split.images.features();
        let shape = split.images.sample_shape();
        let shown = record::shape_string(shape);
        let (model, data) = (self.path.display(), split.images.path().display());
        if net.features() != k {
            return Err(ModelError::Samples(format!(
                "{model}: the model takes {} features, but {data} holds samples of {shown} ({k} features)",
                net.features()
            )));
        }
        if let Some(recorded) = self.sample_shape() {
            if recorded != shape {
                return Err(ModelError::Samples(format!(
                    "{model}: the model was trained on samples of {}, but {data} holds samples of {shown}",
                    record::shape_string(&recorded)
                )));
            }
        }
        Ok(())
    }

    /// Checks that every label of `split` is one of the model's classes.
    pub fn check_labels(&self, split: &Split) -> Result<(), ModelError> {
        let classes = self.network().classes();
        match split.labels.first_at_least(classes) {
            Some((index, value)) => Err(ModelError::Label {
                data: split.labels.path().to_owned(),
                index,
                value,
                classes,
            }),
            None => Ok(()),
        }
    }

    /// The rows of a training split of `n` samples (from `data`) that
    /// `which` names: every row when the run held out none, else the
    /// training or validation rows of its split, drawn again from its seed.
    /// `None` for [`Rows::Test`] (the whole test split).
    pub fn rows(&self, which: Rows, n: usize, data: &Path) -> Result<Option<Vec<u32>>, ModelError> {
        if which == Rows::Test {
            return Ok(None);
        }
        let (fraction, seed, recorded_n) = record::recorded_split(&self.ck);
        let model = self.path.clone();
        if which == Rows::Val && fraction <= 0.0 {
            return Err(ModelError::NoValSplit { model });
        }
        if fraction <= 0.0 {
            return Ok(Some((0..n as u32).collect()));
        }
        let Some(seed) = seed else {
            return Err(ModelError::NoSeed { model });
        };
        if let Some(recorded) = recorded_n.filter(|&r| r != n) {
            return Err(ModelError::Samples(format!(
                "{} was trained on {recorded} training samples, but {} holds {n}: its validation split cannot be drawn again",
                model.display(),
                data.display()
            )));
        }
        let (train, val) = split_train_val(n, fraction, seed)?;
        Ok(Some(if which == Rows::Val { val } else { train }))
    }
}
