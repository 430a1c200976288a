//! Softmax regression and small neural networks (MLPs with ReLU) on IDX
//! image datasets, trained with minibatch SGD by SIMD, multithreaded CPU
//! kernels.
//!
//! The modules follow the data flow:
//!
//! * data: [`idx`] (the IDX format, a pure parser), [`dataset`] (finding,
//!   decompressing and memory-mapping the four files of a dataset),
//!   [`samples`] (the engine's only input: borrowed u8 or f32 rows plus
//!   labels, from the mapping or from NumPy) and [`pixels`] (the u8
//!   scaling);
//! * [`kernels`]: fused u8 SIMD, sgemm, softmax-CE, with run-time ISA
//!   dispatch and naive f64 references;
//! * [`nn`]: the network, its layers and its flat parameter store;
//! * [`optim`]: SGD with momentum, weight decay and schedules;
//! * [`config`]: the run configuration and every rule about it;
//! * [`engine`]: one epoch's step plans and the scheduler that runs them;
//!   [`parallel`]: the completion counter and shared-slice protocol under it;
//!   [`placement`]: which CPU each worker runs on;
//! * [`train`]: the training loop (epochs, shuffles, split, resume);
//! * [`metrics`]: evaluation of any network on any samples;
//! * [`checkpoint`], [`run_record`]: safetensors files and the run
//!   metadata they carry; [`image`], [`fsutil`]: image decoding (PNG,
//!   JPEG, BMP, PNM, TIFF, WebP) and writing, atomic writes;
//!   `signals`: SIGINT/SIGTERM/SIGBUS handlers that leave no temporary
//!   file behind (Unix);
//! * [`preprocess`], [`infer`]: a user's picture made into the network's
//!   input as MNIST was made, and the network's outputs for it;
//! * [`plot`], [`labels`]: training curves and confusion heat maps, class
//!   names.
//!
//! ```no_run
//! use idx_softmax::{dataset::{Dataset, LoadOptions}, train::{train, TrainConfig}};
//! let data = Dataset::load("data/mnist".as_ref(), &LoadOptions::default())?;
//! let (train_set, test_set) = (data.train.samples(data.classes)?, data.test.samples(data.classes)?);
//! let (net, reports) = train(&train_set, Some(&test_set), TrainConfig::default(), &|_| {}, |_| {})?;
//! println!("test accuracy {:.4}", reports.last().unwrap().test.as_ref().unwrap().accuracy);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Every unsafe operation sits in its own `unsafe` block with a `// SAFETY:`
// comment, inside `unsafe fn`s too, and every `unsafe fn` documents its
// contract in a `# Safety` section.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod engine;
pub mod fsutil;
pub mod idx;
pub mod image;
pub mod infer;
pub mod kernels;
pub mod labels;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod pixels;
pub mod placement;
pub mod plot;
pub mod preprocess;
pub mod run_record;
pub mod samples;
#[cfg(unix)]
pub mod signals;
pub mod train;

/// The bundled MNIST directory, as seen from this crate's source tree.
pub const BUNDLED_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// The data directory when none is given: the bundled MNIST where this
/// build's source tree still has it, else `data/mnist` under the current
/// directory. The CLI's `--data-dir` default and Python's
/// `load_idx(data_dir=None)` both use it.
pub fn default_data_dir() -> std::path::PathBuf {
    let bundled = std::path::PathBuf::from(BUNDLED_MNIST);
    if bundled.is_dir() {
        bundled
    } else {
        std::path::PathBuf::from("data/mnist")
    }
}
