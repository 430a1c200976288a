//! A run's settings as the user gave them ([`RunSpec`]), every rule about
//! them ([`Setting`]), and how they resolve, against the defaults or a
//! checkpoint to resume, into the [`TrainConfig`] that runs.
//!
//! Each front end turns its own input into a `RunSpec` — the CLI its flags,
//! Python the estimator's parameters — and calls [`RunSpec::resolve`]. A
//! broken rule comes back as a typed [`SpecError`] naming the [`Setting`];
//! the front end words it with its own name for that setting
//! ([`SpecError::message`]): `--lr` on the command line, `lr` in Python.
//!
//! # Resuming
//!
//! Resolved against a checkpoint's record, a setting left out takes the
//! recorded value, so a resumed run continues as it was started. A setting
//! that is given must equal the recorded value, or resolving fails with
//! [`SpecError::Mismatch`] naming both: the result is then bitwise the
//! uninterrupted run's. Only the total `epochs`, `threads` and
//! `oversubscribe` may differ; none of them changes the bits of the epochs
//! trained (a cosine schedule spans the total, so a new total changes its
//! curve: [`resume_warning`] says so).

use std::fmt;

use crate::data::augment::{Augment, AugmentError, AugmentKind};
use crate::kernels::KernelPath;
use crate::nn::{ConvBlock, MAX_WIDTH};
use crate::optim::{Schedule, Sgd};
pub use crate::setting::Setting;

use super::config::{available_cpus, TrainConfig, MAX_CLASSES, MAX_THREADS};

/// A broken rule. [`SpecError::message`] words it with a front end's
/// names for the settings; `Display` uses the library's ([`Setting::key`]).
#[derive(Clone, Debug, PartialEq)]
pub enum SpecError {
    /// `given` breaks `setting`'s [`Setting::rule`].
    Invalid { setting: Setting, given: String },
    /// Nesterov momentum without a momentum.
    NesterovWithoutMomentum,
    /// The kernel path cannot run on this CPU.
    KernelUnavailable { kernel: KernelPath },
    /// A fused kernel path was asked for f32 samples.
    KernelNeedsU8 { kernel: KernelPath },
    /// Resuming: a given value differs from the one `source` recorded.
    Mismatch {
        setting: Setting,
        given: String,
        recorded: String,
        /// What was resumed: a checkpoint's path, "the fitted model", ….
        source: String,
    },
    /// Resuming a run that has already trained its planned epochs.
    AlreadyTrained { done: usize, source: String },
    /// A parameter of one kind of augmentation given with another.
    AugmentParameter {
        setting: Setting,
        applies_to: AugmentKind,
    },
    /// Augmentation deforms u8 images; these samples are not.
    AugmentNeedsU8,
}

impl From<AugmentError> for SpecError {
    fn from(e: AugmentError) -> Self {
        match e {
            AugmentError::UnknownKind(given) => Self::Invalid {
                setting: Setting::Augment,
                given: format!("'{given}'"),
            },
            AugmentError::Parameter { setting, value } => Self::Invalid {
                setting,
                given: value,
            },
            AugmentError::Shape(_) => Self::AugmentNeedsU8,
        }
    }
}

impl SpecError {
    /// The setting at fault.
    pub fn setting(&self) -> Setting {
        match self {
            Self::Invalid { setting, .. } | Self::Mismatch { setting, .. } => *setting,
            Self::NesterovWithoutMomentum => Setting::Nesterov,
            Self::KernelUnavailable { .. } | Self::KernelNeedsU8 { .. } => Setting::Kernel,
            Self::AlreadyTrained { .. } => Setting::Epochs,
            Self::AugmentParameter { setting, .. } => *setting,
            Self::AugmentNeedsU8 => Setting::Augment,
        }
    }

