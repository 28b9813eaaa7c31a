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
    /// An agent named `name` serving `sites` (a TOML array) with `dns_scope`.
    fn start_site(db: &TestDb, lab: &Lab, name: &str, sites: &str, dns_scope: &str) -> AgentRun {
        let sites = format!("sites = {sites}");
        let dns_scope = format!("dns_scope = \"{dns_scope}\"");
        Self::start_with(db, lab, "hostsfile", name, &sites, &dns_scope)
    }

    /// `agent_extra` and `dnsmasq_extra` end the `[agent]` and `[dnsmasq]` sections.
    fn start_with(
        db: &TestDb,
        lab: &Lab,
        layout: &str,
        name: &str,
        agent_extra: &str,
        dnsmasq_extra: &str,
    ) -> AgentRun {
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
name = "{name}"
liveness_interval = "1s"
max_backoff = "500ms"
{agent_extra}
[dnsmasq]
layout = "{layout}"
include_file = "{include}"
hosts_file = "{hosts}"
addn_hosts_file = "{addn}"
pid_file = "{pid}"
restart_command = [{restart}]
command_timeout = "15s"
{dnsmasq_extra}
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
        Self::start_in(Lab::new(octet)?, layout, "").await
    }

    /// [`World::start`] with IPv6 on the link too: the server has `fd99:<octet>::1` and the
    /// database a second subnet `e2e6`, `fd99:<octet>::/64` without a dynamic range (`static`).
    /// The agent releases stale leases ([`releasing`]).
    async fn start_dual(octet: u8) -> Option<World> {
        let lab = Lab::new(octet)?;
        lab.enable_ipv6()?;
        let dnsmasq_extra = releasing(&lab);
        let mut world = Self::start_in(lab, "hostsfile", &dnsmasq_extra).await?;
        world
            .sql_and_restart(&format!(
                "INSERT INTO ipmanager.subnets (name, cidr, domain)
                 VALUES ('e2e6', 'fd99:{octet:x}::/64', '{DOMAIN}')"
            ))
            .await;
        Some(world)
    }

    /// `dnsmasq_extra` ends the agent's `[dnsmasq]` section.
    async fn start_in(mut lab: Lab, layout: &str, dnsmasq_extra: &str) -> Option<World> {
        let octet = lab.octet;
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
        let mut agent = AgentRun::start_with(&db, &lab, layout, "e2e", "", dnsmasq_extra);
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

    /// Runs `statement` and waits until the agent has restarted dnsmasq because of it (the
    /// conf layout's activation) and the new dnsmasq serves; asserts that it was exactly one
    /// restart, with a new pid.
    async fn sql_and_restart(&mut self, statement: &str) {
        let activations = self.agent.status().activations;
        let starts = self.lab.dnsmasq_starts();
        let pid = self.lab.dnsmasq_pid();
        assert!(pid.is_some(), "no dnsmasq running before {statement}");
        self.sql(statement).await;
        self.agent
            .wait_status("the restart", |s| {
                s.activations > activations && s.phase == Phase::InSync
            })
            .await;
        self.lab.wait_dnsmasq_ready(starts).await;
        assert_ne!(
            self.lab.dnsmasq_pid(),
            pid,
            "dnsmasq was not restarted after {statement}"
        );
        assert_eq!(self.lab.dnsmasq_starts(), starts + 1, "{statement}");
    }

    fn include(&self) -> String {
        std::fs::read_to_string(self.lab.include_file()).unwrap()
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

    /// Waits until the lease file satisfies `condition` (dnsmasq rewrites it in place, so a
    /// single read may catch it half written).
    async fn wait_leases(&self, what: &str, condition: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + E2E_DEADLINE;
        loop {
            let leases = self.lease_lines();
            if condition(&leases) {
                return leases;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the lease file to show {what}: {leases:?}; {}",
                self.lab.diagnostics()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
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

#[tokio::test]
async fn with_the_conf_layout_an_updated_address_is_served_after_a_restart() {
    const OCTET: u8 = 22;
    let Some(mut w) = World::start(OCTET, "conf").await else {
        return;
    };
    let (old, new) = (w.lab.addr(10), w.lab.addr(20));
    let mac = mac(OCTET);
    w.sql_and_restart(&insert_host(OCTET, 10)).await;
    w.assert_dhcp_gets(&mac, old).await;
    // The restarted dnsmasq reads the client's lease on the old address back.
    let old_lease = format!(" {mac} {old} h1 ");
    w.wait_leases("the lease on the old address", |l| {
        l.len() == 1 && l[0].contains(&old_lease)
    })
    .await;

    // In the conf layout the reservation lives in the include file, read only at start.
    w.sql_and_restart(&format!(
        "UPDATE ipmanager.hosts SET ip = '{new}' WHERE hostname = 'h1'"
    ))
    .await;
    assert_eq!(w.lab.dnsmasq_starts(), 3);
    let include = w.include();
    assert!(
        include.contains(&format!("dhcp-host={mac},{new},h1\n")),
        "{include}"
    );
    assert!(
        include.contains(&format!("host-record=h1.{DOMAIN},h1,{new}\n")),
        "{include}"
    );
    assert!(!include.contains(&format!(",{old},")), "{include}");
    assert!(!include.contains(&format!(",{old}\n")), "{include}");
    w.assert_resolves("h1", new).await;
    assert_eq!(w.lab.reverse(old).await, Vec::<String>::new(), "PTR {old}");

    // A fresh request (udhcpc starts with DISCOVER) is given the new reservation, although the
    // MAC still holds a lease on the old address.
    let pid = w.lab.dnsmasq_pid();
    w.assert_dhcp_gets(&mac, new).await;
    w.assert_resolves("h1", new).await;
    assert_eq!(w.lab.reverse(old).await, Vec::<String>::new(), "PTR {old}");
    assert_eq!(w.lab.dnsmasq_pid(), pid, "dnsmasq was restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 3);
    w.finish().await;
}

#[tokio::test]
async fn with_the_conf_layout_a_deleted_host_loses_its_reservation_and_its_name_after_a_restart() {
    const OCTET: u8 = 23;
    let Some(mut w) = World::start(OCTET, "conf").await else {
        return;
    };
    let reserved = w.lab.addr(10);
    let mac = mac(OCTET);
    w.sql_and_restart(&insert_host(OCTET, 10)).await;
    w.assert_dhcp_gets(&mac, reserved).await;
    let lease = format!(" {mac} {reserved} h1 ");
    w.wait_leases("the lease of h1", |l| l.len() == 1 && l[0].contains(&lease))
        .await;

    w.sql_and_restart("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    assert_eq!(w.lab.dnsmasq_starts(), 3);
    let include = w.include();
    assert!(!include.contains("dhcp-host="), "{include}");
    assert!(!include.contains("host-record="), "{include}");
    // The restarted dnsmasq read the client's lease back, name included, and keeps answering
    // the name from it until the client talks to it again; the next exchange moves it into
    // the pool (dnsmasq pings a pool address first, which takes about 3 s).
    let pid = w.lab.dnsmasq_pid();
    let got = w.lab.dhcp(&mac).await.expect("the MAC gets a pool address");
    assert_ne!(got, reserved);
    assert!(
        (w.lab.addr(100)..=w.lab.addr(150)).contains(&got),
        "{got} is not in the pool"
    );
    w.assert_not_resolved("h1", reserved).await;
    assert_eq!(w.lab.reverse(got).await, Vec::<String>::new(), "PTR {got}");
    assert_eq!(w.lab.dnsmasq_pid(), pid, "dnsmasq was restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 3);
    w.finish().await;
}

#[tokio::test]
async fn a_client_renewing_its_old_address_is_naked_and_then_gets_the_new_one() {
    const OCTET: u8 = 17;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let (old, new) = (w.lab.addr(10), w.lab.addr(20));
    let mac = mac(OCTET);
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    let mut client = w.lab.dhcp_client(&mac);
    client.wait_event(&w.lab, &format!("bound {old}"), 0).await;
    let pid = w.lab.dnsmasq_pid();
    assert!(pid.is_some());

    w.sql_and_reread(&format!(
        "UPDATE ipmanager.hosts SET ip = '{new}' WHERE hostname = 'h1'"
    ))
    .await;
    let seen = client.events().len();
    let naks_before = w.lab.log().matches("DHCPNAK(").count();
    // The renewal a client sends at half its lease time, asking to keep the old address.
    client.renew();
    let nak = format!("DHCPNAK({}) {old} {mac}", w.lab.server_if);
    w.lab
        .wait_log("dnsmasq to refuse the old address", |log| {
            log.contains(&nak)
        })
        .await;
    client
        .wait_event(&w.lab, &format!("bound {new}"), seen)
        .await;
    let events: Vec<String> = client.events().split_off(seen);
    assert!(
        events.iter().any(|e| e.starts_with("nak ")),
        "the client did not see the NAK: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e == &format!("renew {old}") || e == &format!("bound {old}")),
        "the client kept its old address: {events:?}"
    );
    // After the NAK the client starts over: DISCOVER, then the new reservation.
    let steps = [
        format!("DHCPDISCOVER({}) {mac}", w.lab.server_if),
        format!("DHCPOFFER({}) {new} {mac}", w.lab.server_if),
        format!("DHCPACK({}) {new} {mac}", w.lab.server_if),
    ];
    w.lab
        .wait_log(
            "DISCOVER, OFFER and ACK of the new address after the NAK",
            |log| {
                let tail = &log[log.find(&nak).expect("the NAK is logged")..];
                steps.iter().all(|step| tail.contains(step.as_str()))
            },
        )
        .await;
    let log = w.lab.log();
    assert_eq!(log.matches("DHCPNAK(").count(), naks_before + 1, "{log}");
    w.assert_resolves("h1", new).await;
    assert_eq!(w.lab.dnsmasq_pid(), pid, "dnsmasq was restarted");
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    drop(client);
    w.finish().await;
}

#[tokio::test]
async fn a_changed_range_restarts_dnsmasq_which_serves_it_and_keeps_the_leases() {
    const OCTET: u8 = 18;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let reserved = w.lab.addr(10);
    w.sql_and_reread(&insert_host(OCTET, 10)).await;
    w.assert_dhcp_gets(&mac(OCTET), reserved).await;
    let h1_lease = format!(" {} {reserved} h1 ", mac(OCTET));
    let leases = w
        .wait_leases("the lease of h1", |l| {
            l.len() == 1 && l[0].contains(&h1_lease)
        })
        .await;
    let include = std::fs::read_to_string(w.lab.include_file()).unwrap();
    let old_range = format!("{},{},255.255.255.0\n", w.lab.addr(100), w.lab.addr(150));
    assert!(include.contains(&old_range), "{include}");
    let pid = w.lab.dnsmasq_pid();
    let activations = w.agent.status().activations;

    w.sql(&format!(
        "UPDATE ipmanager.subnets SET range_start = '{}', range_end = '{}', lease_time = '2h'",
        w.lab.addr(200),
        w.lab.addr(209)
    ))
    .await;
    w.agent
        .wait_status("the restart", |s| {
            s.activations > activations && s.phase == Phase::InSync
        })
        .await;
    w.lab.wait_dnsmasq_ready(1).await;
    let new_pid = w.lab.dnsmasq_pid();
    assert!(
        new_pid.is_some() && new_pid != pid,
        "dnsmasq was not restarted"
    );
    assert_eq!(w.lab.dnsmasq_starts(), 2);
    let include = std::fs::read_to_string(w.lab.include_file()).unwrap();
    let new_range = format!(
        "{},{},255.255.255.0,7200\n",
        w.lab.addr(200),
        w.lab.addr(209)
    );
    assert!(include.contains(&new_range), "{include}");
    assert!(!include.contains(&old_range), "{include}");
    // The restarted dnsmasq read the lease file back: the earlier lease is still there.
    w.wait_leases("the same lease after the restart", |l| l == leases)
        .await;

    // A MAC without a reservation is served from the new range.
    let stranger = "02:00:00:99:ff:02";
    let got = w.lab.dhcp(stranger).await.expect("a pool address");
    assert!(
        (w.lab.addr(200)..=w.lab.addr(209)).contains(&got),
        "{got} is not in the new range; {}",
        w.lab.diagnostics()
    );
    // The reserved client keeps its address, now with the new lease time.
    w.assert_dhcp_gets(&mac(OCTET), reserved).await;
    let stranger_lease = format!(" {stranger} {got} ");
    w.wait_leases("both leases", |l| {
        l.len() == 2
            && l.iter().any(|l| l.contains(&h1_lease))
            && l.iter().any(|l| l.contains(&stranger_lease))
    })
    .await;
    assert_eq!(w.lab.dnsmasq_pid(), new_pid);
    w.assert_resolves("h1", reserved).await;
    w.finish().await;
}

#[tokio::test]
async fn changes_made_while_dnsmasq_is_down_are_served_once_it_is_back() {
    const OCTET: u8 = 19;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let ip = w.lab.addr(10);
    w.lab.stop_dnsmasq();
    let before = w.agent.status();
    w.sql(&insert_host(OCTET, 10)).await;
    // The files are written, but there is no dnsmasq to signal: the agent keeps retrying.
    w.agent
        .wait_status("the activation to fail", |s| {
            s.phase == Phase::ActivationFailing
        })
        .await;
    let failing = w.agent.status();
    assert!(failing.writes > before.writes, "{failing:?}");
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("pid file")),
        "{failing:?}"
    );
    assert!(std::fs::read_to_string(w.lab.hosts_file())
        .unwrap()
        .contains(&format!("{},{ip},h1", mac(OCTET))));

    w.lab.start_dnsmasq().await;
    w.agent.wait_in_sync().await;
    assert!(w.agent.status().activations > failing.activations);
    w.assert_resolves("h1", ip).await;
    w.assert_dhcp_gets(&mac(OCTET), ip).await;
    assert_eq!(w.lab.dnsmasq_starts(), 1);
    w.finish().await;
}

/// Hostnames the database refuses, written by a superuser with the validation triggers off.
/// Each would add a line, a field or an option to dnsmasq's config if written as it is.
fn bad_hostnames(marker_script: &str) -> Vec<String> {
    vec![
        format!("evil\ndhcp-script={marker_script}"),
        "h,set:evil,infinite".to_owned(),
        "h#comment".to_owned(),
        "h space".to_owned(),
        "a".repeat(300),
        "höst".to_owned(),
    ]
}

/// Rows that bypassed the database's checks never reach dnsmasq's config: no injected option
/// (the marker script never runs, even across a restart and a DHCP exchange), no complaint from
/// dnsmasq, and the valid row is still served.
async fn rows_bypassing_the_checks_never_reach_dnsmasq(octet: u8, layout: &str) {
    let Some(mut w) = World::start(octet, layout).await else {
        return;
    };
    let marker = w.lab.path("marker");
    let script = w
        .lab
        .write_script("marker-script", &format!("touch '{}'\n", marker.display()));
    let bad = bad_hostnames(&script.display().to_string());
    let mut statement = String::from("SET session_replication_role = replica;\n");
    for (i, hostname) in bad.iter().enumerate() {
        let i = i as u8;
        statement.push_str(&format!(
            "INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname)
             SELECT id, '02:00:00:99:{octet:02x}:{:02x}', '10.99.{octet}.{}', '{}'
             FROM ipmanager.subnets;\n",
            0x10 + i,
            30 + i,
            hostname.replace('\'', "''")
        ));
    }
    // The triggers really were off: the database itself would refuse every one of these rows.
    w.sql(&statement).await;
    let good_mac = mac(octet);
    let good_ip = w.lab.addr(10);
    let starts = w.lab.dnsmasq_starts();
    let activations = w.agent.status().activations;
    w.sql(&format!(
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('{good_mac}', '{good_ip}', 'good')"
    ))
    .await;
    w.agent
        .wait_status("the valid host to be applied", |s| {
            s.activations > activations && s.phase == Phase::InSync && s.hosts_served == 1
        })
        .await;
    if layout == "conf" {
        // There a new host is a restart.
        w.lab.wait_dnsmasq_ready(starts).await;
    }
    // A subnet change makes the agent restart dnsmasq, which then reads every file afresh,
    // the include file included.
    let activations = w.agent.status().activations;
    let starts = w.lab.dnsmasq_starts();
    let pid = w.lab.dnsmasq_pid();
    w.sql("UPDATE ipmanager.subnets SET lease_time = '3h'")
        .await;
    w.agent
        .wait_status("the restart", |s| {
            s.activations > activations && s.phase == Phase::InSync
        })
        .await;
    w.lab.wait_dnsmasq_ready(starts).await;
    assert_ne!(w.lab.dnsmasq_pid(), pid, "dnsmasq was not restarted");
    assert_eq!(w.lab.dnsmasq_starts(), starts + 1);

    let status = w.agent.status();
    assert_eq!(status.rows_skipped, bad.len(), "{status:?}");
    assert_eq!(status.hosts_served, 1, "{status:?}");

    w.assert_dhcp_gets(&good_mac, good_ip).await;
    w.assert_resolves("good", good_ip).await;
    // dnsmasq runs a dhcp-script for every lease it reads at start and for every new lease;
    // give its helper process a moment before checking that nothing ran.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !marker.exists(),
        "the injected dhcp-script ran; {}",
        w.lab.diagnostics()
    );

    // None of the bad values, nor anything they carry, is in any file dnsmasq reads.
    let mut served_lines = 0;
    for file in [
        w.lab.include_file(),
        w.lab.hosts_file(),
        w.lab.addn_hosts_file(),
    ] {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for needle in [
            "dhcp-script",
            "evil",
            "comment",
            "space",
            "aaaaaaaa",
            "höst",
            "h#",
            ",h,",
        ] {
            assert!(
                !text.contains(needle),
                "{} contains {needle:?}:\n{text}",
                file.display()
            );
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.is_ascii() && line.len() < 1000, "{line:?}");
            if line.contains("good") {
                served_lines += 1;
            }
        }
    }
    // One reservation line and one name line for the valid host, none for the bad ones.
    assert_eq!(served_lines, 2, "{}", w.lab.diagnostics());
    let complaints: Vec<String> = w
        .lab
        .log()
        .lines()
        .chain(
            std::fs::read_to_string(w.lab.path("dnsmasq.stderr"))
                .unwrap_or_default()
                .lines(),
        )
        .filter(|l| {
            let l = l.to_lowercase();
            ["bad ", "ignoring", "error", "failed", "illegal", "unknown"]
                .iter()
                .any(|word| l.contains(word))
        })
        .map(str::to_owned)
        .collect();
    assert!(complaints.is_empty(), "dnsmasq complained: {complaints:?}");
    w.finish().await;
}

#[tokio::test]
async fn rows_bypassing_the_checks_never_reach_dnsmasq_with_the_hostsfile_layout() {
    rows_bypassing_the_checks_never_reach_dnsmasq(20, "hostsfile").await;
}

#[tokio::test]
async fn rows_bypassing_the_checks_never_reach_dnsmasq_with_the_conf_layout() {
    rows_bypassing_the_checks_never_reach_dnsmasq(21, "conf").await;
}

/// Two sites against one database, each with its own agent feeding its own dnsmasq in its own
/// lab, and a real DHCP client in each: each client is served by its own site only; a change in
/// site A reloads A's dnsmasq and leaves B's alone; with `dns_scope = "all"` at A, a name of
/// site B resolves at A's dnsmasq, while B (`dns_scope = "sites"`) knows only its own names.
#[tokio::test]
async fn two_sites_each_serve_their_own_clients_and_a_change_in_one_leaves_the_other_alone() {
    const A: u8 = 30;
    const B: u8 = 31;
    let Some(mut lab_a) = Lab::new(A) else {
        return;
    };
    let Some(mut lab_b) = Lab::new(B) else {
        return;
    };
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.sites (name) VALUES ('site-a'), ('site-b');
             INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain, site)
             VALUES ('net-a', '10.99.{A}.0/24', '10.99.{A}.100', '10.99.{A}.150', '10.99.{A}.1', 'a.test', 'site-a'),
                    ('net-b', '10.99.{B}.0/24', '10.99.{B}.100', '10.99.{B}.150', '10.99.{B}.1', 'b.test', 'site-b');
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
                 ('{mac_a}', '10.99.{A}.20', 'alpha'),
                 ('{mac_b}', '10.99.{B}.20', 'bravo');",
            mac_a = mac(A),
            mac_b = mac(B),
        ))
        .await
        .unwrap();
    let mut agent_a = AgentRun::start_site(&db, &lab_a, "agent-a", r#"["site-a"]"#, "all");
    let mut agent_b = AgentRun::start_site(&db, &lab_b, "agent-b", r#"["site-b"]"#, "sites");
    agent_a.wait_in_sync().await;
    agent_b.wait_in_sync().await;
    lab_a.start_dnsmasq().await;
    lab_b.start_dnsmasq().await;

    // Each dnsmasq knows only its own site's network and reservations.
    let include_a = std::fs::read_to_string(lab_a.include_file()).unwrap();
    assert!(
        include_a.contains(&format!("10.99.{A}.100"))
            && !include_a.contains(&format!("10.99.{B}."))
    );
    let include_b = std::fs::read_to_string(lab_b.include_file()).unwrap();
    assert!(
        include_b.contains(&format!("10.99.{B}.100"))
            && !include_b.contains(&format!("10.99.{A}."))
    );
    assert!(!std::fs::read_to_string(lab_a.hosts_file())
        .unwrap()
        .contains(&mac(B)));
    assert!(!std::fs::read_to_string(lab_b.hosts_file())
        .unwrap()
        .contains(&mac(A)));

    // Each client gets its reservation from its own site's dnsmasq. B's client, brought to
    // A's network, is a stranger there: A hands it a dynamic address, never B's reservation.
    assert_eq!(
        lab_a.dhcp(&mac(A)).await,
        Some(lab_a.addr(20)),
        "{}",
        lab_a.diagnostics()
    );
    assert_eq!(
        lab_b.dhcp(&mac(B)).await,
        Some(lab_b.addr(20)),
        "{}",
        lab_b.diagnostics()
    );
    let stranger = lab_a.dhcp(&mac(B)).await.expect("a dynamic lease at A");
    assert!((100..=150).contains(&stranger.octets()[3]), "{stranger}");

    // dns_scope = "all" at A: site B's name resolves there; B knows only its own.
    assert_eq!(
        lab_a.resolve("bravo.b.test").await,
        [format!("10.99.{B}.20")]
    );
    assert_eq!(
        lab_a.resolve("alpha.a.test").await,
        [format!("10.99.{A}.20")]
    );
    assert_eq!(
        lab_b.resolve("bravo.b.test").await,
        [format!("10.99.{B}.20")]
    );
    assert!(lab_b.resolve("alpha.a.test").await.is_empty());

    // A change in site A: A's dnsmasq re-reads its files; B's agent is not even woken, and
    // its dnsmasq neither re-reads nor restarts.
    let (reads_a, reads_b) = (lab_a.reads(), lab_b.reads());
    let (starts_a, starts_b) = (lab_a.dnsmasq_starts(), lab_b.dnsmasq_starts());
    let regenerations_b = agent_b.status().regenerations;
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:99:{A:02x}:02', '10.99.{A}.21', 'alpha2')"
        ))
        .await
        .unwrap();
    lab_a.wait_reread(reads_a).await;
    agent_a.wait_in_sync().await;
    assert_eq!(
        lab_a.resolve("alpha2.a.test").await,
        [format!("10.99.{A}.21")]
    );
    // Then a change in site B. Notifications arrive in commit order, so once B has applied
    // this one it has seen, and skipped, the one from A: exactly one regeneration and one
    // re-read at B.
    client
        .batch_execute(&format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:99:{B:02x}:02', '10.99.{B}.21', 'bravo2')"
        ))
        .await
        .unwrap();
    lab_b.wait_reread(reads_b).await;
    agent_b.wait_in_sync().await;
    lab_b.barrier("after-both-changes").await;
    assert_eq!(
        lab_b.resolve("bravo2.b.test").await,
        [format!("10.99.{B}.21")]
    );
    assert_eq!(
        agent_b.status().regenerations,
        regenerations_b + 1,
        "B's agent read the database for the change in A"
    );
    assert_eq!(
        lab_b.reads(),
        (reads_b.0 + 1, reads_b.1 + 1),
        "B's dnsmasq re-read its files for the change in A"
    );
    assert_eq!(
        (lab_a.dnsmasq_starts(), lab_b.dnsmasq_starts()),
        (starts_a, starts_b),
        "a host change restarted a dnsmasq"
    );

    agent_a.stop().await;
    agent_b.stop().await;
}

