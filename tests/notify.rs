//! The real `ipmanager agent` binary talking to a stand-in for systemd: a datagram socket named
//! by `NOTIFY_SOCKET`. READY only after the first sync, STATUS, watchdog pings tied to the loop's
//! progress, and STOPPING on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_ipmanager");
const DEADLINE: Duration = Duration::from_secs(20);
/// `WATCHDOG_USEC` given to the agent: it pings every 200 ms.
const WATCHDOG: Duration = Duration::from_millis(400);

/// One datagram from the agent.
#[derive(Debug, Clone)]
struct Message {
    at: Instant,
    lines: Vec<String>,
    /// Whether the agent's dhcp-hostsfile existed when the message was received.
    hosts_file_existed: bool,
}

/// A temporary directory with a notify socket, a config file, and the agent once started.
struct Systemd {
    dir: tempfile::TempDir,
    messages: Arc<Mutex<Vec<Message>>>,
    child: Option<Child>,
}

impl Systemd {
    /// Binds the socket and starts collecting what arrives on it.
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let socket = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::downgrade(&messages);
        let hosts_file = dir.path().join("dhcp-hosts");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let received = socket.recv(&mut buf);
                let Some(sink) = sink.upgrade() else { return };
                if let Ok(len) = received {
                    let message = Message {
                        at: Instant::now(),
                        hosts_file_existed: hosts_file.exists(),
                        lines: String::from_utf8_lossy(&buf[..len])
                            .lines()
                            .map(str::to_owned)
                            .collect(),
                    };
                    sink.lock().unwrap().push(message);
                }
            }
        });
        Systemd {
            dir,
            messages,
            child: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the agent with `NOTIFY_SOCKET` and `WATCHDOG_USEC` set (no `WATCHDOG_PID`: the
    /// child's pid is unknown before it starts, and without it the agent takes the watchdog).
    fn start(&mut self, database_url: &str, dnsmasq_extra: &str) {
        let d = self.dir.path().display();
        let config = self.path("ipmanager.toml");
        std::fs::write(
            &config,
            format!(
                r#"database_url = "{database_url}"
[agent]
name = "test"
max_backoff = "200ms"
[dnsmasq]
include_file = "{d}/01-rust-managed.conf"
hosts_file = "{d}/dhcp-hosts"
addn_hosts_file = "{d}/hosts"
restart_command = ["true"]
check_command = []
{dnsmasq_extra}
"#
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config", config.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", self.path("notify"))
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the agent starts");
        self.child = Some(child);
    }

    fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// The first message with a line for which `matches` holds, waiting up to the deadline.
    async fn wait_for(&self, what: &str, matches: impl Fn(&str) -> bool) -> Message {
        let mut found = None;
        wait_until(DEADLINE, || {
            found = self
                .messages()
                .into_iter()
                .find(|m| m.lines.iter().any(|l| matches(l)));
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what} arrived: {:#?}", self.lines()))
    }

    fn lines(&self) -> Vec<String> {
        self.messages().into_iter().flat_map(|m| m.lines).collect()
    }

    fn pings_since(&self, since: Instant) -> Vec<Instant> {
        self.messages()
            .into_iter()
            .filter(|m| m.at >= since && m.lines.iter().any(|l| l == "WATCHDOG=1"))
            .map(|m| m.at)
            .collect()
    }

    /// Sends SIGTERM and returns the exit code.
    async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the agent was started");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let exited = wait_until(DEADLINE, || {
            let done = child.try_wait().unwrap().is_some();
            async move { done }
        })
        .await;
        assert!(exited, "the agent did not stop on SIGTERM");
        child.wait().unwrap().code()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn database_with_a_host() -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '192.168.79.0/24');
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:09:01', '192.168.79.10', 'plotter')",
        )
        .await
        .unwrap();
    db
}

fn file_contains(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|c| c.contains(text))
}

