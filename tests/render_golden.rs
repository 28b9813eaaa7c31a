//! Golden tests of the renderer: hand-built snapshots whose every output file is compared byte
//! for byte with `tests/golden/<case>.<layout>/` (the incremental layout's shards in its
//! `dhcp-hosts.d/` and `hosts.d/`, four shards). `UPDATE_GOLDEN=1 cargo test --test
//! render_golden` rewrites those files; a rewritten file must be reviewed as dnsmasq syntax
//! before it is committed, since from then on it defines what is correct.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipmanager::model::{
    DhcpOptionValue, DnsName, Extras, Host, HostSettings, OptionKind, Profile, Snapshot, Subnet,
    SubnetSettings,
};
use ipmanager::render::{render, shard_file_name, Layout, LayoutKind, Rendered, Row, Skipped};

const HOSTS_FILE: &str = "/var/lib/ipmanager/dhcp-hosts";
const ADDN_HOSTS_FILE: &str = "/var/lib/ipmanager/hosts";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn subnet(id: i64, cidr: &str) -> Subnet {
    Subnet {
        id,
        cidr: cidr.parse().unwrap(),
        range: None,
        gateway: None,
        lease_seconds: None,
        domain: None,
    }
}

fn host(id: i64, subnet_id: i64, mac: [u8; 6], address: &str, hostname: &str) -> Host {
    Host {
        id,
        subnet_id,
        mac,
        ip: ip(address),
        hostname: hostname.to_owned(),
        lease_seconds: None,
    }
}

fn mac(last: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0xAB, 0xCD, last]
}

/// Renders `snapshot` in `kind`, compares (or with `UPDATE_GOLDEN=1` rewrites) the files, and
/// checks that reversing the input changes nothing.
fn golden(case: &str, snapshot: &Snapshot, kind: LayoutKind) -> Rendered {
    let layout = Layout {
        kind,
        hosts_file: HOSTS_FILE.into(),
        addn_hosts_file: ADDN_HOSTS_FILE.into(),
        hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
        names_dir: "/var/lib/ipmanager/hosts.d".into(),
        shards: 4,
        names_shards: 4,
    };
    let rendered = render(snapshot, &layout);
    let kind_name = match kind {
        LayoutKind::Hostsfile => "hostsfile",
        LayoutKind::Conf => "conf",
        LayoutKind::Incremental => "incremental",
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{case}.{kind_name}"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for (name, content) in [
        ("include.conf", Some(&rendered.include)),
        ("dhcp-hosts", rendered.hosts.as_ref()),
        ("hosts", rendered.addn_hosts.as_ref()),
    ] {
        let path = dir.join(name);
        if update {
            write_or_remove(&path, content);
        } else {
            let expected = fs::read_to_string(&path).ok();
            assert_eq!(
                content.map(String::as_str),
                expected.as_deref(),
                "{} differs (UPDATE_GOLDEN=1 rewrites it)",
                path.display()
            );
        }
    }
    if let Some(sharded) = &rendered.sharded {
        for (name, shards) in [("dhcp-hosts.d", &sharded.dhcp), ("hosts.d", &sharded.dns)] {
            let files: BTreeMap<String, String> = shards
                .iter()
                .map(|(&shard, text)| (shard_file_name(shard), text.clone()))
                .collect();
            compare_dir(&dir.join(name), &files, update);
        }
    }
    let extras = &snapshot.extras;
    let reversed = Snapshot {
        subnets: snapshot.subnets.iter().rev().cloned().collect(),
        hosts: snapshot.hosts.iter().rev().cloned().collect(),
        extras: Extras {
            profiles: extras.profiles.iter().rev().cloned().collect(),
            subnets: extras.subnets.iter().rev().cloned().collect(),
            hosts: extras.hosts.iter().rev().cloned().collect(),
            dns_names: extras.dns_names.iter().rev().cloned().collect(),
        },
    };
    assert_eq!(
        render(&reversed, &layout),
        rendered,
        "output depends on input order"
    );
    rendered
}

/// Compares the files of `dir` with `files`, or with `update` makes them so.
fn compare_dir(dir: &Path, files: &BTreeMap<String, String>, update: bool) {
    if update {
        if dir.exists() {
            fs::remove_dir_all(dir).unwrap();
        }
        fs::create_dir_all(dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
        return;
    }
    let found: BTreeMap<String, String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, fs::read_to_string(entry.path()).unwrap())
        })
        .collect();
    assert_eq!(
        &found,
        files,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        dir.display()
    );
}

