//! Table-driven malformed inputs, each asserting its specific error: first
//! for the pure parser (`idx::parse`), then for single files on disk
//! (`IdxFile::open`: gzip, HTML, empty files, directories, ...).
//!
//! A counting global allocator checks that rejecting a file that claims a
//! huge payload allocates nothing large.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use idx_softmax::data::idx::{self, ElementType, IdxError, IdxHeader};
use idx_softmax::data::{DataError, GzCache, IdxFile};

// ---------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by this thread
// since the last reset. Per thread, so tests running in parallel do not see
// each other's allocations.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: during thread teardown the slot may be gone.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards to the system allocator unchanged; the only
// addition is recording the requested size in a thread-local `Cell`, which
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread, and how long it took.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    LARGEST.with(|l| l.set(0));
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    (out, LARGEST.with(|l| l.get()), took)
}

// ---------------------------------------------------------------------------
// Helpers.

fn header(ty: ElementType, dims: &[usize]) -> IdxHeader {
    IdxHeader {
        element_type: ty,
        dims: dims.to_vec(),
    }
}

fn file(ty: ElementType, dims: &[usize], values: &[f64]) -> Vec<u8> {
    idx::write(&header(ty, dims), &idx::encode_f64(ty, values))
}

/// 3 images of 2×2 u8: a 16-byte header and 12 bytes of payload.
fn valid_u8() -> Vec<u8> {
    let values: Vec<f64> = (0..12).map(|v| v as f64).collect();
    file(ElementType::U8, &[3, 2, 2], &values)
}

