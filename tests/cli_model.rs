//! The command line end to end: `--save`, `--resume`, `eval`, `predict`,
//! `--weights-png`, `--metrics-json`, and the errors and exit statuses.
//!
//! Each test trains on a small synthetic IDX dataset written into a temporary
//! directory (28×28 u8 samples, 10 classes, so a model also fits the bundled
//! MNIST), and runs the real binary. Decompressed `.gz` files go to a cache
//! under the target directory, never to ~/.cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use idx_softmax::checkpoint;
use idx_softmax::image::{self, GrayImage};

const TRAIN: usize = 1000;
const TEST: usize = 200;
const SIDE: usize = 28;
const CLASSES: usize = 10;

/// A temporary directory holding a synthetic dataset in `data/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        common::write_synthetic(&data, TRAIN, TEST, SIDE, SIDE, CLASSES, seed);
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
    /// Trains with `extra` flags (plus the data and --json) and returns the
    /// JSON report.
    fn train(&self, extra: &[impl AsRef<str>]) -> Value {
        let mut args = vec!["--data-dir", &self.data(), "--json"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.as_ref().to_string()));
        json(&ok(&args))
    }
}

fn bin(args: &[impl AsRef<str>]) -> Output {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache");
    Command::new(env!("CARGO_BIN_EXE_idx-softmax"))
        .args(args.iter().map(AsRef::as_ref))
        .env("IDX_SOFTMAX_CACHE_DIR", cache)
        .output()
        .expect("the binary runs")
}

/// Runs and expects success; returns stdout.
fn ok(args: &[impl AsRef<str>]) -> String {
    let out = bin(args);
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects exit status `code`; returns stderr.
fn fails(code: i32, args: &[impl AsRef<str>]) -> String {
    let out = bin(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

/// Expects a runtime error: exit 1, a single `error: ` line mentioning
/// every string of `needles`.
fn runtime_error(args: &[impl AsRef<str>], needles: &[&str]) -> String {
    let stderr = fails(1, args);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in {stderr}");
    }
    stderr
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(json).collect()
}

/// Test image `index` of the fixture's dataset.
fn test_image(fx: &Fixture, index: usize) -> GrayImage {
    let data = common::load(Path::new(&fx.data()));
    let k = SIDE * SIDE;
    let pixels = data.test.images.as_u8().unwrap()[index * k..(index + 1) * k].to_vec();
    GrayImage {
        width: SIDE,
        height: SIDE,
        pixels,
    }
}

#[test]
fn saved_model_loads_bitwise_and_eval_matches_training() {
    let fx = Fixture::new(1);
    let model = fx.file("m.safetensors");
    let report = fx.train(&["--epochs", "2", "--save", &model]);
    let digest = report["weights_digest"].as_str().unwrap();

    // The library reads back the very bits the run reported.
    let ck = checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(ck.network.digest(), digest);
    assert_eq!(
        (ck.network.classes(), ck.network.features()),
        (CLASSES, SIDE * SIDE)
    );
    assert_eq!(ck.network.sizes(), [SIDE * SIDE, CLASSES]);
    let names: Vec<&str> = ck
        .network
        .params()
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["weight", "bias"], "softmax keeps nn.Linear's names");
    assert!(ck.extra.is_empty(), "no momentum, no buffers");
    let md = &ck.metadata;
    for (key, want) in [
        ("seed", "42"),
        ("epochs", "2"),
        ("epochs_done", "2"),
        ("lr", "0.1"),
        ("batch_size", "100"),
        ("momentum", "0"),
        ("schedule", "constant"),
        ("kernel", report["kernel"].as_str().unwrap()),
        ("sample_shape", "28x28"),
        ("dataset_shape", "1000x28x28"),
        ("crate_version", env!("CARGO_PKG_VERSION")),
        ("layers", "784-10"),
        ("hidden", ""),
    ] {
        assert_eq!(md.get(key).map(String::as_str), Some(want), "{key}");
    }
    let acc: f64 = md["test_accuracy"].parse().unwrap();
    assert_eq!(acc, report["test_accuracy"].as_f64().unwrap());

    // eval: same bits, same accuracy and loss as the run's last epoch.
    let ev = json(&ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &fx.data(),
        "--json",
    ]));
    assert_eq!(ev["weights_digest"], digest);
    assert_eq!(ev["accuracy"], report["test_accuracy"]);
    assert_eq!(ev["test_loss"], report["test_loss"]);
    assert_eq!(ev["total"], TEST);
    let confusion = ev["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), CLASSES);
    let diagonal: u64 = (0..CLASSES)
        .map(|i| confusion[i][i].as_u64().unwrap())
        .sum();
    assert_eq!(diagonal, ev["correct"].as_u64().unwrap());
    assert_eq!(ev["per_class"].as_array().unwrap().len(), CLASSES);

    // The human report: accuracy line and aligned tables.
    let text = ok(&["eval", "--model", &model, "--data-dir", &fx.data()]);
    let want = format!(
        "accuracy {:.4} ({}/{TEST})",
        report["test_accuracy"].as_f64().unwrap(),
        ev["correct"]
    );
    assert!(text.contains(&want), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("confusion matrix"))
        .unwrap();
    let table = &lines[at + 1..at + 2 + CLASSES];
    assert!(table[0].starts_with("true\\pred"), "{text}");
    assert!(table.iter().all(|l| l.len() == table[0].len()), "{text}");
    let header = lines.iter().position(|l| l.contains("precision")).unwrap();
    let per_class = &lines[header..header + 1 + CLASSES];
    assert!(
        per_class.iter().all(|l| l.len() == per_class[0].len()),
        "{text}"
    );
}

