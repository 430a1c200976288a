//! Every kernel, on every path this CPU has, against the naive f64
//! references, on random shapes including 1, odd sizes and MNIST's.
//! Outputs are NaN-filled first, so an element a kernel forgets to write
//! fails the comparison.

mod common;

use common::{random_f32, random_u8};
use idx_softmax::data::U8_SCALE;
use idx_softmax::kernels::{bias_grad, fused, gemm, reference, softmax_ce, KernelPath};
use idx_softmax::optim::Sgd;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn fused_paths() -> Vec<KernelPath> {
    let paths: Vec<_> = KernelPath::available()
        .into_iter()
        .filter(|p| p.is_fused())
        .collect();
    assert!(paths.contains(&KernelPath::Portable));
    paths
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |got − want| ≤ tol · (1 + scale) elementwise, with a useful message.
fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + s),
            "{what}: element {i}: got {g}, want {w} (error {err:e}, allowed {:e})",
            tol * (1.0 + s)
        );
    }
}

const KS: [usize; 11] = [1, 3, 8, 15, 16, 17, 31, 33, 64, 100, 784];

/// Random rows of either pixel type the fused kernels read: u8 (scaled by
/// [`U8_SCALE`], as the engine does) or f32 in [-1, 1) (scale 1).
enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Pixels {
    fn random(rng: &mut impl Rng, f32_rows: bool, len: usize) -> Self {
        if f32_rows {
            Self::F32(random_f32(rng, len, 1.0))
        } else {
            Self::U8(random_u8(rng, len))
        }
    }

    /// Like MNIST, mostly zero: each run of 8 values of each row is zeroed
    /// with probability 0.6 (f32: as −0 or +0 at random), and single
    /// values at random with probability 0.3, so the kernels' skipping of
    /// zero vectors ([`fused::Sparsity`]) meets every pattern.
    fn sparse(rng: &mut impl Rng, f32_rows: bool, len: usize) -> Self {
        let mut p = Self::random(rng, f32_rows, len);
        let mut zero = |i: usize, rng: &mut Xoshiro256PlusPlus| match &mut p {
            Self::U8(v) => v[i] = 0,
            Self::F32(v) => v[i] = if rng.random() { 0.0 } else { -0.0 },
        };
        let mut r2 = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        for run in 0..len.div_ceil(8) {
            let whole = r2.random_bool(0.6);
            for i in run * 8..(run * 8 + 8).min(len) {
                if whole || r2.random_bool(0.3) {
                    zero(i, &mut r2);
                }
            }
        }
        p
    }

    fn images(&self) -> fused::Images<'_> {
        match self {
            Self::U8(v) => fused::Images::U8(v),
            Self::F32(v) => fused::Images::F32(v),
        }
    }

    /// The scale the engine applies to the raw values.
    fn scale(&self) -> f32 {
        match self {
            Self::U8(_) => U8_SCALE,
            Self::F32(_) => 1.0,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::F32(_) => "f32",
        }
    }

    /// Rows `rows` in order, as f64 raw values times `scale`.
    fn gather_f64(&self, k: usize, rows: &[u32], scale: f64) -> Vec<f64> {
        match self {
            Self::U8(v) => common::gather_f64(v, k, rows, scale),
            Self::F32(v) => rows
                .iter()
                .flat_map(|&r| {
                    v[r as usize * k..(r as usize + 1) * k]
                        .iter()
                        .map(move |&x| x as f64 * scale)
                })
                .collect(),
        }
    }
}

/// The pixel types under test (false: u8, true: f32).
const PIXEL_TYPES: [bool; 2] = [false, true];
const CS: [usize; 7] = [1, 2, 3, 9, 10, 11, 21];

