//! Import and export formats for reservations (dnsmasq, ethers, dhcp-hostsfile, ISC Kea): pure
//! parsing and printing, no I/O and no database.
//!
//! [`parse`] turns a file into [`Reservation`]s (and, for Kea, [`SubnetHint`]s) and accounts for
//! every line it did not keep: a line that is not a reservation at all goes to
//! [`Parsed::skipped`], a reservation that cannot be kept goes to [`Parsed::rejected`], and a
//! kept reservation lists what was dropped from it in [`Reservation::notes`]. Only a file that is
//! unusable as a whole (Kea JSON that does not parse) is an [`ExchangeError`].
//!
//! Field rules are the renderer's ([`crate::render::validate`]): a value the agent would refuse
//! to write is refused here too, so an import never stores what the agent cannot serve.
//!
//! [`export`] prints a [`Snapshot`] in any format, hosts ordered by subnet cidr then address, and
//! what it prints parses back to the same reservations (see each format's module for what a
//! format cannot carry: ethers has no IPv6 and no lease times).
//!
//! - [`dnsmasq`][]: `dhcp-host=` lines of a dnsmasq config file, and the dhcp-hostsfile format;
//!   `host-record=`, `address=` and `cname=` lines through [`names`].
//! - [`ethers`][]: `/etc/ethers`.
//! - [`kea`][]: ISC Kea `Dhcp4`/`Dhcp6` JSON with comments.
//! - [`names`][]: aliases and DNS-only names, and the hosts file format (`IP name alias…`).

pub mod dnsmasq;
pub mod ethers;
pub mod kea;
pub mod names;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cidr::IpCidr;

use crate::client_id::ClientId;
use crate::model::{Host, HostSettings, Snapshot, Subnet};
use crate::render::{lines, validate};
pub use names::{AliasRecord, NameRecord};

/// A file format that can be imported and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A dnsmasq config file; its `dhcp-host=` lines are the reservations.
    Dnsmasq,
    /// `/etc/ethers`: `MAC IP-or-hostname` per line.
    Ethers,
    /// A dnsmasq `--dhcp-hostsfile`: the value of a `dhcp-host=` line per line.
    Hostsfile,
    /// An ISC Kea DHCPv4/DHCPv6 JSON configuration.
    Kea,
    /// A hosts file (`/etc/hosts`, dnsmasq's `--addn-hosts`): `IP name alias…` per line.
    Hosts,
}

impl Format {
    /// Every format, in the order the command line lists them.
    pub const ALL: [Format; 5] = [
        Format::Dnsmasq,
        Format::Ethers,
        Format::Hostsfile,
        Format::Kea,
        Format::Hosts,
    ];

    /// The name [`FromStr`] accepts and [`fmt::Display`] prints.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dnsmasq => "dnsmasq",
            Format::Ethers => "ethers",
            Format::Hostsfile => "hostsfile",
            Format::Kea => "kea",
            Format::Hosts => "hosts",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ExchangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|format| format.name() == text)
            .ok_or_else(|| ExchangeError::UnknownFormat(text.to_owned()))
    }
}

/// One reservation read from a file. Only `mac` is certain: a file may leave the address to be
/// allocated (ethers with a hostname, a dnsmasq line without an address) or give no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// 1-based line where the reservation is (Kea: where its object starts).
    pub line: usize,
    pub mac: [u8; 6],
    /// More MACs of the same reservation (dnsmasq's `dhcp-host=mac1,mac2,…`).
    pub extra_macs: Vec<[u8; 6]>,
    /// The client-id or DUID (dnsmasq's `id:`, Kea's `client-id` / `duid`).
    pub client_id: Option<ClientId>,
    pub ip: Option<IpAddr>,
    pub hostname: Option<String>,
    /// Per-host lease time in seconds, as [`Host::lease_seconds`]; infinite is `u32::MAX`.
    pub lease_seconds: Option<i64>,
    /// What the file said about this reservation that is not kept, e.g. `tag set:voip not kept`.
    pub notes: Vec<String>,
}

/// A subnet described by the file (Kea only): the CLI may offer to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetHint {
    /// 1-based line where the subnet's object starts.
    pub line: usize,
    pub cidr: IpCidr,
    /// The first pool, as the dynamic range.
    pub range: Option<(IpAddr, IpAddr)>,
    /// The `routers` option (IPv4 only).
    pub gateway: Option<IpAddr>,
    /// `valid-lifetime`, inherited from the shared network or global level when not set here.
    pub lease_seconds: Option<i64>,
    /// The `domain-name` option, inherited like the lease time.
    pub domain: Option<String>,
}

/// A line (or Kea object) that was not kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// The line, trimmed (Kea: the object as compact JSON).
    pub text: String,
    pub reason: String,
}

