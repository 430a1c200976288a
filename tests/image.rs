//! Image input (PNG of every kind, JPEG, BMP, PNM, TIFF, WebP) and output
//! (grayscale PNG, weight pictures).

mod common;

use common::assert_one_line;
use std::fs;
use std::path::Path;

use idx_softmax::image::{self, read_gray, write_gray_png, GrayImage, ImageError, Size};
use idx_softmax::nn::Network;
use idx_softmax::plot::{self, render_weights, weights_png, GAP_RGB};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn random_image(width: usize, height: usize, seed: u64) -> GrayImage {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    GrayImage {
        width,
        height,
        pixels: (0..width * height).map(|_| rng.random()).collect(),
    }
}

/// Encodes a PNG with the reference encoder, whatever its colour type.
fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(color);
        e.set_depth(depth);
        let mut w = e.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
    }
    out
}

fn read_err(dir: &Path, name: &str, bytes: &[u8]) -> (ImageError, String) {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let e = read_gray(&path).expect_err("expected an error");
    let msg = assert_one_line(&e, &path);
    (e, msg)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn png_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(28, 28), (7, 3), (1, 1), (300, 2)] {
        let img = random_image(w, h, (w * 1000 + h) as u64);
        let path = dir.path().join(format!("{w}x{h}.png"));
        write_gray_png(&path, &img).unwrap();
        assert_eq!(read_gray(&path).unwrap(), img);
        // The reference decoder agrees: 8-bit grayscale.
        let d = png::Decoder::new(std::io::BufReader::new(fs::File::open(&path).unwrap()));
        let r = d.read_info().unwrap();
        assert_eq!(r.info().color_type, png::ColorType::Grayscale);
        assert_eq!(r.info().bit_depth, png::BitDepth::Eight);
        assert_eq!((r.info().width, r.info().height), (w as u32, h as u32));
    }
    assert_eq!(listing(dir.path()).len(), 4, "temporary files left behind");
}

#[test]
fn pgm_binary_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let img = random_image(5, 4, 1);
    let mut bytes = b"P5\n# made by a test\n5 4\n255\n".to_vec();
    bytes.extend_from_slice(&img.pixels);
    let path = dir.path().join("a.pgm");
    fs::write(&path, &bytes).unwrap();
    assert_eq!(read_gray(&path).unwrap(), img);

    // Comments between the fields, trailing data (a second image)
    // ignored.
    let mut bytes = b"P5\n#c\n5\n#c\n4\n255\t".to_vec();
    bytes.extend_from_slice(&img.pixels);
    bytes.extend_from_slice(b"P5 1 1 255 x");
    fs::write(&path, &bytes).unwrap();
    assert_eq!(read_gray(&path).unwrap(), img);
    // A white-space pixel value right after the header is data, not
    // white space.
    let img = GrayImage {
        width: 2,
        height: 1,
        pixels: vec![b'\n', b' '],
    };
    fs::write(&path, b"P5 2 1 255\n\n ").unwrap();
    assert_eq!(read_gray(&path).unwrap(), img);
}

#[test]
fn pgm_ascii_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let img = random_image(6, 3, 2);
    let mut text = String::from("P2\n# ascii\n6 3\n255\n");
    for row in img.pixels.chunks(6) {
        let row: Vec<String> = row.iter().map(|p| p.to_string()).collect();
        text += &row.join("  ");
        text += "\r\n";
    }
    let path = dir.path().join("a.pgm");
    fs::write(&path, &text).unwrap();
    assert_eq!(read_gray(&path).unwrap(), img);
}

#[test]
fn pgm_small_maxval_is_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaled.pgm");
    fs::write(&path, "P2 4 1 15\n0 7 8 15\n").unwrap();
    assert_eq!(read_gray(&path).unwrap().pixels, [0, 119, 136, 255]);
    let mut bytes = b"P5 3 1 1\n".to_vec();
    bytes.extend_from_slice(&[0, 1, 1]);
    fs::write(&path, &bytes).unwrap();
    assert_eq!(read_gray(&path).unwrap().pixels, [0, 255, 255]);
}

#[test]
fn format_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let img = random_image(4, 4, 3);
    let png_named_pgm = dir.path().join("actually_png.pgm");
    write_gray_png(&png_named_pgm, &img).unwrap();
    assert_eq!(read_gray(&png_named_pgm).unwrap(), img);
    let pgm_named_png = dir.path().join("actually_pgm.png");
    let mut bytes = b"P5 4 4 255\n".to_vec();
    bytes.extend_from_slice(&img.pixels);
    fs::write(&pgm_named_png, &bytes).unwrap();
    assert_eq!(read_gray(&pgm_named_png).unwrap(), img);
}

