//! The command line: exit code 2 for bad flags (clap), 1 with a one-line
//! `error: ...` naming the file for a bad dataset, 0 for a tiny valid one.
//! Every run points the gzip cache at a temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{file, gzip, labels_u8, NAMES};
use idx_softmax::data::idx::ElementType;

const BIN: &str = env!("CARGO_BIN_EXE_idx-softmax");

/// 4×4 u8 images; class `c` lights up row `c`.
fn images_for(labels: &[u32]) -> Vec<u8> {
    let mut px = Vec::new();
    for (i, &c) in labels.iter().enumerate() {
        for r in 0..4 {
            for col in 0..4 {
                px.push(if r == c as usize {
                    220.0
                } else {
                    ((i * 3 + col) % 11) as f64
                });
            }
        }
    }
    file(ElementType::U8, &[labels.len(), 4, 4], &px)
}

/// 20 training and 10 test images of 4×4 pixels, 3 classes, in
/// `NAMES` order.
fn tiny() -> [Vec<u8>; 4] {
    let train: Vec<u32> = (0..20).map(|i| i % 3).collect();
    let test: Vec<u32> = (0..10).map(|i| (i + 1) % 3).collect();
    [
        images_for(&train),
        labels_u8(&train),
        images_for(&test),
        labels_u8(&test),
    ]
}

