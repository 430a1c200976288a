//! ONNX export checked by the reference implementations: three models
//! built with `idx_softmax::onnx` (softmax regression, an MLP, a small CNN,
//! plus the MLP at a newer opset) are written with their weights as `.npy`
//! files and a batch of inputs, and `tests/python/onnx_check.py` runs the
//! `onnx` checker, strict shape inference and onnxruntime on them, comparing
//! onnxruntime's outputs with a NumPy forward pass of the same weights.
//!
//! Needs `$PYTHON` (default `python3`) with `onnx`, `onnxruntime` and
//! `numpy`; without them the test says so and checks only that the models
//! build (under `CI=true` it fails instead). `ONNX_MODELS_DIR=dir` keeps the
//! files there instead of in a temporary directory.

mod common;

use std::path::Path;
use std::process::Command;

use idx_softmax::onnx::{Dim, ModelBuilder, DEFAULT_OPSET};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const CLASSES: i64 = 10;
const FEATURES: i64 = 784;
const BATCH: usize = 5;
const CLASS_NAMES: &str = r#"["0","1","2","3","4","5","6","7","8","9"]"#;

/// A model under construction and the tensors to write beside it.
struct Model {
    /// The directory name, and the architecture `onnx_check.py` rebuilds in
    /// NumPy.
    dir: &'static str,
    arch: &'static str,
    builder: ModelBuilder,
    tensors: Vec<(String, Vec<i64>, Vec<f32>)>,
    metadata: Vec<(&'static str, String)>,
    rng: Xoshiro256PlusPlus,
}

impl Model {
    fn new(dir: &'static str, arch: &'static str, opset: i64, seed: u64) -> Self {
        let mut builder = ModelBuilder::new("idx-softmax", env!("CARGO_PKG_VERSION"), opset);
        builder.input("input", &[Dim::Param("batch"), Dim::Value(FEATURES)]);
        Self {
            dir,
            arch,
            builder,
            tensors: Vec::new(),
            metadata: Vec::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// `{prefix}.weight` (PyTorch's nn.Sequential names; `weight` with no
    /// prefix), of variance 1/fan_in (uniform) so that activations keep
    /// their scale through the layers, and `{prefix}.bias` in ±0.1.
    fn layer(&mut self, prefix: &str, dims: &[i64]) -> (String, String) {
        let fan_in: i64 = dims[1..].iter().product();
        let bound = (3.0 / fan_in as f32).sqrt();
        let n = dims.iter().product::<i64>() as usize;
        let weight = (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        let bias = (0..dims[0])
            .map(|_| self.rng.random_range(-0.1..0.1))
            .collect();
        let name = |t: &str| match prefix {
            "" => t.to_owned(),
            p => format!("{p}.{t}"),
        };
        let (w, b) = (name("weight"), name("bias"));
        self.param(&w, dims, weight);
        self.param(&b, &dims[..1], bias);
        (w, b)
    }

    fn param(&mut self, name: &str, dims: &[i64], data: Vec<f32>) {
        self.builder.initializer(name, dims, &data);
        self.tensors.push((name.to_owned(), dims.to_vec(), data));
    }

    fn linear(&mut self, name: &str, x: &str, out: &str, dims: [i64; 2]) {
        let (w, b) = self.layer(name, &dims);
        self.builder.gemm(x, &w, &b, out);
    }

    /// The exporter's signature: `logits` from the last layer, then
    /// `probabilities`, listed first.
    fn finish(mut self, logits_from: &str, layers: &str) -> Self {
        self.builder.softmax(logits_from, "probabilities");
        let dims = [Dim::Param("batch"), Dim::Value(CLASSES)];
        self.builder.output("probabilities", &dims);
        self.builder.output("logits", &dims);
        self.metadata.push(("class_names", CLASS_NAMES.into()));
        self.metadata.push(("layers", layers.into()));
        for (k, v) in &self.metadata {
            self.builder.metadata(k, v);
        }
        self
    }

    fn write(&self, root: &Path) -> Vec<u8> {
        let dir = root.join(self.dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = self.builder.to_bytes().unwrap();
        std::fs::write(dir.join("model.onnx"), &bytes).unwrap();
        for (name, dims, data) in &self.tensors {
            write_npy(&dir.join(format!("{name}.npy")), dims, data);
        }
        let meta: serde_json::Map<_, _> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect();
        std::fs::write(
            dir.join("metadata.json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        bytes
    }
}

fn softmax_regression() -> Model {
    let mut m = Model::new("softmax", "softmax", DEFAULT_OPSET, 1);
    // The trainer's checkpoint names a softmax regression's tensors
    // `weight` and `bias`.
    let (w, b) = m.layer("", &[CLASSES, FEATURES]);
    m.builder.gemm("input", &w, &b, "logits");
    m.finish("logits", "784-10")
}

/// nn.Sequential(Linear(784, 32), ReLU(), Linear(32, 10)), at `opset`.
fn mlp(dir: &'static str, opset: i64) -> Model {
    let mut m = Model::new(dir, "mlp", opset, 2);
    m.linear("0", "input", "hidden", [32, FEATURES]);
    m.builder.relu("hidden", "hidden_relu");
    m.linear("2", "hidden_relu", "logits", [CLASSES, 32]);
    m.finish("logits", "784-32-10")
}

/// LeNet-style: nn.Sequential(Conv2d(1, 6, 5, padding=2), ReLU(),
/// MaxPool2d(2), Conv2d(6, 16, 5, padding=2), ReLU(), MaxPool2d(2),
/// Flatten(), Linear(784, 120), ReLU(), Linear(120, 84), ReLU(),
/// Linear(84, 10)) on the flat input reshaped to [batch, 1, 28, 28].
fn cnn() -> Model {
    let mut m = Model::new("cnn", "cnn", DEFAULT_OPSET, 3);
    m.builder.reshape("input", "image", &[-1, 1, 28, 28]);
    let (w, b) = m.layer("0", &[6, 1, 5, 5]);
    m.builder.conv("image", &w, &b, "conv1", [5, 5], 2);
    m.builder.relu("conv1", "relu1");
    m.builder.max_pool("relu1", "pool1", 2);
    let (w, b) = m.layer("3", &[16, 6, 5, 5]);
    m.builder.conv("pool1", &w, &b, "conv2", [5, 5], 2);
    m.builder.relu("conv2", "relu2");
    m.builder.max_pool("relu2", "pool2", 2);
    m.builder.flatten("pool2", "features");
    m.linear("7", "features", "fc1", [120, 784]);
    m.builder.relu("fc1", "fc1_relu");
    m.linear("9", "fc1_relu", "fc2", [84, 120]);
    m.builder.relu("fc2", "fc2_relu");
    m.linear("11", "fc2_relu", "logits", [CLASSES, 84]);
    m.finish(
        "logits",
        "1x28x28-conv6k5p2-relu-maxpool2-conv16k5p2-relu-maxpool2-flatten-784-120-84-10",
    )
}

/// A little-endian float32 array in NumPy's `.npy` format (version 1.0):
/// magic, version, header length, then a Python dict literal padded with
/// spaces and a newline to a multiple of 64 bytes, then the data.
fn write_npy(path: &Path, dims: &[i64], data: &[f32]) {
    let shape: String = dims.iter().map(|d| format!("{d}, ")).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, out).unwrap();
}

/// The Python with the checker and runtime, or `None` (after saying why).
fn onnx_python() -> Option<String> {
    let exe = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&exe)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(exe);
    }
    common::missing_prerequisite(&format!(
        "`{exe} -c \"import onnx, onnxruntime, numpy\"` failed \
         (pip install onnx onnxruntime numpy to run this check)"
    ));
    None
}

#[test]
fn onnx_checker_and_onnxruntime_agree_with_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let root =
        std::env::var_os("ONNX_MODELS_DIR").map_or_else(|| tmp.path().to_owned(), Into::into);
    std::fs::create_dir_all(&root).unwrap();

    let models = [
        softmax_regression(),
        mlp("mlp", DEFAULT_OPSET),
        cnn(),
        mlp("mlp_opset21", 21),
    ];
    let mut manifest = Vec::new();
    for m in &models {
        let bytes = m.write(&root);
        // Writing twice gives the same bytes.
        assert_eq!(bytes, m.builder.to_bytes().unwrap(), "{}", m.dir);
        manifest.push(serde_json::json!({
            "dir": m.dir,
            "arch": m.arch,
            "opset": m.builder.opset(),
            "ir_version": m.builder.ir_version(),
        }));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
    let pixels: Vec<u8> = (0..BATCH * FEATURES as usize)
        .map(|_| rng.random())
        .collect();
    let mut input = vec![0.0; pixels.len()];
    idx_softmax::data::pixels::u8_to_f32(&pixels, &mut input);
    write_npy(&root.join("input.npy"), &[BATCH as i64, FEATURES], &input);
    std::fs::write(
        root.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let Some(python) = onnx_python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/onnx_check.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "onnx_check.py failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        models.len(),
        "{stdout}"
    );
}
