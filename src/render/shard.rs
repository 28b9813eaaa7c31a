//! The files of [`LayoutKind::Incremental`](super::LayoutKind::Incremental): the hostsfile
//! layout's reservation and name lines, spread over numbered shard files so that one changed host
//! rewrites one small file, which dnsmasq re-reads on its own (`dhcp-hostsdir`, `hostsdir`).
//!
//! A host's shard is its id modulo the number of shards, so that it stays in the same file
//! whatever else changes; each shard holds its lines in the renderer's usual order. The two
//! directories have their own shard counts: dnsmasq's cost of re-reading a names file grows
//! with every name it already holds, per name line in the file, so names want smaller files
//! than reservations (see `docs/dnsmasq-hostsdir.md`).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The shard files of both directories, by shard number; a shard without lines has no file
/// (no entry here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharded {
    /// How many shards the reservation lines are spread over (at least 1).
    pub shards: u32,
    /// How many shards the name lines are spread over (at least 1).
    pub names_shards: u32,
    /// The dhcp-hostsdir files: `MAC,IP,hostname[,LEASE]` lines, as in a dhcp-hostsfile.
    pub dhcp: BTreeMap<u32, String>,
    /// The hostsdir files: `IP [fqdn] hostname` lines, as in an addn-hosts file.
    pub dns: BTreeMap<u32, String>,
    /// Every reservation line of [`Sharded::dhcp`], by shard, each shard's in file order: the
    /// values the planner ([`crate::plan`]) reasons about without parsing the files.
    pub entries: Vec<DhcpEntry>,
    /// By host id, for the few reservations that have them: the keys of a line beyond its
    /// primary MAC's, a client identifier's ([`crate::render::subnet_client_key`]) and extra
    /// MACs' ([`crate::render::subnet_mac_key`]). dnsmasq loads such a line once, as the newest
    /// entry for each of its keys.
    pub more_keys: BTreeMap<i64, Vec<u128>>,
}

/// One reservation line of a dhcp-hostsdir shard, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DhcpEntry {
    pub host_id: i64,
    pub subnet_id: i64,
    pub shard: u32,
    pub mac: [u8; 6],
    pub ip: IpAddr,
}

/// The most shards there can be: every shard number has four hex digits.
pub const MAX_SHARDS: u32 = 65_536;

/// The name of a shard's file in both directories: four lowercase hex digits, `00a3`. Shards
/// go up to 65,535, so every name has the same length and sorts like its number.
pub fn shard_file_name(shard: u32) -> String {
    format!("{shard:04x}")
}

/// The shard a host's lines go to, with `shards` shards (taken as 1 to [`MAX_SHARDS`]).
pub fn shard_of(host_id: i64, shards: u32) -> u32 {
    let shards = shards.clamp(1, MAX_SHARDS);
    // rem_euclid is never negative and below `shards`, so the conversion cannot fail.
    u32::try_from(host_id.rem_euclid(i64::from(shards))).unwrap_or(0)
}

impl Sharded {
    /// The entries of `shard`, in file order.
    pub fn shard_entries(&self, shard: u32) -> &[DhcpEntry] {
        let start = self.entries.partition_point(|e| e.shard < shard);
        let end = self.entries.partition_point(|e| e.shard <= shard);
        &self.entries[start..end]
    }

    /// The keys of `entry` beyond its primary MAC's (see [`Sharded::more_keys`]).
    pub fn more_keys(&self, entry: &DhcpEntry) -> &[u128] {
        if self.more_keys.is_empty() {
            return &[];
        }
        self.more_keys
            .get(&entry.host_id)
            .map_or(&[], Vec::as_slice)
    }

    /// The reservations of `shard`, each with its line (without the newline), in file order.
    pub fn reservations(&self, shard: u32) -> impl Iterator<Item = (&DhcpEntry, &str)> {
        let text = self.dhcp.get(&shard).map_or("", String::as_str);
        self.shard_entries(shard).iter().zip(text.lines())
    }
}

/// A host (or DNS-only name) the renderer wrote, and where its lines end in the flat outputs.
pub(super) struct Written {
    pub(super) id: i64,
    pub(super) subnet_id: i64,
    /// Zero for a DNS-only name, which is never `reserved`.
    pub(super) mac: [u8; 6],
    /// The keys of its client identifier and extra MACs (`render::more_keys`); usually none.
    pub(super) more_keys: Vec<u128>,
    pub(super) ip: IpAddr,
    /// Whether it got a reservation line, not only a name line.
    pub(super) reserved: bool,
    pub(super) dhcp_end: usize,
    pub(super) dns_end: usize,
}

/// Spreads the flat hostsfile-layout outputs `dhcp` and `dns`, whose lines `written` describes
/// in order, over `shards` reservation shards and `names_shards` name shards.
pub(super) fn split(
    dhcp: &str,
    dns: &str,
    written: &[Written],
    shards: u32,
    names_shards: u32,
) -> Sharded {
    let shards = shards.clamp(1, MAX_SHARDS);
    let names_shards = names_shards.clamp(1, MAX_SHARDS);
    let mut sharded = Sharded {
        shards,
        names_shards,
        entries: Vec::with_capacity(written.iter().filter(|w| w.reserved).count()),
        ..Sharded::default()
    };
    for group in placed(written, shards).chunk_by(|a, b| a.shard == b.shard) {
        let shard = group[0].shard;
        let text = collect(group, dhcp, |p| p.dhcp.clone());
        for p in group.iter().filter(|p| p.written.reserved) {
            let w = p.written;
            if !w.more_keys.is_empty() {
                sharded.more_keys.insert(w.id, w.more_keys.clone());
            }
            sharded.entries.push(DhcpEntry {
                host_id: w.id,
                subnet_id: w.subnet_id,
                shard,
                mac: w.mac,
                ip: w.ip,
            });
        }
        if !text.is_empty() {
            sharded.dhcp.insert(shard, text);
        }
    }
    for group in placed(written, names_shards).chunk_by(|a, b| a.shard == b.shard) {
        let text = collect(group, dns, |p| p.dns.clone());
        if !text.is_empty() {
            sharded.dns.insert(group[0].shard, text);
        }
    }
    sharded
}

/// A written host with its shard and where its lines lie in the flat outputs.
struct Placed<'a> {
    shard: u32,
    written: &'a Written,
    dhcp: std::ops::Range<usize>,
    dns: std::ops::Range<usize>,
}

/// Every host of `written` with its shard (of `shards`) and line ranges, grouped by shard and
/// in output order within each: a stable sort rather than a table of every shard, so that the
/// cost follows the hosts, not the shard count.
fn placed(written: &[Written], shards: u32) -> Vec<Placed<'_>> {
    let mut ends = (0, 0);
    let mut placed: Vec<Placed<'_>> = written
        .iter()
        .map(|w| {
            let (dhcp_start, dns_start) = ends;
            ends = (w.dhcp_end, w.dns_end);
            Placed {
                shard: shard_of(w.id, shards),
                written: w,
                dhcp: dhcp_start..w.dhcp_end,
                dns: dns_start..w.dns_end,
            }
        })
        .collect();
    placed.sort_by_key(|p| p.shard);
    placed
}

/// The lines of `group` (one shard's hosts) taken from the flat output `flat` by `range`.
fn collect(
    group: &[Placed<'_>],
    flat: &str,
    range: impl Fn(&Placed<'_>) -> std::ops::Range<usize>,
) -> String {
    let mut text = String::with_capacity(group.iter().map(|p| range(p).len()).sum());
    for p in group {
        text.push_str(&flat[range(p)]);
    }
    text
}
