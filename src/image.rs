//! Images in and out: the pictures users bring to classify, and the
//! pictures of what the model learned.
//!
//! # Reading
//!
//! [`decode_file`] and [`decode_bytes`] decode, with the [`image`] crate,
//! every format it is built with here, detected by content (the magic
//! bytes), never by file name:
//!
//! * **PNG** at any bit depth (1 to 16), grayscale, RGB, palette, with or
//!   without alpha (an alpha channel or a `tRNS` transparent colour),
//!   interlaced or not;
//! * **JPEG** (baseline and progressive), **BMP**, **TIFF**, **WebP**;
//! * **PNM**: PBM, PGM and PPM, binary or ASCII (`P1`–`P6`), and PAM
//!   (`P7`), with a maxval up to 65535.
//!
//! The result is a [`Decoded`] image: luminance (Rec. 709 weights, as the
//! `image` crate computes it) and alpha, 16 bits each, **as it is meant to
//! be shown**: an EXIF orientation (a JPEG's APP1 segment, a PNG's `eXIf`
//! chunk, a WebP's EXIF, a TIFF's Orientation tag; all eight values,
//! rotations and mirrorings) is applied, so a phone photo stored sideways
//! comes out upright, for every front end that decodes through here. What to do with it,
//! inverting and centring the digit the way MNIST was made, is
//! [`crate::preprocess`]'s job.
//!
//! Limits are set on the decoder **before** it allocates anything: at most
//! [`MAX_DIM`] pixels a side and [`MAX_PIXELS`] (40 megapixels) in all, and
//! at most [`MAX_ALLOC`] bytes of decoder allocations. A small file that
//! claims a huge image (a decompression bomb) is refused from its header,
//! before its pixel buffer exists. Every failure is a one-line
//! [`ImageError`] naming the file; no input makes these functions panic.
//!
//! # Writing
//!
//! [`write_gray_png`] and [`write_rgb_png`] write 8-bit PNGs atomically (a
//! temporary file in the same directory, synced, then renamed; see
//! [`write_atomic`]). The pictures of what a model learned are
//! [`crate::plot`]'s.

use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;

/// Largest width or height decoded.
pub const MAX_DIM: usize = 16384;
/// Largest image decoded, in pixels (width × height): 40 megapixels, far
/// above any photo a user would classify (a 12-megapixel phone photo is
/// 4032 × 3024).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Most bytes the decoder may allocate: the largest accepted image at 16-bit
/// RGBA (8 bytes a pixel), plus 64 MiB for the decoder's own buffers.
pub const MAX_ALLOC: u64 = MAX_PIXELS * 8 + (64 << 20);
/// Largest image read from standard input (read into memory before
/// decoding).
pub const MAX_STREAM_BYTES: u64 = 256 << 20;
/// The formats the decoder reads, for error messages.
pub const ACCEPTED: &str = "accepted: PNG, JPEG, BMP, PNM (PBM/PGM/PPM/PAM), TIFF, WebP";

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
    /// [`crate::data::U8_SCALE`] as the training data is.
    pub fn features(&self) -> Vec<f32> {
        self.pixels
            .iter()
            .map(|&p| f32::from(p) * crate::data::U8_SCALE)
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

/// A decoded image: 16-bit luminance and alpha, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    /// `width × height` pairs `[luminance, alpha]`, 0–65535 (alpha 65535 =
    /// opaque).
    pub pixels: Vec<[u16; 2]>,
    /// Whether the file has transparency (an alpha channel, or a `tRNS`
    /// colour); without it every alpha is 65535.
    pub has_alpha: bool,
    /// What the file was, e.g. `PNG, 8-bit RGB`.
    pub description: String,
}

impl Decoded {
    /// Luminance composited over black and rounded to 8 bits.
    pub fn to_gray_over_black(&self) -> GrayImage {
        let pixels = self
            .pixels
            .iter()
            .map(|&[l, a]| {
                let v = u64::from(l) * u64::from(a);
                ((v + 65535 * 257 / 2) / (65535 * 257)) as u8
            })
            .collect();
        GrayImage {
            width: self.width,
            height: self.height,
            pixels,
        }
    }
}