/// A file claiming `n` images of 28×28 u8, `len` bytes long in all.
fn huge_claim(n: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [n, 28, 28] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.resize(len, 0);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const HTML_404: &[u8] = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>Not Found</body></html>\n";

// ---------------------------------------------------------------------------
// The pure parser.

#[test]
fn every_header_prefix_length() {
    let bytes = valid_u8();
    assert_eq!(bytes.len(), 28);
    for len in 0..bytes.len() {
        let err = idx::parse(&bytes[..len]).unwrap_err();
        let want = match len {
            0 => IdxError::Empty,
            1..=3 => IdxError::TruncatedHeader {
                expected: 4,
                found: len,
                ndims: None,
            },
            4..=15 => IdxError::TruncatedHeader {
                expected: 16,
                found: len,
                ndims: Some(3),
            },
            _ => IdxError::Truncated {
                expected: 28,
                found: len as u64,
                header: header(ElementType::U8, &[3, 2, 2]),
            },
        };
        assert_eq!(err, want, "prefix of {len} bytes");
        // parse_header agrees on every prefix too short for a header.
        if len < 16 {
            assert_eq!(idx::parse_header(&bytes[..len]).unwrap_err(), want);
        } else {
            assert_eq!(idx::parse_header(&bytes[..len]).unwrap().1, 28);
        }
    }
    assert_eq!(
        idx::parse(&bytes[..2]).unwrap_err().to_string(),
        "truncated header: expected 4 bytes (magic, type code and dimension count), found 2"
    );
    assert_eq!(
        idx::parse(&bytes[..10]).unwrap_err().to_string(),
        "truncated header: expected 16 bytes (4 + 4×3 for 3 dimension(s)), found 10"
    );
    assert_eq!(
        idx::parse(&bytes[..20]).unwrap_err().to_string(),
        "truncated: expected 28 bytes (16-byte header + 3×2×2 u8), found 20"
    );
    let v = idx::parse(&bytes).unwrap();
    assert_eq!(v.dims(), &[3, 2, 2]);
    assert_eq!(v.payload.len(), 12);
}

#[test]
fn bad_magic_variants() {
    let valid = valid_u8();
    let with = |b0: u8, b1: u8| {
        let mut b = valid.clone();
        b[0] = b0;
        b[1] = b1;
        b
    };
    let cases: Vec<(&str, Vec<u8>, IdxError)> = vec![
        (
            "second byte set",
            with(0x00, 0x01),
            IdxError::BadMagic(0, Some(1)),
        ),
        (
            "first byte set",
            with(0x01, 0x00),
            IdxError::BadMagic(1, Some(0)),
        ),
        (
            "both set",
            with(0xff, 0xff),
            IdxError::BadMagic(0xff, Some(0xff)),
        ),
        (
            "leading zeros dropped",
            valid[2..].to_vec(),
            IdxError::BadMagic(0x08, Some(0x03)),
        ),
        (
            "little-endian magic",
            vec![0x03, 0x08, 0x00, 0x00, 1, 0, 0, 0, 7],
            IdxError::BadMagic(0x03, Some(0x08)),
        ),
        ("one byte", vec![0x80], IdxError::BadMagic(0x80, None)),
        ("gzip magic", vec![0x1f, 0x8b, 0x08, 0x00], IdxError::Gzip),
        (
            "a PGM image (text)",
            b"P5\n28 28\n255\n".to_vec(),
            IdxError::Text,
        ),
        (
            "a JSON error",
            b"{\"error\": \"not found\"}".to_vec(),
            IdxError::Text,
        ),
        ("an HTML page", HTML_404.to_vec(), IdxError::Html),
        (
            "XML with a BOM",
            b"\xEF\xBB\xBF<?xml version=\"1.0\"?><Error/>".to_vec(),
            IdxError::Html,
        ),
        ("lower-case html", b"  <html>".to_vec(), IdxError::Html),
    ];
    for (what, bytes, want) in cases {
        let err = idx::parse(&bytes).unwrap_err();
        assert_eq!(err, want, "{what}");
        if let IdxError::BadMagic(..) = want {
            let msg = err.to_string();
            assert!(
                msg.starts_with("bad magic at offset 0: expected 0x00 0x00, found"),
                "{what}: {msg}"
            );
        }
    }
    assert_eq!(
        idx::parse(&with(0x00, 0x01)).unwrap_err().to_string(),
        "bad magic at offset 0: expected 0x00 0x00, found 0x00 0x01 (not an IDX file)"
    );
    assert_eq!(
        idx::parse(HTML_404).unwrap_err().to_string(),
        "looks like an HTML/XML page, not IDX (a failed download?)"
    );
}

#[test]
fn type_codes_and_dimension_count() {
    let valid: [u8; 6] = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E];
    for code in 0..=255u8 {
        let size = ElementType::from_code(code).map_or(1, |t| t.size());
        let mut bytes = vec![0, 0, code, 1, 0, 0, 0, 1];
        bytes.resize(8 + size, 0);
        let got = idx::parse(&bytes);
        if valid.contains(&code) {
            let v = got.unwrap_or_else(|e| panic!("code 0x{code:02x}: {e}"));
            assert_eq!(v.element_type().code(), code);
            assert_eq!(v.element_type().size(), size);
        } else {
            let err = got.unwrap_err();
            assert_eq!(err, IdxError::BadTypeCode(code));
            assert!(err.to_string().contains("at offset 2"), "{err}");
        }
    }
    let err = idx::parse(&[0, 0, 0x08, 0]).unwrap_err();
    assert_eq!(err, IdxError::NoDims);
    assert_eq!(
        err.to_string(),
        "zero dimensions at offset 3 (expected at least 1)"
    );
}

#[test]
fn truncated_inside_the_payload_for_every_type() {
    for ty in ElementType::ALL {
        let values: Vec<f64> = (0..6).map(|v| v as f64).collect();
        let bytes = file(ty, &[2, 3], &values);
        let total = 12 + 6 * ty.size();
        assert_eq!(bytes.len(), total);
        for cut in [12, 13, total - ty.size(), total - 1] {
            let err = idx::parse(&bytes[..cut]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "truncated: expected {total} bytes (12-byte header + 2×3 {ty}), found {cut}"
                ),
                "{ty} cut at {cut}"
            );
        }
    }
}

