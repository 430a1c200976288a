//! Softmax regression and small neural networks (MLPs with ReLU) on IDX
//! image datasets, trained with minibatch SGD by SIMD, multithreaded CPU
//! kernels.
//!
//! The modules follow the data flow, data → kernels → network → run →
//! results → front ends:
//!
//! * [`data`]: the IDX format, the mapped files, the verified gzip cache,
//!   datasets found in a directory, and [`data::Samples`], the engine's
//!   only input (borrowed u8 or f32 rows plus labels, from a mapping or
//!   from NumPy);
//! * [`kernels`]: fused SIMD (u8 or f32 rows in place), sgemm, softmax-CE, with run-time ISA
//!   dispatch and naive f64 references;
//! * [`nn`]: the network, its layers and its flat parameter store;
//!   [`optim`]: SGD with momentum, weight decay and schedules;
//! * [`engine`]: how one epoch runs: the step plans, the scheduler and its
//!   workers, their placement on CPUs;
//! * [`run`]: the one run API: a [`run::RunSpec`] of the user's choices,
//!   resolved against the defaults or a checkpoint, and a [`run::Run`]
//!   that trains, saves and reports; [`setting`] names the settings and
//!   their rules, for every front end's messages;
//! * [`infer`]: batch inference in fixed parallel chunks, for evaluation,
//!   `eval`, `predict`, Python and the server; [`metrics`]: accuracy, loss,
//!   confusion, F1, top-k;
//! * [`checkpoint`]: safetensors files; [`model`]: a saved model and what
//!   its run recorded, read in one place; [`onnx`]: ONNX model files, for
//!   other runtimes;
//! * [`image`], [`preprocess`]: a user's picture decoded and made into the
//!   network's input as MNIST was made; [`prediction`]: a prediction's
//!   JSON, for `predict --json` and the server; [`plot`], [`labels`]:
//!   curves, heat maps, weight pictures, class names;
//! * [`fsutil`], `signals`: atomic writes, regular-file checks, outputs
//!   that never replace inputs, clean exits on SIGINT/SIGTERM/SIGBUS
//!   (Unix); [`env`](mod@env): the rule for boolean environment variables.
//!
//! The command-line tool (`src/main.rs`, feature `cli`), the HTTP
//! inference server (`serve`, feature `serve`) and the Python package
//! (`python/`) are thin front ends over [`run`], [`infer`] and [`model`].
//!
//! ```no_run
//! use idx_softmax::data::{Dataset, LoadOptions};
//! use idx_softmax::run::{train, TrainConfig};
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

pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod env;
pub mod fsutil;
pub mod image;
pub mod infer;
pub mod kernels;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod onnx;
pub mod optim;
pub mod plot;
pub mod prediction;
pub mod preprocess;
pub mod run;
#[cfg(feature = "serve")]
pub mod serve;
pub mod setting;
#[cfg(unix)]
pub mod signals;
