//! `ipmanager host …`: reservations from the shell.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{self, column, out, outln, Fit, Format, OutputArgs};
use super::sync::WaitArgs;
use super::Session;
use crate::admin::hosts::{self, HostChange, HostRow, NewHost, Placement};
use crate::admin::{validate, AdminError, HostQuery};
use crate::client_id::ClientId;

const HOST_EXAMPLES: &str = "\
Examples:
  ipmanager host add --mac 52:54:00:12:34:56 --hostname printer --subnet office
  ipmanager host add --mac 5254.0012.3457 --hostname nas --ip 10.1.0.20 --wait
  ipmanager host add --hostname vip1 --ip 10.1.0.60      a DNS-only name (no MAC)
  ipmanager host add --mac 52:54:00:12:34:58 --mac 52:54:00:12:34:59 --hostname laptop --subnet office
                                                         wired and wireless: one address
  ipmanager host set laptop --client-id 00:01:00:01:2c:5e:11:22:52:54:00:12:34:58
  ipmanager host set laptop --mac 52:54:00:12:34:58      its MACs are now this one only
  ipmanager host set printer --alias laser,print-server --profile pxe-uefi
  ipmanager host set printer --no-aliases --no-profile
  ipmanager host set printer --ip 10.1.0.30 --comment 'moved to 2nd floor'
  ipmanager host show 52:54:00:12:34:56
  ipmanager host list --subnet office --search print -o json
  ipmanager host rm 10.1.0.30
  ipmanager host rm name:deadbeef0001        a name that is also a MAC address";

/// Add, change, remove, show and list DHCP reservations.
#[derive(Debug, Subcommand)]
#[command(after_help = HOST_EXAMPLES)]
pub enum HostCommand {
    /// Reserve an address for a MAC: the one given with --ip, or the next free address of a
    /// subnet (outside its dynamic range; never the gateway, network or broadcast address).
    /// Without --mac the name is DNS-only: served in DNS, never in DHCP, its address reserved.
    #[command(after_help = HOST_EXAMPLES)]
    Add(AddArgs),
    /// Change a reservation's IP, MACs, client identifier, name, aliases, profile, enabled state, lease time or
    /// comment.
    #[command(after_help = HOST_EXAMPLES)]
    Set(SetArgs),
    /// Remove a reservation.
    #[command(after_help = HOST_EXAMPLES)]
    Rm(RmArgs),
    /// Show the reservations a MAC address, IP address or host name refers to.
    #[command(after_help = HOST_EXAMPLES)]
    Show(ShowArgs),
    /// List reservations.
    #[command(after_help = HOST_EXAMPLES)]
    List(ListArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("address").required(true).multiple(true).args(["ip", "subnet"]))]
