//! The incremental layout's render derived from the previous one ([`Previous::update`]) is the
//! full render byte for byte, after every step of random changes to hosts, their settings and
//! DNS-only names (patched in as a delta read does), whether the change could be derived or
//! needed the full render (shared addresses and MACs, changed DNS-only names, another set of
//! names-only subnets).

use std::collections::HashSet;
use std::path::PathBuf;

use ipmanager::client_id::ClientId;
use ipmanager::model::{DnsName, Extras, Host, HostSettings, Profile, Snapshot};
use ipmanager::render::{render_scoped, Layout, LayoutKind, Previous};
use proptest::prelude::*;
use proptest::sample::Index;

mod common;

use common::arb::{arb_addr, arb_mac, arb_name, arb_snapshot, resolve, Addr};

fn layout(shards: u32, names_shards: u32) -> Layout {
    Layout {
        kind: LayoutKind::Incremental,
        hosts_file: PathBuf::from("/h/dhcp-hosts"),
        addn_hosts_file: PathBuf::from("/h/hosts"),
        hosts_dir: PathBuf::from("/h/dhcp-hosts.d"),
        names_dir: PathBuf::from("/h/hosts.d"),
        shards,
        names_shards,
    }
}

/// A host's profile, aliases, client identifier and extra MACs (see [`settings_of`]).
type SettingsSpec = (Option<i64>, Vec<String>, Option<u8>, Vec<u8>);

/// A host's settings: profile 1 (valid), 2 (invalid) or none, aliases (some invalid), a client
/// identifier and extra MACs from small pools, so that they repeat.
fn arb_settings() -> impl Strategy<Value = Option<SettingsSpec>> {
    prop::option::weighted(
        0.4,
        (
            prop::option::of(1i64..3),
            prop::collection::vec(
                prop_oneof![
                    Just("www".to_owned()),
                    Just("mail".to_owned()),
                    Just("-bad".to_owned())
                ],
                0..2,
            ),
            prop::option::weighted(0.3, 0u8..3),
            prop::collection::vec(0u8..4, 0..2),
        ),
    )
}

#[derive(Debug, Clone)]
enum Op {
    /// New values for a host (a new one when the index is past the end).
    Host(Index, bool, Index, Addr, [u8; 6], String),
    Settings(Index, Option<SettingsSpec>),
    Delete(Index),
    /// A DNS-only name at an address of a subnet, or the removal of one.
    DnsName(Index, Addr, bool),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<Index>(), any::<bool>(), any::<Index>(), arb_addr(), arb_mac(), arb_name())
            .prop_map(|(at, new, s, a, m, n)| Op::Host(at, new, s, a, m, n)),
        2 => (any::<Index>(), arb_settings()).prop_map(|(at, s)| Op::Settings(at, s)),
        1 => any::<Index>().prop_map(Op::Delete),
        1 => (any::<Index>(), arb_addr(), any::<bool>()).prop_map(|(s, a, add)| Op::DnsName(s, a, add)),
    ]
}

fn profile(id: i64, boot_file: &str) -> Profile {
    Profile {
        id,
        name: "p".to_owned(),
        boot_file: Some(boot_file.to_owned()),
        boot_file_uefi: None,
        boot_file_arm64: None,
        boot_file_ipxe: None,
        next_server: None,
        tftp_server_name: None,
        options: Vec::new(),
    }
}

fn settings_of(host_id: i64, spec: &SettingsSpec) -> HostSettings {
    let (profile, aliases, client_id, macs) = spec;
    let mut macs: Vec<[u8; 6]> = macs.iter().map(|&m| [0x52, 0x54, 0, 0, 0, m]).collect();
    macs.sort_unstable();
    macs.dedup();
    HostSettings {
        host_id,
        profile: *profile,
        aliases: aliases.clone(),
        client_id: client_id.map(|c| ClientId(vec![1, c])),
        macs,
    }
}

