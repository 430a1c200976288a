//! The command-line interface, one module per job:
//!
//! * [`args`]: flags, subcommands, value parsers (bad values exit 2);
//! * [`settings`]: training settings from the flags, or from a checkpoint
//!   to resume;
//! * [`train_cmd`], [`eval_cmd`], [`predict_cmd`]: the subcommands;
//! * [`report`], [`metrics_log`]: what they print and write;
//! * [`common`]: data loading and small helpers they share.

pub mod args;
pub mod common;
pub mod eval_cmd;
pub mod metrics_log;
pub mod predict_cmd;
pub mod report;
pub mod settings;
pub mod train_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use args::{Cli, Cmd};
use idx_softmax::config::ConfigError;

/// Parses the command line and runs it: exit 0 on success, 1 with a
/// one-line `error: …` on stderr on failure, 2 for usage errors (clap's,
/// and any broken rule of the library's configuration).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => train_cmd::run(cli.train),
        Some(Cmd::Train(a)) => train_cmd::run(a),
        Some(Cmd::Eval(a)) => eval_cmd::run(a),
        Some(Cmd::Predict(a)) => predict_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(rule) = e.downcast_ref::<ConfigError>() {
                Cli::command()
                    .error(ErrorKind::ValueValidation, rule.to_string())
                    .exit();
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
