//! The next render of the incremental layout derived from the previous one when only some
//! hosts changed, at a cost that follows the changed hosts rather than all of them: what an
//! agent does for every one-row change at 100k hosts.
//!
//! The renderer's rules that look across hosts are the order (by address, then id), the
//! duplicate address and key (MAC, client identifier) rules, and DNS-only names refused at a
//! host's address. A changed host whose address and keys, before and after the change, no
//! other host and no DNS-only name has, takes part in none of them: every other host keeps its
//! verdict and its lines, and the changed host's verdict and lines are what the full render
//! gives it alone. Then its lines are cut out of and put into its shard's files at its place by
//! address, and its entries of [`Rendered::skipped`] likewise. Whenever that cannot be shown
//! (a shared address or key, a changed DNS-only name, subnet, subnet setting, profile or set of
//! names-only subnets, a repeated id, another layout) the render is done in full.
//! `tests/render_incremental.rs` checks the result against the full render byte for byte.

use std::collections::HashMap;
use std::net::IpAddr;

use super::shard::Written;
use super::{
    head, mac_key, more_keys, options, render_full, render_host, shard_of, HostLines, Kept, Layout,
    Rendered, Row, Sharded,
};
use crate::model::{Host, HostSettings, Profile, Replaced, Snapshot, Subnet, SubnetSettings};

/// A render of the incremental layout with what is needed to derive the next one from it.
#[derive(Debug)]
pub struct Previous {
    layout: Layout,
    names_only: Vec<i64>,
    subnets: Vec<Subnet>,
    profiles: Vec<Profile>,
    subnet_settings: Vec<SubnetSettings>,
    /// The render, its shard files included.
    rendered: Rendered,
    /// By names shard: the hosts and DNS-only names with lines there, in the order of the
    /// names file (hosts by address, then the DNS-only names).
    members: Vec<Vec<Member>>,
    /// By reservation shard: the hosts written there, by address (those `reserved` have a
    /// line in the file, in this order).
    dhcp_members: Vec<Vec<Member>>,
    /// Where the hosts' entries of `rendered.skipped` start and end, and each one's address.
    skipped_hosts: (usize, usize),
    skipped_ips: Vec<IpAddr>,
    /// Every host's address, sorted (one per host).
    ips: Vec<IpAddr>,
    /// Every host's keys, sorted ([`super::all_keys`]).
    keys: Vec<u128>,
    /// Every DNS-only name's address, sorted.
    dns_ips: Vec<IpAddr>,
}

/// A host or DNS-only name with lines in a shard.
#[derive(Debug, Clone, Copy)]
struct Member {
    id: i64,
    ip: IpAddr,
    /// It has a reservation line, besides its names line.
    reserved: bool,
    dns_name: bool,
}

impl Previous {
    /// [`super::render_scoped`], and with [`super::LayoutKind::Incremental`] what the next
    /// [`Previous::update`] derives its render from.
    pub fn render(
        snapshot: &Snapshot,
        layout: &Layout,
        names_only: &[i64],
    ) -> (Rendered, Option<Previous>) {
        render_full(snapshot, layout, names_only, true)
    }

    pub(super) fn new(
        snapshot: &Snapshot,
        layout: &Layout,
        names_only: &[i64],
        rendered: Rendered,
        kept: Kept,
        written: &[Written],
    ) -> Previous {
        let (shards, names_shards) = rendered
            .sharded
            .as_ref()
            .map_or((1, 1), |s| (s.shards, s.names_shards));
        let mut members = vec![Vec::new(); names_shards as usize];
        let mut dhcp_members = vec![Vec::new(); shards as usize];
        for (at, w) in written.iter().enumerate() {
            let member = Member {
                id: w.id,
                ip: w.ip,
                reserved: w.reserved,
                dns_name: at >= kept.hosts_written,
            };
            members[shard_of(w.id, names_shards) as usize].push(member);
            if !member.dns_name {
                dhcp_members[shard_of(w.id, shards) as usize].push(member);
            }
        }
        let mut ips: Vec<IpAddr> = snapshot.hosts.iter().map(|h| h.ip).collect();
        ips.sort_unstable();
        let mut dns_ips: Vec<IpAddr> = snapshot.extras.dns_names.iter().map(|n| n.ip).collect();
        dns_ips.sort_unstable();
        Previous {
            layout: layout.clone(),
            names_only: names_only.to_vec(),
            subnets: snapshot.subnets.clone(),
            profiles: snapshot.extras.profiles.clone(),
            subnet_settings: snapshot.extras.subnets.clone(),
            rendered,
            members,
            dhcp_members,
            skipped_hosts: kept.skipped_hosts,
            skipped_ips: kept.skipped_ips,
            ips,
            keys: kept.keys,
            dns_ips,
        }
    }

