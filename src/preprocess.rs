//! Turning a user's picture into what the model expects, the way MNIST was
//! made (LeCun, Bottou, Bengio, Haffner, 1998): a light digit on a black
//! background, its bounding box scaled to fit a 20 × 20 box (for a 28 × 28
//! input) preserving its aspect ratio, anti-aliased, placed with its centre
//! of mass at the centre of the field.
//!
//! [`prepare`] does, in order:
//!
//! 1. **Luminance and alpha.** A transparent image is composited over a
//!    background that contrasts with its visible pixels: over white when
//!    they are dark on average (black ink on a transparent sheet), over
//!    black otherwise.
//! 2. **Polarity.** The border decides: when the median of the outermost
//!    ring of pixels is light (above one half; more precisely, differs by
//!    more than one half from the border of the model's training images,
//!    [`Options::background`], black for MNIST), the image is inverted, so
//!    the digit is light on dark as in MNIST. [`Options::invert`] overrides.
//! 3. **Normalisation** ([`Mode::Mnist`]): the background level (the
//!    border's median) is subtracted and the contrast stretched so the
//!    brightest ink is 1; faint residue below [`FLOOR`] is cleared; the
//!    bounding box of the pixels above [`INK_THRESHOLD`] is scaled to fit a
//!    `20/28` box of the input size (20 × 20 for 28 × 28), preserving the
//!    aspect ratio, by area averaging (each output pixel is the mean of the
//!    source area it covers: anti-aliased, no ringing); the result is
//!    placed so that its centre of mass (to the nearest pixel) is the
//!    centre of the field.
//!
//! [`Mode::Auto`], the default, uses [`Mode::None`] for an image that is
//! already the model's size and polarity (an MNIST test digit as it is:
//! its pixels go to the model unchanged) and [`Mode::Mnist`] for any other.
//! [`Mode::None`] takes the pixels as they are (after steps 1 and 2) and
//! needs the image to be the model's size.
//!
//! The output is quantised to 8 bits, like the IDX training data: the
//! [`GrayImage`] returned is exactly what the model sees.

use crate::image::{Decoded, GrayImage};

/// Fraction of the field's shorter side the digit's bounding box is
/// scaled to fit: MNIST's 20 pixels of 28.
pub const BOX_FRACTION: f64 = 20.0 / 28.0;
/// A normalised pixel above this is ink, for the bounding box.
pub const INK_THRESHOLD: f32 = 0.25;
/// Normalised values below this are set to 0 (JPEG noise, paper texture).
pub const FLOOR: f32 = 0.1;
/// Less contrast than this between the background and the brightest pixel
/// means the image holds no digit.
pub const MIN_CONTRAST: f32 = 0.1;

/// What [`prepare`] does beyond luminance and polarity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `None` for an image already the model's size and polarity, `Mnist`
    /// for any other.
    #[default]
    Auto,
    /// Normalise, scale and centre as MNIST was made.
    Mnist,
    /// Pixels as they are; the image must be the model's size.
    None,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "mnist" => Ok(Mode::Mnist),
            "none" => Ok(Mode::None),
            _ => Err(format!("'{s}' is not auto, mnist or none")),
        }
    }
}

/// [`prepare`]'s settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options {
    pub mode: Mode,
    /// `Some(true)` always inverts, `Some(false)` never does, `None` lets
    /// the border decide.
    pub invert: Option<bool>,
    /// The typical border of the model's training images, 0 (black, as
    /// MNIST) to 1 (white): an image is inverted when its border differs
    /// from it by more than one half.
    pub background: f32,
}

/// What [`prepare`] made of an image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The model's input, `height × width` 8-bit pixels.
    pub image: GrayImage,
    /// Whether the MNIST normalisation ran ([`Mode::Mnist`], or chosen by
    /// [`Mode::Auto`]).
    pub normalised: bool,
    /// Whether the image was inverted.
    pub inverted: bool,
    /// Whether no ink was found (the input is then all black).
    pub empty: bool,
}

