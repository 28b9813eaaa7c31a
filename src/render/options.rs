//! DHCP options and PXE boot profiles in the include file, and which profile a host's
//! reservation line names.
//!
//! ```text
//! dhcp-option=tag:subnet<id>[,tag:!profile<p>…],<number>,<value>     a subnet's DHCPv4 option
//! dhcp-option=tag:subnet<id>,option6:<number>,<value>                a subnet's DHCPv6 option
//! # client architectures and iPXE (once, when a profile has a boot file)
//! dhcp-match=set:ipm-efi64,option:client-arch,7     (and 9: UEFI x86-64)
//! dhcp-match=set:ipm-arm64,option:client-arch,11    (UEFI ARM64)
//! dhcp-match=set:ipm-ipxe,175                       (iPXE sends option 175)
//! dhcp-userclass=set:ipm-ipxe,iPXE
//! # profile <id>
//! dhcp-option=tag:profile<id>,<number>,<value>
//! dhcp-boot=tag:profile<id>,<conditions>,<file>[,<server name>[,<next server>]]
//! ```
//!
//! Options are written by number, so that dnsmasq encodes the ones it knows (every option the
//! database's catalogue names) by its own table. For numbers it does not know it would guess the
//! encoding from the text, so those values are written so that the guess is exact: integers and
//! booleans wider than a byte, domain lists and classless routes as hex bytes. Strings are
//! always quoted; IPv6 addresses bracketed. A subnet's option is not sent to hosts of a profile
//! that sets the same option (`tag:!profile<p>`), so that the profile's wins whatever order
//! dnsmasq would pick. For classless static routes (121) the subnet's gateway is added as the
//! default route when the routes have none: RFC 3442 clients ignore the router option when they
//! get 121.
//!
//! The `dhcp-boot` lines of a profile have conditions that exclude each other, so that no more
//! than one matches: the iPXE file for clients that are iPXE already, then by architecture,
//! the BIOS file for the rest (also clients that send no architecture).
//!
//! Tags are derived from ids (`subnet<id>`, `profile<id>`) and fixed words; no name an admin
//! chooses is ever written.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::{lines, validate, Row, Skipped};
use crate::model::{
    DhcpOptionValue, Extras, Host, HostSettings, OptionKind, Profile, Subnet, SubnetSettings,
};

/// Set for UEFI x86-64 clients (client architecture 7 or 9).
const EFI64: &str = "ipm-efi64";
/// Set for UEFI ARM64 clients (client architecture 11).
const ARM64: &str = "ipm-arm64";
/// Set for clients that are iPXE already (option 175, user class `iPXE`).
const IPXE: &str = "ipm-ipxe";

/// What the renderer knows about profiles, subnet settings and host settings of a snapshot.
pub(super) struct Settings<'a> {
    /// Profiles that pass [`validate::profile`], by id.
    profiles: BTreeMap<i64, &'a Profile>,
    subnets: HashMap<i64, &'a SubnetSettings>,
    hosts: HashMap<i64, &'a HostSettings>,
}

impl<'a> Settings<'a> {
    /// Indexes `extras`; a profile that fails validation is listed in `skipped` and its hosts
    /// are served without it.
    pub(super) fn new(extras: &'a Extras, skipped: &mut Vec<Skipped>) -> Self {
        Self::from_parts(&extras.profiles, &extras.subnets, &extras.hosts, skipped)
    }

    /// [`Settings::new`] from the parts of an [`Extras`]: the host settings of only some hosts
    /// serve those hosts alike.
    pub(super) fn from_parts(
        profiles_of: &'a [Profile],
        subnets: &'a [SubnetSettings],
        hosts: &'a [HostSettings],
        skipped: &mut Vec<Skipped>,
    ) -> Self {
        let mut profiles = BTreeMap::new();
        for profile in profiles_of {
            match validate::profile(profile) {
                Ok(()) => {
                    profiles.insert(profile.id, profile);
                }
                Err(reason) => skipped.push(Skipped {
                    row: Row::Profile(profile.id),
                    reason,
                }),
            }
        }
        Settings {
            profiles,
            subnets: subnets.iter().map(|s| (s.subnet_id, s)).collect(),
            hosts: hosts.iter().map(|h| (h.host_id, h)).collect(),
        }
    }