    /// The render of `snapshot`, which is the snapshot of this render patched as `replaced`
    /// says ([`Snapshot::patch`]); afterwards this is that render. Byte for byte
    /// [`super::render_scoped`]`(snapshot, layout, names_only)`: derived from this render when
    /// the changed hosts take part in no rule across hosts, rendered in full otherwise.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        layout: &Layout,
        names_only: &[i64],
        replaced: &Replaced,
    ) -> Rendered {
        if !self.patch(snapshot, layout, names_only, replaced) {
            let (rendered, previous) = Previous::render(snapshot, layout, names_only);
            match previous {
                Some(previous) => *self = previous,
                // Not the incremental layout: nothing to derive from, ever.
                None => return rendered,
            }
        }
        self.rendered.clone()
    }

    /// Patches this render into that of `snapshot` when the changed hosts take part in no rule
    /// across hosts; `false`, and nothing touched, otherwise.
    fn patch(
        &mut self,
        snapshot: &Snapshot,
        layout: &Layout,
        names_only: &[i64],
        replaced: &Replaced,
    ) -> bool {
        let same_rest = *layout == self.layout
            && names_only == self.names_only
            && snapshot.subnets == self.subnets
            && snapshot.extras.profiles == self.profiles
            && snapshot.extras.subnets == self.subnet_settings;
        if !same_rest || !replaced.dns_names.is_empty() || self.rendered.sharded.is_none() {
            return false;
        }
        let changed = |id: i64| replaced.ids.binary_search(&id).is_ok();
        if replaced.ids.is_empty() {
            return true;
        }
        if snapshot.extras.dns_names.iter().any(|n| changed(n.id)) {
            return false;
        }
        let new: Vec<&Host> = snapshot.hosts.iter().filter(|h| changed(h.id)).collect();
        let new_settings: Vec<HostSettings> = snapshot
            .extras
            .hosts
            .iter()
            .filter(|s| changed(s.host_id))
            .cloned()
            .collect();
        let old: Vec<&Host> = replaced.hosts.iter().collect();
        let mut scratch = Vec::new();
        let settings = |hosts| {
            options::Settings::from_parts(
                &snapshot.extras.profiles,
                &snapshot.extras.subnets,
                hosts,
                &mut Vec::new(),
            )
        };
        let (old_settings, new_settings) = (settings(&replaced.settings), settings(&new_settings));
        let keys_of = |host: &Host, settings: &options::Settings| -> Vec<u128> {
            std::iter::once(mac_key(host))
                .chain(more_keys(host.subnet_id, &settings.ident_of(host)))
                .collect()
        };
        let old_keys: Vec<u128> = old.iter().flat_map(|h| keys_of(h, &old_settings)).collect();
        let new_keys: Vec<u128> = new.iter().flat_map(|h| keys_of(h, &new_settings)).collect();
        let old_ips: Vec<IpAddr> = old.iter().map(|h| h.ip).collect();
        let new_ips: Vec<IpAddr> = new.iter().map(|h| h.ip).collect();
        let alone = unique_ids(&old)
            && unique_ids(&new)
            && unique_ids_of(replaced.settings.iter().map(|s| s.host_id))
            && old_ips.iter().all(|ip| count(&self.ips, ip) == 1)
            && old_keys.iter().all(|key| count(&self.keys, key) == 1)
            && new_ips
                .iter()
                .all(|ip| count_after(&self.ips, &old_ips, &new_ips, ip) == 1)
            && new_keys
                .iter()
                .all(|key| count_after(&self.keys, &old_keys, &new_keys, key) == 1)
            && old_ips
                .iter()
                .chain(&new_ips)
                .all(|ip| self.dns_ips.binary_search(ip).is_err());
        if !alone {
            return false;
        }
        replace_sorted(&mut self.ips, &old_ips, &new_ips);
        replace_sorted(&mut self.keys, &old_keys, &new_keys);
        for host in &old {
            self.remove(host);
        }
        let (_, subnets) = head(
            &snapshot.subnets,
            &new_settings,
            layout,
            names_only,
            &mut scratch,
        );
        for host in new {
            let mut out = HostLines {
                dhcp: String::new(),
                dns: String::new(),
                served: 0,
                written: Some(Vec::with_capacity(1)),
                kept: None,
            };
            let mut skipped = Vec::new();
            // Nobody else has its keys: none is repeated.
            let mut repeated = HashMap::new();
            let kind = layout.kind;
            render_host(
                host,
                &subnets,
                &new_settings,
                kind,
                None,
                &mut repeated,
                &mut out,
                &mut skipped,
            );
            self.insert(host, out, skipped);
        }
        true
    }

    /// The shard files; `patch` checked that the render has them (the default is never used).
    fn sharded(&mut self) -> &mut Sharded {
        self.rendered.sharded.get_or_insert_with(Sharded::default)
    }

    /// Takes the lines and skipped entries of `host`, as rendered before, out of the render.
    fn remove(&mut self, host: &Host) {
        let (from, to) = self.skipped_hosts;
        let before = self.rendered.skipped.len();
        let mut at = 0;
        let mut kept_ips = Vec::with_capacity(self.skipped_ips.len());
        self.rendered.skipped.retain(|s| {
            let index = at;
            at += 1;
            let theirs = (from..to).contains(&index)
                && matches!(s.row, Row::Host(id) | Row::Aliases(id) if id == host.id);
            if (from..to).contains(&index) && !theirs {
                kept_ips.push(self.skipped_ips[index - from]);
            }
            !theirs
        });
        self.skipped_ips = kept_ips;
        self.skipped_hosts.1 -= before - self.rendered.skipped.len();
        let (shards, names_shards) = (self.sharded().shards, self.sharded().names_shards);
        let names_shard = shard_of(host.id, names_shards);
        let members = &mut self.members[names_shard as usize];
        let Some(at) = members.iter().position(|m| m.id == host.id && !m.dns_name) else {
            return;
        };
        members.remove(at);
        remove_line(&mut self.sharded().dns, names_shard, at);
        let shard = shard_of(host.id, shards);
        let members = &mut self.dhcp_members[shard as usize];
        let Some(at) = members.iter().position(|m| m.id == host.id) else {
            return;
        };
        let member = members.remove(at);
        let dhcp_line = members[..at].iter().filter(|m| m.reserved).count();
        if member.reserved {
            self.rendered.hosts_served -= 1;
            let sharded = self.sharded();
            remove_line(&mut sharded.dhcp, shard, dhcp_line);
            let first = sharded.entries.partition_point(|e| e.shard < shard);
            sharded.entries.remove(first + dhcp_line);
            sharded.more_keys.remove(&host.id);
        }
    }

    /// Puts `host`'s lines (`out`, one host's) and skipped entries into the render, at its
    /// place by address.
    fn insert(&mut self, host: &Host, out: HostLines, skipped: Vec<super::Skipped>) {
        let (from, to) = self.skipped_hosts;
        let at = from + self.skipped_ips.partition_point(|ip| *ip < host.ip);
        self.skipped_ips
            .splice(at - from..at - from, skipped.iter().map(|_| host.ip));
        self.skipped_hosts.1 = to + skipped.len();
        self.rendered.skipped.splice(at..at, skipped);
        let Some(written) = out.written.and_then(|mut w| w.pop()) else {
            return;
        };
        let (shards, names_shards) = (self.sharded().shards, self.sharded().names_shards);
        let member = Member {
            id: written.id,
            ip: written.ip,
            reserved: written.reserved,
            dns_name: false,
        };
        let names_shard = shard_of(host.id, names_shards);
        let members = &mut self.members[names_shard as usize];
        let at = members.partition_point(|m| !m.dns_name && m.ip < host.ip);
        members.insert(at, member);
        insert_line(&mut self.sharded().dns, names_shard, at, &out.dns);
        let shard = shard_of(host.id, shards);
        let members = &mut self.dhcp_members[shard as usize];
        let at = members.partition_point(|m| m.ip < host.ip);
        let dhcp_line = members[..at].iter().filter(|m| m.reserved).count();
        members.insert(at, member);
        let sharded = self.sharded();
        if written.reserved {
            insert_line(&mut sharded.dhcp, shard, dhcp_line, &out.dhcp);
            let first = sharded.entries.partition_point(|e| e.shard < shard);
            sharded.entries.insert(
                first + dhcp_line,
                super::DhcpEntry {
                    host_id: written.id,
                    subnet_id: written.subnet_id,
                    shard,
                    mac: written.mac,
                    ip: written.ip,
                },
            );
            if !written.more_keys.is_empty() {
                sharded.more_keys.insert(written.id, written.more_keys);
            }
            self.rendered.hosts_served += 1;
        }
    }
}

