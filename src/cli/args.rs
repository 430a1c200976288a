//! The command line: flags, subcommands and the parsers that turn a bad
//! value into a usage error (exit status 2) before anything runs.
//!
//! Training flags that a checkpoint records (`--epochs`, `--batch-size`,
//! `--lr`, …) are `Option`s: without `--resume` a missing flag takes the
//! library's default; with `--resume` it takes the checkpoint's value, and
//! a flag that is given must agree with it (see
//! [`idx_softmax::run::spec`]). The parsers check each value by the
//! library's rule for its setting, and the help texts quote the library's
//! rules and defaults: nothing here states one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use idx_softmax::data::augment::{AugmentKind, DATASET_KIND};
use idx_softmax::kernels::KernelPath;
use idx_softmax::optim::Schedule;
use idx_softmax::preprocess::Mode;
use idx_softmax::run::spec::{self, SpecError};
use idx_softmax::setting::Setting;

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
    Train(Box<TrainArgs>),
    /// Evaluate a saved model on the test split: accuracy, loss, per-class
    /// precision and recall, confusion matrix.
    Eval(EvalArgs),
    /// Classify images (PNG, JPEG, BMP, PNM, TIFF, WebP; files, directories
    /// or standard input) or test-set samples with a saved model.
    Predict(PredictArgs),
    /// Write an augmented copy of a dataset: the training set followed by
    /// --copies deformed copies of it (copy c is what epoch c of a run
    /// with --augment and the same --seed trains on), the test set
    /// unchanged, as raw IDX files in --out.
    Augment(AugmentCmdArgs),
    /// Export a saved model as ONNX (opset 13): input `input` [batch,
    /// features] (pixels scaled as in training), outputs `probabilities`
    /// and `logits` [batch, classes]; the class names and the run's record
    /// in the metadata.
    Export(ExportArgs),
    /// Serve a saved model over HTTP: the Open Inference Protocol (KServe
    /// v2), POST /predict for images, a page to draw digits on at /, and
    /// /metrics.
    #[cfg(feature = "serve")]
    Serve(super::serve_cmd::ServeArgs),
}

/// `augment`. Its --augment defaults to [`DATASET_KIND`], not to none.
#[derive(Args, Debug, Clone)]
#[command(mut_arg("augment", |a| a.help(augment_cmd_kind_help())))]
pub struct AugmentCmdArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Deformed copies of the training set to write after it (134 makes a
    /// set the size of MNIST8M: 8.1M samples, 6.35 GB).
    #[arg(long, value_name = "N", value_parser = parse_copies, env = "IDX_SOFTMAX_COPIES", allow_negative_numbers = true)]
    pub copies: usize,
    /// The directory to write (created if missing; the four raw IDX files,
    /// and labels.txt when the data has one).
    #[arg(long, value_name = "DIR", env = "IDX_SOFTMAX_OUT")]
    pub out: PathBuf,
    #[command(flatten)]
    pub aug: AugmentArgs,
    #[arg(long, help = help("Seed of the deformations", Setting::Seed), env = "IDX_SOFTMAX_SEED", allow_negative_numbers = true)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Print one JSON object on stdout instead of a line [default: off].
    #[arg(long, env = "IDX_SOFTMAX_JSON")]
    pub json: bool,
}

/// The help of `augment --augment`: the kind of the copies.
fn augment_cmd_kind_help() -> String {
    format!(
        "The deformation of the copies; {} [default: {DATASET_KIND}]",
        Setting::Augment.rule()
    )
}

/// `--copies`: a whole number >= 1.
pub fn parse_copies(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n as usize),
        Ok(n) => Err(format!("must be >= 1, got {n}")),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// `export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The model, as written by --save.
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_MODEL")]
    pub model: PathBuf,
    /// Where to write the ONNX model (atomically).
    #[arg(long, value_name = "OUT", env = "IDX_SOFTMAX_ONNX")]
    pub onnx: PathBuf,
    /// Print one JSON object on stdout instead of a line [default: off].
    #[arg(long, env = "IDX_SOFTMAX_JSON")]
    pub json: bool,
}

