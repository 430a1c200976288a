//! `train` (and the top level): the flags become a
//! [`RunSpec`](idx_softmax::run::RunSpec), the library runs it
//! ([`idx_softmax::run::Run`]), and this prints.
//!
//! Order of work, so that a mistake costs nothing: output paths are checked
//! first (against each other and the inputs named by flags, whether they
//! can be written, their formats), then the checkpoint to resume from, then
//! the data directory (no output may be one of its files), then the data;
//! only then does training start. After each epoch the library rewrites
//! the `--save` checkpoint, the `--metrics-json` file and the `--plot`
//! atomically, so a run killed (or failing) at any point leaves complete
//! files describing its last finished epoch, and `--resume` continues from
//! there.

use std::path::Path;

use anyhow::Result;

use idx_softmax::data::{Dataset, LoadOptions};
use idx_softmax::model::SavedModel;
use idx_softmax::optim::Schedule;
use idx_softmax::plot;
use idx_softmax::run::record::shape_string;
use idx_softmax::run::{DataInfo, Outputs, Resume, Run, RunSpec};

use super::args::TrainArgs;
use super::common::{check_formats, check_outputs, class_names, load, rss_anon_kb, Loaded};
use super::names::flag;
use super::report::{epoch_line, picture_line, Progress};

/// The run the flags ask for: each flag given, or left out.
pub fn spec(args: &TrainArgs) -> RunSpec {
    RunSpec {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        nesterov: args.nesterov.then_some(true),
        weight_decay: args.weight_decay,
        schedule: args.schedule,
        val_split: args.val_split,
        seed: args.seed,
        augment: args.aug.augment,
        max_shift: args.aug.max_shift,
        rotate: args.aug.rotate,
        scale: args.aug.scale,
        shear: args.aug.shear,
        translate: args.aug.translate,
        sigma: args.aug.sigma,
        alpha: args.aug.alpha,
        conv: (!args.conv.is_empty()).then(|| args.conv.clone()),
        hidden: (!args.hidden.is_empty()).then(|| args.hidden.clone()),
        classes: args.classes,
        threads: args.compute.threads,
        kernel: args.compute.kernel,
        oversubscribe: args.oversubscribe,
    }
}

