//! `eval`: a saved model on the test split (or, with `--split`, the
//! training rows or the held-out validation rows of its run): accuracy,
//! mean loss, macro and weighted F1, top-k accuracy, per-class precision,
//! recall and F1, and the confusion matrix (as a table, and with
//! `--confusion-png` as a heat map).
//!
//! The arithmetic is the training loop's own evaluation (same kernel path,
//! same fixed-order sums), so on the data it was trained on a model scores
//! exactly the `test_accuracy` (or `val_accuracy`) its training run
//! reported.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde_json::json;

use idx_softmax::checkpoint::{self, Checkpoint};
use idx_softmax::dataset::{Dataset, Split};
use idx_softmax::image;
use idx_softmax::metrics;
use idx_softmax::plot;
use idx_softmax::train::split_train_val;

use super::args::{EvalArgs, SplitArg};
use super::common::{
    check_features, check_output, class_names, image_shape, inference_kernel, load_dataset,
    load_test_split, pool, threads, Loaded, TrainedOn,
};
use super::report::{confusion_table, evaluation_json, per_class_table};
use idx_softmax::run_record;

/// The samples evaluated. (One per process: the variants' sizes do not
/// matter.)
#[allow(clippy::large_enum_variant)]
enum Samples {
    Test(Loaded<Split>),
    /// The training file and the rows of it taken.
    Train(Loaded<Dataset>, Vec<u32>),
}

impl Samples {
    fn split(&self) -> &Split {
        match self {
            Samples::Test(l) => &l.data,
            Samples::Train(l, _) => &l.data.train,
        }
    }
    fn dir(&self) -> &Path {
        match self {
            Samples::Test(l) => &l.dir,
            Samples::Train(l, _) => &l.dir,
        }
    }
    fn seconds(&self) -> f64 {
        match self {
            Samples::Test(l) => l.seconds,
            Samples::Train(l, _) => l.seconds,
        }
    }
    fn print_note(&self) {
        match self {
            Samples::Test(l) => l.print_note(),
            Samples::Train(l, _) => l.print_note(),
        }
    }
    fn is_from_model(&self) -> bool {
        match self {
            Samples::Test(l) => l.from_model,
            Samples::Train(l, _) => l.from_model,
        }
    }
    fn source(&self) -> &'static str {
        match self {
            Samples::Test(l) => l.source(),
            Samples::Train(l, _) => l.source(),
        }
    }
    fn rows(&self) -> Option<&[u32]> {
        match self {
            Samples::Test(_) => None,
            Samples::Train(_, rows) => Some(rows),
        }
    }
}

fn split_name(s: SplitArg) -> &'static str {
    match s {
        SplitArg::Test => "test",
        SplitArg::Train => "train",
        SplitArg::Val => "val",
    }
}

/// Loads the samples `--split` names.
fn load_samples(args: &EvalArgs, ck: &Checkpoint) -> Result<Samples> {
    let classes = ck.network.classes();
    let trained_on = TrainedOn {
        model: &args.model,
        data_dir: run_record::recorded_data_dir(ck),
    };
    if args.split == SplitArg::Test {
        return Ok(Samples::Test(load_test_split(
            &args.data,
            classes,
            Some(trained_on),
        )?));
    }
    let loaded = load_dataset(&args.data, Some(classes), Some(trained_on))?;
    let n = loaded.data.train.len();
    let md = &ck.metadata;
    let model = args.model.display();
    let fraction: f32 = md
        .get("val_split")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if args.split == SplitArg::Val && fraction <= 0.0 {
        bail!(
            "{model}: the run held out no validation split (train with --val-split F to have one)"
        );
    }
    if fraction <= 0.0 {
        return Ok(Samples::Train(loaded, (0..n as u32).collect()));
    }
    let seed: u64 = match md.get("seed").and_then(|v| v.parse().ok()) {
        Some(s) => s,
        None => bail!("{model}: records a validation split but no seed to draw it from"),
    };
    if let Some(recorded) = md
        .get("train_samples")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if recorded != n {
            bail!(
                "{model} was trained on {recorded} training samples, but {} holds {n}: its validation split cannot be drawn again",
                loaded.data.train.images.path().display()
            );
        }
    }
    let (train, val) = split_train_val(n, fraction, seed)?;
    let rows = if args.split == SplitArg::Val {
        val
    } else {
        train
    };
    Ok(Samples::Train(loaded, rows))
}

