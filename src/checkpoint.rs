//! Checkpoints: a [`Network`] (plus optional extra tensors and string metadata)
//! in a [safetensors](https://huggingface.co/docs/safetensors) file.
//!
//! # Format
//!
//! The file follows PyTorch's conventions, so `safetensors.numpy.load_file`
//! / `safetensors.torch.load_file` read it and `load_state_dict` accepts
//! it. Softmax regression is one `nn.Linear`:
//!
//! | tensor   | dtype | shape                 |
//! |----------|-------|-----------------------|
//! | `weight` | F32   | `[classes, features]` |
//! | `bias`   | F32   | `[classes]`           |
//!
//! An MLP is an `nn.Sequential(Linear, ReLU, Linear, …)`: `0.weight`
//! `[H1, features]`, `0.bias` `[H1]`, `2.weight` `[H2, H1]`, …, the ReLUs
//! at the odd indices holding no tensors. The metadata key [`LAYERS_KEY`]
//! records the sizes (`784-256-10`).
//!
//! Any other tensors (for example optimizer state such as `momentum.weight`)
//! are the caller's, stored as F32 with the shapes it gives. The header's
//! `__metadata__` holds the caller's string pairs plus [`FORMAT_KEY`] =
//! [`FORMAT`] and [`VERSION_KEY`] = this crate's version.
//!
//! Tensor data is little-endian, row-major, packed in name order after a
//! header padded with spaces to a multiple of 8 bytes; the header's keys are
//! sorted, so the same model and metadata always give the same bytes.
//!
//! # Loading
//!
//! [`load`] checks everything before trusting it, and reports the first
//! problem as a one-line [`CheckpointError`] naming the file: not a
//! safetensors file, truncated, corrupt header, missing `weight` or `bias`,
//! a dtype other than F32, wrong ranks or inconsistent shapes, a NaN or
//! infinity in any tensor, a tensor name or metadata key given twice (JSON
//! parsers silently keep the last one), a FIFO or device instead of a file. A header length field that claims more than
//! [`MAX_HEADER_LEN`] bytes, or more than the file holds, is rejected before
//! anything is allocated for it, and tensor data is only read once the header
//! has been checked against the file's size. Files written by PyTorch or
//! numpy with the `weight`/`bias` names load too, whatever their metadata,
//! unless it claims a different `idx-softmax/` format version.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use idx_softmax::{checkpoint, nn::Network};
//! let model = Network::zeros(&[2, 3])?;
//! let mut meta = BTreeMap::new();
//! meta.insert("epochs".to_string(), "5".to_string());
//! checkpoint::save("model.safetensors".as_ref(), &model, &[], &meta)?;
//! let ckpt = checkpoint::load("model.safetensors".as_ref())?;
//! assert_eq!(ckpt.network, model);
//! assert_eq!(ckpt.metadata["epochs"], "5");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use serde_json::{json, Map, Value};

use crate::fsutil::write_atomic;
use crate::nn::{Architecture, ConvBlock, ImageShape, Network};

/// The value of [`FORMAT_KEY`] in the files this version writes.
pub const FORMAT: &str = "idx-softmax/1";
/// Metadata key naming the checkpoint format.
pub const FORMAT_KEY: &str = "format";
/// Metadata key holding the version of the crate that wrote the file.
pub const VERSION_KEY: &str = "crate_version";
/// Name of the `[classes, features]` weight tensor (`nn.Linear.weight`).
pub const WEIGHT: &str = "weight";
/// Name of the `[classes]` bias tensor (`nn.Linear.bias`).
pub const BIAS: &str = "bias";
/// Metadata key holding the network's sizes, e.g. `784-256-10`, set by
/// [`save`] and checked by [`load`] when present.
pub const LAYERS_KEY: &str = "layers";
/// Largest header accepted (or written), in bytes: the limit of the
/// reference safetensors implementation.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The reserved key of the safetensors header that holds the metadata.
const METADATA_KEY: &str = "__metadata__";
/// Prefix of this crate's format names: a file that claims another version
/// of our format is refused rather than misread.
const FORMAT_FAMILY: &str = "idx-softmax/";

