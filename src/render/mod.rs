//! Pure functions from a snapshot to the contents of the dnsmasq files that serve it: which rows
//! are served, in which order, and what is refused. No I/O, no database types.
//!
//! # Files
//!
//! With [`LayoutKind::Hostsfile`] (the default) there are three files, because dnsmasq re-reads
//! a dhcp-hostsfile and addn-hosts on SIGHUP but conf-dir `dhcp-host=` lines only on a restart:
//!
//! - `include` (conf-dir): the header comment, `dhcp-hostsfile=<hosts_file>`,
//!   `addn-hosts=<addn_hosts_file>`, then one block per served subnet (below).
//! - `hosts` (dhcp-hostsfile): `MAC,IP,hostname[,LEASE]` per served host.
//! - `addn_hosts`: `IP fqdn hostname` or `IP hostname` per served host, so that names and PTR
//!   records resolve before a client ever takes a lease.
//!
//! With [`LayoutKind::Conf`] everything is in `include`: the header, the subnet blocks, then
//! `dhcp-host=MAC,IP,hostname[,LEASE]` for every served host, then
//! `host-record=[fqdn,]hostname,IP` for every served host.
//!
//! With [`LayoutKind::Incremental`] the lines of `hosts` and `addn_hosts` are spread over shard
//! files in two directories that dnsmasq watches, so that one changed host rewrites one small
//! file and no signal is needed ([`Rendered::sharded`], see [`Sharded`]):
//!
//! - `include`: the header, `dhcp-hostsdir=<hosts_dir>`, `hostsdir=<names_dir>`, then the
//!   subnet blocks.
//! - shard `n` (of [`Layout::shards`]) holds the lines of the hosts whose id is `n` modulo the
//!   number of shards, in the usual order, in the file [`shard_file_name`]`(n)` of both
//!   directories; exactly the hostsfile layout's lines, so that all shards together hold
//!   exactly its `hosts` and `addn_hosts` lines. A shard without lines has no file; a host
//!   with its name only has a line in the names shard only.
//!
//! [`crate::plan`] decides which shard files a change rewrites and what dnsmasq then serves.
//!
//! A subnet block:
//!
//! ```text
//! # subnet <id> <cidr>
//! dhcp-range=set:subnet<id>,<start>,<end>,<netmask>[,<lease>]          IPv4 with a range
//! dhcp-range=set:subnet<id>,<network>,static,<netmask>[,<lease>]       IPv4 without
//! dhcp-range=set:subnet<id>,<start>,<end>,<prefix length>[,<lease>]    IPv6 with a range
//! dhcp-range=set:subnet<id>,<network>,static,<prefix length>[,<lease>] IPv6 without
//! dhcp-option=tag:subnet<id>,option:router,<gateway>                   IPv4 with a gateway
//! domain=<domain>,<cidr>                                               with a domain
//! ```
//!
//! followed by the subnet's DHCP options. When an IPv6 subnet is served, [`lines::ROUTER_ADVERTISEMENTS`]
//! follows the blocks: `enable-ra`, so that dnsmasq sends router advertisements with the
//! managed flag (M) for each IPv6 range, which is what makes real clients (NetworkManager,
//! systemd-networkd, Windows) ask DHCPv6 for an address, and `ra-param=*,0,0`, router lifetime
//! 0, so that dnsmasq never announces itself as a default router: the default route comes from
//! the network's router (its own advertisements, with or without M). The ranges have no mode
//! keyword: addresses come from DHCPv6 only (no SLAAC), so a reservation is what a client gets.
//! After every block come the profiles' blocks (see
//! `render::options`: option lines, `dhcp-boot` per client architecture and for iPXE). A host whose
//! profile (its own, else its subnet's default) is served gets `set:profile<id>` after its MAC
//! in its reservation line: assigning a profile changes the dhcp-hostsfile (SIGHUP), while a
//! profile's definition lives in the include file (restart). A host's aliases follow its own
//! names on its addn-hosts (or `host-record`) line, each as `fqdn alias` when the domain
//! applies; DNS-only names get such a line after the hosts, and no reservation.
//!
//! MACs are lowercase `aa:bb:cc:dd:ee:ff`; IPv6 addresses are bracketed in `dhcp-host` fields
//! and bare elsewhere; leases are plain seconds. The fqdn is `hostname.domain` when the subnet
//! has a domain, the hostname has no dot and the result is at most 253 bytes; it comes first so
//! that a PTR query answers it.
//!
//! # Order and refusals
//!
//! Subnets are written sorted by cidr then id, hosts by address then id, whatever the input
//! order, so that equal snapshots give byte-equal files. A row that fails [`validate`] is not
//! written and is listed in [`Rendered::skipped`] with the reason; the rest is still served. A
//! host is also skipped when its subnet is missing or skipped, when an earlier host (in that
//! order) already holds its address (a duplicate `dhcp-host` address stops dnsmasq from
//! starting), or when an earlier host in the same subnet holds its MAC. Every written line is
//! shorter than [`validate::MAX_LINE_BYTES`]; a row whose line would not be is skipped.
//! Smaller things are refused alone and the rest is served: a profile that fails validation
//! (its hosts lose its tag), one option of a subnet or profile, a host's aliases (the host keeps
//! its own name), a DNS-only name (also when a host already took its address).
//!
//! # Names only
//!
//! [`render_scoped`] takes the ids of subnets whose hosts get only their name lines (an agent
//! serving some sites with `dns_scope = "all"`): no subnet block, no reservation, only the
//! addn-hosts (or `host-record`) line, checked like every other line.
//!
//! [`check::check_file`] re-reads a rendered file with an independent strict grammar; the agent
//! runs it over every staged file and never activates one that fails.
//!
//! # Deriving a render
//!
//! With the incremental layout, [`Previous`] keeps a render and derives the next one from it
//! when only some hosts changed ([`crate::model::Snapshot::patch`]), in time that follows the
//! changed hosts; it renders in full whenever a changed host takes part in a rule across hosts,
//! so that the result is always byte for byte [`render_scoped`]'s.

