//! Turning the training flags (and, with `--resume`, the checkpoint's
//! record) into the settings of the run.
//!
//! Without `--resume`, a flag left out takes its default: the notebook's
//! settings (1 epoch, batch 100, lr 0.1, plain SGD, constant schedule, no
//! validation split, seed 42).
//!
//! With `--resume FILE`, a flag left out takes FILE's value, so
//! `--resume FILE` alone continues the run as it was started (up to its
//! planned `--epochs`). A flag that is given must equal FILE's value, or the
//! run stops with an error naming the flag and both values: the result is
//! then bitwise identical to the uninterrupted run. Only `--epochs` (the
//! total), `--threads` and `--oversubscribe` may differ; none of them
//! changes the bits of the epochs trained, except that a cosine schedule
//! spans the total, so changing `--epochs` changes its curve.

use std::fmt::Display;
use std::path::Path;

use anyhow::{bail, Result};

use idx_softmax::kernels::KernelPath;
use idx_softmax::optim::{Schedule, Sgd};
use idx_softmax::train::DEFAULT_SEED;

use super::args::TrainArgs;
use super::run_file::RunMeta;

/// The settings of a training run, before the data is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub epochs: usize,
    pub batch_size: usize,
    pub sgd: Sgd,
    pub seed: u64,
    pub val_split: f32,
    /// The kernel asked for (`--kernel`, `$IDX_SOFTMAX_KERNEL`, the
    /// checkpoint's, or the best); [`check_kernel`] checks it against a
    /// checkpoint once the data is known.
    pub kernel: KernelPath,
    /// Number of classes, when given or recorded.
    pub classes: Option<usize>,
}

/// `--kernel`, else `$IDX_SOFTMAX_KERNEL`, if either is set.
pub fn explicit_kernel(flag: Option<KernelPath>) -> Result<Option<KernelPath>> {
    match flag {
        Some(k) => Ok(Some(k)),
        None => KernelPath::from_env().map_err(anyhow::Error::msg),
    }
}

/// Settings for a fresh run on `kernel`. Errs (a usage error) when
/// `--nesterov` comes without a momentum.
pub fn fresh(args: &TrainArgs, kernel: KernelPath) -> Result<Plan, String> {
    let sgd = Sgd {
        lr: args.lr.unwrap_or(0.1),
        momentum: args.momentum.unwrap_or(0.0),
        nesterov: args.nesterov,
        weight_decay: args.weight_decay.unwrap_or(0.0),
        schedule: args.schedule.unwrap_or(Schedule::Constant),
    };
    if sgd.nesterov && !sgd.has_momentum() {
        return Err("--nesterov needs --momentum > 0".into());
    }
    sgd.validate()?;
    Ok(Plan {
        epochs: args.epochs.map_or(1, |e| e as usize),
        batch_size: args.batch_size.map_or(100, |b| b as usize),
        sgd,
        seed: args.seed.unwrap_or(DEFAULT_SEED),
        val_split: args.val_split.unwrap_or(0.0),
        kernel,
        classes: args.classes.map(|c| c as usize),
    })
}

