//! `train` (and the top level): train, evaluate after every epoch, save,
//! report.
//!
//! Order of work, so that a mistake costs nothing: output paths are checked
//! first, then the checkpoint to resume from, then the data; only then does
//! training start. After each epoch the `--save` checkpoint and the
//! `--metrics-json` file are rewritten atomically, so a run killed (or
//! failing) at any point leaves complete files describing its last finished
//! epoch, and `--resume` continues from there.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use serde_json::json;

use idx_softmax::dataset::Dataset;
use idx_softmax::image;
use idx_softmax::labels;
use idx_softmax::metrics;
use idx_softmax::optim::{Schedule, Sgd};
use idx_softmax::plot;
use idx_softmax::preprocess;
use idx_softmax::run_record::{self, shape_string, Results, RunMeta};
use idx_softmax::samples::Samples;
use idx_softmax::train::{split_train_val, EpochReport, TrainConfig, Trainer};

use super::args::TrainArgs;
use super::common::{
    check_output, f32_as_printed, image_shape, load_dataset, rss_anon_kb, TrainedOn,
};
use super::metrics_log::MetricsLog;
use super::report::{epoch_json, epoch_line, Progress};
use super::settings::{self, explicit_kernel};

/// Runs `train` with `args`.
pub fn run(args: TrainArgs) -> Result<()> {
    for (flag, path) in [
        ("--save", &args.save),
        ("--weights-png", &args.weights_png),
        ("--metrics-json", &args.metrics_json),
        ("--plot", &args.plot),
    ] {
        if let Some(p) = path {
            check_output(p, flag)?;
        }
    }
    let resume = match &args.resume {
        Some(path) => {
            let (_, meta, state) = run_record::load(path)?;
            Some((path.clone(), meta, state))
        }
        None => None,
    };
    let (cfg, classes) = match &resume {
        Some((path, meta, _)) => settings::resumed(&args, meta, path)?,
        None => settings::fresh(&args, explicit_kernel(args.compute.kernel)?)?,
    };
    let trained_on = resume.as_ref().map(|(path, meta, _)| TrainedOn {
        model: path,
        data_dir: Some(meta.data_dir.as_str()).filter(|d| !d.is_empty()),
    });
    let loaded = load_dataset(&args.data, classes, trained_on)?;
    let (data_dir, data) = (&loaded.dir, &loaded.data);
    let train_set = data.train.samples(data.classes)?;
    let test_set = data.test.samples(data.classes)?;
    let kernel = cfg.kernel_for(&train_set)?;
    if let Some((path, meta, _)) = &resume {
        check_same_data(meta, data, path)?;
        loaded.print_note();
        settings::check_kernel(kernel, meta, path)?;
        if meta.config.sgd.schedule == Schedule::Cosine && cfg.epochs != meta.config.epochs {
            eprintln!(
                "warning: {} planned {} epoch(s) of cosine schedule; continuing to {} changes the curve, so the result will match no uninterrupted run",
                path.display(),
                meta.config.epochs,
                cfg.epochs
            );
        }
    }
    let picture_shape = match &args.weights_png {
        Some(_) => Some(image_shape(
            data.train.images.sample_shape(),
            data.train.images.path(),
        )?),
        None => None,
    };

    let (mut trainer, resumed_from) = match resume {
        Some((path, _, state)) => (
            Trainer::resume(&train_set, Some(&test_set), cfg.clone(), state)
                .with_context(|| format!("resuming from {}", path.display()))?,
            Some(path),
        ),
        None => (
            Trainer::new(&train_set, Some(&test_set), cfg.clone())
                .with_context(|| format!("training on {}", data_dir.display()))?,
            None,
        ),
    };
    let start_epoch = trainer.epochs_done();
    let mut meta = run_meta(
        &cfg,
        kernel,
        data,
        &train_set,
        data_dir,
        args.save.is_some(),
    );
    meta.class_names = class_names(args.labels.as_deref(), data_dir, data.classes)?;

    if !args.json {
        print_header(
            &format!("{}", data_dir.display()),
            loaded.source(),
            data,
            loaded.seconds,
            &trainer,
            &cfg,
        );
        if let Some(path) = &resumed_from {
            println!("resuming {} after epoch {start_epoch}", path.display());
        }
    }

    let n_train = trainer.train_samples() as u64;
    let bar = Progress::new(
        (cfg.epochs - start_epoch) as u64 * n_train,
        start_epoch,
        cfg.epochs,
    );
    let epoch_base = AtomicU64::new(0);
    let progress = |done: u64| bar.set_position(epoch_base.load(Ordering::Relaxed) + done);
    let steps_per_epoch = trainer.train_samples().div_ceil(cfg.batch_size);
    let mut log = MetricsLog::new(args.metrics_json.clone(), start_epoch);
    let mut epochs: Vec<(EpochReport, f32)> =
        Vec::with_capacity((cfg.epochs - start_epoch).min(1024));
    // The rows trained on, for the plot's training accuracy.
    let plot_rows = match &args.plot {
        Some(_) => Some(split_train_val(data.train.len(), cfg.val_split, cfg.seed)?.0),
        None => None,
    };
    let mut curve: Vec<plot::EpochPoint> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    while trainer.epochs_done() < cfg.epochs {
        let report = trainer
            .run_epoch(&progress)
            .with_context(|| format!("training on {}", data_dir.display()))?;
        let stats = report.stats;
        epoch_base.fetch_add(n_train, Ordering::Relaxed);
        bar.epoch_done(stats.epoch, stats.train_loss);
        let lr = lr_at_end(&cfg.sgd, stats.epoch, steps_per_epoch, cfg.epochs);
        if !args.json {
            bar.suspend(|| println!("{}", epoch_line(&report, cfg.epochs)));
        }
        if warnings.is_empty() && metrics::diverged(stats.train_loss, data.classes) {
            let w = divergence_warning(stats.epoch, stats.train_loss, data.classes);
            bar.suspend(|| eprintln!("warning: {w}"));
            warnings.push(w);
        }
        log.push(&epoch_json(&report, lr))?;
        if let Some(path) = &args.save {
            meta.epochs_done = stats.epoch;
            run_record::save(path, &trainer.state(), &meta, &results(&report))?;
        }
        if let (Some(path), Some(rows)) = (&args.plot, &plot_rows) {
            let train = metrics::evaluate_rows(trainer.network(), &train_set, kernel, rows);
            let test = report.test.as_ref();
            curve.push(plot::EpochPoint {
                epoch: stats.epoch,
                train_loss: stats.train_loss,
                train_accuracy: Some(train.accuracy),
                val_loss: report.validation.as_ref().map(|v| v.loss),
                val_accuracy: report.validation.as_ref().map(|v| v.accuracy),
                test_loss: test.map_or(f64::NAN, |t| t.loss),
                test_accuracy: test.map_or(f64::NAN, |t| t.accuracy),
            });
            plot::training_curves(path, &curve)?;
        }
        epochs.push((report, lr));
    }
    bar.finish_and_clear();

    let picture = match (&args.weights_png, picture_shape) {
        (Some(path), Some((h, w))) => {
            Some((path, image::weights_png(trainer.network(), h, w, path)?))
        }
        _ => None,
    };

    let Some((last, _)) = epochs.last() else {
        bail!("no epoch ran");
    };
    let train_seconds: f64 = epochs.iter().map(|(r, _)| r.stats.seconds).sum();
    let samples: usize = epochs.iter().map(|(r, _)| r.stats.samples).sum();
    let digest = trainer.network().digest();
    let last_test = last
        .test
        .as_ref()
        .expect("the test set is evaluated every epoch");
    if args.json {
        let per_epoch: Vec<_> = epochs.iter().map(|(r, lr)| epoch_json(r, *lr)).collect();
        let mut out = json!({
            "test_accuracy": last_test.accuracy,
            "test_loss": last_test.loss,
            "train_loss": last.stats.train_loss,
            "epochs": cfg.epochs,
            "start_epoch": start_epoch,
            "batch_size": cfg.batch_size,
            "lr": f32_as_printed(cfg.sgd.lr),
            "momentum": f32_as_printed(cfg.sgd.momentum),
            "nesterov": cfg.sgd.nesterov,
            "weight_decay": f32_as_printed(cfg.sgd.weight_decay),
            "schedule": cfg.sgd.schedule.to_string(),
            "val_split": f32_as_printed(cfg.val_split),
            "seed": cfg.seed,
            "threads": cfg.threads,
            "workers": trainer.workers(),
            "kernel": trainer.kernel().name(),
            "hidden": cfg.hidden,
            "layers": trainer.network().describe(),
            "train_seconds": train_seconds,
            "samples_per_second": samples as f64 / train_seconds,
            "benchings": epochs.iter().map(|(r, _)| r.stats.benchings).sum::<u32>(),
            "load_seconds": loaded.seconds,
            "eval_seconds": last.eval_seconds,
            "rss_anon_kb": rss_anon_kb(),
            "weights_digest": digest,
            "data_dir": data_dir.display().to_string(),
            "train_samples": trainer.train_samples(),
            "test_samples": data.test.len(),
            "classes": data.classes,
            "per_epoch": per_epoch,
            "warnings": warnings,
        });
        if let Some(val) = &last.validation {
            out["val_loss"] = json!(val.loss);
            out["val_accuracy"] = json!(val.accuracy);
            out["val_samples"] = json!(val.total);
        }
        for (key, path) in [
            ("saved", &args.save),
            ("resumed_from", &resumed_from),
            ("metrics_json", &args.metrics_json),
            ("plot", &args.plot),
        ] {
            if let Some(p) = path {
                out[key] = json!(p.display().to_string());
            }
        }
        if let Some((path, _)) = picture {
            out["weights_png"] = json!(path.display().to_string());
        }
        println!("{out}");
    } else {
        println!(
            "done     test accuracy {:.4} ({}/{}), training loop {:.3} s, {:.0} samples/s",
            last_test.accuracy,
            last_test.correct,
            last_test.total,
            train_seconds,
            samples as f64 / train_seconds
        );
        println!("weights  sha256 {digest}");
        if let Some(path) = &args.save {
            println!("saved    {} (after epoch {})", path.display(), cfg.epochs);
        }
        if let Some(path) = &args.metrics_json {
            println!("metrics  {}", path.display());
        }
        if let Some(path) = &args.plot {
            let (w, h) = plot::CURVES_SIZE;
            println!("plot     {} ({w}x{h} pixels)", path.display());
        }
        if let Some((path, size)) = picture {
            println!(
                "picture  {} ({}x{} pixels)",
                path.display(),
                size.width,
                size.height
            );
        }
    }
    Ok(())
}

