//! Administrative operations on subnets, reservations, profiles, DHCP options, sync status and
//! the audit log: what the `ipmanager` CLI does, as library functions over one database
//! connection.
//!
//! The rules live in the database (triggers and the functions of `sql/V2__admin.sql`,
//! `sql/V3__hardening.sql`, `sql/V6__options.sql`, `sql/V7__clients.sql` and, for API tokens, `sql/V8__api.sql`), so that psql users get the same protection; this module validates
//! input first only to answer without a round trip, in the database's own words ([`validate`]), and turns database errors
//! into [`AdminError`]s that say what went wrong in the same words.

pub mod audit;
pub mod hosts;
pub mod import;
pub mod options;
pub mod profiles;
pub mod sites;
pub mod subnets;
pub mod sync;
pub mod tokens;
pub mod validate;

use std::net::IpAddr;
use tokio_postgres::error::SqlState;

use crate::db::DbError;

/// Why an operation did not happen. Callers branch on the kind (the CLI maps it to an exit
/// code); the text is meant for the admin as it stands.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The subnet, host or agent named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request would change nothing.
    #[error("{0}")]
    NothingToDo(String),
    /// A name matches more than one row; the message says how to pick one.
    #[error("{0}")]
    Ambiguous(String),
    /// Input or resulting data breaks a rule (ours, checked first, or the database's).
    #[error("{0}")]
    Invalid(String),
    /// The value is already taken by another row (a unique or exclusion rule).
    #[error("{0}")]
    Duplicate(String),
    /// Anything else from the database: unreachable, permission denied, ...
    #[error(transparent)]
    Db(#[from] DbError),
    /// The operating system failed us, e.g. gave no random bytes for a token.
    #[error(transparent)]
    Os(std::io::Error),
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// Custom SQLSTATE of `ipmanager.allocate_host` when a subnet has no free address.
const NO_FREE_ADDRESS: &str = "IM001";

impl From<tokio_postgres::Error> for AdminError {
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            return AdminError::Db(DbError::Postgres(error));
        };
        let code = db.code();
        let with_hint = |message: String| match db.hint() {
            Some(hint) => format!("{message} ({hint})"),
            None => message,
        };
        if *code == SqlState::NO_DATA_FOUND {
            return AdminError::NotFound(db.message().to_owned());
        }
        // The triggers explain duplicates themselves (pass their words through); PostgreSQL's
        // own text only comes from the unique constraints, when the other row was not yet
        // committed as the trigger looked.
        if *code == SqlState::UNIQUE_VIOLATION && db.message().starts_with("duplicate key value") {
            return AdminError::Duplicate(unique_violation(
                db.constraint().unwrap_or_default(),
                db.detail().unwrap_or_default(),
            ));
        }
        if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::EXCLUSION_VIOLATION {
            return AdminError::Duplicate(with_hint(db.message().to_owned()));
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION
            && db.constraint() == Some("hosts_subnet_id_fkey")
            && db.table() == Some("subnets")
        {
            return AdminError::Invalid(
                "subnets row is still referenced by hosts: a subnet with reservations cannot be \
                 removed; remove its hosts first (ipmanager subnet rm --cascade does both)"
                    .to_owned(),
            );
        }
        let data_error = code.code().starts_with("23")
            || code.code().starts_with("22")
            || code.code() == NO_FREE_ADDRESS
            || *code == SqlState::RAISE_EXCEPTION;
        if data_error {
            return AdminError::Invalid(with_hint(db.message().to_owned()));
        }
        AdminError::Db(DbError::Postgres(error))
    }
}

/// PostgreSQL's unique-violation text names an index and a key tuple; this names the column,
/// the value and the rule instead, like the triggers' messages (which also name the row that
/// holds the value; the constraint's detail does not say).
fn unique_violation(constraint: &str, detail: &str) -> String {
    // detail: Key (subnet_id, mac)=(1, 52:54:00:00:00:01) already exists.
    let value = detail
        .split_once(")=(")
        .and_then(|(_, rest)| rest.rsplit_once(") already exists"))
        .map(|(values, _)| values.rsplit(", ").next().unwrap_or(values).to_owned())
        .unwrap_or_default();
    duplicate(constraint, &value).unwrap_or_else(|| format!("{constraint}: {detail}"))
}

