//! Property tests of the renderer over arbitrary snapshots, hostile values included: every line
//! is short, parses back with a strict grammar into exactly the values of a served input row,
//! every input row is either served or skipped (and skipped only for a reason this file can
//! confirm on its own), and the output does not depend on input order.
//!
//! The grammar and the rules here are written independently of `ipmanager::render::validate`,
//! so that a mistake in the validators is not also a mistake in the test.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use cidr::IpCidr;
use ipmanager::model::{Host, Snapshot, Subnet};
use ipmanager::render::check::{check_file, FileKind};
use ipmanager::render::{
    render, summarize_host_changes, HostChanges, Layout, LayoutKind, Rendered, Row,
};
use proptest::prelude::*;

mod common;

use common::arb::{arb_path, arb_snapshot, shuffled};

const HEADER: &str = "# Managed by ipmanager: do not edit, changes are overwritten.";

// ---------------------------------------------------------------------------------------------
// The rules, restated independently

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A name dnsmasq's `dhcp-host` and `host-record` parsers cannot take for a number, an address
/// or a keyword.
fn is_hostname(s: &str) -> bool {
    let numeric = s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    let unit = match s.as_bytes().split_last() {
        Some((last, digits)) => {
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && b"smhdwSMHDW".contains(last)
        }
        None => false,
    };
    let keyword = s.eq_ignore_ascii_case("ignore") || s.eq_ignore_ascii_case("infinite");
    is_name(s) && !numeric && !unit && !keyword
}

fn is_lease(seconds: i64) -> bool {
    (120..=i64::from(u32::MAX)).contains(&seconds)
}

fn is_mac(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

fn inside(ip: IpAddr, cidr: IpCidr) -> bool {
    ip.is_ipv4() == cidr.is_ipv4() && cidr.contains(&ip)
}

fn subnet_ok(s: &Subnet) -> bool {
    let v6_ok = match s.cidr.first_address() {
        IpAddr::V6(net) => s.cidr.network_length() >= 64 && u128::from(net) >> 64 != 0,
        IpAddr::V4(_) => true,
    };
    v6_ok
        && s.range
            .is_none_or(|(a, b)| inside(a, s.cidr) && inside(b, s.cidr) && a <= b)
        && s.gateway.is_none_or(|g| inside(g, s.cidr))
        && s.lease_seconds.is_none_or(is_lease)
        && s.domain.as_deref().is_none_or(is_name)
}

fn host_ok(h: &Host, s: &Subnet) -> bool {
    let usable = match h.ip {
        IpAddr::V4(_) if s.cidr.network_length() < 31 => {
            h.ip != s.cidr.first_address() && h.ip != s.cidr.last_address()
        }
        _ => true,
    };
    is_hostname(&h.hostname)
        && is_mac(h.mac)
        && inside(h.ip, s.cidr)
        && usable
        && h.lease_seconds.is_none_or(is_lease)
}

fn is_safe_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 900
        && p.chars()
            .all(|c| c.is_ascii_graphic() && !",#\"\\".contains(c))
}

// ---------------------------------------------------------------------------------------------
// The strict grammar

/// One reservation as read back from a `MAC,IP,hostname[,lease]` line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reservation {
    mac: [u8; 6],
    ip: IpAddr,
    hostname: String,
    lease_seconds: Option<i64>,
}

/// Names for one address as read back from an addn-hosts or `host-record` line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Names {
    ip: IpAddr,
    names: Vec<String>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 || !part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// An address in its canonical text form, and nothing else.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.parse().ok()?;
    (ip.to_string() == s).then_some(ip)
}

/// As in `dhcp-host`: IPv4 bare, IPv6 in brackets.
fn parse_dhcp_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(inner) => parse_ip(inner).filter(IpAddr::is_ipv6),
        None => parse_ip(s).filter(IpAddr::is_ipv4),
    }
}

/// Seconds without a leading zero, or dnsmasq's `infinite` (DHCP's 32-bit all-ones lease).
fn parse_lease(s: &str) -> Option<i64> {
    if s == "infinite" {
        return Some(i64::from(u32::MAX));
    }
    let ok = !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse().ok())
        .flatten()
        .filter(|&l| is_lease(l))
}

