//! `ipmanager subnet …`: subnets and their utilisation from the shell.

use std::net::IpAddr;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{self, column, out, outln, Fit, Format, OutputArgs};
use super::Session;
use crate::admin::options::OptionArg;
use crate::admin::subnets::{self, SubnetFields, SubnetRow};
use crate::admin::{profiles, sites};
use crate::admin::{validate, AdminError};

const SUBNET_EXAMPLES: &str = "\
Examples:
  ipmanager subnet add 10.1.0.0/24 --name office --range 10.1.0.100-10.1.0.199 \\
      --gateway 10.1.0.1 --domain office.example --lease-time 12h
  ipmanager subnet set office --range none --comment 'reservations only'
  ipmanager subnet set office --site berlin
  ipmanager subnet set office --dns-servers 10.1.0.53,10.1.0.54 --ntp-servers 10.1.0.123 \\
      --domain-search office.example,example.com --option mtu=1400 \\
      --option 252='\"http://wpad/wpad.dat\"' --default-profile pxe
  ipmanager subnet set office --unset-option mtu --default-profile none
  ipmanager subnet show office
  ipmanager subnet list -o json
  ipmanager subnet rm 10.1.0.0/24 --cascade";

/// Add, change, remove, show and list subnets.
#[derive(Debug, Subcommand)]
#[command(after_help = SUBNET_EXAMPLES)]
pub enum SubnetCommand {
    /// Add a subnet dnsmasq serves DHCP on.
    #[command(after_help = SUBNET_EXAMPLES)]
    Add(AddArgs),
    /// Change a subnet's settings.
    #[command(after_help = SUBNET_EXAMPLES)]
    Set(SetArgs),
    /// Remove a subnet; refuses while it has reservations unless --cascade.
    Rm(RmArgs),
    /// Show a subnet with its utilisation.
    Show(ShowArgs),
    /// List subnets with their utilisation.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The network, e.g. 10.1.0.0/24 or 2001:db8:1::/64.
    cidr: String,
    /// Unique name: 1 to 63 letters, digits, '-', '_' or '.'.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    settings: Settings,
}

/// The settings `add` and `set` share.
#[derive(Debug, Args)]
struct Settings {
    /// Dynamic DHCP range START-END, or "none" to serve reservations only.
    #[arg(long, value_name = "START-END|none")]
    range: Option<String>,
    /// Default router handed to clients, or "none".
    #[arg(long, value_name = "IP|none")]
    gateway: Option<String>,
    /// DNS domain of the subnet's hosts, or "none".
    #[arg(long, value_name = "DOMAIN|none")]
    domain: Option<String>,
    /// Lease time, e.g. 12h, 3600 or infinite, or "default" for dnsmasq's.
    #[arg(long, value_name = "DURATION|default")]
    lease_time: Option<String>,
    /// Free text for admins; an empty one removes it.
    #[arg(long)]
    comment: Option<String>,
    /// The site whose agents serve the subnet (see 'ipmanager site'), or "none".
    #[arg(long, value_name = "SITE|none")]
    site: Option<String>,
    /// DNS servers handed to clients (option dns-server), separated by commas.
    #[arg(long, value_name = "IP,...")]
    dns_servers: Option<String>,
    /// NTP servers handed to clients (option ntp-server), separated by commas.
    #[arg(long, value_name = "IP,...")]
    ntp_servers: Option<String>,
    /// DNS search list handed to clients (option domain-search), separated by commas.
    #[arg(long, value_name = "DOMAIN,...")]
    domain_search: Option<String>,
    /// A DHCP option by dnsmasq's name or by number: NAME=VALUE, NUMBER:TYPE=VALUE for a number
    /// ipmanager does not know, NUMBER="TEXT" for a string (repeatable). See
    /// ipmanager.dhcp_options for names and types.
    #[arg(long = "option", value_name = "NAME=VALUE")]
    options: Vec<String>,
    /// The profile of the subnet's hosts that name none (see 'ipmanager profile'), or "none".
    #[arg(long, value_name = "PROFILE|none")]
    default_profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The subnet: its name or CIDR.
    subnet: String,
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New network (its hosts must stay inside).
    #[arg(long)]
    cidr: Option<String>,
    #[command(flatten)]
    settings: Settings,
    /// Remove a DHCP option (name or number; repeatable).
    #[arg(long, value_name = "NAME")]
    unset_option: Vec<String>,
    /// Serve the subnet.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Stop serving the subnet and its hosts (it may then overlap other subnets).
    #[arg(long)]
    disable: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The subnet: its name or CIDR.
    subnet: String,
    /// Also remove the subnet's reservations (in the same transaction).
    #[arg(long)]
    cascade: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The subnet: its name or CIDR.
    subnet: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: OutputArgs,
}

