//! What the subcommands share: finding and loading the data, the thread
//! pool, checking output paths before any work, number formatting.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use idx_softmax::checkpoint::Checkpoint;
use idx_softmax::config;
use idx_softmax::dataset::{find_file, Dataset, GzCache, IdxFile, LoadOptions, Split};
use idx_softmax::kernels::KernelPath;
use idx_softmax::labels;
use idx_softmax::run_record::{recorded_kernel, recorded_shape, shape_string};
use idx_softmax::train::TrainConfig;

use super::args::DataArgs;

/// `--data-dir` (or `$IDX_SOFTMAX_DATA_DIR`), else the bundled MNIST: the
/// source tree's `data/mnist` (a path compiled into the binary), else
/// `data/mnist` under the current directory.
pub fn data_dir(args: &DataArgs) -> PathBuf {
    match &args.data_dir {
        Some(d) => d.clone(),
        None => idx_softmax::default_data_dir(),
    }
}

/// Fails, saying what to do, when no `--data-dir` was given and the bundled
/// MNIST is gone (an installed binary whose source tree was removed).
pub fn check_data_dir(args: &DataArgs, dir: &Path) -> Result<()> {
    if args.data_dir.is_none() && !dir.is_dir() {
        bail!(
            "the bundled MNIST is not at {} (this binary was built from a source tree that is gone) nor at {}: pass --data-dir DIR or set IDX_SOFTMAX_DATA_DIR to a directory holding the four IDX files",
            idx_softmax::BUNDLED_MNIST,
            dir.display()
        );
    }
    Ok(())
}

/// The class names for a model of `ck`: `--labels`, else the checkpoint's,
/// else a `labels.txt` beside the IDX files, else none.
pub fn class_names(flag: Option<&Path>, ck: &Checkpoint, data: &DataArgs) -> Result<Vec<String>> {
    let classes = ck.network.classes();
    if let Some(path) = flag {
        return Ok(labels::read(path, classes)?);
    }
    if let Some(names) = idx_softmax::run_record::recorded_names(ck) {
        return Ok(names);
    }
    match labels::beside(&data_dir(data)) {
        Some(path) => Ok(labels::read(&path, classes)?),
        None => Ok(Vec::new()),
    }
}

/// `--cache-dir`, else the default search order.
fn cache(args: &DataArgs) -> GzCache {
    match &args.cache_dir {
        Some(d) => GzCache::at(d),
        None => GzCache::default_dirs(),
    }
}

/// The model a command works with, and the data directory its checkpoint
/// records (as `--save` writes it: absolute).
#[derive(Clone, Copy, Debug)]
pub struct TrainedOn<'a> {
    pub model: &'a Path,
    pub data_dir: Option<&'a str>,
}

/// The data directory to use, and whether it is the one the model was
/// trained on, taken from its checkpoint: without `--data-dir`, a model's
/// own data (it must still exist); with a `--data-dir` that differs from
/// it, a note says so (printed by [`Loaded::print_note`] once the data
/// is known to fit the model, so a failure stays one line).
fn choose_data_dir(
    args: &DataArgs,
    trained_on: Option<TrainedOn<'_>>,
) -> Result<(PathBuf, bool, Option<String>)> {
    let Some(TrainedOn {
        model,
        data_dir: Some(recorded),
    }) = trained_on
    else {
        let dir = data_dir(args);
        check_data_dir(args, &dir)?;
        return Ok((dir, false, None));
    };
    let recorded = PathBuf::from(recorded);
    match &args.data_dir {
        Some(given) => {
            let same = match (std::fs::canonicalize(given), std::fs::canonicalize(&recorded)) {
                (Ok(a), Ok(b)) => a == b,
                _ => given == &recorded,
            };
            let note = (!same).then(|| {
                format!(
                    "note: {} was trained on {}; using --data-dir {}",
                    model.display(),
                    recorded.display(),
                    given.display()
                )
            });
            Ok((given.clone(), same, note))
        }
        None if recorded.is_dir() => Ok((recorded, true, None)),
        None => bail!(
            "{}: the model was trained on {}, which is not a directory here; pass --data-dir to choose the data",
            model.display(),
            recorded.display()
        ),
    }
}

