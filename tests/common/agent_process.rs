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

/// Writes `ipmanager.toml` into the lab's directory for an agent named `name` on `database_url`
/// that writes where the lab's dnsmasq reads (`layout`: `hostsfile` or `incremental`, with the
/// lab's directories), signals it through its pid file and restarts it through the lab.
/// `dnsmasq_extra` ends the `[dnsmasq]` section (e.g. `shards = 64`). Returns the file's path.
pub fn write_lab_agent_config(
    lab: &super::netns::Lab,
    database_url: &str,
    name: &str,
    layout: &str,
    dnsmasq_extra: &str,
) -> PathBuf {
    for dir in [lab.hosts_dir(), lab.names_dir()] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let restart = lab
        .restart_command()
        .iter()
        .map(|arg| format!("{arg:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = lab.path("ipmanager.toml");
    std::fs::write(
        &config,
        format!(
            r#"database_url = "{database_url}"
log_level = "warn"
[agent]
name = "{name}"
liveness_interval = "1s"
max_backoff = "500ms"
[dnsmasq]
layout = "{layout}"
include_file = "{include}"
hosts_file = "{hosts}"
addn_hosts_file = "{addn}"
hosts_dir = "{hosts_dir}"
names_dir = "{names_dir}"
pid_file = "{pid}"
restart_command = [{restart}]
command_timeout = "300s"
{dnsmasq_extra}
"#,
            include = lab.include_file().display(),
            hosts = lab.hosts_file().display(),
            addn = lab.addn_hosts_file().display(),
            hosts_dir = lab.hosts_dir().display(),
            names_dir = lab.names_dir().display(),
            pid = lab.pid_file().display(),
        ),
    )
    .unwrap();
    config
}

/// Waits until agent `name` has applied transaction `xid` (its reported applied snapshot
/// contains it, whether or not a host awaits a compaction); `false` after `deadline`.
pub async fn wait_applied(
    client: &tokio_postgres::Client,
    name: &str,
    xid: &str,
    deadline: Duration,
) -> bool {
    wait_until(deadline, || async {
        client
            .query_opt(
                "SELECT 1 FROM ipmanager.agent_status
                 WHERE name = $1 AND pg_visible_in_snapshot($2::text::xid8, applied_snapshot)",
                &[&name, &xid],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await
}