/// The human report's first two lines.
fn print_header(
    data_dir: &str,
    source: &str,
    data: &Dataset,
    load_seconds: f64,
    trainer: &Trainer<'_>,
    cfg: &TrainConfig,
) {
    println!(
        "data     {} ({} train, {} test, {} {}, {} classes; loaded in {:.3} s{source})",
        data_dir,
        data.train.len(),
        data.test.len(),
        shape_string(data.train.images.sample_shape()).replace('x', "×"),
        data.train.images.element_type(),
        data.classes,
        load_seconds
    );
    let mut line = format!("training {} epoch(s)", cfg.epochs);
    if !cfg.hidden.is_empty() {
        line += &format!(", network {} (ReLU)", trainer.network().describe());
    }
    line += &format!(", batch {}, lr {}", cfg.batch_size, cfg.sgd.lr);
    let sgd = &cfg.sgd;
    if sgd.has_momentum() {
        line += &format!(", momentum {}", sgd.momentum);
        if sgd.nesterov {
            line += " (nesterov)";
        }
    }
    if sgd.weight_decay > 0.0 {
        line += &format!(", weight decay {}", sgd.weight_decay);
    }
    if sgd.schedule != Schedule::Constant {
        line += &format!(", schedule {}", sgd.schedule);
    }
    if cfg.val_split > 0.0 {
        line += &format!(
            ", {} held out for validation",
            data.train.len() - trainer.train_samples()
        );
    }
    line += &format!(
        ", seed {}, {}, kernel {}",
        cfg.seed,
        workers_text(cfg),
        trainer.kernel()
    );
    println!("{line}");
}

