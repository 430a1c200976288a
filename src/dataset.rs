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

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};

use crate::idx::{self, ElementType, IdxError, IdxHeader, MAX_HEADER_LEN};
use crate::samples::{LabelValues as SampleLabels, Pixels, Samples};
use std::borrow::Cow;

pub use crate::pixels::U8_SCALE;

/// Environment variable naming the decompression cache directory.
pub const CACHE_ENV: &str = "IDX_SOFTMAX_CACHE_DIR";

/// The most classes a dataset may have, whether inferred from the labels or
/// given. It keeps a stray huge label (say 2,000,000,000 in an i32 file)
/// from turning into a huge weight matrix.
pub const MAX_CLASSES: usize = 1 << 16;

/// The most weights (features × classes) a model may have: 2^28 f32 is
/// 1 GiB, and training holds a gradient of the same size.
pub const MAX_WEIGHTS: usize = 1 << 28;

/// Deflate cannot expand data by more than 1032:1, so a gzip file of `n`
/// bytes decompresses to at most `n × 1032` bytes. A header that announces
/// more is rejected before anything is decompressed.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// A failure to load a dataset. Each message is one line and names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // The IDX error is part of this message, not a separate `source`, so
    // that a chain printer (anyhow's `{:#}`) does not repeat it.
    #[error("{}: {error}", path.display())]
    Idx { path: PathBuf, error: IdxError },
    /// The decompressed contents of a gzip file are not valid IDX.
    #[error("{}: decompressed contents: {error}", path.display())]
    GzIdx { path: PathBuf, error: IdxError },
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
    /// A load option is out of range (no file is at fault).
    #[error("{0}")]
    Options(String),
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

/// Explains why `path` cannot be opened as a regular file, following
/// symbolic links, or returns it opened, with its metadata (see
/// [`crate::fsutil::open_regular`]: nothing that is not a regular file is
/// ever opened).
fn open_regular_file(path: &Path) -> Result<(File, fs::Metadata), DataError> {
    use crate::fsutil::InputError;
    crate::fsutil::open_regular(path).map_err(|e| match e {
        InputError::Io(e) => io_err(path, format_args!("cannot open: {e}")),
        // Reading a FIFO would block forever, and a device never ends.
        other => invalid(path, format!("{other}, expected an IDX file")),
    })
}

/// One validated IDX file, memory-mapped.
pub struct IdxFile {
    /// The path the user's directory holds (the `.gz` if it was compressed),
    /// used in every message.
    path: PathBuf,
    map: Mmap,
    header: IdxHeader,
    /// Names this mapping in the SIGBUS report of [`crate::signals`].
    #[cfg(unix)]
    _registered: crate::signals::MapGuard,
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
    ///
    /// The header is read and checked against the file's length before
    /// anything is mapped or allocated, so a small file that claims a huge
    /// payload fails at once.
    pub fn open(path: &Path, cache: &GzCache) -> Result<Self, DataError> {
        let (mut file, meta) = open_regular_file(path)?;
        let mut prefix = [0u8; MAX_HEADER_LEN];
        let n = crate::fsutil::read_up_to(&mut file, &mut prefix).map_err(|e| io_err(path, e))?;
        let prefix = &prefix[..n];
        if prefix.starts_with(&idx::GZIP_MAGIC) {
            let raw = cache.decompressed(path)?;
            return Self::map_raw(path, &raw);
        }
        let idx_err = |error| DataError::Idx {
            path: path.to_owned(),
            error,
        };
        let (header, expected) = idx::parse_header(prefix).map_err(idx_err)?;
        idx::check_len(&header, expected, meta.len()).map_err(idx_err)?;
        Self::map_file(path, &file, false)
    }

    fn map_raw(user_path: &Path, raw: &Path) -> Result<Self, DataError> {
        let (file, _) = crate::fsutil::open_regular(raw).map_err(|e| io_err(raw, e))?;
        Self::map_file(user_path, &file, true)
    }

