//! Commit-to-lease benchmark: what an admin feels. From the COMMIT of a one-row change (an
//! `UPDATE` of one host's IP) until a real DHCP client (busybox udhcpc in the lab's client
//! namespace) is handed the new address by a real dnsmasq, with the agent running in-process
//! and writing where that dnsmasq reads. dnsmasq's own re-read time (SIGHUP until a DNS query
//! is answered from the re-read files) is measured separately. Results go to
//! docs/benchmarks.md ("Commit to lease").
//!
//! Needs root, network namespaces, dnsmasq, udhcpc and dig (see tests/common/netns.rs); without
//! them it prints why and exits 0. Environment: `IPMANAGER_TEST_DATABASE_URL` (required),
//! `IPMANAGER_LEASE_BENCH_SIZES` (default `1000,10000`), `IPMANAGER_LEASE_BENCH_CHANGES`
//! (default 30).

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use support::{env_or, ms, sizes_from_env, stats, Stats};

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::{prerequisites, Lab, Tools};
use common::probe::DnsProber;
use common::TestDb;
use ipmanager::agent::{Agent, Phase, Status};
use ipmanager::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

const WAIT: Duration = Duration::from_secs(60);
/// Spacing of measured changes: well beyond the agent's burst interval (100 ms), so that each
/// change is an isolated one.
const PACE: Duration = Duration::from_millis(300);
/// The lab's /24 inside the benchmark's /16 (10.99.0.0/16): dnsmasq listens on 10.99.7.1.
const OCTET: u8 = 7;

fn main() {
    if let Err(reason) = prerequisites() {
        eprintln!("SKIPPED: the commit-to-lease benchmark needs the end-to-end lab: {reason}");
        return;
    }
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!(
            "SKIPPED: set {} to a PostgreSQL superuser URL (or run scripts/bench)",
            common::TEST_DATABASE_URL_VAR
        );
        return;
    }
    // `cargo bench` passes --bench; a filter argument is not supported, so ignore arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

struct Row {
    hosts: usize,
    latency: Stats,
    agent: Stats,
    attempts_median: usize,
    attempts_max: usize,
    naks: usize,
    exchange: Stats,
    reread: Stats,
    reread_queries_max: usize,
    query_rtt: Stats,
}

async fn run() {
    let sizes = sizes_from_env("IPMANAGER_LEASE_BENCH_SIZES", "1000,10000");
    let changes: usize = env_or("IPMANAGER_LEASE_BENCH_CHANGES", 30);
    assert!((1..=5000).contains(&changes), "1 to 5000 changes");
    let tools = prerequisites().expect("checked in main");
    let mut rows = Vec::new();
    for &hosts in &sizes {
        assert!((1..=40_000).contains(&hosts), "1 to 40000 hosts");
        eprintln!("== {hosts} hosts");
        rows.push(run_size(&tools, hosts, changes).await);
    }
    print_report(&rows, changes);
}