/// Applies `op` to `truth`, adding the ids it touched to `changed`.
fn apply(truth: &mut Snapshot, next_id: &mut i64, op: &Op, changed: &mut HashSet<i64>) {
    let hosts = truth.hosts.len();
    match op {
        Op::Host(at, new, subnet, addr, mac, hostname) => {
            let (subnet_id, ip) = match truth.subnets.len() {
                0 => (7, resolve(addr, "10.0.0.0/8".parse().unwrap())),
                n => {
                    let s = &truth.subnets[subnet.index(n)];
                    (s.id, resolve(addr, s.cidr))
                }
            };
            let host = Host {
                id: *next_id,
                subnet_id,
                mac: *mac,
                ip,
                hostname: hostname.clone(),
                lease_seconds: None,
            };
            if *new || hosts == 0 {
                *next_id += 1;
                changed.insert(host.id);
                truth.hosts.push(host);
            } else {
                let old = &mut truth.hosts[at.index(hosts)];
                changed.insert(old.id);
                *old = Host { id: old.id, ..host };
            }
        }
        _ if hosts == 0 => {}
        Op::Settings(at, spec) => {
            let id = truth.hosts[at.index(hosts)].id;
            changed.insert(id);
            truth.extras.hosts.retain(|s| s.host_id != id);
            truth
                .extras
                .hosts
                .extend(spec.as_ref().map(|spec| settings_of(id, spec)));
        }
        Op::Delete(at) => {
            let id = truth.hosts.remove(at.index(hosts)).id;
            changed.insert(id);
            truth.hosts.retain(|h| h.id != id);
            truth.extras.hosts.retain(|s| s.host_id != id);
        }
        Op::DnsName(..) => {}
    }
    if let Op::DnsName(subnet, addr, add) = op {
        if *add && !truth.subnets.is_empty() {
            let s = &truth.subnets[subnet.index(truth.subnets.len())];
            let name = DnsName {
                id: *next_id,
                subnet_id: s.id,
                ip: resolve(addr, s.cidr),
                hostname: "named".to_owned(),
                aliases: Vec::new(),
            };
            *next_id += 1;
            changed.insert(name.id);
            truth.extras.dns_names.push(name);
        } else if let Some(name) = truth.extras.dns_names.pop() {
            changed.insert(name.id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn derived_renders_equal_full_renders(
        initial in arb_snapshot(),
        settings in prop::collection::vec(arb_settings(), 40),
        default_profile in prop::option::of(1i64..3),
        shards in prop_oneof![Just(1u32), 2u32..9],
        // Its own count: a host's names file need not have its reservation file's number.
        names_shards in prop_oneof![Just(1u32), 2u32..13],
        // Steps (each a few operations patched in at once), each with its names-only subnets.
        steps in prop::collection::vec(
            (prop::collection::vec(arb_op(), 1..4), prop::option::weighted(0.1, any::<Index>())),
            1..12),
    ) {
        let mut truth = initial;
        truth.extras = Extras {
            // Profile 2 fails validation: its hosts are served without it.
            profiles: vec![profile(1, "pxelinux.0"), profile(2, "bad\nfile")],
            subnets: truth.subnets.first().map(|s| ipmanager::model::SubnetSettings {
                subnet_id: s.id,
                options: Vec::new(),
                default_profile,
            }).into_iter().collect(),
            hosts: truth.hosts.iter().zip(&settings)
                .filter_map(|(h, spec)| spec.as_ref().map(|spec| settings_of(h.id, spec)))
                .collect(),
            dns_names: Vec::new(),
        };
        let mut next_id = truth.hosts.iter().map(|h| h.id).max().unwrap_or(0).saturating_add(1);
        let layout = layout(shards, names_shards);
        let (first, previous) = Previous::render(&truth, &layout, &[]);
        prop_assert_eq!(&first, &render_scoped(&truth, &layout, &[]));
        let mut previous = previous.expect("the incremental layout keeps its render");
        let mut last = truth.clone();
        for (ops, names_only) in &steps {
            let mut changed = HashSet::new();
            for op in ops {
                apply(&mut truth, &mut next_id, op, &mut changed);
            }
            let replaced = last.patch(
                &changed,
                truth.hosts.iter().filter(|h| changed.contains(&h.id)).cloned().collect(),
                truth.extras.hosts.iter().filter(|s| changed.contains(&s.host_id)).cloned().collect(),
                truth.extras.dns_names.iter().filter(|n| changed.contains(&n.id)).cloned().collect(),
            );
            let names_only: Vec<i64> = names_only
                .iter()
                .filter(|_| !last.subnets.is_empty())
                .map(|at| last.subnets[at.index(last.subnets.len())].id)
                .collect();
            let derived = previous.update(&last, &layout, &names_only, &replaced);
            prop_assert_eq!(derived, render_scoped(&last, &layout, &names_only));
        }
    }
}
