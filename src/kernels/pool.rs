//! MaxPool2d(2) behind a conv layer's ReLU, as training runs it: the
//! forward pass records each window's argmax (one byte), so the backward
//! pass routes the gradient without the conv output.
//!
//! [`conv::maxpool2_forward`](super::conv::maxpool2_forward) and
//! [`conv::maxpool2_backward`](super::conv::maxpool2_backward) are the
//! plain pair: the backward recomputes each window's argmax from the
//! pool's input, which must therefore be kept, a float per pixel. A conv
//! layer's output (6 × 28 × 28 floats a sample in LeNet, 4× the pooled
//! size) then makes three trips through memory: stored by the conv, read
//! by the ReLU and the pool, read again by the pool's backward.
//! [`relu_maxpool2_forward`] instead takes one sample's conv output while
//! it is still in L1 (the conv kernels call it sample by sample, see
//! [`conv::conv2d_relu_maxpool2_forward`](super::conv::conv2d_relu_maxpool2_forward)),
//! and [`maxpool2_backward_routed`] needs only the bytes.
//!
//! # The rule, and why the bits are the plain pair's
//!
//! ReLU is [`relu`]: `v if v > 0 else +0` (NaN and −0 become +0). The
//! window is then scanned in
//! the plain pool's order (0,0), (0,1), (1,0), (1,1), a later pixel taking
//! over when it is greater than the running maximum: the first maximum
//! wins a tie. The plain pool's rule also lets a NaN take over, but after
//! the ReLU there is none. So the pooled values are the plain pool's on
//! the ReLU's output, bit for bit, and the argmax is the position the
//! plain backward routes to; `tests/conv_kernels.rs` checks both against
//! the plain pair and the f64 references, ties, NaN and signed zeros
//! included.
//!
//! Argmax bytes: 0, 1, 2, 3 for the window's (0,0), (0,1), (1,0), (1,1);
//! one per output, in the output's layout.

use std::hint::select_unpredictable;

use super::conv::PoolGeom;
#[cfg(target_arch = "x86_64")]
use super::dispatch::KernelPath;

/// ReLU then MaxPool2d(2): `out` (n × c × ⌊H/2⌋ × ⌊W/2⌋, overwritten) the
/// maximum of each 2 × 2 window of `max(inp, 0)` (`inp` n × c × H × W),
/// `argmax` (one byte per output) the position it came from, by the rule
/// in the module docs. The same bits on every ISA (a selection); the AVX2
/// copy is picked at run time.
///
/// # Panics
/// If a slice length disagrees with `n` and `g`.
pub fn relu_maxpool2_forward(
    out: &mut [f32],
    argmax: &mut [u8],
    inp: &[f32],
    n: usize,
    g: PoolGeom,
) {
    check(inp.len(), out.len(), argmax.len(), n, g);
    if out.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if KernelPath::Avx2.is_available() && g.out_w() >= 4 {
        // SAFETY: AVX2 was detected; the lengths were checked and the rows
        // hold at least 4 windows.
        return unsafe { relu_pool_avx2(out, argmax, inp, g) };
    }
    relu_pool_body(out, argmax, inp, g)
}

/// The backward of [`relu_maxpool2_forward`]'s pool: `d_inp` (n × c × H ×
/// W, overwritten) gets each `d_out` value at the position `argmax` names
/// and 0 everywhere else, a dropped last row or column included. The
/// ReLU's mask is the caller's (on `d_out`, with the pooled output: see
/// the training step). The same bits on every ISA.
///
/// A byte over 3 routes its gradient nowhere (the window gets zeros):
/// [`relu_maxpool2_forward`] never writes one, and checking every byte
/// here cost a pass over them (1.4% of a LeNet epoch).
///
/// # Panics
/// If a slice length disagrees with `n` and `g`.
pub fn maxpool2_backward_routed(
    d_inp: &mut [f32],
    d_out: &[f32],
    argmax: &[u8],
    n: usize,
    g: PoolGeom,
) {
    check(d_inp.len(), d_out.len(), argmax.len(), n, g);
    if d_inp.is_empty() {
        return;
    }
    if d_out.is_empty() {
        // Windows of nothing: every pixel is dropped.
        d_inp.fill(0.0);
        return;
    }
    // Plane by plane: `route_plane` picks AVX2 where the CPU has it.
    route_body(d_inp, d_out, argmax, g)
}

