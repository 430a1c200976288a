//! The command line: flags, subcommands and the parsers that turn a bad
//! value into a usage error (exit status 2) before anything runs.
//!
//! Training flags that a checkpoint records (`--epochs`, `--batch-size`,
//! `--lr`, …) are `Option`s: without `--resume` a missing flag takes its
//! default (see [`crate::cli::settings`]); with `--resume` it takes the
//! checkpoint's value, and a flag that is given must agree with it.

use std::path::PathBuf;

use clap::{value_parser, Args, Parser, Subcommand};

use idx_softmax::config;
use idx_softmax::kernels::KernelPath;
use idx_softmax::optim::Schedule;

/// Train softmax regression or an MLP on an IDX image dataset (MNIST by
/// default), and use the trained model.
///
/// Without a subcommand, trains (the flags of `train` work at the top level).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Train a model (the default when no subcommand is given).
    Train(TrainArgs),
    /// Evaluate a saved model on the test split: accuracy, loss, per-class
    /// precision and recall, confusion matrix.
    Eval(EvalArgs),
    /// Classify images (8-bit grayscale PNG or PGM) or test-set samples with
    /// a saved model.
    Predict(PredictArgs),
}

/// Where the dataset is and where decompressed files go.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz; '-' or
    /// '.' before "idx"). Default: the bundled MNIST.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where decompressed .gz files are cached (default: $IDX_SOFTMAX_CACHE_DIR,
    /// then ~/.cache/idx-softmax, then the temp directory).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// How the arithmetic runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ComputeArgs {
    /// Worker threads, 1 to 1024 (default: the number of CPUs).
    #[arg(long, value_parser = value_parser!(u32).range(1..=1024), allow_negative_numbers = true)]
    pub threads: Option<u32>,
    /// Kernel path: gemm, portable, avx2 or avx512 (default: $IDX_SOFTMAX_KERNEL,
    /// else the checkpoint's for eval/predict/--resume, else the best this
    /// CPU has).
    #[arg(long)]
    pub kernel: Option<KernelPath>,
}

/// `train` (and the top level).
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// Total passes over the training set [default: 1; with --resume, the
    /// checkpoint's planned total].
    #[arg(long, value_parser = value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub epochs: Option<u32>,
    /// Samples per SGD step; the last batch of an epoch may be smaller
    /// [default: 100].
    #[arg(long, value_parser = value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub batch_size: Option<u32>,
    /// Learning rate, finite and > 0 [default: 0.1].
    #[arg(long, value_parser = parse_lr, allow_hyphen_values = true)]
    pub lr: Option<f32>,
    /// SGD momentum in [0, 1), as torch.optim.SGD [default: 0].
    #[arg(long, value_parser = parse_momentum, allow_hyphen_values = true)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (needs --momentum > 0).
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay, finite and >= 0 [default: 0].
    #[arg(long, value_parser = parse_weight_decay, allow_hyphen_values = true)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule: constant, cosine (to 0 over the run, per
    /// step) or step:EVERY:GAMMA (× GAMMA every EVERY epochs) [default:
    /// constant].
    #[arg(long, value_parser = parse_schedule, value_name = "SCHEDULE")]
    pub schedule: Option<Schedule>,
    /// Fraction of the training set held out for validation, in [0, 1);
    /// drawn from the seed [default: 0].
    #[arg(long, value_parser = parse_val_split, value_name = "FRACTION", allow_hyphen_values = true)]
    pub val_split: Option<f32>,
    /// Seed for the weight initialisation, the shuffles and the validation
    /// split [default: 42].
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Add a hidden layer of N ReLU units; repeat for more layers
    /// (`--hidden 512 --hidden 256` is 784→512→256→10). Default: none
    /// (softmax regression).
    #[arg(long, value_name = "N", value_parser = parse_hidden)]
    pub hidden: Vec<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of classes, 2 to 65536 (default: the largest training label + 1).
    #[arg(long, value_parser = value_parser!(u32).range(2..=idx_softmax::dataset::MAX_CLASSES as i64), allow_negative_numbers = true)]
    pub classes: Option<u32>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Run exactly --threads training workers even when that exceeds the
    /// CPUs (by default the fused path runs min(threads, CPUs) workers; the
    /// weights are bitwise identical either way).
    #[arg(long)]
    pub oversubscribe: bool,
    /// Save the model (safetensors, f32: weight [classes, features] and
    /// bias [classes], or 0.weight, 0.bias, 2.weight, … for an MLP as in
    /// nn.Sequential; momentum buffers; the run's settings as metadata),
    /// rewritten atomically after every epoch.
    #[arg(long, value_name = "FILE", help_heading = "Outputs")]
    pub save: Option<PathBuf>,
    /// Continue the run saved in FILE (by --save) up to --epochs in total;
    /// flags left out are taken from the checkpoint, flags given must match
    /// it.
    #[arg(long, value_name = "FILE", help_heading = "Outputs")]
    pub resume: Option<PathBuf>,
    /// Write the first layer's weight templates (one per class, or per
    /// hidden unit; red > 0, blue < 0) as a PNG at the end; needs 2-D
    /// samples.
    #[arg(long, value_name = "FILE", help_heading = "Outputs")]
    pub weights_png: Option<PathBuf>,
    /// Write per-epoch metrics as JSON lines, rewritten atomically after
    /// every epoch.
    #[arg(long, value_name = "FILE", help_heading = "Outputs")]
    pub metrics_json: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the human report.
    #[arg(long, help_heading = "Outputs")]
    pub json: bool,
}

