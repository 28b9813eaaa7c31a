//! Shared test support: a fresh, migrated PostgreSQL database per test on the server named by
//! `IPMANAGER_TEST_DATABASE_URL`, dropped again when the test ends (also when it fails).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const TEST_DATABASE_URL_VAR: &str = "IPMANAGER_TEST_DATABASE_URL";

/// The server URL every database test uses. Without it the tests fail loudly rather than skip:
/// `scripts/test` starts a private cluster and sets it.
pub fn server_url() -> String {
    std::env::var(TEST_DATABASE_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{TEST_DATABASE_URL_VAR} is not set: run the tests with scripts/test, which starts a \
             private PostgreSQL when needed, or point it at a server, e.g. \
             postgresql://postgres@127.0.0.1:5432/postgres"
        )
    })
}

/// Returns `url` with its database name replaced by `dbname` (URL form only).
pub fn url_with_dbname(url: &str, dbname: &str) -> String {
    let scheme_end = url.find("://").expect("database URL in postgresql:// form") + 3;
    let (head, tail) = url.split_at(scheme_end);
    let authority_end = tail.find(['/', '?']).unwrap_or(tail.len());
    let (authority, rest) = tail.split_at(authority_end);
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{head}{authority}/{dbname}{query}")
}

/// A loopback port nobody listened on a moment ago (another process may take it before the
/// caller binds it; callers that start a server retry on a new one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own for one test, with the ipmanager schema applied.
pub struct TestDb {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        let mut client = db.client().await;
        ipmanager::db::migrate(&mut client)
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    /// A fresh database without the schema, for migration tests.
    pub async fn empty() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let server_url = server_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "ipm_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let admin = connect(&server_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = url_with_dbname(&server_url, &name);
        TestDb {
            name,
            url,
            server_url,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&server_url, NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A process that stands where dnsmasq would and counts the SIGHUPs it receives.
pub struct SighupCounter {
    child: std::process::Child,
    pub pid_file: std::path::PathBuf,
    count_file: std::path::PathBuf,
}

impl SighupCounter {
    pub async fn start(dir: &std::path::Path) -> SighupCounter {
        let pid_file = dir.join("dnsmasq.pid");
        let count_file = dir.join("sighups");
        let _ = std::fs::remove_file(&pid_file);
        let child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/sighup_counter.py"
            ))
            .arg(&pid_file)
            .arg(&count_file)
            .spawn()
            .expect("python3 runs the SIGHUP counter (scripts/test and .ci/run install it)");
        let ready = wait_until(Duration::from_secs(10), || {
            let exists = pid_file.exists();
            async move { exists }
        })
        .await;
        assert!(ready, "the SIGHUP counter did not write its pid file");
        SighupCounter {
            child,
            pid_file,
            count_file,
        }
    }

    pub fn count(&self) -> usize {
        std::fs::read_to_string(&self.count_file)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for SighupCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of the test server, so that a test can make the database appear
/// down (nothing listening yet), or silently dead (connections stay open but nothing passes).
pub struct Proxy {
    pub port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    target: String,
}

impl Proxy {
    /// Reserves a free port; nothing listens on it until [`Proxy::start`].
    pub fn reserve(target_url: &str) -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config: tokio_postgres::Config = target_url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("the proxy needs a TCP server, got {other:?}"),
        };
        let target = format!(
            "{host}:{}",
            config.get_ports().first().copied().unwrap_or(5432)
        );
        Proxy {
            port,
            frozen: tokio::sync::watch::Sender::new(false),
            task: None,
            target,
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    pub async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let target = self.target.clone();
        let frozen = self.frozen.subscribe();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let frozen = frozen.clone();
                connections.spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(target).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::join!(pump(ri, wo, frozen.clone()), pump(ro, wi, frozen));
                    }
                });
            }
        }));
    }

    /// Stops passing bytes without closing anything, like a server that vanished.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Closes every connection and stops listening.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if *frozen.borrow() {
            // Hold the connection open and silent until the test ends.
            let _ = frozen.wait_for(|f| !*f).await;
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if *frozen.borrow() || to.write_all(&buffer[..n]).await.is_err() {
                        if *frozen.borrow() {
                            let _ = frozen.wait_for(|f| !*f).await;
                        }
                        return;
                    }
                }
            },
            _ = frozen.changed() => {}
        }
    }
}
pub mod agent_process;
pub mod arb;
pub mod binary;
pub mod cluster;
pub mod netns;
pub mod probe;
pub mod sql;

/// Login roles for one test, each a member of a group role (`ipmanager_agent`, ...). Roles are
/// cluster-wide, so their names start with the test database's name; they are dropped again when
/// this value is dropped, also when the test fails.
pub struct LoginRoles {
    pub names: Vec<String>,
}

impl LoginRoles {
    /// Creates `<db name>_<suffix>` LOGIN IN ROLE `group` for every `(suffix, group)`.
    pub async fn create(db: &TestDb, roles: &[(&str, &str)]) -> LoginRoles {
        let names: Vec<String> = roles
            .iter()
            .map(|(suffix, _)| format!("{}_{suffix}", db.name))
            .collect();
        let sql: String = names
            .iter()
            .zip(roles)
            .map(|(name, (_, group))| format!("CREATE ROLE {name} LOGIN IN ROLE {group};"))
            .collect();
        connect(&server_url())
            .await
            .batch_execute(&sql)
            .await
            .expect("create test login roles");
        LoginRoles { names }
    }

    /// `db`'s URL as login `user` (the test server trusts local connections).
    pub fn url(&self, db: &TestDb, user: &str) -> String {
        assert!(
            db.url.contains("postgres@"),
            "the test expects a postgres@ URL"
        );
        db.url.replacen("postgres@", &format!("{user}@"), 1)
    }
}

impl Drop for LoginRoles {
    fn drop(&mut self) {
        let sql: String = self
            .names
            .iter()
            .map(|name| format!("DROP ROLE IF EXISTS {name};"))
            .collect();
        let server_url = server_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&server_url, NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}
