//! Which data directory a command reads: the one given, else the one a
//! model was trained on (its checkpoint records it), else
//! `$IDX_SOFTMAX_DATA_DIR`, else the bundled MNIST.

use std::path::{Path, PathBuf};

use crate::setting::{Naming, Setting};

use super::DataError;

/// The bundled MNIST directory, as seen from this crate's source tree.
pub const BUNDLED_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// Environment variable naming the data directory when none is given.
pub const DATA_DIR_ENV: &str = "IDX_SOFTMAX_DATA_DIR";

/// The data directory when none is given: `$IDX_SOFTMAX_DATA_DIR`, else
/// the bundled MNIST where this build's source tree still has it, else
/// `data/mnist` under the current directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let bundled = PathBuf::from(BUNDLED_MNIST);
    if bundled.is_dir() {
        bundled
    } else {
        PathBuf::from("data/mnist")
    }
}

/// A data directory chosen, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub dir: PathBuf,
    /// Whether `dir` is the directory the model was trained on.
    pub from_model: bool,
    /// Set when a model was trained on another directory than the one
    /// given: say so (once the data is known to fit the model, so that a
    /// failure stays one line).
    pub note: Option<DataNote>,
}

/// The data given is not the data the model was trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct DataNote {
    pub model: PathBuf,
    pub recorded: PathBuf,
    pub given: PathBuf,
}

impl DataNote {
    /// The note, one line, naming the data directory setting by `name`.
    pub fn message(&self, name: Naming<'_>) -> String {
        format!(
            "note: {} was trained on {}; using {} {}",
            self.model.display(),
            self.recorded.display(),
            name(Setting::DataDir),
            self.given.display()
        )
    }
}

/// The data directory to read: `given`, else, for a `model` (its path and
/// the directory its checkpoint records), the model's own data (which must
/// still exist), else [`default_data_dir`] (which must exist when it is
/// the bundled MNIST).
pub fn locate(
    given: Option<&Path>,
    model: Option<(&Path, Option<&str>)>,
) -> Result<Located, DataError> {
    let recorded = model.and_then(|(m, r)| Some((m, PathBuf::from(r?))));
    match (given, recorded) {
        (Some(given), Some((model, recorded))) => {
            let same = match (
                std::fs::canonicalize(given),
                std::fs::canonicalize(&recorded),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => given == recorded,
            };
            let note = (!same).then(|| DataNote {
                model: model.to_owned(),
                recorded,
                given: given.to_owned(),
            });
            Ok(Located {
                dir: given.to_owned(),
                from_model: same,
                note,
            })
        }
        (Some(given), None) => Ok(Located {
            dir: given.to_owned(),
            from_model: false,
            note: None,
        }),
        (None, Some((_, recorded))) if recorded.is_dir() => Ok(Located {
            dir: recorded,
            from_model: true,
            note: None,
        }),
        (None, Some((model, recorded))) => Err(DataError::ModelDataGone {
            model: model.to_owned(),
            recorded,
        }),
        (None, None) => {
            let dir = default_data_dir();
            if std::env::var_os(DATA_DIR_ENV).is_none_or(|d| d.is_empty()) && !dir.is_dir() {
                return Err(DataError::NoBundledData { fallback: dir });
            }
            Ok(Located {
                dir,
                from_model: false,
                note: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_own_data_or_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let m = Path::new("m.st");
        let got = locate(None, Some((m, Some(d)))).unwrap();
        assert!(got.from_model && got.note.is_none() && got.dir == dir.path());
        let other = tempfile::tempdir().unwrap();
        let got = locate(Some(other.path()), Some((m, Some(d)))).unwrap();
        let note = got.note.unwrap().message(&|_| "--data-dir".into());
        assert!(
            note.starts_with("note: m.st was trained on") && note.contains("--data-dir"),
            "{note}"
        );
        let e = locate(None, Some((m, Some("/nonexistent/x")))).unwrap_err();
        assert!(
            e.message(&|_| "--data-dir".into())
                .ends_with("pass --data-dir to choose the data"),
            "{e}"
        );
    }
}
