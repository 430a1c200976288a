//! Small file-system helpers shared by the readers and writers
//! ([`crate::checkpoint`], [`crate::image`], [`crate::data`]).
//!
//! Every path the tool reads goes through [`regular_file`] /
//! [`open_regular`], which refuse directories, FIFOs, sockets and devices
//! *before* opening them (a FIFO would block a reader forever, a device never
//! ends). Every file it writes goes through [`write_atomic`], which refuses
//! to replace anything but a regular file, and [`probe_output`] checks a
//! target before any work is done.
//!
//! An output never replaces an input: [`check_distinct`] refuses, before
//! any work, every output that is another output or an input (the same
//! device and inode, or the same canonical path for a file yet to be
//! written: [`same_file`]); every front end calls it with its own names for
//! the files. As a last guard, [`write_atomic`] refuses to replace a file
//! this process holds as an input ([`hold_input`]: the mapped data files).
//!
//! Writers to one target may run at once (two runs given the same
//! `--save`): each holds an exclusive lock on its temporary file for as
//! long as the file exists, and the removal of stale temporary files takes
//! only those whose lock is free (their writer is gone), so a live writer's
//! file is never removed. The last rename wins, with a complete file.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Longest stretch of the destination's name copied into the temporary
/// file's name, so that the temporary name stays under the usual 255-byte
/// limit however long the destination's name is.
const TEMP_NAME_CHARS: usize = 64;

/// Why a path cannot be read as a regular file.
#[derive(Debug)]
pub enum InputError {
    /// The path could not be looked up or opened.
    Io(io::Error),
    /// A symbolic link whose target does not exist.
    DanglingLink,
    /// A directory.
    Directory,
    /// Something else that is not a regular file: `"a FIFO"`, `"a socket"`,
    /// `"a character device"`, `"a block device"`.
    NotRegular(&'static str),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot open: {e}"),
            Self::DanglingLink => f.write_str("is a dangling symbolic link"),
            Self::Directory => f.write_str("is a directory"),
            Self::NotRegular(kind) => write!(f, "is not a regular file ({kind})"),
        }
    }
}

impl std::error::Error for InputError {}

impl From<InputError> for io::Error {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Io(e) => e,
            InputError::DanglingLink => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// What kind of non-regular file `ft` is, for messages.
fn kind_of(ft: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
    }
    if ft.is_dir() {
        return "a directory";
    }
    let _ = ft;
    "a special file"
}

/// The metadata of `path`, following symbolic links, if it is a regular
/// file; otherwise what it is instead. Nothing is opened.
pub fn regular_file(path: &Path) -> Result<fs::Metadata, InputError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_ok() => {
            return Err(InputError::DanglingLink)
        }
        Err(e) => return Err(InputError::Io(e)),
    };
    if meta.is_dir() {
        return Err(InputError::Directory);
    }
    if !meta.is_file() {
        return Err(InputError::NotRegular(kind_of(meta.file_type())));
    }
    Ok(meta)
}

/// Opens `path` for reading if it is a regular file (see [`regular_file`]),
/// returning the file and its metadata.
///
/// The check happens before the open, and the open itself cannot block: it
/// is non-blocking, and the opened file is checked again (so a path swapped
/// for a FIFO in between is refused too).
pub fn open_regular(path: &Path) -> Result<(File, fs::Metadata), InputError> {
    regular_file(path)?;
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading would wait for a writer; non-blocking,
        // it returns at once (and is refused below). For a regular file the
        // flag changes nothing.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(InputError::Io)?;
    let meta = file.metadata().map_err(InputError::Io)?;
    if meta.is_dir() {
        return Err(InputError::Directory);
    }
    if !meta.is_file() {
        return Err(InputError::NotRegular(kind_of(meta.file_type())));
    }
    Ok((file, meta))
}

/// Reads a whole small text file, if it is a regular file (a FIFO put where
/// a side file is expected must not block the reader). A leading UTF-8
/// byte-order mark (which Windows editors write) is dropped.
pub fn read_regular_to_string(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let (mut file, _) = open_regular(path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if text.starts_with(BOM) {
        text.drain(..BOM.len_utf8());
    }
    Ok(text)
}

/// The UTF-8 byte-order mark, U+FEFF.
const BOM: char = '\u{feff}';

/// `text` without a leading byte-order mark: a text file saved by a Windows
/// editor starts with one, and it is not part of the first line.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// The directory `path` lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses to replace `path` when it exists and is neither a regular file
/// nor a symbolic link (which [`write_atomic`] replaces, not its target).
fn check_replaceable(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        )),
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file; refusing to replace it",
                kind_of(m.file_type())
            ),
        )),
        _ => Ok(()),
    }
}