mod changes;
pub mod check;
mod incremental;
pub(crate) mod lines;
mod options;
mod shard;
pub mod validate;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use changes::{describe_host_changes, summarize_host_changes, HostChangeDetails};
pub use incremental::Previous;
pub use shard::{shard_file_name, shard_of, DhcpEntry, Sharded, MAX_SHARDS};

use crate::client_id::ClientId;
use crate::model::{DnsName, Host, Snapshot, Subnet};

/// Where reservations live: see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    #[default]
    Hostsfile,
    Conf,
    Incremental,
}

/// The layout and the paths the include file points dnsmasq at: the two files with
/// [`LayoutKind::Hostsfile`], the two directories and the number of shards with
/// [`LayoutKind::Incremental`], none with [`LayoutKind::Conf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    pub hosts_file: PathBuf,
    pub addn_hosts_file: PathBuf,
    /// The `dhcp-hostsdir` the reservation shards go to.
    pub hosts_dir: PathBuf,
    /// The `hostsdir` the name shards go to.
    pub names_dir: PathBuf,
    /// How many shards the reservation lines are spread over; taken as 1 to [`MAX_SHARDS`].
    pub shards: u32,
    /// How many shards the name lines are spread over; taken as 1 to [`MAX_SHARDS`].
    pub names_shards: u32,
}

/// A database row, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Row {
    Host(i64),
    Subnet(i64),
    /// A profile: its hosts are served without it.
    Profile(i64),
    /// One option of a subnet; the subnet is served without it.
    SubnetOption {
        subnet: i64,
        number: u16,
    },
    /// One option of a profile; the profile is served without it.
    ProfileOption {
        profile: i64,
        number: u16,
    },
    /// A host's aliases; the host is served with its own name only.
    Aliases(i64),
    /// A DNS-only name.
    DnsName(i64),
}

/// A row that is not served, and why. The reason never quotes the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skipped {
    pub row: Row,
    pub reason: String,
}

/// The contents of every file, and what was served and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The conf-dir include file.
    pub include: String,
    /// The dhcp-hostsfile; `Some` exactly with [`LayoutKind::Hostsfile`].
    pub hosts: Option<String>,
    /// The addn-hosts file; `Some` exactly with [`LayoutKind::Hostsfile`].
    pub addn_hosts: Option<String>,
    /// Hosts written, i.e. `dhcp-host` lines.
    pub hosts_served: usize,
    /// Subnets first, then hosts, each in output order.
    pub skipped: Vec<Skipped>,
    /// The shard files; `Some` exactly with [`LayoutKind::Incremental`].
    pub sharded: Option<Sharded>,
}

/// What [`summarize_host_changes`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostChanges {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

/// Renders `snapshot` for `layout`. Deterministic and independent of input order.
///
/// The include file's paths are checked with [`validate::file_path`]; configuration rejects a
/// bad one before the agent starts, so here it is only a last defence: instead of the unsafe
/// `dhcp-hostsfile=`, `addn-hosts=`, `dhcp-hostsdir=` or `hostsdir=` line, a fixed comment
/// saying it was omitted is written.
pub fn render(snapshot: &Snapshot, layout: &Layout) -> Rendered {
    render_scoped(snapshot, layout, &[])
}

/// [`render`], except that the hosts of the subnets in `names_only` are written as names only
/// (see the module documentation), and those subnets get no block.
pub fn render_scoped(snapshot: &Snapshot, layout: &Layout, names_only: &[i64]) -> Rendered {
    render_full(snapshot, layout, names_only, false).0
}

/// [`render_scoped`], and with `keep` and [`LayoutKind::Incremental`] what
/// [`Previous::update`] needs to derive the next render from this one.
fn render_full(
    snapshot: &Snapshot,
    layout: &Layout,
    names_only: &[i64],
    keep: bool,
) -> (Rendered, Option<Previous>) {
    let mut skipped = Vec::new();
    let settings = options::Settings::new(&snapshot.extras, &mut skipped);
    let (include, subnets) = head(
        &snapshot.subnets,
        &settings,
        layout,
        names_only,
        &mut skipped,
    );
    match layout.kind {
        LayoutKind::Hostsfile | LayoutKind::Incremental => {
            let keep = keep && layout.kind == LayoutKind::Incremental;
            let hosts = render_hosts(
                snapshot,
                &subnets,
                &settings,
                layout.kind,
                String::new(),
                &mut skipped,
                keep,
            );
            let (hosts_file, addn_hosts, sharded) = match &hosts.written {
                Some(written) => {
                    let sharded = shard::split(
                        &hosts.dhcp,
                        &hosts.dns,
                        written,
                        layout.shards,
                        layout.names_shards,
                    );
                    (None, None, Some(sharded))
                }
                None => (Some(hosts.dhcp), Some(hosts.dns), None),
            };
            let rendered = Rendered {
                include,
                hosts: hosts_file,
                addn_hosts,
                hosts_served: hosts.served,
                skipped,
                sharded,
            };
            let written = hosts.written.as_deref().unwrap_or_default();
            let previous = hosts.kept.map(|kept| {
                Previous::new(
                    snapshot,
                    layout,
                    names_only,
                    rendered.clone(),
                    kept,
                    written,
                )
            });
            (rendered, previous)
        }
        LayoutKind::Conf => {
            // The reservations go straight after the subnet blocks, the names after them.
            let mut hosts = render_hosts(
                snapshot,
                &subnets,
                &settings,
                layout.kind,
                include,
                &mut skipped,
                false,
            );
            hosts.dhcp.push_str(&hosts.dns);
            let rendered = Rendered {
                include: hosts.dhcp,
                hosts: None,
                addn_hosts: None,
                hosts_served: hosts.served,
                skipped,
                sharded: None,
            };
            (rendered, None)
        }
    }
}

