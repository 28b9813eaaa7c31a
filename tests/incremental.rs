//! Acceptance test of the incremental layout (issue 11): a real agent (`layout =
//! "incremental"`, 64 shards, a 3 s compaction interval), a real dnsmasq in the lab and 2,000
//! hosts go through a random sequence of at least 500 adds, address changes, renames, moves
//! (an address given to another host's MAC, a freed address reused) and deletes, interleaved
//! with `ipmanager compact` runs and one dnsmasq restart.
//!
//! After each step (one transaction) the test waits until the agent has applied it and dnsmasq
//! has read the changed files, then probes the touched hosts and a few others with
//! DHCPDISCOVERs and DNS queries. DNS must equal the database at once. DHCP must equal what the
//! test's own model of dnsmasq says, built from docs/dnsmasq-hostsdir.md's rules alone (not
//! from the planner): dnsmasq's log says which shard files it read and when it cleared its
//! memory (SIGHUP, start); each read adds the file's lines, refusing any address already held;
//! a client is served by the newest entry with its MAC. Which version of a file a read saw is
//! known except when a compaction's full read races the step's write; then the model keeps
//! both possibilities and the probes decide. Hosts the model shows awaiting a compaction must
//! be among the agent's reported `pending_hosts`. At the end, after a compaction, every MAC
//! ever used is probed and every name resolved: they must equal the database exactly.
//!
//! `IPMANAGER_INCREMENTAL_SEED=<n>` repeats a run (the seed is printed); `IPMANAGER_INCREMENTAL_STEPS`
//! changes the number of steps (default 520). Needs root, `ip netns`, dnsmasq, udhcpc and dig;
//! without them it prints `SKIPPED:` and passes, unless `IPMANAGER_REQUIRE_E2E=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::agent_process::{wait_applied, write_lab_agent_config, AgentProcess};
use common::binary;
use common::netns::Lab;
use common::probe::{format_mac, parse_mac, DhcpProber, DnsProber};
use common::TestDb;
use tokio_postgres::Client;

const OCTET: u8 = 60;
const AGENT: &str = "incremental";
const DOMAIN: &str = "inc.test";
const HOSTS: usize = 2000;
const SHARDS: u32 = 64;
/// How long one step may take to be applied and read by dnsmasq.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// Random hosts probed after each step, besides the ones it touched.
const RANDOM_SAMPLES: usize = 3;
/// `ipmanager compact` after every this many steps.
const COMPACT_EVERY: usize = 97;
/// How long a DISCOVER waits when every model says dnsmasq offers nothing (an answer that is
/// not there takes the whole wait; a lost packet is re-checked with a full [`DhcpProber::offer`]).
const SILENCE: Duration = Duration::from_millis(100);

/// A small deterministic generator (splitmix64), so that a seed repeats a run exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

#[derive(Debug, Clone)]
struct Host {
    id: i64,
    mac: [u8; 6],
    ip: Ipv4Addr,
    name: String,
}

/// The test's copy of the hosts table, and the addresses and MACs it has used.
struct Db {
    hosts: BTreeMap<i64, Host>,
    /// Addresses no host has now, that one had before: candidates for reuse.
    freed: Vec<Ipv4Addr>,
    /// Every address each host had, for changes back to an earlier one.
    history: BTreeMap<i64, Vec<Ipv4Addr>>,
    /// MACs of deleted hosts, with the host's id.
    deleted: Vec<([u8; 6], i64)>,
    next_ip: u32,
    next_mac: u32,
    next_name: u32,
}

fn address(n: u32) -> Ipv4Addr {
    // 10.99.64.0 + n, clear of the lab's 10.99.60.0/24.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 99, 64, 0)) + n)
}

impl Db {
    fn fresh_ip(&mut self) -> Ipv4Addr {
        self.next_ip += 1;
        address(self.next_ip)
    }

