//! Untrusted input, round 3 (issue 17): each class of the held-out hostile
//! set reproduced, against the real binary where the user meets it:
//!
//! 1. an output never overwrites an input (any spelling, any output flag);
//! 2. concurrent writers to one target both succeed (stale-temp cleanup
//!    never removes a live writer's file);
//! 3. EXIF orientation is applied before preprocessing;
//! 5. boolean variables take 1/0, true/false, yes/no, on/off, any case,
//!    and an empty value counts as unset;
//! 6. two spellings of one dataset file are never chosen between silently;
//! 7. an output format is decided from the extension before any work;
//! 8. a byte-order mark is stripped from text inputs;
//! 9. every file of a directory that is not classified is named;
//! 10. messages quote the value given, and a subcommand's usage error
//!     shows that subcommand's usage.

mod common;
use common::{
    bin_cache as cache, listing, path_str as s, stderr, stdout, synthetic_dir as synthetic,
};

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use idx_softmax::data::{Dataset, LoadOptions};
use idx_softmax::image::{self, GrayImage};

const BIN: &str = env!("CARGO_BIN_EXE_idx-softmax");

/// The binary with a private cache, no input, and none of the tool's
/// variables from the caller's environment.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IDX_SOFTMAX_") && k != "IDX_SOFTMAX_KERNEL" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env(idx_softmax::data::CACHE_ENV, cache())
        .stdin(Stdio::null());
    cmd
}

fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hung for {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn output(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(child, Duration::from_secs(180), &what)
}

fn run(args: &[&str]) -> Output {
    output(command(args))
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(cmd)
}

#[track_caller]
fn success(o: &Output) -> String {
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(o));
    stdout(o)
}

/// Expects a usage error (exit 2) whose message holds every needle, and
/// nothing on stdout.
#[track_caller]
fn usage_error(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
    err
}

/// Expects exit 1 with exactly one `error:` line holding every needle.
#[track_caller]
fn one_line_error(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// Every file of `dir` and its content.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .filter(|n| dir.join(n).is_file())
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// A model trained for one epoch on `data`.
fn train_model(data: &Path, model: &Path) {
    success(&run(&[
        "--data-dir",
        s(data),
        "--save",
        s(model),
        "--threads",
        "1",
    ]));
}

/// Test digit `i` of the bundled MNIST as an image (white on black).
fn mnist_digit(i: usize) -> GrayImage {
    let split = &common::mnist().test;
    let px = split.images.as_u8().unwrap();
    GrayImage {
        width: 28,
        height: 28,
        pixels: px[i * 784..(i + 1) * 784].to_vec(),
    }
}

// 1. An output never overwrites an input.

#[test]
fn an_output_naming_a_data_file_is_refused_in_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 1);
    let before = snapshot(&data);
    let up = format!("{}/../data/train-images-idx3-ubyte", s(&data));
    let dotted = format!("{}/./t10k-labels-idx1-ubyte", s(&data));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "--save",
            s(&data.join("train-images-idx3-ubyte")).to_owned(),
            "train-images-idx3-ubyte",
        ),
        ("--save", up, "train-images-idx3-ubyte"),
        ("--metrics-json", dotted, "t10k-labels-idx1-ubyte"),
        (
            "--plot",
            s(&data.join("t10k-images-idx3-ubyte")).to_owned(),
            "t10k-images-idx3-ubyte",
        ),
        (
            "--weights-png",
            s(&data.join("train-labels-idx1-ubyte")).to_owned(),
            "train-labels-idx1-ubyte",
        ),
    ];
    for (flag, target, file) in &cases {
        let o = run(&["--data-dir", s(&data), "--threads", "1", flag, target]);
        let err = usage_error(&o, &[flag, "--data-dir", file, target]);
        assert!(err.contains("overwrite"), "{err}");
        assert_eq!(snapshot(&data), before, "{flag} {target}");
    }
    // Relative spellings, from inside the data directory.
    let mut cmd = command(&[
        "--data-dir",
        ".",
        "--save",
        "./train-labels-idx1-ubyte",
        "--threads",
        "1",
    ]);
    cmd.current_dir(&data);
    usage_error(&output(cmd), &["--save", "--data-dir"]);
    assert_eq!(snapshot(&data), before);

    // Compressed data: the .gz the run reads, and the raw spelling beside
    // it too when both hold the same data.
    let gz = dir.path().join("gz");
    std::fs::create_dir(&gz).unwrap();
    for (name, bytes) in &before {
        std::fs::write(gz.join(format!("{name}.gz")), common::gzip(bytes)).unwrap();
    }
    let gz_before = snapshot(&gz);
    let target = gz.join("train-images-idx3-ubyte.gz");
    let o = run(&["--data-dir", s(&gz), "--save", s(&target), "--threads", "1"]);
    usage_error(&o, &["--save", "--data-dir", s(&target)]);
    assert_eq!(snapshot(&gz), gz_before);
    std::fs::write(gz.join("t10k-labels-idx1-ubyte"), &before[1].1).unwrap();
    let gz_before = snapshot(&gz);
    let target = gz.join("t10k-labels-idx1-ubyte.gz");
    let o = run(&[
        "--data-dir",
        s(&gz),
        "--metrics-json",
        s(&target),
        "--threads",
        "1",
    ]);
    usage_error(&o, &["--metrics-json", s(&target)]);
    assert_eq!(snapshot(&gz), gz_before);
}