fn parse_reservation(line: &str) -> Reservation {
    let fields: Vec<&str> = line.split(',').collect();
    assert!(matches!(fields.len(), 3 | 4), "field count: {line:?}");
    let reservation = Reservation {
        mac: parse_mac(fields[0]).unwrap_or_else(|| panic!("MAC: {line:?}")),
        ip: parse_dhcp_ip(fields[1]).unwrap_or_else(|| panic!("address: {line:?}")),
        hostname: fields[2].to_owned(),
        lease_seconds: fields
            .get(3)
            .map(|l| parse_lease(l).unwrap_or_else(|| panic!("lease: {line:?}"))),
    };
    assert!(is_hostname(&reservation.hostname), "hostname: {line:?}");
    reservation
}

/// `IP name [name]` with the fqdn first, or `host-record=name[,name],IP`.
fn parse_names(line: &str, conf: bool) -> Names {
    let fields: Vec<&str> = if conf {
        let body = line.strip_prefix("host-record=").unwrap();
        let mut fields: Vec<&str> = body.split(',').collect();
        fields.rotate_right(1);
        fields
    } else {
        line.split(' ').collect()
    };
    assert!(matches!(fields.len(), 2 | 3), "field count: {line:?}");
    let ip = parse_ip(fields[0]).unwrap_or_else(|| panic!("address: {line:?}"));
    let names: Vec<String> = fields[1..].iter().map(|n| (*n).to_owned()).collect();
    assert!(is_hostname(names.last().unwrap()), "hostname: {line:?}");
    if let [fqdn, hostname] = names.as_slice() {
        let domain = fqdn.strip_prefix(&format!("{hostname}."));
        assert!(
            domain.is_some_and(is_name) && is_name(fqdn),
            "fqdn: {line:?}"
        );
    }
    Names { ip, names }
}

/// A `dhcp-range` line read back: the range (`None` for `static`) and the lease.
type RangeLine = (Option<(IpAddr, IpAddr)>, Option<i64>);

/// What the include file says about one subnet: its values as read back from its block.
#[derive(Debug)]
struct SubnetBlock {
    id: i64,
    cidr: IpCidr,
    /// `Some` once the `dhcp-range` line is read.
    range: Option<RangeLine>,
    router: Option<IpAddr>,
    domain: Option<String>,
}

impl SubnetBlock {
    /// Whether `s` is the input row this block was rendered from. DHCPv6 has no router option,
    /// so an IPv6 gateway is not written and not compared.
    fn matches(&self, s: &Subnet) -> bool {
        let gateway = if s.cidr.is_ipv4() { s.gateway } else { None };
        s.id == self.id
            && s.cidr == self.cidr
            && self.range == Some((s.range, s.lease_seconds))
            && self.router == gateway
            && self.domain == s.domain
    }
}

/// The router advertisement lines after the blocks when an IPv6 subnet is served.
const RA_LINES: [&str; 3] = [
    "# IPv6: router advertisements with the managed flag, never as default router",
    "enable-ra",
    "ra-param=*,0,0",
];

