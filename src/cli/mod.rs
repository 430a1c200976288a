//! The command-line interface: a thin front end over the library. It turns
//! flags into a [`idx_softmax::run::RunSpec`] or a model and data to
//! evaluate, calls the library, and prints. It states no default and no
//! limit (the library's rules check every value) and names settings by
//! their flags ([`names::flag`]).
//!
//! * [`args`]: flags, subcommands, value parsers (bad values exit 2);
//!   [`switches`]: the environment's values for them (boolean words, empty
//!   is unset);
//! * [`names`]: the flags' names for the library's settings, and the
//!   wording of library errors with them;
//! * [`train_cmd`], [`eval_cmd`], [`predict_cmd`], [`augment_cmd`],
//!   [`export_cmd`], `serve_cmd` (feature `serve`): the subcommands;
//! * [`report`]: what they print;
//! * [`common`]: data loading, output checks and small helpers they share.

pub mod args;
pub mod augment_cmd;
pub mod common;
pub mod eval_cmd;
pub mod export_cmd;
pub mod names;
pub mod predict_cmd;
pub mod report;
#[cfg(feature = "serve")]
pub mod serve_cmd;
pub mod switches;
pub mod train_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::FromArgMatches;

use args::{Cli, Cmd};

/// Parses the command line and runs it: exit 0 on success, 1 with a
/// one-line `error: …` on stderr on failure, 2 for usage errors (clap's,
/// flag combinations, and any broken rule of a setting's value), shown
/// with the usage of the subcommand that was run.
///
/// Once the command line is parsed, the signal handlers are installed
/// (see `idx_softmax::signals`): SIGINT and SIGTERM remove any temporary
/// file being written and exit 130 / 143, SIGBUS on a truncated mapped
/// file prints one line and exits 1, and SIGPIPE ends the process with
/// status 141, so `idx-softmax | head -1` ends quietly. Not for `serve`,
/// which writes no file and stops on SIGINT and SIGTERM by finishing the
/// requests in flight.
pub fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&switches::command().get_matches())
        .unwrap_or_else(|e| e.format(&mut switches::command()).exit());
    if !is_serve(&cli) {
        idx_softmax::signals::install();
    }
    let name = cli.cmd.as_ref().map(|c| match c {
        Cmd::Train(_) => "train",
        Cmd::Eval(_) => "eval",
        Cmd::Predict(_) => "predict",
        Cmd::Augment(_) => "augment",
        Cmd::Export(_) => "export",
        #[cfg(feature = "serve")]
        Cmd::Serve(_) => "serve",
    });
    // The variables the library reads itself, by the same rule.
    if let Err(e) = idx_softmax::env::check() {
        usage_error(name, e.to_string());
    }
    let subcommand = name;
    let result = match cli.cmd {
        None => train_cmd::run(cli.train),
        Some(Cmd::Train(a)) => train_cmd::run(*a),
        Some(Cmd::Eval(a)) => eval_cmd::run(a),
        Some(Cmd::Predict(a)) => predict_cmd::run(a),
        Some(Cmd::Augment(a)) => augment_cmd::run(a),
        Some(Cmd::Export(a)) => export_cmd::run(a),
        #[cfg(feature = "serve")]
        Some(Cmd::Serve(a)) => serve_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<common::UsageError>() {
                usage_error(subcommand, u.0.clone());
            }
            if let Some(msg) = names::usage_message(&e) {
                usage_error(subcommand, msg);
            }
            eprintln!("error: {}", names::describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "serve")]
fn is_serve(cli: &Cli) -> bool {
    matches!(cli.cmd, Some(Cmd::Serve(_)))
}

#[cfg(not(feature = "serve"))]
fn is_serve(_: &Cli) -> bool {
    false
}

/// Prints `msg` as clap prints a usage error, with the usage of
/// `subcommand` (the top level's when `None`), and exits with status 2.
fn usage_error(subcommand: Option<&str>, msg: String) -> ! {
    let mut cmd = switches::command();
    cmd.build();
    let target = match subcommand.and_then(|s| cmd.find_subcommand_mut(s)) {
        Some(sub) => sub.clone(),
        None => cmd,
    };
    let mut target = target;
    target.error(ErrorKind::ArgumentConflict, msg).exit()
}
