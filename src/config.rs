//! The run configuration and every rule about it, once. The CLI's value
//! parsers, the Python front end and the trainer all call these.

use crate::kernels::KernelPath;
use crate::nn::{Network, MAX_WIDTH};
use crate::optim::{Schedule, Sgd};
use crate::samples::Samples;

/// The default `--seed`.
pub const DEFAULT_SEED: u64 = 42;
/// The most threads a run may ask for.
pub const MAX_THREADS: usize = 1024;

/// A configuration problem: one line, naming the setting by its CLI flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// The message without the flag it starts with (for `--lr must be
    /// finite and > 0, got 0`, the part after `--lr`): for a parser whose
    /// caller already names the flag, as clap does.
    pub fn rule(&self) -> &str {
        match self.0.strip_prefix("--") {
            Some(rest) => rest.split_once(' ').map_or(&self.0, |(_, r)| r),
            None => &self.0,
        }
    }
}

fn err<T>(msg: String) -> Result<T, ConfigError> {
    Err(ConfigError(msg))
}

/// `--lr`: finite and > 0.
pub fn check_lr(lr: f32) -> Result<(), ConfigError> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        err(format!("--lr must be finite and > 0, got {lr}"))
    }
}

/// `--momentum`: in [0, 1).
pub fn check_momentum(m: f32) -> Result<(), ConfigError> {
    if m.is_finite() && (0.0..1.0).contains(&m) {
        Ok(())
    } else {
        err(format!("--momentum must be in [0, 1), got {m}"))
    }
}

/// `--weight-decay`: finite and ≥ 0.
pub fn check_weight_decay(wd: f32) -> Result<(), ConfigError> {
    if wd.is_finite() && wd >= 0.0 {
        Ok(())
    } else {
        err(format!("--weight-decay must be finite and >= 0, got {wd}"))
    }
}

/// `--val-split`: in [0, 1).
pub fn check_val_split(f: f32) -> Result<(), ConfigError> {
    if f.is_finite() && (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        err(format!("--val-split must be in [0, 1), got {f}"))
    }
}

/// `--nesterov` needs a momentum.
pub fn check_nesterov(nesterov: bool, momentum: f32) -> Result<(), ConfigError> {
    if nesterov && momentum == 0.0 {
        err("--nesterov needs --momentum > 0".into())
    } else {
        Ok(())
    }
}

/// `--hidden`: each width in 1..=MAX_WIDTH.
pub fn check_hidden(width: usize) -> Result<(), ConfigError> {
    if (1..=MAX_WIDTH).contains(&width) {
        Ok(())
    } else {
        err(format!("--hidden must be in 1..={MAX_WIDTH}, got {width}"))
    }
}

/// `--threads`: 1..=MAX_THREADS.
pub fn check_threads(threads: usize) -> Result<(), ConfigError> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(())
    } else {
        err(format!(
            "--threads must be in 1..={MAX_THREADS}, got {threads}"
        ))
    }
}

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
    /// Hidden-layer widths; empty for softmax regression.
    pub hidden: Vec<usize>,
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
            hidden: Vec::new(),
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
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epochs == 0 {
            return err("--epochs must be >= 1".into());
        }
        if self.batch_size == 0 {
            return err("--batch-size must be >= 1".into());
        }
        check_threads(self.threads)?;
        self.sgd.validate()?;
        check_val_split(self.val_split)?;
        for &h in &self.hidden {
            check_hidden(h)?;
        }
        if let Some(k) = self.kernel {
            if !k.is_available() {
                return err(format!("--kernel {k} is not available on this CPU"));
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

    /// The network's sizes for `features` inputs and `classes` outputs.
    pub fn sizes(&self, features: usize, classes: usize) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.hidden.len() + 2);
        s.push(features);
        s.extend_from_slice(&self.hidden);
        s.push(classes);
        s
    }

    /// The kernel path that runs for this network on `samples`: the fused
    /// kernels serve u8 samples (softmax regression entirely; an MLP's
    /// first layer); f32 samples run on `gemm`. An explicitly requested
    /// fused path that cannot serve the run is an error, not a silent
    /// substitution.
    pub fn kernel_for(&self, samples: &Samples<'_>) -> Result<KernelPath, ConfigError> {
        kernel_for(self.kernel, samples.as_u8().is_some())
    }
}

/// The rule behind [`TrainConfig::kernel_for`], for callers (evaluation,
/// prediction) that know only the sample type.
pub fn kernel_for(
    requested: Option<KernelPath>,
    u8_samples: bool,
) -> Result<KernelPath, ConfigError> {
    match requested {
        None if u8_samples => Ok(KernelPath::best()),
        None => Ok(KernelPath::Gemm),
        Some(k) if !k.is_fused() || u8_samples => Ok(k),
        Some(k) => err(format!(
            "--kernel {k} reads u8 pixels only; f32 data runs on --kernel gemm"
        )),
    }
}

/// The kernel path inference (evaluation, prediction) runs a network on
/// when none is asked for: the one that trained it (`recorded`) where it
/// serves these samples, so the logits are the training step's, else the
/// best one for the sample type.
pub fn inference_kernel(
    recorded: Option<KernelPath>,
    u8_samples: bool,
) -> Result<KernelPath, ConfigError> {
    match recorded.and_then(|k| kernel_for(Some(k), u8_samples).ok()) {
        Some(k) => Ok(k),
        None => kernel_for(None, u8_samples),
    }
}

impl Sgd {
    /// Checks the optimiser's settings (each rule above, once).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_lr(self.lr)?;
        check_momentum(self.momentum)?;
        check_nesterov(self.nesterov, self.momentum)?;
        check_weight_decay(self.weight_decay)
    }
}

/// `--schedule`: `constant`, `cosine` or `step:EVERY:GAMMA`.
pub fn parse_schedule(s: &str) -> Result<Schedule, ConfigError> {
    s.parse().map_err(ConfigError)
}

/// The network sizes a configuration asks for, checked.
pub fn network_sizes(
    cfg: &TrainConfig,
    features: usize,
    classes: usize,
) -> Result<Vec<usize>, ConfigError> {
    let sizes = cfg.sizes(features, classes);
    Network::check_sizes(&sizes).map_err(|e| ConfigError(e.0))?;
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_flag() {
        let cases: [(Result<(), ConfigError>, &str); 9] = [
            (check_lr(0.0), "--lr"),
            (check_lr(f32::NAN), "--lr"),
            (check_momentum(1.0), "--momentum"),
            (check_weight_decay(-1.0), "--weight-decay"),
            (check_val_split(1.0), "--val-split"),
            (check_nesterov(true, 0.0), "--nesterov"),
            (check_hidden(0), "--hidden"),
            (check_threads(0), "--threads"),
            (check_threads(MAX_THREADS + 1), "--threads"),
        ];
        for (r, flag) in cases {
            let e = r.unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e:?} should name {flag}");
        }
        assert!(check_lr(0.1).is_ok() && check_momentum(0.0).is_ok() && check_hidden(1).is_ok());
    }

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
        let e = kernel_for(Some(KernelPath::Portable), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--kernel portable") && e.contains("gemm"), "{e}");
    }

    #[test]
    fn sizes_put_the_hidden_layers_between() {
        let cfg = TrainConfig {
            hidden: vec![512, 256],
            ..TrainConfig::default()
        };
        assert_eq!(cfg.sizes(784, 10), [784, 512, 256, 10]);
        assert_eq!(
            network_sizes(&TrainConfig::default(), 784, 10).unwrap(),
            [784, 10]
        );
    }
}
