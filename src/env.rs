//! Environment variables: the one rule for boolean ones, and the check of
//! those the library reads itself.
//!
//! A boolean variable (every `IDX_SOFTMAX_<FLAG>` of a command-line switch,
//! and [`NO_PIN_ENV`], which the engine reads) is on for `1`, `true`,
//! `yes` or `on` and off for `0`, `false`, `no` or `off`, in any case; an
//! empty value counts as unset (off). Anything else is refused with a
//! message naming the variable, never guessed at.

use std::fmt;

pub use crate::engine::placement::NO_PIN_ENV;

/// The values that turn a boolean variable on.
pub const ON: [&str; 4] = ["1", "true", "yes", "on"];
/// The values that turn it off (and the empty value: unset).
pub const OFF: [&str; 4] = ["0", "false", "no", "off"];

/// A boolean variable's value by the rule above: `None` for a value that
/// is not one of the words (surrounding spaces are ignored).
pub fn switch(value: &str) -> Option<bool> {
    let v = value.trim();
    if v.is_empty() || OFF.iter().any(|w| v.eq_ignore_ascii_case(w)) {
        Some(false)
    } else if ON.iter().any(|w| v.eq_ignore_ascii_case(w)) {
        Some(true)
    } else {
        None
    }
}

/// A boolean variable set to something that is not a boolean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError {
    pub var: String,
    pub value: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}='{}' is not a boolean: use 1 or 0, true or false, yes or no, on or off (any case), or leave it empty",
            self.var, self.value
        )
    }
}

impl std::error::Error for EnvError {}

/// Whether the boolean variable `var` is on: unset or empty is off; a value
/// that is not a boolean is an error naming the variable.
pub fn flag(var: &str) -> Result<bool, EnvError> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(false);
    };
    value.to_str().and_then(switch).ok_or_else(|| EnvError {
        var: var.to_owned(),
        value: value.to_string_lossy().into_owned(),
    })
}

/// Checks the boolean variables the library reads itself
/// ([`NO_PIN_ENV`]); front ends call it before any work, so that a wrong
/// value is reported rather than read one way or the other.
pub fn check() -> Result<(), EnvError> {
    flag(NO_PIN_ENV).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words() {
        for v in ["1", "true", "TRUE", "Yes", "on", " On "] {
            assert_eq!(switch(v), Some(true), "{v}");
        }
        for v in ["0", "false", "FALSE", "no", "No", "off", "OFF", "", "  "] {
            assert_eq!(switch(v), Some(false), "{v:?}");
        }
        for v in ["maybe", "2", "y", "ja", "-1"] {
            assert_eq!(switch(v), None, "{v}");
        }
        let e = EnvError {
            var: "IDX_SOFTMAX_X".into(),
            value: "maybe".into(),
        };
        assert!(e
            .to_string()
            .starts_with("IDX_SOFTMAX_X='maybe' is not a boolean"));
    }
}
