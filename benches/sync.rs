//! Benchmark of the agent binary against a real PostgreSQL: commit-to-SIGHUP latency of a
//! one-row change, full regeneration next to `psql COPY` of the same lines, burst coalescing,
//! and memory. Run with `scripts/bench`; results go to docs/benchmarks.md.
//!
//! The benchmark process itself stands in for dnsmasq: the agent's pid file holds our pid, and a
//! received SIGHUP marks "files written and SIGHUP sent". It takes the command name dnsmasq,
//! since the agent signals nothing else.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::{env_or, field_duration, ms, sizes_from_env, stats, Stats};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use tokio::signal::unix::{signal, Signal, SignalKind};

const BIN: &str = env!("CARGO_BIN_EXE_ipmanager");
const WAIT: Duration = Duration::from_secs(120);
/// Spacing of measured changes: longer than the agent's default burst interval (100 ms).
const PACE: Duration = Duration::from_millis(150);

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    // The main thread's name is the process's command name, which the agent checks.
    nix::sys::prctl::set_name(c"dnsmasq").expect("the benchmark names itself dnsmasq");
    // `cargo bench` passes --bench; a filter argument is not supported, so ignore arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

struct Row {
    hosts: usize,
    bulk_notifications: u64,
    bulk_regenerations: u64,
    latency: Stats,
    snapshot_stage: Stats,
    write_stage: Stats,
    regeneration: Stats,
    copy: Stats,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
}

async fn run() {
    let sizes = sizes_from_env("IPMANAGER_BENCH_SIZES", "1000,10000,100000");
    let changes: usize = env_or("IPMANAGER_BENCH_CHANGES", 200);
    let burst: usize = env_or("IPMANAGER_BENCH_BURST", 1000);
    let mut hups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut rows = Vec::new();
    let mut burst_result = None;
    for &hosts in &sizes {
        eprintln!("== {hosts} hosts");
        let db = TestDb::new().await;
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
                 VALUES ('bench', '10.0.0.0/8', '10.255.0.1', '10.255.0.250', '10.0.0.1', 'bench.lan')",
            )
            .await
            .unwrap();
        let listener = Notifications::listen(&db.url).await;
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentProcess::start(&db.url, dir.path());
        // The first sync writes the include file too, which is activated by the restart command.
        let include = dir.path().join("include.conf");
        let start = Instant::now();
        while !include.exists() {
            assert!(
                start.elapsed() < WAIT,
                "the agent never wrote its first files"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        settle(&agent).await;
        let rss_idle_kib = agent.rss_kib("VmRSS");

        // One statement that inserts every host: one notification, one regeneration.
        let (notifications, regenerations) = (listener.count(), agent.regenerations());
        drain(&mut hups);
        client
            .batch_execute(&format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname)
                 SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr, '10.0.0.0'::inet + 65536 + i, 'h' || i
                 FROM generate_series(1, {hosts}) AS i"
            ))
            .await
            .unwrap();
        wait_hup(&mut hups).await;
        settle(&agent).await;
        let bulk_notifications = listener.count() - notifications;
        let bulk_regenerations = agent.regenerations() - regenerations;
        // What autovacuum would do soon on a real server; without it every snapshot pays for
        // the fresh table's unset visibility information.
        client
            .batch_execute("VACUUM ANALYZE ipmanager.hosts")
            .await
            .unwrap();

        // Isolated one-row changes: each waited for, and started at least PACE after the one
        // before, so that none falls into the agent's burst interval (a burst is measured below).
        let update = client
            .prepare("UPDATE ipmanager.hosts SET ip = $1::text::inet WHERE id = $2")
            .await
            .unwrap();
        let stages_before = agent.stages().len();
        let mut latency = Vec::with_capacity(changes);
        let mut paced = Instant::now() + PACE;
        for i in 0..changes {
            let id = 1 + (i * 7919 % hosts) as i64;
            let ip = format!("10.128.{}.{}", i / 250, 1 + i % 250);
            tokio::time::sleep_until(paced.into()).await;
            drain(&mut hups);
            let start = Instant::now();
            paced = start + PACE;
            client.execute(&update, &[&ip, &id]).await.unwrap();
            wait_hup(&mut hups).await;
            latency.push(start.elapsed());
        }

        let (snapshot_stage, write_stage): (Vec<_>, Vec<_>) =
            agent.stages()[stages_before..].iter().copied().unzip();

        // Full regeneration: with the host files gone, a NOTIFY makes the agent rebuild them
        // (the include file is unchanged, so a reload suffices).
        let reps = if hosts >= 100_000 { 20 } else { 30 };
        let mut regeneration = Vec::with_capacity(reps);
        for _ in 0..reps {
            tokio::time::sleep_until(paced.into()).await;
            for name in ["dhcp-hosts", "hosts"] {
                let _ = std::fs::remove_file(dir.path().join(name));
            }
            drain(&mut hups);
            let start = Instant::now();
            paced = start + PACE;
            client
                .batch_execute("NOTIFY ipmanager_changes")
                .await
                .unwrap();
            wait_hup(&mut hups).await;
            regeneration.push(start.elapsed());
        }
        let copy = time_psql_copy(&db.url, dir.path(), reps);
        settle(&agent).await;
        let rss_peak_kib = agent.rss_kib("VmHWM");

        if burst_result.is_none() && (hosts >= 10_000 || hosts == *sizes.last().unwrap()) {
            burst_result = Some(
                run_burst(
                    &client,
                    &agent,
                    &mut hups,
                    dir.path(),
                    hosts,
                    burst,
                    stats(&regeneration),
                )
                .await,
            );
        }
        rows.push(Row {
            hosts,
            bulk_notifications,
            bulk_regenerations,
            latency: stats(&latency),
            snapshot_stage: stats(&snapshot_stage),
            write_stage: stats(&write_stage),
            regeneration: stats(&regeneration),
            copy: stats(&copy),
            rss_idle_kib,
            rss_peak_kib,
        });
        drop(agent);
    }
    print_report(&rows, burst_result.as_ref(), changes);
}

