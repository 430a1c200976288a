//! `export`: a saved model as an ONNX file, for other runtimes
//! ([`idx_softmax::onnx::export`]).

use anyhow::{Context, Result};
use serde_json::json;

use idx_softmax::model::SavedModel;
use idx_softmax::onnx;

use super::args::ExportArgs;
use super::common::check_outputs;

/// Runs `export` with `args`.
pub fn run(args: ExportArgs) -> Result<()> {
    check_outputs(
        &[("--onnx", Some(&args.onnx))],
        &[("--model", Some(&args.model))],
        &[],
    )?;
    let model = SavedModel::load(&args.model)?;
    let bytes = model
        .to_onnx()
        .with_context(|| format!("{}: cannot export", args.model.display()))?;
    onnx::write(&args.onnx, &bytes).with_context(|| format!("--onnx {}", args.onnx.display()))?;
    let net = model.network();
    if args.json {
        let out = json!({
            "model": args.model.display().to_string(),
            "onnx": args.onnx.display().to_string(),
            "bytes": bytes.len(),
            "opset": onnx::DEFAULT_OPSET,
            "layers": net.describe(),
            "features": net.features(),
            "classes": net.classes(),
        });
        println!("{out}");
    } else {
        println!(
            "exported {} ({} network, opset {}, {} bytes)",
            args.onnx.display(),
            net.describe(),
            onnx::DEFAULT_OPSET,
            bytes.len()
        );
    }
    Ok(())
}