/// An Adam7-interlaced 8-bit grayscale PNG of `img`, built by hand (the
/// reference encoder writes no interlaced files).
fn interlaced_png(img: &GrayImage) -> Vec<u8> {
    const PASSES: [(usize, usize, usize, usize); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= img.width || y0 >= img.height {
            continue;
        }
        for y in (y0..img.height).step_by(dy) {
            raw.push(0); // filter: none
            for x in (x0..img.width).step_by(dx) {
                raw.push(img.pixels[y * img.width + x]);
            }
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &raw).unwrap();
    let mut ihdr = (img.width as u32).to_be_bytes().to_vec();
    ihdr.extend_from_slice(&(img.height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 1]); // 8-bit gray, interlaced
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(common::png_chunk(b"IHDR", &ihdr));
    out.extend(common::png_chunk(b"IDAT", &z.finish().unwrap()));
    out.extend(common::png_chunk(b"IEND", b""));
    out
}

fn decode(dir: &Path, name: &str, bytes: &[u8]) -> image::Decoded {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    image::decode_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_kind_of_png_is_decoded() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Luminance of pure red, green, blue, white (Rec. 709 weights).
    let rgb = encode_png(
        4,
        1,
        ColorType::Rgb,
        BitDepth::Eight,
        &[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255],
    );
    let img = decode(d, "rgb.png", &rgb);
    assert!(!img.has_alpha);
    assert!(img.description.contains("RGB"), "{}", img.description);
    let l: Vec<u16> = img.pixels.iter().map(|p| p[0] >> 8).collect();
    assert_eq!(l, [54, 183, 18, 255]);

    let rgba = encode_png(
        2,
        1,
        ColorType::Rgba,
        BitDepth::Eight,
        &[0, 0, 0, 255, 9, 9, 9, 0],
    );
    let img = decode(d, "rgba.png", &rgba);
    assert!(img.has_alpha);
    assert_eq!(img.pixels[0], [0, 65535]);
    assert_eq!(img.pixels[1][1], 0);

    // 16 bits kept to 16 bits.
    let g16 = encode_png(
        2,
        1,
        ColorType::Grayscale,
        BitDepth::Sixteen,
        &[0x12, 0x34, 0xFF, 0xFF],
    );
    let img = decode(d, "g16.png", &g16);
    assert_eq!(img.pixels, [[0x1234, 65535], [65535, 65535]]);
    assert!(img.description.contains("16-bit"), "{}", img.description);

    // Palette, without and with a transparent entry (tRNS).
    for trns in [false, true] {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 2, 1);
            enc.set_color(ColorType::Indexed);
            enc.set_depth(BitDepth::Eight);
            enc.set_palette(vec![0, 0, 0, 255, 255, 255]);
            if trns {
                enc.set_trns(vec![0, 255]);
            }
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 1]).unwrap();
            w.finish().unwrap();
        }
        let img = decode(d, "pal.png", &out);
        assert_eq!(img.has_alpha, trns);
        assert_eq!(img.pixels[1], [65535, 65535]);
        assert_eq!(img.pixels[0], [0, if trns { 0 } else { 65535 }]);
    }

    // Interlaced: the same pixels as the plain file.
    let plain = random_image(13, 11, 9);
    let path = d.join("adam7.png");
    fs::write(&path, interlaced_png(&plain)).unwrap();
    assert_eq!(read_gray(&path).unwrap(), plain);
}