fn check(full: usize, pooled: usize, bytes: usize, n: usize, g: PoolGeom) {
    assert_eq!(
        Some(full),
        n.checked_mul(g.in_len()),
        "the full side must be n × c × H × W"
    );
    assert_eq!(
        Some(pooled),
        n.checked_mul(g.out_len()),
        "the pooled side must be n × c × H/2 × W/2"
    );
    assert_eq!(bytes, pooled, "one argmax byte per pooled value");
}

/// ReLU of one value: `v` if `v > 0`, else +0 (so NaN and −0 become +0).
/// The one definition: [`crate::nn::relu_forward`] applies it, and the
/// AVX2 pool's `max_ps(v, 0)` computes exactly it.
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// `if c { x } else { y }` without a branch (see `conv::sel`).
#[inline(always)]
fn sel<T>(c: bool, x: T, y: T) -> T {
    select_unpredictable(c, x, y)
}

/// Lengths checked by [`relu_maxpool2_forward`].
fn relu_pool_body(out: &mut [f32], argmax: &mut [u8], inp: &[f32], g: PoolGeom) {
    relu_pool_rows(out, argmax, inp, g, |r0, r1, orow, arow| {
        let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
        for ((o, i), (a, b)) in orow.iter_mut().zip(arow.iter_mut()).zip(windows) {
            let mut m = relu(a[0]);
            let mut at = 0u8;
            for (j, v) in [(1, a[1]), (2, b[0]), (3, b[1])] {
                let v = relu(v);
                let takes = v > m;
                m = f32::from_bits(sel(takes, v.to_bits(), m.to_bits()));
                at = sel(takes, j, at);
            }
            *o = m;
            *i = at;
        }
    })
}

/// [`relu_maxpool2_forward`]'s walk over the rows of windows: `row(r0,
/// r1, out_row, argmax_row)` with the two input rows of ⌊W/2⌋ windows
/// (2·⌊W/2⌋ floats each: an odd last column is never read) and their
/// outputs. Lengths as checked there.
#[inline(always)]
fn relu_pool_rows(
    out: &mut [f32],
    argmax: &mut [u8],
    inp: &[f32],
    g: PoolGeom,
    row: impl Fn(&[f32], &[f32], &mut [f32], &mut [u8]),
) {
    let (w, oh, ow) = (g.w, g.out_h(), g.out_w());
    let planes = inp.chunks_exact(g.h * w).zip(
        out.chunks_exact_mut(oh * ow)
            .zip(argmax.chunks_exact_mut(oh * ow)),
    );
    for (pi, (po, pa)) in planes {
        let rows = po.chunks_exact_mut(ow).zip(pa.chunks_exact_mut(ow));
        for (oy, (orow, arow)) in rows.enumerate() {
            let r0 = &pi[2 * oy * w..][..2 * ow];
            let r1 = &pi[(2 * oy + 1) * w..][..2 * ow];
            row(r0, r1, orow, arow);
        }
    }
}

/// Calls `f(x0)` for the groups of 4 windows of a row of `ow` ≥ 4: x0 =
/// 0, 4, 8, …, the last group moved back to end at `ow` (it overlaps the
/// one before, which the vector kernels allow: they write the same values
/// twice).
#[inline(always)]
pub(super) fn groups_of_4(ow: usize, mut f: impl FnMut(usize)) {
    assert!(ow >= 4, "groups of 4 need 4 windows");
    let mut x = 0;
    loop {
        let x0 = x.min(ow - 4);
        f(x0);
        if x0 + 4 == ow {
            break;
        }
        x += 4;
    }
}

/// Lengths checked by [`maxpool2_backward_routed`]; `d_out` not empty.
fn route_body(d_inp: &mut [f32], d_out: &[f32], argmax: &[u8], g: PoolGeom) {
    let (h, w, oh, ow) = (g.h, g.w, g.out_h(), g.out_w());
    for ((gp, po), pa) in d_inp
        .chunks_exact_mut(h * w)
        .zip(d_out.chunks_exact(oh * ow))
        .zip(argmax.chunks_exact(oh * ow))
    {
        route_plane(gp, w, (h, w), po, pa);
    }
}

