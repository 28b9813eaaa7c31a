//! The agent survives what production does to it: a real failover (primary killed, streaming
//! standby promoted) and a chaos run (random writes from several connections while the server
//! is restarted and the agent is SIGKILLed, again and again). Private PostgreSQL clusters
//! (tests/common/cluster.rs) and the real `ipmanager` binary, as a process; success is always
//! the same: the files on disk equal what `ipmanager render` prints, byte for byte.
//!
//! Needs the PostgreSQL server binaries (and, as root, the `postgres` user); without them each
//! test prints `SKIPPED:` and passes, unless `IPMANAGER_REQUIRE_E2E=1` (CI), where it fails.
//! `IPMANAGER_CHAOS_SECS` (default 40) lengthens the chaos run, `IPMANAGER_CHAOS_SEED` repeats one.
//! The figures (promotion → converged files, chaos counts) are printed to stderr.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent_process::{write_fast_agent_config, AgentProcess};
use common::binary;
use common::cluster::{Cluster, PgTools, StopMode};
use tokio_postgres::Client;

/// The database the agent reads, on every cluster.
const DB: &str = "ipmanager";
/// How long the files may take to equal the database once nothing disturbs the agent.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// How long the failover test leaves the agent without a writable server.
const FAILOVER_OUTAGE: Duration = Duration::from_secs(2);
const CHAOS_SECS_VAR: &str = "IPMANAGER_CHAOS_SECS";
const CHAOS_SEED_VAR: &str = "IPMANAGER_CHAOS_SEED";
const DEFAULT_CHAOS_SECS: u64 = 40;
const CHAOS_WRITERS: u64 = 3;
/// A reservation by MAC, address and name; the subnet is the one containing the address.
const INSERT_HOST: &str = "INSERT INTO ipmanager.hosts (mac, ip, hostname) \
                           VALUES ($1::text::macaddr, $2::text::inet, $3)";

/// These tests run servers, writers and an agent each and measure how fast the agent recovers;
/// one at a time keeps the figures honest on a small machine. (A tokio mutex: it is held across
/// awaits, and works across the tests' runtimes.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints a figure so that it shows in CI logs even for a passing test (eprintln! is captured).
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "failover: {line}");
}

/// The agent's configuration and output directory; the agent itself runs as a process of the
/// real binary so that it can be SIGKILLed.
struct AgentSetup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl AgentSetup {
    /// Short liveness and backoff so that recovery is quick; the resync interval stays at its
    /// default (5 minutes), so convergence never comes from a periodic resync.
    fn new(database_url: &str) -> AgentSetup {
        let dir = tempfile::tempdir().unwrap();
        let config = write_fast_agent_config(dir.path(), database_url, "failover");
        AgentSetup { dir, config }
    }

