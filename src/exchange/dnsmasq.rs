//! dnsmasq's reservation syntax: `dhcp-host=` lines in a config file ([`Flavour::Conf`]) and the
//! same values without the prefix in a `--dhcp-hostsfile` ([`Flavour::Hostsfile`]).
//!
//! A line is split at commas and every field is read the way dnsmasq reads it, in this order:
//!
//! | field | result |
//! |---|---|
//! | `id:…` (client-id, DUID) | the client identifier: hex octets, or text taken as its bytes; a line with it but no MAC takes the MAC inside it (client-id `01:`MAC, DUID-LL(T)) or is rejected |
//! | `id:*` | note "not kept" |
//! | `set:tag`, `net:tag`, `tag:tag` | note "not kept" |
//! | `[IPv6]` | the address; one in `::/64` (dnsmasq's any-prefix wildcard) is rejected; further IPv6 addresses are noted and dropped |
//! | `ignore` | rejected: dnsmasq refuses that client, ipmanager has no such reservation |
//! | `infinite`, `3600`, `45m`, `12h`, `1d`, `1w` | lease time (infinite = 4294967295 s), checked against the renderer's bounds |
//! | digits and dots | IPv4 address; a second one is rejected |
//! | `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff`, `01-aa:bb:…` (hardware type 1) | MAC; a wildcard `*`, another hardware type, a multicast or zero MAC is rejected |
//! | anything else | hostname, by the renderer's rule (so `laptop_1` is rejected) |
//!
//! A line without a MAC is rejected (ipmanager keys reservations by MAC), as is one with more than
//! nine MACs (the first is the primary, the others extra MACs), several client identifiers,
//! several hostnames or several lease times. A line with an IPv4 and an IPv6 address
//! becomes two reservations (ipmanager keeps one address per host, and one MAC may be reserved in
//! a v4 and a v6 subnet). `#` starts a comment at the start of a line or after whitespace, as
//! dnsmasq's `read_file` has it; a `#` inside a field (`…,h#x`) is part of the field, which is
//! then refused by the field's rule rather than cut short. dnsmasq's `"…"` quoting is not
//! supported (no field ipmanager keeps can contain a quote). Lines of
//! [`validate::MAX_LINE_BYTES`] or more are rejected: dnsmasq would read their tail as a new line.
//!
//! In a config file, `host-record=`, `address=` and `cname=` lines are names ([`super::names`]);
//! every other option goes to `skipped` as "not a reservation (option)".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::names::{self, Names};
use super::{
    check_hostname, note_text, parse_mac, strip_comment, ExportPlan, Format, Note, Parsed,
    Reservation,
};
use crate::client_id::ClientId;
use crate::render::{lines, validate};

/// Which of the two dnsmasq spellings a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// A config file (`/etc/dnsmasq.conf`, a conf-dir file): `option=value` lines.
    Conf,
    /// A dhcp-hostsfile: one dhcp-host value per line.
    Hostsfile,
}

/// Reads a dnsmasq config file or dhcp-hostsfile.
pub fn parse(input: &str, flavour: Flavour) -> Parsed {
    let mut parsed = Parsed::default();
    for (at, raw) in input.lines().enumerate() {
        let line = at + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let note = |reason: String| Note {
            line,
            text: note_text(raw),
            reason,
        };
        if raw.len() >= validate::MAX_LINE_BYTES {
            parsed.rejected.push(note(format!(
                "line is {} bytes long, the limit is {}: dnsmasq reads lines in 1,024-byte \
                 chunks and would take the rest for a new line",
                raw.len(),
                validate::MAX_LINE_BYTES - 1
            )));
            continue;
        }
        let value = match flavour {
            Flavour::Hostsfile => {
                if content.starts_with("dhcp-host=") {
                    parsed.rejected.push(note(
                        "line starts with dhcp-host=, which a dhcp-hostsfile does not have: \
                         import this file with format dnsmasq"
                            .to_owned(),
                    ));
                    continue;
                }
                content
            }
            Flavour::Conf => {
                let (option, value) = match content.split_once('=') {
                    Some((option, value)) => (option.trim(), value.trim()),
                    None => (content, ""),
                };
                if let Some(names) = names::dnsmasq_option(option, value, line) {
                    match names {
                        Ok(Names::Records(records)) => parsed.names.extend(records),
                        Ok(Names::Alias(alias)) => parsed.aliases.push(alias),
                        Ok(Names::Skipped(reason)) => parsed.skipped.push(note(reason)),
                        Err(reason) => parsed.rejected.push(note(reason)),
                    }
                    continue;
                }
                if option != "dhcp-host" {
                    parsed.skipped.push(note(not_a_reservation(option)));
                    continue;
                }
                if value.is_empty() {
                    parsed
                        .rejected
                        .push(note("dhcp-host has no value".to_owned()));
                    continue;
                }
                value
            }
        };
        match host_fields(value, line) {
            Ok(reservations) => parsed.reservations.extend(reservations),
            Err(reason) => parsed.rejected.push(note(reason)),
        }
    }
    parsed
}

