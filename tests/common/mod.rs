//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod mlp;

use std::path::{Path, PathBuf};

use idx_softmax::data::idx::{self, ElementType, IdxHeader};
use idx_softmax::data::{Dataset, GzCache, LoadOptions};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A decompression cache private to the test binaries (under target/).
pub fn test_cache() -> GzCache {
    GzCache::at(Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache"))
}

/// The bundled MNIST, loaded once per test binary.
pub fn mnist() -> &'static Dataset {
    static DATA: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let opts = LoadOptions {
            cache: test_cache(),
            classes: None,
        };
        Dataset::load(Path::new(idx_softmax::data::BUNDLED_MNIST), &opts)
            .expect("bundled MNIST loads")
    })
}

pub fn write_idx(path: &Path, ty: ElementType, dims: &[usize], payload: &[u8]) {
    let header = IdxHeader {
        element_type: ty,
        dims: dims.to_vec(),
    };
    std::fs::write(path, idx::write(&header, payload)).unwrap();
}

/// Writes a learnable synthetic u8 dataset: each class has a random
/// prototype, samples are the prototype plus noise.
pub fn write_synthetic(
    dir: &Path,
    n_train: usize,
    n_test: usize,
    h: usize,
    w: usize,
    classes: usize,
    seed: u64,
) -> PathBuf {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let k = h * w;
    let protos: Vec<Vec<u8>> = (0..classes)
        .map(|_| (0..k).map(|_| rng.random()).collect())
        .collect();
    let mut make = |n: usize| {
        let mut images = Vec::with_capacity(n * k);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let y = rng.random_range(0..classes);
            labels.push(y as u8);
            for &p in &protos[y] {
                let noise: i16 = rng.random_range(-60..=60);
                images.push((p as i16 + noise).clamp(0, 255) as u8);
            }
        }
        (images, labels)
    };
    let (tri, trl) = make(n_train);
    let (tei, tel) = make(n_test);
    write_idx(
        &dir.join("train-images-idx3-ubyte"),
        ElementType::U8,
        &[n_train, h, w],
        &tri,
    );
    write_idx(
        &dir.join("train-labels-idx1-ubyte"),
        ElementType::U8,
        &[n_train],
        &trl,
    );
    write_idx(
        &dir.join("t10k-images-idx3-ubyte"),
        ElementType::U8,
        &[n_test, h, w],
        &tei,
    );
    write_idx(
        &dir.join("t10k-labels-idx1-ubyte"),
        ElementType::U8,
        &[n_test],
        &tel,
    );
    dir.to_owned()
}

pub fn load(dir: &Path) -> Dataset {
    let opts = LoadOptions {
        cache: test_cache(),
        classes: None,
    };
    Dataset::load(dir, &opts).unwrap()
}