#[test]
fn jpeg_bmp_tiff_and_16_bit_pnm_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rgb = ::image::RgbImage::new(16, 8);
    for (x, _, p) in rgb.enumerate_pixels_mut() {
        *p = ::image::Rgb(if x < 8 { [0, 0, 0] } else { [255, 255, 255] });
    }
    for (name, fmt) in [
        ("a.jpg", ::image::ImageFormat::Jpeg),
        ("a.bmp", ::image::ImageFormat::Bmp),
        ("a.tif", ::image::ImageFormat::Tiff),
        ("a.webp", ::image::ImageFormat::WebP),
    ] {
        let path = d.join(name);
        rgb.save_with_format(&path, fmt).unwrap();
        // Named as anything: the content decides.
        let renamed = d.join(format!("{name}.dat"));
        fs::rename(&path, &renamed).unwrap();
        let img = image::decode_file(&renamed).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width, img.height), (16, 8), "{name}");
        let (left, right) = (img.pixels[8 * 2][0], img.pixels[8 * 2 + 15][0]);
        assert!(left < 4000 && right > 61000, "{name}: {left} {right}");
    }
    // PGM with maxval 65535 (big-endian samples) and a small maxval.
    let path = d.join("a.pgm");
    fs::write(&path, b"P5 2 1 65535\n\x12\x34\xff\xff").unwrap();
    let img = image::decode_file(&path).unwrap();
    assert_eq!(img.pixels, [[0x1234, 65535], [65535, 65535]]);
    fs::write(
        &path,
        "P2 2 1 1000
500 1000
",
    )
    .unwrap();
    let img = image::decode_file(&path).unwrap();
    assert!(
        (img.pixels[0][0] as i32 - 32768).abs() < 64,
        "{:?}",
        img.pixels
    );
    // A cut JPEG is refused (the decoder alone would fill it with grey).
    let jpg = fs::read(d.join("a.jpg.dat")).unwrap();
    let cut = d.join("cut.jpg");
    fs::write(&cut, &jpg[..jpg.len() / 2]).unwrap();
    let e = image::decode_file(&cut).unwrap_err();
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
    assert!(assert_one_line(&e, &cut).contains("end-of-image"), "{e}");
    // Colour PPM.
    fs::write(&path, b"P6 1 1 255\n\xff\x00\x00").unwrap();
    assert_eq!(image::decode_file(&path).unwrap().pixels[0][0] >> 8, 54);
    // From memory, as standard input is read.
    let bytes = fs::read(d.join("a.bmp.dat")).unwrap();
    let img = image::decode_bytes(Path::new("-"), &bytes).unwrap();
    assert_eq!((img.width, img.height), (16, 8));
}

#[test]
fn gray_alpha_is_composited_over_black() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    let ga = encode_png(
        4,
        1,
        ColorType::GrayscaleAlpha,
        BitDepth::Eight,
        &[200, 255, 200, 0, 255, 128, 10, 51],
    );
    let path = dir.path().join("ga.png");
    fs::write(&path, &ga).unwrap();
    let img = read_gray(&path).unwrap();
    assert_eq!((img.width, img.height), (4, 1));
    assert_eq!(img.pixels, [200, 0, 128, 2]);
}

#[test]
fn low_bit_depth_gray_is_scaled() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    // 1-bit: 10110000 → 1 0 1 1 (row of 4).
    let one = encode_png(4, 1, ColorType::Grayscale, BitDepth::One, &[0b1011_0000]);
    let path = dir.path().join("one.png");
    fs::write(&path, &one).unwrap();
    assert_eq!(read_gray(&path).unwrap().pixels, [255, 0, 255, 255]);
    // 4-bit: 0x0F, 0x80 → 0 15 8 0.
    let four = encode_png(4, 1, ColorType::Grayscale, BitDepth::Four, &[0x0F, 0x80]);
    fs::write(&path, &four).unwrap();
    assert_eq!(read_gray(&path).unwrap().pixels, [0, 255, 136, 0]);
}

#[test]
fn other_formats_are_rejected_with_the_accepted_list() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        ("anim.png", b"GIF89a\x01\0\x01\0", "GIF"),
        ("text.png", b"hello, world\n", "unknown format"),
        ("page.png", b"<!DOCTYPE html><html></html>", "text"),
        ("empty.pgm", b"", "empty file"),
        ("short.png", b"\x89P", "unknown format"),
        ("data.png", b"\0\0\x08\x03\0\0\0\x01", "IDX"),
    ];
    for (name, bytes, what) in cases {
        let (e, msg) = read_err(dir.path(), name, bytes);
        assert!(matches!(e, ImageError::UnsupportedFormat { .. }), "{e}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains(image::ACCEPTED), "{msg}");
    }
    let e = read_gray(dir.path()).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
    let missing = dir.path().join("missing.png");
    let e = read_gray(&missing).unwrap_err();
    assert!(matches!(e, ImageError::Io { .. }), "{e}");
    assert_one_line(&e, &missing);
}