    fn args<'a>(&'a self, command: &'a str) -> [&'a str; 3] {
        [command, "--config", self.config.to_str().unwrap()]
    }

    /// `ipmanager migrate` through the configured (multi-host) URL.
    fn migrate(&self) {
        let output = binary::ipmanager(&self.args("migrate"), &[]);
        binary::assert_exit(&output, 0, "ipmanager migrate");
    }

    fn spawn(&self) -> AgentProcess {
        AgentProcess::spawn(binary::command(
            &self.args("agent"),
            &[("RUST_LOG", "info")],
        ))
    }

    /// What `ipmanager render` prints against `url`: each file after a `# ==> PATH <==` line.
    async fn render(&self, url: &str) -> Result<String, String> {
        let command = binary::command(&self.args("render"), &[("IPMANAGER_DATABASE_URL", url)]);
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(binary::stdout(&output))
        } else {
            Err(binary::stderr(&output))
        }
    }

    /// The files on disk in `render`'s format, in the order and under the names it used.
    fn on_disk(&self, rendered: &str) -> String {
        rendered
            .lines()
            .filter_map(|line| line.strip_prefix("# ==> ")?.strip_suffix(" <=="))
            .map(|path| {
                let content = std::fs::read_to_string(path).unwrap_or_default();
                format!("# ==> {path} <==\n{content}")
            })
            .collect()
    }

    /// Dot-named temporary files in the output directory (a SIGKILL between staging and
    /// rename leaves one behind), not counting the activation marker.
    fn stray_temporary_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with('.') && !name.ends_with(".activation-pending"))
            .collect()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Whether the addn-hosts file names `hostname` (lines end in the bare host name).
    fn serves(&self, hostname: &str) -> bool {
        let suffix = format!(" {hostname}");
        self.read("hosts")
            .lines()
            .any(|line| line.ends_with(&suffix))
    }

    /// Waits until the files equal `render` against `url` byte for byte and `also` holds for
    /// the rendered text; returns how long that took, or fails with the difference.
    async fn wait_converged(&self, url: &str, also: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let why_not = match self.render(url).await {
                Ok(rendered) => {
                    let disk = self.on_disk(&rendered);
                    if disk == rendered && also(&rendered) {
                        return start.elapsed();
                    }
                    difference(&rendered, &disk)
                }
                Err(error) => format!("render failed: {error}"),
            };
            assert!(
                start.elapsed() < CONVERGE_DEADLINE,
                "the files did not converge within {CONVERGE_DEADLINE:?}: {why_not}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A short account of how the files differ from what render printed.
fn difference(rendered: &str, disk: &str) -> String {
    let rendered_lines: std::collections::HashSet<&str> = rendered.lines().collect();
    let disk_lines: std::collections::HashSet<&str> = disk.lines().collect();
    let missing: Vec<&&str> = rendered_lines.difference(&disk_lines).take(10).collect();
    let extra: Vec<&&str> = disk_lines.difference(&rendered_lines).take(10).collect();
    format!(
        "{} lines rendered, {} on disk; not on disk: {missing:?}; only on disk: {extra:?}",
        rendered.lines().count(),
        disk.lines().count()
    )
}

/// Creates the database and runs `ipmanager migrate` through the agent's configuration.
async fn create_database(primary: &Cluster, setup: &AgentSetup) {
    primary
        .client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await
        .unwrap();
    setup.migrate();
}

/// A small xorshift64* generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point; any other value will do.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------------

/// What the writer had acknowledged when the primary died.
#[derive(Debug, Default)]
struct Acknowledged {
    inserted: Vec<String>,
    deleted: Vec<String>,
    /// The host of the change that failed when the server died: it may have committed (and
    /// been replicated) without the acknowledgement reaching the writer, or not.
    in_doubt: Option<String>,
}

/// Inserts `flow-N` hosts, one per transaction, and deletes every fifth earlier one, until the
/// server goes away. Under `synchronous_commit = remote_apply` an acknowledged commit has been
/// applied on the standby, so none of them may be missing after the promotion.
async fn write_until_failure(client: Client) -> Acknowledged {
    let mut acked = Acknowledged::default();
    for n in 0u32.. {
        let hostname = format!("flow-{n}");
        let inserted = client
            .execute(
                INSERT_HOST,
                &[
                    &format!("02:00:00:01:{:02x}:{:02x}", n >> 8, n & 0xff),
                    &format!("10.30.{}.{}", n / 250, n % 250 + 1),
                    &hostname,
                ],
            )
            .await;
        if inserted.is_err() {
            acked.in_doubt = Some(hostname);
            break;
        }
        acked.inserted.push(hostname);
        if n % 5 == 4 {
            let victim = format!("flow-{}", n - 2);
            let deleted = client
                .execute(
                    "DELETE FROM ipmanager.hosts WHERE hostname = $1",
                    &[&victim],
                )
                .await;
            match deleted {
                Ok(1) => acked.deleted.push(victim),
                Ok(count) => panic!("deleting {victim} removed {count} rows"),
                Err(_) => {
                    acked.in_doubt = Some(victim);
                    break;
                }
            }
        }
    }
    acked
}

async fn insert_host(client: &Client, mac: &str, ip: &str, hostname: &str) {
    client
        .execute(INSERT_HOST, &[&mac, &ip, &hostname])
        .await
        .unwrap_or_else(|e| panic!("insert {hostname}: {e}"));
}

/// Primary and streaming standby; the agent on a multi-host URL with
/// `target_session_attrs=read-write`; writes flowing; the primary killed (`pg_ctl stop -m
/// immediate`) and the standby promoted. The agent must follow, converge to the promoted
/// server's data, keep every acknowledged (and so replicated) change, and pick up changes made
/// on the new primary, both in its resync and by notification afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_a_promoted_standby() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let primary = Cluster::primary(&tools, "primary");
    let standby = Cluster::standby_of(&primary, "standby");
    let setup = AgentSetup::new(&format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{DB}?target_session_attrs=read-write&connect_timeout=2",
        primary.port, standby.port
    ));
    create_database(&primary, &setup).await;

    // Synchronous replication from here on, set on the primary only (the standby already has
    // its copy of the configuration): a commit returns once the standby has applied it.
    let admin = primary.client("postgres").await;
    for statement in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
        "SELECT pg_reload_conf()",
    ] {
        // One at a time: ALTER SYSTEM may not run in the implicit transaction of a batch.
        admin.batch_execute(statement).await.unwrap();
    }
    let synchronous = common::wait_until(CONVERGE_DEADLINE, || async {
        admin
            .query_opt(
                "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(synchronous, "the standby never became synchronous");

    let client = primary.client(DB).await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr, domain) VALUES
                 ('flow', '10.30.0.0/16', 'flow.example'), ('seed', '10.31.0.0/24', NULL);",
        )
        .await
        .unwrap();
    for n in 1..=20 {
        insert_host(
            &client,
            &format!("02:00:00:02:00:{n:02x}"),
            &format!("10.31.0.{n}"),
            &format!("seed-{n}"),
        )
        .await;
    }
    let agent = setup.spawn();
    setup.wait_converged(&primary.url(DB), |_| true).await;

    // Changes flowing through the agent when the primary dies.
    let writer = tokio::spawn(write_until_failure(client));
    let flowing = common::wait_until(CONVERGE_DEADLINE, || {
        let served = setup.serves("flow-100");
        async move { served }
    })
    .await;
    assert!(flowing, "the writer's hosts never reached the files");
    primary.stop(StopMode::Immediate).await;
    let acked = writer.await.unwrap();
    assert!(
        acked.inserted.len() > 100,
        "the writer stopped early: {acked:?}"
    );

    // A real failover takes a moment: meanwhile the agent finds the old primary refusing
    // connections and the standby read-only (which target_session_attrs=read-write refuses),
    // through several rounds of its backoff.
    tokio::time::sleep(FAILOVER_OUTAGE).await;
    let promotion = Instant::now();
    standby.promote().await;
    let promote_took = promotion.elapsed();
    let new_primary = standby.client(DB).await;
    insert_host(&new_primary, "02:00:00:03:00:01", "10.31.0.101", "after-1").await;
    new_primary
        .execute("DELETE FROM ipmanager.hosts WHERE hostname = 'seed-1'", &[])
        .await
        .unwrap();
    let new_url = standby.url(DB);
    setup
        .wait_converged(&new_url, |rendered| {
            rendered.contains(",after-1\n") && !rendered.contains(",seed-1\n")
        })
        .await;
    let converged_after = promotion.elapsed();

    // Nothing acknowledged before the failover is lost, on the server and so in the files.
    let hostnames: std::collections::HashSet<String> = new_primary
        .query("SELECT hostname FROM ipmanager.hosts", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("hostname"))
        .collect();
    let lost: Vec<&String> = acked
        .inserted
        .iter()
        .filter(|h| {
            !acked.deleted.contains(h)
                && acked.in_doubt.as_ref() != Some(h)
                && !hostnames.contains(*h)
        })
        .collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    let resurrected: Vec<&String> = acked
        .deleted
        .iter()
        .filter(|h| hostnames.contains(*h))
        .collect();
    assert!(
        resurrected.is_empty(),
        "acknowledged deletes undone: {resurrected:?}"
    );

    // The agent LISTENs on the new primary: a later change arrives by notification (the
    // resync interval is minutes away).
    let notified = Instant::now();
    insert_host(&new_primary, "02:00:00:03:00:02", "10.31.0.102", "after-2").await;
    setup
        .wait_converged(&new_url, |rendered| rendered.contains(",after-2\n"))
        .await;
    let notified_after = notified.elapsed();

    // The agent reports to the new primary: `host add --wait` through the multi-host
    // configuration sees the change live on it.
    let config = setup.config.to_str().unwrap();
    let args = [
        "host",
        "add",
        "--mac",
        "02:00:00:03:00:03",
        "--ip",
        "10.31.0.103",
        "--hostname",
        "after-3",
        "--wait",
        "--config",
        config,
    ];
    let added = binary::ipmanager(&args, &[]);
    binary::assert_exit(&added, 0, "host add --wait after the failover");
    assert!(
        binary::stderr(&added).contains("live on failover"),
        "{}",
        binary::stderr(&added)
    );
    assert!(
        setup.serves("after-3"),
        "--wait returned before the files had it"
    );

    report(&format!(
        "{} inserts and {} deletes acknowledged before the primary was killed, none lost \
         (in doubt, failed when the server died: {:?}); \
         pg_ctl promote took {promote_took:?}; promotion -> files converged on the promoted \
         server: {converged_after:?}; a change on the new primary -> files: {notified_after:?}",
        acked.inserted.len(),
        acked.deleted.len(),
        acked.in_doubt,
    ));
    assert_eq!(agent.terminate().await, Some(0), "the agent ran throughout");
}

