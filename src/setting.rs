//! The settings a user chooses, by the library's names, with the rule
//! each one keeps. Every error about a setting carries a [`Setting`]; each
//! front end words it with its own name for the setting (the CLI's
//! `--batch-size`, Python's `batch_size`), so one rule reads right in both.

use crate::data::MAX_CLASSES;
use crate::kernels::KernelPath;
use crate::nn::MAX_WIDTH;
use crate::run::MAX_THREADS;

/// "must be finite, in [lo, hi]" with a unit.
fn range((lo, hi): (f32, f32), unit: &str) -> String {
    format!("must be finite, in [{lo}, {hi}]{unit}")
}

/// How a front end names settings in messages.
pub type Naming<'a> = &'a dyn Fn(Setting) -> String;

/// The library's own naming: [`Setting::key`].
pub fn key_name(s: Setting) -> String {
    s.key().to_owned()
}

/// One setting of a run. The library names it by [`Setting::key`] (the
/// checkpoint's metadata key); each front end has its own name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    Epochs,
    BatchSize,
    Lr,
    Momentum,
    Nesterov,
    WeightDecay,
    Schedule,
    ValSplit,
    Seed,
    Hidden,
    /// A conv block's channels.
    Conv,
    /// A conv block's kernel side.
    ConvKernel,
    Classes,
    Threads,
    Kernel,
    /// The kind of augmentation.
    Augment,
    /// `shift`'s largest translation.
    MaxShift,
    /// `affine`'s rotation range (degrees).
    Rotate,
    /// `affine`'s scaling range.
    Scale,
    /// `affine`'s shear range.
    Shear,
    /// `affine`'s translation range (pixels).
    Translate,
    /// `elastic`'s smoothing.
    Sigma,
    /// `elastic`'s field scale.
    Alpha,
    /// The directory of a dataset's four IDX files.
    DataDir,
    /// Where decompressed `.gz` files are cached.
    CacheDir,
    /// A checkpoint to continue (the CLI's `--resume`, Python's
    /// `warm_start` or a loaded model).
    Resume,
    /// Where a run's checkpoint is written.
    Save,
    /// How a user's image is made into the model's input.
    Preprocess,
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 28] = [
        Self::Epochs,
        Self::BatchSize,
        Self::Lr,
        Self::Momentum,
        Self::Nesterov,
        Self::WeightDecay,
        Self::Schedule,
        Self::ValSplit,
        Self::Seed,
        Self::Hidden,
        Self::Conv,
        Self::ConvKernel,
        Self::Classes,
        Self::Threads,
        Self::Kernel,
        Self::Augment,
        Self::MaxShift,
        Self::Rotate,
        Self::Scale,
        Self::Shear,
        Self::Translate,
        Self::Sigma,
        Self::Alpha,
        Self::DataDir,
        Self::CacheDir,
        Self::Resume,
        Self::Save,
        Self::Preprocess,
    ];

    /// The library's name: the key a checkpoint records it under.
    pub fn key(self) -> &'static str {
        match self {
            Self::Epochs => "epochs",
            Self::BatchSize => "batch_size",
            Self::Lr => "lr",
            Self::Momentum => "momentum",
            Self::Nesterov => "nesterov",
            Self::WeightDecay => "weight_decay",
            Self::Schedule => "schedule",
            Self::ValSplit => "val_split",
            Self::Seed => "seed",
            Self::Hidden => "hidden",
            Self::Conv => "conv",
            Self::ConvKernel => "kernel_size",
            Self::Classes => "classes",
            Self::Threads => "threads",
            Self::Kernel => "kernel",
            Self::Augment => "augment",
            Self::MaxShift => "max_shift",
            Self::Rotate => "rotate",
            Self::Scale => "scale",
            Self::Shear => "shear",
            Self::Translate => "translate",
            Self::Sigma => "sigma",
            Self::Alpha => "alpha",
            Self::DataDir => "data_dir",
            Self::CacheDir => "cache_dir",
            Self::Resume => "resume",
            Self::Save => "save",
            Self::Preprocess => "preprocess",
        }
    }

    /// In words, for messages about a checkpoint ("trained with batch
    /// size 50").
    pub fn words(self) -> &'static str {
        match self {
            Self::BatchSize => "batch size",
            Self::WeightDecay => "weight decay",
            Self::ValSplit => "validation split",
            Self::Hidden => "hidden layers",
            Self::Conv => "conv blocks",
            Self::ConvKernel => "conv kernel size",
            Self::Augment => "augmentation",
            Self::MaxShift => "max shift",
            Self::DataDir => "data directory",
            Self::CacheDir => "cache directory",
            other => other.key(),
        }
    }

    /// The default, in words, where the setting has one ("0.1"): for help
    /// texts. Taken from [`crate::run::TrainConfig::default`], where the
    /// defaults are stated.
    pub fn default_text(self) -> Option<String> {
        let d = crate::run::TrainConfig::default();
        let json = d.settings_json();
        let text = match self {
            Self::Hidden => "none (softmax regression)".into(),
            Self::Conv => "none".into(),
            Self::ConvKernel => crate::nn::arch::DEFAULT_KERNEL.to_string(),
            Self::Threads => "the number of CPUs".into(),
            Self::Classes => "the largest training label + 1".into(),
            Self::Kernel => "the best this CPU has".into(),
            Self::Nesterov => "off".into(),
            Self::Augment => "none".into(),
            Self::MaxShift => crate::data::augment::DEFAULT_MAX_SHIFT.to_string(),
            Self::Rotate => crate::data::augment::DEFAULT_ROTATE_DEG.to_string(),
            Self::Scale => crate::data::augment::DEFAULT_SCALE.to_string(),
            Self::Shear => crate::data::augment::DEFAULT_SHEAR.to_string(),
            Self::Translate => crate::data::augment::DEFAULT_TRANSLATE.to_string(),
            Self::Sigma => crate::data::augment::DEFAULT_SIGMA.to_string(),
            Self::Alpha => crate::data::augment::DEFAULT_ALPHA.to_string(),
            Self::Schedule => d.sgd.schedule.to_string(),
            _ => match json.get(self.key()) {
                Some(v) => v.to_string(),
                None => return None,
            },
        };
        Some(text)
    }

    /// The rule a value must keep, as it follows the setting's name in a
    /// message ("must be finite and > 0").
    pub fn rule(self) -> String {
        match self {
            Self::Epochs | Self::BatchSize => "must be >= 1".into(),
            Self::Lr => "must be finite and > 0".into(),
            Self::Momentum | Self::ValSplit => "must be in [0, 1)".into(),
            Self::Nesterov => "needs a momentum > 0".into(),
            Self::WeightDecay => "must be finite and >= 0".into(),
            Self::Schedule => {
                "must be constant, cosine or step:EVERY:GAMMA (EVERY >= 1, GAMMA finite and > 0)"
                    .into()
            }
            Self::Seed => format!("must be an integer in 0..={}", u64::MAX),
            Self::Hidden => format!("must be in 1..={MAX_WIDTH}"),
            Self::Conv => format!("must be in 1..={} channels", crate::nn::arch::MAX_CHANNELS),
            Self::ConvKernel => format!(
                "must be an odd kernel size in 1..={}",
                crate::nn::arch::MAX_KERNEL
            ),
            Self::Classes => format!("must be in 2..={MAX_CLASSES}"),
            Self::Threads => format!("must be in 1..={MAX_THREADS}"),
            Self::Kernel => {
                let names: Vec<&str> = KernelPath::ALL.iter().map(|k| k.name()).collect();
                format!("must be one of {}", names.join(", "))
            }
            Self::Augment => "must be none, shift, affine or elastic".into(),
            Self::MaxShift => {
                let (lo, hi) = crate::data::augment::MAX_SHIFT_RANGE;
                format!("must be a whole number of pixels in {lo}..={hi}")
            }
            Self::Rotate => range(crate::data::augment::ROTATE_RANGE, " degrees"),
            Self::Scale => range(crate::data::augment::SCALE_RANGE, ""),
            Self::Shear => range(crate::data::augment::SHEAR_RANGE, ""),
            Self::Translate => range(crate::data::augment::TRANSLATE_RANGE, " pixels"),
            Self::Sigma => range(crate::data::augment::SIGMA_RANGE, " pixels"),
            Self::Alpha => range(crate::data::augment::ALPHA_RANGE, " pixels"),
            Self::DataDir => "must be a directory holding the four IDX files".into(),
            Self::CacheDir => "must be a directory that can be written".into(),
            Self::Resume => "must name a checkpoint written by a training run".into(),
            Self::Save => "must name a file that can be written".into(),
            Self::Preprocess => "must be mnist, none or auto".into(),
        }
    }
}

/// Implements `Display` (the message worded with the library's names,
/// [`key_name`]) and `Error` for error types whose
/// `message(&self, Naming) -> String` words them for a front end.
macro_rules! worded_error {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.message(&$crate::setting::key_name))
            }
        }

        // No `source`: a wrapped error's message is part of this one's,
        // and a chain printer must not repeat it.
        impl std::error::Error for $t {}
    };
}
pub(crate) use worded_error;

/// An error of this library worded with `name` for the settings it
/// mentions, or `None` for any other error: what a front end calls on each
/// link of an error chain before printing it.
pub fn worded(err: &(dyn std::error::Error + 'static), name: Naming<'_>) -> Option<String> {
    use crate::data::DataError;
    use crate::run::{RecordError, RunError, SpecError, TrainError};
    if let Some(e) = err.downcast_ref::<SpecError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<TrainError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<RunError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<DataError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<RecordError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<crate::model::ModelError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<crate::data::augment::AugmentError>() {
        return Some(e.message(name));
    }
    if let Some(e) = err.downcast_ref::<crate::preprocess::PrepareError>() {
        return Some(e.message(name));
    }
    None
}
