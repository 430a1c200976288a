//! `predict`: classify images, directories of images, standard input, or
//! samples of the test split, with a saved model, printing the most
//! probable classes.
//!
//! An image is decoded ([`idx_softmax::image::decode_file`]), made into the
//! model's input ([`idx_softmax::preprocess::prepare`]: luminance, polarity,
//! and the MNIST normalisation unless it is already the model's size and
//! polarity), and goes through [`idx_softmax::infer::logits`].
//! `--test-index N` runs test sample N through the evaluation's own forward
//! pass (`Network::forward_rows`, on the kernel path eval would use), so
//! its answer is the one `eval` counts. The two agree to float rounding;
//! with `--kernel gemm`, bit for bit.
//!
//! Each input is classified and printed on its own: a bad file gets its own
//! one-line `error:` on stderr, the others are still classified, and the
//! exit status is 1 if any failed (after a last line counting the
//! failures; a single input's failure is just its own line). Every entry
//! of a directory that is not classified (another kind of file, an image
//! format not read, a subdirectory) is named with why, and counts as a
//! failure: nothing vanishes without a word.
//!
//! Before any work, the pictures `--save-preprocessed` will write are
//! planned and checked against every input (the images, the model, the
//! labels): one never lands on an input.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use idx_softmax::data::Split;
use idx_softmax::fsutil::Named;
use idx_softmax::image::{self, GrayImage};
use idx_softmax::infer;
use idx_softmax::model::SavedModel;
use idx_softmax::prediction;
use idx_softmax::preprocess::{self, Mode, Options, Prepared};

use super::args::PredictArgs;
use super::common::{class_names, distinct, load, trained_on, Loaded};
use super::names::flag;

/// Largest image read from standard input.
const MAX_STDIN_BYTES: u64 = image::MAX_STREAM_BYTES;
/// File name extensions taken from a directory (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "pgm", "pnm", "ppm", "pbm", "pam", "tif", "tiff", "webp",
];

/// Where a prediction's input came from.
enum Source {
    Image {
        name: String,
        prepared: Box<Prepared>,
        saved: Option<PathBuf>,
    },
    Test {
        index: usize,
        label: u32,
        saved: Option<PathBuf>,
    },
}

/// One input's logits.
struct Prediction {
    source: Source,
    logits: Vec<f32>,
}

/// One input named on the command line, after expanding directories.
enum Input {
    File(PathBuf),
    Stdin,
    /// An entry of a directory that is not classified, and why.
    Skipped(PathBuf, String),
}

impl Input {
    fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) | Self::Skipped(p, _) => Some(p),
            Self::Stdin => None,
        }
    }
}

/// How predictions are printed.
struct Printer<'a> {
    json: bool,
    csv: bool,
    probs: bool,
    top: usize,
    names: &'a [String],
}