    fn fresh_mac(&mut self) -> [u8; 6] {
        self.next_mac += 1;
        let [_, b, c, d] = self.next_mac.to_be_bytes();
        [0x02, 0x01, 0, b, c, d]
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    fn random_host(&self, rng: &mut Rng) -> Host {
        let index = rng.below(self.hosts.len());
        self.hosts.values().nth(index).unwrap().clone()
    }

    /// A freed address (taken out of the list), or a fresh one.
    fn reused_or_fresh_ip(&mut self, rng: &mut Rng) -> Ipv4Addr {
        if self.freed.is_empty() {
            return self.fresh_ip();
        }
        let index = rng.below(self.freed.len());
        self.freed.swap_remove(index)
    }

    /// A host with an earlier address that no host has now, and that address (taken out of
    /// the freed ones), if any host has one.
    fn earlier_ip(&mut self, rng: &mut Rng) -> Option<(Host, Ipv4Addr)> {
        let taken: HashSet<Ipv4Addr> = self.hosts.values().map(|h| h.ip).collect();
        let choices: Vec<(i64, Ipv4Addr)> = self
            .history
            .iter()
            .filter(|(id, _)| self.hosts.contains_key(id))
            .flat_map(|(id, ips)| ips.iter().map(move |ip| (*id, *ip)))
            .filter(|(_, ip)| !taken.contains(ip))
            .collect();
        if choices.is_empty() {
            return None;
        }
        let (id, ip) = choices[rng.below(choices.len())];
        self.freed.retain(|f| *f != ip);
        Some((self.hosts[&id].clone(), ip))
    }

    fn set_ip(&mut self, id: i64, ip: Ipv4Addr) {
        let host = self.hosts.get_mut(&id).unwrap();
        self.freed.push(host.ip);
        host.ip = ip;
        self.history.entry(id).or_default().push(ip);
    }

    fn by_mac(&self) -> HashMap<[u8; 6], Ipv4Addr> {
        self.hosts.values().map(|h| (h.mac, h.ip)).collect()
    }
}

/// The kinds of step, for the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Add,
    AddReusing,
    NewAddress,
    ReusedAddress,
    EarlierAddress,
    Rename,
    Move,
    Delete,
}

/// One step: SQL run in one transaction, the MACs of the hosts it touched and the names it
/// took away.
struct Step {
    kind: Kind,
    touched: Vec<[u8; 6]>,
    gone_names: Vec<String>,
}

