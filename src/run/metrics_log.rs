//! A run's metrics file: one JSON object per epoch, one per line, rewritten
//! atomically after every epoch, so the file is always complete (it lists
//! the epochs finished so far) and a failure never leaves a partial file.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::fsutil::write_atomic;

/// The metrics file being written, if any.
pub struct MetricsLog {
    path: Option<PathBuf>,
    lines: Vec<String>,
}

impl MetricsLog {
    /// A log writing to `path` (nothing when `None`). A run resumed after
    /// `epochs_done` epochs keeps the existing file's lines for epochs up to
    /// `epochs_done`, so the file covers the whole run; other lines (and a
    /// missing or unreadable file) are dropped.
    pub fn new(path: Option<PathBuf>, epochs_done: usize) -> Self {
        let mut lines = Vec::new();
        if let (Some(p), true) = (&path, epochs_done > 0) {
            if let Ok(text) = crate::fsutil::read_regular_to_string(p) {
                lines = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<Value>(l)
                            .ok()
                            .and_then(|v| v["epoch"].as_u64())
                            .is_some_and(|e| e >= 1 && e as usize <= epochs_done)
                    })
                    .map(str::to_owned)
                    .collect();
            }
        }
        Self { path, lines }
    }

    /// Appends one epoch's record and rewrites the file.
    pub fn push(&mut self, record: &Value) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.lines.push(record.to_string());
        write_atomic(path, |f| {
            let mut out = std::io::BufWriter::new(f);
            for line in &self.lines {
                writeln!(out, "{line}")?;
            }
            out.flush()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_and_carries_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut log = MetricsLog::new(Some(path.clone()), 0);
        for e in 1..=3 {
            log.push(&json!({ "epoch": e })).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        // Resumed after epoch 2: epoch 3's old line goes.
        let mut log = MetricsLog::new(Some(path.clone()), 2);
        log.push(&json!({ "epoch": 3, "again": true })).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains("again"));
        MetricsLog::new(None, 0).push(&json!({})).unwrap();
    }
}
