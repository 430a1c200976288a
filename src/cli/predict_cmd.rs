//! `predict`: classify image files, or samples of the test split, with a
//! saved model, printing the most probable classes.
//!
//! An image's pixels are scaled exactly as training scales the IDX bytes
//! (u8 × [`idx_softmax::dataset::U8_SCALE`], via
//! [`idx_softmax::image::GrayImage::features`]) and go through the gemm
//! forward pass. `--test-index N` runs test sample N through the
//! evaluation's own forward pass (`Network::forward_rows`, on the kernel
//! path eval would use), so its answer is the one `eval` counts. The two
//! agree to float rounding; with `--kernel gemm`, bit for bit.
//!
//! Every input is read and checked before anything is printed: a bad image
//! prints nothing and exits 1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use idx_softmax::checkpoint::{self, Checkpoint};
use idx_softmax::image::{self, GrayImage};
use idx_softmax::run_record::{self, recorded_shape};

use super::args::PredictArgs;
use super::common::{check_features, inference_kernel, load_test_split, pool, threads, TrainedOn};

/// Where a prediction's input came from.
enum Source {
    Image(PathBuf),
    Test { index: usize, label: u32 },
}

/// One input's logits.
struct Prediction {
    source: Source,
    logits: Vec<f32>,
}

/// Runs `predict` with `args`.
pub fn run(args: PredictArgs) -> Result<()> {
    let ck = checkpoint::load(&args.model)?;
    run_record::validate(&args.model, &ck)?;
    let model = &ck.network;
    let mut predictions = Vec::new();

    let images = args
        .images
        .iter()
        .map(|p| read_input(p, &ck, &args.model))
        .collect::<Result<Vec<_>>>()?;
    for (path, img) in args.images.iter().zip(&images) {
        let x = img.features();
        let mut logits = vec![0.0; model.classes()];
        model.forward_f32(&x, 1, &mut Vec::new(), &mut logits);
        predictions.push(Prediction {
            source: Source::Image(path.clone()),
            logits,
        });
    }

    if !args.test_index.is_empty() {
        predictions.extend(predict_test(&args, &ck)?);
    }

    let top = (args.top as usize).min(model.classes());
    for p in &predictions {
        let probs = softmax(&p.logits);
        let ranked = ranked(&probs);
        if args.json {
            println!("{}", prediction_json(p, &probs, &ranked[..top]));
        } else {
            println!("{}", prediction_line(p, &probs, &ranked[..top]));
        }
    }
    Ok(())
}

/// Reads an image and checks it fits the model: its size must be the
/// recorded sample shape when the checkpoint has one, and its pixel count
/// the model's feature count in any case.
fn read_input(path: &Path, ck: &Checkpoint, model_path: &Path) -> Result<GrayImage> {
    let img = image::read_gray(path)?;
    let k = ck.network.features();
    let (w, h) = (img.width, img.height);
    match recorded_shape(ck).as_deref() {
        Some(&[mh, mw]) if mh * mw == k && (h, w) != (mh, mw) => bail!(
            "{}: the image is {w}x{h} pixels, but the model {} takes {mw}x{mh} images",
            path.display(),
            model_path.display()
        ),
        _ if w * h != k => bail!(
            "{}: the image is {w}x{h} = {} pixels, but the model {} takes {k} features",
            path.display(),
            w * h,
            model_path.display()
        ),
        _ => Ok(img),
    }
}

/// The logits of the `--test-index` samples, computed as `eval` does.
fn predict_test(args: &PredictArgs, ck: &Checkpoint) -> Result<Vec<Prediction>> {
    let model = &ck.network;
    let trained_on = TrainedOn {
        model: &args.model,
        data_dir: run_record::recorded_data_dir(ck),
    };
    let loaded = load_test_split(&args.data, model.classes(), Some(trained_on))?;
    let split = &loaded.data;
    check_features(ck, &args.model, split)?;
    loaded.print_note();
    if let Some(&bad) = args.test_index.iter().find(|&&i| i >= split.len()) {
        bail!(
            "--test-index {bad} is out of range: {} holds {} test samples (0..{})",
            split.images.path().display(),
            split.len(),
            split.len()
        );
    }
    let samples = split.samples(model.classes())?;
    let kernel = inference_kernel(args.compute.kernel, ck, samples.as_u8().is_some())?;
    let rows: Vec<u32> = args.test_index.iter().map(|&i| i as u32).collect();
    let c = model.classes();
    let mut logits = vec![0.0f32; rows.len() * c];
    let mut xbuf = Vec::new();
    pool(threads(args.compute.threads))?
        .install(|| model.forward_rows(&samples, &rows, kernel, &mut xbuf, &mut logits));
    let labels = &split.labels;
    Ok(args
        .test_index
        .iter()
        .zip(logits.chunks_exact(c))
        .map(|(&index, z)| Prediction {
            source: Source::Test {
                index,
                label: labels.get(index),
            },
            logits: z.to_vec(),
        })
        .collect())
}

/// Softmax of `z`, in f64.
fn softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Class indices by decreasing probability; ties keep the lower class
/// first, so the first entry is the argmax `eval` counts.
fn ranked(probs: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx
}

fn prediction_json(p: &Prediction, probs: &[f64], top: &[usize]) -> Value {
    let top: Vec<Value> = top
        .iter()
        .map(|&c| json!({ "class": c, "probability": probs[c] }))
        .collect();
    let mut v = json!({ "predicted": top[0]["class"], "top": top });
    match &p.source {
        Source::Image(path) => v["image"] = json!(path.display().to_string()),
        Source::Test { index, label } => {
            v["test_index"] = json!(index);
            v["label"] = json!(label);
        }
    }
    v
}

fn prediction_line(p: &Prediction, probs: &[f64], top: &[usize]) -> String {
    let name = match &p.source {
        Source::Image(path) => path.display().to_string(),
        Source::Test { index, label } => format!("test #{index} (label {label})"),
    };
    let ranked: Vec<String> = top
        .iter()
        .map(|&c| format!("{c} ({:.4})", probs[c]))
        .collect();
    format!(
        "{name}: {}   top {}: {}",
        top[0],
        top.len(),
        ranked.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_ranking() {
        let p = softmax(&[1.0, 3.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(ranked(&p), [1, 2, 0, 3]);
        assert_eq!(p[3], 0.0);
    }

    #[test]
    fn json_lines() {
        let p = Prediction {
            source: Source::Test { index: 4, label: 1 },
            logits: vec![0.0, 2.0],
        };
        let probs = softmax(&p.logits);
        let v = prediction_json(&p, &probs, &ranked(&probs)[..1]);
        assert_eq!(v["predicted"], 1);
        assert_eq!(v["test_index"], 4);
        assert_eq!(v["top"].as_array().unwrap().len(), 1);
        assert!(prediction_line(&p, &probs, &ranked(&probs)).starts_with("test #4 (label 1): 1"));
    }
}