#[test]
fn extra_bytes() {
    let bytes = valid_u8();
    for extra in [1usize, 2, 1000] {
        let mut long = bytes.clone();
        long.resize(28 + extra, 0xAA);
        let err = idx::parse(&long).unwrap_err();
        assert_eq!(
            err,
            IdxError::TrailingBytes {
                expected: 28,
                found: 28 + extra as u64,
                header: header(ElementType::U8, &[3, 2, 2]),
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{extra} extra bytes at offset 28: expected 28 bytes (16-byte header + 3×2×2 u8), found {}",
                28 + extra
            )
        );
    }
}

#[test]
fn overflowing_dims() {
    let raw = |code: u8, dims: &[u32]| {
        let mut b = vec![0, 0, code, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    };
    let cases: Vec<(&str, Vec<u8>, Option<IdxError>)> = vec![
        (
            "u8, three u32::MAX dims overflow u64",
            raw(0x08, &[u32::MAX; 3]),
            Some(IdxError::Overflow {
                dims: vec![u32::MAX; 3],
                element_size: 1,
            }),
        ),
        (
            "f64, the element size tips it over",
            raw(0x0E, &[1 << 31, 1 << 31]),
            Some(IdxError::Overflow {
                dims: vec![1 << 31, 1 << 31],
                element_size: 8,
            }),
        ),
        (
            "fits u64 but not isize",
            raw(0x08, &[u32::MAX, u32::MAX]),
            Some(IdxError::Overflow {
                dims: vec![u32::MAX, u32::MAX],
                element_size: 1,
            }),
        ),
        (
            "255 dims of 2",
            raw(0x08, &[2; 255]),
            Some(IdxError::Overflow {
                dims: vec![2; 255],
                element_size: 1,
            }),
        ),
        // Large but representable: a plain truncation.
        ("i32, u32::MAX elements", raw(0x0C, &[u32::MAX]), None),
    ];
    for (what, bytes, want) in cases {
        let err = idx::parse(&bytes).unwrap_err();
        match want {
            Some(want) => {
                assert_eq!(err, want, "{what}");
                assert!(err.to_string().contains("overflow"), "{what}: {err}");
            }
            None => assert!(
                matches!(err, IdxError::Truncated { expected, found: 8, .. } if expected == 8 + 4 * u32::MAX as u64),
                "{what}: {err:?}"
            ),
        }
    }
}

#[test]
fn four_kilobytes_claiming_four_billion_images_fail_fast_and_small() {
    let bytes = huge_claim(4_000_000_000, 4096);
    let (res, largest, took) = measure(|| idx::parse(&bytes).map(|_| ()));
    assert_eq!(
        res.unwrap_err().to_string(),
        "truncated: expected 3136000000016 bytes (16-byte header + 4000000000×28×28 u8), found 4096"
    );
    assert!(largest < 1024, "largest allocation {largest} bytes");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// Inputs the fuzzer or the property tests once found interesting; kept
/// as regressions. (No crash has been found so far; these pin down the
/// edge cases the fuzz target's invariants exercise.)
#[test]
fn fuzz_regressions() {
    let cases: &[(&[u8], &str)] = &[
        // Zero-sized payloads are valid IDX.
        (&[0, 0, 0x0E, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], "ok"),
        // A zero dim does not hide an overflow in the others from the size.
        (
            &[0, 0, 0x08, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1],
            "extra",
        ),
        (&[0], "truncated header"),
        (&[0, 0, 0x08], "truncated header"),
        (&[0, 0, 0x08, 255], "truncated header"),
        (b"<", "bad magic"),
        (b"<a", "HTML"),
        (b"\t\n", "text"),
    ];
    for (bytes, want) in cases {
        match idx::parse(bytes) {
            Ok(v) => {
                assert_eq!(*want, "ok", "{bytes:?}");
                assert_eq!(idx::write(&v.header, v.payload), *bytes);
            }
            Err(e) => assert!(e.to_string().contains(want), "{bytes:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Single files on disk.

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open(path: &Path, cache: &Path) -> Result<IdxFile, DataError> {
    IdxFile::open(path, &GzCache::at(cache))
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn raw_file_opens() {
    let (data, cache) = (temp(), temp());
    let p = put(data.path(), "x-idx3-ubyte", &valid_u8());
    let f = open(&p, cache.path()).unwrap();
    assert_eq!(f.header().dims, vec![3, 2, 2]);
    assert_eq!(f.payload(), &(0..12).collect::<Vec<u8>>()[..]);
    assert_eq!(f.path(), p);
    assert!(
        listing(cache.path()).is_empty(),
        "a raw file needs no cache"
    );
}

#[test]
fn gzip_of_a_valid_file_is_accepted_whatever_its_name() {
    let (data, cache) = (temp(), temp());
    for name in ["a-idx3-ubyte.gz", "b-idx3-ubyte", "c.bin"] {
        let p = put(data.path(), name, &gzip(&valid_u8()));
        let f = open(&p, cache.path()).unwrap();
        assert_eq!(f.header().dims, vec![3, 2, 2], "{name}");
        assert_eq!(f.payload(), &(0..12).collect::<Vec<u8>>()[..], "{name}");
        assert_eq!(f.path(), p, "messages name the user's file");
    }
    // One cache file per source, each with its integrity record, no
    // temporary files left behind.
    let files = listing(cache.path());
    assert_eq!(files.len(), 6, "{files:?}");
    let idx: Vec<&String> = files.iter().filter(|f| f.ends_with(".idx")).collect();
    assert_eq!(idx.len(), 3, "{files:?}");
    for f in idx {
        assert!(files.contains(&format!("{f}.verified")), "{files:?}");
    }
}

#[test]
fn truncated_or_corrupt_gzip_names_the_file() {
    let (data, cache) = (temp(), temp());
    let good = gzip(&valid_u8());
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 8] ^= 0xff; // CRC32 in the trailer
    let mut bad_len = good.clone();
    bad_len[n - 4] ^= 0x01; // ISIZE in the trailer
    let mut garbage = good[..10].to_vec(); // a gzip header, then junk
    garbage.extend_from_slice(&[0xff; 40]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", good[..2].to_vec()),
        ("header only", good[..10].to_vec()),
        ("cut in the deflate data", good[..n / 2].to_vec()),
        ("trailer missing", good[..n - 8].to_vec()),
        ("trailer cut", good[..n - 3].to_vec()),
        ("bad CRC", bad_crc),
        ("bad length", bad_len),
        ("garbage deflate data", garbage),
    ];
    for (what, bytes) in cases {
        let p = put(data.path(), "t-idx3-ubyte.gz", &bytes);
        let err = open(&p, cache.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Gzip { .. }), "{what}: {err:?}");
        assert!(
            msg.contains(": corrupt or truncated gzip stream: "),
            "{what}: {msg}"
        );
        assert!(
            msg.starts_with(&format!("{}: ", p.display())),
            "{what}: {msg}"
        );
        assert!(!msg.contains('\n'), "{what}: {msg}");
        // Nothing, not even a temporary file, is left in the cache.
        assert!(
            listing(cache.path()).is_empty(),
            "{what}: {:?}",
            listing(cache.path())
        );
    }
    let p = put(data.path(), "t-idx3-ubyte.gz", &good[..n / 2]);
    assert_eq!(
        open(&p, cache.path()).unwrap_err().to_string(),
        format!(
            "{}: corrupt or truncated gzip stream: incomplete deflate stream",
            p.display()
        )
    );
}

#[test]
fn gzip_of_a_bad_file_says_decompressed() {
    let (data, cache) = (temp(), temp());
    let valid = valid_u8();
    let mut extra = valid.clone();
    extra.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated payload",
            valid[..20].to_vec(),
            "decompressed contents: truncated: expected 28 bytes (16-byte header + 3×2×2 u8), found 20",
        ),
        (
            "truncated header",
            valid[..10].to_vec(),
            "decompressed contents: truncated header: expected 16 bytes",
        ),
        (
            "extra bytes",
            extra,
            "decompressed contents: extra bytes at offset 28: expected 28 bytes",
        ),
        ("an HTML page", HTML_404.to_vec(), "decompressed contents: looks like an HTML/XML page"),
        ("empty", Vec::new(), "decompressed contents: empty file"),
        ("gzip twice", gzip(&valid), "compressed twice?"),
    ];
    for (what, inner, want) in cases {
        let p = put(data.path(), "g-idx3-ubyte.gz", &gzip(&inner));
        let msg = open(&p, cache.path()).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}: ", p.display())),
            "{what}: {msg}"
        );
        assert!(msg.contains(want), "{what}: {msg}");
        assert!(listing(cache.path()).is_empty(), "{what}");
    }
}

#[test]
fn gzip_claiming_a_huge_payload_fails_before_decompressing() {
    let (data, cache) = (temp(), temp());
    let p = put(
        data.path(),
        "h-idx3-ubyte.gz",
        &gzip(&huge_claim(4_000_000_000, 4096)),
    );
    let (res, largest, took) = measure(|| open(&p, cache.path()).map(|_| ()));
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains("the IDX header announces 3136000000016 bytes")
            && msg.contains("gzip file cannot hold more than"),
        "{msg}"
    );
    assert!(largest < 1 << 20, "largest allocation {largest} bytes");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(listing(cache.path()).is_empty());
}

