//! The planner of the incremental layout: which shard files a new render changes, and what
//! dnsmasq serves once it has read them. Pure: no database, no I/O.
//!
//! # The model (dnsmasq 2.90, `--dhcp-hostsdir`)
//!
//! - A file written or renamed into the directory is re-read whole: each of its lines is loaded
//!   as a new entry, newer than every entry loaded before (later lines of a file are newer).
//!   Entries are never dropped, except by a full read (start, SIGHUP), which clears them all and
//!   reads every file.
//! - A deleted file changes nothing: its entries stay loaded.
//! - An entry with an IPv4 address is refused when any loaded entry already holds that address,
//!   dead ones included, and the same line loaded earlier too: a re-read file refuses its
//!   unchanged IPv4 lines (harmless), and a renamed host or a new lease time on the same address
//!   is refused (the old line stays in force). IPv6 entries are never refused.
//! - A client with MAC M in subnet S is offered the address of the newest loaded entry for
//!   (S, M). Every loaded IPv4 address is reserved: never given from the pool.
//! - A line with several MACs, or a client identifier (`id:`), is one entry, loaded once, and
//!   the newest entry for each of its keys: (S, MAC) for each MAC and (S, client identifier).
//!   A client that sends an identifier is offered the newest entry for (S, identifier) if there
//!   is one, else the newest for (S, its MAC): dnsmasq's `find_config_match`
//!   (`src/dhcp-common.c`) walks the entries for a matching identifier before it looks at MACs.
//!   So the model keeps one slot per key, and "served as the files say" per key implies it per
//!   client.
//! - Names (`--hostsdir`) always equal the files: a re-read file's names replace its old ones,
//!   a deleted file's names go. They need no model.
//!
//! A subnet is identified by its id: a loaded entry counts for the subnet of the host it was
//! rendered for (dnsmasq goes by the network the address lies in; the two differ only when a
//! subnet is replaced by one with a new id over the same network, where the model then reports
//! the moved hosts pending until a compaction rather than served).
//!
//! # What is owed
//!
//! - [`Loaded::pending`]: the hosts whose DHCP state dnsmasq does not serve yet. A client is
//!   served "wrongly" when the newest entry for its (subnet, MAC) is not the files' line for it
//!   (compared as text, so a new name or lease time counts): then the host of the files' line
//!   is pending (refused or shadowed), and so is the host the served line was last rendered for
//!   (its removal or move has not taken effect).
//! - [`Loaded::debt`]: dnsmasq's memory is not what a full read of the files gives: something
//!   is pending, or dead entries remain (older lines of changed hosts, which keep their IPv4
//!   addresses reserved, and IPv6 lines loaded again by every re-read of their shard).
//!
//! # Representation
//!
//! [`Loaded`] keeps the shard files and only what dnsmasq's memory holds beyond them: the set of
//! loaded IPv4 addresses (for refusals), the keys ((subnet, MAC) and (subnet, identifier);
//! see [`crate::render::subnet_client_key`]) whose newest entry is not the
//! files' line for that key, and two counters. Everything else is, by that invariant, exactly
//! the files, so [`plan`] touches only the keys of the shards that changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::client_id::ClientId;
use crate::release::{reservations_in, Client, Reservation};
use crate::render::{shard_of, subnet_client_key, subnet_mac_key, DhcpEntry, Sharded};

/// dnsmasq's DHCP memory since its last full read of the hosts directory, plus the shard files
/// on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    files: Sharded,
    memory: Memory,
}

/// What dnsmasq's DHCP memory holds beyond the files; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Memory {
    /// Every loaded IPv4 address (each is loaded at most once: a second one is refused).
    v4: HashSet<u32>,
    /// By (subnet, MAC) ([`subnet_mac_key`]): the keys whose newest loaded entry is not the
    /// files' line for the key, or that have only one of the two. Usually few: the rest of the
    /// keys are served exactly their line in the files.
    differs: HashMap<u128, Differs>,
    /// Entries loaded since the last full read, each counted once per key of its line.
    loaded: usize,
    /// Keys with at least one loaded entry.
    effective: usize,
}

