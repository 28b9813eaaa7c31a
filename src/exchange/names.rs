//! DNS names beyond one per reservation: aliases and DNS-only names, as dnsmasq and hosts files
//! write them.
//!
//! | input | result |
//! |---|---|
//! | `host-record=name[,name…],[IPv4],[IPv6][,TTL]` (dnsmasq) | a [`NameRecord`] per address: the first name, then aliases |
//! | `address=/name[/name…]/IP` (dnsmasq) | a [`NameRecord`] per name; dnsmasq also answers the name's subdomains, ipmanager serves the name only (noted) |
//! | `address=/name/`, `address=/name/#` | skipped: NXDOMAIN and the null address are no names |
//! | `cname=alias[,alias…],target[,TTL]` (dnsmasq) | an [`AliasRecord`]: aliases of the host named target |
//! | `IP name [name…]` (hosts file) | a [`NameRecord`]: the first name, then aliases |
//!
//! Import maps a [`NameRecord`] onto the host that has its address (its names other than the
//! host's own become aliases), or else onto a DNS-only name; see [`crate::admin::import`].
//! Export writes reservations' aliases as `cname=` and DNS-only names as `host-record=`
//! (dnsmasq), or every address with its names (hosts); the other formats have no place for them.

use std::net::IpAddr;

use super::{check_hostname, note_text, strip_comment, Note, Parsed};
use crate::model::DnsName;
use crate::render::validate;

/// An address with names from a file: the first is the host's name (the PTR), the others its
/// aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    pub line: usize,
    pub ip: IpAddr,
    pub names: Vec<String>,
    /// What the file said that is not kept.
    pub notes: Vec<String>,
}

/// `cname=` aliases of the host named `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    pub line: usize,
    pub aliases: Vec<String>,
    pub target: String,
}

/// What one dnsmasq option line with names yields.
pub(crate) enum Names {
    Records(Vec<NameRecord>),
    Alias(AliasRecord),
    /// Not a name mapping ipmanager keeps, and why.
    Skipped(String),
}

/// Reads the value of a `host-record=`, `address=` or `cname=` line; `None` for other options.
pub(crate) fn dnsmasq_option(
    option: &str,
    value: &str,
    line: usize,
) -> Option<Result<Names, String>> {
    Some(match option {
        "host-record" => host_record(value, line).map(Names::Records),
        "address" => address(value, line),
        "cname" => cname(value, line).map(Names::Alias),
        _ => return None,
    })
}

fn names_of<'a>(fields: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    fields
        .map(|name| check_hostname(name.trim()))
        .collect::<Result<Vec<_>, _>>()
}

fn host_record(value: &str, line: usize) -> Result<Vec<NameRecord>, String> {
    let mut names = Vec::new();
    let mut ips = Vec::new();
    let mut notes = Vec::new();
    for (i, field) in value.split(',').map(str::trim).enumerate() {
        if let Ok(ip) = field.trim_matches(['[', ']']).parse::<IpAddr>() {
            ips.push(ip);
        } else if !field.is_empty()
            && field.bytes().all(|b| b.is_ascii_digit())
            && !names.is_empty()
        {
            notes.push(format!("TTL {field} not kept"));
        } else {
            names.push(
                check_hostname(field).map_err(|reason| format!("field {}: {reason}", i + 1))?,
            );
        }
    }
    if names.is_empty() || ips.is_empty() {
        return Err("host-record needs a name and an address".to_owned());
    }
    Ok(ips
        .into_iter()
        .map(|ip| NameRecord {
            line,
            ip,
            names: names.clone(),
            notes: notes.clone(),
        })
        .collect())
}

fn address(value: &str, line: usize) -> Result<Names, String> {
    let Some(rest) = value.strip_prefix('/') else {
        return Ok(Names::Skipped(
            "not a name (address= without /name/): not kept".to_owned(),
        ));
    };
    let mut parts: Vec<&str> = rest.split('/').collect();
    let target = parts.pop().unwrap_or_default().trim();
    if target.is_empty() || target == "#" {
        return Ok(Names::Skipped(
            "address= without an address (NXDOMAIN or the null address): not a name to keep"
                .to_owned(),
        ));
    }
    let ip: IpAddr = target
        .parse()
        .map_err(|_| "address= ends in something that is not an IP address".to_owned())?;
    let names = names_of(parts.into_iter().filter(|p| !p.is_empty()))?;
    if names.is_empty() {
        return Ok(Names::Skipped(
            "address= for every name (//): not a name to keep".to_owned(),
        ));
    }
    let note = "dnsmasq also answers the name's subdomains; ipmanager serves the name only";
    Ok(Names::Records(
        names
            .into_iter()
            .map(|name| NameRecord {
                line,
                ip,
                names: vec![name],
                notes: vec![note.to_owned()],
            })
            .collect(),
    ))
}

fn cname(value: &str, line: usize) -> Result<AliasRecord, String> {
    let mut fields: Vec<&str> = value.split(',').map(str::trim).collect();
    if fields.len() > 2
        && fields
            .last()
            .is_some_and(|f| f.bytes().all(|b| b.is_ascii_digit()))
    {
        fields.pop();
    }
    let Some((target, aliases)) = fields.split_last() else {
        return Err("cname needs an alias and a target".to_owned());
    };
    if aliases.is_empty() {
        return Err("cname needs an alias and a target".to_owned());
    }
    Ok(AliasRecord {
        line,
        aliases: names_of(aliases.iter().copied())?,
        target: check_hostname(target)?,
    })
}