/// The reason for a config line that is not `dhcp-host=`, naming the option when it looks like
/// one (never echoing arbitrary text) and pointing at the right import for files it names.
fn not_a_reservation(option: &str) -> String {
    let plain = !option.is_empty()
        && option.len() <= 40
        && option
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain {
        return "not a reservation (not a dnsmasq option)".to_owned();
    }
    let hint = match option {
        "dhcp-hostsfile" | "dhcp-hostsdir" => ": import the file(s) it names with format hostsfile",
        "read-ethers" => ": import /etc/ethers with format ethers",
        "conf-file" | "conf-dir" => ": import the file(s) it names separately",
        _ => "",
    };
    format!("not a reservation ({option}){hint}")
}

/// A value for a note: printable ASCII without separators, short; otherwise not shown, because
/// notes end up in logs and terminals.
fn shown(text: &str) -> &str {
    let safe = text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'#' | b'"' | b'\\'));
    if safe {
        text
    } else {
        "(value not shown)"
    }
}

/// The fields of one dhcp-host value, as reservations (two for a dual-stack line), or the reason
/// the line cannot be kept.
fn host_fields(value: &str, line: usize) -> Result<Vec<Reservation>, String> {
    let mut macs = Vec::new();
    let mut v4: Vec<Ipv4Addr> = Vec::new();
    let mut v6: Vec<Ipv6Addr> = Vec::new();
    let mut hostnames = Vec::new();
    let mut leases = Vec::new();
    let mut client_ids = Vec::new();
    let mut notes = Vec::new();
    for (i, field) in value.split(',').enumerate() {
        let n = i + 1;
        let field = field.trim();
        if field.is_empty() {
            return Err(format!("field {n} is empty"));
        }
        if let Some(id) = field.strip_prefix("id:") {
            if id == "*" {
                notes.push("id:* (ignore the client-id) not kept".to_owned());
            } else {
                client_ids
                    .push(client_id_field(id).map_err(|reason| format!("field {n}: {reason}"))?);
            }
        } else if let Some(tag) = field
            .strip_prefix("set:")
            .or_else(|| field.strip_prefix("net:"))
        {
            notes.push(format!("tag set:{} not kept", shown(tag)));
        } else if let Some(tag) = field.strip_prefix("tag:") {
            notes.push(format!(
                "tag condition tag:{} not kept: the reservation applies to every client with \
                 this MAC",
                shown(tag)
            ));
        } else if let Some(inner) = field.strip_prefix('[') {
            let ip = inner
                .strip_suffix(']')
                .and_then(|text| text.parse::<Ipv6Addr>().ok())
                .ok_or_else(|| {
                    format!("field {n}: IPv6 address is not a valid address in brackets")
                })?;
            if u128::from(ip) >> 64 == 0 {
                return Err(format!(
                    "field {n}: IPv6 address lies in ::/64, which dnsmasq reads as a suffix for \
                     any prefix: ipmanager needs a full address"
                ));
            }
            v6.push(ip);
        } else if field.eq_ignore_ascii_case("ignore") {
            return Err(
                "ignore: dnsmasq refuses service to this client; ipmanager has no \
                        such reservation"
                    .to_owned(),
            );
        } else if let Some(seconds) = lease_time(field) {
            let seconds = seconds.map_err(|reason| format!("field {n}: {reason}"))?;
            leases.push(seconds);
        } else if field.contains('.') && field.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let ip = field.parse::<Ipv4Addr>().map_err(|_| {
                format!("field {n}: IPv4 address is not four dotted decimal numbers 0-255")
            })?;
            v4.push(ip);
        } else if looks_like_mac(field) {
            macs.push(mac_field(field).map_err(|reason| format!("field {n}: {reason}"))?);
        } else {
            hostnames.push(check_hostname(field).map_err(|reason| format!("field {n}: {reason}"))?);
        }
    }
    if client_ids.len() > 1 {
        return Err(format!(
            "{} client identifiers: a reservation has one",
            client_ids.len()
        ));
    }
    let client_id = client_ids.pop();
    let (mac, extra_macs) = match (macs.split_first(), &client_id) {
        (Some((mac, extra)), _) if extra.len() <= validate::MAX_EXTRA_MACS => {
            (*mac, extra.to_vec())
        }
        (Some(_), _) => {
            return Err(format!(
                "{} MAC addresses: a reservation has at most {}",
                macs.len(),
                1 + validate::MAX_EXTRA_MACS
            ))
        }
        (None, Some(id)) => match id.embedded_mac() {
            Some(mac) => {
                notes.push(format!(
                    "MAC {} taken from the client identifier",
                    crate::mac::Mac(mac)
                ));
                (mac, Vec::new())
            }
            None => {
                return Err(
                    "reservation is keyed by client-id only: ipmanager keys every \
                     reservation by MAC as well, and this identifier holds none"
                        .to_owned(),
                )
            }
        },
        (None, None) => {
            return Err("no MAC address: ipmanager keys every reservation by MAC".to_owned())
        }
    };
    if let Some(at) = (1..macs.len()).find(|&at| macs[..at].contains(&macs[at])) {
        return Err(format!(
            "MAC address {} is given twice",
            crate::mac::Mac(macs[at])
        ));
    }
    if hostnames.len() > 1 {
        return Err(format!(
            "{} hostnames: a reservation has one hostname",
            hostnames.len()
        ));
    }
    if leases.len() > 1 {
        return Err(format!(
            "{} lease times: a reservation has one lease time",
            leases.len()
        ));
    }
    if v4.len() > 1 {
        return Err(format!(
            "{} IPv4 addresses: ipmanager keeps one address per reservation",
            v4.len()
        ));
    }
    for extra in v6.iter().skip(1) {
        notes.push(format!(
            "IPv6 address [{extra}] not kept: ipmanager keeps one IPv6 address per reservation"
        ));
    }
    let mut ips: Vec<Option<IpAddr>> = Vec::new();
    ips.extend(v4.first().map(|ip| Some(IpAddr::V4(*ip))));
    ips.extend(v6.first().map(|ip| Some(IpAddr::V6(*ip))));
    if ips.len() == 2 {
        notes.push(
            "line has an IPv4 and an IPv6 address: kept as two reservations, one per address"
                .to_owned(),
        );
    }
    if ips.is_empty() {
        ips.push(None);
    }
    Ok(ips
        .into_iter()
        .map(|ip| Reservation {
            line,
            mac,
            extra_macs: extra_macs.clone(),
            client_id: client_id.clone(),
            ip,
            hostname: hostnames.first().cloned(),
            lease_seconds: leases.first().copied(),
            notes: notes.clone(),
        })
        .collect())
}