/// One plane: the gradients `g` of the ⌊H/2⌋ × ⌊W/2⌋ pooled outputs and
/// their argmax bytes, routed to the H × W input plane whose row y starts
/// at `dst[y · stride]` (W floats written per row, all of them: a dropped
/// odd last row or column gets 0; the floats between rows are left as
/// they are). The plane-level piece of [`maxpool2_backward_routed`], also
/// used by the conv kernels to route a pooled gradient straight into their
/// padded copies (`conv::Source::Pooled`), so that the full-size gradient
/// is never stored.
///
/// # Panics
/// If `stride` < W, `dst` is too short, or `g` and `argmax` are not
/// ⌊H/2⌋ · ⌊W/2⌋ long.
pub(crate) fn route_plane(
    dst: &mut [f32],
    stride: usize,
    (h, w): (usize, usize),
    g: &[f32],
    argmax: &[u8],
) {
    let (oh, ow) = (h / 2, w / 2);
    assert!(g.len() == oh * ow && argmax.len() == g.len() && stride >= w);
    if h == 0 || w == 0 {
        return;
    }
    assert!(
        dst.len() >= (h - 1) * stride + w,
        "dst too short for the plane"
    );
    #[cfg(target_arch = "x86_64")]
    if ow >= 4 && KernelPath::Avx2.is_available() {
        // SAFETY: AVX2 was detected; lengths as asserted, ow ≥ 4.
        return unsafe { route_plane_avx2(dst, stride, (h, w), g, argmax) };
    }
    route_plane_body(dst, stride, (h, w), g, argmax, route_row_pair)
}

/// [`route_plane`]'s loop over row pairs, with `pair` routing one (its
/// lengths checked there).
#[inline(always)]
fn route_plane_body(
    dst: &mut [f32],
    stride: usize,
    (h, w): (usize, usize),
    g: &[f32],
    argmax: &[u8],
    pair: impl Fn(&mut [f32], &mut [f32], &[f32], &[u8]),
) {
    let (oh, ow) = (h / 2, w / 2);
    if ow > 0 {
        for (oy, (grow, arow)) in g.chunks_exact(ow).zip(argmax.chunks_exact(ow)).enumerate() {
            let (top, bottom) = dst[2 * oy * stride..].split_at_mut(stride);
            let (d0, d1) = (&mut top[..w], &mut bottom[..w]);
            pair(d0, d1, grow, arow);
            if w % 2 == 1 {
                // An odd last column: no window reads it.
                d0[w - 1] = 0.0;
                d1[w - 1] = 0.0;
            }
        }
    } else {
        // W = 1: no windows; every row is dropped.
        for y in 0..2 * oh {
            dst[y * stride..y * stride + w].fill(0.0);
        }
    }
    if h % 2 == 1 {
        dst[(h - 1) * stride..][..w].fill(0.0);
    }
}

/// One row of windows, scalar: `d0` and `d1` W floats, `g` and `argmax`
/// ⌊W/2⌋; writes the first 2·⌊W/2⌋ floats of each row.
#[inline(always)]
fn route_row_pair(d0: &mut [f32], d1: &mut [f32], g: &[f32], argmax: &[u8]) {
    let windows = d0.chunks_exact_mut(2).zip(d1.chunks_exact_mut(2));
    for ((&gv, &at), (da, db)) in g.iter().zip(argmax).zip(windows) {
        for (j, d) in da.iter_mut().chain(db.iter_mut()).enumerate() {
            *d = f32::from_bits(sel(usize::from(at) == j, gv.to_bits(), 0));
        }
    }
}

/// [`relu_pool_body`] in explicit AVX2, four windows at a time (as the
/// plain pool's backward: the short rows, 7 or 14 windows, would leave an
/// autovectorised loop mostly to its scalar tail). The last group of a row
/// is moved back to end at ⌊W/2⌋, overlapping the one before: the same
/// values are written twice.
///
/// # Safety
/// The CPU supports AVX2; lengths as checked by [`relu_maxpool2_forward`];
/// at least 4 windows a row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn relu_pool_avx2(out: &mut [f32], argmax: &mut [u8], inp: &[f32], g: PoolGeom) {
    relu_pool_rows(out, argmax, inp, g, |r0, r1, orow, arow| {
        groups_of_4(orow.len(), |x0| {
            let at = 2 * x0..2 * x0 + 8;
            // SAFETY: AVX2 is this function's promise, and these closures
            // run only inside it; the slices have the fixed lengths
            // `relu_pool4` reads and writes.
            unsafe {
                relu_pool4(
                    r0[at.clone()].try_into().unwrap(),
                    r1[at].try_into().unwrap(),
                    (&mut orow[x0..x0 + 4]).try_into().unwrap(),
                    (&mut arow[x0..x0 + 4]).try_into().unwrap(),
                )
            };
        })
    })
}

