//! `augment`: an augmented copy of a dataset on disk
//! ([`idx_softmax::data::expand`]).

use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use idx_softmax::data::augment::{self, Augmenter, DATASET_KIND};
use idx_softmax::data::{expand, Dataset, LoadOptions};
use idx_softmax::infer;
use idx_softmax::run::RunSpec;

use super::args::AugmentCmdArgs;
use super::common::{load, rss_anon_kb};
use super::report::Progress;

/// Runs `augment` with `args`.
pub fn run(args: AugmentCmdArgs) -> Result<()> {
    let a = &args.aug;
    // The augmentation by the training flags' rules (and the library's
    // defaults), elastic unless another kind is named.
    let spec = RunSpec {
        augment: Some(a.augment.unwrap_or(DATASET_KIND)),
        max_shift: a.max_shift,
        rotate: a.rotate,
        scale: a.scale,
        shear: a.shear,
        translate: a.translate,
        sigma: a.sigma,
        alpha: a.alpha,
        seed: args.seed,
        threads: args.compute.threads,
        ..RunSpec::default()
    };
    let cfg = spec.resolve(None)?.config;
    expand::check_out(&args.out)?;
    let outs = [("--out", Some(&args.out))];
    let loaded = load(&args.data, None, &outs, |dir, cache| {
        Dataset::load(
            dir,
            &LoadOptions {
                cache,
                classes: None,
            },
        )
    })?;
    if loaded.dir.canonicalize().ok() == args.out.canonicalize().ok() {
        return Err(super::common::UsageError(format!(
            "--out {} is the data directory: give another one",
            args.out.display()
        ))
        .into());
    }
    let data = &loaded.data;
    let shape = augment::shape_of(data.train.images.sample_shape())?;
    let augmenter = Augmenter::new(cfg.augment, shape)?;
    let n = data.train.len() as u64;
    let total = n * (args.copies as u64 + 1);
    let bar = Progress::new(total, 0, 1);
    let start = Instant::now();
    let written = infer::thread_pool(cfg.threads)?.install(|| {
        expand::write(data, &augmenter, cfg.seed, args.copies, &args.out, &|d| {
            bar.set_position(d)
        })
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let out = json!({
            "out": args.out.display().to_string(),
            "data_dir": loaded.dir.display().to_string(),
            "augment": cfg.augment.record(),
            "seed": cfg.seed,
            "copies": args.copies,
            "train_samples": written.train_samples,
            "test_samples": written.test_samples,
            "bytes": written.bytes,
            "seconds": seconds,
            "samples_per_second": written.train_samples as f64 / seconds,
            "threads": cfg.threads,
            "rss_anon_kb": rss_anon_kb(),
        });
        println!("{out}");
    } else {
        println!(
            "wrote    {} ({} training samples: {} and {} deformed cop{} by {}, seed {}; {} test samples; {:.2} GB in {:.1} s)",
            args.out.display(),
            written.train_samples,
            n,
            args.copies,
            if args.copies == 1 { "y" } else { "ies" },
            cfg.augment,
            cfg.seed,
            written.test_samples,
            written.bytes as f64 / 1e9,
            seconds
        );
    }
    Ok(())
}
