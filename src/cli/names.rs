//! The command line's names for the library's settings, and library errors
//! worded with them: a rule broken in the library reads `--lr must be …`
//! here, where Python reads `lr must be …`.

use idx_softmax::run::{RunError, SpecError, TrainError};
use idx_softmax::setting::{worded, Setting};

/// The flag that sets `s`.
pub fn flag(s: Setting) -> String {
    match s {
        Setting::Kernel => "--kernel".into(),
        Setting::Conv | Setting::ConvKernel => "--conv".into(),
        Setting::Save => "--save".into(),
        Setting::Resume => "--resume".into(),
        Setting::Preprocess => "--preprocess".into(),
        other => format!("--{}", other.key().replace('_', "-")),
    }
}

/// The error chain of `e`, one line, each link from this library worded
/// with the flags' names (as anyhow's `{:#}` prints a chain otherwise), and
/// a hint where a checkpoint's record and a flag disagree.
pub fn describe(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for link in e.chain() {
        let text = worded(link, &flag).unwrap_or_else(|| link.to_string());
        // A library error wraps its cause in its own message: the chain's
        // next link would repeat it.
        let repeats = parts.last().is_some_and(|p| p.ends_with(&text));
        if !repeats {
            parts.push(text);
        }
    }
    let mut line = parts.join(": ");
    if let Some(SpecError::Mismatch { setting, .. }) = spec_error(e) {
        line += &match setting {
            Setting::Kernel => " (leave --kernel out to use the checkpoint's)".to_owned(),
            s => format!(
                " (leave {} out to continue with the checkpoint's value)",
                flag(*s)
            ),
        };
    }
    line
}

/// The library's rule broken by a flag's value, if that is what `e` is:
/// a usage error (exit status 2). A value that only disagrees with a
/// checkpoint is not one.
pub fn usage_message(e: &anyhow::Error) -> Option<String> {
    match spec_error(e)? {
        SpecError::Mismatch { .. } | SpecError::AlreadyTrained { .. } => None,
        other => Some(other.message(&flag)),
    }
}

/// The setting rule `e` breaks, wherever it sits in the library's errors.
fn spec_error(e: &anyhow::Error) -> Option<&SpecError> {
    e.chain().find_map(|link| {
        if let Some(s) = link.downcast_ref::<SpecError>() {
            return Some(s);
        }
        match link.downcast_ref::<RunError>() {
            Some(RunError::Spec(s)) | Some(RunError::Train(TrainError::Spec(s))) => Some(s),
            _ => match link.downcast_ref::<TrainError>() {
                Some(TrainError::Spec(s)) => Some(s),
                _ => None,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_wording() {
        assert_eq!(flag(Setting::BatchSize), "--batch-size");
        assert_eq!(flag(Setting::CacheDir), "--cache-dir");
        let e = anyhow::Error::new(idx_softmax::run::spec::check_lr(0.0).unwrap_err());
        assert_eq!(describe(&e), "--lr must be finite and > 0, got 0");
        assert_eq!(
            usage_message(&e).as_deref(),
            Some("--lr must be finite and > 0, got 0")
        );
        let m = anyhow::Error::new(SpecError::Mismatch {
            setting: Setting::Lr,
            given: "0.2".into(),
            recorded: "0.1".into(),
            source: "a.st".into(),
        });
        assert_eq!(
            describe(&m),
            "--lr 0.2 does not match a.st, which was trained with lr 0.1 (leave --lr out to continue with the checkpoint's value)"
        );
        assert!(usage_message(&m).is_none());
    }
}
