//! Images in and out: grayscale inputs to classify, and the picture of what
//! the model learned.
//!
//! # Reading
//!
//! [`read_gray`] accepts, detected by content (the magic bytes), never by
//! file name:
//!
//! * **PNG**, grayscale at 8 bits (or 1, 2 or 4 bits, scaled to 0–255), with
//!   or without alpha. Alpha (an alpha channel or a `tRNS` transparent grey)
//!   is composited over **black**, MNIST's background: a transparent pixel
//!   reads as 0, an opaque one as its grey value. 16-bit, RGB, RGBA and
//!   palette PNGs are refused with a message saying what the file is.
//! * **PGM**, binary (`P5`) or ASCII (`P2`), with a maxval from 1 to 255;
//!   samples are scaled to 0–255 when maxval is not 255. `#` comments are
//!   allowed between header fields (and, leniently, between `P2` samples).
//!   Only the first image of a multi-image `P5` stream is read.
//!
//! Anything else (JPEG, GIF, colour PPM, …) gets a one-line [`ImageError`]
//! naming the file and listing the accepted formats. Width and height are
//! capped at [`MAX_DIM`], and the pixel count is checked against the file's
//! size (for PNG, through deflate's maximum compression ratio) before any
//! pixel buffer is allocated. No input makes these functions panic.
//!
//! # Writing
//!
//! [`write_gray_png`] and [`write_rgb_png`] write 8-bit PNGs atomically (a
//! temporary file in the same directory, synced, then renamed; see
//! [`write_atomic`]). [`weights_png`] draws a model's weight templates.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;
use crate::nn::Network;

/// Largest width or height [`read_gray`] accepts.
pub const MAX_DIM: usize = 16384;
/// Output pixels per template pixel in [`weights_png`].
pub const WEIGHTS_SCALE: usize = 4;
/// Most templates per row in [`weights_png`]; more classes wrap onto further
/// rows.
pub const WEIGHTS_PER_ROW: usize = 10;
/// Largest scale [`render_weights`] accepts.
pub const MAX_SCALE: usize = 64;
/// The colour of the gaps between templates: mid grey, distinct from the
/// white of a zero weight.
pub const GAP_RGB: [u8; 3] = [128, 128, 128];
/// The colour of the most positive weight of a template.
pub const POSITIVE_RGB: [u8; 3] = [178, 24, 43];
/// The colour of the most negative weight of a template.
pub const NEGATIVE_RGB: [u8; 3] = [33, 102, 172];

/// The formats [`read_gray`] reads, for error messages.
const ACCEPTED: &str =
    "accepted: 8-bit grayscale PNG, or PGM (binary P5 or ASCII P2) with maxval <= 255";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// An upper bound on deflate's compression ratio (its maximum is about
/// 1032:1).
const DEFLATE_MAX_RATIO: u64 = 1040;
/// Largest PGM file read into memory: the largest ASCII image (up to 3
/// digits and a separator per pixel) plus room for a header.
const MAX_PGM_BYTES: u64 = (MAX_DIM * MAX_DIM * 4 + (1 << 16)) as u64;

/// An 8-bit grayscale image, row-major, one byte per pixel (0 = black).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    /// `width × height` bytes, row by row.
    pub pixels: Vec<u8>,
}

impl GrayImage {
    /// The pixels as model features, scaled to [0, 1] by
    /// [`crate::dataset::U8_SCALE`] as the training data is.
    pub fn features(&self) -> Vec<f32> {
        self.pixels
            .iter()
            .map(|&p| f32::from(p) * crate::dataset::U8_SCALE)
            .collect()
    }
}

/// An 8-bit RGB image, row-major, three bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `width × height × 3` bytes, row by row, R G B.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// The colour at column `x`, row `y`, or `None` outside the image.
    pub fn get(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        let p = self.pixels.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }
}

/// The size of a written image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

