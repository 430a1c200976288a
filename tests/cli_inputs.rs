//! The command line with real-world inputs and outputs (issue 11): label
//! names, directories and standard input, CSV and JSON, the preprocessed
//! images, eval's F1, top-k and splits, the pictures, and --help.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::{bin, bin_ok as ok};

use idx_softmax::image::{self, GrayImage};

const NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

fn bin_in(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idx-softmax"))
        .args(args)
        .env("IDX_SOFTMAX_CACHE_DIR", common::bin_cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Expects exit 1 with exactly one `error:` line holding every needle.
fn one_error(args: &[&str], needles: &[&str]) {
    let out = bin(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in {stderr}");
    }
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The bundled MNIST, linked into a fresh directory with a labels.txt.
struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        for e in std::fs::read_dir(idx_softmax::data::BUNDLED_MNIST).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_string_lossy().contains("idx") {
                std::os::unix::fs::symlink(e.path(), data.join(&name)).unwrap();
            }
        }
        std::fs::write(data.join("labels.txt"), NAMES.join("\n") + "\n").unwrap();
        Self { dir }
    }
    fn data(&self) -> String {
        self.path("data").display().to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// MNIST test digit `i` as an image.
fn digit(i: usize) -> (GrayImage, u32) {
    let data = common::mnist();
    let px = data.test.images.as_u8().unwrap();
    let img = GrayImage {
        width: 28,
        height: 28,
        pixels: px[i * 784..(i + 1) * 784].to_vec(),
    };
    (img, data.test.labels.get(i))
}

/// `img` as a 10× larger black-on-white picture.
fn big_black_on_white(img: &GrayImage) -> GrayImage {
    let s = 10;
    let mut pixels = vec![0u8; 28 * s * 28 * s];
    for y in 0..28 * s {
        for x in 0..28 * s {
            pixels[y * 28 * s + x] = 255 - img.pixels[(y / s) * 28 + x / s];
        }
    }
    GrayImage {
        width: 28 * s,
        height: 28 * s,
        pixels,
    }
}

#[test]
fn labels_directories_stdin_csv_and_the_preprocessed_images() {
    let fx = Data::new();
    let model = fx.file("m.safetensors");
    ok(&["--data-dir", &fx.data(), "--save", &model, "--json"]);
    let ck = idx_softmax::checkpoint::load(Path::new(&model)).unwrap();
    let recorded: Vec<String> = serde_json::from_str(&ck.metadata["class_names"]).unwrap();
    assert_eq!(recorded, NAMES);

    // A directory of images: sorted; a non-image file is not classified,
    // and says so (its own error line, and exit status 1).
    let images = fx.path("images");
    std::fs::create_dir(&images).unwrap();
    let mut labels = Vec::new();
    for (n, i) in [0usize, 1, 2, 3].iter().enumerate() {
        let (img, label) = digit(*i);
        let big = big_black_on_white(&img);
        image::write_gray_png(&images.join(format!("{n}-digit.png")), &big).unwrap();
        labels.push(label);
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let saved = fx.path("seen");
    let o = bin(&[
        "predict",
        "--model",
        &model,
        "--json",
        "--probs",
        "--save-preprocessed",
        &saved.display().to_string(),
        &images.display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("notes.txt: skipped: not an image file"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("1 of 5 input(s) could not be classified"),
        "{err}"
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "{out}");
    for (n, v) in lines.iter().enumerate() {
        assert!(
            v["image"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{n}-digit.png")),
            "{v}"
        );
        assert_eq!(v["predicted"], labels[n], "{v}");
        assert_eq!(v["name"], NAMES[labels[n] as usize], "{v}");
        assert_eq!(v["top"][0]["name"], v["name"]);
        assert_eq!(v["preprocess"], "mnist");
        assert_eq!(v["inverted"], true);
        let probs = v["probabilities"].as_array().unwrap();
        assert_eq!(probs.len(), 10);
        let sum: f64 = probs.iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        // The saved picture is exactly what the model saw: classifying it
        // as it is gives the same probabilities.
        let png = v["preprocessed_png"].as_str().unwrap();
        assert!(png.ends_with(&format!("{n}-digit.png")), "{png}");
        let seen = image::read_gray(Path::new(png)).unwrap();
        assert_eq!((seen.width, seen.height), (28, 28));
        let again = json_lines(&ok(&[
            "predict", "--model", &model, "--json", "--probs", png,
        ]));
        assert_eq!(again[0]["preprocess"], "none");
        assert_eq!(again[0]["probabilities"], v["probabilities"]);
    }

    // Standard input, format guessed from the bytes.
    let bytes = std::fs::read(images.join("0-digit.png")).unwrap();
    let out = bin_in(&["predict", "--model", &model, "--json", "-"], Some(&bytes));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = &json_lines(&String::from_utf8(out.stdout).unwrap())[0];
    assert_eq!(v["image"], "-");
    assert_eq!(v["predicted"], lines[0]["predicted"]);
    let out = bin_in(&["predict", "--model", &model, "-"], Some(b"not an image"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: standard input: an unknown format"),
        "{stderr}"
    );

    // CSV: a header and one row per input, names included.
    let out = ok(&[
        "predict",
        "--model",
        &model,
        "--csv",
        "--probs",
        &images.join("1-digit.png").display().to_string(),
        "--test-index",
        "0",
    ]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0]
            .starts_with("image,label,predicted,name,probability,preprocess,inverted,p_zero,p_one"),
        "{out}"
    );
    assert_eq!(rows[1].split(',').count(), 17, "{out}");
    assert!(rows[1].contains(&format!(",{},{},", labels[1], NAMES[labels[1] as usize])));
    assert!(rows[2].starts_with("test:0,7,7,seven,"), "{out}");
    // The human form names the class.
    let out = ok(&["predict", "--model", &model, "--test-index", "0"]);
    assert!(
        out.starts_with("test #0 (label 7 (seven)): 7 (seven)"),
        "{out}"
    );

    // --labels overrides; a wrong count is one clear line.
    let other = fx.path("other.txt");
    std::fs::write(&other, "a\nb\nc\n").unwrap();
    one_error(
        &[
            "predict",
            "--model",
            &model,
            "--labels",
            &other.display().to_string(),
            "--test-index",
            "0",
        ],
        &["other.txt", "3 class names for a model of 10 classes"],
    );
    let letters: Vec<String> = (b'a'..=b'j').map(|c| (c as char).to_string()).collect();
    std::fs::write(&other, letters.join("\n")).unwrap();
    let v = &json_lines(&ok(&[
        "predict",
        "--model",
        &model,
        "--labels",
        &other.display().to_string(),
        "--test-index",
        "0",
        "--json",
    ]))[0];
    assert_eq!(v["name"], "h");
    assert_eq!(v["label_name"], "h");

    // An empty directory is one error; --no-invert keeps black-on-white
    // as it is (and the model then sees a white field: no digit).
    let empty = fx.path("empty");
    std::fs::create_dir(&empty).unwrap();
    one_error(
        &["predict", "--model", &model, &empty.display().to_string()],
        &["empty", "no image files"],
    );
    let out = bin(&[
        "predict",
        "--model",
        &model,
        "--json",
        "--no-invert",
        &images.join("0-digit.png").display().to_string(),
    ]);
    let v = &json_lines(&String::from_utf8(out.stdout).unwrap())[0];
    assert_eq!(v["inverted"], false);
}

/// A model of another input size (20 × 20 here) gets the same
/// preprocessing at its size; a FIFO is refused without blocking.
#[test]
fn other_input_sizes_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_synthetic(&data, 300, 50, 20, 20, 3, 4);
    let model = dir.path().join("m.safetensors").display().to_string();
    ok(&[
        "--data-dir",
        &data.display().to_string(),
        "--save",
        &model,
        "--json",
    ]);
    let (img, _) = digit(0);
    let big = big_black_on_white(&img);
    let path = dir.path().join("big.png");
    image::write_gray_png(&path, &big).unwrap();
    let seen = dir.path().join("seen");
    let v = &json_lines(&ok(&[
        "predict",
        "--model",
        &model,
        "--json",
        "--save-preprocessed",
        &seen.display().to_string(),
        &path.display().to_string(),
    ]))[0];
    assert_eq!(v["preprocess"], "mnist");
    let saved = image::read_gray(&seen.join("big.png")).unwrap();
    assert_eq!((saved.width, saved.height), (20, 20));
    // The digit's box fits round(20 * 20/28) = 14 pixels.
    let rows = (0..20)
        .filter(|&y| saved.pixels[y * 20..(y + 1) * 20].iter().any(|&p| p > 0))
        .count();
    assert!((13..=15).contains(&rows), "{rows} rows lit");

    // A FIFO is refused at once (nothing blocks waiting for a writer),
    // and the other inputs are still classified.
    let fifo = dir.path().join("pipe");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let out = bin(&[
        "predict",
        "--model",
        &model,
        "--json",
        &fifo.display().to_string(),
        &path.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pipe") && stderr.contains("FIFO"),
        "{stderr}"
    );
    assert_eq!(json_lines(&String::from_utf8(out.stdout).unwrap()).len(), 1);
}

#[test]
fn eval_reports_f1_top_k_and_every_split() {
    let fx = Data::new();
    let model = fx.file("m.safetensors");
    let train: Value = serde_json::from_str(&ok(&[
        "--data-dir",
        &fx.data(),
        "--save",
        &model,
        "--val-split",
        "0.1",
        "--json",
    ]))
    .unwrap();
    let data = fx.data();
    let eval = |extra: &[&str]| -> Value {
        let mut args = vec!["eval", "--model", &model, "--data-dir", &data, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let test = eval(&[]);
    assert_eq!(test["split"], "test");
    assert_eq!(test["test_accuracy"], train["test_accuracy"]);
    let (macro_f1, weighted) = (
        test["macro_f1"].as_f64().unwrap(),
        test["weighted_f1"].as_f64().unwrap(),
    );
    assert!(macro_f1 > 0.85 && macro_f1 < test["accuracy"].as_f64().unwrap() + 0.02);
    assert!((weighted - test["accuracy"].as_f64().unwrap()).abs() < 0.02);
    assert_eq!(test["top_k"], 5);
    let top5 = test["top_k_accuracy"].as_f64().unwrap();
    assert!(top5 > 0.98 && top5 <= 1.0, "{top5}");
    assert_eq!(test["per_class"][7]["name"], "seven");
    assert!(test["per_class"][7]["f1"].as_f64().unwrap() > 0.8);
    // Top-1 is the accuracy; top-10 of 10 classes is everything.
    assert_eq!(eval(&["--top-k", "1"])["top_k_accuracy"], test["accuracy"]);
    assert_eq!(eval(&["--top-k", "10"])["top_k_accuracy"], 1.0);

    // The validation rows are the run's own: the same accuracy and loss.
    let val = eval(&["--split", "val"]);
    assert_eq!(val["total"], 6000);
    assert_eq!(val["val_accuracy"], train["val_accuracy"]);
    assert_eq!(val["val_loss"], train["val_loss"]);
    let tr = eval(&["--split", "train"]);
    assert_eq!(tr["total"], 54000);

    // Human form: F1, top-k, names in the per-class table, the heat map.
    let heat = fx.path("confusion.png");
    let out = ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &fx.data(),
        "--confusion-png",
        &heat.display().to_string(),
    ]);
    assert!(out.contains("f1       macro 0."), "{out}");
    assert!(out.contains("top-5    accuracy 0.9"), "{out}");
    assert!(out.contains("\n7 seven "), "{out}");
    check_png(&heat);

    // A model trained without --val-split has no validation rows.
    let plain = fx.file("plain.safetensors");
    ok(&["--save", &plain, "--json"]);
    one_error(
        &["eval", "--model", &plain, "--split", "val"],
        &["plain.safetensors", "no validation split", "--val-split"],
    );
}

/// A PNG that decodes and is not one flat colour; no temporary file is left
/// beside it.
fn check_png(path: &Path) -> (usize, usize) {
    let img = image::decode_file(path).unwrap_or_else(|e| panic!("{e}"));
    let distinct: std::collections::BTreeSet<u16> = img.pixels.iter().map(|p| p[0]).collect();
    assert!(distinct.len() > 10, "{} is nearly flat", path.display());
    let dir = path.parent().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file {name} left behind");
    }
    (img.width, img.height)
}

#[test]
fn training_curves_are_drawn_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("curves.png");
    let svg = dir.path().join("curves.SVG");
    let out: Value = serde_json::from_str(&ok(&[
        "--epochs",
        "2",
        "--val-split",
        "0.1",
        "--plot",
        &png.display().to_string(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["plot"], png.display().to_string());
    assert_eq!(check_png(&png), (1100, 450));
    ok(&[
        "--epochs",
        "2",
        "--plot",
        &svg.display().to_string(),
        "--json",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    for word in ["loss", "accuracy", "train", "test", "epoch"] {
        assert!(
            text.contains(&format!("\n{word}\n</text>")),
            "no {word:?} label in the SVG"
        );
    }
    // A plot that cannot be written fails before training, in one line.
    one_error(
        &[
            "--plot",
            &dir.path().join("no/such/dir.png").display().to_string(),
        ],
        &["--plot", "does not exist"],
    );
}

#[test]
fn help_names_every_variable_and_the_preprocessing_rule() {
    let out = ok(&["predict", "--help"]);
    for needle in [
        "[env: IDX_SOFTMAX_PREPROCESS=]",
        "[env: IDX_SOFTMAX_MODEL=]",
        "[env: IDX_SOFTMAX_KERNEL]",
        "none for an image already the model's size and polarity, mnist for any other",
        "[default: 3]",
    ] {
        assert!(
            out.contains(needle),
            "predict --help lacks {needle:?}:\n{out}"
        );
    }
    let out = ok(&["--help"]);
    assert!(out.contains("[env: IDX_SOFTMAX_EPOCHS=]"), "{out}");
    assert!(out.contains("[env: IDX_SOFTMAX_PLOT=]"), "{out}");
    // The variables work: IDX_SOFTMAX_TOP=1 prints one class.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    ok(&["--save", &model.display().to_string(), "--json"]);
    let out = Command::new(env!("CARGO_BIN_EXE_idx-softmax"))
        .args(["predict", "--test-index", "0"])
        .env("IDX_SOFTMAX_CACHE_DIR", cache)
        .env("IDX_SOFTMAX_MODEL", &model)
        .env("IDX_SOFTMAX_TOP", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("top 1: 7 "), "{text}");
}