#[test]
fn no_subcommand_and_train_subcommand_are_the_same_run() {
    let fx = Fixture::new(2);
    let flat = fx.train(&["--epochs", "1", "--seed", "5"]);
    let sub = json(&ok(&[
        "train",
        "--data-dir",
        &fx.data(),
        "--json",
        "--epochs",
        "1",
        "--seed",
        "5",
    ]));
    assert_eq!(flat["weights_digest"], sub["weights_digest"]);
    for key in [
        "test_accuracy",
        "test_loss",
        "train_loss",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "threads",
        "workers",
        "kernel",
        "train_seconds",
        "samples_per_second",
        "benchings",
        "load_seconds",
        "eval_seconds",
        "rss_anon_kb",
        "weights_digest",
        "per_epoch",
    ] {
        assert!(flat.get(key).is_some(), "--json lacks {key}: {flat}");
    }
    assert!(flat.get("val_accuracy").is_none());
}

#[test]
fn resumed_run_is_bitwise_the_uninterrupted_run() {
    let fx = Fixture::new(3);
    for (name, opts) in [
        ("plain", &[][..]),
        (
            "momentum",
            &[
                "--momentum",
                "0.9",
                "--nesterov",
                "--weight-decay",
                "1e-4",
                "--schedule",
                "step:1:0.5",
                "--val-split",
                "0.1",
                "--batch-size",
                "64",
            ][..],
        ),
    ] {
        let with =
            |e: &[&str]| -> Vec<String> { e.iter().chain(opts).map(|s| s.to_string()).collect() };
        let straight = fx.train(&with(&["--epochs", "2"]));
        let ck = fx.file(&format!("{name}.safetensors"));
        let metrics = fx.file(&format!("{name}.jsonl"));
        let first = fx.train(&with(&[
            "--epochs",
            "1",
            "--save",
            &ck,
            "--metrics-json",
            &metrics,
        ]));
        assert_ne!(first["weights_digest"], straight["weights_digest"]);
        // Flags left out come from the checkpoint.
        let resumed = fx.train(&[
            "--epochs",
            "2",
            "--resume",
            &ck,
            "--save",
            &ck,
            "--metrics-json",
            &metrics,
        ]);
        assert_eq!(
            resumed["weights_digest"], straight["weights_digest"],
            "{name}"
        );
        assert_eq!(resumed["start_epoch"], 1);
        assert_eq!(resumed["per_epoch"].as_array().unwrap().len(), 1);
        assert_eq!(resumed["per_epoch"][0], {
            let mut e = straight["per_epoch"][1].clone();
            // Timings, and benchings (a worker losing its CPU), vary.
            for timing in ["seconds", "eval_seconds", "samples_per_second", "benchings"] {
                e[timing] = resumed["per_epoch"][0][timing].clone();
            }
            e
        });
        let ck_file = checkpoint::load(Path::new(&ck)).unwrap();
        assert_eq!(ck_file.metadata["epochs_done"], "2");
        assert_eq!(
            ck_file.network.digest(),
            straight["weights_digest"].as_str().unwrap()
        );
        if name == "momentum" {
            assert_eq!(
                ck_file.extra["momentum.weight"].shape,
                [CLASSES, SIDE * SIDE]
            );
            assert_eq!(ck_file.extra["momentum.bias"].shape, [CLASSES]);
            assert!(resumed["val_accuracy"].is_number());
        }
        // The metrics file covers both epochs, across the two processes.
        let lines = json_lines(&std::fs::read_to_string(&metrics).unwrap());
        let epochs: Vec<u64> = lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
        assert_eq!(epochs, [1, 2], "{name}");
    }

    // Given flags must match the checkpoint.
    let ck = fx.file("momentum.safetensors");
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--epochs",
            "3",
            "--resume",
            &ck,
            "--lr",
            "0.2",
        ],
        &["--lr 0.2", "lr 0.1", "momentum.safetensors"],
    );
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--epochs",
            "3",
            "--resume",
            &ck,
            "--batch-size",
            "100",
        ],
        &["--batch-size 100", "batch size 64"],
    );
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--epochs",
            "3",
            "--resume",
            &ck,
            "--momentum",
            "0.5",
        ],
        &["--momentum 0.5", "momentum 0.9"],
    );
    // Matching flags are fine; a finished run asks for more epochs.
    runtime_error(
        &["--data-dir", &fx.data(), "--resume", &ck, "--seed", "42"],
        &["already trained 2 epoch(s)"],
    );
    // A checkpoint from other data.
    let other = Fixture::new(4);
    let small = other.path("data");
    common::write_synthetic(&small, 500, TEST, SIDE, SIDE, CLASSES, 4);
    runtime_error(
        &[
            "--data-dir",
            &other.data(),
            "--epochs",
            "3",
            "--resume",
            &ck,
        ],
        &["1000 training samples", "500"],
    );
}

