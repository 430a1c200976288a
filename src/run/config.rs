//! The resolved configuration of a training run ([`TrainConfig`]) and its
//! defaults: the one place a default is stated. Front ends never state one;
//! they leave a setting out of their [`super::RunSpec`] and
//! [`super::RunSpec::resolve`] fills it in from here.

use crate::data::augment::Augment;
use crate::data::Samples;
use crate::kernels::KernelPath;
use crate::nn::{Architecture, ConvBlock, ImageShape};
use crate::optim::Sgd;

use super::spec::{self, SpecError};

pub use crate::data::MAX_CLASSES;

/// The default seed.
pub const DEFAULT_SEED: u64 = 42;
/// The most threads a run may ask for.
pub const MAX_THREADS: usize = 1024;

/// The hidden layers of Python's `MLPClassifier` when none are given (the
/// CLI's default network has none: softmax regression).
pub const MLP_HIDDEN: &[usize] = &[256];
/// Python's `ConvClassifier` when nothing is given: LeNet-5's shape, the
/// CLI's `--conv 6 --conv 16 --hidden 120 --hidden 84`.
pub const CNN_CONV: &[usize] = &[6, 16];
/// The conv kernel side of `ConvClassifier` (and of `--conv C`).
pub const CNN_KERNEL: usize = crate::nn::arch::DEFAULT_KERNEL;
/// The hidden layers of `ConvClassifier`.
pub const CNN_HIDDEN: &[usize] = &[120, 84];

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq)]
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
    /// Conv blocks (Conv2d → ReLU → MaxPool2d(2)), before the hidden
    /// layers; empty for softmax regression and MLPs.
    pub conv: Vec<ConvBlock>,
    /// Hidden-layer widths; empty for softmax regression.
    pub hidden: Vec<usize>,
    /// How each training sample is deformed, every epoch
    /// ([`crate::data::augment`]).
    pub augment: Augment,
    /// Size of the thread pool; the step runs `min(threads, CPUs)` workers
    /// (see [`TrainConfig::workers`]). The bits are the same either way.
    pub threads: usize,
    /// The kernel path asked for; `None` picks the best one for the data
    /// and network ([`TrainConfig::kernel_for`]).
    pub kernel: Option<KernelPath>,
    /// Run exactly `threads` workers even when that is more than the CPUs
    /// available. Off by default: an oversubscribed worker that the OS
    /// deschedules inside a chunk holds up the end of its phase. The
    /// determinism tests turn it on to exercise every worker count.
    pub oversubscribe: bool,
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
            conv: Vec::new(),
            hidden: Vec::new(),
            augment: Augment::None,
            threads: available_cpus(),
            kernel: None,
            oversubscribe: false,
        }
    }
}

/// The CPUs this process may use.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl TrainConfig {
    /// Checks every setting by the rules of [`super::spec`] (a
    /// configuration built directly, not resolved from a spec, is checked
    /// here too).
    pub fn validate(&self) -> Result<(), SpecError> {
        use crate::setting::Setting;
        spec::check_count(Setting::Epochs, self.epochs as i64)?;
        spec::check_count(Setting::BatchSize, self.batch_size as i64)?;
        spec::check_threads(self.threads as i64)?;
        spec::check_sgd(&self.sgd)?;
        spec::check_val_split(self.val_split)?;
        for &h in &self.hidden {
            spec::check_hidden(h as i64)?;
        }
        for b in &self.conv {
            spec::check_conv(b.channels as i64, b.kernel as i64)?;
        }
        self.augment.validate().map_err(SpecError::from)?;
        if let Some(k) = self.kernel {
            if !k.is_available() {
                return Err(SpecError::KernelUnavailable { kernel: k });
            }
        }
        Ok(())
    }

    /// The number of step workers this configuration runs.
    pub fn workers(&self) -> usize {
        if self.oversubscribe {
            self.threads
        } else {
            self.threads.min(available_cpus()).max(1)
        }
    }

    /// The network this configuration builds for samples of
    /// `sample_shape` and `classes` classes (unchecked: see
    /// [`Architecture::check`]).
    pub fn architecture(&self, sample_shape: &[usize], classes: usize) -> Architecture {
        Architecture {
            features: sample_shape.iter().product(),
            image: ImageShape::of_sample(sample_shape).filter(|_| !self.conv.is_empty()),
            conv: self.conv.clone(),
            hidden: self.hidden.clone(),
            classes,
        }
    }

    /// The kernel path that runs for this network on `samples`
    /// ([`spec::kernel_for`]: a linear first layer needs u8 samples for a
    /// fused path; a conv layer takes any).
    pub fn kernel_for(&self, samples: &Samples<'_>) -> Result<KernelPath, SpecError> {
        spec::kernel_for(
            self.kernel,
            samples.as_u8().is_some() || !self.conv.is_empty(),
        )
    }

    /// The settings a checkpoint records, by [`crate::setting::Setting::key`]
    /// (JSON): what `--json` prints and Python's `load` turns back into an
    /// estimator's parameters. f32 values appear as their shortest decimal
    /// (0.1, not 0.10000000149011612).
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": f32_as_printed(self.sgd.lr),
            "momentum": f32_as_printed(self.sgd.momentum),
            "nesterov": self.sgd.nesterov,
            "weight_decay": f32_as_printed(self.sgd.weight_decay),
            "schedule": self.sgd.schedule.to_string(),
            "val_split": f32_as_printed(self.val_split),
            "seed": self.seed,
            "conv": self.conv.iter().map(|b| [b.channels, b.kernel]).collect::<Vec<_>>(),
            "hidden": self.hidden,
            "augment": self.augment.record(),
        })
    }
}

/// The f32 as its shortest decimal form, widened (0.1f32 → 0.1, not
/// 0.10000000149011612).
pub fn f32_as_printed(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_covers_the_whole_config() {
        assert!(TrainConfig::default().validate().is_ok());
        let bad = [
            TrainConfig {
                epochs: 0,
                ..TrainConfig::default()
            },
            TrainConfig {
                batch_size: 0,
                ..TrainConfig::default()
            },
            TrainConfig {
                hidden: vec![16, 0],
                ..TrainConfig::default()
            },
            TrainConfig {
                val_split: -0.5,
                ..TrainConfig::default()
            },
            TrainConfig {
                sgd: Sgd {
                    nesterov: true,
                    ..Sgd::plain(0.1)
                },
                ..TrainConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?} passed");
        }
    }

    #[test]
    fn sizes_put_the_hidden_layers_between() {
        let cfg = TrainConfig {
            hidden: vec![512, 256],
            ..TrainConfig::default()
        };
        assert_eq!(
            cfg.architecture(&[28, 28], 10).linear_sizes(),
            [784, 512, 256, 10]
        );
        assert!(TrainConfig::default().architecture(&[784], 10).is_linear());
        assert_eq!(f32_as_printed(0.1), 0.1);
    }
}
