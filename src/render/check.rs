//! An independent check of a staged dnsmasq file, run by the agent before the file is activated:
//! defence in depth behind the renderer. Every file the renderer writes must pass it, and a file
//! that fails is never activated.
//!
//! The grammar here is a strict restatement of what the renderer is documented to write (see
//! [`super`]), parsed by hand and sharing no code with the line writers (`render::lines`), so
//! that a bug in the renderer is caught here rather than copied. Only the single-field rules of
//! [`validate`] (hostname, domain, MAC, lease time, file path) are shared.
//!
//! Rules for every kind of file:
//! - every line is shorter than [`validate::MAX_LINE_BYTES`] bytes and ends with `\n` (an empty
//!   file is fine; an empty line is not);
//! - printable ASCII only: no control character (tab and CR included), nothing above U+007E;
//! - `#` only at the start of a whole-line comment, and comments only in the include file.
//!
//! [`FileKind::HostsFile`]: `MAC,IP,hostname[,LEASE]` per line: MAC in lowercase hex with `:`,
//! unicast and not zero; IPv4 in strict dotted decimal or `[IPv6]` in canonical form, not in
//! `::/64` (a wildcard to dnsmasq); lease in plain seconds. No address twice (the same MAC with
//! different addresses is fine: the file carries no subnet).
//!
//! [`FileKind::AddnHosts`]: `IP [fqdn] hostname` separated by single spaces, the fqdn being
//! `hostname.domain`; no address twice.
//!
//! A shard of the incremental layout is checked as the kind of file its lines are: a
//! `dhcp-hostsdir` shard as [`FileKind::HostsFile`], a `hostsdir` shard as
//! [`FileKind::AddnHosts`].
//!
//! [`FileKind::Include`]: comments, `dhcp-hostsfile=PATH`, `addn-hosts=PATH`,
//! `dhcp-hostsdir=PATH`, `hostsdir=PATH` (once each),
//! `dhcp-range=set:subnetN,…` (once per tag, in the four forms of [`super`]),
//! `dhcp-option=tag:subnetN,option:router,IPV4` (after its range, inside its network, once),
//! `domain=DOMAIN,CIDR` (of a network set up by an earlier range), `dhcp-host=MAC,IP,hostname[,LEASE]`
//! (as in a hostsfile; a repeated address stops dnsmasq from starting) and
//! `host-record=[fqdn,]hostname,IP` (no address twice). Nothing else.
//!
//! Messages describe what is wrong without repeating the offending text, which may be hostile;
//! they quote only values this module has parsed itself (addresses, line numbers, option names
//! made of lowercase letters, digits and '-').

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::validate;

/// The include file's options whose value is a file or directory path.
const PATH_OPTIONS: [&str; 4] = ["dhcp-hostsfile", "addn-hosts", "dhcp-hostsdir", "hostsdir"];

/// At most this many problems are listed in a [`CheckFailure`].
pub const MAX_PROBLEMS: usize = 10;

/// What kind of dnsmasq file a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A `--dhcp-hostsfile`: `MAC,IP,hostname[,lease]` lines.
    HostsFile,
    /// An `--addn-hosts` file: `IP [fqdn] hostname` lines.
    AddnHosts,
    /// The conf-dir include file.
    Include,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::HostsFile => "dhcp-hostsfile",
            FileKind::AddnHosts => "addn-hosts file",
            FileKind::Include => "include file",
        })
    }
}

