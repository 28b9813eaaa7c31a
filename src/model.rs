//! The data the agent serves, as plain Rust values: what a snapshot of the database holds and
//! what the renderer turns into dnsmasq files. No database or file types appear here.

use std::collections::HashSet;
use std::net::IpAddr;

use cidr::IpCidr;

/// One enabled subnet, as read from `ipmanager.subnets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: i64,
    pub cidr: IpCidr,
    /// The dynamic DHCP range; `None` serves reservations only (dnsmasq's `static` mode).
    pub range: Option<(IpAddr, IpAddr)>,
    pub gateway: Option<IpAddr>,
    /// Lease time in seconds; `None` leaves dnsmasq's default, [`crate::lease::INFINITE`] is
    /// an infinite lease.
    pub lease_seconds: Option<i64>,
    pub domain: Option<String>,
}

/// One enabled reservation in an enabled subnet, as read from `ipmanager.hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: i64,
    pub subnet_id: i64,
    pub mac: [u8; 6],
    pub ip: IpAddr,
    pub hostname: String,
    /// Per-host lease time override in seconds; [`crate::lease::INFINITE`] is infinite.
    pub lease_seconds: Option<i64>,
}

/// Everything the agent serves, read in one consistent transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub subnets: Vec<Subnet>,
    pub hosts: Vec<Host>,
}

impl Snapshot {
    /// Brings the hosts up to date with a read of the `changed` ids alone: every host with
    /// one of those ids goes, and `fetched` (the rows still there, with those ids only) come
    /// in. Host order is not kept: the renderer sorts.
    pub fn patch(&mut self, changed: &HashSet<i64>, fetched: Vec<Host>) {
        if changed.is_empty() {
            return;
        }
        self.hosts.retain(|h| !changed.contains(&h.id));
        self.hosts.extend(fetched);
    }
}

/// The rule for the names of subnets and agents (`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` in the
/// schema): 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok && name.len() <= 63 && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}
