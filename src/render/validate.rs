//! The renderer's own checks of every value it writes into a dnsmasq file, and of the file paths
//! the include file names.
//!
//! The database enforces the same rules, but a superuser can disable its triggers, and a value
//! that slips through is not just wrong data: dnsmasq reads a newline, a ',' or a '#' in a name as
//! syntax (a new config line, extra fields, a comment), which has let a hostname run a script as
//! root. So nothing reaches a file without passing these checks. Every error message describes
//! the offending character or length but never repeats the value itself, because reasons end up
//! in logs and the value may be hostile.

use std::net::IpAddr;
use std::path::Path;

use cidr::IpCidr;

use crate::model::{DhcpOptionValue, Host, OptionKind, Profile, Subnet};

/// Every line written must be shorter than this many bytes (newline excluded). dnsmasq reads its
/// configuration in 1,024-byte chunks and parses whatever follows a chunk boundary as a new
/// line; the margin keeps us clear of that boundary.
pub const MAX_LINE_BYTES: usize = 1000;
/// dnsmasq raises shorter leases to two minutes; refusing them keeps the file honest.
pub const MIN_LEASE_SECONDS: i64 = 120;
/// DHCP carries the lease time in 32 bits; 4294967295 means infinite.
pub const MAX_LEASE_SECONDS: i64 = u32::MAX as i64;
/// The longest DNS name in text form (RFC 1035 without the trailing dot).
pub const MAX_NAME_BYTES: usize = 253;
/// The longest DNS label.
pub const MAX_LABEL_BYTES: usize = 63;
/// The longest file path accepted for the include file, so that `dhcp-hostsfile=<path>` stays
/// well below [`MAX_LINE_BYTES`].
pub const MAX_PATH_BYTES: usize = 900;
/// dnsmasq rejects a DHCPv6 range whose prefix is shorter ("prefix length must be at least 64"),
/// and a rejected conf-dir line stops it from starting.
pub const MIN_IPV6_PREFIX: u8 = 64;

/// A hostname as written into `dhcp-host`, `host-record` and addn-hosts lines.
///
/// RFC 1123: dot-separated labels of ASCII letters, digits and inner hyphens, 1–63 bytes each,
/// at most 253 in total, no trailing dot. On top of that, names that dnsmasq's `dhcp-host`
/// parser reads as something other than a name are refused: all digits (a lease time, or a TTL
/// in `host-record`), digits followed by a unit letter such as `12h` (a lease time), digits and
/// dots such as `10.0.0.1` (an address), and the keywords `ignore` (the client would be refused
/// service) and `infinite` (an infinite lease).
pub fn hostname(name: &str) -> Result<(), String> {
    dns_name("hostname", name)?;
    // Labels are non-empty here, so "every label is all digits" is "only digits and dots".
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let reason = "hostname has only digits and dots: dnsmasq reads it as a number or address";
        return Err(reason.to_owned());
    }
    if let Some((&unit, digits)) = name.as_bytes().split_last() {
        if !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && b"smhdwSMHDW".contains(&unit)
        {
            let reason = "hostname is digits and a time unit: dnsmasq reads it as a lease time";
            return Err(reason.to_owned());
        }
    }
    if ["ignore", "infinite"]
        .iter()
        .any(|kw| name.eq_ignore_ascii_case(kw))
    {
        return Err(format!(
            "hostname {} is a dnsmasq dhcp-host keyword",
            name.to_ascii_lowercase()
        ));
    }
    Ok(())
}

/// A subnet's DNS domain, as written into `domain=` and appended to hostnames: the RFC 1123 rule
/// of [`hostname`]. It is never parsed on its own in a field where it could be mistaken for a
/// number or keyword, so those extra checks do not apply.
pub fn domain(name: &str) -> Result<(), String> {
    dns_name("domain", name)
}

/// A reservation's MAC address: a unicast address of a real interface.
pub fn mac(mac: &[u8; 6]) -> Result<(), String> {
    if mac[0] & 1 == 1 {
        return Err("MAC address is a multicast or broadcast address".to_owned());
    }
    if *mac == [0; 6] {
        return Err("MAC address is all zeros".to_owned());
    }
    Ok(())
}