async fn run_size(tools: &Tools, hosts: usize, changes: usize) -> Row {
    let Some(mut lab) = Lab::new(OCTET) else {
        panic!("the lab cannot run here (see the SKIPPED line above)");
    };
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
             VALUES ('bench', '10.99.0.0/16', '10.99.{OCTET}.100', '10.99.{OCTET}.199',
                     '10.99.{OCTET}.1', 'bench.lan');
             INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr, '10.99.0.0'::inet + 4096 + i, 'h' || i
             FROM generate_series(1, {hosts}) AS i"
        ))
        .await
        .unwrap();
    // What autovacuum would do soon after a bulk load (as in benches/sync.rs).
    client
        .batch_execute("VACUUM ANALYZE ipmanager.hosts")
        .await
        .unwrap();
    // The measured host: one in the middle of the table.
    let row = client
        .query_one(
            "SELECT id, mac::text, host(ip) FROM ipmanager.hosts WHERE hostname = $1",
            &[&format!("h{}", hosts.div_ceil(2))],
        )
        .await
        .unwrap();
    let (id, mac, first_ip): (i64, String, String) = (row.get(0), row.get(1), row.get(2));

    let mut agent = AgentRun::start(&db, &lab);
    agent.wait_in_sync().await;
    lab.start_dnsmasq().await;

    // Warm-up: the lab's own DHCP exchange (it also sets the client's MAC), then the baseline
    // cost of one exchange with nothing changed: process start in the namespace, DISCOVER,
    // OFFER, REQUEST, ACK, script.
    let first_ip: Ipv4Addr = first_ip.parse().unwrap();
    assert_eq!(
        lab.dhcp(&mac).await,
        Some(first_ip),
        "{}",
        lab.diagnostics()
    );
    let client_dhcp = OneShot::new(tools, &lab);
    let mut exchange = Vec::with_capacity(changes);
    for _ in 0..changes {
        let start = Instant::now();
        let got = client_dhcp.run(&lab).await;
        exchange.push(start.elapsed());
        assert_eq!(got.lease, Some(first_ip), "{}", lab.diagnostics());
    }

    // The measured changes.
    let update = client
        .prepare("UPDATE ipmanager.hosts SET ip = $1::text::inet WHERE id = $2")
        .await
        .unwrap();
    let mut latency = Vec::with_capacity(changes);
    let mut agent_part = Vec::with_capacity(changes);
    let mut attempts = Vec::with_capacity(changes);
    let mut naks = 0;
    for i in 0..changes {
        tokio::time::sleep(PACE).await;
        agent.wait_in_sync().await;
        let new_ip = Ipv4Addr::new(10, 99, 200 + (i / 250) as u8, 1 + (i % 250) as u8);
        let activations_before = agent.status().activations;
        let start = Instant::now();
        client
            .execute(&update, &[&new_ip.to_string(), &id])
            .await
            .unwrap();
        let mut tries = 0;
        loop {
            tries += 1;
            let got = client_dhcp.run(&lab).await;
            naks += got.naks;
            if got.lease == Some(new_ip) {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "the client never got {new_ip} (last {:?}); {}",
                got.lease,
                lab.diagnostics()
            );
        }
        latency.push(start.elapsed());
        attempts.push(tries);
        if let Some(at) = agent.activated_after(activations_before, start) {
            agent_part.push(at - start);
        }
    }

    // dnsmasq's re-read: a new name written into the addn-hosts file (atomically, as the agent
    // does), then SIGHUP, then DNS queries for that name, from a socket opened beforehand in the
    // client namespace, until one is answered. dnsmasq handles signals in its main loop before
    // the packets that arrive after them; a query that still gets the old data is re-sent at
    // once. One query's round trip is timed too, interleaved with the re-reads.
    let addn = lab.addn_hosts_file();
    let original = std::fs::read_to_string(&addn).unwrap();
    let pid = lab.dnsmasq_pid().expect("dnsmasq runs");
    let known = format!("h{}.bench.lan", hosts.div_ceil(2));
    assert_eq!(lab.resolve(&known).await.len(), 1, "{known} resolves");
    let dns = DnsProber::new(&lab);
    let answered = |name: String| {
        let dns = dns.clone();
        async move {
            !dns.query(&name, Duration::from_secs(2))
                .await
                .expect("dnsmasq answers DNS queries")
                .is_empty()
        }
    };
    let mut query_rtt = Vec::with_capacity(changes);
    let mut reread = Vec::with_capacity(changes);
    let mut reread_queries_max = 0;
    for j in 0..changes {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        assert!(answered(known.clone()).await, "{known} resolves");
        query_rtt.push(start.elapsed());

        let name = format!("reread{j}.bench.lan");
        let ip = Ipv4Addr::new(10, 99, 250, 1 + (j % 250) as u8);
        replace_file(&addn, &format!("{original}{ip} {name}\n"));
        let start = Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGHUP).expect("signal dnsmasq");
        let mut tries = 1;
        while !answered(name.clone()).await {
            tries += 1;
            assert!(start.elapsed() < WAIT, "dnsmasq never served {name}");
        }
        reread.push(start.elapsed());
        reread_queries_max = reread_queries_max.max(tries);
    }
    // Back to the agent's file, and dnsmasq to it.
    replace_file(&addn, &original);
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("signal dnsmasq");

    agent.stop().await;
    drop(lab);
    drop(client);
    drop(db);
    attempts.sort_unstable();
    Row {
        hosts,
        latency: stats(&latency),
        agent: stats(&agent_part),
        attempts_median: attempts[(attempts.len() - 1) / 2],
        attempts_max: *attempts.last().unwrap(),
        naks,
        exchange: stats(&exchange),
        reread: stats(&reread),
        reread_queries_max,
        query_rtt: stats(&query_rtt),
    }
}

