//! Realistic images made from MNIST test digits: the pictures people bring
//! to `predict` (big canvases, black on white and white on black, RGB,
//! RGBA with a transparent background, JPEG photos of paper, coloured ink,
//! off-centre digits, many scales, 16-bit and palette files). Seeded: the
//! same seed gives the same files, byte for byte.
//!
//! Shared by `examples/make_real_world_set.rs` (the command) and
//! `tests/real_world.rs` (the accuracy bar), so the tests need no Python.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The kinds of image made, in order.
pub const KINDS: &[&str] = &[
    "original",
    "big-white-on-black",
    "black-on-white-rgb",
    "rgba-transparent",
    "jpeg-photo",
    "coloured-ink",
    "off-centre-small",
    "gray16-png",
    "palette-png",
    "bmp-grey-paper",
    "pgm16",
    "tiff-rgb",
];

/// One generated file.
#[derive(Clone, Debug)]
pub struct Item {
    /// File name inside the output directory.
    pub file: String,
    pub label: u8,
    pub kind: &'static str,
    /// The MNIST test index it was made from.
    pub index: usize,
}

/// Writes `per_kind` images of every kind into `out` (which must exist),
/// from MNIST test digits `pixels` (28×28 u8 each) and `labels`, plus
/// `manifest.csv` (`file,label,kind,index`). The same digits are used for
/// every kind, so the kinds compare like with like.
pub fn generate(
    pixels: &[u8],
    labels: &[u8],
    out: &Path,
    per_kind: usize,
    seed: u64,
) -> io::Result<Vec<Item>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let n = labels.len();
    let mut indices: Vec<usize> = Vec::with_capacity(per_kind);
    while indices.len() < per_kind.min(n) {
        let i = rng.random_range(0..n);
        if !indices.contains(&i) {
            indices.push(i);
        }
    }
    let mut items = Vec::new();
    for &kind in KINDS {
        for &index in &indices {
            let digit = &pixels[index * 784..(index + 1) * 784];
            let label = labels[index];
            let file = render(kind, digit, &mut rng, out, index)?;
            items.push(Item {
                file,
                label,
                kind,
                index,
            });
        }
    }
    let mut manifest = String::from("file,label,kind,index\n");
    for it in &items {
        manifest += &format!("{},{},{},{}\n", it.file, it.label, it.kind, it.index);
    }
    std::fs::write(out.join("manifest.csv"), manifest)?;
    Ok(items)
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The digit's ink coverage (0–1) scaled to `size × size`, smoothly.
fn ink(digit: &[u8], size: u32) -> Vec<f32> {
    let img: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_raw(28, 28, digit.to_vec()).expect("28x28");
    let big = image::imageops::resize(&img, size, size, FilterType::Triangle);
    big.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect()
}

/// A `w × h` canvas of per-pixel coverage, the digit (`size` a side) at
/// `(x0, y0)`.
fn canvas(digit: &[u8], w: u32, h: u32, size: u32, x0: u32, y0: u32) -> Vec<f32> {
    let d = ink(digit, size);
    let mut c = vec![0.0f32; (w * h) as usize];
    for y in 0..size.min(h - y0) {
        for x in 0..size.min(w - x0) {
            c[((y0 + y) * w + x0 + x) as usize] = d[(y * size + x) as usize];
        }
    }
    c
}

/// A random digit size in `lo..=hi` and a position keeping it inside a
/// `w × h` canvas.
fn place(rng: &mut impl Rng, w: u32, h: u32, lo: u32, hi: u32) -> (u32, u32, u32) {
    let size = rng.random_range(lo..=hi.min(w).min(h));
    let x0 = rng.random_range(0..=w - size);
    let y0 = rng.random_range(0..=h - size);
    (size, x0, y0)
}

