//! Benchmark of the HTTP API (`ipmanager serve`, the release binary, on loopback) against a
//! real PostgreSQL: requests per second and p50/p99 latency with 8 concurrent clients for GET
//! one host, list 100 hosts, and create with allocation, next to the same operations as direct
//! SQL over one connection in the same run. Run with `scripts/bench api`; results go to
//! docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent_process::AgentProcess;
use common::binary::command;
use common::{free_port, TestDb};
use ipmanager::admin::tokens::{self, Access};
use support::{env_or, ms, stats};
use tokio_postgres::Client;

/// Every host the benchmark creates gets a new MAC address and name from this counter.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn fresh() -> (String, String) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = n.to_be_bytes();
    (
        format!(
            "0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[3], b[4], b[5], b[6], b[7]
        ),
        format!("n{n}"),
    )
}

fn main() {
    if std::env::var_os(common::TEST_DATABASE_URL_VAR).is_none() {
        eprintln!("run the benchmark with scripts/bench (it provides a PostgreSQL server)");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// One measured operation: how many it did in how long, and the latency of each.
struct Figures {
    count: usize,
    elapsed: Duration,
    samples: Vec<Duration>,
}

impl Figures {
    fn row(&self, what: &str, how: &str) -> String {
        let s = stats(&self.samples);
        format!(
            "| {what} | {how} | {:.0} | {} | {} |",
            self.count as f64 / self.elapsed.as_secs_f64(),
            ms(s.median),
            ms(s.p99)
        )
    }
}

/// Runs `op` from `clients` concurrent tasks for `time`.
async fn measure<F, Fut>(clients: usize, time: Duration, op: F) -> Figures
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while start.elapsed() < time {
                    let t = Instant::now();
                    op().await;
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    Figures {
        count: samples.len(),
        elapsed: start.elapsed(),
        samples,
    }
}

async fn run() {
    let clients: usize = env_or("IPMANAGER_BENCH_API_CLIENTS", 8);
    let time = Duration::from_secs(env_or("IPMANAGER_BENCH_API_SECONDS", 5));
    let hosts: usize = env_or("IPMANAGER_BENCH_API_HOSTS", 1000);
    let db = TestDb::new().await;
    let sql = db.client().await;
    sql.batch_execute(&format!(
        "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end) \
         VALUES ('bench', '10.0.0.0/16', '10.0.255.0', '10.0.255.250'); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname) \
         SELECT ('02:00:00:' || lpad(to_hex(i / 65536), 2, '0') || ':' \
                 || lpad(to_hex((i / 256) % 256), 2, '0') || ':' || lpad(to_hex(i % 256), 2, '0'))::macaddr, \
                '10.0.0.0'::inet + 10 + i, 'h' || i FROM generate_series(1, {hosts}) i"
    ))
    .await
    .unwrap();
    let token = tokens::create(&sql, "bench", "bench", Access::Write, None)
        .await
        .unwrap()
        .secret;

    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\npool_size = {clients}\n",
            db.url
        ),
    )
    .unwrap();
    let server = AgentProcess::spawn(command(
        &["serve", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "warn,ipmanager=info")],
    ));
    server.wait_log("API listening on").await;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();

    let get = |http: reqwest::Client, base: String| {
        move || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize % hosts + 1;
                let r = http.get(format!("{base}/hosts/h{n}")).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }
    };
    let list = |http: reqwest::Client, base: String| {
        move || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http
                    .get(format!("{base}/hosts?subnet=bench&limit=100"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }
    };
    let create = |http: reqwest::Client, base: String| {
        move || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let (mac, name) = fresh();
                let r = http
                    .post(format!("{base}/hosts"))
                    .json(&serde_json::json!({"mac": mac, "hostname": name, "subnet": "bench"}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        }
    };
    let api_get = measure(clients, time, get(http.clone(), base.clone())).await;
    let api_list = measure(clients, time, list(http.clone(), base.clone())).await;
    let api_create = measure(clients, time, create(http.clone(), base.clone())).await;

    let sql = Arc::new(sql);
    let sql_get = measure(1, time, {
        let sql = Arc::clone(&sql);
        move || sql_get_host(Arc::clone(&sql), hosts)
    })
    .await;
    let sql_list = measure(1, time, {
        let sql = Arc::clone(&sql);
        move || sql_list(Arc::clone(&sql))
    })
    .await;
    let sql_create = measure(1, time, {
        let sql = Arc::clone(&sql);
        move || sql_create(Arc::clone(&sql))
    })
    .await;
    drop(server);

    println!(
        "\nHTTP API: {clients} concurrent clients on loopback, {}s per operation, {hosts} hosts; \
         SQL: one connection, one statement at a time\n",
        time.as_secs()
    );
    println!("| operation | through | req/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|");
    for (what, api, sql) in [
        ("GET one host", api_get, sql_get),
        ("list 100 hosts", api_list, sql_list),
        ("create with allocation", api_create, sql_create),
    ] {
        println!("{}", api.row(what, &format!("API, {clients} clients")));
        println!("{}", sql.row(what, "SQL, 1 connection"));
    }
}

const HOST_COLUMNS: &str = "h.id, s.name, h.mac, h.ip, h.hostname, h.enabled, h.lease_time, \
                            h.comment, h.created_at, h.updated_at";

async fn sql_get_host(sql: Arc<Client>, hosts: usize) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize % hosts + 1;
    sql.query_one(
        &format!(
            "SELECT {HOST_COLUMNS} FROM ipmanager.hosts h JOIN ipmanager.subnets s \
             ON s.id = h.subnet_id WHERE lower(h.hostname) = lower($1)"
        ),
        &[&format!("h{n}")],
    )
    .await
    .unwrap();
}

async fn sql_list(sql: Arc<Client>) {
    sql.query(
        &format!(
            "SELECT {HOST_COLUMNS} FROM ipmanager.hosts h JOIN ipmanager.subnets s \
             ON s.id = h.subnet_id WHERE s.name = 'bench' ORDER BY h.ip LIMIT 100"
        ),
        &[],
    )
    .await
    .unwrap();
}

async fn sql_create(sql: Arc<Client>) {
    let (mac, name) = fresh();
    sql.query_one(
        "SELECT (ipmanager.allocate_host($1::text::macaddr, $2, 'bench')).id",
        &[&mac, &name],
    )
    .await
    .unwrap();
}
