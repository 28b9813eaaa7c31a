//! The files of [`LayoutKind::Incremental`](super::LayoutKind::Incremental): the hostsfile
//! layout's reservation and name lines, spread over numbered shard files so that one changed host
//! rewrites one small file, which dnsmasq re-reads on its own (`dhcp-hostsdir`, `hostsdir`).
//!
//! A host's shard is its id modulo the number of shards, so that it stays in the same file
//! whatever else changes; each shard holds its lines in the renderer's usual order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::Host;

/// The shard files of both directories, by shard number; a shard without lines has no file
/// (no entry here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharded {
    /// How many shards hosts are spread over (at least 1).
    pub shards: u32,
    /// The dhcp-hostsdir files: `MAC,IP,hostname[,LEASE]` lines, as in a dhcp-hostsfile.
    pub dhcp: BTreeMap<u32, String>,
    /// The hostsdir files: `IP [fqdn] hostname` lines, as in an addn-hosts file.
    pub dns: BTreeMap<u32, String>,
    /// Every reservation line of [`Sharded::dhcp`], by shard, each shard's in file order: the
    /// values the planner ([`crate::plan`]) reasons about without parsing the files.
    pub entries: Vec<DhcpEntry>,
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
    /// The reservations of `shard`, each with its line (without the newline), in file order.
    pub fn reservations(&self, shard: u32) -> impl Iterator<Item = (&DhcpEntry, &str)> {
        let start = self.entries.partition_point(|e| e.shard < shard);
        let end = self.entries.partition_point(|e| e.shard <= shard);
        let text = self.dhcp.get(&shard).map_or("", String::as_str);
        self.entries[start..end].iter().zip(text.lines())
    }
}

/// A host the renderer wrote, and where its lines end in the flat outputs.
pub(super) struct Written<'a> {
    pub(super) host: &'a Host,
    /// Whether it got a reservation line, not only a name line.
    pub(super) reserved: bool,
    pub(super) dhcp_end: usize,
    pub(super) dns_end: usize,
}

/// Spreads the flat hostsfile-layout outputs `dhcp` and `dns`, whose lines `written` describes
/// in order, over `shards` shards.
pub(super) fn split(dhcp: &str, dns: &str, written: &[Written], shards: u32) -> Sharded {
    let shards = shards.clamp(1, MAX_SHARDS);
    // Each host's shard and lines, grouped by shard, in output order within each: a sort rather
    // than a table of every shard, so that the cost follows the hosts, not the shard count.
    let mut ends = (0, 0);
    let mut placed: Vec<(u32, &Written, usize, usize)> = written
        .iter()
        .map(|w| {
            let (dhcp_start, dns_start) = ends;
            ends = (w.dhcp_end, w.dns_end);
            (shard_of(w.host.id, shards), w, dhcp_start, dns_start)
        })
        .collect();
    placed.sort_by_key(|p| p.0);
    let mut sharded = Sharded {
        shards,
        entries: Vec::with_capacity(written.iter().filter(|w| w.reserved).count()),
        ..Sharded::default()
    };
    for group in placed.chunk_by(|a, b| a.0 == b.0) {
        let shard = group[0].0;
        let dhcp_size = group.iter().map(|p| p.1.dhcp_end - p.2).sum();
        let dns_size = group.iter().map(|p| p.1.dns_end - p.3).sum();
        let (mut dhcp_file, mut dns_file) = (
            String::with_capacity(dhcp_size),
            String::with_capacity(dns_size),
        );
        for &(_, w, dhcp_start, dns_start) in group {
            dhcp_file.push_str(&dhcp[dhcp_start..w.dhcp_end]);
            dns_file.push_str(&dns[dns_start..w.dns_end]);
            if w.reserved {
                sharded.entries.push(DhcpEntry {
                    host_id: w.host.id,
                    subnet_id: w.host.subnet_id,
                    shard,
                    mac: w.host.mac,
                    ip: w.host.ip,
                });
            }
        }
        if !dhcp_file.is_empty() {
            sharded.dhcp.insert(shard, dhcp_file);
        }
        if !dns_file.is_empty() {
            sharded.dns.insert(shard, dns_file);
        }
    }
    sharded
}
