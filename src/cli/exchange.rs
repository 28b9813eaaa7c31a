//! `ipmanager import` and `ipmanager export`: moving reservations in and out in the formats of
//! dnsmasq, /etc/ethers, dnsmasq's dhcp-hostsfile and ISC Kea.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::output::{self, out, Format, OutputArgs};
use super::Session;
use crate::admin::import::{self, Entry, ImportOptions, ImportReport};
use crate::admin::AdminError;
use crate::exchange;

const IMPORT_EXAMPLES: &str = "\
Examples:
  ipmanager import /etc/dnsmasq.d/hosts.conf --format dnsmasq --dry-run
  ipmanager import /etc/kea/kea-dhcp4.conf --format kea
  ipmanager import /etc/ethers --format ethers --subnet office   (names without address)

Every line is checked; the import is one transaction: when any line is rejected, nothing is
imported and every rejected line is listed. Lines already in the database are left alone, so
an import can be repeated.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// dnsmasq configuration: dhcp-host= lines (other lines are skipped).
    Dnsmasq,
    /// /etc/ethers: MAC followed by an IP address or host name.
    Ethers,
    /// dnsmasq --dhcp-hostsfile: one dhcp-host value per line.
    Hostsfile,
    /// ISC Kea DHCPv4/DHCPv6 JSON configuration: subnets and their reservations.
    Kea,
}

impl From<FileFormat> for exchange::Format {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Dnsmasq => exchange::Format::Dnsmasq,
            FileFormat::Ethers => exchange::Format::Ethers,
            FileFormat::Hostsfile => exchange::Format::Hostsfile,
            FileFormat::Kea => exchange::Format::Kea,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = IMPORT_EXAMPLES)]
pub struct ImportArgs {
    /// The file to read; - for standard input.
    file: PathBuf,
    /// The file's format.
    #[arg(long, value_enum)]
    format: FileFormat,
    /// Subnet (name or CIDR) to allocate addresses in for entries without one.
    #[arg(long)]
    subnet: Option<String>,
    /// Check everything against the database, print what would be added, then roll back.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The format to write to standard output.
    #[arg(long, value_enum)]
    format: FileFormat,
}

pub async fn import(args: ImportArgs, session: &mut Session) -> Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let parsed = exchange::parse(args.format.into(), &text)
        .map_err(|e| AdminError::Invalid(format!("{}: {e}", args.file.display())))?;
    let options = ImportOptions {
        subnet: args.subnet,
        dry_run: args.dry_run,
    };
    let report = import::import(session.client_mut(), &parsed, &options).await?;
    match args.output.output {
        Format::Json => out!("{}", output::json(&report))?,
        Format::Table => out!("{}", summary(&report, args.dry_run))?,
    }
    if !report.rejected.is_empty() {
        return Err(AdminError::Invalid(format!(
            "nothing imported: {} line(s) rejected (listed above); fix or remove them and run \
             the import again",
            report.rejected.len()
        ))
        .into());
    }
    Ok(())
}

fn summary(report: &ImportReport, dry_run: bool) -> String {
    let mut text = String::new();
    let section = |text: &mut String, title: &str, entries: &[Entry]| {
        if entries.is_empty() {
            return;
        }
        text.push_str(&format!("{title} ({}):\n", entries.len()));
        for entry in entries {
            let reason = if entry.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", entry.reason)
            };
            text.push_str(&format!("  line {}: {}{reason}\n", entry.line, entry.what));
        }
    };
    let added = if report.committed {
        "added"
    } else {
        "would add"
    };
    section(&mut text, added, &report.added);
    section(&mut text, "already present", &report.unchanged);
    section(&mut text, "skipped", &report.skipped);
    section(&mut text, "rejected", &report.rejected);
    let outcome = match (report.committed, dry_run) {
        (true, _) => format!("imported {} entries", report.added.len()),
        (false, true) if report.rejected.is_empty() => {
            "dry run: nothing changed; the import would succeed".to_owned()
        }
        (false, true) => "dry run: nothing changed; the import would be refused".to_owned(),
        (false, false) => "nothing imported".to_owned(),
    };
    text.push_str(&outcome);
    text.push('\n');
    text
}

pub async fn export(args: ExportArgs, session: &mut Session) -> Result<()> {
    let snapshot = session.snapshot().await?;
    out!("{}", exchange::export(args.format.into(), &snapshot))?;
    Ok(())
}
