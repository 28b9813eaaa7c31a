//! Which of dnsmasq's leases to release after new files took effect, and the arguments that
//! release one. Pure: no I/O; the agent reads the lease file and runs `dhcp_release` or
//! `dhcp_release6` (see `agent::releases`).
//!
//! A lease is released when it is the lease of a reservation dnsmasq served before and serves
//! no longer: the client and the address of the lease ([`Lease::candidates`]) are those of a
//! [`Reservation`] that was served, and no served reservation gives that address to that client
//! now. Everything else is left alone: a dynamic lease was never a served reservation's, and
//! another client's lease on the same address has another client.
//!
//! The served reservations come from the files dnsmasq read ([`reservations_in`]: the
//! dhcp-hostsfile, or the `dhcp-host=` lines of the conf layout) or, with the incremental layout,
//! from the planner's model of dnsmasq's memory, which keeps a removed or moved reservation
//! served until the compaction.
//!
//! A reservation is keyed by its [`Client`] and address: each MAC of a `dhcp-host` line, and its
//! client identifier (`id:`, a client-id or DUID), which [`Lease::candidates`] matches against
//! the lease's client-id field. The rule is the same for both families: a DHCPv6 lease names no
//! MAC, so only a reservation by DUID (`id:`) is ever the one of a DHCPv6 lease.

use std::collections::BTreeSet;

use crate::client_id::ClientId;
use std::net::{IpAddr, Ipv6Addr};

/// Who a reservation is for, as dnsmasq matches the client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Client {
    Mac([u8; 6]),
    /// A client-id (DHCPv4) or DUID (DHCPv6): dnsmasq's `id:`, matched before MACs.
    Id(ClientId),
}

/// One address dnsmasq reserves for one client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reservation {
    pub client: Client,
    pub ip: IpAddr,
}

impl Reservation {
    pub fn mac(mac: [u8; 6], ip: IpAddr) -> Reservation {
        Reservation {
            client: Client::Mac(mac),
            ip,
        }
    }
}

/// Reservations in order, each once.
pub type Reservations = BTreeSet<Reservation>;

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    /// The hardware address of a DHCPv4 lease over Ethernet (`aa:bb:…`); DHCPv6 leases and
    /// other hardware types have none.
    pub mac: Option<[u8; 6]>,
    /// The client-id (DHCPv4) or DUID (DHCPv6) as written, hex with colons; `None` for `*`.
    pub client_id: Option<String>,
    /// The hostname the lease gives DNS; `None` for `*`.
    pub hostname: Option<String>,
    /// What else `dhcp_release6` needs for a DHCPv6 lease; `None` for DHCPv4.
    pub v6: Option<V6Lease>,
}

/// The identifiers of a DHCPv6 lease besides its address and client DUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Lease {
    /// The IAID of the client's IA_NA; `None` for a temporary address (IA_TA, written `T…`),
    /// which is never a reservation's and which `dhcp_release6` cannot release.
    pub iaid: Option<u32>,
    /// dnsmasq's own DUID, from the file's `duid` line; `None` when the file has none.
    pub server_duid: Option<String>,
}

impl Lease {
    /// The reservations this can be the lease of: its address for each way its client is
    /// identified, its MAC (a DHCPv6 lease names none) and its client-id or DUID.
    pub fn candidates(&self) -> Vec<Reservation> {
        let id = self
            .client_id
            .as_deref()
            .and_then(|text| crate::client_id::parse(text).ok())
            .map(Client::Id);
        self.mac
            .map(Client::Mac)
            .into_iter()
            .chain(id)
            .map(|client| Reservation {
                client,
                ip: self.ip,
            })
            .collect()
    }
}

/// Parses dnsmasq's lease file: `EXPIRY MAC IP HOSTNAME CLIENT-ID` per DHCPv4 lease; after a
/// `duid SERVER-DUID` line, `EXPIRY IAID IP HOSTNAME DUID` per DHCPv6 lease. Lines that are
/// neither are skipped: the file is dnsmasq's, and one odd line must not hide the others.
pub fn parse_lease_file(text: &str) -> Vec<Lease> {
    let mut server_duid = None;
    text.lines()
        .filter_map(|line| match line.strip_prefix("duid ").map(str::trim) {
            Some(duid) => {
                server_duid = crate::client_id::parse(duid).ok().map(|_| duid.to_owned());
                None
            }
            None => parse_lease(line, server_duid.as_deref()),
        })
        .collect()
}

