//! Softmax (multinomial logistic) regression on IDX image datasets,
//! trained with minibatch SGD by SIMD, multithreaded CPU kernels.
//!
//! The modules follow the data flow:
//!
//! * [`idx`] — the IDX format, a pure parser (bytes in, validated view out);
//! * [`dataset`] — finding, decompressing (cached) and memory-mapping the
//!   four files of a dataset, validated together;
//! * [`kernels`] — the numeric kernels (fused u8 SIMD, sgemm, softmax-CE,
//!   bias gradient) with run-time ISA dispatch and naive f64 references;
//! * [`model`] — the linear layer and its initialisation;
//! * [`optim`] — SGD with momentum, weight decay and schedules;
//! * [`train`] — the training loop;
//! * [`metrics`] — evaluation;
//! * [`parallel`] — the completion counter and shared-slice protocol the
//!   loop's workers use;
//! * [`checkpoint`], [`image`], [`fsutil`] — safetensors checkpoints, PNG and
//!   PGM images, atomic file writes;
//! * `signals` — SIGINT/SIGTERM/SIGBUS handlers that leave no temporary
//!   file behind (Unix).
//!
//! ```no_run
//! use idx_softmax::{dataset::{Dataset, LoadOptions}, train::{train, TrainConfig}};
//! let data = Dataset::load("data/mnist".as_ref(), &LoadOptions::default())?;
//! let (model, reports) = train(&data, TrainConfig::default(), &|_| {}, |_| {})?;
//! println!("test accuracy {:.4}", reports.last().unwrap().test.accuracy);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Every unsafe operation sits in its own `unsafe` block with a `// SAFETY:`
// comment, inside `unsafe fn`s too, and every `unsafe fn` documents its
// contract in a `# Safety` section.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod checkpoint;
pub mod dataset;
pub mod fsutil;
pub mod idx;
pub mod image;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
#[cfg(unix)]
pub mod signals;
pub mod train;

/// The bundled MNIST directory, as seen from this crate's source tree.
pub const BUNDLED_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