fn mix(bg: [f32; 3], fg: [f32; 3], v: f32) -> [f32; 3] {
    [0, 1, 2].map(|i| bg[i] * (1.0 - v) + fg[i] * v)
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn rgb_image(w: u32, h: u32, c: &[f32], f: impl Fn(usize, f32) -> [f32; 3]) -> image::RgbImage {
    let mut img = image::RgbImage::new(w, h);
    for (i, p) in img.pixels_mut().enumerate() {
        *p = Rgb(f(i, c[i]).map(to_u8));
    }
    img
}

fn render(
    kind: &str,
    digit: &[u8],
    rng: &mut Xoshiro256PlusPlus,
    out: &Path,
    index: usize,
) -> io::Result<String> {
    let stem = format!("{kind}-{index:05}");
    let white = [255.0; 3];
    let black = [0.0; 3];
    match kind {
        "original" => {
            let img: image::GrayImage = ImageBuffer::from_raw(28, 28, digit.to_vec()).unwrap();
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "big-white-on-black" => {
            let c = canvas(digit, 280, 280, 280, 0, 0);
            let img: image::GrayImage =
                ImageBuffer::from_raw(280, 280, c.iter().map(|&v| to_u8(v * 255.0)).collect())
                    .unwrap();
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "black-on-white-rgb" => {
            let (s, x, y) = place(rng, 300, 300, 180, 300);
            let c = canvas(digit, 300, 300, s, x, y);
            let img = rgb_image(300, 300, &c, |_, v| mix(white, black, v));
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "rgba-transparent" => {
            let (s, x, y) = place(rng, 256, 256, 140, 256);
            let c = canvas(digit, 256, 256, s, x, y);
            // Black ink; the transparent background's hidden colour is
            // black or white at random: only alpha tells the digit apart.
            let hidden = if rng.random_bool(0.5) { 255 } else { 0 };
            let mut img = image::RgbaImage::new(256, 256);
            for (i, p) in img.pixels_mut().enumerate() {
                let a = to_u8(c[i] * 255.0);
                let rgb = if a == 0 { hidden } else { 0 };
                *p = Rgba([rgb, rgb, rgb, a]);
            }
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "jpeg-photo" => {
            let (w, h) = (640, 480);
            let (s, x, y) = place(rng, w, h, 220, 460);
            let c = canvas(digit, w, h, s, x, y);
            let paper: f32 = rng.random_range(200.0..245.0);
            let pencil: f32 = rng.random_range(20.0..80.0);
            let tint = [1.0, 0.98, 0.93];
            let noise: Vec<f32> = (0..c.len()).map(|_| rng.random_range(-8.0..8.0)).collect();
            // Light falling off across the sheet.
            let img = rgb_image(w, h, &c, |i, v| {
                let fx = (i as u32 % w) as f32 / w as f32;
                let shade = 1.0 - 0.12 * fx;
                let bg = tint.map(|t| paper * t * shade);
                mix(bg, [pencil; 3], v).map(|p| p + noise[i])
            });
            let file = format!("{stem}.jpg");
            let f = BufWriter::new(File::create(out.join(&file))?);
            JpegEncoder::new_with_quality(f, 70)
                .encode_image(&img)
                .map_err(err)?;
            Ok(file)
        }
        "coloured-ink" => {
            let (w, h) = (320, 240);
            let (s, x, y) = place(rng, w, h, 150, 240);
            let c = canvas(digit, w, h, s, x, y);
            let inks = [
                [20.0, 40.0, 200.0],
                [200.0, 20.0, 20.0],
                [20.0, 120.0, 40.0],
            ];
            let ink = inks[rng.random_range(0..inks.len())];
            let paper = if rng.random_bool(0.5) {
                white
            } else {
                [255.0, 250.0, 215.0]
            };
            let img = rgb_image(w, h, &c, |_, v| mix(paper, ink, v));
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "off-centre-small" => {
            let (s, x, y) = place(rng, 400, 400, 50, 120);
            let c = canvas(digit, 400, 400, s, x, y);
            let img: image::GrayImage = ImageBuffer::from_raw(
                400,
                400,
                c.iter().map(|&v| to_u8(255.0 * (1.0 - v))).collect(),
            )
            .unwrap();
            let file = format!("{stem}.png");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "gray16-png" | "pgm16" => {
            let (s, x, y) = place(rng, 120, 120, 70, 120);
            let c = canvas(digit, 120, 120, s, x, y);
            let dark = kind == "pgm16";
            let img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(
                120,
                120,
                c.iter()
                    .map(|&v| {
                        let v = if dark { v } else { 1.0 - v };
                        (v * 65535.0).round() as u16
                    })
                    .collect(),
            )
            .unwrap();
            if kind == "pgm16" {
                let file = format!("{stem}.pgm");
                // Binary PGM, maxval 65535: big-endian samples.
                let mut bytes = b"P5\n# 16-bit test digit\n120 120\n65535\n".to_vec();
                bytes.extend(img.as_raw().iter().flat_map(|v| v.to_be_bytes()));
                std::fs::write(out.join(&file), bytes)?;
                Ok(file)
            } else {
                let file = format!("{stem}.png");
                img.save(out.join(&file)).map_err(err)?;
                Ok(file)
            }
        }
        "palette-png" => {
            let (w, h) = (200, 200);
            let (s, x, y) = place(rng, w, h, 120, 200);
            let c = canvas(digit, w, h, s, x, y);
            // 16 shades from white paper to dark-blue ink, as a palette.
            let ink = [10.0, 20.0, 90.0];
            let palette: Vec<u8> = (0..16)
                .flat_map(|i| mix(white, ink, i as f32 / 15.0).map(to_u8))
                .collect();
            let indices: Vec<u8> = c.iter().map(|&v| (v * 15.0).round() as u8).collect();
            let file = format!("{stem}.png");
            let f = BufWriter::new(File::create(out.join(&file))?);
            let mut enc = png::Encoder::new(f, w, h);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette(palette);
            let mut wr = enc.write_header().map_err(err)?;
            wr.write_image_data(&indices).map_err(err)?;
            wr.finish().map_err(err)?;
            Ok(file)
        }
        "bmp-grey-paper" => {
            let (s, x, y) = place(rng, 240, 180, 100, 180);
            let c = canvas(digit, 240, 180, s, x, y);
            let img = rgb_image(240, 180, &c, |_, v| mix([190.0; 3], [30.0; 3], v));
            let file = format!("{stem}.bmp");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        "tiff-rgb" => {
            let (s, x, y) = place(rng, 160, 160, 90, 160);
            let c = canvas(digit, 160, 160, s, x, y);
            let img = rgb_image(160, 160, &c, |_, v| mix(black, [255.0, 230.0, 120.0], v));
            let file = format!("{stem}.tif");
            img.save(out.join(&file)).map_err(err)?;
            Ok(file)
        }
        _ => Err(err(format!("unknown kind {kind}"))),
    }
}
