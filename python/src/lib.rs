//! `idx_softmax._core`: the thin PyO3 layer between NumPy and the engine.
//!
//! Everything here is conversion: NumPy buffers become borrowed
//! [`Samples`] (no copy for C-contiguous uint8/float32), the estimator's
//! parameters become a [`RunSpec`], and library errors become Python
//! exceptions worded with the parameters' names ([`py_name`]). The run
//! itself — defaults, rules, epochs, the record a checkpoint keeps — is
//! the library's ([`Run`]); inference is [`infer`]'s; a model file is read
//! by [`SavedModel`]. The GIL is released while the engine runs, and a
//! Ctrl-C stops a fit within a step.
//!
//! The scikit-learn conventions (label encoding, input checking, the
//! estimator API) are in the Python package next to this module.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use numpy::ndarray::{ArrayView1, ArrayView2, ArrayViewD, IxDyn};
use numpy::{
    PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;

use idx_softmax::checkpoint::CheckpointError;
use idx_softmax::data::{
    DataError, Dataset, GzCache, LabelValues, LoadOptions, Pixels, Samples, Split,
};
use idx_softmax::infer;
use idx_softmax::model::{ModelError, SavedModel};
use idx_softmax::nn::Network;
use idx_softmax::run::record::{self, RecordError, Results, RunMeta};
use idx_softmax::run::spec::{self, SpecError};
use idx_softmax::run::{
    DataInfo, Outputs, Resume, Run, RunError, RunSpec, TrainState, CNN_CONV, CNN_HIDDEN,
    CNN_KERNEL, MLP_HIDDEN,
};
use idx_softmax::setting::{worded, Setting};

/// Metadata key under which a checkpoint written from Python records the
/// estimator's `classes_` (a JSON list), so that `load` gives back string
/// or non-contiguous labels. The CLI ignores it.
const PY_CLASSES_KEY: &str = "python_classes";

/// How often a fit checks for a pending signal (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------- errors

/// The estimators' name for a setting: their parameter's.
fn py_name(s: Setting) -> String {
    match s {
        Setting::Hidden => "hidden_layer_sizes".into(),
        Setting::Conv => "conv_channels".into(),
        Setting::Kernel => "IDX_SOFTMAX_KERNEL".into(),
        Setting::Resume => "warm_start".into(),
        Setting::Save => "save()".into(),
        other => other.key().into(),
    }
}

/// A library error as a `ValueError`, worded with the parameters' names.
fn value_error(e: &(dyn std::error::Error + 'static)) -> PyErr {
    PyValueError::new_err(worded(e, &py_name).unwrap_or_else(|| e.to_string()))
}

fn text_error(msg: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(msg.to_string())
}

/// Files that are missing or unreadable are `OSError`s (missing ones
/// `FileNotFoundError`); files that are there but malformed, `ValueError`s.
fn data_error(e: DataError) -> PyErr {
    match &e {
        DataError::Missing { .. } => PyFileNotFoundError::new_err(e.message(&py_name)),
        DataError::Invalid { path, .. } if !path.exists() => {
            PyFileNotFoundError::new_err(e.message(&py_name))
        }
        DataError::Io { .. } | DataError::CacheUnwritable { .. } => {
            PyOSError::new_err(e.message(&py_name))
        }
        _ => value_error(&e),
    }
}

fn model_error(e: ModelError) -> PyErr {
    match &e {
        ModelError::Record(RecordError::Checkpoint(CheckpointError::Io { .. })) => {
            PyOSError::new_err(e.message(&py_name))
        }
        _ => value_error(&e),
    }
}

fn record_error(e: RecordError) -> PyErr {
    model_error(ModelError::Record(e))
}

// ------------------------------------------------------------ load_idx

/// The four mapped IDX files of a dataset. The arrays `load_idx` returns
/// view its mapping and keep it alive as their `base`.
#[pyclass(frozen, module = "idx_softmax._core")]
struct IdxData {
    data: Dataset,
    dir: PathBuf,
}

#[pymethods]
impl IdxData {
    /// The directory the files came from (absolute, as `--save` records it).
    #[getter]
    fn data_dir(&self) -> String {
        std::path::absolute(&self.dir)
            .unwrap_or_else(|_| self.dir.clone())
            .display()
            .to_string()
    }

    /// The number of classes the loader inferred (largest training label + 1).
    #[getter]
    fn classes(&self) -> usize {
        self.data.classes
    }

    /// The shape of one sample, e.g. `(28, 28)`.
    #[getter]
    fn sample_shape(&self) -> Vec<usize> {
        self.data.train.images.sample_shape().to_vec()
    }

    fn __repr__(&self) -> String {
        format!(
            "IdxData({:?}: {} train, {} test)",
            self.data_dir(),
            self.data.train.len(),
            self.data.test.len()
        )
    }
}

/// `(X, y)` of one split: views of the mapping where the file's element
/// type allows (u8), decoded copies otherwise (big-endian f32/f64 pixels,
/// wider integer labels).
fn split_arrays<'py>(
    owner: &Bound<'py, IdxData>,
    split: &Split,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = owner.py();
    let (n, k) = (split.len(), split.images.features());
    let x: Bound<'py, PyAny> = match split.images.as_u8() {
        Some(bytes) => {
            let view = ArrayView2::from_shape((n, k), bytes).map_err(text_error)?;
            // SAFETY: `bytes` is the read-only mapping owned by `owner`'s
            // Dataset, which is immutable (frozen) and lives as long as
            // the array holds `owner` as its base. The array is made
            // read-only below, so NumPy never writes to the mapping.
            let arr = unsafe { PyArray2::borrow_from_array(&view, owner.clone().into_any()) };
            arr.readwrite().make_nonwriteable();
            arr.into_any()
        }
        None => {
            let mut v = vec![0.0f32; n * k];
            for (i, row) in v.chunks_exact_mut(k).enumerate() {
                split.images.row_into_f32(i, row);
            }
            PyArray1::from_vec(py, v).reshape([n, k])?.into_any()
        }
    };
    let y: Bound<'py, PyAny> = match (split.labels.as_u8(), split.labels.as_u32()) {
        (Some(bytes), _) => {
            let view = ArrayView1::from(bytes);
            // SAFETY: as above.
            let arr = unsafe { PyArray1::borrow_from_array(&view, owner.clone().into_any()) };
            arr.readwrite().make_nonwriteable();
            arr.into_any()
        }
        (None, Some(v)) => PyArray1::from_slice(py, v).into_any(),
        (None, None) => PyArray1::from_vec(py, split.labels.to_vec()).into_any(),
    };
    Ok((x, y))
}