/// Runs `train` with `args`.
pub fn run(args: TrainArgs) -> Result<()> {
    let outputs = [
        ("--save", args.save.as_ref()),
        ("--metrics-json", args.metrics_json.as_ref()),
        ("--weights-png", args.weights_png.as_ref()),
        ("--plot", args.plot.as_ref()),
        ("--save-augmented", args.save_augmented.as_ref()),
    ];
    check_outputs(
        &outputs,
        &[
            ("--resume", args.resume.as_ref()),
            ("--labels", args.labels.as_ref()),
        ],
        &[("--resume", "--save")],
    )?;
    check_formats(&[
        ("--plot", args.plot.as_ref(), plot::CHART_FORMATS),
        (
            "--weights-png",
            args.weights_png.as_ref(),
            plot::WEIGHTS_FORMATS,
        ),
        (
            "--save-augmented",
            args.save_augmented.as_ref(),
            plot::WEIGHTS_FORMATS,
        ),
    ])?;
    let resume = match &args.resume {
        Some(path) => Some(Resume::from_model(&SavedModel::load(path)?)?),
        None => None,
    };
    let resolved = spec(&args).resolve(resume.as_ref().and_then(Resume::recorded))?;
    let model = resume.as_ref().map(|r| {
        let dir = r.meta.as_ref().map(|m| m.data_dir.as_str());
        (Path::new(&r.source), dir.filter(|d| !d.is_empty()))
    });
    let loaded: Loaded<Dataset> = load(&args.data, model, &outputs, |dir, cache| {
        Dataset::load(
            dir,
            &LoadOptions {
                cache,
                classes: resolved.classes,
            },
        )
    })?;
    let data = &loaded.data;
    let train_set = data.train.samples(data.classes)?;
    let test_set = data.test.samples(data.classes)?;
    let info = DataInfo {
        dir: Some(loaded.dir.clone()),
        train_file: Some(data.train.images.path().to_owned()),
        class_names: class_names(args.labels.as_deref(), None, &loaded.dir, data.classes)?,
    };
    let outputs = Outputs {
        save: args.save.clone(),
        metrics_json: args.metrics_json.clone(),
        curves: args.plot.clone(),
        weights_png: args.weights_png.clone(),
        augmented: args.save_augmented.clone(),
    };
    if args.weights_png.is_some() {
        two_d(data.train.images.sample_shape(), data.train.images.path())?;
    }
    let mut run = Run::new(
        resolved.config,
        &train_set,
        Some(&test_set),
        info,
        resume,
        outputs,
    )?;
    loaded.print_note();
    for w in run.warnings() {
        eprintln!("warning: {}", w.message(&flag));
    }

    let cfg = run.config().clone();
    if !args.json {
        print_header(&loaded, &run);
        if let Some(from) = run.resumed_from() {
            println!("resuming {from} after epoch {}", run.start_epoch());
        }
    }
    let bar = Progress::new(
        (cfg.epochs - run.start_epoch()) as u64 * run.train_samples() as u64,
        run.start_epoch(),
        cfg.epochs,
    );
    let json = args.json;
    run.train(&|done| bar.set_position(done), &mut |report| {
        bar.epoch_done(report.stats.epoch, report.stats.train_loss);
        if !json {
            bar.suspend(|| println!("{}", epoch_line(report, cfg.epochs)));
        }
        if let Some(w) = &report.warning {
            bar.suspend(|| eprintln!("warning: {}", w.message(&flag)));
        }
    })?;
    bar.finish_and_clear();

    if args.json {
        let mut out = run.summary(&flag);
        out["load_seconds"] = serde_json::json!(loaded.seconds);
        out["rss_anon_kb"] = serde_json::json!(rss_anon_kb());
        println!("{out}");
        return Ok(());
    }
    let reports = run.reports();
    let train_seconds: f64 = reports.iter().map(|r| r.stats.seconds).sum();
    let samples: usize = reports.iter().map(|r| r.stats.samples).sum();
    if let Some(test) = reports.last().and_then(|r| r.test.as_ref()) {
        println!(
            "done     test accuracy {:.4} ({}/{}), training loop {train_seconds:.3} s, {:.0} samples/s",
            test.accuracy,
            test.correct,
            test.total,
            samples as f64 / train_seconds
        );
    }
    println!("weights  sha256 {}", run.network().digest());
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
    if let (Some(path), Some(size)) = (&args.weights_png, run.picture()) {
        println!("{}", picture_line(path, size));
    }
    Ok(())
}

/// Refuses `--weights-png` before any work for samples that are not 2-D
/// images.
fn two_d(shape: &[usize], what: &Path) -> Result<()> {
    if shape.len() != 2 {
        anyhow::bail!(
            "--weights-png needs 2-D samples (height x width), but {} holds samples of shape {}",
            what.display(),
            shape_string(shape)
        );
    }
    Ok(())
}

/// The human report's first two lines.
fn print_header(loaded: &Loaded<Dataset>, run: &Run<'_>) {
    let data = &loaded.data;
    println!(
        "data     {} ({} train, {} test, {} {}, {} classes; loaded in {:.3} s{})",
        loaded.dir.display(),
        data.train.len(),
        data.test.len(),
        shape_string(data.train.images.sample_shape()).replace('x', "×"),
        data.train.images.element_type(),
        data.classes,
        loaded.seconds,
        loaded.source()
    );
    let cfg = run.config();
    let mut line = format!("training {} epoch(s)", cfg.epochs);
    if !run.network().is_linear() {
        line += &format!(", network {} (ReLU)", run.network().describe());
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
            data.train.len() - run.train_samples()
        );
    }
    let workers = run.workers();
    let workers_text = if workers == cfg.threads {
        format!("{workers} worker(s)")
    } else {
        format!(
            "{workers} worker(s) (--threads {} capped at {workers} CPU(s))",
            cfg.threads
        )
    };
    line += &format!(
        ", seed {}, {workers_text}, kernel {}",
        cfg.seed,
        run.kernel()
    );
    println!("{line}");
}
