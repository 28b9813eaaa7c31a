//! Property tests of the incremental layout:
//!
//! - its shard files hold exactly the hostsfile layout's lines, and its include file differs
//!   from that layout's only in the two path lines;
//! - over random sequences of snapshots and compactions, the planner ([`ipmanager::plan`])
//!   agrees with a straightforward simulator of dnsmasq 2.90's `--dhcp-hostsdir`, written here
//!   from the rules alone: a list of loaded entries, every written file re-read whole, an IPv4
//!   line refused when any loaded entry holds its address, the newest entry for a client
//!   identifier, else for a MAC (any of a line's MACs), within a subnet's network served
//!   (dnsmasq's `find_config_match`), deleted files ignored, and a full read starting from
//!   nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use cidr::IpCidr;
use ipmanager::client_id::ClientId;
use ipmanager::model::{Extras, Host, HostSettings, Snapshot, Subnet};
use ipmanager::plan::{plan, Loaded};
use ipmanager::release::reservations_in;
use ipmanager::render::check::{check_file, FileKind};
use ipmanager::render::{
    render, render_scoped, shard_file_name, shard_of, Layout, LayoutKind, Rendered, Sharded,
};
use proptest::prelude::*;
use proptest::sample::Index;

mod common;

use common::arb::{arb_path, arb_snapshot};

/// The names' shard count the tests pair with `shards` reservation shards: another number, so
/// that nothing may assume a host's two files share one.
fn names_shards_for(shards: u32) -> u32 {
    shards.saturating_mul(3).saturating_add(1)
}

fn layout(kind: LayoutKind, shards: u32) -> Layout {
    Layout {
        kind,
        hosts_file: "/var/lib/ipmanager/dhcp-hosts".into(),
        addn_hosts_file: "/var/lib/ipmanager/hosts".into(),
        hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
        names_dir: "/var/lib/ipmanager/hosts.d".into(),
        shards,
        names_shards: names_shards_for(shards),
    }
}

fn sorted_lines<'a>(texts: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let mut lines: Vec<&str> = texts
        .into_iter()
        .flat_map(|text| text.split_terminator('\n'))
        .collect();
    lines.sort_unstable();
    lines
}

/// A reservation line read back.
struct Line {
    client_id: Option<Vec<u8>>,
    macs: Vec<[u8; 6]>,
    ip: IpAddr,
}

