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

use args::{Cli, Cmd, TrainArgs};
use idx_softmax::config::ConfigError;

/// Parses the command line and runs it: exit 0 on success, 1 with a
/// one-line `error: …` on stderr on failure, 2 for usage errors (clap's,
/// flag combinations, and any broken rule of the library's configuration).
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
                ("--confusion-png", a.confusion_png.as_ref()),
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
            if let Some(rule) = e.downcast_ref::<ConfigError>() {
                usage_error(rule.to_string());
            }
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

/// `train`, after the checks clap cannot express: two outputs at one path
/// would overwrite each other, and the checkpoint to resume from may only
/// be overwritten by `--save`. (The rules about values, `--nesterov`
/// without a momentum among them, are the library's: `config.rs`.)
fn train(args: TrainArgs) -> anyhow::Result<()> {
    let outputs = [
        ("--save", args.save.as_ref()),
        ("--metrics-json", args.metrics_json.as_ref()),
        ("--weights-png", args.weights_png.as_ref()),
        ("--plot", args.plot.as_ref()),
        ("--resume", args.resume.as_ref()),
    ];
    if let Err(msg) = common::distinct_outputs(&outputs, &[("--resume", "--save")]) {
        usage_error(msg);
    }
    train_cmd::run(args)
}