/// What a unique constraint of ours says about `value`, in the triggers' words; `None` for a
/// constraint that is not ours.
pub(crate) fn duplicate(constraint: &str, value: &str) -> Option<String> {
    let quoted = validate::quote(value);
    Some(match constraint {
        "hosts_ip_unique" => format!(
            "hosts.ip {value} is already reserved: an IP address can have only one reservation"
        ),
        "hosts_subnet_mac_unique" => format!(
            "hosts.mac {value} already has a reservation in this subnet: a MAC address has at most \
             one reservation per subnet"
        ),
        "hosts_subnet_hostname_unique" => format!(
            "hosts.hostname {quoted} is already used in this subnet: host names are unique per \
             subnet, ignoring case"
        ),
        "subnets_name_unique" => {
            format!("subnets.name {quoted} is already used: subnet names are unique")
        }
        "profiles_name_unique" => {
            format!("profiles.name {quoted} is already used: profile names are unique")
        }
        "host_macs_subnet_mac_unique" => format!(
            "host_macs.mac {value} already has a reservation in this subnet: a MAC address has at \
             most one reservation per subnet"
        ),
        "hosts_subnet_client_id_unique" => format!(
            "hosts.client_id {value} is already used in this subnet: a client identifier has at \
             most one reservation per subnet"
        ),
        "host_aliases_subnet_name_unique" => format!(
            "host_aliases.name {quoted} is already used in this subnet: host names and aliases \
             are unique per subnet, ignoring case"
        ),
        "sites_name_unique" => {
            format!("sites.name {quoted} is already used: site names are unique")
        }
        "subnets_cidr_unique" => {
            format!("subnets.cidr {value} already exists: every network is entered once")
        }
        _ => return None,
    })
}

/// A lease time as the `$n::bigint * interval '1 second'` parameters of the statements here.
fn seconds(lease: Option<std::time::Duration>) -> Option<i64> {
    lease.map(|l| l.as_secs() as i64)
}

/// Timestamps stay `SystemTime` in the library (comparable, and `cli` formats them for
/// tables); in JSON they are RFC 3339 in UTC with whole seconds, as `-o json` has always shown
/// them. For `#[serde(serialize_with = "...")]` on the fields.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*at))
    }

    pub fn option<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serialize(at, s),
            None => s.serialize_none(),
        }
    }
}

/// What a `MAC|IP|NAME` argument refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRef {
    Mac([u8; 6]),
    Ip(IpAddr),
    Name(String),
}

impl HostRef {
    /// Reads an argument: `mac:…`, `ip:…` or `name:…` as that kind only; otherwise a MAC
    /// address in any accepted notation, else an IP address, else a host name
    /// (case-insensitive, as DNS compares names). Commands that change or show one
    /// reservation use [`HostQuery`], which does not guess.
    pub fn parse(text: &str) -> Result<HostRef> {
        if let Some(prefixed) = Self::parse_prefixed(text) {
            return prefixed;
        }
        Self::readings(text)
            .into_iter()
            .next()
            .ok_or_else(|| Self::unreadable(text))
    }

    /// The reference a `mac:`, `ip:` or `name:` prefix asks for; `None` without one.
    fn parse_prefixed(text: &str) -> Option<Result<HostRef>> {
        let (prefix, rest) = text.split_once(':')?;
        let parsed = match prefix.to_ascii_lowercase().as_str() {
            "mac" => validate::mac(rest).map(HostRef::Mac),
            "ip" => rest
                .trim()
                .parse()
                .map(HostRef::Ip)
                .map_err(|_| format!("{} is not an IP address", validate::quote(rest))),
            "name" => validate::hostname(rest).map(|()| HostRef::Name(rest.to_owned())),
            _ => return None,
        };
        Some(parsed.map_err(AdminError::Invalid))
    }

    /// Every kind `text` can be read as, MAC first: `deadbeef0001` is both a MAC address and a
    /// host name.
    fn readings(text: &str) -> Vec<HostRef> {
        let mac = validate::looks_like_mac(text)
            .then(|| validate::mac(text).ok().map(HostRef::Mac))
            .flatten();
        let ip = text.trim().parse().ok().map(HostRef::Ip);
        let name = validate::hostname(text)
            .ok()
            .map(|()| HostRef::Name(text.to_owned()));
        [mac, ip, name].into_iter().flatten().collect()
    }

