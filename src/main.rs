//! The `ipmanager` binary: a thin shell over [`ipmanager::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ipmanager::cli::Cli::parse();
    ExitCode::from(ipmanager::cli::run(cli))
}