/// Where the dataset is and where decompressed files go.
#[derive(Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// Directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz; '-' or
    /// '.' before "idx") [default: $IDX_SOFTMAX_DATA_DIR, else the bundled
    /// MNIST, data/mnist in the source tree this binary was built from]
    /// [env: IDX_SOFTMAX_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where decompressed .gz files are cached [default: the first writable
    /// of $IDX_SOFTMAX_CACHE_DIR, $XDG_CACHE_HOME/idx-softmax,
    /// ~/.cache/idx-softmax, the temp directory] [env: IDX_SOFTMAX_CACHE_DIR]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// How the arithmetic runs.
#[derive(Args, Debug, Clone, Default)]
pub struct ComputeArgs {
    #[arg(long, help = help("Worker threads", Setting::Threads), value_parser = parse_threads, env = "IDX_SOFTMAX_THREADS", allow_negative_numbers = true)]
    pub threads: Option<i64>,
    /// Kernel path: gemm, portable, avx2 or avx512 [default: the
    /// checkpoint's for eval/predict/--resume, else the best this CPU has;
    /// the variable caps what this CPU has, as on a CPU without AVX-512
    /// (avx2) or without AVX2 (portable)] [env: IDX_SOFTMAX_KERNEL]
    #[arg(long, value_parser = parse_kernel)]
    pub kernel: Option<KernelPath>,
}

impl ComputeArgs {
    /// `--threads`, else the library's default ([`spec::thread_count`]).
    pub fn thread_count(&self) -> Result<usize, SpecError> {
        spec::thread_count(self.threads)
    }
}

/// How training samples are deformed (`train` and `augment`).
#[derive(Args, Debug, Clone, Default)]
pub struct AugmentArgs {
    #[arg(long, value_name = "KIND", help = help("Deform each training sample on the fly, every epoch: none, shift (integer translation), affine (rotation, scale, shear, translation), elastic (Simard et al. 2003's displacement fields); a function of (seed, epoch, sample), so the bits are the same at any thread count", Setting::Augment), value_parser = parse_augment, env = "IDX_SOFTMAX_AUGMENT")]
    pub augment: Option<AugmentKind>,
    #[arg(long, value_name = "PX", help = help("--augment shift: dx and dy each uniform in -PX..=PX", Setting::MaxShift), value_parser = parse_max_shift, env = "IDX_SOFTMAX_MAX_SHIFT", allow_negative_numbers = true)]
    pub max_shift: Option<i64>,
    #[arg(long, value_name = "DEG", help = help("--augment affine: rotation uniform in +-DEG", Setting::Rotate), value_parser = parse_rotate, env = "IDX_SOFTMAX_ROTATE", allow_hyphen_values = true)]
    pub rotate: Option<f32>,
    #[arg(long, value_name = "F", help = help("--augment affine: scale uniform in 1 +- F", Setting::Scale), value_parser = parse_scale, env = "IDX_SOFTMAX_SCALE", allow_hyphen_values = true)]
    pub scale: Option<f32>,
    #[arg(long, value_name = "F", help = help("--augment affine: horizontal shear uniform in +-F", Setting::Shear), value_parser = parse_shear, env = "IDX_SOFTMAX_SHEAR", allow_hyphen_values = true)]
    pub shear: Option<f32>,
    #[arg(long, value_name = "PX", help = help("--augment affine: translation uniform in +-PX (sub-pixel)", Setting::Translate), value_parser = parse_translate, env = "IDX_SOFTMAX_TRANSLATE", allow_hyphen_values = true)]
    pub translate: Option<f32>,
    #[arg(long, value_name = "PX", help = help("--augment elastic: the Gaussian smoothing's sigma", Setting::Sigma), value_parser = parse_sigma, env = "IDX_SOFTMAX_SIGMA", allow_hyphen_values = true)]
    pub sigma: Option<f32>,
    #[arg(long, value_name = "PX", help = help("--augment elastic: the smoothed field's scale alpha", Setting::Alpha), value_parser = parse_alpha, env = "IDX_SOFTMAX_ALPHA", allow_hyphen_values = true)]
    pub alpha: Option<f32>,
}