/// Settings for a run resumed from the checkpoint `path` that recorded
/// `meta`: see the module documentation.
pub fn resumed(args: &TrainArgs, meta: &RunMeta, path: &Path) -> Result<Plan> {
    let pick = |flag: &str, key: &str, given: Option<String>, recorded: String| -> Result<()> {
        match given {
            Some(v) if v != recorded => bail!(
                "{flag} {v} does not match {}, which was trained with {key} {recorded} (leave {flag} out to continue with the checkpoint's value)",
                path.display()
            ),
            _ => Ok(()),
        }
    };
    // Compare parsed values (0.10 and 0.1 are the same lr), shown as text.
    fn differs<T: PartialEq + Display>(given: Option<T>, recorded: &T) -> Option<String> {
        given.filter(|v| v != recorded).map(|v| v.to_string())
    }
    let r = &meta.sgd;
    pick(
        "--seed",
        "seed",
        differs(args.seed, &meta.seed),
        meta.seed.to_string(),
    )?;
    pick(
        "--batch-size",
        "batch size",
        differs(args.batch_size.map(|b| b as usize), &meta.batch_size),
        meta.batch_size.to_string(),
    )?;
    pick("--lr", "lr", differs(args.lr, &r.lr), r.lr.to_string())?;
    pick(
        "--momentum",
        "momentum",
        differs(args.momentum, &r.momentum),
        r.momentum.to_string(),
    )?;
    pick(
        "--nesterov",
        "nesterov",
        differs(args.nesterov.then_some(true), &r.nesterov),
        r.nesterov.to_string(),
    )?;
    pick(
        "--weight-decay",
        "weight decay",
        differs(args.weight_decay, &r.weight_decay),
        r.weight_decay.to_string(),
    )?;
    pick(
        "--schedule",
        "schedule",
        differs(args.schedule, &r.schedule),
        r.schedule.to_string(),
    )?;
    pick(
        "--val-split",
        "validation split",
        differs(args.val_split, &meta.val_split),
        meta.val_split.to_string(),
    )?;
    pick(
        "--classes",
        "classes",
        differs(args.classes.map(|c| c as usize), &meta.classes),
        meta.classes.to_string(),
    )?;
    let kernel = match explicit_kernel(args.compute.kernel)? {
        Some(k) => k,
        None => meta.kernel.parse().map_err(|e: String| {
            anyhow::anyhow!(
                "{} was trained with kernel {}, which cannot run here: {e}",
                path.display(),
                meta.kernel
            )
        })?,
    };
    Ok(Plan {
        epochs: args.epochs.map_or(meta.epochs, |e| e as usize),
        batch_size: meta.batch_size,
        sgd: meta.sgd,
        seed: meta.seed,
        val_split: meta.val_split,
        kernel,
        classes: Some(meta.classes),
    })
}

/// Checks that the kernel path that will run (`effective`) is the one that
/// trained the checkpoint: another path rounds differently.
pub fn check_kernel(effective: KernelPath, meta: &RunMeta, path: &Path) -> Result<()> {
    if effective.name() != meta.kernel {
        bail!(
            "kernel {effective} does not match {}, which was trained with kernel {} (leave --kernel and $IDX_SOFTMAX_KERNEL unset to use the checkpoint's)",
            path.display(),
            meta.kernel
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RunMeta {
        RunMeta {
            seed: 7,
            epochs: 4,
            epochs_done: 1,
            batch_size: 50,
            sgd: Sgd {
                momentum: 0.9,
                schedule: Schedule::Cosine,
                ..Sgd::plain(0.5)
            },
            val_split: 0.0,
            kernel: "portable".into(),
            classes: 10,
            features: 784,
            sample_shape: vec![28, 28],
            train_samples: 600,
            test_samples: 100,
            data_dir: String::new(),
            class_names: Vec::new(),
            input_background: None,
        }
    }

    #[test]
    fn fresh_defaults_are_the_notebooks() {
        let plan = fresh(&TrainArgs::default(), KernelPath::Portable).unwrap();
        assert_eq!(plan.epochs, 1);
        assert_eq!(plan.batch_size, 100);
        assert_eq!(plan.sgd, Sgd::plain(0.1));
        assert_eq!(plan.seed, DEFAULT_SEED);
        assert_eq!(plan.val_split, 0.0);
        let nesterov = TrainArgs {
            nesterov: true,
            ..TrainArgs::default()
        };
        assert!(fresh(&nesterov, KernelPath::Portable).is_err());
    }

    #[test]
    fn resume_takes_missing_flags_from_the_checkpoint() {
        let plan = resumed(&TrainArgs::default(), &meta(), Path::new("a.st")).unwrap();
        assert_eq!(plan.epochs, 4);
        assert_eq!(plan.batch_size, 50);
        assert_eq!(plan.sgd, meta().sgd);
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.classes, Some(10));
    }

    #[test]
    fn resume_refuses_mismatches() {
        let args = TrainArgs {
            lr: Some(0.25),
            ..TrainArgs::default()
        };
        let e = resumed(&args, &meta(), Path::new("a.st"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--lr 0.25") && e.contains("lr 0.5") && e.contains("a.st"),
            "{e}"
        );
        let same = TrainArgs {
            lr: Some(0.5),
            seed: Some(7),
            momentum: Some(0.9),
            epochs: Some(9),
            ..TrainArgs::default()
        };
        assert_eq!(
            resumed(&same, &meta(), Path::new("a.st")).unwrap().epochs,
            9
        );
        let nesterov = TrainArgs {
            nesterov: true,
            ..TrainArgs::default()
        };
        let e = resumed(&nesterov, &meta(), Path::new("a.st"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--nesterov true") && e.contains("nesterov false"),
            "{e}"
        );
    }
}