/// Issue 12 end to end: the subnet's options reach a real client, a host's profile boots it by
/// architecture and iPXE, assigning a profile does not restart dnsmasq while editing one does,
/// and aliases and DNS-only names resolve.
#[tokio::test]
async fn options_profiles_aliases_and_dns_only_names_reach_real_clients() {
    const OCTET: u8 = 61;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let a = |host: u8| format!("10.99.{OCTET}.{host}");
    let (pc, pxe_host) = ("02:00:00:61:00:01", "02:00:00:61:00:02");
    w.sql_and_restart(&format!(
        "SELECT ipmanager.set_subnet_option('e2e', 'dns-server', '{dns1},{dns2}');
         SELECT ipmanager.set_subnet_option('e2e', 'ntp-server', '{ntp}');
         SELECT ipmanager.set_subnet_option('e2e', 'domain-search', 'e2e.test,example.com');
         SELECT ipmanager.set_subnet_option('e2e', 'mtu', '1400');
         SELECT ipmanager.set_subnet_option('e2e', 'classless-static-route', '10.200.0.0/16,{gw2}');
         INSERT INTO ipmanager.profiles (name, boot_file, boot_file_uefi, boot_file_ipxe,
                                         next_server, tftp_server_name)
             VALUES ('pxe', 'pxelinux.0', 'efi/grubx64.efi', 'http://boot.e2e.test/menu.ipxe',
                     '{tftp}', 'tftp.e2e.test');
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('{pc}', '{pc_ip}', 'printer'), ('{pxe_host}', '{pxe_ip}', 'pxe1');
         INSERT INTO ipmanager.host_aliases (host_id, name)
             SELECT id, 'laser' FROM ipmanager.hosts WHERE hostname = 'printer';
         INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('{vip}', 'vip1');",
        dns1 = a(53),
        dns2 = a(54),
        ntp = a(123),
        gw2 = a(2),
        tftp = a(5),
        pc_ip = a(10),
        pxe_ip = a(11),
        vip = a(60),
    ))
    .await;

    // The subnet's options, as the client received them.
    let options = [
        "-O",
        "dns",
        "-O",
        "ntpsrv",
        "-O",
        "search",
        "-O",
        "mtu",
        "-O",
        "staticroutes",
    ];
    let env = w.lab.dhcp_env(pc, &options).await.expect("a lease");
    assert_eq!(env["ip"], a(10), "{env:?}");
    assert_eq!(env["dns"], format!("{} {}", a(53), a(54)), "{env:?}");
    assert_eq!(env["ntpsrv"], a(123), "{env:?}");
    assert_eq!(env["search"], "e2e.test example.com", "{env:?}");
    assert_eq!(env["mtu"], "1400", "{env:?}");
    // The gateway is added as the default route: RFC 3442 clients ignore the router option.
    assert_eq!(
        env["staticroutes"],
        format!("10.200.0.0/16 {} 0.0.0.0/0 {}", a(2), a(1)),
        "{env:?}"
    );
    assert_eq!(env["boot_file"], "", "no profile, no boot file: {env:?}");

    // An alias resolves to the host's address; the PTR stays the host's name. A DNS-only name
    // resolves too.
    assert_eq!(w.lab.resolve("laser").await, vec![a(10)]);
    assert_eq!(w.lab.resolve("laser.e2e.test").await, vec![a(10)]);
    assert_eq!(
        w.lab.reverse(w.lab.addr(10)).await,
        vec!["printer.e2e.test.".to_owned()]
    );
    assert_eq!(w.lab.resolve("vip1.e2e.test").await, vec![a(60)]);

    // Assigning the profile is a SIGHUP (same dnsmasq), and the host now boots by it.
    let (pid, starts) = (w.lab.dnsmasq_pid(), w.lab.dnsmasq_starts());
    w.sql_and_reread(
        "UPDATE ipmanager.hosts SET profile_id = ipmanager.profile_id('pxe') WHERE hostname = 'pxe1'",
    )
    .await;
    assert_eq!((w.lab.dnsmasq_pid(), w.lab.dnsmasq_starts()), (pid, starts));
    let bios = w.lab.dhcp_env(pxe_host, &[]).await.expect("a lease");
    assert_eq!(bios["ip"], a(11), "{bios:?}");
    assert_eq!(bios["boot_file"], "pxelinux.0", "{bios:?}");
    assert_eq!(bios["siaddr"], a(5), "{bios:?}");
    assert_eq!(bios["sname"], "tftp.e2e.test", "{bios:?}");
    let uefi = w
        .lab
        .dhcp_env(pxe_host, &["-x", "0x5d:0007"])
        .await
        .expect("a lease");
    assert_eq!(uefi["boot_file"], "efi/grubx64.efi", "{uefi:?}");
    // iPXE says so in its user class ("iPXE").
    let ipxe = w
        .lab
        .dhcp_env(pxe_host, &["-x", "0x5d:0007", "-x", "0x4d:69505845"])
        .await
        .expect("a lease");
    assert_eq!(
        ipxe["boot_file"], "http://boot.e2e.test/menu.ipxe",
        "{ipxe:?}"
    );
    // The other host is in no profile.
    assert_eq!(
        w.lab.dhcp_env(pc, &[]).await.expect("a lease")["boot_file"],
        ""
    );

    // Editing the profile changes the include file: a restart, and the new file is served.
    w.sql_and_restart(
        "UPDATE ipmanager.profiles SET boot_file = 'bios/lpxelinux.0' WHERE name = 'pxe'",
    )
    .await;
    let bios = w.lab.dhcp_env(pxe_host, &[]).await.expect("a lease");
    assert_eq!(bios["boot_file"], "bios/lpxelinux.0", "{bios:?}");

    // No client is ever offered the DNS-only name's address: a dynamic client gets the pool.
    let dynamic = w
        .lab
        .dhcp_env("02:00:00:61:00:99", &[])
        .await
        .expect("a lease");
    assert_ne!(dynamic["ip"], a(60));
    assert!(!w
        .lease_lines()
        .iter()
        .any(|l| l.contains(&format!(" {} ", a(60)))));
    w.finish().await;
}

