//! The per-sample deformations (`idx_softmax::data::augment`): determinism, the
//! documented random stream, exact cases of every kind, agreement between
//! the instruction sets, and the elastic field against a direct f64
//! convolution.

use idx_softmax::data::augment::{
    self, elastic_uniforms, sample_key, AffineParams, AffineTransform, Augment, AugmentError,
    AugmentKind, Augmenter, Draw, ElasticParams, ShiftParams,
};
use idx_softmax::data::ImageShape;
use idx_softmax::kernels::KernelPath;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::{Xoshiro256Plus, Xoshiro256PlusPlus};

fn shape(h: usize, w: usize) -> ImageShape {
    ImageShape {
        channels: 1,
        height: h,
        width: w,
    }
}

/// A digit-like test image: a random blob of ink on a zero background, and
/// some full-range noise near the border (so zero fill matters).
fn image(h: usize, w: usize, seed: u64) -> Vec<u8> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (cy, cx) = (h as f64 / 2.0, w as f64 / 2.0);
    (0..h * w)
        .map(|p| {
            let (y, x) = ((p / w) as f64, (p % w) as f64);
            let r = ((y - cy).powi(2) + (x - cx).powi(2)).sqrt();
            let v = rng.next_u64() as u8;
            if r < (h.min(w) as f64) / 3.0 || y == 0.0 || x == 1.0 {
                v
            } else {
                0
            }
        })
        .collect()
}

fn apply(aug: &Augmenter, seed: u64, epoch: u64, index: u64, src: &[u8]) -> Vec<u8> {
    let mut scratch = aug.scratch();
    let mut out = vec![0u8; src.len()];
    aug.apply(seed, epoch, index, src, &mut out, &mut scratch);
    out
}

fn all_kinds() -> Vec<Augment> {
    AugmentKind::ALL
        .into_iter()
        .map(Augment::defaults)
        .collect()
}

#[test]
fn same_key_same_bytes_and_every_key_part_matters() {
    let img = image(28, 28, 1);
    for augment in all_kinds() {
        let a = Augmenter::new(augment, shape(28, 28)).unwrap();
        let b = Augmenter::new(augment, shape(28, 28)).unwrap();
        let base = apply(&a, 7, 3, 11, &img);
        assert_eq!(base, apply(&b, 7, 3, 11, &img), "{augment}");
        if augment.kind() == AugmentKind::None {
            assert_eq!(base, img);
            continue;
        }
        // Change one part of the key at a time, ten ways each. A shift has
        // only 25 outcomes, so a few may coincide; the others never do.
        let need = if augment.kind() == AugmentKind::Shift {
            7
        } else {
            10
        };
        for part in 0..3 {
            let differ = (1..=10u64)
                .filter(|&d| {
                    let (seed, epoch, index) = match part {
                        0 => (7 + d, 3, 11),
                        1 => (7, 3 + d, 11),
                        _ => (7, 3, 11 + d),
                    };
                    apply(&a, seed, epoch, index, &img) != base
                })
                .count();
            assert!(
                differ >= need,
                "{augment}: key part {part}: {differ} of 10 differ"
            );
        }
    }
}