// ---------------------------------------------------------------------------------------------
// Chaos
// ---------------------------------------------------------------------------------------------

/// Counts kept by the writers.
#[derive(Default)]
struct WriteStats {
    /// Committed statements or transactions that changed at least one row.
    changes: AtomicU64,
    /// Statements refused by the database (duplicates, races, a server going away).
    refused: AtomicU64,
    /// New connections after the first, one per server restart seen by each writer.
    reconnects: AtomicU64,
}

const SUBNETS: [&str; 2] = ["10.40.0.0/16", "10.41.0.0/16"];

/// A random address of the two chaos subnets.
fn random_ip(rng: &mut Rng, subnet: usize) -> String {
    format!(
        "10.{}.{}.{}",
        40 + subnet,
        rng.below(256),
        rng.below(254) + 1
    )
}

fn random_mac(rng: &mut Rng) -> String {
    let bytes = rng.next().to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]
    )
}

fn random_hostname(rng: &mut Rng) -> String {
    format!("c{:08x}", rng.next() as u32)
}

const RANDOM_HOST: &str = "(SELECT id FROM ipmanager.hosts ORDER BY random() LIMIT 1)";

/// One random change: an insert, an update of a name, address or the enabled flag, a delete,
/// or a transaction of several. Returns the rows changed.
async fn random_change(client: &mut Client, rng: &mut Rng) -> Result<u64, tokio_postgres::Error> {
    let subnet = rng.below(2) as usize;
    match rng.below(100) {
        0..=44 => {
            let (mac, ip, name) = (
                random_mac(rng),
                random_ip(rng, subnet),
                random_hostname(rng),
            );
            client.execute(INSERT_HOST, &[&mac, &ip, &name]).await
        }
        45..=59 => {
            let sql = format!("UPDATE ipmanager.hosts SET hostname = $1 WHERE id = {RANDOM_HOST}");
            client.execute(&sql, &[&random_hostname(rng)]).await
        }
        60..=69 => {
            // A new address in the host's own subnet.
            let sql = "UPDATE ipmanager.hosts SET ip = $1::text::inet WHERE id = \
                 (SELECT id FROM ipmanager.hosts WHERE ip << $2::text::inet ORDER BY random() LIMIT 1)";
            client
                .execute(sql, &[&random_ip(rng, subnet), &SUBNETS[subnet]])
                .await
        }
        70..=77 => {
            let sql = format!(
                "UPDATE ipmanager.hosts SET enabled = NOT enabled WHERE id = {RANDOM_HOST}"
            );
            client.execute(&sql, &[]).await
        }
        78..=91 => {
            let sql = format!("DELETE FROM ipmanager.hosts WHERE id = {RANDOM_HOST}");
            client.execute(&sql, &[]).await
        }
        _ => {
            let transaction = client.transaction().await?;
            let mut changed = 0;
            for _ in 0..3 {
                let (mac, ip, name) = (
                    random_mac(rng),
                    random_ip(rng, subnet),
                    random_hostname(rng),
                );
                changed += transaction
                    .execute(INSERT_HOST, &[&mac, &ip, &name])
                    .await?;
            }
            let sql = format!("DELETE FROM ipmanager.hosts WHERE id = {RANDOM_HOST}");
            changed += transaction.execute(&sql, &[]).await?;
            transaction.commit().await?;
            Ok(changed)
        }
    }
}

