//! End to end with real parts: PostgreSQL, the agent (in-process), a real dnsmasq in a network
//! namespace, a real DHCP client (udhcpc) and resolver (dig) in another. A row changed with SQL
//! must change what dnsmasq hands out and answers, and nothing else.
//!
//! Needs root, `ip netns`, dnsmasq, udhcpc and dig; without them each test prints `SKIPPED:` and
//! passes, unless `IPMANAGER_REQUIRE_E2E=1` (CI), where it fails.

mod common;

use std::net::Ipv4Addr;

use common::netns::{Lab, E2E_DEADLINE};
use common::TestDb;
use ipmanager::agent::{Agent, Phase, Status};
use ipmanager::config::Config;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const DOMAIN: &str = "e2e.test";

/// The in-process agent, writing where the lab's dnsmasq reads.
struct AgentRun {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AgentRun {
    fn start(db: &TestDb, lab: &Lab, layout: &str) -> AgentRun {
        let file = lab.path("ipmanager.toml");
        let restart = lab
            .restart_command()
            .iter()
            .map(|arg| format!("{arg:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &file,
            format!(
                r#"database_url = "{url}"
[agent]
name = "e2e"
liveness_interval = "1s"
max_backoff = "500ms"
[dnsmasq]
layout = "{layout}"
include_file = "{include}"
hosts_file = "{hosts}"
addn_hosts_file = "{addn}"
pid_file = "{pid}"
restart_command = [{restart}]
command_timeout = "15s"
"#,
                url = db.url,
                include = lab.include_file().display(),
                hosts = lab.hosts_file().display(),
                addn = lab.addn_hosts_file().display(),
                pid = lab.pid_file().display(),
            ),
        )
        .unwrap();
        let config = Config::load(Some(&file), std::iter::empty()).expect("e2e config is valid");
        let agent = Agent::new(config);
        let status = agent.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent runs until stopped");
        });
        AgentRun {
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    async fn wait_status(&mut self, what: &str, condition: impl Fn(&Status) -> bool) {
        let reached = tokio::time::timeout(E2E_DEADLINE, self.status.wait_for(|s| condition(s)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "timed out waiting for {what}; agent status: {:?}",
            self.status.borrow()
        );
    }

    async fn wait_in_sync(&mut self) {
        self.wait_status("the agent to be in sync", |s| s.phase == Phase::InSync)
            .await;
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task ends cleanly");
        }
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One scenario's world: the running agent, the lab and the database. Each cleans up after
/// itself when dropped, also when the test panics: the agent is aborted first, then dnsmasq is
/// killed and the namespaces deleted, then the database dropped.
struct World {
    agent: AgentRun,
    lab: Lab,
    db: TestDb,
}

impl World {
    /// A lab on 10.99.`octet`.0/24, a database with that subnet (pool .100–.150, domain
    /// `e2e.test`), the agent in sync, then dnsmasq started on the agent's files.
    async fn start(octet: u8, layout: &str) -> Option<World> {
        let mut lab = Lab::new(octet)?;
        let db = TestDb::new().await;
        db.client()
            .await
            .batch_execute(&format!(
                "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain)
                 VALUES ('e2e', '10.99.{octet}.0/24', '10.99.{octet}.100', '10.99.{octet}.150',
                         '10.99.{octet}.1', '{DOMAIN}')"
            ))
            .await
            .unwrap();
        let mut agent = AgentRun::start(&db, &lab, layout);
        agent.wait_in_sync().await;
        lab.start_dnsmasq().await;
        Some(World { agent, lab, db })
    }

    async fn sql(&self, statement: &str) {
        self.db
            .client()
            .await
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    /// Runs `statement` and waits until dnsmasq has re-read both files because of it.
    async fn sql_and_reread(&mut self, statement: &str) {
        let reads = self.lab.reads();
        self.sql(statement).await;
        self.lab.wait_reread(reads).await;
        self.agent.wait_in_sync().await;
    }

    /// Asserts the name and reverse records of a reservation `hostname` → `ip`.
    async fn assert_resolves(&self, hostname: &str, ip: Ipv4Addr) {
        let fqdn = format!("{hostname}.{DOMAIN}");
        let expected = vec![ip.to_string()];
        assert_eq!(self.lab.resolve(hostname).await, expected, "A {hostname}");
        assert_eq!(self.lab.resolve(&fqdn).await, expected, "A {fqdn}");
        assert_eq!(
            self.lab.reverse(ip).await,
            vec![format!("{fqdn}.")],
            "PTR {ip}"
        );
    }

    async fn assert_not_resolved(&self, hostname: &str, ip: Ipv4Addr) {
        let fqdn = format!("{hostname}.{DOMAIN}");
        assert_eq!(self.lab.resolve(hostname).await, Vec::<String>::new());
        assert_eq!(self.lab.resolve(&fqdn).await, Vec::<String>::new());
        assert_eq!(self.lab.reverse(ip).await, Vec::<String>::new());
    }

    /// A DHCP exchange that must end with `ip`, offered and acknowledged by dnsmasq.
    async fn assert_dhcp_gets(&self, mac: &str, ip: Ipv4Addr) {
        let got = self.lab.dhcp(mac).await;
        assert_eq!(got, Some(ip), "DHCP for {mac}; {}", self.lab.diagnostics());
        let offer = format!("DHCPOFFER({}) {ip} {mac}", self.lab.server_if);
        let ack = format!("DHCPACK({}) {ip} {mac}", self.lab.server_if);
        self.lab
            .wait_log("dnsmasq to log the offer and the ack", |log| {
                log.contains(&offer) && log.contains(&ack)
            })
            .await;
    }

    fn lease_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.lab.lease_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn finish(mut self) {
        self.agent.stop().await;
    }
}

fn mac(octet: u8) -> String {
    format!("02:00:00:99:{octet:02x}:01")
}

fn insert_host(octet: u8, host: u8) -> String {
    format!(
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('{}', '10.99.{octet}.{host}', 'h1')",
        mac(octet)
    )
}

#[tokio::test]
async fn an_inserted_host_resolves_at_once_and_gets_exactly_its_address() {
    const OCTET: u8 = 11;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let ip = w.lab.addr(10);
    let pid = w.lab.dnsmasq_pid();
    w.assert_not_resolved("h1", ip).await;

    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    // Names come from the addn-hosts file: they resolve before the client ever asked for a
    // lease.
    assert!(w.lease_lines().is_empty(), "{:?}", w.lease_lines());
    w.assert_resolves("h1", ip).await;

    w.assert_dhcp_gets(&mac(OCTET), ip).await;
    let leases = w.lease_lines();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(
        leases[0].contains(&format!(" {} {ip} h1 ", mac(OCTET))),
        "{leases:?}"
    );
    w.assert_resolves("h1", ip).await;
    // A new host is a SIGHUP, never a restart.
    assert_eq!(w.lab.dnsmasq_pid(), pid);
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.finish().await;
}

#[tokio::test]
async fn an_updated_address_is_handed_out_after_a_reload_without_a_restart() {
    const OCTET: u8 = 12;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let (old, new) = (w.lab.addr(10), w.lab.addr(20));
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    w.assert_dhcp_gets(&mac(OCTET), old).await;
    let pid = w.lab.dnsmasq_pid();
    assert!(pid.is_some());

    w.sql_and_reread(&format!(
        "UPDATE ipmanager.hosts SET ip = '{new}' WHERE hostname = 'h1'"
    ))
    .await;
    w.assert_resolves("h1", new).await;
    assert_eq!(w.lab.reverse(old).await, Vec::<String>::new(), "PTR {old}");

    // A fresh request (udhcpc starts with DISCOVER) is given the new reservation, although the
    // MAC still holds a lease on the old address.
    w.assert_dhcp_gets(&mac(OCTET), new).await;
    w.assert_resolves("h1", new).await;
    assert_eq!(w.lab.dnsmasq_pid(), pid, "dnsmasq was restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.finish().await;
}

#[tokio::test]
async fn a_deleted_host_loses_its_reservation_and_its_name() {
    const OCTET: u8 = 13;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let reserved = w.lab.addr(10);
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    w.assert_dhcp_gets(&mac(OCTET), reserved).await;
    let pid = w.lab.dnsmasq_pid();

    w.sql_and_reread("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    // dnsmasq keeps answering the name from the client's existing lease until the client
    // talks to it again; the next exchange moves it into the pool (dnsmasq pings a pool
    // address first, which takes about 3 s).
    let got = w
        .lab
        .dhcp(&mac(OCTET))
        .await
        .expect("the MAC gets a pool address");
    assert_ne!(got, reserved);
    assert!(
        (w.lab.addr(100)..=w.lab.addr(150)).contains(&got),
        "{got} is not in the pool"
    );
    w.assert_not_resolved("h1", reserved).await;
    assert_eq!(w.lab.reverse(got).await, Vec::<String>::new(), "PTR {got}");
    assert_eq!(w.lab.dnsmasq_pid(), pid, "dnsmasq was restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.finish().await;
}

#[tokio::test]
async fn a_deleted_host_without_a_lease_stops_resolving_at_once() {
    const OCTET: u8 = 16;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let ip = w.lab.addr(10);
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    w.assert_resolves("h1", ip).await;
    w.sql_and_reread("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    // No lease holds the name, so the re-read addn-hosts file is all that answered it.
    w.assert_not_resolved("h1", ip).await;
    assert!(w.lease_lines().is_empty(), "{:?}", w.lease_lines());
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.finish().await;
}

#[tokio::test]
async fn a_comment_only_update_leaves_dnsmasq_alone() {
    const OCTET: u8 = 14;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let ip = w.lab.addr(10);
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    let before = w.agent.status();
    let reads = w.lab.reads();
    let pid = w.lab.dnsmasq_pid();

    w.sql("UPDATE ipmanager.hosts SET comment = 'moved to rack 4' WHERE hostname = 'h1'")
        .await;
    w.agent
        .wait_status("a regeneration after the comment change", |s| {
            s.regenerations > before.regenerations && s.phase == Phase::InSync
        })
        .await;
    // Anything the agent sent dnsmasq has been handled once a later query is logged.
    w.lab.barrier("comment").await;
    assert_eq!(w.lab.reads(), reads, "dnsmasq re-read its files");
    let after = w.agent.status();
    assert_eq!(after.writes, before.writes);
    assert_eq!(after.activations, before.activations);
    assert_eq!(w.lab.dnsmasq_pid(), pid);
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.assert_resolves("h1", ip).await;
    w.finish().await;
}

#[tokio::test]
async fn with_the_conf_layout_an_inserted_host_is_served_after_a_restart() {
    const OCTET: u8 = 15;
    let Some(mut w) = World::start(OCTET, "conf").await else {
        return;
    };
    let ip = w.lab.addr(10);
    let pid = w.lab.dnsmasq_pid();
    let activations = w.agent.status().activations;
    w.sql(&insert_host(OCTET, 10)).await;
    w.agent
        .wait_status("the restart", |s| {
            s.activations > activations && s.phase == Phase::InSync
        })
        .await;
    w.lab.wait_dnsmasq_ready(1).await;
    assert_ne!(w.lab.dnsmasq_pid(), pid, "dnsmasq was not restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 2);
    assert!(std::fs::read_to_string(w.lab.include_file())
        .unwrap()
        .contains(&format!("dhcp-host={},{ip},h1\n", mac(OCTET))));
    w.assert_resolves("h1", ip).await;
    w.assert_dhcp_gets(&mac(OCTET), ip).await;
    w.finish().await;
}
