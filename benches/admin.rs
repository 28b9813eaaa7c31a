//! Benchmark of the administration SQL against a real PostgreSQL: adding a reservation with
//! `ipmanager.allocate_host` next to a plain INSERT of a precomputed free address (one at a time
//! and from K concurrent connections in one subnet), what the statement-level audit triggers add
//! to bulk writes, and the `subnet_usage` query behind `ipmanager subnet list`. Every figure is
//! compared with its baseline in the same run. Run with `scripts/bench`; results go to
//! docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use support::{env_or, ms, sizes_from_env, stats, Stats};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use eui48::MacAddress;
use tokio_postgres::{Client, Statement};

/// Every MAC address and host name the benchmark adds is made unique with this counter.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A unicast, locally administered MAC address and a host name not used before in this run
/// (the bulk-loaded hosts use 02:00:…, these 0a:…).
fn fresh_identity() -> (MacAddress, String) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = n.to_be_bytes();
    (
        MacAddress::new([0x0a, b[3], b[4], b[5], b[6], b[7]]),
        format!("n{n}"),
    )
}

const V4_NET: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
/// Plain INSERTs take addresses from here up (10.0.252.0), far above the allocation front.
const V4_BASELINE_OFFSET: u32 = 252 * 256;
const V6_NET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0);
const V6_BASELINE_OFFSET: u128 = 1 << 32;

/// A subnet under test: its name, and where the plain INSERTs take their addresses.
#[derive(Clone, Copy)]
struct Subnet {
    name: &'static str,
    cidr: &'static str,
    baseline: fn(u64) -> IpAddr,
}

fn v4_subnet() -> Subnet {
    Subnet {
        name: "bench",
        cidr: "10.0.0.0/16",
        baseline: |i| {
            IpAddr::V4(Ipv4Addr::from(
                u32::from(V4_NET) + V4_BASELINE_OFFSET + i as u32,
            ))
        },
    }
}

fn v6_subnet() -> Subnet {
    Subnet {
        name: "bench6",
        cidr: "2001:db8::/64",
        baseline: |i| {
            IpAddr::V6(Ipv6Addr::from(
                u128::from(V6_NET) + V6_BASELINE_OFFSET + i as u128,
            ))
        },
    }
}

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    // `cargo bench` passes --bench; a filter argument is not supported, so ignore arguments.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// Settings, all from the environment.
struct Settings {
    sizes: Vec<usize>,
    samples: usize,
    v6_hosts: usize,
    connections: usize,
    concurrent_total: usize,
    concurrent_hosts: usize,
    audit_rows: usize,
    audit_reps: usize,
    usage_runs: usize,
}

