//! How each dnsmasq line is spelled. These writers append already validated values to a buffer
//! and decide nothing; [`super`] chooses what is written and checks the result with
//! [`fits`]. (`write!` into a `String` cannot fail, hence the discarded results.)
//!
//! [`crate::exchange`] exports with the same writers, so that an exported `dhcp-host` line is
//! spelled exactly like a rendered one.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use cidr::IpCidr;

use super::validate::{MAX_LINE_BYTES, MAX_NAME_BYTES};
use crate::client_id::ClientId;
use crate::lease;
use crate::model::{Host, Subnet};

/// The first line of the include file.
pub(super) const HEADER: &str = "# Managed by ipmanager: do not edit, changes are overwritten.\n";

/// Written once after the subnet blocks when an IPv6 subnet is served (see [`super`]).
pub(crate) const ROUTER_ADVERTISEMENTS: &str = "# IPv6: router advertisements with the managed \
     flag, never as default router\nenable-ra\nra-param=*,0,0\n";

/// The tag that ties a subnet's `dhcp-range` to its `dhcp-option` lines.
pub(super) const SUBNET_TAG: &str = "subnet";

/// Whether every line appended since `start` is shorter than [`MAX_LINE_BYTES`]. The validators
/// make longer lines impossible; this is the last line of defence against dnsmasq reading the
/// tail of an overlong line as a line of its own.
pub(super) fn fits(out: &str, start: usize) -> bool {
    let text = &out[start..];
    // Fast path for the one-line-per-host case: nothing that short can hold a long line.
    text.len() < MAX_LINE_BYTES || text.lines().all(|line| line.len() < MAX_LINE_BYTES)
}

/// `# subnet <id> <cidr>`, then `dhcp-range`, the router option (IPv4 only: DHCPv6 has none,
/// routers are announced by router advertisements) and `domain`. The subnet name is never
/// written: it is free text.
pub(super) fn subnet_block(out: &mut String, subnet: &Subnet) {
    let id = subnet.id;
    let cidr = subnet.cidr;
    // `{:#}` keeps the prefix length even for a single-address network.
    let _ = writeln!(out, "# subnet {id} {cidr:#}");
    let _ = write!(out, "dhcp-range=set:{SUBNET_TAG}{id},");
    match subnet.range {
        Some((start, end)) => {
            let _ = write!(out, "{start},{end},");
        }
        // `static`: serve reservations only, hand out no dynamic addresses.
        None => {
            let _ = write!(out, "{},static,", cidr.first_address());
        }
    }
    match cidr {
        IpCidr::V4(_) => {
            let _ = write!(out, "{}", cidr.mask());
        }
        IpCidr::V6(_) => {
            let _ = write!(out, "{}", cidr.network_length());
        }
    }
    push_lease(out, subnet.lease_seconds);
    out.push('\n');
    if let (IpCidr::V4(_), Some(gateway)) = (cidr, subnet.gateway) {
        let _ = writeln!(
            out,
            "dhcp-option=tag:{SUBNET_TAG}{id},option:router,{gateway}"
        );
    }
    if let Some(domain) = &subnet.domain {
        let _ = writeln!(out, "domain={domain},{cidr:#}");
    }
}

/// What a reservation line holds besides the host's own fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ident<'a> {
    /// Written first as `id:…`: dnsmasq matches a client by it before it looks at MACs.
    pub(crate) client_id: Option<&'a ClientId>,
    /// More MACs after the host's own.
    pub(crate) macs: &'a [[u8; 6]],
    pub(crate) profile: Option<i64>,
}

/// A reservation, `[id:CLIENTID,]MAC[,MAC…][,set:profile<id>],IP,hostname[,lease]`, after
/// `prefix` (empty in a dhcp-hostsfile, `dhcp-host=` in a conf file). dnsmasq wants IPv6
/// addresses in brackets here. The profile's tag makes its options and boot lines in the include
/// file apply to the host; whichever of the MACs asks gets the address.
pub(crate) fn dhcp_host(out: &mut String, prefix: &str, host: &Host, ident: &Ident<'_>) {
    out.push_str(prefix);
    if let Some(client_id) = ident.client_id {
        push_client_id(out, client_id);
        out.push(',');
    }
    push_mac(out, &host.mac);
    for mac in ident.macs {
        out.push(',');
        push_mac(out, mac);
    }
    out.push(',');
    if let Some(id) = ident.profile {
        let _ = write!(out, "set:profile{id},");
    }
    match host.ip {
        IpAddr::V4(ip) => push_ipv4(out, ip),
        IpAddr::V6(ip) => {
            let _ = write!(out, "[{ip}]");
        }
    }
    out.push(',');
    out.push_str(&host.hostname);
    push_lease(out, host.lease_seconds);
    out.push('\n');
}