/// A lease time in seconds, for a host or a subnet.
pub fn lease_seconds(seconds: i64) -> Result<(), String> {
    if (MIN_LEASE_SECONDS..=MAX_LEASE_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "lease time {seconds} s is outside {MIN_LEASE_SECONDS}..={MAX_LEASE_SECONDS}"
        ))
    }
}

/// A subnet as a whole: what its `dhcp-range`, `dhcp-option` and `domain` lines need.
pub fn subnet(subnet: &Subnet) -> Result<(), String> {
    let cidr = subnet.cidr;
    if let IpCidr::V6(v6) = cidr {
        let prefix = cidr.network_length();
        if prefix < MIN_IPV6_PREFIX {
            return Err(format!(
                "IPv6 prefix /{prefix} is shorter than the /{MIN_IPV6_PREFIX} dnsmasq requires \
                 for DHCPv6"
            ));
        }
        // dnsmasq reads a range starting at `::` as "stateless DHCPv6 on every interface" and a
        // reservation whose first 64 bits are zero as a wildcard for any prefix.
        if u128::from(v6.first_address()) >> 64 == 0 {
            return Err(
                "IPv6 network lies in ::/64, which dnsmasq treats as a wildcard".to_owned(),
            );
        }
    }
    if let Some((start, end)) = subnet.range {
        inside("range start", start, cidr)?;
        inside("range end", end, cidr)?;
        if start > end {
            return Err(format!("range start {start} is after range end {end}"));
        }
    }
    if let Some(gateway) = subnet.gateway {
        inside("gateway", gateway, cidr)?;
    }
    if let Some(seconds) = subnet.lease_seconds {
        lease_seconds(seconds)?;
    }
    if let Some(name) = &subnet.domain {
        domain(name)?;
    }
    Ok(())
}

/// A host within its subnet (which must itself have passed [`subnet`]): every field that goes
/// into its lines. Uniqueness among hosts is the renderer's job, not this function's.
pub fn host(host: &Host, subnet: &Subnet) -> Result<(), String> {
    hostname(&host.hostname)?;
    mac(&host.mac)?;
    host_address(host.ip, subnet.cidr)?;
    if let Some(seconds) = host.lease_seconds {
        lease_seconds(seconds)?;
    }
    Ok(())
}

/// The most MACs a reservation has besides its own (`host_macs_at_most_8` in the database).
pub const MAX_EXTRA_MACS: usize = 8;

/// A reservation's client identifier and extra MACs: 2 to 130 octets (rendered as hex, so no
/// octet can inject anything), at most [`MAX_EXTRA_MACS`] unicast MACs, each other than the
/// host's `own` and the others (a repeated MAC would count twice in the planner's model).
pub(crate) fn ident(own: &[u8; 6], ident: &super::lines::Ident<'_>) -> Result<(), String> {
    if let Some(client_id) = ident.client_id {
        if !crate::client_id::valid_length(&client_id.0) {
            return Err(format!(
                "client identifier has {} octets; 2 to {} are allowed",
                client_id.0.len(),
                crate::client_id::MAX_OCTETS
            ));
        }
    }
    if ident.macs.len() > MAX_EXTRA_MACS {
        return Err(format!(
            "{} extra MAC addresses; a reservation has at most {MAX_EXTRA_MACS}",
            ident.macs.len()
        ));
    }
    for (at, extra) in ident.macs.iter().enumerate() {
        mac(extra)?;
        if extra == own || ident.macs[..at].contains(extra) {
            return Err("the same MAC address is listed twice in the reservation".to_owned());
        }
    }
    Ok(())
}

/// A reserved address: inside the subnet, and for IPv4 networks larger than /31 neither the
/// network nor the broadcast address, which no client can use.
pub fn host_address(ip: IpAddr, cidr: IpCidr) -> Result<(), String> {
    inside("address", ip, cidr)?;
    if cidr.is_ipv4() && cidr.network_length() < 31 {
        if ip == cidr.first_address() {
            return Err(format!("address {ip} is the network address of {cidr:#}"));
        }
        if ip == cidr.last_address() {
            return Err(format!("address {ip} is the broadcast address of {cidr:#}"));
        }
    }
    Ok(())
}