/// Reads a hosts file (`/etc/hosts`, dnsmasq's `--addn-hosts`): `IP name [name…]` per line.
pub fn parse_hosts(input: &str) -> Parsed {
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
                "line is {} bytes long, the limit is {}",
                raw.len(),
                validate::MAX_LINE_BYTES - 1
            )));
            continue;
        }
        let mut fields = content.split_ascii_whitespace();
        let record = fields
            .next()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .ok_or_else(|| "the line does not start with an IP address".to_owned())
            .and_then(|ip| {
                let names = names_of(fields)?;
                if names.is_empty() {
                    return Err("an address without names".to_owned());
                }
                Ok(NameRecord {
                    line,
                    ip,
                    names,
                    notes: Vec::new(),
                })
            });
        match record {
            Ok(record) => parsed.names.push(record),
            Err(reason) => parsed.rejected.push(note(reason)),
        }
    }
    parsed
}

/// The names an export writes: every valid reservation's and DNS-only name's address with the
/// host's name first, in the plan's order (subnet, then address).
pub(crate) struct NameLine<'a> {
    pub ip: IpAddr,
    pub hostname: &'a str,
    pub aliases: &'a [String],
    /// A DNS-only name (no reservation).
    pub dns_only: bool,
}

/// Whether a DNS-only name can be written: its fields by the renderer's rules.
pub(crate) fn valid_dns_name(name: &DnsName) -> Result<(), String> {
    validate::hostname(&name.hostname)?;
    name.aliases.iter().try_for_each(|a| validate::hostname(a))
}

/// `cname=` for reservations' aliases, `host-record=` for DNS-only names.
pub(crate) fn dnsmasq_lines(out: &mut String, names: &[NameLine<'_>]) {
    for name in names {
        if name.dns_only {
            out.push_str("host-record=");
            out.push_str(name.hostname);
            for alias in name.aliases {
                out.push(',');
                out.push_str(alias);
            }
            out.push(',');
            crate::render::lines::push_ip(out, name.ip);
            out.push('\n');
        } else if !name.aliases.is_empty() {
            out.push_str("cname=");
            for alias in name.aliases {
                out.push_str(alias);
                out.push(',');
            }
            out.push_str(name.hostname);
            out.push('\n');
        }
    }
}

/// `IP name alias…` per address.
pub(crate) fn hosts_lines(out: &mut String, names: &[NameLine<'_>]) {
    for name in names {
        crate::render::lines::push_ip(out, name.ip);
        out.push(' ');
        out.push_str(name.hostname);
        for alias in name.aliases {
            out.push(' ');
            out.push_str(alias);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(option: &str, value: &str) -> Vec<NameRecord> {
        match dnsmasq_option(option, value, 1).unwrap().unwrap() {
            Names::Records(records) => records,
            _ => panic!("{option}={value}: not records"),
        }
    }

    #[test]
    fn host_records_are_names_per_address() {
        let all = records("host-record", "vip1,vip,10.1.0.60,[2001:db8::60],3600");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].names, ["vip1", "vip"]);
        assert_eq!(all[1].ip, "2001:db8::60".parse::<IpAddr>().unwrap());
        assert_eq!(all[0].notes, ["TTL 3600 not kept"]);
        assert!(dnsmasq_option("host-record", "vip1", 1).unwrap().is_err());
        assert!(dnsmasq_option("host-record", "bad_name,10.0.0.1", 1)
            .unwrap()
            .is_err());
    }

    #[test]
    fn address_lines_with_an_address_are_names() {
        let all = records("address", "/vip1.example/vip2/10.1.0.60");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].names, ["vip2"]);
        for skipped in ["/ads.example/", "/ads.example/#", "//10.0.0.1"] {
            assert!(
                matches!(
                    dnsmasq_option("address", skipped, 1),
                    Some(Ok(Names::Skipped(_)))
                ),
                "{skipped}"
            );
        }
        assert!(dnsmasq_option("address", "/x/10.0.0.999", 1)
            .unwrap()
            .is_err());
    }

    #[test]
    fn cnames_are_aliases_of_a_target() {
        let Some(Ok(Names::Alias(alias))) = dnsmasq_option("cname", "laser,print,printer,600", 1)
        else {
            panic!("not an alias")
        };
        assert_eq!(
            (alias.aliases.as_slice(), alias.target.as_str()),
            (&["laser".to_owned(), "print".to_owned()][..], "printer")
        );
        assert!(dnsmasq_option("cname", "printer", 1).unwrap().is_err());
        assert!(dnsmasq_option("dhcp-host", "x", 1).is_none());
    }

    #[test]
    fn hosts_files_are_read_line_by_line() {
        let parsed =
            parse_hosts("# c\n10.1.0.60 vip1 vip # x\n\nnot-an-ip x\n10.1.0.61\n10.1.0.62 a,b\n");
        assert_eq!(parsed.names.len(), 1);
        assert_eq!(parsed.names[0].names, ["vip1", "vip"]);
        let lines: Vec<usize> = parsed.rejected.iter().map(|n| n.line).collect();
        assert_eq!(lines, [4, 5, 6]);
    }
}