pub struct AddArgs {
    /// Hardware address: 52:54:00:12:34:56, 8:0:20:1:2:3, 52-54-00-12-34-56, 5254.0012.3456 or
    /// 525400123456. Repeat it (or separate by commas) for a client with several interfaces:
    /// whichever asks gets the address; the first is the primary MAC. Without it the name is
    /// DNS-only (never offered by DHCP).
    #[arg(long, value_name = "MAC", value_delimiter = ',')]
    mac: Vec<String>,
    /// The client identifier the client sends (DHCPv4 client-id, option 61) or its DHCPv6
    /// DUID, as hex octets separated by colons: matched before the MACs. Needs --mac.
    #[arg(long, value_name = "HEX", requires = "mac")]
    client_id: Option<String>,
    /// Host name (RFC 1123; unique within the subnet with the aliases, ignoring case).
    #[arg(long)]
    hostname: String,
    /// Extra DNS names of the address, separated by commas (the PTR stays the host name).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    alias: Vec<String>,
    /// The profile (DHCP options and PXE boot settings) of the host; without it, its subnet's
    /// default profile applies.
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// The address to reserve; its subnet is the enabled subnet containing it.
    #[arg(long)]
    ip: Option<String>,
    /// Subnet (name or CIDR) to allocate the next free address in; with --ip, the subnet the
    /// address must belong to.
    #[arg(long)]
    subnet: Option<String>,
    /// Lease time for this host, e.g. 12h, 3600 or infinite (default: the subnet's).
    #[arg(long, value_name = "DURATION")]
    lease_time: Option<String>,
    /// Free text for admins; never served.
    #[arg(long)]
    comment: Option<String>,
    /// Store the reservation without serving it yet.
    #[arg(long)]
    disabled: bool,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The reservation: its MAC address, IP address or host name. Text that could be more than
    /// one of them (deadbeef0001) needs a prefix when both match: mac:, ip: or name:.
    host: String,
    /// Only look in this subnet (name or CIDR), for a MAC or name reserved in several.
    #[arg(long)]
    subnet: Option<String>,
    /// New address; one outside the current subnet moves the host to the subnet containing it.
    #[arg(long)]
    ip: Option<String>,
    /// The reservation's MACs, replacing the ones it has (repeat it, or separate by commas; the
    /// first is the primary MAC).
    #[arg(long, value_name = "MAC", value_delimiter = ',')]
    mac: Vec<String>,
    /// New client identifier (client-id or DUID, hex octets separated by colons).
    #[arg(long, value_name = "HEX", conflicts_with = "no_client_id")]
    client_id: Option<String>,
    /// Remove the client identifier: the client is matched by MAC only.
    #[arg(long)]
    no_client_id: bool,
    /// New host name.
    #[arg(long)]
    hostname: Option<String>,
    /// The host's aliases, separated by commas: replaces the ones it has.
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        conflicts_with = "no_aliases"
    )]
    alias: Option<Vec<String>>,
    /// Remove every alias of the host.
    #[arg(long)]
    no_aliases: bool,
    /// Put the host in this profile.
    #[arg(long, value_name = "PROFILE", conflicts_with = "no_profile")]
    profile: Option<String>,
    /// Take the host out of its profile (its subnet's default profile applies, if any).
    #[arg(long)]
    no_profile: bool,
    /// Serve the reservation.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Keep the reservation but stop serving it.
    #[arg(long)]
    disable: bool,
    /// New lease time (e.g. 12h or infinite), or "default" for the subnet's.
    #[arg(long, value_name = "DURATION|default")]
    lease_time: Option<String>,
    /// New comment; an empty one removes it.
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The reservation: its MAC address, IP address or host name. Text that could be more than
    /// one of them (deadbeef0001) needs a prefix when both match: mac:, ip: or name:.
    host: String,
    /// Only look in this subnet (name or CIDR).
    #[arg(long)]
    subnet: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A MAC address, IP address or host name. Text that could be more than one of them
    /// (deadbeef0001) needs a prefix when both match: mac:, ip: or name:.
    host: String,
    /// Only look in this subnet (name or CIDR).
    #[arg(long)]
    subnet: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only reservations in this subnet (name or CIDR).
    #[arg(long)]
    subnet: Option<String>,
    /// Only reservations whose name, MAC, IP or comment contains this text (ignoring case).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

fn invalid(message: String) -> anyhow::Error {
    AdminError::Invalid(message).into()
}

/// A reservation's primary MAC and its extra ones.
type Macs = ([u8; 6], Vec<[u8; 6]>);

/// The MACs of `--mac`, parsed.
fn macs(texts: &[String]) -> Result<Option<Macs>> {
    let parsed = texts
        .iter()
        .map(|text| validate::mac(text))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(invalid)?;
    Ok(parsed
        .split_first()
        .map(|(first, rest)| (*first, rest.to_vec())))
}

fn client_id(text: Option<&str>) -> Result<Option<ClientId>> {
    text.map(|text| crate::client_id::parse(text).map_err(|e| invalid(e.to_string())))
        .transpose()
}

fn lease(text: Option<&str>) -> Result<Option<Option<Duration>>> {
    Ok(match text {
        None => None,
        Some("default") => Some(None),
        Some(text) => Some(Some(
            validate::lease_time("hosts.lease_time", text).map_err(invalid)?,
        )),
    })
}