#[test]
fn bad_checkpoints_fail_with_one_clear_line() {
    let fx = Fixture::new(5);
    let good = fx.file("good.safetensors");
    fx.train(&["--save", &good]);
    let bytes = std::fs::read(&good).unwrap();
    let data = fx.data();

    let truncated = fx.file("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let garbage = fx.file("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();

    // Same bytes with the weight renamed ("weight" -> "weigxt", same length).
    let renamed = fx.file("renamed.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let mut patched = bytes[..8].to_vec();
    patched.extend(header.replacen("\"weight\"", "\"weigxt\"", 1).as_bytes());
    patched.extend(&bytes[8 + header_len..]);
    std::fs::write(&renamed, &patched).unwrap();

    // A consistent model of the wrong size for the data: 10 × 100.
    let small = fx.file("small.safetensors");
    let model = common::softmax_net(100, CLASSES, &[0.01; CLASSES * 100], &[0.0; CLASSES]);
    checkpoint::save(Path::new(&small), &model, &[], &Default::default()).unwrap();

    for (file, needle) in [
        (&truncated, "truncated"),
        (&garbage, "not a safetensors file"),
        (&renamed, "no tensor \"weight\""),
        (&fx.file("missing.safetensors"), "missing.safetensors"),
    ] {
        runtime_error(
            &["eval", "--model", file, "--data-dir", &data],
            &[file, needle],
        );
        runtime_error(
            &[
                "predict",
                "--model",
                file,
                "--test-index",
                "0",
                "--data-dir",
                &data,
            ],
            &[file, needle],
        );
        runtime_error(
            &["--data-dir", &data, "--epochs", "2", "--resume", file],
            &[file, needle],
        );
    }
    runtime_error(
        &["eval", "--model", &small, "--data-dir", &data],
        &["small.safetensors", "100 features", "28x28"],
    );
    // A foreign file (no run metadata) cannot be resumed.
    runtime_error(
        &["--data-dir", &data, "--epochs", "2", "--resume", &small],
        &[
            "small.safetensors",
            "metadata",
            "--resume needs a file written by --save",
        ],
    );
}

#[test]
fn predict_on_a_png_matches_predict_on_the_test_index() {
    let fx = Fixture::new(6);
    let model = fx.file("m.safetensors");
    fx.train(&["--epochs", "2", "--save", &model]);
    let indices = [0usize, 7, 123];
    let mut args: Vec<String> = [
        "predict",
        "--model",
        &model,
        "--data-dir",
        &fx.data(),
        "--json",
    ]
    .map(String::from)
    .to_vec();
    for &i in &indices {
        let png = fx.path(&format!("test{i}.png"));
        image::write_gray_png(&png, &test_image(&fx, i)).unwrap();
        args.push(png.display().to_string());
    }
    for &i in &indices {
        args.extend(["--test-index".to_string(), i.to_string()]);
    }
    let lines = json_lines(&ok(&args));
    assert_eq!(lines.len(), 2 * indices.len());
    let (files, tests) = lines.split_at(indices.len());
    for (n, (f, t)) in files.iter().zip(tests).enumerate() {
        assert!(f["image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("test{}.png", indices[n])));
        assert_eq!(t["test_index"], indices[n]);
        assert!(t["label"].is_u64());
        assert_eq!(f["predicted"], t["predicted"]);
        assert_eq!(f["top"].as_array().unwrap().len(), 3);
        for (a, b) in f["top"]
            .as_array()
            .unwrap()
            .iter()
            .zip(t["top"].as_array().unwrap())
        {
            assert_eq!(a["class"], b["class"]);
            let (pa, pb) = (
                a["probability"].as_f64().unwrap(),
                b["probability"].as_f64().unwrap(),
            );
            assert!((pa - pb).abs() < 1e-6, "{pa} vs {pb}");
        }
    }
    // On the gemm path both go through the same arithmetic: same bits.
    let mut gemm = args.clone();
    gemm.extend(["--kernel".into(), "gemm".into()]);
    let lines = json_lines(&ok(&gemm));
    let (files, tests) = lines.split_at(indices.len());
    for (f, t) in files.iter().zip(tests) {
        assert_eq!(f["top"], t["top"]);
    }

    // The human form: one line per input, the top 3.
    let png0 = fx.file("test0.png");
    let text = ok(&["predict", "--model", &model, &png0, "--top", "2"]);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("top 2:"), "{text}");

    // Without --data-dir, the data the model was trained on (the checkpoint
    // records it), not the bundled MNIST.
    let default = json(&ok(&[
        "predict",
        "--model",
        &model,
        "--test-index",
        "0",
        "--json",
    ]));
    let labels = common::load(Path::new(&fx.data())).test.labels.to_vec();
    assert_eq!(default["label"], labels[0]);
    // Any other directory of the same shape when asked for (the synthetic
    // model is 784 → 10, so it fits MNIST).
    let mnist = json(&ok(&[
        "predict",
        "--model",
        &model,
        "--test-index",
        "0",
        "--json",
        "--data-dir",
        idx_softmax::data::BUNDLED_MNIST,
    ]));
    assert_eq!(mnist["label"], 7, "MNIST's first test digit is a 7");

    // Wrong size with --preprocess none, a format no decoder reads, index
    // out of range.
    let wrong = fx.file("wrong.png");
    image::write_gray_png(
        Path::new(&wrong),
        &GrayImage {
            width: 14,
            height: 56,
            pixels: vec![0; 14 * 56],
        },
    )
    .unwrap();
    runtime_error(
        &["predict", "--model", &model, "--preprocess", "none", &wrong],
        &["wrong.png", "14x56", "28x28", "--preprocess mnist"],
    );
    let gif = fx.file("anim.png");
    std::fs::write(&gif, b"GIF89a\x01\0\x01\0").unwrap();
    // A bad file gets its own line; the good ones are still classified.
    let out = bin(&["predict", "--model", &model, &png0, &gif, &wrong, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0]["image"].as_str().unwrap().ends_with("test0.png"));
    // The wrong-size picture is classified after MNIST preprocessing (it
    // is blank, and says so).
    assert_eq!(lines[1]["preprocess"], "mnist");
    assert_eq!(lines[1]["empty"], true);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].contains("anim.png") && errors[0].contains("GIF"),
        "{stderr}"
    );
    assert_eq!(errors[1], "error: 1 of 3 input(s) could not be classified");
    assert!(
        stderr.contains("warning: ") && stderr.contains("no digit found"),
        "{stderr}"
    );
    runtime_error(
        &[
            "predict",
            "--model",
            &model,
            "--data-dir",
            &fx.data(),
            "--test-index",
            "200",
        ],
        &["--test-index 200", "200 test samples"],
    );
}

#[test]
fn weight_pictures_and_metrics_files() {
    let fx = Fixture::new(7);
    let png = fx.file("w.png");
    let metrics = fx.file("m.jsonl");
    let model = fx.file("m.safetensors");
    let report = fx.train(&[
        "--epochs",
        "3",
        "--val-split",
        "0.2",
        "--schedule",
        "cosine",
        "--weights-png",
        &png,
        "--metrics-json",
        &metrics,
        "--save",
        &model,
    ]);
    assert_eq!(report["val_samples"], 200);
    assert!(report["val_accuracy"].is_number() && report["val_loss"].is_number());
    // 10 templates of 28 × 28 at 4× with 4-pixel gaps.
    assert_eq!(png_size(&png), (1156, 112));

    let lines = json_lines(&std::fs::read_to_string(&metrics).unwrap());
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        for key in [
            "train_loss",
            "test_loss",
            "test_accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "seconds",
            "benchings",
        ] {
            assert!(l[key].is_number(), "{key} in {l}");
        }
        assert_eq!(l, &report["per_epoch"][i]);
    }
    let lrs: Vec<f64> = lines.iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert!(lrs[0] > lrs[1] && lrs[1] > lrs[2], "cosine decays: {lrs:?}");

    // eval draws the same picture.
    let again = fx.file("again.png");
    ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &fx.data(),
        "--weights-png",
        &again,
    ]);
    assert_eq!(std::fs::read(&png).unwrap(), std::fs::read(&again).unwrap());

    // 1-D samples have no picture: refused before training, nothing written.
    let flat = fx.path("flat");
    std::fs::create_dir(&flat).unwrap();
    write_flat_dataset(&flat);
    let none = fx.file("none.png");
    let saved = fx.file("none.safetensors");
    runtime_error(
        &[
            "--data-dir",
            &flat.display().to_string(),
            "--weights-png",
            &none,
            "--save",
            &saved,
        ],
        &["--weights-png", "2-D"],
    );
    assert!(!Path::new(&none).exists() && !Path::new(&saved).exists());
}