/// A tensor beyond `weight` and `bias`: F32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// An extra tensor for [`save`]: `(name, shape, data)`, data row-major with
/// `shape.iter().product()` elements (one for an empty, scalar shape).
pub type ExtraTensor<'a> = (&'a str, &'a [usize], &'a [f32]);

/// The content of a checkpoint file.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network, from `weight`/`bias` or `0.weight`, `0.bias`, ….
    pub network: Network,
    /// Every other tensor, by name.
    pub extra: BTreeMap<String, Tensor>,
    /// The header's `__metadata__` (empty if the file has none), including
    /// [`FORMAT_KEY`] and [`VERSION_KEY`] when this crate wrote it.
    pub metadata: BTreeMap<String, String>,
}

/// A failure to save or load a checkpoint. Each message is one line and
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// The file does not look like safetensors at all.
    #[error("{}: not a safetensors file: {reason}", path.display())]
    NotSafetensors { path: PathBuf, reason: String },
    /// The file ends before the data its header describes.
    #[error("{}: truncated safetensors file: needs {expected} bytes, has {found}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The JSON header is malformed or inconsistent, or the file does not
    /// end where the header says.
    #[error("{}: corrupt safetensors header: {reason}", path.display())]
    CorruptHeader { path: PathBuf, reason: String },
    /// `weight` or `bias` is absent.
    #[error("{}: no tensor {name:?} (the file holds {found}); a checkpoint needs \"weight\" [classes, features] and \"bias\" [classes], as in PyTorch's nn.Linear", path.display())]
    MissingTensor {
        path: PathBuf,
        name: String,
        found: String,
    },
    /// A tensor is not F32.
    #[error("{}: tensor {name:?} has dtype {dtype}; checkpoints hold F32 tensors only", path.display())]
    WrongDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A tensor has the wrong rank, or shapes disagree.
    #[error("{}: tensor {name:?} {reason}", path.display())]
    WrongShape {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A tensor holds a NaN or an infinity.
    #[error("{}: tensor {name:?} holds a non-finite value ({value}) at flat index {index}", path.display())]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    /// The metadata names a version of this format that this build does not
    /// read.
    #[error("{}: checkpoint format {found:?} is not supported (this build reads {FORMAT:?})", path.display())]
    UnsupportedFormat { path: PathBuf, found: String },
    /// [`save`] was given something it cannot store; nothing was written.
    #[error("{}: cannot save checkpoint: {reason}", path.display())]
    InvalidInput { path: PathBuf, reason: String },
}

