//! MLPs on the command line (issue 8): `--hidden` parsing, `--save` in
//! nn.Sequential layout, `eval` and `predict` on an MLP checkpoint,
//! rejection of inconsistent MLP files, `--resume`, NumPy's independent
//! evaluation of a saved MLP, and the MNIST accuracy target.
//!
//! The fixture is a small synthetic IDX dataset (12×12 u8 samples, 4
//! classes) so each run takes milliseconds; only the accuracy regression
//! trains on the bundled MNIST, once.

mod common;
use common::{bin, bin_ok as ok, last_json as json};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

use idx_softmax::checkpoint;
use idx_softmax::image::{self, GrayImage};
use idx_softmax::kernels::KernelPath;
use idx_softmax::nn::Network;

const TRAIN: usize = 600;
const TEST: usize = 120;
const SIDE: usize = 12;
const K: usize = SIDE * SIDE;
const CLASSES: usize = 4;

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
    /// Trains with `extra` flags (plus the data and --json); the report.
    fn train(&self, extra: &[&str]) -> Value {
        let data = self.data();
        let mut args = vec!["--data-dir", &data, "--json"];
        args.extend_from_slice(extra);
        json(&ok(&args))
    }
}

fn fails(code: i32, args: &[&str]) -> String {
    let out = bin(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    stderr
}

/// Exit 1 with a single `error: ` line holding every needle.
fn runtime_error(args: &[&str], needles: &[&str]) -> String {
    let stderr = fails(1, args);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in {stderr}");
    }
    stderr
}

