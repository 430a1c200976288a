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

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use idx_softmax::data::{Dataset, LoadOptions, Split};
use idx_softmax::image;
use idx_softmax::infer::{self, Rows as InferRows};
use idx_softmax::metrics;
use idx_softmax::model::{Rows, SavedModel};
use idx_softmax::plot;
use idx_softmax::run::record::shape_string;

use super::args::{EvalArgs, SplitArg};
use super::common::{check_formats, check_outputs, class_names, load, trained_on, Loaded};
use super::report::{confusion_table, evaluation_json, per_class_table, picture_line};

/// The samples evaluated: the test split, or the training file and the
/// rows of it taken. (One per process: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
enum Samples {
    Test(Loaded<Split>),
    Train(Loaded<Dataset>, Vec<u32>),
}

impl Samples {
    fn split(&self) -> &Split {
        match self {
            Samples::Test(l) => &l.data,
            Samples::Train(l, _) => &l.data.train,
        }
    }

    /// Where they were loaded from, in how long, and what the report's
    /// `data` line says of it.
    fn origin(&self) -> (&std::path::Path, f64, bool, &'static str) {
        match self {
            Samples::Test(l) => (&l.dir, l.seconds, l.from_model, l.source()),
            Samples::Train(l, _) => (&l.dir, l.seconds, l.from_model, l.source()),
        }
    }

    fn print_note(&self) {
        match self {
            Samples::Test(l) => l.print_note(),
            Samples::Train(l, _) => l.print_note(),
        }
    }

    fn rows(&self) -> Option<&[u32]> {
        match self {
            Samples::Test(_) => None,
            Samples::Train(_, rows) => Some(rows),
        }
    }
}

fn rows_arg(s: SplitArg) -> Rows {
    match s {
        SplitArg::Test => Rows::Test,
        SplitArg::Train => Rows::Train,
        SplitArg::Val => Rows::Val,
    }
}

/// The files `eval` writes, by flag.
fn outputs(args: &EvalArgs) -> [(&'static str, Option<&PathBuf>); 2] {
    [
        ("--weights-png", args.weights_png.as_ref()),
        ("--confusion-png", args.confusion_png.as_ref()),
    ]
}

/// Loads the samples `--split` names, from the data the model was trained
/// on unless `--data-dir` says otherwise.
fn load_samples(args: &EvalArgs, model: &SavedModel) -> Result<Samples> {
    let classes = model.network().classes();
    let which = rows_arg(args.split);
    if which == Rows::Test {
        let loaded = load(
            &args.data,
            trained_on(model),
            &outputs(args),
            |dir, cache| Split::load_test(dir, &cache),
        )?;
        model.check_labels(&loaded.data)?;
        return Ok(Samples::Test(loaded));
    }
    let loaded = load(
        &args.data,
        trained_on(model),
        &outputs(args),
        |dir, cache| {
            Dataset::load(
                dir,
                &LoadOptions {
                    cache,
                    classes: Some(classes),
                },
            )
        },
    )?;
    let train = &loaded.data.train;
    let rows = model
        .rows(which, train.len(), train.images.path())?
        .expect("training rows");
    Ok(Samples::Train(loaded, rows))
}

/// Runs `eval` with `args`.
pub fn run(args: EvalArgs) -> Result<()> {
    check_outputs(
        &outputs(&args),
        &[
            ("--model", Some(&args.model)),
            ("--labels", args.labels.as_ref()),
        ],
        &[],
    )?;
    check_formats(&[
        (
            "--weights-png",
            args.weights_png.as_ref(),
            plot::WEIGHTS_FORMATS,
        ),
        (
            "--confusion-png",
            args.confusion_png.as_ref(),
            plot::CHART_FORMATS,
        ),
    ])?;
    let model = SavedModel::load(&args.model)?;
    let net = model.network();
    let samples = load_samples(&args, &model)?;
    let split = samples.split();
    model.check_samples(split)?;
    let (data_dir, load_seconds, from_model, source) = samples.origin();
    let names = class_names(
        args.labels.as_deref(),
        Some(&model),
        data_dir,
        net.classes(),
    )?;
    samples.print_note();
    let picture_shape = match &args.weights_png {
        Some(_) => match split.images.sample_shape() {
            &[h, w] => Some((h, w)),
            shape => anyhow::bail!(
                "--weights-png needs 2-D samples (height x width), but {} holds samples of shape {}",
                split.images.path().display(),
                shape_string(shape)
            ),
        },
        None => None,
    };
    let set = split.samples(net.classes())?;
    let kernel = model.inference_kernel(args.compute.kernel, set.as_u8().is_some())?;
    let threads = args.compute.thread_count()?;
    let pool = infer::thread_pool(threads)?;
    let start = Instant::now();
    let c = net.classes();
    let top_k = args.top_k.min(c);
    let rows = match samples.rows() {
        None => InferRows::All,
        Some(r) => InferRows::Only(r),
    };
    let (ev, top_k_correct) =
        pool.install(|| metrics::evaluate_top_k(net, &set, rows, kernel, top_k));
    let top_k_accuracy = top_k_correct as f64 / ev.total.max(1) as f64;
    let f1 = metrics::f1_scores(&ev);
    let eval_seconds = start.elapsed().as_secs_f64();
    let picture = match (&args.weights_png, picture_shape) {
        (Some(path), Some((h, w))) => Some((path, plot::weights_png(net, h, w, path)?)),
        _ => None,
    };
    let heatmap: Option<(&PathBuf, image::Size)> = match &args.confusion_png {
        Some(path) => Some((
            path,
            plot::confusion_heatmap(path, &ev.confusion, c, &names)?,
        )),
        None => None,
    };
    let which = rows_arg(args.split).name();

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
        out["data_dir"] = json!(data_dir.display().to_string());
        out["data_from_model"] = json!(from_model);
        out["classes"] = json!(net.classes());
        out["features"] = json!(net.features());
        out["layers"] = json!(net.describe());
        out["kernel"] = json!(kernel.name());
        out["threads"] = json!(threads);
        out["load_seconds"] = json!(load_seconds);
        out["eval_seconds"] = json!(eval_seconds);
        out["weights_digest"] = json!(net.digest());
        if let Some(e) = model.epochs_done() {
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
    let trained = match model.epochs_done() {
        Some(e) => format!("; trained {e} epoch(s)"),
        None => String::new(),
    };
    let shape = if net.is_linear() {
        format!("{} features × {} classes", net.features(), net.classes())
    } else {
        format!("network {}, ReLU", net.describe())
    };
    println!("model    {} ({shape}{trained})", args.model.display());
    println!(
        "data     {} ({} {which} samples; loaded in {:.3} s{})",
        data_dir.display(),
        ev.total,
        load_seconds,
        source
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
    println!("weights  sha256 {}", net.digest());
    println!();
    print!("{}", per_class_table(&ev, &f1.per_class, &names));
    println!();
    println!("confusion matrix (rows: true class, columns: predicted class)");
    print!("{}", confusion_table(&ev));
    for (path, size) in picture.into_iter().chain(heatmap) {
        println!();
        println!("{}", picture_line(path, size));
    }
    Ok(())
}