pub async fn run(command: HostCommand, session: &mut Session) -> Result<()> {
    match command {
        HostCommand::Add(args) => add(args, session).await,
        HostCommand::Set(args) => set(args, session).await,
        HostCommand::Rm(args) => rm(args, session).await,
        HostCommand::Show(args) => show(args, session).await,
        HostCommand::List(args) => list(args, session).await,
    }
}

async fn add(args: AddArgs, session: &mut Session) -> Result<()> {
    let (mac, extra_macs) = match macs(&args.mac)? {
        Some((mac, extra)) => (Some(mac), extra),
        None => (None, Vec::new()),
    };
    let placement = match (args.ip.as_deref(), args.subnet) {
        (Some(ip), subnet) => Placement::Ip {
            ip: validate::ip("hosts.ip", ip).map_err(invalid)?,
            subnet,
        },
        (None, Some(subnet)) => Placement::Allocate { subnet },
        (None, None) => unreachable!("clap requires --ip or --subnet"),
    };
    let new = NewHost {
        mac,
        extra_macs,
        client_id: client_id(args.client_id.as_deref())?,
        hostname: args.hostname,
        aliases: args.alias,
        profile: args.profile,
        placement,
        lease: lease(args.lease_time.as_deref())?.flatten(),
        comment: args.comment.filter(|c| !c.is_empty()),
        enabled: !args.disabled,
    };
    let row = session
        .change(args.wait.wait, |tx| {
            Box::pin(async move { hosts::add(tx, &new).await })
        })
        .await?;
    print_one(&row, args.output.output, "added")?;
    session.finish_wait(&args.wait).await
}

async fn set(args: SetArgs, session: &mut Session) -> Result<()> {
    let reference = HostQuery::parse(&args.host)?;
    let macs = macs(&args.mac)?;
    let change = HostChange {
        ip: args
            .ip
            .as_deref()
            .map(|ip| validate::ip("hosts.ip", ip))
            .transpose()
            .map_err(invalid)?,
        mac: macs.as_ref().map(|m| m.0),
        extra_macs: macs.map(|m| m.1),
        client_id: match (client_id(args.client_id.as_deref())?, args.no_client_id) {
            (Some(id), _) => Some(Some(id)),
            (None, true) => Some(None),
            (None, false) => None,
        },
        hostname: args.hostname,
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        lease: lease(args.lease_time.as_deref())?,
        comment: args.comment.map(|c| Some(c).filter(|c| !c.is_empty())),
        profile: match (args.profile, args.no_profile) {
            (Some(profile), _) => Some(Some(profile)),
            (None, true) => Some(None),
            (None, false) => None,
        },
        aliases: if args.no_aliases {
            Some(Vec::new())
        } else {
            args.alias
        },
    };
    if change.is_empty() {
        return Err(AdminError::NothingToDo(
            "nothing to change: give at least one of --ip, --mac, --client-id, --no-client-id, \
             --hostname, --alias, --no-aliases, --profile, --no-profile, --enable, --disable, --lease-time or \
             --comment"
                .to_owned(),
        )
        .into());
    }
    let subnet = args.subnet;
    let (_, new) = session
        .change(args.wait.wait, |tx| {
            Box::pin(async move { hosts::set(tx, &reference, subnet.as_deref(), &change).await })
        })
        .await?;
    print_one(&new, args.output.output, "changed")?;
    session.finish_wait(&args.wait).await
}

async fn rm(args: RmArgs, session: &mut Session) -> Result<()> {
    let reference = HostQuery::parse(&args.host)?;
    let subnet = args.subnet;
    let row = session
        .change(args.wait.wait, |tx| {
            Box::pin(async move { hosts::remove(tx, &reference, subnet.as_deref()).await })
        })
        .await?;
    print_one(&row, args.output.output, "removed")?;
    session.finish_wait(&args.wait).await
}

