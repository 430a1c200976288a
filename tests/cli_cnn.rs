//! CNNs on the command line: `--conv` parsing and rules, the checkpoint in
//! nn.Sequential layout, `eval`, `predict` (test samples and images),
//! `--resume` bit for bit, the weights picture, `--json`.
//!
//! The fixture is a small synthetic IDX dataset (12×12 u8 samples, 4
//! classes), so each run takes well under a second.

mod common;
use common::{bin, bin_ok as ok, last_json as json};

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use idx_softmax::checkpoint;
use idx_softmax::image::{self, GrayImage};

const SIDE: usize = 12;
const CLASSES: usize = 4;

struct Fixture {
    dir: tempfile::TempDir,
}

/// `n` 12×12 images: class c is a bright 4×4 square in quadrant c, at a
/// random offset within it, over noise. Spatial structure, as images have.
fn squares(n: usize, rng: &mut impl rand::Rng) -> (Vec<u8>, Vec<u8>) {
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let c = rng.random_range(0..CLASSES);
        let (qy, qx) = (6 * (c / 2), 6 * (c % 2));
        let (oy, ox) = (qy + rng.random_range(0..3), qx + rng.random_range(0..3));
        for y in 0..SIDE {
            for x in 0..SIDE {
                let on = (oy..oy + 4).contains(&y) && (ox..ox + 4).contains(&x);
                let base: i32 = if on { 200 } else { 30 };
                px.push((base + rng.random_range(-30..=30)).clamp(0, 255) as u8);
            }
        }
        labels.push(c as u8);
    }
    (px, labels)
}

impl Fixture {
    fn new() -> Self {
        use idx_softmax::data::idx::ElementType;
        use rand::SeedableRng;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(33);
        for (stem, n) in [("train", 400), ("t10k", 80)] {
            let (px, labels) = squares(n, &mut rng);
            let images = data.join(format!("{stem}-images-idx3-ubyte"));
            common::write_idx(&images, ElementType::U8, &[n, SIDE, SIDE], &px);
            let lab = data.join(format!("{stem}-labels-idx1-ubyte"));
            common::write_idx(&lab, ElementType::U8, &[n], &labels);
        }
        Self { dir }
    }
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn train(&self, extra: &[&str]) -> Value {
        let data = self.data();
        let mut args = vec!["--data-dir", &data, "--json"];
        args.extend_from_slice(extra);
        json(&ok(&args))
    }
}

const NET: [&str; 6] = ["--conv", "4x3", "--conv", "6", "--hidden", "10"];