    /// The profile a host's line names: its own, else its subnet's default; only a served one.
    pub(super) fn profile_of(&self, host: &Host) -> Option<i64> {
        if self.profiles.is_empty() {
            return None;
        }
        self.hosts
            .get(&host.id)
            .and_then(|h| h.profile)
            .or_else(|| self.subnets.get(&host.subnet_id)?.default_profile)
            .filter(|id| self.profiles.contains_key(id))
    }

    /// The hosts of `hosts` that have a client identifier or extra MACs.
    pub(super) fn hosts_with_idents<'h>(
        &self,
        hosts: &'h [Host],
    ) -> impl Iterator<Item = &'h Host> {
        let with: std::collections::HashSet<i64> = self
            .hosts
            .values()
            .filter(|h| h.client_id.is_some() || !h.macs.is_empty())
            .map(|h| h.host_id)
            .collect();
        hosts
            .iter()
            .filter(move |h| !with.is_empty() && with.contains(&h.id))
    }

    /// The host's client identifier, extra MACs and profile, for its reservation line.
    pub(super) fn ident_of(&self, host: &Host) -> lines::Ident<'a> {
        let profile = self.profile_of(host);
        // Most snapshots have no host settings: skip the hashing then.
        let settings = (!self.hosts.is_empty())
            .then(|| self.hosts.get(&host.id).copied())
            .flatten();
        match settings {
            Some(h) => lines::Ident {
                client_id: h.client_id.as_ref(),
                macs: &h.macs,
                profile,
            },
            _ => lines::Ident {
                profile,
                ..lines::Ident::default()
            },
        }
    }

    /// The host's aliases.
    pub(super) fn aliases_of(&self, host_id: i64) -> &'a [String] {
        // Most snapshots have no host settings: 100k lookups in an empty map still hash.
        if self.hosts.is_empty() {
            return &[];
        }
        self.hosts.get(&host_id).map_or(&[], |h| &h.aliases[..])
    }

    /// Appends the subnet's option lines (after its block); an option that fails
    /// [`validate::option_value`] or would make too long a line is left out and listed.
    pub(super) fn subnet_options(
        &self,
        out: &mut String,
        subnet: &Subnet,
        skipped: &mut Vec<Skipped>,
    ) {
        let Some(settings) = self.subnets.get(&subnet.id) else {
            return;
        };
        let v6 = subnet.cidr.is_ipv6();
        for option in &settings.options {
            let mut conditions = format!("tag:{}{}", lines::SUBNET_TAG, subnet.id);
            if !v6 {
                for (id, profile) in &self.profiles {
                    if profile.options.iter().any(|o| o.number == option.number) {
                        let _ = write!(conditions, ",tag:!profile{id}");
                    }
                }
            }
            let gateway = subnet.gateway.filter(|_| !v6);
            let written = validate::option_value(option, v6)
                .and_then(|()| option_line(out, &conditions, option, v6, gateway));
            if let Err(reason) = written {
                skipped.push(Skipped {
                    row: Row::SubnetOption {
                        subnet: subnet.id,
                        number: option.number,
                    },
                    reason,
                });
            }
        }
    }

    /// Appends the architecture matches (when any profile boots) and every profile's block.
    pub(super) fn profile_blocks(&self, out: &mut String, skipped: &mut Vec<Skipped>) {
        if self.profiles.values().any(|p| boots(p)) {
            out.push_str("# client architectures and iPXE, for the profiles' dhcp-boot\n");
            for arch in [7, 9] {
                let _ = writeln!(out, "dhcp-match=set:{EFI64},option:client-arch,{arch}");
            }
            let _ = writeln!(out, "dhcp-match=set:{ARM64},option:client-arch,11");
            let _ = writeln!(out, "dhcp-match=set:{IPXE},175");
            let _ = writeln!(out, "dhcp-userclass=set:{IPXE},iPXE");
        }
        for (id, profile) in &self.profiles {
            let _ = writeln!(out, "# profile {id}");
            let tag = format!("tag:profile{id}");
            for option in &profile.options {
                let written = validate::option_value(option, false)
                    .and_then(|()| option_line(out, &tag, option, false, None));
                if let Err(reason) = written {
                    skipped.push(Skipped {
                        row: Row::ProfileOption {
                            profile: *id,
                            number: option.number,
                        },
                        reason,
                    });
                }
            }
            boot_lines(out, &tag, profile);
        }
    }
}