/// How many threads really run the training loop: the step's workers
/// (`min(threads, CPUs)` unless `--oversubscribe`), saying so when that is
/// fewer than `--threads` asked for.
fn workers_text(cfg: &TrainConfig) -> String {
    let workers = cfg.workers();
    if workers == cfg.threads {
        format!("{workers} worker(s)")
    } else {
        format!(
            "{workers} worker(s) (--threads {} capped at {workers} CPU(s))",
            cfg.threads
        )
    }
}

/// The warning for a run whose training loss has diverged at `epoch`.
fn divergence_warning(epoch: usize, loss: f64, classes: usize) -> String {
    format!(
        "epoch {epoch}: the training loss {loss:.4e} is over {} x ln({classes}) = {:.1}, far above where training starts: the run has diverged; try a smaller --lr",
        metrics::DIVERGENCE_FACTOR,
        metrics::DIVERGENCE_FACTOR * (classes as f64).ln()
    )
}

/// What the checkpoint records about this run (with `epochs_done` 0 until
/// an epoch finishes). The images' typical background is measured only
/// when a checkpoint will be saved (`saving`): it reads 2000 images, time
/// a run without `--save` need not spend.
fn run_meta(
    cfg: &TrainConfig,
    kernel: idx_softmax::kernels::KernelPath,
    data: &Dataset,
    train_set: &Samples<'_>,
    data_dir: &Path,
    saving: bool,
) -> RunMeta {
    RunMeta {
        config: TrainConfig {
            kernel: Some(kernel),
            ..cfg.clone()
        },
        epochs_done: 0,
        classes: data.classes,
        features: train_set.features(),
        sample_shape: train_set.sample_shape().to_vec(),
        train_samples: data.train.len(),
        test_samples: data.test.len(),
        // Absolute, so that eval, predict and --resume find it from any
        // working directory.
        data_dir: std::fs::canonicalize(data_dir)
            .unwrap_or_else(|_| data_dir.to_owned())
            .display()
            .to_string(),
        class_names: Vec::new(),
        input_background: saving
            .then(|| preprocess::samples_background(train_set))
            .flatten(),
    }
}

