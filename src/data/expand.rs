//! An augmented copy of a dataset on disk (`idx-softmax augment`): the
//! training set followed by `copies` deformed copies of it, and the test
//! set unchanged, as the four raw IDX files of a new data directory.
//!
//! Copy `c` (1-based) of training sample `i` is its deformation
//! `(seed, c − 1, i)`: exactly what epoch `c` of a run with `--augment`
//! and that seed trains on. The copies are deformed in parallel, chunk by
//! chunk, and streamed to the files: memory stays flat however many copies
//! are asked for (one chunk of [`CHUNK`] samples), and the bytes do not
//! depend on the thread count. Each file is written under a temporary name
//! in the output directory (removed on failure or on SIGINT/SIGTERM) and
//! renamed into place once all four are complete.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::augment::Augmenter;
use super::dataset::{accepted_names, Dataset, Split};
use super::idx::ElementType;
use super::DataError;

/// Samples deformed per parallel chunk.
pub const CHUNK: usize = 4096;

/// The file names written: the `-idx` spellings, raw.
const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// What [`write()`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Training samples in the new set: the originals and their copies.
    pub train_samples: usize,
    pub test_samples: usize,
    /// Bytes written in all.
    pub bytes: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Io {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

/// Checks `out` before any work: a directory that can hold the new set
/// (created if missing) and holds no file of another spelling of it, which
/// would make the new set ambiguous.
pub fn check_out(out: &Path) -> Result<(), DataError> {
    match fs::metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(DataError::Invalid {
                path: out.to_owned(),
                msg: "is not a directory".into(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(p) = parent {
                if !p.is_dir() {
                    return Err(io_err(out, "its parent directory does not exist"));
                }
            }
            return Ok(());
        }
        Err(e) => return Err(io_err(out, e)),
    }
    for (name, (stem, suffix)) in NAMES.iter().zip([
        ("train-images", "idx3-ubyte"),
        ("train-labels", "idx1-ubyte"),
        ("t10k-images", "idx3-ubyte"),
        ("t10k-labels", "idx1-ubyte"),
    ]) {
        for other in accepted_names(stem, suffix) {
            if other != *name && out.join(&other).exists() {
                return Err(DataError::Invalid {
                    path: out.join(&other),
                    msg: format!(
                        "would sit beside the new {name}, two versions of one file; remove it or choose another directory"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// An IDX header: the u8 element type and `dims`.
fn header(ty: ElementType, dims: &[usize]) -> Result<Vec<u8>, String> {
    let mut h = vec![0, 0, ty.code(), dims.len() as u8];
    for &d in dims {
        let d =
            u32::try_from(d).map_err(|_| format!("dimension {d} does not fit an IDX header"))?;
        h.extend_from_slice(&d.to_be_bytes());
    }
    Ok(h)
}

/// Bytes per write of [`BlockWriter`]: the size of a transparent huge page
/// on x86-64 and aarch64 with 4 KiB pages.
const WRITE_BLOCK: usize = 2 << 20;

/// A buffered writer for one fresh file, written from offset 0 to the end:
/// it hands its inner writer only whole blocks of [`WRITE_BLOCK`] bytes
/// (and the rest at the end, on `flush`), so that every write but the last
/// starts and ends on a block boundary of the file.
///
/// Why not `BufWriter`: it passes a write larger than its buffer straight
/// through, at whatever offset it falls. Linux (ext4, 6.x) sizes the page
/// cache's folios from each write's span, so the 3.2 MB chunks written at
/// unaligned offsets left about two thirds of a freshly written MNIST8M set
/// in small folios, mapped with 4 KiB pages. Written in aligned 2 MiB
/// blocks, the set is cached in 2 MiB folios that the training run maps
/// with huge pages: one page for every 2,675 samples instead of one for
/// five, and a shuffled epoch over it ran 14% faster (perf/README.md,
/// "Augmentation").
///
/// Its contract, narrower than `BufWriter`'s:
/// * `flush` writes the tail, so call it once, at the end: a flush midway
///   would misalign every later block;
/// * nothing is written when it is dropped: every caller flushes (and
///   checks the flush) before it keeps a file;
/// * after an error the file's contents are unspecified (the inner writer
///   may have taken part of a block); the callers discard the file.
struct BlockWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> BlockWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(WRITE_BLOCK),
        }
    }
}

impl<W: Write> Write for BlockWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= WRITE_BLOCK {
            // A whole block at a boundary: straight from the caller's bytes.
            self.inner.write_all(&data[..WRITE_BLOCK])?;
            return Ok(WRITE_BLOCK);
        }
        let n = data.len().min(WRITE_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITE_BLOCK {
            if let Err(e) = self.inner.write_all(&self.buf) {
                // Not taken: the count returned is 0, so hold none of it.
                self.buf.truncate(WRITE_BLOCK - n);
                return Err(e);
            }
            self.buf.clear();
        }
        Ok(n)
    }

    /// Writes the partial block held (the file's tail) and flushes.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.inner.flush()
    }
}

/// A file being written under a temporary name in the output directory.
struct Pending {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    #[cfg(unix)]
    _registered: crate::signals::TempGuard,
}

impl Pending {
    fn new(out: &Path, name: &str) -> Result<Self, DataError> {
        let prefix = format!(".{name}.partial-");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        // A data file anyone may read, as files are created by default
        // (tempfile's own are private).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o644));
        }
        let tmp = builder.tempfile_in(out).map_err(|e| io_err(out, e))?;
        #[cfg(unix)]
        let _registered = crate::signals::register_temp(tmp.path());
        Ok(Self {
            dest: out.join(name),
            tmp,
            #[cfg(unix)]
            _registered,
        })
    }

    fn writer(&mut self) -> BlockWriter<&mut File> {
        BlockWriter::new(self.tmp.as_file_mut())
    }

    fn finish(self) -> Result<(), DataError> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| io_err(&self.dest, e))?;
        self.tmp
            .persist(&self.dest)
            .map_err(|e| io_err(&self.dest, e.error))?;
        Ok(())
    }
}

/// Writes the augmented set of `data` into `out` (see the module
/// documentation), deforming with `augmenter` and `seed` on the current
/// rayon pool. `progress(samples)` is called after each chunk with the
/// training samples written so far.
pub fn write(
    data: &Dataset,
    augmenter: &Augmenter,
    seed: u64,
    copies: usize,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Written, DataError> {
    check_out(out)?;
    let train = &data.train;
    let images = train.images.as_u8().ok_or_else(|| DataError::Invalid {
        path: train.images.path().to_owned(),
        msg: "augment deforms u8 images; this file holds another element type".into(),
    })?;
    let labels = train.labels.as_u8().ok_or_else(|| DataError::Invalid {
        path: train.labels.path().to_owned(),
        msg: "augment copies u8 labels; this file holds wider ones".into(),
    })?;
    let (n, k) = (train.len(), train.images.features());
    let total = n
        .checked_mul(copies + 1)
        .filter(|&t| u32::try_from(t).is_ok())
        .ok_or_else(|| {
            DataError::Options(format!(
                "{n} samples × {} is more than an IDX file's 2^32 − 1 samples",
                copies + 1
            ))
        })?;
    let created = !out.exists();
    if created {
        fs::create_dir(out).map_err(|e| io_err(out, e))?;
    }
    let result = (|| {
        let mut shape = vec![total];
        shape.extend_from_slice(train.images.sample_shape());
        let bad = |m: String| DataError::Options(m);
        let mut img = Pending::new(out, NAMES[0])?;
        let mut lab = Pending::new(out, NAMES[1])?;
        let mut bytes = 0u64;
        {
            let dest = img.dest.clone();
            let mut w = img.writer();
            let h = header(ElementType::U8, &shape).map_err(bad)?;
            let werr = |e: io::Error| io_err(&dest, e);
            w.write_all(&h).map_err(werr)?;
            w.write_all(images).map_err(werr)?;
            bytes += (h.len() + images.len()) as u64;
            progress(n as u64);
            let mut buf = vec![0u8; CHUNK.min(n) * k];
            for copy in 1..=copies {
                let epoch = (copy - 1) as u64;
                for start in (0..n).step_by(CHUNK) {
                    let m = CHUNK.min(n - start);
                    let chunk = &mut buf[..m * k];
                    chunk.par_chunks_mut(k).enumerate().for_each_init(
                        || augmenter.scratch(),
                        |s, (j, row)| {
                            let i = start + j;
                            let src = &images[i * k..(i + 1) * k];
                            augmenter.apply(seed, epoch, i as u64, src, row, s);
                        },
                    );
                    w.write_all(chunk).map_err(werr)?;
                    bytes += chunk.len() as u64;
                    progress((copy * n + start + m) as u64);
                }
            }
            w.flush().map_err(werr)?;
        }
        {
            let dest = lab.dest.clone();
            let mut w = lab.writer();
            let werr = |e: io::Error| io_err(&dest, e);
            let h = header(ElementType::U8, &[total]).map_err(bad)?;
            w.write_all(&h).map_err(werr)?;
            for _ in 0..=copies {
                w.write_all(labels).map_err(werr)?;
            }
            w.flush().map_err(werr)?;
            bytes += (h.len() + labels.len() * (copies + 1)) as u64;
        }
        let (test_img, test_lab) = copy_split(&data.test, out)?;
        bytes += test_img.1 + test_lab.1;
        img.finish()?;
        test_img.0.finish()?;
        test_lab.0.finish()?;
        // The labels last: until they are in place, the new set's counts
        // disagree and no loader takes it for complete.
        lab.finish()?;
        if let Some(src) = crate::labels::beside(
            train
                .images
                .path()
                .parent()
                .unwrap_or_else(|| Path::new(".")),
        ) {
            let text = fs::read(&src).map_err(|e| io_err(&src, e))?;
            let dest = out.join(crate::labels::LABELS_FILE);
            crate::fsutil::write_atomic(&dest, |f| f.write_all(&text))
                .map_err(|e| io_err(&dest, e))?;
        }
        Ok(Written {
            train_samples: total,
            test_samples: data.test.len(),
            bytes,
        })
    })();
    if result.is_err() && created {
        let _ = fs::remove_dir(out);
    }
    result
}

/// The test split, copied as raw IDX (decompressed if it was `.gz`): the
/// images unchanged, the labels as u8 where they were, else as big-endian
/// i32 (the values unchanged). The pending files and their sizes.
#[allow(clippy::type_complexity)]
fn copy_split(split: &Split, out: &Path) -> Result<((Pending, u64), (Pending, u64)), DataError> {
    let write = |name: &str, head: Vec<u8>, parts: &[&[u8]]| -> Result<(Pending, u64), DataError> {
        let mut p = Pending::new(out, name)?;
        let dest = p.dest.clone();
        let mut w = p.writer();
        let werr = |e: io::Error| io_err(&dest, e);
        w.write_all(&head).map_err(werr)?;
        let mut len = head.len() as u64;
        for part in parts {
            w.write_all(part).map_err(werr)?;
            len += part.len() as u64;
        }
        w.flush().map_err(werr)?;
        drop(w);
        Ok((p, len))
    };
    let file = split.images.file();
    let head =
        header(file.header().element_type, &file.header().dims).map_err(DataError::Options)?;
    let images = write(NAMES[2], head, &[file.payload()])?;
    let n = split.labels.len();
    let labels = match split.labels.as_u8() {
        Some(bytes) => {
            let head = header(ElementType::U8, &[n]).map_err(DataError::Options)?;
            write(NAMES[3], head, &[bytes])?
        }
        None => {
            let head = header(ElementType::I32, &[n]).map_err(DataError::Options)?;
            let be: Vec<u8> = split.labels.iter().flat_map(|v| v.to_be_bytes()).collect();
            write(NAMES[3], head, &[&be])?
        }
    };
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the length of every write it is given.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: Vec<usize>,
        flushes: usize,
    }

    impl Write for Recorder {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(data);
            self.writes.push(data.len());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn block_writer_writes_only_whole_aligned_blocks_and_the_tail() {
        // A header, then pieces smaller and larger than a block, as the
        // augment writer gives them (16 bytes, 3.2 MB chunks, a short end).
        let pieces = [16, 3_211_264, 5, 3_211_264, WRITE_BLOCK, 784 * 7, 0, 1];
        let mut want = Vec::new();
        let mut rec = Recorder::default();
        {
            let mut w = BlockWriter::new(&mut rec);
            for (p, &len) in pieces.iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + p * 7) as u8).collect();
                w.write_all(&data).unwrap();
                want.extend_from_slice(&data);
            }
            // Nothing partial reaches the file before the flush.
            assert_eq!(w.inner.bytes.len() % WRITE_BLOCK, 0);
            w.flush().unwrap();
        }
        assert_eq!(rec.bytes, want, "the bytes, in order");
        assert_eq!(rec.flushes, 1);
        let (last, blocks) = rec.writes.split_last().unwrap();
        assert!(blocks.iter().all(|&n| n == WRITE_BLOCK), "{:?}", rec.writes);
        assert_eq!(blocks.len(), want.len() / WRITE_BLOCK);
        assert_eq!(*last, want.len() % WRITE_BLOCK);
    }

    /// Takes at most 1000 bytes a call, as `write` may.
    #[derive(Default)]
    struct Short(Vec<u8>);

    impl Write for Short {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let n = data.len().min(1000);
            self.0.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn block_writer_gives_every_byte_to_a_writer_that_takes_few_at_a_time() {
        let data: Vec<u8> = (0..WRITE_BLOCK * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut short = Short::default();
        let mut w = BlockWriter::new(&mut short);
        w.write_all(&data[..100]).unwrap();
        w.write_all(&data[100..]).unwrap();
        w.flush().unwrap();
        assert!(short.0 == data, "bytes lost or reordered");
    }

    #[test]
    fn block_writer_passes_errors_on() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = BlockWriter::new(Full);
        // Below a block nothing is written yet; the flush reports the error.
        w.write_all(&[1; 100]).unwrap();
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);
        let mut w = BlockWriter::new(Full);
        let err = w.write_all(&vec![0; WRITE_BLOCK + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        // A block that fails to go out is not counted as taken, nor held.
        let mut w = BlockWriter::new(Full);
        w.write_all(&[7; 10]).unwrap();
        let err = w.write(&vec![0; WRITE_BLOCK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(w.buf, [7; 10]);
    }
}
