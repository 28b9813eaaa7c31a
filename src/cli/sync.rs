//! `ipmanager status` and the `--wait` of changing commands: whether the agents have applied
//! what is committed; `ipmanager compact`: a compaction on every live agent, now.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Args;

use super::output::{self, column, out, outln, Fit, Format, OutputArgs};
use super::Session;
use crate::admin::sync::{self, AgentApplied, AgentCompaction, AgentSync};

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

/// Not every live agent got where the command waited for in time: the change was committed but
/// not applied everywhere (`--wait`), or the compaction was asked for but not done everywhere
/// (`compact`). Exit 75.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(String);

/// Agents named with what they are doing, for the messages that say who did not get there.
fn with_phases<'a>(
    agents: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
) -> String {
    agents
        .into_iter()
        .map(|(name, phase, error)| match error {
            Some(error) => format!("{name} ({phase}: {error})"),
            None => format!("{name} ({phase})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names, comma-separated, for messages.
fn joined<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// Says which agents a wait left out because they stopped reporting.
fn note_not_alive(names: &str) {
    if !names.is_empty() {
        eprintln!("ipmanager: not waiting for agents that have not reported recently: {names}");
    }
}

/// Reports how far `change` got. Prints to stderr so that `-o json` output stays one document.
pub async fn wait_for(session: &Session, change: &str, timeout: Duration) -> Result<()> {
    let agents = sync::wait_applied(session.client(), change, timeout).await?;
    let names = |pick: &dyn Fn(&AgentApplied) -> bool| {
        joined(agents.iter().filter(|a| pick(a)).map(|a| a.name.as_str()))
    };
    let applied = names(&|a| a.awaited() && a.applied);
    note_not_alive(&names(&|a| !a.alive));
    let missing: Vec<&AgentApplied> = agents
        .iter()
        .filter(|a| a.awaited() && !a.applied)
        .collect();
    if !missing.is_empty() {
        let list = with_phases(
            missing
                .iter()
                .map(|a| (a.name.as_str(), a.phase.as_str(), a.last_error.as_deref())),
        );
        return Err(TimedOut(format!(
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

const COMPACT_EXAMPLES: &str = "\
Examples:
  ipmanager compact                   every live agent compacts now; waits up to 2 minutes
  ipmanager compact --timeout 10m     for a large database on slow disks

With [dnsmasq] layout = \"incremental\", a removed reservation or an address moved to another
MAC or reused is fully served only after a compaction (every file rewritten, one SIGHUP), which
agents run on their own every compaction_interval; this runs one now. Agents with the other
layouts have nothing to compact and answer at once. One line per agent that compacted; agents
that stopped reporting, or are older than compaction requests, are named and not waited for.

Exit codes: 0 every live agent compacted (also when no agent is alive: there is nothing to
compact then), 75 the timeout ran out (the agents that did not compact are named).";

/// `ipmanager compact`.
#[derive(Debug, Args)]
#[command(after_help = COMPACT_EXAMPLES)]
pub struct CompactArgs {
    /// How long to wait for every live agent to compact, e.g. 30s or 5m.
    #[arg(long, value_name = "DURATION", default_value = "120s",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Asks every agent for a compaction and waits until every live one has done it.
pub async fn compact(args: CompactArgs, session: &mut Session) -> Result<()> {
    let client = session.client();
    let requested = sync::request_compaction(client).await?;
    let agents = sync::wait_compacted(client, requested, args.timeout).await?;
    let names = |pick: &dyn Fn(&AgentCompaction) -> bool| {
        joined(agents.iter().filter(|a| pick(a)).map(|a| a.name.as_str()))
    };
    note_not_alive(&names(&|a| !a.alive));
    let too_old = names(&|a| a.alive && a.layout.is_none());
    if !too_old.is_empty() {
        eprintln!(
            "ipmanager: not waiting for agents older than compaction requests (they write whole \
             files, which owe no compaction): {too_old}"
        );
    }
    for agent in agents.iter().filter(|a| a.awaited() && a.compacted) {
        outln!("{}", compacted_line(agent, requested))?;
    }
    let missing: Vec<&AgentCompaction> = agents
        .iter()
        .filter(|a| a.awaited() && !a.compacted)
        .collect();
    if !missing.is_empty() {
        let list = with_phases(
            missing
                .iter()
                .map(|a| (a.name.as_str(), a.phase.as_str(), a.last_error.as_deref())),
        );
        return Err(TimedOut(format!(
            "the compaction was requested but not done after {}: not compacted by {list}",
            humantime::format_duration(args.timeout)
        ))
        .into());
    }
    if !agents.iter().any(AgentCompaction::awaited) {
        eprintln!("ipmanager: warning: no agent that compacts on request is alive, so nothing was compacted");
    }
    Ok(())
}

/// `dhcp1: compacted after 1s 234ms`: how long the agent took from the request.
fn compacted_line(agent: &AgentCompaction, requested: SystemTime) -> String {
    let took = agent
        .compacted_at
        .and_then(|at| at.duration_since(requested).ok())
        .unwrap_or_default();
    let took = humantime::format_duration(Duration::from_millis(
        u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    ));
    match agent.layout.as_deref() {
        Some(layout) if layout != "incremental" => format!(
            "{}: answered after {took} (layout {layout} owes no compaction)",
            agent.name
        ),
        _ => format!("{}: compacted after {took}", agent.name),
    }
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

/// An optional column of the status table, or a hidden one when no row would fill it.
fn shown_if(useful: bool, rank: u8) -> Fit {
    if useful {
        Fit::Optional(rank)
    } else {
        Fit::Hidden
    }
}

/// The agent feeds dnsmasq through watched directories, so changes may await a compaction.
fn incremental(agent: &AgentSync) -> bool {
    agent.layout.as_deref() == Some("incremental")
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
                        shown_if(agents.iter().any(|a| a.sites.is_some()), 0)
                    ),
                    column("STATE", Fit::Keep),
                    column("SINCE", Fit::Keep),
                    // The compaction columns only once some agent has something to say there.
                    column("TO COMPACT", shown_if(agents.iter().any(incremental), 0)),
                    column("HOSTS", Fit::Optional(2)),
                    column(
                        "LAYOUT",
                        shown_if(
                            agents
                                .iter()
                                .any(|a| a.layout.as_deref().is_some_and(|l| l != "hostsfile")),
                            3,
                        ),
                    ),
                    column(
                        "COMPACTED",
                        shown_if(agents.iter().any(|a| a.compacted_at.is_some()), 4),
                    ),
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
                        output::or_dash(a.awaiting_compaction.filter(|_| incremental(a))),
                        output::or_dash(a.hosts),
                        output::or_dash(a.layout.as_deref()),
                        output::or_dash(a.compacted_at.map(output::timestamp)),
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
