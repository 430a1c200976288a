//! Class names: a `labels.txt` beside the IDX files (one name per line, in
//! class order), or a file named on the command line; recorded in the
//! checkpoint so that `eval` and `predict` show them without the file.

use std::path::{Path, PathBuf};

/// The file name looked for beside the IDX files.
pub const LABELS_FILE: &str = "labels.txt";
/// The checkpoint metadata key holding the names (a JSON array of strings).
pub const METADATA_KEY: &str = "class_names";
/// Largest labels file read.
const MAX_BYTES: u64 = 16 << 20;

/// A labels file that cannot be used. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// `dir/labels.txt`, if it exists.
pub fn beside(dir: &Path) -> Option<PathBuf> {
    let p = dir.join(LABELS_FILE);
    p.is_file().then_some(p)
}

/// Reads the names of `classes` classes from `path`: one per line, trimmed;
/// blank lines at the end are ignored, a blank name elsewhere, a duplicate
/// or a count other than `classes` is an error.
pub fn read(path: &Path, classes: usize) -> Result<Vec<String>, LabelsError> {
    let invalid = |reason: String| LabelsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let io = |error| LabelsError::Io {
        path: path.to_owned(),
        error,
    };
    use crate::fsutil::InputError;
    // A FIFO or a device would block or never end: refused unopened.
    let (file, meta) = crate::fsutil::open_regular(path).map_err(|e| match e {
        InputError::Io(e) => io(e),
        InputError::Directory => invalid("is a directory, not a labels file".into()),
        other => invalid(format!("{other}, expected a labels file")),
    })?;
    if meta.len() > MAX_BYTES {
        return Err(invalid(format!(
            "{} bytes is too large for a labels file (one class name per line)",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut bytes)
        .map_err(io)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid("is not UTF-8 text (one class name per line)".into()))?;
    let names = parse(&text).map_err(invalid)?;
    if names.len() != classes {
        return Err(invalid(format!(
            "{} class names for a model of {classes} classes",
            names.len()
        )));
    }
    Ok(names)
}

/// The names in `text`, one per line; see [`read`]. A byte-order mark at
/// the start (a file saved on Windows) is not part of the first name.
pub fn parse(text: &str) -> Result<Vec<String>, String> {
    let text = crate::fsutil::strip_bom(text);
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if names.is_empty() {
        return Err("holds no class names (one per line)".into());
    }
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(format!("line {} is blank: every class needs a name", i + 1));
    }
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|m| m == n) {
            return Err(format!("lines {} and {} both name {n:?}", j + 1, i + 1));
        }
    }
    Ok(names)
}

/// The names as checkpoint metadata.
pub fn to_metadata(names: &[String]) -> String {
    serde_json::to_string(names).expect("strings serialise")
}

/// The names recorded in checkpoint metadata, if valid for `classes`.
pub fn from_metadata(value: &str, classes: usize) -> Option<Vec<String>> {
    let names: Vec<String> = serde_json::from_str(value).ok()?;
    (names.len() == classes).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse("a\n b \r\nc\n\n").unwrap(), ["a", "b", "c"]);
        assert!(parse("a\n\nc").unwrap_err().contains("line 2"));
        assert!(parse("a\nb\na").unwrap_err().contains("lines 1 and 3"));
        assert!(parse("\n\n").is_err());
        assert_eq!(parse("\u{feff}zero\r\none\r\n").unwrap(), ["zero", "one"]);
        let names = vec!["T-shirt/top".to_string(), "x\"y".into()];
        assert_eq!(from_metadata(&to_metadata(&names), 2), Some(names));
        assert_eq!(from_metadata("[\"a\"]", 2), None);
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LABELS_FILE);
        std::fs::write(&p, "zero\none\n").unwrap();
        assert_eq!(beside(dir.path()), Some(p.clone()));
        assert_eq!(read(&p, 2).unwrap(), ["zero", "one"]);
        let e = read(&p, 3).unwrap_err().to_string();
        assert!(
            e.contains("labels.txt") && e.contains("2 class names"),
            "{e}"
        );
        std::fs::write(&p, [0xFF, 0xFE]).unwrap();
        assert!(read(&p, 2).unwrap_err().to_string().contains("UTF-8"));
        // Windows: a byte-order mark and CRLF line ends.
        std::fs::write(&p, "\u{feff}zero\r\none\r\n").unwrap();
        assert_eq!(read(&p, 2).unwrap(), ["zero", "one"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("labels.txt");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Reading it would wait for a writer forever.
        let e = read(&fifo, 2).unwrap_err().to_string();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
    }
}
