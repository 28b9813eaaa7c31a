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
    /// Options, profiles, aliases and DNS-only names of the same subnets and hosts.
    pub extras: Extras,
}

impl Snapshot {
    /// Brings the hosts up to date with a read of the `changed` ids alone: every reservation,
    /// host setting and DNS-only name with one of those ids goes, and the fetched rows (those
    /// still there, with those ids only) come in. Order is not kept: the renderer sorts.
    /// Returns the rows that went, so that a render can be patched too
    /// ([`crate::render::Previous::update`]).
    pub fn patch(
        &mut self,
        changed: &HashSet<i64>,
        hosts: Vec<Host>,
        settings: Vec<HostSettings>,
        dns_names: Vec<DnsName>,
    ) -> Replaced {
        let mut ids: Vec<i64> = changed.iter().copied().collect();
        ids.sort_unstable();
        let mut replaced = Replaced {
            ids,
            ..Replaced::default()
        };
        if changed.is_empty() {
            return replaced;
        }
        replaced.hosts = self
            .hosts
            .extract_if(.., |h| changed.contains(&h.id))
            .collect();
        self.hosts.extend(hosts);
        replaced.settings = self
            .extras
            .hosts
            .extract_if(.., |h| changed.contains(&h.host_id))
            .collect();
        self.extras.hosts.extend(settings);
        replaced.dns_names = self
            .extras
            .dns_names
            .extract_if(.., |n| changed.contains(&n.id))
            .collect();
        self.extras.dns_names.extend(dns_names);
        replaced
    }
}

/// What [`Snapshot::patch`] took out: the changed ids, sorted, and the rows that had them
/// before (the rows that have them now are in the patched snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replaced {
    pub ids: Vec<i64>,
    pub hosts: Vec<Host>,
    pub settings: Vec<HostSettings>,
    pub dns_names: Vec<DnsName>,
}

/// The rule for the names of subnets and agents (`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` in the
/// schema): 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok && name.len() <= 63 && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The value type of a DHCP option (`ipmanager.dhcp_options.type`), which says how its text
/// value reads and how it is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptionKind {
    Ipv4List,
    Ipv6List,
    DomainList,
    String,
    Uint8,
    Uint16,
    Uint32,
    Bool,
    Hex,
    ClasslessRoutes,
}

impl OptionKind {
    pub const ALL: [OptionKind; 10] = [
        OptionKind::Ipv4List,
        OptionKind::Ipv6List,
        OptionKind::DomainList,
        OptionKind::String,
        OptionKind::Uint8,
        OptionKind::Uint16,
        OptionKind::Uint32,
        OptionKind::Bool,
        OptionKind::Hex,
        OptionKind::ClasslessRoutes,
    ];

    /// The name the database stores and admins write (`ipv4-list`, `uint16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OptionKind::Ipv4List => "ipv4-list",
            OptionKind::Ipv6List => "ipv6-list",
            OptionKind::DomainList => "domain-list",
            OptionKind::String => "string",
            OptionKind::Uint8 => "uint8",
            OptionKind::Uint16 => "uint16",
            OptionKind::Uint32 => "uint32",
            OptionKind::Bool => "bool",
            OptionKind::Hex => "hex",
            OptionKind::ClasslessRoutes => "classless-routes",
        }
    }

    /// The kind named `name`; `None` for anything else.
    pub fn from_name(name: &str) -> Option<OptionKind> {
        OptionKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl std::fmt::Display for OptionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One DHCP option of a subnet or profile, as the database normalised it: list items joined by
/// ',' without blanks, numbers in decimal, bool as `1`/`0`, hex as `de:ad:be:ef`, strings
/// without quotes. The renderer checks it again before writing it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DhcpOptionValue {
    /// The option code (DHCPv4 1-254, DHCPv6 1-65535).
    pub number: u16,
    /// dnsmasq's name of the option, when the catalogue knows it.
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: OptionKind,
    pub value: String,
}

/// A profile: DHCPv4 options and PXE boot settings for a group of hosts. Rendered under a tag
/// derived from `id`, never from `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub id: i64,
    pub name: String,
    /// For BIOS clients and clients that send no architecture.
    pub boot_file: Option<String>,
    /// For UEFI x86-64 clients (architecture 7 and 9).
    pub boot_file_uefi: Option<String>,
    /// For UEFI ARM64 clients (architecture 11).
    pub boot_file_arm64: Option<String>,
    /// For clients that are iPXE already (chain-loading).
    pub boot_file_ipxe: Option<String>,
    pub next_server: Option<std::net::Ipv4Addr>,
    pub tftp_server_name: Option<String>,
    pub options: Vec<DhcpOptionValue>,
}

/// A DNS-only name: an address and names without a MAC, served in DNS only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub id: i64,
    pub subnet_id: i64,
    pub ip: IpAddr,
    pub hostname: String,
    pub aliases: Vec<String>,
}

/// A subnet's options and default profile, for subnets that have any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetSettings {
    pub subnet_id: i64,
    pub options: Vec<DhcpOptionValue>,
    /// The profile of the subnet's hosts that name none.
    pub default_profile: Option<i64>,
}

/// A reservation's profile, aliases, client identifier and extra MACs, for reservations that
/// have any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub host_id: i64,
    /// The host's own profile; `None` takes its subnet's default profile, if any.
    pub profile: Option<i64>,
    /// Extra names of the host's address (A/AAAA only), sorted.
    pub aliases: Vec<String>,
    /// The DHCPv4 client-id or DHCPv6 DUID the client is matched by before its MACs.
    pub client_id: Option<crate::client_id::ClientId>,
    /// More MACs of the reservation besides [`Host::mac`] (`ipmanager.host_macs`), sorted.
    pub macs: Vec<[u8; 6]>,
}

/// What issue 12 adds to a [`Snapshot`]: options, profiles, aliases and DNS-only names, read in
/// the same transaction. Keyed by subnet and host id, so that [`Subnet`] and [`Host`], of which
/// there are 100,000s, stay as small as they were; most have no settings at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub profiles: Vec<Profile>,
    pub subnets: Vec<SubnetSettings>,
    pub hosts: Vec<HostSettings>,
    pub dns_names: Vec<DnsName>,
}