/// `[id:CLIENTID,]MAC[,MAC…][,set:…],IP,...` read back.
fn parse_line(line: &str) -> Line {
    let hex = |text: &str| -> Vec<u8> {
        text.split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    let mut parsed = Line {
        client_id: None,
        macs: Vec::new(),
        ip: IpAddr::from([0, 0, 0, 0]),
    };
    for field in line.split(',') {
        if let Some(id) = field.strip_prefix("id:") {
            parsed.client_id = Some(hex(id));
        } else if field.len() == 17 && !field.starts_with('[') {
            parsed.macs.push(hex(field).try_into().unwrap());
        } else if !field.starts_with("set:") {
            let ip = field.trim_start_matches('[').trim_end_matches(']');
            parsed.ip = ip.parse().unwrap();
            return parsed;
        }
    }
    panic!("no address in {line}")
}

/// The first MAC and the address.
fn parse_reservation(line: &str) -> ([u8; 6], IpAddr) {
    let line = parse_line(line);
    (line.macs[0], line.ip)
}

/// `a` is `b` with some lines left out, the rest in the same order.
fn is_subsequence(a: &str, b: &str) -> bool {
    let mut b = b.split_terminator('\n');
    a.split_terminator('\n')
        .all(|line| b.any(|other| other == line))
}

/// Property (a): the incremental render against the hostsfile render of the same snapshot.
fn check_sharded(snapshot: &Snapshot, names_only: &[i64], paths: &Layout, shards: u32) {
    let flat_layout = Layout {
        kind: LayoutKind::Hostsfile,
        ..paths.clone()
    };
    let sharded_layout = Layout {
        kind: LayoutKind::Incremental,
        shards,
        names_shards: names_shards_for(shards),
        ..paths.clone()
    };
    let flat = render_scoped(snapshot, &flat_layout, names_only);
    let incremental = render_scoped(snapshot, &sharded_layout, names_only);
    assert_eq!(incremental.hosts, None);
    assert_eq!(incremental.addn_hosts, None);
    assert_eq!(flat.sharded, None);
    assert_eq!(incremental.hosts_served, flat.hosts_served);
    assert_eq!(incremental.skipped, flat.skipped);
    let sharded = incremental.sharded.as_ref().unwrap();
    assert_eq!(
        sharded.shards,
        shards.clamp(1, ipmanager::render::MAX_SHARDS)
    );
    let hosts = flat.hosts.as_ref().unwrap();
    let addn_hosts = flat.addn_hosts.as_ref().unwrap();

    // The same lines, each shard's in the flat file's order; no empty shard file.
    assert_eq!(sorted_lines(sharded.dhcp.values()), sorted_lines([hosts]));
    assert_eq!(
        sorted_lines(sharded.dns.values()),
        sorted_lines([addn_hosts])
    );
    assert_eq!(
        sharded.names_shards,
        (names_shards_for(shards)).clamp(1, ipmanager::render::MAX_SHARDS)
    );
    for (shard, text) in &sharded.dhcp {
        assert!(*shard < sharded.shards && !text.is_empty());
        assert!(is_subsequence(text, hosts));
    }
    for (shard, text) in &sharded.dns {
        assert!(*shard < sharded.names_shards && !text.is_empty());
        assert!(is_subsequence(text, addn_hosts));
    }
    for text in sharded.dhcp.values() {
        check_file(FileKind::HostsFile, text).unwrap();
    }
    for text in sharded.dns.values() {
        check_file(FileKind::AddnHosts, text).unwrap();
    }
    check_file(FileKind::Include, &incremental.include).unwrap();

    // Each line is in the shard of the host it serves; the entries describe the lines.
    let served: Vec<&Host> = snapshot
        .hosts
        .iter()
        .filter(|h| {
            !flat
                .skipped
                .iter()
                .any(|s| s.row == ipmanager::render::Row::Host(h.id))
        })
        .collect();
    let by_ip = |ip: IpAddr| -> Vec<&&Host> { served.iter().filter(|h| h.ip == ip).collect() };
    for (&shard, text) in &sharded.dns {
        for line in text.split_terminator('\n') {
            let ip: IpAddr = line.split(' ').next().unwrap().parse().unwrap();
            assert!(by_ip(ip)
                .iter()
                .any(|h| shard_of(h.id, sharded.names_shards) == shard));
        }
    }
    assert_eq!(sharded.entries.len(), hosts.split_terminator('\n').count());
    let mut seen = 0;
    for &shard in sharded.dhcp.keys() {
        for (entry, line) in sharded.reservations(shard) {
            seen += 1;
            assert_eq!(entry.shard, shard);
            assert_eq!(shard_of(entry.host_id, sharded.shards), shard);
            assert_eq!(parse_reservation(line), (entry.mac, entry.ip));
            assert!(served.iter().any(|h| (h.id, h.subnet_id, h.mac, h.ip)
                == (entry.host_id, entry.subnet_id, entry.mac, entry.ip)));
        }
    }
    assert_eq!(seen, sharded.entries.len());

    // The include differs in the two path lines only.
    let flat_lines: Vec<&str> = flat.include.lines().collect();
    let lines: Vec<&str> = incremental.include.lines().collect();
    assert_eq!(lines.len(), flat_lines.len());
    assert_eq!(lines[0], flat_lines[0]);
    assert_eq!(lines[3..], flat_lines[3..]);
    for (line, (option, path)) in lines[1..3].iter().zip([
        ("dhcp-hostsdir", &paths.hosts_dir),
        ("hostsdir", &paths.names_dir),
    ]) {
        let expected = match path.to_str() {
            Some(text) if ipmanager::render::validate::file_path(path).is_ok() => {
                format!("{option}={text}")
            }
            _ => format!("# {option} omitted: the configured path is not safe in a dnsmasq line"),
        };
        assert_eq!(*line, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator

/// dnsmasq's view: the files of the two directories and the loaded DHCP entries, oldest first.
#[derive(Default)]
struct Dnsmasq {
    dhcp: BTreeMap<String, String>,
    dns: BTreeMap<String, String>,
    loaded: Vec<String>,
}

impl Dnsmasq {
    /// A file written (or renamed) into the hosts directory: every line loaded, unless it is
    /// IPv4 and some loaded line holds its address.
    fn read(&mut self, text: &str) {
        for line in text.lines() {
            let (_, ip) = parse_reservation(line);
            let taken = ip.is_ipv4()
                && self
                    .loaded
                    .iter()
                    .any(|other| parse_reservation(other).1 == ip);
            if !taken {
                self.loaded.push(line.to_owned());
            }
        }
    }

    /// Start or SIGHUP: forget everything, read every file.
    fn full_read(&mut self) {
        self.loaded.clear();
        let files: Vec<String> = self.dhcp.values().cloned().collect();
        for text in files {
            self.read(&text);
        }
    }

    /// The newest loaded line for `key` with an address in `network`.
    fn newest(&self, network: IpCidr, key: Key) -> Option<&str> {
        self.loaded.iter().rev().map(String::as_str).find(|line| {
            let line = parse_line(line);
            let has = match key {
                Key::Mac(mac) => line.macs.contains(&mac),
                Key::Client(c) => line.client_id.as_deref() == Some(&CLIENT_IDS[c][..]),
            };
            has && network.contains(&line.ip)
        })
    }

    /// The line a client with `client` (an index of [`CLIENT_IDS`]) and `mac` is served: the
    /// newest with its identifier, else the newest with its MAC.
    fn served(&self, network: IpCidr, client: Option<usize>, mac: [u8; 6]) -> Option<&str> {
        client
            .and_then(|c| self.newest(network, Key::Client(c)))
            .or_else(|| self.newest(network, Key::Mac(mac)))
    }

    /// Applies one directory's part of a plan: writes (re-read) and deletions (ignored by the
    /// DHCP side).
    fn apply(&mut self, plan: &[(u32, Option<String>)], dhcp: bool) {
        for (shard, content) in plan {
            let name = shard_file_name(*shard);
            let files = if dhcp { &mut self.dhcp } else { &mut self.dns };
            // The plan lists only files that change.
            assert_ne!(files.get(&name), content.as_ref(), "shard {name} unchanged");
            match content {
                Some(text) => {
                    files.insert(name, text.clone());
                    if dhcp {
                        self.read(text);
                    }
                }
                None => {
                    files.remove(&name);
                }
            }
        }
    }

    /// Whether the loaded lines differ from those of a full read of the files (as multisets).
    fn debt(&self) -> bool {
        let mut fresh = Dnsmasq {
            dhcp: self.dhcp.clone(),
            ..Dnsmasq::default()
        };
        fresh.full_read();
        let mut now = self.loaded.clone();
        now.sort_unstable();
        fresh.loaded.sort_unstable();
        now != fresh.loaded
    }
}

fn named(files: &BTreeMap<u32, String>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(&shard, text)| (shard_file_name(shard), text.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sequences of snapshots with many collisions

const MACS: [[u8; 6]; 4] = [
    [0x52, 0x54, 0, 0, 0, 1],
    [0x52, 0x54, 0, 0, 0, 2],
    [0x02, 0, 0, 0, 0, 3],
    [0x02, 0, 0, 0, 0, 4],
];
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const CLIENT_IDS: [[u8; 3]; 2] = [[1, 2, 3], [0, 1, 0xff]];

/// What dnsmasq finds a reservation by, within a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Mac([u8; 6]),
    /// An index of [`CLIENT_IDS`].
    Client(usize),
}

fn every_key() -> impl Iterator<Item = Key> {
    MACS.into_iter()
        .map(Key::Mac)
        .chain((0..CLIENT_IDS.len()).map(Key::Client))
}

/// The keys of a line.
fn line_keys(line: &str) -> Vec<Key> {
    let line = parse_line(line);
    let client = line
        .client_id
        .map(|c| Key::Client(CLIENT_IDS.iter().position(|k| k[..] == c[..]).unwrap()));
    line.macs.into_iter().map(Key::Mac).chain(client).collect()
}
/// Host ids, negative ones included (their shard is the Euclidean remainder).
const IDS: [i64; 10] = [-7, -2, 0, 1, 2, 3, 4, 5, 9, 1000];

fn subnets() -> Vec<Subnet> {
    let subnet = |id: i64, cidr: &str| Subnet {
        id,
        cidr: cidr.parse().unwrap(),
        range: None,
        gateway: None,
        lease_seconds: None,
        domain: Some("lan".to_owned()),
    };
    vec![
        subnet(1, "10.0.0.0/28"),
        subnet(2, "10.0.0.16/28"),
        subnet(3, "2001:db8::/120"),
    ]
}

/// One host's values, as small numbers so that addresses, MACs and names collide.
#[derive(Debug, Clone, Copy)]
struct Spec {
    subnet: usize,
    mac: usize,
    offset: u8,
    name: usize,
    lease: bool,
    /// A second MAC (an index of [`MACS`]).
    more_mac: Option<usize>,
    /// A client identifier (an index of [`CLIENT_IDS`]).
    client: Option<usize>,
}

fn arb_spec() -> impl Strategy<Value = Option<Spec>> {
    prop::option::weighted(
        0.7,
        (
            0..3usize,
            0..4usize,
            1..7u8,
            0..3usize,
            prop::bool::weighted(0.2),
            prop::option::weighted(0.25, 0..4usize),
            prop::option::weighted(0.25, 0..2usize),
        )
            .prop_map(
                |(subnet, mac, offset, name, lease, more_mac, client)| Spec {
                    subnet,
                    mac,
                    offset,
                    name,
                    lease,
                    more_mac,
                    client,
                },
            ),
    )
}

#[derive(Debug, Clone)]
enum Step {
    /// Some hosts change, appear or go (`None`).
    Change(Vec<(Index, Option<Spec>)>),
    /// SIGHUP after the files were made exact.
    Compact,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec((any::<Index>(), arb_spec()), 1..4).prop_map(Step::Change),
        1 => Just(Step::Compact),
    ]
}

fn snapshot(specs: &[Option<Spec>]) -> Snapshot {
    let subnets = subnets();
    let settings = IDS
        .iter()
        .zip(specs)
        .filter_map(|(&id, spec)| {
            let spec = spec.as_ref()?;
            (spec.more_mac.is_some() || spec.client.is_some()).then(|| HostSettings {
                host_id: id,
                client_id: spec.client.map(|c| ClientId(CLIENT_IDS[c].to_vec())),
                macs: spec.more_mac.map(|m| MACS[m]).into_iter().collect(),
                ..HostSettings::default()
            })
        })
        .collect();
    let hosts = IDS
        .iter()
        .zip(specs)
        .filter_map(|(&id, spec)| {
            let spec = spec.as_ref()?;
            let subnet = &subnets[spec.subnet];
            let ip = match subnet.cidr.first_address() {
                IpAddr::V4(first) => IpAddr::V4((u32::from(first) + u32::from(spec.offset)).into()),
                IpAddr::V6(first) => {
                    IpAddr::V6((u128::from(first) + u128::from(spec.offset)).into())
                }
            };
            Some(Host {
                id,
                subnet_id: subnet.id,
                mac: MACS[spec.mac],
                ip,
                hostname: NAMES[spec.name].to_owned(),
                lease_seconds: spec.lease.then_some(3600),
            })
        })
        .collect();
    Snapshot {
        subnets,
        hosts,
        extras: Extras {
            hosts: settings,
            ..Extras::default()
        },
    }
}

/// Property (b), after every step: the planner's state against the simulator's.
fn check_state(loaded: &Loaded, dnsmasq: &Dnsmasq, desired: &Sharded, history: &History) {
    assert_eq!(dnsmasq.dhcp, named(&desired.dhcp));
    assert_eq!(dnsmasq.dns, named(&desired.dns));
    assert_eq!(loaded.files(), desired);
    let pending = loaded.pending();
    assert!(pending.windows(2).all(|w| w[0] < w[1]), "{pending:?}");
    let networks: HashMap<i64, IpCidr> = subnets().iter().map(|s| (s.id, s.cidr)).collect();
    let sim_line = |subnet: i64, key: Key| dnsmasq.newest(networks[&subnet], key);
    // Served addresses agree everywhere, for clients with and without an identifier.
    for &subnet in networks.keys() {
        for mac in MACS {
            for client in std::iter::once(None).chain((0..CLIENT_IDS.len()).map(Some)) {
                let expected = dnsmasq
                    .served(networks[&subnet], client, mac)
                    .map(|line| parse_line(line).ip);
                let client_id = client.map(|c| ClientId(CLIENT_IDS[c].to_vec()));
                assert_eq!(
                    loaded.served_to(subnet, client_id.as_ref(), mac),
                    expected,
                    "subnet {subnet} {mac:?} {client:?}"
                );
            }
        }
    }
    // The line each (subnet, key) should be served, from the files.
    let mut wanted: HashMap<(i64, Key), &str> = HashMap::new();
    let mut wanted_by: HashMap<i64, Vec<(i64, Key)>> = HashMap::new();
    for &shard in desired.dhcp.keys() {
        for (entry, line) in desired.reservations(shard) {
            for key in line_keys(line) {
                wanted.insert((entry.subnet_id, key), line);
                wanted_by
                    .entry(entry.host_id)
                    .or_default()
                    .push((entry.subnet_id, key));
            }
        }
    }
    let right = |key: (i64, Key)| sim_line(key.0, key.1) == wanted.get(&key).copied();
    // A (subnet, key) served wrongly has its host pending: the one whose line the files hold
    // for it, or else the last one whose line it is served.
    for subnet in networks.keys() {
        for k in every_key() {
            let key = (*subnet, k);
            if right(key) {
                continue;
            }
            let owner = match (wanted.get(&key), sim_line(key.0, key.1)) {
                (Some(_), _) => wanted_by
                    .iter()
                    .find(|(_, keys)| keys.contains(&key))
                    .map(|(&id, _)| id),
                (None, Some(line)) => history.last.get(&(key, line.to_owned())).copied(),
                (None, None) => None,
            };
            let owner = owner.unwrap_or_else(|| panic!("{key:?} is served by nobody's line"));
            assert!(
                pending.binary_search(&owner).is_ok(),
                "{key:?} is served wrongly but host {owner} is not pending: {pending:?}"
            );
        }
    }
    // A pending host is one whose line, or a key it once had, is served wrongly.
    for id in &pending {
        let keys = history.keys.get(id).into_iter().flatten();
        assert!(
            keys.chain(wanted_by.get(id).into_iter().flatten())
                .any(|&key| !right(key)),
            "host {id} is pending for nothing"
        );
    }
    assert_eq!(loaded.debt(), dnsmasq.debt());
}

/// Property (b), after a full read: exactly the hostsfile render.
fn check_full_read(loaded: &Loaded, flat: &Rendered) {
    assert_eq!(loaded.pending(), Vec::<i64>::new());
    assert!(!loaded.debt());
    // Served: exactly what the hostsfile layout's file reserves.
    assert_eq!(
        loaded.served_reservations(),
        reservations_in(flat.hosts.as_ref().unwrap())
    );
    let mut expected: HashMap<(i64, Key), IpAddr> = HashMap::new();
    for line in flat.hosts.as_ref().unwrap().lines() {
        let ip = parse_line(line).ip;
        let subnet = subnets()
            .into_iter()
            .find(|s| s.cidr.contains(&ip))
            .unwrap();
        for key in line_keys(line) {
            expected.insert((subnet.id, key), ip);
        }
    }
    for subnet in subnets() {
        for mac in MACS {
            let key = (subnet.id, Key::Mac(mac));
            assert_eq!(loaded.served(subnet.id, mac), expected.get(&key).copied());
            for (c, bytes) in CLIENT_IDS.iter().enumerate() {
                let client_id = ClientId(bytes.to_vec());
                let want = expected
                    .get(&(subnet.id, Key::Client(c)))
                    .or(expected.get(&key));
                assert_eq!(
                    loaded.served_to(subnet.id, Some(&client_id), mac),
                    want.copied()
                );
            }
        }
    }
}

/// Every render's reservations so far.
#[derive(Default)]
struct History {
    /// Every (subnet, key) each host has had a reservation for.
    keys: HashMap<i64, HashSet<(i64, Key)>>,
    /// For each (subnet, key) and line, the host it was last rendered for.
    last: HashMap<((i64, Key), String), i64>,
}

fn remember(history: &mut History, files: &Sharded) {
    for &shard in files.dhcp.keys() {
        for (entry, line) in files.reservations(shard) {
            for k in line_keys(line) {
                let key = (entry.subnet_id, k);
                history.keys.entry(entry.host_id).or_default().insert(key);
                history.last.insert((key, line.to_owned()), entry.host_id);
            }
        }
    }
}

fn run(initial: &[Option<Spec>], steps: &[Step], shards: u32) {
    let incremental = layout(LayoutKind::Incremental, shards);
    let hostsfile = layout(LayoutKind::Hostsfile, shards);
    let mut specs = initial.to_vec();
    let sharded = |specs: &[Option<Spec>]| render(&snapshot(specs), &incremental).sharded.unwrap();
    let mut history = History::default();
    // The agent starts: files written, dnsmasq reads them all.
    let first = sharded(&specs);
    remember(&mut history, &first);
    let mut dnsmasq = Dnsmasq {
        dhcp: named(&first.dhcp),
        dns: named(&first.dns),
        loaded: Vec::new(),
    };
    dnsmasq.full_read();
    let mut loaded = Loaded::full_read(first);
    for step in steps {
        match step {
            Step::Change(changes) => {
                for (at, spec) in changes {
                    let at = at.index(specs.len());
                    specs[at] = *spec;
                }
                let desired = sharded(&specs);
                remember(&mut history, &desired);
                let plan = plan(&loaded, desired.clone());
                dnsmasq.apply(&plan.dhcp, true);
                dnsmasq.apply(&plan.dns, false);
                loaded = plan.after;
                check_state(&loaded, &dnsmasq, &desired, &history);
            }
            Step::Compact => {
                dnsmasq.full_read();
                loaded = Loaded::full_read(loaded.files().clone());
                check_state(&loaded, &dnsmasq, &sharded(&specs), &history);
                check_full_read(&loaded, &render(&snapshot(&specs), &hostsfile));
            }
        }
    }
    // The final compaction.
    let compacted = Loaded::full_read(loaded.files().clone());
    check_full_read(&compacted, &render(&snapshot(&specs), &hostsfile));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shards_hold_exactly_the_hostsfile_lines(
        snapshot in arb_snapshot(),
        hosts_dir in arb_path(),
        names_dir in arb_path(),
        shards in prop_oneof![4 => 0u32..6, 1 => Just(65_536u32), 1 => any::<u32>()],
        names_only in prop::collection::vec(any::<Index>(), 0..2),
    ) {
        let names_only: Vec<i64> = if snapshot.subnets.is_empty() {
            Vec::new()
        } else {
            names_only
                .iter()
                .map(|at| snapshot.subnets[at.index(snapshot.subnets.len())].id)
                .collect()
        };
        let paths = Layout { hosts_dir, names_dir, ..layout(LayoutKind::Hostsfile, 1) };
        check_sharded(&snapshot, &names_only, &paths, shards);
    }

}

proptest! {
    // More cases: a failure needs a few unlikely steps in a row (a host replaced by another
    // with the very same line while a third change is pending, say).
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_planner_agrees_with_a_simulated_dnsmasq(
        initial in prop::collection::vec(arb_spec(), IDS.len()),
        steps in prop::collection::vec(arb_step(), 1..16),
        shards in 1u32..5,
    ) {
        run(&initial, &steps, shards);
    }
}