    /// The message, one line, naming each setting by `name`.
    pub fn message(&self, name: &dyn Fn(Setting) -> String) -> String {
        match self {
            Self::Invalid { setting, given } => {
                format!("{} {}, got {given}", name(*setting), setting.rule())
            }
            Self::NesterovWithoutMomentum => format!(
                "{} needs {} > 0",
                name(Setting::Nesterov),
                name(Setting::Momentum)
            ),
            Self::KernelUnavailable { kernel } => {
                format!(
                    "{} {kernel} is not available on this CPU",
                    name(Setting::Kernel)
                )
            }
            Self::KernelNeedsU8 { kernel } => {
                let n = name(Setting::Kernel);
                format!("{n} {kernel} reads u8 pixels only; f32 data runs on {n} gemm")
            }
            Self::Mismatch {
                setting,
                given,
                recorded,
                source,
            } => format!(
                "{} {given} does not match {source}, which was trained with {} {recorded}",
                name(*setting),
                setting.words()
            ),
            Self::AlreadyTrained { done, source } => format!(
                "{source} has already trained {done} epoch(s); ask for more with {}",
                name(Setting::Epochs)
            ),
            Self::AugmentParameter {
                setting,
                applies_to,
            } => format!(
                "{} applies to {} {applies_to} only",
                name(*setting),
                name(Setting::Augment)
            ),
            Self::AugmentNeedsU8 => format!(
                "{} deforms u8 images (2-D or 3-D samples of bytes); these samples are not",
                name(Setting::Augment)
            ),
        }
    }

    /// The rule alone, without the setting's name: what a command-line
    /// parser that names the flag itself reports.
    pub fn rule_text(&self) -> String {
        match self {
            Self::Invalid { setting, given } => format!("{}, got {given}", setting.rule()),
            other => other.to_string(),
        }
    }
}

crate::setting::worded_error!(SpecError);

fn invalid<T>(setting: Setting, given: impl fmt::Display) -> Result<T, SpecError> {
    Err(SpecError::Invalid {
        setting,
        given: given.to_string(),
    })
}

/// `epochs` and `batch_size`: whole numbers >= 1.
pub fn check_count(setting: Setting, v: i64) -> Result<usize, SpecError> {
    match usize::try_from(v) {
        Ok(n) if n >= 1 => Ok(n),
        _ => invalid(setting, v),
    }
}

/// `lr`: finite and > 0.
pub fn check_lr(lr: f32) -> Result<f32, SpecError> {
    if lr.is_finite() && lr > 0.0 {
        Ok(lr)
    } else {
        invalid(Setting::Lr, lr)
    }
}

/// `momentum`: in [0, 1).
pub fn check_momentum(m: f32) -> Result<f32, SpecError> {
    if m.is_finite() && (0.0..1.0).contains(&m) {
        Ok(m)
    } else {
        invalid(Setting::Momentum, m)
    }
}

/// `weight_decay`: finite and >= 0.
pub fn check_weight_decay(wd: f32) -> Result<f32, SpecError> {
    if wd.is_finite() && wd >= 0.0 {
        Ok(wd)
    } else {
        invalid(Setting::WeightDecay, wd)
    }
}

/// `val_split`: in [0, 1).
pub fn check_val_split(f: f32) -> Result<f32, SpecError> {
    if f.is_finite() && (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        invalid(Setting::ValSplit, f)
    }
}

/// `nesterov` needs a momentum.
pub fn check_nesterov(nesterov: bool, momentum: f32) -> Result<(), SpecError> {
    if nesterov && momentum == 0.0 {
        Err(SpecError::NesterovWithoutMomentum)
    } else {
        Ok(())
    }
}

/// The optimiser's settings, each by its rule.
pub fn check_sgd(sgd: &Sgd) -> Result<(), SpecError> {
    check_lr(sgd.lr)?;
    check_momentum(sgd.momentum)?;
    check_nesterov(sgd.nesterov, sgd.momentum)?;
    check_weight_decay(sgd.weight_decay)?;
    Ok(())
}

/// A hidden layer's width: in 1..=MAX_WIDTH.
pub fn check_hidden(width: i64) -> Result<usize, SpecError> {
    match usize::try_from(width) {
        Ok(w) if (1..=MAX_WIDTH).contains(&w) => Ok(w),
        _ => invalid(Setting::Hidden, width),
    }
}

