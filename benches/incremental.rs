//! Benchmark of the incremental layout's sync path against a real PostgreSQL: a one-row change
//! from COMMIT to its shard file written (no signal is involved), with the agent's own snapshot
//! and render-and-write stages from its debug log. Run with `scripts/bench incremental`;
//! results go to docs/benchmarks.md. `IPMANAGER_BENCH_BIN` runs another build of the agent (to
//! compare before and after a change).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::{env_or, field_duration, ms, sizes_from_env, stats, strip_ansi};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestDb;

const WAIT: Duration = Duration::from_secs(120);
/// Spacing of measured changes: longer than the agent's default burst interval (100 ms).
const PACE: Duration = Duration::from_millis(150);
const SHARDS: i64 = 1024;

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let sizes = sizes_from_env("IPMANAGER_BENCH_SIZES", "10000,100000");
    let changes: usize = env_or("IPMANAGER_BENCH_CHANGES", 200);
    let bin = std::env::var("IPMANAGER_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ipmanager").to_owned());
    println!("| Hosts | COMMIT -> shard written, median / p99 (ms) | snapshot stage median / p99 | render + write stage median / p99 |");
    println!("|---|---|---|---|");
    for hosts in sizes {
        eprintln!("== {hosts} hosts ({bin})");
        let db = TestDb::new().await;
        let client = db.client().await;
        client
            .batch_execute(&format!(
                "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
                 VALUES ('bench', '10.0.0.0/8', '10.255.0.1', '10.255.0.250', '10.0.0.1', 'bench.lan');
                 INSERT INTO ipmanager.hosts (mac, ip, hostname)
                 SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr, '10.0.0.0'::inet + 65536 + i, 'h' || i
                 FROM generate_series(1, {hosts}) AS i"
            ))
            .await
            .unwrap();
        // What autovacuum would do soon on a real server.
        client
            .batch_execute("VACUUM ANALYZE ipmanager.hosts")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentProcess::start(&bin, &db.url, dir.path());
        let hosts_dir = dir.path().join("dhcp-hosts.d");
        let last_shard = hosts_dir.join(format!("{:04x}", (hosts as i64) % SHARDS));
        wait_for(&last_shard, &format!(",h{hosts}\n")).await;
        settle(&agent).await;
        let stages_before = agent.stages().len();
        let update = client
            .prepare("UPDATE ipmanager.hosts SET hostname = $1 WHERE id = $2")
            .await
            .unwrap();
        let mut latency = Vec::with_capacity(changes);
        let mut paced = Instant::now();
        for i in 0..changes {
            let id = 1 + (i * 7919 % hosts) as i64;
            let name = format!("c{i}");
            let shard = hosts_dir.join(format!("{:04x}", id % SHARDS));
            tokio::time::sleep_until(paced.into()).await;
            let start = Instant::now();
            paced = start + PACE;
            client.execute(&update, &[&name, &id]).await.unwrap();
            wait_for(&shard, &format!(",{name}\n")).await;
            latency.push(start.elapsed());
        }
        settle(&agent).await;
        let (snapshot, write): (Vec<_>, Vec<_>) =
            agent.stages()[stages_before..].iter().copied().unzip();
        let (l, s, w) = (stats(&latency), stats(&snapshot), stats(&write));
        println!(
            "| {hosts} | {} / {} | {} / {} | {} / {} |",
            ms(l.median),
            ms(l.p99),
            ms(s.median),
            ms(s.p99),
            ms(w.median),
            ms(w.p99)
        );
    }
}

/// Polls `path` until it holds `text`: a shard file is small, so reading it every 200 µs costs
/// little and bounds the error of the measurement.
async fn wait_for(path: &Path, text: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|c| c.contains(text)) {
        assert!(
            start.elapsed() < WAIT,
            "{} never held {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

struct AgentProcess {
    child: Child,
    stages: Arc<Mutex<Vec<(Duration, Duration)>>>,
    last_line: Arc<Mutex<Instant>>,
}

impl AgentProcess {
    fn start(bin: &str, url: &str, dir: &Path) -> AgentProcess {
        let d = dir.display();
        let config: PathBuf = dir.join("ipmanager.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = \"{url}\"\n[dnsmasq]\ninclude_file = \"{d}/include.conf\"\n\
                 pid_file = \"{d}/none.pid\"\nrestart_command = [\"true\"]\ncheck_command = []\n\
                 layout = \"incremental\"\nhosts_dir = \"{d}/dhcp-hosts.d\"\n\
                 names_dir = \"{d}/hosts.d\"\nshards = {SHARDS}\ncompaction_interval = \"1h\"\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "ipmanager=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let stages = Arc::new(Mutex::new(Vec::new()));
        let last_line = Arc::new(Mutex::new(Instant::now()));
        let (sink, last) = (Arc::clone(&stages), Arc::clone(&last_line));
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                *last.lock().unwrap() = Instant::now();
                let plain = strip_ansi(&line);
                if plain.contains("regenerated") {
                    if let (Some(s), Some(w)) = (
                        field_duration(&line, "snapshot="),
                        field_duration(&line, "render_and_write="),
                    ) {
                        sink.lock().unwrap().push((s, w));
                    }
                }
                if plain.contains("WARN") || plain.contains("ERROR") {
                    eprintln!("agent: {plain}");
                }
            }
        });
        AgentProcess {
            child,
            stages,
            last_line,
        }
    }

    fn stages(&self) -> Vec<(Duration, Duration)> {
        self.stages.lock().unwrap().clone()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the agent has logged nothing for 300 ms (its work is done).
async fn settle(agent: &AgentProcess) {
    let start = Instant::now();
    while agent.last_line.lock().unwrap().elapsed() < Duration::from_millis(300) {
        assert!(start.elapsed() < WAIT, "the agent never went idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