#[test]
fn an_output_naming_labels_a_model_or_an_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 2);
    let labels = dir.path().join("names.txt");
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    std::fs::write(&labels, names.join("\n")).unwrap();
    let o = run(&[
        "--data-dir",
        s(&data),
        "--labels",
        s(&labels),
        "--metrics-json",
        s(&labels),
    ]);
    usage_error(&o, &["--metrics-json", "--labels", s(&labels)]);
    assert_eq!(std::fs::read_to_string(&labels).unwrap(), names.join("\n"));
    // labels.txt beside the data is read as well: it is an input too.
    let beside = data.join("labels.txt");
    std::fs::write(&beside, names.join("\n")).unwrap();
    let o = run(&["--data-dir", s(&data), "--save", s(&beside)]);
    usage_error(&o, &["--save", s(&beside)]);
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), names.join("\n"));

    let model = dir.path().join("m.safetensors");
    train_model(&data, &model);
    let model_bytes = std::fs::read(&model).unwrap();
    // eval: a picture onto a data file, onto --labels, onto the model.
    let t10k = data.join("t10k-images-idx3-ubyte");
    let t10k_bytes = std::fs::read(&t10k).unwrap();
    let o = run(&["eval", "--model", s(&model), "--confusion-png", s(&t10k)]);
    let err = usage_error(&o, &["--confusion-png", s(&t10k), "--data-dir"]);
    assert!(err.contains("Usage: idx-softmax eval"), "{err}");
    assert_eq!(std::fs::read(&t10k).unwrap(), t10k_bytes);
    let o = run(&[
        "eval",
        "--model",
        s(&model),
        "--labels",
        s(&labels),
        "--weights-png",
        s(&labels),
    ]);
    usage_error(&o, &["--weights-png", "--labels"]);
    assert_eq!(std::fs::read_to_string(&labels).unwrap(), names.join("\n"));

    // predict --save-preprocessed DIR writes DIR/STEM.png: never onto an
    // input image, nor onto the model.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let a = images.join("a.png");
    image::write_gray_png(&a, &mnist_digit(0)).unwrap();
    let a_bytes = std::fs::read(&a).unwrap();
    let o = run(&[
        "predict",
        "--model",
        s(&model),
        "--save-preprocessed",
        s(&images),
        s(&a),
    ]);
    let err = usage_error(&o, &["--save-preprocessed", s(&a)]);
    assert!(err.contains("Usage: idx-softmax predict"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), a_bytes);
    // The same through the directory, spelled another way.
    let o = run(&[
        "predict",
        "--model",
        s(&model),
        "--save-preprocessed",
        &format!("{}/.", s(&images)),
        s(&images),
    ]);
    usage_error(&o, &["--save-preprocessed", "a.png"]);
    assert_eq!(std::fs::read(&a).unwrap(), a_bytes);
    // A model whose name the output would take.
    let odd = images.join("b.png");
    std::fs::copy(&model, &odd).unwrap();
    let other = dir.path().join("b.jpg");
    std::fs::copy(&a, &other).unwrap();
    let o = run(&[
        "predict",
        "--model",
        s(&odd),
        "--save-preprocessed",
        s(&images),
        s(&other),
    ]);
    usage_error(&o, &["--save-preprocessed", "--model", s(&odd)]);
    assert_eq!(std::fs::read(&odd).unwrap(), model_bytes);
    // Elsewhere it works, and --resume F --save F still continues a run.
    let seen = dir.path().join("seen");
    success(&run(&[
        "predict",
        "--model",
        s(&model),
        "--save-preprocessed",
        s(&seen),
        s(&a),
    ]));
    assert_eq!(listing(&seen), ["a.png"]);
    success(&run(&[
        "--data-dir",
        s(&data),
        "--resume",
        s(&model),
        "--save",
        s(&model),
        "--epochs",
        "2",
        "--threads",
        "1",
    ]));
}