/// `train` (and the top level).
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    #[arg(long, help = help("Total passes over the training set (with --resume: the run's new total)", Setting::Epochs), value_parser = parse_epochs, env = "IDX_SOFTMAX_EPOCHS", allow_negative_numbers = true)]
    pub epochs: Option<i64>,
    #[arg(long, help = help("Samples per SGD step; the last batch of an epoch may be smaller", Setting::BatchSize), value_parser = parse_batch_size, env = "IDX_SOFTMAX_BATCH_SIZE", allow_negative_numbers = true)]
    pub batch_size: Option<i64>,
    #[arg(long, help = help("Learning rate", Setting::Lr), value_parser = parse_lr, env = "IDX_SOFTMAX_LR", allow_hyphen_values = true)]
    pub lr: Option<f32>,
    #[arg(long, help = help("SGD momentum, as torch.optim.SGD", Setting::Momentum), value_parser = parse_momentum, env = "IDX_SOFTMAX_MOMENTUM", allow_hyphen_values = true)]
    pub momentum: Option<f32>,
    #[arg(long, help = help("Nesterov momentum", Setting::Nesterov), env = "IDX_SOFTMAX_NESTEROV")]
    pub nesterov: bool,
    #[arg(long, help = help("L2 weight decay", Setting::WeightDecay), value_parser = parse_weight_decay, env = "IDX_SOFTMAX_WEIGHT_DECAY", allow_hyphen_values = true)]
    pub weight_decay: Option<f32>,
    #[arg(long, help = help("Learning-rate schedule: constant, cosine (to 0 over the run, per step) or step:EVERY:GAMMA (x GAMMA every EVERY epochs)", Setting::Schedule), value_parser = parse_schedule, value_name = "SCHEDULE", env = "IDX_SOFTMAX_SCHEDULE")]
    pub schedule: Option<Schedule>,
    #[arg(long, help = help("Fraction of the training set held out for validation, drawn from the seed", Setting::ValSplit), value_parser = parse_val_split, value_name = "FRACTION", env = "IDX_SOFTMAX_VAL_SPLIT", allow_hyphen_values = true)]
    pub val_split: Option<f32>,
    #[arg(long, help = help("Seed for the weight initialisation, the shuffles and the validation split", Setting::Seed), env = "IDX_SOFTMAX_SEED", allow_negative_numbers = true)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub aug: AugmentArgs,
    #[arg(long, value_name = "C[xK]", help = help("Add a conv block, Conv2d(C channels, KxK, stride 1, same padding) -> ReLU -> MaxPool2d(2), before the hidden layers; repeat for more blocks (--conv 6 --conv 16 --hidden 120 --hidden 84 is LeNet-5's shape; K defaults to 5; the variable takes a comma-separated list)", Setting::Conv), value_parser = parse_conv, env = "IDX_SOFTMAX_CONV", value_delimiter = ',')]
    pub conv: Vec<(i64, i64)>,
    #[arg(long, value_name = "N", help = help("Add a hidden layer of N ReLU units; repeat for more layers (--hidden 512 --hidden 256 is 784-512-256-10; the variable takes a comma-separated list)", Setting::Hidden), value_parser = parse_hidden, env = "IDX_SOFTMAX_HIDDEN", value_delimiter = ',', allow_negative_numbers = true)]
    pub hidden: Vec<i64>,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, help = help("Number of classes", Setting::Classes), value_parser = parse_classes, env = "IDX_SOFTMAX_CLASSES", allow_negative_numbers = true)]
    pub classes: Option<i64>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Run exactly --threads training workers even when that exceeds the
    /// CPUs (by default the fused path runs min(threads, CPUs) workers; the
    /// weights are bitwise identical either way) [default: off].
    #[arg(long, env = "IDX_SOFTMAX_OVERSUBSCRIBE")]
    pub oversubscribe: bool,
    /// Save the model (safetensors, f32: weight [classes, features] and
    /// bias [classes], or 0.weight, 0.bias, 2.weight, … for an MLP as in
    /// nn.Sequential; momentum buffers; the run's settings as metadata),
    /// rewritten atomically after every epoch [default: not saved].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_SAVE"
    )]
    pub save: Option<PathBuf>,
    /// Continue the run saved in FILE (by --save) up to --epochs in total;
    /// flags left out are taken from the checkpoint, flags given must match
    /// it [default: a fresh run].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_RESUME"
    )]
    pub resume: Option<PathBuf>,
    /// Write the first layer's weight templates (one per class, or per
    /// hidden unit; red > 0, blue < 0) as a PNG at the end; needs 2-D
    /// samples [default: none].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_WEIGHTS_PNG"
    )]
    pub weights_png: Option<PathBuf>,
    /// Write per-epoch metrics as JSON lines, rewritten atomically after
    /// every epoch [default: none].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_METRICS_JSON"
    )]
    pub metrics_json: Option<PathBuf>,
    /// Draw the training curves (train, validation and test loss and
    /// accuracy per epoch) as a PNG, or an SVG when FILE ends in .svg;
    /// rewritten atomically after every epoch [default: none].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_PLOT"
    )]
    pub plot: Option<PathBuf>,
    /// Draw a few training samples next to their deformations (epochs 1
    /// to 5) as a PNG, before training; needs --augment [default: none].
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Outputs",
        env = "IDX_SOFTMAX_SAVE_AUGMENTED"
    )]
    pub save_augmented: Option<PathBuf>,
    /// Class names, one per line, recorded in the --save checkpoint
    /// [default: labels.txt beside the IDX files, if there is one].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_LABELS")]
    pub labels: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the human report
    /// [default: off].
    #[arg(long, help_heading = "Outputs", env = "IDX_SOFTMAX_JSON")]
    pub json: bool,
}