/// Whether a profile has any boot file.
fn boots(profile: &Profile) -> bool {
    [
        &profile.boot_file,
        &profile.boot_file_uefi,
        &profile.boot_file_arm64,
        &profile.boot_file_ipxe,
    ]
    .iter()
    .any(|f| f.is_some())
}

/// `dhcp-boot` lines whose conditions exclude each other (see the module documentation).
fn boot_lines(out: &mut String, tag: &str, profile: &Profile) {
    let not_ipxe = if profile.boot_file_ipxe.is_some() {
        format!(",tag:!{IPXE}")
    } else {
        String::new()
    };
    let cases = [
        (format!(",tag:{IPXE}"), &profile.boot_file_ipxe),
        (format!("{not_ipxe},tag:{EFI64}"), &profile.boot_file_uefi),
        (format!("{not_ipxe},tag:{ARM64}"), &profile.boot_file_arm64),
        (
            format!("{not_ipxe},tag:!{EFI64},tag:!{ARM64}"),
            &profile.boot_file,
        ),
    ];
    for (conditions, file) in cases {
        let Some(file) = file else { continue };
        let _ = write!(out, "dhcp-boot={tag}{conditions},{file}");
        match (&profile.tftp_server_name, profile.next_server) {
            (Some(name), Some(ip)) => {
                let _ = write!(out, ",{name},{ip}");
            }
            (Some(name), None) => {
                let _ = write!(out, ",{name}");
            }
            (None, Some(ip)) => {
                let _ = write!(out, ",,{ip}");
            }
            (None, None) => {}
        }
        out.push('\n');
    }
}

/// `dhcp-option=<conditions>,[option6:]<number>,<value>`, or nothing if it would be too long.
fn option_line(
    out: &mut String,
    conditions: &str,
    option: &DhcpOptionValue,
    v6: bool,
    gateway: Option<std::net::IpAddr>,
) -> Result<(), String> {
    let start = out.len();
    let _ = write!(out, "dhcp-option={conditions},");
    if v6 {
        out.push_str("option6:");
    }
    let _ = write!(out, "{},", option.number);
    push_value(out, option);
    // Only where dnsmasq encodes the routes itself (option 121, known): a hex value is final.
    let routes = option.kind == OptionKind::ClasslessRoutes && option.name.is_some();
    if let (true, Some(gateway)) = (routes, gateway) {
        let has_default = option
            .value
            .split(',')
            .step_by(2)
            .any(|network| network == "0.0.0.0/0");
        if !has_default {
            let _ = write!(out, ",0.0.0.0/0,{gateway}");
        }
    }
    out.push('\n');
    if lines::fits(out, start) {
        Ok(())
    } else {
        out.truncate(start);
        Err(format!(
            "option {}: its line would reach {} bytes, which dnsmasq splits",
            option.number,
            validate::MAX_LINE_BYTES
        ))
    }
}

/// The value in the spelling dnsmasq reads exactly (see the module documentation).
fn push_value(out: &mut String, option: &DhcpOptionValue) {
    let known = option.name.is_some();
    let value = option.value.as_str();
    match option.kind {
        OptionKind::String => {
            let _ = write!(out, "\"{value}\"");
        }
        OptionKind::Ipv6List => {
            let items: Vec<String> = value.split(',').map(|ip| format!("[{ip}]")).collect();
            out.push_str(&items.join(","));
        }
        OptionKind::Uint16 if !known => push_hex(out, &uint_bytes(value, 2)),
        OptionKind::Uint32 if !known => push_hex(out, &uint_bytes(value, 4)),
        OptionKind::DomainList if !known => push_hex(out, &domain_wire(value)),
        OptionKind::ClasslessRoutes if !known => push_hex(out, &routes_wire(value)),
        // One hex byte alone would read as text: its number is the same single byte.
        OptionKind::Hex if !value.contains(':') => {
            let _ = write!(out, "{}", u8::from_str_radix(value, 16).unwrap_or(0));
        }
        _ => out.push_str(value),
    }
}

/// A decimal number as `width` big-endian bytes (validated before: it fits).
fn uint_bytes(value: &str, width: usize) -> Vec<u8> {
    let n: u64 = value.parse().unwrap_or(0);
    n.to_be_bytes()[8 - width..].to_vec()
}

/// Domain names in DNS wire format (RFC 1035 3.1), as option 119 carries them.
fn domain_wire(value: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in value.split(',') {
        for label in name.split('.') {
            bytes.push(label.len() as u8);
            bytes.extend_from_slice(label.as_bytes());
        }
        bytes.push(0);
    }
    bytes
}