/// Saves `network`, the `extra` tensors and `metadata` to `path`, atomically (see
/// [`write_atomic`]): on failure `path` is left as it was.
///
/// [`FORMAT_KEY`], [`VERSION_KEY`] and [`LAYERS_KEY`] are always set,
/// replacing any values the caller gave for them.
///
/// Refused, before anything is written: non-finite values in any tensor (a
/// diverged network would be unloadable); extra tensors named like one of
/// the network's, `__metadata__` or the empty string, named twice, or whose data length is not the product of
/// their shape; a header over [`MAX_HEADER_LEN`].
pub fn save(
    path: &Path,
    network: &Network,
    extra: &[ExtraTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let bytes =
        encode(network, extra, metadata).map_err(|reason| CheckpointError::InvalidInput {
            path: path.to_owned(),
            reason,
        })?;
    write_atomic(path, |f| f.write_all(&bytes)).map_err(|error| CheckpointError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Loads and validates a checkpoint written by [`save`] (or any safetensors
/// file with F32 `weight` `[C, K]` and `bias` `[C]`). See the module
/// documentation for what is checked. Never panics, whatever the file holds.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let (metadata, data) = read_file(path)?;
    decode(path, &metadata, &data)
}

/// One tensor on its way into the file.
struct Outgoing<'a> {
    name: &'a str,
    shape: Vec<usize>,
    data: &'a [f32],
}

/// Serialises a checkpoint; the error is a reason for [`CheckpointError::InvalidInput`].
fn encode(
    network: &Network,
    extra: &[ExtraTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let params = network.params();
    let mut tensors: Vec<Outgoing<'_>> = params
        .tensors()
        .iter()
        .map(|t| Outgoing {
            name: &t.name,
            shape: t.shape.clone(),
            data: &params.data()[t.range()],
        })
        .collect();
    for &(name, shape, data) in extra {
        if name.is_empty() || name == METADATA_KEY {
            return Err(format!("{name:?} is not a valid tensor name"));
        }
        if tensors.iter().any(|t| t.name == name) {
            return Err(if params.find(name).is_some() {
                format!("extra tensor {name:?} would replace the network's own")
            } else {
                format!("extra tensor {name:?} is given twice")
            });
        }
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(data.len()) {
            return Err(format!(
                "extra tensor {name:?} has shape {shape:?} but {} values",
                data.len()
            ));
        }
        tensors.push(Outgoing {
            name,
            shape: shape.to_vec(),
            data,
        });
    }
    for t in &tensors {
        if let Some((i, v)) = first_non_finite(t.data) {
            return Err(format!(
                "tensor {:?} holds a non-finite value ({v}) at flat index {i}",
                t.name
            ));
        }
    }
    // Data in name order, as the reference implementation packs tensors of
    // one dtype.
    tensors.sort_by(|a, b| a.name.cmp(b.name));

    let mut meta: Map<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    meta.insert(FORMAT_KEY.into(), FORMAT.into());
    meta.insert(VERSION_KEY.into(), env!("CARGO_PKG_VERSION").into());
    meta.insert(LAYERS_KEY.into(), network.describe().into());
    let mut entries: Vec<(String, Value)> = vec![(METADATA_KEY.into(), sorted(meta))];
    let mut offset = 0usize;
    for t in &tensors {
        let end = t
            .data
            .len()
            .checked_mul(4)
            .and_then(|n| n.checked_add(offset))
            .ok_or("the tensors are too large to address")?;
        entries.push((
            t.name.to_owned(),
            json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }),
        ));
        offset = end;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let header = Value::Object(entries.into_iter().collect());
    let mut header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_LEN {
        return Err(format!(
            "the header would be {} bytes, over the {MAX_HEADER_LEN}-byte limit (too much metadata?)",
            header.len()
        ));
    }

    let total = 8usize
        .checked_add(header.len())
        .and_then(|n| n.checked_add(offset))
        .ok_or("the tensors are too large to address")?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in &tensors {
        for v in t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// A JSON object with its keys in sorted order, whether or not `serde_json`
/// preserves insertion order in this build.
fn sorted(map: Map<String, Value>) -> Value {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(entries.into_iter().collect())
}

fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    data.iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, &v)| (i, v))
}

/// Reads and checks the header, then reads exactly the data it describes.
fn read_file(path: &Path) -> Result<(Metadata, Vec<u8>), CheckpointError> {
    let io_err = |error: io::Error| CheckpointError::Io {
        path: path.to_owned(),
        error,
    };
    let not_st = |reason: String| CheckpointError::NotSafetensors {
        path: path.to_owned(),
        reason,
    };
    let truncated = |expected: u64, found: u64| CheckpointError::Truncated {
        path: path.to_owned(),
        expected,
        found,
    };
    let corrupt = |reason: String| CheckpointError::CorruptHeader {
        path: path.to_owned(),
        reason,
    };

    // Nothing but a regular file is opened: a FIFO would block forever.
    let (mut file, info) = crate::fsutil::open_regular(path).map_err(|e| match e {
        crate::fsutil::InputError::Io(e) => io_err(e),
        crate::fsutil::InputError::Directory => not_st("it is a directory".into()),
        other => not_st(format!("it {other}")),
    })?;
    let len = info.len();
    if len < 8 {
        return Err(not_st(format!(
            "the file is {len} bytes long, shorter than the 8-byte header length field"
        )));
    }
    let mut n = [0u8; 8];
    read_exact(&mut file, &mut n, path, len)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_LEN {
        return Err(not_st(format!(
            "its first 8 bytes announce a {n}-byte header, over the {MAX_HEADER_LEN}-byte limit"
        )));
    }
    if n > len - 8 {
        return Err(truncated(8 + n, len));
    }
    // `n <= len`: the allocation is bounded by the file's real size.
    let mut header = vec![0u8; n as usize];
    read_exact(&mut file, &mut header, path, len)?;
    if header.first() != Some(&b'{') {
        return Err(not_st("the header is not a JSON object".into()));
    }
    let text = std::str::from_utf8(&header)
        .map_err(|e| corrupt(format!("the header is not valid UTF-8: {e}")))?;
    // JSON maps keep the last of two equal keys: refuse them instead, so
    // that no tensor or metadata entry can hide behind a later one.
    if let Some(dup) = duplicate_key(text).map_err(|e| corrupt(e.to_string()))? {
        return Err(corrupt(dup));
    }
    let metadata: Metadata = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let data_len = metadata.data_len() as u64;
    let expected = (8 + n)
        .checked_add(data_len)
        .ok_or_else(|| corrupt("the tensors' sizes overflow".into()))?;
    if len < expected {
        return Err(truncated(expected, len));
    }
    if len > expected {
        return Err(corrupt(format!(
            "the tensors end at byte {expected} but the file has {len} bytes"
        )));
    }
    // `data_len <= len`: bounded by the file's real size.
    let mut data = vec![0u8; data_len as usize];
    read_exact(&mut file, &mut data, path, len)?;
    Ok((metadata, data))
}

/// Finds a name given twice in the header: a tensor name, or a key of
/// `__metadata__`. Returns the reason, for [`CheckpointError::CorruptHeader`].
fn duplicate_key(text: &str) -> Result<Option<String>, serde_json::Error> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Visits an object, noting its first repeated key; `nested` also visits
    /// the `__metadata__` object's keys.
    struct Keys {
        nested: bool,
    }
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if self.nested && key == METADATA_KEY {
                    let inner = map.next_value_seed(KeysSeed)?;
                    if found.is_none() {
                        found = inner;
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                if !seen.insert(key.clone()) && found.is_none() {
                    found = Some(if !self.nested {
                        format!("metadata key {key:?} is given twice")
                    } else if key == METADATA_KEY {
                        format!("{METADATA_KEY:?} is given twice")
                    } else {
                        format!("tensor {key:?} is given twice")
                    });
                }
            }
            Ok(found)
        }
    }
    /// The `__metadata__` object (or anything else there, ignored: the
    /// typed parse reports a malformed value).
    struct KeysSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for KeysSeed {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(AnyKeys)
        }
    }
    struct AnyKeys;
    impl<'de> Visitor<'de> for AnyKeys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Keys { nested: false }.visit_map(map)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Keys { nested: true })
}

