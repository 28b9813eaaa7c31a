//! The agent end to end against a real PostgreSQL: SQL changes reach the files on disk, no-op
//! changes touch nothing, bursts coalesce, lost connections and outages heal.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent_process::AgentProcess;
use common::binary::BIN;
use common::{wait_until, SighupCounter, TestDb};
use ipmanager::agent::{Agent, Phase, Status};
use ipmanager::config::Config;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

/// A running in-process agent writing into a temporary directory, with a SIGHUP counter as its
/// dnsmasq.
struct Harness {
    dir: tempfile::TempDir,
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    hup: SighupCounter,
    /// TOML array for `dnsmasq.check_command`; empty by default, since these tests need no
    /// dnsmasq binary (the end-to-end tests run the default `dnsmasq --test`).
    check_command: String,
    /// `agent.name`; "test" by default.
    name: String,
    /// Added to the `[dnsmasq]` section of the generated config file.
    dnsmasq_extra: String,
}

impl Harness {
    async fn start(db: &TestDb) -> Harness {
        Self::start_with(db, "").await
    }

    /// `agent_extra` is added to the `[agent]` section of the generated config file.
    async fn start_with(db: &TestDb, agent_extra: &str) -> Harness {
        let mut harness = Self::prepare().await;
        harness.spawn_agent(&db.url, agent_extra);
        harness
    }

    /// An agent named `name` serving `sites` (a TOML array), with `dnsmasq_extra` in `[dnsmasq]`.
    async fn start_site(db: &TestDb, name: &str, sites: &str, dnsmasq_extra: &str) -> Harness {
        let mut harness = Self::prepare().await;
        harness.name = name.to_owned();
        harness.dnsmasq_extra = dnsmasq_extra.to_owned();
        harness.spawn_agent(&db.url, &format!("sites = {sites}"));
        harness
    }

    /// An agent with the incremental layout: 16 shards in `dhcp-hosts.d` and `hosts.d`.
    async fn start_incremental(db: &TestDb, compaction_interval: &str) -> Harness {
        Self::start_incremental_with(db, compaction_interval, "").await
    }

    /// [`Harness::start_incremental`] with `agent_extra` in `[agent]`.
    async fn start_incremental_with(
        db: &TestDb,
        compaction_interval: &str,
        agent_extra: &str,
    ) -> Harness {
        let mut harness = Self::prepare().await;
        harness.set_incremental(compaction_interval);
        harness.spawn_agent(&db.url, agent_extra);
        harness
    }

    /// Configures the incremental layout: 16 shards in `dhcp-hosts.d` and `hosts.d`.
    fn set_incremental(&mut self, compaction_interval: &str) {
        let d = self.dir.path().display().to_string();
        self.dnsmasq_extra = format!(
            "layout = \"incremental\"\nhosts_dir = \"{d}/dhcp-hosts.d\"\n\
             names_dir = \"{d}/hosts.d\"\nshards = {SHARDS}\n\
             compaction_interval = \"{compaction_interval}\"\n"
        );
    }

    /// The directory and the SIGHUP counter, without an agent yet.
    async fn prepare() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let hup = SighupCounter::start(dir.path()).await;
        Harness {
            dir,
            status: watch::channel(Status::default()).1,
            stop: None,
            task: None,
            hup,
            check_command: "[]".to_owned(),
            name: "test".to_owned(),
            dnsmasq_extra: String::new(),
        }
    }

    fn config(&self, url: &str, agent_extra: &str) -> Config {
        let d = self.dir.path().display();
        let (check, name, dnsmasq_extra) = (&self.check_command, &self.name, &self.dnsmasq_extra);
        let file = self.dir.path().join("ipmanager.toml");
        std::fs::write(
            &file,
            format!(
                r#"database_url = "{url}"
[agent]
name = "{name}"
liveness_interval = "1s"
max_backoff = "500ms"
{agent_extra}
[dnsmasq]
include_file = "{d}/01-rust-managed.conf"
hosts_file = "{d}/dhcp-hosts"
addn_hosts_file = "{d}/hosts"
pid_file = "{d}/dnsmasq.pid"
restart_command = ["sh", "-c", "echo restart >> {d}/restarts"]
check_command = {check}
{dnsmasq_extra}
"#
            ),
        )
        .unwrap();
        Config::load(Some(&file), std::iter::empty()).expect("test config is valid")
    }

    fn spawn_agent(&mut self, url: &str, agent_extra: &str) {
        let agent = Agent::new(self.config(url, agent_extra));
        self.status = agent.status();
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent runs until stopped");
        }));
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task ends cleanly");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn restarts(&self) -> usize {
        self.read("restarts").lines().count()
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds for the status, or fails the test with `what`.
    async fn wait_status(&mut self, what: &str, condition: impl Fn(&Status) -> bool) {
        let reached = tokio::time::timeout(DEADLINE, self.status.wait_for(|s| condition(s)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "timed out waiting for {what}; status: {:?}",
            self.status.borrow()
        );
    }

    async fn wait_file(&self, name: &str, what: &str, condition: impl Fn(&str) -> bool) {
        let path = self.path(name);
        let held = wait_until(DEADLINE, || {
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            let held = condition(&content);
            async move { held }
        })
        .await;
        assert!(
            held,
            "timed out waiting for {what} in {name}; it holds:\n{}\nstatus: {:?}",
            self.read(name),
            self.status()
        );
    }

    /// Waits until dnsmasq has received more than `seen` SIGHUPs.
    async fn wait_sighups(&self, seen: usize) {
        let arrived = wait_until(DEADLINE, || {
            let count = self.hup.count();
            async move { count > seen }
        })
        .await;
        assert!(
            arrived,
            "dnsmasq got no SIGHUP; status: {:?}",
            self.status()
        );
    }

    async fn wait_in_sync(&mut self) {
        self.wait_status("the agent to be in sync", |s| s.phase == Phase::InSync)
            .await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn add_subnet(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
             VALUES ('lan', '10.64.0.0/16', '10.64.200.1', '10.64.200.250', '10.64.0.1', 'example.lan')",
        )
        .await
        .unwrap();
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Reserves `ip` for `mac` as `hostname` (in the subnet of [`add_subnet`]).
async fn add_host(db: &TestDb, mac: &str, ip: &str, hostname: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ($1::text::macaddr, $2::text::inet, $3)",
            &[&mac, &ip, &hostname],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_changes_reach_the_files_and_each_sends_one_sighup() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    assert!(h.read("01-rust-managed.conf").contains("dhcp-hostsfile="));
    let initial_restarts = h.restarts();
    let client = db.client().await;

    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.64.1.10', 'web1')",
        )
        .await
        .unwrap();
    h.wait_file("dhcp-hosts", "the inserted host", |c| {
        c.contains("02:00:00:00:00:01,10.64.1.10,web1")
    })
    .await;
    h.wait_file("hosts", "the inserted name", |c| {
        c.contains("10.64.1.10 web1.example.lan web1")
    })
    .await;
    h.wait_sighups(0).await;

    let hups = h.hup.count();
    client
        .batch_execute("UPDATE ipmanager.hosts SET ip = '10.64.1.11' WHERE hostname = 'web1'")
        .await
        .unwrap();
    h.wait_file("dhcp-hosts", "the updated IP", |c| {
        c.contains("02:00:00:00:00:01,10.64.1.11,web1") && !c.contains("10.64.1.10,")
    })
    .await;
    h.wait_sighups(hups).await;

    let hups = h.hup.count();
    client
        .batch_execute("DELETE FROM ipmanager.hosts WHERE hostname = 'web1'")
        .await
        .unwrap();
    h.wait_file("dhcp-hosts", "the host to be gone", |c| !c.contains("web1"))
        .await;
    h.wait_file("hosts", "the name to be gone", |c| !c.contains("web1"))
        .await;
    h.wait_sighups(hups).await;
    h.wait_in_sync().await;
    // Host changes are served by SIGHUP alone; the include file did not change.
    assert_eq!(h.restarts(), initial_restarts);
    h.wait_status("three activations", |s| s.activations >= 4)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_change_to_nothing_served_writes_nothing_and_signals_nobody() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.64.1.20', 'db1')",
        )
        .await
        .unwrap();
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    h.wait_file("dhcp-hosts", "the host", |c| c.contains("db1"))
        .await;
    let before = h.status();
    let hups = h.hup.count();
    let written_at = mtime(&h.path("dhcp-hosts"));

    client
        .batch_execute("UPDATE ipmanager.hosts SET comment = 'rack 4' WHERE hostname = 'db1'")
        .await
        .unwrap();
    // The notification leads to a fresh snapshot, which finds nothing to do.
    h.wait_status("a regeneration after the comment change", |s| {
        s.regenerations > before.regenerations && s.phase == Phase::InSync
    })
    .await;
    let after = h.status();
    assert_eq!(after.writes, before.writes, "a comment change wrote files");
    assert_eq!(after.activations, before.activations);
    assert_eq!(h.hup.count(), hups, "a comment change sent SIGHUP");
    assert_eq!(mtime(&h.path("dhcp-hosts")), written_at);
    h.stop().await;
}

