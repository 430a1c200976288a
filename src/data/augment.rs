//! On-the-fly data augmentation: deformations of one sample.
//!
//! Training sample `i` of epoch `e` is deformed from its u8 pixels into an
//! output row by a deformation drawn from a random stream that depends only
//! on `(seed, epoch, index)` ([`sample_key`]). Never on the thread, nor on
//! which samples were deformed before: a run's bits are the same at any
//! thread count, and a resumed run continues the same sequence.
//!
//! # Kinds (`--augment none|shift|affine|elastic`)
//!
//! * `none`: the pixels are copied.
//! * `shift` ([`ShiftParams`]): an integer translation `(dx, dy)`, each
//!   uniform in `−max_shift..=max_shift` (default 2 px), zero fill. Integer
//!   so that every pixel is copied exactly (no resampling blur) and the cost
//!   is a few row copies.
//! * `affine` ([`AffineParams`]): rotation, isotropic scaling, horizontal
//!   shear and a sub-pixel translation about the image centre, bilinear
//!   resampling, zero fill.
//! * `elastic` ([`ElasticParams`]): Simard, Steinkraus & Platt (2003). Two
//!   fields of uniform(−1, 1) noise, each smoothed by a Gaussian of `sigma`
//!   and scaled by `alpha`, displace every pixel: `out(y, x) = in(y + dy,
//!   x + dx)`, bilinear, zero outside.
//!
//! A sample of shape C × H × W deforms every channel with the same field.
//!
//! # The random stream of a sample
//!
//! `key = sample_key(seed, epoch, index)`: three rounds of SplitMix64
//! (`splitmix(seed ^ DOMAIN)`, then `^ epoch`, then `^ index`), where the
//! domain tag keeps the stream apart from any other use of the run's seed.
//!
//! * `shift` and `affine` draw from one `Xoshiro256PlusPlus::seed_from_u64(key)`
//!   (rand_xoshiro's seeding: SplitMix64 fills the state). `shift`: two
//!   draws `x`, `dx = ((x >> 32)·(2m+1) >> 32) − m`, then `dy` likewise.
//!   `affine`: five draws, each `u = (x >> 11)·2⁻⁵³ ∈ [0, 1)` and
//!   `v = range·(2u − 1)`, in the order rotation, scale, shear, tx, ty.
//! * `elastic` draws its 2·H·W uniforms from eight interleaved
//!   Xoshiro256+ lanes, lane `j` being `Xoshiro256Plus::seed_from_u64(key +
//!   j)` (wrapping). Step `t` takes one u64 `x` from every lane; lane `j`
//!   gives uniforms `16t + 2j` (from the low 32 bits) and `16t + 2j + 1`
//!   (the high 32 bits), each `((bits >> 9) + ½)·2⁻²² − 1`: the top 23 bits
//!   of each half, symmetric about 0 in (−1, 1), exact in f32. Uniforms
//!   `0 .. H·W` are the dx noise, `H·W .. 2·H·W` the dy noise, row after
//!   row; within a row of W the first `⌈W/2⌉` go to columns `0, 1, …` and
//!   the rest to columns `W−1, W−2, …` (the order that makes the left/right
//!   fold of the smoothing a lane-aligned add; the noise is i.i.d., so its
//!   order does not change the distribution). Eight lanes so that the
//!   generator runs in SIMD registers; xoshiro256+ rather than ++ because
//!   it is Vigna's choice for floating-point output (its weak bits are the
//!   lowest three, never used here) and saves 2 of the 13 vector operations
//!   per step.
//!
//! # Elastic smoothing
//!
//! The 1-D kernel is SciPy's: `w(d) ∝ exp(−d²/2σ²)` for `|d| ≤ r`,
//! `r = ⌊4σ + ½⌋` (`gaussian_filter`'s default `truncate=4.0`), normalised
//! to sum 1, with zeros outside the field (`mode="constant"`, as in the
//! common Python recipe
//! `alpha * gaussian_filter(rand*2-1, sigma, mode="constant")`). Near the
//! border the field is therefore damped. The separable
//! blur of an H × W field is two small matrix products `Gv · U · Ghᵀ` with
//! the H × H and W × W matrices of that filter, precomputed once. The
//! radius costs nothing here: the matrices are dense for MNIST's 28 px
//! whatever the truncation. Both matrices are persymmetric, `G[i][j]` =
//! `G[n−1−i][n−1−j]`, so each product is done on the folded halves
//! `U_k ± U_{n−1−k}`: two ⌈n/2⌉-sized products instead of one n-sized,
//! half the multiply-adds.
//!
//! # Resampling and rounding
//!
//! Pixel centres are at integer coordinates. A source point `(sx, sy)` is
//! sampled bilinearly from the image padded with zeros (so a point less
//! than one pixel outside still blends with the edge); the value is
//! `top + fy·(bottom − top)` with `top = a + fx·(b − a)`, `bottom = c +
//! fx·(d − c)`, in f32, never fused. The u8 output is `⌊v + ½⌋` (v lies in
//! [0, 255] exactly); the f32 output is `v · U8_SCALE`, the scaling the
//! engine applies to u8 pixels.
//!
//! # Determinism across machines
//!
//! Every path (portable, AVX2, AVX-512) runs the same arithmetic in the
//! same order (element-wise IEEE operations, no FMA, no reassociation), so
//! the output bits do not depend on the instruction set either; only the
//! register blocking and the gathers differ, and neither changes a bit. The
//! one libm call is `sin`/`cos` of the affine angle (f64, then rounded to
//! f32), so affine bits could differ between C libraries.
//!
//! # Cost
//!
//! One core of the development machine (AMD EPYC Zen 4, 2 vCPUs, AVX-512;
//! shared with other work), the 60,000 MNIST training images, CPU time per
//! sample, best of 9 passes
//! (`cargo run --release --example augment_bench -- none,shift,affine,field,elastic 9 60000 avx512`):
//!
//! | kind | AVX-512 | AVX2 | portable |
//! |---|---|---|---|
//! | none | 56 ns | 61 ns | 58 ns |
//! | shift | 103 ns | 105 ns | 104 ns |
//! | affine | 0.92 µs | 1.10 µs | 1.73 µs |
//! | elastic | 2.3–2.4 µs | 2.70 µs | 6.4–6.6 µs |
//! | (its field alone) | 1.47–1.52 µs | 1.71–1.75 µs | 4.65–4.71 µs |
//!
//! (affine, elastic and the field: the median over 5 interleaved rounds
//! of each round's best of 5 passes, 2026-12-07, after the resampling's
//! stores stopped going through the stack; the lower ends of the ranges
//! are the earlier best-of-9 figures.) Of the elastic ~2.37 µs:
//! noise 0.25, vertical pass 0.66, folds 0.1, horizontal pass 0.5, quads
//! 0.25, cells, gathers and blends ~0.6. The two smoothing products do
//! 3,136 16-lane multiply-adds per sample (padding included; half of what
//! the unfolded 28 × 28 products would take) in ~1.16 µs: ~75% of the
//! multiply + add rate `examples/fma_peak` measures. The truncation
//! radius costs nothing (3σ instead of 4σ measured the same). In
//! training, an MLP 784-256-10 epoch at 2 threads takes 1.30–1.38× as
//! long with elastic as without (`perf/augment_targets.py cost`;
//! perf/README.md, "Augmentation", has the measurements and what was
//! tried). SciPy's vectorised equivalent (`perf/augment_compare.py`)
//! takes ~145 µs per sample for elastic and ~50 µs for affine: ~48× and
//! ~43× slower.

// The SIMD loops index fixed-size lane arrays with loop counters on
// purpose: the loops unroll and vectorise; iterator chains obscure that.
#![allow(clippy::needless_range_loop)]

use std::fmt;
use std::str::FromStr;

use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::pixels::U8_SCALE;
use crate::data::ImageShape;
use crate::kernels::KernelPath;
use crate::setting::Setting;

/// Default `--max-shift` (px).
pub const DEFAULT_MAX_SHIFT: u32 = 2;
/// Default `--rotate` (degrees): the angle is uniform in ±15°, the upper
/// end of the rotations in Ciresan et al. 2010's MNIST deformations
/// (7.5°–15°).
pub const DEFAULT_ROTATE_DEG: f32 = 15.0;
/// Default `--scale`: the factor is uniform in 1 ± 0.15, the lower end of
/// Ciresan et al. 2010's 15–20 % (they scaled x and y independently; this
/// scaling is isotropic, so that the digit keeps its aspect).
pub const DEFAULT_SCALE: f32 = 0.15;
/// Default `--shear`: the horizontal shear factor (`x += shear·y`) is
/// uniform in ±0.15 (≈ ±8.5°). Kept below the rotation so that shear does
/// not dominate: 0.15 moves the top of a 20 px digit by 1.5 px.
pub const DEFAULT_SHEAR: f32 = 0.15;
/// Default `--translate` (px): tx and ty each uniform in ±2 px
/// (sub-pixel), the classic MNIST shift.
pub const DEFAULT_TRANSLATE: f32 = 2.0;
/// Default `--sigma` (px): Simard et al. 2003's σ = 4 for 28 × 28.
pub const DEFAULT_SIGMA: f32 = 4.0;
/// Default `--alpha` (px): Simard et al. 2003's α = 34 for 28 × 28.
pub const DEFAULT_ALPHA: f32 = 34.0;

// The accepted range `(lo, hi)` of every parameter, inclusive. Wide enough
// for any sensible use; the bounds only keep the arithmetic meaningful.
/// `--max-shift`: beyond 64 px a 28 px digit is gone anyway.
pub const MAX_SHIFT_RANGE: (u32, u32) = (0, 64);
/// `--rotate`: up to a half turn either way.
pub const ROTATE_RANGE: (f32, f32) = (0.0, 180.0);
/// `--scale`: below 1, so the factor stays ≥ 0.1 (never 0 or a mirror).
pub const SCALE_RANGE: (f32, f32) = (0.0, 0.9);
/// `--shear`: up to 45°.
pub const SHEAR_RANGE: (f32, f32) = (0.0, 1.0);
/// `--translate`: pixels.
pub const TRANSLATE_RANGE: (f32, f32) = (0.0, 64.0);
/// `--sigma`: from a 3-tap kernel (radius ⌊4·0.25 + ½⌋ = 1) up.
pub const SIGMA_RANGE: (f32, f32) = (0.25, 64.0);
/// `--alpha`: pixels (the field's scale; 0 is the identity).
pub const ALPHA_RANGE: (f32, f32) = (0.0, 1000.0);

/// The kind `idx-softmax augment` writes when none is given: Simard et
/// al.'s elastic deformations, as MNIST8M (InfiMNIST) has them.
pub const DATASET_KIND: AugmentKind = AugmentKind::Elastic;

/// The kind of augmentation, as `--augment` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AugmentKind {
    #[default]
    None,
    Shift,
    Affine,
    Elastic,
}

impl AugmentKind {
    pub const ALL: [AugmentKind; 4] = [Self::None, Self::Shift, Self::Affine, Self::Elastic];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Shift => "shift",
            Self::Affine => "affine",
            Self::Elastic => "elastic",
        }
    }
}

impl fmt::Display for AugmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AugmentKind {
    type Err = AugmentError;
    fn from_str(s: &str) -> Result<Self, AugmentError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AugmentError::UnknownKind(s.to_string()))
    }
}

/// `shift`: integer translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShiftParams {
    /// `--max-shift`: dx and dy are each uniform in `−max_shift..=max_shift`.
    pub max_shift: u32,
}

impl Default for ShiftParams {
    fn default() -> Self {
        Self {
            max_shift: DEFAULT_MAX_SHIFT,
        }
    }
}

/// `affine`: the ranges of the random affine transform (each uniform).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineParams {
    /// `--rotate DEG`: angle uniform in ±DEG (counter-clockwise as shown).
    pub rotate_deg: f32,
    /// `--scale F`: isotropic factor uniform in 1 ± F.
    pub scale: f32,
    /// `--shear F`: horizontal shear factor uniform in ±F.
    pub shear: f32,
    /// `--translate PX`: tx and ty each uniform in ±PX (sub-pixel).
    pub translate: f32,
}

impl Default for AffineParams {
    fn default() -> Self {
        Self {
            rotate_deg: DEFAULT_ROTATE_DEG,
            scale: DEFAULT_SCALE,
            shear: DEFAULT_SHEAR,
            translate: DEFAULT_TRANSLATE,
        }
    }
}

/// `elastic`: Simard et al. 2003's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElasticParams {
    /// `--sigma`: the Gaussian's standard deviation (px).
    pub sigma: f32,
    /// `--alpha`: the scale of the smoothed field (px).
    pub alpha: f32,
}

impl Default for ElasticParams {
    fn default() -> Self {
        Self {
            sigma: DEFAULT_SIGMA,
            alpha: DEFAULT_ALPHA,
        }
    }
}

