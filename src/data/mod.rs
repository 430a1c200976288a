//! Files on disk → validated, memory-mapped datasets → the engine's samples.
//!
//! This layer finds the four files of an IDX dataset in a directory,
//! decompresses `.gz` files once into a cache, memory-maps the raw files and
//! checks that images and labels fit together. Nothing here copies the
//! dataset onto the heap: [`Images`] and [`Labels`] are views into the
//! mappings, and a training batch reads its rows straight out of them.
//!
//! # Memory maps and files that change underneath
//!
//! A mapping reflects the file as it is *now*, not as it was when it was
//! validated. If another process truncates a mapped file, the next access
//! to a page past the new end raises SIGBUS; if it rewrites the file in
//! place, training silently reads the new bytes. Rust cannot catch either,
//! which is why mapping a file is `unsafe`. Every mapping is registered
//! with [`crate::signals`], whose SIGBUS handler (installed by the
//! command-line tool) removes any temporary output file, prints one line
//! naming the mapped file and exits with status 1.
//!
//! What can be guarded is guarded:
//!
//! * the header is read with an ordinary `read` and its exact length
//!   checked against the file's size *before* anything is mapped, so a
//!   bogus file is never mapped (let alone pre-faulted);
//! * the mapping is read-only and its own length is checked again against
//!   the header once it exists;
//! * decompressed cache files are only ever created under a temporary name
//!   and renamed into place, never modified or truncated in place, so a
//!   mapped cache file cannot change underneath us (a rebuild replaces the
//!   directory entry, and the old inode lives on until it is unmapped);
//! * pages are pre-faulted (`MAP_POPULATE`), which narrows the window: the
//!   data is in memory once loading returns.
//!
//! A raw IDX file in the data directory that someone truncates or rewrites
//! in place *during* training is outside our control; if that can happen,
//! copy the dataset first (or keep it gzipped, so that the tool maps its
//! own private cache copy). Likewise a cache directory that other users can
//! write to (the last-resort fallback under the system temporary directory
//! is one, on a shared machine) holds files we did not write: a cached file
//! is used only while it matches the integrity record written when it was
//! verified (see [`GzCache`]), but a writer who forges the record too goes
//! undetected, so on a multi-user machine point `--cache-dir` (or
//! `IDX_SOFTMAX_CACHE_DIR`) at a private directory.
//!
//! One job a module:
//!
//! * [`idx`]: the IDX format, a pure parser (no I/O);
//! * [`mapped`]: one validated IDX file, memory-mapped ([`IdxFile`]);
//! * [`gz_cache`]: the verified decompression cache for `.gz` files
//!   ([`GzCache`]), written atomically;
//! * [`dataset`]: the four files of a dataset found in a directory, and
//!   their images and labels as views of the mappings ([`Dataset`],
//!   [`Split`]);
//! * [`augment`]: deformations of one sample (shift, affine, elastic), a
//!   function of (seed, epoch, index);
//! * [`expand`]: an augmented copy of a dataset written to disk;
//! * [`samples`]: the engine's only input, borrowed u8 or f32 rows plus
//!   labels and the sample shape ([`Samples`]), built over a mapping or
//!   over NumPy arrays; [`pixels`]: the u8 scaling.

pub mod augment;
pub mod dataset;
pub mod expand;
pub mod gz_cache;
pub mod idx;
pub mod locate;
pub mod mapped;
pub mod pixels;
pub mod samples;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::setting::Setting;

pub use dataset::{
    accepted_names, find_file, present_files, Dataset, Images, Labels, LoadOptions, Split,
};
pub use gz_cache::GzCache;
pub use idx::IdxError;
pub use locate::{default_data_dir, locate, Located, BUNDLED_MNIST};
pub use mapped::IdxFile;
pub use pixels::U8_SCALE;
pub use samples::{ImageShape, LabelValues, Pixels, SampleError, Samples};

/// Environment variable naming the decompression cache directory.
pub const CACHE_ENV: &str = "IDX_SOFTMAX_CACHE_DIR";

/// The most classes a dataset may have, whether inferred from the labels or
/// given. It keeps a stray huge label (say 2,000,000,000 in an i32 file)
/// from turning into a huge weight matrix.
pub const MAX_CLASSES: usize = 1 << 16;

/// The most weights (features × classes) a model may have: 2^28 f32 is
/// 1 GiB, and training holds a gradient of the same size.
pub const MAX_WEIGHTS: usize = 1 << 28;