fn unique_ids(hosts: &[&Host]) -> bool {
    unique_ids_of(hosts.iter().map(|h| h.id))
}

fn unique_ids_of(ids: impl Iterator<Item = i64>) -> bool {
    let mut ids: Vec<i64> = ids.collect();
    ids.sort_unstable();
    ids.windows(2).all(|pair| pair[0] != pair[1])
}

/// How often `value` is in the sorted `values`.
fn count<T: Ord>(values: &[T], value: &T) -> usize {
    values.partition_point(|v| v <= value) - values.partition_point(|v| v < value)
}

/// How often `value` is in the sorted `values` once `gone` are taken out and `new` put in.
fn count_after<T: Ord>(values: &[T], gone: &[T], new: &[T], value: &T) -> usize {
    let of = |list: &[T]| list.iter().filter(|v| *v == value).count();
    (count(values, value) + of(new)).saturating_sub(of(gone))
}

/// Takes one of each of `gone` out of the sorted `values` and puts `new` in, keeping it sorted.
fn replace_sorted<T: Ord + Copy>(values: &mut Vec<T>, gone: &[T], new: &[T]) {
    for value in gone {
        if let Ok(at) = values.binary_search(value) {
            values.remove(at);
        }
    }
    for value in new {
        let at = values.partition_point(|v| v < value);
        values.insert(at, *value);
    }
}

/// The byte where line `line` (from 0) of `text` starts; its length for the line after the
/// last.
fn line_start(text: &str, line: usize) -> usize {
    if line == 0 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 1)
        .map_or(text.len(), |(at, _)| at + 1)
}

/// Removes line `line` of the file of `shard`; a file left empty goes.
fn remove_line(files: &mut std::collections::BTreeMap<u32, String>, shard: u32, line: usize) {
    let Some(text) = files.get_mut(&shard) else {
        return;
    };
    let (start, end) = (line_start(text, line), line_start(text, line + 1));
    text.replace_range(start..end, "");
    if text.is_empty() {
        files.remove(&shard);
    }
}

/// Inserts `lines` (whole lines) before line `line` of the file of `shard`.
fn insert_line(
    files: &mut std::collections::BTreeMap<u32, String>,
    shard: u32,
    line: usize,
    lines: &str,
) {
    let text = files.entry(shard).or_default();
    let at = line_start(text, line);
    text.insert_str(at, lines);
}