/// A key whose newest loaded entry is not its line in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Differs {
    /// The newest loaded entry, if any, with the host it was last rendered for.
    served: Option<Entry>,
    /// The host whose line in the files has the key, if any.
    wanted: Option<i64>,
}

/// The newest loaded entry of a key that differs from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host_id: i64,
    ip: IpAddr,
    line: Box<str>,
}

/// The shard files that differ from [`Loaded::files`], and the state once they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// dhcp-hostsdir shards to write (`Some(content)`) or delete (`None`), by shard number.
    pub dhcp: Vec<(u32, Option<String>)>,
    /// hostsdir shards to write or delete.
    pub dns: Vec<(u32, Option<String>)>,
    /// What dnsmasq holds once every file of the plan is written and it has re-read them.
    pub after: Loaded,
}

impl Loaded {
    /// The state after dnsmasq read `files` from scratch: at its start, on SIGHUP, or after a
    /// compaction that wrote them.
    pub fn full_read(files: Sharded) -> Loaded {
        // dnsmasq reads the files in readdir order; rendered files hold no address and no
        // (subnet, MAC) twice, so the order makes no difference.
        let every: Vec<(u32, bool)> = files.dhcp.keys().map(|&shard| (shard, true)).collect();
        let memory = reread(&Memory::default(), &Sharded::default(), &files, &every);
        Loaded { files, memory }
    }

    /// The shard files on disk.
    pub fn files(&self) -> &Sharded {
        &self.files
    }

