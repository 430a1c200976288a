//! A decompression bomb, a 16384 × 16384 PNG of a few hundred kilobytes, is
//! refused from its header: the decoder never allocates its 268 MB of
//! pixels. Measured with a counting global allocator (its own test binary,
//! so no other test's allocations are counted).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use idx_softmax::image::{self, ImageError};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grow(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A valid 16384 × 16384 8-bit grayscale PNG, all black: 268 MB of pixels
/// in a few hundred KB.
fn bomb() -> Vec<u8> {
    const SIDE: usize = 16384;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let rows = vec![0u8; (SIDE + 1) * 256]; // filter byte + row, 256 rows
    for _ in 0..SIDE / 256 {
        z.write_all(&rows).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut ihdr = (SIDE as u32).to_be_bytes().to_vec();
    ihdr.extend_from_slice(&(SIDE as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(common::png_chunk(b"IHDR", &ihdr));
    png.extend(common::png_chunk(b"IDAT", &idat));
    png.extend(common::png_chunk(b"IEND", b""));
    png
}

#[test]
fn a_decompression_bomb_is_refused_before_its_pixels_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.png");
    let png = bomb();
    assert!(png.len() < 1 << 20, "the bomb is {} bytes", png.len());
    std::fs::write(&path, &png).unwrap();
    drop(png);

    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let e = image::decode_file(&path).expect_err("a 268-megapixel image is refused");
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("16384x16384") && msg.contains("bomb.png"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        peak < 50 << 20,
        "decoding the bomb allocated {peak} bytes at peak"
    );
    println!("peak allocation while refusing the bomb: {peak} bytes");

    // The same through the whole preprocessing entry point used by predict.
    let e = image::read_gray(&path).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
}