// 2. Concurrent writers to one target.

#[test]
fn concurrent_atomic_writes_to_one_file_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.bin");
    const CHUNK: usize = 4096;
    const CHUNKS: usize = 32;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u8)
            .map(|id| {
                let target = &target;
                scope.spawn(move || {
                    for round in 0..100 {
                        idx_softmax::fsutil::write_atomic(target, |f| {
                            for _ in 0..CHUNKS {
                                f.write_all(&[id; CHUNK])?;
                                std::thread::yield_now();
                            }
                            Ok(())
                        })
                        .unwrap_or_else(|e| panic!("writer {id}, round {round}: {e}"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(bytes.len(), CHUNK * CHUNKS);
    assert!(bytes.iter().all(|&b| b == bytes[0]), "a mixed file");
    assert_eq!(listing(dir.path()), ["out.bin"]);
}

#[test]
fn two_runs_writing_one_target_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 3);
    let model = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    for round in 0..4 {
        let args = [
            "--data-dir",
            s(&data),
            "--epochs",
            "25",
            "--threads",
            "1",
            "--save",
            s(&model),
            "--metrics-json",
            s(&metrics),
        ];
        let spawn = || {
            command(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let o = wait_within(child, Duration::from_secs(180), "a concurrent run");
            assert!(o.status.success(), "round {round}: {}", stderr(&o));
        }
        let ck = idx_softmax::checkpoint::load(&model).unwrap();
        assert_eq!(ck.metadata["epochs_done"], "25");
        let text = std::fs::read_to_string(&metrics).unwrap();
        assert_eq!(text.lines().count(), 25, "{text}");
        for line in text.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
        assert_eq!(listing(dir.path()), ["data", "m.jsonl", "m.safetensors"]);
    }
}

#[test]
fn a_fresh_partial_cache_file_is_left_alone() {
    // The decompression cache removes `.partial-*` files only when a day
    // old: a build in progress writes its file continuously.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_synthetic(&data, 50, 10, 4, 4, 3, 9);
    for name in common::NAMES {
        let raw = std::fs::read(data.join(name)).unwrap();
        std::fs::remove_file(data.join(name)).unwrap();
        std::fs::write(data.join(format!("{name}.gz")), common::gzip(&raw)).unwrap();
    }
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    let live = cache_dir.join(".partial-live");
    std::fs::write(&live, b"a build in progress").unwrap();
    let opts = LoadOptions {
        cache: idx_softmax::data::GzCache::at(&cache_dir),
        classes: None,
    };
    Dataset::load(&data, &opts).unwrap();
    assert!(live.exists(), "{:?}", listing(&cache_dir));
}

// 3. EXIF orientation.

/// Where stored pixel (row `r`, column `c`) of an `h × w` image appears
/// when shown with EXIF orientation `o` (TIFF 6.0 / EXIF 2.3: 1 as
/// stored, 2 mirrored, 3 rotated 180°, 4 flipped, 5 transposed, 6 rotated
/// 90° clockwise, 7 transversed, 8 rotated 90° anticlockwise), as (x, y).
fn shown_at(o: u16, r: usize, c: usize, h: usize, w: usize) -> (usize, usize) {
    match o {
        1 => (c, r),
        2 => (w - 1 - c, r),
        3 => (w - 1 - c, h - 1 - r),
        4 => (c, h - 1 - r),
        5 => (r, c),
        6 => (h - 1 - r, c),
        7 => (h - 1 - r, w - 1 - c),
        8 => (r, w - 1 - c),
        _ => unreachable!(),
    }
}

/// The image to store with orientation `o` so that it shows as `upright`.
fn stored_for(upright: &GrayImage, o: u16) -> GrayImage {
    let (w, h) = if o >= 5 {
        (upright.height, upright.width)
    } else {
        (upright.width, upright.height)
    };
    let mut pixels = vec![0u8; w * h];
    for r in 0..h {
        for c in 0..w {
            let (x, y) = shown_at(o, r, c, h, w);
            pixels[r * w + c] = upright.pixels[y * upright.width + x];
        }
    }
    GrayImage {
        width: w,
        height: h,
        pixels,
    }
}

/// A TIFF structure (as EXIF holds it) with one IFD entry: Orientation
/// (tag 0x0112, SHORT, count 1) = `o`, big- or little-endian.
fn exif_tiff(o: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut t = Vec::new();
    t.extend_from_slice(if big_endian { b"MM" } else { b"II" });
    t.extend_from_slice(&u16b(42));
    t.extend_from_slice(&u32b(8)); // the IFD's offset
    t.extend_from_slice(&u16b(1)); // one entry
    t.extend_from_slice(&u16b(0x0112));
    t.extend_from_slice(&u16b(3)); // SHORT
    t.extend_from_slice(&u32b(1));
    t.extend_from_slice(&u16b(o));
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&u32b(0)); // no next IFD
    t
}

/// `img` as a JPEG (quality 100) with an EXIF APP1 segment saying `o`.
fn jpeg_with_orientation(img: &GrayImage, o: u16) -> Vec<u8> {
    let mut plain = Vec::new();
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 100)
        .encode(
            &img.pixels,
            img.width as u32,
            img.height as u32,
            ::image::ExtendedColorType::L8,
        )
        .unwrap();
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&exif_tiff(o, o.is_multiple_of(2)));
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

/// `img` as a PNG with an `eXIf` chunk saying `o`.
fn png_with_orientation(dir: &Path, img: &GrayImage, o: u16) -> Vec<u8> {
    let path = dir.join("plain.png");
    image::write_gray_png(&path, img).unwrap();
    let plain = std::fs::read(&path).unwrap();
    // Signature (8) + IHDR (4 + 4 + 13 + 4): eXIf goes before IDAT.
    let mut out = plain[..33].to_vec();
    out.extend_from_slice(&common::png_chunk(
        b"eXIf",
        &exif_tiff(o, !o.is_multiple_of(2)),
    ));
    out.extend_from_slice(&plain[33..]);
    out
}

/// An upright test picture, not symmetric in any way, 32 × 24.
fn asymmetric() -> GrayImage {
    let (w, h) = (32, 24);
    let mut pixels = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            // A thick "L" in the top-left quarter, a dot at the right, and a
            // gentle gradient to tell every direction apart.
            let l = ((3..8).contains(&x) && (2..16).contains(&y))
                || ((11..16).contains(&y) && (3..14).contains(&x));
            let dot = (24..28).contains(&x) && (4..8).contains(&y);
            pixels[y * w + x] = if l || dot { 250 } else { (x * 2 + y) as u8 };
        }
    }
    GrayImage {
        width: w,
        height: h,
        pixels,
    }
}

fn mean_abs_diff(a: &GrayImage, b: &GrayImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let sum: u64 = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.pixels.len() as f64
}

#[test]
fn exif_orientation_is_applied_when_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let upright = asymmetric();
    for o in 1..=8u16 {
        let stored = stored_for(&upright, o);
        // PNG (lossless): exactly the upright pixels.
        let path = dir.path().join(format!("o{o}.png"));
        std::fs::write(&path, png_with_orientation(dir.path(), &stored, o)).unwrap();
        let got = image::read_gray(&path).unwrap();
        assert_eq!(
            (got.width, got.height),
            (upright.width, upright.height),
            "PNG, orientation {o}"
        );
        assert_eq!(got.pixels, upright.pixels, "PNG, orientation {o}");
        // JPEG at quality 100: the upright pixels but for rounding.
        let bytes = jpeg_with_orientation(&stored, o);
        let path = dir.path().join(format!("o{o}.jpg"));
        std::fs::write(&path, &bytes).unwrap();
        for got in [
            image::read_gray(&path).unwrap(),
            image::decode_bytes(Path::new("-"), &bytes)
                .unwrap()
                .to_gray_over_black(),
        ] {
            assert_eq!(
                (got.width, got.height),
                (upright.width, upright.height),
                "JPEG, orientation {o}"
            );
            let d = mean_abs_diff(&got, &upright);
            assert!(d < 2.0, "JPEG, orientation {o}: mean difference {d}");
        }
    }
    // The same pixels without the tag are a different picture: the test can
    // tell orientations apart.
    let sideways = stored_for(&upright, 2);
    assert!(mean_abs_diff(&sideways, &upright) > 20.0);
}

