//! Property tests of the renderer with options, profiles, aliases and DNS-only names whose
//! values come from hostile text: no option value, profile field, alias or name can add a line,
//! a field, a tag or an option to any file, nor make a line of 1,000 bytes or more. Every file
//! passes the independent checker ([`ipmanager::render::check`]), and the lines are exactly
//! those the accepted rows account for. A host's client identifier and extra MACs are arbitrary
//! bytes: written whole as hex, or the host is skipped.

use std::net::IpAddr;

use ipmanager::client_id::ClientId;
use ipmanager::model::{
    DhcpOptionValue, DnsName, Extras, Host, HostSettings, OptionKind, Profile, Snapshot, Subnet,
    SubnetSettings,
};
use ipmanager::render::check::{check_file, FileKind};
use ipmanager::render::{render, Layout, LayoutKind, Row};
use proptest::prelude::*;

/// Text that is sometimes valid and often made of what dnsmasq reads as syntax.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("10.1.0.53".to_owned()),
        Just("2001:db8::1".to_owned()),
        Just("office.example".to_owned()),
        Just("de:ad".to_owned()),
        Just("1400".to_owned()),
        Just("10.9.0.0/16".to_owned()),
        Just(",".to_owned()),
        Just("\n".to_owned()),
        Just("#".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("set:evil".to_owned()),
        Just("tag:x".to_owned()),
        Just("dhcp-script=/tmp/x".to_owned()),
        Just("é".to_owned()),
        Just("a".repeat(300)),
        "[a-z0-9.:/-]{0,12}",
    ];
    prop::collection::vec(piece, 1..4).prop_map(|parts| parts.concat())
}

fn kind() -> impl Strategy<Value = OptionKind> {
    prop::sample::select(OptionKind::ALL.to_vec())
}

fn option() -> impl Strategy<Value = DhcpOptionValue> {
    (
        prop_oneof![Just(6u16), Just(26), Just(121), Just(3), 1u16..300],
        any::<bool>(),
        kind(),
        hostile(),
    )
        .prop_map(|(number, named, kind, value)| DhcpOptionValue {
            number,
            name: named.then(|| "known".to_owned()),
            kind,
            value,
        })
}

fn maybe(text: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(text)
}

fn profile(id: i64) -> impl Strategy<Value = Profile> {
    (
        maybe(prop_oneof![Just("pxelinux.0".to_owned()), hostile()]),
        maybe(hostile()),
        maybe(hostile()),
        maybe(prop_oneof![
            Just("http://boot/menu.ipxe".to_owned()),
            hostile()
        ]),
        maybe(hostile()),
        prop::collection::vec(option(), 0..3),
    )
        .prop_map(move |(bios, uefi, arm, ipxe, tftp, options)| Profile {
            id,
            name: "p".to_owned(),
            boot_file: bios,
            boot_file_uefi: uefi,
            boot_file_arm64: arm,
            boot_file_ipxe: ipxe,
            next_server: Some("10.1.0.5".parse().unwrap()),
            tftp_server_name: tftp,
            options,
        })
}

fn snapshots() -> impl Strategy<Value = Snapshot> {
    (
        prop::collection::vec(option(), 0..6),
        prop::collection::vec(option(), 0..3),
        (profile(1), profile(2)),
        prop::collection::vec(prop_oneof![Just("www".to_owned()), hostile()], 0..3),
        prop::collection::vec(prop_oneof![Just("vip".to_owned()), hostile()], 0..3),
        prop::option::of(1i64..4),
        (
            prop::option::of(prop::collection::vec(any::<u8>(), 0..140)),
            prop::collection::vec(
                prop_oneof![
                    any::<[u8; 6]>(),
                    Just([0x52, 0x54, 0, 0, 0, 11]),
                    Just([0x52, 0x54, 0, 0, 0, 12]),
                    Just([0x52, 0x54, 0, 0, 0, 0x77]),
                ],
                0..10,
            ),
        ),
    )
        .prop_map(
            |(v4, v6, (p1, p2), aliases, names, default, (client_id, macs))| {
                let subnets = vec![
                    Subnet {
                        id: 1,
                        cidr: "10.1.0.0/24".parse().unwrap(),
                        range: None,
                        gateway: Some("10.1.0.1".parse().unwrap()),
                        lease_seconds: None,
                        domain: Some("office.example".to_owned()),
                    },
                    Subnet {
                        id: 2,
                        cidr: "2001:db8:1::/64".parse().unwrap(),
                        range: None,
                        gateway: None,
                        lease_seconds: None,
                        domain: None,
                    },
                ];
                let host = |id: i64, subnet_id, ip: &str| Host {
                    id,
                    subnet_id,
                    mac: [0x52, 0x54, 0, 0, 0, id as u8],
                    ip: ip.parse().unwrap(),
                    hostname: format!("h{id}"),
                    lease_seconds: None,
                };
                let hosts = vec![
                    host(11, 1, "10.1.0.11"),
                    host(12, 1, "10.1.0.12"),
                    host(21, 2, "2001:db8:1::21"),
                ];
                let dns_names = names
                    .into_iter()
                    .enumerate()
                    .map(|(i, hostname)| DnsName {
                        id: 50 + i as i64,
                        subnet_id: 1,
                        ip: IpAddr::from([10, 1, 0, 60 + i as u8]),
                        hostname,
                        aliases: vec!["alias".to_owned()],
                    })
                    .collect();
                Snapshot {
                    subnets,
                    hosts,
                    extras: Extras {
                        profiles: vec![p1, p2],
                        subnets: vec![
                            SubnetSettings {
                                subnet_id: 1,
                                options: v4,
                                default_profile: default,
                            },
                            SubnetSettings {
                                subnet_id: 2,
                                options: v6,
                                default_profile: None,
                            },
                        ],
                        hosts: vec![HostSettings {
                            host_id: 11,
                            profile: Some(2),
                            aliases,
                            client_id: client_id.map(ClientId),
                            macs,
                        }],
                        dns_names,
                    },
                }
            },
        )
}