/// A burst of single-row commits as fast as one connection can send them.
struct Burst {
    hosts: usize,
    commits: usize,
    regenerations: u64,
    elapsed: Duration,
    settle_after_last_commit: Duration,
    one_regeneration: Stats,
}

async fn run_burst(
    client: &tokio_postgres::Client,
    agent: &AgentProcess,
    hups: &mut Signal,
    dir: &Path,
    hosts: usize,
    commits: usize,
    one_regeneration: Stats,
) -> Burst {
    settle(agent).await;
    let before = agent.regenerations();
    let update = client
        .prepare("UPDATE ipmanager.hosts SET hostname = $1 WHERE id = $2")
        .await
        .unwrap();
    let start = Instant::now();
    let mut last = String::new();
    for i in 0..commits {
        last = format!("burst{i}");
        let id = 1 + (i % hosts) as i64;
        client.execute(&update, &[&last, &id]).await.unwrap();
    }
    let last_commit = Instant::now();
    let hosts_file = dir.join("dhcp-hosts");
    let expected = format!(",{last}\n");
    // The last commit's value appears only with the regeneration that includes it; each
    // SIGHUP marks a finished regeneration.
    while !std::fs::read_to_string(&hosts_file)
        .unwrap_or_default()
        .contains(&expected)
    {
        assert!(last_commit.elapsed() < WAIT, "the burst never settled");
        let _ = tokio::time::timeout(Duration::from_millis(20), hups.recv()).await;
    }
    let settle_after_last_commit = last_commit.elapsed();
    settle(agent).await;
    Burst {
        hosts,
        commits,
        regenerations: agent.regenerations() - before,
        elapsed: last_commit - start,
        settle_after_last_commit,
        one_regeneration,
    }
}

/// `psql COPY` of the same lines the agent writes (hosts file and addn-hosts lines), to a file.
fn time_psql_copy(url: &str, dir: &Path, reps: usize) -> Vec<Duration> {
    const QUERY: &str = "COPY (\
        SELECT lower(h.mac::text) || ',' || host(h.ip) || ',' || h.hostname \
        FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
        WHERE h.enabled AND s.enabled \
        UNION ALL \
        SELECT host(h.ip) || ' ' || h.hostname || '.' || s.domain || ' ' || h.hostname \
        FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
        WHERE h.enabled AND s.enabled) TO STDOUT";
    let out = dir.join("copy.out");
    (0..reps)
        .map(|_| {
            let file = std::fs::File::create(&out).unwrap();
            let start = Instant::now();
            let status = Command::new("psql")
                .args(["-X", "-q", url, "-c", QUERY])
                .stdout(file)
                .status()
                .expect("psql runs");
            let elapsed = start.elapsed();
            assert!(status.success());
            elapsed
        })
        .collect()
}

/// The agent binary with debug logs counted.
struct AgentProcess {
    child: Child,
    regenerations: Arc<AtomicU64>,
    last_line: Arc<std::sync::Mutex<Instant>>,
    stages: Arc<std::sync::Mutex<Vec<(Duration, Duration)>>>,
}