#[test]
fn predict_reads_a_rotated_photo_upright() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    success(&run(&["--save", s(&model), "--threads", "1"]));
    // A dark digit on light paper, larger than the model's input, as a
    // phone stores it: rotated, with the orientation in EXIF.
    let digit = mnist_digit(0);
    let mut big = GrayImage {
        width: 56,
        height: 56,
        pixels: vec![0; 56 * 56],
    };
    for y in 0..56 {
        for x in 0..56 {
            big.pixels[y * 56 + x] = 255 - digit.pixels[(y / 2) * 28 + x / 2];
        }
    }
    let upright = dir.path().join("upright.png");
    image::write_gray_png(&upright, &big).unwrap();
    let mut files = vec![upright.clone()];
    for o in [6u16, 8, 3] {
        let path = dir.path().join(format!("rotated-{o}.png"));
        std::fs::write(
            &path,
            png_with_orientation(dir.path(), &stored_for(&big, o), o),
        )
        .unwrap();
        files.push(path);
    }
    let mut args = vec!["predict", "--model", s(&model), "--json", "--probs"];
    args.extend(files.iter().map(|p| s(p)));
    let out = success(&run(&args));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0]["predicted"], 7, "{out}");
    for v in &lines[1..] {
        assert_eq!(v["probabilities"], lines[0]["probabilities"], "{v}");
    }
}