/// The include file up to the reservations (header, paths, subnet blocks, profiles), and the
/// subnets as hosts see them.
fn head<'a>(
    subnets: &'a [Subnet],
    settings: &options::Settings,
    layout: &Layout,
    names_only: &[i64],
    skipped: &mut Vec<Skipped>,
) -> (String, SubnetIndex<'a>) {
    let mut include = String::with_capacity(256 + subnets.len() * 256);
    include.push_str(lines::HEADER);
    match layout.kind {
        LayoutKind::Hostsfile => {
            path_line(&mut include, "dhcp-hostsfile", &layout.hosts_file);
            path_line(&mut include, "addn-hosts", &layout.addn_hosts_file);
        }
        LayoutKind::Incremental => {
            path_line(&mut include, "dhcp-hostsdir", &layout.hosts_dir);
            path_line(&mut include, "hostsdir", &layout.names_dir);
        }
        LayoutKind::Conf => {}
    }
    let (named, served): (Vec<&Subnet>, Vec<&Subnet>) =
        subnets.iter().partition(|s| names_only.contains(&s.id));
    let mut index = render_subnets(served, settings, &mut include, skipped);
    if index
        .0
        .iter()
        .any(|e| e.1.is_some_and(|s| s.cidr.is_ipv6()))
    {
        include.push_str(lines::ROUTER_ADVERTISEMENTS);
    }
    if !named.is_empty() {
        // Checked like served subnets, so that a name is only ever written under a valid
        // domain; their blocks go nowhere.
        let mut nowhere = String::new();
        let mut not_theirs = Vec::new();
        index.add_names_only(render_subnets(
            named,
            settings,
            &mut nowhere,
            &mut not_theirs,
        ));
        // Their options are another agent's to serve and to report.
        skipped.extend(
            not_theirs
                .into_iter()
                .filter(|s| matches!(s.row, Row::Subnet(_))),
        );
    }
    settings.profile_blocks(&mut include, skipped);
    (include, index)
}

/// `option=path`, or a comment in its place when the path cannot be written safely.
fn path_line(out: &mut String, option: &str, path: &Path) {
    let _ = match validate::file_path(path) {
        Ok(()) => writeln!(out, "{option}={}", path.display()),
        Err(_) => writeln!(
            out,
            "# {option} omitted: the configured path is not safe in a dnsmasq line"
        ),
    };
}

/// Every subnet id in the snapshot with the subnet served under it (`None`: present but
/// skipped) and whether its hosts get their names only, sorted by id: hosts look their subnet
/// up by binary search, without hashing.
struct SubnetIndex<'a>(Vec<(i64, Option<&'a Subnet>, bool)>);

impl<'a> SubnetIndex<'a> {
    fn get(&self, id: i64) -> Option<(Option<&'a Subnet>, bool)> {
        let at = self.0.binary_search_by_key(&id, |entry| entry.0).ok()?;
        Some((self.0[at].1, self.0[at].2))
    }

    /// Adds the subnets whose hosts are written as names only; an id already present (a broken
    /// snapshot) keeps its served entry.
    fn add_names_only(&mut self, other: SubnetIndex<'a>) {
        for (id, subnet, _) in other.0 {
            if self.get(id).is_none() {
                self.0.push((id, subnet, true));
            }
        }
        self.0.sort_unstable_by_key(|entry| entry.0);
    }
}

/// Writes the block of every valid subnet, with its options, and returns what hosts need to
/// know about them.
fn render_subnets<'a>(
    mut order: Vec<&'a Subnet>,
    settings: &options::Settings,
    out: &mut String,
    skipped: &mut Vec<Skipped>,
) -> SubnetIndex<'a> {
    order.sort_unstable_by(|a, b| subnet_key(a).cmp(&subnet_key(b)));
    let mut served = HashMap::with_capacity(order.len());
    for subnet in order {
        let verdict = if matches!(served.get(&subnet.id), Some(Some(_))) {
            // Ids are primary keys, so this needs a broken snapshot; two blocks would share a tag.
            Err("another subnet with the same id is served".to_owned())
        } else {
            validate::subnet(subnet).and_then(|()| {
                let start = out.len();
                lines::subnet_block(out, subnet);
                if lines::fits(out, start) {
                    Ok(())
                } else {
                    out.truncate(start);
                    Err(too_long())
                }
            })
        };
        match verdict {
            Ok(()) => {
                served.insert(subnet.id, Some(subnet));
                settings.subnet_options(out, subnet, skipped);
            }
            Err(reason) => {
                served.entry(subnet.id).or_insert(None);
                skipped.push(Skipped {
                    row: Row::Subnet(subnet.id),
                    reason,
                });
            }
        }
    }
    let mut index: Vec<(i64, Option<&Subnet>, bool)> = served
        .into_iter()
        .map(|(id, subnet)| (id, subnet, false))
        .collect();
    index.sort_unstable_by_key(|entry| entry.0);
    SubnetIndex(index)
}