/// The prefix of the temporary files written for `name`: `.NAME.`.
fn temp_prefix(name: &std::ffi::OsStr) -> String {
    let stem: String = name
        .to_string_lossy()
        .chars()
        .take(TEMP_NAME_CHARS)
        .collect();
    format!(".{stem}.")
}

/// Whether `entry` is a temporary file of ours for the target whose prefix
/// is `prefix`: `PREFIX` + 6 to 8 letters or digits + `.tmp`.
fn is_our_temp(entry: &str, prefix: &str) -> bool {
    entry
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|mid| {
            (6..=8).contains(&mid.len()) && mid.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// How old a temporary file must be before it is taken for stale where its
/// lock cannot tell (a file system without `flock`): no write lasts a day.
const STALE_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Takes an exclusive `flock` on `file`: waiting for it when `wait`, else
/// failing at once with `WouldBlock` when another open file holds it. The
/// lock lasts until the file is closed, and dies with its process (even by
/// SIGKILL), which is what tells a live writer's file from a stale one.
#[cfg(unix)]
fn lock(file: &File, wait: bool) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock(2) on a descriptor `file` owns and keeps open for
        // the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `a` and `b` are the same file system object (device and inode).
#[cfg(unix)]
fn same_inode(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Removes `path`, a temporary file of ours, if its writer is gone: nobody
/// holds its lock (it was killed: SIGKILL, power loss). A file whose lock
/// is held is a live writer's, and is left alone. Where locks do not work,
/// only a file older than [`STALE_AGE`] is taken for stale.
fn remove_if_stale(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        match lock(&file, false) {
            Ok(()) => {
                // Its writer is gone. Remove the file while holding its
                // lock, and only if the name still leads to it.
                if fs::symlink_metadata(path).is_ok_and(|m| same_inode(&m, &meta)) {
                    let _ = fs::remove_file(path);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => remove_if_old(path, &meta),
        }
    }
    #[cfg(not(unix))]
    if let Ok(meta) = fs::symlink_metadata(path) {
        remove_if_old(path, &meta);
    }
}

/// Removes `path` if it was last modified more than [`STALE_AGE`] ago.
fn remove_if_old(path: &Path, meta: &fs::Metadata) {
    let old = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_AGE);
    if old {
        let _ = fs::remove_file(path);
    }
}

/// Removes temporary files that an earlier, killed (SIGKILL, power loss)
/// write to the same target left in `dir`; those of writers still at work
/// (another process writing the same target) are left alone.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_our_temp(&name.to_string_lossy(), prefix)
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            remove_if_stale(&entry.path());
        }
    }
}

/// A new, empty temporary file `dir/PREFIX<8 hex>.tmp`, registered with
/// [`crate::signals`] before it exists, so that an interrupting signal
/// removes it, and locked (see [`remove_if_stale`]) for as long as it
/// exists.
fn create_temp(dir: &Path, prefix: &str) -> io::Result<TempFile> {
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(format!("{prefix}{:08x}.tmp", rand::random::<u32>()));
        #[cfg(unix)]
        let guard = crate::signals::register_temp(&path);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Ordinary file permissions (the umask applies).
            opts.mode(0o666);
        }
        match opts.open(&path) {
            Ok(file) => {
                #[cfg(unix)]
                {
                    // Another writer's cleanup may have taken the new file
                    // for stale in the instant before the lock: then its
                    // name is gone (or another's), and a new one is made.
                    // A file system without locks keeps it unlocked.
                    let locked = lock(&file, true).is_ok();
                    let ours = match (fs::symlink_metadata(&path), file.metadata()) {
                        (Ok(a), Ok(b)) => same_inode(&a, &b),
                        _ => false,
                    };
                    if locked && !ours {
                        last = Some(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "a temporary file was removed as it was made",
                        ));
                        continue;
                    }
                }
                return Ok(TempFile {
                    path,
                    file: Some(file),
                    #[cfg(unix)]
                    _guard: guard,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a temporary file")))
}

/// A temporary file that is removed when dropped, unless persisted. Its
/// lock is held until it is renamed or removed (the file is closed last).
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    #[cfg(unix)]
    _guard: crate::signals::TempGuard,
}

impl TempFile {
    /// Renames the file over `dest`, still locked, so that no other
    /// writer's cleanup can remove it first.
    fn persist(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
        // The lock goes with the file, after the name.
        drop(self.file.take());
    }
}

/// Checks, before any work, that [`write_atomic`] could write `path`: it is
/// not a directory or another non-regular file, its directory exists, and a
/// temporary file can be created (and is removed again) beside it. So a
/// read-only directory, a full file system or a path under `/proc` is found
/// out before a long run rather than after it.
pub fn probe_output(path: &Path) -> io::Result<()> {
    check_replaceable(path)?;
    check_not_held(path)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = parent_dir(path);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the directory {} does not exist", dir.display()),
            ))
        }
        Err(e) => return Err(e),
    }
    let prefix = temp_prefix(name);
    let tmp = create_temp(dir, &prefix).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create a file in {}: {e}", dir.display()),
        )
    })?;
    drop(tmp);
    Ok(())
}