/// Makes random changes on connections of its own until `stop`, reconnecting whenever the
/// server went away.
async fn chaos_writer(url: String, seed: u64, stop: Arc<AtomicBool>, stats: Arc<WriteStats>) {
    let mut rng = Rng::new(seed);
    let mut connections = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(_) => {
                // The server is restarting; it is back within a second or two.
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if connections > 0 {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        connections += 1;
        while !stop.load(Ordering::Relaxed) && !client.is_closed() {
            match random_change(&mut client, &mut rng).await {
                Ok(0) => {}
                Ok(_) => {
                    stats.changes.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What the chaos controller does next.
#[derive(Debug, Clone, Copy)]
enum Disturbance {
    RestartDatabase(StopMode),
    KillAgent,
    /// The agent is killed and started again while the server is down.
    KillAgentDuringOutage,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Several writers make random changes while the server is restarted (fast and immediate)
/// and the agent is SIGKILLed and restarted, for `IPMANAGER_CHAOS_SECS`. Then, with the
/// writers stopped, the files must equal `ipmanager render` byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_converges_after_chaos() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let seed = env_u64(CHAOS_SEED_VAR).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let seconds = env_u64(CHAOS_SECS_VAR).unwrap_or(DEFAULT_CHAOS_SECS);
    report(&format!(
        "chaos run for {seconds} s with {CHAOS_SEED_VAR}={seed} (repeat with it; {CHAOS_SECS_VAR} sets the length)"
    ));
    let mut rng = Rng::new(seed);

    let cluster = Cluster::primary(&tools, "chaos");
    let url = cluster.url(DB);
    let setup = AgentSetup::new(&url);
    create_database(&cluster, &setup).await;
    cluster
        .client(DB)
        .await
        .batch_execute(&format!(
            "INSERT INTO ipmanager.subnets (name, cidr, domain) VALUES
                 ('chaos-a', '{}', 'a.example'), ('chaos-b', '{}', NULL);",
            SUBNETS[0], SUBNETS[1]
        ))
        .await
        .unwrap();

    let mut agent = setup.spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WriteStats::default());
    let writers: Vec<_> = (0..CHAOS_WRITERS)
        .map(|i| {
            tokio::spawn(chaos_writer(
                url.clone(),
                seed.wrapping_add(i + 1),
                Arc::clone(&stop),
                Arc::clone(&stats),
            ))
        })
        .collect();

    // About one disturbance every four seconds, each kind at least twice.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let count = (seconds / 4).max(6);
    let (mut fast, mut immediate, mut kills, mut kills_during_outage) = (0, 0, 0, 0);
    for i in 0..count {
        let gap = Duration::from_millis(500 + rng.below(3000));
        tokio::time::sleep(gap.min(deadline.saturating_duration_since(Instant::now()))).await;
        // The last one restarts the server, so that the end relies on the agent's reconnect.
        let disturbance = match ((count - 1 - i) % 3, rng.below(2)) {
            (0, 0) => Disturbance::RestartDatabase(StopMode::Fast),
            (0, _) => Disturbance::RestartDatabase(StopMode::Immediate),
            (1, _) => Disturbance::KillAgent,
            _ => Disturbance::KillAgentDuringOutage,
        };
        match disturbance {
            Disturbance::RestartDatabase(mode) => {
                cluster.restart(mode).await;
                match mode {
                    StopMode::Fast => fast += 1,
                    StopMode::Immediate => immediate += 1,
                }
            }
            Disturbance::KillAgent => {
                drop(agent); // SIGKILL: std's Child::kill, then reaped
                tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
                agent = setup.spawn();
                kills += 1;
            }
            Disturbance::KillAgentDuringOutage => {
                cluster.stop(StopMode::Immediate).await;
                drop(agent);
                agent = setup.spawn();
                tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
                cluster.start().await;
                immediate += 1;
                kills_during_outage += 1;
            }
        }
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let took = setup.wait_converged(&url, |_| true).await;
    let hosts: i64 = cluster
        .client(DB)
        .await
        .query_one("SELECT count(*) AS hosts FROM ipmanager.hosts", &[])
        .await
        .unwrap()
        .get("hosts");
    // Still listening: one more change arrives by notification (on an address that
    // random_ip never picks).
    insert_host(
        &cluster.client(DB).await,
        "02:00:00:04:00:01",
        "10.41.0.255",
        "after-chaos",
    )
    .await;
    setup
        .wait_converged(&url, |rendered| rendered.contains(",after-chaos\n"))
        .await;
    report(&format!(
        "chaos ({seconds} s, seed {seed}): {} changes from {CHAOS_WRITERS} connections ({} refused, \
         {} reconnects), {} server restarts ({fast} fast, {immediate} immediate, \
         {kills_during_outage} of them with the agent killed and restarted meanwhile), {} agent \
         SIGKILLs in all; {hosts} hosts at the end; writers stopped -> files equal `ipmanager \
         render`: {took:?}",
        stats.changes.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.reconnects.load(Ordering::Relaxed),
        fast + immediate,
        kills + kills_during_outage,
    ));
    assert!(
        stats.changes.load(Ordering::Relaxed) > 100 && hosts > 0,
        "too little happened for the run to prove anything"
    );
    // A SIGKILL between staging and rename leaves a temporary file behind; the next write of
    // that file removes it (the include file was written once, before the first kill).
    let stray = setup.stray_temporary_files();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
    assert_eq!(
        agent.terminate().await,
        Some(0),
        "the agent runs at the end"
    );
}
