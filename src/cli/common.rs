//! What the subcommands share: finding and loading the data, the thread
//! pool, checking output paths before any work, number formatting.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use idx_softmax::dataset::{find_file, Dataset, GzCache, IdxFile, LoadOptions, Split};
use idx_softmax::model::Model;
use idx_softmax::train::TrainConfig;

use super::args::DataArgs;

/// `--data-dir`, else the bundled MNIST.
pub fn data_dir(args: &DataArgs) -> PathBuf {
    if let Some(d) = &args.data_dir {
        return d.clone();
    }
    let bundled = PathBuf::from(idx_softmax::BUNDLED_MNIST);
    if bundled.is_dir() {
        bundled
    } else {
        PathBuf::from("data/mnist")
    }
}

/// `--cache-dir`, else the default search order.
fn cache(args: &DataArgs) -> GzCache {
    match &args.cache_dir {
        Some(d) => GzCache::at(d),
        None => GzCache::default_dirs(),
    }
}

/// A loaded dataset, where it came from and how long loading took.
pub struct Loaded<T> {
    pub dir: PathBuf,
    pub data: T,
    pub seconds: f64,
}

/// Loads the whole dataset (both splits).
pub fn load_dataset(args: &DataArgs, classes: Option<usize>) -> Result<Loaded<Dataset>> {
    let dir = data_dir(args);
    let opts = LoadOptions {
        cache: cache(args),
        classes,
    };
    let start = Instant::now();
    let data = Dataset::load(&dir, &opts)?;
    Ok(Loaded {
        dir,
        data,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Loads only the test split, for a model with `classes` classes: every
/// test label must be below it.
pub fn load_test_split(args: &DataArgs, classes: usize) -> Result<Loaded<Split>> {
    let dir = data_dir(args);
    let start = Instant::now();
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{}: is not a directory", dir.display()),
        Err(e) => bail!("{}: {e}", dir.display()),
    }
    let cache = cache(args);
    let images = find_file(&dir, "test images", "t10k-images", "idx3-ubyte")?;
    let labels = find_file(&dir, "test labels", "t10k-labels", "idx1-ubyte")?;
    let split = Split::open(
        IdxFile::open(&images, &cache)?,
        IdxFile::open(&labels, &cache)?,
    )?;
    if let Some((i, v)) = split.labels.first_at_least(classes) {
        bail!(
            "{}: label {i} is {v}, but the model has {classes} classes",
            split.labels.path().display()
        );
    }
    Ok(Loaded {
        dir,
        data: split,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Checks that `model` takes the samples of `split` (same feature count).
pub fn check_features(model: &Model, model_path: &Path, split: &Split) -> Result<()> {
    let k = split.images.features();
    if model.features != k {
        bail!(
            "{}: the model takes {} features, but {} holds samples of {} ({k} features)",
            model_path.display(),
            model.features,
            split.images.path().display(),
            super::run_file::shape_string(split.images.sample_shape())
        );
    }
    Ok(())
}

/// `--threads`, else the number of CPUs.
pub fn threads(flag: Option<u32>) -> usize {
    flag.map_or_else(|| TrainConfig::default().threads, |t| t as usize)
}

/// A rayon pool of `threads` threads for evaluation.
pub fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .with_context(|| format!("cannot start {threads} threads"))
}

/// A usage error found after parsing (a flag that cannot apply to the data
/// it meets): reported as clap reports its own, with exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `--kernel K` with a fused path K (avx512, avx2, portable) on data that
/// is not u8: only gemm runs on f32 and f64 data, so it is a usage error.
pub fn check_kernel_flag(
    flag: Option<idx_softmax::kernels::KernelPath>,
    ty: idx_softmax::idx::ElementType,
    data_dir: &Path,
) -> Result<()> {
    match flag {
        Some(k) if k.is_fused() => Err(UsageError(format!(
            "--kernel {k} runs on u8 images only, but {} holds {ty} images; leave --kernel out or pass --kernel gemm",
            data_dir.display()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Checks, before any work, that `path` can be written by `flag`: it is
/// not a directory, a device or another non-regular file, its directory
/// exists, and a file can be created there (see
/// [`idx_softmax::fsutil::probe_output`]).
pub fn check_output(path: &Path, flag: &str) -> Result<()> {
    idx_softmax::fsutil::probe_output(path)
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// Checks that no two of the `flags` name one file (compared by canonical
/// directory and file name, so `./a` and `a` collide), except the pairs in
/// `allowed`. The message names both flags.
pub fn distinct_outputs(
    flags: &[(&str, Option<&PathBuf>)],
    allowed: &[(&str, &str)],
) -> Result<(), String> {
    let given: Vec<(&str, &PathBuf, PathBuf)> = flags
        .iter()
        .filter_map(|&(f, p)| {
            let p = p?;
            Some((
                f,
                p,
                idx_softmax::fsutil::output_identity(p).unwrap_or_else(|| p.clone()),
            ))
        })
        .collect();
    for (i, (fa, pa, ida)) in given.iter().enumerate() {
        for (fb, pb, idb) in &given[i + 1..] {
            let ok = allowed
                .iter()
                .any(|&(x, y)| (x, y) == (*fa, *fb) || (y, x) == (*fa, *fb));
            if ida == idb && !ok {
                return Err(format!(
                    "{fa} {} and {fb} {} name the same file; give each its own path",
                    pa.display(),
                    pb.display()
                ));
            }
        }
    }
    Ok(())
}

/// The `(height, width)` of 2-D samples, for weight pictures; `what` names
/// the data in the error.
pub fn image_shape(shape: &[usize], what: &Path) -> Result<(usize, usize)> {
    match shape {
        [h, w] => Ok((*h, *w)),
        _ => bail!(
            "--weights-png needs 2-D samples (height x width), but {} holds samples of shape {}",
            what.display(),
            super::run_file::shape_string(shape)
        ),
    }
}

/// The f32 as its shortest decimal form, widened (0.1f32 → 0.1, not
/// 0.10000000149011612).
pub fn f32_as_printed(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Anonymous resident memory (heap, stacks; not mapped files) in KiB, from
/// /proc/self/status, where there is one.
pub fn rss_anon_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_checks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_output(&dir.path().join("a.png"), "--x").is_ok());
        assert!(check_output(dir.path(), "--x").is_err());
        let e = check_output(&dir.path().join("no/a.png"), "--x").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(check_output(Path::new("a.png"), "--x").is_ok());
    }

    #[test]
    fn shapes_for_pictures() {
        assert_eq!(image_shape(&[28, 28], Path::new("d")).unwrap(), (28, 28));
        assert!(image_shape(&[784], Path::new("d")).is_err());
        assert_eq!(f32_as_printed(0.1), 0.1);
    }
}
