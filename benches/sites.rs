//! Benchmark of sites: many agents, one per site, against one database. One host changes in one
//! site; measured are the time until that site's agent has applied it (its "applied" log line:
//! files written and dnsmasq signalled) and how many agents did any work (wrote files and
//! signalled dnsmasq), with `dns_scope = "sites"` and with `dns_scope = "all"`. Run with
//! `scripts/bench sites`; results go to docs/benchmarks.md.
//!
//! Every agent's pid file names this process, which names itself dnsmasq, so that the agents'
//! SIGHUPs succeed. They are not counted: signals sent at the same moment coalesce, so the count
//! would be a lower bound; the agents' own "applied" lines say who did work.

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use support::{env_or, ms, stats, strip_ansi, Stats};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestDb;
use tokio::signal::unix::{signal, SignalKind};

const BIN: &str = env!("CARGO_BIN_EXE_ipmanager");
const WAIT: Duration = Duration::from_secs(300);
/// No agent has logged anything for this long: every agent is done with the change.
const QUIET: Duration = Duration::from_millis(400);

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    // The main thread's name is the process's command name, which the agents check.
    nix::sys::prctl::set_name(c"dnsmasq").expect("the benchmark names itself dnsmasq");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// The results of one DNS scope.
struct Row {
    dns_scope: &'static str,
    changes: usize,
    latency: Stats,
    /// Per change: agents that wrote files and signalled dnsmasq, min and max.
    working_agents: (u64, u64),
    /// Per change: agents that read a snapshot, min and max.
    reading_agents: (u64, u64),
}

