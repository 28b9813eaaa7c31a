//! `ipmanager site …`: sites, the named groups of subnets that agents serve by site.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{self, column, outln, Fit, Format, OutputArgs};
use super::Session;
use crate::admin::sites::{self, SiteRow};

const SITE_EXAMPLES: &str = "\
Examples:
  ipmanager site add berlin --comment 'Berlin office'
  ipmanager subnet set office --site berlin      the agents with [agent] sites = [\"berlin\"] serve it
  ipmanager site show berlin
  ipmanager site list -o json
  ipmanager subnet set office --site none
  ipmanager site rm berlin";

/// Add, remove, show and list sites.
#[derive(Debug, Subcommand)]
#[command(after_help = SITE_EXAMPLES)]
pub enum SiteCommand {
    /// Add a site; subnets join it with 'subnet add|set --site'.
    #[command(after_help = SITE_EXAMPLES)]
    Add(AddArgs),
    /// Remove a site; refuses while subnets belong to it.
    Rm(NameArgs),
    /// Show a site with its subnets and the agents that serve it.
    Show(ShowArgs),
    /// List sites.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Unique name: 1 to 63 letters, digits, '-', '_' or '.'.
    name: String,
    /// Free text for admins.
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The site's name.
    name: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The site's name.
    name: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(command: SiteCommand, session: &mut Session) -> Result<()> {
    match command {
        SiteCommand::Add(args) => {
            let row = sites::add(session.client(), &args.name, args.comment.as_deref()).await?;
            outln!("added site {}", row.name)?;
        }
        SiteCommand::Rm(args) => {
            let name = args.name;
            let row = session
                .change(false, |tx| {
                    Box::pin(async move { sites::remove(tx, &name).await })
                })
                .await?;
            outln!("removed site {}", row.name)?;
        }
        SiteCommand::Show(args) => {
            let row = sites::show(session.client(), &args.name).await?;
            match args.output.output {
                Format::Json => output::print(&output::json(&row))?,
                Format::Table => output::print(&details(&row))?,
            }
        }
        SiteCommand::List(args) => {
            let rows = sites::list(session.client()).await?;
            match args.output.output {
                Format::Json => output::print(&output::json(&rows))?,
                Format::Table => output::print(&output::table(
                    &[
                        column("NAME", Fit::Keep),
                        column("SUBNETS", Fit::Keep),
                        column("AGENTS", Fit::Optional(0)),
                        column("COMMENT", Fit::Wrap(1)),
                    ],
                    rows.iter().map(|site| {
                        vec![
                            site.name.clone(),
                            site.subnets.len().to_string(),
                            list_or_dash(&site.agents),
                            output::or_dash(site.comment.as_deref()),
                        ]
                    }),
                ))?,
            }
        }
    }
    Ok(())
}

fn list_or_dash(names: &[String]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
}

fn details(site: &SiteRow) -> String {
    output::fields(&[
        ("name", site.name.clone()),
        ("comment", output::or_dash(site.comment.as_deref())),
        ("subnets", list_or_dash(&site.subnets)),
        ("agents", list_or_dash(&site.agents)),
        ("created", output::timestamp(site.created_at)),
        ("updated", output::timestamp(site.updated_at)),
    ])
}