async fn run() {
    let sizes = sizes_from_env("IPMANAGER_BENCH_ADMIN_SIZES", "1000,10000,60000");
    let settings = Settings {
        samples: env_or("IPMANAGER_BENCH_ADMIN_SAMPLES", 200),
        v6_hosts: env_or("IPMANAGER_BENCH_ADMIN_V6_HOSTS", 10_000),
        connections: env_or("IPMANAGER_BENCH_ADMIN_CONNECTIONS", 8),
        concurrent_total: env_or("IPMANAGER_BENCH_ADMIN_CONCURRENT", 400),
        concurrent_hosts: env_or(
            "IPMANAGER_BENCH_ADMIN_CONCURRENT_HOSTS",
            sizes
                .iter()
                .copied()
                .find(|&n| n >= 10_000)
                .unwrap_or(sizes[0]),
        ),
        audit_rows: env_or("IPMANAGER_BENCH_ADMIN_AUDIT_ROWS", 100_000),
        audit_reps: env_or("IPMANAGER_BENCH_ADMIN_AUDIT_REPS", 5),
        usage_runs: env_or("IPMANAGER_BENCH_ADMIN_USAGE_RUNS", 100),
        sizes,
    };
    let usage_hosts = *settings.sizes.iter().max().unwrap();
    let budget = (V4_BASELINE_OFFSET - 2) as usize;
    assert!(
        usage_hosts.max(settings.concurrent_hosts)
            + settings.samples
            + settings.concurrent_total
            + 1
            < budget,
        "at most {budget} hosts fit below the plain INSERTs' addresses in the /16"
    );
    assert!(
        settings.samples + settings.concurrent_total < 768,
        "the plain INSERTs' addresses (10.0.252.0 up) would reach the dynamic range"
    );

    let mut adds = Vec::new();
    let mut concurrent = None;
    let mut usage = None;
    let mut sizes = settings.sizes.clone();
    if !sizes.contains(&settings.concurrent_hosts) {
        sizes.push(settings.concurrent_hosts);
    }
    for &hosts in &sizes {
        eprintln!("== IPv4 /16 with {hosts} hosts");
        let subnet = v4_subnet();
        let db = TestDb::new().await;
        let mut client = db.client().await;
        load(&client, &subnet, hosts).await;
        if settings.sizes.contains(&hosts) {
            adds.push(add_latency(&mut client, &subnet, hosts, settings.samples).await);
        }
        if hosts == settings.concurrent_hosts && concurrent.is_none() {
            concurrent = Some(concurrent_adds(&db, &subnet, hosts, &settings).await);
        }
        if hosts == usage_hosts {
            usage = Some(subnet_list(&db, &client, hosts, settings.usage_runs).await);
        }
    }
    if settings.v6_hosts > 0 {
        eprintln!("== IPv6 /64 with {} hosts", settings.v6_hosts);
        let subnet = v6_subnet();
        let db = TestDb::new().await;
        let mut client = db.client().await;
        load(&client, &subnet, settings.v6_hosts).await;
        adds.push(add_latency(&mut client, &subnet, settings.v6_hosts, settings.samples).await);
    }
    eprintln!("== audit log, {} rows", settings.audit_rows);
    let audit = audit_cost(settings.audit_rows, settings.audit_reps).await;
    print_report(
        &settings,
        &adds,
        concurrent.as_ref(),
        &audit,
        usage.as_ref(),
    );
}

/// Creates the subnet and fills it with `hosts` reservations from its first usable address up
/// (one statement), then does what autovacuum would soon do.
async fn load(client: &Client, subnet: &Subnet, hosts: usize) {
    let (create, first) = if subnet.cidr.contains(':') {
        (
            format!(
                "INSERT INTO ipmanager.subnets (name, cidr, domain)
                 VALUES ('{}', '{}', 'bench.lan')",
                subnet.name, subnet.cidr
            ),
            "'2001:db8::'::inet",
        )
    } else {
        (
            format!(
                "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
                 VALUES ('{}', '{}', '10.0.255.1', '10.0.255.250', '10.0.0.1', 'bench.lan')",
                subnet.name, subnet.cidr
            ),
            // .1 is the gateway
            "'10.0.0.1'::inet",
        )
    };
    client.batch_execute(&create).await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr, {first} + i, 'h' || i
             FROM generate_series(1, {hosts}) AS i"
        ))
        .await
        .unwrap();
    for table in ["hosts", "audit_log"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE ipmanager.{table}"))
            .await
            .unwrap();
    }
}

struct AddRow {
    cidr: &'static str,
    hosts: usize,
    allocate: Stats,
    insert: Stats,
    next_free: Stats,
}