/// An augmentation and its parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Augment {
    #[default]
    None,
    Shift(ShiftParams),
    Affine(AffineParams),
    Elastic(ElasticParams),
}

impl Augment {
    /// The kind with its default parameters.
    pub fn defaults(kind: AugmentKind) -> Self {
        match kind {
            AugmentKind::None => Self::None,
            AugmentKind::Shift => Self::Shift(ShiftParams::default()),
            AugmentKind::Affine => Self::Affine(AffineParams::default()),
            AugmentKind::Elastic => Self::Elastic(ElasticParams::default()),
        }
    }

    pub fn kind(&self) -> AugmentKind {
        match self {
            Self::None => AugmentKind::None,
            Self::Shift(_) => AugmentKind::Shift,
            Self::Affine(_) => AugmentKind::Affine,
            Self::Elastic(_) => AugmentKind::Elastic,
        }
    }

    /// Checks every parameter: finite and inside its documented range.
    pub fn validate(&self) -> Result<(), AugmentError> {
        fn check(setting: Setting, v: f32, (lo, hi): (f32, f32)) -> Result<(), AugmentError> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(AugmentError::Parameter {
                    setting,
                    value: v.to_string(),
                })
            }
        }
        match *self {
            Self::None => Ok(()),
            Self::Shift(p) => {
                let (lo, hi) = MAX_SHIFT_RANGE;
                if (lo..=hi).contains(&p.max_shift) {
                    Ok(())
                } else {
                    Err(AugmentError::Parameter {
                        setting: Setting::MaxShift,
                        value: p.max_shift.to_string(),
                    })
                }
            }
            Self::Affine(p) => {
                check(Setting::Rotate, p.rotate_deg, ROTATE_RANGE)?;
                check(Setting::Scale, p.scale, SCALE_RANGE)?;
                check(Setting::Shear, p.shear, SHEAR_RANGE)?;
                check(Setting::Translate, p.translate, TRANSLATE_RANGE)
            }
            Self::Elastic(p) => {
                check(Setting::Sigma, p.sigma, SIGMA_RANGE)?;
                check(Setting::Alpha, p.alpha, ALPHA_RANGE)
            }
        }
    }

    /// The parameters as a checkpoint records them: `none`, `shift:2`,
    /// `affine:15,0.15,0.15,2` (rotate, scale, shear, translate),
    /// `elastic:4,34` (sigma, alpha).
    pub fn record(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Shift(p) => format!("shift:{}", p.max_shift),
            Self::Affine(p) => format!(
                "affine:{},{},{},{}",
                p.rotate_deg, p.scale, p.shear, p.translate
            ),
            Self::Elastic(p) => format!("elastic:{},{}", p.sigma, p.alpha),
        }
    }

    /// The inverse of [`Self::record`] (checked).
    pub fn from_record(s: &str) -> Option<Self> {
        let (kind, params) = s.split_once(':').unwrap_or((s, ""));
        let nums: Vec<f32> = if params.is_empty() {
            Vec::new()
        } else {
            params
                .split(',')
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?
        };
        let a = match (kind.parse::<AugmentKind>().ok()?, nums.as_slice()) {
            (AugmentKind::None, []) => Self::None,
            (AugmentKind::Shift, &[m]) if m >= 0.0 && m.fract() == 0.0 => {
                Self::Shift(ShiftParams {
                    max_shift: m as u32,
                })
            }
            (AugmentKind::Affine, &[rotate_deg, scale, shear, translate]) => {
                Self::Affine(AffineParams {
                    rotate_deg,
                    scale,
                    shear,
                    translate,
                })
            }
            (AugmentKind::Elastic, &[sigma, alpha]) => {
                Self::Elastic(ElasticParams { sigma, alpha })
            }
            _ => return None,
        };
        a.validate().ok().map(|_| a)
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Shift(p) => write!(f, "shift(max_shift={})", p.max_shift),
            Self::Affine(p) => write!(
                f,
                "affine(rotate={}, scale={}, shear={}, translate={})",
                p.rotate_deg, p.scale, p.shear, p.translate
            ),
            Self::Elastic(p) => write!(f, "elastic(sigma={}, alpha={})", p.sigma, p.alpha),
        }
    }
}

/// Why an augmentation was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum AugmentError {
    /// Not `none`, `shift`, `affine` or `elastic`.
    UnknownKind(String),
    /// A parameter outside its range (or not finite), as given.
    Parameter { setting: Setting, value: String },
    /// Not a sample shape H × W or C × H × W.
    Shape(Vec<usize>),
}

impl AugmentError {
    /// The message, one line, naming the setting by `name`.
    pub fn message(&self, name: crate::setting::Naming<'_>) -> String {
        match self {
            Self::UnknownKind(k) => format!(
                "{} {}, got '{k}'",
                name(Setting::Augment),
                Setting::Augment.rule()
            ),
            Self::Parameter { setting, value } => {
                format!("{} {}, got {value}", name(*setting), setting.rule())
            }
            Self::Shape(s) => format!(
                "{} deforms images: samples of shape H x W or C x H x W with every size in 1..={MAX_SIDE}, not {s:?}",
                name(Setting::Augment)
            ),
        }
    }
}

crate::setting::worded_error!(AugmentError);

/// Largest side an augmentation accepts (keeps every index in u32/i32 and
/// every coordinate exact in f32).
pub const MAX_SIDE: usize = 1 << 14;

/// The image a sample of `shape` (`[H, W]` or `[C, H, W]`, as
/// [`crate::data::Samples::sample_shape`] gives it) is, checked for
/// augmentation: every size in `1..=MAX_SIDE`.
pub fn shape_of(shape: &[usize]) -> Result<ImageShape, AugmentError> {
    let s = ImageShape::of_sample(shape).ok_or_else(|| AugmentError::Shape(shape.to_vec()))?;
    check_shape(&s)?;
    Ok(s)
}

fn check_shape(s: &ImageShape) -> Result<(), AugmentError> {
    let ok = |n: usize| (1..=MAX_SIDE).contains(&n);
    if ok(s.channels) && ok(s.height) && ok(s.width) {
        Ok(())
    } else {
        Err(AugmentError::Shape(vec![s.channels, s.height, s.width]))
    }
}

// ---------------------------------------------------------------------------
// The random stream
// ---------------------------------------------------------------------------

/// SplitMix64's increment (the golden ratio).
const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
/// Keeps the augmentation stream apart from other uses of the run's seed.
const DOMAIN: u64 = u64::from_le_bytes(*b"augment1");

/// SplitMix64's output function (Stafford's mix 13).
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `z`.
#[inline(always)]
fn splitmix(z: u64) -> u64 {
    mix64(z.wrapping_add(PHI))
}

/// The key of sample `index` in epoch `epoch` of a run seeded `seed`: every
/// random choice of that sample's deformation derives from it alone. For a
/// fixed seed and epoch, distinct indices give distinct keys (each round is
/// a bijection).
pub fn sample_key(seed: u64, epoch: u64, index: u64) -> u64 {
    let k = splitmix(seed ^ DOMAIN);
    let k = splitmix(k ^ epoch);
    splitmix(k ^ index)
}

/// The scalar stream of a sample (shift, affine).
fn scalar_rng(key: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(key)
}

/// A uniform in [0, 1) with 53 bits.
fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Eight Xoshiro256+ generators, one per lane, stepped together.
#[derive(Clone, Copy)]
struct Lanes {
    s: [[u64; LANES_RNG]; 4],
}

const LANES_RNG: usize = 8;
/// Uniforms per step of [`Lanes`].
const UNIFORMS_PER_STEP: usize = 2 * LANES_RNG;

impl Lanes {
    /// Lane `j` is `Xoshiro256Plus::seed_from_u64(key + j)`: SplitMix64
    /// from that seed fills the four state words in order.
    #[inline(always)]
    fn new(key: u64) -> Self {
        let mut s = [[0u64; LANES_RNG]; 4];
        for j in 0..LANES_RNG {
            let mut z = key.wrapping_add(j as u64);
            for w in s.iter_mut() {
                z = z.wrapping_add(PHI);
                w[j] = mix64(z);
            }
        }
        // SplitMix64 never gives four zero words in a row (mix64 is a
        // bijection of distinct inputs), so rand_xoshiro's all-zero seed
        // fix-up never applies and the states match it exactly.
        Self { s }
    }

    /// One u64 from every lane (Xoshiro256+'s step, lane-wise).
    #[inline(always)]
    fn next(&mut self) -> [u64; LANES_RNG] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u64; LANES_RNG];
        for j in 0..LANES_RNG {
            out[j] = s0[j].wrapping_add(s3[j]);
            let t = s1[j] << 17;
            s2[j] ^= s0[j];
            s3[j] ^= s1[j];
            s1[j] ^= s2[j];
            s0[j] ^= s3[j];
            s2[j] ^= t;
            s3[j] = s3[j].rotate_left(45);
        }
        out
    }
}

/// 32 random bits to a uniform in (−1, 1): `((bits >> 9) + ½)·2⁻²² − 1`,
/// computed as `m·2⁻²² + (2⁻²³ − 1)`, which is exact (the result has at
/// most 24 significant bits).
#[inline(always)]
fn uniform_pm1(bits: u32) -> f32 {
    const SCALE: f32 = 1.0 / (1u32 << 22) as f32;
    const OFFSET: f32 = 1.0 / (1u32 << 23) as f32 - 1.0;
    // `m < 2^23`, so the signed conversion is exact and vectorises to one
    // instruction on every x86 level.
    ((bits >> 9) as i32 as f32) * SCALE + OFFSET
}

/// Fills `out` (a multiple of 16 long) with the elastic stream of `key`,
/// as uniforms in (−1, 1).
fn fill_uniforms(key: u64, out: &mut [f32]) {
    let mut lanes = Lanes::new(key);
    for chunk in out.chunks_exact_mut(UNIFORMS_PER_STEP) {
        let bits = halves(lanes.next());
        for (o, b) in chunk.iter_mut().zip(bits) {
            *o = uniform_pm1(b);
        }
    }
}

/// `uniform · 2²²`, exactly: `(bits >> 9) − (2²² − ½)`, an odd multiple of
/// ½ in (−2²², 2²²) (24 significant bits at most). The hot path keeps the
/// noise in these units and folds the exact 2⁻²² into its matrices, which
/// gives the same bits as scaling every value (a power of two).
const NOISE_UNIT: f32 = 1.0 / (1u32 << 22) as f32;

/// Fills `out` (a multiple of 16 long) with the elastic stream of `key` in
/// units of [`NOISE_UNIT`].
#[inline(always)]
fn fill_noise(key: u64, out: &mut [f32]) {
    const OFFSET: f32 = 0.5 - (1u32 << 22) as f32;
    // Both halves' top 23 bits in one 64-bit shift and mask, so that the
    // 32-bit lanes are in stream order without a shuffle.
    const MASK: u64 = 0x007f_ffff_007f_ffff;
    let mut lanes = Lanes::new(key);
    for chunk in out.chunks_exact_mut(UNIFORMS_PER_STEP) {
        let x = lanes.next();
        let mut m = [0u64; LANES_RNG];
        for j in 0..LANES_RNG {
            m[j] = (x[j] >> 9) & MASK;
        }
        let m = halves(m);
        let mut v = [0f32; UNIFORMS_PER_STEP];
        for t in 0..UNIFORMS_PER_STEP {
            v[t] = m[t] as i32 as f32 + OFFSET;
        }
        chunk.copy_from_slice(&v);
    }
}

/// The 32-bit halves of eight u64 in stream order (low, high per lane).
#[inline(always)]
fn halves(x: [u64; LANES_RNG]) -> [u32; UNIFORMS_PER_STEP] {
    #[cfg(target_endian = "little")]
    {
        // Little-endian memory order is exactly (low, high) per u64, so this
        // is a register reinterpretation, not a shuffle.
        // SAFETY: both types are 64 bytes of plain integers; every bit
        // pattern is a valid u32.
        unsafe { std::mem::transmute::<[u64; LANES_RNG], [u32; UNIFORMS_PER_STEP]>(x) }
    }
    #[cfg(not(target_endian = "little"))]
    {
        std::array::from_fn(|t| (x[t / 2] >> (32 * (t % 2))) as u32)
    }
}

/// The first `n` uniforms of the elastic stream of `key` (for tests and
/// references; the hot path fills its scratch buffer directly).
pub fn elastic_uniforms(key: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n.div_ceil(UNIFORMS_PER_STEP) * UNIFORMS_PER_STEP];
    fill_uniforms(key, &mut v);
    v.truncate(n);
    v
}

// ---------------------------------------------------------------------------
// Drawn transforms
// ---------------------------------------------------------------------------

