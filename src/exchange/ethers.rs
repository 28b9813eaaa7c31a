//! `/etc/ethers` (ethers(5)): `MAC  IP-or-hostname` per line, `#` comments.
//!
//! A `#` at the start of a line or after whitespace starts a comment, as every reader agrees.
//! One inside a field (`MAC name#c`) is read two ways: glibc cuts the line there (the name is
//! `name`), Linux's ethers(5) starts comments only at the line start (the name is `name#c`).
//! Such a line is rejected, saying so, rather than imported as either.
//!
//! The MAC may use one-digit groups (`8:0:20:1:2:3`, as ether_aton accepts) or dashes. When the
//! second field is an IPv4 address it is the reservation's address and the hostname is unknown,
//! unless the line ends in a comment that is exactly one valid hostname (`… 10.0.0.5 # printer`,
//! what [`export`](super::export) writes), which is then taken as the hostname with a note. Otherwise the second
//! field is a hostname (renderer rule) and the address is left for the CLI to allocate. ethers
//! has no IPv6 and no lease times: an IPv6 address is rejected, and [`export`](super::export) leaves IPv6
//! reservations and lease times out (saying so in comments).

use std::net::Ipv4Addr;

use super::{
    check_hostname, note_text, parse_mac, strip_comment, ExportPlan, Format, Note, Parsed,
    Reservation,
};
use crate::render::lines;

/// Reads an ethers file.
pub fn parse(input: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (at, raw) in input.lines().enumerate() {
        let line = at + 1;
        let content = strip_comment(raw);
        let comment = raw[content.len()..].strip_prefix('#').map(str::trim);
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let reject = |reason: String| Note {
            line,
            text: note_text(raw),
            reason,
        };
        match reservation(&fields, comment, line) {
            Ok(reservation) => parsed.reservations.push(reservation),
            Err(reason) => parsed.rejected.push(reject(reason)),
        }
    }
    parsed
}

fn reservation(fields: &[&str], comment: Option<&str>, line: usize) -> Result<Reservation, String> {
    let [mac, second] = fields else {
        return Err(format!(
            "line has {} fields, ethers has two: MAC and IPv4 address or hostname",
            fields.len()
        ));
    };
    if let Some(n) = fields.iter().position(|field| field.contains('#')) {
        return Err(format!(
            "field {} contains '#': glibc reads the rest of the line as a comment, ethers(5) as \
             part of the field; write a space before '#' to start a comment",
            n + 1
        ));
    }
    let mac = parse_mac(mac).map_err(|reason| format!("field 1: {reason}"))?;
    let mut notes = Vec::new();
    let (ip, hostname) = if let Ok(ip) = second.parse::<Ipv4Addr>() {
        // Our own export puts the hostname into a trailing comment; a free-text comment of
        // several words (or anything that is not a hostname) stays a comment.
        let hostname = comment
            .filter(|c| !c.contains(char::is_whitespace))
            .and_then(|c| check_hostname(c).ok());
        if hostname.is_some() {
            notes.push("hostname taken from the trailing comment".to_owned());
        }
        (Some(ip.into()), hostname)
    } else if second.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("field 2: IPv4 address is not four dotted decimal numbers 0-255".to_owned());
    } else if second.contains(':') {
        return Err("field 2: ethers carries IPv4 addresses only".to_owned());
    } else {
        let hostname = check_hostname(second).map_err(|reason| format!("field 2: {reason}"))?;
        (None, Some(hostname))
    };
    Ok(Reservation {
        line,
        mac,
        extra_macs: Vec::new(),
        client_id: None,
        ip,
        hostname,
        lease_seconds: None,
        notes,
    })
}

/// `MAC IP # hostname` per IPv4 reservation.
pub(crate) fn export(plan: &ExportPlan<'_>) -> String {
    let mut out = plan.header("#", Format::Ethers);
    let mut body = String::new();
    let mut leases = 0;
    for (_, host) in &plan.hosts {
        if host.ip.is_ipv6() {
            out.push_str(&format!(
                "# not exported: host {}: an IPv6 address, ethers carries IPv4 only\n",
                host.id
            ));
            continue;
        }
        leases += usize::from(host.lease_seconds.is_some());
        lines::push_mac(&mut body, &host.mac);
        body.push(' ');
        lines::push_ip(&mut body, host.ip);
        body.push_str(" # ");
        body.push_str(&host.hostname);
        body.push('\n');
    }
    if leases > 0 {
        out.push_str(&format!(
            "# not exported: the lease times of {leases} hosts, ethers has none\n"
        ));
    }
    out.push_str(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_or_hostname() {
        let parsed = parse(
            "# header\n8:0:20:1:2:3 10.0.0.5\n52-54-00-aa-bb-01   printer   # desk 2\n\
             52:54:00:aa:bb:02 10.0.0.6 # scanner\n52:54:00:aa:bb:03 10.0.0.7 # two words\n",
        );
        let got: Vec<_> = parsed
            .reservations
            .iter()
            .map(|r| (r.line, r.ip.map(|ip| ip.to_string()), r.hostname.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (2, Some("10.0.0.5".to_owned()), None),
                (3, None, Some("printer")),
                (4, Some("10.0.0.6".to_owned()), Some("scanner")),
                (5, Some("10.0.0.7".to_owned()), None),
            ]
        );
        assert_eq!(parsed.reservations[0].mac, [8, 0, 0x20, 1, 2, 3]);
        assert!(parsed.rejected.is_empty());
    }

    #[test]
    fn rejections() {
        for (line, expected) in [
            ("52:54:00:aa:bb:01", "line has 1 fields"),
            ("52:54:00:aa:bb:01 pc extra", "line has 3 fields"),
            (
                "52:54:00:aa:bb pc",
                "field 1: hosts.mac '52:54:00:aa:bb' is not a MAC",
            ),
            (
                "52:54:00:aa:bb:01 10.0.0.256",
                "field 2: IPv4 address is not",
            ),
            (
                "52:54:00:aa:bb:01 2001:db8::1",
                "field 2: ethers carries IPv4",
            ),
            (
                "52:54:00:aa:bb:01 12h",
                "field 2: hostname is digits and a time unit",
            ),
            (
                "52:54:00:aa:bb:01 ignore",
                "field 2: hostname ignore is a dnsmasq",
            ),
            (
                "52:54:00:aa:bb:01 name#c",
                "field 2 contains '#': glibc reads the rest of the line as a comment",
            ),
            (
                "52:54:00:aa:bb:01 10.0.0.5#c",
                "field 2 contains '#': glibc reads",
            ),
            ("52:54:00:aa:bb:01#c pc", "field 1 contains '#'"),
        ] {
            let parsed = parse(line);
            assert!(
                parsed.rejected[0].reason.starts_with(expected),
                "{line}: {}",
                parsed.rejected[0].reason
            );
        }
    }
}