/// Why a file failed [`check_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The kind of file that was checked.
    pub kind: FileKind,
    /// The first problems by line number: (1-based line, what is wrong); at most
    /// [`MAX_PROBLEMS`], at most one per line except for duplicates and a missing final newline.
    pub problems: Vec<(usize, String)>,
    /// How many problems were found in all, the listed ones included.
    pub total: usize,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.total == 1 { "" } else { "s" };
        write!(
            f,
            "{} fails the check with {} problem{plural}",
            self.kind, self.total
        )?;
        for (at, (line, problem)) in self.problems.iter().enumerate() {
            let sep = if at == 0 { ": " } else { "; " };
            write!(f, "{sep}line {line}: {problem}")?;
        }
        if self.total > self.problems.len() {
            write!(f, "; and {} more", self.total - self.problems.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for CheckFailure {}

/// Checks every line of `content` as dnsmasq would read it for that kind of file; returns the
/// first problems (line number, what is wrong), at most [`MAX_PROBLEMS`], or `Ok`.
pub fn check_file(kind: FileKind, content: &str) -> Result<(), CheckFailure> {
    let mut checker = Checker::new(kind);
    let bytes = content.as_bytes();
    let mut last = 0;
    let mut start = 0;
    // One pass finds the end of a line and whether it holds anything but printable ASCII
    // without '#', which is the case of every line but comments; `str::split` and separate
    // scans cost more than the checks themselves on short lines. '\n' is ASCII, so every
    // slice boundary is a char boundary.
    while start < bytes.len() {
        let odd = first_odd(&bytes[start..]).map_or(bytes.len(), |len| start + len);
        let (end, plain) = if odd == bytes.len() || bytes[odd] == b'\n' {
            (odd, true)
        } else {
            let end = bytes[odd..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |len| odd + len);
            (end, false)
        };
        last += 1;
        if let Err(problem) = checker.line(last, &content[start..end], plain) {
            checker.problem(last, problem);
        }
        start = end + 1;
    }
    if !content.is_empty() && !content.ends_with('\n') {
        checker.problem(
            last,
            "the file does not end with a newline, so its last line is incomplete".to_owned(),
        );
    }
    checker.finish()
}

/// The index of the first byte of `bytes` that is not printable ASCII or is '#' (a newline
/// included), eight bytes at a time: this is the one pass over every byte of the file.
fn first_odd(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// The high bit of every byte of `x` that is zero, and maybe of some bytes above one that
    /// is: exact as to whether there is one.
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut offset = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Below ' ' (the same trick against 0x20), '#', DEL, or with the high bit set.
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let special = zero_bytes(x ^ (ONES * u64::from(b'#'))) | zero_bytes(x ^ (ONES * 0x7f));
        if (below | special | (x & HIGH)) != 0 {
            break;
        }
        offset += 8;
    }
    bytes[offset..]
        .iter()
        .position(|&b| !(b' '..=b'~').contains(&b) || b == b'#')
        .map(|at| offset + at)
}

/// One dhcp-range tag: where it was set, its network, and the line of its router option.
struct Tag {
    line: usize,
    network: IpAddr,
    prefix: u32,
    router: Option<usize>,
}

/// Addresses with the lines they are on, for the duplicate check: one sort at the end (nearly
/// free, since the renderer writes addresses in order) instead of a hash lookup per line.
#[derive(Default)]
struct Addresses {
    v4: Vec<(u32, usize)>,
    v6: Vec<(u128, usize)>,
}

impl Addresses {
    fn push(&mut self, ip: IpAddr, line: usize) {
        match ip {
            IpAddr::V4(ip) => self.v4.push((ip.into(), line)),
            IpAddr::V6(ip) => self.v6.push((ip.into(), line)),
        }
    }

    /// Every repeat: (its line, the first line with that address, the address).
    fn repeats(mut self) -> Vec<(usize, usize, IpAddr)> {
        let mut out = Vec::new();
        self.v4.sort_unstable();
        for group in self.v4.chunk_by(|a, b| a.0 == b.0) {
            for &(ip, line) in &group[1..] {
                out.push((line, group[0].1, IpAddr::V4(ip.into())));
            }
        }
        self.v6.sort_unstable();
        for group in self.v6.chunk_by(|a, b| a.0 == b.0) {
            for &(ip, line) in &group[1..] {
                out.push((line, group[0].1, IpAddr::V6(ip.into())));
            }
        }
        out
    }
}

struct Checker {
    kind: FileKind,
    /// The first per-line problems, in line order.
    problems: Vec<(usize, String)>,
    /// All per-line problems, listed or not.
    count: usize,
    /// Hostsfile lines and `dhcp-host=` lines.
    reservations: Addresses,
    /// Addn-hosts lines and `host-record=` lines.
    names: Addresses,
    /// dhcp-range tags by subnet id.
    tags: HashMap<i64, Tag>,
    /// The lines of the [`PATH_OPTIONS`].
    paths: [Option<usize>; PATH_OPTIONS.len()],
}

impl Checker {
    fn new(kind: FileKind) -> Self {
        Checker {
            kind,
            problems: Vec::new(),
            count: 0,
            reservations: Addresses::default(),
            names: Addresses::default(),
            tags: HashMap::new(),
            paths: [None; PATH_OPTIONS.len()],
        }
    }

    fn problem(&mut self, line: usize, problem: String) {
        self.count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push((line, problem));
        }
    }

    fn finish(self) -> Result<(), CheckFailure> {
        let mut repeats: Vec<(usize, String)> = Vec::new();
        let mut total = self.count;
        for (addresses, what) in [
            (self.reservations, "is already reserved on line"),
            (self.names, "already has names on line"),
        ] {
            let mut found = addresses.repeats();
            total += found.len();
            found.sort_unstable();
            repeats.extend(
                found
                    .into_iter()
                    .take(MAX_PROBLEMS)
                    .map(|(line, first, ip)| (line, format!("address {ip} {what} {first}"))),
            );
        }
        if total == 0 {
            return Ok(());
        }
        let mut problems = self.problems;
        problems.extend(repeats);
        problems.sort_by_key(|p| p.0);
        problems.truncate(MAX_PROBLEMS);
        Err(CheckFailure {
            kind: self.kind,
            problems,
            total,
        })
    }

    /// The rules for every line, then those of the kind of file. `plain`: the line is known to
    /// hold only printable ASCII and no '#'.
    fn line(&mut self, n: usize, line: &str, plain: bool) -> Result<(), String> {
        if line.len() >= validate::MAX_LINE_BYTES {
            return Err(format!(
                "line is {} bytes long; lines must be shorter than {} bytes, because dnsmasq \
                 reads whatever follows byte 1,024 as a new line",
                line.len(),
                validate::MAX_LINE_BYTES
            ));
        }
        if line.is_empty() {
            return Err("empty line".to_owned());
        }
        if !plain {
            if let Some(at) = line.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
                // Everything before `at` is ASCII, so `at` starts a char.
                let c = line[at..].chars().next().unwrap_or('\0');
                let what = if c.is_ascii() {
                    "a control character"
                } else {
                    "not ASCII"
                };
                return Err(format!(
                    "U+{:04X} ({what}) at byte {at}; only printable ASCII is allowed",
                    u32::from(c)
                ));
            }
            if line.starts_with('#') {
                return match self.kind {
                    FileKind::Include => Ok(()),
                    _ => Err("comment line; only the include file has comments".to_owned()),
                };
            }
            if let Some(at) = line.find('#') {
                return Err(format!(
                    "'#' at byte {at} would start a comment and cut the line short"
                ));
            }
        }
        match self.kind {
            FileKind::HostsFile => self.reservation(n, line),
            FileKind::AddnHosts => self.addn_hosts(n, line),
            FileKind::Include => self.include(n, line),
        }
    }

    /// `MAC,IP,hostname[,LEASE]`, a hostsfile line or the value of `dhcp-host=`.
    fn reservation(&mut self, n: usize, text: &str) -> Result<(), String> {
        let (fields, count) = split::<4>(text, b',');
        if !(3..=4).contains(&count) {
            return Err(format!(
                "{count} comma-separated fields; a reservation is MAC,IP,hostname[,lease seconds]"
            ));
        }
        mac(fields[0])?;
        let ip = dhcp_address(fields[1])?;
        validate::hostname(fields[2])?;
        if count == 4 {
            lease(fields[3])?;
        }
        self.reservations.push(ip, n);
        Ok(())
    }

    /// `IP [fqdn] hostname`.
    fn addn_hosts(&mut self, n: usize, line: &str) -> Result<(), String> {
        let (fields, count) = split::<3>(line, b' ');
        if line.starts_with(' ') || line.ends_with(' ') || line.contains("  ") {
            return Err(
                "empty field: fields must be separated by single spaces, with none at the ends"
                    .to_owned(),
            );
        }
        if !(2..=3).contains(&count) {
            return Err(format!(
                "{count} space-separated fields; an addn-hosts line is IP [fqdn] hostname"
            ));
        }
        let ip = bare_address(fields[0])?;
        names(&fields[1..count])?;
        self.names.push(ip, n);
        Ok(())
    }

    /// A line of the include file.
    fn include(&mut self, n: usize, line: &str) -> Result<(), String> {
        let Some((option, value)) = line.split_once('=') else {
            return Err(match option_name(line) {
                Some(word) => format!(
                    "bare option {word}: only comments and the option=value lines ipmanager \
                     writes are allowed"
                ),
                None => "neither a comment nor an option=value line".to_owned(),
            });
        };
        if let Some(which) = PATH_OPTIONS.iter().position(|&o| o == option) {
            return self.path(which, option, n, value);
        }
        match option {
            "dhcp-range" => self.range(n, value),
            "dhcp-option" => self.router(n, value),
            "domain" => self.domain(value),
            "dhcp-host" => self.reservation(n, value),
            "host-record" => self.host_record(n, value),
            _ => Err(match option_name(option) {
                Some(name) => format!("option {name} is not one that ipmanager writes"),
                None => "unknown option".to_owned(),
            }),
        }
    }

    /// One of the [`PATH_OPTIONS`], each at most once.
    fn path(&mut self, which: usize, option: &str, n: usize, value: &str) -> Result<(), String> {
        validate::file_path(Path::new(value))?;
        if let Some(first) = self.paths[which] {
            return Err(format!("{option} is already set on line {first}"));
        }
        self.paths[which] = Some(n);
        Ok(())
    }

    /// `dhcp-range=set:subnetN,START,END|static,NETMASK|PREFIX[,LEASE]`.
    fn range(&mut self, n: usize, value: &str) -> Result<(), String> {
        let (fields, count) = split::<5>(value, b',');
        if !(4..=5).contains(&count) {
            return Err(format!(
                "dhcp-range has {count} fields; expected \
                 set:subnetN,start,end|static,netmask|prefix length[,lease seconds]"
            ));
        }
        let id = fields[0]
            .strip_prefix("set:")
            .and_then(tag_id)
            .ok_or("dhcp-range does not start with set:subnetN")?;
        let (network, prefix) = if fields[1].contains(':') {
            let start = dhcp_ipv6(fields[1])?;
            let prefix = number(fields[3])
                .filter(|p| (u32::from(validate::MIN_IPV6_PREFIX)..=128).contains(p))
                .ok_or(format!(
                    "IPv6 dhcp-range needs a prefix length in {}..=128",
                    validate::MIN_IPV6_PREFIX
                ))?;
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            let network = u128::from(start) & mask;
            if fields[2] == "static" {
                if u128::from(start) != network {
                    return Err("a static dhcp-range must start at its network address".into());
                }
            } else {
                let end = u128::from(dhcp_ipv6(fields[2])?);
                if end < u128::from(start) || end & mask != network {
                    return Err(
                        "dhcp-range end is before its start or outside its network".to_owned()
                    );
                }
            }
            (IpAddr::V6(network.into()), prefix)
        } else {
            let start = u32::from(ipv4(fields[1])?);
            let mask = u32::from(ipv4(fields[3]).map_err(|_| "netmask is not an IPv4 netmask")?);
            let prefix = mask.leading_ones();
            if mask != u32::MAX.checked_shl(32 - prefix).unwrap_or(0) {
                return Err("netmask is not contiguous".to_owned());
            }
            let network = start & mask;
            if fields[2] == "static" {
                if start != network {
                    return Err("a static dhcp-range must start at its network address".into());
                }
            } else {
                let end = u32::from(ipv4(fields[2])?);
                if end < start || end & mask != network {
                    return Err(
                        "dhcp-range end is before its start or outside its network".to_owned()
                    );
                }
            }
            (IpAddr::V4(network.into()), prefix)
        };
        if count == 5 {
            lease(fields[4])?;
        }
        if let Some(tag) = self.tags.get(&id) {
            return Err(format!(
                "tag subnet{id} already has a dhcp-range on line {}",
                tag.line
            ));
        }
        self.tags.insert(
            id,
            Tag {
                line: n,
                network,
                prefix,
                router: None,
            },
        );
        Ok(())
    }

    /// `dhcp-option=tag:subnetN,option:router,IPV4`.
    fn router(&mut self, n: usize, value: &str) -> Result<(), String> {
        let (tag, rest) = value
            .strip_prefix("tag:")
            .and_then(|rest| rest.split_once(','))
            .ok_or("dhcp-option does not start with tag:subnetN")?;
        let id = tag_id(tag).ok_or("dhcp-option does not start with tag:subnetN")?;
        let gateway = rest
            .strip_prefix("option:router,")
            .ok_or("the only dhcp-option allowed is option:router with one IPv4 address")?;
        let gateway = u32::from(ipv4(gateway)?);
        let tag = self
            .tags
            .get_mut(&id)
            .ok_or(format!("no earlier dhcp-range sets tag subnet{id}"))?;
        let IpAddr::V4(network) = tag.network else {
            return Err("router option for an IPv6 dhcp-range".to_owned());
        };
        let mask = u32::MAX.checked_shl(32 - tag.prefix).unwrap_or(0);
        if gateway & mask != u32::from(network) {
            return Err(format!(
                "router is outside the network of tag subnet{id} ({network}/{})",
                tag.prefix
            ));
        }
        if let Some(first) = tag.router {
            return Err(format!(
                "tag subnet{id} already has a router on line {first}"
            ));
        }
        tag.router = Some(n);
        Ok(())
    }

    /// `domain=DOMAIN,CIDR`, for the network of an earlier dhcp-range.
    fn domain(&mut self, value: &str) -> Result<(), String> {
        let (name, cidr) = value.split_once(',').ok_or("domain= is not DOMAIN,CIDR")?;
        validate::domain(name)?;
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or("domain's network has no prefix length")?;
        let address = bare_address(address)?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = number(prefix)
            .filter(|&p| p <= bits)
            .ok_or("domain's network has a bad prefix length")?;
        let served = self
            .tags
            .values()
            .any(|tag| tag.network == address && tag.prefix == prefix);
        if !served {
            return Err("domain's network is not the network of an earlier dhcp-range".into());
        }
        Ok(())
    }

    /// `host-record=[fqdn,]hostname,IP`.
    fn host_record(&mut self, n: usize, value: &str) -> Result<(), String> {
        let (fields, count) = split::<3>(value, b',');
        if !(2..=3).contains(&count) {
            return Err(format!(
                "host-record has {count} fields; expected [fqdn,]hostname,IP"
            ));
        }
        let ip = bare_address(fields[count - 1])?;
        names(&fields[..count - 1])?;
        self.names.push(ip, n);
        Ok(())
    }
}