/// One drawn affine transform. The image is sheared (`x' = x + shear·y`),
/// scaled, rotated counter-clockwise (as displayed, y down) by
/// `rotate_deg`, all about the centre `((W−1)/2, (H−1)/2)`, then translated
/// by `(tx, ty)`; the output samples the input at the inverse image of
/// each pixel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineTransform {
    pub rotate_deg: f64,
    pub scale: f64,
    pub shear: f64,
    pub tx: f64,
    pub ty: f64,
}

impl AffineTransform {
    pub const IDENTITY: Self = Self {
        rotate_deg: 0.0,
        scale: 1.0,
        shear: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// Draws a transform from the ranges in `p` (the documented stream).
    fn draw(p: &AffineParams, key: u64) -> Self {
        let mut rng = scalar_rng(key);
        let mut v = |range: f32| f64::from(range) * (2.0 * unit_f64(rng.next_u64()) - 1.0);
        let rotate_deg = v(p.rotate_deg);
        let scale = 1.0 + v(p.scale);
        let shear = v(p.shear);
        let tx = v(p.translate);
        let ty = v(p.translate);
        Self {
            rotate_deg,
            scale,
            shear,
            tx,
            ty,
        }
    }

    /// The sampling map `src = M·(x, y, 1)` as `[m00, m01, m02, m10, m11,
    /// m12]` in f32, for an image of `shape`.
    ///
    /// Forward map: `F(q) = c + R·S·H·(q − c) + t`, with `H = [[1, h], [0,
    /// 1]]`, `S = s·I`, and R the counter-clockwise rotation on screen,
    /// `[[cos, sin], [−sin, cos]]` in (x, y-down) coordinates. Its inverse is
    /// `src = c + A·(p − c − t)` with `A = H⁻¹·S⁻¹·R⁻¹`.
    fn sampling_matrix(&self, shape: &ImageShape) -> [f32; 6] {
        let (sin, cos) = self.rotate_deg.to_radians().sin_cos();
        // R⁻¹ = [[cos, −sin], [sin, cos]]; S⁻¹ = 1/s; H⁻¹ = [[1, −h], [0, 1]].
        let inv_s = 1.0 / self.scale;
        let (r00, r01, r10, r11) = (cos * inv_s, -sin * inv_s, sin * inv_s, cos * inv_s);
        let a00 = r00 - self.shear * r10;
        let a01 = r01 - self.shear * r11;
        let (a10, a11) = (r10, r11);
        let cx = (shape.width as f64 - 1.0) / 2.0;
        let cy = (shape.height as f64 - 1.0) / 2.0;
        let (ox, oy) = (cx + self.tx, cy + self.ty);
        let b0 = cx - (a00 * ox + a01 * oy);
        let b1 = cy - (a10 * ox + a11 * oy);
        [a00, a01, b0, a10, a11, b1].map(|v| v as f32)
    }
}

/// One drawn deformation (what [`Augmenter::draw`] returns).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Draw {
    None,
    /// Content moves by `(dx, dy)` pixels (right, down).
    Shift {
        dx: i32,
        dy: i32,
    },
    Affine(AffineTransform),
    /// The field comes from the key; see [`Augmenter::elastic_field`].
    Elastic {
        key: u64,
    },
}

/// `−m..=m` from one draw: `((x >> 32)·(2m+1)) >> 32` (unbiased to within
/// (2m+1)/2³²).
fn draw_offset(x: u64, m: u32) -> i32 {
    let n = 2 * u64::from(m) + 1;
    (((x >> 32) * n) >> 32) as i32 - m as i32
}

// ---------------------------------------------------------------------------
// The prepared augmenter
// ---------------------------------------------------------------------------

/// Lanes of the widest vector the blur and resampler are blocked for.
const VL: usize = 16;
/// The rows of every product are padded to a multiple of this (the largest
/// row block of [`gemm_bcast`]).
const ROW_PAD: usize = 8;

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Which instruction set runs the kernels (they give the same bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn from_path(path: KernelPath) -> Self {
        match path {
            KernelPath::Gemm | KernelPath::Portable => Self::Portable,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 if path.is_available() => Self::Avx2,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 if path.is_available() => Self::Avx512,
            _ => Self::Portable,
        }
    }
}

/// The folded halves of a persymmetric n × n smoothing matrix.
struct Folded {
    n: usize,
    /// n / 2: the pairs (k, n−1−k).
    half: usize,
    /// ⌈n/2⌉: pairs plus the middle index when n is odd.
    h1: usize,
    /// `P[i][k]` (i, k < h1): `(G[i][k] + G[i][n−1−k]) / 2`, or `G[i][m]`
    /// for the middle column.
    p: Vec<f64>,
    /// `M[i][k]` (i, k < half): `(G[i][k] − G[i][n−1−k]) / 2`.
    m: Vec<f64>,
}

/// SciPy's `gaussian_filter1d` kernel as a matrix with `mode="constant"`:
/// `G[i][j] = w(i − j)`, `w` truncated at `⌊4σ + ½⌋` and normalised.
pub fn gaussian_matrix(n: usize, sigma: f64) -> Vec<f64> {
    let taps = gaussian_taps(sigma);
    let r = (taps.len() / 2) as isize;
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d = i as isize - j as isize;
            if d.abs() <= r {
                g[i * n + j] = taps[(d + r) as usize];
            }
        }
    }
    g
}

/// The normalised taps `w(−r..=r)`, `r = ⌊4σ + ½⌋` (SciPy's radius for
/// `truncate=4.0`).
pub fn gaussian_taps(sigma: f64) -> Vec<f64> {
    let r = (4.0 * sigma + 0.5) as isize;
    let w: Vec<f64> = (-r..=r)
        .map(|d| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|x| x / sum).collect()
}

impl Folded {
    fn new(n: usize, sigma: f64) -> Self {
        let g = gaussian_matrix(n, sigma);
        let half = n / 2;
        let h1 = n - half;
        let mut p = vec![0.0; h1 * h1];
        let mut m = vec![0.0; half * half];
        for i in 0..h1 {
            for k in 0..h1 {
                p[i * h1 + k] = if k < half {
                    (g[i * n + k] + g[i * n + n - 1 - k]) / 2.0
                } else {
                    g[i * n + k]
                };
            }
        }
        for i in 0..half {
            for k in 0..half {
                m[i * half + k] = (g[i * n + k] - g[i * n + n - 1 - k]) / 2.0;
            }
        }
        Self { n, half, h1, p, m }
    }

    /// `P` (or `M`) as f32, row-major, rows padded with zeros to a multiple
    /// of [`ROW_PAD`], each multiplied by `scale`.
    fn rows_padded(mat: &[f64], dim: usize, scale: f64) -> Vec<f32> {
        let mut out = vec![0.0f32; round_up(dim, ROW_PAD) * dim];
        for (o, &v) in out.iter_mut().zip(mat) {
            *o = (v * scale) as f32;
        }
        out
    }

    /// `Pᵀ` (or `Mᵀ`) as f32: `dim` rows of `lanes` (zero-padded) with
    /// `out[k][j] = mat[j][k]·scale`.
    fn transposed(mat: &[f64], dim: usize, lanes: usize, scale: f64) -> Vec<f32> {
        let mut out = vec![0.0f32; dim * lanes];
        for k in 0..dim {
            for j in 0..dim {
                out[k * lanes + j] = (mat[j * dim + k] * scale) as f32;
            }
        }
        out
    }
}

/// The precomputed elastic plan for one shape and one (σ, α).
struct ElasticPlan {
    /// Vertical (H) halves, rows padded to [`ROW_PAD`]: `P` and `M`.
    vp: Vec<f32>,
    vm: Vec<f32>,
    v_half: usize,
    v_h1: usize,
    /// Horizontal (W) halves, transposed, lanes padded to `h_lanes`, times α.
    hp: Vec<f32>,
    hm: Vec<f32>,
    h_half: usize,
    h_h1: usize,
    h_lanes: usize,
    /// Even W in 16..=32: the horizontal pass runs on one vector per row
    /// ([`fast_width`]).
    fast: bool,
}

/// Whether a width takes the fast horizontal pass: its left and right
/// halves fit one vector each, and two vectors (columns `0..16` and
/// `W−16..W`) cover a row. Odd widths are left out because their middle
/// column would need a lane fix-up.
fn fast_width(w: usize) -> bool {
    (VL..=2 * VL).contains(&w) && w.is_multiple_of(2)
}

impl ElasticPlan {
    fn new(p: &ElasticParams, shape: &ImageShape) -> Self {
        let sigma = f64::from(p.sigma);
        let alpha = f64::from(p.alpha);
        let v = Folded::new(shape.height, sigma);
        let h = Folded::new(shape.width, sigma);
        debug_assert_eq!((v.n, h.n), (shape.height, shape.width));
        let h_lanes = round_up(h.h1, VL);
        let fast = fast_width(shape.width);
        let (mut hp, mut hm) = (
            Folded::transposed(&h.p, h.h1, h_lanes, alpha),
            Folded::transposed(&h.m, h.half, h_lanes, alpha),
        );
        if fast {
            // The padding lanes j ≥ W/2 compute column j too: it is
            // P[W−1−j] − M[W−1−j], so lane j gets P's row W−1−j and the
            // negation of M's. Then `P + M` is columns 0..16 and
            // `reverse(P − M)` is columns W−16..W, with the same bits where
            // they overlap (the same products in the same order, and
            // negation is exact).
            let half = h.half;
            for k in 0..half {
                for j in half..VL {
                    let mirror = shape.width - 1 - j;
                    hp[k * h_lanes + j] = (h.p[mirror * half + k] * alpha) as f32;
                    hm[k * h_lanes + j] = (-h.m[mirror * half + k] * alpha) as f32;
                }
            }
        }
        Self {
            // The noise is kept in units of NOISE_UNIT (a power of two).
            vp: Folded::rows_padded(&v.p, v.h1, f64::from(NOISE_UNIT)),
            vm: Folded::rows_padded(&v.m, v.half, f64::from(NOISE_UNIT)),
            v_half: v.half,
            v_h1: v.h1,
            hp,
            hm,
            h_half: h.half,
            h_h1: h.h1,
            h_lanes,
            fast,
        }
    }
}

/// Deforms samples of one shape with one augmentation. Immutable and
/// `Sync`: share one across threads, give each thread its own [`Scratch`].
pub struct Augmenter {
    augment: Augment,
    shape: ImageShape,
    isa: Isa,
    /// The pixel grid, flat, padded to a multiple of [`VL`]: x and y of
    /// pixel p.
    grid_x: Vec<f32>,
    grid_y: Vec<f32>,
    elastic: Option<ElasticPlan>,
}

/// Per-thread working memory for [`Augmenter`]; reused across samples so the
/// hot path allocates nothing. Buffers carry slack past their logical end
/// so that every loop moves whole vectors.
pub struct Scratch {
    shape: ImageShape,
    elastic: bool,
    /// 2·H·W uniforms: the dx then the dy noise, rows W apart.
    noise: Vec<f32>,
    /// Vertical fold: sums and differences of rows k and H−1−k, both fields
    /// side by side (`2·WP` lanes, WP = W rounded up to [`VL`]).
    v_sum: Vec<f32>,
    v_diff: Vec<f32>,
    v_p: Vec<f32>,
    v_m: Vec<f32>,
    /// After the vertical pass: H rows × 2·WP lanes (general pass only;
    /// the fast pass folds straight from `v_p` and `v_m`).
    y: Vec<f32>,
    /// Horizontal fold: 2·H rows (dx rows, then dy rows).
    h_sum: Vec<f32>,
    h_diff: Vec<f32>,
    h_p: Vec<f32>,
    h_m: Vec<f32>,
    /// The unfold (general pass only): per row of the horizontal products
    /// (`h_p`, `h_m`, likewise), the sums in natural order and the
    /// differences reversed.
    plus: Vec<f32>,
    rev: Vec<f32>,
    /// The displacement fields, flat H·W.
    dx: Vec<f32>,
    dy: Vec<f32>,
    /// (H+2) × (W+2) quads: the four bilinear neighbours of every cell,
    /// packed in a u32 so that one gather fetches them.
    quads: Vec<u32>,
    /// Per output pixel: its cell in `quads` and its weights.
    idx: Vec<u32>,
    fx: Vec<f32>,
    fy: Vec<f32>,
}

/// The sizes of the elastic buffers of one shape.
struct Dims {
    h: usize,
    w: usize,
    /// W rounded up to [`VL`]: the lanes of one field in the vertical pass.
    wp: usize,
    /// 2·WP: both fields.
    lanes: usize,
    /// Row stride of the horizontal fold.
    hs: usize,
    /// Rows of the horizontal products (2·H rounded up to [`ROW_PAD`]).
    h_rows: usize,
}