/// Picks a step, runs it in one transaction and mirrors it in `db`; returns the step and its
/// transaction id.
async fn random_step(client: &mut Client, db: &mut Db, rng: &mut Rng) -> (Step, String) {
    let transaction = client.transaction().await.unwrap();
    let update_ip = "UPDATE ipmanager.hosts SET ip = $1::text::inet WHERE id = $2";
    let roll = rng.below(100);
    let step = match roll {
        0..=19 => {
            let reuse = rng.percent(50) && !db.freed.is_empty();
            let ip = if reuse {
                db.reused_or_fresh_ip(rng)
            } else {
                db.fresh_ip()
            };
            let (mac, name) = (db.fresh_mac(), db.fresh_name("n"));
            let row = transaction
                .query_one(
                    "INSERT INTO ipmanager.hosts (mac, ip, hostname)
                     VALUES ($1::text::macaddr, $2::text::inet, $3) RETURNING id",
                    &[&format_mac(mac), &ip.to_string(), &name],
                )
                .await
                .unwrap();
            let id: i64 = row.get(0);
            db.hosts.insert(id, Host { id, mac, ip, name });
            db.history.insert(id, vec![ip]);
            Step {
                kind: if reuse { Kind::AddReusing } else { Kind::Add },
                touched: vec![mac],
                gone_names: Vec::new(),
            }
        }
        20..=44 => {
            let earlier = match rng.below(10) {
                8.. => db.earlier_ip(rng),
                _ => None,
            };
            let (kind, host, ip) = match earlier {
                Some((host, ip)) => (Kind::EarlierAddress, host, ip),
                None if rng.percent(50) && !db.freed.is_empty() => (
                    Kind::ReusedAddress,
                    db.random_host(rng),
                    db.reused_or_fresh_ip(rng),
                ),
                None => (Kind::NewAddress, db.random_host(rng), db.fresh_ip()),
            };
            transaction
                .execute(update_ip, &[&ip.to_string(), &host.id])
                .await
                .unwrap();
            db.set_ip(host.id, ip);
            Step {
                kind,
                touched: vec![host.mac],
                gone_names: Vec::new(),
            }
        }
        45..=59 => {
            let host = db.random_host(rng);
            let name = db.fresh_name("r");
            transaction
                .execute(
                    "UPDATE ipmanager.hosts SET hostname = $1 WHERE id = $2",
                    &[&name, &host.id],
                )
                .await
                .unwrap();
            db.hosts.get_mut(&host.id).unwrap().name = name;
            Step {
                kind: Kind::Rename,
                touched: vec![host.mac],
                gone_names: vec![host.name],
            }
        }
        60..=79 => {
            // a's address goes to b; a gets a fresh one; b's old address is freed.
            let a = db.random_host(rng);
            let mut b = db.random_host(rng);
            while b.id == a.id {
                b = db.random_host(rng);
            }
            let fresh = db.fresh_ip();
            transaction
                .execute(update_ip, &[&fresh.to_string(), &a.id])
                .await
                .unwrap();
            transaction
                .execute(update_ip, &[&a.ip.to_string(), &b.id])
                .await
                .unwrap();
            db.set_ip(a.id, fresh);
            db.freed.retain(|f| *f != a.ip);
            db.set_ip(b.id, a.ip);
            Step {
                kind: Kind::Move,
                touched: vec![a.mac, b.mac],
                gone_names: Vec::new(),
            }
        }
        _ => {
            let host = db.random_host(rng);
            transaction
                .execute("DELETE FROM ipmanager.hosts WHERE id = $1", &[&host.id])
                .await
                .unwrap();
            db.hosts.remove(&host.id);
            db.freed.push(host.ip);
            db.deleted.push((host.mac, host.id));
            Step {
                kind: Kind::Delete,
                touched: vec![host.mac],
                gone_names: vec![host.name],
            }
        }
    };
    let xid: String = transaction
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    transaction.commit().await.unwrap();
    (step, xid)
}

/// The reservations of one shard file: (MAC, IPv4 address) per line.
type Lines = Vec<([u8; 6], Ipv4Addr)>;

/// Every non-dot file in `dir` with its content.
fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            )
        })
        .collect()
}

/// A dhcp-hostsdir file's reservations: `MAC,IP,hostname[,lease]` lines.
fn reservations(content: &str) -> Lines {
    content
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut fields = l.split(',');
            let mac = parse_mac(fields.next().unwrap());
            let ip = fields.next().unwrap().parse().unwrap();
            (mac, ip)
        })
        .collect()
}

/// dnsmasq's DHCP memory of the hosts directory, by the rules of docs/dnsmasq-hostsdir.md.
#[derive(Clone, PartialEq, Eq, Default)]
struct Memory {
    /// Addresses of every loaded entry (dead ones too): an entry with one of them is refused.
    held: BTreeSet<Ipv4Addr>,
    /// The newest loaded entry's address per MAC: what dnsmasq offers that client.
    served: BTreeMap<[u8; 6], Ipv4Addr>,
}

impl Memory {
    /// A file read (whole): each line is added unless its address is held already.
    fn read(&mut self, lines: &Lines) {
        for (mac, ip) in lines {
            if self.held.insert(*ip) {
                self.served.insert(*mac, *ip);
            }
        }
    }
}

/// What dnsmasq logged that changes its DHCP memory.
enum Event {
    /// A SIGHUP or start: every directory entry is dropped, then every file read.
    Cleared,
    /// A file read, because of inotify or as part of a full read.
    Read(String),
    /// inotify told dnsmasq that the file changed: from here on it reads the new version.
    Noticed(String),
}

