//! Blackout benchmark: the `hostsfile` and `incremental` layouts side by side under a steady
//! stream of changes dnsmasq can take incrementally (a host's IP changed to a fresh address, a
//! new host), one per second, while a client in the lab's client namespace sends a DHCP
//! DISCOVER and a DNS query every 10 ms. Measures, per layout and size:
//!
//! - COMMIT-to-offer: from just before the change's statement is sent (autocommit) until a
//!   DISCOVER with the changed host's MAC is first offered the new address (the MAC is probed
//!   every 5 ms (`IPMANAGER_BLACKOUT_RESEND_MS`), less often once the wait exceeds 20 times
//!   that: a twentieth of the wait so far);
//! - the longest time a query went unanswered: for each background query, the time until an
//!   answer to it or to any later query of the same kind arrived (a dropped query counts until
//!   dnsmasq answers again), the maximum over the run, DHCP and DNS separately;
//! - the SIGHUPs dnsmasq handled during the run (from its log): the reloads of the hostsfile
//!   layout, compactions of the incremental one (none expected: `compaction_interval` is longer
//!   than the run).
//!
//! Real parts throughout: a private PostgreSQL cluster, the release `ipmanager agent` binary,
//! dnsmasq in the lab. Results go to docs/benchmarks.md ("Blackout: hostsfile vs incremental").
//!
//! Needs root, network namespaces, dnsmasq, udhcpc, dig and the PostgreSQL server binaries;
//! without them it prints SKIPPED and exits 0. Environment: `IPMANAGER_BLACKOUT_SIZES` (default
//! `10000,100000`), `IPMANAGER_BLACKOUT_LAYOUTS` (default `hostsfile,incremental`),
//! `IPMANAGER_BLACKOUT_SECONDS` (changes, one per second, default 60), `IPMANAGER_BLACKOUT_SHARDS`
//! (default 1024), `IPMANAGER_BLACKOUT_NAMES_SHARDS` (default 4096), `IPMANAGER_BLACKOUT_TAIL`
//! (seconds to wait for the last offers, default 60).

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use support::{env_or, ms, sizes_from_env, stats, Stats};

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::agent_process::{wait_applied, write_lab_agent_config, AgentProcess};
use common::binary;
use common::cluster::{Cluster, PgTools};
use common::netns::{prerequisites, Lab};
use common::probe::{DhcpProber, DnsProber};
use tokio_postgres::Client;

