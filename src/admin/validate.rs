//! Checks of admin input before the database is asked, worded exactly as the database's
//! triggers word them, so that the CLI and psql users read the same sentence for the same
//! mistake. The database stays the authority; these only save a round trip and catch input
//! that cannot even be sent. MAC addresses follow the one grammar of [`crate::mac`].

use std::net::IpAddr;
use std::time::Duration;

use cidr::IpCidr;

use crate::render::validate;

/// The rule text of `ipmanager.is_valid_dns_name`, as the triggers append it.
const DNS_NAME_RULE: &str = "only letters, digits and inner hyphens in dot-separated labels of \
    at most 63 characters, 253 in all, no trailing dot, last label not all digits (RFC 1123)";

/// PostgreSQL's literal quoting, as `quote_literal()` prints values in the triggers' messages.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A MAC address in any notation of [`crate::mac`] that can be reserved; the six octets.
pub fn mac(text: &str) -> Result<[u8; 6], String> {
    crate::mac::parse_reservable(text).map_err(|e| e.to_string())
}

/// True when `text` is a MAC address in one of the accepted notations (valid or not for a
/// reservation); used to tell `host show MAC|IP|NAME` arguments apart.
pub fn looks_like_mac(text: &str) -> bool {
    crate::mac::is_mac(text)
}

/// The canonical form PostgreSQL prints: lowercase, colon-separated.
pub fn format_mac(octets: &[u8; 6]) -> String {
    crate::mac::Mac(*octets).to_string()
}

/// A host name, with the two messages of the hosts_validate trigger.
pub fn hostname(name: &str) -> Result<(), String> {
    let last_label_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()));
    if validate::domain(name).is_err() || last_label_numeric {
        return Err(format!(
            "hosts.hostname {} is not a valid hostname: {DNS_NAME_RULE}",
            quote(name)
        ));
    }
    if validate::hostname(name).is_err() {
        return Err(format!(
            "hosts.hostname {} is not usable as a hostname: dnsmasq reads ignore, infinite and \
             digits with an s/m/h/d/w suffix as a keyword or lease time",
            quote(name)
        ));
    }
    Ok(())
}

/// A subnet's DNS domain.
pub fn domain(name: &str) -> Result<(), String> {
    let last_label_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()));
    if validate::domain(name).is_err() || last_label_numeric {
        return Err(format!(
            "subnets.domain {} is not a valid domain name: {DNS_NAME_RULE}",
            quote(name)
        ));
    }
    Ok(())
}

/// A subnet name.
pub fn subnet_name(name: &str) -> Result<(), String> {
    if crate::model::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "subnets.name {} is not a valid subnet name: 1 to 63 letters, digits, '-', '_' or \
             '.', starting with a letter or digit",
            quote(name)
        ))
    }
}

/// A lease time as admins write it (see [`crate::lease`]); infinite is
/// [`crate::lease::INFINITE`] seconds.
pub fn lease_time(column: &str, text: &str) -> Result<Duration, String> {
    crate::lease::parse(column, text.trim()).map(|seconds| Duration::from_secs(seconds as u64))
}

/// An IP address, in either family.
pub fn ip(column: &str, text: &str) -> Result<IpAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{column} {} is not an IP address: give e.g. 192.0.2.10 or 2001:db8::10",
            quote(text)
        )
    })
}

/// A network in CIDR notation; host bits must be zero, as PostgreSQL's cidr type demands.
pub fn cidr(text: &str) -> Result<IpCidr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "subnets.cidr {} is not a network: give it as address/prefix with the host bits zero, \
             e.g. 192.0.2.0/24 or 2001:db8:1::/64",
            quote(text)
        )
    })
}

/// The address-in-subnet rule, worded as `ipmanager.host_address_problem` words it.
pub fn host_address(
    column: &str,
    ip: IpAddr,
    subnet_name: &str,
    net: IpCidr,
) -> Result<(), String> {
    if validate::host_address(ip, net).is_ok() {
        return Ok(());
    }
    let family = |v4: bool| if v4 { 4 } else { 6 };
    Err(if ip.is_ipv4() != net.is_ipv4() {
        format!(
            "{column} {ip} is an IPv{} address but subnet {} ({net:#}) is IPv{}: an address must \
             be of its subnet's family (IPv4 and IPv6 never mix in one subnet)",
            family(ip.is_ipv4()),
            quote(subnet_name),
            family(net.is_ipv4())
        )
    } else if !net.contains(&ip) {
        format!(
            "{column} {ip} is outside subnet {} ({net:#}): an address must lie inside its subnet",
            quote(subnet_name)
        )
    } else {
        let which = if ip == net.first_address() {
            "network"
        } else {
            "broadcast"
        };
        format!(
            "{column} {ip} is the {which} address of subnet {} ({net:#}): in an IPv4 subnet \
             larger than /31 the network and broadcast addresses cannot be given to a machine",
            quote(subnet_name)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_get_the_triggers_words() {
        assert!(hostname("web-1.example").is_ok());
        assert_eq!(
            hostname("bad_name").unwrap_err(),
            format!("hosts.hostname 'bad_name' is not a valid hostname: {DNS_NAME_RULE}")
        );
        assert!(hostname("host.123")
            .unwrap_err()
            .contains("not a valid hostname"));
        assert!(hostname("12h")
            .unwrap_err()
            .contains("not usable as a hostname"));
        assert!(hostname("Ignore")
            .unwrap_err()
            .contains("not usable as a hostname"));
    }

    #[test]
    fn lease_times_accept_seconds_and_units_within_bounds() {
        assert_eq!(
            lease_time("hosts.lease_time", "3600").unwrap().as_secs(),
            3600
        );
        assert_eq!(
            lease_time("hosts.lease_time", "12h").unwrap().as_secs(),
            43_200
        );
        assert_eq!(
            lease_time("hosts.lease_time", "2h 30m").unwrap().as_secs(),
            9000
        );
        assert!(lease_time("hosts.lease_time", "60")
            .unwrap_err()
            .contains("is out of range"));
        assert!(lease_time("hosts.lease_time", "soon")
            .unwrap_err()
            .contains("is not a lease time"));
    }

    #[test]
    fn addresses_outside_or_at_the_edges_of_a_subnet_are_explained() {
        let net: IpCidr = "10.0.0.0/24".parse().unwrap();
        let check = |ip: &str| host_address("hosts.ip", ip.parse().unwrap(), "lan", net);
        assert!(check("10.0.0.5").is_ok());
        assert!(check("10.0.1.5")
            .unwrap_err()
            .contains("is outside subnet 'lan' (10.0.0.0/24)"));
        assert!(check("10.0.0.0")
            .unwrap_err()
            .contains("is the network address"));
        assert!(check("10.0.0.255")
            .unwrap_err()
            .contains("is the broadcast address"));
        assert!(check("2001:db8::1")
            .unwrap_err()
            .contains("is an IPv6 address"));
    }
}