/// `load_idx(data_dir=None, cache_dir=None)`: the CLI's loader (file
/// discovery, gzip cache, one-line errors) on `data_dir`, by default the
/// library's default data directory. Returns `(X_train, y_train, X_test,
/// y_test, IdxData)`.
#[pyfunction]
#[pyo3(signature = (data_dir=None, cache_dir=None))]
#[allow(clippy::type_complexity)]
fn load_idx<'py>(
    py: Python<'py>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> PyResult<(
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, IdxData>,
)> {
    let dir = idx_softmax::data::locate(data_dir.as_deref(), None)
        .map_err(data_error)?
        .dir;
    let opts = LoadOptions {
        cache: cache_dir.map_or_else(GzCache::default_dirs, GzCache::at),
        classes: None,
    };
    let data = py
        .detach(|| Dataset::load(&dir, &opts))
        .map_err(data_error)?;
    let owner = Bound::new(py, IdxData { data, dir })?;
    let me = owner.get();
    let (xtr, ytr) = split_arrays(&owner, &me.data.train)?;
    let (xte, yte) = split_arrays(&owner, &me.data.test)?;
    Ok((xtr, ytr, xte, yte, owner))
}

// ------------------------------------------------------------- samples

/// Borrowed pixels of a 2-D C-contiguous uint8 or float32 array.
enum XBuf<'py> {
    U8(PyReadonlyArray2<'py, u8>),
    F32(PyReadonlyArray2<'py, f32>),
}

impl<'py> XBuf<'py> {
    fn new(x: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = x.cast::<PyArray2<u8>>() {
            return Ok(Self::U8(a.try_readonly().map_err(text_error)?));
        }
        if let Ok(a) = x.cast::<PyArray2<f32>>() {
            return Ok(Self::F32(a.try_readonly().map_err(text_error)?));
        }
        Err(text_error(
            "X must be a 2-D uint8 or float32 NumPy array (the Python layer converts others)",
        ))
    }

    fn features(&self) -> usize {
        match self {
            Self::U8(a) => a.shape()[1],
            Self::F32(a) => a.shape()[1],
        }
    }

    fn pixels(&self) -> PyResult<Pixels<'_>> {
        let not_c = |_| text_error("X must be C-contiguous (the Python layer converts others)");
        Ok(match self {
            Self::U8(a) => Pixels::U8(a.as_slice().map_err(not_c)?),
            Self::F32(a) => Pixels::F32(Cow::Borrowed(a.as_slice().map_err(not_c)?)),
        })
    }
}

