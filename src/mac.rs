//! The one MAC address grammar of ipmanager, shared by the CLI's flags, every import format and
//! (as `ipmanager.parse_mac` in `sql/V3__hardening.sql`) the SQL functions, so that a notation
//! accepted in one place is accepted everywhere, with the same words when it is not.
//!
//! Accepted, in any case: colon-separated octets of one or two hex digits (`52:54:00:12:34:56`,
//! and `8:0:20:1:2:3` as /etc/ethers and `ether_ntoa` write them), hyphen-separated octets of two
//! digits (`52-54-00-12-34-56`; one-digit groups are left out so that a host name like
//! `a-b-c-d-e-f` is never read as a MAC), Cisco's dotted groups of four (`5254.0012.3456`) and
//! twelve bare hex digits (`525400123456`). Nothing else, not even surrounding spaces. The
//! renderer's checker (`render::check`) keeps its own, stricter rule on purpose.

use std::fmt;

/// What the notation error suggests; also the list in `--help` texts and README.
pub const NOTATIONS: &str =
    "52:54:00:12:34:56, 52-54-00-12-34-56, 5254.0012.3456, 525400123456 or 8:0:20:1:2:3";

const UNICAST_RULE: &str = "a DHCP reservation needs the unicast MAC address of a real interface";

/// Why a text is not a MAC address that can be reserved. The messages are the database's
/// (`ipmanager.parse_mac` and the `hosts_validate` trigger), word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not a MAC address in any accepted notation; holds the text as given.
    #[error(
        "hosts.mac {} is not a MAC address: give six hexadecimal octets as {NOTATIONS}",
        quote(.0)
    )]
    Notation(String),
    #[error("hosts.mac {} is the all-zero address: {UNICAST_RULE}", Mac(*.0))]
    AllZero([u8; 6]),
    /// The I/G bit is set: a multicast or the broadcast address.
    #[error(
        "hosts.mac {} is a {} address (lowest bit of the first octet set): {UNICAST_RULE}",
        Mac(*.0),
        if *.0 == [0xff; 6] { "broadcast" } else { "multicast" }
    )]
    Group([u8; 6]),
}

/// The six octets of `text` in one of the accepted notations.
pub fn parse(text: &str) -> Result<[u8; 6], MacError> {
    octets(text).ok_or_else(|| MacError::Notation(text.to_owned()))
}

/// [`parse`], then the rule of a reservation: unicast and not all-zero.
pub fn parse_reservable(text: &str) -> Result<[u8; 6], MacError> {
    let mac = parse(text)?;
    reservable(mac)?;
    Ok(mac)
}

/// Whether a client can have a reservation for `mac`: no client sends DHCP from a group
/// address, and all-zero is what broken or unset interfaces report.
pub fn reservable(mac: [u8; 6]) -> Result<(), MacError> {
    if mac == [0; 6] {
        Err(MacError::AllZero(mac))
    } else if mac[0] & 1 == 1 {
        Err(MacError::Group(mac))
    } else {
        Ok(())
    }
}

/// Whether `text` is written in one of the accepted notations (reservable or not).
pub fn is_mac(text: &str) -> bool {
    octets(text).is_some()
}

/// The canonical form PostgreSQL prints: lowercase, colon-separated, two digits an octet.
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

fn octets(text: &str) -> Option<[u8; 6]> {
    const SEPARATORS: &[u8] = b":-.";
    let groups: Vec<&str> = text.split([':', '-', '.']).collect();
    let separator = text.bytes().find(|b| SEPARATORS.contains(b));
    let one_separator = text
        .bytes()
        .filter(|b| SEPARATORS.contains(b))
        .all(|b| Some(b) == separator);
    let shape = |count: usize, length_ok: fn(usize) -> bool| {
        groups.len() == count && groups.iter().all(|g| length_ok(g.len()))
    };
    let shape_ok = one_separator
        && match separator {
            Some(b':') => shape(6, |length| length == 1 || length == 2),
            Some(b'-') => shape(6, |length| length == 2),
            Some(_) => shape(3, |length| length == 4),
            None => shape(1, |length| length == 12),
        };
    if !shape_ok
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    // Only hex digits are left, so byte offsets are character offsets.
    let digits: String = groups.iter().map(|g| format!("{g:0>2}")).collect();
    let mut mac = [0u8; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        *octet = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(mac)
}

/// PostgreSQL's `quote_literal()`, as the database quotes values in its messages.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANT: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0x0c, 0x01];

    #[test]
    fn every_notation_gives_the_same_octets() {
        for text in [
            "52:54:00:ab:0c:01",
            "52:54:00:AB:0C:01",
            "52:54:0:ab:c:1",
            "52-54-00-ab-0c-01",
            "5254.00ab.0c01",
            "5254.00AB.0C01",
            "525400ab0c01",
        ] {
            assert_eq!(parse(text), Ok(WANT), "{text}");
        }
        assert_eq!(parse("8:0:20:1:2:3"), Ok([8, 0, 0x20, 1, 2, 3]));
    }

    #[test]
    fn anything_else_is_refused_with_the_database_words() {
        for text in [
            "",
            "52:54:00:ab:0c",
            "52:54:00:ab:0c:01:02",
            "52:54:00:ab:0c:001",
            "52:54:00:zz:0c:01",
            "5-54-00-ab-0c-01",
            "52-54-00:ab:0c:01",
            "525400-ab0c01",
            "525400:ab0c01",
            "5254-00ab-0c01",
            "5254.00ab.0c0",
            "5254.00ab.0c01.",
            "525400ab0c0",
            " 52:54:00:ab:0c:01",
            "52:54:00:ab:0c:*",
            "a-b-c-d-e-f",
            "laptop",
            "٥٢:54:00:ab:0c:01",
        ] {
            assert_eq!(
                parse(text),
                Err(MacError::Notation(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            MacError::Notation("it's".into()).to_string(),
            format!(
                "hosts.mac 'it''s' is not a MAC address: give six hexadecimal octets as \
                 {NOTATIONS}"
            )
        );
    }

    #[test]
    fn reservations_need_a_unicast_address() {
        assert_eq!(parse_reservable("52:54:00:ab:0c:01"), Ok(WANT));
        assert_eq!(
            parse_reservable("0:0:0:0:0:0").unwrap_err().to_string(),
            "hosts.mac 00:00:00:00:00:00 is the all-zero address: a DHCP reservation needs the \
             unicast MAC address of a real interface"
        );
        assert!(parse_reservable("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("01:00:5e:00:00:01 is a multicast address"));
        assert!(parse_reservable("ffff.ffff.ffff")
            .unwrap_err()
            .to_string()
            .contains("is a broadcast address"));
    }
}