    /// The ids of the hosts whose served DHCP state differs from the files, sorted: a host whose
    /// line is not the newest entry for its (subnet, MAC) (it was refused, or an older line
    /// wins), and the host of a newest entry whose (subnet, MAC) the files hold no longer or
    /// with another line (a removed or moved reservation). Empty after a full read.
    pub fn pending(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .memory
            .differs
            .values()
            .flat_map(|d| {
                d.served
                    .as_ref()
                    .map(|e| e.host_id)
                    .into_iter()
                    .chain(d.wanted)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether dnsmasq's memory differs from a full read of the files: something is pending, or
    /// dead entries remain (see the module documentation). A compaction clears it.
    pub fn debt(&self) -> bool {
        // With nothing pending, the newest entries are exactly the files' lines; any other
        // loaded entry is one a full read would not load.
        !self.memory.differs.is_empty() || self.memory.loaded > self.memory.effective
    }

    /// Every (client, address) dnsmasq offers now, a client being a MAC or a client identifier:
    /// for each key, its line in the files, except where the key differs, whose newest loaded
    /// entry counts instead (a removed or moved reservation stays offered until the compaction).
    /// Reads the lines with more than one key, like [`release::reservations_in`] reads a
    /// hostsfile; a line with one key is its entry's MAC and address.
    pub fn served_reservations(&self) -> BTreeSet<Reservation> {
        let of_key = |subnet_id: i64, line: &str, key: Option<u128>| {
            reservations_in(line).into_iter().filter(move |r| {
                let own = match &r.client {
                    Client::Mac(mac) => subnet_mac_key(subnet_id, mac),
                    Client::Id(id) => subnet_client_key(subnet_id, id),
                };
                match key {
                    Some(key) => own == key,
                    None => !self.memory.differs.contains_key(&own),
                }
            })
        };
        // Reading 100k lines costs tens of milliseconds after every change; the entries hold
        // what a line with its primary MAC alone says.
        let mut found: Vec<Reservation> = Vec::with_capacity(self.files.entries.len());
        for &shard in self.files.dhcp.keys() {
            for (entry, line) in self.files.reservations(shard) {
                if !self.files.more_keys(entry).is_empty() {
                    found.extend(of_key(entry.subnet_id, line, None));
                } else if self.memory.differs.is_empty()
                    || !(self.memory.differs)
                        .contains_key(&subnet_mac_key(entry.subnet_id, &entry.mac))
                {
                    found.push(Reservation::mac(entry.mac, entry.ip));
                }
            }
        }
        let mut found: BTreeSet<Reservation> = found.into_iter().collect();
        for (key, differs) in &self.memory.differs {
            if let Some(served) = &differs.served {
                // The top 64 bits of a key are the subnet id (see `subnet_mac_key`).
                let subnet_id = (key >> 64) as u64 as i64;
                found.extend(of_key(subnet_id, &served.line, Some(*key)));
            }
        }
        found
    }

    /// The address dnsmasq offers the client with `mac` in subnet `subnet_id` now, if any.
    /// Looks the files up linearly: meant for tests and diagnostics.
    pub fn served(&self, subnet_id: i64, mac: [u8; 6]) -> Option<IpAddr> {
        self.served_to(subnet_id, None, mac)
    }

    /// The address dnsmasq offers a client that sends `client_id` (if any) from `mac` in subnet
    /// `subnet_id` now: the newest entry with that identifier, else the newest with that MAC
    /// (dnsmasq's `find_config_match` looks at identifiers before MACs).
    pub fn served_to(
        &self,
        subnet_id: i64,
        client_id: Option<&ClientId>,
        mac: [u8; 6],
    ) -> Option<IpAddr> {
        client_id
            .and_then(|c| self.served_key(subnet_client_key(subnet_id, c)))
            .or_else(|| self.served_key(subnet_mac_key(subnet_id, &mac)))
    }

    fn served_key(&self, key: u128) -> Option<IpAddr> {
        match self.memory.differs.get(&key) {
            Some(differs) => differs.served.as_ref().map(|e| e.ip),
            None => self
                .files
                .entries
                .iter()
                .find(|e| entry_keys(&self.files, e).any(|k| k == key))
                .map(|e| e.ip),
        }
    }
}

/// The shard files to change to go from `before` to `desired`, and the state after dnsmasq
/// re-read every written DHCP file whole. Costs a comparison of the shard maps plus work in
/// proportion to the changed shards.
pub fn plan(before: &Loaded, desired: Sharded) -> Plan {
    let dhcp = changes(&before.files.dhcp, &desired.dhcp);
    let dns = changes(&before.files.dns, &desired.dns);
    // A deleted DHCP file is not re-read: its entries stay loaded.
    let mut changed: Vec<(u32, bool)> = dhcp.iter().map(|(s, c)| (*s, c.is_some())).collect();
    // A file whose text stays can still have its lines rendered for other hosts now (a host
    // replaced by another with the very same line). Nothing is written, but for a key that
    // differs, the host owed its line changes: look again at the shards of those hosts.
    let mut owed: Vec<u32> = before
        .memory
        .differs
        .values()
        .filter_map(|d| d.wanted)
        .map(|host_id| shard_of(host_id, before.files.shards))
        .filter(|shard| changed.binary_search_by_key(shard, |c| c.0).is_err())
        .collect();
    owed.sort_unstable();
    owed.dedup();
    changed.extend(owed.into_iter().map(|shard| (shard, false)));
    let memory = reread(&before.memory, &before.files, &desired, &changed);
    Plan {
        dhcp,
        dns,
        after: Loaded {
            files: desired,
            memory,
        },
    }
}

/// The shards whose file differs between `old` and `new`, in shard order: `new`'s content, or
/// `None` for a file `new` does not have.
fn changes(old: &BTreeMap<u32, String>, new: &BTreeMap<u32, String>) -> Vec<(u32, Option<String>)> {
    let mut out: Vec<(u32, Option<String>)> = new
        .iter()
        .filter(|&(shard, text)| old.get(shard) != Some(text))
        .map(|(&shard, text)| (shard, Some(text.clone())))
        .collect();
    out.extend(
        old.keys()
            .filter(|shard| !new.contains_key(shard))
            .map(|&shard| (shard, None)),
    );
    out.sort_unstable_by_key(|change| change.0);
    out
}

/// A loaded entry or a line of the files, borrowed.
#[derive(Clone, Copy)]
struct Line<'a> {
    host_id: i64,
    ip: IpAddr,
    text: &'a str,
}

impl<'a> Line<'a> {
    fn of(entry: &DhcpEntry, text: &'a str) -> Self {
        Line {
            host_id: entry.host_id,
            ip: entry.ip,
            text,
        }
    }

    fn loaded(entry: &'a Entry) -> Self {
        Line {
            host_id: entry.host_id,
            ip: entry.ip,
            text: &entry.line,
        }
    }

    fn to_entry(self) -> Entry {
        Entry {
            host_id: self.host_id,
            ip: self.ip,
            line: self.text.into(),
        }
    }
}

/// One key of the changed shards: its newest loaded entry and its line in the new files.
struct Slot<'a> {
    served: Option<Line<'a>>,
    wanted: Option<Line<'a>>,
}

/// Every key dnsmasq serves `entry`'s line to: its primary MAC's, then its client identifier's
/// and extra MACs' (a line with several is loaded once, as the newest entry of each).
fn entry_keys<'a>(files: &'a Sharded, entry: &DhcpEntry) -> impl Iterator<Item = u128> + 'a {
    std::iter::once(subnet_mac_key(entry.subnet_id, &entry.mac))
        .chain(files.more_keys(entry).iter().copied())
}