impl Dims {
    fn new(plan: &ElasticPlan, shape: &ImageShape) -> Self {
        let (h, w) = (shape.height, shape.width);
        // The fast pass keeps each half of a row in its own vector.
        let wp = if plan.fast { 2 * VL } else { round_up(w, VL) };
        Self {
            h,
            w,
            wp,
            lanes: 2 * wp,
            hs: round_up(plan.h_h1, VL),
            h_rows: round_up(2 * h, ROW_PAD),
        }
    }
}

impl Augmenter {
    /// An augmenter on the fastest instruction set of this CPU (every set
    /// gives the same bits).
    pub fn new(augment: Augment, shape: ImageShape) -> Result<Self, AugmentError> {
        Self::with_path(augment, shape, KernelPath::best())
    }

    /// An augmenter on the instruction set of `path` (the portable code for
    /// `gemm`, and for a path this CPU lacks): for tests and benchmarks.
    pub fn with_path(
        augment: Augment,
        shape: ImageShape,
        path: KernelPath,
    ) -> Result<Self, AugmentError> {
        augment.validate()?;
        check_shape(&shape)?;
        let plane = shape.plane();
        let padded_plane = round_up(plane, VL);
        let mut grid_x = vec![0.0; padded_plane];
        let mut grid_y = vec![0.0; padded_plane];
        for p in 0..plane {
            grid_x[p] = (p % shape.width) as f32;
            grid_y[p] = (p / shape.width) as f32;
        }
        let elastic = match augment {
            Augment::Elastic(p) => Some(ElasticPlan::new(&p, &shape)),
            _ => None,
        };
        Ok(Self {
            augment,
            shape,
            isa: Isa::from_path(path),
            grid_x,
            grid_y,
            elastic,
        })
    }

    pub fn augment(&self) -> &Augment {
        &self.augment
    }

    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Fresh working memory for this augmenter's shape.
    pub fn scratch(&self) -> Scratch {
        let s = self.shape;
        let (h, w) = (s.height, s.width);
        let quads = vec![0; (h + 2) * (w + 2) + VL];
        let taps = round_up(h * w, VL);
        let (idx, fx, fy) = (vec![0; taps], vec![0.0; taps], vec![0.0; taps]);
        let Some(plan) = &self.elastic else {
            return Scratch {
                shape: s,
                elastic: false,
                noise: Vec::new(),
                v_sum: Vec::new(),
                v_diff: Vec::new(),
                v_p: Vec::new(),
                v_m: Vec::new(),
                y: Vec::new(),
                h_sum: Vec::new(),
                h_diff: Vec::new(),
                h_p: Vec::new(),
                h_m: Vec::new(),
                plus: Vec::new(),
                rev: Vec::new(),
                dx: Vec::new(),
                dy: Vec::new(),
                quads,
                idx,
                fx,
                fy,
            };
        };
        let d = Dims::new(plan, &s);
        let plane = h * w;
        let field = round_up(plane, VL) + d.wp;
        Scratch {
            shape: s,
            elastic: true,
            // Rows are read WP lanes wide at stride W: the last one ends at
            // 2HW − W + WP.
            noise: vec![0.0; round_up(2 * plane, UNIFORMS_PER_STEP) + d.wp],
            v_sum: vec![0.0; plan.v_h1 * d.lanes],
            v_diff: vec![0.0; plan.v_half * d.lanes],
            v_p: vec![0.0; round_up(plan.v_h1, ROW_PAD) * d.lanes],
            v_m: vec![0.0; round_up(plan.v_half, ROW_PAD) * d.lanes],
            // The horizontal fold reads up to h1 + HS lanes past a row start.
            y: vec![0.0; h * d.lanes + plan.h_h1 + d.hs],
            h_sum: vec![0.0; d.h_rows * d.hs],
            h_diff: vec![0.0; d.h_rows * d.hs],
            h_p: vec![0.0; d.h_rows * plan.h_lanes],
            h_m: vec![0.0; d.h_rows * plan.h_lanes],
            plus: vec![0.0; 2 * h * row_stride(plan.h_lanes)],
            rev: vec![0.0; 2 * h * row_stride(plan.h_lanes)],
            dx: vec![0.0; field],
            dy: vec![0.0; field],
            quads,
            idx,
            fx,
            fy,
        }
    }

    /// The deformation of sample `index` in epoch `epoch` of a run seeded
    /// `seed`.
    pub fn draw(&self, seed: u64, epoch: u64, index: u64) -> Draw {
        let key = sample_key(seed, epoch, index);
        match &self.augment {
            Augment::None => Draw::None,
            Augment::Shift(p) => {
                let mut rng = scalar_rng(key);
                let dx = draw_offset(rng.next_u64(), p.max_shift);
                let dy = draw_offset(rng.next_u64(), p.max_shift);
                Draw::Shift { dx, dy }
            }
            Augment::Affine(p) => Draw::Affine(AffineTransform::draw(p, key)),
            Augment::Elastic(_) => Draw::Elastic { key },
        }
    }

    /// Deforms `src` (one sample, C × H × W u8) into `out` (same length):
    /// the deformation of sample `index` in epoch `epoch` of a run seeded
    /// `seed`.
    ///
    /// # Panics
    /// If a length differs from the shape's, or `scratch` was made by an
    /// augmenter of another shape or kind.
    pub fn apply(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        src: &[u8],
        out: &mut [u8],
        scratch: &mut Scratch,
    ) {
        self.apply_draw(&self.draw(seed, epoch, index), src, out, scratch);
    }

    /// As [`Self::apply`], into f32 values `v · U8_SCALE` (not rounded to
    /// u8 levels).
    pub fn apply_f32(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        src: &[u8],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        self.apply_draw_f32(&self.draw(seed, epoch, index), src, out, scratch);
    }

    /// Applies a given deformation: one from [`Self::draw`], or one chosen
    /// by hand (a shift or affine draw works with any augmenter of the
    /// shape; an elastic draw needs an elastic augmenter, whose σ and α it
    /// uses).
    ///
    /// # Panics
    /// As [`Self::apply`]; also for an elastic draw on a non-elastic
    /// augmenter.
    pub fn apply_draw(&self, draw: &Draw, src: &[u8], out: &mut [u8], scratch: &mut Scratch) {
        self.dispatch(draw, src, U8Sink(out), scratch);
    }

    /// As [`Self::apply_draw`], into f32 values `v · U8_SCALE`.
    pub fn apply_draw_f32(&self, draw: &Draw, src: &[u8], out: &mut [f32], scratch: &mut Scratch) {
        self.dispatch(draw, src, F32Sink(out), scratch);
    }

    /// The elastic displacement fields `(dx, dy)` (H·W each, row-major, in
    /// pixels) of sample `index`, computed in `scratch`; `None` unless the
    /// augmenter is elastic.
    pub fn elastic_field<'s>(
        &self,
        seed: u64,
        epoch: u64,
        index: u64,
        scratch: &'s mut Scratch,
    ) -> Option<(&'s [f32], &'s [f32])> {
        let plan = self.elastic.as_ref()?;
        self.check_scratch(scratch);
        let key = sample_key(seed, epoch, index);
        match self.isa {
            // SAFETY: the portable code needs nothing beyond the target's
            // baseline.
            Isa::Portable => unsafe { Portable::field(plan, &self.shape, key, scratch) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` is only chosen where the CPU has AVX2 and
            // FMA (`Isa::from_path` checks availability).
            Isa::Avx2 => unsafe { x86::field_avx2(plan, &self.shape, key, scratch) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` is only chosen where the CPU has
            // AVX-512F.
            Isa::Avx512 => unsafe { x86::field_avx512(plan, &self.shape, key, scratch) },
        }
        let n = self.shape.plane();
        Some((&scratch.dx[..n], &scratch.dy[..n]))
    }

    fn check_scratch(&self, scratch: &Scratch) {
        assert!(
            scratch.shape == self.shape && (scratch.elastic || self.elastic.is_none()),
            "augment: scratch made by an augmenter of another shape or kind"
        );
    }

    fn dispatch<S: Sink>(&self, draw: &Draw, src: &[u8], sink: S, scratch: &mut Scratch) {
        let n = self.shape.len();
        assert_eq!(src.len(), n, "augment: source length");
        assert_eq!(sink.len(), n, "augment: output length");
        self.check_scratch(scratch);
        assert!(
            !matches!(draw, Draw::Elastic { .. }) || self.elastic.is_some(),
            "augment: an elastic draw needs an elastic augmenter"
        );
        match self.isa {
            // SAFETY: the portable code needs nothing beyond the target's
            // baseline.
            Isa::Portable => unsafe { deform::<Portable, S>(self, draw, src, sink, scratch) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` is only chosen where the CPU has AVX2 and
            // FMA.
            Isa::Avx2 => unsafe { x86::deform_avx2(self, draw, src, sink, scratch) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` is only chosen where the CPU has
            // AVX-512F.
            Isa::Avx512 => unsafe { x86::deform_avx512(self, draw, src, sink, scratch) },
        }
    }
}

/// One deformation, generic over the instruction set and the output;
/// inlined into each instruction set's entry point. The caller has checked
/// the lengths and the scratch.
///
/// # Safety
/// The CPU supports `G`'s instruction set.
#[inline(always)]
unsafe fn deform<G: Kern, S: Sink>(
    aug: &Augmenter,
    draw: &Draw,
    src: &[u8],
    mut sink: S,
    scratch: &mut Scratch,
) {
    let shape = &aug.shape;
    match *draw {
        Draw::None => sink.copy(src),
        Draw::Shift { dx, dy } => shift(shape, dx, dy, src, &mut sink),
        Draw::Affine(t) => {
            let coords = AffineCoords {
                gx: &aug.grid_x,
                gy: &aug.grid_y,
                m: t.sampling_matrix(shape),
            };
            let taps = Taps {
                idx: &mut scratch.idx,
                fx: &mut scratch.fx,
                fy: &mut scratch.fy,
            };
            // SAFETY: the caller guarantees G's instruction set.
            unsafe {
                resample::<G, _, _>(shape, &coords, src, &mut sink, &mut scratch.quads, taps)
            };
        }
        Draw::Elastic { key } => {
            let plan = aug.elastic.as_ref().expect("checked by the caller");
            // SAFETY: the caller guarantees G's instruction set.
            unsafe { G::field(plan, shape, key, scratch) };
            // Disjoint borrows: the fields are read while the quads are
            // written.
            let Scratch {
                dx,
                dy,
                quads,
                idx,
                fx,
                fy,
                ..
            } = scratch;
            let coords = FieldCoords {
                gx: &aug.grid_x,
                gy: &aug.grid_y,
                dx,
                dy,
            };
            // SAFETY: the caller guarantees G's instruction set.
            let taps = Taps { idx, fx, fy };
            // SAFETY: the caller guarantees G's instruction set.
            unsafe { resample::<G, _, _>(shape, &coords, src, &mut sink, quads, taps) };
        }
    }
}

// ---------------------------------------------------------------------------
// Output sinks
// ---------------------------------------------------------------------------

/// Where resampled values go: u8 (rounded) or f32 (scaled).
trait Sink {
    fn len(&self) -> usize;
    fn copy(&mut self, src: &[u8]);
    /// Zeroes the whole output.
    fn clear(&mut self);
    /// Copies `src` to positions `at..at + src.len()`.
    fn copy_at(&mut self, at: usize, src: &[u8]);
    /// Stores the values `v` (in [0, 255]) at `at..at + VL`.
    fn store(&mut self, at: usize, v: &[f32; VL]);
    /// Stores the first `n < VL` values at `at..at + n`. Out of line: in
    /// the loop, the compiler merges a variable-length tail with the full
    /// store into a memcpy call per vector.
    fn store_tail(&mut self, at: usize, v: &[f32; VL], n: usize);
}

struct U8Sink<'a>(&'a mut [u8]);
struct F32Sink<'a>(&'a mut [f32]);

impl Sink for U8Sink<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn copy(&mut self, src: &[u8]) {
        self.0.copy_from_slice(src);
    }
    fn clear(&mut self) {
        self.0.fill(0);
    }
    fn copy_at(&mut self, at: usize, src: &[u8]) {
        self.0[at..at + src.len()].copy_from_slice(src);
    }
    #[inline(always)]
    fn store(&mut self, at: usize, v: &[f32; VL]) {
        *<&mut [u8; VL]>::try_from(&mut self.0[at..at + VL]).unwrap() = round_u8(v);
    }
    #[inline(never)]
    fn store_tail(&mut self, at: usize, v: &[f32; VL], n: usize) {
        self.0[at..at + n].copy_from_slice(&round_u8(v)[..n]);
    }
}