/// The output order of subnets; the fields after the id only break ties between rows that
/// share an id, so that even a broken snapshot renders the same whatever its order.
fn subnet_key(s: &Subnet) -> impl Ord + '_ {
    (
        s.cidr,
        s.id,
        s.range,
        s.gateway,
        s.lease_seconds,
        s.domain.as_deref(),
    )
}

/// Hosts in output order: by address (IPv4 first), then id. Sorting compact `(address, index)`
/// pairs rather than the rows keeps 100k hosts in a few milliseconds; only rows with equal
/// addresses, which are rare, look at the rows themselves.
fn host_order(hosts: &[Host]) -> impl Iterator<Item = &Host> {
    let mut v4: Vec<(u32, usize)> = Vec::with_capacity(hosts.len());
    let mut v6: Vec<(u128, usize)> = Vec::new();
    for (at, host) in hosts.iter().enumerate() {
        match host.ip {
            IpAddr::V4(ip) => v4.push((ip.into(), at)),
            IpAddr::V6(ip) => v6.push((ip.into(), at)),
        }
    }
    // After the id, the other fields only break ties between rows that share an id (a broken
    // snapshot), so that even then the input order does not matter.
    fn key(h: &Host) -> (i64, i64, [u8; 6], Option<i64>, &str) {
        (h.id, h.subnet_id, h.mac, h.lease_seconds, &h.hostname)
    }
    let tie = |a: usize, b: usize| key(&hosts[a]).cmp(&key(&hosts[b]));
    v4.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| tie(a.1, b.1)));
    v6.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| tie(a.1, b.1)));
    let v4 = v4.into_iter().map(|(_, at)| at);
    let v6 = v6.into_iter().map(|(_, at)| at);
    v4.chain(v6).map(|at| &hosts[at])
}

/// A host's subnet and MAC as one number, for the duplicate check.
fn mac_key(h: &Host) -> u128 {
    subnet_mac_key(h.subnet_id, &h.mac)
}

/// A subnet id and a MAC as one number: what dnsmasq serves one reservation to.
pub fn subnet_mac_key(subnet_id: i64, mac: &[u8; 6]) -> u128 {
    let mac = mac.iter().fold(0u128, |acc, &b| acc << 8 | u128::from(b));
    // The id's bit pattern fills the top 64 bits; the MAC the low 48.
    u128::from(subnet_id as u64) << 64 | mac
}

/// A subnet id and a client identifier as one number, distinct from every [`subnet_mac_key`]
/// (bit 63 set, where a MAC key has zeros above bit 47): the identifier's 64-bit FNV-1a hash
/// with that bit set. Two identifiers of one subnet share a key only by a hash collision
/// (odds 2^-63 a pair), which would make the renderer refuse the second as a duplicate and the
/// planner track the two as one.
pub fn subnet_client_key(subnet_id: i64, client_id: &ClientId) -> u128 {
    let hash = client_id
        .0
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |acc, &b| {
            (acc ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    u128::from(subnet_id as u64) << 64 | u128::from(hash | 1 << 63)
}

/// The keys beyond its primary MAC's by which dnsmasq finds a host's reservation: its client
/// identifier and its extra MACs.
fn more_keys<'a>(subnet_id: i64, ident: &lines::Ident<'a>) -> impl Iterator<Item = u128> + 'a {
    let client = ident.client_id.map(|c| subnet_client_key(subnet_id, c));
    let macs = ident.macs.iter().map(move |m| subnet_mac_key(subnet_id, m));
    client.into_iter().chain(macs)
}

/// Every key (see [`more_keys`]) of every host, primary MACs' included, sorted: the same key
/// twice is two hosts (or one host twice) that dnsmasq would match alike.
fn all_keys(hosts: &[Host], settings: &options::Settings) -> Vec<u128> {
    let mut keys: Vec<u128> = hosts.iter().map(mac_key).collect();
    for host in settings.hosts_with_idents(hosts) {
        keys.extend(more_keys(host.subnet_id, &settings.ident_of(host)));
    }
    keys.sort_unstable();
    keys
}

/// The keys of `keys` ([`all_keys`]) that more than one host has, each mapped to the host that
/// holds it once one is served. Usually empty, so that most hosts skip the duplicate check
/// without hashing anything: one sort of plain numbers is cheaper than a lookup per host.
fn repeated_keys(keys: &[u128]) -> HashMap<u128, Option<i64>> {
    keys.windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| (pair[0], None))
        .collect()
}

/// The per-host halves of the output: reservation lines and name lines, and with
/// [`LayoutKind::Incremental`] which host wrote which lines, for spreading them over shards.
struct HostLines {
    dhcp: String,
    dns: String,
    served: usize,
    written: Option<Vec<shard::Written>>,
    /// What [`Previous`] keeps of the hosts, when asked for.
    kept: Option<Kept>,
}

/// What a full render tells [`Previous`] beyond its output.
struct Kept {
    /// Every key of every host ([`all_keys`]).
    keys: Vec<u128>,
    /// How many of [`HostLines::written`] are hosts; the DNS-only names follow them.
    hosts_written: usize,
    /// Where the hosts' entries of [`Rendered::skipped`] start and end.
    skipped_hosts: (usize, usize),
    /// The address of the host of each of those entries.
    skipped_ips: Vec<IpAddr>,
}