/// `before` (the memory with the `old` files on disk) once the DHCP shards in `changed` hold
/// `new`'s content and dnsmasq has re-read those marked written (`true`), in the order given
/// (which makes no difference: no address and no key is twice in `new`).
///
/// Only the keys of the changed shards can change: a key of an unchanged shard has its line
/// there in both `old` and `new`, and each key has at most one line in a render, so it is in
/// no changed shard and nothing loaded is for it.
fn reread(before: &Memory, old: &Sharded, new: &Sharded, changed: &[(u32, bool)]) -> Memory {
    // `None`: the key does not differ; `Some(served)`: it does, and this is its newest entry.
    let served_now = |key: &u128| {
        before
            .differs
            .get(key)
            .map(|differs| differs.served.as_ref().map(Line::loaded))
    };
    let mut slots: HashMap<u128, Slot> = HashMap::new();
    for &(shard, _) in changed {
        for (entry, text) in old.reservations(shard) {
            for key in entry_keys(old, entry) {
                // Not differing: the newest entry is the files' line.
                let served = served_now(&key).unwrap_or(Some(Line::of(entry, text)));
                slots.insert(
                    key,
                    Slot {
                        served,
                        wanted: None,
                    },
                );
            }
        }
    }
    for &(shard, _) in changed {
        for (entry, text) in new.reservations(shard) {
            for key in entry_keys(new, entry) {
                let slot = slots.entry(key).or_insert_with(|| Slot {
                    // Not differing and not in the old files: nothing is loaded for it.
                    served: served_now(&key).flatten(),
                    wanted: None,
                });
                slot.wanted = Some(Line::of(entry, text));
            }
        }
    }
    let mut after = before.clone();
    for &(shard, _) in changed.iter().filter(|change| change.1) {
        for (entry, text) in new.reservations(shard) {
            if let IpAddr::V4(ip) = entry.ip {
                if !after.v4.insert(ip.into()) {
                    // Refused: some loaded entry, maybe this very line, holds the address.
                    continue;
                }
            }
            // Counted per key, so that `effective` (keys) and `loaded` compare: a line with
            // three keys fills three.
            for key in entry_keys(new, entry) {
                after.loaded += 1;
                if let Some(slot) = slots.get_mut(&key) {
                    if slot.served.is_none() {
                        after.effective += 1;
                    }
                    slot.served = Some(Line::of(entry, text));
                }
            }
        }
    }
    for (key, slot) in slots {
        match (slot.served, slot.wanted) {
            (Some(served), Some(wanted)) if served.text == wanted.text => {
                after.differs.remove(&key);
            }
            (None, None) => {
                after.differs.remove(&key);
            }
            (served, wanted) => {
                let differs = Differs {
                    served: served.map(Line::to_entry),
                    wanted: wanted.map(|line| line.host_id),
                };
                after.differs.insert(key, differs);
            }
        }
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Extras, Host, HostSettings, Snapshot, Subnet};
    use crate::render::{render, shard_of, Layout, LayoutKind};

    const SHARDS: u32 = 4;

    fn subnets() -> Vec<Subnet> {
        let subnet = |id: i64, cidr: &str| Subnet {
            id,
            cidr: cidr.parse().unwrap(),
            range: None,
            gateway: None,
            lease_seconds: None,
            domain: Some("lan".to_owned()),
        };
        vec![subnet(1, "10.0.0.0/24"), subnet(2, "2001:db8::/64")]
    }

    fn host(id: i64, ip: &str, mac_last: u8, hostname: &str) -> Host {
        let ip: IpAddr = ip.parse().unwrap();
        Host {
            id,
            subnet_id: if ip.is_ipv4() { 1 } else { 2 },
            mac: mac(mac_last),
            ip,
            hostname: hostname.to_owned(),
            lease_seconds: None,
        }
    }

    fn mac(last: u8) -> [u8; 6] {
        [0x52, 0x54, 0, 0, 0, last]
    }

    fn layout() -> Layout {
        Layout {
            kind: LayoutKind::Incremental,
            hosts_file: "/unused".into(),
            addn_hosts_file: "/unused".into(),
            hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
            names_dir: "/var/lib/ipmanager/hosts.d".into(),
            shards: SHARDS,
            names_shards: SHARDS,
        }
    }

    fn files(hosts: &[Host]) -> Sharded {
        let snapshot = Snapshot {
            subnets: subnets(),
            hosts: hosts.to_vec(),
            ..Default::default()
        };
        render(&snapshot, &layout()).sharded.unwrap()
    }

    fn start(hosts: &[Host]) -> Loaded {
        Loaded::full_read(files(hosts))
    }

    fn step(before: &Loaded, hosts: &[Host]) -> Loaded {
        plan(before, files(hosts)).after
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    /// Hosts 1 and 5 share shard 1; host 2 is alone in shard 2.
    fn base() -> Vec<Host> {
        vec![
            host(1, "10.0.0.10", 1, "one"),
            host(2, "10.0.0.11", 2, "two"),
            host(5, "10.0.0.12", 5, "five"),
        ]
    }

    fn assert_clean(loaded: &Loaded) {
        assert_eq!(loaded.pending(), Vec::<i64>::new());
        assert!(!loaded.debt());
    }

    #[test]
    fn a_full_read_serves_the_files_exactly() {
        let loaded = start(&base());
        assert_clean(&loaded);
        assert_eq!(loaded.served(1, mac(1)), ip("10.0.0.10"));
        assert_eq!(loaded.served(1, mac(5)), ip("10.0.0.12"));
        assert_eq!(loaded.served(2, mac(1)), None);
        assert_eq!(loaded.files(), &files(&base()));
        assert_clean(&Loaded::full_read(Sharded::default()));
    }

    #[test]
    fn an_unchanged_render_plans_nothing() {
        let before = start(&base());
        let plan = plan(&before, files(&base()));
        assert_eq!((plan.dhcp.len(), plan.dns.len()), (0, 0));
        assert_eq!(plan.after, before);
    }

    #[test]
    fn an_added_host_is_served_at_once_and_only_its_shard_is_written() {
        let before = start(&base());
        let mut hosts = base();
        hosts.push(host(9, "10.0.0.13", 9, "nine"));
        let plan = plan(&before, files(&hosts));
        assert_eq!(shard_of(9, SHARDS), 1);
        let written = files(&hosts).dhcp[&1].clone();
        assert_eq!(plan.dhcp, vec![(1, Some(written))]);
        assert_eq!(plan.dns, vec![(1, Some(files(&hosts).dns[&1].clone()))]);
        assert_eq!(plan.after.served(1, mac(9)), ip("10.0.0.13"));
        // The re-read refused the shard's unchanged lines, which changes nothing.
        assert_clean(&plan.after);
    }

    #[test]
    fn a_changed_address_is_served_but_the_old_one_stays_reserved() {
        let before = start(&base());
        let mut hosts = base();
        hosts[0].ip = "10.0.0.20".parse().unwrap();
        let after = step(&before, &hosts);
        assert_eq!(after.served(1, mac(1)), ip("10.0.0.20"));
        assert_eq!(after.pending(), Vec::<i64>::new());
        assert!(after.debt());
        // The old address is still held: a host given it now is refused.
        hosts.push(host(3, "10.0.0.10", 3, "three"));
        let after = step(&after, &hosts);
        assert_eq!(after.pending(), vec![3]);
        assert_eq!(after.served(1, mac(3)), None);
    }

    #[test]
    fn a_rename_on_the_same_address_is_refused() {
        let before = start(&base());
        let mut hosts = base();
        hosts[0].hostname = "uno".to_owned();
        let plan = plan(&before, files(&hosts));
        assert!(!plan.dhcp.is_empty() && !plan.dns.is_empty());
        assert_eq!(plan.after.pending(), vec![1]);
        assert!(plan.after.debt());
        // Still served, under the old line.
        assert_eq!(plan.after.served(1, mac(1)), ip("10.0.0.10"));
        // So is a new lease time.
        hosts[2].lease_seconds = Some(3600);
        assert_eq!(step(&plan.after, &hosts).pending(), vec![1, 5]);
    }

    #[test]
    fn a_removed_host_stays_served_until_a_full_read() {
        let before = start(&base());
        let hosts = vec![base()[0].clone(), base()[2].clone()];
        let plan = plan(&before, files(&hosts));
        // Host 2 was alone in shard 2: its files are deleted, which dnsmasq's DHCP side ignores.
        assert_eq!(plan.dhcp, vec![(2, None)]);
        assert_eq!(plan.dns, vec![(2, None)]);
        assert_eq!(plan.after.pending(), vec![2]);
        assert!(plan.after.debt());
        assert_eq!(plan.after.served(1, mac(2)), ip("10.0.0.11"));
        let pairs = |loaded: &Loaded| loaded.served_reservations();
        let two = Reservation::mac(mac(2), "10.0.0.11".parse().unwrap());
        assert_eq!(pairs(&plan.after), pairs(&before));
        assert!(pairs(&plan.after).contains(&two));
        let compacted = Loaded::full_read(plan.after.files().clone());
        assert_clean(&compacted);
        assert_eq!(compacted.served(1, mac(2)), None);
        assert!(!pairs(&compacted).contains(&two));
        assert_eq!(pairs(&compacted).len(), 2);
    }

    #[test]
    fn a_line_with_several_macs_and_an_identifier_serves_each_until_the_compaction() {
        let settings = HostSettings {
            host_id: 2,
            client_id: Some(ClientId(vec![1, 2, 3])),
            macs: vec![mac(9)],
            ..HostSettings::default()
        };
        let snapshot = |hosts: &[Host], settings: Vec<HostSettings>| Snapshot {
            subnets: subnets(),
            hosts: hosts.to_vec(),
            extras: Extras {
                hosts: settings,
                ..Extras::default()
            },
        };
        let render_files = |s: &Snapshot| render(s, &layout()).sharded.unwrap();
        let before = Loaded::full_read(render_files(&snapshot(&base(), vec![settings])));
        let id = ClientId(vec![1, 2, 3]);
        let eleven = ip("10.0.0.11");
        assert_eq!(before.served(1, mac(9)), eleven);
        assert_eq!(before.served_to(1, Some(&id), mac(77)), eleven);
        let served = before.served_reservations();
        assert!(served.contains(&Reservation {
            client: Client::Id(id.clone()),
            ip: eleven.unwrap()
        }));
        assert!(served.contains(&Reservation::mac(mac(9), eleven.unwrap())));
        // Host 2 loses its extra MAC and identifier: its line is re-read, but the old entry
        // still serves them until the compaction.
        let after = plan(&before, render_files(&snapshot(&base(), Vec::new()))).after;
        assert_eq!(after.served(1, mac(9)), eleven);
        assert_eq!(after.served_to(1, Some(&id), mac(77)), eleven);
        assert_eq!(after.pending(), vec![2]);
        assert!(after
            .served_reservations()
            .contains(&Reservation::mac(mac(9), eleven.unwrap())));
        let compacted = Loaded::full_read(after.files().clone());
        assert_eq!(compacted.served(1, mac(9)), None);
        assert_eq!(compacted.served_to(1, Some(&id), mac(77)), None);
        assert_eq!(compacted.served_reservations().len(), 3);
    }

    #[test]
    fn an_address_moved_to_another_host_is_refused() {
        let before = start(&base());
        let mut hosts = base();
        hosts[0].ip = "10.0.0.30".parse().unwrap();
        hosts[1].ip = "10.0.0.10".parse().unwrap();
        let after = step(&before, &hosts);
        assert_eq!(after.served(1, mac(1)), ip("10.0.0.30"));
        // Host 2 keeps its old line: its new address is held by host 1's old one.
        assert_eq!(after.served(1, mac(2)), ip("10.0.0.11"));
        assert_eq!(after.pending(), vec![2]);
    }

    #[test]
    fn an_address_reused_after_a_removal_is_refused() {
        let before = start(&base());
        let removed = step(&before, &base()[..2]);
        assert_eq!(removed.pending(), vec![5]);
        let mut hosts = base()[..2].to_vec();
        hosts.push(host(6, "10.0.0.12", 6, "six"));
        let after = step(&removed, &hosts);
        assert_eq!(after.pending(), vec![5, 6]);
        assert_eq!(after.served(1, mac(6)), None);
        assert_eq!(after.served(1, mac(5)), ip("10.0.0.12"));
    }

    #[test]
    fn the_same_mac_taken_over_by_another_host_marks_both() {
        let before = start(&base());
        // Host 2 goes; host 3 takes its MAC with an address that is held already.
        let hosts = vec![
            base()[0].clone(),
            base()[2].clone(),
            host(3, "10.0.0.11", 2, "three"),
        ];
        let after = step(&before, &hosts);
        assert_eq!(after.served(1, mac(2)), ip("10.0.0.11"));
        assert_eq!(after.pending(), vec![2, 3]);
    }

    #[test]
    fn the_same_line_for_another_host_moves_what_is_pending() {
        // Host 1's new name is refused; then host 9 (the same shard) replaces host 1 with
        // exactly its line, which leaves the file as it is.
        let mut hosts = base();
        hosts[0].hostname = "uno".to_owned();
        let renamed = step(&start(&base()), &hosts);
        assert_eq!(renamed.pending(), vec![1]);
        hosts[0].id = 9;
        let plan = plan(&renamed, files(&hosts));
        assert_eq!((plan.dhcp.len(), plan.dns.len()), (0, 0));
        // Host 9's line is not served; host 1's old one still is.
        assert_eq!(plan.after.pending(), vec![1, 9]);
        assert_eq!(plan.after.served(1, mac(1)), ip("10.0.0.10"));
    }

    #[test]
    fn ipv6_lines_are_never_refused() {
        let mut hosts = base();
        hosts.push(host(9, "2001:db8::9", 9, "nine"));
        let before = start(&hosts);
        assert_clean(&before);
        hosts[3].ip = "2001:db8::99".parse().unwrap();
        hosts[3].hostname = "neun".to_owned();
        let after = step(&before, &hosts);
        assert_eq!(after.served(2, mac(9)), ip("2001:db8::99"));
        assert_eq!(after.pending(), Vec::<i64>::new());
        assert!(after.debt());
        // Re-reading a shard loads its unchanged IPv6 lines again: harmless, but dead weight.
        let clean = start(&hosts);
        hosts[0].ip = "10.0.0.40".parse().unwrap();
        let after = step(&clean, &hosts);
        assert_eq!(after.served(2, mac(9)), ip("2001:db8::99"));
        assert_eq!(after.pending(), Vec::<i64>::new());
        assert!(after.debt());
    }

    #[test]
    fn a_full_read_clears_everything() {
        let mut hosts = base();
        let mut loaded = start(&hosts);
        hosts[0].hostname = "renamed".to_owned();
        loaded = step(&loaded, &hosts);
        hosts.remove(1);
        loaded = step(&loaded, &hosts);
        hosts.push(host(7, "10.0.0.11", 7, "seven"));
        hosts.push(host(8, "2001:db8::8", 8, "eight"));
        loaded = step(&loaded, &hosts);
        assert_eq!(loaded.pending(), vec![1, 2, 7]);
        let compacted = Loaded::full_read(loaded.files().clone());
        assert_eq!(compacted, start(&hosts));
        assert_clean(&compacted);
        for h in &hosts {
            assert_eq!(compacted.served(h.subnet_id, h.mac), Some(h.ip));
        }
        assert_eq!(compacted.served(1, mac(2)), None);
    }
}
