//! `ipmanager profile …`: DHCP option sets and PXE boot settings for groups of hosts.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{self, column, outln, Fit, Format, OutputArgs};
use super::subnet::{option_args, options_text};
use super::Session;
use crate::admin::profiles::{self, ProfileFields, ProfileRow};
use crate::admin::{validate, AdminError};

const PROFILE_EXAMPLES: &str = "\
Examples:
  ipmanager profile add pxe --boot-file pxelinux.0 --boot-file-uefi grubx64.efi \\
      --boot-file-arm64 grubaa64.efi --boot-file-ipxe http://boot.example/menu.ipxe \\
      --next-server 10.1.0.5 --tftp-server-name tftp.example
  ipmanager profile set pxe --option tftp-server-address=10.1.0.5 --unset-option mtu
  ipmanager host set pc1 --profile pxe             the host boots by the profile
  ipmanager subnet set lab --default-profile pxe   every host of the subnet without its own
  ipmanager profile show pxe -o json
  ipmanager profile rm pxe                         refused while hosts or subnets use it";

/// Add, change, remove, show and list profiles.
#[derive(Debug, Subcommand)]
#[command(after_help = PROFILE_EXAMPLES)]
pub enum ProfileCommand {
    /// Add a profile: DHCPv4 options and PXE boot settings for the hosts that use it.
    #[command(after_help = PROFILE_EXAMPLES)]
    Add(AddArgs),
    /// Change a profile's boot settings and options.
    #[command(after_help = PROFILE_EXAMPLES)]
    Set(SetArgs),
    /// Remove a profile; refuses while hosts or subnets use it.
    Rm(NameArgs),
    /// Show a profile with its options and users.
    Show(ShowArgs),
    /// List profiles.
    List(ListArgs),
}

/// The settings `add` and `set` share. On `set`, "none" clears a setting.
#[derive(Debug, Args)]
struct Settings {
    /// Boot file for BIOS clients and clients that send no architecture.
    #[arg(long, value_name = "FILE")]
    boot_file: Option<String>,
    /// Boot file for UEFI x86-64 clients (architecture 7 and 9).
    #[arg(long, value_name = "FILE")]
    boot_file_uefi: Option<String>,
    /// Boot file for UEFI ARM64 clients (architecture 11).
    #[arg(long, value_name = "FILE")]
    boot_file_arm64: Option<String>,
    /// Boot file or URL for clients that are iPXE already (chain-loading).
    #[arg(long, value_name = "FILE")]
    boot_file_ipxe: Option<String>,
    /// IPv4 address of the TFTP server (next-server, siaddr).
    #[arg(long, value_name = "ADDR")]
    next_server: Option<String>,
    /// Host name of the TFTP server (sname).
    #[arg(long, value_name = "NAME")]
    tftp_server_name: Option<String>,
    /// A DHCPv4 option: NAME=VALUE, NUMBER:TYPE=VALUE or NUMBER="TEXT" (repeatable).
    #[arg(long = "option", value_name = "NAME=VALUE")]
    options: Vec<String>,
    /// Free text for admins; an empty one removes it.
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Unique name: 1 to 63 letters, digits, '-', '_' or '.'.
    name: String,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The profile's name.
    name: String,
    #[command(flatten)]
    settings: Settings,
    /// Remove a DHCP option (name or number; repeatable).
    #[arg(long, value_name = "NAME")]
    unset_option: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The profile's name.
    name: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile's name.
    name: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// A text setting: "none" clears it (on `set`; on `add` nothing is there to clear).
fn text(value: &Option<String>) -> Option<Option<String>> {
    value
        .as_ref()
        .map(|v| Some(v.clone()).filter(|v| v != "none"))
}

impl Settings {
    fn fields(&self) -> Result<ProfileFields> {
        let next_server = match self.next_server.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(ip) => Some(Some(
                validate::ip("profiles.next_server", ip).map_err(AdminError::Invalid)?,
            )),
        };
        Ok(ProfileFields {
            boot_file: text(&self.boot_file),
            boot_file_uefi: text(&self.boot_file_uefi),
            boot_file_arm64: text(&self.boot_file_arm64),
            boot_file_ipxe: text(&self.boot_file_ipxe),
            next_server,
            tftp_server_name: text(&self.tftp_server_name),
            comment: self
                .comment
                .clone()
                .map(|c| Some(c).filter(|c| !c.is_empty())),
            options: option_args(&[], &self.options)?,
            unset_options: Vec::new(),
        })
    }
}

