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
///
/// First of all the signal handlers are installed (see
/// `idx_softmax::signals`): SIGINT and SIGTERM remove any temporary file
/// being written and exit 130 / 143, SIGBUS on a truncated mapped file
/// prints one line and exits 1, and SIGPIPE ends the process with status
/// 141, so `idx-softmax | head -1` ends quietly.
pub fn main() -> ExitCode {
    idx_softmax::signals::install();
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => train(cli.train),
        Some(Cmd::Train(a)) => train(a),
        Some(Cmd::Eval(a)) => {
            let outputs = [
                ("--model", Some(&a.model)),
                ("--weights-png", a.weights_png.as_ref()),
            ];
            if let Err(msg) = common::distinct_outputs(&outputs, &[]) {
                usage_error(msg);
            }
            eval_cmd::run(a)
        }
        Some(Cmd::Predict(a)) => predict_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<common::UsageError>() {
                usage_error(u.0.clone());
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `msg` as clap prints a usage error, and exits with status 2.
fn usage_error(msg: String) -> ! {
    Cli::command()
        .error(ErrorKind::ArgumentConflict, msg)
        .exit()
}

/// `train`, after the checks clap cannot express.
fn train(args: TrainArgs) -> anyhow::Result<()> {
    if let Err(msg) = check_train_usage(&args) {
        usage_error(msg);
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
    // Two outputs at one path would overwrite each other; the checkpoint
    // to resume from may only be overwritten by --save.
    let outputs = [
        ("--save", args.save.as_ref()),
        ("--metrics-json", args.metrics_json.as_ref()),
        ("--weights-png", args.weights_png.as_ref()),
        ("--resume", args.resume.as_ref()),
    ];
    common::distinct_outputs(&outputs, &[("--resume", "--save")])
}