/// The lab's /24 inside the benchmark's /12 (10.96.0.0/12): dnsmasq listens on 10.99.9.1.
const OCTET: u8 = 9;
const AGENT: &str = "bench";
/// Background queries: one DISCOVER and one DNS query this often.
const TICK: Duration = Duration::from_millis(10);
/// How long a changed host's DISCOVER waits for its OFFER.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long a background query may wait for its own answer before it counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// dnsmasq's start at 100,000 reservations in 1,024 files takes about a minute.
const START_DEADLINE: Duration = Duration::from_secs(300);
const LOAD_DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if let Err(reason) = prerequisites() {
        eprintln!("SKIPPED: the blackout benchmark needs the end-to-end lab: {reason}");
        return;
    }
    let pg = match PgTools::find() {
        Ok(pg) => pg,
        Err(reason) => {
            eprintln!("SKIPPED: the blackout benchmark needs a private PostgreSQL: {reason}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(pg));
}

struct Settings {
    seconds: usize,
    /// A changed host's MAC is probed this often at first (see [`watch_offer`]).
    resend: Duration,
    shards: u32,
    names_shards: u32,
    tail: Duration,
}

struct Row {
    hosts: usize,
    layout: String,
    start: Duration,
    changes: usize,
    offered: usize,
    latency: Stats,
    latency_max: Duration,
    dhcp: Blackout,
    dns: Blackout,
    sighups: usize,
}

async fn run(pg: PgTools) {
    let sizes = sizes_from_env("IPMANAGER_BLACKOUT_SIZES", "10000,100000");
    let layouts: Vec<String> = std::env::var("IPMANAGER_BLACKOUT_LAYOUTS")
        .unwrap_or_else(|_| "hostsfile,incremental".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let settings = Settings {
        seconds: env_or("IPMANAGER_BLACKOUT_SECONDS", 60),
        resend: Duration::from_millis(env_or("IPMANAGER_BLACKOUT_RESEND_MS", 5)),
        shards: env_or("IPMANAGER_BLACKOUT_SHARDS", 1024),
        names_shards: env_or("IPMANAGER_BLACKOUT_NAMES_SHARDS", 4096),
        tail: Duration::from_secs(env_or("IPMANAGER_BLACKOUT_TAIL", 60)),
    };
    // Its own server: 100,000-row loads and a steady write stream stay off the shared one.
    let cluster = Cluster::primary(&pg, "blackout");
    let mut rows = Vec::new();
    for &hosts in &sizes {
        // Host addresses start at 10.96.16.0 and must stay clear of the lab's 10.99.9.0/24.
        assert!((2..=150_000).contains(&hosts), "2 to 150000 hosts");
        for layout in &layouts {
            eprintln!("== {hosts} hosts, layout {layout}");
            let row = run_one(&cluster, hosts, layout, &settings).await;
            print_rows(std::slice::from_ref(&row));
            rows.push(row);
        }
    }
    println!();
    println!(
        "Blackout: one change per second for {} s, a DISCOVER and a DNS query every {} ms \
         (shards {}, names_shards {}):",
        settings.seconds,
        TICK.as_millis(),
        settings.shards,
        settings.names_shards
    );
    print_rows(&rows);
}

/// A fresh database on `cluster` with the schema and `hosts` hosts in one static subnet; the
/// id of the loading transaction.
async fn load(cluster: &Cluster, name: &str, hosts: usize) -> (Client, String) {
    let admin = cluster.client("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut client = cluster.client(name).await;
    ipmanager::db::migrate(&mut client).await.unwrap();
    let transaction = client.transaction().await.unwrap();
    transaction
        .batch_execute(&format!(
            "INSERT INTO ipmanager.subnets (name, cidr, gateway, domain)
             VALUES ('bench', '10.96.0.0/12', '10.99.{OCTET}.1', 'bench.lan');
             INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT {mac}, {ip}, 'h' || i FROM generate_series(1, {hosts}) AS i",
            mac = mac_sql("0200", "i"),
            ip = ip_sql("i"),
        ))
        .await
        .unwrap();
    let xid: String = transaction
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    transaction.commit().await.unwrap();
    // What autovacuum would do soon after a bulk load (as in benches/sync.rs).
    client
        .batch_execute("VACUUM ANALYZE ipmanager.hosts")
        .await
        .unwrap();
    (client, xid)
}

/// Host `i`'s MAC: `<prefix>` then `i` in eight hex digits.
fn mac_sql(prefix: &str, i: &str) -> String {
    format!("('{prefix}' || lpad(to_hex({i}), 8, '0'))::macaddr")
}

fn mac_of(prefix: u16, i: usize) -> [u8; 6] {
    let [a, b] = prefix.to_be_bytes();
    let [_, _, _, _, c, d, e, f] = (i as u64).to_be_bytes();
    [a, b, c, d, e, f]
}

/// Address number `i`: 10.96.16.0 + i, inside the subnet and below the lab's own addresses.
fn ip_sql(i: &str) -> String {
    format!("'10.96.0.0'::inet + 4096 + {i}")
}

fn ip_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 4096 + i as u32)
}

async fn run_one(cluster: &Cluster, hosts: usize, layout: &str, settings: &Settings) -> Row {
    let Some(mut lab) = Lab::new(OCTET) else {
        panic!("the lab cannot run here (see the SKIPPED line above)");
    };
    lab.set_start_deadline(START_DEADLINE);
    let dbname = format!("blackout_{hosts}_{layout}");
    let (client, loaded) = load(cluster, &dbname, hosts).await;
    let config = write_lab_agent_config(
        &lab,
        &cluster.url(&dbname),
        AGENT,
        layout,
        &format!(
            "shards = {}\nnames_shards = {}\ncompaction_interval = \"1h\"\ncheck_command = []",
            settings.shards, settings.names_shards
        ),
    );
    let agent = AgentProcess::spawn(binary::command(
        &["agent", "--config", config.to_str().unwrap()],
        &[],
    ));
    assert!(
        wait_applied(&client, AGENT, &loaded, LOAD_DEADLINE).await,
        "the agent never applied the load:\n{}",
        agent.log()
    );
    let started = Instant::now();
    lab.start_dnsmasq().await;
    let start = started.elapsed();
    eprintln!("dnsmasq serves after {:.1} s", start.as_secs_f64());

    let dhcp = DhcpProber::new(&lab);
    let dns = DnsProber::new(&lab);
    let (steady_mac, steady_name) = (mac_of(0x0200, 1), "h1.bench.lan".to_owned());
    assert_eq!(dhcp.offer(steady_mac).await, Some(ip_of(1)));
    assert_eq!(
        dns.query(&steady_name, Duration::from_secs(5)).await,
        Some(vec![ip_of(1)])
    );

    let sighups_before = sighups(&lab, layout);
    let background = Background::start(dhcp.clone(), dns.clone(), steady_mac, steady_name);
    let latencies = changes(&client, &dhcp, hosts, settings).await;
    let (dhcp_blackout, dns_blackout) = background.stop().await;
    let sighups = sighups(&lab, layout) - sighups_before;

    // dnsmasq's log (every file it read, every query) outlives the lab, for a closer look.
    let kept = std::env::temp_dir().join(format!("blackout-{hosts}-{layout}.log"));
    if std::fs::copy(lab.log_file(), &kept).is_ok() {
        eprintln!("dnsmasq's log: {}", kept.display());
    }
    drop(agent);
    drop(lab);
    drop(client);
    let offered: Vec<Duration> = latencies.iter().flatten().copied().collect();
    Row {
        hosts,
        layout: layout.to_owned(),
        start,
        changes: latencies.len(),
        offered: offered.len(),
        latency: stats(&offered),
        latency_max: offered.iter().max().copied().unwrap_or_default(),
        dhcp: dhcp_blackout,
        dns: dns_blackout,
        sighups,
    }
}

/// How often dnsmasq has started or handled a SIGHUP so far: with directories it logs
/// "cleared cache" each time, with files only that it read them.
fn sighups(lab: &Lab, layout: &str) -> usize {
    match layout {
        "incremental" => lab
            .log()
            .lines()
            .filter(|l| l.ends_with("]: cleared cache"))
            .count(),
        _ => lab.reads().0,
    }
}

/// One change per second: even ones move a host to a fresh address, odd ones add a host. Each
/// change's MAC is watched until it is offered the new address (or the tail runs out). Returns
/// each change's COMMIT-to-offer time, `None` when it was never offered.
async fn changes(
    client: &Client,
    dhcp: &DhcpProber,
    hosts: usize,
    settings: &Settings,
) -> Vec<Option<Duration>> {
    let update = client
        .prepare("UPDATE ipmanager.hosts SET ip = $1::text::inet WHERE id = $2")
        .await
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             VALUES ($1::text::macaddr, $2::text::inet, $3)",
        )
        .await
        .unwrap();
    let first = Instant::now();
    let deadline = first + Duration::from_secs(settings.seconds as u64) + settings.tail;
    let mut watchers = Vec::with_capacity(settings.seconds);
    for k in 0..settings.seconds {
        tokio::time::sleep_until((first + Duration::from_secs(k as u64)).into()).await;
        let fresh = ip_of(hosts + 1 + k);
        // Spread over the table, never host 1 (the steady one).
        let i = 2 + (k * 7919) % (hosts - 1);
        let id: i64 = client
            .query_one(
                "SELECT id FROM ipmanager.hosts WHERE hostname = $1",
                &[&format!("h{i}")],
            )
            .await
            .unwrap()
            .get(0);
        let begin = Instant::now();
        let mac = if k % 2 == 0 {
            let changed = client
                .execute(&update, &[&fresh.to_string(), &id])
                .await
                .unwrap();
            assert_eq!(changed, 1);
            mac_of(0x0200, i)
        } else {
            let mac = mac_of(0x0201, k);
            let mac_text = common::probe::format_mac(mac);
            client
                .execute(&insert, &[&mac_text, &fresh.to_string(), &format!("n{k}")])
                .await
                .unwrap();
            mac
        };
        let (dhcp, resend) = (dhcp.clone(), settings.resend);
        watchers.push(tokio::spawn(async move {
            watch_offer(&dhcp, mac, fresh, begin, deadline, resend).await
        }));
    }
    let mut latencies = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        latencies.push(watcher.await.unwrap());
    }
    latencies
}