/// Writes the lines of every host that may be served, reservations after whatever `dhcp`
/// already holds; with `keep` (incremental layout only), also what [`Previous`] keeps.
fn render_hosts(
    snapshot: &Snapshot,
    subnets: &SubnetIndex,
    settings: &options::Settings,
    kind: LayoutKind,
    mut dhcp: String,
    skipped: &mut Vec<Skipped>,
    keep: bool,
) -> HostLines {
    let hosts = &snapshot.hosts;
    // One allocation per file in the common case: a line is the names plus ~50 bytes. A conf
    // include ends up holding the name lines too.
    let names: usize = hosts.iter().map(|h| h.hostname.len()).sum();
    let dns_bytes = hosts.len() * 64 + 2 * names;
    let appended = if kind == LayoutKind::Conf {
        dns_bytes
    } else {
        0
    };
    dhcp.reserve(hosts.len() * 64 + names + appended);
    let mut out = HostLines {
        dhcp,
        dns: String::with_capacity(dns_bytes),
        served: 0,
        written: (kind == LayoutKind::Incremental).then(|| Vec::with_capacity(hosts.len())),
        kept: None,
    };
    // Hosts come sorted by address, so a taken address can only be the last one served.
    let mut last_served: Option<(IpAddr, i64)> = None;
    let keys = all_keys(hosts, settings);
    let mut repeated = repeated_keys(&keys);
    // DNS-only names must not take a reserved address; only needed when there are any.
    let mut taken = std::collections::HashSet::new();
    let dns_only = !snapshot.extras.dns_names.is_empty();
    let skipped_from = skipped.len();
    let mut skipped_ips = Vec::new();
    for host in host_order(hosts) {
        let skips = skipped.len();
        let written = render_host(
            host,
            subnets,
            settings,
            kind,
            last_served,
            &mut repeated,
            &mut out,
            skipped,
        );
        if written {
            last_served = Some((host.ip, host.id));
            if dns_only {
                taken.insert(host.ip);
            }
        }
        if keep {
            skipped_ips.extend(std::iter::repeat_n(host.ip, skipped.len() - skips));
        }
    }
    if keep {
        out.kept = Some(Kept {
            keys,
            hosts_written: out.written.as_ref().map_or(0, Vec::len),
            skipped_hosts: (skipped_from, skipped.len()),
            skipped_ips,
        });
    }
    render_dns_names(
        &snapshot.extras.dns_names,
        subnets,
        kind,
        &mut out,
        &mut taken,
        skipped,
    );
    out
}

/// Writes `host`'s lines unless it is refused (then says why in `skipped`, as it does for its
/// aliases), given the host served last and the keys that other hosts have too; whether it
/// was written.
#[allow(clippy::too_many_arguments)]
fn render_host(
    host: &Host,
    subnets: &SubnetIndex,
    settings: &options::Settings,
    kind: LayoutKind,
    last_served: Option<(IpAddr, i64)>,
    repeated: &mut HashMap<u128, Option<i64>>,
    out: &mut HostLines,
    skipped: &mut Vec<Skipped>,
) -> bool {
    // The written host's keys beyond its primary MAC, for the planner.
    let mut more = Vec::new();
    let aliases = checked_aliases(host.id, settings.aliases_of(host.id), skipped);
    let verdict = admit(host, subnets, last_served).and_then(|(domain, names_only)| {
        let names = lines::Names {
            ip: host.ip,
            hostname: &host.hostname,
            aliases,
            domain,
        };
        if names_only {
            return write_name(out, &names, kind).map(|()| false);
        }
        let ident = settings.ident_of(host);
        validate::ident(&host.mac, &ident)?;
        // Checked last, so that a key is taken only by a host that is written.
        claim(repeated, host, &ident, || {
            write_host(out, host, &ident, &names, kind)
        })?;
        more = more_keys(host.subnet_id, &ident).collect();
        Ok(true)
    });
    match verdict {
        Ok(reserved) => {
            out.served += usize::from(reserved);
            out.record(host.id, host.subnet_id, host.mac, host.ip, reserved, more);
            true
        }
        Err(reason) => {
            skipped.push(Skipped {
                row: Row::Host(host.id),
                reason,
            });
            false
        }
    }
}

impl HostLines {
    /// With the incremental layout, where the lines of a host or name written last end.
    fn record(
        &mut self,
        id: i64,
        subnet_id: i64,
        mac: [u8; 6],
        ip: IpAddr,
        reserved: bool,
        more_keys: Vec<u128>,
    ) {
        if let Some(written) = &mut self.written {
            written.push(shard::Written {
                id,
                subnet_id,
                mac,
                more_keys,
                ip,
                reserved,
                dhcp_end: self.dhcp.len(),
                dns_end: self.dns.len(),
            });
        }
    }
}

/// A host's aliases if every one passes [`validate::hostname`]; else none, listed as skipped.
fn checked_aliases<'a>(
    host: i64,
    aliases: &'a [String],
    skipped: &mut Vec<Skipped>,
) -> &'a [String] {
    match aliases.iter().try_for_each(|a| validate::hostname(a)) {
        Ok(()) => aliases,
        Err(reason) => {
            skipped.push(Skipped {
                row: Row::Aliases(host),
                reason: format!("alias: {reason}"),
            });
            &[]
        }
    }
}

