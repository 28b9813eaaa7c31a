//! `ipmanager log`: who changed which host or subnet, when, from which program.

use std::time::SystemTime;

use anyhow::Result;
use clap::Args;

use super::output::{self, out, outln, Format, OutputArgs};
use super::Session;
use crate::admin::audit::parse_since as since;
use crate::admin::audit::{self, AuditEntry, LogFilter};
use crate::admin::HostRef;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only changes of reservations with this MAC address, IP address or host name (before
    /// or after the change).
    #[arg(long, value_name = "MAC|IP|NAME")]
    host: Option<String>,
    /// Only changes of this subnet (name or CIDR) and of reservations in it.
    #[arg(long)]
    subnet: Option<String>,
    /// Only changes since then: a duration back from now (90m, 2d) or a date or time in UTC
    /// (2026-11-25, 2026-11-25T08:00:00Z).
    #[arg(long, value_name = "WHEN", value_parser = since)]
    since: Option<SystemTime>,
    /// Show at most this many entries, the newest ones.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(args: LogArgs, session: &mut Session) -> Result<()> {
    let filter = LogFilter {
        host: args.host.as_deref().map(HostRef::parse).transpose()?,
        subnet: args.subnet,
        since: args.since,
        limit: i64::from(args.limit),
    };
    let entries = audit::log(session.client(), &filter).await?;
    match args.output.output {
        Format::Json => out!("{}", output::json(&entries))?,
        Format::Table if entries.is_empty() => outln!("no changes recorded that match")?,
        Format::Table => out!("{}", entries.iter().map(entry_text).collect::<String>())?,
    }
    Ok(())
}

/// One entry as `git log --oneline` would show a commit, with what changed indented below:
/// a table squeezes the changes into a column too narrow to read in 80 columns.
fn entry_text(entry: &AuditEntry) -> String {
    let program = entry
        .application_name
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let mut text = format!(
        "{}  {}{program}  {} {}\n",
        output::timestamp(entry.at)
            .replace('T', " ")
            .trim_end_matches('Z'),
        entry.who(),
        entry.operation.to_lowercase(),
        entry.subject()
    );
    for change in entry.changes() {
        text.push_str(&format!("    {change}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let hour_ago = since("1h").unwrap();
        let elapsed = SystemTime::now().duration_since(hour_ago).unwrap();
        assert!(elapsed >= Duration::from_secs(3600) && elapsed < Duration::from_secs(3660));
        assert_eq!(
            since("2026-11-25").unwrap(),
            humantime::parse_rfc3339("2026-11-25T00:00:00Z").unwrap()
        );
        assert!(since("2026-11-25T08:00:00Z").is_ok());
        assert!(since("yesterday").is_err());
    }
}
