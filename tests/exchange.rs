//! Import and export formats (`ipmanager::exchange`): every realistic fixture under
//! `tests/fixtures/import/` parses to exactly the reservations, skipped lines and rejections
//! listed here (line numbers and reasons included), and every export parses back to the
//! reservations it was made from. No database is involved.

use std::net::IpAddr;

use cidr::IpCidr;
use ipmanager::exchange::{export, parse, ExchangeError, Format, Note, Parsed, Reservation};
use ipmanager::model::{Extras, Host, Snapshot, Subnet};
use proptest::prelude::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// `line mac[,mac…] ip hostname lease [id:…] [notes]`, `-` for what is absent: one readable string per
/// reservation keeps the expectations below short and exact.
fn row(r: &Reservation) -> String {
    let ip = r.ip.map_or("-".to_owned(), |ip| ip.to_string());
    let lease = r.lease_seconds.map_or("-".to_owned(), |s| s.to_string());
    let macs: Vec<String> = std::iter::once(&r.mac)
        .chain(&r.extra_macs)
        .map(mac_text)
        .collect();
    let mut out = format!(
        "{} {} {ip} {} {lease}",
        r.line,
        macs.join(","),
        r.hostname.as_deref().unwrap_or("-")
    );
    if let Some(id) = &r.client_id {
        out.push_str(&format!(" id:{id}"));
    }
    for note in &r.notes {
        out.push_str(" | ");
        out.push_str(note);
    }
    out
}

fn notes(notes: &[Note]) -> Vec<String> {
    notes
        .iter()
        .map(|n| format!("{}: {}", n.line, n.reason))
        .collect()
}

fn rows(parsed: &Parsed) -> Vec<String> {
    parsed.reservations.iter().map(row).collect()
}

#[test]
fn dnsmasq_conf_fixture() {
    let parsed = parse(Format::Dnsmasq, &fixture("dnsmasq.conf")).unwrap();
    assert_eq!(
        rows(&parsed),
        [
            "7 52:54:00:12:34:01 10.20.0.10 files 4294967295",
            "8 52:54:00:12:34:02 10.20.0.11 backup -",
            "9 52:54:00:12:34:03 10.20.0.12 voip-gw 2700 | tag set:voip not kept",
            "10 52:54:00:12:34:04 10.20.0.13 printer 3600 id:01:52:54:00:12:34:04",
            "11 52:54:00:12:34:05 10.20.0.14 nas - | line has an IPv4 and an IPv6 address: kept \
             as two reservations, one per address",
            "11 52:54:00:12:34:05 2001:db8:20::14 nas - | line has an IPv4 and an IPv6 address: \
             kept as two reservations, one per address",
            "12 52:54:00:12:34:06 - laptop-anna -",
            "17 52:54:00:12:34:08,52:54:00:12:34:09 10.20.0.22 dock -",
        ]
    );
    assert_eq!(
        notes(&parsed.skipped),
        [
            "2: not a reservation (domain)",
            "3: not a reservation (dhcp-range)",
            "4: not a reservation (dhcp-option)",
            "22: not a reservation (conf-dir): import the file(s) it names separately",
        ]
    );
    assert_eq!(
        notes(&parsed.rejected),
        [
            "15: field 1: hosts.mac '52:54:00:12:34:zz' is not a MAC address: give six \
             hexadecimal octets as 52:54:00:12:34:56, 52-54-00-12-34-56, 5254.0012.3456, \
             525400123456 or 8:0:20:1:2:3",
            "16: field 3: hostname contains '_' at byte 3; only ASCII letters, digits, '-' and \
             '.' are allowed",
            "18: field 1: MAC address contains the wildcard '*': ipmanager reserves for one \
             exact MAC",
            "19: reservation is keyed by client-id only: ipmanager keys every reservation by MAC \
             as well, and this identifier holds none",
            "20: field 2: IPv4 address is not four dotted decimal numbers 0-255",
        ]
    );
    assert_eq!(
        parsed.rejected[0].text,
        "dhcp-host=52:54:00:12:34:zz,10.20.0.20,broken-mac"
    );
    assert!(parsed.subnets.is_empty());
}