/// Borrowed labels of a 1-D uint8 or uint32 array.
enum YBuf<'py> {
    U8(PyReadonlyArray1<'py, u8>),
    U32(PyReadonlyArray1<'py, u32>),
}

impl<'py> YBuf<'py> {
    fn new(y: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = y.cast::<PyArray1<u8>>() {
            return Ok(Self::U8(a.try_readonly().map_err(text_error)?));
        }
        if let Ok(a) = y.cast::<PyArray1<u32>>() {
            return Ok(Self::U32(a.try_readonly().map_err(text_error)?));
        }
        Err(text_error(
            "y must be a 1-D uint8 or uint32 array of class indices",
        ))
    }

    fn values(&self) -> PyResult<LabelValues<'_>> {
        let not_c = |_| text_error("y must be contiguous");
        Ok(match self {
            Self::U8(a) => LabelValues::U8(a.as_slice().map_err(not_c)?),
            Self::U32(a) => LabelValues::U32(Cow::Borrowed(a.as_slice().map_err(not_c)?)),
        })
    }
}

// --------------------------------------------------------------- model

/// A trained network and what continuing its run needs. Immutable: each
/// fit makes a new one, so arrays viewing its parameters stay valid.
#[pyclass(frozen, module = "idx_softmax._core")]
struct Model {
    state: TrainState,
    /// The run's record, as a checkpoint keeps it; `None` for a network
    /// read from another tool's file.
    meta: Option<RunMeta>,
    /// The results after its last epoch, if known.
    results: Option<Results>,
    /// Per-epoch mean training losses and validation accuracies of the
    /// fit call that made it.
    losses: Vec<f64>,
    val_accuracies: Vec<f64>,
    /// Python's own metadata read from a checkpoint (its class labels).
    extra: BTreeMap<String, String>,
}

impl Model {
    fn network(&self) -> &Network {
        &self.state.network
    }

    /// The model as a run to continue.
    fn resume(&self) -> Resume {
        Resume {
            meta: self.meta.clone(),
            state: self.state.clone(),
            source: "the fitted model".into(),
        }
    }