/// Probes `mac` until it is offered `ip` (the time from `begin` to that OFFER's arrival) or
/// `deadline` passes. A DISCOVER goes out every `resend`, without waiting for the previous
/// one's answer (dnsmasq may be slower than that to answer at 100,000 reservations), and less
/// often as the wait grows (a twentieth of it), so that waiting watchers do not flood a dnsmasq
/// that is busy re-reading.
async fn watch_offer(
    dhcp: &DhcpProber,
    mac: [u8; 6],
    ip: Ipv4Addr,
    begin: Instant,
    deadline: Instant,
    resend: Duration,
) -> Option<Duration> {
    let mut probes = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                if next >= deadline {
                    return None;
                }
                let dhcp = dhcp.clone();
                probes.spawn(async move {
                    let offered = dhcp.discover(mac, PROBE_WAIT).await;
                    (offered, Instant::now())
                });
                next = Instant::now() + resend.max(begin.elapsed() / 20);
            }
            Some(done) = probes.join_next() => {
                if let (Some(offered), at) = done.expect("a probe task") {
                    if offered == ip {
                        return Some(at - begin);
                    }
                }
            }
        }
    }
}

/// The longest time a query of one kind waited for an answer, and the queries never answered.
#[derive(Clone, Copy, Default)]
struct Blackout {
    longest: Duration,
    sent: usize,
    lost: usize,
}