pub async fn run(command: ProfileCommand, session: &mut Session) -> Result<()> {
    match command {
        ProfileCommand::Add(args) => {
            let fields = args.settings.fields()?;
            let name = args.name;
            let row = session
                .change(false, |tx| {
                    Box::pin(async move { profiles::add(tx, &name, &fields).await })
                })
                .await?;
            outln!("added profile {}", row.name)?;
        }
        ProfileCommand::Set(args) => {
            let mut fields = args.settings.fields()?;
            fields.unset_options = args.unset_option;
            let name = args.name;
            let (_, new) = session
                .change(false, |tx| {
                    Box::pin(async move { profiles::set(tx, &name, &fields).await })
                })
                .await?;
            print_details(&new, args.output.output)?;
        }
        ProfileCommand::Rm(args) => {
            let name = args.name;
            let row = session
                .change(false, |tx| {
                    Box::pin(async move { profiles::remove(tx, &name).await })
                })
                .await?;
            outln!("removed profile {}", row.name)?;
        }
        ProfileCommand::Show(args) => {
            let row = profiles::show(session.client(), &args.name).await?;
            print_details(&row, args.output.output)?;
        }
        ProfileCommand::List(args) => {
            let rows = profiles::list(session.client()).await?;
            match args.output.output {
                Format::Json => output::print(&output::json(&rows))?,
                Format::Table => output::print(&output::table(
                    &[
                        column("NAME", Fit::Keep),
                        column("BOOT FILE", Fit::Optional(0)),
                        column("NEXT SERVER", Fit::Optional(1)),
                        column("OPTIONS", Fit::Optional(2)),
                        column("HOSTS", Fit::Keep),
                        column("COMMENT", Fit::Wrap(3)),
                    ],
                    rows.iter().map(|p| {
                        vec![
                            p.name.clone(),
                            output::or_dash(p.boot_file.as_deref()),
                            output::or_dash(p.next_server),
                            p.options.len().to_string(),
                            p.hosts.to_string(),
                            p.comment.clone().unwrap_or_default(),
                        ]
                    }),
                ))?,
            }
        }
    }
    Ok(())
}

fn print_details(profile: &ProfileRow, format: Format) -> Result<()> {
    match format {
        Format::Json => output::print(&output::json(profile)),
        Format::Table => output::print(&details(profile)),
    }
}

fn details(profile: &ProfileRow) -> String {
    let or_dash = |value: &Option<String>| output::or_dash(value.as_deref());
    let default_of = if profile.default_of.is_empty() {
        "-".to_owned()
    } else {
        profile.default_of.join(", ")
    };
    output::fields(&[
        ("name", profile.name.clone()),
        ("boot file", or_dash(&profile.boot_file)),
        ("boot file uefi", or_dash(&profile.boot_file_uefi)),
        ("boot file arm64", or_dash(&profile.boot_file_arm64)),
        ("boot file ipxe", or_dash(&profile.boot_file_ipxe)),
        ("next server", output::or_dash(profile.next_server)),
        ("tftp server name", or_dash(&profile.tftp_server_name)),
        ("options", options_text(&profile.options)),
        ("hosts", profile.hosts.to_string()),
        ("default of", default_of),
        ("comment", or_dash(&profile.comment)),
        ("created", output::timestamp(profile.created_at)),
        ("updated", output::timestamp(profile.updated_at)),
    ])
}