/// The first `N` fields of `text` split at `sep`, and how many fields there are in all.
fn split<const N: usize>(text: &str, sep: u8) -> ([&str; N], usize) {
    let mut fields = [""; N];
    let mut count = 0;
    let mut start = 0;
    // By hand: `str::split` costs more than the rest of a short line's checks. `sep` is ASCII,
    // so every boundary is a char boundary.
    for (at, &b) in text.as_bytes().iter().enumerate() {
        if b == sep {
            if let Some(slot) = fields.get_mut(count) {
                *slot = &text[start..at];
            }
            count += 1;
            start = at + 1;
        }
    }
    if let Some(slot) = fields.get_mut(count) {
        *slot = &text[start..];
    }
    (fields, count + 1)
}

/// `hostname` or `fqdn hostname` (or with ','), the fqdn being `hostname.domain`.
fn names(names: &[&str]) -> Result<(), String> {
    let Some((hostname, rest)) = names.split_last() else {
        return Err("no name".to_owned());
    };
    validate::hostname(hostname)?;
    if let [fqdn] = rest {
        validate::domain(fqdn).map_err(|e| format!("fqdn is not a DNS name: {e}"))?;
        let domain = fqdn
            .strip_prefix(hostname)
            .and_then(|d| d.strip_prefix('.'))
            .filter(|d| !d.is_empty());
        if domain.is_none() {
            return Err("the first name is not the hostname that follows it plus a domain".into());
        }
    }
    Ok(())
}