/// A conv block: channels in 1..=MAX_CHANNELS, an odd kernel side in
/// 1..=MAX_KERNEL.
pub fn check_conv(channels: i64, kernel: i64) -> Result<ConvBlock, SpecError> {
    let channels = usize::try_from(channels)
        .ok()
        .filter(|c| (1..=crate::nn::arch::MAX_CHANNELS).contains(c))
        .map_or_else(|| invalid(Setting::Conv, channels), Ok)?;
    let kernel = usize::try_from(kernel)
        .ok()
        .filter(|k| k % 2 == 1 && (1..=crate::nn::arch::MAX_KERNEL).contains(k))
        .map_or_else(|| invalid(Setting::ConvKernel, kernel), Ok)?;
    Ok(ConvBlock { channels, kernel })
}

/// `classes`: in 2..=MAX_CLASSES.
pub fn check_classes(c: i64) -> Result<usize, SpecError> {
    match usize::try_from(c) {
        Ok(c) if (2..=MAX_CLASSES).contains(&c) => Ok(c),
        _ => invalid(Setting::Classes, c),
    }
}

/// `threads`: in 1..=MAX_THREADS.
pub fn check_threads(t: i64) -> Result<usize, SpecError> {
    match usize::try_from(t) {
        Ok(t) if (1..=MAX_THREADS).contains(&t) => Ok(t),
        _ => invalid(Setting::Threads, t),
    }
}

/// The threads a run or an inference uses: `given` (checked), else every
/// CPU.
pub fn thread_count(given: Option<i64>) -> Result<usize, SpecError> {
    match given {
        Some(t) => check_threads(t),
        None => Ok(available_cpus()),
    }
}

/// `schedule`: `constant`, `cosine` or `step:EVERY:GAMMA`.
pub fn parse_schedule(s: &str) -> Result<Schedule, SpecError> {
    s.parse()
        .or_else(|_| invalid(Setting::Schedule, format!("'{s}'")))
}

/// `kernel`: a path's name; whether this CPU has it is checked on use.
pub fn parse_kernel(s: &str) -> Result<KernelPath, SpecError> {
    s.parse()
        .or_else(|_| invalid(Setting::Kernel, format!("'{s}'")))
}

/// `seed`: an integer in 0..=u64::MAX, from any integer a front end holds.
pub fn check_seed(seed: i128) -> Result<u64, SpecError> {
    u64::try_from(seed).or_else(|_| invalid(Setting::Seed, seed))
}

/// Checks the kernel cap the environment sets ([`crate::kernels::dispatch::KERNEL_ENV`]):
/// a value that names no path is refused, not ignored.
pub fn check_kernel_env() -> Result<(), SpecError> {
    match crate::kernels::dispatch::env_cap() {
        Ok(_) => Ok(()),
        Err(v) => invalid(
            Setting::Kernel,
            format!("'{v}' (in ${})", crate::kernels::dispatch::KERNEL_ENV),
        ),
    }
}

/// The kernel path that runs a network on u8 (or not) samples when
/// `requested` is asked for: the fused kernels read u8 pixels (softmax
/// regression entirely, an MLP's first layer); f32 samples run on `gemm`.
/// An explicitly requested fused path that cannot serve the samples is an
/// error, not a silent substitution.
pub fn kernel_for(
    requested: Option<KernelPath>,
    u8_samples: bool,
) -> Result<KernelPath, SpecError> {
    match requested {
        Some(k) if !k.is_available() => Err(SpecError::KernelUnavailable { kernel: k }),
        None if u8_samples => Ok(KernelPath::best()),
        None => Ok(KernelPath::Gemm),
        Some(k) if !k.is_fused() || u8_samples => Ok(k),
        Some(k) => Err(SpecError::KernelNeedsU8 { kernel: k }),
    }
}

/// The kernel path inference (evaluation, prediction) runs a model on:
/// the one asked for (`requested`, checked as for training), else the one
/// that trained it (`recorded`) where it serves, so the logits are the
/// training step's, else the best ([`kernel_for`]'s `fused_ok`).
pub fn inference_kernel(
    requested: Option<KernelPath>,
    recorded: Option<KernelPath>,
    fused_ok: bool,
) -> Result<KernelPath, SpecError> {
    if requested.is_some() {
        return kernel_for(requested, fused_ok);
    }
    match recorded.and_then(|k| kernel_for(Some(k), fused_ok).ok()) {
        Some(k) => Ok(k),
        None => kernel_for(None, fused_ok),
    }
}