async fn show(args: ShowArgs, session: &mut Session) -> Result<()> {
    let reference = HostQuery::parse(&args.host)?;
    let rows = hosts::find(session.client(), &reference, args.subnet.as_deref()).await?;
    if rows.is_empty() {
        return Err(hosts::not_found(&reference, args.subnet.as_deref()).into());
    }
    match args.output.output {
        Format::Json => out!("{}", output::json(&rows))?,
        Format::Table => {
            let blocks: Vec<String> = rows.iter().map(details).collect();
            out!("{}", blocks.join("\n"))?;
        }
    }
    Ok(())
}

async fn list(args: ListArgs, session: &mut Session) -> Result<()> {
    let filter = hosts::HostFilter {
        subnet: args.subnet.as_deref(),
        search: args.search.as_deref(),
        ..Default::default()
    };
    let rows = hosts::list(session.client(), &filter).await?;
    match args.output.output {
        Format::Json => out!("{}", output::json(&rows))?,
        Format::Table => out!(
            "{}",
            output::table(
                &[
                    column("HOSTNAME", Fit::Keep),
                    column("IP", Fit::Keep),
                    column("MAC", Fit::Keep),
                    column(
                        "PROFILE",
                        if rows.iter().any(|h| h.profile.is_some()) {
                            Fit::Optional(4)
                        } else {
                            Fit::Hidden
                        },
                    ),
                    column(
                        "SUBNET",
                        if args.subnet.is_some() {
                            Fit::Hidden
                        } else {
                            Fit::Optional(1)
                        },
                    ),
                    column("LEASE", Fit::Optional(3)),
                    column("STATE", Fit::Optional(0)),
                    column("COMMENT", Fit::Wrap(2)),
                ],
                rows.iter().map(|h| {
                    vec![
                        names_text(h),
                        h.ip.to_string(),
                        mac_text(h),
                        output::or_dash(h.profile.as_deref()),
                        h.subnet.clone(),
                        output::lease(h.lease_seconds),
                        state(h.enabled),
                        h.comment.clone().unwrap_or_default(),
                    ]
                }),
            )
        )?,
    }
    Ok(())
}

fn state(enabled: bool) -> String {
    if enabled { "on" } else { "off" }.to_owned()
}

/// The MAC column: a DNS-only name has none; extra MACs follow the primary.
fn mac_text(host: &HostRow) -> String {
    match &host.mac {
        None => "(DNS only)".to_owned(),
        Some(mac) if host.extra_macs.is_empty() => mac.clone(),
        Some(mac) => format!("{mac},{}", host.extra_macs.join(",")),
    }
}

/// The host name, then its aliases in parentheses.
fn names_text(host: &HostRow) -> String {
    if host.aliases.is_empty() {
        host.hostname.clone()
    } else {
        format!("{} ({})", host.hostname, host.aliases.join(", "))
    }
}

fn details(host: &HostRow) -> String {
    output::fields(&[
        ("hostname", host.hostname.clone()),
        ("aliases", aliases_text(host)),
        ("ip", host.ip.to_string()),
        ("mac", mac_text(host)),
        ("client id", output::or_dash(host.client_id.as_deref())),
        ("profile", output::or_dash(host.profile.as_deref())),
        ("subnet", host.subnet.clone()),
        (
            "enabled",
            if host.enabled { "yes" } else { "no" }.to_owned(),
        ),
        ("lease time", output::lease(host.lease_seconds)),
        ("comment", output::or_dash(host.comment.as_deref())),
        ("created", output::timestamp(host.created_at)),
        ("updated", output::timestamp(host.updated_at)),
    ])
}

fn print_one(host: &HostRow, format: Format, verb: &str) -> Result<()> {
    match format {
        Format::Json => out!("{}", output::json(host)),
        Format::Table => outln!(
            "{verb} host {} {} {} in subnet {}",
            host.hostname,
            host.ip,
            mac_text(host),
            host.subnet
        ),
    }
}

fn aliases_text(host: &HostRow) -> String {
    if host.aliases.is_empty() {
        "-".to_owned()
    } else {
        host.aliases.join(", ")
    }
}
