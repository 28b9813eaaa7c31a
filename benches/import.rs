//! Benchmark of the import (`ipmanager::admin::import`, what `ipmanager import` runs after reading
//! the file) against a real PostgreSQL: a dhcp-hostsfile of N lines parsed and imported into an
//! empty /14 in one transaction, the same file imported again (every line already present, so
//! only the judgement runs), and next to them, in the same run, the baseline of one plain
//! `INSERT … SELECT FROM unnest(…)` of the same rows, which pays the triggers every import pays
//! and checks nothing else. Also counts the transaction ids an import takes (the per-line
//! savepoints of the old import took one each, and a lock each until the commit). Run with
//! `scripts/bench import`; results go to docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::TestDb;
use eui48::MacAddress;
use ipmanager::admin::import::{self, ImportOptions, ImportReport};
use ipmanager::exchange::{self, Format};
use support::{env_or, stats};
use tokio_postgres::Client;

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(
        env_or("IPMANAGER_BENCH_IMPORT_LINES", 200_000),
        env_or("IPMANAGER_BENCH_IMPORT_RUNS", 5),
    ));
}

/// The first address the file reserves, in 10.128.0.0/14 (262,142 usable addresses).
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 10);

/// `lines` dhcp-hostsfile lines `MAC,IP,name`, every value distinct.
fn hostsfile(lines: usize) -> String {
    let mut text = String::with_capacity(lines * 40);
    for i in 0..lines as u32 {
        let [_, b, c, d] = (i + 1).to_be_bytes();
        let ip = Ipv4Addr::from(u32::from(FIRST) + i);
        text.push_str(&format!("52:54:01:{b:02x}:{c:02x}:{d:02x},{ip},host-{i}\n"));
    }
    text
}

async fn run(lines: usize, runs: usize) {
    assert!(
        lines <= 262_000,
        "the /14 holds at most 262,000 of these lines"
    );
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('bench', '10.128.0.0/14')",
        )
        .await
        .unwrap();
    let text = hostsfile(lines);
    println!(
        "import of a {lines}-line dhcp-hostsfile ({:.1} MiB), {runs} runs, each on emptied tables",
        text.len() as f64 / 1_048_576.0
    );
    let (mut first, mut again, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    let mut xids = Vec::new();
    for _ in 0..runs {
        empty(&client).await;
        let before = next_xid(&client).await;
        let (took, report) = timed_import(&mut client, &text).await;
        xids.push(next_xid(&client).await - before - 1);
        assert!(report.committed && report.added.len() == lines);
        first.push(took);
        let (took, report) = timed_import(&mut client, &text).await;
        assert!(report.added.is_empty() && report.unchanged.len() == lines);
        again.push(took);
        empty(&client).await;
        baseline.push(plain_insert(&client, &text).await);
    }
    println!("| what | median s | p99 s | / plain INSERT (median) |");
    println!("|---|---:|---:|---:|");
    let base = stats(&baseline).median;
    for (what, samples) in [
        ("import, into an empty subnet", &first),
        ("the same import again (all already present)", &again),
        (
            "plain INSERT … SELECT FROM unnest of the same rows (baseline)",
            &baseline,
        ),
    ] {
        let s = stats(samples);
        println!(
            "| {what} | {} | {} | {:.2} |",
            seconds(s.median),
            seconds(s.p99),
            s.median.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "transaction ids taken by one import: {:?} (the old import took one per line)",
        xids
    );
}

fn seconds(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Parses and imports `text` as `ipmanager import - --format hostsfile` does.
async fn timed_import(client: &mut Client, text: &str) -> (Duration, ImportReport) {
    let start = Instant::now();
    let parsed = exchange::parse(Format::Hostsfile, text).unwrap();
    let report = import::import(client, &parsed, &ImportOptions::default())
        .await
        .unwrap();
    (start.elapsed(), report)
}

/// The baseline: the same rows in one INSERT, arrays built from the parsed file.
async fn plain_insert(client: &Client, text: &str) -> Duration {
    let start = Instant::now();
    let parsed = exchange::parse(Format::Hostsfile, text).unwrap();
    let macs: Vec<MacAddress> = parsed
        .reservations
        .iter()
        .map(|r| MacAddress::new(r.mac))
        .collect();
    let ips: Vec<Option<IpAddr>> = parsed.reservations.iter().map(|r| r.ip).collect();
    let names: Vec<Option<String>> = parsed
        .reservations
        .iter()
        .map(|r| r.hostname.clone())
        .collect();
    client
        .execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) \
             SELECT * FROM unnest($1::macaddr[], $2::inet[], $3::text[])",
            &[&macs, &ips, &names],
        )
        .await
        .unwrap();
    start.elapsed()
}

/// Empties hosts and the audit log without logging the truncation, then checkpoints, so that
/// every run starts alike.
async fn empty(client: &Client) {
    client
        .batch_execute(
            "ALTER TABLE ipmanager.hosts DISABLE TRIGGER hosts_audit_truncate; \
             TRUNCATE ipmanager.hosts, ipmanager.host_aliases, ipmanager.host_macs, ipmanager.audit_log; \
             ALTER TABLE ipmanager.hosts ENABLE TRIGGER hosts_audit_truncate",
        )
        .await
        .unwrap();
    // Each on its own: VACUUM refuses to run in the implicit transaction of a batch.
    for statement in ["VACUUM ANALYZE ipmanager.hosts", "CHECKPOINT"] {
        client.batch_execute(statement).await.unwrap();
    }
}

/// The next transaction id (taking one): the difference of two calls, less one, is what ran in
/// between on the whole server.
async fn next_xid(client: &Client) -> i64 {
    client
        .query_one("SELECT pg_current_xact_id()::text::bigint AS xid", &[])
        .await
        .unwrap()
        .get("xid")
}
