//! Conv2d and MaxPool2d kernels against the naive f64 references, the
//! references against finite differences, the fused conv → ReLU → pool of
//! training against the three kernels in sequence, and the determinism
//! promises:
//! a sample's forward and input gradient do not depend on the block it is
//! computed in, and the weight gradient does not depend on how the output
//! channels are cut or on threads.
//!
//! ```text
//! cargo test --release --test conv_kernels
//! ```
//!
//! Speed: `cargo bench --bench kernels -- 'conv|pool'` (the test profile
//! keeps overflow checks on, which slows the index arithmetic).

use idx_softmax::kernels::conv::{
    conv2d_backward_input, conv2d_backward_input_pooled, conv2d_forward,
    conv2d_relu_maxpool2_forward, conv2d_weight_grad, conv2d_weight_grad_pooled, maxpool2_backward,
    maxpool2_forward, ConvGeom, PoolGeom,
};
use idx_softmax::kernels::pool;
use idx_softmax::kernels::reference_conv as r;
use idx_softmax::kernels::KernelPath;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// f32 unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

fn rand_vec(rng: &mut Xoshiro256PlusPlus, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn abs64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v.abs() as f64).collect()
}

/// Scratch full of NaN: a kernel that reads scratch it did not write
/// poisons its result.
fn poisoned_scratch() -> Vec<f32> {
    vec![f32::NAN; 1000]
}

/// `|got − want| ≤ (chain + 2)·u·mag` for every element: the rigorous
/// error bound of a sum of terms whose absolute values sum to `mag`,
/// accumulated in f32 along chains of at most `chain` roundings (the inputs
/// are f32, so the f64 reference is exact to far below that). A wrong term
/// anywhere breaks it by orders of magnitude.
fn assert_close(what: &str, got: &[f32], want: &[f64], mag: &[f64], chain: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = (chain as f64 + 2.0) * U * 1.0001;
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * m,
            "{what}: element {i}: got {g}, want {w} (error {err:e}, bound {:e})",
            tol * m
        );
        if m > 0.0 {
            worst = worst.max(err / (m * U));
        }
    }
    assert!(worst.is_finite(), "{what}");
}

/// The geometries checked against the references: the two layers of the
/// target network (conv1: 1 → 6 at 28 × 28, conv2: 6 → 16 at 14 × 14, both
/// 5 × 5), every K of 1, 3, 5, 7 (and 9, past the tabulated tap blocks),
/// c_in 1/3/6, c_out 1/6/16 and awkward counts, widths below, at and past
/// a vector (7, 16, 17, 33), odd sizes, and images smaller than the kernel.
fn geometries() -> Vec<(ConvGeom, usize)> {
    let g = ConvGeom::new;
    vec![
        (g(1, 6, 28, 28, 5), 3),
        (g(6, 16, 14, 14, 5), 3),
        (g(1, 6, 28, 28, 5), 100),
        (g(6, 16, 14, 14, 5), 100),
        (g(3, 16, 7, 7, 3), 3),
        (g(3, 1, 7, 7, 3), 1),
        (g(6, 6, 14, 14, 1), 3),
        (g(3, 6, 5, 7, 7), 3),
        (g(6, 1, 28, 28, 7), 1),
        (g(1, 16, 2, 3, 3), 3),
        (g(6, 3, 2, 3, 5), 3),
        (g(3, 6, 1, 1, 1), 3),
        (g(1, 1, 1, 1, 7), 1),
        (g(6, 16, 1, 1, 3), 3),
        (g(3, 5, 16, 16, 3), 3),
        (g(2, 7, 9, 17, 5), 2),
        (g(3, 12, 4, 33, 3), 2),
        (g(2, 9, 6, 5, 9), 2),
        (g(16, 6, 14, 14, 5), 3),
        (g(6, 1, 5, 7, 5), 100),
        // Degenerate: no input channels (out = bias), no output channels,
        // no rows.
        (g(0, 3, 4, 5, 3), 2),
        (g(2, 0, 4, 5, 3), 2),
        (g(2, 3, 0, 5, 3), 2),
    ]
}

