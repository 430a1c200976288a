//! Untrusted input, round 2 (issue 9): each numbered failure of the issue
//! reproduced against the real binary: non-regular inputs and outputs,
//! output probes, two outputs at one path, signals during writes, checkpoint
//! validation in eval/predict, the recorded data directory, broken pipes,
//! the decompression cache's integrity record, SIGBUS on a truncated mapped
//! file, divergence warnings and misleading flags.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use idx_softmax::checkpoint;
use idx_softmax::idx::ElementType;

const BIN: &str = env!("CARGO_BIN_EXE_idx-softmax");

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache")
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env(idx_softmax::dataset::CACHE_ENV, cache())
        .env_remove("IDX_SOFTMAX_KERNEL")
        .stdin(Stdio::null());
    cmd
}

/// Runs `args`, killing the process (and failing) if it takes longer than
/// `limit`: a hang is a failure, not a stuck test run.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(child, limit, args)
}

fn wait_within(mut child: Child, limit: Duration, what: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what:?} hung for {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(args: &[&str]) -> Output {
    run_within(args, Duration::from_secs(120))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Expects exit 1 with exactly one `error:` line holding every needle, and
/// nothing on stdout.
#[track_caller]
fn one_line_error(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
    err
}

/// Expects a usage error (exit 2) whose message holds every needle.
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A synthetic 28×28, 10-class dataset in `dir/data`.
fn synthetic(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_synthetic(&data, 600, 100, 28, 28, 10, seed);
    data
}

/// Trains one epoch on `data`, saving to `model`.
fn train_model(data: &Path, model: &Path, extra: &[&str]) {
    let mut args = vec!["--data-dir", s(data), "--save", s(model), "--threads", "1"];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {} failed", path.display());
}

// 1. Non-regular inputs are refused before they are opened.

#[test]
fn fifo_inputs_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 1);
    let fifo = dir.path().join("model.safetensors");
    mkfifo(&fifo);
    let limit = Duration::from_secs(20);
    let o = run_within(
        &["eval", "--model", s(&fifo), "--data-dir", s(&data)],
        limit,
    );
    one_line_error(&o, &[s(&fifo), "not a regular file (a FIFO)"]);
    let o = run_within(
        &[
            "--resume",
            s(&fifo),
            "--data-dir",
            s(&data),
            "--epochs",
            "2",
        ],
        limit,
    );
    one_line_error(&o, &[s(&fifo), "not a regular file (a FIFO)"]);

    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    let image = dir.path().join("digit.pgm");
    mkfifo(&image);
    let o = run_within(&["predict", "--model", s(&model), s(&image)], limit);
    one_line_error(&o, &[s(&image), "not a regular file (a FIFO)"]);

    // The library's loader too (in a thread, so a hang fails the test).
    let (tx, rx) = std::sync::mpsc::channel();
    let f = fifo.clone();
    std::thread::spawn(move || tx.send(checkpoint::load(&f).map(|_| ())).unwrap());
    let e = rx
        .recv_timeout(limit)
        .expect("checkpoint::load hung on a FIFO")
        .unwrap_err();
    common::assert_one_line(&e, &fifo);
    assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
}

// 2. Non-regular output targets are never replaced.