    fn unreadable(text: &str) -> AdminError {
        let error = if validate::looks_like_mac(text) {
            validate::mac(text).err()
        } else {
            validate::hostname(text).err()
        };
        AdminError::Invalid(
            error.unwrap_or_else(|| format!("{} names no host", validate::quote(text))),
        )
    }

    /// The prefix that asks for this kind, and what the kind is called.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            HostRef::Mac(_) => ("mac", "MAC address"),
            HostRef::Ip(_) => ("ip", "IP address"),
            HostRef::Name(_) => ("name", "host name"),
        }
    }

    /// The reference with its prefix, as the user can give it to leave no doubt.
    pub fn qualified(&self) -> String {
        format!("{}:{self}", self.kind().0)
    }

    /// What this kind is called: "MAC address", "IP address" or "host name".
    pub fn kind_name(&self) -> &'static str {
        self.kind().1
    }
}

impl std::fmt::Display for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRef::Mac(mac) => f.write_str(&validate::format_mac(mac)),
            HostRef::Ip(ip) => write!(f, "{ip}"),
            HostRef::Name(name) => f.write_str(name),
        }
    }
}

/// The argument of `host show/set/rm` as typed, with every kind it reads as. A text that reads
/// as more than one kind (`deadbeef0001`: MAC address and host name) names a reservation only
/// when reservations match it by one kind alone; otherwise the command asks which was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostQuery {
    text: String,
    readings: Vec<HostRef>,
}

impl HostQuery {
    pub fn parse(text: &str) -> Result<HostQuery> {
        let readings = match HostRef::parse_prefixed(text) {
            Some(prefixed) => vec![prefixed?],
            None => HostRef::readings(text),
        };
        if readings.is_empty() {
            return Err(HostRef::unreadable(text));
        }
        Ok(HostQuery {
            text: text.to_owned(),
            readings,
        })
    }

    /// The kinds to look the reservation up by.
    pub fn readings(&self) -> &[HostRef] {
        &self.readings
    }
}

impl std::fmt::Display for HostQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_violations_name_column_value_and_rule() {
        assert_eq!(
            unique_violation("hosts_ip_unique", "Key (ip)=(10.0.0.5) already exists."),
            "hosts.ip 10.0.0.5 is already reserved: an IP address can have only one reservation"
        );
        assert!(unique_violation(
            "hosts_subnet_hostname_unique",
            "Key (subnet_id, lower(hostname))=(1, web) already exists."
        )
        .starts_with("hosts.hostname 'web' is already used in this subnet"));
    }

    #[test]
    fn host_references_are_told_apart() {
        assert_eq!(
            HostRef::parse("5254.0000.0001").unwrap(),
            HostRef::Mac([0x52, 0x54, 0, 0, 0, 1])
        );
        assert_eq!(
            HostRef::parse("10.0.0.5").unwrap(),
            HostRef::Ip("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            HostRef::parse("printer").unwrap(),
            HostRef::Name("printer".into())
        );
        assert!(matches!(
            HostRef::parse("bad name"),
            Err(AdminError::Invalid(_))
        ));
    }

    #[test]
    fn a_reference_keeps_every_kind_it_reads_as_unless_a_prefix_says_which() {
        let mac = HostRef::Mac([0xde, 0xad, 0xbe, 0xef, 0, 1]);
        let name = HostRef::Name("deadbeef0001".into());
        let readings = |text: &str| HostQuery::parse(text).unwrap().readings().to_vec();
        assert_eq!(readings("deadbeef0001"), [mac.clone(), name.clone()]);
        assert_eq!(readings("mac:deadbeef0001"), vec![mac.clone()]);
        assert_eq!(readings("MAC:de:ad:be:ef:00:01"), vec![mac.clone()]);
        assert_eq!(readings("name:deadbeef0001"), [name]);
        assert_eq!(
            readings("ip:fe80::1"),
            [HostRef::Ip("fe80::1".parse().unwrap())]
        );
        assert_eq!(readings("printer"), [HostRef::Name("printer".into())]);
        assert_eq!(mac.qualified(), "mac:de:ad:be:ef:00:01");
        for bad in ["mac:printer", "ip:printer", "name:bad name", "bad name"] {
            assert!(
                matches!(HostQuery::parse(bad), Err(AdminError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