/// A MAC in lowercase hex with ':', unicast and not zero.
fn mac(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let mut mac = [0u8; 6];
    let well_formed = b.len() == 17
        && mac.iter_mut().enumerate().all(|(i, byte)| {
            let at = 3 * i;
            match (hex(b[at]), hex(b[at + 1])) {
                (Some(hi), Some(lo)) if i == 5 || b[at + 2] == b':' => {
                    *byte = hi << 4 | lo;
                    true
                }
                _ => false,
            }
        });
    if !well_formed {
        return Err(
            "MAC address is not six lowercase hex octets separated by ':' (wildcards are not \
             allowed)"
                .to_owned(),
        );
    }
    validate::mac(&mac)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// A reservation's address: IPv4, or IPv6 in brackets.
fn dhcp_address(text: &str) -> Result<IpAddr, String> {
    match text.strip_prefix('[') {
        Some(inner) => {
            let inner = inner
                .strip_suffix(']')
                .ok_or("IPv6 address has no closing ']'")?;
            dhcp_ipv6(inner).map(IpAddr::V6)
        }
        None if text.contains(':') => Err("IPv6 address is not in brackets".to_owned()),
        None => ipv4(text).map(IpAddr::V4),
    }
}

/// An IPv6 address dnsmasq's DHCP reads as itself: outside `::/64`, which it takes as a
/// wildcard for any prefix.
fn dhcp_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    let ip = ipv6(text)?;
    if u128::from(ip) >> 64 == 0 {
        return Err("IPv6 address lies in ::/64, which dnsmasq treats as a wildcard".to_owned());
    }
    Ok(ip)
}

