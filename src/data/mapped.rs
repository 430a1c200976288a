//! One validated IDX file, memory-mapped: the header is checked against
//! the file's length before anything is mapped, and again on the mapping
//! (see [the module documentation](super) for what a mapping can and cannot
//! guard against).

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};

use super::gz_cache::GzCache;
use super::idx::{self, IdxHeader, MAX_HEADER_LEN};
use super::{invalid, io_err, DataError};

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
    pub(super) path: PathBuf,
    map: Mmap,
    pub(super) header: IdxHeader,
    /// Names this mapping in the SIGBUS report of [`crate::signals`].
    #[cfg(unix)]
    _registered: crate::signals::MapGuard,
    /// Keeps the user's file (the `.gz` for a compressed one) from being
    /// replaced by any output of this process while it is in use.
    _held: Option<crate::fsutil::InputHold>,
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
            let mut mapped = Self::map_raw(path, &raw)?;
            mapped._held = Some(crate::fsutil::hold_input(path));
            return Ok(mapped);
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
        // The file mapped is the user's unless it is a cache copy: then
        // `open` holds the `.gz` instead.
        let _held = (!decompressed).then(|| crate::fsutil::hold_input(path));
        Ok(Self {
            path: path.to_owned(),
            map,
            header,
            #[cfg(unix)]
            _registered,
            _held,
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