/// A failure to read or write an image. Each message is one line and names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// Not a format [`read_gray`] reads.
    #[error("{}: {what} is not supported; {ACCEPTED}", path.display())]
    UnsupportedFormat { path: PathBuf, what: String },
    /// A PNG, but not a grayscale one of 8 bits or fewer.
    #[error("{}: the PNG is {what}; it must be 8-bit grayscale", path.display())]
    UnsupportedPng { path: PathBuf, what: String },
    /// A PGM this reader does not take (16-bit).
    #[error("{}: the PGM is {what}; {ACCEPTED}", path.display())]
    UnsupportedPgm { path: PathBuf, what: String },
    /// Wider or taller than [`MAX_DIM`].
    #[error("{}: the image is {width}x{height}; the limit is {MAX_DIM}x{MAX_DIM}", path.display())]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
    },
    /// A PNG or PGM that is malformed or ends early.
    #[error("{}: corrupt or truncated {format}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    /// An image or model that cannot be written as asked; nothing was
    /// written.
    #[error("{}: cannot write image: {reason}", path.display())]
    InvalidInput { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |error| ImageError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Reads an 8-bit grayscale image from a PNG or PGM file; see the module
/// documentation for what is accepted and how.
pub fn read_gray(path: &Path) -> Result<GrayImage, ImageError> {
    // Refuses FIFOs and devices before opening (a FIFO would block).
    let (mut file, meta) = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(crate::fsutil::InputError::Directory) => return Err(unsupported(path, "a directory")),
        Err(e) => return Err(io_error(path)(e.into())),
    };
    let mut magic = [0u8; 8];
    let got = crate::fsutil::read_up_to(&mut file, &mut magic).map_err(io_error(path))?;
    let magic = &magic[..got];
    if magic.starts_with(PNG_MAGIC) {
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        return read_png(path, file, meta.len());
    }
    if magic.starts_with(b"P5") || magic.starts_with(b"P2") {
        if meta.len() > MAX_PGM_BYTES {
            return Err(ImageError::Corrupt {
                path: path.to_owned(),
                format: "PGM",
                reason: format!(
                    "the file is {} bytes, more than any image up to {MAX_DIM}x{MAX_DIM} needs",
                    meta.len()
                ),
            });
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        file.take(MAX_PGM_BYTES)
            .read_to_end(&mut data)
            .map_err(io_error(path))?;
        return parse_pgm(path, &data);
    }
    Err(unsupported(path, identify(magic)))
}

fn unsupported(path: &Path, what: &str) -> ImageError {
    ImageError::UnsupportedFormat {
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

/// Names a format from its first bytes, for the error message.
fn identify(magic: &[u8]) -> &'static str {
    match magic {
        [] => "an empty file",
        [0xFF, 0xD8, 0xFF, ..] => "JPEG",
        [b'G', b'I', b'F', b'8', ..] => "GIF",
        [b'B', b'M', ..] => "BMP",
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => "TIFF",
        [b'R', b'I', b'F', b'F', ..] => "a RIFF file (WebP?)",
        [b'P', b'1' | b'4', ..] => "PBM (bitmap)",
        [b'P', b'3' | b'6', ..] => "PPM (colour)",
        [b'P', b'7', ..] => "PAM",
        [0, 0, 0x08, 0x01 | 0x03, ..] => "an IDX file (a whole dataset, not one image)",
        [0x1F, 0x8B, ..] => "a gzip file",
        _ => "an unknown format",
    }
}

fn check_dims(path: &Path, width: u64, height: u64) -> Result<(usize, usize), ImageError> {
    if width > MAX_DIM as u64 || height > MAX_DIM as u64 {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            width,
            height,
        });
    }
    Ok((width as usize, height as usize))
}

