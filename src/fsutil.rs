//! Small file-system helpers shared by the writers ([`crate::checkpoint`],
//! [`crate::image`]).

use std::fs::File;
use std::io;
use std::path::Path;

/// Longest stretch of the destination's name copied into the temporary
/// file's name, so that the temporary name stays under the usual 255-byte
/// limit however long the destination's name is.
const TEMP_NAME_CHARS: usize = 64;

/// Writes `path` atomically: `write` fills a temporary file created in the
/// same directory, which is then flushed to disk (`fsync`) and renamed over
/// `path`.
///
/// Either the whole new content ends up under `path`, or `path` is left as
/// it was (absent, or holding its previous content): a failure at any step,
/// including an error returned by `write`, removes the temporary file. A
/// process killed in the middle may leave a hidden temporary file
/// (`.NAME.XXXXXX.tmp`) beside `path`, never a partial `path`.
///
/// The new file gets the default permissions of a newly created file
/// (`0o666` less the umask on Unix), not those of a file it replaces. If
/// `path` is a symbolic link, the link itself is replaced, not its target.
/// After the rename the directory is synced too (best effort), so that the
/// rename itself survives a crash.
///
/// `write` gets the raw [`File`]; wrap it in a [`std::io::BufWriter`] for
/// many small writes, and flush the buffer before returning.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stem: String = name
        .to_string_lossy()
        .chars()
        .take(TEMP_NAME_CHARS)
        .collect();
    let prefix = format!(".{stem}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Ordinary file permissions (the umask applies), rather than the
        // owner-only 0o600 of a temporary file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Flushes a directory entry change (a rename) to disk, where the platform
/// allows it. Errors are ignored: the data itself is already synced, and some
/// file systems refuse to sync directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Reads until `buf` is full or the reader ends; returns how many bytes
/// were read (a short count means end of input, unlike `read_exact`).
pub fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