/// DNS-only names, after the hosts, by address: a name line each (never a reservation), in a
/// subnet that is served or whose names are, at an address no host took.
fn render_dns_names(
    names: &[DnsName],
    subnets: &SubnetIndex,
    kind: LayoutKind,
    out: &mut HostLines,
    taken: &mut std::collections::HashSet<IpAddr>,
    skipped: &mut Vec<Skipped>,
) {
    let mut order: Vec<&DnsName> = names.iter().collect();
    order.sort_by_key(|n| (n.ip, n.id));
    for name in order {
        let verdict = dns_name(name, subnets, taken).and_then(|domain| {
            let names = lines::Names {
                ip: name.ip,
                hostname: &name.hostname,
                aliases: &name.aliases,
                domain,
            };
            write_name(out, &names, kind)
        });
        match verdict {
            Ok(()) => out.record(name.id, name.subnet_id, [0; 6], name.ip, false, Vec::new()),
            Err(reason) => skipped.push(Skipped {
                row: Row::DnsName(name.id),
                reason,
            }),
        }
    }
}

/// Whether a DNS-only name may be written; returns the domain of its fqdn, if any.
fn dns_name<'a>(
    name: &DnsName,
    subnets: &SubnetIndex<'a>,
    taken: &mut std::collections::HashSet<IpAddr>,
) -> Result<Option<&'a str>, String> {
    let subnet = match subnets.get(name.subnet_id) {
        Some((Some(subnet), _)) => subnet,
        _ => return Err(format!("subnet {} is not served", name.subnet_id)),
    };
    validate::hostname(&name.hostname)?;
    for alias in &name.aliases {
        validate::hostname(alias).map_err(|reason| format!("alias: {reason}"))?;
    }
    validate::host_address(name.ip, subnet.cidr)?;
    if !taken.insert(name.ip) {
        return Err(format!("address {} is already served", name.ip));
    }
    Ok(subnet.domain.as_deref())
}

/// Whether `host` may be served, given the host served last (the MAC check is the caller's);
/// returns the domain its fqdn is built from, if it gets one, and whether it gets its name only.
fn admit<'a>(
    host: &Host,
    subnets: &SubnetIndex<'a>,
    last_served: Option<(IpAddr, i64)>,
) -> Result<(Option<&'a str>, bool), String> {
    let (subnet, names_only) = match subnets.get(host.subnet_id) {
        None => return Err(format!("subnet {} is not in the snapshot", host.subnet_id)),
        Some((None, _)) => return Err(format!("subnet {} is not served", host.subnet_id)),
        Some((Some(subnet), names_only)) => (subnet, names_only),
    };
    validate::host(host, subnet)?;
    if let Some((ip, other)) = last_served.filter(|&(ip, _)| ip == host.ip) {
        return Err(format!("address {ip} is already reserved by host {other}"));
    }
    Ok((subnet.domain.as_deref(), names_only))
}

/// Appends a name line only, or nothing if it would be too long.
fn write_name(out: &mut HostLines, names: &lines::Names, kind: LayoutKind) -> Result<(), String> {
    let start = out.dns.len();
    match kind {
        LayoutKind::Hostsfile | LayoutKind::Incremental => lines::addn_host(&mut out.dns, names),
        LayoutKind::Conf => lines::host_record(&mut out.dns, names),
    }
    if lines::fits(&out.dns, start) {
        Ok(())
    } else {
        out.dns.truncate(start);
        Err(too_long())
    }
}

/// Runs `write` (the host's lines) unless another host holds one of `host`'s keys (MACs, client
/// identifier); then the written host holds each of its keys that other hosts have too.
fn claim(
    repeated: &mut HashMap<u128, Option<i64>>,
    host: &Host,
    ident: &lines::Ident<'_>,
    write: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    if repeated.is_empty() {
        return write();
    }
    let keys: Vec<u128> = std::iter::once(mac_key(host))
        .chain(more_keys(host.subnet_id, ident))
        .collect();
    for (at, key) in keys.iter().enumerate() {
        if let Some(Some(other)) = repeated.get(key) {
            let what = match (at, ident.client_id) {
                (1, Some(_)) => "client identifier",
                _ => "MAC address",
            };
            return Err(format!(
                "{what} is already reserved in subnet {} by host {other}",
                host.subnet_id
            ));
        }
    }
    write()?;
    for key in keys {
        if let Some(holder) = repeated.get_mut(&key) {
            *holder = Some(host.id);
        }
    }
    Ok(())
}

/// Appends the host's two lines, or nothing if either would be too long.
fn write_host(
    out: &mut HostLines,
    host: &Host,
    ident: &lines::Ident<'_>,
    names: &lines::Names,
    kind: LayoutKind,
) -> Result<(), String> {
    let (dhcp_start, dns_start) = (out.dhcp.len(), out.dns.len());
    match kind {
        LayoutKind::Hostsfile | LayoutKind::Incremental => {
            lines::dhcp_host(&mut out.dhcp, "", host, ident);
            lines::addn_host(&mut out.dns, names);
        }
        LayoutKind::Conf => {
            lines::dhcp_host(&mut out.dhcp, "dhcp-host=", host, ident);
            lines::host_record(&mut out.dns, names);
        }
    }
    if lines::fits(&out.dhcp, dhcp_start) && lines::fits(&out.dns, dns_start) {
        Ok(())
    } else {
        out.dhcp.truncate(dhcp_start);
        out.dns.truncate(dns_start);
        Err(too_long())
    }
}