#[test]
fn hostsfile_fixture() {
    let parsed = parse(Format::Hostsfile, &fixture("dhcp-hosts")).unwrap();
    assert_eq!(
        rows(&parsed),
        [
            "2 52:54:00:ab:00:01 10.30.0.5 lab-switch -",
            "3 52:54:00:ab:00:02 10.30.0.6 lab-ap 7200",
            "5 52:54:00:ab:00:03 2001:db8:30::6 lab-v6 -",
            "6 52:54:00:ab:00:04 10.30.0.7 - 43200 | tag condition tag:lab not kept: the \
             reservation applies to every client with this MAC",
        ]
    );
    assert!(parsed.skipped.is_empty());
    assert_eq!(
        notes(&parsed.rejected),
        [
            "7: line starts with dhcp-host=, which a dhcp-hostsfile does not have: import this \
             file with format dnsmasq",
            "8: ignore: dnsmasq refuses service to this client; ipmanager has no such reservation",
        ]
    );
}

#[test]
fn ethers_fixture() {
    let parsed = parse(Format::Ethers, &fixture("ethers")).unwrap();
    assert_eq!(
        rows(&parsed),
        [
            "3 08:00:20:01:02:03 10.40.0.5 - -",
            "4 52:54:00:cd:00:01 10.40.0.6 kiosk - | hostname taken from the trailing comment",
            "5 52:54:00:cd:00:02 - scanner -",
            "6 52:54:00:cd:00:03 10.40.0.7 - -",
        ]
    );
    assert!(parsed.skipped.is_empty());
    assert_eq!(
        notes(&parsed.rejected),
        [
            "8: field 2: hostname is digits and a time unit: dnsmasq reads it as a lease time",
            "9: line has 1 fields, ethers has two: MAC and IPv4 address or hostname",
            "10: field 2: IPv4 address is not four dotted decimal numbers 0-255",
        ]
    );
}

#[test]
fn kea_fixture() {
    let parsed = parse(Format::Kea, &fixture("kea-dhcp4.conf")).unwrap();
    assert_eq!(
        rows(&parsed),
        [
            "13 52:54:00:ef:00:01 - roaming-laptop -",
            "17 52:54:00:ef:00:02 10.50.0.9 - - id:01:52:54:00:ef:00:02 | MAC 52:54:00:ef:00:02 \
             taken from the client identifier",
            "29 52:54:00:ef:00:03 10.50.0.10 branch-printer - | option-data not kept",
            "54 52:54:00:ef:00:05 10.60.0.5 guest-kiosk - | client-classes not kept",
            "74 52:54:00:ef:00:03 2001:db8:50::10 branch-printer -",
            "75 52:54:00:ef:00:07 2001:db8:50::11 - - id:00:03:00:01:52:54:00:ef:00:07 | MAC \
             52:54:00:ef:00:07 taken from the client identifier",
        ]
    );
    let subnets: Vec<String> = parsed
        .subnets
        .iter()
        .map(|s| {
            format!(
                "{} {:#} {:?} {:?} {:?} {:?}",
                s.line, s.cidr, s.range, s.gateway, s.lease_seconds, s.domain
            )
        })
        .collect();
    assert_eq!(
        subnets,
        [
            "23 10.50.0.0/24 Some((10.50.0.100, 10.50.0.199)) Some(10.50.0.1) Some(7200) \
             Some(\"branch.example.org\")",
            "48 10.60.0.0/24 Some((10.60.0.10, 10.60.0.250)) Some(10.60.0.1) Some(1800) \
             Some(\"branch.example.org\")",
            "69 2001:db8:50::/64 Some((2001:db8:50::1000, 2001:db8:50::1fff)) None None None",
        ]
    );
    assert_eq!(
        notes(&parsed.skipped),
        [
            "23: only the first pool is kept as the dynamic range",
            "80: not a reservation (not Dhcp4 or Dhcp6)",
        ]
    );
    assert_eq!(
        notes(&parsed.rejected),
        [
            "35: hostname contains '_' at byte 3; only ASCII letters, digits, '-' and '.' are \
             allowed",
            "60: ip-address: address 10.60.0.255 is the broadcast address of 10.60.0.0/24",
        ]
    );
}

