//! The environment's values for the flags, read by one rule: a switch's
//! variable (`IDX_SOFTMAX_JSON` for `--json`, …) takes 1/0, true/false,
//! yes/no or on/off in any case ([`idx_softmax::env::switch`]), and any
//! variable set to the empty string counts as unset. Applied to every
//! argument of every subcommand that has a variable, so a flag added later
//! follows it too.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, Command, CommandFactory};

use idx_softmax::env::{switch, EnvError};

use super::args::Cli;

/// The command line's parser, with the environment read by the rule above.
pub fn command() -> Command {
    with_env_rule(Cli::command())
}

/// `cmd` and its subcommands with every switch parsed by [`Switch`], and
/// every variable that is empty, or a switch's that is off, dropped, as if
/// unset: an off switch then conflicts with nothing (`IDX_SOFTMAX_JSON=0`
/// beside `--csv`).
fn with_env_rule(mut cmd: Command) -> Command {
    let args: Vec<(clap::Id, bool, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let value = std::env::var_os(a.get_env()?);
            let is_switch = matches!(a.get_action(), ArgAction::SetTrue);
            let unset = match &value {
                None => false,
                Some(v) if v.is_empty() => true,
                Some(v) => is_switch && v.to_str().and_then(switch) == Some(false),
            };
            Some((a.get_id().clone(), is_switch, unset))
        })
        .collect();
    for (id, is_switch, unset) in args {
        cmd = cmd.mut_arg(id, |a: Arg| {
            let a = if is_switch { a.value_parser(Switch) } else { a };
            if unset {
                a.env(None::<&'static str>)
            } else {
                a
            }
        });
    }
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, with_env_rule);
    }
    cmd
}

/// A switch's value: `true` from the flag itself, or its variable's value
/// by [`switch`]. Any other value can only come from the variable, and the
/// error names it.
#[derive(Clone, Copy, Debug)]
struct Switch;

impl TypedValueParser for Switch {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<bool, clap::Error> {
        if let Some(on) = value.to_str().and_then(switch) {
            return Ok(on);
        }
        let var = arg
            .and_then(Arg::get_env)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.map_or_else(String::new, ToString::to_string));
        let e = EnvError {
            var,
            value: value.to_string_lossy().into_owned(),
        };
        let mut cmd = cmd.clone();
        Err(clap::Error::raw(ErrorKind::InvalidValue, e.to_string()).format(&mut cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every boolean flag of every subcommand has a variable, and is a
    /// switch parsed by the rule.
    #[test]
    fn every_boolean_flag_is_a_switch() {
        fn check(cmd: &Command, found: &mut usize) {
            for a in cmd.get_arguments() {
                if matches!(a.get_action(), ArgAction::SetTrue) {
                    let id = a.get_id().as_str();
                    assert!(a.get_env().is_some(), "--{id} has no variable");
                    *found += 1;
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, found);
            }
        }
        let mut found = 0;
        check(&command(), &mut found);
        // json, nesterov, oversubscribe (top level and train), json (eval),
        // invert, no-invert, json, csv, probs (predict).
        assert!(found >= 12, "{found}");
        let m = command()
            .try_get_matches_from(["x", "predict", "--model", "m", "--json", "a.png"])
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert!(sub.get_flag("json") && !sub.get_flag("csv"));
    }
}