// 5. Boolean variables.

/// The values every boolean variable takes, and what each means.
const SWITCH_VALUES: [(&str, bool); 9] = [
    ("1", true),
    ("0", false),
    ("true", true),
    ("FALSE", false),
    ("yes", true),
    ("No", false),
    ("on", true),
    ("OFF", false),
    ("", false),
];

#[test]
fn boolean_variables_take_the_usual_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 4);
    // A model of the bundled MNIST, so that a white digit on black goes in
    // as it is unless inverted, and a black one on white is inverted unless
    // told not to be.
    let model = dir.path().join("m.safetensors");
    success(&run(&["--save", s(&model), "--threads", "1"]));
    let png = dir.path().join("digit.png");
    let digit = mnist_digit(1);
    image::write_gray_png(&png, &digit).unwrap();
    let dark = dir.path().join("dark.png");
    let mut on_paper = digit.clone();
    on_paper.pixels.iter_mut().for_each(|p| *p = 255 - *p);
    image::write_gray_png(&dark, &on_paper).unwrap();
    // The CPUs the engine counts (affinity), as --threads is capped at.
    let cpus = idx_softmax::run::spec::thread_count(None).unwrap();
    let more = (cpus + 1).to_string();

    for (value, on) in SWITCH_VALUES {
        let what = format!("={value:?}");
        // train --json, --nesterov, --oversubscribe.
        let train = ["--data-dir", s(&data), "--threads", "1"];
        let o = run_env(&train, &[("IDX_SOFTMAX_JSON", value)]);
        assert_eq!(success(&o).starts_with('{'), on, "JSON{what}");
        let mut args = train.to_vec();
        args.extend(["--momentum", "0.9", "--json"]);
        let v: Value = serde_json::from_str(&success(&run_env(
            &args,
            &[("IDX_SOFTMAX_NESTEROV", value)],
        )))
        .unwrap();
        assert_eq!(v["nesterov"], on, "NESTEROV{what}");
        let args = ["--data-dir", s(&data), "--threads", &more, "--json"];
        let v: Value = serde_json::from_str(&success(&run_env(
            &args,
            &[("IDX_SOFTMAX_OVERSUBSCRIBE", value)],
        )))
        .unwrap();
        let want = if on { cpus + 1 } else { cpus };
        assert_eq!(v["workers"], want, "OVERSUBSCRIBE{what}");
        // eval --json.
        let o = run_env(
            &["eval", "--model", s(&model)],
            &[("IDX_SOFTMAX_JSON", value)],
        );
        assert_eq!(success(&o).starts_with('{'), on, "eval JSON{what}");
        // predict --json (with --csv, which conflicts with it only when
        // on), --csv, --probs, --invert, --no-invert.
        let predict = ["predict", "--model", s(&model), s(&png)];
        let o = run_env(&predict, &[("IDX_SOFTMAX_JSON", value)]);
        assert_eq!(success(&o).starts_with('{'), on, "predict JSON{what}");
        let mut csv = predict.to_vec();
        csv.push("--csv");
        let o = run_env(&csv, &[("IDX_SOFTMAX_JSON", value)]);
        if on {
            usage_error(&o, &["--json", "--csv"]);
        } else {
            assert!(success(&o).starts_with("image,"), "JSON{what} --csv");
        }
        let o = run_env(&predict, &[("IDX_SOFTMAX_CSV", value)]);
        assert_eq!(success(&o).starts_with("image,"), on, "CSV{what}");
        let mut json = predict.to_vec();
        json.push("--json");
        let v: Value =
            serde_json::from_str(&success(&run_env(&json, &[("IDX_SOFTMAX_PROBS", value)])))
                .unwrap();
        assert_eq!(v.get("probabilities").is_some(), on, "PROBS{what}");
        // White on black: inverted only when asked to.
        let v: Value =
            serde_json::from_str(&success(&run_env(&json, &[("IDX_SOFTMAX_INVERT", value)])))
                .unwrap();
        assert_eq!(v["inverted"], on, "INVERT{what}");
        let paper = ["predict", "--model", s(&model), "--json", s(&dark)];
        let v: Value = serde_json::from_str(&success(&run_env(
            &paper,
            &[("IDX_SOFTMAX_NO_INVERT", value)],
        )))
        .unwrap();
        assert_eq!(v["inverted"], !on, "NO_INVERT{what}");
        // --no-invert beside IDX_SOFTMAX_INVERT=off is no conflict.
        let mut no = json.clone();
        no.push("--no-invert");
        let o = run_env(&no, &[("IDX_SOFTMAX_INVERT", value)]);
        if on {
            usage_error(&o, &["--invert", "--no-invert"]);
        } else {
            let v: Value = serde_json::from_str(&success(&o)).unwrap();
            assert_eq!(v["inverted"], false, "INVERT{what} --no-invert");
        }
    }
}