/// DHCPv6 and identifiers (issue 13): a real DHCPv6 client gets its reserved address, matched
/// by its DUID (`id:`) although the reservation's MAC is another; its AAAA and PTR resolve; a
/// changed IPv6 address is served after a SIGHUP, without a restart.
#[tokio::test]
async fn a_dhcpv6_client_gets_its_reservation_by_duid_and_a_new_address_without_a_restart() {
    const OCTET: u8 = 62;
    let Some(mut w) = World::start_dual(OCTET).await else {
        return;
    };
    let mac = [0x02, 0x00, 0x00, OCTET, 0x00, 0x01];
    let mac_text = |m: &[u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    // DUID-LL (type 3, hardware type 1) of the client's MAC, as most clients build it.
    let duid: Vec<u8> = [0x00, 0x03, 0x00, 0x01]
        .iter()
        .chain(&mac)
        .copied()
        .collect();
    let duid_text = duid
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let (first, second) = (w.lab.addr6(0x10), w.lab.addr6(0x11));
    // The reservation's MAC is not the client's: only the DUID can match it.
    let other = [0x02, 0x00, 0x00, OCTET, 0x00, 0x77];
    w.sql_and_reread(&format!(
        "INSERT INTO ipmanager.hosts (mac, ip, hostname, client_id)
         VALUES ('{}', '{first}', 'v6pc', '{duid_text}')",
        mac_text(&other)
    ))
    .await;
    assert!(w.include().contains("enable-ra\n"), "{}", w.include());
    let got = w.lab.dhcp6(&mac_text(&mac), &duid).await;
    assert_eq!(got, Some(first), "{}", w.lab.diagnostics());
    assert_eq!(
        w.lab.resolve6("v6pc.e2e.test").await,
        vec![first.to_string()]
    );
    assert_eq!(
        w.lab.reverse6(first).await,
        vec!["v6pc.e2e.test.".to_owned()]
    );

    // A new address: hostsfile and SIGHUP, the same dnsmasq; the client's next Solicit gets it.
    let (pid, starts) = (w.lab.dnsmasq_pid(), w.lab.dnsmasq_starts());
    w.sql_and_reread(&format!(
        "UPDATE ipmanager.hosts SET ip = '{second}' WHERE hostname = 'v6pc'"
    ))
    .await;
    assert_eq!((w.lab.dnsmasq_pid(), w.lab.dnsmasq_starts()), (pid, starts));
    let got = w.lab.dhcp6(&mac_text(&mac), &duid).await;
    assert_eq!(got, Some(second), "{}", w.lab.diagnostics());
    assert_eq!(
        w.lab.resolve6("v6pc.e2e.test").await,
        vec![second.to_string()]
    );
    assert_eq!(
        w.lab.reverse6(second).await,
        vec!["v6pc.e2e.test.".to_owned()]
    );

    // The old address's lease was released with dhcp_release6 when it stopped being served.
    let leased = |ip: std::net::Ipv6Addr, leases: &[String]| {
        let ip = format!(" {ip} ");
        leases
            .iter()
            .any(|l| l.contains(&ip) && l.ends_with(&duid_text))
    };
    w.wait_leases("the new lease only", |l| {
        leased(second, l) && !leased(first, l)
    })
    .await;
    // Deleted: the lease is released too, so the name goes from DNS at once.
    w.sql("DELETE FROM ipmanager.hosts WHERE hostname = 'v6pc'")
        .await;
    w.wait_leases("no lease of the deleted reservation", |l| {
        !leased(second, l)
    })
    .await;
    w.wait_unresolved("v6pc.e2e.test", "AAAA").await;
    assert_eq!(w.agent.status().release_error, None);
    w.finish().await;
}

/// Several MACs and a client-id (issue 13), with udhcpc: each of a laptop's two interfaces gets
/// the laptop's one address, one at a time; a client sending the reserved client-id from a MAC
/// no reservation has gets the reservation.
#[tokio::test]
async fn every_mac_of_a_reservation_and_its_client_id_get_its_address() {
    const OCTET: u8 = 63;
    let Some(mut w) = World::start(OCTET, "hostsfile").await else {
        return;
    };
    let (wired, wireless, thin, stranger) = (
        "02:00:00:63:00:01",
        "02:00:00:63:00:02",
        "02:00:00:63:00:03",
        "02:00:00:63:00:99",
    );
    let (laptop_ip, thin_ip) = (w.lab.addr(20), w.lab.addr(21));
    w.sql_and_reread(&format!(
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('{wired}', '{laptop_ip}', 'laptop');
         INSERT INTO ipmanager.host_macs (host_id, mac)
             SELECT id, '{wireless}' FROM ipmanager.hosts WHERE hostname = 'laptop';
         INSERT INTO ipmanager.hosts (mac, ip, hostname, client_id)
             VALUES ('{thin}', '{thin_ip}', 'thin', '01:de:ad:be:ef:00:01');"
    ))
    .await;
    w.assert_dhcp_gets(wired, laptop_ip).await;
    w.assert_dhcp_gets(wireless, laptop_ip).await;
    // dnsmasq gave the address to the interface that asked last; the other's lease is gone.
    w.wait_leases("the laptop's one lease, the wireless one", |leases| {
        leases
            .iter()
            .filter(|l| l.contains(&format!(" {laptop_ip} ")))
            .count()
            == 1
            && leases.iter().any(|l| l.contains(wireless))
    })
    .await;
    w.assert_resolves("laptop", laptop_ip).await;

    // Matched by client-id, whatever the MAC.
    let env = w
        .lab
        .dhcp_env(stranger, &["-C", "-x", "0x3d:01deadbeef0001"])
        .await
        .expect("a lease");
    assert_eq!(env["ip"], thin_ip.to_string(), "{env:?}");
    // Without the client-id that MAC is a stranger: a pool address.
    let env = w.lab.dhcp_env(stranger, &[]).await.expect("a lease");
    assert_ne!(env["ip"], thin_ip.to_string(), "{env:?}");
    w.finish().await;
}

/// Issue 13, stale leases: the agent releases the lease of a reservation dnsmasq no longer serves
/// (`dhcp_release` run in dnsmasq's namespace), and no other lease.
impl World {
    /// [`World::start`] with the agent releasing stale leases in the lab's dnsmasq; with the
    /// incremental layout, its directories in the lab and compactions only on request.
    async fn start_releasing(octet: u8, layout: &str) -> Option<World> {
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
        let dnsmasq_extra = releasing(&lab);
        let mut agent = AgentRun::start_with(&db, &lab, layout, "e2e", "", &dnsmasq_extra);
        agent.wait_in_sync().await;
        lab.start_dnsmasq().await;
        Some(World { agent, lab, db })
    }

    /// Runs `statement` and waits until the agent has done what it needs and is in sync.
    async fn sql_and_sync(&mut self, statement: &str) {
        let regenerations = self.agent.status().regenerations;
        self.sql(statement).await;
        self.agent
            .wait_status("a sync of the change", |s| {
                s.regenerations > regenerations && s.phase == Phase::InSync
            })
            .await;
    }

    fn has_lease(&self, mac: &str, ip: Ipv4Addr) -> bool {
        let wanted = format!(" {mac} {ip} ");
        self.lease_lines().iter().any(|l| l.contains(&wanted))
    }

    /// A one-shot client `mac` sending hostname `name` gets a pool address and keeps its lease.
    async fn dynamic_lease(&self, mac: &str, name: &str) -> Ipv4Addr {
        let hostname = format!("hostname:{name}");
        let env = self
            .lab
            .dhcp_env(mac, &["-x", &hostname])
            .await
            .expect("the dynamic client gets a lease");
        let ip: Ipv4Addr = env["ip"].parse().unwrap();
        assert!(
            (self.lab.addr(100)..=self.lab.addr(150)).contains(&ip),
            "{ip}"
        );
        self.wait_leases("the dynamic lease", |_| self.has_lease(mac, ip))
            .await;
        ip
    }

    /// Asserts that the dynamic lease is still there and its name resolves.
    async fn assert_dynamic_untouched(&self, mac: &str, name: &str, ip: Ipv4Addr) {
        assert!(self.has_lease(mac, ip), "{:?}", self.lease_lines());
        assert_eq!(
            self.lab.resolve(name).await,
            vec![ip.to_string()],
            "A {name}"
        );
    }

    /// Polls until `name` has no `record` (A, AAAA) any more; returns how long that took.
    async fn wait_unresolved(&self, name: &str, record: &str) -> std::time::Duration {
        let started = std::time::Instant::now();
        // A restart (the conf layout) leaves dnsmasq silent for a moment: that is not an answer.
        while !matches!(
            self.lab.try_dig(&[name, record]).await,
            Ok(answers) if answers.is_empty()
        ) {
            assert!(
                started.elapsed() < E2E_DEADLINE,
                "{name} still resolves; {}",
                self.lab.diagnostics()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
}

/// The `[dnsmasq]` keys of an agent that releases stale leases in the lab's dnsmasq (in its
/// namespace, from its interface), with the incremental layout's directories in the lab and
/// compactions only on request.
fn releasing(lab: &Lab) -> String {
    let extra = format!(
        "lease_file = {lease_file:?}\n\
         release_command = [\"ip\", \"netns\", \"exec\", {ns:?}, \"dhcp_release\"]\n\
         release6_command = [\"ip\", \"netns\", \"exec\", {ns:?}, \"dhcp_release6\"]\n\
         release_interface = {interface:?}\n\
         hosts_dir = {hosts_dir:?}\n\
         names_dir = {names_dir:?}\n\
         shards = 4\n\
         compaction_interval = \"1h\"\n",
        lease_file = lab.lease_file().display().to_string(),
        ns = lab.server_ns,
        interface = lab.server_if,
        hosts_dir = lab.path("dhcp-hosts.d").display().to_string(),
        names_dir = lab.path("hosts.d").display().to_string(),
    );
    for dir in ["dhcp-hosts.d", "hosts.d"] {
        std::fs::create_dir_all(lab.path(dir)).unwrap();
    }
    extra
}

/// Waits until `client` reports a lease on a pool address after its first `after` events.
async fn wait_bound_in_pool(
    lab: &Lab,
    client: &common::netns::DhcpClient,
    after: usize,
) -> Ipv4Addr {
    let deadline = std::time::Instant::now() + E2E_DEADLINE;
    loop {
        let bound = client.events().into_iter().skip(after).find_map(|e| {
            let ip: Ipv4Addr = e.strip_prefix("bound ")?.parse().ok()?;
            (lab.addr(100)..=lab.addr(150)).contains(&ip).then_some(ip)
        });
        if let Some(ip) = bound {
            return ip;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pool address: events {:?}; {}",
            client.events(),
            lab.diagnostics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// After a DELETE, the client's lease goes at once, so its name stops resolving within a second
/// (dnsmasq answers lease names too); at its next exchange the client gets a pool address; a
/// dynamic lease of another client stays, name and all.
async fn a_deleted_reservations_lease_is_released(octet: u8, layout: &str) {
    let Some(mut w) = World::start_releasing(octet, layout).await else {
        return;
    };
    let reserved = w.lab.addr(10);
    let (mac_a, mac_dyn) = (mac(octet), format!("02:00:00:99:{octet:02x}:77"));
    w.sql_and_sync(&insert_host(octet, 10)).await;
    let dynamic = w.dynamic_lease(&mac_dyn, "dyn1").await;
    let mut client = w.lab.dhcp_client(&mac_a);
    client
        .wait_event(&w.lab, &format!("bound {reserved}"), 0)
        .await;
    w.wait_leases("the reserved lease", |_| w.has_lease(&mac_a, reserved))
        .await;
    w.assert_resolves("h1", reserved).await;

    let deleted = std::time::Instant::now();
    w.sql("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    w.wait_unresolved("h1", "A").await;
    let took = deleted.elapsed();
    assert!(
        took < std::time::Duration::from_secs(1),
        "h1 resolved for {took:?}"
    );
    w.assert_not_resolved("h1", reserved).await;
    w.wait_leases("the released lease gone", |_| {
        !w.has_lease(&mac_a, reserved)
    })
    .await;
    w.agent
        .wait_status("no release pending", |s| {
            s.releases_pending == 0 && s.release_error.is_none()
        })
        .await;
    w.assert_dynamic_untouched(&mac_dyn, "dyn1", dynamic).await;

    // The client's next exchange (its renewal) ends in the pool.
    let seen = client.events().len();
    client.renew();
    let pool = wait_bound_in_pool(&w.lab, &client, seen).await;
    assert_ne!(pool, dynamic);
    w.assert_dynamic_untouched(&mac_dyn, "dyn1", dynamic).await;
    drop(client);
    w.finish().await;
}

#[tokio::test]
async fn a_deleted_reservations_lease_is_released_with_the_hostsfile_layout() {
    a_deleted_reservations_lease_is_released(71, "hostsfile").await;
}

#[tokio::test]
async fn a_deleted_reservations_lease_is_released_with_the_conf_layout() {
    a_deleted_reservations_lease_is_released(72, "conf").await;
}

/// An address moved from client A to client B: A's lease is released, so B is offered the
/// address at once (dnsmasq never offers an address leased to another MAC).
#[tokio::test]
async fn an_address_moved_to_another_client_is_offered_to_it_at_once() {
    const OCTET: u8 = 73;
    let Some(mut w) = World::start_releasing(OCTET, "hostsfile").await else {
        return;
    };
    let ip = w.lab.addr(10);
    let (mac_a, mac_b) = (mac(OCTET), format!("02:00:00:99:{OCTET:02x}:0b"));
    w.sql_and_sync(&insert_host(OCTET, 10)).await;
    let mut client = w.lab.dhcp_client(&mac_a);
    client.wait_event(&w.lab, &format!("bound {ip}"), 0).await;
    // A goes away without releasing, as a machine that is switched off.
    drop(client);
    w.wait_leases("A's lease", |_| w.has_lease(&mac_a, ip))
        .await;

    w.sql_and_sync(&format!(
        "UPDATE ipmanager.hosts SET mac = '{mac_b}' WHERE hostname = 'h1'"
    ))
    .await;
    w.wait_leases("A's lease released", |_| !w.has_lease(&mac_a, ip))
        .await;
    w.assert_dhcp_gets(&mac_b, ip).await;
    assert!(
        !w.lab.log().contains("because it is leased to"),
        "{}",
        w.lab.diagnostics()
    );
    w.finish().await;
}

/// The incremental layout: a deleted reservation is still served until the compaction, so its
/// lease is kept until then (released earlier, the client would be handed the same address
/// again); after the compaction it is released.
#[tokio::test]
async fn with_the_incremental_layout_a_deleted_reservations_lease_is_released_at_the_compaction() {
    const OCTET: u8 = 74;
    let Some(mut w) = World::start_releasing(OCTET, "incremental").await else {
        return;
    };
    let reserved = w.lab.addr(10);
    let (mac_a, mac_dyn) = (mac(OCTET), format!("02:00:00:99:{OCTET:02x}:77"));
    w.sql_and_sync(&insert_host(OCTET, 10)).await;
    w.lab
        .wait_log("dnsmasq to read the new shard", |log| {
            log.contains("inotify")
        })
        .await;
    let dynamic = w.dynamic_lease(&mac_dyn, "dyn1").await;
    let mut client = w.lab.dhcp_client(&mac_a);
    client
        .wait_event(&w.lab, &format!("bound {reserved}"), 0)
        .await;
    w.wait_leases("the reserved lease", |_| w.has_lease(&mac_a, reserved))
        .await;

    w.sql_and_sync("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    assert!(!w.agent.status().awaiting_compaction.is_empty());
    assert_eq!(w.agent.status().releases_pending, 0);
    assert!(w.has_lease(&mac_a, reserved), "{:?}", w.lease_lines());

    let compactions = w.agent.status().compactions;
    w.sql("SELECT ipmanager.request_compaction()").await;
    w.agent
        .wait_status("the compaction", |s| s.compactions > compactions)
        .await;
    w.wait_leases("the released lease gone", |_| {
        !w.has_lease(&mac_a, reserved)
    })
    .await;
    w.wait_unresolved("h1", "A").await;
    w.assert_dynamic_untouched(&mac_dyn, "dyn1", dynamic).await;
    let seen = client.events().len();
    client.renew();
    wait_bound_in_pool(&w.lab, &client, seen).await;
    drop(client);
    w.finish().await;
}

/// The incremental layout: an address moved from client A to client B waits for the compaction
/// (until then dnsmasq still offers it to A, so A's lease stays); after it, A's lease is released
/// and B is offered the address at once.
#[tokio::test]
async fn with_the_incremental_layout_a_moved_address_is_released_at_the_compaction() {
    const OCTET: u8 = 75;
    let Some(mut w) = World::start_releasing(OCTET, "incremental").await else {
        return;
    };
    let ip = w.lab.addr(10);
    let (mac_a, mac_b) = (mac(OCTET), format!("02:00:00:99:{OCTET:02x}:0b"));
    w.sql_and_sync(&insert_host(OCTET, 10)).await;
    w.lab
        .wait_log("dnsmasq to read the new shard", |log| {
            log.contains("inotify")
        })
        .await;
    let mut client = w.lab.dhcp_client(&mac_a);
    client.wait_event(&w.lab, &format!("bound {ip}"), 0).await;
    drop(client);
    w.wait_leases("A's lease", |_| w.has_lease(&mac_a, ip))
        .await;

    w.sql_and_sync(&format!(
        "UPDATE ipmanager.hosts SET mac = '{mac_b}' WHERE hostname = 'h1'"
    ))
    .await;
    assert!(!w.agent.status().awaiting_compaction.is_empty());
    assert_eq!(w.agent.status().releases_pending, 0);
    assert!(w.has_lease(&mac_a, ip), "{:?}", w.lease_lines());

    let compactions = w.agent.status().compactions;
    w.sql("SELECT ipmanager.request_compaction()").await;
    w.agent
        .wait_status("the compaction", |s| s.compactions > compactions)
        .await;
    w.wait_leases("A's lease released", |_| !w.has_lease(&mac_a, ip))
        .await;
    w.assert_dhcp_gets(&mac_b, ip).await;
    w.finish().await;
}

/// A reservation deleted while the agent was stopped: the agent finds it in the file it replaces
/// at its start, and releases its lease once the new file is in effect.
#[tokio::test]
async fn a_reservation_deleted_while_the_agent_was_stopped_is_released_at_its_start() {
    const OCTET: u8 = 76;
    let Some(mut w) = World::start_releasing(OCTET, "hostsfile").await else {
        return;
    };
    let reserved = w.lab.addr(10);
    let mac_a = mac(OCTET);
    w.sql_and_sync(&insert_host(OCTET, 10)).await;
    let mut client = w.lab.dhcp_client(&mac_a);
    client
        .wait_event(&w.lab, &format!("bound {reserved}"), 0)
        .await;
    drop(client);
    w.wait_leases("the reserved lease", |_| w.has_lease(&mac_a, reserved))
        .await;

    w.agent.stop().await;
    w.sql("DELETE FROM ipmanager.hosts WHERE hostname = 'h1'")
        .await;
    w.agent = AgentRun::start_with(&w.db, &w.lab, "hostsfile", "e2e", "", &releasing(&w.lab));
    w.agent.wait_in_sync().await;
    w.wait_leases("the released lease gone", |_| {
        !w.has_lease(&mac_a, reserved)
    })
    .await;
    w.wait_unresolved("h1", "A").await;
    w.finish().await;
}
