//! ISC Kea `Dhcp4` / `Dhcp6` JSON configuration.
//!
//! Kea accepts `//`, `#` and `/* */` comments; they are blanked out (outside strings, newlines
//! kept) before serde_json reads the text, so a syntax error's line:column are the original
//! file's. JSON that does not parse, a top level that is not an object, or one with neither
//! `Dhcp4` nor `Dhcp6` is an [`ExchangeError`]; everything else is accounted for item by item.
//!
//! Read: `subnet4[]`/`subnet6[]` at the top of `Dhcp4`/`Dhcp6` and inside `shared-networks[]`,
//! each becoming a [`SubnetHint`] (`subnet`, the first of `pools`, `valid-lifetime`, the
//! `routers` option (IPv4) and `domain-name` (IPv4) / `domain-search` (IPv6) options, the last
//! three inherited from the shared network and then the global level, as Kea does); and
//! `reservations[]` inside subnets and at the global level.
//!
//! A reservation keeps `hw-address`, `ip-address` (Dhcp4) or the first of `ip-addresses`
//! (Dhcp6, the others noted) and `hostname`, checked by the renderer's rules and, inside a
//! subnet, against the subnet (no network or broadcast address). `client-id` (Dhcp4) or `duid`
//! (Dhcp6) becomes the client identifier; a reservation keyed by one of them only takes its MAC
//! from `user-context` `ipmanager-macs` (what [`export`](super::export) writes, every MAC of the
//! reservation, since a Kea reservation has one identifier) or from inside the identifier
//! (client-id `01:`MAC, DUID-LLT, DUID-LL), and is rejected when there is none. `circuit-id`
//! and `flex-id` are noted as not kept; one keyed only by them is rejected; other
//! fields (`option-data`, `client-classes`, `next-server`, `prefixes`…) are noted as not kept.
//! Kea has no per-host lease time; [`export`](super::export) writes it as
//! `"user-context": {"ipmanager-lease-seconds": N}`, which is read back.
//!
//! Line numbers: serde_json values carry no positions, so a small scanner over the comment-free
//! text records the line of every object's `{` under its JSON path (`/Dhcp4/subnet4/0/
//! reservations/2`); reservations and subnets report that line (0 if the path is not found,
//! e.g. with duplicate keys).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cidr::IpCidr;
use serde_json::{json, Map, Value};

use super::{
    check_hostname, parse_mac, ExchangeError, ExportPlan, Format, Note, Parsed, Reservation,
    SubnetHint,
};
use crate::model::{Host, Subnet};
use crate::render::{lines, validate};

/// The user-context key that carries a per-host lease time through Kea.
const LEASE_KEY: &str = "ipmanager-lease-seconds";

/// The user-context key that carries every MAC of a reservation through Kea, whose
/// reservations have one identifier.
const MACS_KEY: &str = "ipmanager-macs";

/// Host identifiers Kea accepts besides `hw-address`; the first two are kept.
const OTHER_IDENTIFIERS: [&str; 4] = ["client-id", "duid", "circuit-id", "flex-id"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn subnets_key(self) -> &'static str {
        match self {
            Family::V4 => "subnet4",
            Family::V6 => "subnet6",
        }
    }
}