#[test]
fn a_boolean_variable_with_another_value_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 5);
    for var in [
        "IDX_SOFTMAX_JSON",
        "IDX_SOFTMAX_NESTEROV",
        "IDX_SOFTMAX_OVERSUBSCRIBE",
    ] {
        let o = run_env(&["--data-dir", s(&data)], &[(var, "maybe")]);
        usage_error(&o, &[var, "maybe"]);
    }
    let o = run_env(
        &["predict", "--model", "m.safetensors", "x.png"],
        &[("IDX_SOFTMAX_PROBS", "2")],
    );
    usage_error(&o, &["IDX_SOFTMAX_PROBS", "'2'"]);
    let o = run_env(
        &["--data-dir", s(&data)],
        &[("IDX_SOFTMAX_NO_PIN", "maybe")],
    );
    usage_error(&o, &["IDX_SOFTMAX_NO_PIN", "maybe"]);
    // The library's own boolean variable takes the same words.
    for (value, _) in SWITCH_VALUES {
        let o = run_env(
            &["--data-dir", s(&data), "--threads", "1"],
            &[("IDX_SOFTMAX_NO_PIN", value)],
        );
        success(&o);
    }
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 6);
    let env = [
        ("IDX_SOFTMAX_EPOCHS", ""),
        ("IDX_SOFTMAX_SAVE", ""),
        ("IDX_SOFTMAX_HIDDEN", ""),
        ("IDX_SOFTMAX_KERNEL", ""),
        ("IDX_SOFTMAX_CACHE_DIR", ""),
        ("IDX_SOFTMAX_NO_PIN", ""),
        ("IDX_SOFTMAX_JSON", ""),
    ];
    let out = success(&run_env(&["--data-dir", s(&data), "--threads", "1"], &env));
    assert!(out.starts_with("data "), "{out}");
}

