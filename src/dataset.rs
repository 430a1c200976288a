//! Files on disk → validated, memory-mapped datasets.
//!
//! This layer finds the four files of an IDX dataset in a directory,
//! decompresses `.gz` files once into a cache, memory-maps the raw files and
//! checks that images and labels fit together. Nothing here copies the
//! dataset onto the heap: [`Images`] and [`Labels`] are views into the
//! mappings, and a training batch reads its rows straight out of them.
//!
//! # Memory maps and files that change underneath
//!
//! A mapping reflects the file as it is *now*: if another process truncates
//! a mapped file, touching the lost pages raises SIGBUS and the process
//! dies. What can be guarded is guarded: the decompression cache is only
//! ever written to a temporary file and renamed into place (so a mapped
//! cache file is never modified in place), every file's length is checked
//! against its header before use, and the mapping is taken read-only. A raw
//! IDX file that someone rewrites in place during training is outside our
//! control; copy it first if that can happen.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};

use crate::idx::{self, ElementType, IdxError, IdxHeader};

/// Pixels stored as u8 are scaled by this factor to [0, 1], as torchvision's
/// `ToTensor` does.
pub const U8_SCALE: f32 = 1.0 / 255.0;

/// Environment variable naming the decompression cache directory.
pub const CACHE_ENV: &str = "IDX_SOFTMAX_CACHE_DIR";

/// A failure to load a dataset. Each message is one line and names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Idx { path: PathBuf, source: IdxError },
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    #[error("{}: corrupt or truncated gzip stream: {msg}", path.display())]
    Gzip { path: PathBuf, msg: String },
    #[error("{}: no {role} file; looked for {}", dir.display(), names.join(", "))]
    Missing {
        dir: PathBuf,
        role: &'static str,
        names: Vec<String>,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("cannot cache the decompressed {}: {tried}; set --cache-dir (or {CACHE_ENV}) to a writable directory, or gunzip the file next to it", path.display())]
    CacheUnwritable { path: PathBuf, tried: String },
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

/// One validated IDX file, memory-mapped.
pub struct IdxFile {
    /// The path the user's directory holds (the `.gz` if it was compressed),
    /// used in every message.
    path: PathBuf,
    map: Mmap,
    header: IdxHeader,
}

impl fmt::Debug for IdxFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdxFile")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl IdxFile {
    /// Opens `path`: a raw IDX file is mapped in place; a gzip stream
    /// (detected by its magic, whatever the name) is decompressed once into
    /// the cache and the cached raw file is mapped.
    pub fn open(path: &Path, cache: &GzCache) -> Result<Self, DataError> {
        let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            return Err(invalid(path, "is a directory, expected an IDX file"));
        }
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        if meta.len() == 0 {
            return Err(DataError::Idx {
                path: path.to_owned(),
                source: IdxError::Empty,
            });
        }
        let mut magic = [0u8; 2];
        let n = (&file).read(&mut magic).map_err(|e| io_err(path, e))?;
        if n == 2 && magic == idx::GZIP_MAGIC {
            let raw = cache.decompressed(path)?;
            return Self::map_raw(path, &raw);
        }
        Self::map_file(path, &file)
    }

    fn map_raw(user_path: &Path, raw: &Path) -> Result<Self, DataError> {
        let file = File::open(raw).map_err(|e| io_err(raw, e))?;
        Self::map_file(user_path, &file)
    }

    fn map_file(path: &Path, file: &File) -> Result<Self, DataError> {
        // SAFETY: the mapping is read-only and lives as long as `IdxFile`. The
        // one hazard, another process truncating the file, is documented at
        // the top of this module; cache files are never modified in place.
        // `populate` pre-faults the pages so the training loop takes no page
        // faults on its random row reads.
        let map =
            unsafe { MmapOptions::new().populate().map(file) }.map_err(|e| io_err(path, e))?;
        let header = idx::parse(&map)
            .map_err(|source| DataError::Idx {
                path: path.to_owned(),
                source,
            })?
            .header;
        Ok(Self {
            path: path.to_owned(),
            map,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &IdxHeader {
        &self.header
    }
    /// The payload bytes (big-endian elements, row-major).
    pub fn payload(&self) -> &[u8] {
        &self.map[self.header.header_len()..]
    }
}

/// Where decompressed copies of `.gz` files are kept.
///
/// The cache file's name carries a hash of the source's absolute path, size
/// and modification time, so a changed `.gz` gets a fresh copy. A cached
/// file is trusted only if it parses as a complete IDX file; otherwise it is
/// rebuilt. Each copy is written to a temporary file in the cache directory,
/// fsynced, then renamed into place, so a killed process never leaves a
/// half-written file under the final name.
#[derive(Debug, Clone)]
pub struct GzCache {
    dirs: Vec<PathBuf>,
}

impl GzCache {
    /// Uses exactly `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dirs: vec![dir.into()],
        }
    }

    /// The default search order: `$IDX_SOFTMAX_CACHE_DIR`, then
    /// `$XDG_CACHE_HOME/idx-softmax`, `$HOME/.cache/idx-softmax`, and the
    /// system temporary directory. The first one that can be written wins, so
    /// a read-only data directory (a system path) still works.
    pub fn default_dirs() -> Self {
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d).join("idx-softmax"));
        }
        if let Some(d) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(d).join(".cache").join("idx-softmax"));
        }
        dirs.push(std::env::temp_dir().join("idx-softmax-cache"));
        Self { dirs }
    }

    /// Returns the path of a valid raw copy of the gzip file `gz`, building
    /// it if needed.
    pub fn decompressed(&self, gz: &Path) -> Result<PathBuf, DataError> {
        let name = cache_name(gz)?;
        // A valid copy in any candidate directory will do.
        for dir in &self.dirs {
            let candidate = dir.join(&name);
            if is_valid_idx(&candidate) {
                return Ok(candidate);
            }
        }
        let mut tried = Vec::new();
        for dir in &self.dirs {
            match build_cache_file(gz, dir, &name) {
                Ok(path) => return Ok(path),
                // The input itself is bad: no other directory will help.
                Err(BuildError::Input(e)) => return Err(e),
                Err(BuildError::Dir(msg)) => tried.push(format!("{} ({msg})", dir.display())),
            }
        }
        Err(DataError::CacheUnwritable {
            path: gz.to_owned(),
            tried: tried.join("; "),
        })
    }
}