/// Reads a Kea configuration.
pub fn parse(input: &str) -> Result<Parsed, ExchangeError> {
    let text = strip_comments(input)?;
    let root: Value = serde_json::from_str(&text).map_err(|error| {
        let position = format!(" at line {} column {}", error.line(), error.column());
        let message = error.to_string();
        ExchangeError::KeaSyntax {
            line: error.line(),
            column: error.column(),
            message: message
                .strip_suffix(&position)
                .unwrap_or(&message)
                .to_owned(),
        }
    })?;
    let Value::Object(top) = root else {
        return Err(ExchangeError::KeaStructure(
            "the top level is not a JSON object".to_owned(),
        ));
    };
    let mut reader = Reader {
        lines: object_lines(&text),
        parsed: Parsed::default(),
    };
    let mut servers = 0;
    for (key, value) in &top {
        let family = match key.as_str() {
            "Dhcp4" => Family::V4,
            "Dhcp6" => Family::V6,
            _ => {
                let path = format!("/{key}");
                reader.parsed.skipped.push(Note {
                    line: reader.line(&path),
                    text: key.clone(),
                    reason: "not a reservation (not Dhcp4 or Dhcp6)".to_owned(),
                });
                continue;
            }
        };
        let Value::Object(server) = value else {
            return Err(ExchangeError::KeaStructure(format!(
                "{key} is not a JSON object"
            )));
        };
        servers += 1;
        reader.server(server, &format!("/{key}"), family);
    }
    if servers == 0 {
        return Err(ExchangeError::KeaStructure(
            "it has neither a Dhcp4 nor a Dhcp6 object".to_owned(),
        ));
    }
    // The walk visits serde_json's sorted keys; report in file order instead (stable, so items
    // on one line keep their walk order).
    let mut parsed = reader.parsed;
    parsed.reservations.sort_by_key(|r| r.line);
    parsed.subnets.sort_by_key(|s| s.line);
    parsed.skipped.sort_by_key(|n| n.line);
    parsed.rejected.sort_by_key(|n| n.line);
    Ok(parsed)
}

/// Subnet settings Kea inherits downwards: global → shared network → subnet.
#[derive(Debug, Clone, Default)]
struct Inherited {
    lease_seconds: Option<i64>,
    gateway: Option<IpAddr>,
    domain: Option<String>,
}

struct Reader {
    lines: HashMap<String, usize>,
    parsed: Parsed,
}

impl Reader {
    fn line(&self, path: &str) -> usize {
        self.lines.get(path).copied().unwrap_or(0)
    }

    fn server(&mut self, server: &Map<String, Value>, path: &str, family: Family) {
        let global = self.inherit(server, path, family, &Inherited::default());
        let key = family.subnets_key();
        for (i, subnet) in self.list(server, path, key).iter().enumerate() {
            self.subnet(subnet, &format!("{path}/{key}/{i}"), family, &global);
        }
        for (n, network) in self
            .list(server, path, "shared-networks")
            .iter()
            .enumerate()
        {
            let net_path = format!("{path}/shared-networks/{n}");
            let Value::Object(network) = network else {
                self.reject(&net_path, network, "shared network is not a JSON object");
                continue;
            };
            let shared = self.inherit(network, &net_path, family, &global);
            for (i, subnet) in self.list(network, &net_path, key).iter().enumerate() {
                self.subnet(subnet, &format!("{net_path}/{key}/{i}"), family, &shared);
            }
        }
        for (i, reservation) in self.list(server, path, "reservations").iter().enumerate() {
            self.reservation(
                reservation,
                &format!("{path}/reservations/{i}"),
                family,
                None,
            );
        }
    }