/// `eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The model, as written by --save (or any safetensors file with F32
    /// weight [classes, features] and bias [classes]).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Also write the model's weight templates as a PNG.
    #[arg(long, value_name = "FILE")]
    pub weights_png: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// `predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The model, as written by --save.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// 8-bit grayscale PNG or PGM images of the model's input size (28×28
    /// for MNIST).
    #[arg(value_name = "IMAGE", required_unless_present = "test_index")]
    pub images: Vec<PathBuf>,
    /// Predict test-set sample N (0-based) instead of an image file; may be
    /// repeated.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub test_index: Vec<usize>,
    /// How many of the most probable classes to print.
    #[arg(long, default_value_t = 3, value_parser = value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub top: u32,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Print one JSON object per prediction, one per line.
    #[arg(long)]
    pub json: bool,
}

/// `--lr`: finite and > 0.
pub fn parse_lr(s: &str) -> Result<f32, String> {
    checked(s, config::check_lr)
}

/// `--momentum`: in [0, 1).
pub fn parse_momentum(s: &str) -> Result<f32, String> {
    checked(s, config::check_momentum)
}

/// `--weight-decay`: finite and ≥ 0.
pub fn parse_weight_decay(s: &str) -> Result<f32, String> {
    checked(s, config::check_weight_decay)
}

/// `--val-split`: in [0, 1).
pub fn parse_val_split(s: &str) -> Result<f32, String> {
    checked(s, config::check_val_split)
}

/// `--hidden`: a width in 1..=MAX_WIDTH.
pub fn parse_hidden(s: &str) -> Result<usize, String> {
    let w: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    config::check_hidden(w).map_err(|e| e.rule().to_owned())?;
    Ok(w)
}

/// `--schedule`: `constant`, `cosine` or `step:EVERY:GAMMA`.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    s.parse()
}

/// A number, checked by the library's rule for its flag.
fn checked(s: &str, rule: fn(f32) -> Result<(), config::ConfigError>) -> Result<f32, String> {
    let v = parse_f32(s)?;
    rule(v).map_err(|e| e.rule().to_owned())?;
    Ok(v)
}

fn parse_f32(s: &str) -> Result<f32, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_lr("0.5"), Ok(0.5));
        assert!(parse_lr("0").is_err() && parse_lr("inf").is_err() && parse_lr("x").is_err());
        assert_eq!(parse_momentum("0"), Ok(0.0));
        assert!(parse_momentum("1").is_err() && parse_momentum("-0.1").is_err());
        assert!(parse_weight_decay("-1e-4").is_err() && parse_weight_decay("NaN").is_err());
        assert_eq!(parse_weight_decay("1e-4"), Ok(1e-4));
        assert!(parse_val_split("1").is_err());
        assert_eq!(parse_val_split("0.1"), Ok(0.1));
        assert!(parse_schedule("linear").is_err());
        assert_eq!(parse_schedule("cosine"), Ok(Schedule::Cosine));
    }

    #[test]
    fn no_subcommand_trains_with_flat_flags() {
        let cli = Cli::try_parse_from(["x", "--threads", "8", "--epochs", "2"]).unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.train.epochs, Some(2));
        assert_eq!(cli.train.compute.threads, Some(8));
        let cli = Cli::try_parse_from(["x", "eval", "--model", "m.st"]).unwrap();
        assert!(matches!(cli.cmd, Some(Cmd::Eval(_))));
        assert!(Cli::try_parse_from(["x", "--epochs", "2", "eval", "--model", "m"]).is_err());
        assert!(Cli::try_parse_from(["x", "predict", "--model", "m"]).is_err());
    }
}