#[test]
fn huge_claim_on_disk_fails_fast_and_small() {
    let (data, cache) = (temp(), temp());
    let p = put(
        data.path(),
        "h-idx3-ubyte",
        &huge_claim(4_000_000_000, 4096),
    );
    let (res, largest, took) = measure(|| open(&p, cache.path()).map(|_| ()));
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Idx {
                error: IdxError::Truncated {
                    expected: 3_136_000_000_016,
                    found: 4096,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(largest < 1 << 16, "largest allocation {largest} bytes");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn html_empty_directory_and_other_non_files() {
    let (data, cache) = (temp(), temp());
    let html = put(data.path(), "html-idx3-ubyte", HTML_404);
    let empty = put(data.path(), "empty-idx3-ubyte", b"");
    let dir = data.path().join("dir-idx3-ubyte");
    std::fs::create_dir(&dir).unwrap();
    let missing = data.path().join("missing-idx3-ubyte");
    let cases: Vec<(&Path, String)> = vec![
        (
            &html,
            "looks like an HTML/XML page, not IDX (a failed download?)".to_owned(),
        ),
        (
            &empty,
            "empty file (0 bytes), expected an IDX header".to_owned(),
        ),
        (&dir, "is a directory, expected an IDX file".to_owned()),
    ];
    for (p, want) in cases {
        let msg = open(p, cache.path()).unwrap_err().to_string();
        assert_eq!(msg, format!("{}: {want}", p.display()));
    }
    let msg = open(&missing, cache.path()).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot open: ", missing.display())),
        "{msg}"
    );
}

#[cfg(unix)]
#[test]
fn fifo_and_dangling_link_do_not_hang() {
    let (data, cache) = (temp(), temp());
    let link = data.path().join("link-idx3-ubyte");
    std::os::unix::fs::symlink(data.path().join("nowhere"), &link).unwrap();
    let msg = open(&link, cache.path()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: is a dangling symbolic link, expected an IDX file",
            link.display()
        )
    );
    // A FIFO would block a reader forever; it must be refused unopened.
    let fifo = data.path().join("fifo-idx3-ubyte");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let msg = open(&fifo, cache.path()).unwrap_err().to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
    } else {
        common::missing_prerequisite("mkfifo (the FIFO case)");
    }
}