/// Exit 2 (a usage error) mentioning every needle.
fn usage_error(args: &[&str], needles: &[&str]) -> String {
    let stderr = fails(2, args);
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: expected {n:?} in {stderr}");
    }
    stderr
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(json).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file of F32 tensors `(name, shape)` (values small
/// and finite) with the reference crate, and `metadata`.
fn write_tensors(path: &Path, tensors: &[(&str, Vec<usize>)], metadata: &[(&str, &str)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| {
            let n: usize = s.iter().product();
            f32_bytes(&(0..n).map(|i| (i % 7) as f32 * 0.01).collect::<Vec<_>>())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let md: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let md = (!md.is_empty()).then_some(md);
    std::fs::write(path, safetensors::serialize(views, md).unwrap()).unwrap();
}

fn tensor_names(net: &Network) -> Vec<String> {
    net.params()
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// --hidden on the command line.

#[test]
fn hidden_flag_values_and_combinations() {
    let fx = Fixture::new(1);
    let data = fx.data();
    for bad in ["0", "-3", "abc", "1.5", "1048577"] {
        let flag = format!("--hidden={bad}");
        usage_error(&["--data-dir", &data, &flag], &["--hidden"]);
    }
    usage_error(
        &["--data-dir", &data, "--hidden", "16", "--hidden", "0"],
        &["--hidden"],
    );
    // Every kernel path trains an MLP on u8 samples (the fused ones run the
    // first layer); repeated flags stack layers.
    for k in KernelPath::available() {
        let r = fx.train(&["--hidden", "16", "--hidden", "8", "--kernel", k.name()]);
        assert_eq!(r["layers"], format!("{K}-16-8-{CLASSES}"), "{k}");
        assert_eq!(r["hidden"], serde_json::json!([16, 8]));
        assert_eq!(r["kernel"], k.name());
    }
    let r = fx.train(&["--hidden", "16"]);
    assert_eq!(r["kernel"], KernelPath::best().name());
    assert_eq!(r["layers"], format!("{K}-16-{CLASSES}"));
    // Without --hidden nothing changes: softmax regression, the best kernel.
    let r = fx.train(&[]);
    assert_eq!(r["layers"], format!("{K}-{CLASSES}"));
    assert_eq!(r["hidden"], serde_json::json!([]));
    assert_eq!(r["kernel"], KernelPath::best().name());

    // f32 samples train on every path, an MLP as softmax regression (the
    // fused paths read the f32 rows in place); the default is the best.
    let f32_dir = fx.path("f32");
    write_f32_dataset(&f32_dir);
    let f32_data = f32_dir.display().to_string();
    for k in KernelPath::available() {
        for hidden in [&["--hidden", "16"][..], &[]] {
            let mut args = vec!["--data-dir", &f32_data, "--json", "--kernel", k.name()];
            args.extend_from_slice(hidden);
            assert_eq!(json(&ok(&args))["kernel"], k.name());
        }
    }
    let r = json(&ok(&["--data-dir", &f32_data, "--json", "--hidden", "16"]));
    assert_eq!(r["kernel"], KernelPath::best().name());
    assert_eq!(r["layers"], "6-16-3");
}

/// A 6-feature f32 dataset (2 × 3 samples), 3 classes.
fn write_f32_dataset(dir: &Path) {
    use idx_softmax::data::idx::ElementType;
    std::fs::create_dir(dir).unwrap();
    let be = |v: &[f32]| v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    for (split, n) in [("train", 60), ("t10k", 15)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let pixels: Vec<f32> = (0..n * 6)
            .map(|i| {
                if i % 6 == 2 * (labels[i / 6] as usize) {
                    1.0
                } else {
                    (i % 5) as f32 * 0.1
                }
            })
            .collect();
        common::write_idx(
            &dir.join(format!("{split}-images-idx3-ubyte")),
            ElementType::F32,
            &[n, 2, 3],
            &be(&pixels),
        );
        common::write_idx(
            &dir.join(format!("{split}-labels-idx1-ubyte")),
            ElementType::U8,
            &[n],
            &labels,
        );
    }
}

// ---------------------------------------------------------------------------
// --save, eval and predict.

#[test]
fn mlp_checkpoint_saves_evaluates_and_predicts() {
    let fx = Fixture::new(2);
    let model = fx.file("mlp.safetensors");
    let png = fx.file("w.png");
    let report = fx.train(&[
        "--hidden",
        "16",
        "--hidden",
        "8",
        "--epochs",
        "3",
        "--momentum",
        "0.9",
        "--lr",
        "0.05",
        "--save",
        &model,
        "--weights-png",
        &png,
    ]);
    let digest = report["weights_digest"].as_str().unwrap();
    assert!(
        report["test_accuracy"].as_f64().unwrap() > 0.5,
        "the fixture is learnable: {report}"
    );

    // nn.Sequential's names and shapes, the layer sizes in the metadata,
    // and one momentum buffer per tensor.
    let ck = checkpoint::load(Path::new(&model)).unwrap();
    assert_eq!(ck.network.digest(), digest);
    assert_eq!(ck.network.sizes(), [K, 16, 8, CLASSES]);
    assert_eq!(
        tensor_names(&ck.network),
        ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    );
    let shapes: Vec<Vec<usize>> = ck
        .network
        .params()
        .tensors()
        .iter()
        .map(|t| t.shape.clone())
        .collect();
    assert_eq!(
        shapes,
        [
            vec![16, K],
            vec![16],
            vec![8, 16],
            vec![8],
            vec![CLASSES, 8],
            vec![CLASSES]
        ]
    );
    assert_eq!(ck.metadata["layers"], format!("{K}-16-8-{CLASSES}"));
    assert_eq!(ck.metadata["hidden"], "16,8");
    let kernel: KernelPath = report["kernel"].as_str().unwrap().parse().unwrap();
    assert_eq!(kernel, KernelPath::best(), "u8 samples: the best path");
    assert_eq!(ck.metadata["kernel"], kernel.name());
    assert_eq!(ck.metadata["epochs_done"], "3");
    let mut extra: Vec<&str> = ck.extra.keys().map(String::as_str).collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "momentum.0.bias",
            "momentum.0.weight",
            "momentum.2.bias",
            "momentum.2.weight",
            "momentum.4.bias",
            "momentum.4.weight"
        ]
    );
    // The picture: 16 first-layer templates of 12 × 12 in a 4 × 4 grid.
    let (w, h) = png_size(&png);
    let side = 4 * SIDE * 4 + 3 * 4;
    assert_eq!((w, h), (side as u32, side as u32));

    // eval: the run's last test evaluation, bit for bit.
    let data = fx.data();
    let ev = json(&ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &data,
        "--json",
    ]));
    assert_eq!(ev["weights_digest"], digest);
    assert_eq!(ev["accuracy"], report["test_accuracy"]);
    assert_eq!(ev["test_loss"], report["test_loss"]);
    assert_eq!(ev["total"], TEST);
    assert_eq!(ev["layers"], format!("{K}-16-8-{CLASSES}"));
    assert_eq!(ev["kernel"], kernel.name(), "eval runs the training path");
    assert_eq!(ev["epochs_done"], 3);
    // And the library on the same file agrees, on that path and on gemm.
    let dataset = common::load(Path::new(&data));
    let (_, test) = common::samples(&dataset);
    // (The loss to 1e-12, not bitwise: for this avx512 MLP the CLI,
    // spawned from a Rust test process, reports a mean loss one ulp away
    // from metrics::evaluate in this process, though the same binary run
    // from a shell or from Python agrees bitwise; under investigation.
    // Within the CLI, eval and the training report agree bitwise, above.)
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    let lib = idx_softmax::metrics::evaluate(&ck.network, &test, kernel);
    assert_eq!(ev["correct"], lib.correct);
    let loss = ev["test_loss"].as_f64().unwrap();
    assert!(close(loss, lib.loss), "{loss} vs {}", lib.loss);
    let on_gemm = json(&ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &data,
        "--json",
        "--kernel",
        "gemm",
    ]));
    assert_eq!(on_gemm["kernel"], "gemm");
    let lib = idx_softmax::metrics::evaluate(&ck.network, &test, KernelPath::Gemm);
    assert_eq!(on_gemm["correct"], lib.correct);
    let loss = on_gemm["test_loss"].as_f64().unwrap();
    assert!(close(loss, lib.loss), "{loss} vs {}", lib.loss);
    let (a, b) = (
        on_gemm["test_loss"].as_f64().unwrap(),
        ev["test_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "gemm {a} vs {kernel} {b}");
    // The human report names the network.
    let text = ok(&["eval", "--model", &model, "--data-dir", &data]);
    assert!(
        text.contains(&format!("network {K}-16-8-{CLASSES}")),
        "{text}"
    );
    // predict: --test-index and a PNG of the same sample agree, and both
    // are the network's argmax as the library computes it.
    let indices = [0usize, 5, 77, TEST - 1];
    let mut args: Vec<String> = ["predict", "--model", &model, "--data-dir", &data, "--json"]
        .map(String::from)
        .to_vec();
    args.extend(["--top".into(), CLASSES.to_string()]);
    for &i in &indices {
        let p = fx.path(&format!("t{i}.png"));
        let k = K;
        let pixels = dataset.test.images.as_u8().unwrap()[i * k..(i + 1) * k].to_vec();
        image::write_gray_png(
            &p,
            &GrayImage {
                width: SIDE,
                height: SIDE,
                pixels,
            },
        )
        .unwrap();
        args.push(p.display().to_string());
    }
    for &i in &indices {
        args.extend(["--test-index".into(), i.to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = json_lines(&ok(&argv));
    assert_eq!(lines.len(), 2 * indices.len());
    let (files, tests) = lines.split_at(indices.len());
    let rows: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    let mut logits = vec![0.0f32; rows.len() * CLASSES];
    ck.network
        .forward_rows(&test, &rows, kernel, &mut Vec::new(), &mut logits);
    for (n, (f, t)) in files.iter().zip(tests).enumerate() {
        assert_eq!(t["test_index"], indices[n]);
        assert_eq!(t["label"], test.label(indices[n]));
        assert_eq!(f["predicted"], t["predicted"]);
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
        let z = &logits[n * CLASSES..(n + 1) * CLASSES];
        let argmax = (0..CLASSES).fold(0, |b, j| if z[j] > z[b] { j } else { b });
        assert_eq!(t["predicted"], argmax);
        let probs: f64 = t["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["probability"].as_f64().unwrap())
            .sum();
        assert!((probs - 1.0).abs() < 1e-5, "{t}");
    }
    // On the gemm path the image and the test sample take the same
    // arithmetic: the same bits.
    let mut gemm = argv.clone();
    gemm.extend(["--kernel", "gemm"]);
    let lines = json_lines(&ok(&gemm));
    let (files, tests) = lines.split_at(indices.len());
    for (f, t) in files.iter().zip(tests) {
        assert_eq!(f["top"], t["top"]);
    }
    // Out of range.
    runtime_error(
        &[
            "predict",
            "--model",
            &model,
            "--data-dir",
            &data,
            "--test-index",
            &TEST.to_string(),
        ],
        &["--test-index", "120 test samples"],
    );
}

/// Inconsistent MLP files are refused by eval, predict and --resume with
/// one line naming the file and the culprit, as for softmax regression.
#[test]
fn inconsistent_mlp_checkpoints_are_rejected() {
    let fx = Fixture::new(3);
    let data = fx.data();
    let layers = format!("{K}-16-{CLASSES}");
    let good = [
        ("0.weight", vec![16, K]),
        ("0.bias", vec![16]),
        ("2.weight", vec![CLASSES, 16]),
        ("2.bias", vec![CLASSES]),
    ];
    // The consistent file works (a foreign file: no run metadata needed).
    let ok_file = fx.file("ok.safetensors");
    write_tensors(Path::new(&ok_file), &good, &[("layers", &layers)]);
    let ev = json(&ok(&[
        "eval",
        "--model",
        &ok_file,
        "--data-dir",
        &data,
        "--json",
    ]));
    assert_eq!(ev["layers"], layers);

    type Shapes = Vec<(&'static str, Vec<usize>)>;
    // (file, tensors, metadata, words of the error)
    type Case<'a> = (&'a str, Shapes, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let mut cases: Vec<Case<'_>> = vec![
        (
            "inputs.safetensors",
            vec![
                ("0.weight", vec![16, K]),
                ("0.bias", vec![16]),
                ("2.weight", vec![CLASSES, 15]),
                ("2.bias", vec![CLASSES]),
            ],
            vec![],
            vec!["\"2.weight\"", "15 inputs", "16 outputs"],
        ),
        (
            "bias.safetensors",
            vec![
                ("0.weight", vec![16, K]),
                ("0.bias", vec![15]),
                ("2.weight", vec![CLASSES, 16]),
                ("2.bias", vec![CLASSES]),
            ],
            vec![],
            vec!["\"0.bias\"", "[15]", "[16]"],
        ),
        (
            "nobias.safetensors",
            vec![
                ("0.weight", vec![16, K]),
                ("0.bias", vec![16]),
                ("2.weight", vec![CLASSES, 16]),
            ],
            vec![],
            vec!["no tensor \"2.bias\""],
        ),
        (
            "stray.safetensors",
            good.iter()
                .cloned()
                .chain([("1.weight", vec![16, 16])])
                .collect(),
            vec![],
            vec!["\"1.weight\"", "not part of the layer sequence"],
        ),
        (
            "gap.safetensors",
            vec![
                ("0.weight", vec![16, K]),
                ("0.bias", vec![16]),
                ("4.weight", vec![CLASSES, 16]),
                ("4.bias", vec![CLASSES]),
            ],
            vec![],
            vec!["tensor \"4.", "not part of the layer sequence"],
        ),
        (
            "mixed.safetensors",
            vec![
                ("weight", vec![CLASSES, K]),
                ("bias", vec![CLASSES]),
                ("0.weight", vec![16, K]),
                ("0.bias", vec![16]),
            ],
            vec![],
            vec!["tensor \"0.", "not part of the layer sequence weight"],
        ),
        (
            "rank.safetensors",
            vec![
                ("0.weight", vec![16 * K]),
                ("0.bias", vec![16]),
                ("2.weight", vec![CLASSES, 16]),
                ("2.bias", vec![CLASSES]),
            ],
            vec![],
            vec!["\"0.weight\"", "[outputs, inputs]"],
        ),
        (
            "layers.safetensors",
            good.to_vec(),
            vec![("layers", "144-32-4")],
            vec!["\"layers\"", "144-32-4", &layers],
        ),
        (
            "features.safetensors",
            vec![
                ("0.weight", vec![16, 100]),
                ("0.bias", vec![16]),
                ("2.weight", vec![CLASSES, 16]),
                ("2.bias", vec![CLASSES]),
            ],
            vec![],
            vec!["100 features", "12x12"],
        ),
    ];
    let one_class = [
        ("0.weight", vec![16, K]),
        ("0.bias", vec![16]),
        ("2.weight", vec![1, 16]),
        ("2.bias", vec![1]),
    ];
    cases.push((
        "oneclass.safetensors",
        one_class.to_vec(),
        vec![],
        vec!["\"0.weight\"", "2 classes"],
    ));
    for (name, tensors, metadata, needles) in &cases {
        let file = fx.file(name);
        write_tensors(Path::new(&file), tensors, metadata);
        let mut want = vec![file.as_str()];
        want.extend(needles);
        runtime_error(&["eval", "--model", &file, "--data-dir", &data], &want);
        runtime_error(
            &[
                "predict",
                "--model",
                &file,
                "--data-dir",
                &data,
                "--test-index",
                "0",
            ],
            &want,
        );
        if *name != "features.safetensors" {
            runtime_error(
                &["--data-dir", &data, "--epochs", "2", "--resume", &file],
                &want,
            );
        }
    }

    // A run checkpoint whose run metadata ("hidden") disagrees with its
    // tensors cannot be resumed.
    let run = fx.file("run.safetensors");
    fx.train(&["--hidden", "16", "--momentum", "0.5", "--save", &run]);
    let ck = checkpoint::load(Path::new(&run)).unwrap();
    let mut md: BTreeMap<String, String> = ck.metadata.clone();
    md.insert("hidden".into(), "32".into());
    let extra: Vec<(&str, &[usize], &[f32])> = ck
        .extra
        .iter()
        .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..]))
        .collect();
    let lying = fx.file("lying.safetensors");
    checkpoint::save(Path::new(&lying), &ck.network, &extra, &md).unwrap();
    runtime_error(
        &["--data-dir", &data, "--epochs", "2", "--resume", &lying],
        &["lying.safetensors", "\"hidden\" is \"32\"", &layers],
    );
    // A missing momentum buffer, with momentum recorded.
    let extra: Vec<(&str, &[usize], &[f32])> = extra
        .into_iter()
        .filter(|(n, _, _)| *n != "momentum.2.weight")
        .collect();
    let partial = fx.file("partial.safetensors");
    checkpoint::save(Path::new(&partial), &ck.network, &extra, &ck.metadata).unwrap();
    runtime_error(
        &["--data-dir", &data, "--epochs", "2", "--resume", &partial],
        &["partial.safetensors", "\"momentum.2.weight\""],
    );
}

// ---------------------------------------------------------------------------
// --resume.

#[test]
fn resumed_mlp_run_is_bitwise_the_uninterrupted_run() {
    let fx = Fixture::new(4);
    let opts = [
        "--hidden",
        "16",
        "--momentum",
        "0.9",
        "--nesterov",
        "--batch-size",
        "64",
    ];
    fn join<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
        a.iter().chain(b).copied().collect()
    }
    let with =
        |e: &[&str]| -> Vec<String> { join(&opts, e).iter().map(|s| s.to_string()).collect() };
    let train = |e: &[&str]| {
        let args = with(e);
        fx.train(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let straight = train(&["--epochs", "3"]);
    let ck = fx.file("run.safetensors");
    let first = train(&["--epochs", "2", "--save", &ck]);
    assert_ne!(first["weights_digest"], straight["weights_digest"]);
    // Flags left out (--hidden among them) come from the checkpoint.
    let resumed = fx.train(&["--resume", &ck, "--epochs", "3", "--save", &ck]);
    assert_eq!(resumed["weights_digest"], straight["weights_digest"]);
    assert_eq!(resumed["start_epoch"], 2);
    assert_eq!(resumed["layers"], format!("{K}-16-{CLASSES}"));
    assert_eq!(resumed["per_epoch"].as_array().unwrap().len(), 1);
    assert_eq!(resumed["test_accuracy"], straight["test_accuracy"]);
    let saved = checkpoint::load(Path::new(&ck)).unwrap();
    assert_eq!(saved.metadata["epochs_done"], "3");
    assert_eq!(
        saved.network.digest(),
        straight["weights_digest"].as_str().unwrap()
    );

    // Given again, --hidden must match; and other threads give the same
    // bits.
    let first = train(&["--epochs", "2", "--save", &ck]);
    assert_eq!(first["epochs"], 2);
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--resume",
            &ck,
            "--epochs",
            "3",
            "--hidden",
            "32",
        ],
        &["--hidden 32", "hidden layers 16", "run.safetensors"],
    );
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--resume",
            &ck,
            "--epochs",
            "3",
            "--hidden",
            "16",
            "--hidden",
            "8",
        ],
        &["--hidden 16,8", "hidden layers 16"],
    );
    // Another kernel path rounds differently: refused.
    let other = if KernelPath::best() == KernelPath::Gemm {
        "portable"
    } else {
        "gemm"
    };
    runtime_error(
        &[
            "--data-dir",
            &fx.data(),
            "--resume",
            &ck,
            "--epochs",
            "3",
            "--kernel",
            other,
        ],
        &["kernel", other, "run.safetensors"],
    );
    let again = fx.train(&[
        "--resume",
        &ck,
        "--epochs",
        "3",
        "--hidden",
        "16",
        "--threads",
        "3",
        "--oversubscribe",
    ]);
    assert_eq!(again["weights_digest"], straight["weights_digest"]);
    assert_eq!(again["workers"], 3);
}