/// `read_exact`, with an early end of file (the file shrank while being
/// read) reported as such.
fn read_exact(
    file: &mut File,
    buf: &mut [u8],
    path: &Path,
    len: u64,
) -> Result<(), CheckpointError> {
    file.read_exact(buf).map_err(|e| {
        let error = if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank below its size of {len} bytes while being read"),
            )
        } else {
            e
        };
        CheckpointError::Io {
            path: path.to_owned(),
            error,
        }
    })
}

/// Builds a [`Checkpoint`] from a parsed header and the data it describes.
fn decode(path: &Path, metadata: &Metadata, data: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let meta: BTreeMap<String, String> = metadata
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if let Some(found) = meta.get(FORMAT_KEY) {
        if found.starts_with(FORMAT_FAMILY) && found != FORMAT {
            return Err(CheckpointError::UnsupportedFormat {
                path: path.to_owned(),
                found: found.clone(),
            });
        }
    }

    let infos: BTreeMap<String, _> = metadata.tensors().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (name, info) in &infos {
        if info.dtype != Dtype::F32 {
            return Err(CheckpointError::WrongDtype {
                path: path.to_owned(),
                name: name.clone(),
                dtype: info.dtype.to_string(),
            });
        }
        let (start, end) = info.data_offsets;
        let bytes = data
            .get(start..end)
            .ok_or_else(|| CheckpointError::CorruptHeader {
                path: path.to_owned(),
                reason: format!("tensor {name:?} lies outside the data"),
            })?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((index, value)) = first_non_finite(&values) {
            return Err(CheckpointError::NonFinite {
                path: path.to_owned(),
                name: name.clone(),
                index,
                value,
            });
        }
        tensors.insert(
            name.clone(),
            Tensor {
                shape: info.shape.clone(),
                data: values,
            },
        );
    }

    let network = network_from(
        path,
        &mut tensors,
        &infos,
        meta.get("sample_shape").map(String::as_str),
    )?;
    if let Some(recorded) = meta.get(LAYERS_KEY) {
        if *recorded != network.describe() {
            return Err(CheckpointError::WrongShape {
                path: path.to_owned(),
                name: LAYERS_KEY.to_owned(),
                reason: format!(
                    "(metadata) says the network is {recorded}, but the tensors make {}",
                    network.describe()
                ),
            });
        }
    }
    Ok(Checkpoint {
        network,
        extra: tensors,
        metadata: meta,
    })
}

