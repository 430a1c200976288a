//! Human and JSON renderings of results: the progress bar, per-epoch
//! records, and the evaluation tables.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::{json, Value};

use idx_softmax::metrics::Evaluation;
use idx_softmax::run::EpochReport;

/// How long a run goes before its progress bar appears: shorter runs stay
/// silent.
pub const PROGRESS_DELAY: Duration = Duration::from_millis(500);

/// The training progress bar on stderr: drawn only when stderr is a
/// terminal, and only once the run has lasted [`PROGRESS_DELAY`], showing
/// the epoch, the last epoch's training loss, a humane rate and the time
/// left.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    terminal: bool,
    shown: AtomicBool,
    epochs: usize,
}

impl Progress {
    /// A bar for `total` samples over `epochs` epochs, starting after
    /// epoch `start_epoch`.
    pub fn new(total: u64, start_epoch: usize, epochs: usize) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{bar:20} {percent:>3}%  {msg}  {rate}  eta {eta}")
                .expect("static template")
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", humane_rate(s.per_sec()));
                }),
        );
        bar.set_message(format!("epoch {}/{epochs}", start_epoch + 1));
        Self {
            bar,
            start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
            epochs,
        }
    }

    /// `done` samples trained so far in this run.
    pub fn set_position(&self, done: u64) {
        if self.terminal
            && !self.shown.load(Ordering::Relaxed)
            && self.start.elapsed() >= PROGRESS_DELAY
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.set_position(done);
    }

    /// After epoch `epoch` (1-based) with mean training loss `loss`.
    pub fn epoch_done(&self, epoch: usize, loss: f64) {
        let next = (epoch + 1).min(self.epochs);
        self.bar
            .set_message(format!("epoch {next}/{}  loss {loss:.4}", self.epochs));
    }

    /// Runs `f` with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// A rate as people write it: `950 samples/s`, `12.3k samples/s`,
/// `2.3M samples/s`.
pub fn humane_rate(per_sec: f64) -> String {
    let (v, unit) = match per_sec {
        r if !r.is_finite() || r < 0.0 => return "- samples/s".into(),
        r if r >= 1e9 => (r / 1e9, "G"),
        r if r >= 1e6 => (r / 1e6, "M"),
        r if r >= 1e3 => (r / 1e3, "k"),
        r => return format!("{r:.0} samples/s"),
    };
    if v >= 100.0 {
        format!("{v:.0}{unit} samples/s")
    } else {
        format!("{v:.1}{unit} samples/s")
    }
}

/// The report's line for a picture written to `path`.
pub fn picture_line(path: &std::path::Path, size: idx_softmax::image::Size) -> String {
    format!(
        "picture  {} ({}x{} pixels)",
        path.display(),
        size.width,
        size.height
    )
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

/// Per-class precision, recall, F1 (`f1`, one per class) and support, one
/// row per class, named by `names` when there is one per class.
pub fn per_class_table(ev: &Evaluation, f1: &[f64], names: &[String]) -> String {
    let c = ev.classes;
    let label = |class: usize| match names.get(class) {
        Some(n) if names.len() == c => format!("{class} {n}"),
        _ => class.to_string(),
    };
    let width = (0..c)
        .map(|k| label(k).chars().count())
        .max()
        .unwrap_or(0)
        .max("class".len());
    let support_w = ev.total.to_string().len().max("support".len());
    let mut s = format!(
        "{:<width$}  precision  recall      f1  {:>support_w$}\n",
        "class", "support"
    );
    for class in 0..c {
        let support: u64 = ev.confusion[class * c..(class + 1) * c].iter().sum();
        let name = label(class);
        let pad = width - name.chars().count();
        let _ = writeln!(
            s,
            "{name}{:pad$}  {:>9}  {:>6}  {:>6}  {support:>support_w$}",
            "",
            ratio(ev.precision(class)),
            ratio(ev.recall(class)),
            ratio(f1.get(class).copied().unwrap_or(f64::NAN)),
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
        let f1 = idx_softmax::metrics::f1_scores(&ev()).per_class;
        let p = per_class_table(&ev(), &f1, &[]);
        let lines: Vec<&str> = p.lines().collect();
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{p}");
        assert!(lines[3].contains('-'), "{p}");
        let names = ["cat".to_string(), "dog".into(), "T-shirt/top".into()];
        let p = per_class_table(&ev(), &f1, &names);
        let lines: Vec<&str> = p.lines().collect();
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{p}"
        );
        assert!(lines[3].starts_with("2 T-shirt/top  "), "{p}");
        assert!(lines[1].contains("0.7692"), "{p}");
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(humane_rate(2_310_601.622_9), "2.3M samples/s");
        assert_eq!(humane_rate(950.4), "950 samples/s");
        assert_eq!(humane_rate(12_345.0), "12.3k samples/s");
        assert_eq!(humane_rate(456_789.0), "457k samples/s");
        assert_eq!(humane_rate(f64::NAN), "- samples/s");
    }

    #[test]
    fn a_short_run_draws_no_bar() {
        let p = Progress::new(100, 0, 2);
        p.set_position(50);
        assert!(!p.shown.load(Ordering::Relaxed));
        assert!(p.bar.is_hidden());
        p.epoch_done(1, 0.25);
        assert_eq!(p.bar.message(), "epoch 2/2  loss 0.2500");
    }

    #[test]
    fn json_has_nulls_for_undefined_precision() {
        let v = evaluation_json(&ev());
        assert!(v["per_class"][2]["precision"].is_null());
        assert_eq!(v["confusion"][0], json!([5, 1, 0]));
    }
}