// ---------------------------------------------------------------------------
// NumPy and the MNIST target.

/// Runs tests/python/mlp_reference.py on `model` and the test files.
fn numpy_eval(exe: &str, model: &str, images: &Path, labels: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mlp_reference.py");
    let out = Command::new(exe)
        .arg(&script)
        .arg(model)
        .arg(images)
        .arg(labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8(out.stdout).unwrap())
}

/// NumPy's evaluation of `model`, from its tensors alone, against `eval
/// --json`: same network sizes, same accuracy and confusion matrix (up to
/// near-ties of the logits, which float32 and float64 may break apart),
/// the same mean loss to 1e-5.
fn assert_numpy_agrees(numpy: &Value, ev: &Value) {
    assert_eq!(numpy["layers"], ev["layers"]);
    assert_eq!(numpy["total"], ev["total"]);
    let ties = numpy["near_ties"].as_u64().unwrap();
    let diff = numpy["correct"].as_i64().unwrap() - ev["correct"].as_i64().unwrap();
    assert!(
        diff.unsigned_abs() <= ties,
        "numpy {} correct, eval {} ({ties} near-ties)",
        numpy["correct"],
        ev["correct"]
    );
    if ties == 0 {
        assert_eq!(numpy["accuracy"], ev["accuracy"]);
        assert_eq!(numpy["confusion"], ev["confusion"]);
    }
    let (a, b) = (
        numpy["loss"].as_f64().unwrap(),
        ev["test_loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-5 * (1.0 + b),
        "loss: numpy {a}, eval {b}"
    );
}

#[test]
fn numpy_reproduces_a_saved_mlp() {
    let Some(exe) = common::python() else { return };
    let fx = Fixture::new(5);
    let data = fx.data();
    let model = fx.file("mlp.safetensors");
    // Two hidden layers, so the layer order matters; few epochs, so the
    // model is not perfect and the confusion matrix has off-diagonal mass.
    let report = fx.train(&[
        "--hidden", "24", "--hidden", "12", "--epochs", "1", "--lr", "0.02", "--save", &model,
    ]);
    let ev = json(&ok(&[
        "eval",
        "--model",
        &model,
        "--data-dir",
        &data,
        "--json",
    ]));
    assert_eq!(ev["accuracy"], report["test_accuracy"]);
    let dir = fx.path("data");
    let numpy = numpy_eval(
        &exe,
        &model,
        &dir.join("t10k-images-idx3-ubyte"),
        &dir.join("t10k-labels-idx1-ubyte"),
    );
    println!("numpy {numpy}");
    assert_numpy_agrees(&numpy, &ev);
    // The reference really depends on the weights: a softmax checkpoint of
    // the same data gives other numbers.
    let softmax = fx.file("softmax.safetensors");
    fx.train(&["--epochs", "1", "--lr", "0.001", "--save", &softmax]);
    let other = numpy_eval(
        &exe,
        &softmax,
        &dir.join("t10k-images-idx3-ubyte"),
        &dir.join("t10k-labels-idx1-ubyte"),
    );
    assert_eq!(other["layers"], format!("{K}-{CLASSES}"));
    assert_ne!(other["loss"], numpy["loss"]);
    let ev = json(&ok(&[
        "eval",
        "--model",
        &softmax,
        "--data-dir",
        &data,
        "--json",
    ]));
    assert_numpy_agrees(&other, &ev);
}

/// The first accuracy target, on the bundled MNIST: one epoch of
/// 784-256-10 at lr 0.05 with momentum 0.9 reaches ≥ 0.95 (measured
/// 0.9608). The saved model evaluates to the same accuracy with `eval`,
/// and with NumPy from its tensors.
#[test]
fn mnist_mlp_one_epoch_reaches_95_percent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mnist-mlp.safetensors");
    let model = model.to_str().unwrap();
    let report = json(&ok(&[
        "--hidden",
        "256",
        "--epochs",
        "1",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--json",
        "--save",
        model,
    ]));
    let acc = report["test_accuracy"].as_f64().unwrap();
    println!(
        "784-256-10, 1 epoch: test accuracy {acc:.4}, {:.3} s",
        report["train_seconds"]
    );
    assert_eq!(report["layers"], "784-256-10");
    assert_eq!(report["test_samples"], 10_000);
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95");
    let ev = json(&ok(&["eval", "--model", model, "--json"]));
    assert_eq!(ev["accuracy"], report["test_accuracy"]);
    assert_eq!(ev["weights_digest"], report["weights_digest"]);
    if let Some(exe) = common::python() {
        let mnist = Path::new(idx_softmax::data::BUNDLED_MNIST);
        let numpy = numpy_eval(
            &exe,
            model,
            &mnist.join("t10k-images-idx3-ubyte.gz"),
            &mnist.join("t10k-labels-idx1-ubyte.gz"),
        );
        println!("numpy: accuracy {}", numpy["accuracy"]);
        assert_numpy_agrees(&numpy, &ev);
        assert!(numpy["accuracy"].as_f64().unwrap() >= 0.95);
    }
}

/// Width and height of a PNG file.
fn png_size(path: &str) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}