#[test]
fn kea_syntax_error_reports_the_original_position() {
    // Comments before the error must not shift its line or column.
    let text = "// header\n{ /* a\n b */ \"Dhcp4\": { # c\n  \"subnet4\": [,] } }\n";
    assert_eq!(
        parse(Format::Kea, text).unwrap_err(),
        ExchangeError::KeaSyntax {
            line: 4,
            column: 15,
            message: "expected value".to_owned(),
        }
    );
    assert_eq!(
        parse(Format::Kea, text).unwrap_err().to_string(),
        "Kea configuration is not valid JSON at line 4, column 15: expected value"
    );
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn sample() -> Snapshot {
    let subnet = |id, cidr: &str| Subnet {
        id,
        cidr: cidr.parse().unwrap(),
        range: None,
        gateway: None,
        lease_seconds: None,
        domain: None,
    };
    let host = |id, subnet_id, last: u8, ip_text: &str, name: &str, lease| Host {
        id,
        subnet_id,
        mac: [0x52, 0x54, 0, 0, 0, last],
        ip: ip(ip_text),
        hostname: name.to_owned(),
        lease_seconds: lease,
    };
    Snapshot {
        subnets: vec![
            subnet(2, "2001:db8:1::/64"),
            Subnet {
                range: Some((ip("10.0.0.100"), ip("10.0.0.199"))),
                gateway: Some(ip("10.0.0.1")),
                lease_seconds: Some(3600),
                domain: Some("lan.example.org".to_owned()),
                ..subnet(1, "10.0.0.0/24")
            },
        ],
        hosts: vec![
            host(13, 2, 3, "2001:db8:1::5", "nas", None),
            host(11, 1, 1, "10.0.0.20", "printer", Some(7200)),
            host(12, 1, 2, "10.0.0.5", "files", None),
            host(14, 1, 4, "10.0.0.255", "broadcast", None),
        ],
        ..Default::default()
    }
}

#[test]
fn export_text_formats_exactly() {
    let snapshot = sample();
    assert_eq!(
        export(Format::Dnsmasq, &snapshot),
        "# Exported by ipmanager (dnsmasq): 3 reservations\n\
         # not exported: host 14: address 10.0.0.255 is the broadcast address of 10.0.0.0/24\n\
         # subnet 10.0.0.0/24\n\
         dhcp-host=52:54:00:00:00:02,10.0.0.5,files\n\
         dhcp-host=52:54:00:00:00:01,10.0.0.20,printer,7200\n\
         # subnet 2001:db8:1::/64\n\
         dhcp-host=52:54:00:00:00:03,[2001:db8:1::5],nas\n"
    );
    let hostsfile = export(Format::Hostsfile, &snapshot);
    assert!(hostsfile.contains("\n52:54:00:00:00:01,10.0.0.20,printer,7200\n"));
    assert!(!hostsfile.contains("dhcp-host="));
    assert_eq!(
        export(Format::Ethers, &snapshot),
        "# Exported by ipmanager (ethers): 3 reservations\n\
         # not exported: host 14: address 10.0.0.255 is the broadcast address of 10.0.0.0/24\n\
         # not exported: host 13: an IPv6 address, ethers carries IPv4 only\n\
         # not exported: the lease times of 1 hosts, ethers has none\n\
         52:54:00:00:00:02 10.0.0.5 # files\n\
         52:54:00:00:00:01 10.0.0.20 # printer\n"
    );
}

#[test]
fn export_kea_is_a_kea_config() {
    let text = export(Format::Kea, &sample());
    assert!(text.starts_with("// Exported by ipmanager (kea): 3 reservations\n"));
    let json: String = text.lines().filter(|l| !l.starts_with("//")).collect();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let subnet = &value["Dhcp4"]["subnet4"][0];
    assert_eq!(subnet["id"], 1);
    assert_eq!(subnet["subnet"], "10.0.0.0/24");
    assert_eq!(subnet["pools"][0]["pool"], "10.0.0.100 - 10.0.0.199");
    assert_eq!(subnet["option-data"][0]["name"], "routers");
    assert_eq!(subnet["valid-lifetime"], 3600);
    assert_eq!(subnet["reservations"][1]["hw-address"], "52:54:00:00:00:01");
    assert_eq!(
        subnet["reservations"][1]["user-context"]["ipmanager-lease-seconds"],
        7200
    );
    let v6 = &value["Dhcp6"]["subnet6"][0];
    assert_eq!(v6["reservations"][0]["ip-addresses"][0], "2001:db8:1::5");
}

/// What a reservation keeps, for comparing an export with its import.
type Kept = ([u8; 6], Option<IpAddr>, Option<String>, Option<i64>);

fn kept(parsed: &Parsed) -> Vec<Kept> {
    let mut out: Vec<Kept> = parsed
        .reservations
        .iter()
        .map(|r| (r.mac, r.ip, r.hostname.clone(), r.lease_seconds))
        .collect();
    out.sort_by_key(|k| k.1);
    out
}

fn expected(snapshot: &Snapshot, format: Format) -> Vec<Kept> {
    let mut out: Vec<Kept> = snapshot
        .hosts
        .iter()
        // A hosts file holds names, not reservations (see names_of_hosts).
        .filter(|_| format != Format::Hosts)
        .filter(|h| format != Format::Ethers || h.ip.is_ipv4())
        .map(|h| {
            let lease = if format == Format::Ethers {
                None
            } else {
                h.lease_seconds
            };
            (h.mac, Some(h.ip), Some(h.hostname.clone()), lease)
        })
        .collect();
    out.sort_by_key(|k| k.1);
    out
}

/// Valid snapshots: up to four subnets (IPv4 /24s and IPv6 /64s with optional settings), hosts
/// with unique addresses inside them, and some hosts whose subnet is not in the snapshot.
fn snapshots() -> impl Strategy<Value = Snapshot> {
    let subnet = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop_oneof![120i64..=315_576_000, Just(4_294_967_295)]),
        prop::option::of("[a-z]{1,8}(\\.[a-z]{2,5})?"),
    );
    let host = (
        0i64..5,
        any::<[u8; 6]>(),
        2u8..100,
        "[a-z][a-z0-9-]{0,12}[a-z0-9]",
        prop::option::of(prop_oneof![120i64..=315_576_000, Just(4_294_967_295)]),
    );
    (
        prop::collection::vec(subnet, 0..4),
        prop::collection::vec(host, 0..40),
    )
        .prop_map(|(subnets, hosts)| {
            let subnets: Vec<Subnet> = subnets
                .into_iter()
                .enumerate()
                .map(|(k, (v6, range, gateway, lease_seconds, domain))| {
                    let at = |n: u32| -> IpAddr {
                        if v6 {
                            ip(&format!("2001:db8:{k}::{n:x}"))
                        } else {
                            ip(&format!("10.{k}.0.{n}"))
                        }
                    };
                    let cidr: IpCidr = if v6 {
                        format!("2001:db8:{k}::/64").parse().unwrap()
                    } else {
                        format!("10.{k}.0.0/24").parse().unwrap()
                    };
                    Subnet {
                        id: k as i64 + 1,
                        cidr,
                        range: range.then(|| (at(100), at(199))),
                        gateway: gateway.then(|| at(1)),
                        lease_seconds,
                        domain,
                    }
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            let hosts = hosts
                .into_iter()
                .enumerate()
                .filter_map(|(n, (subnet_id, mut mac, last, hostname, lease_seconds))| {
                    mac[0] &= 0xfe;
                    mac[5] |= 1;
                    // A host of a subnet not in the snapshot gets an address of its own.
                    let ip = match subnets.iter().find(|s| s.id == subnet_id) {
                        Some(s) if s.cidr.is_ipv6() => {
                            ip(&format!("2001:db8:{}::{last:x}", s.id - 1))
                        }
                        Some(s) => ip(&format!("10.{}.0.{last}", s.id - 1)),
                        None => ip(&format!("192.168.9.{last}")),
                    };
                    let valid = ipmanager::render::validate::hostname(&hostname).is_ok();
                    (valid && seen.insert(ip)).then_some(Host {
                        id: n as i64 + 1,
                        subnet_id,
                        mac,
                        ip,
                        hostname,
                        lease_seconds,
                    })
                })
                .collect();
            Snapshot {
                subnets,
                hosts,
                ..Default::default()
            }
        })
}

proptest! {
    #[test]
    fn export_parses_back_to_the_same_reservations(snapshot in snapshots()) {
        for format in Format::ALL {
            let text = export(format, &snapshot);
            let parsed = parse(format, &text).unwrap();
            prop_assert_eq!(kept(&parsed), expected(&snapshot, format), "{}:\n{}", format, text);
            if format == Format::Hosts {
                let mut names: Vec<(IpAddr, Vec<String>)> =
                    parsed.names.iter().map(|n| (n.ip, n.names.clone())).collect();
                names.sort();
                let mut hosts: Vec<(IpAddr, Vec<String>)> =
                    snapshot.hosts.iter().map(|h| (h.ip, vec![h.hostname.clone()])).collect();
                hosts.sort();
                prop_assert_eq!(names, hosts, "{}", text);
            }
            prop_assert!(parsed.rejected.is_empty(), "{}: {:?}", format, parsed.rejected);
            prop_assert!(parsed.skipped.is_empty(), "{}: {:?}", format, parsed.skipped);
            if format == Format::Kea {
                let mut subnets: Vec<_> = snapshot.subnets.iter().map(|s| {
                    let gateway = s.gateway.filter(|_| s.cidr.is_ipv4());
                    (s.cidr, s.range, gateway, s.lease_seconds, s.domain.clone())
                }).collect();
                subnets.sort_by_key(|s| s.0);
                let mut hints: Vec<_> = parsed.subnets.iter().map(|s| {
                    (s.cidr, s.range, s.gateway, s.lease_seconds, s.domain.clone())
                }).collect();
                hints.sort_by_key(|s| s.0);
                prop_assert_eq!(hints, subnets);
            }
        }
    }

    #[test]
    fn export_ignores_input_order(snapshot in snapshots()) {
        let mut reversed = snapshot.clone();
        reversed.hosts.reverse();
        reversed.subnets.reverse();
        for format in Format::ALL {
            prop_assert_eq!(export(format, &snapshot), export(format, &reversed));
        }
    }
}

/// Lines made of the characters the parsers branch on, so that odd combinations are reached.
fn noise() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("dhcp-host=".to_owned()),
        Just("52:54:00:aa:bb:01".to_owned()),
        Just("10.0.0.5".to_owned()),
        Just("[2001:db8::5]".to_owned()),
        Just(
            "{\"Dhcp4\": {\"subnet4\": [{\"subnet\": \"10.0.0.0/24\", \"reservations\": ["
                .to_owned()
        ),
        Just("{\"hw-address\": \"52:54:00:aa:bb:01\"}".to_owned()),
        Just("]}]}}".to_owned()),
        "[,:#/*\\[\\]{}\"\\\\ \n\t=a-z0-9é.-]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn parsers_never_panic(input in noise()) {
        for format in Format::ALL {
            let _ = parse(format, &input);
        }
    }
}