#[tokio::test]
async fn a_burst_of_single_row_commits_coalesces_and_ends_correct() {
    const COMMITS: usize = 1000;
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let before = h.status();

    let client = db.client().await;
    let started = std::time::Instant::now();
    let insert = client
        .prepare("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ($1::text::macaddr, $2::text::inet, $3)")
        .await
        .unwrap();
    for i in 0..COMMITS {
        let mac = format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
        let ip = format!("10.64.{}.{}", 10 + i / 250, 1 + i % 250);
        client
            .execute(&insert, &[&mac, &ip, &format!("burst{i}")])
            .await
            .unwrap();
    }
    let sent_in = started.elapsed();
    h.wait_file("dhcp-hosts", "all burst hosts", |c| {
        c.lines().count() == COMMITS
    })
    .await;
    h.wait_in_sync().await;
    let content = h.read("dhcp-hosts");
    for i in [0, 499, COMMITS - 1] {
        assert!(
            content.contains(&format!(",burst{i}\n")),
            "burst{i} missing"
        );
    }
    let after = h.status();
    let regenerations = after.regenerations - before.regenerations;
    eprintln!(
        "burst of {COMMITS} commits in {sent_in:?}: {regenerations} regenerations, {} notifications",
        after.notifications - before.notifications
    );
    // Sync starts are at least one burst interval (100 ms by default) apart, plus the one that
    // may run after the last commit.
    let allowed = (sent_in.as_millis() / 100) as u64 + 2;
    assert!(
        regenerations <= allowed,
        "{COMMITS} commits in {sent_in:?} caused {regenerations} regenerations (allowed {allowed})"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_large_insert_is_one_notification_and_one_regeneration() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let before = h.status();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('0200' || lpad(to_hex(i), 8, '0'))::macaddr,
                    '10.64.0.0'::inet + 256 + i, 'bulk' || i
             FROM generate_series(1, 20000) AS i",
        )
        .await
        .unwrap();
    h.wait_file("dhcp-hosts", "20,000 hosts", |c| c.lines().count() == 20000)
        .await;
    h.wait_status("the large insert to be recorded", |s| {
        s.hosts_served == 20000 && s.phase == Phase::InSync
    })
    .await;
    let after = h.status();
    assert_eq!(after.notifications - before.notifications, 1);
    assert_eq!(after.regenerations - before.regenerations, 1);
    assert_eq!(after.hosts_served, 20000);
    h.stop().await;
}

#[tokio::test]
async fn terminated_connections_reconnect_and_the_files_converge() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let client = db.client().await;
    for i in 0..30 {
        client
            .batch_execute(&format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:01:{i:02x}', '10.64.2.{}', 'kill{i}')",
                i + 1
            ))
            .await
            .unwrap();
        if i % 5 == 0 {
            let killed: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name LIKE 'ipmanager-agent%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if i == 0 {
                assert!(killed >= 1, "no agent connection found to terminate");
            }
        }
    }
    h.wait_file("dhcp-hosts", "all 30 hosts after reconnects", |c| {
        c.lines().count() == 30 && c.contains(",kill29\n")
    })
    .await;
    h.wait_in_sync().await;
    h.stop().await;
}

#[tokio::test]
async fn database_down_at_start_leaves_files_untouched_until_it_comes_up() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host(&db, "02:00:00:00:00:03", "10.64.1.30", "late").await;
    // A port with nothing behind it yet.
    let mut proxy = common::Proxy::reserve(&db.url);
    let down_url = proxy.url_for(&db.name);

    let mut h = Harness::prepare().await;
    let old = "02:00:00:00:00:99,10.64.9.9,previous\n";
    std::fs::write(h.path("dhcp-hosts"), old).unwrap();
    h.spawn_agent(&down_url, "");
    h.wait_status("the agent to notice the database is down", |s| {
        s.phase == Phase::DatabaseUnreachable
    })
    .await;
    assert_eq!(
        h.read("dhcp-hosts"),
        old,
        "files changed while the database was down"
    );
    assert!(!h.path("01-rust-managed.conf").exists());

    proxy.start().await;
    h.wait_file("dhcp-hosts", "the database's host once it is up", |c| {
        c.contains("late") && !c.contains("previous")
    })
    .await;
    h.wait_in_sync().await;
    h.stop().await;
}

