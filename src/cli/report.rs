//! Human and JSON renderings of results: the progress bar, per-epoch
//! records, and the evaluation tables.

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use idx_softmax::metrics::Evaluation;
use idx_softmax::train::EpochReport;

use super::common::f32_as_printed;

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} samples {per_sec} eta {eta}")
            .expect("static template"),
    );
    bar
}

/// One epoch as a JSON object: the `per_epoch` entries of `--json` and the
/// lines of `--metrics-json`. `lr` is the learning rate of the epoch's last
/// step.
pub fn epoch_json(r: &EpochReport, lr: f32) -> Value {
    let mut v = json!({
        "epoch": r.stats.epoch,
        "train_loss": r.stats.train_loss,
        "lr": f32_as_printed(lr),
        "seconds": r.stats.seconds,
        "eval_seconds": r.eval_seconds,
        "samples_per_second": r.stats.samples_per_second(),
    });
    if let Some(test) = &r.test {
        v["test_loss"] = json!(test.loss);
        v["test_accuracy"] = json!(test.accuracy);
    }
    if let Some(val) = &r.validation {
        v["val_loss"] = json!(val.loss);
        v["val_accuracy"] = json!(val.accuracy);
    }
    v
}

/// One epoch as a line of the human report.
pub fn epoch_line(r: &EpochReport, epochs: usize) -> String {
    let mut s = format!(
        "epoch {}/{}  train loss {:.4}",
        r.stats.epoch, epochs, r.stats.train_loss
    );
    if let Some(test) = &r.test {
        let _ = write!(
            s,
            "  test loss {:.4}  test accuracy {:.4}",
            test.loss, test.accuracy
        );
    }
    if let Some(val) = &r.validation {
        let _ = write!(
            s,
            "  val loss {:.4}  val accuracy {:.4}",
            val.loss, val.accuracy
        );
    }
    let _ = write!(
        s,
        "  {:.3} s  {:.0} samples/s",
        r.stats.seconds,
        r.stats.samples_per_second()
    );
    s
}

/// A ratio to 4 decimals, or `-` when undefined (NaN).
fn ratio(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.4}")
    }
}

/// Per-class precision, recall and support, one row per class.
pub fn per_class_table(ev: &Evaluation) -> String {
    let c = ev.classes;
    let width = c.saturating_sub(1).to_string().len().max("class".len());
    let support_w = ev.total.to_string().len().max("support".len());
    let mut s = format!(
        "{:>width$}  precision  recall  {:>support_w$}\n",
        "class", "support"
    );
    for class in 0..c {
        let support: u64 = ev.confusion[class * c..(class + 1) * c].iter().sum();
        let _ = writeln!(
            s,
            "{class:>width$}  {:>9}  {:>6}  {support:>support_w$}",
            ratio(ev.precision(class)),
            ratio(ev.recall(class)),
        );
    }
    s
}

/// The confusion matrix as an aligned table: rows are true classes,
/// columns predicted classes.
pub fn confusion_table(ev: &Evaluation) -> String {
    let c = ev.classes;
    let max = ev.confusion.iter().copied().max().unwrap_or(0);
    let cell = max
        .to_string()
        .len()
        .max(c.saturating_sub(1).to_string().len());
    let corner = "true\\pred";
    let mut s = format!("{corner:>w$}", w = corner.len());
    for j in 0..c {
        let _ = write!(s, " {j:>cell$}");
    }
    s.push('\n');
    for i in 0..c {
        let _ = write!(s, "{i:>w$}", w = corner.len());
        for j in 0..c {
            let _ = write!(s, " {:>cell$}", ev.confusion[i * c + j]);
        }
        s.push('\n');
    }
    s
}

/// The evaluation as JSON: accuracy, loss, per-class precision/recall/
/// support, and the confusion matrix as rows (true class) of counts.
pub fn evaluation_json(ev: &Evaluation) -> Value {
    let c = ev.classes;
    let per_class: Vec<Value> = (0..c)
        .map(|class| {
            let support: u64 = ev.confusion[class * c..(class + 1) * c].iter().sum();
            json!({
                "class": class,
                "precision": ev.precision(class),
                "recall": ev.recall(class),
                "support": support,
            })
        })
        .collect();
    let rows: Vec<&[u64]> = ev.confusion.chunks(c.max(1)).collect();
    json!({
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        "correct": ev.correct,
        "total": ev.total,
        "per_class": per_class,
        "confusion": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Evaluation {
        // 3 classes; class 2 is never predicted and has one sample.
        Evaluation {
            loss: 0.5,
            accuracy: 0.75,
            correct: 9,
            total: 12,
            classes: 3,
            confusion: vec![5, 1, 0, 1, 4, 0, 1, 0, 0],
        }
    }

    #[test]
    fn tables_are_aligned() {
        let t = confusion_table(&ev());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
        assert_eq!(lines[1], "        0 5 1 0");
        let p = per_class_table(&ev());
        let lines: Vec<&str> = p.lines().collect();
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{p}");
        assert!(lines[3].contains('-'), "{p}");
    }

    #[test]
    fn json_has_nulls_for_undefined_precision() {
        let v = evaluation_json(&ev());
        assert!(v["per_class"][2]["precision"].is_null());
        assert_eq!(v["confusion"][0], json!([5, 1, 0]));
    }
}