/// One lease line; `server_duid` is the `duid` line's, which dnsmasq writes before its DHCPv6
/// leases.
fn parse_lease(line: &str, server_duid: Option<&str>) -> Option<Lease> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [expiry, hardware, ip, hostname, client_id] = fields[..] else {
        return None;
    };
    expiry.parse::<u64>().ok()?;
    let ip: IpAddr = ip.parse().ok()?;
    let star = |field: &str| (field != "*").then(|| field.to_owned());
    let (mac, v6) = match ip {
        IpAddr::V4(_) => (crate::mac::parse(hardware).ok(), None),
        // The second field of a DHCPv6 lease is its IAID.
        IpAddr::V6(_) => (
            None,
            Some(V6Lease {
                iaid: hardware.parse::<u32>().ok(),
                server_duid: server_duid.map(str::to_owned),
            }),
        ),
    };
    Some(Lease {
        ip,
        mac,
        client_id: star(client_id),
        hostname: star(hostname),
        v6,
    })
}

/// The reservations of rendered reservation lines: a dhcp-hostsfile (`MAC,[set:…,]IP,name…`),
/// or a conf-layout include file, whose reservations are its `dhcp-host=` lines.
pub fn reservations_in(text: &str) -> BTreeSet<Reservation> {
    text.lines()
        .filter_map(|line| {
            // A hostsfile line has no `=`; in a conf file only `dhcp-host=` lines reserve.
            let fields = match line.strip_prefix("dhcp-host=") {
                Some(fields) => fields,
                None if !line.contains('=') && !line.starts_with('#') => line,
                None => return None,
            };
            let fields: Vec<&str> = fields.split(',').collect();
            let at = fields.iter().position(|f| address_field(f).is_some())?;
            let ip = address_field(fields[at])?;
            // Only the fields before the address: a hostname may look like a MAC.
            let clients: Vec<Client> = fields[..at]
                .iter()
                .filter_map(|f| match f.strip_prefix("id:") {
                    Some(id) => crate::client_id::parse(id).ok().map(Client::Id),
                    // The renderer writes `aa:bb:cc:dd:ee:ff`; `set:` fields are not MACs.
                    None if f.len() == 17 => crate::mac::parse(f).ok().map(Client::Mac),
                    None => None,
                })
                .collect();
            Some(
                clients
                    .into_iter()
                    .map(move |client| Reservation { client, ip }),
            )
        })
        .flatten()
        .collect()
}

/// An address field of a `dhcp-host` line: an IPv4 address, or an IPv6 one in brackets.
fn address_field(field: &str) -> Option<IpAddr> {
    if let Some(v6) = field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    field.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The reservations still to be released once dnsmasq went from serving `before` to serving
/// `after`: those of `pending` (earlier ones not released yet) and those `before` served and
/// `after` does not, except any `after` serves (a reservation put back needs no release).
pub fn carry(
    pending: &BTreeSet<Reservation>,
    before: &BTreeSet<Reservation>,
    after: &BTreeSet<Reservation>,
) -> BTreeSet<Reservation> {
    pending
        .iter()
        .chain(before.difference(after))
        .filter(|r| !after.contains(*r))
        .cloned()
        .collect()
}

/// The leases to release for `stale` reservations: each lease whose client holds the address of
/// one of them. Every other lease (dynamic, another client's) is left alone.
pub fn leases_to_release<'a>(stale: &Reservations, leases: &'a [Lease]) -> Vec<&'a Lease> {
    leases
        .iter()
        .filter(|lease| lease.candidates().iter().any(|r| stale.contains(r)))
        .collect()
}