/// The longest option value written (the database's bound): with a tag list it stays far below
/// [`MAX_LINE_BYTES`].
pub const MAX_OPTION_VALUE_BYTES: usize = 500;
/// The longest string option: a DHCP option carries at most 255 bytes.
pub const MAX_OPTION_STRING_BYTES: usize = 255;
/// The longest boot file name: the BOOTP `file` field holds 128 bytes.
pub const MAX_BOOT_FILE_BYTES: usize = 128;
/// The longest TFTP server name: the BOOTP `sname` field holds 64 bytes with its zero.
pub const MAX_SERVER_NAME_BYTES: usize = 63;

/// Why an option number cannot be written for a family, or `None`: dnsmasq or another setting
/// produces it (netmask, router, host name, domain, boot file, TFTP server), or it belongs to the
/// protocol or the client. The same list as the database's `ipmanager.option_reserved`, restated.
fn reserved_option(number: u16, v6: bool) -> Option<&'static str> {
    if v6 {
        return (number == 0 || number <= 20 || matches!(number, 25 | 26 | 39))
            .then_some("DHCPv6 protocol option");
    }
    match number {
        0 | 255.. => Some("not a DHCPv4 option number"),
        1 | 3 | 12 | 15 => Some("set by the subnet or host itself"),
        66 | 67 => Some("a profile's boot setting"),
        50..=57 | 61 | 77 | 80 | 81 | 82 | 93 | 94 | 97 | 125 => Some("DHCP protocol option"),
        _ => None,
    }
}

/// A DHCP option of a subnet (of the family `v6` says) or a profile (DHCPv4): its number and
/// its value by its type, restated here independently of the database's
/// `ipmanager.normalise_option_value` and in its normal form only, so that no value can carry a
/// field, a tag, a comment or a line into dnsmasq's configuration.
pub fn option_value(option: &DhcpOptionValue, v6: bool) -> Result<(), String> {
    let number = option.number;
    if let Some(why) = reserved_option(number, v6) {
        return Err(format!("option {number} cannot be set ({why})"));
    }
    if let Some(name) = &option.name {
        let plain = !name.is_empty()
            && name.len() <= 40
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+');
        if !plain {
            return Err(format!(
                "option {number} has a name that is not a plain word"
            ));
        }
    }
    let value = option.value.as_str();
    if value.is_empty() || value.len() > MAX_OPTION_VALUE_BYTES {
        return Err(format!(
            "option {number} value is {} bytes; 1 to {MAX_OPTION_VALUE_BYTES} are allowed",
            value.len()
        ));
    }
    let family_ok = match option.kind {
        OptionKind::Ipv4List | OptionKind::ClasslessRoutes => !v6,
        OptionKind::Ipv6List => v6,
        _ => true,
    };
    if !family_ok {
        return Err(format!(
            "option {number} is of type {} but the family is DHCPv{}",
            option.kind,
            if v6 { 6 } else { 4 }
        ));
    }
    let items = || value.split(',');
    let ok = match option.kind {
        OptionKind::Ipv4List => items().all(canonical_ipv4),
        OptionKind::Ipv6List => items().all(|i| {
            i.parse::<std::net::Ipv6Addr>()
                .is_ok_and(|ip| ip.to_string() == i)
        }),
        OptionKind::DomainList => items().all(|i| domain(i).is_ok()),
        OptionKind::String => option_string(value),
        OptionKind::Uint8 => canonical_number(value, u8::MAX.into()),
        OptionKind::Uint16 => canonical_number(value, u16::MAX.into()),
        OptionKind::Uint32 => canonical_number(value, u32::MAX.into()),
        OptionKind::Bool => value == "0" || value == "1",
        OptionKind::Hex => value.split(':').all(|b| {
            b.len() == 2
                && b.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }),
        OptionKind::ClasslessRoutes => classless_routes(value).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "option {number} value is not a {} in normal form",
            option.kind
        ))
    }
}

