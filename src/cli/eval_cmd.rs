//! `eval`: a saved model on the test split: accuracy, mean loss, per-class
//! precision and recall, and the confusion matrix.
//!
//! The arithmetic is the training loop's own test evaluation (same kernel
//! path, same fixed-order sums), so on the data it was trained on a model
//! scores exactly the `test_accuracy` its training run reported.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use idx_softmax::checkpoint;
use idx_softmax::image;
use idx_softmax::metrics;

use super::args::EvalArgs;
use super::common::{
    check_features, check_output, image_shape, inference_kernel, load_test_split, pool, threads,
    TrainedOn,
};
use super::report::{confusion_table, evaluation_json, per_class_table};
use idx_softmax::run_record;

/// Runs `eval` with `args`.
pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(p) = &args.weights_png {
        check_output(p, "--weights-png")?;
    }
    let ck = checkpoint::load(&args.model)?;
    run_record::validate(&args.model, &ck)?;
    let model = &ck.network;
    let trained_on = TrainedOn {
        model: &args.model,
        data_dir: run_record::recorded_data_dir(&ck),
    };
    let loaded = load_test_split(&args.data, model.classes(), Some(trained_on))?;
    let split = &loaded.data;
    check_features(&ck, &args.model, split)?;
    loaded.print_note();
    let picture_shape = match &args.weights_png {
        Some(_) => Some(image_shape(
            split.images.sample_shape(),
            split.images.path(),
        )?),
        None => None,
    };
    let samples = split.samples(model.classes())?;
    let kernel = inference_kernel(args.compute.kernel, &ck, samples.as_u8().is_some())?;
    let threads = threads(args.compute.threads);
    let pool = pool(threads)?;
    let start = Instant::now();
    let ev = pool.install(|| metrics::evaluate(model, &samples, kernel));
    let eval_seconds = start.elapsed().as_secs_f64();

    let picture = match (&args.weights_png, picture_shape) {
        (Some(path), Some((h, w))) => Some((path, image::weights_png(model, h, w, path)?)),
        _ => None,
    };

    if args.json {
        let mut out = evaluation_json(&ev);
        out["test_accuracy"] = json!(ev.accuracy);
        out["test_loss"] = json!(ev.loss);
        out["model"] = json!(args.model.display().to_string());
        out["data_dir"] = json!(loaded.dir.display().to_string());
        out["data_from_model"] = json!(loaded.from_model);
        out["classes"] = json!(model.classes());
        out["features"] = json!(model.features());
        out["layers"] = json!(model.describe());
        out["kernel"] = json!(kernel.name());
        out["threads"] = json!(threads);
        out["load_seconds"] = json!(loaded.seconds);
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
        "data     {} ({} test samples; loaded in {:.3} s{})",
        loaded.dir.display(),
        split.len(),
        loaded.seconds,
        loaded.source()
    );
    println!(
        "accuracy {:.4} ({}/{})  mean loss {:.4}  ({:.3} s, kernel {kernel}, {threads} thread(s))",
        ev.accuracy, ev.correct, ev.total, ev.loss, eval_seconds
    );
    println!("weights  sha256 {}", model.digest());
    println!();
    print!("{}", per_class_table(&ev));
    println!();
    println!("confusion matrix (rows: true class, columns: predicted class)");
    print!("{}", confusion_table(&ev));
    if let Some((path, size)) = picture {
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
