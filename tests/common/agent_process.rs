//! The agent binary as a child process, for tests that drive it from the outside.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_until;

const DEADLINE: Duration = Duration::from_secs(20);

/// The agent binary as a child process whose stderr is collected for assertions.
pub struct AgentProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl AgentProcess {
    pub fn spawn(mut command: Command) -> AgentProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent starts");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        AgentProcess { child, log }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn wait_log(&self, what: &str) {
        let log = Arc::clone(&self.log);
        let found = wait_until(DEADLINE, || {
            let found = log.lock().unwrap().contains(what);
            async move { found }
        })
        .await;
        assert!(
            found,
            "the agent never logged {what:?}:\n{}",
            self.log.lock().unwrap()
        );
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let exited = wait_until(DEADLINE, || {
            let done = self.child.try_wait().unwrap().is_some();
            async move { done }
        })
        .await;
        assert!(exited, "the agent did not stop on SIGTERM");
        self.child.wait().unwrap().code()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `ipmanager.toml` into `dir` for an agent named `name` on `database_url` that retries
/// fast (liveness 1 s, backoff at most 500 ms), writes its three files into `dir` and activates
/// nothing (`true` for reload and restart, no check command). Returns the file's path.
pub fn write_fast_agent_config(dir: &Path, database_url: &str, name: &str) -> PathBuf {
    let d = dir.display();
    let config = dir.join("ipmanager.toml");
    std::fs::write(
        &config,
        format!(
            r#"database_url = "{database_url}"
[agent]
name = "{name}"
liveness_interval = "1s"
max_backoff = "500ms"
[dnsmasq]
include_file = "{d}/01-rust-managed.conf"
hosts_file = "{d}/dhcp-hosts"
addn_hosts_file = "{d}/hosts"
reload_command = ["true"]
restart_command = ["true"]
check_command = []
"#
        ),
    )
    .unwrap();
    config
}