/// The identity of an output path for comparing two of them: the
/// canonical directory joined with the file name, so `./a`, `a` and
/// `sub/../a` are one path. `None` when the directory cannot be resolved.
pub fn output_identity(path: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(parent_dir(path)).ok()?;
    Some(dir.join(path.file_name()?))
}

/// Whether `a` and `b` name one file: the same device and inode when both
/// exist (following symbolic links, so a link and its target are one
/// file, as are two hard links), else the same canonical path
/// ([`output_identity`]: `./a`, `a` and `d/../a` are one path), which is
/// how two files yet to be written are compared.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(ma), Ok(mb)) => same_inode(&ma, &mb),
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        _ => {
            let (ia, ib) = (output_identity(a), output_identity(b));
            ia.is_some() && ia == ib
        }
    }
}

/// A file a command names, and what the front end calls it in messages
/// (the CLI's `--save`, Python's `save()`, `the training images of
/// --data-dir`).
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    pub name: &'a str,
    pub path: &'a Path,
}

impl<'a> Named<'a> {
    pub fn new(name: &'a str, path: &'a Path) -> Self {
        Self { name, path }
    }
}

/// Two paths of one command that must not be one file. One line, naming
/// both and both paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathClash {
    /// Two outputs name one file.
    #[error("{first} {} and {second} {} name the same file; give each its own path", first_path.display(), second_path.display())]
    Outputs {
        first: String,
        first_path: PathBuf,
        second: String,
        second_path: PathBuf,
    },
    /// An output would replace an input.
    #[error("{output} {} would overwrite {input} ({}), which this command reads: an output never replaces an input; give it another path", output_path.display(), input_path.display())]
    OverInput {
        output: String,
        output_path: PathBuf,
        input: String,
        input_path: PathBuf,
    },
}

/// What [`same_file`] compares: the device and inode of an existing file,
/// else its canonical path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_key(path: &Path) -> Option<FileKey> {
    match fs::metadata(path) {
        #[cfg(unix)]
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            Some(FileKey::Inode(m.dev(), m.ino()))
        }
        #[cfg(not(unix))]
        Ok(_) => fs::canonicalize(path).ok().map(FileKey::Path),
        Err(_) => output_identity(path).map(FileKey::Path),
    }
}