/// A failure to read or write an image. Each message is one line and names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened, read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// Not a format the decoder reads.
    #[error("{}: {what} is not supported; {ACCEPTED}", path.display())]
    UnsupportedFormat { path: PathBuf, what: String },
    /// Larger than [`MAX_DIM`] a side or [`MAX_PIXELS`] in all, or needing
    /// more than [`MAX_ALLOC`] bytes to decode.
    #[error(
        "{}: the image is {width}x{height} ({:.1} megapixels); the limit is {} megapixels and {MAX_DIM} pixels a side",
        path.display(),
        *width as f64 * *height as f64 / 1e6,
        MAX_PIXELS / 1_000_000
    )]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
    },
    /// A file that is malformed or ends early.
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

/// The decoder limits described in the module documentation.
pub fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIM as u32);
    limits.max_image_height = Some(MAX_DIM as u32);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

/// Decodes the image file at `path`; see the module documentation. FIFOs,
/// sockets and devices are refused before anything is read (a FIFO would
/// block; standard input is read with [`decode_bytes`]).
pub fn decode_file(path: &Path) -> Result<Decoded, ImageError> {
    let (file, _) = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(crate::fsutil::InputError::Directory) => return Err(unsupported(path, "a directory")),
        Err(e) => return Err(io_error(path)(e.into())),
    };
    decode_reader(path, BufReader::new(file))
}

/// Decodes an image held in memory (read from standard input, say); `name`
/// names it in errors.
pub fn decode_bytes(name: &Path, bytes: &[u8]) -> Result<Decoded, ImageError> {
    decode_reader(name, Cursor::new(bytes))
}

/// Reads an image as 8-bit grayscale, alpha composited over black (MNIST's
/// background): the pixels exactly as they are, with no preprocessing.
pub fn read_gray(path: &Path) -> Result<GrayImage, ImageError> {
    Ok(decode_file(path)?.to_gray_over_black())
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
        [b'G', b'I', b'F', b'8', ..] => "GIF",
        [0, 0, 0x08, 0x01 | 0x03, ..] => "an IDX file (a whole dataset, not one image)",
        [0x1F, 0x8B, ..] => "a gzip file",
        [b'<', ..] => "a text (HTML or SVG?) file",
        _ => "an unknown format",
    }
}

fn format_name(f: image::ImageFormat) -> &'static str {
    use image::ImageFormat as F;
    match f {
        F::Png => "PNG",
        F::Jpeg => "JPEG",
        F::Bmp => "BMP",
        F::Pnm => "PNM",
        F::Tiff => "TIFF",
        F::WebP => "WebP",
        F::Gif => "GIF",
        _ => "image",
    }
}

fn color_name(c: image::ColorType) -> &'static str {
    use image::ColorType as C;
    match c {
        C::L8 => "8-bit grayscale",
        C::La8 => "8-bit grayscale with alpha",
        C::Rgb8 => "8-bit RGB",
        C::Rgba8 => "8-bit RGBA",
        C::L16 => "16-bit grayscale",
        C::La16 => "16-bit grayscale with alpha",
        C::Rgb16 => "16-bit RGB",
        C::Rgba16 => "16-bit RGBA",
        C::Rgb32F => "32-bit float RGB",
        C::Rgba32F => "32-bit float RGBA",
        _ => "unusual colour type",
    }
}

/// One line: the `image` crate's messages may hold several.
fn one_line(s: String) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the last 64 KiB of a JPEG hold its end-of-image marker
/// (`FF D9`; trailing bytes after it are allowed, as cameras append some).
fn jpeg_has_end<R: Read + Seek>(r: &mut R) -> io::Result<bool> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail = len.min(64 << 10);
    r.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    r.take(tail).read_to_end(&mut buf)?;
    Ok(buf.windows(2).any(|w| w == [0xFF, 0xD9]))
}

