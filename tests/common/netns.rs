//! End-to-end lab: two network namespaces joined by a veth pair, a real dnsmasq serving DHCP and
//! DNS in the server namespace, and a real DHCP client (busybox udhcpc; ISC dhclient -6 for DHCPv6) and resolver (dig) in the
//! client namespace. Everything lives in private addresses inside the two namespaces and is torn
//! down when the [`Lab`] is dropped, also when the test panics.
//!
//! Without root, network namespaces or the tools, [`Lab::new`] returns `None` after printing a
//! loud `SKIPPED:` line, unless `IPMANAGER_REQUIRE_E2E=1` (as in CI), where it panics instead.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const REQUIRE_E2E_VAR: &str = "IPMANAGER_REQUIRE_E2E";

/// How long any awaited condition may take before the test fails.
pub const E2E_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// The programs the lab runs, by absolute path.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: PathBuf,
    pub dnsmasq: PathBuf,
    /// The DHCP client command: `[udhcpc]` or `[busybox, udhcpc]`.
    pub udhcpc: Vec<PathBuf>,
    pub dig: PathBuf,
}

/// Finds `name` in `PATH` and the sbin directories, which a non-login `PATH` may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
    found
}

/// Checks what the lab needs, except namespaces themselves (those are tried by [`Lab::new`]).
pub fn prerequisites() -> Result<Tools, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root (network namespaces and dnsmasq need it)".into());
    }
    let mut missing = Vec::new();
    let mut need = |name: &str, package: &str| {
        let found = find_program(name);
        if found.is_none() {
            missing.push(format!("{name} ({package})"));
        }
        found
    };
    let ip = need("ip", "iproute2");
    let dnsmasq = need("dnsmasq", "dnsmasq-base");
    let dig = need("dig", "bind9-dnsutils");
    let udhcpc = match find_program("udhcpc") {
        Some(path) => Some(vec![path]),
        None => find_program("busybox")
            .filter(|busybox| {
                Command::new(busybox)
                    .args(["udhcpc", "--help"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .map(|busybox| vec![busybox, "udhcpc".into()]),
    };
    if udhcpc.is_none() {
        missing.push("udhcpc (udhcpc or busybox)".into());
    }
    match (ip, dnsmasq, udhcpc, dig) {
        (Some(ip), Some(dnsmasq), Some(udhcpc), Some(dig)) => Ok(Tools {
            ip,
            dnsmasq,
            udhcpc,
            dig,
        }),
        _ => Err(format!("missing programs: {}", missing.join(", "))),
    }
}

/// Turns a missing prerequisite into a panic (`IPMANAGER_REQUIRE_E2E=1`) or a loud skip.
pub fn unavailable(reason: &str) {
    if std::env::var(REQUIRE_E2E_VAR).as_deref() == Ok("1") {
        panic!("end-to-end test cannot run and {REQUIRE_E2E_VAR}=1: {reason}");
    }
    // Written to stderr directly rather than with eprintln!, which the test harness captures
    // and hides for a passing test.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: end-to-end test not run: {reason}. Set {REQUIRE_E2E_VAR}=1 to make this \
         a failure. ***\n"
    );
}

/// Runs a command to completion; `Err` carries its output.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{} {} failed with {}: {}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// dnsmasq run as a child and restarted whenever it exits, until the lab is dropped. The
/// agent's restart command only stops it; this brings it back, as systemd would.
struct Supervisor {
    state: Arc<Mutex<SupervisorState>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct SupervisorState {
    stopping: bool,
    /// The running dnsmasq (the pid of `ip netns exec`, which execs dnsmasq in place).
    pid: Option<i32>,
    starts: usize,
    exits: Vec<String>,
}

impl Supervisor {
    fn start(mut command: impl FnMut() -> Command + Send + 'static) -> Supervisor {
        let state = Arc::new(Mutex::new(SupervisorState::default()));
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || loop {
            let mut child = {
                let mut s = shared.lock().unwrap();
                if s.stopping {
                    return;
                }
                match command().spawn() {
                    Ok(child) => {
                        s.pid = Some(child.id() as i32);
                        s.starts += 1;
                        child
                    }
                    Err(e) => {
                        s.exits.push(format!("cannot start: {e}"));
                        return;
                    }
                }
            };
            let started = Instant::now();
            let status = child.wait();
            {
                let mut s = shared.lock().unwrap();
                s.pid = None;
                s.exits.push(format!("{status:?}"));
                if s.stopping {
                    return;
                }
            }
            // A dnsmasq that cannot start would otherwise be restarted in a tight loop.
            if started.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Supervisor {
            state,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        {
            let mut s = self.state.lock().unwrap();
            s.stopping = true;
            if let Some(pid) = s.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two namespaces, a veth pair, and (once started) dnsmasq. See the module documentation.
pub struct Lab {
    tools: Tools,
    pub dir: tempfile::TempDir,
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    /// `10.99.<octet>.1`, dnsmasq's address.
    pub server_ip: Ipv4Addr,
    /// `10.99.<octet>.250`, a static address of the client side so that it can query DNS.
    pub client_ip: Ipv4Addr,
    pub octet: u8,
    namespaces_created: Vec<String>,
    supervisor: Option<Supervisor>,
    /// How the dnsmasq runs stopped by [`Lab::stop_dnsmasq`] ended, for diagnostics.
    stopped_exits: Vec<String>,
    /// How long dnsmasq may take to start serving: see [`Lab::set_start_deadline`].
    start_deadline: Duration,
}

impl Lab {
    /// A lab on `10.99.<octet>.0/24`; `None` (after a loud skip line) when the host cannot run
    /// it and `IPMANAGER_REQUIRE_E2E` is not `1`.
    pub fn new(octet: u8) -> Option<Lab> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tools = match prerequisites() {
            Ok(tools) => tools,
            Err(reason) => {
                unavailable(&reason);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        // dnsmasq drops privileges (to nobody) and must still reach its files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = format!(
            "ipm-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            tools,
            dir,
            server_ns: format!("{base}-srv"),
            client_ns: format!("{base}-cli"),
            server_if: "ipm-srv".into(),
            client_if: "ipm-cli".into(),
            server_ip: Ipv4Addr::new(10, 99, octet, 1),
            client_ip: Ipv4Addr::new(10, 99, octet, 250),
            octet,
            namespaces_created: Vec::new(),
            supervisor: None,
            stopped_exits: Vec::new(),
            start_deadline: E2E_DEADLINE,
        };
        // The first namespace tells whether this machine allows them at all.
        let server_ns = lab.server_ns.clone();
        if let Err(reason) = run(&lab.tools.ip, &["netns", "add", &server_ns]) {
            unavailable(&format!("cannot create a network namespace: {reason}"));
            return None;
        }
        lab.namespaces_created.push(server_ns);
        if let Err(reason) = lab.build() {
            panic!("cannot build the namespace lab: {reason}");
        }
        Some(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        let client_ns = self.client_ns.clone();
        self.ip(&["netns", "add", &client_ns])?;
        self.namespaces_created.push(client_ns);
        let (srv, cli) = (self.server_ns.clone(), self.client_ns.clone());
        // Created straight inside the namespaces, so the fixed names never meet in the root one.
        self.ip(&[
            "link",
            "add",
            &self.server_if,
            "netns",
            &srv,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_if,
            "netns",
            &cli,
        ])?;
        let server_cidr = format!("{}/24", self.server_ip);
        let client_cidr = format!("{}/24", self.client_ip);
        for (ns, interface, cidr) in [
            (&srv, &self.server_if, &server_cidr),
            (&cli, &self.client_if, &client_cidr),
        ] {
            self.ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
            self.ip(&["-n", ns, "addr", "add", cidr, "dev", interface])?;
            self.ip(&["-n", ns, "link", "set", "dev", interface, "up"])?;
        }
        Ok(())
    }

    /// Allows dnsmasq `deadline` to start serving (instead of [`E2E_DEADLINE`]): it reads
    /// 100,000 reservations for about a minute.
    pub fn set_start_deadline(&mut self, deadline: Duration) {
        self.start_deadline = deadline;
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(&self.tools.ip, args)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn include_file(&self) -> PathBuf {
        self.path("01-rust-managed.conf")
    }
    pub fn hosts_file(&self) -> PathBuf {
        self.path("dhcp-hosts")
    }
    pub fn addn_hosts_file(&self) -> PathBuf {
        self.path("hosts")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.path("dnsmasq.pid")
    }
    pub fn log_file(&self) -> PathBuf {
        self.path("dnsmasq.log")
    }
    pub fn lease_file(&self) -> PathBuf {
        self.path("leases")
    }
    /// The directory for `dhcp-hostsdir` (the incremental layout's DHCP shards).
    pub fn hosts_dir(&self) -> PathBuf {
        self.path("dhcp-hosts.d")
    }
    /// The directory for `hostsdir` (the incremental layout's DNS shards).
    pub fn names_dir(&self) -> PathBuf {
        self.path("hosts.d")
    }

    /// Runs `f` on a thread that has entered the client namespace, e.g. to open a socket that
    /// then stays there whichever thread uses it.
    pub fn in_client_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = PathBuf::from("/var/run/netns").join(&self.client_ns);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = std::fs::File::open(&ns)
                        .unwrap_or_else(|e| panic!("cannot open {}: {e}", ns.display()));
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("cannot enter {}: {e}", ns.display()));
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// `10.99.<octet>.<host>`.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.octet, host)
    }

    /// A command for the agent's `restart_command`: stops the running dnsmasq and waits until
    /// it has exited; the lab's supervisor starts it again. With no dnsmasq running yet there
    /// is nothing to restart: the first start reads the files anyway.
    pub fn restart_command(&self) -> Vec<String> {
        let script = self.path("restart-dnsmasq");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 pid=$(cat '{pid}' 2>/dev/null) || exit 0\n\
                 kill \"$pid\" 2>/dev/null || exit 0\n\
                 for _ in $(seq 1 200); do kill -0 \"$pid\" 2>/dev/null || exit 0; sleep 0.05; done\n\
                 echo \"dnsmasq $pid did not stop\" >&2\n\
                 exit 1\n",
                pid = self.pid_file().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![script.display().to_string()]
    }

    /// Starts dnsmasq under supervision and waits until it serves. The include file must
    /// exist: start it after the agent's first sync.
    pub async fn start_dnsmasq(&mut self) {
        assert!(
            self.include_file().exists(),
            "start dnsmasq after the agent wrote {}",
            self.include_file().display()
        );
        assert!(self.supervisor.is_none(), "dnsmasq already started");
        let ip = self.tools.ip.clone();
        let dnsmasq = self.tools.dnsmasq.clone();
        let ns = self.server_ns.clone();
        let args: Vec<String> = vec![
            "--keep-in-foreground".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            format!("--interface={}", self.server_if),
            "--except-interface=lo".into(),
            "--port=53".into(),
            format!("--pid-file={}", self.pid_file().display()),
            format!("--dhcp-leasefile={}", self.lease_file().display()),
            format!("--log-facility={}", self.log_file().display()),
            "--log-dhcp".into(),
            "--log-queries".into(),
            format!("--conf-file={}", self.include_file().display()),
            "--dhcp-authoritative".into(),
        ];
        let stderr_file = self.path("dnsmasq.stderr");
        self.supervisor = Some(Supervisor::start(move || {
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stderr_file)
                .expect("dnsmasq stderr file");
            let mut command = Command::new(&ip);
            command
                .args(["netns", "exec", &ns])
                .arg(&dnsmasq)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            command
        }));
        self.wait_dnsmasq_ready(0).await;
    }

    /// Stops the supervised dnsmasq for good (until [`Lab::start_dnsmasq`] is called again)
    /// and removes its pid file, so that a SIGHUP from the agent fails as with no dnsmasq.
    pub fn stop_dnsmasq(&mut self) {
        let mut supervisor = self.supervisor.take().expect("dnsmasq was started");
        supervisor.stop();
        let exits = supervisor.state.lock().unwrap().exits.clone();
        self.stopped_exits.extend(exits);
        match std::fs::remove_file(self.pid_file()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", self.pid_file().display()),
        }
    }

    /// Writes an executable, world-readable shell script into the lab directory.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts a long-running DHCP client (udhcpc in the foreground) with `mac`. Its script
    /// records every event and configures the leased address on the interface, as a real
    /// client would, so that renewals (unicast from the leased address) work.
    pub fn dhcp_client(&self, mac: &str) -> DhcpClient {
        self.ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            "dev",
            &self.client_if,
            "address",
            mac,
        ])
        .unwrap_or_else(|e| panic!("cannot set the client's MAC: {e}"));
        let events = self.path("udhcpc-events");
        let state = self.path("udhcpc-address");
        let _ = std::fs::remove_file(&events);
        let _ = std::fs::remove_file(&state);
        let script = self.write_script(
            "udhcpc-client-script",
            &format!(
                "echo \"$1 $ip\" >> '{events}'\n\
                 drop() {{ [ -f '{state}' ] && '{ip}' addr del \"$(cat '{state}')/32\" dev \"$interface\" 2>/dev/null; rm -f '{state}'; }}\n\
                 case \"$1\" in\n\
                 deconfig|nak|leasefail) drop ;;\n\
                 bound|renew) [ \"$(cat '{state}' 2>/dev/null)\" = \"$ip\" ] || {{ drop; '{ip}' addr add \"$ip/32\" dev \"$interface\" && echo \"$ip\" > '{state}'; }} ;;\n\
                 esac\n\
                 exit 0\n",
                events = events.display(),
                state = state.display(),
                ip = self.tools.ip.display(),
            ),
        );
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .args(&self.tools.udhcpc)
            .args(["-i", &self.client_if, "-f", "-t", "10", "-T", "1"])
            .arg("-s")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("udhcpc runs");
        DhcpClient {
            child,
            events,
            mac: mac.to_owned(),
        }
    }

    fn supervisor_state<T>(&self, f: impl FnOnce(&SupervisorState) -> T) -> T {
        let supervisor = self.supervisor.as_ref().expect("dnsmasq was started");
        f(&supervisor.state.lock().unwrap())
    }

    /// How often dnsmasq was started (1 after [`Lab::start_dnsmasq`], +1 per restart).
    pub fn dnsmasq_starts(&self) -> usize {
        self.supervisor_state(|s| s.starts)
    }

    /// The pid of the running dnsmasq, as its pid file says.
    pub fn dnsmasq_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits until dnsmasq has been started more than `starts_before` times and the running
    /// one has written its pid file and logged its start.
    pub async fn wait_dnsmasq_ready(&self, starts_before: usize) {
        let deadline = Instant::now() + self.start_deadline;
        loop {
            let (starts, pid) = self.supervisor_state(|s| (s.starts, s.pid));
            if let Some(pid) = pid.filter(|_| starts > starts_before) {
                if self.dnsmasq_pid() == Some(pid) && self.has_read_its_files(pid) {
                    // Directories are read file by file, logged only per file present; they
                    // are all read before dnsmasq answers its first query.
                    if self.include_names_directories() {
                        self.wait_first_answer(deadline).await;
                    }
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "dnsmasq did not become ready (starts {starts}, pid {pid:?}); {}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether dnsmasq `pid` has logged its start and then its first read of the files its
    /// include file names (the conf layout names none). It
    /// logs "started" before it reads them, so a test that counted reads right after "started"
    /// could take this first read for the re-read of a later SIGHUP.
    fn has_read_its_files(&self, pid: i32) -> bool {
        let log = self.log();
        let include = std::fs::read_to_string(self.include_file()).unwrap_or_default();
        let started_line = format!("dnsmasq[{pid}]: started,");
        let Some((_, since_start)) = log.split_once(&started_line) else {
            return false;
        };
        let hosts = format!(": read {}", self.hosts_file().display());
        let addn = format!(": read {} - ", self.addn_hosts_file().display());
        let read = |named: &str, line_read: &dyn Fn(&str) -> bool| {
            !include.contains(named) || since_start.lines().any(line_read)
        };
        read("dhcp-hostsfile=", &|l| l.ends_with(&hosts))
            && read("addn-hosts=", &|l| l.contains(&addn))
    }

    /// Waits until dnsmasq answers a DNS query (any answer), or fails at `deadline`.
    async fn wait_first_answer(&self, deadline: Instant) {
        let dns = super::probe::DnsProber::new(self);
        while dns
            .query("ready.invalid", Duration::from_millis(500))
            .await
            .is_none()
        {
            if Instant::now() > deadline {
                panic!("dnsmasq never answered a query; {}", self.diagnostics());
            }
        }
    }

    /// Whether the include file names `dhcp-hostsdir` or `hostsdir` directories.
    fn include_names_directories(&self) -> bool {
        let include = std::fs::read_to_string(self.include_file()).unwrap_or_default();
        include
            .lines()
            .any(|l| l.starts_with("dhcp-hostsdir=") || l.starts_with("hostsdir="))
    }

    /// dnsmasq's log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// How many times dnsmasq has (re-)read the dhcp-hostsfile and the addn-hosts file.
    pub fn reads(&self) -> (usize, usize) {
        let log = self.log();
        let hosts = format!(": read {}", self.hosts_file().display());
        let addn = format!(": read {} - ", self.addn_hosts_file().display());
        (
            log.lines().filter(|l| l.ends_with(&hosts)).count(),
            log.lines().filter(|l| l.contains(&addn)).count(),
        )
    }

    /// Waits until dnsmasq logged that it re-read both files after `before` (from
    /// [`Lab::reads`]), i.e. it has handled a SIGHUP.
    pub async fn wait_reread(&self, before: (usize, usize)) {
        self.wait_log("dnsmasq to re-read both files", |_| {
            let now = self.reads();
            now.0 > before.0 && now.1 > before.1
        })
        .await;
    }

    /// Polls dnsmasq's log until `condition` holds, or fails with `what`.
    pub async fn wait_log(&self, what: &str, condition: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + E2E_DEADLINE;
        loop {
            if condition(&self.log()) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; {}", self.diagnostics());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A DHCP exchange from the client namespace with `mac`: the address acknowledged, or `None`
    /// when no lease was obtained within udhcpc's retries (about 10 s).
    pub async fn dhcp(&self, mac: &str) -> Option<Ipv4Addr> {
        self.ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            "dev",
            &self.client_if,
            "address",
            mac,
        ])
        .unwrap_or_else(|e| panic!("cannot set the client's MAC: {e}"));
        let script = self.path("udhcpc-script");
        if !script.exists() {
            std::fs::write(
                &script,
                "#!/bin/sh\ncase \"$1\" in bound|renew) echo \"lease $ip\" ;; esac\n",
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .args(&self.tools.udhcpc)
            .args([
                "-i",
                &self.client_if,
                "-n",
                "-q",
                "-f",
                "-t",
                "10",
                "-T",
                "1",
            ])
            .arg("-s")
            .arg(&script)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(E2E_DEADLINE, command.output())
            .await
            .unwrap_or_else(|_| panic!("udhcpc did not finish; {}", self.diagnostics()))
            .expect("udhcpc runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let leased: Vec<Ipv4Addr> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("lease "))
            .map(|ip| ip.trim().parse().expect("udhcpc reports an IPv4 address"))
            .collect();
        match (output.status.success(), leased.as_slice()) {
            (true, [ip]) => Some(*ip),
            (false, []) => None,
            _ => panic!(
                "unexpected udhcpc result {}: stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// A DHCP exchange with `mac` and `args` added to udhcpc's (`-O OPTION` to request an
    /// option, `-x 0x5d:0007` to send one): what udhcpc told its script, by variable (`ip`,
    /// `dns`, `ntpsrv`, `search`, `mtu`, `staticroutes`, `boot_file`, `siaddr`, `sname`, ...),
    /// or `None` when no lease was obtained.
    pub async fn dhcp_env(
        &self,
        mac: &str,
        args: &[&str],
    ) -> Option<std::collections::HashMap<String, String>> {
        self.ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            "dev",
            &self.client_if,
            "address",
            mac,
        ])
        .unwrap_or_else(|e| panic!("cannot set the client's MAC: {e}"));
        const VARIABLES: [&str; 11] = [
            "ip",
            "router",
            "dns",
            "ntpsrv",
            "search",
            "domain",
            "mtu",
            "staticroutes",
            "boot_file",
            "siaddr",
            "sname",
        ];
        let script = self.write_script(
            "udhcpc-env-script",
            &format!(
                "case \"$1\" in bound|renew) {} ;; esac\nexit 0\n",
                VARIABLES
                    .iter()
                    .map(|v| format!("echo \"env {v}=${v}\""))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .args(&self.tools.udhcpc)
            .args([
                "-i",
                &self.client_if,
                "-n",
                "-q",
                "-f",
                "-t",
                "10",
                "-T",
                "1",
            ])
            .args(args)
            .arg("-s")
            .arg(&script)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(E2E_DEADLINE, command.output())
            .await
            .unwrap_or_else(|_| panic!("udhcpc did not finish; {}", self.diagnostics()))
            .expect("udhcpc runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let env: std::collections::HashMap<String, String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("env "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        (output.status.success() && env.contains_key("ip")).then_some(env)
    }

    /// Asks dnsmasq from the client namespace: `args` are dig's query arguments (`NAME`, or
    /// `-x IP`). Returns the answers (`+short`), empty for NXDOMAIN or no data; panics when
    /// dnsmasq does not answer.
    pub async fn dig(&self, args: &[&str]) -> Vec<String> {
        self.try_dig(args).await.unwrap_or_else(|failure| {
            panic!("dig {args:?} failed ({failure}); {}", self.diagnostics())
        })
    }

    /// [`Lab::dig`], with dnsmasq's silence (e.g. while it restarts) as an error, not a panic.
    pub async fn try_dig(&self, args: &[&str]) -> Result<Vec<String>, String> {
        let server = format!("@{}", self.server_ip);
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .arg(&self.tools.dig)
            .args(["+short", "+time=1", "+tries=2", &server])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(E2E_DEADLINE, command.output())
            .await
            .expect("dig finishes")
            .expect("dig runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && !stdout.contains(";;") {
            Ok(stdout.lines().map(str::to_owned).collect())
        } else {
            Err(format!(
                "{}: {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// AAAA: the IPv6 addresses `name` resolves to.
    pub async fn resolve6(&self, name: &str) -> Vec<String> {
        self.dig(&[name, "AAAA"]).await
    }

    /// PTR of an IPv6 address.
    pub async fn reverse6(&self, ip: Ipv6Addr) -> Vec<String> {
        self.dig(&["-x", &ip.to_string()]).await
    }

    /// Many A queries in one dig run (`dig -f`): the answers by queried name (without the
    /// trailing dot); names without an answer are absent.
    pub async fn resolve_all(
        &self,
        names: &[String],
    ) -> std::collections::HashMap<String, Vec<Ipv4Addr>> {
        let batch = self.path("dig-batch");
        let queries: String = names.iter().map(|n| format!("{n} A\n")).collect();
        std::fs::write(&batch, queries).unwrap();
        let server = format!("@{}", self.server_ip);
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .arg(&self.tools.dig)
            .args([&server, "+time=2", "+tries=3", "+noall", "+answer", "-f"])
            .arg(&batch)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("dig -f finishes")
            .expect("dig runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "dig -f failed: {stdout}");
        let mut answers: std::collections::HashMap<String, Vec<Ipv4Addr>> = Default::default();
        for line in stdout.lines() {
            // NAME. TTL IN A ADDRESS
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [name, _, "IN", "A", address] = fields[..] {
                answers
                    .entry(name.trim_end_matches('.').to_owned())
                    .or_default()
                    .push(address.parse().expect("an IPv4 address"));
            }
        }
        answers
    }

    /// A: the addresses `name` resolves to.
    pub async fn resolve(&self, name: &str) -> Vec<String> {
        self.dig(&[name, "A"]).await
    }

    /// PTR: the names `ip` resolves back to.
    pub async fn reverse(&self, ip: Ipv4Addr) -> Vec<String> {
        self.dig(&["-x", &ip.to_string()]).await
    }

    /// Makes sure dnsmasq has handled everything sent to it before now: signals are handled in
    /// its main loop before the query that follows them is logged.
    pub async fn barrier(&self, tag: &str) {
        let name = format!("barrier-{tag}.invalid");
        assert!(self.resolve(&name).await.is_empty());
        let line = format!("query[A] {name} from");
        self.wait_log("dnsmasq to log the barrier query", |log| {
            log.contains(&line)
        })
        .await;
    }

    /// Gives the server interface `fd99:<octet>::1/64` and turns duplicate address detection
    /// off on the client side, so that a DHCPv6 client can start at once (a tentative
    /// link-local address cannot send). Call before [`Lab::start_dnsmasq`]: dnsmasq binds the
    /// addresses it finds when it starts. Returns `None` after a loud skip line when no DHCPv6
    /// client (`dhclient`, from isc-dhcp-client) is installed.
    pub fn enable_ipv6(&self) -> Option<()> {
        if find_program("dhclient").is_none() {
            unavailable("missing programs: dhclient (isc-dhcp-client), the DHCPv6 client");
            return None;
        }
        let server = format!("{}/64", self.addr6(1));
        self.ip(&[
            "-n",
            &self.server_ns,
            "addr",
            "add",
            &server,
            "dev",
            &self.server_if,
            "nodad",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let dad = format!("/proc/sys/net/ipv6/conf/{}/accept_dad", self.client_if);
        let status = Command::new(&self.tools.ip)
            .args(["netns", "exec", &self.client_ns, "sh", "-c"])
            .arg(format!("echo 0 > {dad}"))
            .status()
            .expect("sh runs");
        assert!(
            status.success(),
            "cannot turn DAD off in the client namespace"
        );
        // A new link-local address, this time without DAD.
        for state in ["down", "up"] {
            self.ip(&[
                "-n",
                &self.client_ns,
                "link",
                "set",
                "dev",
                &self.client_if,
                state,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        }
        Some(())
    }

    /// `fd99:<octet>::<host>` (hex).
    pub fn addr6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd99, u16::from(self.octet), 0, 0, 0, 0, 0, host)
    }

    /// One DHCPv6 exchange by a real client (ISC `dhclient -6`, a Solicit with a fresh lease
    /// file) from `mac` with the DUID `duid`: the address it was given, or `None`. The client is
    /// stopped (without release) once bound.
    pub async fn dhcp6(&self, mac: &str, duid: &[u8]) -> Option<Ipv6Addr> {
        // Down, new MAC, up: the link-local address follows the MAC (no DAD, see
        // `enable_ipv6`), and the server forgets the old one's neighbour entry, through which
        // it would answer a MAC the client no longer has.
        let client = ["-n", &self.client_ns, "link", "set", "dev", &self.client_if];
        for change in [&["down"][..], &["address", mac], &["up"]] {
            self.ip(&[&client[..], change].concat())
                .unwrap_or_else(|e| panic!("cannot set the client's MAC: {e}"));
        }
        self.ip(&[
            "-n",
            &self.server_ns,
            "neigh",
            "flush",
            "dev",
            &self.server_if,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        // The link-local address comes with the carrier, a moment after `up`.
        let deadline = Instant::now() + E2E_DEADLINE;
        let show = [
            "-n",
            &self.client_ns,
            "-6",
            "addr",
            "show",
            "dev",
            &self.client_if,
        ];
        while !self
            .ip(&[&show[..], &["scope", "link"]].concat())
            .is_ok_and(|out| out.contains("inet6 fe80:"))
        {
            assert!(
                Instant::now() < deadline,
                "no link-local address on the client"
            );
            tokio::time::sleep(POLL).await;
        }
        let (events, leases, pid) = (
            self.path("dhclient6-events"),
            self.path("dhclient6.leases"),
            self.path("dhclient6.pid"),
        );
        let _ = std::fs::remove_file(&events);
        // dhclient takes its DUID from the lease file's default-duid, in octal escapes.
        let octal: String = duid.iter().map(|b| format!("\\{b:03o}")).collect();
        std::fs::write(&leases, format!("default-duid \"{octal}\";\n")).unwrap();
        let script = self.write_script(
            "dhclient6-script",
            &format!(
                "echo \"$reason $new_ip6_address\" >> '{}'\nexit 0\n",
                events.display()
            ),
        );
        let mut command = tokio::process::Command::new(&self.tools.ip);
        command
            .args(["netns", "exec", &self.client_ns])
            .arg(find_program("dhclient").expect("dhclient is installed"))
            .args(["-6", "-1", "-sf"])
            .arg(&script)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(&pid)
            .arg(&self.client_if)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let finished = tokio::time::timeout(E2E_DEADLINE, command.status()).await;
        // Once bound, dhclient went on in the background: stop that process (ours, by pid).
        if let Some(daemon) = std::fs::read_to_string(&pid)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(daemon), Signal::SIGTERM);
            let _ = std::fs::remove_file(&pid);
        }
        if finished.is_err() {
            return None;
        }
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("BOUND6 "))
            .find_map(|ip| ip.trim().parse().ok())
    }

    /// The files and logs that explain a failure.
    pub fn diagnostics(&self) -> String {
        let mut text = String::from("lab state:");
        if let Some(supervisor) = &self.supervisor {
            let s = supervisor.state.lock().unwrap();
            let _ = write!(
                text,
                "\ndnsmasq starts {}, pid {:?}, exits {:?}",
                s.starts, s.pid, s.exits
            );
        }
        if !self.stopped_exits.is_empty() {
            let _ = write!(text, "\nstopped dnsmasq runs: {:?}", self.stopped_exits);
        }
        for name in [
            "01-rust-managed.conf",
            "dhcp-hosts",
            "hosts",
            "leases",
            "dnsmasq.pid",
            "dnsmasq.stderr",
            "udhcpc-events",
            "dhclient6-events",
        ] {
            let content = std::fs::read_to_string(self.path(name));
            let _ = write!(text, "\n--- {name}:\n{}", content.unwrap_or_default());
        }
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let _ = write!(text, "\n--- dnsmasq.log (last 60 lines):");
        for line in tail.into_iter().rev() {
            let _ = write!(text, "\n{line}");
        }
        text
    }
}

/// A DHCP client that keeps running (and renewing) until dropped; see [`Lab::dhcp_client`].
pub struct DhcpClient {
    child: tokio::process::Child,
    events: PathBuf,
    pub mac: String,
}

impl DhcpClient {
    /// The script events so far, as `EVENT IP` lines (`deconfig `, `bound 10.99.1.10`,
    /// `nak `, `renew 10.99.1.10`, ...).
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until an event line equal to `event` occurs after the first `after` events.
    pub async fn wait_event(&mut self, lab: &Lab, event: &str, after: usize) {
        let deadline = Instant::now() + E2E_DEADLINE;
        loop {
            if self.events().iter().skip(after).any(|e| e == event) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "udhcpc exited with {status} before {event:?}: events {:?}; {}",
                    self.events(),
                    lab.diagnostics()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for udhcpc event {event:?}: events {:?}; {}",
                    self.events(),
                    lab.diagnostics()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks the client to renew its lease now (SIGUSR1), as it would at half the lease time.
    pub fn renew(&self) {
        let pid = self.child.id().expect("udhcpc is running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGUSR1).expect("signal udhcpc");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut supervisor) = self.supervisor.take() {
            supervisor.stop();
        }
        // udhcpc and dig are children with kill_on_drop; what is left in a namespace is gone
        // once no process holds it.
        for ns in self.namespaces_created.drain(..).rev() {
            if let Err(e) = run(&self.tools.ip, &["netns", "del", &ns]) {
                eprintln!("warning: {e}");
            }
        }
    }
}