/// The identifier after `id:`: hex octets as ipmanager writes them, or else text, which
/// dnsmasq takes as its bytes (`id:laptop`).
fn client_id_field(text: &str) -> Result<ClientId, String> {
    if let Ok(id) = crate::client_id::parse(text) {
        return Ok(id);
    }
    let printable = text.bytes().all(|b| b.is_ascii_graphic());
    let bytes = text.as_bytes().to_vec();
    if printable && crate::client_id::valid_length(&bytes) {
        Ok(ClientId(bytes))
    } else {
        Err(crate::client_id::ClientIdError(shown(text).to_owned()).to_string())
    }
}

/// `None` when dnsmasq would not read `field` as a lease time (`infinite`, or digits with an
/// optional unit s/m/h/d/w, any case); otherwise its seconds from the shared parser
/// ([`crate::lease`]), or why they are out of bounds.
fn lease_time(field: &str) -> Option<Result<i64, String>> {
    let digits = field.trim_end_matches(|c: char| "smhdwSMHDW".contains(c));
    let dnsmasq_lease = field.eq_ignore_ascii_case("infinite")
        || (!digits.is_empty()
            && field.len() - digits.len() <= 1
            && digits.bytes().all(|b| b.is_ascii_digit()));
    // `12x` is neither a lease nor a valid hostname; the hostname rule explains it.
    dnsmasq_lease.then(|| crate::lease::parse("lease time", &field.to_ascii_lowercase()))
}