#[test]
fn non_regular_output_targets_are_refused_and_kept() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 2);
    // A character device node of our own (the same device as /dev/null)
    // where mknod is allowed (root), and a FIFO everywhere.
    let dev = dir.path().join("device");
    let have_dev = Command::new("mknod")
        .args([s(&dev), "c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let mut targets = vec![(fifo.clone(), "a FIFO")];
    if have_dev {
        targets.push((dev.clone(), "a character device"));
    } else {
        // /dev/full exists everywhere; if the check failed it would only be
        // replaced where the directory is writable, which it is not for a
        // normal user.
        targets.push((PathBuf::from("/dev/full"), "a character device"));
    }
    for (target, kind) in &targets {
        for flag in ["--save", "--metrics-json", "--weights-png"] {
            let o = run(&["--data-dir", s(&data), "--threads", "1", flag, s(target)]);
            let err = one_line_error(&o, &[flag, s(target), kind, "not a regular file"]);
            assert!(err.contains("refusing to replace it"), "{err}");
            let ft = std::fs::symlink_metadata(target).unwrap().file_type();
            assert!(
                ft.is_fifo() || ft.is_char_device(),
                "{target:?} was replaced"
            );
        }
    }
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    let o = run(&[
        "eval",
        "--model",
        s(&model),
        "--data-dir",
        s(&data),
        "--weights-png",
        s(&fifo),
    ]);
    one_line_error(&o, &["--weights-png", s(&fifo), "not a regular file"]);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}

/// Runs `script` as root in a private mount namespace (`unshare --mount`),
/// or returns `None` where that is not possible.
fn in_mount_namespace(script: &str, env: &[(&str, &Path)]) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env(idx_softmax::dataset::CACHE_ENV, cache())
        .env("BIN", BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Some(cmd.output().unwrap())
}

#[test]
fn a_full_disk_is_an_error_naming_the_file_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 3);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // A 32 KiB tmpfs holds the old checkpoint (31 KiB) but not a second one
    // beside it: the new write fails with ENOSPC.
    let script = r#"
        mount -t tmpfs -o size=48k tmpfs "$SMALL" || exit 99
        "$BIN" --data-dir "$DATA" --threads 1 --save "$SMALL/m.safetensors" >/dev/null || exit 98
        sha256sum "$SMALL/m.safetensors" > "$SMALL/../before.sum"
        "$BIN" --data-dir "$DATA" --threads 1 --seed 7 --save "$SMALL/m.safetensors" 2> "$SMALL/../err.txt"
        echo "status $?" >> "$SMALL/../err.txt"
        ls -A "$SMALL" > "$SMALL/../listing.txt"
        sha256sum "$SMALL/m.safetensors" > "$SMALL/../after.sum"
        cp "$SMALL/m.safetensors" "$SMALL/../copy.safetensors"
    "#;
    let Some(o) = in_mount_namespace(script, &[("SMALL", &small), ("DATA", &data)]) else {
        common::missing_prerequisite("unshare --mount (a tmpfs to fill up)");
        return;
    };
    if o.status.code() == Some(99) {
        common::missing_prerequisite("mounting a tmpfs in a private mount namespace");
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains("m.safetensors"), "{err}");
    assert!(lines[0].contains("No space left on device"), "{err}");
    assert_eq!(lines[1], "status 1");
    let listing = std::fs::read_to_string(dir.path().join("listing.txt")).unwrap();
    assert_eq!(listing.trim(), "m.safetensors", "a temporary file was left");
    let sum = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(
        sum("before.sum").split(' ').next(),
        sum("after.sum").split(' ').next()
    );
    checkpoint::load(&dir.path().join("copy.safetensors")).unwrap();
}

// 3. Output locations are probed before any work.

#[test]
fn unwritable_output_locations_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 4);
    // /proc refuses new files, even to root.
    for flag in ["--save", "--weights-png", "--metrics-json"] {
        let target = "/proc/idx-softmax-probe.out";
        let o = run(&["--data-dir", s(&data), "--epochs", "50", flag, target]);
        one_line_error(&o, &[flag, target, "cannot create a file in /proc"]);
    }
    // A read-only directory (chmod, or chattr +i for root).
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let Some(_guard) = common::read_only_dir(&ro) else {
        common::missing_prerequisite("a read-only directory (chmod 0555 or chattr +i)");
        return;
    };
    let target = ro.join("w.png");
    let start = Instant::now();
    let o = run(&[
        "--data-dir",
        s(&data),
        "--epochs",
        "1000",
        "--weights-png",
        s(&target),
    ]);
    one_line_error(&o, &["--weights-png", s(&target), "cannot create a file"]);
    // 1000 epochs would take far longer than this.
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(listing(&ro).is_empty());
}

// 4. Two outputs at one path are a usage error naming both flags.

#[test]
fn two_outputs_at_one_path_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 5);
    let a = dir.path().join("a.out");
    let dotted = format!("{}/./a.out", dir.path().display());
    let pairs = [
        ("--save", "--metrics-json"),
        ("--save", "--weights-png"),
        ("--metrics-json", "--weights-png"),
    ];
    for (f1, f2) in pairs {
        let o = run(&["--data-dir", s(&data), f1, s(&a), f2, &dotted]);
        usage_error(&o, &[f1, f2, "the same file"]);
        assert!(!a.exists());
    }
    // Relative spellings of one file collide too.
    let o = command(&[
        "--data-dir",
        s(&data),
        "--save",
        "a.out",
        "--metrics-json",
        "./a.out",
    ])
    .current_dir(dir.path())
    .output()
    .unwrap();
    usage_error(&o, &["--save", "--metrics-json"]);

    // --resume F --save F is the way to continue a run; --resume F with
    // another output at F would destroy the checkpoint.
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    let before = std::fs::read(&model).unwrap();
    let o = run(&[
        "--data-dir",
        s(&data),
        "--resume",
        s(&model),
        "--metrics-json",
        s(&model),
        "--epochs",
        "2",
    ]);
    usage_error(&o, &["--resume", "--metrics-json"]);
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let o = run(&[
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
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // eval --weights-png onto the model itself.
    let o = run(&["eval", "--model", s(&model), "--weights-png", s(&model)]);
    usage_error(&o, &["--model", "--weights-png"]);
    checkpoint::load(&model).unwrap();
}

// 8. A closed pipe ends the process quietly.

/// Runs `args` with stdout into a pipe that is closed after the first line.
fn first_line_then_close(args: &[&str]) -> (String, std::process::ExitStatus, String) {
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        // `out` is dropped here: the read end of the pipe closes.
    }
    let out = wait_within(child, Duration::from_secs(120), args);
    (first, out.status, stderr(&out))
}