    /// `object[key]` as a list; a missing key is an empty list, another type is rejected.
    fn list<'v>(&mut self, object: &'v Map<String, Value>, path: &str, key: &str) -> &'v [Value] {
        match object.get(key) {
            Some(Value::Array(items)) => items,
            None => &[],
            Some(other) => {
                self.reject(path, other, &format!("{key} is not a JSON list"));
                &[]
            }
        }
    }

    fn reject(&mut self, path: &str, value: &Value, reason: &str) {
        self.parsed.rejected.push(Note {
            line: self.line(path),
            text: value.to_string(),
            reason: reason.to_owned(),
        });
    }

    /// `parent` overridden by what `object` sets itself.
    fn inherit(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        family: Family,
        parent: &Inherited,
    ) -> Inherited {
        let mut out = parent.clone();
        if let Some(lifetime) = object.get("valid-lifetime") {
            match lifetime
                .as_i64()
                .filter(|s| validate::lease_seconds(*s).is_ok())
            {
                Some(seconds) => out.lease_seconds = Some(seconds),
                None => self.skip(
                    path,
                    lifetime,
                    "valid-lifetime is not a lease time of \
                                                    120..=4294967295 s: not kept",
                ),
            }
        }
        let options = self.list(object, path, "option-data");
        for option in options {
            let name = option.get("name").and_then(Value::as_str);
            let code = option.get("code").and_then(Value::as_u64);
            let data = option.get("data").and_then(Value::as_str).unwrap_or("");
            // The first entry of a comma-separated list: one gateway, one domain.
            let first = data.split(',').next().unwrap_or("").trim();
            let is =
                |wanted: &str, wanted_code: u64| name == Some(wanted) || code == Some(wanted_code);
            match family {
                Family::V4 if is("routers", 3) => match first.parse::<Ipv4Addr>() {
                    Ok(ip) => out.gateway = Some(ip.into()),
                    Err(_) => self.skip(
                        path,
                        option,
                        "routers option is not an IPv4 address: \
                                                       gateway not kept",
                    ),
                },
                Family::V4 if is("domain-name", 15) => self.domain(&mut out, first, path, option),
                Family::V6 if is("domain-search", 24) => self.domain(&mut out, first, path, option),
                _ => {}
            }
        }
        out
    }

    fn domain(&mut self, out: &mut Inherited, name: &str, path: &str, option: &Value) {
        let name = name.trim_end_matches('.');
        match validate::domain(name) {
            Ok(()) => out.domain = Some(name.to_owned()),
            Err(reason) => self.skip(path, option, &format!("{reason}: domain not kept")),
        }
    }

    fn skip(&mut self, path: &str, value: &Value, reason: &str) {
        self.parsed.skipped.push(Note {
            line: self.line(path),
            text: value.to_string(),
            reason: reason.to_owned(),
        });
    }

    fn subnet(&mut self, value: &Value, path: &str, family: Family, parent: &Inherited) {
        let Value::Object(object) = value else {
            self.reject(path, value, "subnet is not a JSON object");
            return;
        };
        let line = self.line(path);
        let settings = self.inherit(object, path, family, parent);
        let text = object
            .get("subnet")
            .map_or_else(|| "(no subnet)".to_owned(), Value::to_string);
        let cidr = match subnet_cidr(object, family) {
            Ok(cidr) => Some(cidr),
            Err(reason) => {
                self.parsed.rejected.push(Note {
                    line,
                    text: text.clone(),
                    reason,
                });
                None
            }
        };
        if let Some(cidr) = cidr {
            let pools = self.list(object, path, "pools");
            let range = match pools.first().map(pool_range) {
                None => Ok(None),
                Some(Ok(range)) => Ok(Some(range)),
                Some(Err(reason)) => Err(reason),
            };
            if pools.len() > 1 {
                self.skip(
                    path,
                    &Value::Array(pools[1..].to_vec()),
                    "only the first pool is kept as the dynamic range",
                );
            }
            let candidate = Subnet {
                id: 0,
                cidr,
                range: range.clone().unwrap_or(None),
                gateway: settings.gateway,
                lease_seconds: settings.lease_seconds,
                domain: settings.domain.clone(),
            };
            match range.and_then(|_| validate::subnet(&candidate)) {
                Ok(()) => self.parsed.subnets.push(SubnetHint {
                    line,
                    cidr,
                    range: candidate.range,
                    gateway: candidate.gateway,
                    lease_seconds: candidate.lease_seconds,
                    domain: candidate.domain,
                }),
                Err(reason) => self.parsed.rejected.push(Note {
                    line,
                    text,
                    reason: format!("subnet: {reason}"),
                }),
            }
        }
        for (i, reservation) in self.list(object, path, "reservations").iter().enumerate() {
            self.reservation(
                reservation,
                &format!("{path}/reservations/{i}"),
                family,
                cidr,
            );
        }
    }

    fn reservation(&mut self, value: &Value, path: &str, family: Family, cidr: Option<IpCidr>) {
        let line = self.line(path);
        match reservation(value, family, cidr) {
            Ok(mut reservation) => {
                reservation.line = line;
                self.parsed.reservations.push(reservation)
            }
            Err(reason) => self.parsed.rejected.push(Note {
                line,
                text: value.to_string(),
                reason,
            }),
        }
    }
}