fn paths() -> Vec<KernelPath> {
    KernelPath::available()
}

#[test]
fn forward_matches_reference() {
    let mut rng = rng(1);
    let mut scratch = poisoned_scratch();
    for (g, n) in geometries() {
        let inp = rand_vec(&mut rng, n * g.in_len());
        let wt = rand_vec(&mut rng, g.weight_len());
        let bias = rand_vec(&mut rng, g.c_out);
        let want = r::conv2d_forward(&f64s(&inp), &f64s(&wt), &f64s(&bias), n, g);
        let mag = r::conv2d_forward(&abs64(&inp), &abs64(&wt), &abs64(&bias), n, g);
        for path in paths() {
            let mut out = vec![f32::NAN; n * g.out_len()];
            scratch.fill(f32::NAN);
            conv2d_forward(path, &mut out, &inp, &wt, &bias, n, g, &mut scratch);
            let what = format!("forward {path} {g:?} n={n}");
            assert_close(&what, &out, &want, &mag, g.c_in * g.k * g.k + 1);
        }
    }
}

#[test]
fn backward_input_matches_reference() {
    let mut rng = rng(2);
    let mut scratch = poisoned_scratch();
    for (g, n) in geometries() {
        let d_out = rand_vec(&mut rng, n * g.out_len());
        let wt = rand_vec(&mut rng, g.weight_len());
        let want = r::conv2d_backward_input(&f64s(&d_out), &f64s(&wt), n, g);
        let mag = r::conv2d_backward_input(&abs64(&d_out), &abs64(&wt), n, g);
        for path in paths() {
            let mut d_inp = vec![f32::NAN; n * g.in_len()];
            scratch.fill(f32::NAN);
            conv2d_backward_input(path, &mut d_inp, &d_out, &wt, n, g, &mut scratch);
            let what = format!("backward_input {path} {g:?} n={n}");
            assert_close(&what, &d_inp, &want, &mag, g.c_out * g.k * g.k);
        }
    }
}

#[test]
fn weight_grad_matches_reference() {
    let mut rng = rng(3);
    let mut scratch = poisoned_scratch();
    for (g, n) in geometries() {
        let d_out = rand_vec(&mut rng, n * g.out_len());
        let inp = rand_vec(&mut rng, n * g.in_len());
        let (want_w, want_b) = r::conv2d_weight_grad(&f64s(&d_out), &f64s(&inp), n, g);
        let (mag_w, mag_b) = r::conv2d_weight_grad(&abs64(&d_out), &abs64(&inp), n, g);
        // Longest chain: every term in one lane (or one sgemm chain) plus
        // one addition per sample and the lane tree.
        let chain = n * g.h * g.w + n + 8;
        for path in paths() {
            let mut dw = vec![f32::NAN; g.weight_len()];
            let mut db = vec![f32::NAN; g.c_out];
            scratch.fill(f32::NAN);
            conv2d_weight_grad(
                path,
                &mut dw,
                &mut db,
                &d_out,
                &inp,
                n,
                g,
                0..g.c_out,
                &mut scratch,
            );
            let what = format!("weight_grad {path} {g:?} n={n}");
            assert_close(&what, &dw, &want_w, &mag_w, chain);
            assert_close(&format!("bias {what}"), &db, &want_b, &mag_b, chain);
        }
    }
}