/// One reservation per transaction, as `ipmanager host add` makes it: allocate_host and a
/// plain INSERT alternate (which goes first alternates too), so that drift hits both alike.
async fn add_latency(client: &mut Client, subnet: &Subnet, hosts: usize, samples: usize) -> AddRow {
    let allocate = client
        .prepare("SELECT (ipmanager.allocate_host($1, $2, $3)).id")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let next_free = client
        .prepare("SELECT ipmanager.next_free_address(id) FROM ipmanager.subnets WHERE name = $1")
        .await
        .unwrap();
    let (mut allocated, mut inserted, mut searched) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples {
        for step in 0..2 {
            if (i + step) % 2 == 0 {
                allocated.push(allocate_one(client, &allocate, subnet.name).await);
            } else {
                let ip = (subnet.baseline)(i as u64);
                inserted.push(insert_one(client, &insert, ip).await);
            }
        }
        let start = Instant::now();
        client.query_one(&next_free, &[&subnet.name]).await.unwrap();
        searched.push(start.elapsed());
    }
    AddRow {
        cidr: subnet.cidr,
        hosts,
        allocate: stats(&allocated),
        insert: stats(&inserted),
        next_free: stats(&searched),
    }
}

/// BEGIN, allocate_host, COMMIT.
async fn allocate_one(client: &mut Client, statement: &Statement, subnet: &str) -> Duration {
    let (mac, hostname) = fresh_identity();
    let start = Instant::now();
    let tx = client.transaction().await.unwrap();
    tx.query_one(statement, &[&mac, &hostname, &subnet])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    start.elapsed()
}

/// BEGIN, INSERT of a precomputed free address, COMMIT.
async fn insert_one(client: &mut Client, statement: &Statement, ip: IpAddr) -> Duration {
    let (mac, hostname) = fresh_identity();
    let start = Instant::now();
    let tx = client.transaction().await.unwrap();
    tx.execute(statement, &[&mac, &ip, &hostname])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    start.elapsed()
}

struct ConcurrentRow {
    method: &'static str,
    wall: Duration,
    per_op: Stats,
}

struct Concurrent {
    hosts: usize,
    connections: usize,
    total: usize,
    rows: Vec<ConcurrentRow>,
}

/// K connections add `total` reservations in one subnet, each one transaction: plain INSERTs of
/// distinct addresses (no lock shared between them), then allocate_host (which queues on the
/// subnet row).
async fn concurrent_adds(db: &TestDb, subnet: &Subnet, hosts: usize, s: &Settings) -> Concurrent {
    let k = s.connections.max(1);
    let per_connection = s.concurrent_total.div_ceil(k);
    let s_samples = s.samples;
    let subnet = *subnet;
    let mut rows = Vec::new();
    for method in ["plain INSERT", "allocate_host"] {
        let mut clients = Vec::new();
        for _ in 0..k {
            clients.push(db.client().await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(k + 1));
        let mut tasks = Vec::new();
        for (c, mut client) in clients.into_iter().enumerate() {
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                let statement = if method == "allocate_host" {
                    client
                        .prepare("SELECT (ipmanager.allocate_host($1, $2, $3)).id")
                        .await
                        .unwrap()
                } else {
                    client
                        .prepare(
                            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ($1, $2, $3)",
                        )
                        .await
                        .unwrap()
                };
                barrier.wait().await;
                let mut times = Vec::with_capacity(per_connection);
                for i in 0..per_connection {
                    times.push(if method == "allocate_host" {
                        allocate_one(&mut client, &statement, subnet.name).await
                    } else {
                        // After the single-connection samples' addresses.
                        let n = (s_samples + c * per_connection + i) as u64;
                        insert_one(&mut client, &statement, (subnet.baseline)(n)).await
                    });
                }
                times
            }));
        }
        barrier.wait().await;
        let start = Instant::now();
        let mut times = Vec::new();
        for task in tasks {
            times.extend(task.await.unwrap());
        }
        rows.push(ConcurrentRow {
            method,
            wall: start.elapsed(),
            per_op: stats(&times),
        });
    }
    Concurrent {
        hosts,
        connections: k,
        total: per_connection * k,
        rows,
    }
}

struct Usage {
    hosts: usize,
    runs: usize,
    list: Stats,
    list_without_jit: Stats,
    count: Stats,
}