/// The arguments after the release command that release `lease` from `interface`:
/// `dhcp_release`'s `IFACE IP MAC [CLIENT-ID]` for a DHCPv4 lease, `dhcp_release6`'s
/// `--iface IFACE --client-id DUID --server-id DUID --iaid IAID --ip IP` for a DHCPv6 one.
/// `Err`: what the lease lacks to be released.
pub fn release_arguments(lease: &Lease, interface: &str) -> Result<Vec<String>, &'static str> {
    let (interface, ip) = (interface.to_owned(), lease.ip.to_string());
    let Some(v6) = &lease.v6 else {
        let mac = lease.mac.ok_or("the DHCPv4 lease names no Ethernet MAC")?;
        let mac = crate::mac::Mac(mac).to_string();
        return Ok([interface, ip, mac]
            .into_iter()
            .chain(lease.client_id.clone())
            .collect());
    };
    let client = lease
        .client_id
        .clone()
        .ok_or("the lease names no client DUID")?;
    let server = v6
        .server_duid
        .clone()
        .ok_or("the lease file has no server DUID (duid line)")?;
    let iaid = v6.iaid.ok_or("the lease is a temporary address (IA_TA)")?;
    let options = ["--iface", "--client-id", "--server-id", "--iaid", "--ip"];
    let values = [interface, client, server, iaid.to_string(), ip];
    Ok(options
        .into_iter()
        .zip(values)
        .flat_map(|(option, value)| [option.to_owned(), value])
        .collect())
}

/// An address of one of the host's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub address: IpAddr,
    pub netmask: IpAddr,
}

