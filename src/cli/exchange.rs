//! `ipmanager import` and `ipmanager export`: moving reservations in and out in the formats of
//! dnsmasq, /etc/ethers, dnsmasq's dhcp-hostsfile and ISC Kea.

use std::io::Read;
use std::path::{Path, PathBuf};

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
an import can be repeated. Input larger than --max-input-size (64MiB unless given) is refused
before anything is imported.";

/// The default of `--max-input-size`: far above any real reservation file (200,000 dhcp-host
/// lines are about 10 MiB), far below what would hurt the machine.
const DEFAULT_MAX_INPUT: &str = "64MiB";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// dnsmasq configuration: dhcp-host= lines; host-record=, address=/name/IP and cname= as
    /// aliases and DNS-only names (other lines are skipped).
    Dnsmasq,
    /// /etc/ethers: MAC followed by an IP address or host name.
    Ethers,
    /// dnsmasq --dhcp-hostsfile: one dhcp-host value per line.
    Hostsfile,
    /// ISC Kea DHCPv4/DHCPv6 JSON configuration: subnets and their reservations.
    Kea,
    /// Hosts file (/etc/hosts, dnsmasq --addn-hosts): IP, name and aliases per line; names
    /// become aliases of the reservation with the address, or DNS-only names.
    Hosts,
}

impl From<FileFormat> for exchange::Format {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Dnsmasq => exchange::Format::Dnsmasq,
            FileFormat::Ethers => exchange::Format::Ethers,
            FileFormat::Hostsfile => exchange::Format::Hostsfile,
            FileFormat::Kea => exchange::Format::Kea,
            FileFormat::Hosts => exchange::Format::Hosts,
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
    /// Refuse input larger than this (files and standard input alike): bytes, or a number
    /// with KiB, MiB or GiB.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MAX_INPUT, value_parser = parse_size)]
    max_input_size: u64,
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
    let text = read_input(&args.file, args.max_input_size)?;
    let parsed = exchange::parse(args.format.into(), &text)
        .map_err(|e| AdminError::Invalid(format!("{}: {e}", args.file.display())))?;
    let options = ImportOptions {
        subnet: args.subnet,
        dry_run: args.dry_run,
        caller: None,
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

/// The whole input as text, reading at most `limit` bytes (plus one, to notice more): a file
/// that never ends (`/dev/zero`) or a runaway pipe is refused instead of filling the memory.
fn read_input(file: &Path, limit: u64) -> Result<String> {
    let (name, reader): (String, Box<dyn Read>) = if file.as_os_str() == "-" {
        ("standard input".to_owned(), Box::new(std::io::stdin()))
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        (file.display().to_string(), Box::new(opened))
    };
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > limit {
        return Err(AdminError::Invalid(format!(
            "{name} is larger than the import limit of {}: nothing imported; give \
             --max-input-size if the file really is this large",
            show_size(limit)
        ))
        .into());
    }
    String::from_utf8(bytes)
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })
        .with_context(|| format!("cannot read {name}"))
}

/// Units of `--max-input-size`, largest first.
const SIZE_UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("", 1),
];

/// `--max-input-size`: a number of bytes, optionally with a binary unit (`64MiB`, `512KiB`).
fn parse_size(text: &str) -> Result<u64, String> {
    let (number, factor) = SIZE_UNITS
        .iter()
        .find_map(|(unit, factor)| Some((text.trim().strip_suffix(unit)?, *factor)))
        .unwrap_or((text, 1));
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&size| size > 0)
        .ok_or_else(|| {
            format!("'{text}' is not a size: give bytes, or a number with KiB, MiB or GiB")
        })
}

/// A size as the largest unit that divides it (`64MiB`, `1000`).
fn show_size(size: u64) -> String {
    let (unit, factor) = SIZE_UNITS
        .iter()
        .find(|(_, factor)| size.is_multiple_of(*factor))
        .copied()
        .unwrap_or(("", 1));
    format!("{}{unit}", size / factor)
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
    // A refused real import added nothing; only a dry run speaks of what it would add.
    let added = match (report.committed, dry_run) {
        (true, _) => "added",
        (false, true) => "would add",
        (false, false) => "not added",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        for (text, size) in [
            ("64MiB", 64 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1000", 1000),
            (" 2 MiB", 2 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(size), "{text}");
        }
        for text in ["", "0", "-1", "64MB", "1.5MiB", "99999999999999GiB"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
        assert_eq!(show_size(64 << 20), "64MiB");
        assert_eq!(show_size(1000), "1000");
        assert_eq!(parse_size(DEFAULT_MAX_INPUT), Ok(64 << 20));
    }
}
