//! Running the real `ipmanager` binary with a clean environment and reading what it printed.

use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ipmanager");

/// The binary with a clean environment (no COLUMNS, no terminal: tables are 80 columns wide).
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

pub fn ipmanager(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("the binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The message of the `ipmanager: error: ...` line the binary ends with.
pub fn error_text(output: &Output) -> String {
    let text = stderr(output);
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("ipmanager: error: "))
        .unwrap_or_else(|| panic!("no error line in stderr:\n{text}"))
        .to_owned()
}

pub fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}