/// Everything [`parse`] found in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub reservations: Vec<Reservation>,
    pub subnets: Vec<SubnetHint>,
    /// Lines that are not reservations (other dnsmasq options, extra Kea pools…).
    pub skipped: Vec<Note>,
    /// Reservations that cannot be kept (bad field, no MAC, several MACs…).
    pub rejected: Vec<Note>,
    /// Addresses with names (`host-record=`, `address=/name/ip`, hosts-file lines): aliases of
    /// the reservation with that address, or DNS-only names.
    pub names: Vec<NameRecord>,
    /// `cname=` lines: aliases of the host named by the target.
    pub aliases: Vec<AliasRecord>,
}

/// Why a whole file cannot be used, or a format name is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("unknown format '{0}': expected one of dnsmasq, ethers, hostsfile, kea, hosts")]
    UnknownFormat(String),
    #[error("Kea configuration is not valid JSON at line {line}, column {column}: {message}")]
    KeaSyntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("Kea configuration has an unterminated /* comment starting at line {line}")]
    KeaComment { line: usize },
    #[error("Kea configuration is not usable: {0}")]
    KeaStructure(String),
}

/// Reads `input` as `format`. See the format modules for what each keeps, notes and rejects.
pub fn parse(format: Format, input: &str) -> Result<Parsed, ExchangeError> {
    match format {
        Format::Dnsmasq => Ok(dnsmasq::parse(input, dnsmasq::Flavour::Conf)),
        Format::Hostsfile => Ok(dnsmasq::parse(input, dnsmasq::Flavour::Hostsfile)),
        Format::Ethers => Ok(ethers::parse(input)),
        Format::Kea => kea::parse(input),
        Format::Hosts => Ok(names::parse_hosts(input)),
    }
}

/// Prints `snapshot` as `format`: deterministic, hosts by subnet cidr then address. A host or
/// subnet that fails the renderer's validation is not printed; text formats say so in a comment
/// line (without the offending value), like the renderer's skipped rows. Aliases and DNS-only
/// names of the snapshot go into the dnsmasq and hosts formats, which have a place for them.
pub fn export(format: Format, snapshot: &Snapshot) -> String {
    let plan = ExportPlan::new(snapshot);
    match format {
        Format::Dnsmasq => dnsmasq::export(&plan, dnsmasq::Flavour::Conf),
        Format::Hostsfile => dnsmasq::export(&plan, dnsmasq::Flavour::Hostsfile),
        Format::Ethers => ethers::export(&plan),
        Format::Kea => kea::export(&plan),
        Format::Hosts => {
            let mut out = plan.header("#", format);
            names::hosts_lines(&mut out, &plan.names);
            out
        }
    }
}

/// What every exporter prints, already validated and ordered.
pub(crate) struct ExportPlan<'a> {
    /// Valid subnets by cidr then id.
    pub subnets: Vec<&'a Subnet>,
    /// Valid hosts with their (valid) subnet, by subnet cidr then address. Hosts whose subnet is
    /// missing or invalid come last, by address, with `None`: an export is a copy of the data,
    /// so a host whose own fields are safe is kept even when the agent would not serve it.
    pub hosts: Vec<(Option<&'a Subnet>, &'a Host)>,
    /// Every exported host's and valid DNS-only name's address with its names, in the order of
    /// `hosts`, then the DNS-only names by address.
    pub names: Vec<names::NameLine<'a>>,
    /// `what id: reason` for every row left out.
    pub left_out: Vec<String>,
    /// The hosts' settings, for their client identifiers and extra MACs.
    settings: HashMap<i64, &'a HostSettings>,
}

impl<'a> ExportPlan<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let extras = &snapshot.extras;
        let mut left_out = Vec::new();
        let mut subnets: Vec<&Subnet> = Vec::new();
        for subnet in &snapshot.subnets {
            match validate::subnet(subnet) {
                Ok(()) => subnets.push(subnet),
                Err(reason) => left_out.push(format!("subnet {}: {reason}", subnet.id)),
            }
        }
        subnets.sort_by_key(|s| (s.cidr, s.id));
        let settings: HashMap<i64, &HostSettings> =
            extras.hosts.iter().map(|h| (h.host_id, h)).collect();
        let ident_of = |host: &Host| ident(&settings, host);
        let mut hosts = Vec::new();
        for host in &snapshot.hosts {
            let subnet = subnets.iter().copied().find(|s| s.id == host.subnet_id);
            let check = match subnet {
                Some(subnet) => validate::host(host, subnet),
                // The subnet is unknown or invalid: the host's own fields still must be safe.
                None => validate::hostname(&host.hostname)
                    .and_then(|()| validate::mac(&host.mac))
                    .and_then(|()| host.lease_seconds.map_or(Ok(()), validate::lease_seconds)),
            }
            .and_then(|()| validate::ident(&host.mac, &ident_of(host)));
            match check {
                Ok(()) => hosts.push((subnet, host)),
                Err(reason) => left_out.push(format!("host {}: {reason}", host.id)),
            }
        }
        // `None` sorts first for Option; hosts without a subnet go last, hence the flag.
        hosts.sort_by_key(|(subnet, host)| {
            (
                subnet.is_none(),
                subnet.map(|s| (s.cidr, s.id)),
                host.ip,
                host.id,
            )
        });
        let no_aliases: &[String] = &[];
        let mut names: Vec<names::NameLine<'a>> = hosts
            .iter()
            .map(|(_, host)| names::NameLine {
                ip: host.ip,
                hostname: &host.hostname,
                aliases: extras.hosts.iter().find(|h| h.host_id == host.id).map_or(
                    no_aliases,
                    |h| {
                        if h.aliases.iter().all(|a| validate::hostname(a).is_ok()) {
                            &h.aliases[..]
                        } else {
                            no_aliases
                        }
                    },
                ),
                dns_only: false,
            })
            .collect();
        let mut dns_only: Vec<&crate::model::DnsName> = Vec::new();
        for name in &extras.dns_names {
            match names::valid_dns_name(name) {
                Ok(()) => dns_only.push(name),
                Err(reason) => left_out.push(format!("DNS-only name {}: {reason}", name.id)),
            }
        }
        dns_only.sort_by_key(|n| (n.ip, n.id));
        names.extend(dns_only.into_iter().map(|n| names::NameLine {
            ip: n.ip,
            hostname: &n.hostname,
            aliases: &n.aliases,
            dns_only: true,
        }));
        ExportPlan {
            subnets,
            hosts,
            names,
            left_out,
            settings,
        }
    }

    /// The host's client identifier and extra MACs (no profile: exports carry none).
    pub(crate) fn ident(&self, host: &Host) -> lines::Ident<'a> {
        ident(&self.settings, host)
    }

    /// The header comment of a text format, then one comment per row left out.
    pub fn header(&self, comment: &str, format: Format) -> String {
        let mut out = format!(
            "{comment} Exported by ipmanager ({format}): {} reservations\n",
            self.hosts.len()
        );
        for line in &self.left_out {
            out.push_str(&format!("{comment} not exported: {line}\n"));
        }
        out
    }
}

