//! The command-line interface, one module per job:
//!
//! * [`args`]: flags, subcommands, value parsers (bad values exit 2);
//! * [`settings`]: training settings from the flags, or from a checkpoint
//!   to resume;
//! * [`run_file`]: the checkpoint `--save` writes and `--resume` reads;
//! * [`train_cmd`], [`eval_cmd`], [`predict_cmd`]: the subcommands;
//! * [`report`], [`metrics_log`]: what they print and write;
//! * [`common`]: data loading and small helpers they share.

pub mod args;
pub mod common;
pub mod eval_cmd;
pub mod metrics_log;
pub mod predict_cmd;
pub mod report;
pub mod run_file;
pub mod settings;
pub mod train_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use args::{Cli, Cmd, TrainArgs};

/// Parses the command line and runs it: exit 0 on success, 1 with a
/// one-line `error: …` on stderr on failure, 2 (from clap) for usage errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => train(cli.train),
        Some(Cmd::Train(a)) => train(a),
        Some(Cmd::Eval(a)) => eval_cmd::run(a),
        Some(Cmd::Predict(a)) => predict_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `train`, after the checks clap cannot express.
fn train(args: TrainArgs) -> anyhow::Result<()> {
    if let Err(msg) = check_train_usage(&args) {
        Cli::command()
            .error(ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    train_cmd::run(args)
}

/// Flag combinations that are usage errors: `--nesterov` without a
/// momentum (given, or, with `--resume`, recorded).
fn check_train_usage(args: &TrainArgs) -> Result<(), String> {
    let no_momentum = match args.momentum {
        Some(m) => m == 0.0,
        None => args.resume.is_none(),
    };
    if args.nesterov && no_momentum {
        return Err("--nesterov needs --momentum > 0".into());
    }
    Ok(())
}