/// `train-images-idx3-ubyte.gz` → `train-images-idx3-ubyte-<16 hex>.idx`.
fn cache_name(gz: &Path) -> Result<String, DataError> {
    let abs = fs::canonicalize(gz).map_err(|e| io_err(gz, e))?;
    let meta = fs::metadata(&abs).map_err(|e| io_err(gz, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(abs.to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    let key = hex(&h.finalize()[..8]);
    let file_name = gz
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file_name.strip_suffix(".gz").unwrap_or(&file_name);
    Ok(format!("{stem}-{key}.idx"))
}

fn is_valid_idx(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: read-only mapping of a cache file that is only ever replaced
    // by rename, never modified in place; dropped before returning.
    match unsafe { Mmap::map(&file) } {
        Ok(map) => idx::parse(&map).is_ok(),
        Err(_) => false,
    }
}

enum BuildError {
    /// The source file is at fault.
    Input(DataError),
    /// This cache directory could not be used.
    Dir(String),
}

/// Decompresses `gz` into `dir/name` atomically, checking as it streams that
/// the output is exactly the size its IDX header announces (so a
/// decompression bomb cannot fill the disk) and, when the data directory has
/// a `SHA256SUMS` entry for the file, that the digest matches.
fn build_cache_file(gz: &Path, dir: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let input = |e: DataError| BuildError::Input(e);
    let gz_err = |e: io::Error| {
        BuildError::Input(DataError::Gzip {
            path: gz.to_owned(),
            msg: e.to_string(),
        })
    };
    fs::create_dir_all(dir).map_err(|e| BuildError::Dir(e.to_string()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| BuildError::Dir(e.to_string()))?;

    let file = File::open(gz).map_err(|e| input(io_err(gz, e)))?;
    let mut reader = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));

    // Read the fixed part of the header, then the dims, then the payload.
    let mut head = vec![0u8; 4];
    let got = read_up_to(&mut reader, &mut head).map_err(gz_err)?;
    head.truncate(got);
    if got == 4 {
        let ndims = head[3] as usize;
        let mut dims = vec![0u8; 4 * ndims];
        let got = read_up_to(&mut reader, &mut dims).map_err(gz_err)?;
        head.extend_from_slice(&dims[..got]);
    }
    let (_, expected) = idx::parse_header(&head).map_err(|source| {
        input(DataError::Idx {
            path: gz.to_owned(),
            source,
        })
    })?;

    let mut hasher = Sha256::new();
    hasher.update(&head);
    let dir_err = |e: io::Error| BuildError::Dir(e.to_string());
    tmp.write_all(&head).map_err(dir_err)?;
    let mut written = head.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    // One byte past the expected size is enough to report "extra bytes".
    while written <= expected {
        let n = reader.read(&mut buf).map_err(gz_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(dir_err)?;
        written += n as u64;
    }
    if written < expected {
        return Err(input(DataError::Idx {
            path: gz.to_owned(),
            source: IdxError::Truncated {
                expected,
                found: written,
            },
        }));
    }
    if written > expected {
        return Err(input(invalid(
            gz,
            format!("decompresses to more than the {expected} bytes its IDX header announces"),
        )));
    }
    let digest = hex(&hasher.finalize());
    let raw_name = name.rsplit_once('-').map_or(name, |(stem, _)| stem);
    if let Some(want) = expected_sha256(gz, raw_name) {
        if want != digest {
            return Err(input(invalid(
                gz,
                format!("SHA-256 of the decompressed data is {digest}, but SHA256SUMS says {want}"),
            )));
        }
    }
    tmp.as_file().sync_all().map_err(dir_err)?;
    let dest = dir.join(name);
    tmp.persist(&dest)
        .map_err(|e| BuildError::Dir(e.error.to_string()))?;
    Ok(dest)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Looks up `raw_name` in a `SHA256SUMS` file beside `gz`, if there is one.
fn expected_sha256(gz: &Path, raw_name: &str) -> Option<String> {
    let sums = fs::read_to_string(gz.parent()?.join("SHA256SUMS")).ok()?;
    sums.lines().find_map(|line| {
        let (digest, file) = line.split_once(char::is_whitespace)?;
        let file = file.trim_start().trim_start_matches('*');
        (file == raw_name).then(|| digest.to_ascii_lowercase())
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The image file of one split: `n` samples of `features` elements each.
#[derive(Debug)]
pub struct Images {
    file: IdxFile,
    len: usize,
    features: usize,
}

impl Images {
    /// Checks the shape (a sample axis plus at least one more) and the
    /// element type (u8, f32 or f64).
    pub fn new(file: IdxFile) -> Result<Self, DataError> {
        let dims = &file.header.dims;
        if dims.len() < 2 {
            return Err(invalid(
                &file.path,
                format!(
                    "images need a sample axis and at least one more axis; found dims {dims:?}"
                ),
            ));
        }
        let ty = file.header.element_type;
        if !matches!(ty, ElementType::U8 | ElementType::F32 | ElementType::F64) {
            return Err(invalid(
                &file.path,
                format!("unsupported element type {ty} for images (supported: u8, f32, f64)"),
            ));
        }
        let len = dims[0];
        let features: usize = dims[1..].iter().product();
        if len == 0 || features == 0 {
            return Err(invalid(&file.path, format!("no data: dims {dims:?}")));
        }
        Ok(Self {
            file,
            len,
            features,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Elements per sample (784 for MNIST).
    pub fn features(&self) -> usize {
        self.features
    }
    /// The per-sample shape (e.g. `[28, 28]`).
    pub fn sample_shape(&self) -> &[usize] {
        &self.file.header.dims[1..]
    }
    pub fn element_type(&self) -> ElementType {
        self.file.header.element_type
    }
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// All pixels as u8, row-major `len × features`, when the file is u8.
    /// This is the zero-copy view the fused kernels read.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.element_type() == ElementType::U8).then(|| self.file.payload())
    }

    /// Writes sample `i` into `out` (length `features`) as f32: u8 scaled by
    /// [`U8_SCALE`], f32 as is, f64 rounded to f32.
    pub fn row_into_f32(&self, i: usize, out: &mut [f32]) {
        let f = self.features;
        let payload = self.file.payload();
        match self.element_type() {
            ElementType::U8 => {
                crate::kernels::convert::u8_to_f32(&payload[i * f..(i + 1) * f], out)
            }
            ElementType::F32 => {
                for (o, b) in out
                    .iter_mut()
                    .zip(payload[i * f * 4..(i + 1) * f * 4].chunks_exact(4))
                {
                    *o = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            ElementType::F64 => {
                for (o, b) in out
                    .iter_mut()
                    .zip(payload[i * f * 8..(i + 1) * f * 8].chunks_exact(8))
                {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *o = f64::from_be_bytes(a) as f32;
                }
            }
            // Rejected in `Images::new`.
            _ => unreachable!("unsupported image element type"),
        }
    }
}

/// The label file of one split, validated: every label is an integer in
/// `0..classes`. Labels are decoded to `u32` once (4 bytes a sample: 240 KB
/// for MNIST's training set, far below the images, which stay mapped).
#[derive(Debug)]
pub struct Labels {
    path: PathBuf,
    values: Vec<u32>,
}

impl Labels {
    pub fn new(file: IdxFile) -> Result<Self, DataError> {
        let dims = &file.header.dims;
        if dims.len() != 1 {
            return Err(invalid(
                &file.path,
                format!("labels must be 1-D; found dims {dims:?}"),
            ));
        }
        let ty = file.header.element_type;
        if matches!(ty, ElementType::F32 | ElementType::F64) {
            return Err(invalid(
                &file.path,
                format!("unsupported element type {ty} for labels (supported: u8, i8, i16, i32)"),
            ));
        }
        let size = ty.size();
        let mut values = Vec::with_capacity(dims[0]);
        for (i, bytes) in file.payload().chunks_exact(size).enumerate() {
            let v = idx::decode_f64(ty, bytes);
            if v < 0.0 {
                return Err(invalid(
                    &file.path,
                    format!("label {i} is {v}: labels must be non-negative"),
                ));
            }
            values.push(v as u32);
        }
        Ok(Self {
            path: file.path,
            values,
        })
    }
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    pub fn as_slice(&self) -> &[u32] {
        &self.values
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Largest label, or `None` when empty.
    pub fn max(&self) -> Option<u32> {
        self.values.iter().copied().max()
    }
    fn check_below(&self, classes: usize) -> Result<(), DataError> {
        if let Some((i, &v)) = self
            .values
            .iter()
            .enumerate()
            .find(|(_, &v)| v as usize >= classes)
        {
            return Err(invalid(
                &self.path,
                format!("label {i} is {v}, outside 0..{classes} (the number of classes)"),
            ));
        }
        Ok(())
    }
}

/// Images and labels of one split (train or test).
#[derive(Debug)]
pub struct Split {
    pub images: Images,
    pub labels: Labels,
}

impl Split {
    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// A training and a test split with the same sample shape.
#[derive(Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    /// Number of classes: `--classes`, or the largest training label + 1.
    pub classes: usize,
}

/// How to load a dataset.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub cache: GzCache,
    /// Number of classes; inferred from the training labels when `None`.
    pub classes: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            cache: GzCache::default_dirs(),
            classes: None,
        }
    }
}

/// The four files of a dataset, by role.
const ROLES: [(&str, &str, &str); 4] = [
    ("training images", "train-images", "idx3-ubyte"),
    ("training labels", "train-labels", "idx1-ubyte"),
    ("test images", "t10k-images", "idx3-ubyte"),
    ("test labels", "t10k-labels", "idx1-ubyte"),
];

/// The accepted names for one role: `stem-suffix` and `stem.suffix`, each
/// raw or with `.gz`.
fn accepted_names(stem: &str, suffix: &str) -> [String; 4] {
    [
        format!("{stem}-{suffix}"),
        format!("{stem}.{suffix}"),
        format!("{stem}-{suffix}.gz"),
        format!("{stem}.{suffix}.gz"),
    ]
}

/// Finds the file for one role in `dir`. A raw file is preferred over a
/// `.gz` (it needs no cache).
pub fn find_file(
    dir: &Path,
    role: &'static str,
    stem: &str,
    suffix: &str,
) -> Result<PathBuf, DataError> {
    let names = accepted_names(stem, suffix);
    for name in &names {
        let path = dir.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(DataError::Missing {
        dir: dir.to_owned(),
        role,
        names: names.to_vec(),
    })
}

impl Dataset {
    /// Loads the four files from `dir` and validates them together.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self, DataError> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(invalid(dir, "is not a directory")),
            Err(e) => return Err(io_err(dir, e)),
        }
        let mut paths = Vec::with_capacity(4);
        for (role, stem, suffix) in ROLES {
            paths.push(find_file(dir, role, stem, suffix)?);
        }
        let open = |p: &Path| IdxFile::open(p, &opts.cache);
        let train = Split::open(open(&paths[0])?, open(&paths[1])?)?;
        let test = Split::open(open(&paths[2])?, open(&paths[3])?)?;
        if train.images.sample_shape() != test.images.sample_shape() {
            return Err(invalid(
                test.images.path(),
                format!(
                    "sample shape {:?} differs from the training images' {:?}",
                    test.images.sample_shape(),
                    train.images.sample_shape()
                ),
            ));
        }
        let classes = match opts.classes {
            Some(c) => c,
            None => train.labels.max().map_or(0, |m| m as usize + 1),
        };
        if classes < 2 {
            return Err(invalid(
                train.labels.path(),
                format!("{classes} class(es): softmax regression needs at least 2"),
            ));
        }
        train.labels.check_below(classes)?;
        test.labels.check_below(classes)?;
        Ok(Self {
            train,
            test,
            classes,
        })
    }

    /// Elements per sample.
    pub fn features(&self) -> usize {
        self.train.images.features()
    }
}

impl Split {
    /// Pairs an image file with a label file and checks the counts agree.
    pub fn open(images: IdxFile, labels: IdxFile) -> Result<Self, DataError> {
        let images = Images::new(images)?;
        let labels = Labels::new(labels)?;
        if images.len() != labels.len() {
            return Err(invalid(
                labels.path(),
                format!(
                    "{} labels, but {} has {} images",
                    labels.len(),
                    images.path().display(),
                    images.len()
                ),
            ));
        }
        Ok(Self { images, labels })
    }
}