/// Aliases and DNS-only names go out as cname=/host-record= (dnsmasq) and hosts lines, and read
/// back as the same names; the formats without a place for them leave them out.
#[test]
fn aliases_and_dns_only_names_round_trip_through_dnsmasq_and_hosts_files() {
    use ipmanager::model::{DnsName, HostSettings};
    let snapshot = sample();
    let printer = snapshot.hosts[0].clone();
    let extras = Extras {
        hosts: vec![HostSettings {
            host_id: printer.id,
            profile: None,
            aliases: vec!["laser".into(), "print-server".into()],
            ..HostSettings::default()
        }],
        dns_names: vec![
            DnsName {
                id: 90,
                subnet_id: 1,
                ip: ip("10.1.0.60"),
                hostname: "vip1".into(),
                aliases: vec!["vip".into()],
            },
            DnsName {
                id: 91,
                subnet_id: 1,
                ip: ip("10.1.0.61"),
                hostname: "bad name".into(),
                aliases: vec![],
            },
        ],
        ..Extras::default()
    };
    let snapshot = Snapshot { extras, ..snapshot };
    let text = export(Format::Dnsmasq, &snapshot);
    assert!(
        text.contains(&format!("cname=laser,print-server,{}\n", printer.hostname)),
        "{text}"
    );
    assert!(text.contains("host-record=vip1,vip,10.1.0.60\n"), "{text}");
    assert!(
        text.contains("# not exported: DNS-only name 91: "),
        "{text}"
    );
    let parsed = parse(Format::Dnsmasq, &text).unwrap();
    assert!(
        parsed.rejected.is_empty() && parsed.skipped.is_empty(),
        "{parsed:?}"
    );
    assert_eq!(parsed.aliases.len(), 1);
    assert_eq!(parsed.aliases[0].aliases, ["laser", "print-server"]);
    assert_eq!(parsed.aliases[0].target, printer.hostname);
    assert_eq!(parsed.names.len(), 1);
    assert_eq!(
        (parsed.names[0].ip, parsed.names[0].names.clone()),
        (ip("10.1.0.60"), vec!["vip1".to_owned(), "vip".to_owned()])
    );

    let hosts = export(Format::Hosts, &snapshot);
    assert!(
        hosts.contains(&format!(
            "{} {} laser print-server\n",
            printer.ip, printer.hostname
        )),
        "{hosts}"
    );
    assert!(hosts.ends_with("10.1.0.60 vip1 vip\n"), "{hosts}");
    let parsed = parse(Format::Hosts, &hosts).unwrap();
    // Three valid reservations (the broadcast address is left out) and the DNS-only name.
    assert_eq!(parsed.names.len(), 4, "{hosts}");

    for format in [Format::Hostsfile, Format::Ethers, Format::Kea] {
        let text = export(format, &snapshot);
        assert!(
            !text.contains("laser") && !text.contains("vip1"),
            "{format}: {text}"
        );
    }
}

