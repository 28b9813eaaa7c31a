//! `ipmanager token …`: tokens for the HTTP API (`ipmanager serve`).

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use super::output::{self, column, outln, Fit, Format, OutputArgs};
use super::Session;
use crate::admin::tokens::{self, Access};

const TOKEN_EXAMPLES: &str = "\
Examples:
  ipmanager token create --name ci-provisioner --owner alice --access write --expires 90d
  curl -H 'Authorization: Bearer ipm_…' https://ipam.example:8580/api/v1/hosts
  ipmanager token list
  ipmanager token revoke ci-provisioner

Creating, listing and revoking tokens needs the database role ipmanager_token_admin.";

/// Create, list and revoke HTTP API tokens.
#[derive(Debug, Subcommand)]
#[command(after_help = TOKEN_EXAMPLES)]
pub enum TokenCommand {
    /// Create a token and print it; it is shown this once and only its hash is stored.
    #[command(after_help = TOKEN_EXAMPLES)]
    Create(CreateArgs),
    /// List tokens (never the tokens themselves): owner, access, state, expiry.
    List(ListArgs),
    /// Revoke a token now; requests with it get 401 from then on. Its name is not reused.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccessArg {
    /// Read everything, change nothing.
    Read,
    /// What the CLI may do with the role ipmanager_admin.
    Write,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name: 1 to 63 letters, digits, '-', '_' or '.'. The audit log names it.
    #[arg(long)]
    name: String,
    /// Whom the token is for; the audit log records it as who made a change.
    #[arg(long)]
    owner: String,
    #[arg(long, value_enum)]
    access: AccessArg,
    /// Valid for this long, e.g. 90d or 12h; without it the token does not expire.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    expires: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    name: String,
}

pub async fn run(command: TokenCommand, session: &mut Session) -> Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let access = match args.access {
                AccessArg::Read => Access::Read,
                AccessArg::Write => Access::Write,
            };
            let token = tokens::create(
                session.client(),
                &args.name,
                &args.owner,
                access,
                args.expires,
            )
            .await?;
            eprintln!(
                "created {} token {} for {} (expires: {}); store it now, it is not shown again:",
                token.info.access,
                token.info.name,
                token.info.owner,
                output::or_dash(token.info.expires_at.map(output::timestamp))
            );
            outln!("{}", token.secret)?;
        }
        TokenCommand::List(args) => {
            let rows = tokens::list(session.client()).await?;
            match args.output.output {
                Format::Json => output::print(&output::json(&rows))?,
                Format::Table => output::print(&output::table(
                    &[
                        column("NAME", Fit::Keep),
                        column("OWNER", Fit::Keep),
                        column("ACCESS", Fit::Keep),
                        column("STATE", Fit::Keep),
                        column("EXPIRES", Fit::Optional(0)),
                        column("CREATED", Fit::Optional(1)),
                    ],
                    rows.iter().map(|t| {
                        vec![
                            t.name.clone(),
                            t.owner.clone(),
                            t.access.to_string(),
                            t.state.clone(),
                            output::or_dash(t.expires_at.map(output::timestamp)),
                            format!("{} by {}", output::timestamp(t.created_at), t.created_by),
                        ]
                    }),
                ))?,
            }
        }
        TokenCommand::Revoke(args) => {
            tokens::revoke(session.client(), &args.name).await?;
            outln!("revoked token {}", args.name)?;
        }
    }
    Ok(())
}