#[test]
fn broken_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 8);
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    for args in [
        vec!["--data-dir", s(&data), "--epochs", "30", "--threads", "1"],
        vec!["eval", "--model", s(&model), "--data-dir", s(&data)],
    ] {
        let (first, status, err) = first_line_then_close(&args);
        assert!(
            first.starts_with("data ") || first.starts_with("model "),
            "{first}"
        );
        assert!(err.is_empty(), "{args:?}: {err}");
        // Killed by SIGPIPE (a shell shows 141), as standard tools end, or a
        // normal exit if all the output fitted in the pipe first.
        assert!(
            status.signal() == Some(libc::SIGPIPE) || status.code() == Some(0),
            "{args:?}: {status:?}"
        );
    }
}

// 12. Flags that mislead.

#[test]
fn fused_kernel_on_float_data_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("f32");
    std::fs::create_dir(&data).unwrap();
    let (n, k) = (40, 6);
    let images: Vec<f64> = (0..n * k).map(|i| (i % 7) as f64 / 7.0).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    let imgs = common::file(ElementType::F32, &[n, 2, 3], &images);
    let labs = common::labels_u8(&labels);
    for (name, bytes) in common::NAMES.iter().zip([&imgs, &labs, &imgs, &labs]) {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    for kernel in ["avx512", "avx2", "portable"] {
        let o = run(&["--data-dir", s(&data), "--kernel", kernel]);
        usage_error(&o, &["--kernel", kernel, "u8", "f32"]);
    }
    let o = run(&["--data-dir", s(&data), "--kernel", "gemm", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = dir.path().join("m.safetensors");
    let o = run(&["--data-dir", s(&data), "--save", s(&model)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "eval",
        "--model",
        s(&model),
        "--data-dir",
        s(&data),
        "--kernel",
        "portable",
    ]);
    usage_error(&o, &["--kernel", "portable", "f32"]);
}

#[test]
fn negative_numbers_meet_the_range_rule() {
    for (flag, want) in [
        ("--lr", "must be finite and > 0"),
        ("--weight-decay", "must be finite and >= 0"),
        ("--momentum", "must be in [0, 1)"),
        ("--val-split", "must be in [0, 1)"),
        ("--epochs", "is not in 1.."),
        ("--batch-size", "is not in 1.."),
        ("--threads", "is not in 1..=1024"),
        ("--classes", "is not in 2.."),
    ] {
        let o = run(&[flag, "-1"]);
        let err = usage_error(&o, &[flag, want]);
        assert!(!err.contains("unexpected argument"), "{err}");
    }
    let o = run(&["predict", "--model", "m", "--top", "-3"]);
    usage_error(&o, &["--top", "is not in 1.."]);
    let o = run(&["predict", "--model", "m", "--test-index", "-3"]);
    usage_error(&o, &["--test-index", "-3"]);
}

#[test]
fn the_report_says_how_many_workers_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 12);
    let cpus = std::thread::available_parallelism().unwrap().get();
    let asked = cpus + 3;
    let threads = asked.to_string();
    let o = run(&[
        "--data-dir",
        s(&data),
        "--threads",
        &threads,
        "--kernel",
        "portable",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().nth(1).unwrap();
    assert!(
        header.contains(&format!("{cpus} worker(s) ({asked} threads asked for")),
        "{header}"
    );
    assert!(!header.contains(&format!("{asked} thread(s)")), "{header}");
    let o = run(&[
        "--data-dir",
        s(&data),
        "--threads",
        &threads,
        "--kernel",
        "portable",
        "--oversubscribe",
    ]);
    let out = stdout(&o);
    assert!(out.contains(&format!("{asked} worker(s), kernel")), "{out}");
    let o = run(&[
        "--data-dir",
        s(&data),
        "--threads",
        "1",
        "--kernel",
        "portable",
        "--json",
    ]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["workers"], 1);
}