/// Classless routes in RFC 3442 form: prefix length, the significant octets, the router.
fn routes_wire(value: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (network, prefix, router) in validate::classless_routes(value).unwrap_or_default() {
        bytes.push(prefix);
        bytes.extend_from_slice(&network.octets()[..usize::from(prefix).div_ceil(8)]);
        bytes.extend_from_slice(&router.octets());
    }
    bytes
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(number: u16, name: Option<&str>, kind: OptionKind, value: &str) -> DhcpOptionValue {
        DhcpOptionValue {
            number,
            name: name.map(str::to_owned),
            kind,
            value: value.to_owned(),
        }
    }

    fn line(option: &DhcpOptionValue, v6: bool) -> String {
        let mut out = String::new();
        let gateway = Some("10.1.0.1".parse().unwrap());
        validate::option_value(option, v6).unwrap();
        option_line(&mut out, "tag:subnet1", option, v6, gateway).unwrap();
        out
    }

    #[test]
    fn values_are_spelled_so_that_dnsmasq_reads_them_exactly() {
        use OptionKind::*;
        for (opt, v6, expected) in [
            (
                option(6, Some("dns-server"), Ipv4List, "10.1.0.53,10.1.0.54"),
                false,
                "6,10.1.0.53,10.1.0.54",
            ),
            (
                option(
                    23,
                    Some("dns-server"),
                    Ipv6List,
                    "2001:db8::53,2001:db8::54",
                ),
                true,
                "option6:23,[2001:db8::53],[2001:db8::54]",
            ),
            (
                option(119, Some("domain-search"), DomainList, "a.example,b"),
                false,
                "119,a.example,b",
            ),
            (
                option(252, None, String, "http://wpad/wpad.dat"),
                false,
                "252,\"http://wpad/wpad.dat\"",
            ),
            (option(26, Some("mtu"), Uint16, "1400"), false, "26,1400"),
            (option(224, None, Uint16, "1400"), false, "224,05:78"),
            (option(224, None, Uint32, "1"), false, "224,00:00:00:01"),
            (option(224, None, Uint8, "7"), false, "224,7"),
            (option(224, None, Bool, "1"), false, "224,1"),
            (option(224, None, Hex, "de:ad"), false, "224,de:ad"),
            (option(224, None, Hex, "de"), false, "224,222"),
            (
                option(224, None, DomainList, "a.bc"),
                false,
                "224,01:61:02:62:63:00",
            ),
            (
                option(
                    121,
                    Some("classless-static-route"),
                    ClasslessRoutes,
                    "10.2.0.0/16,10.1.0.2",
                ),
                false,
                "121,10.2.0.0/16,10.1.0.2,0.0.0.0/0,10.1.0.1",
            ),
            (
                option(
                    121,
                    Some("classless-static-route"),
                    ClasslessRoutes,
                    "0.0.0.0/0,10.1.0.2",
                ),
                false,
                "121,0.0.0.0/0,10.1.0.2",
            ),
            (
                option(249, None, ClasslessRoutes, "10.2.0.0/16,10.1.0.2"),
                false,
                "249,10:0a:02:0a:01:00:02",
            ),
        ] {
            assert_eq!(
                line(&opt, v6),
                format!("dhcp-option=tag:subnet1,{expected}\n"),
                "{opt:?}"
            );
        }
    }

    #[test]
    fn boot_lines_exclude_each_other() {
        let profile = Profile {
            id: 3,
            name: "pxe".into(),
            boot_file: Some("pxelinux.0".into()),
            boot_file_uefi: Some("grubx64.efi".into()),
            boot_file_ipxe: Some("http://boot.example/menu.ipxe".into()),
            next_server: Some("10.1.0.5".parse().unwrap()),
            ..Profile::default()
        };
        let mut out = String::new();
        boot_lines(&mut out, "tag:profile3", &profile);
        assert_eq!(
            out,
            "dhcp-boot=tag:profile3,tag:ipm-ipxe,http://boot.example/menu.ipxe,,10.1.0.5\n\
             dhcp-boot=tag:profile3,tag:!ipm-ipxe,tag:ipm-efi64,grubx64.efi,,10.1.0.5\n\
             dhcp-boot=tag:profile3,tag:!ipm-ipxe,tag:!ipm-efi64,tag:!ipm-arm64,pxelinux.0,,10.1.0.5\n"
        );
    }
}