/// Four windows: rows `r0` = a0 b0 a1 b1 …, `r1` = c0 d0 c1 d1 …; writes
/// their maxima after ReLU and argmax bytes. Works in the even lanes, each
/// pair's odd pixel swapped in beside it (no lane crossing until the end).
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn relu_pool4(r0: &[f32; 8], r1: &[f32; 8], out: &mut [f32; 4], argmax: &mut [u8; 4]) {
    use core::arch::x86_64::*;
    // SAFETY: AVX2 is the caller's promise; every load and store touches
    // exactly the floats (or bytes) of its array.
    unsafe {
        let zero = _mm256_setzero_ps();
        // ReLU: `max_ps(v, 0)` is `v > 0 ? v : 0` (the second operand when
        // v is NaN or a zero), exactly `relu`.
        let a = _mm256_max_ps(_mm256_loadu_ps(r0.as_ptr()), zero);
        let c = _mm256_max_ps(_mm256_loadu_ps(r1.as_ptr()), zero);
        let b = _mm256_permute_ps::<0b10_11_00_01>(a);
        let d = _mm256_permute_ps::<0b10_11_00_01>(c);
        let tb = _mm256_cmp_ps::<_CMP_GT_OQ>(b, a);
        let m = _mm256_blendv_ps(a, b, tb);
        let tc = _mm256_cmp_ps::<_CMP_GT_OQ>(c, m);
        let m = _mm256_blendv_ps(m, c, tc);
        let td = _mm256_cmp_ps::<_CMP_GT_OQ>(d, m);
        let m = _mm256_blendv_ps(m, d, td);
        // The argmax as 32-bit integers: the last to take over.
        let i = _mm256_and_si256(_mm256_castps_si256(tb), _mm256_set1_epi32(1));
        let i = _mm256_blendv_epi8(i, _mm256_set1_epi32(2), _mm256_castps_si256(tc));
        let i = _mm256_blendv_epi8(i, _mm256_set1_epi32(3), _mm256_castps_si256(td));
        // The even lanes, in order.
        let even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        let m = _mm256_permutevar8x32_ps(m, even);
        _mm_storeu_ps(out.as_mut_ptr(), _mm256_castps256_ps128(m));
        let i = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(i, even));
        // Four 32-bit integers ≤ 3 to four bytes.
        let bytes = _mm_packus_epi16(_mm_packus_epi32(i, i), _mm_setzero_si128());
        let word = _mm_cvtsi128_si32(bytes).to_le_bytes();
        *argmax = word;
    }
}

/// [`route_plane`] in explicit AVX2, four windows at a time (the last
/// group of a row moved back to end at ⌊W/2⌋, as in [`relu_pool_avx2`]).
///
/// # Safety
/// The CPU supports AVX2; lengths as asserted by [`route_plane`]; at least
/// 4 windows a row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn route_plane_avx2(
    dst: &mut [f32],
    stride: usize,
    hw: (usize, usize),
    g: &[f32],
    argmax: &[u8],
) {
    route_plane_body(dst, stride, hw, g, argmax, |d0, d1, g, argmax| {
        groups_of_4(g.len(), |x0| {
            let at = 2 * x0..2 * x0 + 8;
            // SAFETY: AVX2 is this function's promise, and these closures
            // run only inside it; the slices have the fixed lengths
            // `route4` reads and writes.
            unsafe {
                route4(
                    g[x0..x0 + 4].try_into().unwrap(),
                    argmax[x0..x0 + 4].try_into().unwrap(),
                    (&mut d0[at.clone()]).try_into().unwrap(),
                    (&mut d1[at]).try_into().unwrap(),
                )
            };
        });
    })
}