#[test]
fn bad_pnms_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (e, msg) = read_err(d, "big.pgm", b"P5 100000 100000 255\n\0");
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    assert!(msg.contains("100000x100000"), "{msg}");
    // Within the side limit but over 40 megapixels: refused from the
    // header, never allocated.
    let (e, msg) = read_err(d, "claims.pgm", b"P2 16384 16384 255\n1 2 3");
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    assert!(msg.contains("40 megapixels"), "{msg}");

    let bad: [&[u8]; 8] = [
        b"P5 4 4 255\n0123456789",
        b"P2 2 2 255\n1 2 3\n\n\n",
        b"P2 2 1 255\n1 x",
        b"P5 0 4 255\n",
        b"P5 4 4 0\n",
        b"P5 4 4 99999999999\n",
        b"P54 4 255\n",
        b"P5 4 4 255",
    ];
    for (i, bytes) in bad.iter().enumerate() {
        let (e, _) = read_err(d, &format!("bad{i}.pgm"), bytes);
        assert!(
            matches!(e, ImageError::Corrupt { .. }),
            "{:?}: {e}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn bad_pngs_are_rejected() {
    use png::{BitDepth, ColorType};
    let dir = tempfile::tempdir().unwrap();
    // Wider than the side limit (a valid 20000 x 1 image).
    let wide = encode_png(20000, 1, ColorType::Grayscale, BitDepth::Eight, &[7; 20000]);
    let (e, msg) = read_err(dir.path(), "wide.png", &wide);
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    assert!(msg.contains("20000x1"), "{msg}");

    // A tiny file claiming a big image: refused from its header.
    let mut ihdr = 16000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&16000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grayscale
    let mut claims = b"\x89PNG\r\n\x1a\n".to_vec();
    claims.extend(common::png_chunk(b"IHDR", &ihdr));
    claims.extend(common::png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0, 0, 0, 0, 1],
    ));
    claims.extend(common::png_chunk(b"IEND", b""));
    let (e, msg) = read_err(dir.path(), "claims.png", &claims);
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
    assert!(msg.contains("16000x16000"), "{msg}");

    // Truncated and corrupted.
    let img = encode_png(16, 16, ColorType::Grayscale, BitDepth::Eight, &[9; 256]);
    let (e, _) = read_err(dir.path(), "cut.png", &img[..img.len() - 20]);
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
    let mut flipped = img.clone();
    flipped[20] ^= 0xFF; // inside IHDR: the CRC no longer matches
    let (e, msg) = read_err(dir.path(), "crc.png", &flipped);
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
    assert!(msg.contains("corrupt or truncated PNG"), "{msg}");
}

#[test]
fn prefixes_and_flipped_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = random_image(9, 7, 4);
    // A one-digit last sample, so that no cut P2 file is valid.
    *img.pixels.last_mut().unwrap() = 7;
    let png_path = dir.path().join("full.png");
    write_gray_png(&png_path, &img).unwrap();
    let png = fs::read(&png_path).unwrap();
    let mut p5 = b"P5 9 7 255\n".to_vec();
    p5.extend_from_slice(&img.pixels);
    let p2 = {
        let s: Vec<String> = img.pixels.iter().map(|p| p.to_string()).collect();
        format!("P2 9 7 255\n{}\n", s.join(" ")).into_bytes()
    };
    let probe = dir.path().join("probe");
    // Bytes at the end that a reader may do without: PNG's IEND chunk, the
    // P2 file's final newline.
    for (full, optional) in [(&png, 12), (&p5, 0), (&p2, 1)] {
        for len in 0..full.len() {
            fs::write(&probe, &full[..len]).unwrap();
            match read_gray(&probe) {
                Err(e) => {
                    assert_one_line(&e, &probe);
                }
                Ok(got) => {
                    assert!(len >= full.len() - optional, "a {len}-byte prefix was read");
                    assert_eq!(got, img);
                }
            }
        }
        for i in 0..full.len() {
            let mut b = full.clone();
            b[i] ^= 0xA5;
            fs::write(&probe, &b).unwrap();
            if let Ok(img) = read_gray(&probe) {
                assert_eq!(img.pixels.len(), img.width * img.height);
            }
        }
    }
}