fn events(lines: &[String], hosts_dir: &str) -> Vec<Event> {
    let read = format!(": read {hosts_dir}/");
    let noticed = format!(": inotify: {hosts_dir}/");
    lines
        .iter()
        .filter_map(|line| {
            if line.ends_with("]: cleared cache") {
                Some(Event::Cleared)
            } else if let Some((_, file)) = line.split_once(&read) {
                Some(Event::Read(file.to_owned()))
            } else if let Some((_, rest)) = line.split_once(&noticed) {
                let file = rest.split_once(' ').map_or(rest, |(file, _)| file);
                Some(Event::Noticed(file.to_owned()))
            } else {
                None
            }
        })
        .collect()
}

/// The possible states of dnsmasq's memory: one, unless a full read raced a write.
struct Model {
    candidates: Vec<Memory>,
    /// The DHCP files before and after the current step.
    before: BTreeMap<String, Lines>,
    after: BTreeMap<String, Lines>,
    most_candidates: usize,
}

impl Model {
    /// Applies a step's log events. A read of a file the step changed, before dnsmasq noticed
    /// the change, may have seen either version.
    fn apply(&mut self, events: &[Event]) {
        let mut noticed = HashSet::new();
        for event in events {
            match event {
                Event::Cleared => self
                    .candidates
                    .iter_mut()
                    .for_each(|m| *m = Memory::default()),
                Event::Noticed(file) => {
                    noticed.insert(file.clone());
                }
                Event::Read(file) => {
                    let empty = Lines::new();
                    let new = self.after.get(file).unwrap_or(&empty);
                    let old = self.before.get(file).unwrap_or(&empty);
                    let mut next = Vec::new();
                    for memory in &self.candidates {
                        let versions: &[&Lines] = if old == new || noticed.contains(file) {
                            &[new]
                        } else {
                            &[old, new]
                        };
                        for version in versions {
                            let mut m = memory.clone();
                            m.read(version);
                            if !next.contains(&m) {
                                next.push(m);
                            }
                        }
                    }
                    self.candidates = next;
                }
            }
        }
        self.most_candidates = self.most_candidates.max(self.candidates.len());
        assert!(self.candidates.len() <= 64, "the model forked too often");
    }
}

/// New lines of dnsmasq's log since the last call.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn lines(&mut self) -> Vec<String> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut text = String::new();
        self.offset += file.read_to_string(&mut text).unwrap() as u64;
        self.partial.push_str(&text);
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let rest = self.partial.split_off(complete);
        let lines = std::mem::replace(&mut self.partial, rest);
        lines.lines().map(str::to_owned).collect()
    }
}

/// The files both directories hold, DHCP lines parsed.
fn dhcp_files(lab: &Lab) -> BTreeMap<String, Lines> {
    read_dir(&lab.hosts_dir())
        .into_iter()
        .map(|(name, content)| (name, reservations(&content)))
        .collect()
}

/// Paths of files that differ between two listings of `dir`.
fn changed_paths(
    dir: &Path,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| format!("{}/{name}", dir.display()))
        .collect()
}

/// The running world: lab, agent, database, probers, the model and the figures.
struct World {
    lab: Lab,
    _agent: AgentProcess,
    db_handle: TestDb,
    client: Client,
    dhcp: DhcpProber,
    dns: DnsProber,
    db: Db,
    model: Model,
    tail: LogTail,
    /// Both directories as last read.
    listing: (BTreeMap<String, String>, BTreeMap<String, String>),
    samples: usize,
    pending_samples: usize,
    /// Checks repeated because dnsmasq read files (a compaction) while they probed.
    raced_compactions: usize,
}