#[tokio::test]
async fn a_silently_dead_server_is_noticed_and_the_agent_moves_on() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    // The agent's first host is a server that stops answering without closing the connection;
    // the second is the real one, as after a failover.
    let mut proxy = common::Proxy::reserve(&db.url);
    proxy.start().await;
    let real = db.url.trim_start_matches("postgresql://postgres@");
    let (real_host, _) = real.split_once('/').unwrap();
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},{real_host}/{}?target_session_attrs=read-write",
        proxy.port, db.name
    );
    let mut h = Harness::prepare().await;
    h.spawn_agent(&url, "");
    h.wait_in_sync().await;
    proxy.freeze();
    let frozen_at = std::time::Instant::now();
    h.wait_status("the agent to notice the dead server", |s| {
        s.phase == Phase::DatabaseUnreachable
    })
    .await;
    // liveness_interval is 1 s in these tests: a probe plus its timeout.
    assert!(
        frozen_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        frozen_at.elapsed()
    );
    proxy.stop();
    add_host(&db, "02:00:00:00:00:06", "10.64.1.60", "failover").await;
    h.wait_file("dhcp-hosts", "the change made after the failover", |c| {
        c.contains("failover")
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_periodic_resync_repairs_a_file_changed_behind_the_agents_back() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host(&db, "02:00:00:00:00:07", "10.64.1.70", "truth").await;
    let mut h = Harness::start_with(&db, "resync_interval = \"1s\"").await;
    h.wait_in_sync().await;
    let expected = h.read("dhcp-hosts");
    assert!(expected.contains("truth"));
    std::fs::write(
        h.path("dhcp-hosts"),
        "02:00:00:00:00:66,10.64.6.6,tampered\n",
    )
    .unwrap();
    h.wait_file("dhcp-hosts", "the resync to restore the file", |c| {
        c == expected
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn an_owed_activation_survives_an_agent_restart() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host(&db, "02:00:00:00:00:04", "10.64.1.40", "owed").await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    h.stop().await;
    // dnsmasq "is not running": no pid file, so the SIGHUP for the next change cannot be sent.
    let pid = std::fs::read_to_string(&h.hup.pid_file).unwrap();
    std::fs::remove_file(&h.hup.pid_file).unwrap();
    db.client()
        .await
        .batch_execute("UPDATE ipmanager.hosts SET ip = '10.64.1.41' WHERE hostname = 'owed'")
        .await
        .unwrap();
    h.spawn_agent(&db.url, "");
    h.wait_status("activation to fail", |s| {
        s.phase == Phase::ActivationFailing
    })
    .await;
    assert!(h.read("dhcp-hosts").contains("10.64.1.41,owed"));
    // Kill the agent while the activation is owed: the files on disk already match the
    // database, so only the marker remembers that dnsmasq has not seen them.
    h.task.take().unwrap().abort();
    let hups = h.hup.count();

    std::fs::write(&h.hup.pid_file, pid).unwrap();
    h.spawn_agent(&db.url, "");
    h.wait_sighups(hups).await;
    h.wait_in_sync().await;
    h.stop().await;
}

#[tokio::test]
async fn a_failing_activation_is_retried_until_it_succeeds() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let pid_file = h.hup.pid_file.clone();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    add_host(&db, "02:00:00:00:00:05", "10.64.1.50", "retry").await;
    h.wait_status("activation to fail", |s| {
        s.phase == Phase::ActivationFailing
    })
    .await;
    assert!(h.status().last_error.unwrap().contains("pid file"));
    let hups = h.hup.count();
    std::fs::write(&pid_file, pid).unwrap();
    h.wait_sighups(hups).await;
    h.wait_in_sync().await;
    h.stop().await;
}

#[tokio::test]
async fn a_pid_file_naming_another_process_is_an_activation_failure_and_it_is_not_signalled() {
    use std::os::unix::process::ExitStatusExt;
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    // A stale pid file whose pid now belongs to something else; SIGHUP would end `sleep`.
    let mut sleep = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = sleep.id();
    let exec_done = wait_until(DEADLINE, || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        async move { comm.trim() == "sleep" }
    })
    .await;
    assert!(exec_done, "sleep did not start");
    let pid_file = h.hup.pid_file.clone();
    let counter_pid = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::write(&pid_file, pid.to_string()).unwrap();

    add_host(&db, "02:00:00:00:00:07", "10.64.1.70", "stale").await;
    h.wait_status("activation to fail", |s| {
        s.phase == Phase::ActivationFailing
    })
    .await;
    let error = h.status().last_error.unwrap();
    for part in [
        format!("{} names pid {pid}", pid_file.display()),
        "\"sleep\"".to_owned(),
        "not dnsmasq".to_owned(),
    ] {
        assert!(error.contains(&part), "{error:?} lacks {part:?}");
    }
    // Alive, and never hung up: a SIGHUP sent earlier would be its exit status, not SIGKILL.
    assert!(sleep.try_wait().unwrap().is_none(), "sleep ended");
    sleep.kill().unwrap();
    assert_eq!(sleep.wait().unwrap().signal(), Some(libc::SIGKILL));

    let hups = h.hup.count();
    std::fs::write(&pid_file, counter_pid).unwrap();
    h.wait_sighups(hups).await;
    h.wait_in_sync().await;
    h.stop().await;
}

#[tokio::test]
async fn rows_that_bypassed_the_database_checks_are_skipped_and_the_rest_served() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let client = db.client().await;
    // As a superuser can: with triggers off, nothing checks the rows.
    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:08', '10.64.1.80', 'good');
             SET session_replication_role = replica;
             INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname)
             SELECT id, '02:00:00:00:00:09', '10.64.1.81', E'evil\\ndhcp-script=/tmp/x' FROM ipmanager.subnets;
             INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname)
             SELECT id, '02:00:00:00:00:0a', '10.64.1.82', 'a,set:x' FROM ipmanager.subnets;
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    let mut h = Harness::start(&db).await;
    h.wait_status("the first sync", |s| {
        s.phase == Phase::InSync && s.regenerations >= 1
    })
    .await;
    let status = h.status();
    assert_eq!(status.hosts_served, 1);
    assert_eq!(status.rows_skipped, 2);
    let hosts = h.read("dhcp-hosts");
    assert_eq!(hosts, "02:00:00:00:00:08,10.64.1.80,good\n");
    for name in ["dhcp-hosts", "hosts", "01-rust-managed.conf"] {
        let content = h.read(name);
        assert!(
            !content.contains("dhcp-script") && !content.contains("set:x"),
            "{name}: {content}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn an_include_file_that_fails_the_check_is_not_put_in_place() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::prepare().await;
    // Stands in for `dnsmasq --test`: rejects any include file that mentions 10.77.
    h.check_command = r#"["sh", "-c", "if grep -q 10.77 {file}; then echo 'dnsmasq: bad dhcp-range at line 7' >&2; exit 1; fi"]"#.to_owned();
    h.spawn_agent(&db.url, "");
    h.wait_in_sync().await;
    let include = h.read("01-rust-managed.conf");
    let restarts = h.restarts();
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('rejected', '10.77.0.0/24')",
        )
        .await
        .unwrap();
    h.wait_status("the check to reject the include file", |s| {
        s.phase == Phase::FilesRejected
    })
    .await;
    let error = h.status().last_error.unwrap();
    assert!(
        error.contains("check command") && error.contains("bad dhcp-range at line 7"),
        "{error}"
    );
    assert_eq!(
        h.read("01-rust-managed.conf"),
        include,
        "a rejected file was put in place"
    );
    assert_eq!(
        h.restarts(),
        restarts,
        "dnsmasq was restarted for a rejected file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staged files left behind: {leftovers:?}"
    );

    // The next change that passes the check is applied as usual.
    client
        .batch_execute("UPDATE ipmanager.subnets SET cidr = '10.78.0.0/24' WHERE name = 'rejected'")
        .await
        .unwrap();
    h.wait_file("01-rust-managed.conf", "the accepted include file", |c| {
        c.contains("10.78.0.0")
    })
    .await;
    h.wait_in_sync().await;
    assert_eq!(h.restarts(), restarts + 1);
    h.stop().await;
}