/// A flag's help: what it is, the library's rule for its value, and the
/// library's default.
fn help(what: &str, s: Setting) -> String {
    let mut h = what.to_owned();
    if s != Setting::Nesterov && s != Setting::Seed {
        h += &format!("; {}", s.rule());
    }
    if s == Setting::Nesterov {
        h += " (needs --momentum > 0)";
    }
    if s == Setting::Conv {
        h += &format!("; {}", Setting::ConvKernel.rule());
    }
    if let Some(d) = s.default_text() {
        h += &format!(" [default: {d}]");
    }
    h
}

/// `eval --split`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitArg {
    /// The test files (t10k-*).
    Test,
    /// The training rows the model learned from (without the held-out
    /// validation rows).
    Train,
    /// The validation rows the checkpoint's run held out (--val-split),
    /// drawn again from its seed.
    Val,
}

/// `eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The model, as written by --save (or any safetensors file with F32
    /// weight [classes, features] and bias [classes]).
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_MODEL")]
    pub model: PathBuf,
    /// Which samples to evaluate on.
    #[arg(long, value_enum, default_value_t = SplitArg::Test, env = "IDX_SOFTMAX_SPLIT")]
    pub split: SplitArg,
    /// Also report top-K accuracy: the label among the K most probable
    /// classes.
    #[arg(long, value_name = "K", default_value_t = idx_softmax::metrics::DEFAULT_TOP_K, value_parser = parse_top, env = "IDX_SOFTMAX_TOP_K", allow_negative_numbers = true)]
    pub top_k: usize,
    /// Class names, one per line [default: the checkpoint's, else
    /// labels.txt beside the IDX files].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_LABELS")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Also write the model's weight templates as a PNG [default: none].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_WEIGHTS_PNG")]
    pub weights_png: Option<PathBuf>,
    /// Draw the confusion matrix as a heat map (PNG, or SVG when FILE ends
    /// in .svg) [default: none].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_CONFUSION_PNG")]
    pub confusion_png: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the tables [default: off].
    #[arg(long, env = "IDX_SOFTMAX_JSON")]
    pub json: bool,
}