    /// A model from a file.
    fn from_saved(saved: &SavedModel) -> Result<Self, RecordError> {
        let meta = if saved.is_run() {
            Some(saved.run()?.0)
        } else {
            None
        };
        Ok(Self {
            state: saved.state()?,
            meta,
            results: saved.results(),
            losses: Vec::new(),
            val_accuracies: Vec::new(),
            extra: saved
                .metadata()
                .iter()
                .filter(|(k, _)| *k == PY_CLASSES_KEY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// A parameter tensor of `model` as a read-only NumPy view of its shape
/// (its base keeps the model alive).
fn tensor_view<'py>(model: &Bound<'py, Model>, i: usize) -> PyResult<Bound<'py, PyAny>> {
    let params = model.get().network().params();
    let t = &params.tensors()[i];
    let data = &params.data()[t.range()];
    let view = ArrayViewD::from_shape(IxDyn(&t.shape), data).map_err(text_error)?;
    // SAFETY: the model is frozen; its parameters never change or move
    // while the array holds it as its base.
    let arr = unsafe { PyArrayDyn::borrow_from_array(&view, model.clone().into_any()) }.into_any();
    arr.call_method1("setflags", (false,))?;
    Ok(arr)
}

/// A JSON value as the Python object `json.loads` makes of it.
fn to_python<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

#[pymethods]
impl Model {
    /// `[K, H1, …, C]`.
    #[getter]
    fn sizes(&self) -> Vec<usize> {
        self.network().sizes().to_vec()
    }

    /// The parameter tensors `(name, array)` in checkpoint order, as
    /// read-only views of the model's buffer: `weight` `[out, in]`, `bias`.
    fn tensors<'py>(slf: &Bound<'py, Self>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let names: Vec<String> = slf
            .get()
            .network()
            .params()
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| Ok((name, tensor_view(slf, i)?)))
            .collect()
    }

    /// The network: `features`, `image` (`[C, H, W]` or None), `conv`
    /// (`[[channels, kernel], …]`), `hidden`, `classes`, `layers` (the
    /// description a checkpoint records).
    fn arch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let a = self.network().arch();
        let json = serde_json::json!({
            "features": a.features,
            "image": a.image.map(|i| [i.channels, i.height, i.width]),
            "conv": a.conv.iter().map(|b| [b.channels, b.kernel]).collect::<Vec<_>>(),
            "hidden": a.hidden,
            "classes": a.classes,
            "layers": a.describe(),
        });
        to_python(py, &json)
    }

    /// The hex SHA-256 of the parameters: the CLI's `weights_digest`.
    #[getter]
    fn digest(&self) -> String {
        self.network().digest()
    }

    #[getter]
    fn sample_shape(&self) -> Vec<usize> {
        match &self.meta {
            Some(m) => m.sample_shape.clone(),
            None => vec![self.network().features()],
        }
    }

    /// The data directory the run recorded (empty if not from files).
    #[getter]
    fn data_dir(&self) -> String {
        self.meta
            .as_ref()
            .map_or_else(String::new, |m| m.data_dir.clone())
    }