/// Writes `content` to `path` through a temporary file and a rename, readable by dnsmasq.
fn replace_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("bench-tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A one-shot udhcpc in the client namespace (`-n -q`: one exchange, then exit), with a script
/// that reports the address it is bound to and any NAK.
struct OneShot {
    ip: PathBuf,
    udhcpc: Vec<PathBuf>,
    script: PathBuf,
}

struct Exchange {
    lease: Option<Ipv4Addr>,
    naks: usize,
}

impl OneShot {
    fn new(tools: &Tools, lab: &Lab) -> OneShot {
        let script = lab.write_script(
            "udhcpc-bench-script",
            "case \"$1\" in bound|renew) echo \"lease $ip\" ;; nak) echo nak ;; esac\nexit 0\n",
        );
        OneShot {
            ip: tools.ip.clone(),
            udhcpc: tools.udhcpc.clone(),
            script,
        }
    }

    async fn run(&self, lab: &Lab) -> Exchange {
        let mut command = tokio::process::Command::new(&self.ip);
        command
            .args(["netns", "exec", &lab.client_ns])
            .args(&self.udhcpc)
            .args([
                "-i",
                &lab.client_if,
                "-n",
                "-q",
                "-f",
                "-t",
                "10",
                "-T",
                "1",
            ])
            .arg("-s")
            .arg(&self.script)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(WAIT, command.output())
            .await
            .expect("udhcpc finishes")
            .expect("udhcpc runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        Exchange {
            lease: stdout
                .lines()
                .filter_map(|l| l.strip_prefix("lease "))
                .filter_map(|ip| ip.trim().parse().ok())
                .next_back(),
            naks: stdout.lines().filter(|l| *l == "nak").count(),
        }
    }
}

/// The in-process agent (as in tests/e2e.rs), writing where the lab's dnsmasq reads, with the
/// times at which its activation count went up.
struct AgentRun {
    status: watch::Receiver<Status>,
    activations: Arc<Mutex<Vec<(u64, Instant)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AgentRun {
    fn start(db: &TestDb, lab: &Lab) -> AgentRun {
        let file = lab.path("ipmanager.toml");
        let restart = lab
            .restart_command()
            .iter()
            .map(|arg| format!("{arg:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &file,
            format!(
                r#"database_url = "{url}"
log_level = "warn"
[agent]
name = "bench"
[dnsmasq]
layout = "hostsfile"
include_file = "{include}"
hosts_file = "{hosts}"
addn_hosts_file = "{addn}"
pid_file = "{pid}"
restart_command = [{restart}]
"#,
                url = db.url,
                include = lab.include_file().display(),
                hosts = lab.hosts_file().display(),
                addn = lab.addn_hosts_file().display(),
                pid = lab.pid_file().display(),
            ),
        )
        .unwrap();
        let config = Config::load(Some(&file), std::iter::empty()).expect("bench config is valid");
        let agent = Agent::new(config);
        let status = agent.status();
        let activations = Arc::new(Mutex::new(Vec::new()));
        let (sink, mut watcher) = (Arc::clone(&activations), agent.status());
        tokio::spawn(async move {
            let mut last = 0;
            while watcher.changed().await.is_ok() {
                let now = Instant::now();
                let count = watcher.borrow_and_update().activations;
                if count != last {
                    last = count;
                    sink.lock().unwrap().push((count, now));
                }
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent runs until stopped");
        });
        AgentRun {
            status,
            activations,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    async fn wait_in_sync(&mut self) {
        let reached =
            tokio::time::timeout(WAIT, self.status.wait_for(|s| s.phase == Phase::InSync))
                .await
                .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "timed out waiting for the agent; status: {:?}",
            self.status.borrow()
        );
    }

    /// When the activation count first exceeded `before`, if that was after `since`.
    fn activated_after(&self, before: u64, since: Instant) -> Option<Instant> {
        self.activations
            .lock()
            .unwrap()
            .iter()
            .find(|(count, at)| *count > before && *at >= since)
            .map(|(_, at)| *at)
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task ends cleanly");
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn print_report(rows: &[Row], changes: usize) {
    println!();
    println!(
        "One-row change, COMMIT to the DHCP client bound to the new address ({changes} changes each):"
    );
    println!();
    println!("| hosts | median ms | p99 ms | agent: COMMIT to SIGHUP sent, median ms | udhcpc runs per change, median (max) | NAKs | one udhcpc exchange, nothing changed: median ms | p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
            r.hosts,
            ms(r.latency.median),
            ms(r.latency.p99),
            ms(r.agent.median),
            r.attempts_median,
            r.attempts_max,
            r.naks,
            ms(r.exchange.median),
            ms(r.exchange.p99),
        );
    }
    println!();
    println!("dnsmasq's re-read: SIGHUP to the first DNS answer from the re-read files, next to one query's round trip ({changes} each):");
    println!();
    println!("| hosts | SIGHUP to answer median ms | p99 ms | one query round trip median ms | p99 ms | queries per SIGHUP, max |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.hosts,
            ms(r.reread.median),
            ms(r.reread.p99),
            ms(r.query_rtt.median),
            ms(r.query_rtt.p99),
            r.reread_queries_max,
        );
    }
}