/// Runs `eval` with `args`.
pub fn run(args: EvalArgs) -> Result<()> {
    for (flag, path) in [
        ("--weights-png", &args.weights_png),
        ("--confusion-png", &args.confusion_png),
    ] {
        if let Some(p) = path {
            check_output(p, flag)?;
        }
    }
    let ck = checkpoint::load(&args.model)?;
    run_record::validate(&args.model, &ck)?;
    let model = &ck.network;
    let names = class_names(args.labels.as_deref(), &ck, &args.data)?;
    let samples = load_samples(&args, &ck)?;
    let split = samples.split();
    check_features(&ck, &args.model, split)?;
    samples.print_note();
    let picture_shape = match &args.weights_png {
        Some(_) => Some(image_shape(
            split.images.sample_shape(),
            split.images.path(),
        )?),
        None => None,
    };
    let set = split.samples(model.classes())?;
    let kernel = inference_kernel(args.compute.kernel, &ck, set.as_u8().is_some())?;
    let threads = threads(args.compute.threads);
    let pool = pool(threads)?;
    let start = Instant::now();
    let ev = pool.install(|| match samples.rows() {
        None => metrics::evaluate(model, &set, kernel),
        Some(rows) => metrics::evaluate_rows(model, &set, kernel, rows),
    });
    let all: Vec<u32>;
    let rows = match samples.rows() {
        Some(r) => r,
        None => {
            all = (0..split.len() as u32).collect();
            &all
        }
    };
    let top_k = (args.top_k as usize).min(model.classes());
    let c = model.classes();
    let logits: Vec<f32> = pool.install(|| {
        rows.par_chunks(1000)
            .map(|chunk| {
                let mut out = vec![0.0f32; chunk.len() * c];
                model.forward_rows(&set, chunk, kernel, &mut Vec::new(), &mut out);
                out
            })
            .collect::<Vec<_>>()
            .concat()
    });
    let top_k_correct = metrics::top_k_correct(
        &logits,
        c,
        rows.iter().map(|&r| split.labels.get(r as usize)),
        top_k,
    );
    let top_k_accuracy = top_k_correct as f64 / rows.len().max(1) as f64;
    let f1 = metrics::f1_scores(&ev);
    let eval_seconds = start.elapsed().as_secs_f64();

    let picture = match (&args.weights_png, picture_shape) {
        (Some(path), Some((h, w))) => Some((path, image::weights_png(model, h, w, path)?)),
        _ => None,
    };
    let heatmap: Option<(&PathBuf, image::Size)> = match &args.confusion_png {
        Some(path) => Some((
            path,
            plot::confusion_heatmap(path, &ev.confusion, c, &names)?,
        )),
        None => None,
    };
    let which = split_name(args.split);

    if args.json {
        let mut out = evaluation_json(&ev);
        out[format!("{which}_accuracy")] = json!(ev.accuracy);
        out[format!("{which}_loss")] = json!(ev.loss);
        out["split"] = json!(which);
        out["macro_f1"] = json!(f1.macro_f1);
        out["weighted_f1"] = json!(f1.weighted_f1);
        out["top_k"] = json!(top_k);
        out["top_k_accuracy"] = json!(top_k_accuracy);
        if let Some(per_class) = out["per_class"].as_array_mut() {
            for (k, v) in per_class.iter_mut().enumerate() {
                v["f1"] = json!(f1.per_class[k]);
                if let Some(n) = names.get(k) {
                    v["name"] = json!(n);
                }
            }
        }
        if !names.is_empty() {
            out["class_names"] = json!(names);
        }
        out["model"] = json!(args.model.display().to_string());
        out["data_dir"] = json!(samples.dir().display().to_string());
        out["data_from_model"] = json!(samples.is_from_model());
        out["classes"] = json!(model.classes());
        out["features"] = json!(model.features());
        out["layers"] = json!(model.describe());
        out["kernel"] = json!(kernel.name());
        out["threads"] = json!(threads);
        out["load_seconds"] = json!(samples.seconds());
        out["eval_seconds"] = json!(eval_seconds);
        out["weights_digest"] = json!(model.digest());
        if let Some(e) = ck
            .metadata
            .get("epochs_done")
            .and_then(|e| e.parse::<u64>().ok())
        {
            out["epochs_done"] = json!(e);
        }
        if let Some((path, _)) = picture {
            out["weights_png"] = json!(path.display().to_string());
        }
        if let Some((path, _)) = heatmap {
            out["confusion_png"] = json!(path.display().to_string());
        }
        println!("{out}");
        return Ok(());
    }
    let trained = match ck.metadata.get("epochs_done") {
        Some(e) => format!("; trained {e} epoch(s)"),
        None => String::new(),
    };
    let shape = if model.is_linear() {
        format!(
            "{} features × {} classes",
            model.features(),
            model.classes()
        )
    } else {
        format!("network {}, ReLU", model.describe())
    };
    println!("model    {} ({shape}{trained})", args.model.display());
    println!(
        "data     {} ({} {which} samples; loaded in {:.3} s{})",
        samples.dir().display(),
        ev.total,
        samples.seconds(),
        samples.source()
    );
    println!(
        "accuracy {:.4} ({}/{})  mean loss {:.4}  ({:.3} s, kernel {kernel}, {threads} thread(s))",
        ev.accuracy, ev.correct, ev.total, ev.loss, eval_seconds
    );
    println!(
        "f1       macro {:.4}  weighted {:.4}",
        f1.macro_f1, f1.weighted_f1
    );
    println!(
        "top-{top_k}    accuracy {top_k_accuracy:.4} ({top_k_correct}/{})",
        ev.total
    );
    println!("weights  sha256 {}", model.digest());
    println!();
    print!("{}", per_class_table(&ev, &f1.per_class, &names));
    println!();
    println!("confusion matrix (rows: true class, columns: predicted class)");
    print!("{}", confusion_table(&ev));
    for (path, size) in picture.into_iter().chain(heatmap) {
        println!();
        println!(
            "picture  {} ({}x{} pixels)",
            path.display(),
            size.width,
            size.height
        );
    }
    Ok(())
}