fn too_long() -> String {
    format!(
        "a line for this row would reach {} bytes, which dnsmasq splits",
        validate::MAX_LINE_BYTES
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(kind: LayoutKind) -> Layout {
        Layout {
            kind,
            hosts_file: "/var/lib/ipmanager/dhcp-hosts".into(),
            addn_hosts_file: "/var/lib/ipmanager/hosts".into(),
            hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
            names_dir: "/var/lib/ipmanager/hosts.d".into(),
            shards: 4,
            names_shards: 4,
        }
    }

    fn subnet() -> Subnet {
        Subnet {
            id: 1,
            cidr: "10.0.0.0/24".parse().unwrap(),
            range: None,
            gateway: None,
            lease_seconds: None,
            domain: Some("lan".to_owned()),
        }
    }

    fn host(id: i64, ip: &str, mac_last: u8, hostname: &str) -> Host {
        Host {
            id,
            subnet_id: 1,
            mac: [0x52, 0x54, 0, 0, 0, mac_last],
            ip: ip.parse().unwrap(),
            hostname: hostname.to_owned(),
            lease_seconds: None,
        }
    }

    #[test]
    fn empty_snapshot_renders_header_and_paths() {
        let rendered = render(&Snapshot::default(), &layout(LayoutKind::Hostsfile));
        assert_eq!(
            rendered.include,
            "# Managed by ipmanager: do not edit, changes are overwritten.\n\
             dhcp-hostsfile=/var/lib/ipmanager/dhcp-hosts\n\
             addn-hosts=/var/lib/ipmanager/hosts\n"
        );
        assert_eq!(rendered.hosts.as_deref(), Some(""));
        assert_eq!(rendered.addn_hosts.as_deref(), Some(""));
        let conf = render(&Snapshot::default(), &layout(LayoutKind::Conf));
        assert_eq!(conf.include, lines::HEADER);
        assert_eq!((conf.hosts, conf.addn_hosts), (None, None));
    }

    #[test]
    fn unsafe_paths_are_replaced_by_a_comment() {
        let layout = Layout {
            kind: LayoutKind::Hostsfile,
            hosts_file: "/tmp/x\ndhcp-script=/tmp/evil".into(),
            addn_hosts_file: "relative".into(),
            ..layout(LayoutKind::Hostsfile)
        };
        let rendered = render(&Snapshot::default(), &layout);
        assert_eq!(
            rendered.include,
            "# Managed by ipmanager: do not edit, changes are overwritten.\n\
             # dhcp-hostsfile omitted: the configured path is not safe in a dnsmasq line\n\
             # addn-hosts omitted: the configured path is not safe in a dnsmasq line\n"
        );
        let layout = Layout {
            kind: LayoutKind::Incremental,
            hosts_dir: "/tmp/x,y".into(),
            names_dir: "hosts.d".into(),
            ..layout
        };
        assert_eq!(
            render(&Snapshot::default(), &layout).include,
            "# Managed by ipmanager: do not edit, changes are overwritten.\n\
             # dhcp-hostsdir omitted: the configured path is not safe in a dnsmasq line\n\
             # hostsdir omitted: the configured path is not safe in a dnsmasq line\n"
        );
    }

    #[test]
    fn incremental_spreads_the_hostsfile_lines_over_shards() {
        let far = Subnet {
            id: 2,
            cidr: "10.0.1.0/24".parse().unwrap(),
            domain: None,
            ..subnet()
        };
        let snapshot = Snapshot {
            subnets: vec![subnet(), far],
            hosts: vec![
                host(9, "10.0.0.9", 9, "nine"),
                host(1, "10.0.0.1", 1, "one"),
                host(-3, "10.0.0.3", 3, "minus-three"),
                host(4, "10.0.0.4", 1, "same-mac"),
                Host {
                    subnet_id: 2,
                    ..host(6, "10.0.1.6", 6, "far")
                },
            ],
            ..Default::default()
        };
        let rendered = render_scoped(&snapshot, &layout(LayoutKind::Incremental), &[2]);
        assert_eq!(
            rendered.include,
            "# Managed by ipmanager: do not edit, changes are overwritten.\n\
             dhcp-hostsdir=/var/lib/ipmanager/dhcp-hosts.d\n\
             hostsdir=/var/lib/ipmanager/hosts.d\n\
             # subnet 1 10.0.0.0/24\n\
             dhcp-range=set:subnet1,10.0.0.0,static,255.255.255.0\n\
             domain=lan,10.0.0.0/24\n"
        );
        assert_eq!((rendered.hosts, rendered.addn_hosts), (None, None));
        assert_eq!(rendered.hosts_served, 3);
        assert_eq!(rendered.skipped.len(), 1);
        let sharded = rendered.sharded.unwrap();
        assert_eq!(sharded.shards, 4);
        // -3 mod 4 = 1, with 1 and 9, in address order; 6 has its name only, in shard 2.
        let dhcp: Vec<(u32, &str)> = sharded.dhcp.iter().map(|(&s, t)| (s, t.as_str())).collect();
        assert_eq!(
            dhcp,
            [(
                1,
                "52:54:00:00:00:01,10.0.0.1,one\n\
                 52:54:00:00:00:03,10.0.0.3,minus-three\n\
                 52:54:00:00:00:09,10.0.0.9,nine\n"
            )]
        );
        let dns: Vec<(u32, &str)> = sharded.dns.iter().map(|(&s, t)| (s, t.as_str())).collect();
        assert_eq!(
            dns,
            [
                (
                    1,
                    "10.0.0.1 one.lan one\n10.0.0.3 minus-three.lan minus-three\n\
                     10.0.0.9 nine.lan nine\n"
                ),
                (2, "10.0.1.6 far\n")
            ]
        );
        let reservations: Vec<(i64, &str)> = sharded
            .reservations(1)
            .map(|(entry, line)| (entry.host_id, line))
            .collect();
        assert_eq!(
            reservations,
            [
                (1, "52:54:00:00:00:01,10.0.0.1,one"),
                (-3, "52:54:00:00:00:03,10.0.0.3,minus-three"),
                (9, "52:54:00:00:00:09,10.0.0.9,nine")
            ]
        );
        assert_eq!(sharded.reservations(2).count(), 0);
        assert_eq!(sharded.entries[1].ip, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(sharded.entries[1].subnet_id, 1);
        assert_eq!(sharded.entries[1].shard, 1);
    }

    #[test]
    fn shard_files_are_named_in_four_hex_digits() {
        assert_eq!(shard_file_name(0), "0000");
        assert_eq!(shard_file_name(0xa3), "00a3");
        assert_eq!(shard_file_name(65_535), "ffff");
        assert_eq!(shard_of(-1, 1024), 1023);
        assert_eq!(shard_of(i64::MIN, 3), 1);
        assert_eq!(shard_of(5, 0), 0);
        assert_eq!(shard_of(70_000, u32::MAX), 70_000 - 65_536);
    }

    #[test]
    fn fqdn_only_when_it_fits_and_the_hostname_has_no_dot() {
        let long = "a".repeat(63);
        let subnet = Subnet {
            domain: Some(["b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".")),
            ..subnet()
        };
        let hosts = vec![
            host(1, "10.0.0.1", 1, "a"),
            host(2, "10.0.0.2", 2, &long),
            host(3, "10.0.0.3", 3, "x.other"),
        ];
        let rendered = render(
            &Snapshot {
                subnets: vec![subnet.clone()],
                hosts,
                ..Default::default()
            },
            &layout(LayoutKind::Hostsfile),
        );
        let domain = subnet.domain.unwrap();
        assert_eq!(
            rendered.addn_hosts.unwrap(),
            format!("10.0.0.1 a.{domain} a\n10.0.0.2 {long}\n10.0.0.3 x.other\n")
        );
    }

    #[test]
    fn the_first_host_in_order_keeps_a_duplicate_address_or_mac() {
        let hosts = vec![
            host(5, "10.0.0.9", 1, "late"),
            host(4, "10.0.0.9", 2, "early"),
            host(3, "10.0.0.10", 2, "same-mac"),
            host(2, "10.0.0.11", 1, "mac-of-dropped-dup"),
        ];
        let rendered = render(
            &Snapshot {
                subnets: vec![subnet()],
                hosts,
                ..Default::default()
            },
            &layout(LayoutKind::Hostsfile),
        );
        assert_eq!(
            rendered.hosts.unwrap(),
            "52:54:00:00:00:02,10.0.0.9,early\n52:54:00:00:00:01,10.0.0.11,mac-of-dropped-dup\n"
        );
        assert_eq!(rendered.hosts_served, 2);
        assert_eq!(
            rendered.skipped,
            vec![
                Skipped {
                    row: Row::Host(5),
                    reason: "address 10.0.0.9 is already reserved by host 4".to_owned(),
                },
                Skipped {
                    row: Row::Host(3),
                    reason: "MAC address is already reserved in subnet 1 by host 4".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn names_only_subnets_give_names_but_no_block_or_reservation() {
        let other = Subnet {
            id: 2,
            cidr: "10.0.1.0/24".parse().unwrap(),
            domain: Some("far".to_owned()),
            ..subnet()
        };
        let far = Host {
            subnet_id: 2,
            ..host(2, "10.0.1.5", 2, "remote")
        };
        let snapshot = Snapshot {
            subnets: vec![other, subnet()],
            hosts: vec![far, host(1, "10.0.0.5", 1, "local")],
            ..Default::default()
        };
        let rendered = render_scoped(&snapshot, &layout(LayoutKind::Hostsfile), &[2]);
        assert_eq!(
            rendered.hosts.as_deref(),
            Some("52:54:00:00:00:01,10.0.0.5,local\n")
        );
        assert_eq!(
            rendered.addn_hosts.as_deref(),
            Some("10.0.0.5 local.lan local\n10.0.1.5 remote.far remote\n")
        );
        assert!(rendered.include.contains("# subnet 1 10.0.0.0/24\n"));
        assert!(!rendered.include.contains("10.0.1."));
        assert_eq!((rendered.hosts_served, rendered.skipped.len()), (1, 0));

        let conf = render_scoped(&snapshot, &layout(LayoutKind::Conf), &[2]);
        assert!(conf
            .include
            .contains("host-record=remote.far,remote,10.0.1.5\n"));
        assert!(!conf.include.contains("dhcp-host=52:54:00:00:00:02"));
        assert!(!conf.include.contains("subnet 2"));
        // Without names-only subnets, it is plain render.
        assert_eq!(
            render_scoped(&snapshot, &layout(LayoutKind::Conf), &[]),
            render(&snapshot, &layout(LayoutKind::Conf))
        );
    }

    #[test]
    fn duplicate_subnet_ids_serve_the_first_valid_one() {
        let later = Subnet {
            cidr: "10.0.1.0/24".parse().unwrap(),
            ..subnet()
        };
        let invalid_first = Subnet {
            cidr: "10.0.0.0/23".parse().unwrap(),
            lease_seconds: Some(1),
            ..subnet()
        };
        let rendered = render(
            &Snapshot {
                subnets: vec![later, subnet(), invalid_first],
                hosts: vec![host(1, "10.0.0.1", 1, "a")],
                ..Default::default()
            },
            &layout(LayoutKind::Conf),
        );
        assert_eq!(rendered.hosts_served, 1);
        assert!(rendered.include.contains("# subnet 1 10.0.0.0/24\n"));
        assert!(!rendered.include.contains("10.0.1.0"));
        let reasons: Vec<&str> = rendered.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "lease time 1 s is outside 120..=4294967295",
                "another subnet with the same id is served"
            ]
        );
    }
}
