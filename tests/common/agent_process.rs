//! The agent binary as a child process, for tests that drive it from the outside.

use std::io::{BufRead, BufReader};
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

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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