#[test]
fn output_does_not_depend_on_call_order_or_thread() {
    let (h, w) = (28, 28);
    let imgs: Vec<Vec<u8>> = (0..40).map(|i| image(h, w, i)).collect();
    for augment in all_kinds() {
        let aug = Augmenter::new(augment, shape(h, w)).unwrap();
        // In order, one scratch.
        let mut scratch = aug.scratch();
        let forward: Vec<Vec<u8>> = imgs
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let mut out = vec![0; h * w];
                aug.apply(5, 2, i as u64, img, &mut out, &mut scratch);
                out
            })
            .collect();
        // Backwards, reusing the same (dirty) scratch.
        for (i, img) in imgs.iter().enumerate().rev() {
            let mut out = vec![0; h * w];
            aug.apply(5, 2, i as u64, img, &mut out, &mut scratch);
            assert_eq!(out, forward[i], "{augment}, sample {i} backwards");
        }
        // Interleaved over three threads, each with its own scratch.
        let results: Vec<(usize, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|t| {
                    let (aug, imgs) = (&aug, &imgs);
                    s.spawn(move || {
                        let mut scratch = aug.scratch();
                        (t..imgs.len())
                            .step_by(3)
                            .map(|i| {
                                let mut out = vec![0; h * w];
                                aug.apply(5, 2, i as u64, &imgs[i], &mut out, &mut scratch);
                                (i, out)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(results.len(), imgs.len());
        for (i, out) in results {
            assert_eq!(out, forward[i], "{augment}, sample {i} on a thread");
        }
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    let paths = KernelPath::available();
    let shapes = [(28, 28), (27, 13), (32, 32), (7, 16), (9, 40), (3, 2)];
    for (h, w) in shapes {
        let img = image(h, w, 3);
        for augment in all_kinds() {
            let reference =
                Augmenter::with_path(augment, shape(h, w), KernelPath::Portable).unwrap();
            let mut rs = reference.scratch();
            for &path in &paths {
                let aug = Augmenter::with_path(augment, shape(h, w), path).unwrap();
                let mut s = aug.scratch();
                for i in 0..12 {
                    let (mut a, mut b) = (vec![0u8; h * w], vec![0u8; h * w]);
                    reference.apply(1, 0, i, &img, &mut a, &mut rs);
                    aug.apply(1, 0, i, &img, &mut b, &mut s);
                    assert_eq!(a, b, "{augment} {h}×{w} {path} sample {i}");
                    let (mut fa, mut fb) = (vec![0f32; h * w], vec![0f32; h * w]);
                    reference.apply_f32(1, 0, i, &img, &mut fa, &mut rs);
                    aug.apply_f32(1, 0, i, &img, &mut fb, &mut s);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fa), bits(&fb), "{augment} {h}×{w} {path} f32 {i}");
                }
            }
        }
    }
}

#[test]
fn shift_moves_the_image_by_the_drawn_offset() {
    let (h, w) = (28, 28);
    let img = image(h, w, 4);
    let aug = Augmenter::new(Augment::defaults(AugmentKind::Shift), shape(h, w)).unwrap();
    let mut scratch = aug.scratch();
    // By hand: content moves right by dx and down by dy, zero fill.
    let shifted = |dx: i32, dy: i32| -> Vec<u8> {
        let mut out = vec![0u8; h * w];
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let (sy, sx) = (y - dy, x - dx);
                if (0..h as i32).contains(&sy) && (0..w as i32).contains(&sx) {
                    out[(y * w as i32 + x) as usize] = img[(sy * w as i32 + sx) as usize];
                }
            }
        }
        out
    };
    for (dx, dy) in [(2, -1), (-2, 2), (0, 0), (27, 0), (0, -28), (-30, 5)] {
        let mut out = vec![0u8; h * w];
        aug.apply_draw(&Draw::Shift { dx, dy }, &img, &mut out, &mut scratch);
        assert_eq!(out, shifted(dx, dy), "({dx}, {dy})");
    }
    // Drawn offsets: uniform over −2..=2, each of the 25 seen, and the
    // output is the hand-shifted image.
    let mut seen = [[0u32; 5]; 5];
    for i in 0..2000 {
        let Draw::Shift { dx, dy } = aug.draw(9, 1, i) else {
            panic!("not a shift")
        };
        seen[(dy + 2) as usize][(dx + 2) as usize] += 1;
        if i < 50 {
            let mut out = vec![0u8; h * w];
            aug.apply(9, 1, i, &img, &mut out, &mut scratch);
            assert_eq!(out, shifted(dx, dy));
        }
    }
    for row in seen {
        for n in row {
            assert!((40..=120).contains(&n), "offset counts {seen:?}");
        }
    }
}

#[test]
fn affine_with_identity_ranges_is_the_identity() {
    let identity = Augment::Affine(AffineParams {
        rotate_deg: 0.0,
        scale: 0.0,
        shear: 0.0,
        translate: 0.0,
    });
    for (h, w) in [(28, 28), (5, 9), (1, 1)] {
        let img = image(h, w, 5);
        let aug = Augmenter::new(identity, shape(h, w)).unwrap();
        for i in 0..20 {
            assert_eq!(apply(&aug, 3, 1, i, &img), img, "{h}×{w} sample {i}");
        }
        let mut scratch = aug.scratch();
        let mut out = vec![0f32; h * w];
        aug.apply_draw_f32(
            &Draw::Affine(AffineTransform::IDENTITY),
            &img,
            &mut out,
            &mut scratch,
        );
        for (o, &p) in out.iter().zip(&img) {
            assert_eq!(*o, f32::from(p) * idx_softmax::data::pixels::U8_SCALE);
        }
    }
}

/// Counter-clockwise on screen: the top row becomes the left column, read
/// upwards: out(y, x) = in(x, W−1−y).
#[test]
fn rotation_by_90_degrees_transposes_and_flips() {
    let n = 28;
    let img = image(n, n, 6);
    let aug = Augmenter::new(Augment::defaults(AugmentKind::Affine), shape(n, n)).unwrap();
    let mut scratch = aug.scratch();
    let mut rotate = |deg: f64| {
        let mut out = vec![0u8; n * n];
        let t = AffineTransform {
            rotate_deg: deg,
            ..AffineTransform::IDENTITY
        };
        aug.apply_draw(&Draw::Affine(t), &img, &mut out, &mut scratch);
        out
    };
    let at = |v: &[u8], y: usize, x: usize| i32::from(v[y * n + x]);
    let (ccw, cw, half) = (rotate(90.0), rotate(-90.0), rotate(180.0));
    for y in 0..n {
        for x in 0..n {
            // Within the rounding of bilinear weights that are 0 or 1 up to
            // sin/cos's last bits.
            assert!(
                (at(&ccw, y, x) - at(&img, x, n - 1 - y)).abs() <= 1,
                "ccw ({y}, {x})"
            );
            assert!(
                (at(&cw, y, x) - at(&img, n - 1 - x, y)).abs() <= 1,
                "cw ({y}, {x})"
            );
            assert!(
                (at(&half, y, x) - at(&img, n - 1 - y, n - 1 - x)).abs() <= 1,
                "180 ({y}, {x})"
            );
        }
    }
}

#[test]
fn elastic_with_zero_alpha_is_the_identity() {
    for (h, w) in [(28, 28), (27, 13), (40, 36)] {
        let img = image(h, w, 7);
        let aug = Augmenter::new(
            Augment::Elastic(ElasticParams {
                sigma: 4.0,
                alpha: 0.0,
            }),
            shape(h, w),
        )
        .unwrap();
        for i in 0..10 {
            assert_eq!(apply(&aug, 2, 0, i, &img), img, "{h}×{w} sample {i}");
        }
    }
}

/// The documented stream: eight Xoshiro256+ lanes seeded `key + j`, two
/// 23-bit uniforms per draw, low half first.
#[test]
fn elastic_uniforms_follow_the_documented_stream() {
    let key = sample_key(42, 7, 1234);
    let mut lanes: Vec<Xoshiro256Plus> = (0..8u64)
        .map(|j| Xoshiro256Plus::seed_from_u64(key.wrapping_add(j)))
        .collect();
    let u = elastic_uniforms(key, 160);
    for t in 0..10 {
        for (j, lane) in lanes.iter_mut().enumerate() {
            let x = lane.next_u64();
            for (half, bits) in [(0, x as u32), (1, (x >> 32) as u32)] {
                let expect = (f64::from(bits >> 9) + 0.5) * 2f64.powi(-22) - 1.0;
                assert_eq!(f64::from(u[16 * t + 2 * j + half]), expect);
            }
        }
    }
    assert!(u.iter().all(|v| v.abs() < 1.0));
}

/// A direct 2-D convolution in f64 of the documented noise: SciPy's kernel
/// (radius ⌊4σ + ½⌋, normalised), zeros outside, times α.
fn reference_field(key: u64, h: usize, w: usize, sigma: f64, alpha: f64) -> [Vec<f64>; 2] {
    let u = elastic_uniforms(key, 2 * h * w);
    let h1 = w.div_ceil(2);
    let mut noise = [vec![0f64; h * w], vec![0f64; h * w]];
    for (n, &v) in u.iter().enumerate() {
        let (f, p) = (n / (h * w), n % (h * w));
        let (i, q) = (p / w, p % w);
        let col = if q < h1 { q } else { w - 1 - (q - h1) };
        noise[f][i * w + col] = f64::from(v);
    }
    let r = (4.0 * sigma + 0.5).floor() as i64;
    let taps: Vec<f64> = (-r..=r)
        .map(|d| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = taps.iter().sum();
    let g = |d: i64| {
        if d.abs() <= r {
            taps[(d + r) as usize] / sum
        } else {
            0.0
        }
    };
    noise.map(|u| {
        let mut out = vec![0f64; h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for i in 0..h {
                    for j in 0..w {
                        acc += g(y as i64 - i as i64) * g(x as i64 - j as i64) * u[i * w + j];
                    }
                }
                out[y * w + x] = alpha * acc;
            }
        }
        out
    })
}

#[test]
fn elastic_field_matches_a_direct_f64_convolution() {
    // Even widths 16..=32 take the fast horizontal pass, the others the
    // general one; odd heights have a middle row.
    let cases = [
        (28, 28, 4.0, 34.0),
        (28, 28, 1.5, 10.0),
        (27, 13, 4.0, 34.0),
        (32, 32, 6.0, 40.0),
        (11, 20, 2.0, 8.0),
        (40, 36, 4.0, 34.0),
        (5, 7, 0.8, 3.0),
        (7, 16, 3.0, 20.0),
        (12, 2, 1.0, 5.0),
        (1, 1, 4.0, 34.0),
    ];
    let mut worst = 0f64;
    for (h, w, sigma, alpha) in cases {
        for path in KernelPath::available() {
            let aug = Augmenter::with_path(
                Augment::Elastic(ElasticParams { sigma, alpha }),
                shape(h, w),
                path,
            )
            .unwrap();
            let mut scratch = aug.scratch();
            for i in 0..3 {
                let key = sample_key(11, 5, i);
                let want = reference_field(key, h, w, f64::from(sigma), f64::from(alpha));
                let (dx, dy) = aug.elastic_field(11, 5, i, &mut scratch).unwrap();
                for (got, want) in [dx, dy].into_iter().zip(&want) {
                    for (g, r) in got.iter().zip(want) {
                        let err = (f64::from(*g) - r).abs();
                        worst = worst.max(err / f64::from(alpha));
                        // Measured: at most 8.0e-8·α over these cases
                        // (f32 sums of 2·⌈n/2⌉ terms per pass); 5e-7·α
                        // leaves 8× headroom and still catches a wrong tap,
                        // lane or noise order (errors of order α/100).
                        assert!(
                            err <= 5e-7 * f64::from(alpha),
                            "{h}×{w} σ={sigma} α={alpha} {path}: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }
    eprintln!("worst |error|/α = {worst:e}");
}

/// Simard's σ = 4, α = 34 on 28 × 28: the size of the displacements over
/// 2000 samples. At the centre the RMS must be α·sqrt((Σ_i g(c−i)²)² / 3)
/// = 1.3845 px (the uniforms' variance is 1/3); measured 1.387. The mean
/// |displacement| over both fields and every pixel measured 1.018 px (less
/// at the border, where `mode="constant"` damps the field), the largest
/// 6.07 px: the figures the module docs quote.
#[test]
fn elastic_displacements_have_the_expected_size() {
    let (h, w) = (28, 28);
    let aug = Augmenter::new(Augment::defaults(AugmentKind::Elastic), shape(h, w)).unwrap();
    let mut scratch = aug.scratch();
    let (mut sum_abs, mut sum_sq_centre, mut max_abs, mut n) = (0f64, 0f64, 0f32, 0usize);
    let samples = 2000;
    for i in 0..samples {
        let (dx, dy) = aug.elastic_field(1, 0, i, &mut scratch).unwrap();
        for v in dx.iter().chain(dy) {
            sum_abs += f64::from(v.abs());
            max_abs = max_abs.max(v.abs());
            n += 1;
        }
        let c = (h / 2) * w + w / 2;
        sum_sq_centre += f64::from(dx[c]).powi(2) + f64::from(dy[c]).powi(2);
    }
    let mean_abs = sum_abs / n as f64;
    let rms_centre = (sum_sq_centre / (2 * samples) as f64).sqrt();
    // The RMS at the centre, from the kernel.
    let (sigma, alpha, r) = (4.0f64, 34.0f64, 16i64);
    let taps: Vec<f64> = (-r..=r)
        .map(|d| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    let g = |d: i64| {
        if d.abs() <= r {
            taps[(d + r) as usize] / total
        } else {
            0.0
        }
    };
    let c = 14i64;
    let sum_g2: f64 = (0..28).map(|i| g(c - i).powi(2)).sum();
    let expect_rms = alpha * (sum_g2 * sum_g2 / 3.0).sqrt();
    eprintln!("mean |d| = {mean_abs:.4} px, max |d| = {max_abs:.3} px, RMS at centre = {rms_centre:.4} (expected {expect_rms:.4})");
    assert!(
        (rms_centre / expect_rms - 1.0).abs() < 0.05,
        "{rms_centre} vs {expect_rms}"
    );
    assert!((0.95..1.07).contains(&mean_abs), "mean |d| = {mean_abs}");
    assert!((4.0..9.0).contains(&max_abs), "max |d| = {max_abs}");
}

#[test]
fn f32_output_is_the_unrounded_u8_output() {
    let (h, w) = (28, 28);
    let img = image(h, w, 8);
    for augment in all_kinds() {
        let aug = Augmenter::new(augment, shape(h, w)).unwrap();
        let mut scratch = aug.scratch();
        for i in 0..10 {
            let (mut b, mut f) = (vec![0u8; h * w], vec![0f32; h * w]);
            aug.apply(4, 4, i, &img, &mut b, &mut scratch);
            aug.apply_f32(4, 4, i, &img, &mut f, &mut scratch);
            for (&b, &f) in b.iter().zip(&f) {
                let v = f / idx_softmax::data::pixels::U8_SCALE;
                assert!((0.0..=255.0001).contains(&v));
                assert!((f32::from(b) - v).abs() <= 0.5001, "{augment}: {b} vs {v}");
            }
        }
    }
}

#[test]
fn channels_share_one_deformation() {
    let (c, h, w) = (3, 28, 28);
    let planes: Vec<Vec<u8>> = (0..c).map(|k| image(h, w, 20 + k as u64)).collect();
    let src: Vec<u8> = planes.concat();
    for augment in all_kinds() {
        let multi = Augmenter::new(
            augment,
            ImageShape {
                channels: c,
                height: h,
                width: w,
            },
        )
        .unwrap();
        let single = Augmenter::new(augment, shape(h, w)).unwrap();
        for i in 0..8 {
            let out = apply(&multi, 6, 1, i, &src);
            for (k, plane) in planes.iter().enumerate() {
                assert_eq!(
                    &out[k * h * w..(k + 1) * h * w],
                    apply(&single, 6, 1, i, plane).as_slice(),
                    "{augment} channel {k} sample {i}"
                );
            }
        }
    }
}

#[test]
fn parameters_are_validated_with_typed_errors() {
    let bad = [
        (
            Augment::Shift(ShiftParams { max_shift: 65 }),
            "max_shift",
            "65",
        ),
        (
            Augment::Affine(AffineParams {
                rotate_deg: f32::NAN,
                ..AffineParams::default()
            }),
            "rotate",
            "NaN",
        ),
        (
            Augment::Affine(AffineParams {
                scale: 0.95,
                ..AffineParams::default()
            }),
            "scale",
            "0.95",
        ),
        (
            Augment::Affine(AffineParams {
                shear: -0.1,
                ..AffineParams::default()
            }),
            "shear",
            "-0.1",
        ),
        (
            Augment::Affine(AffineParams {
                translate: f32::INFINITY,
                ..AffineParams::default()
            }),
            "translate",
            "inf",
        ),
        (
            Augment::Elastic(ElasticParams {
                sigma: 0.0,
                alpha: 34.0,
            }),
            "sigma",
            "0",
        ),
        (
            Augment::Elastic(ElasticParams {
                sigma: 4.0,
                alpha: -1.0,
            }),
            "alpha",
            "-1",
        ),
    ];
    for (augment, name, value) in bad {
        let err = augment.validate().unwrap_err();
        match &err {
            AugmentError::Parameter { setting, value: v } => {
                assert_eq!((setting.key(), v.as_str()), (name, value));
            }
            other => panic!("{other:?}"),
        }
        // Worded with the library's names, and the value given.
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{name} must be")) && msg.ends_with(&format!("got {value}")),
            "{msg}"
        );
        assert!(Augmenter::new(augment, shape(28, 28)).is_err());
    }
    for augment in all_kinds() {
        augment.validate().unwrap();
    }
    let bad_shape = ImageShape {
        channels: 1,
        height: 0,
        width: 28,
    };
    assert!(matches!(
        Augmenter::new(Augment::None, bad_shape),
        Err(AugmentError::Shape(_))
    ));
    assert!(augment::shape_of(&[784]).is_err());
    assert_eq!(augment::shape_of(&[28, 28]).unwrap(), shape(28, 28));
}

#[test]
fn kinds_parse_and_print() {
    for kind in AugmentKind::ALL {
        assert_eq!(kind.to_string().parse::<AugmentKind>().unwrap(), kind);
        assert_eq!(
            kind.to_string()
                .to_uppercase()
                .parse::<AugmentKind>()
                .unwrap(),
            kind
        );
    }
    let err = "wobble".parse::<AugmentKind>().unwrap_err();
    assert_eq!(err, AugmentError::UnknownKind("wobble".into()));
    assert!(err.to_string().contains("none, shift, affine or elastic"));
    assert_eq!(
        Augment::defaults(AugmentKind::Elastic).to_string(),
        "elastic(sigma=4, alpha=34)"
    );
    assert_eq!(
        Augment::defaults(AugmentKind::Affine).to_string(),
        "affine(rotate=15, scale=0.15, shear=0.15, translate=2)"
    );
}

#[test]
fn affine_draws_stay_in_their_ranges() {
    let p = AffineParams::default();
    let aug = Augmenter::new(Augment::Affine(p), shape(28, 28)).unwrap();
    let (mut lo, mut hi) = ([f64::MAX; 5], [f64::MIN; 5]);
    for i in 0..4000 {
        let Draw::Affine(t) = aug.draw(3, 9, i) else {
            panic!("not affine")
        };
        let v = [t.rotate_deg, t.scale - 1.0, t.shear, t.tx, t.ty];
        for k in 0..5 {
            lo[k] = lo[k].min(v[k]);
            hi[k] = hi[k].max(v[k]);
        }
    }
    let range = [
        f64::from(p.rotate_deg),
        f64::from(p.scale),
        f64::from(p.shear),
        f64::from(p.translate),
        f64::from(p.translate),
    ];
    for k in 0..5 {
        // Inside the range, and reaching within 1 % of both ends.
        assert!(
            lo[k] >= -range[k] && hi[k] <= range[k],
            "{k}: {lo:?} {hi:?}"
        );
        assert!(
            lo[k] < -0.99 * range[k] && hi[k] > 0.99 * range[k],
            "{k}: {lo:?} {hi:?}"
        );
    }
}

#[test]
fn augmenter_is_shared_and_scratch_is_sent() {
    fn sync_send<T: Sync + Send>() {}
    fn send<T: Send>() {}
    sync_send::<Augmenter>();
    send::<idx_softmax::data::augment::Scratch>();
}