/// A loaded dataset, where it came from and how long loading took.
pub struct Loaded<T> {
    pub dir: PathBuf,
    pub data: T,
    pub seconds: f64,
    /// Whether `dir` is the directory the model was trained on (as its
    /// checkpoint records it).
    pub from_model: bool,
    /// A note for stderr: the data is not the data the model was trained on.
    pub note: Option<String>,
}

impl<T> Loaded<T> {
    /// Prints the note about the data directory, if there is one.
    pub fn print_note(&self) {
        if let Some(n) = &self.note {
            eprintln!("{n}");
        }
    }

    /// For the report's `data` line: `; the data the model was trained on`
    /// when `dir` came from the model's checkpoint, else nothing.
    pub fn source(&self) -> &'static str {
        if self.from_model {
            "; the data the model was trained on"
        } else {
            ""
        }
    }
}

/// Loads the whole dataset (both splits); with `trained_on`, from the
/// directory the model was trained on unless `--data-dir` says otherwise.
pub fn load_dataset(
    args: &DataArgs,
    classes: Option<usize>,
    trained_on: Option<TrainedOn<'_>>,
) -> Result<Loaded<Dataset>> {
    let (dir, from_model, note) = choose_data_dir(args, trained_on)?;
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
        from_model,
        note,
    })
}

/// Loads only the test split, for a model with `classes` classes: every
/// test label must be below it.
pub fn load_test_split(
    args: &DataArgs,
    classes: usize,
    trained_on: Option<TrainedOn<'_>>,
) -> Result<Loaded<Split>> {
    let (dir, from_model, note) = choose_data_dir(args, trained_on)?;
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
        from_model,
        note,
    })
}

/// Checks that the model `ck` takes the samples of `split`: the same
/// feature count and, when the checkpoint records one, the same sample
/// shape (a 28×28 model refuses 14×56 images).
pub fn check_features(ck: &Checkpoint, model_path: &Path, split: &Split) -> Result<()> {
    let network = &ck.network;
    let k = split.images.features();
    let shape = split.images.sample_shape();
    if network.features() != k {
        bail!(
            "{}: the model takes {} features, but {} holds samples of {} ({k} features)",
            model_path.display(),
            network.features(),
            split.images.path().display(),
            shape_string(shape)
        );
    }
    if let Some(recorded) = recorded_shape(ck) {
        if recorded != shape {
            bail!(
                "{}: the model was trained on samples of {}, but {} holds samples of {}",
                model_path.display(),
                shape_string(&recorded),
                split.images.path().display(),
                shape_string(shape)
            );
        }
    }
    Ok(())
}

/// The kernel path `eval` and `predict` run `ck`'s network on, for u8 (or
/// not) samples: `--kernel` or `$IDX_SOFTMAX_KERNEL` if given (checked by
/// the library's rule), else the one that trained it where it serves, else
/// the best one for the data.
pub fn inference_kernel(
    flag: Option<KernelPath>,
    ck: &Checkpoint,
    u8_samples: bool,
) -> Result<KernelPath> {
    if let Some(k) = super::settings::explicit_kernel(flag)? {
        return Ok(config::kernel_for(Some(k), u8_samples)?);
    }
    Ok(config::inference_kernel(recorded_kernel(ck), u8_samples)?)
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
            shape_string(shape)
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
    fn missing_bundled_data_says_what_to_do() {
        let args = DataArgs::default();
        let e = check_data_dir(&args, Path::new("/nonexistent/data/mnist")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--data-dir") && msg.contains("IDX_SOFTMAX_DATA_DIR"),
            "{msg}"
        );
        assert!(msg.contains(idx_softmax::BUNDLED_MNIST), "{msg}");
        // With --data-dir, the loader's own error names the directory.
        let args = DataArgs {
            data_dir: Some("/nonexistent".into()),
            cache_dir: None,
        };
        assert!(check_data_dir(&args, Path::new("/nonexistent")).is_ok());
    }

    #[test]
    fn shapes_for_pictures() {
        assert_eq!(image_shape(&[28, 28], Path::new("d")).unwrap(), (28, 28));
        assert!(image_shape(&[784], Path::new("d")).is_err());
        assert_eq!(f32_as_printed(0.1), 0.1);
    }
}