/// Dotted decimal exactly as Rust prints it: no leading zeros, no abbreviations.
fn canonical_ipv4(text: &str) -> bool {
    text.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.to_string() == text)
}

/// Decimal digits without a leading zero (but "0"), at most `max`.
fn canonical_number(text: &str, max: u64) -> bool {
    let digits = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    digits && (text == "0" || !text.starts_with('0')) && text.parse::<u64>().is_ok_and(|n| n <= max)
}

/// A string option: printable ASCII without '"', '', '#' or ',' (it is written in double
/// quotes, and none of these may close, escape, comment or split it), no blank at either end.
fn option_string(text: &str) -> bool {
    text.len() <= MAX_OPTION_STRING_BYTES
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && text
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !matches!(b, b'"' | b'\\' | b'#' | b','))
}

/// `network/prefix,router` pairs: networks with their host bits zero, routers IPv4; the pairs
/// as (network, prefix length, router).
pub fn classless_routes(text: &str) -> Option<Vec<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr)>> {
    let items: Vec<&str> = text.split(',').collect();
    if !items.len().is_multiple_of(2) {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| route(pair[0], pair[1]))
        .collect()
}

/// One `network/prefix` and its router.
fn route(network: &str, router: &str) -> Option<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr)> {
    let (address, prefix) = network.split_once('/')?;
    if !canonical_ipv4(address) || !canonical_ipv4(router) || !canonical_number(prefix, 32) {
        return None;
    }
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    (u32::from(address) & host_bits == 0).then_some((address, prefix, router.parse().ok()?))
}

/// A boot file name or URL in a `dhcp-boot` line: 1 to [`MAX_BOOT_FILE_BYTES`] bytes of letters,
/// digits and `._-/:+=?&%~@`, not starting with '-' or a tag prefix (which dnsmasq would read as
/// a tag), so that it can add no field and end no line.
pub fn boot_file(file: &str) -> Result<(), String> {
    let first_ok = file
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/'));
    if !first_ok || file.len() > MAX_BOOT_FILE_BYTES {
        return Err(format!(
            "boot file name is empty, too long or starts with a character other than a letter,              digit, '_', '.' or '/' (1 to {MAX_BOOT_FILE_BYTES} bytes)"
        ));
    }
    if let Some((at, c)) = file
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "._/:+=?&%~@-".contains(c)))
    {
        return Err(format!(
            "boot file name contains {} at byte {at}; only letters, digits and ._/:+=?&%~@- are allowed",
            describe(c)
        ));
    }
    let lower = file.to_ascii_lowercase();
    if ["tag:", "set:", "net:"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err("boot file name starts like a dnsmasq tag".to_owned());
    }
    Ok(())
}

/// A profile: its boot files, TFTP server name and next server; its options are checked one by
/// one ([`option_value`]), so that one bad option does not cost the whole profile.
pub fn profile(profile: &Profile) -> Result<(), String> {
    for file in [
        &profile.boot_file,
        &profile.boot_file_uefi,
        &profile.boot_file_arm64,
        &profile.boot_file_ipxe,
    ]
    .into_iter()
    .flatten()
    {
        boot_file(file)?;
    }
    if let Some(name) = &profile.tftp_server_name {
        domain(name)?;
        if name.len() > MAX_SERVER_NAME_BYTES {
            return Err(format!(
                "TFTP server name is longer than {MAX_SERVER_NAME_BYTES} bytes"
            ));
        }
    }
    if let Some(ip) = profile.next_server {
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err("next server is not a unicast address".to_owned());
        }
    }
    Ok(())
}

/// A file path that the include file names (`dhcp-hostsfile=`, `addn-hosts=`); configuration
/// checks its paths with this before the agent starts.
///
/// Absolute (dnsmasq resolves a relative path against its own working directory), at most
/// [`MAX_PATH_BYTES`], and only printable ASCII without whitespace, ',' (a field separator),
/// '#' (a comment), '"' and '\' (dnsmasq's quoting and escapes).
pub fn file_path(path: &Path) -> Result<(), String> {
    let Some(text) = path.to_str() else {
        return Err("path is not valid UTF-8".to_owned());
    };
    if !path.is_absolute() {
        return Err("path is not absolute".to_owned());
    }
    if text.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path is {} bytes long, the limit is {MAX_PATH_BYTES}",
            text.len()
        ));
    }
    match text
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_graphic() || matches!(c, ',' | '#' | '"' | '\\'))
    {
        Some((at, c)) => Err(format!(
            "path contains {} at byte {at}; dnsmasq config lines allow only printable ASCII \
             without whitespace, ',', '#', '\"' and '\\'",
            describe(c)
        )),
        None => Ok(()),
    }
}

