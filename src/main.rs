//! The `idx-softmax` command: train softmax regression on an IDX image
//! dataset, then evaluate the saved model or classify images with it. See
//! [`cli`] for the subcommands and flags.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