    #[getter]
    fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    /// The kernel path that trained the model (or its checkpoint records).
    #[getter]
    fn kernel(&self) -> Option<&'static str> {
        self.meta.as_ref()?.config.kernel.map(|k| k.name())
    }

    #[getter]
    fn losses(&self) -> Vec<f64> {
        self.losses.clone()
    }

    #[getter]
    fn val_accuracies(&self) -> Vec<f64> {
        self.val_accuracies.clone()
    }

    /// The run's recorded settings by the library's names (`hidden`, …),
    /// or, for another tool's network, the defaults with its hidden
    /// layers.
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = match &self.meta {
            Some(m) => m.config.settings_json(),
            None => idx_softmax::run::TrainConfig {
                conv: self.network().arch().conv.clone(),
                hidden: self.network().hidden().to_vec(),
                ..Default::default()
            }
            .settings_json(),
        };
        to_python(py, &json)
    }

    /// The class names the checkpoint records (empty if none).
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.meta
            .as_ref()
            .map_or_else(Vec::new, |m| m.class_names.clone())
    }

    /// Python's own metadata read from the checkpoint.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.extra.clone()
    }

    /// The logits (n × C, float32) of X (a 2-D C-contiguous uint8 or
    /// float32 array), by the library's batch inference, with the GIL
    /// released. uint8 pixels are scaled by 1/255, as in training.
    #[pyo3(signature = (x, threads=None))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let threads = thread_count(threads)?;
        let xb = XBuf::new(x)?;
        let k = xb.features();
        let net = self.network();
        if k != net.features() {
            return Err(text_error(format!(
                "X has {k} features, but the model takes {}",
                net.features()
            )));
        }
        let c = net.classes();
        let pixels = xb.pixels()?;
        let recorded = self.meta.as_ref().and_then(|m| m.config.kernel);
        let conv = !net.arch().conv.is_empty();
        let out = py.detach(|| -> PyResult<Vec<f32>> {
            let n = match &pixels {
                Pixels::U8(p) => p.len() / k,
                Pixels::F32(p) => p.len() / k,
            };
            let zeros = vec![0u8; n];
            let samples = Samples::new(pixels, LabelValues::U8(&zeros), k, c, vec![])
                .map_err(|e| value_error(&e))?;
            spec::check_kernel_env().map_err(|e| value_error(&e))?;
            let path = spec::inference_kernel(None, recorded, samples.as_u8().is_some() || conv)
                .map_err(|e| value_error(&e))?;
            let pool = infer::thread_pool(threads).map_err(|e| value_error(&e))?;
            Ok(pool.install(|| infer::logits(net, &samples, infer::Rows::All, path)))
        })?;
        let n = out.len() / c;
        PyArray1::from_vec(py, out).reshape([n, c])
    }

    /// Writes the model as the CLI's run checkpoint (`--save`'s format):
    /// the network, momentum buffers, and the run's record, plus the
    /// `extra` string pairs (Python's class labels) and `class_names`.
    #[pyo3(signature = (path, extra=None, class_names=None))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        extra: Option<BTreeMap<String, String>>,
        class_names: Option<Vec<String>>,
    ) -> PyResult<()> {
        let Some(meta) = &self.meta else {
            return Err(text_error(
                "this model holds another tool's network and no run to save; fit it first",
            ));
        };
        let mut meta = meta.clone();
        if let Some(names) = class_names {
            meta.class_names = names;
        }
        let results = self.results.unwrap_or(Results {
            test_accuracy: f64::NAN,
            test_loss: f64::NAN,
            train_loss: f64::NAN,
            validation: None,
        });
        let extra = extra.unwrap_or_default();
        py.detach(|| record::save_with(&path, &self.state, &meta, &results, &extra))
            .map_err(record_error)
    }

    /// Writes the model as an ONNX file (the CLI's `export`): the run's
    /// record, the `extra` pairs and `class_names` in its metadata.
    #[pyo3(signature = (path, extra=None, class_names=None))]
    fn to_onnx(
        &self,
        py: Python<'_>,
        path: PathBuf,
        extra: Option<BTreeMap<String, String>>,
        class_names: Option<Vec<String>>,
    ) -> PyResult<()> {
        let mut record = extra.unwrap_or_default();
        let results = self.results.unwrap_or(Results {
            test_accuracy: f64::NAN,
            test_loss: f64::NAN,
            train_loss: f64::NAN,
            validation: None,
        });
        if let Some(m) = &self.meta {
            record.extend(m.to_metadata(&results));
        }
        let names = class_names.or_else(|| {
            self.meta
                .as_ref()
                .map(|m| m.class_names.clone())
                .filter(|n| !n.is_empty())
        });
        let net = self.network();
        let md = idx_softmax::onnx::metadata(&record, names, net.classes());
        let bytes = idx_softmax::onnx::export(net, &md).map_err(|e| text_error(e))?;
        py.detach(|| idx_softmax::onnx::write(&path, &bytes))
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))
    }

    /// Pickling: the checkpoint's bytes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Vec<u8>,))> {
        let py = slf.py();
        let dir = tempfile::tempdir().map_err(|e| PyOSError::new_err(e.to_string()))?;
        let path = dir.path().join("model.safetensors");
        let me = slf.get();
        me.save(py, path.clone(), Some(me.extra.clone()), None)?;
        let bytes = std::fs::read(&path).map_err(|e| PyOSError::new_err(e.to_string()))?;
        let module = py.import("idx_softmax._core")?;
        Ok((module.getattr("_model_from_bytes")?, (bytes,)))
    }
}

/// The inverse of `Model.__reduce__`.
#[pyfunction]
fn _model_from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Model> {
    let dir = tempfile::tempdir().map_err(|e| PyOSError::new_err(e.to_string()))?;
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &data).map_err(|e| PyOSError::new_err(e.to_string()))?;
    load_model(py, path)
}

/// A real parameter as the engine's f32, checked by `rule`; a value that
/// breaks it is quoted as given (`1e-50`, not the 0 it rounds to in f32).
fn narrow(setting: Setting, v: f64, rule: fn(f32) -> Result<f32, SpecError>) -> PyResult<f32> {
    rule(v as f32).map_err(|_| {
        value_error(&SpecError::Invalid {
            setting,
            given: format!("{v:?}"),
        })
    })
}