/// A data directory and a cache directory, both temporary.
struct Fixture {
    data: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Fixture {
    fn new(files: &[Vec<u8>; 4]) -> Self {
        let f = Self {
            data: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        for (name, bytes) in NAMES.iter().zip(files) {
            std::fs::write(f.data.path().join(name), bytes).unwrap();
        }
        f
    }
    fn path(&self, i: usize) -> PathBuf {
        self.data.path().join(NAMES[i])
    }
    fn run(&self, extra: &[&str]) -> Output {
        let mut args = vec!["--data-dir", self.data.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        run_in(self.cache.path(), &args)
    }
}

fn run_in(cache: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    if !args.contains(&"--threads") {
        cmd.args(["--threads", "1"]);
    }
    cmd.args(args)
        .env(idx_softmax::data::CACHE_ENV, cache)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 1 with exactly one line, `error: <path>: <...want...>`.
#[track_caller]
fn assert_load_error(o: &Output, path: &Path, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(
        o.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    let prefix = format!("error: {}: ", path.display());
    assert!(
        err.starts_with(&prefix),
        "{err:?} does not start with {prefix:?}"
    );
    assert_eq!(
        err.matches(want).count(),
        1,
        "{err:?} should contain {want:?} once"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// ---------------------------------------------------------------------------
// Exit 0.

#[test]
fn tiny_valid_dataset_trains() {
    let f = Fixture::new(&tiny());
    let o = f.run(&["--epochs", "2", "--batch-size", "4", "--lr", "0.5"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(
        out.contains("(20 train, 10 test, 4×4 u8, 3 classes;"),
        "{out}"
    );
    assert!(out.contains("epoch 2/2"), "{out}");
    assert!(out.contains("done     test accuracy"), "{out}");
    assert!(out.contains("weights  sha256 "), "{out}");
}

#[test]
fn tiny_gz_dataset_trains_with_json_output() {
    let files = tiny();
    let f = Fixture::new(&files);
    for (i, bytes) in files.iter().enumerate() {
        std::fs::remove_file(f.path(i)).unwrap();
        std::fs::write(f.data.path().join(format!("{}.gz", NAMES[i])), gzip(bytes)).unwrap();
    }
    let explicit = tempfile::tempdir().unwrap();
    let o = f.run(&["--json", "--cache-dir", explicit.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["train_samples"], 20);
    assert_eq!(v["test_samples"], 10);
    assert_eq!(v["classes"], 3);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    // --cache-dir wins over the environment variable: four cached files,
    // each with its integrity record (NAME.verified).
    assert_eq!(std::fs::read_dir(explicit.path()).unwrap().count(), 8);
    assert_eq!(std::fs::read_dir(f.cache.path()).unwrap().count(), 0);
    // Without --cache-dir, $IDX_SOFTMAX_CACHE_DIR is used.
    let o = f.run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(std::fs::read_dir(f.cache.path()).unwrap().count(), 8);
}

// ---------------------------------------------------------------------------
// Exit 2: flags.

#[test]
fn bad_flags_exit_2() {
    let f = Fixture::new(&tiny());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--batch-size", "0"],
            "invalid value '0' for '--batch-size",
        ),
        (&["--batch-size=-5"], "invalid value '-5' for '--batch-size"),
        // A negative number is a value, so the range rule speaks.
        (
            &["--batch-size", "-5"],
            "invalid value '-5' for '--batch-size <BATCH_SIZE>': must be >= 1, got -5",
        ),
        (
            &["--lr", "0"],
            "invalid value '0' for '--lr <LR>': must be finite and > 0",
        ),
        (
            &["--lr", "nan"],
            "invalid value 'nan' for '--lr <LR>': must be finite and > 0",
        ),
        (&["--lr", "inf"], "invalid value 'inf' for '--lr"),
        (&["--lr=-0.1"], "must be finite and > 0, got -0.1"),
        (
            &["--lr", "fast"],
            "invalid value 'fast' for '--lr <LR>': 'fast' is not a number",
        ),
        (&["--threads", "0"], "invalid value '0' for '--threads"),
        (&["--epochs", "0"], "invalid value '0' for '--epochs"),
        (&["--epochs", "lots"], "invalid value 'lots' for '--epochs"),
        (&["--classes", "1"], "invalid value '1' for '--classes"),
        (
            &["--kernel", "quantum"],
            "invalid value 'quantum' for '--kernel",
        ),
        (&["--frobnicate"], "unexpected argument '--frobnicate'"),
        (&["--data-dir"], "a value is required for '--data-dir"),
    ];
    for (args, want) in cases {
        let o = f.run(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        // The flag at fault is named.
        let flag = args[0].split('=').next().unwrap();
        assert!(err.contains(flag), "{args:?}: {err:?} does not name {flag}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------------------
// Exit 1: bad datasets.

#[test]
fn missing_directory_and_missing_file() {
    let f = Fixture::new(&tiny());
    let missing = f.data.path().join("nowhere");
    let o = run_in(f.cache.path(), &["--data-dir", missing.to_str().unwrap()]);
    assert_load_error(&o, &missing, "data directory does not exist");

    std::fs::remove_file(f.path(1)).unwrap();
    let o = f.run(&[]);
    assert_load_error(
        &o,
        f.data.path(),
        "no training labels file; looked for train-labels-idx1-ubyte, train-labels.idx1-ubyte, train-labels-idx1-ubyte.gz, train-labels.idx1-ubyte.gz",
    );
}

#[test]
fn directory_instead_of_a_file() {
    let f = Fixture::new(&tiny());
    std::fs::remove_file(f.path(2)).unwrap();
    std::fs::create_dir(f.path(2)).unwrap();
    assert_load_error(
        &f.run(&[]),
        &f.path(2),
        "is a directory, expected an IDX file",
    );
}

#[test]
fn bad_files_exit_1_naming_the_file() {
    let valid = tiny();
    let mut bad_magic = valid[0].clone();
    bad_magic[1] = 0x01;
    let truncated = valid[2][..valid[2].len() - 5].to_vec();
    let mut extra = valid[3].clone();
    extra.extend_from_slice(b"\n\n");
    let html = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>".to_vec();
    let count = labels_u8(&[0; 19]);
    let mut out_of_range: Vec<u32> = (0..10).map(|i| i % 3).collect();
    out_of_range[6] = 3;
    let gz_truncated = {
        let g = gzip(&valid[0]);
        g[..g.len() / 2].to_vec()
    };
    let cases: Vec<(usize, Vec<u8>, &str)> = vec![
        (
            0,
            bad_magic,
            "bad magic at offset 0: expected 0x00 0x00, found 0x00 0x01",
        ),
        (
            2,
            truncated,
            "truncated: expected 176 bytes (16-byte header + 10×4×4 u8), found 171",
        ),
        (3, extra, "2 extra bytes at offset 18"),
        (
            1,
            html,
            "looks like an HTML/XML page, not IDX (a failed download?)",
        ),
        (3, Vec::new(), "empty file (0 bytes)"),
        (1, count, "19 labels (dims at offset 4), but"),
        (
            3,
            labels_u8(&out_of_range),
            "label 6 (byte offset 14) is 3, outside 0..3",
        ),
        (0, gz_truncated, "corrupt or truncated gzip stream"),
        (
            2,
            file(ElementType::I16, &[10, 4, 4], &[0.0; 160]),
            "unsupported element type i16",
        ),
    ];
    for (slot, bytes, want) in cases {
        let mut files = valid.clone();
        files[slot] = bytes;
        let f = Fixture::new(&files);
        assert_load_error(&f.run(&[]), &f.path(slot), want);
        // Nothing is left in the cache by a failed load.
        assert_eq!(
            std::fs::read_dir(f.cache.path()).unwrap().count(),
            0,
            "{want}"
        );
    }
}

#[test]
fn huge_claim_is_refused_fast() {
    let mut files = tiny();
    let mut huge = vec![0, 0, 0x08, 3];
    for d in [4_000_000_000u32, 28, 28] {
        huge.extend_from_slice(&d.to_be_bytes());
    }
    huge.resize(4096, 0);
    files[0] = huge.clone();
    let f = Fixture::new(&files);
    let start = Instant::now();
    let o = f.run(&[]);
    let took = start.elapsed();
    assert_load_error(
        &o,
        &f.path(0),
        "truncated: expected 3136000000016 bytes (16-byte header + 4000000000×28×28 u8), found 4096",
    );
    // The whole of stderr, exactly: one line, nothing repeated.
    assert_eq!(
        stderr(&o),
        format!(
            "error: {}: truncated: expected 3136000000016 bytes (16-byte header + 4000000000×28×28 u8), found 4096\n",
            f.path(0).display()
        )
    );
    // Well under the time it would take to read or allocate 3 TB.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The same claim inside a small gzip file.
    std::fs::remove_file(f.path(0)).unwrap();
    let gz = f.data.path().join("train-images-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&huge)).unwrap();
    let start = Instant::now();
    let o = f.run(&[]);
    assert_load_error(&o, &gz, "gzip file cannot hold more than");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn unwritable_cache_dir_is_explained() {
    let files = tiny();
    let f = Fixture::new(&files);
    std::fs::remove_file(f.path(0)).unwrap();
    let gz = f.data.path().join("train-images-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&files[0])).unwrap();
    let blocker = f.cache.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("cache");
    let o = f.run(&["--cache-dir", bad.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot cache the decompressed {}: {} (",
            gz.display(),
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("set --cache-dir (or IDX_SOFTMAX_CACHE_DIR) to a writable directory"));
}

/// IDX_SOFTMAX_KERNEL caps the paths, as on a smaller CPU: the default run
/// takes the capped path, a faster one asked for is refused like one the
/// CPU lacks, f32 data still runs on gemm, and a value that names no path
/// is a usage error naming the variable.
#[test]
fn the_kernel_variable_caps_the_paths() {
    let f = Fixture::new(&tiny());
    let data = f.data.path().to_str().unwrap();
    let run = |cap: &str, extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--data-dir", data, "--json", "--threads", "1"])
            .args(extra)
            .env(idx_softmax::data::CACHE_ENV, f.cache.path())
            .env("IDX_SOFTMAX_KERNEL", cap);
        cmd.output().unwrap()
    };
    let o = run("portable", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kernel"], "portable");
    let o = run("portable", &["--kernel", "avx2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--kernel avx2 is not available on this CPU"),
        "{}",
        stderr(&o)
    );
    // An empty value is unset.
    let o = run("", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run("quantum", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--kernel must be one of gemm, portable, avx2, avx512, got 'quantum' (in $IDX_SOFTMAX_KERNEL)"),
        "{}",
        stderr(&o)
    );
}