/// Takes the network's tensors out of `tensors`: `weight`/`bias`
/// (softmax regression), or `0.weight`, `0.bias`, … numbered as
/// `nn.Sequential` numbers its modules ([`crate::nn::arch`]): conv blocks
/// (4-D weights, 3 modules each: Conv2d, ReLU, MaxPool2d), a Flatten after
/// them, then linear layers (2-D weights, 2 modules each: Linear, ReLU).
/// What remains is extra. A CNN's input image comes from `sample_shape`
/// (the metadata's, `28x28` or `1x28x28`) or, in a file without one, is
/// taken as the square the first linear layer implies.
fn network_from(
    path: &Path,
    tensors: &mut BTreeMap<String, Tensor>,
    infos: &BTreeMap<String, &safetensors::tensor::TensorInfo>,
    sample_shape: Option<&str>,
) -> Result<Network, CheckpointError> {
    let shape_err = |name: &str, reason: String| CheckpointError::WrongShape {
        path: path.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let found = || {
        if infos.is_empty() {
            "no tensors".to_owned()
        } else {
            let names: Vec<String> = infos.keys().map(|n| format!("{n:?}")).collect();
            format!("tensors {}", names.join(", "))
        }
    };
    let missing = |name: &str| CheckpointError::MissingTensor {
        path: path.to_owned(),
        name: name.to_owned(),
        found: found(),
    };
    // (weight name, bias name, weight) in order, and the conv blocks.
    let single = tensors.contains_key(WEIGHT) || !tensors.contains_key("0.weight");
    let mut layers: Vec<(String, String)> = Vec::new();
    let mut conv: Vec<ConvBlock> = Vec::new();
    if single {
        layers.push((WEIGHT.to_owned(), BIAS.to_owned()));
    } else {
        let mut index = 0;
        while let Some(w) = tensors.get(&format!("{index}.weight")) {
            if w.shape.len() != 4 {
                break;
            }
            let name = format!("{index}.weight");
            let [co, ci, kh, kw] = w.shape[..] else {
                unreachable!("4-D")
            };
            let block = ConvBlock {
                channels: co,
                kernel: kh,
            };
            if kh != kw || ci == 0 || block.check().is_err() {
                return Err(shape_err(
                    &name,
                    format!(
                        "has shape {:?}; expected a conv weight [c_out, c_in, K, K] with K odd and c_out, c_in at least 1",
                        w.shape
                    ),
                ));
            }
            if let Some(prev) = conv.last() {
                if prev.channels != ci {
                    return Err(shape_err(
                        &name,
                        format!(
                            "has shape {:?}: its {ci} input channels do not match the {} output channels of the conv before",
                            w.shape, prev.channels
                        ),
                    ));
                }
            }
            conv.push(block);
            layers.push((name, format!("{index}.bias")));
            index += 3; // Conv2d, ReLU, MaxPool2d
        }
        if !conv.is_empty() {
            index += 1; // Flatten
        }
        while tensors.contains_key(&format!("{index}.weight")) {
            layers.push((format!("{index}.weight"), format!("{index}.bias")));
            index += 2; // Linear, ReLU
        }
    }
    let first_channels = match layers.first() {
        Some((w, _)) if !conv.is_empty() => tensors.get(w).map_or(1, |t| t.shape[1]),
        _ => 1,
    };
    let mut values = Vec::with_capacity(2 * layers.len());
    let mut linear_sizes: Vec<usize> = Vec::new();
    for (i, (w_name, b_name)) in layers.iter().enumerate() {
        let weight = tensors.remove(w_name).ok_or_else(|| missing(w_name))?;
        let bias = tensors.remove(b_name).ok_or_else(|| missing(b_name))?;
        let out = if i < conv.len() {
            conv[i].channels
        } else {
            let (out, inp) = match weight.shape[..] {
                [o, i] if o > 0 && i > 0 => (o, i),
                _ => {
                    return Err(shape_err(
                        w_name,
                        format!(
                            "has shape {:?}; expected [outputs, inputs], both at least 1",
                            weight.shape
                        ),
                    ))
                }
            };
            match linear_sizes.last() {
                None => linear_sizes.push(inp),
                Some(&prev) if prev != inp => {
                    return Err(shape_err(
                        w_name,
                        format!(
                            "has shape {:?}: its {inp} inputs do not match the {prev} outputs of the layer before",
                            weight.shape
                        ),
                    ))
                }
                Some(_) => {}
            }
            linear_sizes.push(out);
            out
        };
        if bias.shape != [out] {
            return Err(shape_err(
                b_name,
                format!(
                    "has shape {:?}; expected [{out}] to match {w_name:?} {:?}",
                    bias.shape, weight.shape
                ),
            ));
        }
        values.push(weight.data);
        values.push(bias.data);
    }
    if layers.len() == conv.len() {
        let name = format!("{}.weight", 3 * conv.len() + 1);
        return Err(missing(&name));
    }
    if let Some(stray) = tensors.keys().find(|n| is_layer_param(n)) {
        return Err(shape_err(
            stray,
            format!(
                "is not part of the layer sequence {} (nn.Sequential numbering: conv blocks take 3 indices, then a Flatten, linear layers 2)",
                layers.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let arch = if conv.is_empty() {
        Architecture::mlp(&linear_sizes)
    } else {
        let flat = linear_sizes[0];
        let image = cnn_image(sample_shape, first_channels, &conv, flat).ok_or_else(|| {
            shape_err(
                &layers[conv.len()].0,
                format!(
                    "takes {flat} inputs, which no input image of {first_channels} channel(s) gives through {} conv block(s) ending in {} channels{}",
                    conv.len(),
                    conv[conv.len() - 1].channels,
                    sample_shape.map_or(String::new(), |s| format!(" (metadata sample_shape {s:?})"))
                ),
            )
        })?;
        Architecture {
            features: image.len(),
            image: Some(image),
            conv,
            hidden: linear_sizes[1..linear_sizes.len() - 1].to_vec(),
            classes: linear_sizes[linear_sizes.len() - 1],
        }
    };
    let mut network = Network::zeros_arch(&arch).map_err(|e| shape_err(&layers[0].0, e.0))?;
    let store = network.params_mut();
    for (i, data) in values.into_iter().enumerate() {
        store.get_mut(i).copy_from_slice(&data);
    }
    Ok(network)
}

/// A CNN's input image: the recorded `sample_shape` (`HxW`, or `CxHxW`)
/// when it agrees with the network, else the square image whose pooled
/// output gives `flat` features.
fn cnn_image(
    sample_shape: Option<&str>,
    channels: usize,
    conv: &[ConvBlock],
    flat: usize,
) -> Option<ImageShape> {
    let fits = |image: ImageShape| {
        let arch = Architecture {
            features: image.len(),
            image: Some(image),
            conv: conv.to_vec(),
            hidden: Vec::new(),
            classes: 2,
        };
        image.channels == channels && arch.linear_sizes()[0] == flat
    };
    let recorded = sample_shape.and_then(|s| {
        let dims: Option<Vec<usize>> = s.split('x').map(|d| d.parse().ok()).collect();
        ImageShape::of_sample(&dims?)
    });
    if let Some(image) = recorded {
        return fits(image).then_some(image);
    }
    let last = conv.last()?.channels;
    let side = (flat / last).isqrt();
    (side * side * last == flat)
        .then(|| {
            let s = side << conv.len();
            ImageShape {
                channels,
                height: s,
                width: s,
            }
        })
        .filter(|&i| fits(i))
}

/// `weight`, `bias`, `3.weight`…: a name the network's tensors use.
fn is_layer_param(name: &str) -> bool {
    if name == WEIGHT || name == BIAS {
        return true;
    }
    match name.split_once('.') {
        Some((i, rest)) => {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && (rest == WEIGHT || rest == BIAS)
        }
        None => false,
    }
}