/// `predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The model, as written by --save.
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_MODEL")]
    pub model: PathBuf,
    /// Images (PNG, JPEG, BMP, PNM, TIFF or WebP, told apart by content), a
    /// directory of them (its image files, sorted by name, not recursive),
    /// or - for one image on standard input.
    #[arg(value_name = "IMAGE|DIR|-", required_unless_present = "test_index")]
    pub images: Vec<PathBuf>,
    /// Predict test-set sample N (0-based) instead of an image file; may be
    /// repeated (the variable takes a comma-separated list) [default: none].
    #[arg(
        long,
        value_name = "N",
        env = "IDX_SOFTMAX_TEST_INDEX",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub test_index: Vec<usize>,
    /// How many of the most probable classes to print.
    #[arg(long, default_value_t = idx_softmax::infer::DEFAULT_TOP, value_parser = parse_top, env = "IDX_SOFTMAX_TOP", allow_negative_numbers = true)]
    pub top: usize,
    /// mnist: invert a light background, scale the digit's bounding box to
    /// fit 20x20 (of 28x28; the same ratio at other sizes), centre its
    /// centre of mass; none: the pixels as they are (the image must be the
    /// model's size) [default: none for an image already the model's size
    /// and polarity, mnist for any other].
    #[arg(long, value_name = "MODE", value_parser = parse_preprocess, env = "IDX_SOFTMAX_PREPROCESS")]
    pub preprocess: Option<Mode>,
    /// Always invert the image (for a dark digit on a light background)
    /// [default: when its border is light].
    #[arg(long, conflicts_with = "no_invert", env = "IDX_SOFTMAX_INVERT")]
    pub invert: bool,
    /// Never invert the image [default: invert when its border is light].
    #[arg(long, env = "IDX_SOFTMAX_NO_INVERT")]
    pub no_invert: bool,
    /// Write the image the model actually saw, as a PNG per input, into DIR
    /// (created if missing) [default: none].
    #[arg(long, value_name = "DIR", env = "IDX_SOFTMAX_SAVE_PREPROCESSED")]
    pub save_preprocessed: Option<PathBuf>,
    /// Class names, one per line [default: the checkpoint's, else
    /// labels.txt beside the IDX files].
    #[arg(long, value_name = "FILE", env = "IDX_SOFTMAX_LABELS")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Print one JSON object per prediction, one per line [default: off].
    #[arg(long, conflicts_with = "csv", env = "IDX_SOFTMAX_JSON")]
    pub json: bool,
    /// Print a CSV table, a header and one row per prediction
    /// [default: off].
    #[arg(long, env = "IDX_SOFTMAX_CSV")]
    pub csv: bool,
    /// Also print every class's probability (JSON "probabilities", CSV
    /// columns p_CLASS) [default: off].
    #[arg(long, env = "IDX_SOFTMAX_PROBS")]
    pub probs: bool,
}

/// `--preprocess`: `mnist`, `none` (or `auto`, the default).
pub fn parse_preprocess(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// A number, checked by the library's rule for its setting; a broken rule
/// quotes the value as given (`1e-50`, not the 0 it rounds to in f32).
fn checked<T>(s: &str, rule: fn(f32) -> Result<T, SpecError>) -> Result<T, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    rule(v).map_err(|e| as_given(e, s))
}

/// A whole number, checked by the library's rule for its setting.
fn whole<T>(s: &str, rule: impl Fn(i64) -> Result<T, SpecError>) -> Result<T, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    rule(v).map_err(|e| as_given(e, s))
}

/// The rule `e` states, quoting the value as the user wrote it.
fn as_given(e: SpecError, s: &str) -> String {
    match e {
        SpecError::Invalid { setting, .. } => SpecError::Invalid {
            setting,
            given: s.trim().to_owned(),
        }
        .rule_text(),
        other => other.rule_text(),
    }
}

/// `--lr`.
pub fn parse_lr(s: &str) -> Result<f32, String> {
    checked(s, spec::check_lr)
}

/// `--momentum`.
pub fn parse_momentum(s: &str) -> Result<f32, String> {
    checked(s, spec::check_momentum)
}

/// `--weight-decay`.
pub fn parse_weight_decay(s: &str) -> Result<f32, String> {
    checked(s, spec::check_weight_decay)
}

/// `--val-split`.
pub fn parse_val_split(s: &str) -> Result<f32, String> {
    checked(s, spec::check_val_split)
}

/// `--epochs`: its value as given (the library resolves it).
pub fn parse_epochs(s: &str) -> Result<i64, String> {
    whole(s, |v| spec::check_count(Setting::Epochs, v).map(|_| v))
}

/// `--batch-size`.
pub fn parse_batch_size(s: &str) -> Result<i64, String> {
    whole(s, |v| spec::check_count(Setting::BatchSize, v).map(|_| v))
}

/// `--hidden`: one width.
pub fn parse_hidden(s: &str) -> Result<i64, String> {
    whole(s, |v| spec::check_hidden(v).map(|_| v))
}

/// `--conv`: `C` or `CxK`, each checked by the library's rule; kept as
/// given.
pub fn parse_conv(s: &str) -> Result<(i64, i64), String> {
    let bad = || format!("'{s}' is not C or CxK (channels, and an odd kernel size)");
    let (c, k) = match s.trim().split_once(['x', 'X']) {
        Some((c, k)) => (c, Some(k)),
        None => (s.trim(), None),
    };
    let c: i64 = c.trim().parse().map_err(|_| bad())?;
    let k: i64 = match k {
        Some(k) => k.trim().parse().map_err(|_| bad())?,
        None => idx_softmax::run::CNN_KERNEL as i64,
    };
    spec::check_conv(c, k).map_err(|e| e.rule_text())?;
    Ok((c, k))
}

