//! `idx_softmax._core`: the thin PyO3 layer between NumPy and the engine.
//!
//! Everything here is conversion: NumPy buffers become borrowed
//! [`Samples`] (no copy for C-contiguous uint8/float32), the estimator's
//! parameters become a [`TrainConfig`], library errors become Python
//! exceptions with the library's one-line messages. Every rule (validation,
//! configuration, the training loop, the checkpoint format) is the main
//! crate's; the GIL is released while the engine runs.
//!
//! The scikit-learn conventions (label encoding, input checking, the
//! estimator API) are in the Python package next to this module.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use numpy::ndarray::{ArrayView1, ArrayView2};
use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;

use idx_softmax::checkpoint::{self, CheckpointError, FORMAT_KEY};
use idx_softmax::config::{self, ConfigError, TrainConfig};
use idx_softmax::dataset::{DataError, Dataset, GzCache, LoadOptions, Split};
use idx_softmax::kernels::KernelPath;
use idx_softmax::nn::Network;
use idx_softmax::optim::Sgd;
use idx_softmax::run_record::{self, RecordError, Results, RunMeta};
use idx_softmax::samples::{LabelValues, Pixels, SampleError, Samples};
use idx_softmax::train::{TrainError, TrainState, Trainer};

/// Metadata key under which a checkpoint written from Python records the
/// estimator's `classes_` (a JSON list), so that `load` gives back string
/// or non-contiguous labels. The CLI ignores it.
const PY_CLASSES_KEY: &str = "python_classes";

/// Rows per prediction task (the same chunking as evaluation).
const PREDICT_ROWS: usize = 250;

// ---------------------------------------------------------------- errors

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Files that are missing or unreadable are `OSError`s (missing ones
/// `FileNotFoundError`); files that are there but malformed, `ValueError`s.
fn data_error(e: DataError) -> PyErr {
    match &e {
        DataError::Missing { .. } => PyFileNotFoundError::new_err(e.to_string()),
        DataError::Invalid { path, .. } if !path.exists() => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        DataError::Io { .. } | DataError::CacheUnwritable { .. } => {
            PyOSError::new_err(e.to_string())
        }
        _ => value_error(e),
    }
}

fn checkpoint_error(e: CheckpointError) -> PyErr {
    match e {
        CheckpointError::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => value_error(e),
    }
}

fn record_error(e: RecordError) -> PyErr {
    match e {
        RecordError::Checkpoint(c) => checkpoint_error(c),
        RecordError::Invalid(_) => value_error(e),
    }
}

fn sample_error(e: SampleError) -> PyErr {
    value_error(e)
}

fn config_error(e: ConfigError) -> PyErr {
    value_error(e)
}

fn train_error(e: TrainError) -> PyErr {
    value_error(e)
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
            let view = ArrayView2::from_shape((n, k), bytes).map_err(value_error)?;
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
/// bundled MNIST. Returns `(X_train, y_train, X_test, y_test, IdxData)`.
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
    let dir = data_dir.unwrap_or_else(idx_softmax::default_data_dir);
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
            return Ok(Self::U8(a.try_readonly().map_err(value_error)?));
        }
        if let Ok(a) = x.cast::<PyArray2<f32>>() {
            return Ok(Self::F32(a.try_readonly().map_err(value_error)?));
        }
        Err(value_error(
            "X must be a 2-D uint8 or float32 NumPy array (the Python layer converts others)",
        ))
    }

    fn shape(&self) -> (usize, usize) {
        let s = match self {
            Self::U8(a) => a.shape(),
            Self::F32(a) => a.shape(),
        };
        (s[0], s[1])
    }

    fn pixels(&self) -> PyResult<Pixels<'_>> {
        let not_c = |_| value_error("X must be C-contiguous (the Python layer converts others)");
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
            return Ok(Self::U8(a.try_readonly().map_err(value_error)?));
        }
        if let Ok(a) = y.cast::<PyArray1<u32>>() {
            return Ok(Self::U32(a.try_readonly().map_err(value_error)?));
        }
        Err(value_error(
            "y must be a 1-D uint8 or uint32 array of class indices",
        ))
    }

    fn values(&self) -> PyResult<LabelValues<'_>> {
        let not_c = |_| value_error("y must be contiguous");
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
    /// The settings of the run that produced it (`kernel`: the path that
    /// trained it), as a checkpoint records them.
    config: TrainConfig,
    /// Samples trained on per epoch, for the checkpoint's record.
    train_samples: usize,
    /// Per-epoch mean training losses of this fit call.
    losses: Vec<f64>,
    /// Per-epoch validation accuracies of this fit call (with a split).
    val_accuracies: Vec<f64>,
    /// The last validation `(accuracy, loss)`, if any.
    validation: Option<(f64, f64)>,
    /// Extra metadata read from a checkpoint (e.g. Python class labels).
    metadata: BTreeMap<String, String>,
    /// Class names a checkpoint records (`labels.txt`, `--labels`).
    class_names: Vec<String>,
    /// The shape of one sample, e.g. `[28, 28]`, and the data directory
    /// (empty if not from files), as the checkpoint records them.
    sample_shape: Vec<usize>,
    data_dir: String,
    /// The training images' typical border (u8 2-D samples), as `--save`
    /// records it for `predict`.
    input_background: Option<f32>,
}

