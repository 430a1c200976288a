//! The measured bar of `predict` on realistic pictures: images made from
//! MNIST test digits the way people bring them (big canvases, black on
//! white, RGB, RGBA on a transparent sheet, JPEG photos of paper, coloured
//! ink, off-centre, many scales, 16-bit and palette files; see
//! `examples/real_world/gen.rs`), classified by a default one-epoch model
//! through the CLI. Every kind must score within 10 points of the same
//! digits as the original 28 × 28 files, and all of them together within 5.

mod common;
use common::bin;
#[path = "../examples/real_world/gen.rs"]
mod gen;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Digits per kind: 12 kinds × 40 = 480 images, about a second in all.
const PER_KIND: usize = 40;

#[test]
fn realistic_images_score_like_the_original_digits() {
    let data = common::mnist();
    let pixels = data.test.images.as_u8().unwrap();
    let labels: Vec<u8> = data.test.labels.iter().map(|l| l as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let items = gen::generate(pixels, &labels, &images, PER_KIND, 11).unwrap();
    assert_eq!(items.len(), PER_KIND * gen::KINDS.len());
    // Only the images in the directory: any other file would be named as
    // not classified (and the status would say so).
    let manifest = images.join("manifest.csv");
    if manifest.exists() {
        std::fs::rename(&manifest, dir.path().join("manifest.csv")).unwrap();
    }

    let model = dir.path().join("m.safetensors");
    let out = bin(&["--save", model.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--json",
        images.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("no digit found"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let by_file: BTreeMap<String, &gen::Item> = items.iter().map(|i| (i.file.clone(), i)).collect();
    // (correct, total) per kind.
    let mut score: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut lines = 0;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let path = v["image"].as_str().unwrap();
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let item = by_file[name];
        let s = score.entry(item.kind).or_default();
        s.0 += usize::from(v["predicted"].as_u64() == Some(u64::from(item.label)));
        s.1 += 1;
        // The originals go to the model untouched; everything else is
        // normalised.
        let want = if item.kind == "original" {
            "none"
        } else {
            "mnist"
        };
        assert_eq!(v["preprocess"], want, "{line}");
        lines += 1;
    }
    assert_eq!(lines, items.len(), "every image is classified");
    let acc = |(c, t): (usize, usize)| c as f64 / t as f64;
    let original = acc(score["original"]);
    let (mut c, mut t) = (0, 0);
    for (kind, &s) in &score {
        println!("{kind:20} {:.3} ({}/{})", acc(s), s.0, s.1);
        if *kind != "original" {
            c += s.0;
            t += s.1;
            assert!(
                acc(s) >= original - 0.10,
                "{kind}: {:.3} against {original:.3} on the originals",
                acc(s)
            );
        }
    }
    let realistic = c as f64 / t as f64;
    println!("realistic {realistic:.3} ({c}/{t}), originals {original:.3}");
    assert!(
        realistic >= original - 0.05,
        "realistic images {realistic:.3} against {original:.3} on the originals"
    );
    // A sanity floor: the originals themselves score as MNIST does.
    assert!(original >= 0.8, "{original}");
}

/// With `--preprocess none` a big canvas is refused with a line saying
/// which size the model takes and what to do.
#[test]
fn without_preprocessing_the_same_images_fail() {
    let data = common::mnist();
    let pixels = data.test.images.as_u8().unwrap();
    let labels: Vec<u8> = data.test.labels.iter().map(|l| l as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let items = gen::generate(pixels, &labels, &images, 3, 5).unwrap();
    let model = dir.path().join("m.safetensors");
    assert!(bin(&["--save", model.to_str().unwrap(), "--json"])
        .status
        .success());
    let big = items
        .iter()
        .find(|i| i.kind == "black-on-white-rgb")
        .unwrap();
    let out = bin(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--preprocess",
        "none",
        images.join(&big.file).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("300x300") && stderr.contains("28x28"),
        "{stderr}"
    );
}
