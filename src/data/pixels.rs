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