/// When a background query was sent and when its answer came.
type Sent = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// The DISCOVER and DNS query sent every [`TICK`], each in a task of its own so that a slow
/// answer delays no later query.
struct Background {
    dhcp: Sent,
    dns: Sent,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    fn start(dhcp: DhcpProber, dns: DnsProber, mac: [u8; 6], name: String) -> Background {
        let (dhcp_sent, dns_sent) = (Sent::default(), Sent::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (d, n) = (Arc::clone(&dhcp_sent), Arc::clone(&dns_sent));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = ticks.tick() => {}
                }
                let (dhcp, d) = (dhcp.clone(), Arc::clone(&d));
                tokio::spawn(async move {
                    record(&d, dhcp.discover(mac, QUERY_TIMEOUT)).await;
                });
                let (dns, n, name) = (dns.clone(), Arc::clone(&n), name.clone());
                tokio::spawn(async move {
                    record(&n, dns.query(&name, QUERY_TIMEOUT)).await;
                });
            }
        });
        Background {
            dhcp: dhcp_sent,
            dns: dns_sent,
            stop,
            task,
        }
    }

    /// Stops sending, lets the last queries be answered, and sums up both kinds.
    async fn stop(self) -> (Blackout, Blackout) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let end = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dhcp = blackout(&self.dhcp.lock().unwrap(), end);
        let dns = blackout(&self.dns.lock().unwrap(), end);
        (dhcp, dns)
    }
}

/// Records a query's send time and, once `answer` resolves, its answer time.
async fn record<T>(sent: &Sent, answer: impl std::future::Future<Output = Option<T>>) {
    let index = {
        let mut sent = sent.lock().unwrap();
        sent.push((Instant::now(), None));
        sent.len() - 1
    };
    if answer.await.is_some() {
        sent.lock().unwrap()[index].1 = Some(Instant::now());
    }
}

/// For each query sent before `end`: how long until it or a later query was answered (until
/// `end` when none was); the maximum of those, the count, and the queries never answered.
fn blackout(queries: &[(Instant, Option<Instant>)], end: Instant) -> Blackout {
    let mut sorted: Vec<(Instant, Option<Instant>)> = queries.to_vec();
    sorted.sort_by_key(|(sent, _)| *sent);
    let mut next_answer: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    for (sent, answered) in sorted.iter().rev() {
        next_answer = match (next_answer, answered) {
            (Some(a), Some(b)) => Some(a.min(*b)),
            (a, b) => a.or(*b),
        };
        longest = longest.max(next_answer.unwrap_or(end).saturating_duration_since(*sent));
    }
    Blackout {
        longest,
        sent: sorted.len(),
        lost: sorted.iter().filter(|(_, a)| a.is_none()).count(),
    }
}

fn print_rows(rows: &[Row]) {
    println!();
    println!(
        "| hosts | layout | dnsmasq start s | changes offered | COMMIT to offer median ms | p99 ms | max ms \
         | longest DHCP unanswered ms | DISCOVERs lost | longest DNS unanswered ms | DNS queries lost | SIGHUPs during the run |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {}/{} | {} | {} | {} | {} | {}/{} | {} | {}/{} | {} |",
            r.hosts,
            r.layout,
            r.start.as_secs_f64(),
            r.offered,
            r.changes,
            offered_ms(r, r.latency.median),
            offered_ms(r, r.latency.p99),
            offered_ms(r, r.latency_max),
            ms(r.dhcp.longest),
            r.dhcp.lost,
            r.dhcp.sent,
            ms(r.dns.longest),
            r.dns.lost,
            r.dns.sent,
            r.sighups,
        );
    }
}

/// A latency figure, or a dash when no change was offered at all.
fn offered_ms(row: &Row, value: Duration) -> String {
    if row.offered == 0 {
        "–".to_owned()
    } else {
        ms(value)
    }
}