fn invalid(message: String) -> anyhow::Error {
    AdminError::Invalid(message).into()
}

/// `none` (or `default`) clears an optional setting.
fn clearable<T>(
    text: Option<&str>,
    clear_word: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Option<T>>> {
    match text {
        None => Ok(None),
        Some(word) if word == clear_word => Ok(Some(None)),
        Some(text) => Ok(Some(Some(parse(text).map_err(invalid)?))),
    }
}

fn range(text: &str) -> Result<(IpAddr, IpAddr), String> {
    let (start, end) = text.split_once('-').ok_or_else(|| {
        format!(
            "subnets.range {} is not a range: give START-END, e.g. 10.1.0.100-10.1.0.199",
            validate::quote(text)
        )
    })?;
    Ok((
        validate::ip("subnets.range_start", start)?,
        validate::ip("subnets.range_end", end)?,
    ))
}

impl Settings {
    fn fields(&self) -> Result<SubnetFields> {
        Ok(SubnetFields {
            range: clearable(self.range.as_deref(), "none", range)?,
            gateway: clearable(self.gateway.as_deref(), "none", |t| {
                validate::ip("subnets.gateway", t)
            })?,
            domain: clearable(self.domain.as_deref(), "none", |t| {
                validate::domain(t).map(|()| t.to_owned())
            })?,
            lease: clearable(self.lease_time.as_deref(), "default", |t| {
                validate::lease_time("subnets.lease_time", t).map(Some)
            })?
            .map(Option::flatten),
            comment: self
                .comment
                .clone()
                .map(|c| Some(c).filter(|c| !c.is_empty())),
            site: clearable(self.site.as_deref(), "none", |t| {
                sites::validate_name(t).map(|()| t.to_owned())
            })?,
            default_profile: clearable(self.default_profile.as_deref(), "none", |t| {
                profiles::validate_name(t).map(|()| t.to_owned())
            })?,
            options: option_args(
                &[
                    ("dns-server", &self.dns_servers),
                    ("ntp-server", &self.ntp_servers),
                    ("domain-search", &self.domain_search),
                ],
                &self.options,
            )?,
            ..SubnetFields::default()
        })
    }
}

/// The options of the named flags (`--dns-servers` ...) and of every `--option`, read by the
/// one parser ([`OptionArg::parse`]); shared with `profile add|set`.
pub(super) fn option_args(
    named: &[(&str, &Option<String>)],
    options: &[String],
) -> Result<Vec<OptionArg>> {
    let mut args: Vec<OptionArg> = named
        .iter()
        .filter_map(|(option, value)| {
            value.as_ref().map(|value| OptionArg {
                option: (*option).to_owned(),
                kind: None,
                value: value.clone(),
            })
        })
        .collect();
    for text in options {
        args.push(OptionArg::parse(text).map_err(invalid)?);
    }
    Ok(args)
}

pub async fn run(command: SubnetCommand, session: &mut Session) -> Result<()> {
    match command {
        SubnetCommand::Add(args) => {
            let mut fields = args.settings.fields()?;
            validate::subnet_name(&args.name).map_err(invalid)?;
            fields.name = Some(args.name);
            fields.cidr = Some(validate::cidr(&args.cidr).map_err(invalid)?);
            let row = subnets::add(session.client(), &fields).await?;
            outln!("added subnet {} ({:#})", row.name, row.cidr)?;
        }
        SubnetCommand::Set(args) => {
            let mut fields = args.settings.fields()?;
            fields.unset_options = args.unset_option;
            fields.name = args.name;
            fields.cidr = args
                .cidr
                .as_deref()
                .map(validate::cidr)
                .transpose()
                .map_err(invalid)?;
            fields.enabled = match (args.enable, args.disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let subnet = args.subnet;
            let (_, new) = session
                .change(false, |tx| {
                    Box::pin(async move { subnets::set(tx, &subnet, &fields).await })
                })
                .await?;
            match args.output.output {
                Format::Json => out!("{}", output::json(&new))?,
                Format::Table => out!("{}", details(&new))?,
            }
        }
        SubnetCommand::Rm(args) => {
            let subnet = args.subnet;
            let cascade = args.cascade;
            let (row, hosts) = session
                .change(false, |tx| {
                    Box::pin(async move { subnets::remove(tx, &subnet, cascade).await })
                })
                .await?;
            outln!(
                "removed subnet {} ({:#}) and {hosts} reservation{}",
                row.name,
                row.cidr,
                if hosts == 1 { "" } else { "s" }
            )?;
        }
        SubnetCommand::Show(args) => {
            let row = subnets::show(session.client(), &args.subnet).await?;
            match args.output.output {
                Format::Json => out!("{}", output::json(&row))?,
                Format::Table => out!("{}", details(&row))?,
            }
        }
        SubnetCommand::List(args) => {
            let rows = subnets::list(session.client()).await?;
            match args.output.output {
                Format::Json => out!("{}", output::json(&rows))?,
                Format::Table => out!(
                    "{}",
                    output::table(
                        &[
                            column("NAME", Fit::Keep),
                            column("CIDR", Fit::Keep),
                            column("RANGE", Fit::Optional(0)),
                            column("GATEWAY", Fit::Optional(1)),
                            // Only where sites are in use.
                            column(
                                "SITE",
                                if rows.iter().any(|s| s.site.is_some()) {
                                    Fit::Optional(2)
                                } else {
                                    Fit::Hidden
                                },
                            ),
                            column("HOSTS", Fit::Keep),
                            column("FREE", Fit::Keep),
                            column("USED", Fit::Keep),
                        ],
                        rows.iter().map(|s| {
                            // A disabled subnet is rare and worth seeing beside its name; a
                            // column of "on" would cost the gateway its room in 80 columns.
                            let name = if s.enabled {
                                s.name.clone()
                            } else {
                                format!("{} (off)", s.name)
                            };
                            vec![
                                name,
                                format!("{:#}", s.cidr),
                                range_text(s),
                                output::or_dash(s.gateway),
                                output::or_dash(s.site.as_deref()),
                                s.usage.reservations.to_string(),
                                compact(s.usage.free),
                                percent(s.usage.used_percent),
                            ]
                        }),
                    )
                )?,
            }
        }
    }
    Ok(())
}

fn range_text(subnet: &SubnetRow) -> String {
    match (subnet.range_start, subnet.range_end) {
        (Some(start), Some(end)) => format!("{start}-{end}"),
        _ => "-".to_owned(),
    }
}

/// An address count for a table cell: exact up to a billion, then like 1.8e19 (an IPv6 /64).
fn compact(count: u128) -> String {
    if count < 1_000_000_000 {
        count.to_string()
    } else {
        format!("{:.1e}", count as f64)
    }
}

fn percent(used: Option<f64>) -> String {
    used.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"))
}

fn details(subnet: &SubnetRow) -> String {
    let usage = &subnet.usage;
    output::fields(&[
        ("name", subnet.name.clone()),
        ("cidr", format!("{:#}", subnet.cidr)),
        (
            "enabled",
            if subnet.enabled { "yes" } else { "no" }.to_owned(),
        ),
        ("range", range_text(subnet)),
        ("gateway", output::or_dash(subnet.gateway)),
        ("domain", output::or_dash(subnet.domain.as_deref())),
        ("lease time", output::lease(subnet.lease_seconds)),
        ("comment", output::or_dash(subnet.comment.as_deref())),
        ("site", output::or_dash(subnet.site.as_deref())),
        (
            "default profile",
            output::or_dash(subnet.default_profile.as_deref()),
        ),
        ("options", options_text(&subnet.options)),
        ("addresses", usage.addresses.to_string()),
        ("range size", usage.range_size.to_string()),
        ("static pool", usage.static_pool.to_string()),
        ("reservations", usage.reservations.to_string()),
        ("free", usage.free.to_string()),
        ("used", percent(usage.used_percent)),
        ("created", output::timestamp(subnet.created_at)),
        ("updated", output::timestamp(subnet.updated_at)),
    ])
}

/// Options as `name=value` separated by "; " for a `show` field, `-` without any; shared with
/// `profile show`.
pub(super) fn options_text(options: &[crate::admin::options::OptionRow]) -> String {
    if options.is_empty() {
        return "-".to_owned();
    }
    options
        .iter()
        .map(|o| o.assignment())
        .collect::<Vec<_>>()
        .join("; ")
}