/// Reads a `Debug`-printed duration such as `1.5ms` or `830.2µs` after `key` in a log line
/// (which may carry ANSI colour codes).
impl AgentProcess {
    fn start(url: &str, dir: &Path) -> AgentProcess {
        let d = dir.display();
        let pid_file = dir.join("dnsmasq.pid");
        std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
        let config = dir.join("ipmanager.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = \"{url}\"\n[dnsmasq]\ninclude_file = \"{d}/include.conf\"\nhosts_file = \"{d}/dhcp-hosts\"\naddn_hosts_file = \"{d}/hosts\"\npid_file = \"{}\"\nrestart_command = [\"true\"]\ncheck_command = []\n",
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
        let regenerations = Arc::new(AtomicU64::new(0));
        let last_line = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (count, last) = (Arc::clone(&regenerations), Arc::clone(&last_line));
        let stderr = child.stderr.take().unwrap();
        let stages = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stage_sink = Arc::clone(&stages);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                *last.lock().unwrap() = Instant::now();
                if line.contains("regenerated") {
                    count.fetch_add(1, Ordering::Relaxed);
                    if let (Some(snapshot), Some(write)) = (
                        field_duration(&line, "snapshot="),
                        field_duration(&line, "render_and_write="),
                    ) {
                        stage_sink.lock().unwrap().push((snapshot, write));
                    }
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("agent: {line}");
                }
            }
        });
        AgentProcess {
            child,
            regenerations,
            last_line,
            stages,
        }
    }

    /// (snapshot, render and write) times of the regenerations logged so far.
    fn stages(&self) -> Vec<(Duration, Duration)> {
        self.stages.lock().unwrap().clone()
    }

    fn regenerations(&self) -> u64 {
        self.regenerations.load(Ordering::Relaxed)
    }

    /// No log line for a while: nothing running, nothing queued.
    fn idle(&self) -> bool {
        self.last_line.lock().unwrap().elapsed() > Duration::from_millis(300)
    }

    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the agent has logged nothing for a while (its work is done).
async fn settle(agent: &AgentProcess) {
    let start = Instant::now();
    while !agent.idle() {
        assert!(start.elapsed() < WAIT, "the agent never went idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_hup(hups: &mut Signal) {
    tokio::time::timeout(WAIT, hups.recv())
        .await
        .expect("the agent sent SIGHUP in time");
}

/// Forgets SIGHUPs that arrived before a measurement starts.
fn drain(hups: &mut Signal) {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    while let std::task::Poll::Ready(Some(())) = hups.poll_recv(&mut cx) {}
}

/// Counts notifications on the changes channel, as any listener would see them.
struct Notifications {
    count: Arc<AtomicU64>,
    _client: tokio_postgres::Client,
}

impl Notifications {
    async fn listen(url: &str) -> Notifications {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        tokio::spawn(async move {
            loop {
                match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        });
        client
            .batch_execute("LISTEN ipmanager_changes")
            .await
            .unwrap();
        Notifications {
            count,
            _client: client,
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn print_report(rows: &[Row], burst: Option<&Burst>, changes: usize) {
    println!();
    println!("One-row change, COMMIT to files written and SIGHUP sent ({changes} changes each):");
    println!();
    println!("| hosts | median ms | p99 ms | agent: snapshot median ms | agent: render, compare, write, fsync median ms |");
    println!("|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.hosts,
            ms(r.latency.median),
            ms(r.latency.p99),
            ms(r.snapshot_stage.median),
            ms(r.write_stage.median)
        );
    }
    println!();
    println!("Full regeneration (NOTIFY to SIGHUP, all files rewritten) next to psql COPY of the same lines to a file:");
    println!();
    println!("| hosts | agent median ms | agent p99 ms | psql COPY median ms | psql COPY p99 ms | agent / COPY (median) | one-row change / COPY (median) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            r.hosts,
            ms(r.regeneration.median),
            ms(r.regeneration.p99),
            ms(r.copy.median),
            ms(r.copy.p99),
            r.regeneration.median.as_secs_f64() / r.copy.median.as_secs_f64(),
            r.latency.median.as_secs_f64() / r.copy.median.as_secs_f64(),
        );
    }
    println!();
    println!("One INSERT of every host, and memory of the agent process:");
    println!();
    println!(
        "| hosts | notifications | regenerations | RSS before the insert MiB | peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} |",
            r.hosts,
            r.bulk_notifications,
            r.bulk_regenerations,
            r.rss_idle_kib as f64 / 1024.0,
            r.rss_peak_kib as f64 / 1024.0
        );
    }
    if let Some(b) = burst {
        println!();
        println!("Burst of single-row commits at {} hosts:", b.hosts);
        println!();
        println!("| commits | sent in ms | regenerations | final files on disk after last commit ms | one regeneration median ms |");
        println!("|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {} | {} | {} |",
            b.commits,
            ms(b.elapsed),
            b.regenerations,
            ms(b.settle_after_last_commit),
            ms(b.one_regeneration.median)
        );
    }
}