/// Whether dnsmasq would read `field` as a hardware address: it has a ':' (no hostname or lease
/// has one) or is six dash-separated two-character groups.
fn looks_like_mac(field: &str) -> bool {
    field.contains(':') || {
        let groups: Vec<&str> = field.split('-').collect();
        groups.len() == 6
            && groups
                .iter()
                .all(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_hexdigit() || b == b'*'))
    }
}

/// A MAC field, possibly with dnsmasq's hardware-type prefix (`01-aa:bb:…`).
fn mac_field(field: &str) -> Result<[u8; 6], String> {
    if let Some((kind, rest)) = field.split_once('-') {
        if rest.contains(':') && !kind.contains(':') {
            match u8::from_str_radix(kind, 16) {
                Ok(1) => return parse_mac(rest),
                Ok(kind) => {
                    return Err(format!(
                        "MAC address has hardware type {kind}: ipmanager keeps Ethernet \
                         (type 1) MACs only"
                    ))
                }
                Err(_) => {
                    return Err(
                        "MAC address is not six hex bytes separated by ':' or '-'".to_owned()
                    )
                }
            }
        }
    }
    parse_mac(field)
}

/// `dhcp-host=MAC,IP,hostname[,LEASE]` lines (no prefix for a hostsfile) in the renderer's
/// spelling, a `# subnet` comment before each subnet's hosts.
pub(crate) fn export(plan: &ExportPlan<'_>, flavour: Flavour) -> String {
    let (format, prefix) = match flavour {
        Flavour::Conf => (Format::Dnsmasq, "dhcp-host="),
        Flavour::Hostsfile => (Format::Hostsfile, ""),
    };
    let mut out = plan.header("#", format);
    let mut current = None;
    for (subnet, host) in &plan.hosts {
        let group = subnet.map(|s| s.id);
        if current != Some(group) {
            current = Some(group);
            match subnet {
                Some(subnet) => out.push_str(&format!("# subnet {:#}\n", subnet.cidr)),
                None => out.push_str("# hosts whose subnet is not exported\n"),
            }
        }
        lines::dhcp_host(&mut out, prefix, host, &plan.ident(host));
    }
    // A dhcp-hostsfile holds reservations only.
    if flavour == Flavour::Conf
        && plan
            .names
            .iter()
            .any(|n| n.dns_only || !n.aliases.is_empty())
    {
        out.push_str("# aliases and DNS-only names\n");
        names::dnsmasq_lines(&mut out, &plan.names);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Result<Reservation, String> {
        let mut all = host_fields(value, 1)?;
        assert_eq!(all.len(), 1, "{value}");
        Ok(all.remove(0))
    }

    fn reason(value: &str) -> String {
        host_fields(value, 1).unwrap_err()
    }

    #[test]
    fn fields_in_any_order() {
        let r = one("laptop,12h,10.0.0.5,52:54:00:AA:BB:01").unwrap();
        assert_eq!(r.mac, [0x52, 0x54, 0, 0xaa, 0xbb, 1]);
        assert_eq!(r.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(r.hostname.as_deref(), Some("laptop"));
        assert_eq!(r.lease_seconds, Some(43_200));
        assert!(r.notes.is_empty());
    }

    #[test]
    fn lease_spellings() {
        for (text, seconds) in [
            ("3600", 3600),
            ("45m", 2700),
            ("12h", 43_200),
            ("2d", 172_800),
            ("1w", 604_800),
            ("120s", 120),
            ("12H", 43_200),
            ("infinite", 4_294_967_295),
        ] {
            assert_eq!(lease_time(text), Some(Ok(seconds)), "{text}");
        }
        assert_eq!(lease_time("laptop"), None);
        assert_eq!(lease_time("12x"), None);
        assert!(lease_time("1m").unwrap().is_err());
        assert!(lease_time("99999999999999999999w").unwrap().is_err());
        assert!(reason("52:54:00:aa:bb:01,60")
            .starts_with("field 2: lease time '60' (60 seconds) is out of range"));
    }

    #[test]
    fn optional_address_and_name() {
        let r = one("52:54:00:aa:bb:01,printer").unwrap();
        assert_eq!((r.ip, r.hostname.as_deref()), (None, Some("printer")));
        let r = one("52-54-00-aa-bb-01,10.0.0.9").unwrap();
        assert_eq!(r.hostname, None);
    }

    #[test]
    fn several_macs_and_identifiers() {
        let r = one("52:54:00:aa:bb:01,52-54-00-aa-bb-02,10.0.0.5,pc").unwrap();
        assert_eq!(r.extra_macs, [[0x52, 0x54, 0, 0xaa, 0xbb, 2]]);
        let r = one("id:laptop,52:54:00:aa:bb:01").unwrap();
        assert_eq!(r.client_id.unwrap().0, b"laptop");
        // An identifier-only line takes the MAC inside a DUID-LL.
        let r = one("id:00:03:00:01:52:54:00:aa:bb:07,[2001:db8::7],v6pc").unwrap();
        assert_eq!(r.mac[5], 7);
        assert_eq!(
            r.notes,
            ["MAC 52:54:00:aa:bb:07 taken from the client identifier"]
        );
    }

    #[test]
    fn dual_stack_line_becomes_two_reservations() {
        let all = host_fields("52:54:00:aa:bb:01,10.0.0.5,[2001:db8::5],pc", 3).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].ip.unwrap().is_ipv4() && all[1].ip.unwrap().is_ipv6());
        assert!(all.iter().all(|r| r.line == 3 && r.notes.len() == 1));
    }

    #[test]
    fn dropped_fields_become_notes() {
        let r = one("id:01:52:54:00:aa:bb:01,52:54:00:aa:bb:01,set:voip,tag:lab,id:*,pc").unwrap();
        assert_eq!(
            r.notes,
            [
                "tag set:voip not kept",
                "tag condition tag:lab not kept: the reservation applies to every client with this MAC",
                "id:* (ignore the client-id) not kept",
            ]
        );
        assert_eq!(r.client_id.unwrap().to_string(), "01:52:54:00:aa:bb:01");
        let r = one("52:54:00:aa:bb:01,[2001:db8::5],[2001:db8::6]").unwrap();
        assert_eq!(r.notes.len(), 1);
        assert_eq!(
            r.notes[0],
            "IPv6 address [2001:db8::6] not kept: ipmanager keeps one IPv6 address per reservation"
        );
        let r = one("52:54:00:aa:bb:01,set:a\u{1b}b").unwrap();
        assert_eq!(r.notes, ["tag set:(value not shown) not kept"]);
    }

    #[test]
    fn rejections_name_the_field_and_rule() {
        for (value, expected) in [
            ("laptop,10.0.0.5", "no MAC address"),
            (
                "id:01:02:03,10.0.0.5",
                "reservation is keyed by client-id only",
            ),
            (
                "52:54:00:aa:bb:01,52:54:00:aa:bb:02,52:54:00:aa:bb:01,pc",
                "MAC address 52:54:00:aa:bb:01 is given twice",
            ),
            (
                "id:01:02:03,id:04:05,52:54:00:aa:bb:01",
                "2 client identifiers",
            ),
            ("id:a\u{1b},52:54:00:aa:bb:01", "field 1: hosts.client_id"),
            (
                "52:54:00:aa:bb:01,ignore",
                "ignore: dnsmasq refuses service",
            ),
            (
                "52:54:00:aa:bb:*,pc",
                "field 1: MAC address contains the wildcard",
            ),
            (
                "52-54-00-aa-bb-**,pc",
                "field 1: MAC address contains the wildcard",
            ),
            (
                "06-52:54:00:aa:bb:01",
                "field 1: MAC address has hardware type 6",
            ),
            (
                "52:54:00:aa:bb:01,10.0.0.999",
                "field 2: IPv4 address is not",
            ),
            (
                "52:54:00:aa:bb:01,[2001:db8::zz]",
                "field 2: IPv6 address is not",
            ),
            (
                "52:54:00:aa:bb:01,[::5]",
                "field 2: IPv6 address lies in ::/64",
            ),
            (
                "52:54:00:aa:bb:01,lap_top",
                "field 2: hostname contains '_' at byte 3",
            ),
            ("52:54:00:aa:bb:01,a,b", "2 hostnames"),
            ("52:54:00:aa:bb:01,1h,2h", "2 lease times"),
            ("52:54:00:aa:bb:01,10.0.0.1,10.0.0.2", "2 IPv4 addresses"),
            ("52:54:00:aa:bb:01,,pc", "field 2 is empty"),
        ] {
            let error = reason(value);
            assert!(error.starts_with(expected), "{value}: {error}");
        }
        // Accepted by the hardware-type spelling when the type is Ethernet.
        assert_eq!(one("01-52:54:00:aa:bb:01").unwrap().mac[5], 1);
    }

    #[test]
    fn conf_lines() {
        let parsed = parse(
            "# c\n\ndhcp-range=10.0.0.100,10.0.0.200\nenable-ra\ndhcp-host = 52:54:00:aa:bb:01 , pc # x\n\
             dhcp-host=\nDHCP HOST\n",
            Flavour::Conf,
        );
        assert_eq!(parsed.reservations.len(), 1);
        assert_eq!(parsed.reservations[0].line, 5);
        let skipped: Vec<_> = parsed
            .skipped
            .iter()
            .map(|n| (n.line, n.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                (3, "not a reservation (dhcp-range)"),
                (4, "not a reservation (enable-ra)"),
                (7, "not a reservation (not a dnsmasq option)"),
            ]
        );
        assert_eq!(parsed.rejected[0].line, 6);
    }

    #[test]
    fn a_hash_inside_a_field_is_refused_not_a_comment() {
        for flavour in [Flavour::Conf, Flavour::Hostsfile] {
            let prefix = if flavour == Flavour::Conf {
                "dhcp-host="
            } else {
                ""
            };
            let parsed = parse(
                &format!(
                    "{prefix}52:54:00:aa:bb:01,10.0.0.5,h#x\n\
                     {prefix}52:54:00:aa:bb:02,10.0.0.6,pc #x\n\
                     {prefix}52:54:00:aa:bb:03,10.0.0.7,12h#x\n"
                ),
                flavour,
            );
            let rejected: Vec<_> = parsed
                .rejected
                .iter()
                .map(|n| (n.line, n.reason.as_str()))
                .collect();
            assert_eq!(
                rejected,
                [
                    (1, "field 3: hostname contains '#' at byte 1; only ASCII letters, digits, '-' and '.' are allowed"),
                    (3, "field 3: hostname contains '#' at byte 3; only ASCII letters, digits, '-' and '.' are allowed"),
                ],
                "{flavour:?}"
            );
            assert_eq!(parsed.reservations.len(), 1);
            assert_eq!(parsed.reservations[0].hostname.as_deref(), Some("pc"));
        }
    }

    #[test]
    fn hostsfile_lines() {
        let long = format!("52:54:00:aa:bb:01,{}", "a".repeat(1000));
        let input = format!("52:54:00:aa:bb:01,pc\ndhcp-host=52:54:00:aa:bb:02\n{long}\n");
        let parsed = parse(&input, Flavour::Hostsfile);
        assert_eq!(parsed.reservations.len(), 1);
        assert!(parsed.rejected[0].reason.contains("format dnsmasq"));
        assert!(parsed.rejected[1]
            .reason
            .starts_with("line is 1018 bytes long"));
    }
}