/// A failure to load a dataset. Each message is one line and names the
/// file; [`DataError::message`] words the settings it mentions with a
/// front end's names.
#[derive(Debug)]
pub enum DataError {
    // The IDX error is part of this message, not a separate `source`, so
    // that a chain printer (anyhow's `{:#}`) does not repeat it.
    Idx {
        path: PathBuf,
        error: IdxError,
    },
    /// The decompressed contents of a gzip file are not valid IDX.
    GzIdx {
        path: PathBuf,
        error: IdxError,
    },
    Io {
        path: PathBuf,
        msg: String,
    },
    Gzip {
        path: PathBuf,
        msg: String,
    },
    Missing {
        dir: PathBuf,
        role: &'static str,
        names: Vec<String>,
    },
    /// Two accepted names of one file are present and cannot both be it
    /// (`why`: they hold different data, or cannot be compared): which
    /// one is meant cannot be told.
    Ambiguous {
        role: &'static str,
        first: PathBuf,
        second: PathBuf,
        why: String,
    },
    Invalid {
        path: PathBuf,
        msg: String,
    },
    /// A load option is out of range (no file is at fault).
    Options(String),
    /// No cache directory could be written.
    CacheUnwritable {
        path: PathBuf,
        tried: String,
    },
    /// The labels and the number of classes disagree.
    Classes {
        path: PathBuf,
        problem: ClassProblem,
    },
    /// No data directory was given, and the bundled MNIST is gone (an
    /// installed binary whose source tree was removed).
    NoBundledData {
        fallback: PathBuf,
    },
    /// No data directory was given, and the one the model was trained on
    /// is gone.
    ModelDataGone {
        model: PathBuf,
        recorded: PathBuf,
    },
}

crate::setting::worded_error!(DataError);

/// What is wrong with a dataset's labels and its number of classes.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassProblem {
    /// Label `index` (at byte `offset`) is `value`, outside `0..classes`;
    /// `inferred`: the class count came from the training labels.
    Outside {
        index: usize,
        offset: u64,
        value: u32,
        classes: usize,
        inferred: bool,
    },
    /// Label `index` implies more than [`MAX_CLASSES`] classes.
    TooMany {
        index: usize,
        offset: u64,
        value: u32,
    },
    /// Every training label is 0.
    OnlyOne,
}

impl DataError {
    /// The message, one line, naming settings by `name` (the CLI's
    /// `--classes`, a Python parameter, …).
    pub fn message(&self, name: crate::setting::Naming<'_>) -> String {
        match self {
            Self::CacheUnwritable { path, tried } => format!(
                "cannot cache the decompressed {}: {tried}; set {} (or {CACHE_ENV}) to a writable directory, or gunzip the file next to it",
                path.display(),
                name(Setting::CacheDir)
            ),
            Self::Classes { path, problem } => {
                let classes = name(Setting::Classes);
                let what = match problem {
                    ClassProblem::Outside {
                        index,
                        offset,
                        value,
                        classes: c,
                        inferred,
                    } => {
                        let why = if *inferred {
                            format!("the number of classes, inferred from the largest training label; set {classes} to change it")
                        } else {
                            "the number of classes given".to_owned()
                        };
                        format!("label {index} (byte offset {offset}) is {value}, outside 0..{c} ({why})")
                    }
                    ClassProblem::TooMany { index, offset, value } => format!(
                        "label {index} (byte offset {offset}) is {value}: inferring {} classes from it exceeds the limit of {MAX_CLASSES}; pass {classes} N to check the labels against N classes",
                        *value as u64 + 1
                    ),
                    ClassProblem::OnlyOne => format!(
                        "every training label is 0, so only 1 class can be inferred: softmax regression needs at least 2 (pass {classes} N)"
                    ),
                };
                format!("{}: {what}", path.display())
            }
            Self::Idx { path, error } => format!("{}: {error}", path.display()),
            Self::GzIdx { path, error } => {
                format!("{}: decompressed contents: {error}", path.display())
            }
            Self::Io { path, msg } | Self::Invalid { path, msg } => {
                format!("{}: {msg}", path.display())
            }
            Self::Gzip { path, msg } => {
                format!("{}: corrupt or truncated gzip stream: {msg}", path.display())
            }
            Self::Missing { dir, role, names } => format!(
                "{}: no {role} file; looked for {}",
                dir.display(),
                names.join(", ")
            ),
            Self::Ambiguous {
                role,
                first,
                second,
                why,
            } => format!(
                "{} and {} are both the {role} file and {why}: keep one (remove or rename the other, or make it a link to the first)",
                first.display(),
                second.display()
            ),
            Self::Options(m) => m.clone(),
            Self::NoBundledData { fallback } => format!(
                "the bundled MNIST is not at {BUNDLED_MNIST} (this binary was built from a source tree that is gone) nor at {}: pass {} DIR or set {} to a directory holding the four IDX files",
                fallback.display(),
                name(Setting::DataDir),
                locate::DATA_DIR_ENV
            ),
            Self::ModelDataGone { model, recorded } => format!(
                "{}: the model was trained on {}, which is not a directory here; pass {} to choose the data",
                model.display(),
                recorded.display(),
                name(Setting::DataDir)
            ),
        }
    }
}

fn io_err(path: &Path, e: impl fmt::Display) -> DataError {
    DataError::Io {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

fn invalid(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_owned(),
        msg: msg.into(),
    }
}