/// Runs `predict` with `args`.
pub fn run(args: PredictArgs) -> Result<()> {
    let mut inputs = Vec::new();
    let mut unlisted = Vec::new();
    for arg in &args.images {
        match expand(arg) {
            Ok(found) => inputs.extend(found),
            Err(e) => unlisted.push(e),
        }
    }
    // Where --save-preprocessed writes each input's picture, decided (and
    // checked against every input) before any work.
    let planned = plan_saved(&args, &inputs);
    check_saved(&args, &inputs, &planned)?;
    let saved = SavedModel::load(&args.model)?;
    let model = saved.network();
    let default_dir = idx_softmax::data::default_data_dir();
    let names_dir = args.data.data_dir.as_deref().unwrap_or(&default_dir);
    let names = class_names(
        args.labels.as_deref(),
        Some(&saved),
        names_dir,
        model.classes(),
    )?;
    if let Some(dir) = &args.save_preprocessed {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("--save-preprocessed {}: {e}", dir.display()))?;
        if let Some(first) = planned.first() {
            idx_softmax::fsutil::probe_output(first)
                .map_err(|e| anyhow!("--save-preprocessed {}: {e}", first.display()))?;
        }
    }
    let printer = Printer {
        json: args.json,
        csv: args.csv,
        probs: args.probs,
        top: args.top.min(model.classes()),
        names: &names,
    };
    let mut out = std::io::stdout().lock();
    if args.csv {
        writeln!(out, "{}", printer.csv_header(model.classes()))?;
    }
    let opts = Options {
        mode: args.preprocess.unwrap_or(Mode::Auto),
        invert: match (args.invert, args.no_invert) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        background: saved.background().unwrap_or(0.0),
    };
    let shape = saved.input_shape();
    // A user's image is f32 after preprocessing: it runs on the path
    // eval would take (a linear first layer on the fused f32 kernel).
    let image_path = saved.inference_kernel(args.compute.kernel)?;
    let (mut failed, mut total) = (0usize, 0usize);
    let mut fail = |e: anyhow::Error| {
        eprintln!("error: {e:#}");
        failed += 1;
    };

    // A single input's failure is the command's one error line.
    let single = inputs.len() + unlisted.len() + args.test_index.len() == 1;
    if single {
        if let Some(e) = unlisted.pop() {
            return Err(e);
        }
        if let Some(Input::Skipped(path, why)) = inputs.first() {
            bail!("{}: skipped: {why}", path.display());
        }
    }
    for e in unlisted {
        total += 1;
        fail(e);
    }
    let mut planned = planned.into_iter();
    for input in inputs {
        total += 1;
        let target = planned.next();
        if let Input::Skipped(path, why) = &input {
            fail(anyhow!("{}: skipped: {why}", path.display()));
            continue;
        }
        let result = classify(&input, &saved, shape, &opts).and_then(|(name, p)| {
            let saved = match target {
                Some(path) => {
                    image::write_gray_png(&path, &p.image)?;
                    Some(path)
                }
                None => None,
            };
            if p.empty {
                eprintln!(
                    "warning: {name}: no digit found (the image is blank or has no contrast)"
                );
            }
            let logits = infer::logits_one(model, image_path, &p.image.features());
            Ok(Prediction {
                source: Source::Image {
                    name,
                    prepared: Box::new(p),
                    saved,
                },
                logits,
            })
        });
        match result {
            Ok(p) => writeln!(out, "{}", printer.render(&p))?,
            Err(e) if single => return Err(e),
            Err(e) => fail(e),
        }
    }

    if !args.test_index.is_empty() {
        total += args.test_index.len();
        match predict_test(&args, &saved) {
            Ok((loaded, preds)) => {
                for mut p in preds {
                    if let (Some(path), Source::Test { index, saved, .. }) =
                        (planned.next(), &mut p.source)
                    {
                        if let Some(img) = test_image(&loaded.data, *index) {
                            image::write_gray_png(&path, &img)?;
                            *saved = Some(path);
                        }
                    }
                    writeln!(out, "{}", printer.render(&p))?
                }
            }
            Err(e) => {
                out.flush()?;
                return Err(e);
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} of {total} input(s) could not be classified");
    }
    Ok(())
}

/// The picture `--save-preprocessed DIR` writes for each input, in order
/// (the images, then the `--test-index` samples): `DIR/STEM.png`, with
/// `-2`, `-3`, … when two inputs share a stem; `stdin.png` for `-`,
/// `test-N.png` for `--test-index N`. Empty without the flag. A skipped
/// file keeps its place (nothing is written for it).
fn plan_saved(args: &PredictArgs, inputs: &[Input]) -> Vec<PathBuf> {
    let Some(dir) = &args.save_preprocessed else {
        return Vec::new();
    };
    let mut used = HashSet::new();
    let stems = inputs
        .iter()
        .map(|input| match input {
            Input::File(path) | Input::Skipped(path, _) => path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("stdin")
                .to_owned(),
            Input::Stdin => "stdin".to_owned(),
        })
        .chain(args.test_index.iter().map(|i| format!("test-{i}")));
    stems
        .map(|stem| {
            let mut candidate = stem.clone();
            let mut n = 1;
            while !used.insert(candidate.clone()) {
                n += 1;
                candidate = format!("{stem}-{n}");
            }
            dir.join(format!("{candidate}.png"))
        })
        .collect()
}