#[test]
fn weight_grad_of_a_channel_range_is_those_rows() {
    let mut rng = rng(4);
    let mut scratch = Vec::new();
    let g = ConvGeom::new(3, 9, 6, 7, 3);
    let n = 4;
    let d_out = rand_vec(&mut rng, n * g.out_len());
    let inp = rand_vec(&mut rng, n * g.in_len());
    let (want_w, want_b) = r::conv2d_weight_grad(&f64s(&d_out), &f64s(&inp), n, g);
    let (mag_w, mag_b) = r::conv2d_weight_grad(&abs64(&d_out), &abs64(&inp), n, g);
    let per = g.c_in * g.k * g.k;
    for path in paths() {
        for co in [2..7, 0..1, 8..9, 4..4] {
            let mut dw = vec![f32::NAN; co.len() * per];
            let mut db = vec![f32::NAN; co.len()];
            conv2d_weight_grad(
                path,
                &mut dw,
                &mut db,
                &d_out,
                &inp,
                n,
                g,
                co.clone(),
                &mut scratch,
            );
            let rows = co.start * per..co.end * per;
            let chain = n * g.h * g.w + n + 8;
            let what = format!("weight_grad {path} {co:?}");
            assert_close(&what, &dw, &want_w[rows.clone()], &mag_w[rows], chain);
            assert_close(&what, &db, &want_b[co.clone()], &mag_b[co], chain);
        }
    }
}

// ---------------------------------------------------------------------------
// The references against finite differences.

/// `L = Σ out · proj`, the scalar whose gradients the backward references
/// claim to be.
fn loss(inp: &[f64], wt: &[f64], bias: &[f64], proj: &[f64], n: usize, g: ConvGeom) -> f64 {
    let out = r::conv2d_forward(inp, wt, bias, n, g);
    out.iter().zip(proj).map(|(a, b)| a * b).sum()
}

/// Central differences of `f` at every coordinate of `x`.
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let eps = 1e-5;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            x[i] = v + eps;
            let up = f(&x);
            x[i] = v - eps;
            let down = f(&x);
            x[i] = v;
            (up - down) / (2.0 * eps)
        })
        .collect()
}

fn assert_grad_close(what: &str, analytic: &[f64], numeric: &[f64]) {
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-7 * (1.0 + a.abs()),
            "{what}[{i}]: analytic {a}, numeric {n}"
        );
    }
}

#[test]
fn conv_references_match_finite_differences() {
    let mut rng = rng(5);
    for (g, n) in [
        (ConvGeom::new(2, 3, 5, 4, 3), 2),
        (ConvGeom::new(1, 2, 3, 6, 5), 2),
        (ConvGeom::new(3, 2, 2, 3, 1), 1),
    ] {
        let inp = f64s(&rand_vec(&mut rng, n * g.in_len()));
        let wt = f64s(&rand_vec(&mut rng, g.weight_len()));
        let bias = f64s(&rand_vec(&mut rng, g.c_out));
        let proj = f64s(&rand_vec(&mut rng, n * g.out_len()));
        let d_inp = r::conv2d_backward_input(&proj, &wt, n, g);
        let (dw, db) = r::conv2d_weight_grad(&proj, &inp, n, g);
        let num_inp = numeric_grad(&inp, |x| loss(x, &wt, &bias, &proj, n, g));
        let num_w = numeric_grad(&wt, |x| loss(&inp, x, &bias, &proj, n, g));
        let num_b = numeric_grad(&bias, |x| loss(&inp, &wt, x, &proj, n, g));
        assert_grad_close(&format!("d_inp {g:?}"), &d_inp, &num_inp);
        assert_grad_close(&format!("dw {g:?}"), &dw, &num_w);
        assert_grad_close(&format!("db {g:?}"), &db, &num_b);
    }
}

#[test]
fn pool_reference_matches_finite_differences() {
    let mut rng = rng(6);
    for g in [
        PoolGeom::new(2, 4, 6),
        PoolGeom::new(3, 5, 7),
        PoolGeom::new(1, 3, 2),
    ] {
        let n = 2;
        // Distinct values, spaced far more than the step: no window has a
        // near-tie, so the loss is linear around the point.
        let mut inp: Vec<f64> = (0..n * g.in_len()).map(|i| i as f64 * 0.01).collect();
        for i in (1..inp.len()).rev() {
            inp.swap(i, rng.random_range(0..=i));
        }
        let proj = f64s(&rand_vec(&mut rng, n * g.out_len()));
        let analytic = r::maxpool2_backward(&proj, &inp, n, g);
        let numeric = numeric_grad(&inp, |x| {
            let out = r::maxpool2_forward(x, n, g);
            out.iter().zip(&proj).map(|(a, b)| a * b).sum()
        });
        assert_grad_close(&format!("pool {g:?}"), &analytic, &numeric);
    }
}