impl Model {
    fn network(&self) -> &Network {
        &self.state.network
    }
}

/// A parameter tensor of `model` as a read-only NumPy view (its base
/// keeps the model alive).
fn tensor_view<'py>(model: &Bound<'py, Model>, i: usize) -> PyResult<Bound<'py, PyAny>> {
    let params = model.get().network().params();
    let t = &params.tensors()[i];
    let data = &params.data()[t.range()];
    let arr = match t.shape.as_slice() {
        [n] => {
            let view = ArrayView1::from_shape(*n, data).map_err(value_error)?;
            // SAFETY: the model is frozen; its parameters never change or
            // move while the array holds it as its base.
            unsafe { PyArray1::borrow_from_array(&view, model.clone().into_any()) }.into_any()
        }
        [r, c] => {
            let view = ArrayView2::from_shape((*r, *c), data).map_err(value_error)?;
            // SAFETY: as above.
            unsafe { PyArray2::borrow_from_array(&view, model.clone().into_any()) }.into_any()
        }
        s => return Err(value_error(format!("unexpected tensor shape {s:?}"))),
    };
    arr.call_method1("setflags", (false,))?;
    Ok(arr)
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

    /// The hex SHA-256 of the parameters: the CLI's `weights_digest`.
    #[getter]
    fn digest(&self) -> String {
        self.network().digest()
    }

    #[getter]
    fn sample_shape(&self) -> Vec<usize> {
        self.sample_shape.clone()
    }

    #[getter]
    fn data_dir(&self) -> String {
        self.data_dir.clone()
    }

    #[getter]
    fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    /// The kernel path that trained the model (or its checkpoint records).
    #[getter]
    fn kernel(&self) -> Option<&'static str> {
        self.config.kernel.map(|k| k.name())
    }

    #[getter]
    fn losses(&self) -> Vec<f64> {
        self.losses.clone()
    }

    #[getter]
    fn val_accuracies(&self) -> Vec<f64> {
        self.val_accuracies.clone()
    }

    /// The run's recorded settings, by the estimators' parameter names.
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.config;
        let d = PyDict::new(py);
        d.set_item("epochs", c.epochs)?;
        d.set_item("batch_size", c.batch_size)?;
        d.set_item("lr", printed(c.sgd.lr))?;
        d.set_item("momentum", printed(c.sgd.momentum))?;
        d.set_item("nesterov", c.sgd.nesterov)?;
        d.set_item("weight_decay", printed(c.sgd.weight_decay))?;
        d.set_item("schedule", c.sgd.schedule.to_string())?;
        d.set_item("val_split", printed(c.val_split))?;
        d.set_item("seed", c.seed)?;
        d.set_item("hidden", c.hidden.clone())?;
        Ok(d)
    }

    /// The class names the checkpoint records (empty if none).
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    /// Metadata read from the checkpoint this model was loaded from.
    fn metadata(&self) -> BTreeMap<String, String> {
        self.metadata.clone()
    }

    /// The logits (n × C, float32) of X (a 2-D C-contiguous uint8 or
    /// float32 array), computed with the GIL released. uint8 pixels are
    /// scaled by 1/255, as in training; the fused kernels serve softmax
    /// regression on them.
    #[pyo3(signature = (x, threads=None))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let threads = thread_count(threads)?;
        let xb = XBuf::new(x)?;
        let (n, k) = xb.shape();
        let net = self.network();
        if k != net.features() {
            return Err(value_error(format!(
                "X has {k} features, but the model takes {}",
                net.features()
            )));
        }
        let c = net.classes();
        let pixels = xb.pixels()?;
        let recorded = self.config.kernel;
        let out = py.detach(|| -> PyResult<Vec<f32>> {
            let zeros = vec![0u8; n];
            let samples = Samples::new(pixels, LabelValues::U8(&zeros), k, c, vec![])
                .map_err(sample_error)?;
            let path = config::inference_kernel(recorded, samples.as_u8().is_some())
                .map_err(config_error)?;
            let mut out = vec![0.0f32; n * c];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| value_error(format!("cannot start {threads} threads: {e}")))?;
            pool.install(|| {
                out.par_chunks_mut(PREDICT_ROWS * c)
                    .enumerate()
                    .for_each_init(
                        || (Vec::new(), Vec::new()),
                        |(rows, ws): &mut (Vec<u32>, Vec<f32>), (i, chunk)| {
                            let r0 = i * PREDICT_ROWS;
                            rows.clear();
                            rows.extend(r0 as u32..(r0 + chunk.len() / c) as u32);
                            net.forward_rows(&samples, rows, path, ws, chunk);
                        },
                    )
            });
            Ok(out)
        })?;
        PyArray1::from_vec(py, out).reshape([n, c])
    }

    /// Writes the model as the CLI's run checkpoint (`--save`'s format):
    /// the network, momentum buffers, and the run's settings as metadata,
    /// plus the `extra` string pairs (Python's class labels).
    #[pyo3(signature = (path, extra=None, class_names=None))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        extra: Option<BTreeMap<String, String>>,
        class_names: Option<Vec<String>>,
    ) -> PyResult<()> {
        let net = self.network();
        let meta = RunMeta {
            config: self.config.clone(),
            epochs_done: self.state.epochs_done,
            classes: net.classes(),
            features: net.features(),
            sample_shape: self.sample_shape.clone(),
            train_samples: self.train_samples,
            test_samples: 0,
            data_dir: self.data_dir.clone(),
            class_names: class_names.unwrap_or_else(|| self.class_names.clone()),
            input_background: self.input_background,
        };
        let results = Results {
            test_accuracy: f64::NAN,
            test_loss: f64::NAN,
            train_loss: self.losses.last().copied().unwrap_or(f64::NAN),
            validation: self.validation,
        };
        let extra = extra.unwrap_or_default();
        py.detach(|| run_record::save_with(&path, &self.state, &meta, &results, &extra))
            .map_err(record_error)
    }

    /// Pickling: the checkpoint's bytes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Vec<u8>,))> {
        let py = slf.py();
        let dir = tempdir()?;
        let path = dir.join("model.safetensors");
        let me = slf.get();
        let extra = me.metadata.clone();
        me.save(py, path.clone(), Some(extra), None)?;
        let bytes = std::fs::read(&path).map_err(|e| PyOSError::new_err(e.to_string()));
        let _ = std::fs::remove_dir_all(&dir);
        let module = py.import("idx_softmax._core")?;
        Ok((module.getattr("_model_from_bytes")?, (bytes?,)))
    }
}

