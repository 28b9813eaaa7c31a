//! `scripts/demo` as a user runs it: started, waited for until its agent has written the files,
//! then stopped with SIGTERM or SIGINT sent to the script's process alone (as `kill` or a
//! service manager does, unlike Ctrl-C, which signals the whole process group).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::BIN;
use common::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// initdb, migrate and the first sync; generous for a loaded CI machine.
const START_DEADLINE: Duration = Duration::from_secs(120);
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Whether `pid` is a running process (a zombie waiting for its parent counts as gone).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The processes whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(") ")?;
                    rest.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn wait_for(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// The running script; a failing test stops it (and so its agent and cluster) on the way out.
struct Demo(Child);

impl Demo {
    fn start(dir: &Path, port: u16) -> Demo {
        let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"))
            .env("IPMANAGER_DEMO_DIR", dir)
            .env("IPMANAGER_DEMO_PORT", port.to_string())
            .env("IPMANAGER_DEMO_API_PORT", free_port().to_string())
            .env("IPMANAGER_DEMO_BIN", BIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("scripts/demo starts");
        Demo(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            if !wait_for(STOP_DEADLINE, || self.exited()) {
                let _ = self.0.kill();
            }
        }
    }
}

#[test]
fn a_signal_to_the_demo_stops_its_agent_and_its_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    // As root the cluster runs as another user, who must reach the data directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = free_port();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let hosts = dir.path().join("out/dhcp-hosts");
        let _ = std::fs::remove_file(&hosts); // written by the previous round
        let mut demo = Demo::start(dir.path(), port);
        let up = wait_for(START_DEADLINE, || {
            std::fs::read_to_string(&hosts).is_ok_and(|text| text.contains("printer"))
        });
        assert!(up, "the demo's agent never wrote {}", hosts.display());
        let script = demo.pid();
        let agents: Vec<i32> = children(script);
        assert!(!agents.is_empty(), "the demo runs its agent as a child");
        let postmaster: i32 = std::fs::read_to_string(dir.path().join("pg/data/postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(running(postmaster));

        kill(Pid::from_raw(script), signal).unwrap();
        let stopped = wait_for(STOP_DEADLINE, || {
            demo.exited() && !agents.iter().any(|&pid| running(pid)) && !running(postmaster)
        });
        assert!(
            stopped,
            "{signal:?}: script exited {}, agents {:?}, postgres {} still running",
            demo.exited(),
            agents
                .iter()
                .filter(|&&pid| running(pid))
                .collect::<Vec<_>>(),
            running(postmaster)
        );
    }
}