/// `⌊v + ½⌋` as bytes.
#[inline(always)]
fn round_u8(v: &[f32; VL]) -> [u8; VL] {
    let mut b = [0u8; VL];
    for l in 0..VL {
        // v ∈ [0, 255] exactly (see the module docs), so v + ½ ∈
        // [0.5, 255.5] and truncation is ⌊v + ½⌋.
        // SAFETY: the value is finite and within i32 (it is < 256).
        b[l] = unsafe { (v[l] + 0.5).to_int_unchecked::<i32>() } as u8;
    }
    b
}

impl Sink for F32Sink<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn copy(&mut self, src: &[u8]) {
        crate::data::pixels::u8_to_f32(src, self.0);
    }
    fn clear(&mut self) {
        self.0.fill(0.0);
    }
    fn copy_at(&mut self, at: usize, src: &[u8]) {
        crate::data::pixels::u8_to_f32(src, &mut self.0[at..at + src.len()]);
    }
    #[inline(always)]
    fn store(&mut self, at: usize, v: &[f32; VL]) {
        *<&mut [f32; VL]>::try_from(&mut self.0[at..at + VL]).unwrap() = v.map(|x| x * U8_SCALE);
    }
    #[inline(never)]
    fn store_tail(&mut self, at: usize, v: &[f32; VL], n: usize) {
        self.0[at..at + n].copy_from_slice(&v.map(|x| x * U8_SCALE)[..n]);
    }
}

// ---------------------------------------------------------------------------
// shift
// ---------------------------------------------------------------------------

/// `out[c][y][x] = src[c][y − dy][x − dx]`, zero outside.
fn shift<S: Sink>(shape: &ImageShape, dx: i32, dy: i32, src: &[u8], sink: &mut S) {
    let (h, w) = (shape.height as i64, shape.width as i64);
    let (dx, dy) = (i64::from(dx), i64::from(dy));
    sink.clear();
    // Output columns x with 0 ≤ x − dx < w.
    let x0 = dx.clamp(0, w);
    let x1 = (w + dx).clamp(0, w);
    if x0 >= x1 {
        return;
    }
    let plane = shape.plane();
    for c in 0..shape.channels {
        for y in dy.clamp(0, h)..(h + dy).clamp(0, h) {
            let sy = y - dy;
            let from = c * plane + (sy * w + x0 - dx) as usize;
            let to = c * plane + (y * w + x0) as usize;
            sink.copy_at(to, &src[from..from + (x1 - x0) as usize]);
        }
    }
}

// ---------------------------------------------------------------------------
// Resampling
// ---------------------------------------------------------------------------

/// Sixteen f32 lanes: one zmm register, two ymm, or an array the compiler
/// maps to whatever the target has. Element-wise IEEE operations only, so
/// every implementation gives the same bits.
///
/// # Safety
/// Every method requires that the CPU supports the implementation's
/// instruction set; loads and stores need `VL` valid f32 at the pointer.
trait V16: Copy {
    /// # Safety
    /// See the trait.
    unsafe fn zero() -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn splat(x: f32) -> Self;
    /// # Safety
    /// See the trait; `p` is valid for reading 16 f32 (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// See the trait; `p` is valid for writing 16 f32 (unaligned).
    unsafe fn store(self, p: *mut f32);
    /// # Safety
    /// See the trait.
    unsafe fn add(self, o: Self) -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn sub(self, o: Self) -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn mul(self, o: Self) -> Self;
    /// The lanes in reverse order.
    ///
    /// # Safety
    /// See the trait.
    unsafe fn rev(self) -> Self;
}

/// What differs between the instruction sets: the vector type, how 16
/// table entries are fetched (integers moved, so the bits cannot differ)
/// and the register blocks of the smoothing products (which change no bits
/// either).
trait Kern {
    type V: V16;

    /// `table[idx[l]]` for every lane.
    ///
    /// # Safety
    /// Every `idx[l] < table.len()`, and the CPU supports the
    /// implementation's instruction set.
    unsafe fn gather(table: &[u32], idx: &[u32; VL]) -> [u32; VL];

    /// [`elastic_field`] with this set's register blocks.
    ///
    /// # Safety
    /// The CPU supports the implementation's instruction set.
    unsafe fn field(plan: &ElasticPlan, shape: &ImageShape, key: u64, s: &mut Scratch);

    /// [`fill_noise`] (an implementation may spell it out in intrinsics;
    /// the values are integers and exact conversions, the same bits).
    ///
    /// # Safety
    /// The CPU supports the implementation's instruction set.
    #[inline(always)]
    unsafe fn noise(key: u64, out: &mut [f32]) {
        fill_noise(key, out)
    }
}

/// The portable path: arrays and scalar loads (the compiler vectorises the
/// array loops for the target's baseline).
struct Portable;

#[derive(Clone, Copy)]
struct P16([f32; VL]);

impl V16 for P16 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        P16([0.0; VL])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        P16([x; VL])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable f32 at `p`.
        P16(unsafe { p.cast::<[f32; VL]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable f32 at `p`.
        unsafe { p.cast::<[f32; VL]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        P16(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        P16(std::array::from_fn(|l| self.0[l] - o.0[l]))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        P16(std::array::from_fn(|l| self.0[l] * o.0[l]))
    }
    #[inline(always)]
    unsafe fn rev(self) -> Self {
        P16(std::array::from_fn(|l| self.0[VL - 1 - l]))
    }
}

impl Kern for Portable {
    type V = P16;

    /// # Safety
    /// As [`Kern::gather`].
    #[inline(always)]
    unsafe fn gather(table: &[u32], idx: &[u32; VL]) -> [u32; VL] {
        let mut q = [0u32; VL];
        for l in 0..VL {
            // SAFETY: the caller guarantees `idx[l] < table.len()`.
            q[l] = unsafe { *table.get_unchecked(idx[l] as usize) };
        }
        q
    }

    /// Sixteen 128-bit registers (SSE2), four per vector: small blocks.
    ///
    /// # Safety
    /// None beyond the target's baseline.
    #[inline(always)]
    unsafe fn field(plan: &ElasticPlan, shape: &ImageShape, key: u64, s: &mut Scratch) {
        // SAFETY: P16 needs nothing beyond the baseline.
        unsafe { elastic_field::<Self, 1, 1, 2>(plan, shape, key, s) }
    }
}

/// Source coordinates of [`VL`] consecutive output pixels.
trait Coords {
    fn at(&self, p0: usize, sx: &mut [f32; VL], sy: &mut [f32; VL]);
}

struct AffineCoords<'a> {
    gx: &'a [f32],
    gy: &'a [f32],
    m: [f32; 6],
}

impl Coords for AffineCoords<'_> {
    #[inline(always)]
    fn at(&self, p0: usize, sx: &mut [f32; VL], sy: &mut [f32; VL]) {
        let gx: &[f32; VL] = self.gx[p0..p0 + VL].try_into().unwrap();
        let gy: &[f32; VL] = self.gy[p0..p0 + VL].try_into().unwrap();
        let [m00, m01, m02, m10, m11, m12] = self.m;
        for l in 0..VL {
            sx[l] = (m00 * gx[l] + m01 * gy[l]) + m02;
            sy[l] = (m10 * gx[l] + m11 * gy[l]) + m12;
        }
    }
}

struct FieldCoords<'a> {
    gx: &'a [f32],
    gy: &'a [f32],
    dx: &'a [f32],
    dy: &'a [f32],
}

impl Coords for FieldCoords<'_> {
    #[inline(always)]
    fn at(&self, p0: usize, sx: &mut [f32; VL], sy: &mut [f32; VL]) {
        let gx: &[f32; VL] = self.gx[p0..p0 + VL].try_into().unwrap();
        let gy: &[f32; VL] = self.gy[p0..p0 + VL].try_into().unwrap();
        let dx: &[f32; VL] = self.dx[p0..p0 + VL].try_into().unwrap();
        let dy: &[f32; VL] = self.dy[p0..p0 + VL].try_into().unwrap();
        for l in 0..VL {
            sx[l] = gx[l] + dx[l];
            sy[l] = gy[l] + dy[l];
        }
    }
}

/// Pixels (y, c0−1+l) and (y, c0+l) for l < 16 of one plane, 0 outside the
/// plane (not yet outside the row: the caller masks those lanes). Read
/// straight from the caller's pixels: a padded copy written just before
/// would be read back at other offsets than it was written, which stalls
/// store forwarding.
#[inline(always)]
fn row_pair(plane: &[u8], h: usize, w: usize, y: isize, c0: usize) -> ([u8; VL], [u8; VL]) {
    if y < 0 || y >= h as isize {
        return ([0u8; VL], [0u8; VL]);
    }
    let start = y as usize * w + c0;
    if start >= 1 && start + VL <= plane.len() {
        (
            plane[start - 1..start - 1 + VL].try_into().unwrap(),
            plane[start..start + VL].try_into().unwrap(),
        )
    } else {
        row_pair_edge(plane, start)
    }
}

/// [`row_pair`] at the first and last cells of the plane, element by
/// element. Out of line, so that the common case stays two plain loads
/// (inlined, the compiler merges both cases into byte inserts).
#[cold]
#[inline(never)]
fn row_pair_edge(plane: &[u8], start: usize) -> ([u8; VL], [u8; VL]) {
    let (mut a, mut b) = ([0u8; VL], [0u8; VL]);
    for l in 0..VL {
        let at = start + l;
        if at >= 1 && at - 1 < plane.len() {
            a[l] = plane[at - 1];
        }
        if at < plane.len() {
            b[l] = plane[at];
        }
    }
    (a, b)
}

/// Builds the quads of one plane: `quads[r·(W+2) + c]` packs the pixels
/// (r−1, c−1), (r−1, c), (r, c−1), (r, c) as bytes 0..3, each 0 outside the
/// image.
#[inline(always)]
fn build_quads(shape: &ImageShape, plane: &[u8], quads: &mut [u32]) {
    let (h, w) = (shape.height, shape.width);
    let qw = w + 2;
    assert!(plane.len() == h * w && quads.len() >= (h + 2) * qw + VL);
    // Chunks of VL cells, the last chunk first, each down the rows: a
    // chunk's last vector runs into the next row's first cells, which the
    // passes over the earlier chunks write afterwards. Going down the rows
    // carries each image row from the cells below it to those above.
    for c0 in (0..qw).step_by(VL).rev() {
        // Lanes whose column (c0−1+l for the left pixels, c0+l for the
        // right ones) lies outside 0..W read a neighbouring row: masked to
        // zero, on whole u32 lanes (byte-wise selects come out scalar).
        let [ml, mr] = quad_masks(w, c0);
        let mut top = [0u32; VL];
        for r in 0..h + 2 {
            let (a, b) = row_pair(plane, h, w, r as isize, c0);
            let mut pair = [0u32; VL];
            for l in 0..VL {
                pair[l] = (u32::from(a[l]) & ml[l]) | (u32::from(b[l]) & mr[l]) << 8;
            }
            let mut q = [0u32; VL];
            for l in 0..VL {
                q[l] = top[l] | pair[l] << 16;
            }
            let at = r * qw + c0;
            *<&mut [u32; VL]>::try_from(&mut quads[at..at + VL]).unwrap() = q;
            top = pair;
        }
    }
}

/// The lane masks of quad chunk `c0`: left pixels (column c0−1+l) and right
/// pixels (column c0+l), 0xff inside 0..W, else 0.
#[inline(always)]
fn quad_masks(w: usize, c0: usize) -> [[u32; VL]; 2] {
    let mut m = [[0u32; VL]; 2];
    for l in 0..VL {
        let col = c0 + l;
        m[0][l] = if (1..=w).contains(&col) { 0xff } else { 0 };
        m[1][l] = if col < w { 0xff } else { 0 };
    }
    m
}