/// The f32 as its shortest decimal, widened (0.1f32 → 0.1).
fn printed(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// A fresh private directory for a pickling round trip.
fn tempdir() -> PyResult<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("idx-softmax-py-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| PyOSError::new_err(e.to_string()))?;
    Ok(dir)
}

/// The inverse of `Model.__reduce__`.
#[pyfunction]
fn _model_from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Model> {
    let dir = tempdir()?;
    let path = dir.join("model.safetensors");
    let written = std::fs::write(&path, &data).map_err(|e| PyOSError::new_err(e.to_string()));
    let model = written.and_then(|_| load_model(py, path));
    let _ = std::fs::remove_dir_all(&dir);
    model
}

/// `threads`: None = every CPU (the CLI's default), else checked by the
/// library's rule.
fn thread_count(threads: Option<i64>) -> PyResult<usize> {
    match threads {
        None => Ok(config::available_cpus()),
        Some(t) => {
            let t = usize::try_from(t).unwrap_or(0);
            config::check_threads(t).map_err(config_error)?;
            Ok(t)
        }
    }
}

/// A non-negative integer setting; negative values become 0, which the
/// library's rule then refuses with its own message.
fn count(v: i64) -> usize {
    usize::try_from(v).unwrap_or(0)
}

/// Trains on `(x, y)` (y: class indices below `classes`) and returns the
/// new model. With `init`, continues that model's run bit for bit
/// (`Trainer::resume`): `epochs` is then the run's planned total, and the
/// call trains `min(run_epochs, epochs − done)` epochs. `on_epoch(dict)`
/// is called after each epoch, with the GIL held.
#[pyfunction]
#[pyo3(signature = (x, y, classes, *, epochs, batch_size, lr, momentum, nesterov,
    weight_decay, schedule, val_split, seed, threads, hidden, sample_shape=None,
    data_dir=None, init=None, run_epochs=None, on_epoch=None))]