/// The RFC 1123 rule shared by hostnames and domains; `what` names the field in messages.
fn dns_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    // Bytes, not chars: this runs for every host. Everything before the first bad byte is
    // ASCII, so that byte starts a char.
    let bad = name
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if let Some((at, c)) = bad.and_then(|at| Some((at, name[at..].chars().next()?))) {
        return Err(format!(
            "{what} contains {} at byte {at}; only ASCII letters, digits, '-' and '.' are allowed",
            describe(c)
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes long, the limit is {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    for label in name.as_bytes().split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(format!(
                "{what} has an empty label (a leading, trailing or double dot)"
            ));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(format!(
                "{what} has a label of {} bytes, the limit is {MAX_LABEL_BYTES}",
                label.len()
            ));
        }
        if label.starts_with(b"-") || label.ends_with(b"-") {
            return Err(format!("{what} has a label that starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Same family as the subnet and inside it.
fn inside(what: &str, ip: IpAddr, cidr: IpCidr) -> Result<(), String> {
    if ip.is_ipv4() != cidr.is_ipv4() {
        let (family, net_family) = if ip.is_ipv4() {
            ("IPv4", "IPv6")
        } else {
            ("IPv6", "IPv4")
        };
        return Err(format!(
            "{what} {ip} is {family} but subnet {cidr:#} is {net_family}"
        ));
    }
    if !cidr.contains(&ip) {
        return Err(format!("{what} {ip} is outside {cidr:#}"));
    }
    Ok(())
}

/// A character for a message: printable ASCII as itself in quotes, anything else (newline, NUL,
/// bidi controls…) as its code point, so that a message can never carry the character itself.
fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn subnet_v4() -> Subnet {
        Subnet {
            id: 1,
            cidr: "10.0.0.0/24".parse().unwrap(),
            range: Some((v4("10.0.0.100"), v4("10.0.0.199"))),
            gateway: Some(v4("10.0.0.1")),
            lease_seconds: Some(3600),
            domain: Some("lan.example.org".to_owned()),
        }
    }

    fn subnet_v6() -> Subnet {
        Subnet {
            id: 2,
            cidr: "2001:db8:0:1::/64".parse().unwrap(),
            range: None,
            gateway: None,
            lease_seconds: None,
            domain: None,
        }
    }

    fn host(hostname: &str, ip: &str) -> Host {
        Host {
            id: 10,
            subnet_id: 1,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ip: ip.parse().unwrap(),
            hostname: hostname.to_owned(),
            lease_seconds: None,
        }
    }

    #[test]
    fn hostname_accepts_rfc1123_names() {
        let longest_label = "a".repeat(63);
        let longest_name = [
            &*"a".repeat(63),
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest_name.len(), 253);
        for name in [
            "a",
            "x",
            "printer",
            "Printer-2",
            "2nd-floor",
            "1a",
            "12hx",
            "h12",
            "m",
            "node1.lab.example.org",
            "a-b.c-d",
            "10.0.0.1a",
            "ignored",
            "infinity",
            &longest_label,
            &longest_name,
        ] {
            assert_eq!(hostname(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hostname_rejects_syntax_and_lengths() {
        let cases = [
            ("", "hostname is empty"),
            ("a b", "hostname contains U+0020 at byte 1"),
            ("a,set:evil", "hostname contains ',' at byte 1"),
            ("a#b", "hostname contains '#' at byte 1"),
            ("a\ndhcp-script=/x", "hostname contains U+000A at byte 1"),
            ("a\0", "hostname contains U+0000 at byte 1"),
            ("a_b", "hostname contains '_' at byte 1"),
            ("é", "hostname contains U+00E9 at byte 0"),
            ("a\u{202e}b", "hostname contains U+202E at byte 1"),
            ("a.", "hostname has an empty label"),
            (".a", "hostname has an empty label"),
            ("a..b", "hostname has an empty label"),
            ("-a", "hostname has a label that starts or ends with '-'"),
            ("a-", "hostname has a label that starts or ends with '-'"),
            ("a.-b", "hostname has a label that starts or ends with '-'"),
        ];
        for (name, expected) in cases {
            let error = hostname(name).unwrap_err();
            assert!(error.starts_with(expected), "{name:?}: {error}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(
            hostname(&long_label).unwrap_err(),
            "hostname has a label of 64 bytes, the limit is 63"
        );
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(
            hostname(&long_name).unwrap_err(),
            "hostname is 254 bytes long, the limit is 253"
        );
    }

    #[test]
    fn hostname_rejects_what_dnsmasq_reads_as_something_else() {
        for name in [
            "1", "12", "0", "10.0.0.1", "1.2", "12h", "5m", "7d", "3W", "90s",
        ] {
            assert!(hostname(name).is_err(), "{name}");
        }
        assert_eq!(
            hostname("Ignore").unwrap_err(),
            "hostname ignore is a dnsmasq dhcp-host keyword"
        );
        assert!(hostname("infinite").is_err());
    }

    #[test]
    fn domain_uses_the_rfc1123_rule_only() {
        assert_eq!(domain("lan.example.org"), Ok(()));
        assert_eq!(domain("10"), Ok(()));
        assert!(domain("lan example")
            .unwrap_err()
            .starts_with("domain contains U+0020"));
        assert!(domain("lan.").is_err());
        assert!(domain("").is_err());
    }

    #[test]
    fn mac_must_be_unicast_and_not_zero() {
        assert_eq!(mac(&[0x52, 0x54, 0, 1, 2, 3]), Ok(()));
        assert_eq!(mac(&[0x02, 0, 0, 0, 0, 0]), Ok(()));
        assert!(mac(&[0x01, 0, 0x5e, 0, 0, 1]).is_err());
        assert!(mac(&[0xff; 6]).is_err());
        assert_eq!(mac(&[0; 6]).unwrap_err(), "MAC address is all zeros");
    }

    #[test]
    fn lease_bounds() {
        assert_eq!(lease_seconds(120), Ok(()));
        assert_eq!(lease_seconds(4_294_967_295), Ok(()));
        for bad in [119, 0, -1, 4_294_967_296, i64::MIN, i64::MAX] {
            assert!(lease_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subnet_accepts_consistent_values() {
        assert_eq!(subnet(&subnet_v4()), Ok(()));
        assert_eq!(subnet(&subnet_v6()), Ok(()));
        let single = Subnet {
            range: Some((v4("10.0.0.5"), v4("10.0.0.5"))),
            ..subnet_v4()
        };
        assert_eq!(subnet(&single), Ok(()));
    }

    #[test]
    fn subnet_rejects_inconsistent_values() {
        let outside = Subnet {
            range: Some((v4("10.0.0.100"), v4("10.0.1.5"))),
            ..subnet_v4()
        };
        assert_eq!(
            subnet(&outside).unwrap_err(),
            "range end 10.0.1.5 is outside 10.0.0.0/24"
        );
        let reversed = Subnet {
            range: Some((v4("10.0.0.199"), v4("10.0.0.100"))),
            ..subnet_v4()
        };
        assert!(subnet(&reversed)
            .unwrap_err()
            .contains("is after range end"));
        let family = Subnet {
            gateway: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ..subnet_v4()
        };
        assert_eq!(
            subnet(&family).unwrap_err(),
            "gateway ::1 is IPv6 but subnet 10.0.0.0/24 is IPv4"
        );
        let lease = Subnet {
            lease_seconds: Some(60),
            ..subnet_v4()
        };
        assert!(subnet(&lease).is_err());
        let domain = Subnet {
            domain: Some("lan\nexample".to_owned()),
            ..subnet_v4()
        };
        assert!(subnet(&domain)
            .unwrap_err()
            .starts_with("domain contains U+000A"));
        let short_v6 = Subnet {
            cidr: "2001:db8::/48".parse().unwrap(),
            ..subnet_v6()
        };
        assert!(subnet(&short_v6)
            .unwrap_err()
            .starts_with("IPv6 prefix /48"));
        let zero_v6 = Subnet {
            cidr: "::/64".parse().unwrap(),
            ..subnet_v6()
        };
        assert!(subnet(&zero_v6).unwrap_err().contains("::/64"));
    }

    #[test]
    fn host_checks_every_field() {
        let net = subnet_v4();
        assert_eq!(super::host(&host("pc", "10.0.0.7"), &net), Ok(()));
        assert!(super::host(&host("p c", "10.0.0.7"), &net).is_err());
        assert!(super::host(&host("pc", "10.0.1.7"), &net).is_err());
        let multicast = Host {
            mac: [1, 2, 3, 4, 5, 6],
            ..host("pc", "10.0.0.7")
        };
        assert!(super::host(&multicast, &net).is_err());
        let lease = Host {
            lease_seconds: Some(4_294_967_296),
            ..host("pc", "10.0.0.7")
        };
        assert!(super::host(&lease, &net).is_err());
    }

    #[test]
    fn host_address_excludes_network_and_broadcast_below_slash_31() {
        let net: IpCidr = "10.0.0.0/24".parse().unwrap();
        assert_eq!(host_address(v4("10.0.0.1"), net), Ok(()));
        assert_eq!(host_address(v4("10.0.0.254"), net), Ok(()));
        assert_eq!(
            host_address(v4("10.0.0.0"), net).unwrap_err(),
            "address 10.0.0.0 is the network address of 10.0.0.0/24"
        );
        assert_eq!(
            host_address(v4("10.0.0.255"), net).unwrap_err(),
            "address 10.0.0.255 is the broadcast address of 10.0.0.0/24"
        );
        let p2p: IpCidr = "10.0.0.0/31".parse().unwrap();
        assert_eq!(host_address(v4("10.0.0.0"), p2p), Ok(()));
        assert_eq!(host_address(v4("10.0.0.1"), p2p), Ok(()));
        let single: IpCidr = "10.0.0.9/32".parse().unwrap();
        assert_eq!(host_address(v4("10.0.0.9"), single), Ok(()));
        let v6: IpCidr = "2001:db8::/64".parse().unwrap();
        assert_eq!(host_address("2001:db8::".parse().unwrap(), v6), Ok(()));
        assert!(host_address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), v6).is_err());
    }

    #[test]
    fn file_path_accepts_plain_absolute_paths() {
        for path in [
            "/etc/dnsmasq.d/ipmanager.conf",
            "/var/lib/ipmanager/dhcp-hosts",
            "/a_b-c.d+e",
        ] {
            assert_eq!(file_path(Path::new(path)), Ok(()), "{path}");
        }
    }

    #[test]
    fn file_path_rejects_what_a_config_line_cannot_carry() {
        let cases = [
            ("relative/file", "path is not absolute"),
            ("/a b", "path contains U+0020 at byte 2"),
            ("/a\tb", "path contains U+0009 at byte 2"),
            ("/a\nb", "path contains U+000A at byte 2"),
            ("/a,b", "path contains ',' at byte 2"),
            ("/a#b", "path contains '#' at byte 2"),
            ("/a\"b", "path contains '\"' at byte 2"),
            ("/a\\b", "path contains '\\' at byte 2"),
            ("/é", "path contains U+00E9 at byte 1"),
        ];
        for (path, expected) in cases {
            let error = file_path(Path::new(path)).unwrap_err();
            assert!(error.starts_with(expected), "{path:?}: {error}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(file_path(Path::new(&long))
            .unwrap_err()
            .contains("bytes long"));
    }

    #[test]
    fn file_path_rejects_non_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(OsStr::from_bytes(b"/a\xffb"));
        assert_eq!(file_path(path).unwrap_err(), "path is not valid UTF-8");
    }
}
