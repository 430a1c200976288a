//! Untrusted input, round 2 (issue 9): each numbered failure of the issue
//! reproduced against the real binary: non-regular inputs and outputs,
//! output probes, two outputs at one path, signals during writes, checkpoint
//! validation in eval/predict, the recorded data directory, broken pipes,
//! the decompression cache's integrity record, SIGBUS on a truncated mapped
//! file, divergence warnings and misleading flags.

mod common;
use common::{
    bin_cache as cache, listing, path_str as s, stderr, stdout, synthetic_dir as synthetic,
};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use idx_softmax::checkpoint;
use idx_softmax::data::idx::ElementType;

const BIN: &str = env!("CARGO_BIN_EXE_idx-softmax");

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env(idx_softmax::data::CACHE_ENV, cache())
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
        .env(idx_softmax::data::CACHE_ENV, cache())
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
        // Status 141 (128 + SIGPIPE), as standard tools end, or a normal
        // exit if all the output fitted in the pipe first.
        assert!(
            matches!(status.code(), Some(141) | Some(0)),
            "{args:?}: {status:?} {:?}",
            status.signal()
        );
    }
}

// 12. Flags that mislead.

/// Every kernel path this CPU has trains and evaluates f32 data (the fused
/// paths read the f32 rows in place); one it lacks is refused for that.
#[test]
fn every_kernel_path_serves_float_data() {
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
    for kernel in ["avx512", "avx2", "portable", "gemm"] {
        let o = run(&["--data-dir", s(&data), "--kernel", kernel, "--json"]);
        // A path this CPU lacks (or IDX_SOFTMAX_KERNEL caps away) is
        // refused for that.
        let available = kernel
            .parse::<idx_softmax::kernels::KernelPath>()
            .unwrap()
            .is_available();
        if available {
            assert!(o.status.success(), "{kernel}: {}", stderr(&o));
            let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
            assert_eq!(v["kernel"], kernel);
        } else {
            usage_error(&o, &["--kernel", kernel, "not available on this CPU"]);
        }
    }
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
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn negative_numbers_meet_the_range_rule() {
    for (flag, want) in [
        ("--lr", "must be finite and > 0"),
        ("--weight-decay", "must be finite and >= 0"),
        ("--momentum", "must be in [0, 1)"),
        ("--val-split", "must be in [0, 1)"),
        ("--epochs", "must be >= 1, got -1"),
        ("--batch-size", "must be >= 1, got -1"),
        ("--threads", "must be in 1..=1024, got -1"),
        ("--classes", "must be in 2..=65536, got -1"),
    ] {
        let o = run(&[flag, "-1"]);
        let err = usage_error(&o, &[flag, want]);
        assert!(!err.contains("unexpected argument"), "{err}");
    }
    // Exponent forms too, quoted as given (issue 17).
    let o = run(&["--weight-decay", "-1e-4"]);
    usage_error(
        &o,
        &[
            "invalid value '-1e-4' for '--weight-decay",
            "must be finite and >= 0, got -1e-4",
        ],
    );
    let o = run(&["--lr", "-1e-3"]);
    usage_error(
        &o,
        &[
            "invalid value '-1e-3' for '--lr",
            "must be finite and > 0, got -1e-3",
        ],
    );
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
        header.contains(&format!(
            "{cpus} worker(s) (--threads {asked} capped at {cpus} CPU(s))"
        )),
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

// 5. A signal during a run leaves no temporary file; the last checkpoint
// stays valid and resumable.

/// The hidden temporary files in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

/// Waits until `path` exists (the first epoch was saved), failing if the
/// child ends or it takes too long.
fn wait_for_file(child: &mut Child, path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended early: {status:?}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {path:?} after 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigint_and_sigterm_leave_no_temporary_file() {
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(dir.path(), 50 + sig as u64);
        let model = dir.path().join("m.safetensors");
        let metrics = dir.path().join("metrics.jsonl");
        let mut child = command(&[
            "--data-dir",
            s(&data),
            "--epochs",
            "1000000",
            "--threads",
            "1",
            "--save",
            s(&model),
            "--metrics-json",
            s(&metrics),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        wait_for_file(&mut child, &model);
        // Aim for the middle of a write: signal as soon as a temporary file
        // shows up (or after a while, between writes, if none is seen).
        let start = Instant::now();
        while temp_files(dir.path()).is_empty() && start.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = wait_within(child, Duration::from_secs(30), &["signalled run"]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert!(
            temp_files(dir.path()).is_empty(),
            "{:?}",
            listing(dir.path())
        );
        let ck = checkpoint::load(&model).unwrap();
        let done: usize = ck.metadata["epochs_done"].parse().unwrap();
        assert!(done >= 1);
        // Resumable: one more epoch from there.
        let more = (done + 1).to_string();
        let o = run(&[
            "--data-dir",
            s(&data),
            "--resume",
            s(&model),
            "--save",
            s(&model),
            "--epochs",
            &more,
            "--threads",
            "1",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let ck = checkpoint::load(&model).unwrap();
        assert_eq!(ck.metadata["epochs_done"], more);
    }
}

#[test]
fn a_stale_temporary_file_is_removed_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 55);
    let model = dir.path().join("m.safetensors");
    // What a SIGKILL in the middle of a write leaves (both name styles).
    let stale = [".m.safetensors.0123abcd.tmp", ".m.safetensors.Ab3xYz.tmp"];
    for name in stale {
        std::fs::write(dir.path().join(name), b"half a checkpoint").unwrap();
    }
    // Files of other targets, or not ours, are left alone.
    let others = [".other.safetensors.0123abcd.tmp", ".m.safetensors.keep"];
    for name in others {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    train_model(&data, &model, &[]);
    let left = listing(dir.path());
    for name in stale {
        assert!(!left.contains(&name.to_string()), "{left:?}");
    }
    for name in others {
        assert!(left.contains(&name.to_string()), "{left:?}");
    }
}

// 6. eval and predict validate the checkpoint as --resume does.

#[test]
fn eval_and_predict_refuse_metadata_that_disagrees_with_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 60);
    let good = dir.path().join("m.safetensors");
    train_model(&data, &good, &[]);
    let ck = checkpoint::load(&good).unwrap();
    for (key, value, want) in [
        ("classes", "9", "the metadata says classes = 9"),
        ("features", "783", "the metadata says features = 783"),
        (
            "sample_shape",
            "27x28",
            "\"sample_shape\" is 27x28, but the network takes 784 features",
        ),
        ("classes", "ten", "metadata \"classes\" is \"ten\""),
    ] {
        let mut md = ck.metadata.clone();
        md.insert(key.into(), value.into());
        let bad = dir.path().join(format!("bad-{key}-{value}.safetensors"));
        checkpoint::save(&bad, &ck.network, &[], &md).unwrap();
        let o = run(&["eval", "--model", s(&bad), "--data-dir", s(&data)]);
        one_line_error(&o, &[s(&bad), want]);
        let o = run(&[
            "predict",
            "--model",
            s(&bad),
            "--data-dir",
            s(&data),
            "--test-index",
            "0",
        ]);
        one_line_error(&o, &[s(&bad), want]);
    }
}

#[test]
fn a_model_refuses_data_of_another_sample_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 61);
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    // 14×56 samples: the same 784 features, another shape.
    let other = dir.path().join("wide");
    std::fs::create_dir(&other).unwrap();
    common::write_synthetic(&other, 100, 50, 14, 56, 10, 62);
    let want = ["the model was trained on samples of 28x28", "14x56"];
    let o = run(&["eval", "--model", s(&model), "--data-dir", s(&other)]);
    one_line_error(&o, &want);
    let o = run(&[
        "predict",
        "--model",
        s(&model),
        "--data-dir",
        s(&other),
        "--test-index",
        "0",
    ]);
    one_line_error(&o, &want);
    let o = run(&[
        "--resume",
        s(&model),
        "--data-dir",
        s(&other),
        "--epochs",
        "2",
    ]);
    one_line_error(&o, &["28x28", "14x56"]);
}

/// `ck`'s bytes with the header rewritten by `edit` (padded to 8 bytes).
fn with_header(file: &Path, edit: impl Fn(&str) -> String) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
    let mut new = edit(header).into_bytes();
    new.resize(new.len().next_multiple_of(8), b' ');
    let mut out = (new.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn duplicate_tensor_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 63);
    let model = dir.path().join("m.safetensors");
    train_model(&data, &model, &[]);
    let header: Value = {
        let bytes = std::fs::read(&model).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        serde_json::from_slice(&bytes[8..8 + n]).unwrap()
    };
    let weight = header["weight"].to_string();
    let bias = header["bias"].to_string();
    // A second "weight" entry, identical: a JSON map would keep one and load
    // the file as if nothing were wrong.
    let dup_tensor = dir.path().join("dup.safetensors");
    std::fs::write(
        &dup_tensor,
        with_header(&model, |h| {
            format!("{},\"weight\":{weight}}}", h.strip_suffix('}').unwrap())
        }),
    )
    .unwrap();
    // The same with a bias hidden behind a later one.
    let dup_bias = dir.path().join("dup-bias.safetensors");
    std::fs::write(
        &dup_bias,
        with_header(&model, |h| {
            format!("{{\"bias\":{bias},{}", h.strip_prefix('{').unwrap())
        }),
    )
    .unwrap();
    for (file, name) in [(&dup_tensor, "weight"), (&dup_bias, "bias")] {
        let Err(e) = checkpoint::load(file) else {
            panic!("{} loaded", file.display());
        };
        common::assert_one_line(&e, file);
        let want = format!("tensor \"{name}\" is given twice");
        assert!(e.to_string().contains(&want), "{e}");
        let o = run(&["eval", "--model", s(file), "--data-dir", s(&data)]);
        one_line_error(&o, &[s(file), &want]);
        let o = run(&[
            "predict",
            "--model",
            s(file),
            "--test-index",
            "0",
            "--data-dir",
            s(&data),
        ]);
        one_line_error(&o, &[s(file), &want]);
    }
    // And a metadata key given twice.
    let dup_meta = dir.path().join("dup-meta.safetensors");
    std::fs::write(
        &dup_meta,
        with_header(&model, |h| {
            h.replacen("\"classes\":", "\"classes\":\"3\",\"classes\":", 1)
        }),
    )
    .unwrap();
    let Err(e) = checkpoint::load(&dup_meta) else {
        panic!("{} loaded", dup_meta.display());
    };
    let e = e.to_string();
    assert!(e.contains("metadata key \"classes\" is given twice"), "{e}");
}

// 7. The checkpoint's data directory is used, and a different one noted.

#[test]
fn eval_predict_and_resume_use_the_data_the_model_was_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 70);
    let model = dir.path().join("m.safetensors");
    let o = run(&[
        "--data-dir",
        s(&data),
        "--save",
        s(&model),
        "--threads",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let canonical = std::fs::canonicalize(&data).unwrap();
    let ck = checkpoint::load(&model).unwrap();
    assert_eq!(ck.metadata["data_dir"], canonical.display().to_string());

    // eval without --data-dir: the model's own data, not the bundled MNIST.
    let o = run(&["eval", "--model", s(&model), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["data_dir"], canonical.display().to_string());
    assert_eq!(v["data_from_model"], true);
    assert_eq!(v["total"], 100);
    assert_eq!(v["accuracy"], trained["test_accuracy"]);
    let o = run(&["eval", "--model", s(&model)]);
    assert!(
        stdout(&o).contains("; the data the model was trained on)"),
        "{}",
        stdout(&o)
    );

    // predict --test-index shows that data's labels.
    let labels = common::load(&data).test.labels.to_vec();
    let o = run(&[
        "predict",
        "--model",
        s(&model),
        "--test-index",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["label"], labels[3]);

    // --resume continues on it.
    let o = run(&[
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
    assert!(
        stdout(&o).contains("; the data the model was trained on)"),
        "{}",
        stdout(&o)
    );

    // Another --data-dir is noted on stderr.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    common::write_synthetic(&other, 100, 50, 28, 28, 10, 71);
    let o = run(&["eval", "--model", s(&model), "--data-dir", s(&other)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("note: "), "{err}");
    assert!(
        err.contains("was trained on") && err.contains(s(&other)),
        "{err}"
    );

    // Data of another class count is refused (labels beyond the model's).
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    common::write_synthetic(&many, 100, 50, 28, 28, 12, 72);
    let o = run(&["eval", "--model", s(&model), "--data-dir", s(&many)]);
    one_line_error(&o, &["the model has 10 classes"]);

    // The recorded directory gone: say so, do not fall back to MNIST.
    std::fs::remove_dir_all(&data).unwrap();
    let o = run(&["eval", "--model", s(&model)]);
    one_line_error(&o, &[s(&model), "was trained on", "pass --data-dir"]);
}

// 10. SIGBUS on a truncated mapped file: one line, exit 1, no partial output.

#[test]
fn a_mapped_file_truncated_during_training_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw");
    std::fs::create_dir(&data).unwrap();
    common::raw_mnist(&data);
    let images = data.join("train-images-idx3-ubyte");
    let model = dir.path().join("m.safetensors");
    let mut child = command(&[
        "--data-dir",
        s(&data),
        "--epochs",
        "100000",
        "--threads",
        "1",
        "--save",
        s(&model),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_file(&mut child, &model);
    // Another process cuts the file: the pages past the new end vanish from
    // the mapping.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&images)
        .unwrap()
        .set_len(16 + 784 * 10)
        .unwrap();
    let out = wait_within(child, Duration::from_secs(60), &["truncated run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {}: ", images.display())),
        "{err}"
    );
    assert!(err.contains("shrank while it was memory-mapped"), "{err}");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        listing(dir.path())
    );
    checkpoint::load(&model).unwrap();
}

// 11. Divergence is not silent.

#[test]
fn a_diverged_run_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 110);
    let o = run(&[
        "--data-dir",
        s(&data),
        "--lr",
        "1e30",
        "--json",
        "--epochs",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warning: epoch 1: the training loss "),
        "{err}"
    );
    assert!(err.contains("diverged; try a smaller --lr"), "{err}");
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(
        format!("warning: {}", w[0].as_str().unwrap()),
        err.trim_end()
    );
    // A sane run has none.
    let o = run(&["--data-dir", s(&data), "--json"]);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert!(idx_softmax::metrics::diverged(231.0, 10));
    assert!(!idx_softmax::metrics::diverged(230.0, 10));
}