/// Bilinear resampling of every plane at the coordinates `coords` gives.
///
/// # Safety
/// The CPU supports `G`'s instruction set.
#[inline(always)]
unsafe fn resample<G: Kern, C: Coords, S: Sink>(
    shape: &ImageShape,
    coords: &C,
    src: &[u8],
    sink: &mut S,
    quads: &mut [u32],
    taps: Taps<'_>,
) {
    let (h, w) = (shape.height, shape.width);
    let plane = shape.plane();
    let qw = w + 2;
    let (xmax, ymax) = (w as f32, h as f32);
    let (qxmax, qymax) = (w as i32 + 1, h as i32 + 1);
    // Every index below is ≤ (H+1)·(W+2) + W+1 < (H+2)·(W+2).
    assert!(quads.len() >= (h + 2) * qw);
    let padded_plane = round_up(plane, VL);
    let Taps { idx, fx, fy } = taps;
    assert!(idx.len() >= padded_plane && fx.len() >= padded_plane && fy.len() >= padded_plane);

    let cells = Cells {
        xmax,
        ymax,
        qxmax,
        qymax,
        qw: qw as i32,
    };
    if shape.channels == 1 {
        // One plane: cells, gathers and blends in one pass.
        build_quads(shape, src, quads);
        for p0 in (0..plane).step_by(VL) {
            let (mut sx, mut sy) = ([0f32; VL], [0f32; VL]);
            coords.at(p0, &mut sx, &mut sy);
            let (i, wx, wy) = cells.of(&sx, &sy);
            // SAFETY: every index is below (H+2)·(W+2) ≤ quads.len() (the
            // clamps in `Cells::of`, asserted above); the caller
            // guarantees G's instruction set.
            let q = unsafe { G::gather(quads, &i) };
            store(sink, p0, plane, || blend(&q, &wx, &wy));
        }
        return;
    }
    // Several planes: the cells and weights once, kept in `taps`...
    for p0 in (0..plane).step_by(VL) {
        let (mut sx, mut sy) = ([0f32; VL], [0f32; VL]);
        coords.at(p0, &mut sx, &mut sy);
        let (i, wx, wy) = cells.of(&sx, &sy);
        idx[p0..p0 + VL].copy_from_slice(&i);
        fx[p0..p0 + VL].copy_from_slice(&wx);
        fy[p0..p0 + VL].copy_from_slice(&wy);
    }
    // ... then per plane, the gathers and the blends.
    for c in 0..shape.channels {
        build_quads(shape, &src[c * plane..][..plane], quads);
        for p0 in (0..plane).step_by(VL) {
            let i: &[u32; VL] = idx[p0..p0 + VL].try_into().unwrap();
            let wx: [f32; VL] = fx[p0..p0 + VL].try_into().unwrap();
            let wy: [f32; VL] = fy[p0..p0 + VL].try_into().unwrap();
            // SAFETY: as above.
            let q = unsafe { G::gather(quads, i) };
            store(sink, c * plane + p0, c * plane + plane, || {
                blend(&q, &wx, &wy)
            });
        }
    }
}

/// The clamps and the cell geometry of one shape.
struct Cells {
    xmax: f32,
    ymax: f32,
    qxmax: i32,
    qymax: i32,
    qw: i32,
}

impl Cells {
    /// The quad cell and the weights of 16 source points.
    #[inline(always)]
    fn of(&self, sx: &[f32; VL], sy: &[f32; VL]) -> ([u32; VL], [f32; VL], [f32; VL]) {
        let mut i = [0u32; VL];
        let (mut wx, mut wy) = ([0f32; VL], [0f32; VL]);
        for l in 0..VL {
            // Clamping to [−1, W] keeps zero fill exact: a point at or
            // beyond one pixel outside lands on the zero border with weight
            // 1. NaN compares false and becomes −1 (unreachable with
            // validated parameters, but the index stays in bounds); ±∞
            // clamp too. One max and one min instruction each.
            let x = if sx[l] >= -1.0 { sx[l] } else { -1.0 };
            let x = if x < self.xmax { x } else { self.xmax } + 1.0;
            let y = if sy[l] >= -1.0 { sy[l] } else { -1.0 };
            let y = if y < self.ymax { y } else { self.ymax } + 1.0;
            // x, y ∈ [0, W+1] × [0, H+1] whatever sx, sy were, so
            // truncation is floor and the index is in bounds.
            // SAFETY: both are finite and far inside i32.
            let (ix, iy) = unsafe { (x.to_int_unchecked::<i32>(), y.to_int_unchecked::<i32>()) };
            wx[l] = x - ix as f32;
            wy[l] = y - iy as f32;
            debug_assert!((0..=self.qxmax).contains(&ix) && (0..=self.qymax).contains(&iy));
            i[l] = (iy * self.qw + ix) as u32;
        }
        (i, wx, wy)
    }
}

/// The bilinear blends of 16 quads: `top + fy·(bottom − top)` with
/// `top = a + fx·(b − a)`, `bottom = c + fx·(d − c)`.
#[inline(always)]
fn blend(q: &[u32; VL], wx: &[f32; VL], wy: &[f32; VL]) -> [f32; VL] {
    let mut v = [0f32; VL];
    for l in 0..VL {
        let a = (q[l] & 0xff) as i32 as f32;
        let b = ((q[l] >> 8) & 0xff) as i32 as f32;
        let c = ((q[l] >> 16) & 0xff) as i32 as f32;
        let d = (q[l] >> 24) as i32 as f32;
        let top = a + wx[l] * (b - a);
        let bot = c + wx[l] * (d - c);
        v[l] = top + wy[l] * (bot - top);
    }
    v
}

/// Stores, at `at`, the 16 values `values()` returns, or the part of them
/// before `end`. They are computed inside each branch because, computed
/// before it, rustc 1.95 sent them through the stack for the out-of-line
/// tail store and the full store read them back (in `perf annotate`, the
/// resampling loop's busiest instruction was the conversion after that
/// reload); kept in registers, the AVX-512 elastic and affine kernels take
/// 8–9% less time (AVX2 3–4%).
#[inline(always)]
fn store<S: Sink>(sink: &mut S, at: usize, end: usize, values: impl FnOnce() -> [f32; VL]) {
    if at + VL <= end {
        sink.store(at, &values());
    } else {
        sink.store_tail(at, &values(), end - at);
    }
}

/// The bilinear cells and weights of one sample's output pixels (flat,
/// padded to [`VL`]).
struct Taps<'a> {
    idx: &'a mut [u32],
    fx: &'a mut [f32],
    fy: &'a mut [f32],
}

// ---------------------------------------------------------------------------
// The elastic field
// ---------------------------------------------------------------------------

/// `out[i][l] = Σ_k a[i][k] · b[k][l]` for `rows` rows of `a`, `a_stride`
/// apart, and `lanes` lanes of `b` and `out`, in register blocks of `RB`
/// rows × `CB` vectors. k ascends from an accumulator of 0, so every output
/// has one fixed sequence of operations whatever the blocking.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
///
/// # Panics
/// Unless `RB` divides `rows`, `CB·VL` divides `lanes`, `kdim ≤ a_stride`
/// and the slices are long enough.
#[inline(always)]
unsafe fn gemm_bcast<V: V16, const RB: usize, const CB: usize>(
    a: &[f32],
    a_stride: usize,
    kdim: usize,
    rows: usize,
    b: &[f32],
    lanes: usize,
    out: &mut [f32],
) {
    assert!(rows.is_multiple_of(RB) && lanes.is_multiple_of(CB * VL) && kdim <= a_stride);
    assert!(rows == 0 || a.len() >= (rows - 1) * a_stride + kdim);
    assert!(b.len() >= kdim * lanes && out.len() >= rows * lanes);
    // SAFETY: the caller guarantees V's instruction set. Reads of b are at
    // k·lanes + c + j·VL with k < kdim and c + CB·VL ≤ lanes, so inside
    // b[..kdim·lanes]; reads of a are at (i+r)·a_stride + k with
    // i + r < rows and k < kdim ≤ a_stride, so below
    // (rows−1)·a_stride + kdim; writes of out are inside out[..rows·lanes].
    // All asserted above.
    unsafe {
        for i in (0..rows).step_by(RB) {
            for c in (0..lanes).step_by(CB * VL) {
                let mut acc = [[V::zero(); CB]; RB];
                for k in 0..kdim {
                    let bp = b.as_ptr().add(k * lanes + c);
                    let mut x = [V::zero(); CB];
                    for j in 0..CB {
                        x[j] = V::load(bp.add(j * VL));
                    }
                    for r in 0..RB {
                        let g = V::splat(*a.get_unchecked((i + r) * a_stride + k));
                        for j in 0..CB {
                            acc[r][j] = acc[r][j].add(g.mul(x[j]));
                        }
                    }
                }
                for r in 0..RB {
                    for j in 0..CB {
                        let at = (i + r) * lanes + c + j * VL;
                        acc[r][j].store(out.as_mut_ptr().add(at));
                    }
                }
            }
        }
    }
}

/// `sum[l] = a[l] + b[l]`, `diff[l] = a[l] − b[l]` for `l < n`, a multiple
/// of [`VL`].
///
/// # Safety
/// The CPU supports `V`'s instruction set.
///
/// # Panics
/// If a slice is shorter than `n`.
#[inline(always)]
unsafe fn add_sub<V: V16>(a: &[f32], b: &[f32], sum: &mut [f32], diff: &mut [f32], n: usize) {
    assert!(
        n.is_multiple_of(VL) && a.len() >= n && b.len() >= n && sum.len() >= n && diff.len() >= n
    );
    for c in (0..n).step_by(VL) {
        // SAFETY: c + VL ≤ n ≤ every length (asserted); the caller
        // guarantees V's instruction set.
        unsafe {
            let x = V::load(a.as_ptr().add(c));
            let y = V::load(b.as_ptr().add(c));
            x.add(y).store(sum.as_mut_ptr().add(c));
            x.sub(y).store(diff.as_mut_ptr().add(c));
        }
    }
}

/// Noise, then the two smoothing passes, into `s.dx` and `s.dy`. The
/// register blocks (rows `VRB` × vectors `VCB` in the vertical products,
/// rows `HRB` in the horizontal ones, each dividing [`ROW_PAD`]) suit each
/// instruction set's register count; they do not change the bits.
///
/// # Safety
/// The CPU supports `K`'s instruction set.
#[inline(always)]
unsafe fn elastic_field<K: Kern, const VRB: usize, const VCB: usize, const HRB: usize>(
    plan: &ElasticPlan,
    shape: &ImageShape,
    key: u64,
    s: &mut Scratch,
) {
    let d = Dims::new(plan, shape);
    let Dims {
        h,
        w,
        wp,
        lanes,
        hs,
        h_rows,
    } = d;
    let hw = h * w;

    // 1. The noise, flat: dx rows then dy rows, W apart.
    let gen = round_up(2 * hw, UNIFORMS_PER_STEP);
    // SAFETY: K's instruction set (the caller's guarantee).
    unsafe { K::noise(key, &mut s.noise[..gen]) };

    // 2. Vertical fold: rows k and H−1−k of both fields, WP lanes each
    // (lanes past W hold the next row's noise; lanes never mix in this
    // pass, and the horizontal pass reads only the first W).
    let noise = &s.noise[..];
    let row = |f: usize, k: usize| -> &[f32] { &noise[f * hw + k * w..][..wp] };
    let (vh, vh1) = (plan.v_half, plan.v_h1);
    if plan.fast {
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe { elastic_fast::<K, VRB, VCB, HRB>(plan, h, w, s) };
        return;
    }
    for k in 0..vh {
        for f in 0..2 {
            let at = k * lanes + f * wp;
            // SAFETY: K's instruction set (the caller's guarantee).
            unsafe {
                add_sub::<K::V>(
                    row(f, k),
                    row(f, h - 1 - k),
                    &mut s.v_sum[at..at + wp],
                    &mut s.v_diff[at..at + wp],
                    wp,
                );
            }
        }
    }
    if vh1 > vh {
        for f in 0..2 {
            s.v_sum[vh * lanes + f * wp..][..wp].copy_from_slice(row(f, vh));
        }
    }

    // 3. Vertical products, then the unfold: y[i] = P[i] + M[i],
    // y[H−1−i] = P[i] − M[i], y[middle] = P[middle].
    // Both fields side by side are 2·WP lanes, a multiple of 2·VL.
    let (vrows_p, vrows_m) = (round_up(vh1, VRB), round_up(vh, VRB));
    if lanes % (VCB * VL) == 0 {
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe {
            gemm_bcast::<K::V, VRB, VCB>(&plan.vp, vh1, vh1, vrows_p, &s.v_sum, lanes, &mut s.v_p)
        };
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe {
            gemm_bcast::<K::V, VRB, VCB>(&plan.vm, vh, vh, vrows_m, &s.v_diff, lanes, &mut s.v_m)
        };
    } else {
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe {
            gemm_bcast::<K::V, VRB, 2>(&plan.vp, vh1, vh1, vrows_p, &s.v_sum, lanes, &mut s.v_p)
        };
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe {
            gemm_bcast::<K::V, VRB, 2>(&plan.vm, vh, vh, vrows_m, &s.v_diff, lanes, &mut s.v_m)
        };
    }
    for i in 0..vh {
        let (top, bot) = s.y.split_at_mut((h - 1 - i) * lanes);
        // SAFETY: K's instruction set (the caller's guarantee).
        unsafe {
            add_sub::<K::V>(
                &s.v_p[i * lanes..],
                &s.v_m[i * lanes..],
                &mut top[i * lanes..],
                bot,
                lanes,
            );
        }
    }
    if vh1 > vh {
        s.y[vh * lanes..][..lanes].copy_from_slice(&s.v_p[vh * lanes..][..lanes]);
    }

    // 4. Horizontal fold: lane k pairs with lane h1 + k (the noise order put
    // column W−1−k there). Whole vectors: lanes past the pairs are never
    // read by the products; the middle (odd W) is set after.
    let (hh, hh1) = (plan.h_half, plan.h_h1);
    for f in 0..2 {
        for i in 0..h {
            let r = f * h + i;
            let base = &s.y[i * lanes + f * wp..];
            // SAFETY: K's instruction set (the caller's guarantee).
            unsafe {
                add_sub::<K::V>(
                    base,
                    &base[hh1..],
                    &mut s.h_sum[r * hs..],
                    &mut s.h_diff[r * hs..],
                    hs,
                );
            }
            if hh1 > hh {
                s.h_sum[r * hs + hh] = base[hh];
            }
        }
    }

    // 5. Horizontal products (α folded into the matrices), then the unfold
    // into natural column order: field[j] = P[j] + M[j] (j < h1; M is 0 at
    // the middle), field[W−1−j] = P[j] − M[j] (j < W/2).
    let hl = plan.h_lanes;
    // SAFETY: K's instruction set (the caller's guarantee).
    unsafe { gemm_bcast::<K::V, HRB, 1>(&s.h_sum, hs, hh1, h_rows, &plan.hp, hl, &mut s.h_p) };
    // SAFETY: K's instruction set (the caller's guarantee).
    unsafe { gemm_bcast::<K::V, HRB, 1>(&s.h_diff, hs, hh, h_rows, &plan.hm, hl, &mut s.h_m) };
    // Two phases, so that no load reads a store still in flight at another
    // offset (a store-forwarding stall per row): first every row's sums
    // (`plus`, natural order) and reversed differences (`rev`), then every
    // row assembled from them with lane selects.
    let ps = row_stride(hl);
    let front = hl + VL;
    for r in 0..2 * h {
        let p = &s.h_p[r * hl..][..hl];
        let m = &s.h_m[r * hl..][..hl];
        let plus = &mut s.plus[r * ps..][..ps];
        for c in (0..hl).step_by(VL) {
            let pc: [f32; VL] = p[c..c + VL].try_into().unwrap();
            let mc: [f32; VL] = m[c..c + VL].try_into().unwrap();
            let mut t = [0f32; VL];
            for l in 0..VL {
                t[l] = pc[l] + mc[l];
            }
            plus[c..c + VL].copy_from_slice(&t);
        }
        // rev[front + t] = P[hl−1−t] − M[hl−1−t].
        let rev = &mut s.rev[r * ps..][..ps];
        for c in (0..hl).step_by(VL) {
            let pc: [f32; VL] = p[c..c + VL].try_into().unwrap();
            let mc: [f32; VL] = m[c..c + VL].try_into().unwrap();
            let at = front + hl - c - VL;
            let mut t = [0f32; VL];
            for l in 0..VL {
                t[l] = pc[VL - 1 - l] - mc[VL - 1 - l];
            }
            rev[at..at + VL].copy_from_slice(&t);
        }
    }
    // Column x < h1 is plus[x]; column x ≥ h1 is P[W−1−x] − M[W−1−x], at
    // rev[front + hl − W + x]. Whole vectors: the last one runs into the
    // next row, which is written after it.
    let shift = front + hl - w;
    for f in 0..2 {
        let field = if f == 0 { &mut s.dx } else { &mut s.dy };
        for i in 0..h {
            let r = f * h + i;
            let plus = &s.plus[r * ps..][..ps];
            let rev = &s.rev[r * ps..][..ps];
            for c in (0..w).step_by(VL) {
                let a: [f32; VL] = plus[c..c + VL].try_into().unwrap();
                let b: [f32; VL] = rev[shift + c..shift + c + VL].try_into().unwrap();
                let mut out = [0f32; VL];
                for l in 0..VL {
                    out[l] = if c + l < hh1 { a[l] } else { b[l] };
                }
                *<&mut [f32; VL]>::try_from(&mut field[i * w + c..i * w + c + VL]).unwrap() = out;
            }
        }
    }
}