fn read_png(path: &Path, file: File, file_len: u64) -> Result<GrayImage, ImageError> {
    use png::{BitDepth, ColorType, Transformations};

    let corrupt = |e: png::DecodingError| match e {
        png::DecodingError::IoError(error) if error.kind() != io::ErrorKind::UnexpectedEof => {
            ImageError::Io {
                path: path.to_owned(),
                error,
            }
        }
        e => ImageError::Corrupt {
            path: path.to_owned(),
            format: "PNG",
            reason: e.to_string(),
        },
    };
    // Enough for the largest accepted image with alpha, plus the decoder's
    // own buffers.
    let limits = png::Limits {
        bytes: 2 * MAX_DIM * MAX_DIM + (16 << 20),
    };
    let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), limits);
    decoder.set_transformations(Transformations::EXPAND);
    let info = decoder.read_header_info().map_err(corrupt)?;
    let (color, depth) = (info.color_type, info.bit_depth);
    let (width, height) = (u64::from(info.width), u64::from(info.height));
    let what = match (color, depth) {
        (ColorType::Grayscale | ColorType::GrayscaleAlpha, BitDepth::Sixteen) => {
            Some("16-bit grayscale")
        }
        (ColorType::Rgb, _) => Some("RGB (colour)"),
        (ColorType::Rgba, _) => Some("RGBA (colour)"),
        (ColorType::Indexed, _) => Some("palette-indexed (colour)"),
        _ => None,
    };
    if let Some(what) = what {
        return Err(ImageError::UnsupportedPng {
            path: path.to_owned(),
            what: what.to_owned(),
        });
    }
    let (width, height) = check_dims(path, width, height)?;
    // Deflate cannot compress better than about 1032:1, so a small file that
    // claims a large image is corrupt: refuse it before allocating the
    // pixel buffer. (Rows are filter byte + packed samples.)
    let samples = if color == ColorType::GrayscaleAlpha {
        2
    } else {
        1
    };
    let row_bytes = (width as u64 * samples * depth as u64).div_ceil(8) + 1;
    let raw = row_bytes * height as u64;
    if raw > DEFLATE_MAX_RATIO * file_len + 1024 {
        return Err(ImageError::Corrupt {
            path: path.to_owned(),
            format: "PNG",
            reason: format!(
                "a {width}x{height} image needs {raw} bytes of pixel data, more than a {file_len}-byte file can hold"
            ),
        });
    }

    let mut reader = decoder.read_info().map_err(corrupt)?;
    let channels = match reader.output_color_type() {
        (ColorType::Grayscale, BitDepth::Eight) => 1,
        (ColorType::GrayscaleAlpha, BitDepth::Eight) => 2,
        (c, d) => {
            return Err(ImageError::UnsupportedPng {
                path: path.to_owned(),
                what: format!("{c:?} at {} bits after expansion", d as u8),
            })
        }
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::TooLarge {
            path: path.to_owned(),
            width: width as u64,
            height: height as u64,
        })?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    let row_bytes = width * channels;
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let start = y * frame.line_size;
        let row = buf
            .get(start..start + row_bytes)
            .ok_or_else(|| ImageError::Corrupt {
                path: path.to_owned(),
                format: "PNG",
                reason: "decoded rows are shorter than the width".into(),
            })?;
        if channels == 1 {
            pixels.extend_from_slice(row);
        } else {
            pixels.extend(row.chunks_exact(2).map(|ga| over_black(ga[0], ga[1])));
        }
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// Grey `g` with alpha `a`, composited over black, rounded.
fn over_black(g: u8, a: u8) -> u8 {
    ((u16::from(g) * u16::from(a) + 127) / 255) as u8
}