/// Checks, before any work, that no two `outputs` are one file and that no
/// output is one of the `inputs` ([`same_file`]), except the pairs of names
/// in `allowed` (in either order: `("--resume", "--save")` continues a run
/// in place). Every front end and every command that writes files calls
/// it with all it writes and all it reads: the data files in every
/// spelling ([`crate::data::present_files`]), labels, models,
/// checkpoints, images. One `stat` per path: thousands of images cost
/// milliseconds.
pub fn check_distinct(
    outputs: &[Named<'_>],
    inputs: &[Named<'_>],
    allowed: &[(&str, &str)],
) -> Result<(), PathClash> {
    use std::collections::HashMap;
    let ok = |a: &str, b: &str| {
        allowed
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    };
    let mut seen: HashMap<FileKey, Vec<&Named<'_>>> = HashMap::new();
    for out in outputs {
        let Some(key) = file_key(out.path) else {
            continue;
        };
        let earlier = seen.entry(key).or_default();
        if let Some(first) = earlier.iter().find(|a| !ok(a.name, out.name)) {
            return Err(PathClash::Outputs {
                first: first.name.to_owned(),
                first_path: first.path.to_owned(),
                second: out.name.to_owned(),
                second_path: out.path.to_owned(),
            });
        }
        earlier.push(out);
    }
    for input in inputs {
        let Some(key) = file_key(input.path) else {
            continue;
        };
        if let Some(out) = seen
            .get(&key)
            .and_then(|outs| outs.iter().find(|o| !ok(o.name, input.name)))
        {
            return Err(PathClash::OverInput {
                output: out.name.to_owned(),
                output_path: out.path.to_owned(),
                input: input.name.to_owned(),
                input_path: input.path.to_owned(),
            });
        }
    }
    Ok(())
}

/// The files this process holds as inputs ([`hold_input`]): device, inode
/// and the path they were opened by.
#[cfg(unix)]
static HELD: std::sync::Mutex<Vec<(u64, u64, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Keeps a file registered as an input while it lives (see [`hold_input`]).
#[derive(Debug)]
pub struct InputHold {
    #[cfg(unix)]
    id: Option<(u64, u64)>,
}

/// Registers `path` as an input of this process until the returned guard is
/// dropped: [`write_atomic`] refuses to replace it. The data loader holds
/// every file it maps (the `.gz` a user gave, for a compressed one), so no
/// front end, Python's `save` included, can write a model over data it is
/// reading.
pub fn hold_input(path: &Path) -> InputHold {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let id = fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        if let Some((dev, ino)) = id {
            if let Ok(mut held) = HELD.lock() {
                held.push((dev, ino, path.to_owned()));
            }
        }
        InputHold { id }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        InputHold {}
    }
}

impl Drop for InputHold {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let (Some((dev, ino)), Ok(mut held)) = (self.id, HELD.lock()) {
            if let Some(i) = held.iter().position(|h| (h.0, h.1) == (dev, ino)) {
                held.swap_remove(i);
            }
        }
    }
}

/// Refuses `path` as an output when it is an input this process holds.
fn check_not_held(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(path) else {
            return Ok(());
        };
        let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, input)) = held.iter().find(|h| (h.0, h.1) == (meta.dev(), meta.ino())) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "is {}, an input this process reads; refusing to replace it",
                    input.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `path` atomically: `write` fills a temporary file created in the