/// The interface `dhcp_release` sends from for a lease on `ip`: the first one with an address
/// in the same network (dnsmasq answers the release on the interface it serves that network on).
pub fn interface_for(ip: IpAddr, interfaces: &[Interface]) -> Option<&str> {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    interfaces
        .iter()
        .find(|i| {
            i.address.is_ipv4() == ip.is_ipv4()
                && i.netmask.is_ipv4() == ip.is_ipv4()
                && bits(i.address) & bits(i.netmask) == bits(ip) & bits(i.netmask)
        })
        .map(|i| i.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn set(items: &[Reservation]) -> BTreeSet<Reservation> {
        items.iter().cloned().collect()
    }

    const LEASES: &str = "\
1764600000 52:54:00:00:00:0a 10.0.0.10 alpha 01:52:54:00:00:00:0a
1764600000 52:54:00:00:00:0b 10.0.0.11 * *
0 52:54:00:00:00:0c 10.0.0.150 dyn *
duid 00:01:00:01:2c:00:00:01:52:54:00:00:00:01
1764600000 1234 fd00::10 alpha6 00:03:00:01:52:54:00:00:00:0a
garbage line
";

    #[test]
    fn the_lease_file_gives_each_lease_its_client_and_address() {
        let leases = parse_lease_file(LEASES);
        assert_eq!(leases.len(), 4);
        assert_eq!(leases[0].mac, Some(A));
        assert_eq!(leases[0].ip, ip("10.0.0.10"));
        assert_eq!(leases[0].hostname.as_deref(), Some("alpha"));
        assert_eq!(leases[0].client_id.as_deref(), Some("01:52:54:00:00:00:0a"));
        assert_eq!(
            (leases[1].hostname.clone(), leases[1].client_id.clone()),
            (None, None)
        );
        // An infinite lease has expiry 0; a DHCPv6 lease has no MAC, only its DUID.
        assert_eq!(leases[2].ip, ip("10.0.0.150"));
        assert_eq!(leases[3].mac, None);
        assert_eq!(
            leases[3].client_id.as_deref(),
            Some("00:03:00:01:52:54:00:00:00:0a")
        );
    }

    #[test]
    fn reservations_are_read_from_hostsfile_and_conf_lines() {
        let hostsfile = "52:54:00:00:00:0a,10.0.0.10,alpha\n\
                         52:54:00:00:00:0b,set:profile3,10.0.0.11,beta,3600\n\
                         52:54:00:00:00:0a,[fd00::10],alpha6\n";
        let expected = set(&[
            Reservation::mac(A, ip("10.0.0.10")),
            Reservation::mac(A, ip("fd00::10")),
            Reservation::mac(B, ip("10.0.0.11")),
        ]);
        assert_eq!(reservations_in(hostsfile), expected);
        let conf = "# generated\ndhcp-range=set:subnet1,10.0.0.100,10.0.0.200,255.255.255.0\n\
                    dhcp-option=tag:subnet1,option:router,10.0.0.1\n\
                    dhcp-host=52:54:00:00:00:0a,10.0.0.10,alpha\n\
                    dhcp-host=52:54:00:00:00:0b,set:profile3,10.0.0.11,beta,3600\n\
                    dhcp-host=52:54:00:00:00:0a,[fd00::10],alpha6\n\
                    host-record=alpha.example.com,deadbeef0001,10.0.0.10\n";
        assert_eq!(reservations_in(conf), expected);
    }

    #[test]
    fn several_macs_and_an_identifier_are_each_a_client() {
        let line =
            "id:00:03:00:01:52:54:00:00:00:0a,52:54:00:00:00:0a,52:54:00:00:00:0b,[fd00::10],pc\n";
        let id = crate::client_id::parse("00:03:00:01:52:54:00:00:00:0a").unwrap();
        let by_id = Reservation {
            client: Client::Id(id),
            ip: ip("fd00::10"),
        };
        assert_eq!(
            reservations_in(line),
            set(&[
                Reservation::mac(A, ip("fd00::10")),
                Reservation::mac(B, ip("fd00::10")),
                by_id.clone(),
            ])
        );
        // A DHCPv6 lease names its client by DUID only.
        let leases = parse_lease_file(
            "duid 00:01:00:01:2c:00:00:01:52:54:00:00:00:01\n\
             1700000000 11259139 fd00::10 pc 00:03:00:01:52:54:00:00:00:0a\n",
        );
        assert!(leases[0].candidates().contains(&by_id));
        assert!(!leases[0]
            .candidates()
            .contains(&Reservation::mac(A, ip("fd00::10"))));
    }

    #[test]
    fn a_reservation_no_longer_served_is_pending_until_released_or_served_again() {
        let a10 = Reservation::mac(A, ip("10.0.0.10"));
        let b10 = Reservation::mac(B, ip("10.0.0.10"));
        let b11 = Reservation::mac(B, ip("10.0.0.11"));
        // The address moves from A to B, B leaves .11: A's .10 and B's .11 are stale.
        let pending = carry(
            &set(&[]),
            &set(&[a10.clone(), b11.clone()]),
            &set(std::slice::from_ref(&b10)),
        );
        assert_eq!(pending, set(&[a10.clone(), b11.clone()]));
        // Not released yet, and .11 is given back to B: only A's .10 stays pending.
        let pending = carry(
            &pending,
            &set(std::slice::from_ref(&b10)),
            &set(&[b10, b11]),
        );
        assert_eq!(pending, set(&[a10]));
    }

    #[test]
    fn only_the_stale_clients_own_leases_are_released() {
        let leases = parse_lease_file(LEASES);
        let stale = set(&[
            // A's reserved lease: released.
            Reservation::mac(A, ip("10.0.0.10")),
            // B leases .11, not .12: nothing.
            Reservation::mac(B, ip("10.0.0.12")),
            // Another client holds .150 dynamically: untouched.
            Reservation::mac(B, ip("10.0.0.150")),
            // A DHCPv6 lease names no MAC: a MAC reservation never matches it.
            Reservation::mac(A, ip("fd00::10")),
        ]);
        let released: Vec<IpAddr> = leases_to_release(&stale, &leases)
            .iter()
            .map(|l| l.ip)
            .collect();
        assert_eq!(released, vec![ip("10.0.0.10")]);
    }

    const SERVER: &str = "00:01:00:01:2c:00:00:01:52:54:00:00:00:01";
    const DUID_A: &str = "00:03:00:01:52:54:00:00:00:0a";
    const DUID_B: &str = "00:03:00:01:52:54:00:00:00:0b";

    fn by_duid(duid: &str, address: &str) -> Reservation {
        Reservation {
            client: Client::Id(crate::client_id::parse(duid).unwrap()),
            ip: ip(address),
        }
    }

    #[test]
    fn a_dhcpv6_lease_has_its_iaid_and_the_server_duid_of_the_file() {
        let leases = parse_lease_file(&format!(
            "1700000000 7 fd00::9 early {DUID_A}\n\
             duid {SERVER}\n\
             1700000000 11259139 fd00::10 pc {DUID_A}\n\
             1700000000 T42 fd00::77 * {DUID_B}\n"
        ));
        let v6 = |iaid, server: Option<&str>| {
            Some(V6Lease {
                iaid,
                server_duid: server.map(str::to_owned),
            })
        };
        // Before the duid line there is no server DUID; `T…` is a temporary address.
        let expected = [
            (Some(7), None),
            (Some(11259139), Some(SERVER)),
            (None, Some(SERVER)),
        ];
        for (lease, (iaid, server)) in leases.iter().zip(expected) {
            assert_eq!(lease.v6, v6(iaid, server), "{lease:?}");
        }
        assert_eq!(leases.len(), 3);
        assert_eq!(leases[1].client_id.as_deref(), Some(DUID_A));
        assert_eq!(parse_lease_file(LEASES)[0].v6, None, "a DHCPv4 lease");
    }

    #[test]
    fn a_stale_dhcpv6_reservation_releases_only_its_clients_lease_by_duid() {
        let leases = parse_lease_file(&format!(
            "duid {SERVER}\n\
             1700000000 1 fd00::10 pc {DUID_A}\n\
             1700000000 2 fd00::11 other {DUID_B}\n\
             1700000000 3 fd00::150 dyn {DUID_B}\n"
        ));
        let stale = set(&[
            by_duid(DUID_A, "fd00::10"),
            // B holds .11, but the stale reservation of .11 was A's: B's lease stays.
            by_duid(DUID_A, "fd00::11"),
            // A DHCPv6 lease names no MAC: a MAC reservation never matches it.
            Reservation::mac(B, ip("fd00::150")),
        ]);
        let released: Vec<IpAddr> = leases_to_release(&stale, &leases)
            .iter()
            .map(|l| l.ip)
            .collect();
        assert_eq!(released, vec![ip("fd00::10")]);
    }

    #[test]
    fn the_release_arguments_are_dhcp_release_s_or_dhcp_release6_s() {
        let text = format!("{LEASES}1700000000 T9 fd00::99 * {DUID_B}\n");
        let leases = parse_lease_file(&text);
        let args = |lease: &Lease| release_arguments(lease, "eth1");
        let words = |text: &str| -> Vec<String> { text.split(' ').map(String::from).collect() };
        assert_eq!(
            args(&leases[0]),
            Ok(words(
                "eth1 10.0.0.10 52:54:00:00:00:0a 01:52:54:00:00:00:0a"
            ))
        );
        assert_eq!(
            args(&leases[1]),
            Ok(words("eth1 10.0.0.11 52:54:00:00:00:0b"))
        );
        assert_eq!(
            args(&leases[3]),
            Ok(words(&format!(
                "--iface eth1 --client-id {DUID_A} --server-id {SERVER} --iaid 1234 --ip fd00::10"
            )))
        );
        assert!(args(&leases[4]).unwrap_err().contains("temporary"));
        let no_server = parse_lease_file(&format!("1700000000 1 fd00::10 pc {DUID_A}\n"));
        assert!(args(&no_server[0]).unwrap_err().contains("server DUID"));
        let no_mac = parse_lease_file("1700000000 00:01:02 10.0.0.5 * 01:02:03\n");
        assert!(args(&no_mac[0]).unwrap_err().contains("no Ethernet MAC"));
    }

    #[test]
    fn the_interface_is_the_one_in_the_leases_network() {
        let interface = |name: &str, address: &str, netmask: &str| Interface {
            name: name.to_owned(),
            address: ip(address),
            netmask: ip(netmask),
        };
        let interfaces = [
            interface("lo", "127.0.0.1", "255.0.0.0"),
            interface("eth0", "192.168.1.2", "255.255.255.0"),
            interface("eth1", "10.0.0.1", "255.255.255.0"),
            interface("eth1", "fd00::1", "ffff:ffff:ffff:ffff::"),
        ];
        assert_eq!(interface_for(ip("10.0.0.10"), &interfaces), Some("eth1"));
        assert_eq!(interface_for(ip("192.168.1.77"), &interfaces), Some("eth0"));
        assert_eq!(interface_for(ip("fd00::10"), &interfaces), Some("eth1"));
        assert_eq!(interface_for(ip("10.0.1.10"), &interfaces), None);
    }
}