/// The query of `ipmanager subnet list` (src/admin/subnets.rs), also on a session with JIT
/// compilation off, next to a plain count of the reservations per subnet; interleaved.
async fn subnet_list(db: &TestDb, client: &Client, hosts: usize, runs: usize) -> Usage {
    const LIST: &str =
        "SELECT s.id, s.name, s.cidr, s.range_start, s.range_end, s.gateway, s.domain, \
                    extract(epoch FROM s.lease_time)::bigint, s.enabled, s.comment, \
                    s.created_at, s.updated_at, \
                    u.addresses::text, u.range_size::text, u.static_pool::text, u.reservations, \
                    u.free::text, u.used_percent::float8 \
             FROM ipmanager.subnets s JOIN ipmanager.subnet_usage u ON u.id = s.id \
             ORDER BY s.cidr";
    let list = client.prepare(LIST).await.unwrap();
    let no_jit = db.client().await;
    no_jit.batch_execute("SET jit = off").await.unwrap();
    let list_no_jit = no_jit.prepare(LIST).await.unwrap();
    let count = client
        .prepare(
            "SELECT s.id, s.name, s.cidr, count(h.id) \
             FROM ipmanager.subnets s LEFT JOIN ipmanager.hosts h ON h.subnet_id = s.id \
             GROUP BY s.id ORDER BY s.cidr",
        )
        .await
        .unwrap();
    let (mut listed, mut listed_no_jit, mut counted) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        client.query(&list, &[]).await.unwrap();
        listed.push(start.elapsed());
        let start = Instant::now();
        no_jit.query(&list_no_jit, &[]).await.unwrap();
        listed_no_jit.push(start.elapsed());
        let start = Instant::now();
        client.query(&count, &[]).await.unwrap();
        counted.push(start.elapsed());
    }
    Usage {
        hosts,
        runs,
        list: stats(&listed),
        list_without_jit: stats(&listed_no_jit),
        count: stats(&counted),
    }
}

struct AuditRow {
    statement: &'static str,
    on: Vec<Duration>,
    off: Vec<Duration>,
    logged: i64,
}

/// One INSERT ... SELECT of `rows` hosts and one UPDATE of all of them, with the audit triggers
/// of hosts enabled and disabled, alternating which goes first. Before each pair the tables are
/// truncated with the TRUNCATE audit trigger disabled (otherwise it would copy every row into the
/// log first) and checkpointed, so every measurement starts from empty tables.
async fn audit_cost(rows: usize, reps: usize) -> Vec<AuditRow> {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
             VALUES ('bench', '10.0.0.0/8', '10.255.0.1', '10.255.0.250', '10.0.0.1', 'bench.lan');
             ALTER TABLE ipmanager.hosts DISABLE TRIGGER hosts_audit_truncate",
        )
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO ipmanager.hosts (mac, ip, hostname)
         SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr, '10.0.0.0'::inet + 65536 + i, 'h' || i
         FROM generate_series(1, {rows}) AS i"
    );
    let update = "UPDATE ipmanager.hosts SET comment = 'rack ' || (id % 40)";
    let mut result = vec![
        AuditRow {
            statement: "INSERT … SELECT generate_series",
            on: Vec::new(),
            off: Vec::new(),
            logged: 0,
        },
        AuditRow {
            statement: "UPDATE … SET comment (every row)",
            on: Vec::new(),
            off: Vec::new(),
            logged: 0,
        },
    ];
    for rep in 0..reps {
        for step in 0..2 {
            let audited = (rep + step) % 2 == 0;
            let toggle = if audited { "ENABLE" } else { "DISABLE" };
            client
                .batch_execute(&format!(
                    "TRUNCATE ipmanager.hosts, ipmanager.host_aliases, ipmanager.host_macs, ipmanager.audit_log RESTART IDENTITY;
                     ALTER TABLE ipmanager.hosts {toggle} TRIGGER hosts_audit_insert;
                     ALTER TABLE ipmanager.hosts {toggle} TRIGGER hosts_audit_update"
                ))
                .await
                .unwrap();
            client.batch_execute("CHECKPOINT").await.unwrap();
            for (index, sql) in [insert.as_str(), update].into_iter().enumerate() {
                let before = log_rows(&client).await;
                let start = Instant::now();
                client.batch_execute(sql).await.unwrap();
                let elapsed = start.elapsed();
                let logged = log_rows(&client).await - before;
                let row = &mut result[index];
                if audited {
                    row.on.push(elapsed);
                    row.logged = logged;
                } else {
                    assert_eq!(logged, 0, "audit triggers were disabled");
                    row.off.push(elapsed);
                }
            }
        }
    }
    client
        .batch_execute(
            "ALTER TABLE ipmanager.hosts ENABLE TRIGGER hosts_audit_insert;
             ALTER TABLE ipmanager.hosts ENABLE TRIGGER hosts_audit_update;
             ALTER TABLE ipmanager.hosts ENABLE TRIGGER hosts_audit_truncate",
        )
        .await
        .unwrap();
    result
}