#[test]
fn writing_validates_and_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.png");
    fs::write(&path, b"old").unwrap();
    for bad in [
        GrayImage {
            width: 3,
            height: 3,
            pixels: vec![0; 8],
        },
        GrayImage {
            width: 0,
            height: 3,
            pixels: vec![],
        },
    ] {
        let e = write_gray_png(&path, &bad).unwrap_err();
        assert!(matches!(e, ImageError::InvalidInput { .. }), "{e}");
        assert_one_line(&e, &path);
    }
    assert_eq!(fs::read(&path).unwrap(), b"old");
    let nowhere = dir.path().join("no/dir/x.png");
    let e = write_gray_png(&nowhere, &random_image(2, 2, 0)).unwrap_err();
    assert!(matches!(e, ImageError::Io { .. }), "{e}");
    assert_eq!(listing(dir.path()), ["keep.png"]);
}

#[test]
fn features_are_scaled_like_the_dataset() {
    let img = GrayImage {
        width: 3,
        height: 1,
        pixels: vec![0, 51, 255],
    };
    // Exactly the training data's conversion (kernels::convert).
    let u = idx_softmax::data::U8_SCALE;
    assert_eq!(img.features(), [0.0, 51.0 * u, 255.0 * u]);
    assert!((img.features()[1] - 0.2).abs() < 1e-6);
}

/// A model whose templates are easy to predict: class 0 all zero, class 3
/// with one strongly positive and one strongly negative weight.
fn picture_model() -> (Network, usize, usize) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut m = Network::init(&[784, 10], &mut rng).unwrap();
    let wt = m.params_mut().get_mut(0);
    wt[..784].fill(0.0);
    let (pos, neg) = (14 * 28 + 10, 5 * 28 + 20);
    wt[3 * 784 + pos] = 2.0;
    wt[3 * 784 + neg] = -1.5;
    (m, pos, neg)
}

#[test]
fn weights_picture_has_the_expected_layout_and_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.png");
    let (m, pos, neg) = picture_model();
    let size = weights_png(&m, 28, 28, &path).unwrap();
    // 10 templates of 28 * 4 = 112 pixels, 9 gaps of 4.
    let want = Size {
        width: 10 * 112 + 9 * 4,
        height: 112,
    };
    assert_eq!(size, want);
    assert_eq!(listing(dir.path()), ["weights.png"]);

    // Decode with the png crate.
    let d = png::Decoder::new(std::io::BufReader::new(fs::File::open(&path).unwrap()));
    let mut r = d.read_info().unwrap();
    assert_eq!((r.info().width, r.info().height), (1156, 112));
    assert_eq!(r.info().color_type, png::ColorType::Rgb);
    assert_eq!(r.info().bit_depth, png::BitDepth::Eight);
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    r.next_frame(&mut buf).unwrap();
    let at = |x: usize, y: usize| {
        let i = (y * 1156 + x) * 3;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    // The centre of template pixel `k` of class `c`.
    let centre = |c: usize, k: usize| at(c * 116 + (k % 28) * 4 + 2, (k / 28) * 4 + 2);

    let [r_, g, b] = centre(3, pos);
    assert!(
        r_ > 150 && g < 80 && b < 80,
        "positive weight drawn {r_},{g},{b}"
    );
    let [r_, g, b] = centre(3, neg);
    assert!(
        b > r_ + 80 && b > g + 40,
        "negative weight drawn {r_},{g},{b}"
    );
    // Symmetric scale: -1.5 against max |w| = 2 is 75% of the way to blue.
    assert_eq!(
        [r_, g, b],
        plot::diverging(-0.75),
        "negative weight not on the symmetric scale"
    );
    // An all-zero template is white; a near-zero weight of class 3 nearly so.
    assert_eq!(centre(0, 400), [255, 255, 255]);
    let [r_, g, b] = centre(3, 0);
    assert!(r_.min(g).min(b) > 220, "small weight drawn {r_},{g},{b}");
    // Gaps between templates.
    for gx in [112, 113, 114, 115, 1156 - 113] {
        assert_eq!(at(gx, 50), GAP_RGB, "column {gx}");
    }
    assert_ne!(at(116, 50), GAP_RGB);

    // The in-memory rendering is what was written.
    let img = render_weights(m.params().get(0), 10, 28, 28, 4, &path).unwrap();
    assert_eq!(img.pixels, buf[..img.pixels.len()]);
    assert_eq!(img.get(3 * 116 + 2, 2), Some(at(3 * 116 + 2, 2)));
    assert_eq!(img.get(1156, 0), None);
}

