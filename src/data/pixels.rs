//! Pixel scaling: how u8 pixels become the f32 inputs of the network.
//!
//! A leaf module (it imports nothing of this crate), so the data layer and
//! the kernels can both use it without depending on each other.

/// The scale applied to u8 pixels: the notebook's `x / 255`, so inputs lie
/// in [0, 1]. The fused kernels multiply by it inside their registers; the
/// gemm path and the image front end convert with [`u8_to_f32`].
pub const U8_SCALE: f32 = 1.0 / 255.0;

/// `out[i] = src[i] · U8_SCALE`. The compiler vectorises this loop.
///
/// # Panics
/// If the lengths differ.
pub fn u8_to_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "u8_to_f32: length mismatch");
    for (o, &s) in out.iter_mut().zip(src) {
        *o = f32::from(s) * U8_SCALE;
    }
}

/// A zeroed `Vec<f32>` of `len` values for decoded pixels, asking Linux
/// for transparent huge pages (`madvise(MADV_HUGEPAGE)`) before the first
/// touch when it is large. The training step reads shuffled rows from all
/// over it: with 4 KiB pages nearly every row costs a TLB miss (a nested
/// page walk in a VM), which made a 188 MB f32 MNIST epoch several times
/// slower than the same rows as u8. A hint only: elsewhere, or when the
/// kernel declines, the pages are ordinary.
pub fn large_f32_buffer(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * std::mem::size_of::<f32>();
        if bytes >= 2 * HUGE {
            let start = v.as_ptr() as usize;
            let aligned = start.next_multiple_of(HUGE);
            let end = (start + bytes) & !(HUGE - 1);
            if end > aligned {
                // SAFETY: madvise only advises: [aligned, end) lies inside
                // this Vec's allocation (page-aligned, as madvise needs),
                // and no memory is read or written.
                unsafe {
                    libc::madvise(
                        aligned as *mut libc::c_void,
                        end - aligned,
                        libc::MADV_HUGEPAGE,
                    )
                };
            }
        }
    }
    v.resize(len, 0.0);
    v
}