/// `id:` and the identifier's octets in lowercase hex separated by ':' (dnsmasq reads hex
/// written so as bytes, never as text).
fn push_client_id(out: &mut String, client_id: &ClientId) {
    let _ = write!(out, "id:{client_id}");
}

/// `,SECONDS`, or `,infinite` for [`lease::INFINITE`] (dnsmasq's word; it never expires).
fn push_lease(out: &mut String, seconds: Option<i64>) {
    match seconds {
        Some(lease::INFINITE) => out.push_str(",infinite"),
        Some(seconds) => {
            let _ = write!(out, ",{seconds}");
        }
        None => {}
    }
}

/// The names of one address: the host's own (whose fqdn or name a PTR query answers), then its
/// aliases, each as `fqdn` and bare name when the domain applies to it.
pub(super) struct Names<'a> {
    pub(super) ip: IpAddr,
    pub(super) hostname: &'a str,
    pub(super) aliases: &'a [String],
    pub(super) domain: Option<&'a str>,
}

impl Names<'_> {
    /// Every name in order, separated by `sep`.
    fn push(&self, out: &mut String, sep: char) {
        let mut first = true;
        for name in std::iter::once(self.hostname).chain(self.aliases.iter().map(String::as_str)) {
            let fqdn = self.domain.filter(|domain| {
                !name.contains('.') && name.len() + 1 + domain.len() <= MAX_NAME_BYTES
            });
            for written in [fqdn.map(|domain| (name, Some(domain))), Some((name, None))]
                .into_iter()
                .flatten()
            {
                if !first {
                    out.push(sep);
                }
                first = false;
                match written {
                    (name, Some(domain)) => push_fqdn(out, name, domain),
                    (name, None) => out.push_str(name),
                }
            }
        }
    }
}

/// An addn-hosts line, `IP [fqdn] hostname [[fqdn] alias …]`: the first name is the one a PTR
/// query answers.
pub(super) fn addn_host(out: &mut String, names: &Names<'_>) {
    push_ip(out, names.ip);
    out.push(' ');
    names.push(out, ' ');
    out.push('\n');
}

/// `host-record=[fqdn,]hostname[,…],IP`, the conf-file twin of [`addn_host`] (IPv6 without
/// brackets here; the first name gets the PTR record).
pub(super) fn host_record(out: &mut String, names: &Names<'_>) {
    out.push_str("host-record=");
    names.push(out, ',');
    out.push(',');
    push_ip(out, names.ip);
    out.push('\n');
}

fn push_fqdn(out: &mut String, hostname: &str, domain: &str) {
    out.push_str(hostname);
    out.push('.');
    out.push_str(domain);
}

/// An address, bare.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => push_ipv4(out, ip),
        IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Dotted decimal without going through the formatter, which costs more than the rest of a
/// line; IPv4 reservations are the bulk of every file.
fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// `aa:bb:cc:dd:ee:ff`, lowercase, without going through the formatter: one call per host.
pub(crate) fn push_mac(out: &mut String, mac: &[u8; 6]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_checks_every_line_since_start() {
        let mut out = "x".repeat(2000);
        out.push('\n');
        let start = out.len();
        out.push_str(&"a".repeat(MAX_LINE_BYTES - 1));
        out.push('\n');
        assert!(fits(&out, start));
        out.push_str("b\n");
        assert!(fits(&out, start));
        out.push_str(&"c".repeat(MAX_LINE_BYTES));
        out.push('\n');
        assert!(!fits(&out, start));
        assert!(!fits(&out, 0));
    }

    #[test]
    fn ipv4_is_dotted_decimal() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.100.255",
            "1.20.199.9",
            "255.255.255.255",
        ] {
            let mut out = String::new();
            push_ipv4(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip);
        }
    }

    #[test]
    fn mac_is_lowercase_hex_with_colons() {
        let mut out = String::new();
        push_mac(&mut out, &[0x00, 0x1A, 0xbc, 0x0f, 0xf0, 0xff]);
        assert_eq!(out, "00:1a:bc:0f:f0:ff");
    }
}