/// Parses the include file: the subnet blocks, and the reservations and names of the conf
/// layout.
fn parse_include(text: &str, layout: &Layout) -> (Vec<SubnetBlock>, Vec<Reservation>, Vec<Names>) {
    let mut lines = text.split_terminator('\n');
    assert_eq!(lines.next(), Some(HEADER));
    if layout.kind == LayoutKind::Hostsfile {
        for (option, path) in [
            ("dhcp-hostsfile", &layout.hosts_file),
            ("addn-hosts", &layout.addn_hosts_file),
        ] {
            let line = lines.next().unwrap();
            match path.to_str().filter(|p| is_safe_path(p)) {
                Some(path) => assert_eq!(line, format!("{option}={path}")),
                None => assert_eq!(
                    line,
                    format!(
                        "# {option} omitted: the configured path is not safe in a dnsmasq line"
                    )
                ),
            }
        }
    }
    let mut blocks: Vec<SubnetBlock> = Vec::new();
    let (mut reservations, mut names) = (Vec::new(), Vec::new());
    let mut ra_lines = 0;
    for line in lines {
        if let Some(rest) = line.strip_prefix("# subnet ") {
            let (id, cidr_text) = rest.split_once(' ').unwrap();
            let parsed_id: i64 = id.parse().unwrap();
            assert_eq!(parsed_id.to_string(), id, "{line:?}");
            let cidr: IpCidr = cidr_text.parse().unwrap();
            assert_eq!(format!("{cidr:#}"), cidr_text, "{line:?}");
            assert!(
                blocks.iter().all(|b| b.id != parsed_id),
                "subnet twice: {line:?}"
            );
            blocks.push(SubnetBlock {
                id: parsed_id,
                cidr,
                range: None,
                router: None,
                domain: None,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("dhcp-host=") {
            assert_eq!(layout.kind, LayoutKind::Conf);
            reservations.push(parse_reservation(rest));
            continue;
        }
        if line.starts_with("host-record=") {
            assert_eq!(layout.kind, LayoutKind::Conf);
            names.push(parse_names(line, true));
            continue;
        }
        // Router advertisements, once, when an IPv6 subnet is served (checked below).
        if RA_LINES.contains(&line) {
            ra_lines += 1;
            continue;
        }
        let block = blocks
            .last_mut()
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let tag = format!("subnet{}", block.id);
        if let Some(rest) = line.strip_prefix(&format!("dhcp-range=set:{tag},")) {
            assert!(block.range.is_none(), "{line:?}");
            let fields: Vec<&str> = rest.split(',').collect();
            assert!(matches!(fields.len(), 3 | 4), "{line:?}");
            let start = parse_ip(fields[0]).unwrap();
            let range = if fields[1] == "static" {
                assert_eq!(start, block.cidr.first_address(), "{line:?}");
                None
            } else {
                Some((start, parse_ip(fields[1]).unwrap()))
            };
            match block.cidr.mask() {
                IpAddr::V4(mask) => assert_eq!(parse_ip(fields[2]), Some(IpAddr::V4(mask))),
                IpAddr::V6(_) => assert_eq!(fields[2], block.cidr.network_length().to_string()),
            }
            let lease = fields.get(3).map(|l| parse_lease(l).unwrap());
            block.range = Some((range, lease));
        } else if let Some(gateway) =
            line.strip_prefix(&format!("dhcp-option=tag:{tag},option:router,"))
        {
            assert!(block.router.is_none() && block.cidr.is_ipv4(), "{line:?}");
            block.router = Some(parse_ip(gateway).filter(IpAddr::is_ipv4).unwrap());
        } else if let Some(rest) = line.strip_prefix("domain=") {
            let (domain, cidr) = rest.split_once(',').unwrap();
            assert!(block.domain.is_none() && is_name(domain), "{line:?}");
            assert_eq!(cidr, format!("{:#}", block.cidr));
            block.domain = Some(domain.to_owned());
        } else {
            panic!("unexpected include line {line:?}");
        }
    }
    let v6 = blocks.iter().any(|b| b.cidr.is_ipv6());
    assert_eq!(ra_lines, if v6 { RA_LINES.len() } else { 0 });
    (blocks, reservations, names)
}

// ---------------------------------------------------------------------------------------------
// The properties

fn all_lines(rendered: &Rendered) -> impl Iterator<Item = &str> {
    [
        Some(&rendered.include),
        rendered.hosts.as_ref(),
        rendered.addn_hosts.as_ref(),
    ]
    .into_iter()
    .flatten()
    .flat_map(|text| text.split_terminator('\n'))
}

fn check(snapshot: &Snapshot, layout: &Layout) -> Rendered {
    let rendered = render(snapshot, layout);
    let conf = layout.kind == LayoutKind::Conf;

    // (1) No line reaches 1000 bytes, and every file ends with a complete line.
    for line in all_lines(&rendered) {
        assert!(line.len() < 1000, "{} byte line", line.len());
    }
    for text in [
        Some(&rendered.include),
        rendered.hosts.as_ref(),
        rendered.addn_hosts.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(text.is_empty() || text.ends_with('\n'));
    }
    assert_eq!(rendered.hosts.is_none(), conf);
    assert_eq!(rendered.addn_hosts.is_none(), conf);

    // (1b) Every file passes the independent check the agent runs before activating it.
    for (kind, text) in [
        (FileKind::Include, Some(&rendered.include)),
        (FileKind::HostsFile, rendered.hosts.as_ref()),
        (FileKind::AddnHosts, rendered.addn_hosts.as_ref()),
    ] {
        if let Some(text) = text {
            if let Err(failure) = check_file(kind, text) {
                panic!("{failure}\n{text}");
            }
        }
    }

    // (2) Every line parses strictly.
    let (blocks, mut reservations, mut names) = parse_include(&rendered.include, layout);
    if let (Some(hosts), Some(addn)) = (&rendered.hosts, &rendered.addn_hosts) {
        reservations = hosts
            .split_terminator('\n')
            .map(parse_reservation)
            .collect();
        names = addn
            .split_terminator('\n')
            .map(|l| parse_names(l, false))
            .collect();
    }

    // (4) Every row is served or skipped, never twice.
    let mut skipped_subnets = 0;
    let mut skipped_hosts = HashSet::new();
    for s in &rendered.skipped {
        assert!(!s.reason.is_empty());
        assert!(!s.reason.contains(['\n', '\r', '\0']), "{:?}", s.reason);
        match s.row {
            Row::Subnet(id) => {
                assert!(snapshot.subnets.iter().any(|x| x.id == id));
                skipped_subnets += 1;
            }
            Row::Host(id) => {
                assert!(snapshot.hosts.iter().any(|x| x.id == id));
                assert!(skipped_hosts.insert(id), "host {id} skipped twice");
            }
            // These snapshots have no options, profiles, aliases or DNS-only names.
            ref other => panic!("{other:?} skipped in a snapshot without them"),
        }
    }
    assert_eq!(blocks.len() + skipped_subnets, snapshot.subnets.len());
    let mut served_subnets: HashMap<i64, &Subnet> = HashMap::new();
    for block in &blocks {
        assert!(block.range.is_some(), "no dhcp-range: {block:?}");
        let s = snapshot
            .subnets
            .iter()
            .find(|s| block.matches(s))
            .unwrap_or_else(|| panic!("block of no input subnet: {block:?}"));
        assert!(subnet_ok(s), "invalid subnet served: {s:?}");
        served_subnets.insert(s.id, s);
    }
    for s in &snapshot.subnets {
        // Skipped only for a broken rule, or because another subnet with its id is served.
        assert!(
            served_subnets.contains_key(&s.id) || !subnet_ok(s),
            "valid subnet skipped: {s:?}"
        );
    }

    // (3) Served hosts are exactly the input hosts not skipped, with exactly their values.
    let served: Vec<&Host> = snapshot
        .hosts
        .iter()
        .filter(|h| !skipped_hosts.contains(&h.id))
        .collect();
    assert_eq!(rendered.hosts_served, served.len());
    assert_eq!(reservations.len(), served.len());
    assert_eq!(names.len(), served.len());
    let mut expected_reservations = Vec::new();
    let mut expected_names = Vec::new();
    for h in &served {
        let s = served_subnets
            .get(&h.subnet_id)
            .unwrap_or_else(|| panic!("host served without its subnet: {h:?}"));
        assert!(host_ok(h, s), "invalid host served: {h:?}");
        expected_reservations.push(Reservation {
            mac: h.mac,
            ip: h.ip,
            hostname: h.hostname.clone(),
            lease_seconds: h.lease_seconds,
        });
        let fqdn = s
            .domain
            .as_ref()
            .map(|d| format!("{}.{d}", h.hostname))
            .filter(|f| !h.hostname.contains('.') && f.len() <= 253);
        expected_names.push(Names {
            ip: h.ip,
            names: fqdn.into_iter().chain([h.hostname.clone()]).collect(),
        });
    }
    for list in [&mut reservations, &mut expected_reservations] {
        list.sort();
    }
    for list in [&mut names, &mut expected_names] {
        list.sort();
    }
    assert_eq!(reservations, expected_reservations);
    assert_eq!(names, expected_names);
    // Served reservations never clash: one per address, one per MAC and subnet.
    let ips: HashSet<IpAddr> = served.iter().map(|h| h.ip).collect();
    assert_eq!(ips.len(), served.len());
    let macs: HashSet<(i64, [u8; 6])> = served.iter().map(|h| (h.subnet_id, h.mac)).collect();
    assert_eq!(macs.len(), served.len());
    // A host is skipped only if it breaks a rule or an earlier served host holds its address or
    // its MAC in its subnet.
    for h in snapshot
        .hosts
        .iter()
        .filter(|h| skipped_hosts.contains(&h.id))
    {
        let justified = match served_subnets.get(&h.subnet_id) {
            None => true,
            Some(s) if !host_ok(h, s) => true,
            Some(_) => served.iter().any(|o| {
                (o.ip, o.id) <= (h.ip, h.id)
                    && (o.ip == h.ip || (o.subnet_id, o.mac) == (h.subnet_id, h.mac))
            }),
        };
        assert!(justified, "valid host skipped: {h:?}");
    }
    rendered
}

fn layout(kind: LayoutKind, hosts_file: PathBuf, addn_hosts_file: PathBuf) -> Layout {
    Layout {
        kind,
        hosts_file,
        addn_hosts_file,
        hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
        names_dir: "/var/lib/ipmanager/hosts.d".into(),
        shards: 16,
        names_shards: 16,
    }
}

proptest! {
    // No failure persistence: a failure prints its minimal input, to be turned into a golden or
    // unit test, rather than a regression file appearing in the tree.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rendered_files_are_strict_complete_and_order_independent(
        snapshot in arb_snapshot(),
        hosts_file in arb_path(),
        addn_hosts_file in arb_path(),
        seed in any::<u64>(),
    ) {
        let permuted = Snapshot {
            subnets: shuffled(&snapshot.subnets, seed),
            hosts: shuffled(&snapshot.hosts, seed.rotate_left(32)),
            ..Default::default()
        };
        let hostsfile = layout(LayoutKind::Hostsfile, hosts_file, addn_hosts_file);
        let conf = layout(LayoutKind::Conf, hostsfile.hosts_file.clone(), "/x".into());
        let by_hostsfile = check(&snapshot, &hostsfile);
        let by_conf = check(&snapshot, &conf);

        // (5) Deterministic under input permutation.
        prop_assert_eq!(&render(&permuted, &hostsfile), &by_hostsfile);
        prop_assert_eq!(&render(&permuted, &conf), &by_conf);

        // Both layouts serve and skip the same rows.
        prop_assert_eq!(by_conf.hosts_served, by_hostsfile.hosts_served);
        prop_assert_eq!(&by_conf.skipped, &by_hostsfile.skipped);

        // The change summary sees the same reservations in either layout.
        let hosts = by_hostsfile.hosts.as_deref().unwrap();
        prop_assert_eq!(summarize_host_changes(hosts, hosts), HostChanges::default());
        prop_assert_eq!(summarize_host_changes(hosts, &by_conf.include), HostChanges::default());
        prop_assert_eq!(
            summarize_host_changes("", &by_conf.include),
            HostChanges { added: by_hostsfile.hosts_served, removed: 0, changed: 0 }
        );
    }
}

/// Scale: 100,000 valid hosts across /16 subnets are all served. In a release build
/// (`cargo test --release --test render_props -- --nocapture large`) the time is printed.
#[test]
fn large_snapshot_is_served_whole() {
    let subnets: Vec<Subnet> = (0..4u8)
        .map(|i| Subnet {
            id: i64::from(i),
            cidr: format!("10.{i}.0.0/16").parse().unwrap(),
            range: None,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, i, 0, 1))),
            lease_seconds: Some(3600),
            domain: Some(format!("site{i}.example.org")),
        })
        .collect();
    let hosts: Vec<Host> = (0..100_000u32)
        .rev()
        .map(|n| {
            let subnet = n % 4;
            let offset = 2 + n / 4;
            let [_, _, hi, lo] = offset.to_be_bytes();
            let [_, b, c, d] = n.to_be_bytes();
            Host {
                id: i64::from(n),
                subnet_id: i64::from(subnet),
                mac: [0x52, 0x54, 0, b, c, d],
                ip: IpAddr::V4(Ipv4Addr::new(10, subnet as u8, hi, lo)),
                hostname: format!("host-{n}"),
                lease_seconds: (n % 3 == 0).then_some(7200),
            }
        })
        .collect();
    let snapshot = Snapshot {
        subnets,
        hosts,
        ..Default::default()
    };
    let layout = layout(
        LayoutKind::Hostsfile,
        "/var/lib/ipmanager/dhcp-hosts".into(),
        "/var/lib/ipmanager/hosts".into(),
    );
    let start = Instant::now();
    let rendered = render(&snapshot, &layout);
    let elapsed = start.elapsed();
    eprintln!("rendered 100000 hosts in {elapsed:?}");
    assert_eq!(rendered.skipped, vec![]);
    assert_eq!(rendered.hosts_served, 100_000);
    let hosts = rendered.hosts.unwrap();
    let addn_hosts = rendered.addn_hosts.unwrap();
    assert_eq!(hosts.split_terminator('\n').count(), 100_000);
    assert_eq!(addn_hosts.split_terminator('\n').count(), 100_000);
    let start = Instant::now();
    assert_eq!(check_file(FileKind::HostsFile, &hosts), Ok(()));
    let hosts_elapsed = start.elapsed();
    assert_eq!(check_file(FileKind::AddnHosts, &addn_hosts), Ok(()));
    assert_eq!(check_file(FileKind::Include, &rendered.include), Ok(()));
    eprintln!(
        "checked the 100000-line hostsfile in {hosts_elapsed:?}, all three files in {:?}",
        start.elapsed()
    );
}
