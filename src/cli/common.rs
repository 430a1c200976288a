//! What the subcommands share: loading data from the directory the library
//! locates, checking output paths before any work, class names, memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use idx_softmax::data::{locate, present_files, DataError, GzCache};
use idx_softmax::fsutil::{check_distinct, Named};
use idx_softmax::labels;
use idx_softmax::model::SavedModel;
use idx_softmax::plot::{self, Format};
use idx_softmax::setting::Setting;

use super::args::DataArgs;
use super::names::flag;

/// Something loaded from a data directory, where from, and how long it
/// took.
pub struct Loaded<T> {
    pub dir: PathBuf,
    pub data: T,
    pub seconds: f64,
    /// Whether `dir` is the directory the model was trained on.
    pub from_model: bool,
    /// A note for stderr: the data is not the data the model was trained
    /// on.
    note: Option<String>,
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

/// Loads with `open(dir, cache)` from the data directory the library
/// locates ([`locate`]): `--data-dir`, else, for a `model` (its path and
/// recorded data directory), the model's own, else the default. Before
/// anything is opened, `outputs` (flag, path) are checked against every
/// file of that dataset ([`check_against_data`]).
pub fn load<T>(
    args: &DataArgs,
    model: Option<(&Path, Option<&str>)>,
    outputs: &[(&str, Option<&PathBuf>)],
    open: impl FnOnce(&Path, GzCache) -> Result<T, DataError>,
) -> Result<Loaded<T>> {
    let located = locate(args.data_dir.as_deref(), model)?;
    check_against_data(outputs, &located.dir)?;
    let cache = match &args.cache_dir {
        Some(d) => GzCache::at(d),
        None => GzCache::default_dirs(),
    };
    let start = Instant::now();
    let data = open(&located.dir, cache)?;
    Ok(Loaded {
        dir: located.dir,
        data,
        seconds: start.elapsed().as_secs_f64(),
        from_model: located.from_model,
        note: located.note.map(|n| n.message(&flag)),
    })
}

/// Refuses (a usage error) any of `outputs` that is a file of the dataset
/// in `dir`, in any spelling present (raw and `.gz`:
/// [`idx_softmax::data::present_files`]), or the `labels.txt` beside it.
pub fn check_against_data(outputs: &[(&str, Option<&PathBuf>)], dir: &Path) -> Result<()> {
    let data_dir = flag(Setting::DataDir);
    let mut files: Vec<(String, PathBuf)> = present_files(dir)
        .into_iter()
        .map(|(role, path)| (format!("the {role} of {data_dir}"), path))
        .collect();
    if let Some(path) = labels::beside(dir) {
        files.push((format!("the class names of {data_dir}"), path));
    }
    let inputs: Vec<Named<'_>> = files.iter().map(|(n, p)| Named::new(n, p)).collect();
    distinct(outputs, &inputs, &[])
}

/// [`check_distinct`] over the flags given, as a usage error.
pub fn distinct(
    outputs: &[(&str, Option<&PathBuf>)],
    inputs: &[Named<'_>],
    allowed: &[(&str, &str)],
) -> Result<()> {
    let outputs: Vec<Named<'_>> = outputs
        .iter()
        .filter_map(|&(f, p)| Some(Named::new(f, p?)))
        .collect();
    check_distinct(&outputs, inputs, allowed).map_err(|e| UsageError(e.to_string()).into())
}

/// A model file's own data: its path and the directory it records.
pub fn trained_on(model: &SavedModel) -> Option<(&Path, Option<&str>)> {
    Some((model.path(), model.data_dir()))
}

/// The class names: `--labels`, else the model's (`model`), else a
/// `labels.txt` beside the data, else none.
pub fn class_names(
    flag_path: Option<&Path>,
    model: Option<&SavedModel>,
    data_dir: &Path,
    classes: usize,
) -> Result<Vec<String>> {
    if let Some(path) = flag_path {
        return Ok(labels::read(path, classes)?);
    }
    if let Some(names) = model.and_then(SavedModel::class_names) {
        return Ok(names);
    }
    match labels::beside(data_dir) {
        Some(path) => Ok(labels::read(&path, classes)?),
        None => Ok(Vec::new()),
    }
}

/// A usage error found after parsing (a flag that cannot apply to the data
/// it meets, two flags naming one file): reported as clap reports its own,
/// with exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Checks, before any work, that no two of `outputs` (flag, path) name one
/// file and that none is one of `inputs` (a usage error naming both flags;
/// [`check_distinct`]: the same device and inode, or the same canonical
/// path, so `./a` and `a` collide), except the pairs in `allowed`; then
/// that each output can be written (see
/// [`idx_softmax::fsutil::probe_output`]).
pub fn check_outputs(
    outputs: &[(&str, Option<&PathBuf>)],
    inputs: &[(&str, Option<&PathBuf>)],
    allowed: &[(&str, &str)],
) -> Result<()> {
    let inputs: Vec<Named<'_>> = inputs
        .iter()
        .filter_map(|&(f, p)| Some(Named::new(f, p?)))
        .collect();
    distinct(outputs, &inputs, allowed)?;
    for &(flag, path) in outputs {
        if let Some(p) = path {
            idx_softmax::fsutil::probe_output(p)
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Refuses (a usage error naming the flag) a picture asked for in a format
/// it cannot be written in, decided by its extension ([`plot::format_of`]).
pub fn check_formats(pictures: &[(&str, Option<&PathBuf>, &'static [Format])]) -> Result<()> {
    for &(flag, path, formats) in pictures {
        if let Some(p) = path {
            plot::format_of(p, formats)
                .map_err(|e| UsageError(format!("{flag} {}: {}", p.display(), e.reason())))?;
        }
    }
    Ok(())
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
        let a = dir.path().join("a.png");
        assert!(check_outputs(&[("--x", Some(&a))], &[], &[]).is_ok());
        let d = dir.path().to_owned();
        assert!(check_outputs(&[("--x", Some(&d))], &[], &[]).is_err());
        let missing = dir.path().join("no/a.png");
        let e = check_outputs(&[("--x", Some(&missing))], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_outputs(&[("--x", Some(&a))], &[("--y", Some(&a))], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--x") && e.to_string().contains("--y"),
            "{e}"
        );
        assert!(check_outputs(
            &[("--x", Some(&a))],
            &[("--y", Some(&a))],
            &[("--y", "--x")]
        )
        .is_ok());
        let pdf = dir.path().join("c.pdf");
        let e = check_formats(&[("--plot", Some(&pdf), plot::CHART_FORMATS)]).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(e.to_string().starts_with("--plot "), "{e}");
        // The dataset's files, in every spelling, and labels.txt beside it.
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), b"x").unwrap();
        std::fs::write(dir.path().join("t10k-labels.idx1-ubyte.gz"), b"y").unwrap();
        std::fs::write(dir.path().join("labels.txt"), b"a").unwrap();
        for name in [
            "t10k-labels-idx1-ubyte",
            "t10k-labels.idx1-ubyte.gz",
            "labels.txt",
        ] {
            let out = dir.path().join(".").join(name);
            let e = check_against_data(&[("--save", Some(&out))], dir.path()).unwrap_err();
            assert!(e.to_string().contains("--data-dir"), "{e}");
        }
        assert!(check_against_data(&[("--save", Some(&a))], dir.path()).is_ok());
    }
}