#[test]
fn weights_picture_wraps_and_scales() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    let m = Network::init(&[12, 23], &mut rng).unwrap();
    let wt = m.params().get(0);
    let p = Path::new("unused.png");
    // 23 templates of 3 x 4 at scale 2: beyond one row of 10, a
    // near-square grid of ⌈√23⌉ = 5 columns and 5 rows.
    let img = render_weights(wt, 23, 3, 4, 2, p).unwrap();
    assert_eq!((img.width, img.height), (5 * 8 + 4 * 2, 5 * 6 + 4 * 2));
    // The unused cells of the last row are gap-coloured.
    assert_eq!(img.get(img.width - 1, img.height - 1), Some(GAP_RGB));
    let img = render_weights(wt, 23, 4, 3, 1, p).unwrap();
    assert_eq!((img.width, img.height), (5 * 3 + 4, 5 * 4 + 4));
    // Up to ten templates stay in one row.
    let img = render_weights(&wt[..10 * 12], 10, 3, 4, 1, p).unwrap();
    assert_eq!((img.width, img.height), (10 * 4 + 9, 3));
}

#[test]
fn weights_picture_rejects_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.png");
    let (m, _, _) = picture_model();
    for (h, w) in [(28, 27), (784, 0), (0, 0), (usize::MAX, 2)] {
        let e = weights_png(&m, h, w, &path).unwrap_err();
        assert!(matches!(e, ImageError::InvalidInput { .. }), "{e}");
        assert!(assert_one_line(&e, &path).contains("784 features"), "{e}");
    }
    let wt = m.params().get(0);
    for scale in [0, 65] {
        assert!(render_weights(wt, 10, 28, 28, scale, &path).is_err());
    }
    let mut nan = m.clone();
    nan.params_mut().get_mut(0)[5] = f32::NAN;
    let e = weights_png(&nan, 28, 28, &path).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    // A weight that does not hold templates × features values.
    assert!(render_weights(&wt[..100], 10, 28, 28, 4, &path).is_err());
    let mut long = wt.to_vec();
    long.push(0.5);
    let e = render_weights(&long, 10, 28, 28, 4, &path).unwrap_err();
    assert!(e.to_string().contains("7841"), "{e}");
    assert!(render_weights(wt, 0, 28, 28, 4, &path).is_err());
    // 10000 templates of 10 × 10 in a 100 × 100 grid: 70336 pixels a side
    // at scale 64, too big; 1099 at scale 1.
    let many = vec![0.5f32; 10000 * 100];
    let e = render_weights(&many, 10000, 10, 10, 64, &path).unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
    let img = render_weights(&many, 10000, 10, 10, 1, &path).unwrap();
    assert_eq!((img.width, img.height), (1099, 1099));
    assert!(listing(dir.path()).is_empty());
}

/// An MLP's picture is its first layer: one 28 × 28 tile per hidden unit,
/// in a near-square grid, each tile the row of `0.weight` for that unit.
#[test]
fn mlp_weights_picture_draws_the_first_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.png");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
    let mut net = Network::init(&[784, 16, 10], &mut rng).unwrap();
    assert_eq!(net.params().tensors()[0].name, "0.weight");
    // Unit 5: one strong positive weight; unit 0: all zero.
    let w0 = net.params_mut().get_mut(0);
    w0[..784].fill(0.0);
    let pos = 3 * 28 + 7;
    w0[5 * 784 + pos] = 9.0;
    let size = weights_png(&net, 28, 28, &path).unwrap();
    // 16 tiles: 4 columns, 4 rows of 112 pixels with gaps of 4.
    assert_eq!(
        size,
        Size {
            width: 4 * 112 + 3 * 4,
            height: 4 * 112 + 3 * 4
        }
    );
    let img = render_weights(net.params().get(0), 16, 28, 28, 4, &path).unwrap();
    let tile = |t: usize, k: usize| {
        img.get(
            (t % 4) * 116 + (k % 28) * 4 + 2,
            (t / 4) * 116 + (k / 28) * 4 + 2,
        )
        .unwrap()
    };
    assert_eq!(tile(0, 100), [255, 255, 255]);
    assert_eq!(tile(5, pos), plot::diverging(1.0));
    // Drawn from the first layer only: changing the second changes nothing.
    let before = fs::read(&path).unwrap();
    net.params_mut().get_mut(2).fill(3.0);
    weights_png(&net, 28, 28, &path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), before);
    // The first layer's inputs must be the picture's pixels.
    let e = weights_png(&net, 27, 28, &path).unwrap_err();
    assert!(e.to_string().contains("784 features"), "{e}");
}