/// `threads`, by the library's rule and default.
fn thread_count(threads: Option<i64>) -> PyResult<usize> {
    spec::thread_count(threads).map_err(|e| value_error(&e))
}

/// Trains on `(x, y)` (y: class indices below `classes`) and returns the
/// new model. With `init`, continues that model's run bit for bit:
/// `epochs` is then the run's planned total, and the call trains at most
/// `run_epochs` epochs. `on_epoch(dict)` is called after each epoch, with
/// the epoch's record. A Ctrl-C stops the fit within a step, raising
/// `KeyboardInterrupt`; `init` is left as it was.
#[pyfunction]
#[pyo3(signature = (x, y, classes, *, epochs, batch_size, lr, momentum, nesterov,
    weight_decay, schedule, val_split, seed, threads, hidden, conv=Vec::new(),
    augment=None, max_shift=None, rotate=None, scale=None, shear=None, translate=None,
    sigma=None, alpha=None, sample_shape=None, data_dir=None, init=None, run_epochs=None,
    on_epoch=None))]
#[allow(clippy::too_many_arguments)]
fn fit(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    classes: usize,
    epochs: i64,
    batch_size: i64,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    schedule: &str,
    val_split: f64,
    seed: &Bound<'_, PyAny>,
    threads: Option<i64>,
    hidden: Vec<i64>,
    conv: Vec<(i64, i64)>,
    augment: Option<&str>,
    max_shift: Option<i64>,
    rotate: Option<f32>,
    scale: Option<f32>,
    shear: Option<f32>,
    translate: Option<f32>,
    sigma: Option<f32>,
    alpha: Option<f32>,
    sample_shape: Option<Vec<usize>>,
    data_dir: Option<String>,
    init: Option<PyRef<'_, Model>>,
    run_epochs: Option<usize>,
    on_epoch: Option<Py<PyAny>>,
) -> PyResult<Model> {
    let seed = match seed.extract::<i128>() {
        Ok(s) => spec::check_seed(s),
        Err(_) => Err(SpecError::Invalid {
            setting: Setting::Seed,
            given: seed.to_string(),
        }),
    }
    .map_err(|e| value_error(&e))?;
    // The variables the library reads itself, by the CLI's rule.
    idx_softmax::env::check().map_err(|e| value_error(&e))?;
    let run_spec = RunSpec {
        epochs: Some(epochs),
        batch_size: Some(batch_size),
        lr: Some(narrow(Setting::Lr, lr, spec::check_lr)?),
        momentum: Some(narrow(Setting::Momentum, momentum, spec::check_momentum)?),
        nesterov: Some(nesterov),
        weight_decay: Some(narrow(
            Setting::WeightDecay,
            weight_decay,
            spec::check_weight_decay,
        )?),
        schedule: Some(spec::parse_schedule(schedule).map_err(|e| value_error(&e))?),
        val_split: Some(narrow(Setting::ValSplit, val_split, spec::check_val_split)?),
        seed: Some(seed),
        augment: augment
            .map(|a| {
                a.parse::<idx_softmax::data::augment::AugmentKind>()
                    .map_err(|e| value_error(&SpecError::from(e)))
            })
            .transpose()?,
        max_shift,
        rotate,
        scale,
        shear,
        translate,
        sigma,
        alpha,
        conv: Some(conv),
        hidden: Some(hidden),
        classes: None,
        threads,
        kernel: None,
        oversubscribe: false,
    };
    let resume = init.as_ref().map(|m| m.resume());
    let resolved = run_spec
        .resolve(resume.as_ref().and_then(Resume::recorded))
        .map_err(|e| value_error(&e))?;
    let total = resolved.config.epochs;
    let xb = XBuf::new(x)?;
    let yb = YBuf::new(y)?;
    let k = xb.features();
    let pixels = xb.pixels()?;
    let labels = yb.values()?;
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stop = AtomicBool::new(false);
    let outcome = py.detach(move || {
        std::thread::scope(|scope| {
            let stop = &stop;
            // The worker owns the sender: the channel closes when it ends.
            let worker = scope.spawn(move || -> Result<Model, PyErr> {
                let samples =
                    Samples::new(pixels, labels, k, classes, sample_shape.unwrap_or_default())
                        .map_err(|e| value_error(&e))?;
                let info = DataInfo {
                    dir: data_dir.filter(|d| !d.is_empty()).map(PathBuf::from),
                    ..DataInfo::default()
                };
                let run_err = |e: RunError| value_error(&e);
                let mut run = Run::new(
                    resolved.config,
                    &samples,
                    None,
                    info,
                    resume,
                    Outputs::default(),
                )
                .map_err(run_err)?;
                if let Some(n) = run_epochs {
                    run.limit_epochs(n);
                }
                run.set_stop_flag(stop);
                let (mut losses, mut val_accuracies) = (Vec::new(), Vec::new());
                run.train(&|_| {}, &mut |report| {
                    losses.push(report.stats.train_loss);
                    if let Some(v) = &report.validation {
                        val_accuracies.push(v.accuracy);
                    }
                    let mut json = report.to_json();
                    json["epochs"] = serde_json::json!(total);
                    let _ = tx.send(json);
                })
                .map_err(run_err)?;
                Ok(Model {
                    meta: Some(run.record().clone()),
                    results: run.results(),
                    state: run.state(),
                    losses,
                    val_accuracies,
                    extra: BTreeMap::new(),
                })
            });
            // This thread waits for the worker's epochs, calls back, and
            // checks for signals in between: a Ctrl-C raises the stop flag,
            // and the worker ends its epoch at the next step.
            let mut failure: Option<PyErr> = None;
            loop {
                match rx.recv_timeout(SIGNAL_POLL) {
                    Ok(record) => {
                        if failure.is_none() {
                            if let Some(cb) = &on_epoch {
                                let called = Python::attach(|py| -> PyResult<()> {
                                    let d = to_python(py, &record)?;
                                    cb.call1(py, (d,))?;
                                    Ok(())
                                });
                                if let Err(e) = called {
                                    failure = Some(e);
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if failure.is_none() {
                            if let Err(e) = Python::attach(|py| py.check_signals()) {
                                failure = Some(e);
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let result = worker
                .join()
                .unwrap_or_else(|_| Err(text_error("the training thread panicked")));
            match failure {
                Some(e) => Err(e),
                None => result,
            }
        })
    });
    outcome
}

/// Reads a checkpoint: a run checkpoint written by the CLI's `--save` or
/// by `save` (settings, momentum and epochs done come back), or any
/// safetensors file with the CLI's tensor names (network only).
#[pyfunction]
fn load_model(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    py.detach(|| {
        let saved = SavedModel::load(&path).map_err(model_error)?;
        Model::from_saved(&saved).map_err(record_error)
    })
}

/// The number of CPUs `threads=None` uses.
#[pyfunction]
fn available_cpus() -> usize {
    idx_softmax::run::available_cpus()
}

/// The library's defaults for the estimators' parameters, by their
/// names: the estimators' `__init__` signatures take them from here.
#[pyfunction]
fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let mut d = idx_softmax::run::TrainConfig::default().settings_json();
    d["threads"] = serde_json::Value::Null;
    d["hidden_layer_sizes"] = serde_json::json!(MLP_HIDDEN);
    d["cnn_conv_channels"] = serde_json::json!(CNN_CONV);
    d["cnn_kernel_size"] = serde_json::json!(CNN_KERNEL);
    d["cnn_hidden_layer_sizes"] = serde_json::json!(CNN_HIDDEN);
    if let Some(o) = d.as_object_mut() {
        o.remove("hidden");
        o.remove("conv");
    }
    to_python(py, &d)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<IdxData>()?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load_idx, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(_model_from_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(available_cpus, m)?)?;
    m.add_function(wrap_pyfunction!(defaults, m)?)?;
    m.add("PY_CLASSES_KEY", PY_CLASSES_KEY)?;
    m.add("BUNDLED_MNIST", idx_softmax::data::BUNDLED_MNIST)?;
    Ok(())
}