/// The class names: `--labels`, else a `labels.txt` beside the data, else
/// none.
pub fn class_names(flag: Option<&Path>, data_dir: &Path, classes: usize) -> Result<Vec<String>> {
    match flag
        .map(Path::to_path_buf)
        .or_else(|| labels::beside(data_dir))
    {
        Some(path) => Ok(labels::read(&path, classes)?),
        None => Ok(Vec::new()),
    }
}

/// The results the checkpoint records after an epoch.
fn results(r: &EpochReport) -> Results {
    let test = r
        .test
        .as_ref()
        .expect("the test set is evaluated every epoch");
    Results {
        test_accuracy: test.accuracy,
        test_loss: test.loss,
        train_loss: r.stats.train_loss,
        validation: r.validation.as_ref().map(|v| (v.accuracy, v.loss)),
    }
}

/// The learning rate of the last step of `epoch` (1-based).
fn lr_at_end(sgd: &Sgd, epoch: usize, steps_per_epoch: usize, epochs: usize) -> f32 {
    sgd.lr_at(
        epoch - 1,
        epoch * steps_per_epoch - 1,
        epochs * steps_per_epoch,
    )
}

/// Checks that the data is the data the checkpoint was trained on, as far
/// as shapes tell: the same sample shape and number of training samples.
fn check_same_data(meta: &RunMeta, data: &Dataset, path: &Path) -> Result<()> {
    let shape = data.train.images.sample_shape();
    if shape != meta.sample_shape.as_slice() || data.train.len() != meta.train_samples {
        bail!(
            "{} was trained on {} training samples of {}, but {} holds {} of {}",
            path.display(),
            meta.train_samples,
            shape_string(&meta.sample_shape),
            data.train.images.path().display(),
            data.train.len(),
            shape_string(shape)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_at_epoch_end() {
        let mut sgd = Sgd::plain(0.4);
        assert_eq!(lr_at_end(&sgd, 1, 10, 2), 0.4);
        sgd.schedule = "step:1:0.5".parse().unwrap();
        assert_eq!(lr_at_end(&sgd, 2, 10, 2), 0.2);
        sgd.schedule = Schedule::Cosine;
        // The last step of the run is one step short of the end of the curve.
        assert!(lr_at_end(&sgd, 2, 10, 2) > 0.0);
        assert!(lr_at_end(&sgd, 2, 10, 2) < 0.01);
    }
}