fn decode_reader<R: BufRead + Seek>(path: &Path, mut r: R) -> Result<Decoded, ImageError> {
    use image::{ImageDecoder, ImageReader};

    let mut magic = [0u8; 16];
    let got = crate::fsutil::read_up_to(&mut r, &mut magic).map_err(io_error(path))?;
    if magic[..got].starts_with(&[0xFF, 0xD8, 0xFF])
        && !jpeg_has_end(&mut r).map_err(io_error(path))?
    {
        // The JPEG decoder fills a cut file's missing rows with grey
        // rather than failing: refuse it here instead.
        return Err(ImageError::Corrupt {
            path: path.to_owned(),
            format: "JPEG",
            reason: "the file ends before its end-of-image marker".into(),
        });
    }
    r.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut reader = ImageReader::new(r)
        .with_guessed_format()
        .map_err(io_error(path))?;
    let Some(format) = reader.format() else {
        return Err(unsupported(path, identify(&magic[..got])));
    };
    let fname = format_name(format);
    let convert = |e: image::ImageError| -> ImageError {
        use image::error::{ImageError as E, LimitErrorKind};
        match e {
            E::IoError(error) if error.kind() != io::ErrorKind::UnexpectedEof => ImageError::Io {
                path: path.to_owned(),
                error,
            },
            E::IoError(_) => ImageError::Corrupt {
                path: path.to_owned(),
                format: fname,
                reason: "the file ends early".into(),
            },
            E::Unsupported(e) => ImageError::UnsupportedFormat {
                path: path.to_owned(),
                what: one_line(format!("{fname} ({e})")),
            },
            E::Limits(l) => match l.kind() {
                LimitErrorKind::DimensionError => ImageError::Corrupt {
                    path: path.to_owned(),
                    format: fname,
                    reason: format!(
                        "the image is larger than the limit of {MAX_DIM} pixels a side"
                    ),
                },
                _ => ImageError::Corrupt {
                    path: path.to_owned(),
                    format: fname,
                    reason: format!(
                        "decoding it would take more than the limit of {} MiB",
                        MAX_ALLOC >> 20
                    ),
                },
            },
            e => ImageError::Corrupt {
                path: path.to_owned(),
                format: fname,
                reason: one_line(e.to_string()),
            },
        }
    };
    // The allocation cap from the start; the size limits once the size is
    // known, so that a refusal can say what the size is.
    let mut alloc_only = image::Limits::no_limits();
    alloc_only.max_alloc = Some(MAX_ALLOC);
    reader.limits(alloc_only);
    // Reads the header only: nothing the size of the image exists yet.
    let mut decoder = reader.into_decoder().map_err(convert)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Corrupt {
            path: path.to_owned(),
            format: fname,
            reason: format!("the image is {w}x{h}"),
        });
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS || w as usize > MAX_DIM || h as usize > MAX_DIM {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            width: w.into(),
            height: h.into(),
        });
    }
    decoder.set_limits(limits()).map_err(convert)?;
    let original = decoder.original_color_type();
    let color = decoder.color_type();
    let description = match original {
        image::ExtendedColorType::L1 => format!("{fname}, 1-bit"),
        image::ExtendedColorType::L2 => format!("{fname}, 2-bit grayscale"),
        image::ExtendedColorType::L4 => format!("{fname}, 4-bit grayscale"),
        image::ExtendedColorType::Unknown(_) => format!("{fname}, {}", color_name(color)),
        o if o.channel_count() == color.channel_count() || fname != "PNG" => {
            format!("{fname}, {}", color_name(color))
        }
        _ => format!("{fname}, palette ({})", color_name(color)),
    };
    // How the pixels are to be shown (EXIF Orientation in a JPEG's APP1,
    // a PNG's eXIf, a WebP's EXIF chunk, a TIFF's tag): a phone stores a
    // portrait photo sideways and says so here.
    let orientation = decoder.orientation().map_err(convert)?;
    let description = match orientation {
        image::metadata::Orientation::NoTransforms => description,
        o => format!("{description}, EXIF orientation {} applied", o.to_exif()),
    };
    let image = image::DynamicImage::from_decoder(decoder).map_err(convert)?;
    let has_alpha = image.color().has_alpha();
    // Oriented after the reduction to luminance: the copy it takes is of
    // the smaller image.
    let mut image = image::DynamicImage::ImageLumaA16(image.into_luma_alpha16());
    image.apply_orientation(orientation);
    let image = image.into_luma_alpha16();
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels: Vec<[u16; 2]> = image
        .pixels()
        .map(|p| if has_alpha { p.0 } else { [p.0[0], u16::MAX] })
        .collect();
    Ok(Decoded {
        width,
        height,
        pixels,
        has_alpha,
        description,
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