/// Four windows' gradients `g` to the rows `d0` (positions 0, 1 of each
/// window) and `d1` (2, 3), by their argmax bytes.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn route4(g: &[f32; 4], argmax: &[u8; 4], d0: &mut [f32; 8], d1: &mut [f32; 8]) {
    use core::arch::x86_64::*;
    // SAFETY: AVX2 is the caller's promise; every load and store touches
    // exactly the floats of its array (the bytes are read as a value).
    unsafe {
        let pairs = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        // i0 i0 i1 i1 …, g0 g0 g1 g1 ….
        let bytes = _mm_cvtsi32_si128(i32::from_le_bytes(*argmax));
        let i = _mm256_permutevar8x32_epi32(_mm256_cvtepu8_epi32(bytes), pairs);
        let gg = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(g.as_ptr())), pairs);
        let top = _mm256_cmpeq_epi32(i, _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1));
        let bottom = _mm256_cmpeq_epi32(i, _mm256_setr_epi32(2, 3, 2, 3, 2, 3, 2, 3));
        _mm256_storeu_ps(d0.as_mut_ptr(), _mm256_and_ps(_mm256_castsi256_ps(top), gg));
        _mm256_storeu_ps(
            d1.as_mut_ptr(),
            _mm256_and_ps(_mm256_castsi256_ps(bottom), gg),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 bodies against the scalar ones, whatever the CPU's
    /// dispatch picks: rows of 4 to 9 windows, odd and even sizes, values
    /// with ties, NaN and signed zeros, and argmax bytes over 3 (which
    /// route nowhere).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_bodies_match_the_scalar_ones() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            // No AVX2 body to compare: a skip, which CI (`CI=true`, as
            // `tests/common::in_ci` reads it) must never see.
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "prerequisite missing under CI=true: a CPU with AVX2");
            eprintln!("skipped (not under CI): this CPU has no AVX2");
            return;
        }
        let vals = [-1.0, -0.0, 0.0, 1.0, 2.0, f32::NAN, 2.0, 0.5];
        let mut next = {
            let mut x = 7u64;
            move || {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as usize
            }
        };
        for (h, w) in [
            (8, 8),
            (9, 11),
            (2, 9),
            (5, 17),
            (14, 14),
            (28, 28),
            (3, 19),
        ] {
            let g = PoolGeom::new(2, h, w);
            let inp: Vec<f32> = (0..g.in_len()).map(|_| vals[next() % 8]).collect();
            let (mut o1, mut o2) = (vec![9.0; g.out_len()], vec![9.0; g.out_len()]);
            let (mut a1, mut a2) = (vec![9u8; g.out_len()], vec![9u8; g.out_len()]);
            relu_pool_body(&mut o1, &mut a1, &inp, g);
            // SAFETY: AVX2 detected above; lengths as checked by the public
            // function; every geometry has at least 4 windows a row.
            unsafe { relu_pool_avx2(&mut o2, &mut a2, &inp, g) };
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&o1), bits(&o2), "forward {h}x{w}");
            assert_eq!(a1, a2, "argmax {h}x{w}");

            let d: Vec<f32> = (0..g.out_len()).map(|i| i as f32 + 0.5).collect();
            let bytes: Vec<u8> = (0..g.out_len())
                .map(|_| [0, 1, 2, 3, 4, 255][next() % 6])
                .collect();
            let stride = w + 3;
            let plane = h * stride;
            let (mut r1, mut r2) = (vec![7.0; 2 * plane], vec![7.0; 2 * plane]);
            let per = g.out_len() / 2;
            for c in 0..2 {
                let (dc, bc) = (&d[c * per..][..per], &bytes[c * per..][..per]);
                route_plane_body(&mut r1[c * plane..], stride, (h, w), dc, bc, route_row_pair);
                // SAFETY: as above.
                unsafe { route_plane_avx2(&mut r2[c * plane..], stride, (h, w), dc, bc) };
            }
            assert_eq!(bits(&r1), bits(&r2), "route {h}x{w}");
            // Bytes over 3 route nowhere; the rows' floats past W stay.
            for (c, (dc, bc)) in d.chunks(per).zip(bytes.chunks(per)).enumerate() {
                let got: f32 = (0..h)
                    .flat_map(|y| r1[c * plane + y * stride..][..w].to_vec())
                    .sum();
                let want: f32 = dc
                    .iter()
                    .zip(bc)
                    .filter(|(_, &b)| b < 4)
                    .map(|(v, _)| v)
                    .sum();
                assert_eq!(got, want, "routed total {h}x{w}");
                assert!((0..h).all(|y| r1[c * plane + y * stride + w..][..3] == [7.0; 3]));
            }
        }
    }
}