// 6. Two spellings of one dataset file.

#[test]
fn two_spellings_with_different_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 7);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    common::write_synthetic(&other, 600, 100, 28, 28, 10, 8);
    let opts = || LoadOptions {
        cache: common::test_cache(),
        classes: None,
    };
    let raw = data.join("train-images-idx3-ubyte");
    let gz = data.join("train-images-idx3-ubyte.gz");
    let other_images = std::fs::read(other.join("train-images-idx3-ubyte")).unwrap();
    // NAME and NAME.gz with different data.
    std::fs::write(&gz, common::gzip(&other_images)).unwrap();
    let e = Dataset::load(&data, &opts()).unwrap_err().to_string();
    assert!(e.contains(s(&raw)) && e.contains(s(&gz)), "{e}");
    let o = run(&["--data-dir", s(&data), "--threads", "1"]);
    one_line_error(&o, &[s(&raw), s(&gz)]);
    // The same data in both (gunzip -k) is no choice: accepted.
    std::fs::write(&gz, common::gzip(&std::fs::read(&raw).unwrap())).unwrap();
    Dataset::load(&data, &opts()).unwrap();
    std::fs::remove_file(&gz).unwrap();
    // The -idx and .idx spellings.
    let dotted = data.join("t10k-labels.idx1-ubyte");
    let mut labels = std::fs::read(data.join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::write(&dotted, &labels).unwrap();
    Dataset::load(&data, &opts()).unwrap();
    *labels.last_mut().unwrap() ^= 1;
    std::fs::write(&dotted, &labels).unwrap();
    let e = Dataset::load(&data, &opts()).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("t10k-labels.idx1-ubyte"),
        "{e}"
    );
    let split = idx_softmax::data::Split::load_test(&data, &common::test_cache());
    assert!(split.is_err());
    // A hard link is one file under two names.
    std::fs::remove_file(&dotted).unwrap();
    std::fs::hard_link(data.join("t10k-labels-idx1-ubyte"), &dotted).unwrap();
    Dataset::load(&data, &opts()).unwrap();
}

// 7. Output formats.

#[test]
fn an_output_format_that_cannot_be_written_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 10);
    let saved = dir.path().join("m.safetensors");
    for (flag, name) in [
        ("--plot", "curves.pdf"),
        ("--plot", "curves.gif"),
        ("--weights-png", "w.svg"),
        ("--weights-png", "w.jpg"),
    ] {
        let target = dir.path().join(name);
        let o = run(&[
            "--data-dir",
            s(&data),
            "--save",
            s(&saved),
            flag,
            s(&target),
        ]);
        usage_error(&o, &[flag, name]);
        assert!(!target.exists() && !saved.exists(), "{flag} {name}");
    }
    train_model(&data, &saved);
    for (flag, name) in [("--confusion-png", "c.jpeg"), ("--weights-png", "w.pdf")] {
        let target = dir.path().join(name);
        let o = run(&["eval", "--model", s(&saved), flag, s(&target)]);
        usage_error(&o, &[flag, name]);
        assert!(!target.exists());
    }
    // Upper case is the same extension.
    let svg = dir.path().join("C.SVG");
    success(&run(&[
        "eval",
        "--model",
        s(&saved),
        "--confusion-png",
        s(&svg),
    ]));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