/// [`elastic_field`] from the noise on, for a [`fast_width`]: each field
/// row's left half (columns `0..W/2`) and right half (columns `W−1` down to
/// `W/2`, the noise order) go to separate vectors in the vertical pass, so
/// the horizontal fold is an add of two aligned vectors; the horizontal
/// products then give columns `0..16` as `P + M` and columns `W−16..W` as
/// `reverse(P − M)` (see [`ElasticPlan::new`]), written straight into the
/// fields.
///
/// # Safety
/// The CPU supports `K`'s instruction set.
#[inline(always)]
unsafe fn elastic_fast<K: Kern, const VRB: usize, const VCB: usize, const HRB: usize>(
    plan: &ElasticPlan,
    h: usize,
    w: usize,
    s: &mut Scratch,
) {
    let hw = h * w;
    let half = w / 2;
    // Lanes of one vertical row: [dx left | dx right | dy left | dy right].
    const LANES: usize = 4 * VL;
    let (vh, vh1) = (plan.v_half, plan.v_h1);
    let noise = &s.noise[..];
    assert!(noise.len() >= 2 * hw - w + half + VL);
    assert!(s.v_sum.len() >= vh1 * LANES && s.v_diff.len() >= vh * LANES);
    // Part `q` (0..4) of row k: field q/2, left (q even) or right half.
    let part = |k: usize, q: usize| (q / 2) * hw + k * w + (q % 2) * half;

    // SAFETY: K's instruction set is the caller's guarantee. Noise reads
    // start at part(k, q) ≤ 2HW − W + W/2 and read VL values: inside the
    // noise (asserted). Writes to v_sum/v_diff are at row k < vh1 (vh),
    // lane < LANES: inside (asserted).
    unsafe {
        for k in 0..vh {
            for q in 0..4 {
                let a = K::V::load(noise.as_ptr().add(part(k, q)));
                let b = K::V::load(noise.as_ptr().add(part(h - 1 - k, q)));
                a.add(b).store(s.v_sum.as_mut_ptr().add(k * LANES + q * VL));
                a.sub(b)
                    .store(s.v_diff.as_mut_ptr().add(k * LANES + q * VL));
            }
        }
        if vh1 > vh {
            for q in 0..4 {
                K::V::load(noise.as_ptr().add(part(vh, q)))
                    .store(s.v_sum.as_mut_ptr().add(vh * LANES + q * VL));
            }
        }
    }

    // Vertical products.
    let (vrows_p, vrows_m) = (round_up(vh1, VRB), round_up(vh, VRB));
    // SAFETY: K's instruction set (the caller's guarantee).
    unsafe {
        gemm_bcast::<K::V, VRB, VCB>(&plan.vp, vh1, vh1, vrows_p, &s.v_sum, LANES, &mut s.v_p);
        gemm_bcast::<K::V, VRB, VCB>(&plan.vm, vh, vh, vrows_m, &s.v_diff, LANES, &mut s.v_m);
    }

    // Vertical unfold fused with the horizontal fold: row i = P + M, row
    // H−1−i = P − M (row `middle` = P); then per field, sum and difference
    // of its left and right vectors.
    assert!(s.v_p.len() >= vh1 * LANES && s.v_m.len() >= vh * LANES);
    assert!(s.h_sum.len() >= 2 * h * VL && s.h_diff.len() >= 2 * h * VL);
    let (hsum, hdiff) = (s.h_sum.as_mut_ptr(), s.h_diff.as_mut_ptr());
    // SAFETY: K's instruction set is the caller's guarantee; rows < vh1
    // of v_p and v_m are in bounds, and every fold writes row
    // (f·H + r)·VL + VL ≤ 2H·VL of h_sum and h_diff (asserted).
    unsafe {
        for i in 0..vh1 {
            let mut p = [K::V::zero(); 4];
            let mut m = [K::V::zero(); 4];
            for q in 0..4 {
                p[q] = K::V::load(s.v_p.as_ptr().add(i * LANES + q * VL));
                if i < vh {
                    m[q] = K::V::load(s.v_m.as_ptr().add(i * LANES + q * VL));
                }
            }
            for f in 0..2 {
                let (pl, pr, ml, mr) = (p[2 * f], p[2 * f + 1], m[2 * f], m[2 * f + 1]);
                if i < vh {
                    let bottom = (f * h + h - 1 - i) * VL;
                    fold_lr::<K::V>(pl.add(ml), pr.add(mr), hsum, hdiff, (f * h + i) * VL);
                    fold_lr::<K::V>(pl.sub(ml), pr.sub(mr), hsum, hdiff, bottom);
                } else {
                    // The middle row of an odd H: P alone.
                    fold_lr::<K::V>(pl, pr, hsum, hdiff, (f * h + i) * VL);
                }
            }
        }
    }

    let hs = VL;
    // Horizontal products and the output: per row block, P and M in
    // registers, then P + M → columns 0..16, reverse(P − M) → W−16..W.
    let rows = 2 * h;
    let (hp, hm) = (&plan.hp[..half * VL], &plan.hm[..half * VL]);
    let (hsum, hdiff) = (&s.h_sum[..], &s.h_diff[..]);
    assert!(hsum.len() >= round_up(rows, HRB) * hs && hdiff.len() >= round_up(rows, HRB) * hs);
    assert!(s.dx.len() >= hw && s.dy.len() >= hw);
    for i in (0..rows).step_by(HRB) {
        // SAFETY: K's instruction set; reads of hp/hm are at k·VL with
        // k < W/2 (their length is W/2·VL); reads of hsum/hdiff at
        // (i+r)·VL + k < round_up(rows, HRB)·VL (asserted).
        let (accp, accm) = unsafe {
            let mut accp = [K::V::zero(); HRB];
            let mut accm = [K::V::zero(); HRB];
            for k in 0..half {
                let x = K::V::load(hp.as_ptr().add(k * VL));
                for r in 0..HRB {
                    let g = K::V::splat(*hsum.get_unchecked((i + r) * hs + k));
                    accp[r] = accp[r].add(g.mul(x));
                }
            }
            for k in 0..half {
                let x = K::V::load(hm.as_ptr().add(k * VL));
                for r in 0..HRB {
                    let g = K::V::splat(*hdiff.get_unchecked((i + r) * hs + k));
                    accm[r] = accm[r].add(g.mul(x));
                }
            }
            (accp, accm)
        };
        for r in 0..HRB.min(rows - i) {
            let row = i + r;
            let (field, y) = if row < h {
                (&mut s.dx, row)
            } else {
                (&mut s.dy, row - h)
            };
            // SAFETY: K's instruction set; y·W + W ≤ HW ≤ field.len()
            // (asserted) and W ≥ 16, so both 16-lane stores are in the row.
            unsafe {
                let base = field.as_mut_ptr().add(y * w);
                accp[r].add(accm[r]).store(base);
                accp[r].sub(accm[r]).rev().store(base.add(w - VL));
            }
        }
    }
}

/// `sum[at..] = l + r`, `diff[at..] = l − r` (one vector each).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `at + VL` is within both
/// buffers.
#[inline(always)]
unsafe fn fold_lr<V: V16>(l: V, r: V, sum: *mut f32, diff: *mut f32, at: usize) {
    // SAFETY: the caller's guarantees.
    unsafe {
        l.add(r).store(sum.add(at));
        l.sub(r).store(diff.add(at));
    }
}