async fn run() {
    let sites: usize = env_or("IPMANAGER_BENCH_SITES", 50);
    let per_site: usize = env_or("IPMANAGER_BENCH_SITE_HOSTS", 2000);
    let changes_sites: usize = env_or("IPMANAGER_BENCH_SITE_CHANGES", 100);
    let changes_all: usize = env_or("IPMANAGER_BENCH_SITE_CHANGES_ALL", 20);
    // SIGHUP would end the process; the handler only keeps it alive.
    let mut hups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::spawn(async move { while hups.recv().await.is_some() {} });

    let db = TestDb::new().await;
    let client = db.client().await;
    eprintln!("== loading {sites} sites of {per_site} hosts");
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.sites (name) SELECT 'site' || i FROM generate_series(0, {last}) i;
             INSERT INTO ipmanager.subnets (name, cidr, domain, site)
             SELECT 'net' || i, ('10.' || (i + 1) || '.0.0/16')::cidr, 'site' || i || '.lan', 'site' || i
             FROM generate_series(0, {last}) i;
             INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('02' || lpad(to_hex(i), 2, '0') || lpad(to_hex(j), 8, '0'))::macaddr,
                    ('10.' || (i + 1) || '.0.0')::inet + 16 + j, 'h' || i || '-' || j
             FROM generate_series(0, {last}) i, generate_series(1, {per_site}) j;",
            last = sites - 1
        ))
        .await
        .unwrap();
    // What autovacuum would do soon on a real server (one statement each: not in a transaction).
    for table in ["hosts", "subnets"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE ipmanager.{table}"))
            .await
            .unwrap();
    }

    let update = client
        .prepare("UPDATE ipmanager.hosts SET hostname = $1 WHERE ip = $2::text::inet")
        .await
        .unwrap();
    let mut rows = Vec::new();
    let mut round = 0usize;
    for (dns_scope, changes) in [("sites", changes_sites), ("all", changes_all)] {
        eprintln!("== dns_scope = {dns_scope}: starting {sites} agents");
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("dnsmasq.pid");
        std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
        let agents: Vec<SiteAgent> = (0..sites)
            .map(|i| SiteAgent::start(&db.url, dir.path(), &pid_file, i, dns_scope))
            .collect();
        let start = Instant::now();
        while agents.iter().any(|a| a.applied() == 0) {
            assert!(
                start.elapsed() < WAIT,
                "not every agent wrote its first files"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        settle(&agents).await;

        let mut latency = Vec::with_capacity(changes);
        let (mut working, mut reading) = (Vec::new(), Vec::new());
        for _ in 0..changes {
            round += 1;
            let site = round * 7 % sites;
            let ip = format!(
                "10.{}.0.{}",
                site + 1,
                16 + 1 + round * 13 % per_site.min(200)
            );
            let before: Vec<(u64, u64)> = agents.iter().map(|a| (a.applied(), a.read())).collect();
            let started = Instant::now();
            let changed = client
                .execute(&update, &[&format!("renamed{round}"), &ip])
                .await
                .unwrap();
            assert_eq!(changed, 1, "host {ip}");
            let affected = &agents[site];
            while affected.applied() == before[site].0 {
                assert!(started.elapsed() < WAIT, "site{site}'s agent never applied");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            latency.push(affected.applied_at().duration_since(started));
            settle(&agents).await;
            let did = |pick: fn(&SiteAgent) -> u64, of: fn(&(u64, u64)) -> u64| {
                agents
                    .iter()
                    .zip(&before)
                    .filter(|(a, b)| pick(a) > of(b))
                    .count() as u64
            };
            working.push(did(SiteAgent::applied, |b| b.0));
            reading.push(did(SiteAgent::read, |b| b.1));
        }
        let range = |v: &[u64]| (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        rows.push(Row {
            dns_scope,
            changes,
            latency: stats(&latency),
            working_agents: range(&working),
            reading_agents: range(&reading),
        });
        drop(agents);
    }
    print_report(&rows, sites, per_site);
}

/// One agent process, serving one site, with its log lines counted.
struct SiteAgent {
    child: Child,
    /// "applied" lines: files written and dnsmasq activated.
    applied: Arc<AtomicU64>,
    applied_at: Arc<Mutex<Instant>>,
    /// "regenerated" lines: snapshots read and rendered.
    read: Arc<AtomicU64>,
    last_line: Arc<Mutex<Instant>>,
}

impl SiteAgent {
    fn start(url: &str, dir: &Path, pid_file: &Path, site: usize, dns_scope: &str) -> SiteAgent {
        let d = dir.join(format!("site{site}"));
        std::fs::create_dir(&d).unwrap();
        let config = d.join("ipmanager.toml");
        let d = d.display();
        std::fs::write(
            &config,
            format!(
                "database_url = \"{url}\"\n\
                 [agent]\nname = \"agent{site}\"\nsites = [\"site{site}\"]\n\
                 [dnsmasq]\ninclude_file = \"{d}/include.conf\"\nhosts_file = \"{d}/dhcp-hosts\"\n\
                 addn_hosts_file = \"{d}/hosts\"\npid_file = \"{}\"\nrestart_command = [\"true\"]\n\
                 check_command = []\ndns_scope = \"{dns_scope}\"\n",
                pid_file.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "ipmanager=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let applied = Arc::new(AtomicU64::new(0));
        let applied_at = Arc::new(Mutex::new(Instant::now()));
        let read = Arc::new(AtomicU64::new(0));
        let last_line = Arc::new(Mutex::new(Instant::now()));
        let stderr = child.stderr.take().unwrap();
        let (applied_count, applied_time, read_count, last) = (
            Arc::clone(&applied),
            Arc::clone(&applied_at),
            Arc::clone(&read),
            Arc::clone(&last_line),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                let now = Instant::now();
                *last.lock().unwrap() = now;
                if line.contains(" applied files=") {
                    *applied_time.lock().unwrap() = now;
                    applied_count.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("regenerated") {
                    read_count.fetch_add(1, Ordering::Relaxed);
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("agent{site}: {line}");
                }
            }
        });
        SiteAgent {
            child,
            applied,
            applied_at,
            read,
            last_line,
        }
    }

    fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    fn applied_at(&self) -> Instant {
        *self.applied_at.lock().unwrap()
    }

    fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn quiet_for(&self) -> Duration {
        self.last_line.lock().unwrap().elapsed()
    }
}

impl Drop for SiteAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until no agent has logged anything for [`QUIET`]: all are done.
async fn settle(agents: &[SiteAgent]) {
    let start = Instant::now();
    while agents.iter().any(|a| a.quiet_for() < QUIET) {
        assert!(start.elapsed() < WAIT, "the agents never went quiet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_report(rows: &[Row], sites: usize, per_site: usize) {
    println!();
    println!(
        "{sites} sites of {per_site} hosts ({} in all), one agent per site; one host renamed in one site:",
        sites * per_site
    );
    println!();
    println!("| dns_scope | changes | affected agent applied: median ms | p99 ms | agents that wrote and signalled | agents that read a snapshot |");
    println!("|---|---:|---:|---:|---:|---:|");
    let span = |(lo, hi): (u64, u64)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        }
    };
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.dns_scope,
            r.changes,
            ms(r.latency.median),
            ms(r.latency.p99),
            span(r.working_agents),
            span(r.reading_agents),
        );
    }
}