fn layout(kind: LayoutKind) -> Layout {
    Layout {
        kind,
        hosts_file: "/var/lib/ipmanager/dhcp-hosts".into(),
        addn_hosts_file: "/var/lib/ipmanager/hosts".into(),
        hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
        names_dir: "/var/lib/ipmanager/hosts.d".into(),
        shards: 2,
        names_shards: 2,
    }
}

fn count(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_value_adds_a_line_field_tag_or_option(snapshot in snapshots()) {
        for kind in [LayoutKind::Hostsfile, LayoutKind::Conf, LayoutKind::Incremental] {
            let rendered = render(&snapshot, &layout(kind));
            check_file(FileKind::Include, &rendered.include)
                .map_err(|e| TestCaseError::fail(format!("{kind:?} include: {e}\n{}", rendered.include)))?;
            if let Some(hosts) = &rendered.hosts {
                check_file(FileKind::HostsFile, hosts)
                    .map_err(|e| TestCaseError::fail(format!("hosts: {e}\n{hosts}")))?;
            }
            if let Some(addn) = &rendered.addn_hosts {
                check_file(FileKind::AddnHosts, addn)
                    .map_err(|e| TestCaseError::fail(format!("addn-hosts: {e}\n{addn}")))?;
            }
            if let Some(sharded) = &rendered.sharded {
                for text in sharded.dhcp.values() {
                    prop_assert!(check_file(FileKind::HostsFile, text).is_ok(), "{}", text);
                }
                for text in sharded.dns.values() {
                    prop_assert!(check_file(FileKind::AddnHosts, text).is_ok(), "{}", text);
                }
            }
            // Exactly the accepted options are lines: every option is written or skipped.
            let extras = &snapshot.extras;
            let served_profiles: Vec<&Profile> = extras
                .profiles
                .iter()
                .filter(|p| !rendered.skipped.iter().any(|s| s.row == Row::Profile(p.id)))
                .collect();
            let options: usize = extras.subnets.iter().map(|s| s.options.len()).sum::<usize>()
                + served_profiles.iter().map(|p| p.options.len()).sum::<usize>();
            let skipped_options = rendered
                .skipped
                .iter()
                .filter(|s| matches!(s.row, Row::SubnetOption { .. } | Row::ProfileOption { .. }))
                .count();
            let routers = 1;
            prop_assert_eq!(
                count(&rendered.include, "dhcp-option="),
                options - skipped_options + routers,
                "{}", rendered.include
            );
            let boots: usize = served_profiles
                .iter()
                .map(|p| {
                    [&p.boot_file, &p.boot_file_uefi, &p.boot_file_arm64, &p.boot_file_ipxe]
                        .iter()
                        .filter(|f| f.is_some())
                        .count()
                })
                .sum();
            prop_assert_eq!(count(&rendered.include, "dhcp-boot="), boots);
            // Host 11's identifier and extra MACs: whole and valid, or the host is skipped.
            let settings = &extras.hosts[0];
            let own = [0x52, 0x54, 0, 0, 0, 11];
            let ident_ok = settings.client_id.as_ref().is_none_or(|c| (2..=130).contains(&c.0.len()))
                && settings.macs.len() <= 8
                && settings.macs.iter().enumerate().all(|(at, m)| {
                    m[0] & 1 == 0 && *m != [0; 6] && *m != own && *m != [0x52, 0x54, 0, 0, 0, 12]
                        && !settings.macs[..at].contains(m)
                });
            prop_assert_eq!(rendered.hosts_served, 2 + usize::from(ident_ok));
            if let (true, Some(hosts)) = (ident_ok, &rendered.hosts) {
                let line = hosts.lines().find(|l| l.contains(",10.1.0.11,")).unwrap();
                prop_assert_eq!(line.starts_with("id:"), settings.client_id.is_some());
                let fields = line.split(',').filter(|f| !f.starts_with("set:")).count();
                prop_assert_eq!(fields, 3 + settings.macs.len()
                    + usize::from(settings.client_id.is_some()));
            }
            for text in [Some(&rendered.include), rendered.hosts.as_ref(), rendered.addn_hosts.as_ref()]
                .into_iter()
                .flatten()
            {
                prop_assert!(text.lines().all(|l| l.len() < 1000));
            }
        }
    }
}
