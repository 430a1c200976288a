//! The decompression cache for `.gz` IDX files: each is decompressed once,
//! verified, written atomically and recorded, so later runs map the raw
//! copy (see [`GzCache`]).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::idx::{self, IdxError, MAX_HEADER_LEN};
use super::{invalid, io_err, DataError, CACHE_ENV};

/// Deflate cannot expand data by more than 1032:1, so a gzip file of `n`
/// bytes decompresses to at most `n × 1032` bytes. A header that announces
/// more is rejected before anything is decompressed.
pub(super) const MAX_DEFLATE_RATIO: u64 = 1032;

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
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
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
    if io::copy(&mut file, &mut hasher).is_err() || format!("{:x}", hasher.finalize()) != digest {
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
    let digest = format!("{:x}", hasher.finalize());
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