async fn log_rows(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM ipmanager.audit_log", &[])
        .await
        .unwrap()
        .get(0)
}

fn max(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn print_report(
    s: &Settings,
    adds: &[AddRow],
    concurrent: Option<&Concurrent>,
    audit: &[AuditRow],
    usage: Option<&Usage>,
) {
    println!();
    println!(
        "Adding one reservation, one transaction each (BEGIN, statement, COMMIT), {} of each, alternating:",
        s.samples
    );
    println!();
    println!("| subnet | hosts in it | allocate_host median ms | p99 ms | plain INSERT median ms | p99 ms | allocate / INSERT (median) | next_free_address alone median ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in adds {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            r.cidr,
            r.hosts,
            ms(r.allocate.median),
            ms(r.allocate.p99),
            ms(r.insert.median),
            ms(r.insert.p99),
            ratio(r.allocate.median, r.insert.median),
            ms(r.next_free.median),
            ms(r.next_free.p99),
        );
    }
    if let Some(c) = concurrent {
        println!();
        println!(
            "{} connections adding {} reservations in one /16 holding {} hosts, one transaction each:",
            c.connections, c.total, c.hosts
        );
        println!();
        println!("| method | wall s | reservations/s | per reservation median ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|");
        for r in &c.rows {
            println!(
                "| {} | {:.2} | {:.0} | {} | {} |",
                r.method,
                r.wall.as_secs_f64(),
                c.total as f64 / r.wall.as_secs_f64(),
                ms(r.per_op.median),
                ms(r.per_op.p99),
            );
        }
    }
    println!();
    println!(
        "Audit log: one statement over {} rows, on freshly truncated tables, {} times each:",
        s.audit_rows, s.audit_reps
    );
    println!();
    println!("| statement | audit triggers on: median ms | max ms | off: median ms | max ms | on / off (median) | audit_log rows written |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in audit {
        let (on, off) = (stats(&r.on), stats(&r.off));
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {} |",
            r.statement,
            ms(on.median),
            ms(max(&r.on)),
            ms(off.median),
            ms(max(&r.off)),
            ratio(on.median, off.median),
            r.logged,
        );
    }
    if let Some(u) = usage {
        println!();
        println!(
            "`ipmanager subnet list` query on a /16 holding {} hosts ({} runs each, interleaved):",
            u.hosts, u.runs
        );
        println!();
        println!("| query | median ms | p99 ms |");
        println!("|---|---:|---:|");
        println!(
            "| subnets JOIN subnet_usage (what `subnet list` runs) | {} | {} |",
            ms(u.list.median),
            ms(u.list.p99)
        );
        println!(
            "| the same with `SET jit = off` | {} | {} |",
            ms(u.list_without_jit.median),
            ms(u.list_without_jit.p99)
        );
        println!(
            "| subnets LEFT JOIN hosts, count per subnet (baseline) | {} | {} |",
            ms(u.count.median),
            ms(u.count.p99)
        );
    }
}