/// This agent's row in `ipmanager.sync_status`, when there is one.
async fn sync_status(client: &tokio_postgres::Client, name: &str) -> Option<tokio_postgres::Row> {
    client
        .query_opt(
            "SELECT db_user::text AS db_user, host, version, phase, alive, seen_at, applied_at,
                    up_to_date, files_hash, hosts, rows_skipped, last_error, last_error_at
             FROM ipmanager.sync_status WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
}

/// Waits until the agent's row in `ipmanager.sync_status` satisfies `condition`; returns it.
async fn wait_sync_status(
    client: &tokio_postgres::Client,
    name: &str,
    what: &str,
    condition: impl Fn(&tokio_postgres::Row) -> bool,
) -> tokio_postgres::Row {
    let condition = &condition;
    let held = wait_until(DEADLINE, || async move {
        sync_status(client, name)
            .await
            .is_some_and(|r| condition(&r))
    })
    .await;
    let row = sync_status(client, name).await;
    assert!(held, "timed out waiting for {what}; sync_status: {row:?}");
    row.unwrap()
}

/// Commits `sql` in a transaction of its own and returns that transaction's xid8, as text.
async fn commit_with_xid(client: &mut tokio_postgres::Client, sql: &str) -> String {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(sql).await.unwrap();
    let xid: String = tx
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    xid
}

/// `ipmanager.change_applied` for one agent: whether its applied snapshot includes `xid`.
async fn change_applied(client: &tokio_postgres::Client, xid: &str, name: &str) -> bool {
    client
        .query_opt(
            "SELECT applied FROM ipmanager.change_applied($1::text::xid8) WHERE name = $2",
            &[&xid, &name],
        )
        .await
        .unwrap()
        .is_some_and(|row| row.get::<_, bool>(0))
}

#[tokio::test]
async fn a_change_counts_as_applied_only_once_the_files_hold_it_and_dnsmasq_was_told() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let mut client = db.client().await;
    wait_sync_status(&client, "test", "the first report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let hups = h.hup.count();

    let xid = commit_with_xid(
        &mut client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:21', '10.64.1.21', 'live')",
    )
    .await;
    let applied = wait_until(DEADLINE, || {
        let (client, xid, h) = (&client, &xid, &h);
        async move {
            if !change_applied(client, xid, "test").await {
                return false;
            }
            // The moment the database says "applied", the files hold the change.
            assert!(
                h.read("dhcp-hosts")
                    .contains("02:00:00:00:00:21,10.64.1.21,live"),
                "change_applied is true before the file holds the change"
            );
            true
        }
    })
    .await;
    assert!(
        applied,
        "the change was never reported applied; {:?}",
        h.status()
    );
    // The SIGHUP was sent before the report; the counter may take a moment to record it.
    h.wait_sighups(hups).await;
    let row = wait_sync_status(&client, "test", "up to date", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    assert_eq!(row.get::<_, String>("phase"), "in_sync");
    assert!(row.get::<_, bool>("alive"));
    assert_eq!(row.get::<_, Option<i32>>("hosts"), Some(1));
    assert_eq!(row.get::<_, Option<i32>>("rows_skipped"), Some(0));
    assert_eq!(row.get::<_, String>("db_user"), "postgres");
    assert_eq!(
        row.get::<_, Option<String>>("version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(row.get::<_, Option<String>>("host").is_some());
    assert_eq!(h.status().status_error, None);
    h.stop().await;
}

#[tokio::test]
async fn while_the_activation_fails_the_change_is_not_applied_and_the_error_is_reported() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let mut client = db.client().await;
    wait_sync_status(&client, "test", "the first report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let pid_file = h.hup.pid_file.clone();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();

    let xid = commit_with_xid(
        &mut client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:22', '10.64.1.22', 'owed')",
    )
    .await;
    h.wait_status("activation to fail", |s| {
        s.phase == Phase::ActivationFailing
    })
    .await;
    let failing = wait_sync_status(&client, "test", "the failure to be reported", |r| {
        r.get::<_, String>("phase") == "activation_failing"
            && r.get::<_, Option<String>>("last_error")
                .is_some_and(|e| e.contains("pid file"))
    })
    .await;
    // The files already hold the change, but dnsmasq has not been told: not applied.
    assert!(h.read("dhcp-hosts").contains("10.64.1.22,owed"));
    assert!(!change_applied(&client, &xid, "test").await);
    assert!(!failing.get::<_, bool>("up_to_date"));
    // Still not applied after the next retries have failed and been reported too.
    let first_error_at: std::time::SystemTime = failing.get("last_error_at");
    wait_sync_status(&client, "test", "a retried activation to fail", |r| {
        r.get::<_, Option<std::time::SystemTime>>("last_error_at")
            .is_some_and(|at| at > first_error_at)
    })
    .await;
    assert!(!change_applied(&client, &xid, "test").await);

    let hups = h.hup.count();
    std::fs::write(&pid_file, pid).unwrap();
    h.wait_sighups(hups).await;
    let applied = wait_until(DEADLINE, || {
        let (client, xid) = (&client, &xid);
        async move { change_applied(client, xid, "test").await }
    })
    .await;
    assert!(
        applied,
        "the change was not applied after recovery; {:?}",
        h.status()
    );
    let row = wait_sync_status(&client, "test", "in sync again", |r| {
        r.get::<_, String>("phase") == "in_sync"
    })
    .await;
    assert!(row.get::<_, bool>("up_to_date"));
    // The error stays as history.
    assert!(row
        .get::<_, Option<String>>("last_error")
        .is_some_and(|e| e.contains("pid file")));
    h.stop().await;
}

#[tokio::test]
async fn the_reported_files_hash_is_the_hash_of_the_files_on_disk() {
    use sha2::{Digest, Sha256};
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host(&db, "02:00:00:00:00:23", "10.64.1.23", "hashed").await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let client = db.client().await;
    let row = wait_sync_status(&client, "test", "an applied snapshot", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let mut hasher = Sha256::new();
    // The order the agent writes them in, under their configured paths.
    for name in ["dhcp-hosts", "hosts", "01-rust-managed.conf"] {
        hasher.update(h.path(name).display().to_string().as_bytes());
        hasher.update(b"\0");
        hasher.update(std::fs::read(h.path(name)).unwrap());
        hasher.update(b"\0");
    }
    let expected: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(h.read("dhcp-hosts").contains("hashed"));
    assert_eq!(row.get::<_, Option<String>>("files_hash"), Some(expected));
    h.stop().await;
}

#[tokio::test]
async fn the_heartbeat_advances_seen_at_while_the_agent_is_idle() {
    use std::time::SystemTime;
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let client = db.client().await;
    let first = wait_sync_status(&client, "test", "the first report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let seen_at: SystemTime = first.get("seen_at");
    let applied_at: Option<SystemTime> = first.get("applied_at");
    let before = h.status();
    // liveness_interval is 1 s in these tests.
    let later = wait_sync_status(&client, "test", "seen_at to advance", |r| {
        r.get::<_, SystemTime>("seen_at") > seen_at
    })
    .await;
    assert!(later.get::<_, bool>("alive"));
    // A heartbeat says "alive", not "applied again".
    assert_eq!(later.get::<_, Option<SystemTime>>("applied_at"), applied_at);
    let after = h.status();
    assert_eq!(
        after.regenerations, before.regenerations,
        "a heartbeat synced"
    );
    assert!(after.status_reports > before.status_reports);
    h.stop().await;
}

#[tokio::test]
async fn each_login_reports_its_own_agent_and_a_name_taken_by_another_login_is_refused() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    // Login roles are cluster-wide: unique per test database, dropped at the end.
    let first_login = format!("{}_agent1", db.name);
    let second_login = format!("{}_agent2", db.name);
    let server = common::connect(&common::server_url()).await;
    server
        .batch_execute(&format!(
            "CREATE ROLE {first_login} LOGIN IN ROLE ipmanager_agent;
             CREATE ROLE {second_login} LOGIN IN ROLE ipmanager_agent;"
        ))
        .await
        .unwrap();
    let url_as = |login: &str| db.url.replacen("postgres@", &format!("{login}@"), 1);
    let mut client = db.client().await;

    let mut first = Harness::prepare().await;
    first.spawn_agent(&url_as(&first_login), "");
    first.wait_in_sync().await;
    let row = wait_sync_status(&client, "test", "the first agent's report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    assert_eq!(row.get::<_, String>("db_user"), first_login);
    assert_eq!(first.status().status_error, None);

    // Same agent.name, another login: its reports are refused, its files are still kept.
    let mut second = Harness::prepare().await;
    second.spawn_agent(&url_as(&second_login), "");
    second
        .wait_status("the name to be refused", |s| {
            s.status_error
                .as_deref()
                .is_some_and(|e| e.contains("already used"))
        })
        .await;
    let error = second.status().status_error.unwrap();
    assert!(error.contains(&first_login), "{error}");
    second.wait_in_sync().await;

    let xid = commit_with_xid(
        &mut client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:24', '10.64.1.24', 'both')",
    )
    .await;
    for h in [&first, &second] {
        h.wait_file("dhcp-hosts", "the new host", |c| c.contains(",both"))
            .await;
    }
    let applied = wait_until(DEADLINE, || {
        let (client, xid) = (&client, &xid);
        async move { change_applied(client, xid, "test").await }
    })
    .await;
    assert!(applied, "the first agent never reported the change");
    let row = sync_status(&client, "test").await.unwrap();
    assert_eq!(row.get::<_, String>("db_user"), first_login);
    assert!(second
        .status()
        .status_error
        .is_some_and(|e| e.contains("already used")));
    assert_eq!(first.status().status_error, None);

    first.stop().await;
    second.stop().await;
    drop(client);
    drop(db);
    let _ = server
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {first_login}; DROP ROLE IF EXISTS {second_login};"
        ))
        .await;
}

#[tokio::test]
async fn a_failing_status_write_leaves_the_sync_alone_and_the_next_report_follows_its_repair() {
    const REPORT: &str = "ipmanager.agent_report(text, text, interval, pg_snapshot, text, integer, integer, text, text, text, timestamptz)";
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let client = db.client().await;
    // As if the schema had no agent_report (V2 not applied yet).
    client
        .batch_execute(&format!(
            "ALTER FUNCTION {REPORT} RENAME TO agent_report_away"
        ))
        .await
        .unwrap();
    let mut h = Harness::start(&db).await;
    h.wait_status("the status write to fail", |s| {
        s.status_error
            .as_deref()
            .is_some_and(|e| e.contains("agent_report"))
    })
    .await;
    h.wait_in_sync().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:25', '10.64.1.25', 'unreported')",
        )
        .await
        .unwrap();
    h.wait_file(
        "dhcp-hosts",
        "the host despite failing status writes",
        |c| c.contains(",unreported"),
    )
    .await;
    assert!(sync_status(&client, "test").await.is_none());

    client
        .batch_execute(&format!(
            "ALTER FUNCTION {} RENAME TO agent_report",
            REPORT.replace("agent_report", "agent_report_away")
        ))
        .await
        .unwrap();
    // The applied snapshot that could not be written is not lost: the first report that gets
    // through carries it.
    let row = wait_sync_status(&client, "test", "the report after the repair", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    assert_eq!(row.get::<_, Option<i32>>("hosts"), Some(1));
    h.wait_status("the status error to clear", |s| s.status_error.is_none())
        .await;
    h.stop().await;
}

#[tokio::test]
async fn the_applied_line_names_the_hosts_and_each_line_of_a_sync_carries_its_id() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host(&db, "02:00:00:00:01:00", "10.64.3.100", "leaving").await;
    let h = Harness::prepare().await;
    h.config(&db.url, "");
    let mut command = std::process::Command::new(BIN);
    command
        .args(["agent", "--config"])
        .arg(h.path("ipmanager.toml"))
        .env("RUST_LOG", "ipmanager=debug")
        .env("NO_COLOR", "1");
    let agent = AgentProcess::spawn(command);
    agent.wait_log("in sync").await;

    // One commit: seven hosts added, one removed, one changed.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
               SELECT ('02:00:00:00:00:0' || i)::macaddr, ('10.64.3.' || i)::inet, 'new' || i
               FROM generate_series(1, 7) i;
             DELETE FROM ipmanager.hosts WHERE hostname = 'leaving';",
        )
        .await
        .unwrap();
    agent.wait_log("hosts_added=7").await;
    let log = agent.log();
    let applied = log
        .lines()
        .find(|line| line.contains("hosts_added=7"))
        .unwrap();
    for part in [
        "hosts_removed=1",
        "added=\"new1 (02:00:00:00:00:01), new2 (02:00:00:00:00:02), new3 (02:00:00:00:00:03), \
         new4 (02:00:00:00:00:04), new5 (02:00:00:00:00:05) and 2 more\"",
        "removed=\"leaving (02:00:00:00:01:00)\"",
        "changed=\"\"",
    ] {
        assert!(applied.contains(part), "{applied:?} lacks {part:?}");
    }
    // The sync's span names it on every line it logs: its regeneration and what it applied.
    let start = applied
        .find("sync{id=")
        .expect("the applied line names its sync");
    let end = start + applied[start..].find('}').unwrap() + 1;
    let sync = &applied[start..end];
    let regenerated = log
        .lines()
        .filter(|line| line.contains(sync) && line.contains("regenerated"))
        .count();
    assert_eq!(regenerated, 1, "one regeneration logged in {sync}:\n{log}");
    assert_eq!(agent.terminate().await, Some(0));
}

// Sites: each agent serves its own site's subnets.

/// Two sites with a subnet and a host each, and a subnet without site with a host.
async fn add_two_sites(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.sites (name) VALUES ('berlin'), ('paris');
             INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, domain, site) VALUES
                 ('ber', '10.64.0.0/16', '10.64.200.1', '10.64.200.250', 'berlin.lan', 'berlin'),
                 ('par', '10.65.0.0/16', '10.65.200.1', '10.65.200.250', 'paris.lan', 'paris'),
                 ('hq', '10.66.0.0/16', NULL, NULL, 'hq.lan', NULL);
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
                 ('02:00:00:00:0b:01', '10.64.1.1', 'ber1'),
                 ('02:00:00:00:0a:01', '10.65.1.1', 'par1'),
                 ('02:00:00:00:0c:01', '10.66.1.1', 'hq1');",
        )
        .await
        .unwrap();
}

