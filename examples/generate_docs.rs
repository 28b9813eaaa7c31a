//! Generates the manual pages and shell completions from the clap definitions in
//! [`ipmanager::cli::Cli`]; nothing here is written by hand.
//!
//! ```sh
//! cargo run --release --example generate_docs -- OUTDIR
//! ```
//!
//! writes `OUTDIR/man/ipmanager.1`, one `OUTDIR/man/ipmanager-SUBCOMMAND.1` per subcommand (nested ones as
//! `ipmanager-host-add.1`), and
//! `OUTDIR/completions/{ipmanager.bash,_ipmanager,ipmanager.fish}` (bash, zsh, fish).
//! `tests/docs.rs` includes this file and calls [`generate`], so the test checks this code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The shells whose completion scripts [`generate`] writes.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the man pages into `outdir/man` and the completions into `outdir/completions`
/// (both created when missing) and returns the paths of the files written.
pub fn generate(outdir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man_dir = outdir.join("man");
    let completions_dir = outdir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions_dir)?;

    let mut cmd = ipmanager::cli::Cli::command();
    let mut written = Vec::new();

    // The top-level page, then one page per visible subcommand at any depth (`ipmanager-SUB.1`,
    // `ipmanager-SUB-SUB.1`),
    // exactly as clap_mangen::generate_to does, but recording the file names.
    // Every page's footer names the package version (subcommands carry none of their own).
    let mut man_cmd = cmd.clone().disable_help_subcommand(true);
    man_cmd.build();
    let source = format!("ipmanager {}", env!("CARGO_PKG_VERSION"));
    let page = |c: &clap::Command| clap_mangen::Man::new(c.clone()).source(source.clone());
    // build() names nested commands `ipmanager-host-add`, which becomes the page's file name.
    let mut pending = vec![&man_cmd];
    while let Some(command) = pending.pop() {
        written.push(page(command).generate_to(&man_dir)?);
        pending.extend(command.get_subcommands().filter(|s| !s.is_hide_set()));
    }

    let bin_name = cmd.get_name().to_string();
    for shell in SHELLS {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            &bin_name,
            &completions_dir,
        )?);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(outdir), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example generate_docs -- OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&outdir)) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("generate_docs: error: cannot write into {outdir:?}: {error}");
            ExitCode::from(74)
        }
    }
}