impl World {
    async fn start() -> Option<World> {
        let mut lab = Lab::new(OCTET)?;
        let db_handle = TestDb::new().await;
        let mut client = db_handle.client().await;
        let transaction = client.transaction().await.unwrap();
        transaction
            .batch_execute(&format!(
                "INSERT INTO ipmanager.subnets (name, cidr, gateway, domain)
                 VALUES ('lab', '10.99.0.0/16', '10.99.{OCTET}.1', '{DOMAIN}');
                 INSERT INTO ipmanager.hosts (mac, ip, hostname)
                 SELECT ('020000' || lpad(to_hex(i), 6, '0'))::macaddr,
                        '10.99.64.0'::inet + i, 'h' || i
                 FROM generate_series(1, {HOSTS}) AS i"
            ))
            .await
            .unwrap();
        let loaded: String = transaction
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .unwrap()
            .get(0);
        transaction.commit().await.unwrap();
        let mut db = Db {
            hosts: BTreeMap::new(),
            freed: Vec::new(),
            history: BTreeMap::new(),
            deleted: Vec::new(),
            next_ip: HOSTS as u32,
            next_mac: 0,
            next_name: 0,
        };
        for row in client
            .query(
                "SELECT id, mac::text, host(ip), hostname FROM ipmanager.hosts",
                &[],
            )
            .await
            .unwrap()
        {
            let ip: Ipv4Addr = row.get::<_, String>(2).parse().unwrap();
            let host = Host {
                id: row.get(0),
                mac: parse_mac(&row.get::<_, String>(1)),
                ip,
                name: row.get(3),
            };
            db.history.insert(host.id, vec![ip]);
            db.hosts.insert(host.id, host);
        }

        let config = write_lab_agent_config(
            &lab,
            &db_handle.url,
            AGENT,
            "incremental",
            &format!("shards = {SHARDS}\ncompaction_interval = \"3s\"\ncheck_command = []"),
        );
        let agent = AgentProcess::spawn(binary::command(
            &["agent", "--config", config.to_str().unwrap()],
            &[],
        ));
        assert!(
            wait_applied(&client, AGENT, &loaded, STEP_DEADLINE).await,
            "the agent never applied the load:\n{}",
            agent.log()
        );
        let tail = LogTail {
            path: lab.log_file(),
            offset: 0,
            partial: String::new(),
        };
        lab.start_dnsmasq().await;
        let files = dhcp_files(&lab);
        let listing = (read_dir(&lab.hosts_dir()), read_dir(&lab.names_dir()));
        let (dhcp, dns) = (DhcpProber::new(&lab), DnsProber::new(&lab));
        let mut world = World {
            lab,
            _agent: agent,
            db_handle,
            client,
            dhcp,
            dns,
            db,
            model: Model {
                candidates: vec![Memory::default()],
                before: files.clone(),
                after: files,
                most_candidates: 1,
            },
            tail,
            listing,
            samples: 0,
            pending_samples: 0,
            raced_compactions: 0,
        };
        world.follow_log().await;
        Some(world)
    }

    /// Feeds the model every log line up to now: a DNS query answered after this call began
    /// comes after every read dnsmasq had started. Returns whether dnsmasq cleared its memory
    /// or read a file in those lines (a compaction's full read may have been only partly
    /// logged at the previous call).
    async fn follow_log(&mut self) -> bool {
        self.dns
            .query("follow.invalid", Duration::from_secs(5))
            .await
            .expect("dnsmasq answers");
        let lines = self.tail.lines();
        let hosts_dir = self.lab.hosts_dir().display().to_string();
        let events = events(&lines, &hosts_dir);
        self.model.apply(&events);
        events
            .iter()
            .any(|e| matches!(e, Event::Cleared | Event::Read(_)))
    }