/// What an agent has done so far: files written, SIGHUPs received, restarts.
fn work_done(h: &Harness) -> (u64, usize, usize) {
    (h.status().writes, h.hup.count(), h.restarts())
}

#[tokio::test]
async fn each_agent_serves_its_sites_and_a_change_in_one_site_leaves_the_other_alone() {
    let db = TestDb::new().await;
    add_two_sites(&db).await;
    let mut berlin = Harness::start_site(&db, "berlin", r#"["berlin"]"#, "").await;
    let mut paris = Harness::start_site(&db, "paris", r#"["paris"]"#, "").await;
    berlin.wait_in_sync().await;
    paris.wait_in_sync().await;

    // Each serves its own site only: reservations, names and dhcp-range lines.
    assert_eq!(
        berlin.read("dhcp-hosts"),
        "02:00:00:00:0b:01,10.64.1.1,ber1\n"
    );
    assert_eq!(berlin.read("hosts"), "10.64.1.1 ber1.berlin.lan ber1\n");
    assert!(berlin.read("01-rust-managed.conf").contains("10.64.200.1"));
    assert!(!berlin.read("01-rust-managed.conf").contains("10.65."));
    assert!(!berlin.read("01-rust-managed.conf").contains("10.66."));
    assert_eq!(
        paris.read("dhcp-hosts"),
        "02:00:00:00:0a:01,10.65.1.1,par1\n"
    );
    assert_eq!(paris.read("hosts"), "10.65.1.1 par1.paris.lan par1\n");
    assert!(!paris.read("01-rust-managed.conf").contains("10.64."));

    // A change in berlin: berlin's dnsmasq gets a SIGHUP; paris is not even woken (the
    // notification names berlin), so it reads nothing, writes nothing and signals nobody.
    let (paris_status, paris_work) = (paris.status(), work_done(&paris));
    let berlin_hups = berlin.hup.count();
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:0b:02', '10.64.1.2', 'ber2')",
        )
        .await
        .unwrap();
    berlin
        .wait_file("dhcp-hosts", "the new berlin host", |c| {
            c.contains(",ber2\n")
        })
        .await;
    berlin.wait_sighups(berlin_hups).await;
    // Then a change in paris. Notifications arrive in commit order, so once paris has applied
    // this one it has seen, and skipped, the one from berlin.
    client
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:0a:02', '10.65.1.2', 'par2')",
        )
        .await
        .unwrap();
    paris
        .wait_file("dhcp-hosts", "the new paris host", |c| {
            c.contains(",par2\n")
        })
        .await;
    paris.wait_sighups(paris_work.1).await;
    paris.wait_in_sync().await;
    let after = paris.status();
    assert_eq!(
        (after.notifications, after.regenerations),
        (
            paris_status.notifications + 1,
            paris_status.regenerations + 1
        ),
        "paris was woken by the change in berlin"
    );
    assert_eq!(
        work_done(&paris),
        (paris_work.0 + 1, paris_work.1 + 1, paris_work.2),
        "paris wrote, reloaded or restarted for the change in berlin"
    );
    assert!(!paris.read("dhcp-hosts").contains("ber2"));

    // A subnet moves from paris to berlin: berlin serves it, paris drops it.
    client
        .batch_execute("UPDATE ipmanager.subnets SET site = 'berlin' WHERE name = 'par'")
        .await
        .unwrap();
    berlin
        .wait_file("dhcp-hosts", "the moved subnet's host", |c| {
            c.contains(",par1\n")
        })
        .await;
    berlin
        .wait_file("01-rust-managed.conf", "the moved subnet's range", |c| {
            c.contains("10.65.200.1")
        })
        .await;
    paris
        .wait_file("dhcp-hosts", "the moved hosts to be gone", |c| c.is_empty())
        .await;
    paris
        .wait_file("01-rust-managed.conf", "the moved range to be gone", |c| {
            !c.contains("10.65.")
        })
        .await;
    paris
        .wait_file("hosts", "the moved name to be gone", |c| c.is_empty())
        .await;
    berlin.wait_in_sync().await;
    paris.wait_in_sync().await;
    berlin.stop().await;
    paris.stop().await;
}

#[tokio::test]
async fn with_dns_scope_all_every_name_resolves_but_only_own_sites_get_reservations() {
    let db = TestDb::new().await;
    add_two_sites(&db).await;
    let mut berlin =
        Harness::start_site(&db, "berlin", r#"["berlin"]"#, r#"dns_scope = "all""#).await;
    berlin.wait_in_sync().await;
    assert_eq!(
        berlin.read("dhcp-hosts"),
        "02:00:00:00:0b:01,10.64.1.1,ber1\n"
    );
    assert_eq!(
        berlin.read("hosts"),
        "10.64.1.1 ber1.berlin.lan ber1\n\
         10.65.1.1 par1.paris.lan par1\n\
         10.66.1.1 hq1.hq.lan hq1\n"
    );
    let include = berlin.read("01-rust-managed.conf");
    assert!(
        include.contains("10.64.200.1")
            && !include.contains("10.65.")
            && !include.contains("10.66.")
    );

    // A name change in paris reaches berlin's addn-hosts with a SIGHUP, and nothing else.
    let (writes, hups, restarts) = work_done(&berlin);
    let dhcp_hosts_before = berlin.read("dhcp-hosts");
    db.client()
        .await
        .batch_execute("UPDATE ipmanager.hosts SET hostname = 'par9' WHERE hostname = 'par1'")
        .await
        .unwrap();
    berlin
        .wait_file("hosts", "the renamed paris host", |c| c.contains(" par9\n"))
        .await;
    berlin.wait_sighups(hups).await;
    berlin.wait_in_sync().await;
    assert!(berlin.status().writes > writes);
    assert_eq!(
        berlin.restarts(),
        restarts,
        "a name change restarted dnsmasq"
    );
    assert_eq!(berlin.read("dhcp-hosts"), dhcp_hosts_before);
    berlin.stop().await;
}

/// Runs the binary off the test's runtime thread, so that the in-process agents keep running.
async fn cli(args: &[&str], database_url: &str) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::binary::ipmanager(&args, &[("IPMANAGER_DATABASE_URL", url.as_str())])
    })
    .await
    .unwrap()
}

/// `ipmanager.change_applied`: (name, concerned, applied) per agent.
async fn concerned_agents(client: &tokio_postgres::Client, xid: &str) -> Vec<(String, bool, bool)> {
    client
        .query(
            "SELECT name, concerned, applied FROM ipmanager.change_applied($1::text::xid8)",
            &[&xid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("concerned"), r.get("applied")))
        .collect()
}

