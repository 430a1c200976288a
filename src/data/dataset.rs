//! The four files of a dataset, found in a directory and validated
//! together, as views of their mappings: [`Images`], [`Labels`], a
//! [`Split`] of both, a [`Dataset`] of two splits.

use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::gz_cache::MAX_DEFLATE_RATIO;
use super::idx::{self, ElementType, IdxHeader, MAX_HEADER_LEN};
use super::mapped::IdxFile;
use super::samples::{LabelValues, Pixels, Samples};
use super::{invalid, io_err, ClassProblem, DataError, GzCache, MAX_CLASSES, MAX_WEIGHTS};

/// The image file of one split: `n` samples of `features` elements each.
#[derive(Debug)]
pub struct Images {
    file: IdxFile,
    len: usize,
    features: usize,
}

impl Images {
    /// Checks the shape (a sample axis plus at least one more, none empty),
    /// the element type (u8, f32 or f64) and, for floating-point files, that
    /// every value is finite as f32.
    pub fn new(file: IdxFile) -> Result<Self, DataError> {
        let dims = &file.header.dims;
        if dims.len() < 2 {
            return Err(invalid(
                &file.path,
                format!(
                    "images need a sample axis and at least one more axis; found dims {dims:?} (offset 4)"
                ),
            ));
        }
        let ty = file.header.element_type;
        if !matches!(ty, ElementType::U8 | ElementType::F32 | ElementType::F64) {
            return Err(invalid(
                &file.path,
                format!("unsupported element type {ty} (code 0x{:02x} at offset 2) for images (supported: u8, f32, f64)", ty.code()),
            ));
        }
        let len = dims[0];
        // Cannot overflow: the product of all dims was checked in `idx::parse`.
        let features: usize = dims[1..].iter().product();
        if len == 0 || features == 0 {
            return Err(invalid(
                &file.path,
                format!("no data: dims {dims:?} (offset 4); expected at least one sample of at least one element"),
            ));
        }
        if let Some((i, v)) = first_non_finite_f32(ty, file.payload()) {
            let (sample, element) = (i / features, i % features);
            let what = if v.is_finite() {
                "outside the f32 range"
            } else {
                "not finite"
            };
            return Err(invalid(
                &file.path,
                format!(
                    "image {sample}, element {element} (byte offset {}) is {v:?}: {what}; pixel values must be finite f32",
                    file.header.offset_of(i)
                ),
            ));
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

    /// The mapped file.
    pub fn file(&self) -> &IdxFile {
        &self.file
    }

    /// All pixels as u8, row-major `len × features`, when the file is u8.
    /// This is the zero-copy view the fused kernels read.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.element_type() == ElementType::U8).then(|| self.file.payload())
    }

    /// Writes sample `i` into `out` (length `features`) as f32: u8 scaled by
    /// [`super::U8_SCALE`], f32 as is, f64 rounded to f32.
    ///
    /// # Panics
    /// If `i >= len()` or `out.len() != features()`.
    pub fn row_into_f32(&self, i: usize, out: &mut [f32]) {
        let f = self.features;
        assert_eq!(out.len(), f, "row_into_f32: output length");
        let payload = self.file.payload();
        match self.element_type() {
            ElementType::U8 => crate::data::pixels::u8_to_f32(&payload[i * f..(i + 1) * f], out),
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

/// For f32 and f64 payloads: the index and value of the first element that
/// is not a finite f32 (NaN, ±∞, or an f64 beyond f32's range).
fn first_non_finite_f32(ty: ElementType, payload: &[u8]) -> Option<(usize, f64)> {
    match ty {
        ElementType::F32 => payload.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then_some((i, v as f64))
        }),
        ElementType::F64 => payload.chunks_exact(8).enumerate().find_map(|(i, b)| {
            let v = idx::decode_f64(ty, b);
            (!(v as f32).is_finite()).then_some((i, v))
        }),
        _ => None,
    }
}

/// How the number of classes was decided, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassSource {
    Given,
    Inferred,
}

/// The label file of one split, validated: every label is an integer in
/// `0..classes`. u8 labels (MNIST's) are read straight from the mapping;
/// other integer types are decoded to `u32` once.
#[derive(Debug)]
pub struct Labels {
    path: PathBuf,
    header: IdxHeader,
    values: LabelStore,
}

#[derive(Debug)]
enum LabelStore {
    /// u8 labels: the mapped file itself, no copy.
    Mapped(IdxFile),
    Decoded(Vec<u32>),
}

impl Labels {
    /// Checks the shape (1-D), the element type (an integer type) and that
    /// every label is non-negative.
    pub fn new(file: IdxFile) -> Result<Self, DataError> {
        let dims = &file.header.dims;
        if dims.len() != 1 {
            return Err(invalid(
                &file.path,
                format!("labels must be 1-D; found dims {dims:?} (offset 4)"),
            ));
        }
        let ty = file.header.element_type;
        if matches!(ty, ElementType::F32 | ElementType::F64) {
            return Err(invalid(
                &file.path,
                format!("unsupported element type {ty} (code 0x{:02x} at offset 2) for labels (supported: u8, i8, i16, i32)", ty.code()),
            ));
        }
        if ty == ElementType::U8 {
            // Every u8 is a valid non-negative label: keep the mapping.
            return Ok(Self {
                path: file.path.clone(),
                header: file.header.clone(),
                values: LabelStore::Mapped(file),
            });
        }
        let size = ty.size();
        // dims[0] was checked against the file's length: this allocation is
        // at most 4× the label payload.
        let mut values = Vec::with_capacity(dims[0]);
        for (i, bytes) in file.payload().chunks_exact(size).enumerate() {
            let v = idx::decode_f64(ty, bytes);
            if v < 0.0 {
                return Err(invalid(
                    &file.path,
                    format!(
                        "label {i} (byte offset {}) is {v}: labels must be non-negative",
                        file.header.offset_of(i)
                    ),
                ));
            }
            // Non-negative i32 and smaller types all fit in u32.
            values.push(v as u32);
        }
        Ok(Self {
            path: file.path,
            header: file.header,
            values: LabelStore::Decoded(values),
        })
    }
    pub fn len(&self) -> usize {
        self.header.dims[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label of sample `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match &self.values {
            LabelStore::Mapped(file) => file.payload()[i] as u32,
            LabelStore::Decoded(v) => v[i],
        }
    }
    /// The mapped label bytes, when the file holds u8 labels (the zero-copy
    /// view the Python front end hands out); `None` for decoded labels.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.values {
            LabelStore::Mapped(file) => Some(file.payload()),
            LabelStore::Decoded(_) => None,
        }
    }
    /// The decoded labels, when the file holds wider integers than u8.
    pub fn as_u32(&self) -> Option<&[u32]> {
        match &self.values {
            LabelStore::Mapped(_) => None,
            LabelStore::Decoded(v) => Some(v),
        }
    }
    /// All labels, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
    /// All labels as a vector (a copy: for tests and small tools).
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Largest label, or `None` when empty.
    pub fn max(&self) -> Option<u32> {
        match &self.values {
            LabelStore::Mapped(file) => file.payload().iter().max().map(|&v| v as u32),
            LabelStore::Decoded(v) => v.iter().copied().max(),
        }
    }
    /// Byte offset of label `i` in the file.
    pub fn offset_of(&self, i: usize) -> u64 {
        self.header.offset_of(i)
    }
    /// The first label `>= classes`, as (index, value).
    pub fn first_at_least(&self, classes: usize) -> Option<(usize, u32)> {
        self.iter()
            .enumerate()
            .find(|&(_, v)| v as usize >= classes)
    }
    fn check_below(&self, classes: usize, source: ClassSource) -> Result<(), DataError> {
        if let Some((index, value)) = self.first_at_least(classes) {
            return Err(DataError::Classes {
                path: self.path.clone(),
                problem: ClassProblem::Outside {
                    index,
                    offset: self.offset_of(index),
                    value,
                    classes,
                    inferred: source == ClassSource::Inferred,
                },
            });
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
pub fn accepted_names(stem: &str, suffix: &str) -> [String; 4] {
    [
        format!("{stem}-{suffix}"),
        format!("{stem}.{suffix}"),
        format!("{stem}-{suffix}.gz"),
        format!("{stem}.{suffix}.gz"),
    ]
}

/// The accepted names for one role that are present in `dir`: any
/// directory entry under the name (a directory or a dangling link too), or
/// a name that cannot be looked up for a reason other than absence, so
/// that opening it can say exactly what is wrong. In the order of
/// [`accepted_names`].
fn present(dir: &Path, stem: &str, suffix: &str) -> Vec<PathBuf> {
    accepted_names(stem, suffix)
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| match fs::symlink_metadata(path) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        })
        .collect()
}

/// Finds the file for one role in `dir`. A raw file is preferred over a
/// `.gz` (it needs no cache).
///
/// When two accepted names are present (`NAME` and `NAME.gz`, or the `-idx`
/// and `.idx` spellings), they must hold the same data: one file under two
/// names (a hard or symbolic link), or the same bytes once decompressed (a
/// `gunzip -k` leaves both). Otherwise the directory holds two versions of
/// the dataset and which one is meant cannot be told: that is an error
/// naming both ([`DataError::Ambiguous`]), never a silent choice. Comparing
/// costs one read of both files (and one decompression of a `.gz`) per
/// load, only while both exist.
pub fn find_file(
    dir: &Path,
    role: &'static str,
    stem: &str,
    suffix: &str,
) -> Result<PathBuf, DataError> {
    let found = present(dir, stem, suffix);
    let Some(first) = found.first() else {
        return Err(DataError::Missing {
            dir: dir.to_owned(),
            role,
            names: accepted_names(stem, suffix).to_vec(),
        });
    };
    for other in &found[1..] {
        if let Some(why) = differ(first, other) {
            return Err(DataError::Ambiguous {
                role,
                first: first.clone(),
                second: other.clone(),
                why,
            });
        }
    }
    Ok(first.clone())
}

/// Every file of the dataset in `dir`, in every accepted spelling present
/// (raw and `.gz`), with its role ("training images", …): what a command
/// reads, so that no output may replace it
/// ([`crate::fsutil::check_distinct`]). Nothing is opened; a missing
/// directory or role lists nothing (loading it reports that).
pub fn present_files(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    ROLES
        .iter()
        .flat_map(|&(role, stem, suffix)| {
            present(dir, stem, suffix)
                .into_iter()
                .map(move |p| (role, p))
        })
        .collect()
}

/// Why two spellings of one file cannot both be taken for it: `None` when
/// they are one file or hold the same data (compared decompressed, so
/// `NAME` and `NAME.gz` from `gunzip -k` agree).
fn differ(a: &Path, b: &Path) -> Option<String> {
    if crate::fsutil::same_file(a, b) {
        return None;
    }
    match same_content(a, b) {
        Ok(true) => None,
        Ok(false) => Some("hold different data".into()),
        Err(e) => Some(format!("cannot be compared ({e})")),
    }
}

/// A file's content as the loader reads it: decompressed if it is a gzip
/// stream (by its magic, as [`IdxFile::open`] decides), and its size on
/// disk.
fn content_reader(path: &Path) -> Result<(Box<dyn io::Read>, u64, bool), String> {
    use io::{Read, Seek};
    let show = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let (mut file, meta) = crate::fsutil::open_regular(path).map_err(|e| show(&e))?;
    let mut magic = [0u8; 2];
    let n = crate::fsutil::read_up_to(&mut file, &mut magic).map_err(|e| show(&e))?;
    file.seek(io::SeekFrom::Start(0)).map_err(|e| show(&e))?;
    let gz = magic[..n] == idx::GZIP_MAGIC;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)))
    } else {
        Box::new(io::BufReader::new(file))
    };
    Ok((reader, meta.len(), gz))
}

/// Whether `a` and `b` hold the same bytes once decompressed. Bounded: the
/// comparison stops at the first difference, at the end of a raw file, or
/// past the size the IDX header announces (so two decompression bombs are
/// not inflated), and a `.gz` that announces more than it can hold differs
/// from anything.
fn same_content(a: &Path, b: &Path) -> Result<bool, String> {
    let (mut ra, len_a, gz_a) = content_reader(a)?;
    let (mut rb, len_b, gz_b) = content_reader(b)?;
    let read = |r: &mut Box<dyn io::Read>, buf: &mut [u8], p: &Path| {
        crate::fsutil::read_up_to(r, buf).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut ha = [0u8; MAX_HEADER_LEN];
    let mut hb = [0u8; MAX_HEADER_LEN];
    let na = read(&mut ra, &mut ha, a)?;
    let nb = read(&mut rb, &mut hb, b)?;
    if ha[..na] != hb[..nb] {
        return Ok(false);
    }
    // The total size the header announces; an unreadable header is the
    // loader's to report, about the file it takes.
    let Ok((_, expected)) = idx::parse_header(&ha[..na]) else {
        return Ok(true);
    };
    for (len, gz) in [(len_a, gz_a), (len_b, gz_b)] {
        let most = if gz {
            len.saturating_mul(MAX_DEFLATE_RATIO)
        } else {
            len
        };
        if expected > most {
            return Ok(false);
        }
    }
    let mut left = (expected + 1).saturating_sub(na as u64);
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    while left > 0 {
        let want = left.min(ba.len() as u64) as usize;
        let na = read(&mut ra, &mut ba[..want], a)?;
        let nb = read(&mut rb, &mut bb[..want], b)?;
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < want {
            return Ok(true);
        }
        left -= na as u64;
    }
    Ok(true)
}

/// Checks that `dir` is a directory.
fn check_dir(dir: &Path) -> Result<(), DataError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(invalid(
            dir,
            "is not a directory, expected a data directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(invalid(dir, "data directory does not exist"))
        }
        Err(e) => Err(io_err(dir, format_args!("cannot read data directory: {e}"))),
    }
}

/// The file of role `r` (an index into [`ROLES`]) in `dir`.
fn find_role(dir: &Path, r: usize) -> Result<PathBuf, DataError> {
    let (role, stem, suffix) = ROLES[r];
    find_file(dir, role, stem, suffix)
}

impl Dataset {
    /// Loads the four files from `dir` and validates them together.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self, DataError> {
        if let Some(c) = opts.classes {
            if !(2..=MAX_CLASSES).contains(&c) {
                return Err(DataError::Options(format!(
                    "{c} classes requested: expected 2 to {MAX_CLASSES}"
                )));
            }
        }
        check_dir(dir)?;
        let paths = (0..ROLES.len())
            .map(|r| find_role(dir, r))
            .collect::<Result<Vec<_>, _>>()?;
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
        if train.images.element_type() != test.images.element_type() {
            // u8 is scaled to [0, 1] and floats are used as they are, so a
            // mix would evaluate the model on differently scaled inputs.
            return Err(invalid(
                test.images.path(),
                format!(
                    "element type {} differs from the training images' {}",
                    test.images.element_type(),
                    train.images.element_type()
                ),
            ));
        }
        let (classes, source) = match opts.classes {
            Some(c) => (c, ClassSource::Given),
            None => (infer_classes(&train.labels)?, ClassSource::Inferred),
        };
        let features = train.images.features();
        if features.saturating_mul(classes) > MAX_WEIGHTS {
            return Err(invalid(
                train.images.path(),
                format!(
                    "{features} features × {classes} classes = {} weights, more than the {MAX_WEIGHTS} supported",
                    features as u128 * classes as u128
                ),
            ));
        }
        train.labels.check_below(classes, source)?;
        test.labels.check_below(classes, source)?;
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

/// The number of classes implied by the training labels: the largest + 1,
/// between 2 and [`MAX_CLASSES`].
fn infer_classes(labels: &Labels) -> Result<usize, DataError> {
    let max = labels.max().unwrap_or(0) as usize;
    let problem = if max + 1 > MAX_CLASSES {
        let (index, value) = labels
            .first_at_least(MAX_CLASSES)
            .expect("the maximum is at least MAX_CLASSES");
        ClassProblem::TooMany {
            index,
            offset: labels.offset_of(index),
            value,
        }
    } else if max + 1 < 2 {
        ClassProblem::OnlyOne
    } else {
        return Ok(max + 1);
    };
    Err(DataError::Classes {
        path: labels.path().to_owned(),
        problem,
    })
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
                    "{} labels (dims at offset 4), but {} has {} images: the counts must be equal",
                    labels.len(),
                    images.path().display(),
                    images.len()
                ),
            ));
        }
        Ok(Self { images, labels })
    }

    /// The test split of the dataset in `dir` alone (what `eval` and
    /// `predict --test-index` read): its two files found and opened as
    /// [`Dataset::load`] does.
    pub fn load_test(dir: &Path, cache: &GzCache) -> Result<Self, DataError> {
        check_dir(dir)?;
        let (images, labels) = (find_role(dir, 2)?, find_role(dir, 3)?);
        Self::open(
            IdxFile::open(&images, cache)?,
            IdxFile::open(&labels, cache)?,
        )
    }

    /// The split as the engine's input, over the mapping: u8 pixels and u8
    /// labels are borrowed; f32/f64 pixels and wider labels (big-endian on
    /// disk) are decoded once. `classes` bounds the labels.
    pub fn samples(&self, classes: usize) -> Result<Samples<'_>, DataError> {
        let k = self.images.features();
        let pixels = match self.images.as_u8() {
            Some(p) => Pixels::U8(p),
            None => {
                let mut v = vec![0.0f32; self.len() * k];
                for (i, row) in v.chunks_exact_mut(k).enumerate() {
                    self.images.row_into_f32(i, row);
                }
                Pixels::F32(Cow::Owned(v))
            }
        };
        let labels = match &self.labels.values {
            LabelStore::Mapped(file) => LabelValues::U8(file.payload()),
            LabelStore::Decoded(v) => LabelValues::U32(Cow::Borrowed(v)),
        };
        Samples::new(
            pixels,
            labels,
            k,
            classes,
            self.images.sample_shape().to_vec(),
        )
        .map_err(|e| invalid(self.images.path(), e.to_string()))
    }
}
