//! Command-line interface: parse flags, load, train, report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use idx_softmax::dataset::{Dataset, GzCache, LoadOptions};
use idx_softmax::kernels::KernelPath;
use idx_softmax::train::{self, EpochReport, TrainConfig, DEFAULT_SEED};

/// Train softmax regression on an IDX image dataset (MNIST by default).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Passes over the training set.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Samples per SGD step (the last batch of an epoch may be smaller).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Learning rate (finite, > 0).
    #[arg(long, default_value_t = 0.1, value_parser = parse_lr)]
    lr: f32,
    /// Seed for the weight initialisation and the shuffles.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz; '-' or
    /// '.' before "idx"). Default: the bundled MNIST.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Worker threads (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Kernel path: gemm, portable, avx2 or avx512 (default: the best this
    /// CPU has, or $IDX_SOFTMAX_KERNEL).
    #[arg(long)]
    kernel: Option<KernelPath>,
    /// Number of classes (default: the largest training label + 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..))]
    classes: Option<u32>,
    /// Where decompressed .gz files are cached (default: $IDX_SOFTMAX_CACHE_DIR,
    /// then ~/.cache/idx-softmax, then the temp directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Run exactly --threads training workers even when that exceeds the
    /// CPUs (by default the fused path runs min(threads, CPUs) workers; the
    /// weights are bitwise identical either way).
    #[arg(long)]
    oversubscribe: bool,
    /// Print one JSON object on stdout instead of the human report.
    #[arg(long)]
    json: bool,
}

fn parse_lr(s: &str) -> Result<f32, String> {
    let lr: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if lr.is_finite() && lr > 0.0 {
        Ok(lr)
    } else {
        Err(format!("must be finite and > 0, got {s}"))
    }
}

fn default_data_dir() -> PathBuf {
    let bundled = PathBuf::from(idx_softmax::BUNDLED_MNIST);
    if bundled.is_dir() {
        bundled
    } else {
        PathBuf::from("data/mnist")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let kernel = match cli.kernel {
        Some(k) => k,
        None => KernelPath::from_env()
            .map_err(anyhow::Error::msg)?
            .unwrap_or_else(KernelPath::best),
    };
    let threads = cli
        .threads
        .map_or_else(|| TrainConfig::default().threads, |t| t as usize);
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let cache = match &cli.cache_dir {
        Some(d) => GzCache::at(d),
        None => GzCache::default_dirs(),
    };
    let opts = LoadOptions {
        cache,
        classes: cli.classes.map(|c| c as usize),
    };

    let load_start = Instant::now();
    let data = Dataset::load(&data_dir, &opts)?;
    let load_seconds = load_start.elapsed().as_secs_f64();

    let cfg = TrainConfig {
        epochs: cli.epochs as usize,
        batch_size: cli.batch_size as usize,
        sgd: idx_softmax::optim::Sgd::plain(cli.lr),
        val_split: 0.0,
        seed: cli.seed,
        threads,
        kernel,
        oversubscribe: cli.oversubscribe,
    };
    let shape: Vec<String> = data
        .train
        .images
        .sample_shape()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let effective_kernel = if data.train.images.as_u8().is_some() {
        kernel
    } else {
        KernelPath::Gemm
    };
    if !cli.json {
        println!(
            "data     {} ({} train, {} test, {} {}, {} classes; loaded in {:.3} s)",
            data_dir.display(),
            data.train.len(),
            data.test.len(),
            shape.join("×"),
            data.train.images.element_type(),
            data.classes,
            load_seconds
        );
        println!(
            "training {} epoch(s), batch {}, lr {}, seed {}, {} thread(s), kernel {}",
            cfg.epochs, cfg.batch_size, cfg.sgd.lr, cfg.seed, cfg.threads, effective_kernel
        );
    }

    let bar = progress_bar((data.train.len() * cfg.epochs) as u64);
    let epoch_base = std::sync::atomic::AtomicU64::new(0);
    let progress =
        |done: u64| bar.set_position(epoch_base.load(std::sync::atomic::Ordering::Relaxed) + done);
    let json_mode = cli.json;
    let epochs = cfg.epochs;
    let n_train = data.train.len() as u64;
    let on_epoch = |r: &EpochReport| {
        epoch_base.fetch_add(n_train, std::sync::atomic::Ordering::Relaxed);
        if !json_mode {
            bar.suspend(|| {
                println!(
                    "epoch {}/{}  train loss {:.4}  test loss {:.4}  test accuracy {:.4}  {:.3} s  {:.0} samples/s",
                    r.stats.epoch,
                    epochs,
                    r.stats.train_loss,
                    r.test.loss,
                    r.test.accuracy,
                    r.stats.seconds,
                    r.stats.samples_per_second()
                )
            });
        }
    };
    let (model, reports) = train::train(&data, cfg.clone(), &progress, on_epoch)
        .with_context(|| format!("training on {}", data_dir.display()))?;
    bar.finish_and_clear();

    let last = reports.last().context("no epoch ran")?;
    let train_seconds: f64 = reports.iter().map(|r| r.stats.seconds).sum();
    let samples: usize = reports.iter().map(|r| r.stats.samples).sum();
    let digest = model.digest();
    if cli.json {
        let epochs: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "epoch": r.stats.epoch,
                    "train_loss": r.stats.train_loss,
                    "test_loss": r.test.loss,
                    "test_accuracy": r.test.accuracy,
                    "seconds": r.stats.seconds,
                    "eval_seconds": r.eval_seconds,
                    "samples_per_second": r.stats.samples_per_second(),
                })
            })
            .collect();
        let out = json!({
            "test_accuracy": last.test.accuracy,
            "test_loss": last.test.loss,
            "train_loss": last.stats.train_loss,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": f32_as_printed(cfg.sgd.lr),
            "seed": cfg.seed,
            "threads": cfg.threads,
            "workers": if effective_kernel.is_fused() { cfg.workers() } else { 1 },
            "kernel": effective_kernel.name(),
            "train_seconds": train_seconds,
            "samples_per_second": samples as f64 / train_seconds,
            "load_seconds": load_seconds,
            "eval_seconds": last.eval_seconds,
            "rss_anon_kb": rss_anon_kb(),
            "weights_digest": digest,
            "data_dir": data_dir.display().to_string(),
            "train_samples": data.train.len(),
            "test_samples": data.test.len(),
            "classes": data.classes,
            "per_epoch": epochs,
        });
        println!("{out}");
    } else {
        println!(
            "done     test accuracy {:.4} ({}/{}), training loop {:.3} s, {:.0} samples/s",
            last.test.accuracy,
            last.test.correct,
            last.test.total,
            train_seconds,
            samples as f64 / train_seconds
        );
        println!("weights  sha256 {digest}");
    }
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(total: u64) -> ProgressBar {
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

/// The f32 as its shortest decimal form, widened (0.1f32 → 0.1, not
/// 0.10000000149011612).
fn f32_as_printed(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Anonymous resident memory (heap, stacks; not mapped files) in KiB, from
/// /proc/self/status, where there is one.
fn rss_anon_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