#[allow(clippy::too_many_arguments)]
fn fit(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    classes: usize,
    epochs: i64,
    batch_size: i64,
    lr: f32,
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    schedule: &str,
    val_split: f32,
    seed: &Bound<'_, PyAny>,
    threads: Option<i64>,
    hidden: Vec<i64>,
    sample_shape: Option<Vec<usize>>,
    data_dir: Option<String>,
    init: Option<PyRef<'_, Model>>,
    run_epochs: Option<usize>,
    on_epoch: Option<Py<PyAny>>,
) -> PyResult<Model> {
    let seed: u64 = seed.extract().map_err(|_| {
        value_error(format!(
            "--seed must be an integer in 0..={}, got {seed}",
            u64::MAX
        ))
    })?;
    let cfg = TrainConfig {
        epochs: count(epochs),
        batch_size: count(batch_size),
        sgd: Sgd {
            lr,
            momentum,
            nesterov,
            weight_decay,
            schedule: config::parse_schedule(schedule).map_err(config_error)?,
        },
        seed,
        val_split,
        hidden: hidden.into_iter().map(count).collect(),
        threads: thread_count(threads)?,
        kernel: KernelPath::from_env().map_err(value_error)?,
        oversubscribe: false,
    };
    cfg.validate().map_err(config_error)?;
    let xb = XBuf::new(x)?;
    let yb = YBuf::new(y)?;
    let (_, k) = xb.shape();
    let pixels = xb.pixels()?;
    let labels = yb.values()?;
    let init_state = init.as_ref().map(|m| m.state.clone());
    py.detach(move || -> PyResult<Model> {
        let samples = Samples::new(pixels, labels, k, classes, sample_shape.unwrap_or_default())
            .map_err(sample_error)?;
        let mut trainer = match init_state {
            Some(state) => Trainer::resume(&samples, None, cfg.clone(), state),
            None => Trainer::new(&samples, None, cfg.clone()),
        }
        .map_err(train_error)?;
        let todo = (cfg.epochs - trainer.epochs_done()).min(run_epochs.unwrap_or(usize::MAX));
        let (mut losses, mut val_accuracies, mut validation) = (Vec::new(), Vec::new(), None);
        for _ in 0..todo {
            let report = trainer.run_epoch(&|_| {}).map_err(train_error)?;
            losses.push(report.stats.train_loss);
            if let Some(v) = &report.validation {
                val_accuracies.push(v.accuracy);
                validation = Some((v.accuracy, v.loss));
            }
            // Between epochs: a Ctrl-C stops the fit (KeyboardInterrupt),
            // and the progress callback runs.
            Python::attach(|py| py.check_signals())?;
            if let Some(cb) = &on_epoch {
                Python::attach(|py| -> PyResult<()> {
                    let d = PyDict::new(py);
                    d.set_item("epoch", report.stats.epoch)?;
                    d.set_item("epochs", cfg.epochs)?;
                    d.set_item("train_loss", report.stats.train_loss)?;
                    d.set_item("seconds", report.stats.seconds)?;
                    d.set_item("samples_per_second", report.stats.samples_per_second())?;
                    d.set_item("benchings", report.stats.benchings)?;
                    if let Some(v) = &report.validation {
                        d.set_item("val_accuracy", v.accuracy)?;
                        d.set_item("val_loss", v.loss)?;
                    }
                    cb.call1(py, (d,))?;
                    Ok(())
                })?;
            }
        }
        let config = TrainConfig {
            kernel: Some(trainer.kernel()),
            ..cfg
        };
        Ok(Model {
            state: trainer.state(),
            config,
            train_samples: trainer.train_samples(),
            losses,
            val_accuracies,
            validation,
            metadata: BTreeMap::new(),
            sample_shape: samples.sample_shape().to_vec(),
            data_dir: data_dir.unwrap_or_default(),
            input_background: idx_softmax::preprocess::samples_background(&samples),
            class_names: Vec::new(),
        })
    })
}

