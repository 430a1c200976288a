//! One vector interface, three instruction sets.
//!
//! The fused kernels in [`super::fused`] are written once, generically over
//! [`Vector`], and instantiated inside a `#[target_feature]` entry point per
//! ISA. Every method here is `#[inline(always)]`, so once the generic kernel
//! is inlined into an entry point, the intrinsics compile with that entry
//! point's features (the same pattern as memchr's `Vector` trait).
//!
//! # Contract
//!
//! * `LANES` f32 lanes per vector.
//! * Loads and stores are unaligned and touch exactly `LANES` elements;
//!   pixels load as u8 (converted exactly) or f32 ([`Vector::load_px`]).
//! * `mul_add(a, b, acc)` is `a·b + acc` per lane: fused (one rounding) on
//!   the AVX paths, unfused on the portable path. Either way each lane's
//!   result depends only on that lane's inputs.
//! * `reduce_sum` adds the lanes in a fixed order, so a given vector always
//!   reduces to the same bits.

use super::fused::{Pixel, PixelKind};

/// A vector of `LANES` f32 values. See the module docs for the contract.
///
/// # Safety
///
/// The `unsafe fn`s require that the CPU supports the implementing type's
/// instruction set, and that pointers are valid for `LANES` elements.
pub(crate) trait Vector: Copy {
    const LANES: usize;
    /// Vectors of this type the ISA's register file holds at once (what
    /// the register blocks are sized against).
    const REGISTERS: usize;
    /// All lanes 0.
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set.
    unsafe fn zero() -> Self;
    /// Every lane `x`.
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set.
    unsafe fn splat(x: f32) -> Self;
    /// Loads `LANES` f32 (unaligned).
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set, and `ptr`
    /// is valid for reading `LANES` f32.
    unsafe fn load(ptr: *const f32) -> Self;
    /// Loads `LANES` bytes and converts each to f32 (exact: 0..=255).
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set, and `ptr`
    /// is valid for reading `LANES` bytes.
    unsafe fn load_u8(ptr: *const u8) -> Self;
    /// Loads `LANES` pixels of type `P` as f32: [`Vector::load_u8`] for
    /// u8, [`Vector::load`] for f32 (the choice is made at compile time).
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set, and `ptr`
    /// is valid for reading `LANES` values of `P`.
    #[inline(always)]
    unsafe fn load_px<P: Pixel>(ptr: *const P) -> Self {
        // SAFETY: `P::KIND` names `P`'s type truthfully (the trait is
        // sealed: u8 and f32 only), so the cast pointer is valid for
        // `LANES` elements of that type, as the caller guarantees.
        unsafe {
            match P::KIND {
                PixelKind::U8 => Self::load_u8(ptr.cast()),
                PixelKind::F32 => Self::load(ptr.cast()),
            }
        }
    }
    /// Stores the `LANES` lanes (unaligned).
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set, and `ptr`
    /// is valid for writing `LANES` f32.
    unsafe fn store(self, ptr: *mut f32);
    /// `a·b + acc` per lane.
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set.
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self;
    /// The sum of the lanes, in a fixed order.
    ///
    /// # Safety
    /// The CPU supports the implementing type's instruction set.
    unsafe fn reduce_sum(self) -> f32;
}