// 8. A byte-order mark.

#[test]
fn a_byte_order_mark_is_not_part_of_a_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "\u{feff}zero\r\none\r\n").unwrap();
    assert_eq!(
        idx_softmax::labels::read(&labels, 2).unwrap(),
        ["zero", "one"]
    );

    // SHA256SUMS written on Windows: a BOM and CRLF line ends.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_synthetic(&data, 50, 10, 4, 4, 3, 11);
    let mut sums = String::from("\u{feff}");
    for name in common::NAMES {
        let raw = std::fs::read(data.join(name)).unwrap();
        std::fs::remove_file(data.join(name)).unwrap();
        std::fs::write(data.join(format!("{name}.gz")), common::gzip(&raw)).unwrap();
        let digest = sha256_hex(&raw);
        sums += &format!("{digest}  {name}\r\n");
    }
    std::fs::write(data.join("SHA256SUMS"), &sums).unwrap();
    let fresh = |tag: &str| LoadOptions {
        cache: idx_softmax::data::GzCache::at(dir.path().join(format!("cache-{tag}"))),
        classes: None,
    };
    Dataset::load(&data, &fresh("good")).unwrap();
    // ... and the digests are still checked: a wrong one is refused.
    let wrong = sums.replacen(&sums[3..5], "00", 1);
    assert_ne!(wrong, sums);
    std::fs::write(data.join("SHA256SUMS"), &wrong).unwrap();
    let e = Dataset::load(&data, &fresh("bad")).unwrap_err().to_string();
    assert!(e.contains("SHA256SUMS"), "{e}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// 9. Every file of a directory that is not classified is named.

#[test]
fn predict_names_every_file_of_a_directory_it_skips() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let data = synthetic(dir.path(), 12);
    train_model(&data, &model);
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    image::write_gray_png(&photos.join("a.png"), &mnist_digit(2)).unwrap();
    std::fs::write(
        photos.join("b.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    std::fs::write(photos.join("c.heic"), b"\0\0\0\x18ftypheic").unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(photos.join("more")).unwrap();
    let o = run(&["predict", "--model", s(&model), s(&photos)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("a.png"), "{out}");
    let err = stderr(&o);
    for name in ["b.svg", "c.heic", "notes.txt", "more"] {
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not named: {err}"));
        assert!(line.contains("skipped"), "{line}");
    }
    assert!(
        err.trim_end()
            .ends_with("4 of 5 input(s) could not be classified"),
        "{err}"
    );
    // --json keeps stdout JSON lines only.
    let o = run(&["predict", "--model", s(&model), "--json", s(&photos)]);
    assert_eq!(o.status.code(), Some(1));
    for line in stdout(&o).lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
}

// 10. Messages.

#[test]
fn a_usage_error_of_a_subcommand_shows_its_usage() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 13);
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model);
    let o = run(&["eval", "--model", s(&model), "--weights-png", s(&model)]);
    let err = usage_error(&o, &["--model", "--weights-png"]);
    assert!(err.contains("Usage: idx-softmax eval"), "{err}");
}

#[test]
fn a_message_quotes_the_value_given() {
    let cases = [
        ("--lr", "1e-50", "got 1e-50"),
        ("--lr", "1e39", "got 1e39"),
        ("--momentum", "0.999999999", "got 0.999999999"),
        ("--val-split", "0.99999999", "got 0.99999999"),
    ];
    for (flag, value, got) in cases {
        let o = run(&[flag, value]);
        usage_error(&o, &[flag, got]);
    }
}
