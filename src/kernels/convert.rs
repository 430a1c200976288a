//! u8 → f32 conversion for the general (gemm) path.

use crate::dataset::U8_SCALE;

/// `out[i] = src[i] · (1/255)`. The compiler vectorises this loop.
///
/// # Panics
/// If the lengths differ.
pub fn u8_to_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "u8_to_f32: length mismatch");
    for (o, &s) in out.iter_mut().zip(src) {
        *o = f32::from(s) * U8_SCALE;
    }
}