/// Row stride of the unfold buffers for `hl` product lanes: the sums are
/// read up to 2·hl lanes (W ≤ 2·hl); the reversed differences start after
/// `hl + VL` lanes of front slack (W − hl ≤ hl) and are read up to
/// `VL − 1` lanes past their end.
fn row_stride(hl: usize) -> usize {
    2 * hl + 2 * VL
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The entry points per instruction set: the generic code above,
    //! inlined and compiled with each set's features, plus its gathers.

    use super::*;
    use core::arch::x86_64::*;

    /// Two ymm registers.
    #[derive(Clone, Copy)]
    pub(super) struct Y2(__m256, __m256);

    impl V16 for Y2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Y2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Y2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX2 and 16 readable f32 at `p`.
            unsafe { Y2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX2 and 16 writable f32 at `p`.
            unsafe {
                _mm256_storeu_ps(p, self.0);
                _mm256_storeu_ps(p.add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Y2(_mm256_add_ps(self.0, o.0), _mm256_add_ps(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Y2(_mm256_sub_ps(self.0, o.0), _mm256_sub_ps(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe { Y2(_mm256_mul_ps(self.0, o.0), _mm256_mul_ps(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn rev(self) -> Self {
            // SAFETY: the caller guarantees AVX2 (trait contract).
            unsafe {
                let idx = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
                Y2(
                    _mm256_permutevar8x32_ps(self.1, idx),
                    _mm256_permutevar8x32_ps(self.0, idx),
                )
            }
        }
    }

    /// One zmm register.
    #[derive(Clone, Copy)]
    pub(super) struct Z1(__m512);

    impl V16 for Z1 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Z1(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Z1(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F and 16 readable f32 at
            // `p`.
            unsafe { Z1(_mm512_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX-512F and 16 writable f32 at
            // `p`.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Z1(_mm512_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Z1(_mm512_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe { Z1(_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn rev(self) -> Self {
            // SAFETY: the caller guarantees AVX-512F (trait contract).
            unsafe {
                let idx = _mm512_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
                Z1(_mm512_permutexvar_ps(idx, self.0))
            }
        }
    }

    /// AVX2: ymm pairs, gathers of eight lanes.
    pub(super) struct Avx2;

    impl Kern for Avx2 {
        type V = Y2;

        /// # Safety
        /// As [`Kern::gather`] (AVX2).
        #[inline(always)]
        unsafe fn gather(table: &[u32], idx: &[u32; VL]) -> [u32; VL] {
            let mut q = [0u32; VL];
            // SAFETY: the caller guarantees AVX2 and that every index is in
            // bounds of `table`; the loads and stores touch `idx` and `q`,
            // each 16 u32.
            unsafe {
                let base = table.as_ptr().cast::<i32>();
                for h in 0..2 {
                    let i = _mm256_loadu_si256(idx.as_ptr().add(8 * h).cast());
                    let v = _mm256_i32gather_epi32::<4>(base, i);
                    _mm256_storeu_si256(q.as_mut_ptr().add(8 * h).cast(), v);
                }
            }
            q
        }

        /// The generator in ymm registers, spelled out (see
        /// [`Avx512::noise`]): lanes 0..4 and 4..8, two chains.
        ///
        /// # Safety
        /// The CPU supports AVX2.
        #[inline(always)]
        unsafe fn noise(key: u64, out: &mut [f32]) {
            const OFFSET: f32 = 0.5 - (1u32 << 22) as f32;
            let lanes = Lanes::new(key);
            assert!(out.len().is_multiple_of(UNIFORMS_PER_STEP));
            // SAFETY: the caller guarantees AVX2; each half state row is 4
            // u64 (32 bytes) and each chunk 16 f32 (two 8-lane stores).
            unsafe {
                let half = |h: usize| {
                    let w = |i: usize| _mm256_loadu_si256(lanes.s[i].as_ptr().add(4 * h).cast());
                    [w(0), w(1), w(2), w(3)]
                };
                let mut st = [half(0), half(1)];
                let offset = _mm256_set1_ps(OFFSET);
                for chunk in out.chunks_exact_mut(UNIFORMS_PER_STEP) {
                    for h in 0..2 {
                        let [s0, s1, s2, s3] = &mut st[h];
                        let x = _mm256_add_epi64(*s0, *s3);
                        let t = _mm256_slli_epi64::<17>(*s1);
                        *s2 = _mm256_xor_si256(*s2, *s0);
                        *s3 = _mm256_xor_si256(*s3, *s1);
                        *s1 = _mm256_xor_si256(*s1, *s2);
                        *s0 = _mm256_xor_si256(*s0, *s3);
                        *s2 = _mm256_xor_si256(*s2, t);
                        *s3 = _mm256_or_si256(
                            _mm256_slli_epi64::<45>(*s3),
                            _mm256_srli_epi64::<19>(*s3),
                        );
                        let m = _mm256_srli_epi32::<9>(x);
                        let v = _mm256_add_ps(_mm256_cvtepi32_ps(m), offset);
                        _mm256_storeu_ps(chunk.as_mut_ptr().add(8 * h), v);
                    }
                }
            }
        }

        /// Sixteen ymm registers, two per vector: 2 × 2 and 4 × 1 blocks.
        ///
        /// # Safety
        /// The CPU supports AVX2.
        #[inline(always)]
        unsafe fn field(plan: &ElasticPlan, shape: &ImageShape, key: u64, s: &mut Scratch) {
            // SAFETY: the caller guarantees AVX2.
            unsafe { elastic_field::<Self, 2, 2, 4>(plan, shape, key, s) }
        }
    }

    /// AVX-512: zmm registers, gathers of sixteen lanes.
    pub(super) struct Avx512;

    impl Kern for Avx512 {
        type V = Z1;

        /// # Safety
        /// As [`Kern::gather`] (AVX-512F).
        #[inline(always)]
        unsafe fn gather(table: &[u32], idx: &[u32; VL]) -> [u32; VL] {
            let mut q = [0u32; VL];
            // SAFETY: the caller guarantees AVX-512F and that every index is
            // in bounds of `table`; the load and store touch `idx` and `q`,
            // each 16 u32.
            unsafe {
                let i = _mm512_loadu_si512(idx.as_ptr().cast());
                let v = _mm512_i32gather_epi32::<4>(i, table.as_ptr().cast());
                _mm512_storeu_si512(q.as_mut_ptr().cast(), v);
            }
            q
        }

        /// The generator in zmm registers, spelled out: written
        /// element-wise, the compiler narrows the 64-bit lanes and shuffles
        /// them back into order.
        ///
        /// # Safety
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn noise(key: u64, out: &mut [f32]) {
            const OFFSET: f32 = 0.5 - (1u32 << 22) as f32;
            let lanes = Lanes::new(key);
            assert!(out.len().is_multiple_of(UNIFORMS_PER_STEP));
            // SAFETY: the caller guarantees AVX-512F; each state row is 8
            // u64 (64 bytes) and each chunk 16 f32.
            unsafe {
                let [mut s0, mut s1, mut s2, mut s3] =
                    lanes.s.map(|w| _mm512_loadu_si512(w.as_ptr().cast()));
                let offset = _mm512_set1_ps(OFFSET);
                for chunk in out.chunks_exact_mut(UNIFORMS_PER_STEP) {
                    let x = _mm512_add_epi64(s0, s3);
                    let t = _mm512_slli_epi64::<17>(s1);
                    s2 = _mm512_xor_si512(s2, s0);
                    s3 = _mm512_xor_si512(s3, s1);
                    s1 = _mm512_xor_si512(s1, s2);
                    s0 = _mm512_xor_si512(s0, s3);
                    s2 = _mm512_xor_si512(s2, t);
                    s3 = _mm512_rol_epi64::<45>(s3);
                    // Lane j's low and high 32 bits are 32-bit lanes 2j and
                    // 2j+1: the stream order (see `halves`); one 32-bit
                    // shift takes the top 23 bits of both.
                    let m = _mm512_srli_epi32::<9>(x);
                    let v = _mm512_add_ps(_mm512_cvtepi32_ps(m), offset);
                    _mm512_storeu_ps(chunk.as_mut_ptr(), v);
                }
            }
        }

        /// Thirty-two zmm registers: 2 × 4 and 8 × 1 blocks.
        ///
        /// # Safety
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn field(plan: &ElasticPlan, shape: &ImageShape, key: u64, s: &mut Scratch) {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { elastic_field::<Self, 2, 4, 8>(plan, shape, key, s) }
        }
    }

    /// [`deform`] for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn deform_avx2<S: Sink>(
        aug: &Augmenter,
        draw: &Draw,
        src: &[u8],
        sink: S,
        scratch: &mut Scratch,
    ) {
        // SAFETY: this function's features are AVX2 and FMA.
        unsafe { deform::<Avx2, S>(aug, draw, src, sink, scratch) }
    }

    /// [`deform`] for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn deform_avx512<S: Sink>(
        aug: &Augmenter,
        draw: &Draw,
        src: &[u8],
        sink: S,
        scratch: &mut Scratch,
    ) {
        // SAFETY: this function's feature is AVX-512F.
        unsafe { deform::<Avx512, S>(aug, draw, src, sink, scratch) }
    }

    /// [`elastic_field`] for AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn field_avx2(
        plan: &ElasticPlan,
        shape: &ImageShape,
        key: u64,
        s: &mut Scratch,
    ) {
        // SAFETY: this function's features are AVX2 and FMA.
        unsafe { Avx2::field(plan, shape, key, s) }
    }

    /// [`elastic_field`] for AVX-512.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn field_avx512(
        plan: &ElasticPlan,
        shape: &ImageShape,
        key: u64,
        s: &mut Scratch,
    ) {
        // SAFETY: this function's feature is AVX-512F.
        unsafe { Avx512::field(plan, shape, key, s) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_xoshiro::Xoshiro256Plus;

    /// The kernel paths with distinct instruction sets on this CPU.
    fn field_paths() -> Vec<KernelPath> {
        KernelPath::available()
            .into_iter()
            .filter(|p| *p != KernelPath::Gemm)
            .collect()
    }

    #[test]
    fn gemm_matches_a_naive_product_for_every_block_shape() {
        let (rows, kdim, lanes, a_stride) = (8, 13, 64, 16);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut f = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let a: Vec<f32> = (0..rows * a_stride).map(|_| f()).collect();
        let b: Vec<f32> = (0..kdim * lanes).map(|_| f()).collect();
        let mut want = vec![0f32; rows * lanes];
        for i in 0..rows {
            for l in 0..lanes {
                let mut acc = 0f32;
                for k in 0..kdim {
                    acc += a[i * a_stride + k] * b[k * lanes + l];
                }
                want[i * lanes + l] = acc;
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut out = vec![0f32; rows * lanes];
        // SAFETY: P16 needs nothing beyond the baseline.
        unsafe { gemm_bcast::<P16, 1, 1>(&a, a_stride, kdim, rows, &b, lanes, &mut out) };
        assert_eq!(bits(&out), bits(&want));
        out.fill(0.0);
        // SAFETY: as above.
        unsafe { gemm_bcast::<P16, 4, 2>(&a, a_stride, kdim, rows, &b, lanes, &mut out) };
        assert_eq!(bits(&out), bits(&want));
        #[cfg(target_arch = "x86_64")]
        {
            if KernelPath::Avx512.is_available() {
                out.fill(0.0);
                // SAFETY: AVX-512F is available (checked).
                unsafe {
                    gemm_bcast::<x86::Z1, 2, 4>(&a, a_stride, kdim, rows, &b, lanes, &mut out)
                };
                assert_eq!(bits(&out), bits(&want));
                out.fill(0.0);
                // SAFETY: as above.
                unsafe {
                    gemm_bcast::<x86::Z1, 8, 1>(&a, a_stride, kdim, rows, &b, lanes, &mut out)
                };
                assert_eq!(bits(&out), bits(&want));
            }
            if KernelPath::Avx2.is_available() {
                out.fill(0.0);
                // SAFETY: AVX2 is available (checked).
                unsafe {
                    gemm_bcast::<x86::Y2, 2, 2>(&a, a_stride, kdim, rows, &b, lanes, &mut out)
                };
                assert_eq!(bits(&out), bits(&want));
            }
        }
    }

    /// The fast horizontal pass (even W in 16..=32) gives the general
    /// pass's bits exactly: the same products in the same order.
    #[test]
    fn fast_and_general_horizontal_passes_agree_bit_for_bit() {
        for (h, w) in [(28, 28), (7, 16), (32, 32), (9, 20)] {
            let shape = ImageShape {
                channels: 1,
                height: h,
                width: w,
            };
            assert!(fast_width(w));
            for path in field_paths() {
                let fast =
                    Augmenter::with_path(Augment::defaults(AugmentKind::Elastic), shape, path)
                        .unwrap();
                let mut general =
                    Augmenter::with_path(Augment::defaults(AugmentKind::Elastic), shape, path)
                        .unwrap();
                general.elastic.as_mut().unwrap().fast = false;
                let (mut s1, mut s2) = (fast.scratch(), general.scratch());
                for i in 0..5 {
                    let (a, b) = fast.elastic_field(1, 2, i, &mut s1).unwrap();
                    let (c, d) = general.elastic_field(1, 2, i, &mut s2).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(a), bits(c), "{h}×{w} {path} dx {i}");
                    assert_eq!(bits(b), bits(d), "{h}×{w} {path} dy {i}");
                }
            }
        }
    }

    #[test]
    fn lanes_match_rand_xoshiro() {
        let key = sample_key(7, 3, 12345);
        let mut lanes = Lanes::new(key);
        let mut refs: Vec<Xoshiro256Plus> = (0..LANES_RNG as u64)
            .map(|j| Xoshiro256Plus::seed_from_u64(key.wrapping_add(j)))
            .collect();
        for _ in 0..50 {
            let x = lanes.next();
            for j in 0..LANES_RNG {
                assert_eq!(x[j], refs[j].next_u64());
            }
        }
    }

    #[test]
    fn uniforms_are_symmetric_and_exact() {
        assert_eq!(uniform_pm1(0), -1.0 + 2f32.powi(-23));
        assert_eq!(uniform_pm1(u32::MAX), 1.0 - 2f32.powi(-23));
        for bits in [0u32, 1 << 9, 12345 << 9, u32::MAX >> 1, u32::MAX] {
            let m = f64::from(bits >> 9);
            let exact = (m + 0.5) * 2f64.powi(-22) - 1.0;
            assert_eq!(f64::from(uniform_pm1(bits)), exact);
        }
    }
}