/// Refuses (a usage error) a `--save-preprocessed` picture that would land
/// on an input: an image, the model or the labels.
fn check_saved(args: &PredictArgs, inputs: &[Input], planned: &[PathBuf]) -> Result<()> {
    let flag = "--save-preprocessed";
    let outputs: Vec<(&str, Option<&PathBuf>)> = planned.iter().map(|p| (flag, Some(p))).collect();
    let mut given = vec![Named::new("--model", &args.model)];
    if let Some(labels) = &args.labels {
        given.push(Named::new("--labels", labels));
    }
    for input in inputs {
        if let Input::File(path) | Input::Skipped(path, _) = input {
            given.push(Named::new("the input image", path));
        }
    }
    distinct(&outputs, &given, &[])
}

/// Image formats a directory may hold that are not read (named in the
/// message for a skipped file).
const UNREAD_IMAGE_EXTENSIONS: &[&str] = &[
    "svg", "svgz", "heic", "heif", "avif", "gif", "jxl", "ico", "psd", "tga", "exr", "hdr", "qoi",
    "dng", "cr2", "nef", "arw", "raw",
];

/// Why a directory entry is not classified, or `None` for an image file.
fn skip_reason(entry: &std::fs::DirEntry) -> Option<String> {
    let path = entry.path();
    let meta = std::fs::metadata(&path);
    if meta.as_ref().is_ok_and(|m| m.is_dir()) {
        return Some("a directory (directories are not searched recursively)".into());
    }
    if let Err(e) = idx_softmax::fsutil::regular_file(&path) {
        return Some(e.to_string());
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext {
        Some(e) if IMAGE_EXTENSIONS.contains(&e.as_str()) => None,
        Some(e) if UNREAD_IMAGE_EXTENSIONS.contains(&e.as_str()) => Some(format!(
            ".{e} is not a format this tool reads ({})",
            image::ACCEPTED
        )),
        Some(e) => Some(format!(
            "not an image file by its name (.{e}); a directory's files are read by extension: {}",
            IMAGE_EXTENSIONS.join(", ")
        )),
        None => Some(format!(
            "not an image file by its name (no extension); a directory's files are read by extension: {}",
            IMAGE_EXTENSIONS.join(", ")
        )),
    }
}

/// An argument as inputs: `-` is standard input, a directory its entries
/// (sorted by name, not recursive: its image files by extension, and every
/// other entry as [`Input::Skipped`], so that each is named), anything
/// else a file whose content decides its format.
fn expand(arg: &Path) -> Result<Vec<Input>> {
    if arg.as_os_str() == "-" {
        return Ok(vec![Input::Stdin]);
    }
    if !arg.is_dir() {
        return Ok(vec![Input::File(arg.to_owned())]);
    }
    let entries =
        std::fs::read_dir(arg).map_err(|e| anyhow!("{}: cannot list: {e}", arg.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("{}: cannot list: {e}", arg.display()))?;
        let path = entry.path();
        found.push(match skip_reason(&entry) {
            None => Input::File(path),
            Some(why) => Input::Skipped(path, why),
        });
    }
    if found.is_empty() {
        bail!(
            "{}: the directory is empty: it holds no image files (by extension: {})",
            arg.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    found.sort_by(|a, b| a.path().cmp(&b.path()));
    Ok(found)
}

/// Decodes and prepares one input; returns its display name too.
fn classify(
    input: &Input,
    model: &SavedModel,
    shape: Option<(usize, usize)>,
    opts: &Options,
) -> Result<(String, Prepared)> {
    let model_path = model.path();
    let (name, decoded) = match input {
        Input::File(path) => (path.display().to_string(), image::decode_file(path)?),
        Input::Skipped(path, why) => bail!("{}: skipped: {why}", path.display()),
        Input::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_STDIN_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow!("standard input: {e}"))?;
            if bytes.len() as u64 > MAX_STDIN_BYTES {
                bail!(
                    "standard input: more than {} MiB, too large for an image",
                    MAX_STDIN_BYTES >> 20
                );
            }
            let decoded = image::decode_bytes(Path::new("standard input"), &bytes)?;
            ("-".to_string(), decoded)
        }
    };
    let Some((h, w)) = shape else {
        bail!(
            "{name}: the model {} takes {} features, not a 2-D image",
            model_path.display(),
            model.network().features()
        );
    };
    let prepared = preprocess::prepare(&decoded, h, w, opts).map_err(|e| {
        anyhow!(
            "{name}: {} (model {})",
            e.message(&flag),
            model_path.display()
        )
    })?;
    Ok((name, prepared))
}

/// Test sample `index` as an image, for `--save-preprocessed` (u8 2-D
/// samples only).
fn test_image(split: &Split, index: usize) -> Option<GrayImage> {
    let images = &split.images;
    let (Some(px), &[h, w]) = (images.as_u8(), images.sample_shape()) else {
        return None;
    };
    let k = h * w;
    Some(GrayImage {
        width: w,
        height: h,
        pixels: px[index * k..(index + 1) * k].to_vec(),
    })
}

/// The logits of the `--test-index` samples, computed as `eval` does, and
/// the split they came from.
fn predict_test(
    args: &PredictArgs,
    saved: &SavedModel,
) -> Result<(Loaded<Split>, Vec<Prediction>)> {
    let model = saved.network();
    let loaded = load(&args.data, trained_on(saved), &[], |dir, cache| {
        Split::load_test(dir, &cache)
    })?;
    let split = &loaded.data;
    saved.check_labels(split)?;
    saved.check_samples(split)?;
    loaded.print_note();
    if let Some(&bad) = args.test_index.iter().find(|&&i| i >= split.len()) {
        bail!(
            "--test-index {bad} is out of range: {} holds {} test samples (0..{})",
            split.images.path().display(),
            split.len(),
            split.len()
        );
    }
    let samples = split.samples(model.classes())?;
    let kernel = saved.inference_kernel(args.compute.kernel)?;
    let rows: Vec<u32> = args.test_index.iter().map(|&i| i as u32).collect();
    let c = model.classes();
    let logits = infer::thread_pool(args.compute.thread_count()?)?
        .install(|| infer::logits(model, &samples, infer::Rows::Only(&rows), kernel));
    let labels = &split.labels;
    let preds = args
        .test_index
        .iter()
        .zip(logits.chunks_exact(c))
        .map(|(&index, z)| Prediction {
            source: Source::Test {
                index,
                label: labels.get(index),
                saved: None,
            },
            logits: z.to_vec(),
        })
        .collect();
    Ok((loaded, preds))
}

impl Printer<'_> {
    fn name(&self, class: usize) -> Option<&str> {
        self.names.get(class).map(String::as_str)
    }

    /// `7`, or `7 (seven)` with names.
    fn class(&self, class: usize) -> String {
        match self.name(class) {
            Some(n) if n != class.to_string() => format!("{class} ({n})"),
            _ => class.to_string(),
        }
    }

    fn render(&self, p: &Prediction) -> String {
        let probs = infer::softmax(&p.logits);
        let ranked = infer::ranked(&probs);
        let top = &ranked[..self.top];
        if self.json {
            self.json(p, &probs, top).to_string()
        } else if self.csv {
            self.csv_row(p, &probs, top)
        } else {
            self.line(p, &probs, top)
        }
    }

    /// The library's JSON of a prediction ([`prediction::json`]), as the
    /// server's `/predict` answers it.
    fn json(&self, p: &Prediction, probs: &[f64], top: &[usize]) -> Value {
        let source = match &p.source {
            Source::Image {
                name,
                prepared,
                saved,
            } => prediction::Source::Image {
                name,
                prepared,
                saved: saved.as_deref(),
            },
            Source::Test {
                index,
                label,
                saved,
            } => prediction::Source::Test {
                index: *index,
                label: *label,
                saved: saved.as_deref(),
            },
        };
        prediction::json(probs, top, self.names, self.probs, &source)
    }

    fn line(&self, p: &Prediction, probs: &[f64], top: &[usize]) -> String {
        let (name, note) = match &p.source {
            Source::Image { name, prepared, .. } => {
                let mut notes = Vec::new();
                if prepared.inverted {
                    notes.push("inverted");
                }
                if prepared.normalised {
                    notes.push("mnist-preprocessed");
                }
                if prepared.empty {
                    notes.push("no digit found");
                }
                let note = if notes.is_empty() {
                    String::new()
                } else {
                    format!("   [{}]", notes.join(", "))
                };
                (name.clone(), note)
            }
            Source::Test { index, label, .. } => (
                format!("test #{index} (label {})", self.class(*label as usize)),
                String::new(),
            ),
        };
        let ranked: Vec<String> = top
            .iter()
            .map(|&c| format!("{} {:.4}", self.class(c), probs[c]))
            .collect();
        format!(
            "{name}: {}   top {}: {}{note}",
            self.class(top[0]),
            top.len(),
            ranked.join(", ")
        )
    }

    fn csv_header(&self, classes: usize) -> String {
        let mut cols: Vec<String> = [
            "image",
            "label",
            "predicted",
            "name",
            "probability",
            "preprocess",
            "inverted",
        ]
        .map(String::from)
        .to_vec();
        if self.probs {
            for c in 0..classes {
                cols.push(csv_field(&format!(
                    "p_{}",
                    self.name(c).map_or(c.to_string(), str::to_owned)
                )));
            }
        }
        cols.join(",")
    }

    fn csv_row(&self, p: &Prediction, probs: &[f64], top: &[usize]) -> String {
        let c = top[0];
        let (image, label, preprocess, inverted) = match &p.source {
            Source::Image { name, prepared, .. } => (
                name.clone(),
                String::new(),
                if prepared.normalised { "mnist" } else { "none" },
                prepared.inverted.to_string(),
            ),
            Source::Test { index, label, .. } => (
                format!("test:{index}"),
                label.to_string(),
                "none",
                "false".into(),
            ),
        };
        let mut cols = vec![
            csv_field(&image),
            label,
            c.to_string(),
            csv_field(self.name(c).unwrap_or("")),
            format!("{:.6}", probs[c]),
            preprocess.to_string(),
            inverted,
        ];
        if self.probs {
            cols.extend(probs.iter().map(|p| format!("{p:.6}")));
        }
        cols.join(",")
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC
/// 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printer(names: &[String]) -> Printer<'_> {
        Printer {
            json: true,
            csv: false,
            probs: true,
            top: 1,
            names,
        }
    }

    #[test]
    fn json_lines() {
        let p = Prediction {
            source: Source::Test {
                index: 4,
                label: 1,
                saved: None,
            },
            logits: vec![0.0, 2.0],
        };
        let names = vec!["zero".to_string(), "one".to_string()];
        let pr = printer(&names);
        let probs = infer::softmax(&p.logits);
        let v = pr.json(&p, &probs, &infer::ranked(&probs)[..1]);
        assert_eq!(v["predicted"], 1);
        assert_eq!(v["name"], "one");
        assert_eq!(v["label_name"], "one");
        assert_eq!(v["test_index"], 4);
        assert_eq!(v["top"].as_array().unwrap().len(), 1);
        assert_eq!(v["probabilities"].as_array().unwrap().len(), 2);
        assert!(pr
            .line(&p, &probs, &infer::ranked(&probs))
            .starts_with("test #4 (label 1 (one)): 1 (one)"));
        assert_eq!(
            pr.csv_header(2),
            "image,label,predicted,name,probability,preprocess,inverted,p_zero,p_one"
        );
        assert!(pr
            .csv_row(&p, &probs, &[1, 0])
            .starts_with("test:4,1,1,one,0.88"));
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a.png"), "a.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"7\""), "\"say \"\"7\"\"\"");
    }
}