/// An address without brackets.
fn bare_address(text: &str) -> Result<IpAddr, String> {
    if text.contains(':') {
        ipv6(text).map(IpAddr::V6)
    } else {
        ipv4(text).map(IpAddr::V4)
    }
}

/// Dotted decimal: four numbers 0–255 without leading zeros.
fn ipv4(text: &str) -> Result<Ipv4Addr, String> {
    parse_ipv4(text.as_bytes()).ok_or_else(|| {
        "address is not an IPv4 address in dotted decimal (four numbers 0-255 without leading \
         zeros)"
            .to_owned()
    })
}

fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        let digits = (1..=3).contains(&part.len())
            && part.iter().all(u8::is_ascii_digit)
            && (part.len() == 1 || part[0] != b'0');
        if !digits {
            return None;
        }
        let value = part
            .iter()
            .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(octets.into())
}

/// IPv6 in its canonical text form (RFC 5952, as Rust prints it), and nothing else.
fn ipv6(text: &str) -> Result<Ipv6Addr, String> {
    let plausible = text.len() <= 45
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    match plausible.then(|| text.parse::<Ipv6Addr>()) {
        Some(Ok(ip)) if ip.to_string() == text => Ok(ip),
        _ => Err("address is not an IPv6 address in canonical form".to_owned()),
    }
}