#[test]
fn conv_reference_by_hand() {
    // 3 × 3 box filter of ones on 1..=9: each output is the sum of its
    // 3 × 3 neighbourhood inside the image, plus the bias.
    let g = ConvGeom::new(1, 1, 3, 3, 3);
    let inp: Vec<f64> = (1..=9).map(f64::from).collect();
    let out = r::conv2d_forward(&inp, &[1.0; 9], &[0.5], 1, g);
    let want = [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0].map(|v| v + 0.5);
    assert_eq!(out, want);
    // A kernel that is 1 at (kh, kw) = (0, 2) only: out[y][x] = in[y−1][x+1].
    let mut wt = [0.0; 9];
    wt[2] = 1.0;
    let out = r::conv2d_forward(&inp, &wt, &[0.0], 1, g);
    assert_eq!(out, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
    // The same kernel through every fast path.
    let inp32: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let wt32 = wt.map(|v| v as f32);
    for path in paths() {
        let mut o = [f32::NAN; 9];
        conv2d_forward(path, &mut o, &inp32, &wt32, &[0.0], 1, g, &mut Vec::new());
        assert_eq!(o, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0], "{path}");
    }
}

// ---------------------------------------------------------------------------
// Determinism

/// Samples 0..100 in one block, each alone, and in blocks of 25 at four
/// offsets (two of them not multiples of 25): every output row must have
/// the same bits.
#[test]
fn forward_and_input_grad_rows_are_independent_of_the_block() {
    let mut rng = rng(7);
    let mut scratch = Vec::new();
    let n = 100;
    for g in [
        ConvGeom::new(1, 6, 28, 28, 5),
        ConvGeom::new(6, 16, 14, 14, 5),
        ConvGeom::new(3, 5, 5, 7, 3),
    ] {
        let inp = rand_vec(&mut rng, n * g.in_len());
        let d_out = rand_vec(&mut rng, n * g.out_len());
        let wt = rand_vec(&mut rng, g.weight_len());
        let bias = rand_vec(&mut rng, g.c_out);
        let (il, ol) = (g.in_len(), g.out_len());
        for path in paths() {
            let fwd = |rows: std::ops::Range<usize>, scratch: &mut Vec<f32>| {
                let mut out = vec![0.0; rows.len() * ol];
                let x = &inp[rows.start * il..rows.end * il];
                conv2d_forward(path, &mut out, x, &wt, &bias, rows.len(), g, scratch);
                out
            };
            let bwd = |rows: std::ops::Range<usize>, scratch: &mut Vec<f32>| {
                let mut d_inp = vec![0.0; rows.len() * il];
                let d = &d_out[rows.start * ol..rows.end * ol];
                conv2d_backward_input(path, &mut d_inp, d, &wt, rows.len(), g, scratch);
                d_inp
            };
            let all_f = fwd(0..n, &mut scratch);
            let all_b = bwd(0..n, &mut scratch);
            let mut blocks: Vec<_> = (0..n).map(|i| i..i + 1).collect();
            blocks.extend([0..25, 25..50, 13..38, 75..100, 61..86]);
            for rows in blocks {
                let f = fwd(rows.clone(), &mut scratch);
                let b = bwd(rows.clone(), &mut scratch);
                assert!(
                    bits(&f) == bits(&all_f[rows.start * ol..rows.end * ol]),
                    "forward {path} {g:?}: rows {rows:?} differ from the block of 100"
                );
                assert!(
                    bits(&b) == bits(&all_b[rows.start * il..rows.end * il]),
                    "backward_input {path} {g:?}: rows {rows:?} differ from the block of 100"
                );
            }
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The weight gradient of 0..c_out in one call and cut into ranges
/// (halves, uneven pieces, single channels) has the same bits.
#[test]
fn weight_grad_is_exact_under_any_cut_of_the_channels() {
    let mut rng = rng(8);
    let mut scratch = Vec::new();
    let n = 100;
    for g in [
        ConvGeom::new(6, 16, 14, 14, 5),
        ConvGeom::new(1, 6, 28, 28, 5),
        ConvGeom::new(3, 7, 5, 7, 3),
    ] {
        let d_out = rand_vec(&mut rng, n * g.out_len());
        let inp = rand_vec(&mut rng, n * g.in_len());
        let per = g.c_in * g.k * g.k;
        let c = g.c_out;
        let cuts: Vec<Vec<usize>> = vec![
            vec![0, c / 2, c],
            vec![0, 5.min(c), 11.min(c), c],
            (0..=c).collect(),
            vec![0, 1, c],
        ];
        for path in paths() {
            let mut dw_all = vec![0.0; g.weight_len()];
            let mut db_all = vec![0.0; c];
            conv2d_weight_grad(
                path,
                &mut dw_all,
                &mut db_all,
                &d_out,
                &inp,
                n,
                g,
                0..c,
                &mut scratch,
            );
            for cut in &cuts {
                let mut dw = vec![f32::NAN; g.weight_len()];
                let mut db = vec![f32::NAN; c];
                for piece in cut.windows(2) {
                    let co = piece[0]..piece[1];
                    conv2d_weight_grad(
                        path,
                        &mut dw[co.start * per..co.end * per],
                        &mut db[co.clone()],
                        &d_out,
                        &inp,
                        n,
                        g,
                        co,
                        &mut scratch,
                    );
                }
                assert!(bits(&dw) == bits(&dw_all), "dw {path} {g:?} cut {cut:?}");
                assert!(bits(&db) == bits(&db_all), "db {path} {g:?} cut {cut:?}");
            }
        }
    }
}

/// What a training step does with threads: rows of the forward and input
/// gradient split among workers, the weight gradient's channels split
/// among them. Same bits as one thread for 1..=4 threads.
#[test]
fn threaded_splits_give_the_same_bits() {
    let mut rng = rng(9);
    let g = ConvGeom::new(6, 16, 14, 14, 5);
    let n = 100;
    let inp = rand_vec(&mut rng, n * g.in_len());
    let d_out = rand_vec(&mut rng, n * g.out_len());
    let wt = rand_vec(&mut rng, g.weight_len());
    let bias = rand_vec(&mut rng, g.c_out);
    let (il, ol, per) = (g.in_len(), g.out_len(), g.c_in * g.k * g.k);
    for path in paths() {
        let run = |threads: usize| {
            let mut out = vec![0.0; n * ol];
            let mut d_inp = vec![0.0; n * il];
            let mut dw = vec![0.0; g.weight_len()];
            let mut db = vec![0.0; g.c_out];
            let rows = n.div_ceil(threads);
            let chans = g.c_out.div_ceil(threads);
            std::thread::scope(|s| {
                for (t, (o, x)) in out
                    .chunks_mut(rows * ol)
                    .zip(inp.chunks(rows * il))
                    .enumerate()
                {
                    let (wt, bias) = (&wt, &bias);
                    s.spawn(move || {
                        let m = o.len() / ol;
                        let _ = t;
                        conv2d_forward(path, o, x, wt, bias, m, g, &mut Vec::new())
                    });
                }
                for (di, d) in d_inp.chunks_mut(rows * il).zip(d_out.chunks(rows * ol)) {
                    let wt = &wt;
                    s.spawn(move || {
                        let m = di.len() / il;
                        conv2d_backward_input(path, di, d, wt, m, g, &mut Vec::new())
                    });
                }
                for (t, (w, b)) in dw
                    .chunks_mut(chans * per)
                    .zip(db.chunks_mut(chans))
                    .enumerate()
                {
                    let (d_out, inp) = (&d_out, &inp);
                    s.spawn(move || {
                        let co = t * chans..t * chans + b.len();
                        conv2d_weight_grad(path, w, b, d_out, inp, n, g, co, &mut Vec::new())
                    });
                }
            });
            (bits(&out), bits(&d_inp), bits(&dw), bits(&db))
        };
        let one = run(1);
        for threads in 2..=4 {
            assert!(
                run(threads) == one,
                "{path}: {threads} threads differ from 1"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Pooling

fn pool_geoms() -> Vec<PoolGeom> {
    let g = PoolGeom::new;
    vec![
        g(6, 28, 28),
        g(16, 14, 14),
        g(3, 9, 11),
        g(3, 5, 7),
        g(2, 7, 7),
        g(2, 1, 1),
        g(2, 2, 3),
        g(1, 3, 2),
        g(4, 1, 6),
        g(0, 4, 4),
    ]
}

#[test]
fn maxpool_matches_reference() {
    let mut rng = rng(10);
    for g in pool_geoms() {
        for n in [1, 3, 100] {
            // Small integers: many ties, so the first-maximum rule is
            // exercised, not just the maximum.
            let inp: Vec<f32> = (0..n * g.in_len())
                .map(|_| rng.random_range(0..4) as f32)
                .collect();
            let d_out = rand_vec(&mut rng, n * g.out_len());
            let want = r::maxpool2_forward(&f64s(&inp), n, g);
            let want_d = r::maxpool2_backward(&f64s(&d_out), &f64s(&inp), n, g);
            let mut out = vec![f32::NAN; n * g.out_len()];
            let mut d_inp = vec![f32::NAN; n * g.in_len()];
            maxpool2_forward(&mut out, &inp, n, g);
            maxpool2_backward(&mut d_inp, &d_out, &inp, n, g);
            assert_eq!(f64s(&out), want, "forward {g:?} n={n}");
            assert_eq!(f64s(&d_inp), want_d, "backward {g:?} n={n}");
        }
    }
}

#[test]
fn maxpool_ties_nan_and_signed_zero() {
    let g = PoolGeom::new(1, 2, 2);
    // (window, forward bits, position of the gradient)
    let cases: [([f32; 4], f32, usize); 7] = [
        ([1.0, 1.0, 1.0, 1.0], 1.0, 0),
        ([0.0, 2.0, 2.0, 1.0], 2.0, 1),
        ([-0.0, 0.0, 0.0, 0.0], -0.0, 0),
        ([0.0, -0.0, -0.0, -0.0], 0.0, 0),
        ([1.0, f32::NAN, 5.0, 2.0], f32::NAN, 1),
        ([f32::NAN, 9.0, f32::NAN, 2.0], f32::NAN, 2),
        ([f32::NEG_INFINITY; 4], f32::NEG_INFINITY, 0),
    ];
    for (win, want, at) in cases {
        let mut out = [0.0f32];
        maxpool2_forward(&mut out, &win, 1, g);
        assert_eq!(out[0].to_bits(), want.to_bits(), "forward {win:?}");
        let mut d = [f32::NAN; 4];
        maxpool2_backward(&mut d, &[3.0], &win, 1, g);
        let mut want_d = [0.0; 4];
        want_d[at] = 3.0;
        assert_eq!(d, want_d, "backward {win:?}");
        // The reference encodes the same rule.
        assert_eq!(
            r::maxpool2_argmax(&f64s(&win), 2, 0, 0),
            at,
            "reference {win:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The max-pool behind a conv's ReLU, as training runs it

/// `max(v, 0)` of every element, as the network's ReLU.
fn relu(x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    idx_softmax::nn::relu_forward(&mut y);
    y
}

/// Argmax bytes of the f64 reference on `inp` (n × c × H × W).
fn reference_argmax(inp: &[f32], n: usize, g: PoolGeom) -> Vec<u8> {
    let mut want = Vec::with_capacity(n * g.out_len());
    if g.out_len() == 0 {
        return want;
    }
    for plane in f64s(inp).chunks_exact(g.h * g.w) {
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                want.push(r::maxpool2_argmax(plane, g.w, oy, ox) as u8);
            }
        }
    }
    want
}

#[test]
fn relu_pool_is_relu_then_pool_and_routes_as_the_plain_backward() {
    let mut rng = rng(11);
    for g in pool_geoms() {
        for n in [1, 3, 100] {
            // Small integers of both signs, with zeros of both signs and
            // NaNs among them: ties everywhere, and every ReLU case.
            let inp: Vec<f32> = (0..n * g.in_len())
                .map(|_| match rng.random_range(0..12) {
                    0 => -0.0,
                    1 => f32::NAN,
                    v => (v - 6) as f32,
                })
                .collect();
            let d_out = rand_vec(&mut rng, n * g.out_len());
            let rectified = relu(&inp);
            let mut want = vec![0.0; n * g.out_len()];
            maxpool2_forward(&mut want, &rectified, n, g);
            let mut want_d = vec![0.0; n * g.in_len()];
            maxpool2_backward(&mut want_d, &d_out, &rectified, n, g);

            let mut out = vec![f32::NAN; n * g.out_len()];
            let mut argmax = vec![9u8; n * g.out_len()];
            pool::relu_maxpool2_forward(&mut out, &mut argmax, &inp, n, g);
            let what = format!("{g:?} n={n}");
            assert_eq!(bits(&out), bits(&want), "forward {what}");
            assert_eq!(argmax, reference_argmax(&rectified, n, g), "argmax {what}");
            let mut d_inp = vec![f32::NAN; n * g.in_len()];
            pool::maxpool2_backward_routed(&mut d_inp, &d_out, &argmax, n, g);
            assert_eq!(bits(&d_inp), bits(&want_d), "backward {what}");
            let want_ref = r::maxpool2_backward(&f64s(&d_out), &f64s(&rectified), n, g);
            assert_eq!(
                f64s(&d_inp),
                want_ref,
                "backward against the reference {what}"
            );
        }
    }
}

#[test]
fn relu_pool_by_hand() {
    let g = PoolGeom::new(1, 2, 2);
    // (window, pooled bits, argmax): ReLU first, then the first maximum.
    let cases: [([f32; 4], f32, u8); 6] = [
        ([-1.0, -2.0, -3.0, -4.0], 0.0, 0),
        ([-1.0, 2.0, 2.0, 1.0], 2.0, 1),
        ([-0.0, 0.0, -5.0, 0.0], 0.0, 0),
        ([f32::NAN, -1.0, 3.0, f32::NAN], 3.0, 2),
        ([0.5, f32::NAN, 0.25, 7.0], 7.0, 3),
        ([f32::INFINITY, f32::INFINITY, 1.0, 1.0], f32::INFINITY, 0),
    ];
    for (win, want, at) in cases {
        let (mut out, mut argmax) = ([f32::NAN], [9u8]);
        pool::relu_maxpool2_forward(&mut out, &mut argmax, &win, 1, g);
        assert_eq!(out[0].to_bits(), want.to_bits(), "forward {win:?}");
        assert_eq!(argmax[0], at, "argmax {win:?}");
        let mut d = [f32::NAN; 4];
        pool::maxpool2_backward_routed(&mut d, &[3.0], &argmax, 1, g);
        let mut want_d = [0.0; 4];
        want_d[usize::from(at)] = 3.0;
        assert_eq!(d, want_d, "backward {win:?}");
    }
}

#[test]
fn conv_relu_pool_is_the_three_kernels_in_sequence() {
    let mut rng = rng(12);
    let mut scratch = poisoned_scratch();
    for (g, n) in geometries() {
        let pg = PoolGeom::new(g.c_out, g.h, g.w);
        let inp = rand_vec(&mut rng, n * g.in_len());
        let wt = rand_vec(&mut rng, g.weight_len());
        let bias = rand_vec(&mut rng, g.c_out);
        for path in paths() {
            let mut conv = vec![f32::NAN; n * g.out_len()];
            conv2d_forward(path, &mut conv, &inp, &wt, &bias, n, g, &mut scratch);
            let rectified = relu(&conv);
            let mut want = vec![0.0; n * pg.out_len()];
            maxpool2_forward(&mut want, &rectified, n, pg);

            let mut out = vec![f32::NAN; n * pg.out_len()];
            let mut argmax = vec![9u8; n * pg.out_len()];
            scratch.fill(f32::NAN);
            conv2d_relu_maxpool2_forward(
                path,
                &mut out,
                &mut argmax,
                &inp,
                &wt,
                &bias,
                n,
                g,
                &mut scratch,
            );
            let what = format!("{path} {g:?} n={n}");
            assert_eq!(bits(&out), bits(&want), "pooled {what}");
            assert_eq!(argmax, reference_argmax(&rectified, n, pg), "argmax {what}");
        }
    }
}

#[test]
fn pooled_backward_kernels_are_routing_first() {
    // The conv's input and weight gradients with d_out routed on the fly
    // from a pooled gradient give the bits of routing it first
    // (`maxpool2_backward_routed`, itself checked against the reference
    // above), on every path and geometry, for whole and cut channel ranges.
    let mut rng = rng(13);
    let mut scratch = poisoned_scratch();
    for (g, n) in geometries() {
        let pg = PoolGeom::new(g.c_out, g.h, g.w);
        let inp = rand_vec(&mut rng, n * g.in_len());
        let wt = rand_vec(&mut rng, g.weight_len());
        let d_pooled = rand_vec(&mut rng, n * pg.out_len());
        let argmax: Vec<u8> = (0..d_pooled.len())
            .map(|_| rng.random_range(0..4))
            .collect();
        let mut d_out = vec![f32::NAN; n * g.out_len()];
        pool::maxpool2_backward_routed(&mut d_out, &d_pooled, &argmax, n, pg);
        for path in paths() {
            let what = format!("{path} {g:?} n={n}");
            let mut want = vec![f32::NAN; n * g.in_len()];
            conv2d_backward_input(path, &mut want, &d_out, &wt, n, g, &mut scratch);
            let mut got = vec![f32::NAN; n * g.in_len()];
            scratch.fill(f32::NAN);
            conv2d_backward_input_pooled(
                path,
                &mut got,
                &d_pooled,
                &argmax,
                &wt,
                n,
                g,
                &mut scratch,
            );
            assert_eq!(bits(&got), bits(&want), "input gradient {what}");

            let cuts = [0..g.c_out, 0..g.c_out.min(4), g.c_out.min(4)..g.c_out];
            for co in cuts {
                let per = g.c_in * g.k * g.k;
                let mut want = (vec![f32::NAN; co.len() * per], vec![f32::NAN; co.len()]);
                let (dw, db) = (&mut want.0, &mut want.1);
                conv2d_weight_grad(path, dw, db, &d_out, &inp, n, g, co.clone(), &mut scratch);
                let mut got = (vec![f32::NAN; co.len() * per], vec![f32::NAN; co.len()]);
                scratch.fill(f32::NAN);
                conv2d_weight_grad_pooled(
                    path,
                    &mut got.0,
                    &mut got.1,
                    &d_pooled,
                    &argmax,
                    &inp,
                    n,
                    g,
                    co.clone(),
                    &mut scratch,
                );
                assert_eq!(bits(&got.0), bits(&want.0), "weight gradient {what} {co:?}");
                assert_eq!(bits(&got.1), bits(&want.1), "bias gradient {what} {co:?}");
            }
        }
    }
}
