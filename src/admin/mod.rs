//! Administrative operations on subnets, reservations, sync status and the audit log: what the
//! `ipmanager` CLI does, as library functions over one database connection.
//!
//! The rules live in the database (triggers and the functions of `sql/V2__admin.sql`), so that
//! psql users get the same protection; this module validates input first only to answer
//! without a round trip, in the database's own words ([`validate`]), and turns database errors
//! into [`AdminError`]s that say what went wrong in the same words.

pub mod audit;
pub mod hosts;
pub mod import;
pub mod sites;
pub mod subnets;
pub mod sync;
pub mod validate;

use std::net::IpAddr;
use std::time::SystemTime;

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
    /// Anything else from the database: unreachable, permission denied, ...
    #[error(transparent)]
    Db(#[from] DbError),
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
        if *code == SqlState::UNIQUE_VIOLATION {
            return AdminError::Invalid(unique_violation(
                db.constraint().unwrap_or_default(),
                db.detail().unwrap_or_default(),
            ));
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
/// the value and the rule instead, like the triggers' messages.
fn unique_violation(constraint: &str, detail: &str) -> String {
    // detail: Key (subnet_id, mac)=(1, 52:54:00:00:00:01) already exists.
    let value = detail
        .split_once(")=(")
        .and_then(|(_, rest)| rest.rsplit_once(") already exists"))
        .map(|(values, _)| values.rsplit(", ").next().unwrap_or(values).to_owned())
        .unwrap_or_default();
    let quoted = validate::quote(&value);
    match constraint {
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
        "sites_name_unique" => {
            format!("sites.name {quoted} is already used: site names are unique")
        }
        "subnets_cidr_unique" => {
            format!("subnets.cidr {value} already exists: every network is entered once")
        }
        other => format!("{other}: {detail}"),
    }
}

/// A lease time as the `$n::bigint * interval '1 second'` parameters of the statements here.
fn seconds(lease: Option<std::time::Duration>) -> Option<i64> {
    lease.map(|l| l.as_secs() as i64)
}

/// Renders a timestamp for tables and JSON (UTC, RFC 3339, whole seconds).
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What a `MAC|IP|NAME` argument refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRef {
    Mac([u8; 6]),
    Ip(IpAddr),
    Name(String),
}

impl HostRef {
    /// Reads an argument that may be any of the three: a MAC address in any accepted notation,
    /// else an IP address, else a host name (case-insensitive, as DNS compares names).
    pub fn parse(text: &str) -> Result<HostRef> {
        if validate::looks_like_mac(text) {
            return Ok(HostRef::Mac(
                validate::mac(text).map_err(AdminError::Invalid)?,
            ));
        }
        if let Ok(ip) = text.trim().parse() {
            return Ok(HostRef::Ip(ip));
        }
        validate::hostname(text).map_err(AdminError::Invalid)?;
        Ok(HostRef::Name(text.to_owned()))
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
}