#[tokio::test]
async fn a_change_concerns_only_the_agents_serving_its_site_and_wait_says_when_nobody_does() {
    let db = TestDb::new().await;
    add_two_sites(&db).await;
    let mut berlin = Harness::start_site(&db, "berlin", r#"["berlin"]"#, "").await;
    let mut paris = Harness::start_site(&db, "paris", r#"["paris"]"#, "").await;
    berlin.wait_in_sync().await;
    paris.wait_in_sync().await;
    let mut client = db.client().await;
    for name in ["berlin", "paris"] {
        let row = wait_sync_status(&client, name, "the agent's sites", |r| {
            r.get::<_, bool>("up_to_date")
        })
        .await;
        assert_eq!(row.get::<_, String>("phase"), "in_sync");
    }
    let sites: Vec<(String, Option<Vec<String>>, Option<String>)> = client
        .query(
            "SELECT name, sites, dns_scope FROM ipmanager.sync_status ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("sites"), r.get("dns_scope")))
        .collect();
    assert_eq!(
        sites,
        [
            (
                "berlin".to_owned(),
                Some(vec!["berlin".to_owned()]),
                Some("sites".to_owned())
            ),
            (
                "paris".to_owned(),
                Some(vec!["paris".to_owned()]),
                Some("sites".to_owned())
            ),
        ]
    );

    let xid = commit_with_xid(
        &mut client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:0b:03', '10.64.1.3', 'ber3')",
    )
    .await;
    let answer = concerned_agents(&client, &xid).await;
    assert_eq!(
        answer
            .iter()
            .map(|a| (a.0.as_str(), a.1))
            .collect::<Vec<_>>(),
        [("berlin", true), ("paris", false)]
    );
    let applied = wait_until(DEADLINE, || {
        let (client, xid) = (&client, &xid);
        async move { change_applied(client, xid, "berlin").await }
    })
    .await;
    assert!(applied, "berlin never applied its change");

    // The CLI waits for berlin only, and names it.
    let out = cli(
        &[
            "host",
            "add",
            "--mac",
            "02:00:00:00:0b:04",
            "--ip",
            "10.64.1.4",
            "--hostname",
            "ber4",
            "--wait",
        ],
        &db.url,
    )
    .await;
    common::binary::assert_exit(&out, 0, "host add --wait in berlin");
    assert!(
        common::binary::stderr(&out).contains("live on berlin\n"),
        "{}",
        common::binary::stderr(&out)
    );

    // Nobody serves tokyo: --wait says so at once instead of waiting for an agent.
    client
        .batch_execute(
            "INSERT INTO ipmanager.sites (name) VALUES ('tokyo');
             INSERT INTO ipmanager.subnets (name, cidr, site) VALUES ('tok', '10.67.0.0/16', 'tokyo')",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = cli(
        &[
            "host",
            "add",
            "--mac",
            "02:00:00:00:0d:01",
            "--ip",
            "10.67.1.1",
            "--hostname",
            "tok1",
            "--wait",
            "--timeout",
            "30s",
        ],
        &db.url,
    )
    .await;
    common::binary::assert_exit(&out, 0, "host add --wait in tokyo");
    assert!(
        common::binary::stderr(&out).contains("no live agent serves site tokyo"),
        "{}",
        common::binary::stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "--wait waited for nobody"
    );

    // ipmanager status shows each agent's sites.
    let out = cli(&["status"], &db.url).await;
    common::binary::assert_exit(&out, 0, "status");
    let table = common::binary::stdout(&out);
    assert!(table.lines().next().unwrap().contains("SITES"), "{table}");
    for name in ["berlin", "paris"] {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap();
        assert_eq!(line.split_whitespace().nth(2), Some(name), "{table}");
    }
    berlin.stop().await;
    paris.stop().await;
}

/// Shards of [`Harness::start_incremental`].
const SHARDS: i64 = 16;
/// The debt marker of the incremental layout, in `hosts_dir`.
const DEBT_MARKER: &str = "dhcp-hosts.d/.ipmanager-compaction-owed";

/// The reservation shard file of host `id`, relative to the harness directory.
fn dhcp_shard(id: i64) -> String {
    format!("dhcp-hosts.d/{:04x}", id.rem_euclid(SHARDS))
}

/// [`add_host`], returning the new host's id.
async fn add_host_id(db: &TestDb, mac: &str, ip: &str, hostname: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             VALUES ($1::text::macaddr, $2::text::inet, $3) RETURNING id",
            &[&mac, &ip, &hostname],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every shard file with its modification time.
fn shard_mtimes(h: &Harness) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut files: Vec<_> = ["dhcp-hosts.d", "hosts.d"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(h.path(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            let t = mtime(&p);
            (p, t)
        })
        .collect();
    files.sort();
    files
}

async fn exec(db: &TestDb, sql: &str) {
    db.client().await.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn incremental_adds_and_changes_rewrite_only_their_shard_without_any_signal() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let first = add_host_id(&db, "02:00:00:00:01:01", "10.64.1.1", "first").await;
    let mut h = Harness::start_incremental(&db, "1h").await;
    h.wait_in_sync().await;
    // The first include file: a restart, which reads every shard.
    assert_eq!(h.restarts(), 1);
    let include = h.read("01-rust-managed.conf");
    assert!(include.contains(&format!(
        "dhcp-hostsdir={}",
        h.path("dhcp-hosts.d").display()
    )));
    assert!(include.contains(&format!("hostsdir={}", h.path("hosts.d").display())));
    assert!(h.read(&dhcp_shard(first)).contains("10.64.1.1,first"));
    let before = h.status();
    let mtimes = shard_mtimes(&h);

    let second = add_host_id(&db, "02:00:00:00:01:02", "10.64.1.2", "second").await;
    assert_ne!(second.rem_euclid(SHARDS), first.rem_euclid(SHARDS));
    h.wait_file(&dhcp_shard(second), "the new host", |c| {
        c.contains("10.64.1.2,second")
    })
    .await;
    h.wait_status("the write to be recorded", |s| s.writes > before.writes)
        .await;
    let name_shard = format!("hosts.d/{:04x}", second.rem_euclid(SHARDS));
    assert!(h
        .read(&name_shard)
        .contains("10.64.1.2 second.example.lan second"));
    // Only the new host's two shard files are new; no other file was touched.
    assert_eq!(shard_mtimes(&h).len(), mtimes.len() + 2);
    for (path, time) in &mtimes {
        assert_eq!(mtime(path), *time, "{} was rewritten", path.display());
    }

    // A new address for a host: served at once (the newest entry wins), no signal.
    let writes = h.status().writes;
    exec(
        &db,
        "UPDATE ipmanager.hosts SET ip = '10.64.1.3' WHERE hostname = 'second'",
    )
    .await;
    h.wait_file(&dhcp_shard(second), "the new address", |c| {
        c.contains("10.64.1.3,second")
    })
    .await;
    h.wait_status("the write to be recorded", |s| s.writes > writes)
        .await;
    assert_eq!(mtime(&h.path(&dhcp_shard(first))), mtimes[0].1);
    let after = h.status();
    assert_eq!(
        after.activations, before.activations,
        "an incremental write signalled"
    );
    assert_eq!(h.restarts(), 1);
    assert!(after.awaiting_compaction.is_empty(), "{after:?}");
    // The old address is still reserved in dnsmasq's memory: a compaction is owed.
    assert!(h.path(DEBT_MARKER).exists());
    assert_eq!(after.compactions, before.compactions);
    h.stop().await;
}

#[tokio::test]
async fn a_removed_reservation_awaits_a_compaction_that_runs_after_the_interval_with_one_reload() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let gone = add_host_id(&db, "02:00:00:00:02:01", "10.64.2.1", "gone").await;
    add_host_id(&db, "02:00:00:00:02:02", "10.64.2.2", "stays").await;
    let mut h = Harness::start_incremental(&db, "2s").await;
    h.wait_in_sync().await;
    let hups = h.hup.count();
    let before = h.status();

    let deleted_at = std::time::Instant::now();
    exec(
        &db,
        &format!("DELETE FROM ipmanager.hosts WHERE id = {gone}"),
    )
    .await;
    h.wait_status("the removal to await a compaction", |s| {
        s.awaiting_compaction == [gone]
    })
    .await;
    assert!(!h.read(&dhcp_shard(gone)).contains("gone"));
    assert!(h.path(DEBT_MARKER).exists(), "the debt is recorded");
    assert_eq!(h.status().activations, before.activations);
    let client = db.client().await;
    let reported = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            let pending: Option<Vec<i64>> = client
                .query_one(
                    "SELECT pending_hosts FROM ipmanager.agent_status WHERE name = 'test'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            pending == Some(vec![gone])
        }
    })
    .await;
    assert!(reported, "the pending host was not reported");

    h.wait_status("the compaction", |s| s.compactions > before.compactions)
        .await;
    assert!(
        deleted_at.elapsed() >= Duration::from_secs(2),
        "compacted after {:?}, before the interval",
        deleted_at.elapsed()
    );
    h.wait_sighups(hups).await;
    let after = h.status();
    assert_eq!(after.activations, before.activations + 1, "{after:?}");
    assert_eq!(h.hup.count(), hups + 1, "exactly one reload");
    assert!(after.awaiting_compaction.is_empty());
    assert!(after.last_compaction.is_some());
    assert!(
        !h.path(DEBT_MARKER).exists(),
        "the marker goes with the debt"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_compaction_request_compacts_at_once_and_is_reported() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host_id(&db, "02:00:00:00:03:01", "10.64.3.1", "one").await;
    let mut h = Harness::start_incremental(&db, "1h").await;
    h.wait_in_sync().await;
    let client = db.client().await;
    wait_sync_status(&client, "test", "the first report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let hups = h.hup.count();
    let before = h.status();

    let requested: std::time::SystemTime = client
        .query_one("SELECT ipmanager.request_compaction()", &[])
        .await
        .unwrap()
        .get(0);
    h.wait_status("the requested compaction", |s| {
        s.compactions > before.compactions
    })
    .await;
    h.wait_sighups(hups).await;
    let compacted = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            let at: Option<std::time::SystemTime> = client
                .query_one(
                    "SELECT compacted_at FROM ipmanager.agent_status WHERE name = 'test'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            at.is_some_and(|at| at >= requested)
        }
    })
    .await;
    assert!(compacted, "compacted_at was not reported");
    assert_eq!(h.status().activations, before.activations + 1);
    h.stop().await;
}

#[tokio::test]
async fn an_agent_of_another_layout_answers_a_compaction_request_at_once() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::start(&db).await;
    h.wait_in_sync().await;
    let client = db.client().await;
    wait_sync_status(&client, "test", "the first report", |r| {
        r.get::<_, bool>("up_to_date")
    })
    .await;
    let activations = h.status().activations;
    client
        .batch_execute("SELECT ipmanager.request_compaction()")
        .await
        .unwrap();
    let answered = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT compacted_at IS NOT NULL FROM ipmanager.agent_status WHERE name = 'test'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    })
    .await;
    assert!(answered, "the request was not answered");
    assert_eq!(h.status().activations, activations, "nothing to compact");
    h.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_compacts_at_start_only_when_the_marker_says_a_compaction_is_owed() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let gone = add_host_id(&db, "02:00:00:00:04:01", "10.64.4.1", "gone").await;
    add_host_id(&db, "02:00:00:00:04:02", "10.64.4.2", "stays").await;
    let mut h = Harness::start_incremental(&db, "1h").await;
    h.wait_in_sync().await;
    h.stop().await;

    // Files exact, nothing owed: the new agent takes dnsmasq as a full read of them.
    let (hups, restarts) = (h.hup.count(), h.restarts());
    h.spawn_agent(&db.url, "");
    h.wait_in_sync().await;
    let s = h.status();
    assert_eq!((s.activations, s.writes, s.compactions), (0, 0, 0), "{s:?}");
    exec(
        &db,
        &format!("DELETE FROM ipmanager.hosts WHERE id = {gone}"),
    )
    .await;
    h.wait_status("the removal to await a compaction", |s| {
        s.awaiting_compaction == [gone]
    })
    .await;
    h.stop().await;
    assert!(h.path(DEBT_MARKER).exists());
    assert_eq!((h.hup.count(), h.restarts()), (hups, restarts));

    // The marker: the next agent compacts at once, long before the interval.
    h.spawn_agent(&db.url, "");
    h.wait_status("the compaction at start", |s| s.compactions == 1)
        .await;
    h.wait_sighups(hups).await;
    assert!(h.status().awaiting_compaction.is_empty());
    assert!(!h.path(DEBT_MARKER).exists());
    assert_eq!(h.restarts(), restarts);
    h.stop().await;
}