/// Client identifiers and extra MACs go out as dnsmasq's `id:` and `mac1,mac2` and as Kea's
/// `client-id` / `duid` with every MAC in `user-context`, and read back as the same; ethers
/// keeps the primary MAC only.
#[test]
fn identifiers_and_several_macs_round_trip() {
    use ipmanager::client_id::parse as client_id;
    use ipmanager::model::HostSettings;
    let snapshot = sample();
    let (v6, v4) = (snapshot.hosts[0].clone(), snapshot.hosts[1].clone());
    let extra = [0x52, 0x54, 0, 0, 0, 0x21];
    let extras = Extras {
        hosts: vec![
            HostSettings {
                host_id: v6.id,
                client_id: Some(client_id("00:03:00:01:52:54:00:00:00:03").unwrap()),
                ..HostSettings::default()
            },
            HostSettings {
                host_id: v4.id,
                client_id: Some(client_id("01:52:54:00:00:00:01").unwrap()),
                macs: vec![extra],
                ..HostSettings::default()
            },
        ],
        ..Extras::default()
    };
    let snapshot = Snapshot { extras, ..snapshot };
    for format in [Format::Dnsmasq, Format::Hostsfile, Format::Kea] {
        let text = export(format, &snapshot);
        let parsed = parse(format, &text).unwrap();
        let find = |host: &Host| {
            parsed
                .reservations
                .iter()
                .find(|r| r.ip == Some(host.ip))
                .unwrap_or_else(|| panic!("{format}: {} missing:\n{text}", host.ip))
                .clone()
        };
        let (r6, r4) = (find(&v6), find(&v4));
        assert_eq!(
            (
                r6.mac,
                r6.extra_macs.clone(),
                r6.client_id.as_ref().map(|c| c.to_string())
            ),
            (
                v6.mac,
                vec![],
                Some("00:03:00:01:52:54:00:00:00:03".to_owned())
            ),
            "{format}:\n{text}"
        );
        assert_eq!(
            (
                r4.mac,
                r4.extra_macs.clone(),
                r4.client_id.as_ref().map(|c| c.to_string())
            ),
            (v4.mac, vec![extra], Some("01:52:54:00:00:00:01".to_owned())),
            "{format}:\n{text}"
        );
        assert!(
            r4.notes.is_empty() && r6.notes.is_empty(),
            "{format}: {r4:?} {r6:?}"
        );
    }
    let kea = export(Format::Kea, &snapshot);
    assert!(
        kea.contains("\"duid\": \"00:03:00:01:52:54:00:00:00:03\""),
        "{kea}"
    );
    assert!(
        kea.contains("\"client-id\": \"01:52:54:00:00:00:01\""),
        "{kea}"
    );
    let ethers = parse(Format::Ethers, &export(Format::Ethers, &snapshot)).unwrap();
    assert!(ethers
        .reservations
        .iter()
        .all(|r| r.extra_macs.is_empty() && r.client_id.is_none()));
}