/// One reservation object (its line left 0), or why it cannot be kept.
fn reservation(value: &Value, family: Family, cidr: Option<IpCidr>) -> Result<Reservation, String> {
    let Value::Object(object) = value else {
        return Err("reservation is not a JSON object".to_owned());
    };
    let string = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("{key} is not a JSON string")),
        }
    };
    let identifiers: Vec<&str> = OTHER_IDENTIFIERS
        .into_iter()
        .filter(|key| object.contains_key(*key))
        .collect();
    let mut client_ids = Vec::new();
    for key in ["client-id", "duid"] {
        if let Some(text) = string(key)? {
            let id = crate::client_id::parse(text).map_err(|e| format!("{key}: {e}"))?;
            client_ids.push(id);
        }
    }
    if client_ids.len() > 1 {
        return Err("client-id and duid: a reservation has one client identifier".to_owned());
    }
    let client_id = client_ids.pop();
    let context_macs = context_macs(object.get("user-context"))?;
    let mut notes: Vec<String> = identifiers
        .iter()
        .filter(|key| !matches!(**key, "client-id" | "duid"))
        .map(|key| format!("{key} not kept: ipmanager matches clients by MAC or client identifier"))
        .collect();
    let mac = match (string("hw-address")?, context_macs.first(), &client_id) {
        (Some(text), _, _) => parse_mac(text).map_err(|reason| format!("hw-address: {reason}"))?,
        (None, Some(mac), _) => *mac,
        (None, None, Some(id)) => match id.embedded_mac() {
            Some(mac) => {
                notes.push(format!(
                    "MAC {} taken from the client identifier",
                    crate::mac::Mac(mac)
                ));
                mac
            }
            None => {
                return Err(format!(
                    "reservation is keyed by {} only and it holds no MAC: ipmanager keys every \
                     reservation by MAC (hw-address) as well",
                    identifiers.join(", ")
                ))
            }
        },
        (None, None, None) if !identifiers.is_empty() => {
            return Err(format!(
                "reservation is keyed by {} only: ipmanager keys every reservation by MAC \
                 (hw-address)",
                identifiers.join(", ")
            ))
        }
        (None, None, None) => {
            return Err("no hw-address: ipmanager keys every reservation by MAC".to_owned())
        }
    };
    let extra_macs: Vec<[u8; 6]> = context_macs.into_iter().filter(|m| *m != mac).collect();
    if extra_macs.len() > validate::MAX_EXTRA_MACS {
        return Err(format!(
            "user-context {MACS_KEY}: a reservation has at most {} MACs",
            1 + validate::MAX_EXTRA_MACS
        ));
    }
    let ip: Option<IpAddr> = match family {
        Family::V4 => match string("ip-address")? {
            Some(text) => Some(
                text.parse::<Ipv4Addr>()
                    .map_err(|_| "ip-address is not an IPv4 address".to_owned())?
                    .into(),
            ),
            None => None,
        },
        Family::V6 => match object.get("ip-addresses") {
            None => None,
            Some(Value::Array(items)) => {
                let mut addresses = Vec::new();
                for item in items {
                    let ip = item
                        .as_str()
                        .and_then(|text| text.parse::<Ipv6Addr>().ok())
                        .ok_or_else(|| {
                            "ip-addresses holds a value that is not an IPv6 address".to_owned()
                        })?;
                    addresses.push(ip);
                }
                for extra in addresses.iter().skip(1) {
                    notes.push(format!(
                        "ip-addresses {extra} not kept: ipmanager keeps one IPv6 address per \
                         reservation"
                    ));
                }
                addresses.first().map(|ip| IpAddr::V6(*ip))
            }
            Some(_) => return Err("ip-addresses is not a JSON list".to_owned()),
        },
    };
    if let (Some(ip), Some(cidr)) = (ip, cidr) {
        validate::host_address(ip, cidr).map_err(|reason| format!("ip-address: {reason}"))?;
    }
    let hostname = match string("hostname")? {
        None | Some("") => None,
        Some(name) => Some(check_hostname(name)?),
    };
    let mut lease_seconds = None;
    for key in object.keys() {
        match key.as_str() {
            "hw-address" | "ip-address" | "ip-addresses" | "hostname" => {}
            key if OTHER_IDENTIFIERS.contains(&key) => {}
            "user-context" => {
                let context = object[key].as_object();
                if let Some(lease) = context.and_then(|c| c.get(LEASE_KEY)) {
                    let seconds = lease
                        .as_i64()
                        .ok_or_else(|| format!("user-context {LEASE_KEY} is not a number"))?;
                    validate::lease_seconds(seconds)?;
                    lease_seconds = Some(seconds);
                }
                if context.is_none_or(|c| c.keys().any(|k| k != LEASE_KEY && k != MACS_KEY)) {
                    notes.push("user-context not kept".to_owned());
                }
            }
            other => notes.push(format!("{} not kept", shown_key(other))),
        }
    }
    Ok(Reservation {
        line: 0,
        mac,
        extra_macs,
        client_id,
        ip,
        hostname,
        lease_seconds,
        notes,
    })
}