    fn map_file(path: &Path, file: &File, decompressed: bool) -> Result<Self, DataError> {
        // SAFETY: the mapping is read-only and lives as long as `IdxFile`;
        // nothing in this process writes to the file. Another process
        // truncating or rewriting it could still fault or change what we
        // read: that hazard, and what guards it, is described at the top of
        // this module (cache files are never modified in place). `populate`
        // pre-faults the pages so the training loop takes no page faults on
        // its random row reads; the length was validated before mapping.
        let map =
            unsafe { MmapOptions::new().populate().map(file) }.map_err(|e| io_err(path, e))?;
        // Re-checked on the mapping itself, in case the file changed since.
        let header = idx::parse(&map)
            .map_err(|error| {
                let path = path.to_owned();
                if decompressed {
                    DataError::GzIdx { path, error }
                } else {
                    DataError::Idx { path, error }
                }
            })?
            .header;
        #[cfg(unix)]
        let _registered = crate::signals::register_map(path, map.as_ptr(), map.len());
        Ok(Self {
            path: path.to_owned(),
            map,
            header,
            #[cfg(unix)]
            _registered,
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
/// and modification time, so a changed `.gz` gets a fresh copy. Beside each
/// cached file, `NAME.verified` records the SHA-256 it was built (and, with
/// a `SHA256SUMS`, checked) with, and the file's size, inode, mtime and
/// ctime. A cached file is used only while its record matches, the digest is
/// the one `SHA256SUMS` lists, and it parses as a complete IDX file;
/// otherwise it is rebuilt. So a cache file changed in any way since it was
/// verified (one flipped pixel byte too) is never used. Each copy is written to a temporary file in the cache directory,
/// fsynced, then renamed into place (and the directory fsynced), so a killed
/// process never leaves a half-written file under the final name, and a
/// file another process has mapped is never modified.
///
/// The directories are tried in order: the first that holds a valid copy
/// is used, else the first that can be written. So a read-only or missing
/// directory falls back to the next one; when none can be written, the
/// error lists each with its reason and says what to do.
#[derive(Debug, Clone)]
pub struct GzCache {
    dirs: Vec<PathBuf>,
}

impl GzCache {
    /// Uses exactly `dir` (`--cache-dir`): a user's explicit choice is not
    /// second-guessed; if it cannot be written the error says so.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dirs: vec![dir.into()],
        }
    }

    /// Tries `dirs` in order.
    pub fn with_dirs(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The default search order: `$IDX_SOFTMAX_CACHE_DIR`, then
    /// `$XDG_CACHE_HOME/idx-softmax`, `$HOME/.cache/idx-softmax`, and the
    /// system temporary directory. The first one that can be written wins, so
    /// a read-only home directory (a sandbox, a container) still works.
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
        // A copy counts only if it is unchanged since it was verified (its
        // record matches) and still parses.
        let raw_name = raw_name(&name);
        let want = expected_sha256(gz, raw_name);
        for dir in &self.dirs {
            let candidate = dir.join(&name);
            if record_matches(&candidate, want.as_deref()) && is_valid_idx(&candidate) {
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
        if tried.is_empty() {
            tried.push("no cache directory configured".to_owned());
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

/// `train-images-idx3-ubyte-<16 hex>.idx` → `train-images-idx3-ubyte`, the
/// name `SHA256SUMS` lists.
fn raw_name(cache_name: &str) -> &str {
    cache_name
        .rsplit_once('-')
        .map_or(cache_name, |(stem, _)| stem)
}

/// The integrity record of a cache file: `NAME.verified` beside it.
fn record_path(cache_file: &Path) -> PathBuf {
    let mut name = cache_file.file_name().unwrap_or_default().to_owned();
    name.push(".verified");
    cache_file.with_file_name(name)
}

/// First line of an integrity record.
const RECORD_MAGIC: &str = "idx-softmax cache record 1";

/// The identity of a file's current content as far as the file system
/// tracks it: size, inode, modification and status-change times. Any write
/// to the file changes its ctime, which no user can set back.
fn file_identity(meta: &fs::Metadata) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        format!(
            "size {}\ndev {}\ninode {}\nmtime {}.{:09}\nctime {}.{:09}\n",
            meta.size(),
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
    }
    #[cfg(not(unix))]
    {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("size {}\nmtime {mtime}\n", meta.len())
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// File-system timestamps are coarse (a clock tick, up to 10 ms): a change
/// made within this long after the file's ctime was recorded could leave
/// every recorded field equal. Such a "racy" record is trusted only after a
/// full check of the content (once: the record is then rewritten).
const RACY_NANOS: u128 = 100_000_000;

fn record_text(digest: &str, meta: &fs::Metadata) -> String {
    format!(
        "{RECORD_MAGIC}\nsha256 {digest}\nwritten {}\n{}",
        unix_nanos(SystemTime::now()),
        file_identity(meta)
    )
}

/// Writes the integrity record of `cache_file`, verified to hold `digest`.
/// Failing to write it only costs a rebuild next time.
fn write_record(cache_file: &Path, digest: &str) {
    if let Ok(meta) = fs::symlink_metadata(cache_file) {
        let record = record_text(digest, &meta);
        let _ = crate::fsutil::write_atomic(&record_path(cache_file), |f| {
            f.write_all(record.as_bytes())
        });
    }
}

/// Whether `cache_file` is exactly the file that was verified when it was
/// built: its record exists, names the digest `SHA256SUMS` wants (when there
/// is an entry), and matches the file's size, inode and times. One `stat`
/// and one small read: the per-run cost is negligible (except once, right
/// after a build, when the record is racy and the content is hashed).
fn record_matches(cache_file: &Path, want: Option<&str>) -> bool {
    let Ok(meta) = fs::symlink_metadata(cache_file) else {
        return false;
    };
    let Ok(record) = crate::fsutil::read_regular_to_string(&record_path(cache_file)) else {
        return false;
    };
    let mut lines = record.splitn(4, '\n');
    let (Some(RECORD_MAGIC), Some(digest), Some(written), Some(identity)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return false;
    };
    let (Some(digest), Some(written)) = (
        digest.strip_prefix("sha256 "),
        written
            .strip_prefix("written ")
            .and_then(|w| w.parse::<u128>().ok()),
    ) else {
        return false;
    };
    if want.is_some_and(|w| w != digest) || !meta.is_file() || identity != file_identity(&meta) {
        return false;
    }
    let ctime = {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            (meta.ctime().max(0) as u128) * 1_000_000_000 + meta.ctime_nsec().max(0) as u128
        }
        #[cfg(not(unix))]
        {
            meta.modified().map_or(0, unix_nanos)
        }
    };
    if written > ctime + RACY_NANOS {
        return true;
    }
    // Racy: hash the content once, and record it as verified if it holds.
    let Ok((mut file, _)) = crate::fsutil::open_regular(cache_file) else {
        return false;
    };
    let mut hasher = Sha256::new();
    if io::copy(&mut file, &mut hasher).is_err() || hex(&hasher.finalize()) != digest {
        return false;
    }
    write_record(cache_file, digest);
    true
}

fn is_valid_idx(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() == 0 {
        return false;
    }
    let Ok((file, _)) = crate::fsutil::open_regular(path) else {
        return false;
    };
    // SAFETY: read-only mapping of a regular cache file that is only ever
    // replaced by rename, never modified in place; it is dropped before
    // returning and only its length and header are read.
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

/// Prefix of the temporary files the cache is built in.
const PARTIAL_PREFIX: &str = ".partial-";

/// Removes temporary files left in `dir` by killed processes (those more
/// than a day old, so that a build in progress elsewhere is left alone).
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let cutoff = SystemTime::now() - Duration::from_secs(24 * 3600);
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTIAL_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Decompresses `gz` into `dir/name` atomically, checking as it streams that
/// the output is exactly the size its IDX header announces (so a
/// decompression bomb cannot fill the disk) and, when the data directory has
/// a `SHA256SUMS` entry for the file, that the digest matches.
fn build_cache_file(gz: &Path, dir: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let input = BuildError::Input;
    let gz_err = |e: io::Error| {
        BuildError::Input(DataError::Gzip {
            path: gz.to_owned(),
            msg: e.to_string(),
        })
    };
    let gz_idx = |error: IdxError| {
        BuildError::Input(DataError::GzIdx {
            path: gz.to_owned(),
            error,
        })
    };
    let dir_err = |e: io::Error| BuildError::Dir(e.to_string());

    let (mut file, _) = crate::fsutil::open_regular(gz).map_err(|e| input(io_err(gz, e)))?;
    let gz_len = file.metadata().map_err(|e| input(io_err(gz, e)))?.len();
    // Validate the decompressed header before touching the cache directory.
    let mut reader = flate2::read::MultiGzDecoder::new(io::BufReader::new(&mut file));
    let mut head = [0u8; MAX_HEADER_LEN];
    let got = crate::fsutil::read_up_to(&mut reader, &mut head).map_err(gz_err)?;
    let head = &head[..got];
    let (header, expected) = match idx::parse_header(head) {
        Ok(h) => h,
        Err(IdxError::Gzip) => return Err(input(invalid(
            gz,
            "decompresses to another gzip stream (compressed twice?); decompress it fully first",
        ))),
        Err(e) => return Err(gz_idx(e)),
    };
    let bound = gz_len.saturating_mul(MAX_DEFLATE_RATIO);
    if expected > bound {
        return Err(input(invalid(
            gz,
            format!(
                "decompressed contents: truncated: the IDX header announces {expected} bytes ({}), but a {gz_len}-byte gzip file cannot hold more than {bound}",
                header.layout()
            ),
        )));
    }

    fs::create_dir_all(dir).map_err(dir_err)?;
    remove_stale_partials(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(PARTIAL_PREFIX)
        .tempfile_in(dir)
        .map_err(dir_err)?;
    // Removed by the signal handlers if the run is interrupted.
    #[cfg(unix)]
    let _registered = crate::signals::register_temp(tmp.path());

    let mut hasher = Sha256::new();
    hasher.update(head);
    tmp.write_all(head).map_err(dir_err)?;
    let mut written = head.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    // Reading once more at `written == expected` drives the decoder to the
    // gzip trailer, whose CRC and length it checks; one byte past the
    // expected size is enough to report extra bytes.
    while written <= expected {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(gz_err(e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(dir_err)?;
        written += n as u64;
    }
    if written < expected {
        return Err(gz_idx(IdxError::Truncated {
            expected,
            found: written,
            header,
        }));
    }
    if written > expected {
        return Err(input(invalid(
            gz,
            format!(
                "decompressed contents: extra bytes at offset {expected}: expected {expected} bytes ({}), found more",
                header.layout()
            ),
        )));
    }
    let digest = hex(&hasher.finalize());
    if let Some(want) = expected_sha256(gz, raw_name(name)) {
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
    // Make the rename itself durable; a failure here only risks losing the
    // cache entry on a crash, never a torn file.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    // The record of what was verified: a later run uses the file only while
    // it is unchanged.
    write_record(&dest, &digest);
    Ok(dest)
}

/// Looks up `raw_name` in a `SHA256SUMS` file beside `gz`, if there is one.
fn expected_sha256(gz: &Path, raw_name: &str) -> Option<String> {
    let sums = crate::fsutil::read_regular_to_string(&gz.parent()?.join("SHA256SUMS")).ok()?;
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

    /// All pixels as u8, row-major `len × features`, when the file is u8.
    /// This is the zero-copy view the fused kernels read.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.element_type() == ElementType::U8).then(|| self.file.payload())
    }

    /// Writes sample `i` into `out` (length `features`) as f32: u8 scaled by
    /// [`U8_SCALE`], f32 as is, f64 rounded to f32.
    ///
    /// # Panics
    /// If `i >= len()` or `out.len() != features()`.
    pub fn row_into_f32(&self, i: usize, out: &mut [f32]) {
        let f = self.features;
        assert_eq!(out.len(), f, "row_into_f32: output length");
        let payload = self.file.payload();
        match self.element_type() {
            ElementType::U8 => crate::pixels::u8_to_f32(&payload[i * f..(i + 1) * f], out),
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
    values: LabelValues,
}

#[derive(Debug)]
enum LabelValues {
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
                values: LabelValues::Mapped(file),
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
            values: LabelValues::Decoded(values),
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
            LabelValues::Mapped(file) => file.payload()[i] as u32,
            LabelValues::Decoded(v) => v[i],
        }
    }
    /// The mapped label bytes, when the file holds u8 labels (the zero-copy
    /// view the Python front end hands out); `None` for decoded labels.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.values {
            LabelValues::Mapped(file) => Some(file.payload()),
            LabelValues::Decoded(_) => None,
        }
    }
    /// The decoded labels, when the file holds wider integers than u8.
    pub fn as_u32(&self) -> Option<&[u32]> {
        match &self.values {
            LabelValues::Mapped(_) => None,
            LabelValues::Decoded(v) => Some(v),
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
            LabelValues::Mapped(file) => file.payload().iter().max().map(|&v| v as u32),
            LabelValues::Decoded(v) => v.iter().copied().max(),
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
        if let Some((i, v)) = self.first_at_least(classes) {
            let why = match source {
                ClassSource::Given => "the number of classes given".to_owned(),
                ClassSource::Inferred => {
                    "the number of classes, inferred from the largest training label; set --classes to change it".to_owned()
                }
            };
            return Err(invalid(
                &self.path,
                format!(
                    "label {i} (byte offset {}) is {v}, outside 0..{classes} ({why})",
                    self.offset_of(i)
                ),
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
pub fn accepted_names(stem: &str, suffix: &str) -> [String; 4] {
    [
        format!("{stem}-{suffix}"),
        format!("{stem}.{suffix}"),
        format!("{stem}-{suffix}.gz"),
        format!("{stem}.{suffix}.gz"),
    ]
}

/// Finds the file for one role in `dir`. A raw file is preferred over a
/// `.gz` (it needs no cache). Any directory entry under an accepted name
/// counts (a directory or a dangling link too), as does a name that cannot
/// be looked up for a reason other than absence, so that opening it can say
/// exactly what is wrong.
pub fn find_file(
    dir: &Path,
    role: &'static str,
    stem: &str,
    suffix: &str,
) -> Result<PathBuf, DataError> {
    let names = accepted_names(stem, suffix);
    for name in &names {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            // Present, or present but unreadable (say, permission denied):
            // opening it will say which.
            Ok(_) => return Ok(path),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Ok(path),
            Err(_) => {}
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
        if let Some(c) = opts.classes {
            if !(2..=MAX_CLASSES).contains(&c) {
                return Err(DataError::Options(format!(
                    "{c} classes requested: expected 2 to {MAX_CLASSES}"
                )));
            }
        }
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(invalid(
                    dir,
                    "is not a directory, expected a data directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(dir, "data directory does not exist"))
            }
            Err(e) => return Err(io_err(dir, format_args!("cannot read data directory: {e}"))),
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
    if max + 1 > MAX_CLASSES {
        let (i, v) = labels
            .first_at_least(MAX_CLASSES)
            .expect("the maximum is at least MAX_CLASSES");
        return Err(invalid(
            labels.path(),
            format!(
                "label {i} (byte offset {}) is {v}: inferring {} classes from it exceeds the limit of {MAX_CLASSES}; pass --classes N to check the labels against N classes",
                labels.offset_of(i),
                v as u64 + 1
            ),
        ));
    }
    if max + 1 < 2 {
        return Err(invalid(
            labels.path(),
            "every training label is 0, so only 1 class can be inferred: softmax regression needs at least 2 (pass --classes N)",
        ));
    }
    Ok(max + 1)
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
            LabelValues::Mapped(file) => SampleLabels::U8(file.payload()),
            LabelValues::Decoded(v) => SampleLabels::U32(Cow::Borrowed(v)),
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