/// Why an image cannot be prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareError {
    WrongSize {
        width: usize,
        height: usize,
        want_width: usize,
        want_height: usize,
    },
}

impl PrepareError {
    /// The message, naming the preprocessing setting by `name`.
    pub fn message(&self, name: crate::setting::Naming<'_>) -> String {
        match self {
            Self::WrongSize {
                width,
                height,
                want_width,
                want_height,
            } => format!(
                "the image is {width}x{height} pixels, but the model takes {want_width}x{want_height} images (use {} mnist to scale it)",
                name(crate::setting::Setting::Preprocess)
            ),
        }
    }
}

crate::setting::worded_error!(PrepareError);

/// Prepares `img` for a model taking `height × width` inputs; see the
/// module documentation.
pub fn prepare(
    img: &Decoded,
    height: usize,
    width: usize,
    opts: &Options,
) -> Result<Prepared, PrepareError> {
    let (w, h) = (img.width, img.height);
    let mut g = luminance(img);
    let inverted = opts
        .invert
        .unwrap_or_else(|| (median(border(&g, w, h)) - opts.background).abs() > 0.5);
    if inverted {
        for v in &mut g {
            *v = 1.0 - *v;
        }
    }
    let same_size = (w, h) == (width, height);
    let normalise = match opts.mode {
        Mode::Mnist => true,
        Mode::None => false,
        Mode::Auto => !same_size || inverted,
    };
    if !normalise {
        if !same_size {
            return Err(PrepareError::WrongSize {
                width: w,
                height: h,
                want_width: width,
                want_height: height,
            });
        }
        let empty = g.iter().all(|&v| v < 0.5 / 255.0);
        return Ok(Prepared {
            image: quantise(&g, width, height),
            normalised: false,
            inverted,
            empty,
        });
    }
    let (field, empty) = mnist_field(g, w, h, height, width);
    Ok(Prepared {
        image: quantise(&field, width, height),
        normalised: true,
        inverted,
        empty,
    })
}

/// Luminance in [0, 1], alpha composited over a contrasting background
/// (step 1 of the module documentation).
fn luminance(img: &Decoded) -> Vec<f32> {
    const MAX: f32 = 65535.0;
    if !img.has_alpha {
        return img.pixels.iter().map(|p| f32::from(p[0]) / MAX).collect();
    }
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for &[l, a] in &img.pixels {
        sum += f64::from(l) * f64::from(a);
        weight += f64::from(a);
    }
    // Dark visible pixels: composite over white; light ones: over black.
    let background = if weight > 0.0 && sum / weight < 0.5 * f64::from(MAX) {
        1.0
    } else {
        0.0
    };
    img.pixels
        .iter()
        .map(|&[l, a]| {
            let (l, a) = (f32::from(l) / MAX, f32::from(a) / MAX);
            l * a + background * (1.0 - a)
        })
        .collect()
}

