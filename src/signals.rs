//! Process-wide signal handling, so that a run that is interrupted, or whose
//! memory-mapped data is truncated underneath it, leaves nothing behind and
//! says what happened.
//!
//! * **SIGINT, SIGTERM, SIGHUP, SIGPIPE**: every temporary file registered with
//!   [`register_temp`] (the ones [`crate::fsutil::write_atomic`] and the
//!   decompression cache write before renaming) is removed, then the
//!   process exits with status 128 + the signal number (130 for SIGINT,
//!   143 for SIGTERM, 141 for a write to a closed pipe), as a shell reports
//!   a process killed by that signal.
//!   Files already renamed into place are complete: the last checkpoint a
//!   run saved stays valid and resumable.
//! * **SIGBUS**: the one way a read of a memory-mapped file can fail, when
//!   another process truncates the file. The handler removes the registered
//!   temporary files, writes one line naming the mapped file the faulting
//!   address lies in (those registered with [`register_map`]), and exits
//!   with status 1.
//!
//! The handlers only call async-signal-safe functions (`unlink`, `write`,
//! `_exit`) and read lock-free atomics: paths are registered as
//! NUL-terminated C strings owned by a fixed table of slots. Nothing here
//! takes effect until [`install`] is called (the command-line tool does so
//! first thing); registering is harmless without it.
//!
//! A SIGKILL cannot be caught: a temporary file it leaves is removed by the
//! next write to the same target (see [`crate::fsutil::write_atomic`]).

use std::ffi::CString;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Temporary files alive at once (a few writers at most run together).
const TEMP_SLOTS: usize = 32;
/// Memory maps alive at once (four per dataset).
const MAP_SLOTS: usize = 32;

/// Registered temporary files: owned C strings (from `CString::into_raw`).
static TEMPS: [AtomicPtr<libc::c_char>; TEMP_SLOTS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; TEMP_SLOTS];

/// One registered memory map: its address range and the file's name.
struct MapSlot {
    start: AtomicUsize,
    len: AtomicUsize,
    name: AtomicPtr<libc::c_char>,
}

static MAPS: [MapSlot; MAP_SLOTS] = [const {
    MapSlot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        name: AtomicPtr::new(ptr::null_mut()),
    }
}; MAP_SLOTS];

/// Set by a handler before it reads any slot: from then on a slot's string
/// is never freed (the handler may be reading it on another thread; the
/// process is about to exit anyway).
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// Keeps a temporary file registered; dropping it unregisters the file
/// (without removing it: the writer renames or removes it itself).
#[derive(Debug)]
pub struct TempGuard(Option<usize>);

/// Keeps a memory map registered for SIGBUS reports; dropping it
/// unregisters the map.
#[derive(Debug)]
pub struct MapGuard(Option<usize>);

fn c_string(path: &Path) -> Option<*mut libc::c_char> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .ok()
        .map(CString::into_raw)
}

/// Frees a string taken out of a slot, unless a handler may be reading it.
fn release(p: *mut libc::c_char) {
    if !p.is_null() && !IN_HANDLER.load(Ordering::SeqCst) {
        // SAFETY: `p` came from `CString::into_raw` in `c_string` and was
        // swapped out of its slot, so no other owner exists; no handler has
        // started, so none holds it either.
        drop(unsafe { CString::from_raw(p) });
    }
}

/// Claims a free slot of `slots` for `p`; `None` (and `p` freed) when all
/// are taken.
fn claim(slots: &[AtomicPtr<libc::c_char>], p: *mut libc::c_char) -> Option<usize> {
    for (i, slot) in slots.iter().enumerate() {
        if slot
            .compare_exchange(ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Some(i);
        }
    }
    release(p);
    None
}

/// Registers `path` as a temporary file to remove if the process is
/// interrupted. Register it *before* creating the file, so that no instant
/// exists when the file is there but unknown to the handler. When every
/// slot is taken (or the path holds a NUL byte) nothing is registered.
pub fn register_temp(path: &Path) -> TempGuard {
    TempGuard(c_string(path).and_then(|p| claim(&TEMPS, p)))
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            release(TEMPS[i].swap(ptr::null_mut(), Ordering::SeqCst));
        }
    }
}

/// Registers the mapping of `path` at `start..start + len`, so that a
/// SIGBUS inside it is reported as that file's.
pub fn register_map(path: &Path, start: *const u8, len: usize) -> MapGuard {
    let Some(p) = c_string(path) else {
        return MapGuard(None);
    };
    for (i, slot) in MAPS.iter().enumerate() {
        if slot
            .name
            .compare_exchange(ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            slot.start.store(start as usize, Ordering::SeqCst);
            slot.len.store(len, Ordering::SeqCst);
            return MapGuard(Some(i));
        }
    }
    release(p);
    MapGuard(None)
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            let slot = &MAPS[i];
            slot.len.store(0, Ordering::SeqCst);
            release(slot.name.swap(ptr::null_mut(), Ordering::SeqCst));
        }
    }
}