/// Decimal digits without a leading zero (but "0"), at most 10 of them.
fn number(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// A lease time: `infinite`, or plain seconds (digits without a leading zero) in range.
fn lease(text: &str) -> Result<(), String> {
    if text == "infinite" {
        return Ok(());
    }
    let plain = !text.is_empty()
        && text.len() <= 18
        && !text.starts_with('0')
        && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<i64>() {
        Ok(seconds) if plain => validate::lease_seconds(seconds),
        _ => Err(
            "lease is not plain seconds (digits without a leading zero; no unit, \
                  keyword or tag)"
                .to_owned(),
        ),
    }
}

/// The id in `subnetN`, written as Rust writes an i64.
fn tag_id(tag: &str) -> Option<i64> {
    let digits = tag.strip_prefix("subnet")?;
    let id: i64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// `word` if it looks like a dnsmasq option name, so that a message may show it.
fn option_name(word: &str) -> Option<&str> {
    let plain = (1..=40).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plain.then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: [(FileKind, &str); 15] = [
        (
            FileKind::Include,
            include_str!("../../tests/golden/basic.incremental/include.conf"),
        ),
        (
            FileKind::HostsFile,
            include_str!("../../tests/golden/basic.incremental/dhcp-hosts.d/0003"),
        ),
        (
            FileKind::AddnHosts,
            include_str!("../../tests/golden/basic.incremental/hosts.d/0003"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/invalid.incremental/include.conf"),
        ),
        (
            FileKind::HostsFile,
            include_str!("../../tests/golden/basic.hostsfile/dhcp-hosts"),
        ),
        (
            FileKind::AddnHosts,
            include_str!("../../tests/golden/basic.hostsfile/hosts"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/basic.hostsfile/include.conf"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/basic.conf/include.conf"),
        ),
        (
            FileKind::HostsFile,
            include_str!("../../tests/golden/empty.hostsfile/dhcp-hosts"),
        ),
        (
            FileKind::AddnHosts,
            include_str!("../../tests/golden/empty.hostsfile/hosts"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/empty.hostsfile/include.conf"),
        ),
        (
            FileKind::HostsFile,
            include_str!("../../tests/golden/invalid.hostsfile/dhcp-hosts"),
        ),
        (
            FileKind::AddnHosts,
            include_str!("../../tests/golden/invalid.hostsfile/hosts"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/invalid.hostsfile/include.conf"),
        ),
        (
            FileKind::Include,
            include_str!("../../tests/golden/invalid.conf/include.conf"),
        ),
    ];

    const HEADER: &str = "# Managed by ipmanager: do not edit, changes are overwritten.\n";
    const RANGE: &str = "dhcp-range=set:subnet1,10.64.5.100,10.64.5.199,255.255.255.0,3600\n";

    /// The single problem of `content`, which must fail.
    fn problem(kind: FileKind, content: &str) -> (usize, String) {
        let failure = check_file(kind, content).expect_err(content);
        assert_eq!(failure.total, 1, "{failure}");
        failure.problems[0].clone()
    }

    fn assert_problem(kind: FileKind, content: &str, line: usize, expected: &str) {
        let (at, message) = problem(kind, content);
        assert_eq!(at, line, "{content:?}: {message}");
        assert!(
            message.contains(expected),
            "{content:?}: {message:?} lacks {expected:?}"
        );
    }

    #[test]
    fn golden_files_pass() {
        for (kind, content) in GOLDEN {
            assert_eq!(check_file(kind, content), Ok(()), "{kind}:\n{content}");
        }
    }

    #[test]
    fn golden_files_fail_as_the_wrong_kind() {
        for (kind, content) in GOLDEN.into_iter().filter(|(_, c)| !c.is_empty()) {
            for other in [FileKind::HostsFile, FileKind::AddnHosts, FileKind::Include] {
                if other != kind {
                    assert!(check_file(other, content).is_err(), "{kind} as {other}");
                }
            }
        }
    }

    #[test]
    fn valid_forms_pass() {
        let hosts = "52:54:00:00:00:01,10.64.5.10,a\n\
                     52:54:00:00:00:01,10.64.6.10,a\n\
                     02:00:00:00:00:02,[2001:db8::1:5],b.c,4294967295\n\
                     52:54:00:00:00:03,0.0.0.0,c,120\n\
                     52:54:00:00:00:04,255.255.255.255,d\n";
        assert_eq!(check_file(FileKind::HostsFile, hosts), Ok(()));
        let addn = "10.64.5.10 a.lan a\n2001:db8::1:5 b.c\n";
        assert_eq!(check_file(FileKind::AddnHosts, addn), Ok(()));
        let include = format!(
            "{HEADER}dhcp-range=set:subnet-9223372036854775808,0.0.0.0,static,0.0.0.0\n\
             domain=x,0.0.0.0/0\n\
             dhcp-range=set:subnet7,10.0.0.9,static,255.255.255.255,120\n\
             dhcp-option=tag:subnet7,option:router,10.0.0.9\n\
             dhcp-range=set:subnet8,2001:db8:0:1::,static,128\n\
             domain=v6,2001:db8:0:1::/128\n\
             dhcp-host=52:54:00:00:00:01,[2001:db8:0:1::],a\n\
             host-record=a.v6,a,2001:db8:0:1::\n"
        );
        assert_eq!(check_file(FileKind::Include, &include), Ok(()));
        assert_eq!(check_file(FileKind::Include, ""), Ok(()));
        let dirs = format!(
            "{HEADER}dhcp-hostsdir=/var/lib/ipmanager/dhcp-hosts.d\n\
             hostsdir=/var/lib/ipmanager/hosts.d\n{RANGE}"
        );
        assert_eq!(check_file(FileKind::Include, &dirs), Ok(()));
    }

    #[test]
    fn injections_fail_with_a_clear_problem() {
        use FileKind::*;
        let ok = "52:54:00:00:00:01,10.64.5.10,a\n";
        let cases: &[(FileKind, String, usize, &str)] = &[
            (
                Include,
                format!("{HEADER}dhcp-script=/tmp/x\n"),
                2,
                "option dhcp-script is not one that ipmanager writes",
            ),
            (
                Include,
                format!("{HEADER}conf-dir=/tmp\n"),
                2,
                "option conf-dir",
            ),
            (Include, format!("{HEADER}no-resolv\n"), 2, "bare option"),
            (
                HostsFile,
                format!("{ok}dhcp-script=/tmp/x\n"),
                2,
                "1 comma-separated fields",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.999,a\n".into(),
                1,
                "not an IPv4 address",
            ),
            (
                Include,
                format!("{HEADER}dhcp-host=52:54:00:00:00:01,10.64.5.999,a\n"),
                2,
                "not an IPv4 address",
            ),
            (
                AddnHosts,
                "10.64.5.999 a\n".into(),
                1,
                "not an IPv4 address",
            ),
            (
                HostsFile,
                format!("{ok}52:54:00:00:00:02,10.64.5.11,{}\n", "a".repeat(995)),
                2,
                "line is 1024 bytes long",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a b\n".into(),
                1,
                "hostname contains U+0020",
            ),
            (
                AddnHosts,
                "10.64.5.10 a b\n".into(),
                1,
                "the first name is not the hostname",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a,set:evil\n".into(),
                1,
                "lease is not plain seconds",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.6.12,set:evil,infinite\n".into(),
                1,
                "hostname contains ':'",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.6.12,a,set:evil,infinite\n".into(),
                1,
                "5 comma-separated fields",
            ),
            (
                HostsFile,
                "*:*:*:*:*:*,ignore\n".into(),
                1,
                "2 comma-separated fields",
            ),
            (
                HostsFile,
                "*:*:*:*:*:*,10.64.5.10,a\n".into(),
                1,
                "MAC address is not six lowercase hex octets",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,ignore\n".into(),
                1,
                "keyword",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a".into(),
                1,
                "does not end with a newline",
            ),
            (
                Include,
                format!("{HEADER}dhcp-hostsfile=/var/lib/ipmanager/dhcp-hosts"),
                2,
                "does not end with a newline",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,caf\u{e9}\n".into(),
                1,
                "U+00E9 (not ASCII) at byte 32",
            ),
            (
                AddnHosts,
                "10.64.5.10 a\u{202e}b\n".into(),
                1,
                "U+202E (not ASCII)",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a\r\n".into(),
                1,
                "U+000D (a control character)",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a#b\n".into(),
                1,
                "'#' at byte 30",
            ),
            (HostsFile, "# comment\n".into(), 1, "comment line"),
            (AddnHosts, HEADER.into(), 1, "comment line"),
            (HostsFile, format!("{ok}\n"), 2, "empty line"),
            (HostsFile, "52:54:00:00:00:01,[::5],a\n".into(), 1, "::/64"),
            (
                HostsFile,
                "52:54:00:00:00:01,2001:db8::5,a\n".into(),
                1,
                "not in brackets",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,[2001:DB8::5],a\n".into(),
                1,
                "canonical form",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,010.64.5.10,a\n".into(),
                1,
                "not an IPv4 address",
            ),
            (
                HostsFile,
                "01:00:5e:00:00:01,10.64.5.10,a\n".into(),
                1,
                "multicast",
            ),
            (
                HostsFile,
                "00:00:00:00:00:00,10.64.5.10,a\n".into(),
                1,
                "all zeros",
            ),
            (
                HostsFile,
                "52:54:00:00:00:0A,10.64.5.10,a\n".into(),
                1,
                "MAC address",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a,60\n".into(),
                1,
                "lease time 60 s",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a,12h\n".into(),
                1,
                "lease is not plain seconds",
            ),
            (
                HostsFile,
                "52:54:00:00:00:01,10.64.5.10,a,4294967296\n".into(),
                1,
                "lease time 4294967296 s",
            ),
            (AddnHosts, "10.64.5.10  a\n".into(), 1, "single spaces"),
            (
                AddnHosts,
                "10.64.5.10 a.lan a x\n".into(),
                1,
                "4 space-separated fields",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}dhcp-option=tag:subnet2,option:router,10.64.5.1\n"),
                3,
                "no earlier dhcp-range sets tag subnet2",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}dhcp-option=tag:subnet1,option:router,10.64.6.1\n"),
                3,
                "router is outside",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}dhcp-option=tag:subnet1,option:dns-server,10.64.5.1\n"),
                3,
                "option:router",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}{RANGE}"),
                3,
                "already has a dhcp-range on line 2",
            ),
            (
                Include,
                format!("{HEADER}dhcp-range=set:evil,10.64.5.100,10.64.5.199,255.255.255.0\n"),
                2,
                "set:subnetN",
            ),
            (
                Include,
                format!("{HEADER}dhcp-range=set:subnet1,10.64.5.100,10.64.6.1,255.255.255.0\n"),
                2,
                "outside its network",
            ),
            (
                Include,
                format!("{HEADER}dhcp-range=set:subnet1,10.64.5.1,static,255.255.255.0\n"),
                2,
                "network address",
            ),
            (
                Include,
                format!("{HEADER}dhcp-range=set:subnet1,10.64.5.0,static,255.0.255.0\n"),
                2,
                "not contiguous",
            ),
            (
                Include,
                format!("{HEADER}dhcp-range=set:subnet1,2001:db8::,static,48\n"),
                2,
                "prefix length in 64..=128",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}domain=lan,10.64.6.0/24\n"),
                3,
                "not the network of an earlier dhcp-range",
            ),
            (
                Include,
                format!("{HEADER}{RANGE}domain=lan,local,10.64.5.0/24\n"),
                3,
                "not an IPv4 address",
            ),
            (
                Include,
                format!("{HEADER}dhcp-hostsfile=/a\ndhcp-hostsfile=/b\n"),
                3,
                "dhcp-hostsfile is already set on line 2",
            ),
            (
                Include,
                format!("{HEADER}addn-hosts=relative\n"),
                2,
                "path is not absolute",
            ),
            (
                Include,
                format!("{HEADER}dhcp-hostsdir=/a\nhostsdir=/b\ndhcp-hostsdir=/a\n"),
                4,
                "dhcp-hostsdir is already set on line 2",
            ),
            (
                Include,
                format!("{HEADER}hostsdir=/a\nhostsdir=/b\n"),
                3,
                "hostsdir is already set on line 2",
            ),
            (
                Include,
                format!("{HEADER}hostsdir=/a,/b\n"),
                2,
                "path contains ','",
            ),
            (
                Include,
                format!("{HEADER}dhcp-hostsdir=hosts.d\n"),
                2,
                "path is not absolute",
            ),
            (
                Include,
                format!("{HEADER}dhcp-hostsdir=/a b\n"),
                2,
                "path contains",
            ),
            (
                Include,
                format!("{HEADER}host-record=a.lan,a,b,10.64.5.10\n"),
                2,
                "host-record has 4 fields",
            ),
            (
                Include,
                format!("{HEADER}dhcp-host=52:54:00:00:00:01,10.64.5.10,a,set:evil\n"),
                2,
                "lease is not plain seconds",
            ),
        ];
        for (kind, content, line, expected) in cases {
            assert_problem(*kind, content, *line, expected);
        }
    }

    #[test]
    fn first_odd_finds_the_first_byte_that_is_not_plain() {
        let plain: Vec<u8> = (b' '..=b'~').filter(|&b| b != b'#').collect();
        for len in 0..40 {
            for odd in [0u8, b'\n', b'\t', 0x1f, b'#', 0x7f, 0x80, 0xa0, 0xff] {
                for at in 0..len {
                    let mut bytes: Vec<u8> = plain.iter().cycle().take(len).copied().collect();
                    bytes[at] = odd;
                    if at + 1 < len {
                        bytes[at + 1] = 0;
                    }
                    assert_eq!(first_odd(&bytes), Some(at), "{odd} at {at} of {len}");
                }
            }
            let bytes: Vec<u8> = plain.iter().cycle().take(len).copied().collect();
            assert_eq!(first_odd(&bytes), None);
        }
        for b in 0..=255u8 {
            let expected = (!(b' '..=b'~').contains(&b) || b == b'#').then_some(9);
            assert_eq!(
                first_odd(&[[b'a'; 9].as_slice(), &[b; 8]].concat()),
                expected
            );
        }
    }

    #[test]
    fn lines_must_be_shorter_than_the_limit() {
        let comment = |len: usize| format!("#{}\n", "x".repeat(len - 1));
        let limit = validate::MAX_LINE_BYTES;
        assert_eq!(check_file(FileKind::Include, &comment(limit - 1)), Ok(()));
        assert_problem(
            FileKind::Include,
            &comment(limit),
            1,
            "line is 1000 bytes long",
        );
    }

    #[test]
    fn duplicate_addresses_fail() {
        let hosts = "52:54:00:00:00:01,10.64.5.10,a\n\
                     52:54:00:00:00:02,10.64.5.11,b\n\
                     52:54:00:00:00:03,10.64.5.10,c\n";
        assert_problem(
            FileKind::HostsFile,
            hosts,
            3,
            "address 10.64.5.10 is already reserved on line 1",
        );
        let same_pair = "52:54:00:00:00:01,[2001:db8::5],a\n52:54:00:00:00:01,[2001:db8::5],a\n";
        assert_problem(
            FileKind::HostsFile,
            same_pair,
            2,
            "address 2001:db8::5 is already reserved on line 1",
        );
        let addn = "10.64.5.10 a\n10.64.5.10 b\n";
        assert_problem(
            FileKind::AddnHosts,
            addn,
            2,
            "address 10.64.5.10 already has names on line 1",
        );
        let include = format!(
            "{HEADER}{RANGE}dhcp-host=52:54:00:00:00:01,10.64.5.10,a\n\
             dhcp-host=52:54:00:00:00:02,10.64.5.10,b\n\
             host-record=a,10.64.5.10\n"
        );
        assert_problem(
            FileKind::Include,
            &include,
            4,
            "address 10.64.5.10 is already reserved on line 3",
        );
    }

    #[test]
    fn problems_are_listed_by_line_and_capped() {
        let mut hosts = String::new();
        for i in 0..30 {
            hosts.push_str(&format!(
                "52:54:00:00:00:{i:02x},10.64.5.{},h{i}\n",
                10 + i % 2
            ));
            hosts.push_str("bad\n");
        }
        let failure = check_file(FileKind::HostsFile, &hosts).unwrap_err();
        assert_eq!(failure.total, 30 + 28);
        assert_eq!(failure.problems.len(), MAX_PROBLEMS);
        let lines: Vec<usize> = failure.problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            failure.problems[2].1,
            "address 10.64.5.10 is already reserved on line 1"
        );
        let text = failure.to_string();
        assert!(
            text.starts_with(
                "dhcp-hostsfile fails the check with 58 problems: line 2: 1 comma-separated \
                 fields"
            ),
            "{text}"
        );
        assert!(text.ends_with("; and 48 more"), "{text}");
        let single = check_file(FileKind::AddnHosts, "x\n")
            .unwrap_err()
            .to_string();
        assert!(
            single.starts_with("addn-hosts file fails the check with 1 problem: line 1: "),
            "{single}"
        );
    }

    #[test]
    fn messages_never_carry_the_offending_text() {
        for content in [
            "52:54:00:00:00:01,10.64.5.10,a\u{1b}[2J\n",
            "52:54:00:00:00:01,10.64.5.10,evil\u{202e}txt\n",
            "52:54:00:00:00:01,10.64.5.10,evil name\n",
            "52:54:00:00:00:01,EVILEVIL,a\n",
            "EVILEVIL,10.64.5.10,a\n",
        ] {
            let text = check_file(FileKind::HostsFile, content)
                .unwrap_err()
                .to_string();
            assert!(!text.contains("EVIL") && !text.contains("evil"), "{text}");
            assert!(!text.contains(['\u{1b}', '\u{202e}']), "{text}");
        }
        let text = check_file(FileKind::Include, "EVIL=x\n")
            .unwrap_err()
            .to_string();
        assert!(!text.contains("EVIL"), "{text}");
    }

    #[test]
    fn large_hostsfile_is_checked_quickly() {
        let mut hosts = String::new();
        for n in 0..100_000u32 {
            let [_, b, c, d] = n.to_be_bytes();
            hosts.push_str(&format!(
                "52:54:00:{b:02x}:{c:02x}:{d:02x},10.{b}.{c}.{d},host-{n},7200\n"
            ));
        }
        // Timed in a release build with
        // `cargo test --release --lib -- --nocapture large_hostsfile`.
        let start = std::time::Instant::now();
        assert_eq!(check_file(FileKind::HostsFile, &hosts), Ok(()));
        eprintln!("checked 100000 hostsfile lines in {:?}", start.elapsed());
    }
}