#[tokio::test]
async fn ready_comes_after_the_first_sync_then_pings_continue_and_sigterm_sends_stopping() {
    let db = database_with_a_host().await;
    let mut systemd = Systemd::new();
    systemd.start(&db.url, r#"reload_command = ["true"]"#);

    let ready = systemd.wait_for("READY=1", |l| l == "READY=1").await;
    assert!(
        ready.hosts_file_existed,
        "READY=1 arrived before the first sync was on disk: {:#?}",
        systemd.lines()
    );
    assert!(file_contains(
        &systemd.path("dhcp-hosts"),
        "02:00:00:00:09:01,192.168.79.10,plotter"
    ));
    let status = systemd
        .wait_for("STATUS=in sync", |l| {
            l.starts_with("STATUS=in sync: 1 hosts")
        })
        .await;
    assert!(status.at <= ready.at, "the status is sent with readiness");
    assert_eq!(
        systemd
            .lines()
            .iter()
            .filter(|l| l.as_str() == "READY=1")
            .count(),
        1
    );

    // Healthy: pings every half period.
    let since = Instant::now();
    let pinged = wait_until(DEADLINE, || {
        let enough = systemd.pings_since(since).len() >= 3;
        async move { enough }
    })
    .await;
    assert!(pinged, "no watchdog pings: {:#?}", systemd.lines());
    assert!(
        since.elapsed() < Duration::from_millis(1500),
        "3 pings took {:?}",
        since.elapsed()
    );

    // An applied change shows in STATUS.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:09:02', '192.168.79.11', 'cutter')",
        )
        .await
        .unwrap();
    systemd
        .wait_for("STATUS with two hosts", |l| {
            l.starts_with("STATUS=in sync: 2 hosts") && l.contains("last change applied")
        })
        .await;

    assert_eq!(
        systemd.terminate().await,
        Some(0),
        "SIGTERM is a clean exit"
    );
    systemd.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
}

#[tokio::test]
async fn pings_stop_while_an_activation_hangs() {
    let db = database_with_a_host().await;
    let mut systemd = Systemd::new();
    // The first sync writes every file and restarts (`true`); the next host change reloads,
    // and the reload hangs far longer than the watchdog period.
    systemd.start(
        &db.url,
        "reload_command = [\"sleep\", \"30\"]\ncommand_timeout = \"60s\"",
    );
    systemd.wait_for("READY=1", |l| l == "READY=1").await;

    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:09:02', '192.168.79.11', 'cutter')",
        )
        .await
        .unwrap();
    let hosts_file = systemd.path("dhcp-hosts");
    let written = wait_until(DEADLINE, || {
        let written = file_contains(&hosts_file, "cutter");
        async move { written }
    })
    .await;
    assert!(written, "the change never reached the file");
    let changed = Instant::now();

    // Pings may go on until the reload has run for a whole period; then none for more than two.
    let silence = 2 * WATCHDOG + Duration::from_millis(200);
    let quiet = wait_until(DEADLINE, || {
        let last = systemd
            .pings_since(changed)
            .last()
            .copied()
            .unwrap_or(changed);
        let quiet = last.elapsed() > silence;
        async move { quiet }
    })
    .await;
    assert!(
        quiet,
        "the pings went on: {:?}",
        systemd.pings_since(changed)
    );
    let last = systemd
        .pings_since(changed)
        .last()
        .copied()
        .unwrap_or(changed);
    assert!(
        last.duration_since(changed) < 2 * WATCHDOG,
        "pings went on {:?} after the change",
        last.duration_since(changed)
    );
    // SIGTERM still works while the reload hangs (and ends the hanging command).
    assert_eq!(systemd.terminate().await, Some(0));
    systemd.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
}

#[tokio::test]
async fn an_unreachable_database_shows_in_status_and_is_never_ready() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/none?connect_timeout=2");
    let mut systemd = Systemd::new();
    systemd.start(&url, r#"reload_command = ["true"]"#);

    systemd
        .wait_for("STATUS=database unreachable", |l| {
            l.starts_with("STATUS=database unreachable, retrying: ")
        })
        .await;
    // The loop is healthy, so it keeps pinging while it retries.
    let since = Instant::now();
    let pinged = wait_until(DEADLINE, || {
        let enough = systemd.pings_since(since).len() >= 2;
        async move { enough }
    })
    .await;
    assert!(pinged, "no watchdog pings while retrying");
    assert!(
        !systemd.lines().iter().any(|l| l == "READY=1"),
        "READY=1 without a database: {:#?}",
        systemd.lines()
    );
    assert!(!systemd.path("dhcp-hosts").exists());
    assert_eq!(systemd.terminate().await, Some(0));
    systemd.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
}