#[test]
fn fused_forward_matches_reference() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    for (path, f32_rows) in fused_paths()
        .into_iter()
        .flat_map(|p| PIXEL_TYPES.map(|t| (p, t)))
    {
        for &k in &KS {
            for &c in &CS {
                let n = 7;
                let images = if rng.random() {
                    Pixels::sparse(&mut rng, f32_rows, n * k)
                } else {
                    Pixels::random(&mut rng, f32_rows, n * k)
                };
                let nrows = rng.random_range(0..12);
                let rows: Vec<u32> = (0..nrows).map(|_| rng.random_range(0..n as u32)).collect();
                let wt = random_f32(&mut rng, c * k, 1.0);
                let bias = random_f32(&mut rng, c, 1.0);
                let mut logits = vec![f32::NAN; rows.len() * c];
                let px = images.scale();
                match &images {
                    Pixels::U8(x) => fused::forward(path, x, k, &rows, &wt, &bias, px, &mut logits),
                    Pixels::F32(x) => {
                        fused::forward(path, x, k, &rows, &wt, &bias, px, &mut logits)
                    }
                }

                let x = images.gather_f64(k, &rows, px as f64);
                let want = reference::forward(&x, &to_f64(&wt), &to_f64(&bias), rows.len(), k);
                let absw: Vec<f64> = to_f64(&wt).iter().map(|w| w.abs()).collect();
                let xabs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
                let scale = reference::forward(&xabs, &absw, &vec![0.0; c], rows.len(), k);
                assert_close(
                    &format!("{path} {} forward k={k} c={c}", images.name()),
                    &logits,
                    &want,
                    &scale,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn fused_weight_grad_matches_reference() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    for (path, f32_rows) in fused_paths()
        .into_iter()
        .flat_map(|p| PIXEL_TYPES.map(|t| (p, t)))
    {
        for &k in &KS {
            for &c in &CS {
                let n = 9;
                let images = if rng.random() {
                    Pixels::sparse(&mut rng, f32_rows, n * k)
                } else {
                    Pixels::random(&mut rng, f32_rows, n * k)
                };
                let b = rng.random_range(1..40);
                let rows: Vec<u32> = (0..b).map(|_| rng.random_range(0..n as u32)).collect();
                let g = random_f32(&mut rng, b * c, 0.1);
                let k0 = rng.random_range(0..k);
                let width = rng.random_range(1..=k - k0);
                let mut out = vec![f32::NAN; c * width];
                match &images {
                    Pixels::U8(x) => {
                        fused::weight_grad(path, x, k, &rows, &g, c, k0, width, &mut out)
                    }
                    Pixels::F32(x) => {
                        fused::weight_grad(path, x, k, &rows, &g, c, k0, width, &mut out)
                    }
                }

                // Raw values: the engine applies the u8 scale in the update.
                let x = images.gather_f64(k, &rows, 1.0);
                let full = reference::weight_grad(&x, &to_f64(&g), b, k, c);
                let absg: Vec<f64> = g.iter().map(|v| v.abs() as f64).collect();
                let xabs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
                let full_scale = reference::weight_grad(&xabs, &absg, b, k, c);
                let pick = |m: &[f64]| -> Vec<f64> {
                    (0..c)
                        .flat_map(|cl| m[cl * k + k0..cl * k + k0 + width].to_vec())
                        .collect()
                };
                assert_close(
                    &format!(
                        "{path} {} weight_grad k={k} c={c} cols {k0}+{width}",
                        images.name()
                    ),
                    &out,
                    &pick(&full),
                    &pick(&full_scale),
                    1e-5,
                );
            }
        }
    }
}

/// The determinism promise at kernel level: splitting rows or columns in
/// any way gives the same bits, for both pixel types. On mostly-zero rows,
/// so that a row's register-block partners (which decide the vectors the
/// forward kernel skips) change with the split: skipping zero vectors
/// must not change a bit ([`fused::Sparsity`]).
#[test]
fn fused_results_do_not_depend_on_the_split() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let (n, k, c, b) = (50, 784, 10, 37);
    let rows: Vec<u32> = (0..b).map(|_| rng.random_range(0..n as u32)).collect();
    let wt = random_f32(&mut rng, c * k, 0.1);
    let bias = random_f32(&mut rng, c, 0.1);
    let g = random_f32(&mut rng, b * c, 0.01);
    for f32_rows in PIXEL_TYPES {
        let mut pixels = Pixels::sparse(&mut rng, f32_rows, n * k);
        // Two dense rows among the sparse ones.
        for r in [5, 17] {
            let dense = Pixels::random(&mut rng, f32_rows, k);
            match (&mut pixels, dense) {
                (Pixels::U8(v), Pixels::U8(d)) => v[r * k..(r + 1) * k].copy_from_slice(&d),
                (Pixels::F32(v), Pixels::F32(d)) => v[r * k..(r + 1) * k].copy_from_slice(&d),
                _ => unreachable!(),
            }
        }
        let (images, px, ty) = (pixels.images(), pixels.scale(), pixels.name());
        for path in fused_paths() {
            let mut whole = vec![0.0; b * c];
            images.forward(path, k, &rows, &wt, &bias, px, &mut whole);
            // Loading rows ahead is a hint: any far rows (fewer, more, out
            // of range) give the same bits.
            for far in [
                vec![],
                vec![3, 1],
                (0..60).rev().collect(),
                vec![u32::MAX; 40],
            ] {
                let mut got = vec![f32::NAN; b * c];
                images.forward_ahead(path, k, &rows, &far, &wt, &bias, px, &mut got);
                assert_eq!(bits(&whole), bits(&got), "{path} {ty}: far rows {far:?}");
            }
            for split in [1, 2, 3, 5, 36] {
                let mut parts = vec![0.0; b * c];
                for (i, chunk) in rows.chunks(split).enumerate() {
                    let start = i * split * c;
                    let end = start + chunk.len() * c;
                    images.forward(path, k, chunk, &wt, &bias, px, &mut parts[start..end]);
                }
                assert_eq!(
                    bits(&whole),
                    bits(&parts),
                    "{path} {ty}: forward split by {split}"
                );
            }

            let mut whole = vec![0.0; c * k];
            images.weight_grad(path, k, &rows, &g, c, 0, k, &mut whole, false);
            for cut in [1, 7, 16, 100, 393, 783] {
                let mut left = vec![0.0; c * cut];
                let mut right = vec![0.0; c * (k - cut)];
                images.weight_grad(path, k, &rows, &g, c, 0, cut, &mut left, false);
                images.weight_grad(path, k, &rows, &g, c, cut, k - cut, &mut right, false);
                for cl in 0..c {
                    assert_eq!(
                        bits(&whole[cl * k..cl * k + cut]),
                        bits(&left[cl * cut..(cl + 1) * cut]),
                        "{path} {ty}: cut {cut}"
                    );
                    assert_eq!(
                        bits(&whole[cl * k + cut..(cl + 1) * k]),
                        bits(&right[cl * (k - cut)..(cl + 1) * (k - cut)]),
                        "{path} {ty}: cut {cut}"
                    );
                }
            }

            // Rows split into blocks, each continuing the sums of the ones
            // before: the same bits as one pass, on full blocks and the tail
            // columns (width 100 = 64 + 32 + 4 on AVX-512).
            for (k0, width) in [(0, k), (7, 100), (780, 4)] {
                let mut one_pass = vec![f32::NAN; c * width];
                images.weight_grad(path, k, &rows, &g, c, k0, width, &mut one_pass, false);
                for block in [1, 5, 12, 36] {
                    let mut blocks = vec![f32::NAN; c * width];
                    for (i, part) in rows.chunks(block).enumerate() {
                        let g_part = &g[i * block * c..(i * block + part.len()) * c];
                        let cont = i > 0;
                        images.weight_grad(path, k, part, g_part, c, k0, width, &mut blocks, cont);
                    }
                    assert_eq!(
                        bits(&one_pass),
                        bits(&blocks),
                        "{path} {ty}: columns {k0}+{width} in row blocks of {block}"
                    );
                }
                // The generic entry points agree with the run-time choice.
                let mut direct = vec![f32::NAN; c * width];
                match &pixels {
                    Pixels::U8(x) => {
                        fused::weight_grad(
                            path,
                            x,
                            k,
                            &rows[..5],
                            &g[..5 * c],
                            c,
                            k0,
                            width,
                            &mut direct,
                        );
                        fused::weight_grad_continue(
                            path,
                            x,
                            k,
                            &rows[5..],
                            &g[5 * c..],
                            c,
                            k0,
                            width,
                            &mut direct,
                        );
                    }
                    Pixels::F32(x) => {
                        fused::weight_grad(
                            path,
                            x,
                            k,
                            &rows[..5],
                            &g[..5 * c],
                            c,
                            k0,
                            width,
                            &mut direct,
                        );
                        fused::weight_grad_continue(
                            path,
                            x,
                            k,
                            &rows[5..],
                            &g[5 * c..],
                            c,
                            k0,
                            width,
                            &mut direct,
                        );
                    }
                }
                assert_eq!(
                    bits(&one_pass),
                    bits(&direct),
                    "{path} {ty}: generic entry points"
                );
            }
        }
    }
}

/// Zeros of either sign, anywhere, change no bit: the f32 kernels on rows
/// whose zeros are all +0 and on the same rows with every zero −0 agree
/// (and agree with the u8 kernels on the same values scaled alike).
#[test]
fn the_sign_of_a_zero_pixel_changes_nothing() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    let (n, k, c, b) = (40, 200, 7, 33);
    let Pixels::U8(bytes) = Pixels::sparse(&mut rng, false, n * k) else {
        unreachable!()
    };
    let plus: Vec<f32> = bytes.iter().map(|&v| f32::from(v)).collect();
    let minus: Vec<f32> = plus
        .iter()
        .map(|&v| if v == 0.0 { -0.0 } else { v })
        .collect();
    let rows: Vec<u32> = (0..b).map(|_| rng.random_range(0..n as u32)).collect();
    let wt = random_f32(&mut rng, c * k, 0.1);
    let bias = random_f32(&mut rng, c, 0.1);
    let g = random_f32(&mut rng, b * c, 0.01);
    for path in fused_paths() {
        let mut out = [vec![0.0; b * c], vec![0.0; b * c], vec![0.0; b * c]];
        fused::forward(path, &bytes, k, &rows, &wt, &bias, 0.5, &mut out[0]);
        fused::forward(path, &plus, k, &rows, &wt, &bias, 0.5, &mut out[1]);
        fused::forward(path, &minus, k, &rows, &wt, &bias, 0.5, &mut out[2]);
        assert_eq!(bits(&out[0]), bits(&out[1]), "{path}: forward u8 vs f32");
        assert_eq!(bits(&out[1]), bits(&out[2]), "{path}: forward +0 vs -0");
        let mut dw = [vec![0.0; c * k], vec![0.0; c * k], vec![0.0; c * k]];
        fused::weight_grad(path, &bytes, k, &rows, &g, c, 0, k, &mut dw[0]);
        fused::weight_grad(path, &plus, k, &rows, &g, c, 0, k, &mut dw[1]);
        fused::weight_grad(path, &minus, k, &rows, &g, c, 0, k, &mut dw[2]);
        assert_eq!(bits(&dw[0]), bits(&dw[1]), "{path}: gradient u8 vs f32");
        assert_eq!(bits(&dw[1]), bits(&dw[2]), "{path}: gradient +0 vs -0");
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn gemm_wrappers_match_reference() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
    // (B, K, C): ones, odd sizes, and the real shapes: the forward product
    // is 100×784×10 and the gradient product 784×100×10 (as Gᵀ·X).
    let shapes = [
        (1, 1, 1),
        (1, 784, 10),
        (3, 5, 7),
        (17, 33, 9),
        (100, 784, 10),
        (64, 1, 3),
        (7, 129, 1),
    ];
    for (b, k, c) in shapes {
        let x = random_f32(&mut rng, b * k, 1.0);
        let wt = random_f32(&mut rng, c * k, 1.0);
        let bias = random_f32(&mut rng, c, 1.0);
        let mut logits = vec![f32::NAN; b * c];
        gemm::forward(&x, &wt, &bias, &mut logits, b, k);
        let want = reference::forward(&to_f64(&x), &to_f64(&wt), &to_f64(&bias), b, k);
        let absx: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
        let absw: Vec<f64> = wt.iter().map(|v| v.abs() as f64).collect();
        let scale = reference::forward(&absx, &absw, &vec![0.0; c], b, k);
        assert_close(
            &format!("gemm forward {b}×{k}×{c}"),
            &logits,
            &want,
            &scale,
            1e-5,
        );

        let g = random_f32(&mut rng, b * c, 1.0);
        let mut dwt = vec![f32::NAN; c * k];
        gemm::weight_grad(&x, &g, &mut dwt, b, k, c);
        let want = reference::weight_grad(&to_f64(&x), &to_f64(&g), b, k, c);
        let absg: Vec<f64> = g.iter().map(|v| v.abs() as f64).collect();
        let scale = reference::weight_grad(&absx, &absg, b, k, c);
        assert_close(
            &format!("gemm weight_grad {b}×{k}×{c}"),
            &dwt,
            &want,
            &scale,
            1e-5,
        );

        // Column blocks of the weight gradient (the MLP step's phase 2):
        // every block, including a partial last one and a width-0 one.
        for width in [1, 64, k] {
            let mut col0 = 0;
            while col0 <= k {
                let w = width.min(k - col0);
                let mut dw = vec![f32::NAN; c * w];
                gemm::weight_grad_cols(&x, k, &g, c, b, col0, w, &mut dw);
                for j in 0..c {
                    for i in 0..w {
                        let (got, want_v, sc) = (
                            dw[j * w + i],
                            want[j * k + col0 + i],
                            scale[j * k + col0 + i],
                        );
                        assert!(
                            (got as f64 - want_v).abs() <= 1e-5 * (1.0 + sc),
                            "gemm weight_grad_cols {b}×{k}×{c} cols {col0}+{w}: [{j}][{i}] {got} vs {want_v}"
                        );
                    }
                }
                if w == 0 {
                    break;
                }
                col0 += w;
            }
        }

        // The gradient passed to the layer below: dx = G · wt (B × K).
        let mut dx = vec![f32::NAN; b * k];
        gemm::input_grad(&g, &wt, &mut dx, b, c, k);
        let (g64, w64) = (to_f64(&g), to_f64(&wt));
        let mut want_dx = vec![0.0f64; b * k];
        let mut scale_dx = vec![0.0f64; b * k];
        for r in 0..b {
            for i in 0..k {
                for j in 0..c {
                    want_dx[r * k + i] += g64[r * c + j] * w64[j * k + i];
                    scale_dx[r * k + i] += (g64[r * c + j] * w64[j * k + i]).abs();
                }
            }
        }
        assert_close(
            &format!("gemm input_grad {b}×{k}×{c}"),
            &dx,
            &want_dx,
            &scale_dx,
            1e-5,
        );
    }
    // A block that leaves X is refused.
    let r = std::panic::catch_unwind(|| {
        let mut dw = vec![0.0; 2 * 3];
        gemm::weight_grad_cols(&[0.0; 4 * 5], 5, &[0.0; 4 * 2], 2, 4, 3, 3, &mut dw);
    });
    assert!(r.is_err(), "a column block past K must panic");
}

#[test]
fn softmax_ce_matches_reference() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    for c in [1, 2, 10, 47] {
        let b = 33;
        let logits = random_f32(&mut rng, b * c, 20.0);
        let labels: Vec<u32> = (0..b).map(|_| rng.random_range(0..c as u32)).collect();
        let mut g = vec![f32::NAN; b * c];
        let mut losses = vec![f32::NAN; b];
        softmax_ce::block(
            KernelPath::Portable,
            &logits,
            c,
            |i| labels[i] as usize,
            1.0 / b as f32,
            &mut g,
            &mut losses,
        );
        let lab: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let (want_loss, want_g) = reference::softmax_ce(&to_f64(&logits), &lab, c);
        // The evaluation's f64 softmax: loss = lse − z_y, p = e^(z − lse).
        for r in 0..b {
            let z = &logits[r * c..(r + 1) * c];
            let lse = softmax_ce::log_sum_exp(z);
            let l = lse - z[lab[r]] as f64;
            assert!(
                (l - want_loss[r]).abs() <= 1e-10 * (1.0 + want_loss[r]),
                "row {r}: log_sum_exp loss {l}, want {}",
                want_loss[r]
            );
            let p = softmax_ce::probabilities(z);
            for j in 0..c {
                let want_p = want_g[r * c + j] * b as f64 + if j == lab[r] { 1.0 } else { 0.0 };
                assert!(
                    (p[j] - want_p).abs() < 1e-12,
                    "row {r} p[{j}]: {} vs {want_p}",
                    p[j]
                );
            }
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_close("losses", &losses, &want_loss, &want_loss, 1e-5);
        assert_close("g", &g, &want_g, &vec![0.0; b * c], 1e-6);
        // Rows of p = g·B + onehot sum to 1.
        for r in 0..b {
            let s: f64 = (0..c)
                .map(|j| g[r * c + j] as f64 * b as f64 + if j == lab[r] { 1.0 } else { 0.0 })
                .sum();
            assert!((s - 1.0).abs() < 1e-5, "row {r} of softmax sums to {s}");
        }
    }
}

#[test]
fn softmax_ce_is_stable_at_extreme_logits() {
    let cases: [(&[f32], usize, f64); 4] = [
        (&[1e4, -1e4, 0.0], 0, 0.0),
        (&[1e4, -1e4, 0.0], 1, 2e4),
        (&[5.0, 5.0, 5.0, 5.0], 2, (4.0f64).ln()),
        (&[-1e4, -1e4], 1, (2.0f64).ln()),
    ];
    for path in KernelPath::available().into_iter().filter(|p| p.is_fused()) {
        for (z, label, want_loss) in cases {
            let mut g = vec![f32::NAN; z.len()];
            let mut loss = [f32::NAN];
            softmax_ce::block(path, z, z.len(), |_| label, 1.0, &mut g, &mut loss);
            let loss = loss[0];
            assert!(
                loss.is_finite() && g.iter().all(|v| v.is_finite()),
                "{path} {z:?}: loss {loss}, g {g:?}"
            );
            assert!(
                (loss as f64 - want_loss).abs() <= 1e-3 * (1.0 + want_loss),
                "{path} {z:?}: loss {loss}, want {want_loss}"
            );
            // G = p − onehot, by hand.
            let (_, want_g) = reference::softmax_ce(&to_f64(z), &[label], z.len());
            assert_close("extreme g", &g, &want_g, &vec![0.0; z.len()], 1e-6);
        }
        // All-equal logits: uniform p.
        let mut g = [0.0f32; 4];
        softmax_ce::block(path, &[3.0; 4], 4, |_| 0, 1.0, &mut g, &mut [0.0]);
        assert_eq!(g, [-0.75, 0.25, 0.25, 0.25], "{path}");
    }
}

#[test]
fn bias_grad_and_update() {
    let g = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut db = [f32::NAN; 3];
    bias_grad(&g, &mut db);
    assert_eq!(db, [5.0, 7.0, 9.0]);
    assert_eq!(reference::bias_grad(&to_f64(&g), 3), vec![5.0, 7.0, 9.0]);
    let mut p = [1.0f32, 1.0, 1.0];
    Sgd::plain(0.5).apply(0.5, &mut p, &db, 1.0, &mut []);
    assert_eq!(p, [-1.5, -2.5, -3.5]);
}

#[test]
fn forcing_an_unavailable_path_is_an_error() {
    use idx_softmax::run::spec::{kernel_for, SpecError};
    for p in KernelPath::ALL {
        // Any path's name parses; running one this CPU lacks (or the
        // IDX_SOFTMAX_KERNEL cap excludes) is refused when it is asked for.
        assert_eq!(p.name().parse::<KernelPath>(), Ok(p));
        match kernel_for(Some(p)) {
            Ok(k) => assert!(p.is_available() && k == p, "{p}"),
            Err(e) => {
                assert!(!p.is_available(), "{p}: {e}");
                assert_eq!(e, SpecError::KernelUnavailable { kernel: p });
            }
        }
    }
    assert!("sse9"
        .parse::<KernelPath>()
        .unwrap_err()
        .contains("unknown kernel path"));
}

#[test]
fn vectorised_exp_is_accurate() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x <= 0.0 {
        let got = softmax_ce::exp_neg(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max(((got - want) / want).abs());
        x += 0.000_37;
    }
    // 2 ulp of f32 is 2.4e-7 relative.
    assert!(worst < 2.4e-7, "worst relative error {worst:e}");
    assert_eq!(softmax_ce::exp_neg(0.0), 1.0);
    assert!(softmax_ce::exp_neg(-1e4) >= 0.0 && softmax_ce::exp_neg(-1e4) < 1e-37);
}

#[test]
fn softmax_ce_block_matches_reference_on_every_path() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    for path in KernelPath::available() {
        for (b, c) in [(1, 2), (37, 10), (300, 10), (5, 47)] {
            let mut logits = random_f32(&mut rng, b * c, 30.0);
            logits[0] = 1e4; // extreme values stay finite
            let labels: Vec<usize> = (0..b).map(|_| rng.random_range(0..c)).collect();
            let mut g = vec![f32::NAN; b * c];
            let mut losses = vec![f32::NAN; b];
            softmax_ce::block(
                path,
                &logits,
                c,
                |i| labels[i],
                1.0 / b as f32,
                &mut g,
                &mut losses,
            );
            let (want_loss, want_g) = reference::softmax_ce(&to_f64(&logits), &labels, c);
            assert_close(
                &format!("{path} block losses"),
                &losses,
                &want_loss,
                &want_loss,
                1e-5,
            );
            assert_close(
                &format!("{path} block g"),
                &g,
                &want_g,
                &vec![0.0; b * c],
                1e-6,
            );
        }
    }
}