/// Reads a checkpoint: a run checkpoint written by the CLI's `--save` or
/// by `save` (settings, momentum and epochs done come back), or any
/// safetensors file with the CLI's tensor names (network only).
#[pyfunction]
fn load_model(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    py.detach(|| {
        let ck = checkpoint::load(&path).map_err(checkpoint_error)?;
        if !ck.metadata.contains_key(FORMAT_KEY) {
            // Not written by this crate: the network alone.
            let network = ck.network.clone();
            let features = network.features();
            return Ok(Model {
                train_samples: 0,
                config: TrainConfig {
                    hidden: network.hidden().to_vec(),
                    ..TrainConfig::default()
                },
                state: TrainState {
                    network,
                    momentum: Vec::new(),
                    epochs_done: 0,
                },
                losses: Vec::new(),
                val_accuracies: Vec::new(),
                validation: None,
                sample_shape: run_record::recorded_shape(&ck)
                    .filter(|s| s.iter().product::<usize>() == features)
                    .unwrap_or_else(|| vec![features]),
                data_dir: String::new(),
                input_background: None,
                class_names: Vec::new(),
                metadata: ck.metadata,
            });
        }
        let (ck, meta, state) = run_record::load(&path).map_err(record_error)?;
        let validation = match (
            ck.metadata.get("val_accuracy").and_then(|v| v.parse().ok()),
            ck.metadata.get("val_loss").and_then(|v| v.parse().ok()),
        ) {
            (Some(a), Some(l)) => Some((a, l)),
            _ => None,
        };
        Ok(Model {
            state,
            config: meta.config,
            train_samples: meta.train_samples,
            losses: Vec::new(),
            val_accuracies: Vec::new(),
            validation,
            sample_shape: meta.sample_shape,
            data_dir: meta.data_dir,
            input_background: meta.input_background,
            class_names: meta.class_names,
            metadata: ck
                .metadata
                .into_iter()
                .filter(|(k, _)| k == PY_CLASSES_KEY)
                .collect(),
        })
    })
}

/// The number of CPUs `threads=None` uses.
#[pyfunction]
fn available_cpus() -> usize {
    config::available_cpus()
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
    m.add("PY_CLASSES_KEY", PY_CLASSES_KEY)?;
    m.add("BUNDLED_MNIST", idx_softmax::BUNDLED_MNIST)?;
    Ok(())
}