/// The MACs of `user-context` [`MACS_KEY`], in order, if any.
fn context_macs(context: Option<&Value>) -> Result<Vec<[u8; 6]>, String> {
    let Some(list) = context.and_then(|c| c.get(MACS_KEY)) else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| format!("user-context {MACS_KEY} is not a JSON list"))?;
    let mut macs: Vec<[u8; 6]> = Vec::new();
    for item in items {
        let text = item
            .as_str()
            .ok_or_else(|| format!("user-context {MACS_KEY} holds a value that is not a string"))?;
        let mac = parse_mac(text).map_err(|reason| format!("user-context {MACS_KEY}: {reason}"))?;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    Ok(macs)
}

/// A JSON key for a note: Kea's keys are lowercase words with '-'; anything else is not shown.
fn shown_key(key: &str) -> &str {
    if key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        key
    } else {
        "(field not shown)"
    }
}

fn subnet_cidr(object: &Map<String, Value>, family: Family) -> Result<IpCidr, String> {
    let text = object
        .get("subnet")
        .and_then(Value::as_str)
        .ok_or_else(|| "subnet has no \"subnet\" string".to_owned())?;
    let cidr: IpCidr = Some(text.trim())
        .filter(|text| text.contains('/'))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "subnet is not a network in CIDR notation with zero host bits".to_owned())?;
    if cidr.is_ipv4() != (family == Family::V4) {
        return Err(format!(
            "subnet {cidr:#} is in {} but has the other address family",
            family.subnets_key()
        ));
    }
    Ok(cidr)
}

/// A Kea pool, `"a - b"` or `"prefix/len"`, as a range.
fn pool_range(pool: &Value) -> Result<(IpAddr, IpAddr), String> {
    let text = pool
        .get("pool")
        .and_then(Value::as_str)
        .ok_or_else(|| "pool has no \"pool\" string".to_owned())?;
    let bad = || "pool is neither \"first - last\" nor a prefix".to_owned();
    match text.split_once('-') {
        Some((start, end)) => Ok((
            start.trim().parse().map_err(|_| bad())?,
            end.trim().parse().map_err(|_| bad())?,
        )),
        // The cidr crate reads a bare address as a /32 or /128; Kea wants the prefix written.
        None if text.contains('/') => {
            let cidr: IpCidr = text.trim().parse().map_err(|_| bad())?;
            Ok((cidr.first_address(), cidr.last_address()))
        }
        None => Err(bad()),
    }
}