/// A cursor over a PGM file's bytes.
struct Pgm<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl Pgm<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Corrupt {
            path: self.path.to_owned(),
            format: "PGM",
            reason: reason.into(),
        }
    }

    /// Skips whitespace and `#` comments; returns whether anything was
    /// skipped.
    fn skip_space(&mut self) -> bool {
        let start = self.pos;
        while let Some(&b) = self.data.get(self.pos) {
            if b == b'#' {
                while let Some(&c) = self.data.get(self.pos) {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.pos > start
    }

    /// Reads an unsigned decimal number after required white space; `what`
    /// names it in errors. Values above `u32::MAX` are refused.
    fn number(&mut self, what: &str) -> Result<u64, ImageError> {
        if !self.skip_space() {
            return Err(match self.data.get(self.pos) {
                None => self.corrupt(format!("the file ends before the {what}")),
                Some(_) => self.corrupt(format!("expected white space before the {what}")),
            });
        }
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(&b) = self.data.get(self.pos) {
            if !b.is_ascii_digit() {
                break;
            }
            value = value * 10 + u64::from(b - b'0');
            if value > u64::from(u32::MAX) {
                return Err(self.corrupt(format!("the {what} is too large")));
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(match self.data.get(self.pos) {
                None => self.corrupt(format!("the file ends before the {what}")),
                Some(&b) => self.corrupt(format!(
                    "expected the {what} (a decimal number), found {:?}",
                    char::from(b)
                )),
            });
        }
        Ok(value)
    }
}

fn parse_pgm(path: &Path, data: &[u8]) -> Result<GrayImage, ImageError> {
    let plain = data.get(1) == Some(&b'2');
    let mut p = Pgm { path, data, pos: 2 };
    let width = p.number("width")?;
    let height = p.number("height")?;
    let maxval = p.number("maxval")?;
    if width == 0 || height == 0 {
        return Err(p.corrupt(format!("the image is {width}x{height}")));
    }
    let (width, height) = check_dims(path, width, height)?;
    if maxval == 0 || maxval > 65535 {
        return Err(p.corrupt(format!("maxval {maxval} is outside 1..=65535")));
    }
    if maxval > 255 {
        return Err(ImageError::UnsupportedPgm {
            path: path.to_owned(),
            what: format!("16-bit (maxval {maxval})"),
        });
    }
    let maxval = maxval as u32;
    // Both at most MAX_DIM: no overflow.
    let n = width * height;
    let mut pixels = Vec::with_capacity(0);
    if plain {
        // Each sample takes at least one digit and the white space before
        // it: check the count against what is left before allocating.
        let left = data.len() - p.pos;
        if n > left / 2 {
            return Err(p.corrupt(format!(
                "{width}x{height} needs {n} samples but only {left} bytes follow the header"
            )));
        }
        pixels.reserve_exact(n);
        for i in 0..n {
            let v = p.number("sample")?;
            if v > u64::from(maxval) {
                return Err(p.corrupt(format!("sample {i} is {v}, above maxval {maxval}")));
            }
            pixels.push(v as u8);
        }
    } else {
        // Exactly one white-space byte ends the header.
        match data.get(p.pos) {
            Some(b) if b.is_ascii_whitespace() => p.pos += 1,
            Some(_) => return Err(p.corrupt("expected one white-space byte after maxval")),
            None => return Err(p.corrupt("the file ends after the header")),
        }
        let raster = &data[p.pos..];
        let raster = raster.get(..n).ok_or_else(|| {
            p.corrupt(format!(
                "{width}x{height} needs {n} pixel bytes but only {} follow the header",
                raster.len()
            ))
        })?;
        if let Some(i) = raster.iter().position(|&v| u32::from(v) > maxval) {
            return Err(p.corrupt(format!("pixel {i} is {}, above maxval {maxval}", raster[i])));
        }
        pixels = raster.to_vec();
    }
    if maxval != 255 {
        for v in &mut pixels {
            *v = ((u32::from(*v) * 255 + maxval / 2) / maxval) as u8;
        }
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// Checks that `pixels` holds `width × height × channels` bytes and that the
/// size fits a PNG.
fn check_image(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<(u32, u32), ImageError> {
    let invalid = |reason: String| ImageError::InvalidInput {
        path: path.to_owned(),
        reason,
    };
    const PNG_MAX: usize = (1 << 31) - 1;
    if width == 0 || height == 0 || width > PNG_MAX || height > PNG_MAX {
        return Err(invalid(format!(
            "a {width}x{height} image cannot be stored as PNG"
        )));
    }
    let want = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels));
    if want != Some(pixels.len()) {
        return Err(invalid(format!(
            "a {width}x{height} image with {channels} byte(s) per pixel has {} bytes of pixels",
            pixels.len()
        )));
    }
    Ok((width as u32, height as u32))
}

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<(), ImageError> {
    let to_io = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => e,
        e => io::Error::other(e.to_string()),
    };
    write_atomic(path, |file| {
        let mut out = BufWriter::new(file);
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(to_io)?;
        writer.write_image_data(pixels).map_err(to_io)?;
        writer.finish().map_err(to_io)?;
        out.flush()
    })
    .map_err(io_error(path))
}

/// Writes `image` as an 8-bit grayscale PNG, atomically.
pub fn write_gray_png(path: &Path, image: &GrayImage) -> Result<(), ImageError> {
    let (w, h) = check_image(path, image.width, image.height, 1, &image.pixels)?;
    write_png(path, w, h, png::ColorType::Grayscale, &image.pixels)
}

/// Writes `image` as an 8-bit RGB PNG, atomically.
pub fn write_rgb_png(path: &Path, image: &RgbImage) -> Result<(), ImageError> {
    let (w, h) = check_image(path, image.width, image.height, 3, &image.pixels)?;
    write_png(path, w, h, png::ColorType::Rgb, &image.pixels)
}

/// The diverging colour of `t` in [-1, 1]: white at 0, shading linearly to
/// [`POSITIVE_RGB`] at 1 and [`NEGATIVE_RGB`] at -1.
pub fn diverging(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(-1.0, 1.0) };
    let end = if t >= 0.0 { POSITIVE_RGB } else { NEGATIVE_RGB };
    let a = t.abs();
    end.map(|e| (255.0 + (f32::from(e) - 255.0) * a).round() as u8)
}

/// Draws weight templates: row `c` of `wt` (`templates` rows: a class, or
/// a hidden unit) reshaped to `height × width`, in order, left to right, in
/// one row of up to [`WEIGHTS_PER_ROW`], or a near-square grid of
/// `⌈√templates⌉` columns beyond that, each template pixel drawn as a
/// `scale × scale` block, with a gap one template pixel wide (`scale` output
/// pixels) of [`GAP_RGB`] between templates.
///
/// Colours use [`diverging`] with a symmetric scale per template: a weight
/// `w` of template `c` is drawn at `w / max|w_c|`, so each template's
/// strongest weight is fully saturated (an all-zero template is white). The
/// bias is not drawn.
///
/// The image is `cols × width × scale + (cols − 1) × scale` pixels wide
/// and `rows × height × scale + (rows − 1) × scale` high, with
/// `cols` as above and `rows = ⌈templates / cols⌉`:
/// 1156 × 112 for MNIST's 10 templates of 28 × 28 at scale 4.
///
/// `path` only names the destination in errors. Fails if `height × width`
/// is not the model's feature count, `scale` is not in `1..=MAX_SCALE`, the
/// model is inconsistent or holds non-finite weights, or the picture would
/// be more than `4 × MAX_DIM` (65536) pixels wide or high.
pub fn render_weights(
    wt: &[f32],
    templates: usize,
    height: usize,
    width: usize,
    scale: usize,
    path: &Path,
) -> Result<RgbImage, ImageError> {
    let invalid = |reason: String| ImageError::InvalidInput {
        path: path.to_owned(),
        reason,
    };
    let c = templates;
    let k = wt.len().checked_div(c).unwrap_or(0);
    if height.checked_mul(width) != Some(k) || k == 0 {
        return Err(invalid(format!(
            "the model has {k} features, which is not {height} x {width}"
        )));
    }
    if c == 0 || c.checked_mul(k) != Some(wt.len()) {
        return Err(invalid(format!(
            "the weight holds {} values, not templates x features = {c} x {k}",
            wt.len()
        )));
    }
    if !(1..=MAX_SCALE).contains(&scale) {
        return Err(invalid(format!("scale {scale} is outside 1..={MAX_SCALE}")));
    }
    if let Some(i) = wt.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "weight {} of template {} is {}",
            i % k,
            i / k,
            wt[i]
        )));
    }
    // A row of up to ten templates (softmax regression's classes), or a
    // near-square grid for an MLP's hundreds of hidden units.
    let cols = if c <= WEIGHTS_PER_ROW {
        c
    } else {
        (c as f64).sqrt().ceil() as usize
    };
    let rows = c.div_ceil(cols);
    let extent = |n: usize, len: usize| {
        n.checked_mul(len)?
            .checked_mul(scale)?
            .checked_add((n - 1).checked_mul(scale)?)
    };
    const LIMIT: usize = 4 * MAX_DIM;
    let (out_w, out_h) = match (extent(cols, width), extent(rows, height)) {
        (Some(w), Some(h)) if w <= LIMIT && h <= LIMIT => (w, h),
        _ => {
            return Err(invalid(format!(
                "{c} templates of {height} x {width} at scale {scale} would exceed {LIMIT} pixels a side"
            )))
        }
    };
    let mut pixels = GAP_RGB.repeat(out_w * out_h);
    for (class, template) in wt.chunks_exact(k).enumerate() {
        let m = template.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let x0 = (class % cols) * (width + 1) * scale;
        let y0 = (class / cols) * (height + 1) * scale;
        for (i, &w) in template.iter().enumerate() {
            let rgb = diverging(if m > 0.0 { w / m } else { 0.0 });
            let (ty, tx) = (i / width, i % width);
            for dy in 0..scale {
                let y = y0 + ty * scale + dy;
                let x = x0 + tx * scale;
                let start = (y * out_w + x) * 3;
                for px in pixels[start..start + 3 * scale].chunks_exact_mut(3) {
                    px.copy_from_slice(&rgb);
                }
            }
        }
    }
    Ok(RgbImage {
        width: out_w,
        height: out_h,
        pixels,
    })
}

/// Draws the network's first-layer weight templates (one per class for
/// softmax regression, one per hidden unit for an MLP) as
/// [`render_weights`] does at [`WEIGHTS_SCALE`] and writes them to `path`
/// as an RGB PNG, atomically. Returns the picture's size.
pub fn weights_png(
    network: &Network,
    height: usize,
    width: usize,
    path: &Path,
) -> Result<Size, ImageError> {
    let templates = network.sizes()[1];
    let image = render_weights(
        network.params().get(0),
        templates,
        height,
        width,
        WEIGHTS_SCALE,
        path,
    )?;
    write_rgb_png(path, &image)?;
    Ok(Size {
        width: image.width,
        height: image.height,
    })
}
