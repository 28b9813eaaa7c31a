//! Makes dnsmasq pick up new files: SIGHUP (or a reload command) re-reads the dhcp-hostsfile
//! and addn-hosts files; only a restart re-reads conf-dir files such as the include file. Also
//! runs the check command that vets a staged include file before it is put in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

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
    #[error(
        "dnsmasq's pid file {path} names pid {pid}, which is {found}, not dnsmasq; \
         not sending it SIGHUP"
    )]
    NotDnsmasq {
        path: PathBuf,
        pid: i32,
        /// What runs under that pid instead, e.g. `sleep (/usr/bin/sleep)`, or that nothing does.
        found: String,
    },
    #[error("cannot send SIGHUP to dnsmasq (pid {pid})")]
    Signal {
        pid: i32,
        #[source]
        source: std::io::Error,
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
        // A stale pid file can name a reused pid, and a file others can write can name anything:
        // only a dnsmasq gets the signal. The pidfd holds on to the process that is checked: if
        // it exits and its pid is reused meanwhile, the signal fails instead of going astray.
        let not_dnsmasq = |found: String| ActivateError::NotDnsmasq {
            path: self.pid_file.clone(),
            pid,
            found,
        };
        let pidfd = match Pid::from_raw(pid).map(|p| pidfd_open(p, PidfdFlags::empty())) {
            Some(Ok(pidfd)) => pidfd,
            Some(Err(rustix::io::Errno::SRCH)) | None => {
                return Err(not_dnsmasq(Process::NONE.to_owned()))
            }
            Some(Err(errno)) => {
                return Err(ActivateError::Signal {
                    pid,
                    source: errno.into(),
                })
            }
        };
        let process = Process::read(pid);
        if !process.is_dnsmasq() {
            return Err(not_dnsmasq(process.to_string()));
        }
        pidfd_send_signal(&pidfd, Signal::HUP).map_err(|errno| ActivateError::Signal {
            pid,
            source: errno.into(),
        })
    }
}

/// What `/proc` says runs under a pid: its command name (readable for every process) and its
/// executable (readable only for our own processes, or as root).
#[derive(Debug)]
struct Process {
    comm: Option<String>,
    exe: Option<PathBuf>,
}

impl Process {
    const DNSMASQ: &'static str = "dnsmasq";
    /// What a pid without a process is.
    const NONE: &'static str = "no running process";

    fn read(pid: i32) -> Process {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        Process {
            comm: std::fs::read_to_string(proc.join("comm"))
                .ok()
                .map(|comm| comm.trim_end_matches('\n').to_owned()),
            exe: std::fs::read_link(proc.join("exe")).ok(),
        }
    }

    /// The command name is the executable's name at exec time; the executable's own name also
    /// counts, for a dnsmasq started through a differently named link.
    fn is_dnsmasq(&self) -> bool {
        self.comm.as_deref() == Some(Self::DNSMASQ)
            || self
                .exe
                .as_deref()
                .and_then(Path::file_name)
                .is_some_and(|name| name == Self::DNSMASQ)
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.comm, &self.exe) {
            (None, _) => f.write_str(Process::NONE),
            (Some(comm), None) => write!(f, "{comm:?}"),
            (Some(comm), Some(exe)) => write!(f, "{comm:?} ({})", exe.display()),
        }
    }
}

pub(crate) async fn run_command(
    command: &[String],
    timeout: Duration,
) -> Result<(), ActivateError> {
    // Configuration refuses empty commands; this only keeps a mistake from panicking.
    let Some((program, args)) = command.split_first() else {
        return Err(ActivateError::Spawn {
            command: Vec::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
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

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::time::Instant;

    use super::*;

    fn activator(pid_file: &Path) -> Activator {
        Activator {
            pid_file: pid_file.to_owned(),
            reload_command: Vec::new(),
            restart_command: vec!["true".to_owned()],
            check_command: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Whether `child` was running until now and never got SIGHUP: SIGHUP ends `sleep`, and a
    /// fatal signal sent earlier would be its exit status instead of the SIGKILL sent here.
    fn alive_and_never_hung_up(mut child: Child) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        running && child.wait().unwrap().signal() == Some(libc::SIGKILL)
    }

    /// Waits until `child` has exec'd (its comm is no longer the test's).
    fn wait_for_exec(child: &Child, comm: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let now = std::fs::read_to_string(format!("/proc/{}/comm", child.id()));
            if now.is_ok_and(|c| c.trim() == comm) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} never became {comm}", child.id());
    }

    #[test]
    fn a_pid_file_naming_another_process_is_an_error_and_the_process_is_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = Command::new("sleep").arg("60").spawn().unwrap();
        wait_for_exec(&sleep, "sleep");
        let pid_file = dir.path().join("dnsmasq.pid");
        std::fs::write(&pid_file, format!("{}\n", sleep.id())).unwrap();

        let error = activator(&pid_file).send_sighup().unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ActivateError::NotDnsmasq { .. }),
            "{error:?}"
        );
        for part in [
            pid_file.display().to_string(),
            format!("pid {}", sleep.id()),
            "\"sleep\"".to_owned(),
            "not dnsmasq".to_owned(),
        ] {
            assert!(message.contains(&part), "{message:?} lacks {part:?}");
        }
        assert!(alive_and_never_hung_up(sleep), "sleep received SIGHUP");
    }

    #[test]
    fn a_pid_file_naming_no_process_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let pid_file = dir.path().join("dnsmasq.pid");
        std::fs::write(&pid_file, pid.to_string()).unwrap();
        let message = activator(&pid_file).send_sighup().unwrap_err().to_string();
        assert!(message.contains("no running process"), "{message}");
    }

    #[test]
    fn a_process_called_dnsmasq_gets_the_signal() {
        // Started through a link named dnsmasq, `sleep` runs with the command name dnsmasq.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("dnsmasq");
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let mut fake = Command::new(&link).arg("60").spawn().unwrap();
        wait_for_exec(&fake, "dnsmasq");
        let pid_file = dir.path().join("dnsmasq.pid");
        std::fs::write(&pid_file, fake.id().to_string()).unwrap();

        activator(&pid_file).send_sighup().unwrap();
        let status = fake.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGHUP));
    }
}