#[tokio::test]
async fn an_include_change_in_the_incremental_layout_restarts_dnsmasq() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    add_host_id(&db, "02:00:00:00:05:01", "10.64.5.1", "one").await;
    let mut h = Harness::start_incremental(&db, "1h").await;
    h.wait_in_sync().await;
    let before = h.status();
    let (restarts, activations) = (h.restarts(), before.activations);
    exec(
        &db,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '10.65.0.0/16')",
    )
    .await;
    h.wait_file("01-rust-managed.conf", "the new subnet", |c| {
        c.contains("10.65.0.0")
    })
    .await;
    h.wait_status("the restart", |s| s.activations > activations)
        .await;
    assert_eq!(h.restarts(), restarts + 1);
    let s = h.status();
    assert_eq!(
        s.compactions,
        before.compactions + 1,
        "a restart reads every shard: {s:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_shard_file_changed_behind_the_agents_back_is_repaired_by_a_compaction() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let id = add_host_id(&db, "02:00:00:00:06:01", "10.64.6.1", "one").await;
    let mut h = Harness::start_incremental_with(&db, "1h", r#"resync_interval = "1s""#).await;
    h.wait_in_sync().await;
    let shard = dhcp_shard(id);
    let expected = h.read(&shard);
    let before = h.status();
    std::fs::write(h.path(&shard), "02:00:00:00:06:01,10.64.6.99,intruder\n").unwrap();
    h.wait_file(&shard, "the periodic check to restore the file", |c| {
        c == expected
    })
    .await;
    h.wait_status("the compaction", |s| s.compactions > before.compactions)
        .await;
    assert_eq!(h.status().activations, before.activations + 1);
    h.stop().await;
}

#[tokio::test]
async fn each_incremental_apply_and_each_compaction_logs_one_line_and_foreign_files_one_warning() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let mut h = Harness::prepare().await;
    h.set_incremental("1h");
    h.config(&db.url, "");
    let mut command = std::process::Command::new(BIN);
    command
        .args(["agent", "--config"])
        .arg(h.path("ipmanager.toml"))
        .env("RUST_LOG", "ipmanager=info")
        .env("NO_COLOR", "1");
    let agent = AgentProcess::spawn(command);
    agent.wait_log("in sync").await;
    std::fs::write(h.path("hosts.d/extra"), "10.64.7.9 extra\n").unwrap();

    let id = add_host_id(&db, "02:00:00:00:07:01", "10.64.7.1", "seven").await;
    agent.wait_log("applied incrementally").await;
    let log = agent.log();
    let applied = log
        .lines()
        .find(|l| l.contains("applied incrementally"))
        .unwrap();
    for part in [
        "hosts_added=1",
        "seven (02:00:00:00:07:01)",
        "awaiting_compaction=0",
        &dhcp_shard(id),
    ] {
        assert!(applied.contains(part), "{applied:?} lacks {part:?}");
    }
    exec(&db, &format!("DELETE FROM ipmanager.hosts WHERE id = {id}")).await;
    agent.wait_log("awaiting_compaction=1").await;

    for round in 1..=2 {
        exec(&db, "SELECT ipmanager.request_compaction()").await;
        let done = wait_until(DEADLINE, || {
            let count = agent.log().matches("compacted: dnsmasq re-read").count();
            async move { count > round }
        })
        .await;
        assert!(done, "compaction {round}:\n{}", agent.log());
    }
    let log = agent.log();
    let compactions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("compacted: dnsmasq re-read"))
        .collect();
    // The first one at start: the include file is new.
    assert!(compactions[0].contains("include"), "{compactions:?}");
    for line in &compactions[1..] {
        for part in ["request", "files=", "took="] {
            assert!(line.contains(part), "{line:?} lacks {part:?}");
        }
    }
    assert_eq!(
        log.matches("is not ipmanager's").count(),
        1,
        "one warning about hosts.d/extra:\n{log}"
    );
    assert!(
        h.path("hosts.d/extra").exists(),
        "a foreign file is never removed"
    );
    assert_eq!(agent.terminate().await, Some(0));
}

/// Every shard file on disk (name relative to the harness directory, content).
fn shard_files(h: &Harness) -> std::collections::BTreeMap<String, String> {
    ["dhcp-hosts.d", "hosts.d"]
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(h.path(dir))
                .unwrap()
                .map(move |e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
        })
        .filter(|name| !name.rsplit('/').next().unwrap().starts_with('.'))
        .map(|name| {
            let content = h.read(&name);
            (name, content)
        })
        .collect()
}

/// The shard files a full read and render of the database gives now, named as on disk.
async fn full_render_shards(
    h: &Harness,
    db: &TestDb,
) -> std::collections::BTreeMap<String, String> {
    let config = h.config(&db.url, "");
    let pool = ipmanager::db::pool(config.connector("delta-test").unwrap());
    let at = ipmanager::db::take_snapshot_at(&pool, 0, &Default::default())
        .await
        .unwrap();
    let rendered =
        ipmanager::render::render_scoped(&at.snapshot, &config.dnsmasq.layout(), &at.names_only);
    let sharded = rendered.sharded.unwrap();
    let name = ipmanager::render::shard_file_name;
    let dhcp = sharded
        .dhcp
        .iter()
        .map(|(s, c)| (format!("dhcp-hosts.d/{}", name(*s)), c.clone()));
    let dns = sharded
        .dns
        .iter()
        .map(|(s, c)| (format!("hosts.d/{}", name(*s)), c.clone()));
    dhcp.chain(dns).collect()
}