/// The outermost ring of pixels.
fn border(g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut ring = Vec::with_capacity(2 * (w + h));
    for x in 0..w {
        ring.push(g[x]);
        if h > 1 {
            ring.push(g[(h - 1) * w + x]);
        }
    }
    for y in 1..h.saturating_sub(1) {
        ring.push(g[y * w]);
        if w > 1 {
            ring.push(g[y * w + w - 1]);
        }
    }
    ring
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Step 3: the normalised, scaled and centred `fh × fw` field, and whether
/// it is empty.
/// Takes the luminance plane by value: it becomes the ink plane in place (a
/// 40-megapixel image holds one plane, not two).
fn mnist_field(mut g: Vec<f32>, w: usize, h: usize, fh: usize, fw: usize) -> (Vec<f32>, bool) {
    let blank = (vec![0.0; fh * fw], true);
    let background = median(border(&g, w, h));
    let peak = g.iter().fold(0.0f32, |m, &v| m.max(v));
    if peak - background < MIN_CONTRAST {
        return blank;
    }
    let span = peak - background;
    for v in &mut g {
        let n = ((*v - background) / span).clamp(0.0, 1.0);
        *v = if n < FLOOR { 0.0 } else { n };
    }
    let ink = g;
    // Bounding box of the ink.
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for (x, &v) in ink[y * w..(y + 1) * w].iter().enumerate() {
            if v > INK_THRESHOLD {
                x0 = x0.min(x);
                x1 = x1.max(x + 1);
                y0 = y0.min(y);
                y1 = y1.max(y + 1);
            }
        }
    }
    if x0 == usize::MAX {
        return blank;
    }
    let (bw, bh) = (x1 - x0, y1 - y0);
    // Fit the box, preserving the aspect ratio.
    let box_w = ((fw as f64 * BOX_FRACTION).round() as usize).max(1);
    let box_h = ((fh as f64 * BOX_FRACTION).round() as usize).max(1);
    let scale = (box_w as f64 / bw as f64).min(box_h as f64 / bh as f64);
    let ow = ((bw as f64 * scale).round() as usize).clamp(1, box_w);
    let oh = ((bh as f64 * scale).round() as usize).clamp(1, box_h);
    // Crop, then area-average: rows, then columns.
    let mut crop = Vec::with_capacity(bw * bh);
    for y in y0..y1 {
        crop.extend_from_slice(&ink[y * w + x0..y * w + x1]);
    }
    let wide = resample_rows(&crop, bw, bh, ow);
    let patch = resample_cols(&wide, ow, bh, oh);
    // Centre of mass, in pixel indices: MNIST's digits have theirs at
    // (14, 14) of 28 x 28 (the mean over the test set is 14.01, 13.99).
    let (mut m, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for y in 0..oh {
        for x in 0..ow {
            let v = f64::from(patch[y * ow + x]);
            m += v;
            mx += v * x as f64;
            my += v * y as f64;
        }
    }
    if m <= 0.0 {
        return blank;
    }
    let dx = ((fw / 2) as f64 - mx / m).round() as isize;
    let dy = ((fh / 2) as f64 - my / m).round() as isize;
    let mut field = vec![0.0f32; fh * fw];
    for y in 0..oh {
        let ty = y as isize + dy;
        if ty < 0 || ty >= fh as isize {
            continue;
        }
        for x in 0..ow {
            let tx = x as isize + dx;
            if tx < 0 || tx >= fw as isize {
                continue;
            }
            field[ty as usize * fw + tx as usize] = patch[y * ow + x];
        }
    }
    (field, false)
}

/// For each of `out` output cells over `n` input cells, the input cells it
/// covers and the weight of each (the covered fraction over the cell's
/// size: the weights of one output sum to 1).
fn area_weights(n: usize, out: usize) -> Vec<Vec<(usize, f32)>> {
    let step = n as f64 / out as f64;
    (0..out)
        .map(|o| {
            let (a, b) = (o as f64 * step, (o + 1) as f64 * step);
            let mut cells = Vec::new();
            let mut i = a.floor() as usize;
            while (i as f64) < b && i < n {
                let cover = (b.min(i as f64 + 1.0) - a.max(i as f64)).max(0.0);
                if cover > 0.0 {
                    cells.push((i, (cover / step) as f32));
                }
                i += 1;
            }
            cells
        })
        .collect()
}

/// Resamples each of the `h` rows of `src` (`w` wide) to `ow` wide.
fn resample_rows(src: &[f32], w: usize, h: usize, ow: usize) -> Vec<f32> {
    let weights = area_weights(w, ow);
    let mut out = Vec::with_capacity(ow * h);
    for row in src.chunks_exact(w) {
        for cells in &weights {
            out.push(cells.iter().map(|&(i, wt)| row[i] * wt).sum());
        }
    }
    out
}

/// Resamples each of the `w` columns of `src` (`h` high) to `oh` high.
fn resample_cols(src: &[f32], w: usize, h: usize, oh: usize) -> Vec<f32> {
    let weights = area_weights(h, oh);
    let mut out = vec![0.0f32; w * oh];
    for (o, cells) in weights.iter().enumerate() {
        let dst = &mut out[o * w..(o + 1) * w];
        for &(i, wt) in cells {
            for (d, s) in dst.iter_mut().zip(&src[i * w..(i + 1) * w]) {
                *d += s * wt;
            }
        }
    }
    out
}

fn quantise(v: &[f32], width: usize, height: usize) -> GrayImage {
    GrayImage {
        width,
        height,
        pixels: v
            .iter()
            .map(|&x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
    }
}

/// What a checkpoint records as `input_background` for a run trained on
/// `samples`: [`typical_background`] of up to 2000 images when they are u8
/// and 2-D, else nothing. `--save` and Python's `save` both use it.
pub fn samples_background(samples: &crate::data::samples::Samples<'_>) -> Option<f32> {
    match (samples.as_u8(), samples.sample_shape()) {
        (Some(px), &[h, w]) => Some(typical_background(px, h, w, 2000)),
        _ => None,
    }
}

/// The typical border of u8 images of `height × width` in `pixels` (one
/// image after another), 0 to 1: the median, over up to `limit` images
/// spread through the set, of each image's border median.
pub fn typical_background(pixels: &[u8], height: usize, width: usize, limit: usize) -> f32 {
    let k = height * width;
    if k == 0 || pixels.len() < k {
        return 0.0;
    }
    let n = pixels.len() / k;
    let step = n.div_ceil(limit.max(1)).max(1);
    let medians: Vec<f32> = (0..n)
        .step_by(step)
        .map(|i| {
            let img: Vec<f32> = pixels[i * k..(i + 1) * k]
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            median(border(&img, width, height))
        })
        .collect();
    median(medians)
}

/// The `(height, width)` inputs a model of `features` features takes: the
/// recorded 2-D sample shape when there is one, else a square of
/// `features` pixels, else none.
pub fn input_shape(recorded: Option<&[usize]>, features: usize) -> Option<(usize, usize)> {
    match recorded {
        Some(&[h, w]) if h * w == features => Some((h, w)),
        _ => {
            let s = (features as f64).sqrt().round() as usize;
            (s * s == features && s > 0).then_some((s, s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(w: usize, h: usize, f: impl Fn(usize, usize) -> [u16; 2]) -> Decoded {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                pixels.push(f(x, y));
            }
        }
        let has_alpha = pixels.iter().any(|p| p[1] != u16::MAX);
        Decoded {
            width: w,
            height: h,
            pixels,
            has_alpha,
            description: "test".into(),
        }
    }

    #[test]
    fn area_weights_sum_to_one_and_cover_the_input() {
        for (n, out) in [(10, 3), (3, 10), (280, 20), (7, 7), (1, 5), (5, 1)] {
            let w = area_weights(n, out);
            assert_eq!(w.len(), out);
            let mut covered = vec![0.0f64; n];
            for cells in &w {
                let s: f32 = cells.iter().map(|c| c.1).sum();
                assert!((s - 1.0).abs() < 1e-5, "{n}->{out}: {s}");
                for &(i, wt) in cells {
                    covered[i] += wt as f64 * n as f64 / out as f64;
                }
            }
            assert!(
                covered.iter().all(|c| (c - 1.0).abs() < 1e-4),
                "{covered:?}"
            );
        }
    }

    #[test]
    fn a_black_square_on_white_is_inverted_scaled_and_centred() {
        // 100x60, white, with a black 30x10 bar off-centre at (5, 40).
        let img = decoded(100, 60, |x, y| {
            let ink = (5..35).contains(&x) && (40..50).contains(&y);
            [if ink { 0 } else { 65535 }, 65535]
        });
        let p = prepare(&img, 28, 28, &Options::default()).unwrap();
        assert!(p.inverted && p.normalised && !p.empty);
        let px = &p.image.pixels;
        // 30x10 fits 20 wide: 20x7 (6.67 rounded), its centre of mass
        // (9.5, 3 in pixel indices) moved to (14, 14): x 5..=24 (4.5 rounds
        // up), y 11..=17.
        let lit: Vec<(usize, usize)> = (0..28 * 28)
            .filter(|&i| px[i] > 0)
            .map(|i| (i % 28, i / 28))
            .collect();
        let xs: Vec<usize> = lit.iter().map(|p| p.0).collect();
        let ys: Vec<usize> = lit.iter().map(|p| p.1).collect();
        assert_eq!(
            (*xs.iter().min().unwrap(), *xs.iter().max().unwrap()),
            (5, 24)
        );
        assert_eq!(
            (*ys.iter().min().unwrap(), *ys.iter().max().unwrap()),
            (11, 17)
        );
        assert_eq!(px[14 * 28 + 14], 255);
    }

    #[test]
    fn transparent_background_with_black_ink_is_not_empty() {
        // Black ink (luminance 0) opaque on a fully transparent sheet
        // whose hidden colour is black too.
        let img = decoded(40, 40, |x, y| {
            let ink = (15..25).contains(&x) && (5..35).contains(&y);
            [0, if ink { 65535 } else { 0 }]
        });
        let p = prepare(&img, 28, 28, &Options::default()).unwrap();
        assert!(!p.empty && p.inverted);
        assert_eq!(p.image.pixels[14 * 28 + 14], 255);
        assert_eq!(p.image.pixels[0], 0);
    }

    #[test]
    fn an_mnist_sized_dark_image_passes_unchanged() {
        let img = decoded(28, 28, |x, y| [((x * y) % 7 * 257) as u16, 65535]);
        let p = prepare(&img, 28, 28, &Options::default()).unwrap();
        assert!(!p.normalised && !p.inverted);
        assert_eq!(p.image, img.to_gray_over_black());
        // --no-invert on a light image keeps it as it is with `none`...
        let light = decoded(28, 28, |_, _| [65535, 65535]);
        let opts = Options {
            mode: Mode::None,
            invert: Some(false),
            ..Options::default()
        };
        let p = prepare(&light, 28, 28, &opts).unwrap();
        assert!(p.image.pixels.iter().all(|&v| v == 255));
        // ... and a wrong size with `none` is refused.
        let e = prepare(&decoded(30, 28, |_, _| [0, 65535]), 28, 28, &opts).unwrap_err();
        assert!(e.to_string().contains("30x28"), "{e}");
    }

    #[test]
    fn blank_and_flat_images_are_empty() {
        for v in [0u16, 30000, 65535] {
            let p = prepare(
                &decoded(50, 50, |_, _| [v, 65535]),
                28,
                28,
                &Options::default(),
            );
            let p = p.unwrap();
            assert!(p.empty, "{v}");
            assert!(p.image.pixels.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn other_input_sizes_use_the_same_ratio() {
        let img = decoded(200, 200, |x, y| {
            [
                if (50..150).contains(&x) && (20..180).contains(&y) {
                    65535
                } else {
                    0
                },
                65535,
            ]
        });
        let p = prepare(
            &img,
            56,
            56,
            &Options {
                mode: Mode::Mnist,
                ..Options::default()
            },
        )
        .unwrap();
        let rows: Vec<usize> = (0..56)
            .filter(|&y| p.image.pixels[y * 56 + 28] > 0)
            .collect();
        assert_eq!(rows.len(), 40, "{rows:?}");
        assert_eq!(input_shape(Some(&[20, 30]), 600), Some((20, 30)));
        assert_eq!(input_shape(None, 784), Some((28, 28)));
        assert_eq!(input_shape(None, 10), None);
    }
}