#[test]
fn failures_leave_no_partial_files() {
    let fx = Fixture::new(8);
    let (model, metrics) = (fx.file("m.safetensors"), fx.file("m.jsonl"));
    // Diverges in the first epoch.
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--lr",
            "3e38",
            "--save",
            &model,
            "--metrics-json",
            &metrics,
        ],
        &["non-finite"],
    );
    assert!(!Path::new(&model).exists() && !Path::new(&metrics).exists());
    // An output directory that does not exist: refused before any work.
    let nowhere = fx.file("no/such/dir/m.safetensors");
    runtime_error(
        &["--data-dir", &fx.data(), "--save", &nowhere],
        &["--save", "does not exist"],
    );
    let leftovers: Vec<_> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "data")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn invalid_option_values_are_usage_errors() {
    // Each message names the flag (or argument) at fault.
    for (args, names) in [
        (
            &["--momentum", "1"][..],
            "'--momentum <MOMENTUM>': must be in [0, 1)",
        ),
        (
            &["--momentum", "-0.5"],
            "'--momentum <MOMENTUM>': must be in [0, 1)",
        ),
        (
            &["--momentum", "abc"],
            "'--momentum <MOMENTUM>': 'abc' is not a number",
        ),
        (&["--nesterov"], "--nesterov needs --momentum > 0"),
        (
            &["--nesterov", "--momentum", "0"],
            "--nesterov needs --momentum > 0",
        ),
        (
            &["--weight-decay", "-1e-4"],
            "'--weight-decay <WEIGHT_DECAY>': must be finite and >= 0",
        ),
        (
            &["--weight-decay", "inf"],
            "'--weight-decay <WEIGHT_DECAY>': must be finite and >= 0",
        ),
        (&["--schedule", "linear"], "'--schedule <SCHEDULE>'"),
        (&["--schedule", "step:0:0.5"], "'--schedule <SCHEDULE>'"),
        (&["--schedule", "step:2:-1"], "'--schedule <SCHEDULE>'"),
        (
            &["--val-split", "1"],
            "'--val-split <FRACTION>': must be in [0, 1)",
        ),
        (
            &["--val-split", "-0.1"],
            "'--val-split <FRACTION>': must be in [0, 1)",
        ),
        (&["--lr", "0"], "'--lr <LR>': must be finite and > 0"),
        (&["--epochs", "0"], "'--epochs <EPOCHS>'"),
        (&["--batch-size", "0"], "'--batch-size <BATCH_SIZE>'"),
        (&["--kernel", "sse9"], "'--kernel <KERNEL>'"),
        (&["train", "--momentum", "2"], "'--momentum <MOMENTUM>'"),
        (&["--epochs", "2", "eval", "--model", "m"], "'eval'"),
        (&["eval"], "--model <FILE>"),
        (&["predict", "--model", "m.safetensors"], "<IMAGE|DIR|->"),
        (
            &["predict", "--model", "m.safetensors", "--test-index", "-1"],
            "'--test-index <N>'",
        ),
        (
            &["predict", "--model", "m.safetensors", "--top", "0", "x.png"],
            "'--top <TOP>'",
        ),
    ] {
        let stderr = fails(2, args);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(names),
            "{args:?}: {stderr:?} does not name {names:?}"
        );
    }
}