pub fn random_u8(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

pub fn random_f32(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The four files of a dataset, in the order train images, train labels,
/// test images, test labels.
pub const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A complete IDX file of type `ty` holding `values`.
pub fn file(ty: ElementType, dims: &[usize], values: &[f64]) -> Vec<u8> {
    idx::write(
        &IdxHeader {
            element_type: ty,
            dims: dims.to_vec(),
        },
        &idx::encode_f64(ty, values),
    )
}

/// A 1-D u8 label file.
pub fn labels_u8(labels: &[u32]) -> Vec<u8> {
    let v: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
    file(ElementType::U8, &[labels.len()], &v)
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Rows `rows` of the row-major `n × k` u8 matrix `images`, gathered in
/// order as f64 and multiplied by `scale`: the input of the f64 references.
pub fn gather_f64(images: &[u8], k: usize, rows: &[u32], scale: f64) -> Vec<f64> {
    rows.iter()
        .flat_map(|&r| {
            images[r as usize * k..(r as usize + 1) * k]
                .iter()
                .map(move |&v| v as f64 * scale)
        })
        .collect()
}

/// Asserts an error message is one line and starts with `path`; returns it.
/// The weights digest of the default run (the notebook's epoch on MNIST,
/// seed 42) on each kernel path: the bits are promised per path, and each
/// path rounds differently. Every path gives 0.9032.
pub fn default_digest(kernel: idx_softmax::kernels::KernelPath) -> &'static str {
    use idx_softmax::kernels::KernelPath;
    match kernel {
        KernelPath::Avx512 => "66072fba588cb2cc85487f698f4beecd4fb4114db070231ad499ef55bd3af66e",
        KernelPath::Avx2 => "cf281c1a6c9bcbfbbc95ecf402af8688573dc928ad07199e476939f113dc8530",
        KernelPath::Portable => "b0651d977e0a76e173df9dc3d002942df3f9559034655319edcb02348808740c",
        KernelPath::Gemm => "813f7e4baf919663a917ae98fd4d17b4e82c51839a61fa6297df89890d4b3dd8",
    }
}

/// The weights digest of the default run on MNIST as f32 pixels (`x /
/// 255` in f32: Python's float32 input), per kernel path: the fused paths
/// read the f32 rows in place, and round differently from the u8 run.
pub fn default_f32_digest(kernel: idx_softmax::kernels::KernelPath) -> &'static str {
    use idx_softmax::kernels::KernelPath;
    match kernel {
        KernelPath::Avx512 => "1d3a0f58360d1e589589c192d602861e833f89817f1b86b4bf6a16ae8e8a8fa3",
        KernelPath::Avx2 => "52635e46b8728f89a411f138ed08427bc3a04b1dfa06cbbf7d5f855d5e294eaa",
        KernelPath::Portable => "2fabdc62a8f973f2689d188976d2f9f6aa1feb7cc5d616bab38d3e57eb1169d3",
        KernelPath::Gemm => "2c93f2938050a79dd36c0ec4cee1c6f0b45f0a1d22ce20d11ff8852203a01932",
    }
}

/// A command line's name for a setting (`--batch-size`), for checking a
/// library error's wording as the CLI shows it.
pub fn flag(s: idx_softmax::setting::Setting) -> String {
    format!("--{}", s.key().replace('_', "-"))
}

pub fn assert_one_line(e: &impl std::fmt::Display, path: &Path) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    assert!(
        msg.starts_with(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
    msg
}

/// The training and test splits of `data` as the engine's samples.
pub fn samples(
    data: &idx_softmax::data::Dataset,
) -> (
    idx_softmax::data::samples::Samples<'_>,
    idx_softmax::data::samples::Samples<'_>,
) {
    (
        data.train.samples(data.classes).expect("train samples"),
        data.test.samples(data.classes).expect("test samples"),
    )
}

/// The bundled MNIST's training and test samples, built once.
pub fn mnist_samples() -> &'static (
    idx_softmax::data::samples::Samples<'static>,
    idx_softmax::data::samples::Samples<'static>,
) {
    static S: std::sync::OnceLock<(
        idx_softmax::data::samples::Samples<'static>,
        idx_softmax::data::samples::Samples<'static>,
    )> = std::sync::OnceLock::new();
    S.get_or_init(|| samples(mnist()))
}

/// A softmax-regression network (sizes `[k, c]`) holding `wt` (C × K,
/// `nn.Linear.weight`) and `bias` (C): what `Model { wt, bias }` was.
pub fn softmax_net(k: usize, c: usize, wt: &[f32], bias: &[f32]) -> idx_softmax::nn::Network {
    let mut net = idx_softmax::nn::Network::zeros(&[k, c]).unwrap();
    net.params_mut().get_mut(0).copy_from_slice(wt);
    net.params_mut().get_mut(1).copy_from_slice(bias);
    net
}

/// The Python interpreter for the interop checks (`$PYTHON`, else
/// `python3`), if it imports numpy and safetensors. Elsewhere the check is
/// skipped with a note; under `CI=true` a missing module is a failure, so
/// CI never passes by skipping.
pub fn python() -> Option<String> {
    let exe = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&exe)
        .args(["-c", "import safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(exe);
    }
    missing_prerequisite(&format!(
        "`{exe} -c \"import safetensors, numpy\"` failed (pip install safetensors numpy to run this check)"
    ));
    None
}
/// Whether the tests run under CI (`CI=true`), where a missing
/// prerequisite is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A prerequisite of a test is missing: under CI this fails the test;
/// elsewhere it prints why the test checks nothing, and the caller returns.
#[track_caller]
pub fn missing_prerequisite(what: &str) {
    if in_ci() {
        panic!("prerequisite missing under CI=true: {what}");
    }
    eprintln!("skipped (not under CI): {what}");
}

/// Makes `dir` read-only in a way that binds root too, until the guard is
/// dropped: `chmod 0555` where permissions are enforced (not root), else
/// the immutable attribute (`chattr +i`, which root cannot bypass without
/// removing it first). `None` when neither works here.
pub fn read_only_dir(dir: &Path) -> Option<ReadOnlyDir> {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join(".probe-writable");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(&probe, b"").is_err() {
        return Some(ReadOnlyDir {
            dir: dir.to_owned(),
            immutable: false,
        });
    }
    let _ = std::fs::remove_file(&probe);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let made = std::process::Command::new("chattr")
        .arg("+i")
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success());
    let guard = ReadOnlyDir {
        dir: dir.to_owned(),
        immutable: made,
    };
    if made && std::fs::write(&probe, b"").is_err() {
        return Some(guard);
    }
    drop(guard);
    let _ = std::fs::remove_file(&probe);
    None
}