/// same directory, which is then flushed to disk (`fsync`) and renamed over
/// `path`.
///
/// Either the whole new content ends up under `path`, or `path` is left as
/// it was (absent, or holding its previous content): a failure at any step,
/// including an error returned by `write` or a full disk, removes the
/// temporary file. An existing `path` that is not a regular file (a
/// directory, a device such as `/dev/full`, a FIFO) is refused, never
/// replaced.
///
/// The temporary file (`.NAME.XXXXXXXX.tmp`) is registered with
/// [`crate::signals`], so SIGINT or SIGTERM during the write removes it
/// (once the handlers are installed). One left by a process killed outright
/// (SIGKILL) is removed by the next write to the same `path`; one whose
/// writer is still at work (another thread or process writing the same
/// `path`) is not: it is locked. Writers to one `path` may thus run at
/// once: each succeeds, and the last rename wins with a complete file.
///
/// A `path` that this process holds as an input ([`hold_input`]) is refused.
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
    check_replaceable(path)?;
    check_not_held(path)?;
    let dir = parent_dir(path);
    let prefix = temp_prefix(name);
    remove_stale_temps(dir, &prefix);
    let mut tmp = create_temp(dir, &prefix)?;
    let file = tmp.file.as_mut().expect("a new temporary file is open");
    write(file)?;
    file.sync_all()?;
    tmp.persist(path)?;
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn non_regular_paths_are_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        mkfifo(&fifo);
        // Opening the FIFO would block; the check must come first.
        assert!(matches!(
            open_regular(&fifo),
            Err(InputError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            regular_file(dir.path()),
            Err(InputError::Directory)
        ));
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("l")).unwrap();
        assert!(matches!(
            regular_file(&dir.path().join("l")),
            Err(InputError::DanglingLink)
        ));
        assert!(read_regular_to_string(&fifo).is_err());
        let e = write_atomic(&fifo, |_| Ok(())).unwrap_err().to_string();
        assert_eq!(e, "is a FIFO, not a regular file; refusing to replace it");
        let e = probe_output(&fifo).unwrap_err().to_string();
        assert_eq!(e, "is a FIFO, not a regular file; refusing to replace it");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn temp_names_are_tied_to_their_target() {
        let p = temp_prefix("m.safetensors".as_ref());
        assert_eq!(p, ".m.safetensors.");
        assert!(is_our_temp(".m.safetensors.0a1b2c3d.tmp", &p));
        assert!(is_our_temp(".m.safetensors.Ab3xYz.tmp", &p));
        assert!(!is_our_temp(".m.safetensors.tmp", &p));
        assert!(!is_our_temp(".m.safetensors.0a1b2c3d.tmp.keep", &p));
        assert!(!is_our_temp(".m.safetensors.x-y-z-w.tmp", &p));
        assert!(!is_our_temp(".n.safetensors.0a1b2c3d.tmp", &p));
    }

    #[test]
    fn probe_leaves_nothing_and_identity_ignores_spelling() {
        let dir = tempfile::tempdir().unwrap();
        probe_output(&dir.path().join("out.bin")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = probe_output(&dir.path().join("no/out.bin")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let a = output_identity(&dir.path().join("x"));
        let b = output_identity(&dir.path().join(".").join("x"));
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn a_live_writers_temporary_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = temp_prefix("m.st".as_ref());
        // A live writer: its file is locked while it exists.
        let live = create_temp(dir.path(), &prefix).unwrap();
        // A killed writer's file: nobody holds its lock.
        let dead = dir.path().join(format!("{prefix}0badf00d.tmp"));
        std::fs::write(&dead, b"half").unwrap();
        remove_stale_temps(dir.path(), &prefix);
        assert!(live.path.exists());
        assert!(!dead.exists());
        // The live writer finishes well.
        live.persist(&dir.path().join("m.st")).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["m.st"]);
    }

    #[test]
    fn same_file_and_distinct_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&a, &hard).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let dotted = dir.path().join("sub/../a");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for other in [&hard, &link, &dotted, &a] {
            assert!(same_file(&a, other), "{other:?}");
        }
        let new = dir.path().join("new");
        assert!(!same_file(&a, &new));
        assert!(same_file(&new, &dir.path().join("./new")));
        assert!(!same_file(&new, &dir.path().join("new2")));

        let out = [Named::new("--save", &hard), Named::new("--plot", &new)];
        let e = check_distinct(&out, &[Named::new("--labels", &a)], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--save {} would overwrite --labels ({}), which this command reads: an output never replaces an input; give it another path",
                hard.display(),
                a.display()
            )
        );
        assert!(check_distinct(
            &out,
            &[Named::new("--resume", &a)],
            &[("--resume", "--save")]
        )
        .is_ok());
        let new_again = dir.path().join("./new");
        let two = [
            Named::new("--save", &new),
            Named::new("--plot", &dotted),
            Named::new("--x", &new_again),
        ];
        let e = check_distinct(&two, &[], &[]).unwrap_err();
        assert!(matches!(e, PathClash::Outputs { .. }), "{e}");
        assert!(
            e.to_string().contains("--save") && e.to_string().contains("--x"),
            "{e}"
        );
    }

    #[test]
    fn an_input_held_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(&data, b"input").unwrap();
        let hold = hold_input(&data);
        let e = write_atomic(&data, |f| std::io::Write::write_all(f, b"out")).unwrap_err();
        assert!(e.to_string().contains("an input this process reads"), "{e}");
        assert!(probe_output(&data).is_err());
        assert_eq!(std::fs::read(&data).unwrap(), b"input");
        drop(hold);
        write_atomic(&data, |f| std::io::Write::write_all(f, b"out")).unwrap();
        assert_eq!(std::fs::read(&data).unwrap(), b"out");
    }

    #[test]
    fn text_loses_its_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "\u{feff}a\nb\n").unwrap();
        assert_eq!(read_regular_to_string(&p).unwrap(), "a\nb\n");
        assert_eq!(strip_bom("\u{feff}x"), "x");
        assert_eq!(strip_bom("x\u{feff}"), "x\u{feff}");
    }
}
