//! The one client identifier grammar of ipmanager (a DHCPv4 client-id, option 61, or a DHCPv6
//! DUID), shared by the CLI's flags, every import format and, as
//! `ipmanager.normalise_client_id` in `sql/V7__clients.sql`, the database, so that a notation
//! accepted in one place is accepted everywhere, with the same words when it is not.
//!
//! Accepted: octets of one or two hex digits separated by ':' (`01:52:54:00:12:34:56`,
//! `0:1:0:1:…`), or bare hex digits in pairs (`01525400123456`), in any case;
//! 2 to [`MAX_OCTETS`] octets. Nothing else, not even surrounding spaces. The canonical form is
//! lowercase, two digits an octet, separated by ':', which is also what dnsmasq reads after `id:`
//! and what Kea writes.

use std::fmt;

/// The most octets an identifier may have: a DUID is at most 130 (RFC 8415: a 2-octet type and
/// up to 128 octets); a DHCPv4 client-id is shorter in practice.
pub const MAX_OCTETS: usize = 130;

/// What the notation error suggests; also the text of `--help`.
pub const NOTATIONS: &str = "2 to 130 hexadecimal octets separated by colons \
     (01:52:54:00:12:34:56, 00:01:00:01:2c:5e:11:22:52:54:00:12:34:56) or as bare hex digits";

/// A client identifier, as its octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub Vec<u8>);

/// Why a text is not a client identifier. The message is the database's word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hosts.client_id '{}' is not a client identifier: give {NOTATIONS}", .0.replace('\'', "''"))]
pub struct ClientIdError(pub String);

/// The octets of `text` in one of the accepted notations.
pub fn parse(text: &str) -> Result<ClientId, ClientIdError> {
    octets(text)
        .filter(|o| (2..=MAX_OCTETS).contains(&o.len()))
        .map(ClientId)
        .ok_or_else(|| ClientIdError(text.to_owned()))
}

/// Whether `octets` has a length the database accepts (the renderer's check).
pub fn valid_length(octets: &[u8]) -> bool {
    (2..=MAX_OCTETS).contains(&octets.len())
}

fn octets(text: &str) -> Option<Vec<u8>> {
    let digit_ok = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit());
    if text.contains(':') {
        text.split(':')
            .map(|g| {
                (g.len() <= 2 && digit_ok(g))
                    .then(|| u8::from_str_radix(g, 16).ok())
                    .flatten()
            })
            .collect()
    } else if text.len().is_multiple_of(2) && digit_ok(text) {
        // Only hex digits, so byte offsets are character offsets.
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
            .collect()
    } else {
        None
    }
}

impl ClientId {
    /// The Ethernet MAC an identifier carries, for importing reservations keyed by identifier
    /// only: a DHCPv4 client-id of hardware type 1 (`01` + MAC), a DUID-LLT or DUID-LL of
    /// hardware type 1 (RFC 8415), or an RFC 4361 client-id (`ff`, a 4-octet IAID, a DUID).
    pub fn embedded_mac(&self) -> Option<[u8; 6]> {
        let octets = &self.0[..];
        let mac = |rest: &[u8]| <[u8; 6]>::try_from(rest).ok();
        match octets {
            [0x01, rest @ ..] => mac(rest),
            [0x00, 0x01, 0x00, 0x01, _, _, _, _, rest @ ..] => mac(rest),
            [0x00, 0x03, 0x00, 0x01, rest @ ..] => mac(rest),
            [0xff, _, _, _, _, duid @ ..] => ClientId(duid.to_vec()).embedded_mac(),
            _ => None,
        }
    }
}

impl fmt::Display for ClientId {
    /// Lowercase hex octets separated by ':'.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, octet) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{octet:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notation_gives_the_same_octets() {
        let want = ClientId(vec![0x01, 0x52, 0x54, 0x00, 0xab]);
        for text in ["01:52:54:00:ab", "1:52:54:0:AB", "01525400ab", "01525400AB"] {
            assert_eq!(parse(text), Ok(want.clone()), "{text}");
        }
        assert_eq!(want.to_string(), "01:52:54:00:ab");
    }

    #[test]
    fn macs_inside_identifiers() {
        let mac = Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        for text in [
            "01:52:54:00:12:34:56",
            "00:01:00:01:2c:5e:11:22:52:54:00:12:34:56",
            "00:03:00:01:52:54:00:12:34:56",
            "ff:00:00:00:01:00:03:00:01:52:54:00:12:34:56",
        ] {
            assert_eq!(parse(text).unwrap().embedded_mac(), mac, "{text}");
        }
        for text in [
            "00:02:00:00:00:09:01",
            "01:52:54",
            "00:04:11:22:33:44:55:66:77:88",
        ] {
            assert_eq!(parse(text).unwrap().embedded_mac(), None, "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_database_words() {
        let long = vec!["ab"; 131].join(":");
        for text in [
            "",
            "01",
            "0152540",
            "01::52",
            "01:523:54",
            "01-52-54",
            "01:52:5g",
            " 01:52",
            "01:52,set:evil",
            "01:52#x",
            "*",
            "01:52\n",
            &long,
        ] {
            assert_eq!(parse(text), Err(ClientIdError(text.to_owned())), "{text}");
        }
        assert_eq!(parse(&vec!["ab"; 130].join(":")).unwrap().0.len(), 130);
        assert_eq!(
            ClientIdError("it's".into()).to_string(),
            format!("hosts.client_id 'it''s' is not a client identifier: give {NOTATIONS}")
        );
    }
}