/// Undoes [`read_only_dir`] when dropped.
pub struct ReadOnlyDir {
    dir: PathBuf,
    immutable: bool,
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.dir)
                .status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

/// The bundled MNIST, decompressed into `dir` as raw files (which the
/// loader maps in place, with no cache copy).
pub fn raw_mnist(dir: &Path) {
    use std::io::Read;
    for name in NAMES {
        let gz = Path::new(idx_softmax::data::BUNDLED_MNIST).join(format!("{name}.gz"));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        std::fs::write(dir.join(name), raw).unwrap();
    }
}

/// A PNG chunk: length, type, data, CRC-32 (for hand-built PNGs the
/// reference encoder will not write: interlaced files, size claims).
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// u8 samples as f32 samples holding `map(pixel)`, with the same labels
/// and shape: an f32 dataset to train on every path.
pub fn f32_samples(
    s: &idx_softmax::data::samples::Samples<'_>,
    map: impl Fn(u8) -> f32,
) -> idx_softmax::data::samples::Samples<'static> {
    use idx_softmax::data::{LabelValues, Pixels, Samples};
    use std::borrow::Cow;
    let px: Vec<f32> = s
        .as_u8()
        .expect("u8 samples")
        .iter()
        .map(|&v| map(v))
        .collect();
    let labels: Vec<u32> = (0..s.len()).map(|i| s.label(i)).collect();
    Samples::new(
        Pixels::F32(Cow::Owned(px)),
        LabelValues::U32(Cow::Owned(labels)),
        s.features(),
        s.classes(),
        s.sample_shape().to_vec(),
    )
    .unwrap()
}

/// A synthetic f32 pixel: `(v − 100) / 64`, exact in f32, negative too.
pub fn centred(v: u8) -> f32 {
    (f32::from(v) - 100.0) / 64.0
}

// ---- Running the binary ------------------------------------------------

/// The decompression cache the integration tests share (one per target
/// directory, so a test run decompresses MNIST once).
pub fn bin_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gz-cache")
}

/// Runs the binary with `args` and the shared cache; its output.
pub fn bin(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_idx-softmax"))
        .args(args)
        .env("IDX_SOFTMAX_CACHE_DIR", bin_cache())
        .output()
        .expect("the binary runs")
}

/// [`bin`], which must succeed; its stdout.
pub fn bin_ok(args: &[&str]) -> String {
    let out = bin(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON object on the last line of `s` (a `--json` report).
pub fn last_json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap()).unwrap()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `p` as a `&str` argument.
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A synthetic 28×28, 10-class dataset in `dir/data` (raw files).
pub fn synthetic_dir(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    write_synthetic(&data, 600, 100, 28, 28, 10, seed);
    data
}