/// Installs the handlers for SIGINT, SIGTERM, SIGHUP, SIGPIPE and SIGBUS.
///
/// SIGPIPE, which the Rust runtime ignores (turning a write to a closed
/// pipe into an error, and `println!` into a panic), is handled like
/// SIGTERM: writing to a closed pipe, as in `idx-softmax | head -1`, ends
/// the process quietly with status 141, as it ends standard Unix tools.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        set_handler(sig, on_terminate as extern "C" fn(libc::c_int) as usize, 0);
    }
    set_handler(
        libc::SIGBUS,
        on_bus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize,
        libc::SA_SIGINFO,
    );
}

fn set_handler(sig: libc::c_int, handler: usize, flags: libc::c_int) {
    // SAFETY: `sigaction` is plain old data, valid zeroed; the handler is an
    // `extern "C"` function of the signature `flags` announces
    // (`SA_SIGINFO`: three arguments), which only calls async-signal-safe
    // functions; `sigemptyset` and `sigaction` get valid pointers.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
}

/// Removes every registered temporary file. Async-signal-safe.
fn remove_temps() {
    IN_HANDLER.store(true, Ordering::SeqCst);
    for slot in &TEMPS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` is a NUL-terminated string from `CString::into_raw`
            // that is never freed once `IN_HANDLER` is set; `unlink` is
            // async-signal-safe, and a file already gone is no error here.
            unsafe {
                libc::unlink(p);
            }
        }
    }
}

/// Writes `bytes` to stderr. Async-signal-safe.
fn write_stderr(bytes: &[u8]) {
    // SAFETY: `write` is async-signal-safe and reads `bytes.len()` bytes
    // from a valid slice.
    unsafe {
        libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Writes a C string to stderr. Async-signal-safe.
///
/// # Safety
/// `p` must point to a valid NUL-terminated string.
unsafe fn write_c_str(p: *const libc::c_char) {
    // SAFETY: the caller guarantees a NUL-terminated string; `strlen` is
    // async-signal-safe.
    let len = unsafe { libc::strlen(p) };
    // SAFETY: `len` bytes from `p` are the string, just measured.
    write_stderr(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
}

extern "C" fn on_terminate(sig: libc::c_int) {
    remove_temps();
    // SAFETY: `_exit` is async-signal-safe and ends the process at once
    // (no destructors, no atexit handlers, no buffered stdio to flush).
    unsafe { libc::_exit(128 + sig) }
}

extern "C" fn on_bus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    remove_temps();
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t`;
    // `si_addr` is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut named = false;
    for slot in &MAPS {
        let name = slot.name.load(Ordering::SeqCst);
        let (start, len) = (
            slot.start.load(Ordering::SeqCst),
            slot.len.load(Ordering::SeqCst),
        );
        if !name.is_null() && addr >= start && addr - start < len {
            write_stderr(b"error: ");
            // SAFETY: registered names are NUL-terminated and never freed
            // once a handler has started (`IN_HANDLER`).
            unsafe { write_c_str(name) };
            write_stderr(b": the file shrank while it was memory-mapped (truncated by another process?); stopped (SIGBUS), no output of this run was left half-written\n");
            named = true;
            break;
        }
    }
    if !named {
        write_stderr(b"error: bus error (SIGBUS) reading memory-mapped data");
        let mut first = true;
        for slot in &MAPS {
            let name = slot.name.load(Ordering::SeqCst);
            if !name.is_null() {
                write_stderr(if first { b"; mapped: " } else { b", " });
                first = false;
                // SAFETY: as above.
                unsafe { write_c_str(name) };
            }
        }
        write_stderr(b"\n");
    }
    // SAFETY: `_exit` is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused() {
        for _ in 0..3 * TEMP_SLOTS {
            let g = register_temp(Path::new("/nonexistent/x.tmp"));
            assert!(g.0.is_some());
        }
        let guards: Vec<_> = (0..TEMP_SLOTS + 2)
            .map(|_| register_temp(Path::new("/nonexistent/y.tmp")))
            .collect();
        assert!(guards.iter().filter(|g| g.0.is_some()).count() <= TEMP_SLOTS);
        drop(guards);
        let m = register_map(Path::new("/x"), ptr::null(), 10);
        assert!(m.0.is_some());
    }
}