/// `--augment`.
pub fn parse_augment(s: &str) -> Result<AugmentKind, String> {
    s.parse::<AugmentKind>()
        .map_err(|e| SpecError::from(e).rule_text())
}

/// An augmentation parameter, checked by the library's rule for it (the
/// kind's own check, on that kind's defaults with this value).
fn augment_param(s: &str, setting: Setting) -> Result<f32, String> {
    use idx_softmax::data::augment::{Augment, AugmentKind as K};
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    let mut a = match setting {
        Setting::MaxShift => Augment::defaults(K::Shift),
        Setting::Sigma | Setting::Alpha => Augment::defaults(K::Elastic),
        _ => Augment::defaults(K::Affine),
    };
    match (&mut a, setting) {
        (Augment::Shift(p), _) => {
            if v < 0.0 || v.fract() != 0.0 {
                return Err(format!("{}, got {s}", setting.rule()));
            }
            p.max_shift = v as u32
        }
        (Augment::Affine(p), Setting::Rotate) => p.rotate_deg = v,
        (Augment::Affine(p), Setting::Scale) => p.scale = v,
        (Augment::Affine(p), Setting::Shear) => p.shear = v,
        (Augment::Affine(p), _) => p.translate = v,
        (Augment::Elastic(p), Setting::Sigma) => p.sigma = v,
        (Augment::Elastic(p), _) => p.alpha = v,
        (Augment::None, _) => {}
    }
    a.validate()
        .map_err(|e| format!("{}, got {s}", SpecError::from(e).setting().rule()))?;
    Ok(v)
}

/// `--max-shift`.
pub fn parse_max_shift(s: &str) -> Result<i64, String> {
    augment_param(s, Setting::MaxShift).map(|v| v as i64)
}

/// `--rotate`.
pub fn parse_rotate(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Rotate)
}

/// `--scale`.
pub fn parse_scale(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Scale)
}

/// `--shear`.
pub fn parse_shear(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Shear)
}

/// `--translate`.
pub fn parse_translate(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Translate)
}

/// `--sigma`.
pub fn parse_sigma(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Sigma)
}

/// `--alpha`.
pub fn parse_alpha(s: &str) -> Result<f32, String> {
    augment_param(s, Setting::Alpha)
}

/// `--classes`.
pub fn parse_classes(s: &str) -> Result<i64, String> {
    whole(s, |v| spec::check_classes(v).map(|_| v))
}

/// `--threads`.
pub fn parse_threads(s: &str) -> Result<i64, String> {
    whole(s, |v| spec::check_threads(v).map(|_| v))
}

/// `--top` and `--top-k`: how many classes, at least 1.
pub fn parse_top(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(k) if k >= 1 => Ok(k as usize),
        Ok(_) => Err(format!("{} is not in 1..", s.trim())),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// `--schedule`.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    s.parse()
}

/// `--kernel`.
pub fn parse_kernel(s: &str) -> Result<KernelPath, String> {
    spec::parse_kernel(s).map_err(|e| e.rule_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--help` shows, for every flag of every command, its default and its
    /// environment variable.
    #[test]
    fn every_flag_documents_its_default_and_variable() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let env = arg
                    .get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .or_else(|| {
                        help.split("[env: ")
                            .nth(1)
                            .map(|r| r.split(']').next().unwrap_or("").to_owned())
                    });
                let env = env.unwrap_or_else(|| panic!("{path} --{id}: no environment variable"));
                assert!(env.starts_with("IDX_SOFTMAX_"), "{path} --{id}: {env}");
                let want = format!("IDX_SOFTMAX_{}", id.to_ascii_uppercase());
                assert_eq!(env, want, "{path} --{id}");
                assert!(
                    arg.is_required_set()
                        || !arg.get_default_values().is_empty()
                        || help.contains("[default: "),
                    "{path} --{id}: no default shown"
                );
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "idx-softmax");
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
        // The value as given, not as it rounds in f32.
        assert_eq!(
            parse_lr("1e-50").unwrap_err(),
            "must be finite and > 0, got 1e-50"
        );
        assert_eq!(
            parse_momentum(" 0.9999999999").unwrap_err(),
            "must be in [0, 1), got 0.9999999999"
        );
        assert_eq!(parse_top("-0").unwrap_err(), "-0 is not in 1..");
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