/// The portable fallback: eight lanes as a plain array. LLVM turns the lane
/// loops into SSE2 on x86-64 and NEON on aarch64.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;
    /// x86-64's 16 SSE registers, two per vector.
    const REGISTERS: usize = 8;
    /// # Safety
    /// As [`Vector::zero`].
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    /// # Safety
    /// As [`Vector::splat`].
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    /// # Safety
    /// As [`Vector::load`].
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable f32 at `ptr`.
        Portable(unsafe { ptr.cast::<[f32; 8]>().read_unaligned() })
    }
    /// # Safety
    /// As [`Vector::load_u8`].
    #[inline(always)]
    unsafe fn load_u8(ptr: *const u8) -> Self {
        // SAFETY: the caller guarantees 8 readable bytes at `ptr`.
        let b = unsafe { ptr.cast::<[u8; 8]>().read_unaligned() };
        Portable(b.map(f32::from))
    }
    /// # Safety
    /// As [`Vector::store`].
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        // SAFETY: the caller guarantees 8 writable f32 at `ptr`.
        unsafe { ptr.cast::<[f32; 8]>().write_unaligned(self.0) }
    }
    /// # Safety
    /// As [`Vector::mul_add`].
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        let mut out = acc.0;
        for ((o, x), y) in out.iter_mut().zip(a.0).zip(b.0) {
            *o += x * y;
        }
        Portable(out)
    }
    /// # Safety
    /// As [`Vector::reduce_sum`].
    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        let v = self.0;
        ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use core::arch::x86_64::*;

    /// AVX2 + FMA: eight lanes in a `__m256`.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Vector for Avx2 {
        const LANES: usize = 8;
        const REGISTERS: usize = 16;
        /// # Safety
        /// As [`Vector::zero`].
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Avx2(_mm256_setzero_ps()) }
        }
        /// # Safety
        /// As [`Vector::splat`].
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Avx2(_mm256_set1_ps(x)) }
        }
        /// # Safety
        /// As [`Vector::load`].
        #[inline(always)]
        unsafe fn load(ptr: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX2 and 8 readable f32 at `ptr`.
            unsafe { Avx2(_mm256_loadu_ps(ptr)) }
        }
        /// # Safety
        /// As [`Vector::load_u8`].
        #[inline(always)]
        unsafe fn load_u8(ptr: *const u8) -> Self {
            // SAFETY: the caller guarantees AVX2 and 8 readable bytes at `ptr`
            // (`_mm_loadl_epi64` reads exactly 8).
            unsafe {
                let bytes = _mm_loadl_epi64(ptr.cast());
                Avx2(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)))
            }
        }
        /// # Safety
        /// As [`Vector::store`].
        #[inline(always)]
        unsafe fn store(self, ptr: *mut f32) {
            // SAFETY: the caller guarantees AVX2 and 8 writable f32 at `ptr`.
            unsafe { _mm256_storeu_ps(ptr, self.0) }
        }
        /// # Safety
        /// As [`Vector::mul_add`].
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract).
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, acc.0)) }
        }
        /// # Safety
        /// As [`Vector::reduce_sum`].
        #[inline(always)]
        unsafe fn reduce_sum(self) -> f32 {
            // SAFETY: the caller guarantees AVX2 (trait contract); no memory
            // is accessed.
            unsafe {
                let lo = _mm256_castps256_ps128(self.0);
                let hi = _mm256_extractf128_ps::<1>(self.0);
                let s = _mm_add_ps(lo, hi);
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
                _mm_cvtss_f32(s)
            }
        }
    }

    /// AVX-512F: sixteen lanes in a `__m512`. (AVX-512F implies AVX2 and
    /// FMA, so it may use [`Avx2`]'s methods.)
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Vector for Avx512 {
        const LANES: usize = 16;
        const REGISTERS: usize = 32;
        /// # Safety
        /// As [`Vector::zero`].
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        /// # Safety
        /// As [`Vector::splat`].
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Avx512(_mm512_set1_ps(x)) }
        }
        /// # Safety
        /// As [`Vector::load`].
        #[inline(always)]
        unsafe fn load(ptr: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F and 16 readable f32 at `ptr`.
            unsafe { Avx512(_mm512_loadu_ps(ptr)) }
        }
        /// # Safety
        /// As [`Vector::load_u8`].
        #[inline(always)]
        unsafe fn load_u8(ptr: *const u8) -> Self {
            // SAFETY: the caller guarantees AVX-512F and 16 readable bytes at
            // `ptr` (`_mm_loadu_si128` reads exactly 16).
            unsafe {
                let bytes = _mm_loadu_si128(ptr.cast());
                Avx512(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)))
            }
        }
        /// # Safety
        /// As [`Vector::store`].
        #[inline(always)]
        unsafe fn store(self, ptr: *mut f32) {
            // SAFETY: the caller guarantees AVX-512F and 16 writable f32 at `ptr`.
            unsafe { _mm512_storeu_ps(ptr, self.0) }
        }
        /// # Safety
        /// As [`Vector::mul_add`].
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F, which includes FMA for
            // 512-bit vectors (trait contract).
            unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, acc.0)) }
        }
        /// # Safety
        /// As [`Vector::reduce_sum`].
        #[inline(always)]
        unsafe fn reduce_sum(self) -> f32 {
            // An explicit tree (not `_mm512_reduce_add_ps`, whose order is
            // the library's choice), so the bits cannot change with the
            // toolchain: halves, then the AVX2 tree.
            // SAFETY: the caller guarantees AVX-512F, which implies the AVX2
            // the inner reduction uses; no memory is accessed.
            unsafe {
                let lo = _mm512_castps512_ps256(self.0);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
                Avx2(_mm256_add_ps(lo, hi)).reduce_sum()
            }
        }
    }
}