#[test]
fn conv_flag_values_and_rules() {
    let f = Fixture::new();
    let r = f.train(&NET);
    assert_eq!(r["layers"], "1x12x12-conv4x3-conv6x5-54-10-4");
    assert_eq!(r["conv"], serde_json::json!([[4, 3], [6, 5]]));
    // The variable takes a comma-separated list.
    let data = f.data();
    let out = Command::new(env!("CARGO_BIN_EXE_idx-softmax"))
        .args(["--data-dir", &data, "--json"])
        .env("IDX_SOFTMAX_CONV", "4x3,6")
        .env("IDX_SOFTMAX_HIDDEN", "10")
        .env(
            "IDX_SOFTMAX_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(v["weights_digest"], r["weights_digest"]);
    for (bad, want) in [
        (
            "4x4",
            "for '--conv <C[xK]>': must be an odd kernel size in 1..=31, got 4",
        ),
        (
            "0",
            "for '--conv <C[xK]>': must be in 1..=4096 channels, got 0",
        ),
        ("x3", "is not C or CxK"),
    ] {
        let out = bin(&["--data-dir", &data, "--conv", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(want), "{bad}: {err}");
    }
    // Four pools of a 12×12 image leave nothing: refused before training.
    let out = bin(&[
        "--data-dir",
        &data,
        "--conv",
        "2",
        "--conv",
        "2",
        "--conv",
        "2",
        "--conv",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("conv block 4 pools a 1x1 image to nothing"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_cnn_checkpoint_saves_evaluates_resumes_and_predicts() {
    let f = Fixture::new();
    let model = f.file("cnn.safetensors");
    // A constant schedule: a run planned for 1 epoch then resumed to 3 is
    // then the 3-epoch run (a cosine curve would span 1 epoch, then 3).
    let common_flags = ["--lr", "0.05", "--momentum", "0.9", "--batch-size", "20"];
    let mut args: Vec<&str> = NET.to_vec();
    args.extend(common_flags);
    args.extend(["--epochs", "3", "--save", &model, "--weights-png", "w.png"]);
    let pic = f.file("w.png");
    let args: Vec<&str> = args
        .iter()
        .map(|&a| if a == "w.png" { pic.as_str() } else { a })
        .collect();
    let straight = f.train(&args);
    assert!(
        straight["test_accuracy"].as_f64().unwrap() > 0.9,
        "{straight}"
    );

    // The tensors, named as nn.Sequential numbers its modules.
    let ck = checkpoint::load(Path::new(&model)).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = ck
        .network
        .params()
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = [
        ("0.weight", vec![4, 1, 3, 3]),
        ("0.bias", vec![4]),
        ("3.weight", vec![6, 4, 5, 5]),
        ("3.bias", vec![6]),
        ("7.weight", vec![10, 54]),
        ("7.bias", vec![10]),
        ("9.weight", vec![4, 10]),
        ("9.bias", vec![4]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s))
    .collect();
    assert_eq!(shapes, want);
    assert_eq!(ck.metadata["conv"], "4x3,6x5");
    assert_eq!(ck.metadata["layers"], "1x12x12-conv4x3-conv6x5-54-10-4");
    assert!(ck.extra.contains_key("momentum.3.weight"));

    // eval scores exactly what training reported.
    let ev = json(&ok(&["eval", "--model", &model, "--json"]));
    assert_eq!(ev["test_accuracy"], straight["test_accuracy"]);
    assert_eq!(ev["layers"], straight["layers"]);
    assert_eq!(ev["weights_digest"], straight["weights_digest"]);

    // 1 epoch, saved, resumed to 3: the same bits as straight through.
    let part = f.file("part.safetensors");
    let mut one: Vec<&str> = NET.to_vec();
    one.extend(common_flags);
    one.extend(["--epochs", "1", "--save", &part]);
    f.train(&one);
    let resumed = f.train(&["--resume", &part, "--epochs", "3"]);
    assert_eq!(resumed["weights_digest"], straight["weights_digest"]);
    assert_eq!(resumed["start_epoch"], 1);
    // A conv flag that disagrees with the checkpoint is refused by name.
    let out = bin(&[
        "--data-dir",
        &f.data(),
        "--resume",
        &part,
        "--epochs",
        "3",
        "--conv",
        "5",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--conv 5x5 does not match") && err.contains("conv blocks 4x3,6x5"),
        "{err}"
    );

    // predict: a test sample as eval sees it, and the same pixels as a PNG.
    let p = json(&ok(&[
        "predict",
        "--model",
        &model,
        "--test-index",
        "5",
        "--json",
    ]));
    let predicted = p["predicted"].as_u64().unwrap();
    let data = common::load(Path::new(&f.data()));
    let px = data.test.images.as_u8().unwrap();
    let img = GrayImage {
        width: SIDE,
        height: SIDE,
        pixels: px[5 * SIDE * SIDE..6 * SIDE * SIDE].to_vec(),
    };
    let png = f.path("five.png");
    image::write_gray_png(&png, &img).unwrap();
    let q = json(&ok(&[
        "predict",
        "--model",
        &model,
        png.to_str().unwrap(),
        "--preprocess",
        "none",
        "--no-invert",
        "--json",
        "--probs",
    ]));
    assert_eq!(q["predicted"].as_u64().unwrap(), predicted, "{q}");
    let pa: Vec<f64> = p["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    let qa = q["top"][0]["probability"].as_f64().unwrap();
    assert!((pa[0] - qa).abs() < 1e-5, "{pa:?} vs {qa}");

    // The weights picture shows the first conv layer's 4 filters, 3×3 each.
    let pic = image::decode_file(Path::new(&f.file("w.png"))).unwrap();
    assert_eq!((pic.width, pic.height), (4 * 3 * 16 + 3 * 16, 3 * 16));
}