    /// After a step is applied: waits until dnsmasq noticed every changed file, then updates
    /// the model.
    async fn wait_read(&mut self) {
        let listing = (
            read_dir(&self.lab.hosts_dir()),
            read_dir(&self.lab.names_dir()),
        );
        let mut waiting: Vec<String> =
            changed_paths(&self.lab.hosts_dir(), &self.listing.0, &listing.0);
        waiting.extend(changed_paths(
            &self.lab.names_dir(),
            &self.listing.1,
            &listing.1,
        ));
        self.listing = listing;
        self.model.before = std::mem::take(&mut self.model.after);
        self.model.after = dhcp_files(&self.lab);
        let hosts_dir = self.lab.hosts_dir().display().to_string();
        let start = Instant::now();
        let mut lines = Vec::new();
        loop {
            lines.extend(self.tail.lines());
            waiting.retain(|path| {
                let noticed = format!(": inotify: {path} ");
                !lines.iter().any(|l| l.contains(&noticed))
            });
            if waiting.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < STEP_DEADLINE,
                "dnsmasq never noticed {waiting:?}; {}",
                self.lab.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.model.apply(&events(&lines, &hosts_dir));
        self.follow_log().await;
    }

    /// Probes `macs`: each must be offered what some state of the model says; the model keeps
    /// only the states every answer agrees with. A compaction may run while the probes do (the
    /// agent's timer does not wait for the test); when dnsmasq has cleared its memory or read
    /// files since the model was updated, the model follows and the probes are repeated.
    async fn check_dhcp(&mut self, macs: &[[u8; 6]]) {
        loop {
            let observed = self.probe(macs).await;
            let consistent = |m: &Memory| {
                observed
                    .iter()
                    .all(|(mac, got)| m.served.get(mac).copied() == *got)
            };
            if self.model.candidates.iter().any(consistent) {
                self.model.candidates.retain(consistent);
                let truth = self.db.by_mac();
                self.samples += observed.len();
                self.pending_samples += observed
                    .iter()
                    .filter(|(mac, got)| truth.get(mac).copied() != *got)
                    .count();
                return;
            }
            let before = self.model.candidates.clone();
            if !self.follow_log().await {
                self.fail(&observed, &before);
            }
            self.raced_compactions += 1;
        }
    }

    /// What dnsmasq offers each of `macs` now.
    async fn probe(&self, macs: &[[u8; 6]]) -> Vec<([u8; 6], Option<Ipv4Addr>)> {
        let mut observed = Vec::with_capacity(macs.len());
        for &mac in macs {
            let silent = self
                .model
                .candidates
                .iter()
                .all(|m| !m.served.contains_key(&mac));
            let mut offered = if silent {
                self.dhcp.discover(mac, SILENCE).await
            } else {
                self.dhcp.offer(mac).await
            };
            if offered.is_none() && !silent {
                offered = self.dhcp.offer(mac).await;
            }
            observed.push((mac, offered));
        }
        observed
    }

    /// Fails the test with what was offered, and what the database and each model state say.
    fn fail(&self, observed: &[([u8; 6], Option<Ipv4Addr>)], before: &[Memory]) -> ! {
        let truth = self.db.by_mac();
        let report: Vec<String> = observed
            .iter()
            .map(|(mac, got)| {
                let models: Vec<Option<Ipv4Addr>> =
                    before.iter().map(|m| m.served.get(mac).copied()).collect();
                format!(
                    "{}: offered {got:?}, database {:?}, model {models:?}",
                    format_mac(*mac),
                    truth.get(mac)
                )
            })
            .collect();
        let kept =
            std::env::temp_dir().join(format!("ipmanager-incremental-{}.log", std::process::id()));
        let _ = std::fs::copy(self.lab.log_file(), &kept);
        panic!(
            "dnsmasq served what no model state says (its whole log: {}):\n{}\n{}",
            kept.display(),
            report.join("\n"),
            self.lab.diagnostics()
        );
    }

    /// The hosts the model shows awaiting a compaction (served otherwise than the database
    /// says) must be among the agent's `pending_hosts`, when the model is certain.
    async fn check_pending(&mut self, macs: &[[u8; 6]]) {
        let [memory] = self.model.candidates.as_slice() else {
            return;
        };
        let truth = self.db.by_mac();
        let ids: HashMap<[u8; 6], i64> = self
            .db
            .hosts
            .values()
            .map(|h| (h.mac, h.id))
            .chain(self.db.deleted.iter().map(|(mac, id)| (*mac, *id)))
            .collect();
        let awaiting: BTreeSet<i64> = macs
            .iter()
            .filter(|mac| memory.served.get(*mac) != truth.get(*mac))
            .map(|mac| ids[mac])
            .collect();
        if awaiting.is_empty() {
            return;
        }
        let row = self
            .client
            .query_one(
                "SELECT coalesce(pending_hosts, '{}') FROM ipmanager.agent_status WHERE name = $1",
                &[&AGENT],
            )
            .await
            .unwrap();
        let reported: BTreeSet<i64> = row.get::<_, Vec<i64>>(0).into_iter().collect();
        // A compaction since the model was updated would have emptied the report legitimately;
        // dnsmasq has logged any SIGHUP sent before the report once it answers this query.
        self.dns
            .query("pending.invalid", Duration::from_secs(5))
            .await
            .expect("dnsmasq answers");
        let lines = self.tail.lines();
        let hosts_dir = self.lab.hosts_dir().display().to_string();
        let new_events = events(&lines, &hosts_dir);
        let compacted = new_events.iter().any(|e| matches!(e, Event::Cleared));
        self.model.apply(&new_events);
        if !compacted {
            let missing: Vec<&i64> = awaiting.difference(&reported).collect();
            assert!(
                missing.is_empty(),
                "hosts {missing:?} await a compaction but the agent reports only {reported:?}"
            );
        }
    }

    /// Every touched host's name resolves to its address; removed names do not resolve.
    async fn check_dns(&self, names: &[(String, Option<Ipv4Addr>)]) {
        for (name, ip) in names {
            let answer = self
                .dns
                .query(name, Duration::from_secs(2))
                .await
                .unwrap_or_else(|| panic!("no DNS answer for {name}"));
            assert_eq!(answer, ip.iter().copied().collect::<Vec<_>>(), "{name}");
        }
    }

    fn fqdn(name: &str) -> String {
        format!("{name}.{DOMAIN}")
    }

    /// `ipmanager compact`, then the model follows dnsmasq's full read.
    async fn compact(&mut self) {
        let output = binary::command(
            &["compact", "--timeout", "60s"],
            &[("IPMANAGER_DATABASE_URL", &self.db_handle.url)],
        )
        .output()
        .unwrap();
        binary::assert_exit(&output, 0, "ipmanager compact");
        self.follow_log().await;
    }

    /// Stops dnsmasq; the lab's supervisor starts it again, which reads every file.
    async fn restart_dnsmasq(&mut self) {
        let starts = self.lab.dnsmasq_starts();
        let script = self.lab.restart_command();
        let status = std::process::Command::new(&script[0]).status().unwrap();
        assert!(status.success(), "the restart script failed");
        self.lab.wait_dnsmasq_ready(starts).await;
        self.follow_log().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_changes_compactions_and_a_restart_serve_the_database() {
    let seed: u64 = std::env::var("IPMANAGER_INCREMENTAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let steps: usize = std::env::var("IPMANAGER_INCREMENTAL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(520);
    report(&format!(
        "incremental acceptance: seed {seed} (IPMANAGER_INCREMENTAL_SEED={seed} repeats it)"
    ));
    let Some(mut world) = World::start().await else {
        return;
    };
    let began = Instant::now();
    let mut rng = Rng(seed);
    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut compact_runs = 0;
    for n in 1..=steps {
        let (step, xid) = random_step(&mut world.client, &mut world.db, &mut rng).await;
        *kinds.entry(step.kind).or_default() += 1;
        assert!(
            wait_applied(&world.client, AGENT, &xid, STEP_DEADLINE).await,
            "step {n} ({:?}) was never applied (seed {seed}); {}",
            step.kind,
            world.lab.diagnostics()
        );
        world.wait_read().await;

        let mut macs = step.touched.clone();
        for _ in 0..RANDOM_SAMPLES {
            macs.push(world.db.random_host(&mut rng).mac);
        }
        if !world.db.deleted.is_empty() {
            let index = rng.below(world.db.deleted.len());
            macs.push(world.db.deleted[index].0);
        }
        world.check_dhcp(&macs).await;
        world.check_pending(&macs).await;
        let names: Vec<(String, Option<Ipv4Addr>)> = world
            .db
            .hosts
            .values()
            .filter(|h| step.touched.contains(&h.mac))
            .map(|h| (World::fqdn(&h.name), Some(h.ip)))
            .chain(step.gone_names.iter().map(|n| (World::fqdn(n), None)))
            .collect();
        world.check_dns(&names).await;

        if n % COMPACT_EVERY == 0 {
            world.compact().await;
            compact_runs += 1;
        }
        if n == steps / 2 {
            world.restart_dnsmasq().await;
        }
    }

    // The end: after a compaction, everything equals the database exactly.
    world.compact().await;
    compact_runs += 1;
    let truth = world.db.by_mac();
    let mut macs: Vec<[u8; 6]> = truth.keys().copied().collect();
    macs.extend(world.db.deleted.iter().map(|(mac, _)| *mac));
    let offered = world.dhcp.offers(&macs).await;
    let wrong: Vec<String> = macs
        .iter()
        .zip(&offered)
        .filter(|(mac, got)| truth.get(*mac) != got.as_ref())
        .map(|(mac, got)| {
            format!(
                "{}: offered {got:?}, database {:?}",
                format_mac(*mac),
                truth.get(mac)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "after the final compaction (seed {seed}):\n{}",
        wrong.join("\n")
    );
    verify_names(&world).await;
    verify_mirror(&world).await;

    let sighups = world
        .lab
        .log()
        .lines()
        .filter(|l| l.ends_with("]: cleared cache"))
        .count();
    report(&format!(
        "incremental acceptance: {steps} steps {kinds:?} in {:.1} s; {compact_runs} ipmanager \
         compact runs; {} full reads by dnsmasq (2 starts, the rest compactions); {} DHCP \
         samples during the steps, {} of them awaiting a compaction; at most {} model states; \
         {} checks repeated because dnsmasq read files during them; final check: {} MACs probed, \
         {} names resolved (seed {seed})",
        began.elapsed().as_secs_f64(),
        sighups,
        world.samples,
        world.pending_samples,
        world.model.most_candidates,
        world.raced_compactions,
        macs.len(),
        world.db.hosts.len(),
    ));
}

/// Every live host's name resolves to exactly its address; deleted and renamed-away names do
/// not resolve.
async fn verify_names(world: &World) {
    let rows = world
        .client
        .query(
            "SELECT h.hostname || '.' || s.domain, host(h.ip)
             FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id",
            &[],
        )
        .await
        .unwrap();
    let truth: HashMap<String, Vec<Ipv4Addr>> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                vec![r.get::<_, String>(1).parse().unwrap()],
            )
        })
        .collect();
    let mut names: Vec<String> = truth.keys().cloned().collect();
    // Names that must be gone: every "h"/"n"/"r" name ever given and not live now.
    let gone: Vec<String> = (1..=HOSTS)
        .map(|i| format!("h{i}"))
        .chain((1..=world.db.next_name).flat_map(|i| [format!("n{i}"), format!("r{i}")]))
        .map(|name| World::fqdn(&name))
        .filter(|name| !truth.contains_key(name))
        .collect();
    names.extend(gone.iter().cloned());
    let answers = world.lab.resolve_all(&names).await;
    let wrong: Vec<String> = names
        .iter()
        .filter(|name| answers.get(*name) != truth.get(*name))
        .map(|name| {
            format!(
                "{name}: {:?}, database {:?}",
                answers.get(name),
                truth.get(name)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "names after the final compaction:\n{}",
        wrong.join("\n")
    );
}

/// The test's mirror equals the database (so the checks compared against the truth).
async fn verify_mirror(world: &World) {
    let rows = world
        .client
        .query("SELECT mac::text, host(ip) FROM ipmanager.hosts", &[])
        .await
        .unwrap();
    let database: HashMap<[u8; 6], Ipv4Addr> = rows
        .iter()
        .map(|r| {
            (
                parse_mac(&r.get::<_, String>(0)),
                r.get::<_, String>(1).parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(database, world.db.by_mac());
}

/// Prints to stderr directly: the test harness hides captured output of passing tests.
fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