/// A MAC address as import files write it, in the one grammar of [`crate::mac`] (the CLI's and
/// the database's), and reservable. dnsmasq's wildcard `*` gets a message of its own.
fn ident<'a>(settings: &HashMap<i64, &'a HostSettings>, host: &Host) -> lines::Ident<'a> {
    match settings.get(&host.id) {
        Some(h) => lines::Ident {
            client_id: h.client_id.as_ref(),
            macs: &h.macs,
            profile: None,
        },
        None => lines::Ident::default(),
    }
}

pub(crate) fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    if text.contains('*') {
        return Err(
            "MAC address contains the wildcard '*': ipmanager reserves for one \
                    exact MAC"
                .to_owned(),
        );
    }
    crate::mac::parse_reservable(text).map_err(|e| e.to_string())
}

/// `raw` up to the `#` that starts a comment: one at the start of the line or after whitespace
/// (C's `isspace`, which includes vertical tab and form feed), as dnsmasq's `read_file` and
/// glibc read it. A `#` inside a field is left in place, for the field's rule to refuse it.
pub(crate) fn strip_comment(raw: &str) -> &str {
    let mut after_space = true;
    for (at, byte) in raw.bytes().enumerate() {
        match byte {
            b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => after_space = true,
            b'#' if after_space => return &raw[..at],
            _ => after_space = false,
        }
    }
    raw
}

/// Longest line text a [`Note`] repeats; the rest is counted, not shown.
const MAX_NOTE_TEXT: usize = 200;

/// A line as a [`Note`] shows it: trimmed, and cut short when it is long, so that a runaway
/// line (a file without newlines) does not fill the report.
pub(crate) fn note_text(raw: &str) -> String {
    let text = raw.trim();
    if text.len() <= MAX_NOTE_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_NOTE_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// A hostname from a file: the renderer's rule, with the field named in the message.
pub(crate) fn check_hostname(name: &str) -> Result<String, String> {
    validate::hostname(name)?;
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for format in Format::ALL {
            assert_eq!(format.to_string().parse::<Format>(), Ok(format));
        }
        assert!("Kea".parse::<Format>().is_err());
        assert_eq!(
            "csv".parse::<Format>().unwrap_err().to_string(),
            "unknown format 'csv': expected one of dnsmasq, ethers, hostsfile, kea, hosts"
        );
    }

    #[test]
    fn comments_start_at_the_line_start_or_after_whitespace() {
        for (line, content) in [
            ("# all comment", ""),
            ("a,b # c", "a,b "),
            ("a,b\t#c", "a,b\t"),
            ("a,b\x0b#c", "a,b\x0b"),
            ("a,h#x", "a,h#x"),
            ("a,h#x # c", "a,h#x "),
            ("a,#x", "a,#x"),
            ("  #x", "  "),
        ] {
            assert_eq!(strip_comment(line), content, "{line:?}");
        }
    }

    #[test]
    fn long_lines_are_cut_short_in_notes() {
        assert_eq!(note_text("  short  "), "short");
        let long = format!("é{}", "x".repeat(300));
        let shown = note_text(&long);
        assert!(shown.starts_with("éxx"), "{shown}");
        assert!(shown.ends_with("… (302 bytes in all)"), "{shown}");
        assert!(shown.len() < 230, "{shown}");
    }
}