fn write_or_remove(path: &PathBuf, content: Option<&String>) {
    match content {
        Some(content) => {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        None => {
            if path.exists() {
                fs::remove_file(path).unwrap();
            }
        }
    }
}

/// Every kind of subnet and host that is served, in scrambled order.
fn basic() -> Snapshot {
    let subnets = vec![
        Subnet {
            range: Some((ip("2001:db8:0:10::1000"), ip("2001:db8:0:10::1fff"))),
            lease_seconds: Some(86400),
            domain: Some("v6.example.org".to_owned()),
            ..subnet(3, "2001:db8:0:10::/64")
        },
        Subnet {
            gateway: Some(ip("192.168.50.1")),
            ..subnet(2, "192.168.50.0/26")
        },
        Subnet {
            range: Some((ip("10.0.0.100"), ip("10.0.0.199"))),
            gateway: Some(ip("10.0.0.1")),
            lease_seconds: Some(3600),
            domain: Some("lan.example.org".to_owned()),
            ..subnet(1, "10.0.0.0/24")
        },
        subnet(4, "2001:db8:0:20::/64"),
    ];
    let hosts = vec![
        host(41, 4, mac(0x41), "2001:db8:0:20::a", "static6"),
        host(11, 1, mac(0x11), "10.0.0.20", "printer"),
        Host {
            lease_seconds: Some(7200),
            ..host(12, 1, mac(0x12), "10.0.0.10", "nas")
        },
        host(13, 1, mac(0x13), "10.0.0.30", "web.other.example"),
        Host {
            lease_seconds: Some(600),
            ..host(21, 2, mac(0x21), "192.168.50.5", "cam-1")
        },
        host(22, 2, mac(0x22), "192.168.50.4", "Cam-2"),
        // The printer's MAC again, in another subnet: one reservation per subnet is fine.
        host(23, 2, mac(0x11), "192.168.50.6", "printer"),
        Host {
            lease_seconds: Some(3600),
            ..host(
                31,
                3,
                [0x02, 0, 0, 0, 0, 0x31],
                "2001:db8:0:10::5",
                "v6host",
            )
        },
    ];
    Snapshot {
        subnets,
        hosts,
        ..Default::default()
    }
}

#[test]
fn basic_hostsfile() {
    let rendered = golden("basic", &basic(), LayoutKind::Hostsfile);
    assert_eq!(rendered.hosts_served, 8);
    assert_eq!(rendered.skipped, vec![]);
}

#[test]
fn basic_incremental() {
    let rendered = golden("basic", &basic(), LayoutKind::Incremental);
    assert_eq!(rendered.hosts_served, 8);
    assert_eq!(rendered.skipped, vec![]);
}

#[test]
fn basic_conf() {
    let rendered = golden("basic", &basic(), LayoutKind::Conf);
    assert_eq!(rendered.hosts_served, 8);
    assert_eq!(rendered.skipped, vec![]);
}

/// Rows that must not be served next to rows that still are.
fn invalid() -> Snapshot {
    let good = Subnet {
        range: Some((ip("10.1.0.100"), ip("10.1.0.150"))),
        domain: Some("corp".to_owned()),
        ..subnet(1, "10.1.0.0/24")
    };
    let subnets = vec![
        good,
        Subnet {
            domain: Some("bad domain".to_owned()),
            ..subnet(5, "10.5.0.0/24")
        },
        Subnet {
            range: Some((ip("10.6.0.10"), ip("10.7.0.10"))),
            ..subnet(6, "10.6.0.0/24")
        },
        subnet(7, "2001:db8:7::/56"),
        Subnet {
            lease_seconds: Some(60),
            ..subnet(8, "10.8.0.0/24")
        },
        Subnet {
            gateway: Some(ip("2001:db8::1")),
            ..subnet(9, "10.9.0.0/24")
        },
    ];
    let hosts = vec![
        host(101, 1, mac(1), "10.1.0.10", "ok-1"),
        host(102, 1, mac(2), "10.1.0.11", "evil\ndhcp-script=/tmp/x"),
        host(103, 1, mac(3), "10.1.0.12", "evil,set:x,infinite"),
        host(104, 1, mac(4), "10.1.0.13", "evil#comment"),
        host(105, 1, mac(5), "10.1.0.14", "under_score"),
        host(106, 1, mac(6), "10.1.0.15", "ignore"),
        host(107, 1, mac(7), "10.1.0.16", "12h"),
        host(108, 1, [0x01, 0, 0x5e, 0, 0, 1], "10.1.0.17", "multicast"),
        host(109, 1, [0; 6], "10.1.0.18", "zero-mac"),
        host(110, 1, mac(10), "10.2.0.1", "outside"),
        host(111, 1, mac(11), "10.1.0.0", "network"),
        host(112, 1, mac(12), "10.1.0.255", "broadcast"),
        host(113, 1, mac(13), "2001:db8::13", "wrong-family"),
        Host {
            lease_seconds: Some(119),
            ..host(114, 1, mac(14), "10.1.0.19", "short-lease")
        },
        Host {
            lease_seconds: Some(4_294_967_296),
            ..host(115, 1, mac(15), "10.1.0.20", "long-lease")
        },
        // Same address as 101: the lower id comes first in address order and is kept.
        host(116, 1, mac(16), "10.1.0.10", "dup-ip"),
        // Same MAC as 101 in the same subnet.
        host(117, 1, mac(1), "10.1.0.21", "dup-mac"),
        host(118, 5, mac(18), "10.5.0.10", "in-bad-subnet"),
        host(119, 99, mac(19), "10.99.0.10", "no-subnet"),
        host(120, 1, mac(20), "10.1.0.22", &"x".repeat(300)),
        Host {
            lease_seconds: Some(4_294_967_295),
            ..host(121, 1, mac(21), "10.1.0.23", "ok-2")
        },
    ];
    Snapshot {
        subnets,
        hosts,
        ..Default::default()
    }
}

fn invalid_skipped() -> Vec<Skipped> {
    let subnet = |id, reason: &str| Skipped {
        row: Row::Subnet(id),
        reason: reason.to_owned(),
    };
    let host = |id, reason: &str| Skipped {
        row: Row::Host(id),
        reason: reason.to_owned(),
    };
    vec![
        // Subnets in cidr order.
        subnet(
            5,
            "domain contains U+0020 at byte 3; only ASCII letters, digits, '-' and '.' are \
             allowed",
        ),
        subnet(6, "range end 10.7.0.10 is outside 10.6.0.0/24"),
        subnet(8, "lease time 60 s is outside 120..=4294967295"),
        subnet(
            9,
            "gateway 2001:db8::1 is IPv6 but subnet 10.9.0.0/24 is IPv4",
        ),
        subnet(
            7,
            "IPv6 prefix /56 is shorter than the /64 dnsmasq requires for DHCPv6",
        ),
        // Hosts in address order.
        host(
            111,
            "address 10.1.0.0 is the network address of 10.1.0.0/24",
        ),
        host(116, "address 10.1.0.10 is already reserved by host 101"),
        host(
            102,
            "hostname contains U+000A at byte 4; only ASCII letters, digits, '-' and '.' are \
             allowed",
        ),
        host(
            103,
            "hostname contains ',' at byte 4; only ASCII letters, digits, '-' and '.' are allowed",
        ),
        host(
            104,
            "hostname contains '#' at byte 4; only ASCII letters, digits, '-' and '.' are allowed",
        ),
        host(
            105,
            "hostname contains '_' at byte 5; only ASCII letters, digits, '-' and '.' are allowed",
        ),
        host(106, "hostname ignore is a dnsmasq dhcp-host keyword"),
        host(
            107,
            "hostname is digits and a time unit: dnsmasq reads it as a lease time",
        ),
        host(108, "MAC address is a multicast or broadcast address"),
        host(109, "MAC address is all zeros"),
        host(114, "lease time 119 s is outside 120..=4294967295"),
        host(115, "lease time 4294967296 s is outside 120..=4294967295"),
        host(
            117,
            "MAC address is already reserved in subnet 1 by host 101",
        ),
        host(120, "hostname is 300 bytes long, the limit is 253"),
        host(
            112,
            "address 10.1.0.255 is the broadcast address of 10.1.0.0/24",
        ),
        host(110, "address 10.2.0.1 is outside 10.1.0.0/24"),
        host(118, "subnet 5 is not served"),
        host(119, "subnet 99 is not in the snapshot"),
        host(
            113,
            "address 2001:db8::13 is IPv6 but subnet 10.1.0.0/24 is IPv4",
        ),
    ]
}

#[test]
fn invalid_rows_are_skipped_hostsfile() {
    let rendered = golden("invalid", &invalid(), LayoutKind::Hostsfile);
    assert_eq!(rendered.skipped, invalid_skipped());
    assert_eq!(rendered.hosts_served, 2);
}

#[test]
fn invalid_rows_are_skipped_incremental() {
    let rendered = golden("invalid", &invalid(), LayoutKind::Incremental);
    assert_eq!(rendered.skipped, invalid_skipped());
    assert_eq!(rendered.hosts_served, 2);
}

#[test]
fn invalid_rows_are_skipped_conf() {
    let rendered = golden("invalid", &invalid(), LayoutKind::Conf);
    assert_eq!(rendered.skipped, invalid_skipped());
    assert_eq!(rendered.hosts_served, 2);
}

#[test]
fn empty_snapshot() {
    let rendered = golden("empty", &Snapshot::default(), LayoutKind::Hostsfile);
    assert_eq!(rendered.hosts_served, 0);
    assert_eq!(rendered.skipped, vec![]);
}

fn option(number: u16, name: Option<&str>, kind: OptionKind, value: &str) -> DhcpOptionValue {
    DhcpOptionValue {
        number,
        name: name.map(str::to_owned),
        kind,
        value: value.to_owned(),
    }
}

/// Options of every type on an IPv4 and an IPv6 subnet, a PXE profile with every boot file,
/// an options-only profile used as a subnet's default, a profile that fails validation, hosts
/// in profiles and with aliases, and DNS-only names, one of them invalid.
fn options() -> Snapshot {
    use OptionKind::*;
    let subnets = vec![
        Subnet {
            range: Some((ip("10.1.0.100"), ip("10.1.0.199"))),
            gateway: Some(ip("10.1.0.1")),
            domain: Some("office.example".to_owned()),
            ..subnet(1, "10.1.0.0/24")
        },
        Subnet {
            domain: Some("v6.example".to_owned()),
            ..subnet(2, "2001:db8:1::/64")
        },
        Subnet {
            gateway: Some(ip("10.2.0.1")),
            ..subnet(3, "10.2.0.0/24")
        },
    ];
    let hosts = vec![
        host(11, 1, mac(0x11), "10.1.0.10", "printer"),
        host(12, 1, mac(0x12), "10.1.0.11", "pc1"),
        host(13, 1, mac(0x13), "10.1.0.12", "pc2"),
        host(21, 2, mac(0x21), "2001:db8:1::21", "v6host"),
        host(31, 3, mac(0x31), "10.2.0.31", "lab1"),
        host(32, 3, mac(0x32), "10.2.0.32", "lab2"),
    ];
    let pxe = Profile {
        id: 1,
        name: "pxe".to_owned(),
        boot_file: Some("pxelinux.0".to_owned()),
        boot_file_uefi: Some("efi/grubx64.efi".to_owned()),
        boot_file_arm64: Some("efi/grubaa64.efi".to_owned()),
        boot_file_ipxe: Some("http://boot.office.example/menu.ipxe".to_owned()),
        next_server: Some("10.1.0.5".parse().unwrap()),
        tftp_server_name: Some("tftp.office.example".to_owned()),
        options: vec![option(26, Some("mtu"), Uint16, "9000")],
    };
    let lab = Profile {
        id: 2,
        name: "lab".to_owned(),
        boot_file: Some("lab.0".to_owned()),
        options: vec![option(42, Some("ntp-server"), Ipv4List, "10.2.0.123")],
        ..Profile::default()
    };
    let broken = Profile {
        id: 3,
        name: "broken".to_owned(),
        boot_file: Some("a,b".to_owned()),
        ..Profile::default()
    };
    let extras = Extras {
        profiles: vec![pxe, lab, broken],
        subnets: vec![
            SubnetSettings {
                subnet_id: 1,
                options: vec![
                    option(6, Some("dns-server"), Ipv4List, "10.1.0.53,10.1.0.54"),
                    option(19, Some("ip-forward-enable"), Bool, "0"),
                    option(26, Some("mtu"), Uint16, "1400"),
                    option(42, Some("ntp-server"), Ipv4List, "10.1.0.123"),
                    option(101, Some("tzdb-timezone"), String, "Europe/Berlin"),
                    option(
                        119,
                        Some("domain-search"),
                        DomainList,
                        "office.example,example.com",
                    ),
                    option(
                        121,
                        Some("classless-static-route"),
                        ClasslessRoutes,
                        "10.9.0.0/16,10.1.0.2",
                    ),
                    option(224, None, Hex, "de:ad:be:ef"),
                    option(225, None, Uint32, "86400"),
                    option(252, None, String, "http://wpad.office.example/wpad.dat"),
                    // Fails the renderer's check: skipped, the rest is served.
                    option(253, None, String, "a\"b"),
                ],
                default_profile: None,
            },
            SubnetSettings {
                subnet_id: 2,
                options: vec![
                    option(23, Some("dns-server"), Ipv6List, "2001:db8::53"),
                    option(24, Some("domain-search"), DomainList, "v6.example"),
                    option(
                        59,
                        Some("bootfile-url"),
                        String,
                        "http://[2001:db8::5]/boot.efi",
                    ),
                ],
                default_profile: None,
            },
            SubnetSettings {
                subnet_id: 3,
                options: Vec::new(),
                default_profile: Some(2),
            },
        ],
        hosts: vec![
            HostSettings {
                host_id: 11,
                profile: None,
                aliases: vec!["laser".to_owned(), "print-server".to_owned()],
                ..HostSettings::default()
            },
            HostSettings {
                host_id: 12,
                profile: Some(1),
                aliases: Vec::new(),
                ..HostSettings::default()
            },
            HostSettings {
                host_id: 13,
                profile: Some(3),
                aliases: vec!["bad_alias".to_owned()],
                ..HostSettings::default()
            },
            // Its own profile beats the subnet's default.
            HostSettings {
                host_id: 32,
                profile: Some(1),
                aliases: Vec::new(),
                ..HostSettings::default()
            },
        ],
        dns_names: vec![
            DnsName {
                id: 50,
                subnet_id: 1,
                ip: ip("10.1.0.60"),
                hostname: "vip1".to_owned(),
                aliases: vec!["vip".to_owned()],
            },
            DnsName {
                id: 51,
                subnet_id: 2,
                ip: ip("2001:db8:1::60"),
                hostname: "vip6".to_owned(),
                aliases: Vec::new(),
            },
            // The printer's address: not served twice.
            DnsName {
                id: 52,
                subnet_id: 1,
                ip: ip("10.1.0.10"),
                hostname: "shadow".to_owned(),
                aliases: Vec::new(),
            },
        ],
    };
    Snapshot {
        subnets,
        hosts,
        extras,
    }
}

fn options_skipped() -> Vec<Skipped> {
    vec![
        Skipped {
            row: Row::Profile(3),
            reason: "boot file name contains ',' at byte 1; only letters, digits and ._/:+=?&%~@- are allowed".to_owned(),
        },
        Skipped {
            row: Row::SubnetOption {
                subnet: 1,
                number: 253,
            },
            reason: "option 253 value is not a string in normal form".to_owned(),
        },
        Skipped {
            row: Row::Aliases(13),
            reason: "alias: hostname contains '_' at byte 3; only ASCII letters, digits, '-' and '.' are allowed".to_owned(),
        },
        Skipped {
            row: Row::DnsName(52),
            reason: "address 10.1.0.10 is already served".to_owned(),
        },
    ]
}

#[test]
fn options_profiles_aliases_and_dns_only_names_hostsfile() {
    let rendered = golden("options", &options(), LayoutKind::Hostsfile);
    assert_eq!(rendered.skipped, options_skipped());
    assert_eq!(rendered.hosts_served, 6);
}

#[test]
fn options_profiles_aliases_and_dns_only_names_incremental() {
    let rendered = golden("options", &options(), LayoutKind::Incremental);
    assert_eq!(rendered.skipped, options_skipped());
}

#[test]
fn options_profiles_aliases_and_dns_only_names_conf() {
    let rendered = golden("options", &options(), LayoutKind::Conf);
    assert_eq!(rendered.skipped, options_skipped());
}

/// Every golden include file passes `dnsmasq --test` (which parses conf files, not hostsfiles).
/// Client identifiers and several MACs (issue 13): a laptop with wired and wireless MACs, a
/// client matched by its client-id, a DHCPv6 client by its DUID and MAC, one with a profile,
/// everything together; refused alone: an identifier of one octet, an extra MAC another host
/// holds, the same MAC twice, a group MAC, an identifier another host of the subnet has.
fn clients() -> Snapshot {
    let id = |text: &str| Some(ipmanager::client_id::parse(text).unwrap());
    let subnets = vec![
        Subnet {
            range: Some((ip("10.3.0.100"), ip("10.3.0.199"))),
            domain: Some("clients.example".to_owned()),
            ..subnet(1, "10.3.0.0/24")
        },
        Subnet {
            range: Some((ip("fd03::1000"), ip("fd03::1fff"))),
            domain: Some("clients.example".to_owned()),
            ..subnet(2, "fd03::/64")
        },
    ];
    let hosts = vec![
        host(1, 1, mac(0x01), "10.3.0.10", "laptop"),
        host(2, 1, mac(0x02), "10.3.0.11", "thin"),
        host(3, 2, mac(0x03), "fd03::10", "v6pc"),
        host(4, 1, mac(0x04), "10.3.0.12", "kiosk"),
        host(5, 1, mac(0x05), "10.3.0.13", "short-id"),
        host(6, 1, mac(0x06), "10.3.0.14", "thief"),
        host(7, 1, mac(0x07), "10.3.0.15", "twice"),
        host(8, 1, mac(0x08), "10.3.0.16", "group"),
        host(9, 1, mac(0x09), "10.3.0.17", "same-id"),
    ];
    let settings = |host_id: i64, client_id, macs: Vec<[u8; 6]>| HostSettings {
        host_id,
        client_id,
        macs,
        ..HostSettings::default()
    };
    let extras = Extras {
        profiles: vec![Profile {
            id: 1,
            name: "kiosk".to_owned(),
            options: vec![option(
                42,
                Some("ntp-server"),
                OptionKind::Ipv4List,
                "10.3.0.123",
            )],
            ..Profile::default()
        }],
        hosts: vec![
            settings(1, None, vec![mac(0x11), mac(0x21)]),
            settings(2, id("01:52:54:00:ab:cd:02"), Vec::new()),
            settings(3, id("00:03:00:01:52:54:00:ab:cd:03"), Vec::new()),
            HostSettings {
                profile: Some(1),
                ..settings(4, id("6b:69:6f:73:6b"), vec![mac(0x14)])
            },
            settings(
                5,
                id("01:02").map(|mut c| {
                    c.0.truncate(1);
                    c
                }),
                Vec::new(),
            ),
            settings(6, None, vec![mac(0x11)]),
            settings(7, None, vec![mac(0x17), mac(0x17)]),
            settings(8, None, vec![[0x01, 0, 0x5e, 0, 0, 1]]),
            settings(9, id("01:52:54:00:ab:cd:02"), Vec::new()),
        ],
        ..Extras::default()
    };
    Snapshot {
        subnets,
        hosts,
        extras,
    }
}

fn clients_skipped() -> Vec<Skipped> {
    let skipped = |id: i64, reason: &str| Skipped {
        row: Row::Host(id),
        reason: reason.to_owned(),
    };
    vec![
        skipped(5, "client identifier has 1 octets; 2 to 130 are allowed"),
        skipped(6, "MAC address is already reserved in subnet 1 by host 1"),
        skipped(7, "the same MAC address is listed twice in the reservation"),
        skipped(8, "MAC address is a multicast or broadcast address"),
        skipped(
            9,
            "client identifier is already reserved in subnet 1 by host 2",
        ),
    ]
}

#[test]
fn client_identifiers_and_several_macs_hostsfile() {
    let rendered = golden("clients", &clients(), LayoutKind::Hostsfile);
    assert_eq!(rendered.skipped, clients_skipped());
    assert_eq!(rendered.hosts_served, 4);
}

#[test]
fn client_identifiers_and_several_macs_incremental() {
    let rendered = golden("clients", &clients(), LayoutKind::Incremental);
    assert_eq!(rendered.skipped, clients_skipped());
    let sharded = rendered.sharded.unwrap();
    // The laptop's line has three keys (its three MACs), the kiosk's three (identifier, two MACs).
    assert_eq!(sharded.more_keys.len(), 4);
}

#[test]
fn client_identifiers_and_several_macs_conf() {
    let rendered = golden("clients", &clients(), LayoutKind::Conf);
    assert_eq!(rendered.skipped, clients_skipped());
}

#[test]
fn dnsmasq_accepts_every_golden_include_file() {
    let Ok(version) = std::process::Command::new("dnsmasq")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: dnsmasq is not installed");
        assert!(
            std::env::var_os("IPMANAGER_REQUIRE_E2E").is_none(),
            "dnsmasq is required"
        );
        return;
    };
    assert!(version.status.success());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for case in fs::read_dir(&golden).unwrap() {
        let include = case.unwrap().path().join("include.conf");
        if !include.exists() {
            continue;
        }
        let out = std::process::Command::new("dnsmasq")
            .arg("--test")
            .arg("--conf-file=/dev/null")
            .arg(format!("--conf-file={}", include.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dnsmasq --test refuses {}: {}",
            include.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} include files found");
}