/// A run as the user asked for it: each setting given, or `None` when
/// left to its default (or, when resuming, to the checkpoint's value).
/// Values are kept as given, so a message can quote them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSpec {
    /// The run's total epochs.
    pub epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f32>,
    pub schedule: Option<Schedule>,
    pub val_split: Option<f32>,
    pub seed: Option<u64>,
    /// The kind of augmentation, and its parameters (each for its kind
    /// only; the kind's defaults for those left out).
    pub augment: Option<AugmentKind>,
    pub max_shift: Option<i64>,
    pub rotate: Option<f32>,
    pub scale: Option<f32>,
    pub shear: Option<f32>,
    pub translate: Option<f32>,
    pub sigma: Option<f32>,
    pub alpha: Option<f32>,
    /// Conv blocks as `(channels, kernel side)`; `Some(vec![])` asks for
    /// none explicitly.
    pub conv: Option<Vec<(i64, i64)>>,
    /// Hidden-layer widths; `Some(vec![])` asks for none explicitly.
    pub hidden: Option<Vec<i64>>,
    /// The number of classes; the data's (largest label + 1) when `None`.
    pub classes: Option<i64>,
    /// Threads; every CPU when `None`.
    pub threads: Option<i64>,
    /// The kernel path; the best for the data when `None`.
    pub kernel: Option<KernelPath>,
    /// Run exactly `threads` workers even beyond the CPUs.
    pub oversubscribe: bool,
}

/// What a resumed run recorded: its settings and where they come from.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'r> {
    pub config: &'r TrainConfig,
    pub classes: usize,
    /// Names the source in messages: a checkpoint's path, "the fitted
    /// model".
    pub source: &'r str,
    pub epochs_done: usize,
}

/// A spec resolved: the configuration that runs and the class count
/// (`None`: the data decides).
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub config: TrainConfig,
    pub classes: Option<usize>,
}

