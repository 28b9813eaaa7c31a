//! `ipmanager status` and the `--wait` of changing commands: whether the agents have applied
//! what is committed.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::output::{self, column, out, outln, Fit, Format, OutputArgs};
use super::Session;
use crate::admin::sync::{self, AgentApplied};

/// `--wait [--timeout]` of `host add|set|rm`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return only once every agent alive in the last heartbeat interval that serves the
    /// change's site has applied it (files written, dnsmasq signalled); say which did not.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 10s or 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "wait",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The change was committed, but not every live agent applied it in time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotLive(String);

/// Reports how far `change` got. Prints to stderr so that `-o json` output stays one document.
pub async fn wait_for(session: &Session, change: &str, timeout: Duration) -> Result<()> {
    let agents = sync::wait_applied(session.client(), change, timeout).await?;
    let names = |pick: &dyn Fn(&AgentApplied) -> bool| {
        agents
            .iter()
            .filter(|a| pick(a))
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let applied = names(&|a| a.awaited() && a.applied);
    let dead = names(&|a| !a.alive);
    let missing: Vec<&AgentApplied> = agents
        .iter()
        .filter(|a| a.awaited() && !a.applied)
        .collect();
    if !dead.is_empty() {
        eprintln!("ipmanager: not waiting for agents that have not reported recently: {dead}");
    }
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|a| match &a.last_error {
                Some(error) => format!("{} ({}: {error})", a.name, a.phase),
                None => format!("{} ({})", a.name, a.phase),
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NotLive(format!(
            "the change is committed but not live after {}: not applied by {list}",
            humantime::format_duration(timeout)
        ))
        .into());
    }
    if applied.is_empty() && agents.iter().any(|a| a.alive) {
        let sites = sync::change_sites(session.client(), change).await?;
        eprintln!(
            "ipmanager: warning: no live agent serves {}, so the change is not served anywhere yet",
            sites_text(&sites)
        );
    } else if applied.is_empty() {
        eprintln!(
            "ipmanager: warning: no agent is alive, so the change is not served anywhere yet"
        );
    } else {
        eprintln!("ipmanager: live on {applied}");
    }
    Ok(())
}

/// What a change touched, for the warning that nobody serves it.
fn sites_text(sites: &[Option<String>]) -> String {
    if sites.is_empty() {
        return "what the change touched".to_owned();
    }
    let named: Vec<&str> = sites.iter().flatten().map(String::as_str).collect();
    let mut parts = Vec::new();
    if !named.is_empty() {
        let noun = if named.len() == 1 { "site" } else { "sites" };
        parts.push(format!("{noun} {}", named.join(", ")));
    }
    if sites.iter().any(Option::is_none) {
        parts.push("subnets without a site (only agents without [agent] sites serve them)".into());
    }
    parts.join(" or ")
}

/// An agent's sites for the status table: `all` when it serves every subnet.
fn sites_cell(sites: Option<&[String]>) -> String {
    sites.map_or_else(|| "all".to_owned(), |sites| sites.join(","))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn status(args: StatusArgs, session: &mut Session) -> Result<()> {
    let agents = sync::status(session.client()).await?;
    match args.output.output {
        Format::Json => out!("{}", output::json(&agents))?,
        Format::Table if agents.is_empty() => {
            outln!("no agent has reported yet (agents report once they have synced)")?
        }
        Format::Table => out!(
            "{}",
            output::table(
                &[
                    column("AGENT", Fit::Keep),
                    column("HOST", Fit::Optional(1)),
                    // Only where sites are in use: otherwise every agent serves everything.
                    column(
                        "SITES",
                        if agents.iter().any(|a| a.sites.is_some()) {
                            Fit::Optional(0)
                        } else {
                            Fit::Hidden
                        },
                    ),
                    column("STATE", Fit::Keep),
                    column("SINCE", Fit::Keep),
                    column("HOSTS", Fit::Optional(2)),
                    column("LAST ERROR", Fit::Wrap(0)),
                ],
                agents.iter().map(|a| {
                    let (state, since) = if !a.alive {
                        ("not alive", Some(a.seen_at))
                    } else if a.up_to_date {
                        ("up to date", a.applied_at)
                    } else {
                        ("behind", a.behind_since)
                    };
                    let state = if a.alive && !a.up_to_date {
                        match a.pending_changes {
                            Some(n) => format!("{state} ({n} changes)"),
                            None => "never applied".to_owned(),
                        }
                    } else {
                        state.to_owned()
                    };
                    vec![
                        a.name.clone(),
                        output::or_dash(a.host.as_deref()),
                        sites_cell(a.sites.as_deref()),
                        state,
                        output::or_dash(since.map(output::timestamp)),
                        output::or_dash(a.hosts),
                        match (&a.last_error, &a.last_error_at) {
                            (Some(error), Some(at)) => {
                                format!("{} {error}", output::timestamp(*at))
                            }
                            (Some(error), None) => error.clone(),
                            _ => "-".to_owned(),
                        },
                    ]
                }),
            )
        )?,
    }
    Ok(())
}