/// `input` with every comment replaced by spaces (newlines kept), so positions do not move.
fn strip_comments(input: &str) -> Result<String, ExchangeError> {
    let bytes = input.as_bytes();
    let mut out = bytes.to_vec();
    let mut line = 1;
    let mut in_string = false;
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match b {
                // Skip the escaped byte, which may be a quote.
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        match (b, next) {
            (b'"', _) => in_string = true,
            (b'#', _) | (b'/', Some(b'/')) => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
                continue;
            }
            (b'/', Some(b'*')) => {
                let Some(n) = bytes[i + 2..].windows(2).position(|w| w == b"*/") else {
                    return Err(ExchangeError::KeaComment { line });
                };
                let end = i + 2 + n + 2;
                line += bytes[i..end].iter().filter(|&&b| b == b'\n').count();
                blank(&mut out, i, end);
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Comments span whole characters (their delimiters are ASCII), so this is still UTF-8.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The line of every object's `{`, by its JSON path (`/Dhcp4/subnet4/0`). The text is valid
/// JSON (serde_json read it first), so the scanner only tracks strings, containers and keys.
fn object_lines(text: &str) -> HashMap<String, usize> {
    enum Frame {
        /// The key whose value is being read; `None` while a key is expected.
        Object(Option<String>),
        Array(usize),
    }
    let path = |stack: &[Frame]| {
        let mut out = String::new();
        for frame in stack {
            out.push('/');
            match frame {
                Frame::Object(key) => out.push_str(key.as_deref().unwrap_or("")),
                Frame::Array(index) => out.push_str(&index.to_string()),
            }
        }
        out
    };
    let bytes = text.as_bytes();
    let mut lines = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' => {
                lines.insert(path(&stack), line);
                stack.push(Frame::Object(None));
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object(key)) => *key = None,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i = start;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object(key @ None)) = stack.last_mut() {
                    *key = Some(text.get(start..i).unwrap_or_default().to_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    lines
}

/// A Kea configuration with a `Dhcp4` object (always) and a `Dhcp6` object (when there is
/// anything IPv6), subnets with their reservations, hosts without an exported subnet as global
/// reservations. The gateway of an IPv6 subnet is not written: DHCPv6 has no routers option.
pub(crate) fn export(plan: &ExportPlan<'_>) -> String {
    let mut v4 = (Vec::new(), Vec::new());
    let mut v6 = (Vec::new(), Vec::new());
    for subnet in &plan.subnets {
        let hosts: Vec<Value> = plan
            .hosts
            .iter()
            .filter(|(s, _)| s.is_some_and(|s| s.id == subnet.id))
            .map(|(_, host)| host_json(host, &plan.ident(host)))
            .collect();
        let mut object = Map::new();
        object.insert("id".to_owned(), json!(subnet.id));
        object.insert("subnet".to_owned(), json!(format!("{:#}", subnet.cidr)));
        if let Some((start, end)) = subnet.range {
            object.insert(
                "pools".to_owned(),
                json!([{ "pool": format!("{start} - {end}") }]),
            );
        }
        let mut options = Vec::new();
        let v4_subnet = subnet.cidr.is_ipv4();
        if let (true, Some(gateway)) = (v4_subnet, subnet.gateway) {
            options.push(json!({ "name": "routers", "data": gateway.to_string() }));
        }
        if let Some(domain) = &subnet.domain {
            let name = if v4_subnet {
                "domain-name"
            } else {
                "domain-search"
            };
            options.push(json!({ "name": name, "data": domain }));
        }
        if !options.is_empty() {
            object.insert("option-data".to_owned(), Value::Array(options));
        }
        if let Some(seconds) = subnet.lease_seconds {
            object.insert("valid-lifetime".to_owned(), json!(seconds));
        }
        object.insert("reservations".to_owned(), Value::Array(hosts));
        let target = if v4_subnet { &mut v4 } else { &mut v6 };
        target.0.push(Value::Object(object));
    }
    for (_, host) in plan.hosts.iter().filter(|(s, _)| s.is_none()) {
        let target = if host.ip.is_ipv4() { &mut v4 } else { &mut v6 };
        target.1.push(host_json(host, &plan.ident(host)));
    }
    let server = |(subnets, globals): (Vec<Value>, Vec<Value>), key: &str| {
        let mut object = Map::new();
        object.insert(key.to_owned(), Value::Array(subnets));
        if !globals.is_empty() {
            object.insert("reservations".to_owned(), Value::Array(globals));
        }
        Value::Object(object)
    };
    let mut root = Map::new();
    let has_v6 = !v6.0.is_empty() || !v6.1.is_empty();
    root.insert("Dhcp4".to_owned(), server(v4, "subnet4"));
    if has_v6 {
        root.insert("Dhcp6".to_owned(), server(v6, "subnet6"));
    }
    let mut out = plan.header("//", Format::Kea);
    // Serialising a Value into a String cannot fail.
    out.push_str(&serde_json::to_string_pretty(&Value::Object(root)).unwrap_or_default());
    out.push('\n');
    out
}

/// A reservation. Kea takes one identifier per reservation: the client identifier when there is
/// one (`client-id` in Dhcp4, `duid` in Dhcp6), else `hw-address`; every MAC is kept in
/// `user-context` ([`MACS_KEY`]) when there is more than one or an identifier.
fn host_json(host: &Host, ident: &lines::Ident<'_>) -> Value {
    let mac_text = |mac: &[u8; 6]| {
        let mut text = String::new();
        lines::push_mac(&mut text, mac);
        text
    };
    let mut object = Map::new();
    let mut context = Map::new();
    match ident.client_id {
        Some(id) => {
            let key = if host.ip.is_ipv4() {
                "client-id"
            } else {
                "duid"
            };
            object.insert(key.to_owned(), json!(id.to_string()));
        }
        None => {
            object.insert("hw-address".to_owned(), json!(mac_text(&host.mac)));
        }
    }
    if ident.client_id.is_some() || !ident.macs.is_empty() {
        let macs: Vec<String> = std::iter::once(&host.mac)
            .chain(ident.macs)
            .map(mac_text)
            .collect();
        context.insert(MACS_KEY.to_owned(), json!(macs));
    }
    match host.ip {
        IpAddr::V4(ip) => object.insert("ip-address".to_owned(), json!(ip.to_string())),
        IpAddr::V6(ip) => object.insert("ip-addresses".to_owned(), json!([ip.to_string()])),
    };
    object.insert("hostname".to_owned(), json!(host.hostname));
    if let Some(seconds) = host.lease_seconds {
        context.insert(LEASE_KEY.to_owned(), json!(seconds));
    }
    if !context.is_empty() {
        object.insert("user-context".to_owned(), Value::Object(context));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_blanked_outside_strings() {
        let input = "{ // a\n\"a#b\": \"x//y /* z */\", # c\n/* d\n e */ \"k\": 1 }";
        let stripped = strip_comments(input).unwrap();
        assert_eq!(stripped.len(), input.len());
        assert_eq!(stripped.lines().count(), input.lines().count());
        let value: Value = serde_json::from_str(&stripped).unwrap();
        assert_eq!(value, json!({ "a#b": "x//y /* z */", "k": 1 }));
        let escaped = "{\"a\\\"#\": 1}";
        assert_eq!(strip_comments(escaped).unwrap(), escaped);
    }

    #[test]
    fn unterminated_comment_and_syntax_errors_have_positions() {
        assert_eq!(
            parse("{\n/* open\n").unwrap_err(),
            ExchangeError::KeaComment { line: 2 }
        );
        let error = parse("{\n  // c\n  \"Dhcp4\": { \"subnet4\": [ }\n}").unwrap_err();
        let ExchangeError::KeaSyntax { line, column, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!((line, column), (3, 27));
        assert!(matches!(parse("[]"), Err(ExchangeError::KeaStructure(_))));
        assert!(matches!(
            parse("{\"Logging\": {}}"),
            Err(ExchangeError::KeaStructure(_))
        ));
    }

    #[test]
    fn object_lines_follow_paths() {
        let text = "{\"a\": [\n{\"b\": {}},\n \"s,[{\",\n{\"c\": [1, {}]}]}";
        let lines = object_lines(text);
        assert_eq!(lines[""], 1);
        assert_eq!(lines["/a/0"], 2);
        assert_eq!(lines["/a/0/b"], 2);
        assert_eq!(lines["/a/2"], 4);
        assert_eq!(lines["/a/2/c/1"], 4);
    }

    #[test]
    fn pools() {
        let range = |text: &str| pool_range(&json!({ "pool": text }));
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            range("10.0.0.5 - 10.0.0.9"),
            Ok((ip("10.0.0.5"), ip("10.0.0.9")))
        );
        assert_eq!(
            range("10.0.0.5-10.0.0.9"),
            Ok((ip("10.0.0.5"), ip("10.0.0.9")))
        );
        assert_eq!(
            range("10.0.0.64/26"),
            Ok((ip("10.0.0.64"), ip("10.0.0.127")))
        );
        assert!(range("10.0.0.64").is_err());
    }

    #[test]
    fn a_hash_inside_a_string_is_part_of_the_value() {
        let parsed = parse(
            "{ \"Dhcp4\": { \"subnet4\": [ { \"subnet\": \"10.0.0.0/24\", # c\n\
               \"reservations\": [\n\
                 { \"hw-address\": \"52:54:00:aa:bb:01\", \"hostname\": \"h#x\" }, # c\n\
                 { \"hw-address\": \"52:54:00:aa:bb:02\", \"hostname\": \"pc\" } // c\n\
               ] } ] } }",
        )
        .unwrap();
        assert_eq!(parsed.reservations.len(), 1, "{parsed:?}");
        assert_eq!(parsed.reservations[0].hostname.as_deref(), Some("pc"));
        assert_eq!(parsed.rejected.len(), 1, "{parsed:?}");
        assert_eq!(parsed.rejected[0].line, 3);
        assert!(
            parsed.rejected[0]
                .reason
                .contains("hostname contains '#' at byte 1"),
            "{:?}",
            parsed.rejected[0]
        );
    }

    #[test]
    fn reservation_rules() {
        let net: IpCidr = "10.0.0.0/24".parse().unwrap();
        let fields = |value: Value| reservation(&value, Family::V4, Some(net));
        let r = fields(json!({
            "hw-address": "52:54:00:AA:BB:01", "ip-address": "10.0.0.5", "hostname": "",
            "option-data": [], "user-context": { "ipmanager-lease-seconds": 600, "x": 1 }
        }))
        .unwrap();
        assert_eq!(r.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(
            (r.hostname, r.lease_seconds, r.mac[5]),
            (None, Some(600), 1)
        );
        assert_eq!(r.notes, ["option-data not kept", "user-context not kept"]);
        // Identifiers: the MACs come from user-context, else from inside the identifier.
        let r = fields(json!({
            "client-id": "01:52:54:00:aa:bb:09", "ip-address": "10.0.0.6",
            "user-context": { "ipmanager-macs": ["52:54:00:aa:bb:02", "52:54:00:aa:bb:03"] }
        }))
        .unwrap();
        assert_eq!((r.mac[5], r.extra_macs.len(), r.notes.len()), (2, 1, 0));
        assert_eq!(r.client_id.unwrap().to_string(), "01:52:54:00:aa:bb:09");
        let r = fields(json!({ "client-id": "01:52:54:00:aa:bb:09" })).unwrap();
        assert_eq!((r.mac[5], r.extra_macs.len()), (9, 0));
        for (value, expected) in [
            (
                json!({ "duid": "01:02" }),
                "reservation is keyed by duid only and it holds no MAC",
            ),
            (json!({ "hostname": "a" }), "no hw-address"),
            (
                json!({ "hw-address": 5 }),
                "hw-address is not a JSON string",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb" }),
                "hw-address: hosts.mac '52:54:00:aa:bb' is not a MAC",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb:01", "ip-address": "10.0.0.255" }),
                "ip-address: address 10.0.0.255 is the broadcast",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb:01", "ip-address": "10.0.1.5" }),
                "ip-address: address 10.0.1.5 is outside",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb:01", "ip-address": "::1" }),
                "ip-address is not an IPv4",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb:01", "hostname": "a b" }),
                "hostname contains U+0020",
            ),
            (
                json!({ "hw-address": "52:54:00:aa:bb:01", "user-context": { "ipmanager-lease-seconds": 5 } }),
                "lease time 5 s",
            ),
            (json!([]), "reservation is not a JSON object"),
        ] {
            let error = fields(value.clone()).unwrap_err();
            assert!(error.starts_with(expected), "{value}: {error}");
        }
        let r = reservation(
            &json!({ "hw-address": "52:54:00:aa:bb:01", "ip-addresses": ["2001:db8::5", "2001:db8::6"] }),
            Family::V6,
            None,
        )
        .unwrap();
        assert_eq!(r.ip, Some("2001:db8::5".parse().unwrap()));
        assert_eq!(r.notes.len(), 1);
    }
}
