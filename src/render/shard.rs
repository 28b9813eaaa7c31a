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

/// The name of a shard's file in both directories: four lowercase hex digits, `00a3`. Shards
/// go up to 65,535, so every name has the same length and sorts like its number.
pub fn shard_file_name(shard: u32) -> String {
    format!("{shard:04x}")
}

/// The shard a host's lines go to.
pub fn shard_of(host_id: i64, shards: u32) -> u32 {
    // rem_euclid is never negative and below `shards`, so the conversion cannot fail.
    u32::try_from(host_id.rem_euclid(i64::from(shards.max(1)))).unwrap_or(0)
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
    let shards = shards.max(1);
    // Sizes first, so that every shard file is allocated once, at its size.
    let count = usize::try_from(shards).unwrap_or(usize::MAX);
    let mut sizes = vec![(0usize, 0usize); count];
    let (mut dhcp_at, mut dns_at) = (0, 0);
    for w in written {
        let size = &mut sizes[shard_of(w.host.id, shards) as usize];
        size.0 += w.dhcp_end - dhcp_at;
        size.1 += w.dns_end - dns_at;
        (dhcp_at, dns_at) = (w.dhcp_end, w.dns_end);
    }
    let mut files: Vec<(String, String)> = sizes
        .iter()
        .map(|&(d, n)| (String::with_capacity(d), String::with_capacity(n)))
        .collect();
    let mut entries = Vec::with_capacity(written.iter().filter(|w| w.reserved).count());
    let (mut dhcp_at, mut dns_at) = (0, 0);
    for w in written {
        let shard = shard_of(w.host.id, shards);
        let file = &mut files[shard as usize];
        file.0.push_str(&dhcp[dhcp_at..w.dhcp_end]);
        file.1.push_str(&dns[dns_at..w.dns_end]);
        (dhcp_at, dns_at) = (w.dhcp_end, w.dns_end);
        if w.reserved {
            entries.push(DhcpEntry {
                host_id: w.host.id,
                subnet_id: w.host.subnet_id,
                shard,
                mac: w.host.mac,
                ip: w.host.ip,
            });
        }
    }
    // Stable: each shard's entries stay in line order.
    entries.sort_by_key(|e| e.shard);
    let mut sharded = Sharded {
        shards,
        entries,
        ..Sharded::default()
    };
    for (shard, (d, n)) in (0..shards).zip(files) {
        if !d.is_empty() {
            sharded.dhcp.insert(shard, d);
        }
        if !n.is_empty() {
            sharded.dns.insert(shard, n);
        }
    }
    sharded
}
