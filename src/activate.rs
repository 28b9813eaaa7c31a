//! Makes dnsmasq pick up new files: SIGHUP (or a reload command) re-reads the dhcp-hostsfile
//! and addn-hosts files; only a restart re-reads conf-dir files such as the include file. Also
//! runs the check command that vets a staged include file before it is put in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{DnsmasqConfig, FILE_PLACEHOLDER};

/// What dnsmasq must do to serve the files on disk. A restart includes everything a reload does,
/// so the order matters: combining two needs keeps the stronger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Activation {
    Reload,
    Restart,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Reload => "reload",
            Activation::Restart => "restart",
        }
    }

    pub fn parse(text: &str) -> Option<Activation> {
        match text.trim() {
            "reload" => Some(Activation::Reload),
            "restart" => Some(Activation::Restart),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("cannot read dnsmasq's pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dnsmasq's pid file {path} holds {content:?}, not a process id")]
    BadPid { path: PathBuf, content: String },
    #[error("cannot send SIGHUP to dnsmasq (pid {pid})")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot run {command:?}")]
    Spawn {
        command: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("{command:?} failed with {status}{}", stderr_suffix(.stderr))]
    CommandFailed {
        command: Vec<String>,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{command:?} did not finish within {timeout:?}")]
    Timeout {
        command: Vec<String>,
        timeout: Duration,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Carries out activations as configured.
#[derive(Debug, Clone)]
pub struct Activator {
    pid_file: PathBuf,
    reload_command: Vec<String>,
    restart_command: Vec<String>,
    check_command: Vec<String>,
    timeout: Duration,
}

impl Activator {
    pub fn new(config: &DnsmasqConfig) -> Self {
        Activator {
            pid_file: config.pid_file.clone(),
            reload_command: config.reload_command.clone(),
            restart_command: config.restart_command.clone(),
            check_command: config.check_command.clone(),
            timeout: config.command_timeout,
        }
    }

    pub async fn activate(&self, activation: Activation) -> Result<(), ActivateError> {
        match activation {
            Activation::Reload if self.reload_command.is_empty() => self.send_sighup(),
            Activation::Reload => run_command(&self.reload_command, self.timeout).await,
            Activation::Restart => run_command(&self.restart_command, self.timeout).await,
        }
    }

    /// Runs the configured check (by default `dnsmasq --test`) on a staged include file before
    /// it is put in place. Without a check command there is nothing to run.
    pub async fn check_include(&self, staged: &Path) -> Result<(), ActivateError> {
        if self.check_command.is_empty() {
            return Ok(());
        }
        let file = staged.to_string_lossy();
        let command: Vec<String> = self
            .check_command
            .iter()
            .map(|arg| arg.replace(FILE_PLACEHOLDER, &file))
            .collect();
        run_command(&command, self.timeout).await
    }

    fn send_sighup(&self) -> Result<(), ActivateError> {
        let content =
            std::fs::read_to_string(&self.pid_file).map_err(|source| ActivateError::PidFile {
                path: self.pid_file.clone(),
                source,
            })?;
        let pid = content
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|pid| *pid > 1)
            .ok_or_else(|| ActivateError::BadPid {
                path: self.pid_file.clone(),
                content: content.clone(),
            })?;
        kill(Pid::from_raw(pid), Signal::SIGHUP)
            .map_err(|source| ActivateError::Signal { pid, source })
    }
}

async fn run_command(command: &[String], timeout: Duration) -> Result<(), ActivateError> {
    let (program, args) = command
        .split_first()
        .expect("config validation keeps activation commands non-empty");
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ActivateError::Spawn {
            command: command.to_vec(),
            source,
        })?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ActivateError::Timeout {
            command: command.to_vec(),
            timeout,
        })?
        .map_err(|source| ActivateError::Spawn {
            command: command.to_vec(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ActivateError::CommandFailed {
            command: command.to_vec(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