/// Waits until the shard files on disk are byte-equal to a full render of the database.
async fn wait_files_equal_full_render(h: &Harness, db: &TestDb, what: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let expected = full_render_shards(h, db).await;
        let on_disk = shard_files(h);
        if on_disk == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {what} the shard files never equalled a full render:\non disk {on_disk:#?}\nexpected {expected:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One random change to the hosts of [`add_subnet`]'s subnet, as SQL; `n` makes names and
/// addresses unique. `insert` forces an INSERT, which takes no lock on an existing row.
fn random_host_change(rng: &mut u64, n: u64, insert: bool) -> String {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let pick = format!(
        "(SELECT id FROM ipmanager.hosts ORDER BY id \
          OFFSET {} % greatest((SELECT count(*) FROM ipmanager.hosts), 1) LIMIT 1)",
        *rng >> 8 & 0xffff
    );
    match if insert { 4 } else { *rng % 5 } {
        0 => format!("UPDATE ipmanager.hosts SET hostname = 'u{n}' WHERE id = {pick}"),
        1 => format!("DELETE FROM ipmanager.hosts WHERE id = {pick}"),
        2 => format!("UPDATE ipmanager.hosts SET enabled = NOT enabled WHERE id = {pick}"),
        _ => format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('02:00:00:01:{:02x}:{:02x}', '10.64.{}.{}', 'n{n}')",
            n >> 8 & 0xff,
            n & 0xff,
            2 + n / 250,
            1 + n % 250
        ),
    }
}

#[tokio::test]
async fn an_agent_reading_deltas_ends_with_the_files_of_a_full_render() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    exec(
        &db,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname)
         SELECT ('02:00:00:00:02:' || lpad(to_hex(i), 2, '0'))::macaddr,
                ('10.64.1.' || i)::inet, 'h' || i FROM generate_series(1, 40) i",
    )
    .await;
    let mut h = Harness::start_incremental(&db, "1h").await;
    h.wait_in_sync().await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = seed;
    let mut n = 0;
    let mut client = db.client().await;
    for round in 0..12 {
        for _ in 0..3 {
            n += 1;
            exec(&db, &random_host_change(&mut rng, n, false)).await;
        }
        // Two transactions open at once, the later one committing first (the earlier one only
        // inserts, so that the later one never waits for its locks).
        let mut other = db.client().await;
        let early = client.transaction().await.unwrap();
        n += 1;
        early
            .batch_execute(&random_host_change(&mut rng, n, true))
            .await
            .unwrap();
        let late = other.transaction().await.unwrap();
        n += 1;
        late.batch_execute(&random_host_change(&mut rng, n, false))
            .await
            .unwrap();
        late.commit().await.unwrap();
        wait_files_equal_full_render(&h, &db, &format!("round {round} (seed {seed})")).await;
        early.commit().await.unwrap();
        wait_files_equal_full_render(&h, &db, &format!("round {round}'s early commit")).await;
        if round == 6 {
            exec(&db, "UPDATE ipmanager.subnets SET domain = 'other.lan'").await;
            wait_files_equal_full_render(&h, &db, "a subnet change").await;
        }
    }
    exec(
        &db,
        "TRUNCATE ipmanager.hosts, ipmanager.host_aliases, ipmanager.host_macs",
    )
    .await;
    wait_files_equal_full_render(&h, &db, "a TRUNCATE").await;
    n += 1;
    exec(&db, &random_host_change(&mut 3, n, true)).await;
    wait_files_equal_full_render(&h, &db, "an insert after the TRUNCATE").await;
    let status = h.status();
    assert!(
        status.delta_reads >= 12,
        "the agent read few deltas: {status:?}"
    );
    h.stop().await;
}

/// `GET /metrics` from the agent's endpoint over plain TCP: the status line and the body.
async fn scrape(port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The value of the series that starts `series` (name and labels as written) in `text`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Scrapes until `condition` holds for the body, or fails the test with `what`.
async fn wait_metrics(port: u16, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let body = scrape(port).await.unwrap_or_default();
        if condition(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_metrics_endpoint_shows_syncs_changes_and_activations_as_they_happen() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let port = common::free_port();
    let mut h = Harness::start_with(&db, &format!("metrics_listen = \"127.0.0.1:{port}\"")).await;
    h.wait_in_sync().await;
    let first = wait_metrics(port, "the first sync", |m| {
        m.contains("ipmanager_agent_in_sync 1")
    })
    .await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("content-type: application/openmetrics-text"),
        "{first}"
    );
    assert!(first.contains("ipmanager_build_info{version=\""), "{first}");
    assert_eq!(metric(&first, "ipmanager_agent_database_connected"), 1.0);
    assert_eq!(metric(&first, "ipmanager_agent_in_sync"), 1.0);
    assert_eq!(metric(&first, "ipmanager_agent_hosts_served"), 0.0);
    assert!(metric(&first, "ipmanager_agent_last_sync_age_seconds") < DEADLINE.as_secs_f64());
    assert!(metric(&first, "ipmanager_agent_last_sync_timestamp_seconds") > 1.7e9);
    let syncs = metric(&first, "ipmanager_agent_syncs_total{result=\"ok\"}");
    assert!(syncs >= 1.0, "{first}");

    // A change: one more sync, one host added, one reload, and the time from its notification
    // to the files on disk.
    let hups = h.hup.count();
    add_host(&db, "02:00:00:00:00:07", "10.64.1.70", "metered").await;
    h.wait_sighups(hups).await;
    let after = wait_metrics(port, "the host to be served", |m| {
        m.contains("ipmanager_agent_hosts_served 1")
            && metric(m, "ipmanager_agent_notification_to_disk_seconds_count") >= 1.0
            && metric(m, "ipmanager_agent_activations_total{kind=\"reload\"}") >= 1.0
    })
    .await;
    assert!(metric(&after, "ipmanager_agent_syncs_total{result=\"ok\"}") > syncs);
    assert_eq!(
        metric(
            &after,
            "ipmanager_agent_changes_applied_total{kind=\"added\"}"
        ),
        1.0
    );
    assert!(metric(&after, "ipmanager_agent_notification_to_disk_seconds_count") >= 1.0);
    assert!(
        metric(&after, "ipmanager_agent_notification_to_disk_seconds_sum") < DEADLINE.as_secs_f64()
    );
    assert!(metric(&after, "ipmanager_agent_sync_duration_seconds_count") > syncs);
    assert!(metric(&after, "ipmanager_agent_notifications_total") >= 1.0);

    // An activation that fails (no pid file) is counted by kind until it succeeds.
    let pid_file = h.hup.pid_file.clone();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    add_host(&db, "02:00:00:00:00:08", "10.64.1.80", "unsignalled").await;
    wait_metrics(port, "a failed activation", |m| {
        metric(
            m,
            "ipmanager_agent_activation_failures_total{kind=\"reload\"}",
        ) >= 1.0
            && m.contains("ipmanager_agent_in_sync 0")
    })
    .await;
    let hups = h.hup.count();
    std::fs::write(&pid_file, pid).unwrap();
    h.wait_sighups(hups).await;
    h.wait_in_sync().await;
    wait_metrics(port, "in sync again", |m| {
        m.contains("ipmanager_agent_in_sync 1")
    })
    .await;

    // The endpoint ends with the agent.
    h.stop().await;
    assert!(
        scrape(port).await.is_err(),
        "the endpoint outlived the agent"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_shows_hosts_awaiting_a_compaction_and_compactions() {
    let db = TestDb::new().await;
    add_subnet(&db).await;
    let gone = add_host_id(&db, "02:00:00:00:03:01", "10.64.3.1", "gone").await;
    let port = common::free_port();
    let mut h = Harness::start_incremental_with(
        &db,
        "2s",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    )
    .await;
    h.wait_in_sync().await;
    let before = wait_metrics(port, "the first sync", |m| {
        m.contains("ipmanager_agent_hosts_served 1")
    })
    .await;
    let compactions = metric(&before, "ipmanager_agent_compactions_total");
    exec(
        &db,
        &format!("DELETE FROM ipmanager.hosts WHERE id = {gone}"),
    )
    .await;
    wait_metrics(port, "the removal to await a compaction", |m| {
        m.contains("ipmanager_agent_hosts_awaiting_compaction 1")
    })
    .await;
    let after = wait_metrics(port, "the compaction", |m| {
        m.contains("ipmanager_agent_hosts_awaiting_compaction 0")
    })
    .await;
    assert_eq!(
        metric(&after, "ipmanager_agent_compactions_total"),
        compactions + 1.0
    );
    assert_eq!(
        metric(
            &after,
            "ipmanager_agent_changes_applied_total{kind=\"removed\"}"
        ),
        1.0
    );
    h.stop().await;
}