#[test]
fn python_reads_the_checkpoint_and_agrees_with_predict() {
    let Some(exe) = common::python() else { return };
    let fx = Fixture::new(9);
    let model = fx.file("m.safetensors");
    fx.train(&["--epochs", "2", "--momentum", "0.5", "--save", &model]);
    let indices = ["0", "1", "17", "199"];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/predict_reference.py");
    let images = fx.path("data").join("t10k-images-idx3-ubyte");
    let out = Command::new(&exe)
        .arg(&script)
        .arg(&model)
        .arg(&images)
        .args(indices)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = json_lines(&String::from_utf8(out.stdout).unwrap());

    let mut args = vec!["predict", "--model", &model, "--json", "--top", "10"];
    let data = fx.data();
    args.extend(["--data-dir", &data]);
    for i in indices {
        args.extend(["--test-index", i]);
    }
    let ours = json_lines(&ok(&args));
    assert_eq!(ours.len(), reference.len());
    for (o, r) in ours.iter().zip(&reference) {
        assert_eq!(o["test_index"], r["test_index"]);
        assert_eq!(o["predicted"], r["predicted"], "{o} vs {r}");
        for t in o["top"].as_array().unwrap() {
            let c = t["class"].as_u64().unwrap() as usize;
            let (p, q) = (
                t["probability"].as_f64().unwrap(),
                r["probabilities"][c].as_f64().unwrap(),
            );
            assert!((p - q).abs() < 1e-5, "class {c}: {p} vs {q}");
        }
    }
}

/// Width and height of a PNG file.
fn png_size(path: &str) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

/// A dataset whose samples are 1-D (64 features).
fn write_flat_dataset(dir: &Path) {
    use idx_softmax::data::idx::ElementType;
    let (n, k) = (40, 64);
    let pixels: Vec<u8> = (0..n * k).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    for (split, count) in [("train", n), ("t10k", n / 2)] {
        common::write_idx(
            &dir.join(format!("{split}-images-idx3-ubyte")),
            ElementType::U8,
            &[count, k],
            &pixels[..count * k],
        );
        common::write_idx(
            &dir.join(format!("{split}-labels-idx1-ubyte")),
            ElementType::U8,
            &[count],
            &labels[..count],
        );
    }
}