impl RunSpec {
    /// Resolves the spec against the defaults ([`TrainConfig::default`]),
    /// or, with `recorded`, against a checkpoint (see the module
    /// documentation). Checks every rule.
    pub fn resolve(&self, recorded: Option<Recorded<'_>>) -> Result<Resolved, SpecError> {
        let defaults = TrainConfig::default();
        let base = recorded.map_or(&defaults, |r| r.config);
        // A given value must match the record when resuming; `shown` is
        // how a value reads in the message.
        let pick = |setting: Setting, given: Option<String>, recorded_value: String| match (
            recorded, given,
        ) {
            (Some(r), Some(g)) if g != recorded_value => Err(SpecError::Mismatch {
                setting,
                given: g,
                recorded: recorded_value,
                source: r.source.to_owned(),
            }),
            _ => Ok(()),
        };

        let batch_size = self
            .batch_size
            .map(|b| check_count(Setting::BatchSize, b))
            .transpose()?;
        let lr = self.lr.map(check_lr).transpose()?;
        let momentum = self.momentum.map(check_momentum).transpose()?;
        let weight_decay = self.weight_decay.map(check_weight_decay).transpose()?;
        let val_split = self.val_split.map(check_val_split).transpose()?;
        let hidden = match &self.hidden {
            Some(h) => Some(
                h.iter()
                    .map(|&w| check_hidden(w))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let conv = match &self.conv {
            Some(c) => Some(
                c.iter()
                    .map(|&(ch, k)| check_conv(ch, k))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let augment = self.augment_given(base)?;
        let classes = self.classes.map(check_classes).transpose()?;
        let epochs = self
            .epochs
            .map(|e| check_count(Setting::Epochs, e))
            .transpose()?;
        let threads = thread_count(self.threads)?;
        check_kernel_env()?;
        let kernel = self.kernel;
        if let Some(k) = kernel {
            if !k.is_available() {
                return Err(SpecError::KernelUnavailable { kernel: k });
            }
        }

        // Compare parsed values (0.10 and 0.1 are the same lr), shown as
        // text.
        fn differs<T: PartialEq + fmt::Display>(given: Option<T>, recorded: &T) -> Option<String> {
            given.filter(|v| v != recorded).map(|v| v.to_string())
        }
        let b = &base.sgd;
        pick(
            Setting::Seed,
            differs(self.seed, &base.seed),
            base.seed.to_string(),
        )?;
        pick(
            Setting::BatchSize,
            differs(batch_size, &base.batch_size),
            base.batch_size.to_string(),
        )?;
        pick(Setting::Lr, differs(lr, &b.lr), b.lr.to_string())?;
        pick(
            Setting::Momentum,
            differs(momentum, &b.momentum),
            b.momentum.to_string(),
        )?;
        pick(
            Setting::Nesterov,
            differs(self.nesterov, &b.nesterov),
            b.nesterov.to_string(),
        )?;
        pick(
            Setting::WeightDecay,
            differs(weight_decay, &b.weight_decay),
            b.weight_decay.to_string(),
        )?;
        pick(
            Setting::Schedule,
            differs(self.schedule, &b.schedule),
            b.schedule.to_string(),
        )?;
        pick(
            Setting::ValSplit,
            differs(val_split, &base.val_split),
            base.val_split.to_string(),
        )?;
        pick(
            Setting::Hidden,
            hidden
                .as_ref()
                .filter(|h| **h != base.hidden)
                .map(|h| hidden_text(h)),
            hidden_text(&base.hidden),
        )?;
        pick(
            Setting::Conv,
            conv.as_ref()
                .filter(|c| **c != base.conv)
                .map(|c| conv_text(c)),
            conv_text(&base.conv),
        )?;
        pick(
            Setting::Augment,
            augment.filter(|a| *a != base.augment).map(|a| a.record()),
            base.augment.record(),
        )?;
        if let Some(r) = recorded {
            pick(
                Setting::Classes,
                differs(classes, &r.classes),
                r.classes.to_string(),
            )?;
        }

        let config = TrainConfig {
            epochs: epochs.unwrap_or(base.epochs),
            batch_size: batch_size.unwrap_or(base.batch_size),
            sgd: Sgd {
                lr: lr.unwrap_or(b.lr),
                momentum: momentum.unwrap_or(b.momentum),
                nesterov: self.nesterov.unwrap_or(b.nesterov),
                weight_decay: weight_decay.unwrap_or(b.weight_decay),
                schedule: self.schedule.unwrap_or(b.schedule),
            },
            seed: self.seed.unwrap_or(base.seed),
            val_split: val_split.unwrap_or(base.val_split),
            conv: conv.unwrap_or_else(|| base.conv.clone()),
            hidden: hidden.unwrap_or_else(|| base.hidden.clone()),
            augment: augment.unwrap_or(base.augment),
            threads,
            kernel: kernel.or(base.kernel),
            oversubscribe: self.oversubscribe,
        };
        check_nesterov(config.sgd.nesterov, config.sgd.momentum)?;
        if let Some(r) = recorded {
            if r.epochs_done >= config.epochs {
                return Err(SpecError::AlreadyTrained {
                    done: r.epochs_done,
                    source: r.source.to_owned(),
                });
            }
        }
        Ok(Resolved {
            config,
            classes: recorded.map(|r| r.classes).or(classes),
        })
    }
}

impl RunSpec {
    /// The augmentation the spec asks for, if it asks for one: its kind
    /// (given, else `base`'s) with the parameters given over the kind's
    /// defaults, each checked; `None` when no augmentation setting is
    /// given. A parameter of another kind is an error.
    fn augment_given(&self, base: &TrainConfig) -> Result<Option<Augment>, SpecError> {
        let params: [(Setting, Option<f32>); 7] = [
            (Setting::MaxShift, self.max_shift.map(|v| v as f32)),
            (Setting::Rotate, self.rotate),
            (Setting::Scale, self.scale),
            (Setting::Shear, self.shear),
            (Setting::Translate, self.translate),
            (Setting::Sigma, self.sigma),
            (Setting::Alpha, self.alpha),
        ];
        if self.augment.is_none() && params.iter().all(|(_, v)| v.is_none()) {
            return Ok(None);
        }
        let kind = self.augment.unwrap_or(base.augment.kind());
        // The base's parameters when the kind is the base's (a resumed
        // run), else the kind's defaults.
        let mut a = if kind == base.augment.kind() {
            base.augment
        } else {
            Augment::defaults(kind)
        };
        for (setting, value) in params {
            let Some(v) = value else { continue };
            let applies_to = match setting {
                Setting::MaxShift => AugmentKind::Shift,
                Setting::Sigma | Setting::Alpha => AugmentKind::Elastic,
                _ => AugmentKind::Affine,
            };
            match (&mut a, setting) {
                (Augment::Shift(p), Setting::MaxShift) => {
                    let given = self.max_shift.unwrap_or_default();
                    p.max_shift = u32::try_from(given).map_err(|_| SpecError::Invalid {
                        setting,
                        given: given.to_string(),
                    })?;
                }
                (Augment::Affine(p), Setting::Rotate) => p.rotate_deg = v,
                (Augment::Affine(p), Setting::Scale) => p.scale = v,
                (Augment::Affine(p), Setting::Shear) => p.shear = v,
                (Augment::Affine(p), Setting::Translate) => p.translate = v,
                (Augment::Elastic(p), Setting::Sigma) => p.sigma = v,
                (Augment::Elastic(p), Setting::Alpha) => p.alpha = v,
                _ => {
                    return Err(SpecError::AugmentParameter {
                        setting,
                        applies_to,
                    })
                }
            }
        }
        a.validate()?;
        Ok(Some(a))
    }
}

/// `6x5,16x5`, or `none`.
fn conv_text(c: &[ConvBlock]) -> String {
    if c.is_empty() {
        "none".to_owned()
    } else {
        crate::nn::arch::conv_string(c)
    }
}

/// `256,128`, or `none`.
fn hidden_text(h: &[usize]) -> String {
    if h.is_empty() {
        "none".to_owned()
    } else {
        h.iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The warning for a resumed run whose cosine schedule was planned over
/// another number of epochs: its curve changes, so the result matches no
/// uninterrupted run.
pub fn resume_warning(
    recorded: &TrainConfig,
    resolved: &TrainConfig,
    source: &str,
) -> Option<String> {
    (recorded.sgd.schedule == Schedule::Cosine && recorded.epochs != resolved.epochs).then(|| {
        format!(
            "{source} planned {} epoch(s) of cosine schedule; continuing to {} changes the curve, so the result will match no uninterrupted run",
            recorded.epochs, resolved.epochs
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(s: Setting) -> String {
        format!("--{}", s.key().replace('_', "-"))
    }

    #[test]
    fn each_rule_names_its_setting_and_the_value_given() {
        let cases: [(SpecError, &str, &str); 9] = [
            (check_lr(0.0).unwrap_err(), "--lr", "got 0"),
            (check_lr(f32::NAN).unwrap_err(), "--lr", "got NaN"),
            (check_momentum(1.0).unwrap_err(), "--momentum", "got 1"),
            (
                check_weight_decay(-1.0).unwrap_err(),
                "--weight-decay",
                "got -1",
            ),
            (check_val_split(1.0).unwrap_err(), "--val-split", "got 1"),
            (check_hidden(-3).unwrap_err(), "--hidden", "got -3"),
            (check_threads(0).unwrap_err(), "--threads", "got 0"),
            (
                check_threads(MAX_THREADS as i64 + 1).unwrap_err(),
                "--threads",
                "got 1025",
            ),
            (check_seed(-1).unwrap_err(), "--seed", "got -1"),
        ];
        for (e, name, got) in cases {
            let m = e.message(&flag);
            assert!(m.starts_with(name) && m.ends_with(got), "{m:?}");
            assert!(!e.to_string().starts_with("--"), "{e}");
        }
        let e = check_nesterov(true, 0.0).unwrap_err();
        assert_eq!(e.message(&flag), "--nesterov needs --momentum > 0");
        assert_eq!(e.to_string(), "nesterov needs momentum > 0");
        assert_eq!(
            check_lr(0.0).unwrap_err().rule_text(),
            "must be finite and > 0, got 0"
        );
    }

    #[test]
    fn defaults_are_the_notebooks() {
        let r = RunSpec::default().resolve(None).unwrap();
        let c = r.config;
        assert_eq!((c.epochs, c.batch_size, c.seed), (1, 100, 42));
        assert_eq!(c.sgd, Sgd::plain(0.1));
        assert_eq!(c.val_split, 0.0);
        assert!(c.hidden.is_empty());
        assert_eq!(c.threads, available_cpus());
        assert_eq!(r.classes, None);
        let nesterov = RunSpec {
            nesterov: Some(true),
            ..RunSpec::default()
        };
        assert_eq!(
            nesterov.resolve(None).unwrap_err(),
            SpecError::NesterovWithoutMomentum
        );
    }

    fn recorded() -> TrainConfig {
        TrainConfig {
            epochs: 4,
            batch_size: 50,
            sgd: Sgd {
                momentum: 0.9,
                schedule: Schedule::Cosine,
                ..Sgd::plain(0.5)
            },
            seed: 7,
            hidden: vec![16],
            kernel: Some(KernelPath::Portable),
            ..TrainConfig::default()
        }
    }

    fn resume(spec: &RunSpec) -> Result<Resolved, SpecError> {
        let rec = recorded();
        spec.resolve(Some(Recorded {
            config: &rec,
            classes: 10,
            source: "a.st",
            epochs_done: 1,
        }))
    }

    #[test]
    fn resume_takes_missing_settings_from_the_record() {
        let r = resume(&RunSpec::default()).unwrap();
        let rec = recorded();
        assert_eq!(r.config.epochs, 4);
        assert_eq!(r.config.batch_size, 50);
        assert_eq!(r.config.sgd, rec.sgd);
        assert_eq!(r.config.seed, 7);
        assert_eq!(r.config.hidden, vec![16]);
        assert_eq!(r.config.kernel, Some(KernelPath::Portable));
        assert_eq!(r.classes, Some(10));
    }

    #[test]
    fn resume_refuses_mismatches_and_finished_runs() {
        let e = resume(&RunSpec {
            lr: Some(0.25),
            ..RunSpec::default()
        })
        .unwrap_err();
        assert_eq!(
            e.message(&flag),
            "--lr 0.25 does not match a.st, which was trained with lr 0.5"
        );
        let same = RunSpec {
            lr: Some(0.5),
            seed: Some(7),
            momentum: Some(0.9),
            epochs: Some(9),
            hidden: Some(vec![16]),
            ..RunSpec::default()
        };
        assert_eq!(resume(&same).unwrap().config.epochs, 9);
        let e = resume(&RunSpec {
            nesterov: Some(true),
            ..RunSpec::default()
        })
        .unwrap_err();
        assert!(e.message(&flag).contains("--nesterov true"), "{e}");
        let e = resume(&RunSpec {
            hidden: Some(vec![32]),
            ..RunSpec::default()
        })
        .unwrap_err();
        assert!(
            e.message(&flag).contains("--hidden 32") && e.to_string().contains("hidden layers 16"),
            "{e}"
        );
        let e = resume(&RunSpec {
            epochs: Some(1),
            ..RunSpec::default()
        })
        .unwrap_err();
        assert_eq!(
            e.message(&flag),
            "a.st has already trained 1 epoch(s); ask for more with --epochs"
        );
    }

    #[test]
    fn the_kernel_rule() {
        assert_eq!(kernel_for(None, true), Ok(KernelPath::best()));
        assert_eq!(kernel_for(None, false), Ok(KernelPath::Gemm));
        assert_eq!(
            kernel_for(Some(KernelPath::Gemm), true),
            Ok(KernelPath::Gemm)
        );
        assert_eq!(
            kernel_for(Some(KernelPath::Portable), true),
            Ok(KernelPath::Portable)
        );
        let e = kernel_for(Some(KernelPath::Portable), false).unwrap_err();
        assert_eq!(
            e.message(&flag),
            "--kernel portable reads u8 pixels only; f32 data runs on --kernel gemm"
        );
        assert_eq!(
            inference_kernel(None, Some(KernelPath::Portable), false),
            Ok(KernelPath::Gemm)
        );
        assert_eq!(
            inference_kernel(None, Some(KernelPath::Portable), true),
            Ok(KernelPath::Portable)
        );
    }
}
