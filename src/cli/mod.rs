//! The `ipmanager` command line: argument parsing, logging set-up, and exit codes. Only the
//! binary uses this module; the library never imports it.

mod audit;
mod exchange;
mod host;
mod output;
mod service;
mod site;
mod subnet;
mod sync;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use crate::admin::{self, AdminError};
use crate::config::{Config, ConfigError};
use crate::db::{self, DbError};
use crate::model::Snapshot;
use crate::write::FileError;

/// sysexits-style exit codes, so that scripts and systemd can tell failures apart.
pub mod exit {
    pub const OK: u8 = 0;
    /// Not found, or nothing to do.
    pub const NOT_FOUND: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATA_ERR: u8 = 65;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const IO_ERR: u8 = 74;
    /// `--wait` timed out: the change is committed but not yet live everywhere (or `compact`
    /// timed out); or a temporary database failure.
    pub const TEMP_FAIL: u8 = 75;
    pub const NO_PERM: u8 = 77;
    pub const CONFIG: u8 = 78;
}

const EXAMPLES: &str = "\
Examples:
  ipmanager subnet add 10.1.0.0/24 --name office --range 10.1.0.100-10.1.0.199 --gateway 10.1.0.1
  ipmanager host add --mac 52:54:00:12:34:56 --hostname printer --subnet office --wait
  ipmanager host list --search printer
  ipmanager status                           which agents have applied the latest change
  ipmanager compact                          every live agent compacts its files now
  ipmanager log --host printer --since 1d
  ipmanager import /etc/kea/kea-dhcp4.conf --format kea --dry-run
  ipmanager migrate                          apply the schema (as a role that may create it)
  IPMANAGER_DATABASE_URL=postgresql://ipmanager_agent@db/ipmanager ipmanager agent

Exit codes: 0 ok, 1 not found or nothing to do, 2 usage, 65 rejected data, 69 database
unavailable, 74 I/O error, 75 --wait or compact timed out or a temporary database failure
(out of locks or memory, timeout, deadlock: try again), 77 permission denied, 78 bad
configuration (also: a PostgreSQL server older than 13).

Configuration: defaults, then the file, then the environment: IPMANAGER_DATABASE_URL
overrides database_url, IPMANAGER__SECTION__KEY any other key (IPMANAGER__AGENT__NAME=dhcp1).
What database_url leaves out comes from libpq's variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY, ...) and ~/.pgpass, as for psql.";

/// Keeps dnsmasq's DHCP reservations and DNS names equal to a PostgreSQL database.
#[derive(Debug, Parser)]
#[command(name = "ipmanager", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Configuration file; without it, /etc/ipmanager/ipmanager.toml is read when it exists.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        env = "IPMANAGER_CONFIG",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, change, remove, show and list DHCP reservations.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Add, change, remove, show and list subnets.
    #[command(subcommand)]
    Subnet(subnet::SubnetCommand),
    /// Add, remove, show and list sites (named groups of subnets that agents serve by site).
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Show every agent: up to date or behind, since when, last error; changes awaiting a
    /// compaction.
    Status(sync::StatusArgs),
    /// Have every live agent compact its files now (layout incremental) and wait until it has.
    Compact(sync::CompactArgs),
    /// Show the audit log of changes to hosts and subnets.
    Log(audit::LogArgs),
    /// Import reservations from a dnsmasq, ethers, dhcp-hostsfile or ISC Kea file.
    Import(exchange::ImportArgs),
    /// Write all served reservations in a dnsmasq, ethers, dhcp-hostsfile or ISC Kea format.
    Export(exchange::ExportArgs),
    /// Run the sync agent in the foreground (as the systemd service does) until SIGTERM/SIGINT.
    ///
    /// LISTENs for changes, takes a consistent snapshot, writes dnsmasq's files atomically when
    /// they differ and signals or restarts dnsmasq. While the database is unreachable the files
    /// on disk stay as they are and dnsmasq keeps serving them.
    Agent,
    /// Create or upgrade the database schema (idempotent; safe to run on every upgrade).
    Migrate,
    /// Print the files the agent would write, from the current database; writes nothing.
    Render,
    /// Validate the configuration and print the effective settings (password hidden).
    CheckConfig,
}

/// One admin command's database connection, and the change it made for `--wait`.
pub struct Session {
    client: Client,
    connector: db::Connector,
    change: Option<String>,
}

type ChangeFuture<'t, T> = Pin<Box<dyn Future<Output = admin::Result<T>> + Send + 't>>;

impl Session {
    async fn connect(config: &Config, command: &str) -> Result<Session> {
        let mut connector = config.connector(&format!("ipmanager {command}"))?;
        // Admin statements read a few rows; PostgreSQL's JIT, which a poorly analysed table can
        // trigger, would compile for ~50 ms and be most of their time.
        let pg = connector.config_mut();
        let options = match pg.get_options() {
            Some(given) => format!("{given} -c jit=off"),
            None => "-c jit=off".to_owned(),
        };
        pg.options(&options);
        let client = db::connect(&connector)
            .await
            .map_err(|e| match e {
                DbError::UnsupportedServer { .. } => anyhow::Error::new(e),
                e => anyhow::Error::new(Unreachable(e)),
            })
            .with_context(|| format!("cannot connect to {}", connector.target()))?;
        Ok(Session {
            client,
            connector,
            change: None,
        })
    }

    fn client(&self) -> &Client {
        &self.client
    }

    fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Runs `op` in a transaction of its own. With `wait` (`--wait`) the transaction's id is
    /// kept for [`Session::finish_wait`].
    async fn change<T>(
        &mut self,
        wait: bool,
        op: impl for<'t> FnOnce(&'t Transaction<'t>) -> ChangeFuture<'t, T>,
    ) -> Result<T> {
        let tx = self.client.transaction().await?;
        let result = op(&tx).await?;
        if wait {
            self.change = Some(admin::sync::current_change(&tx).await?);
        }
        tx.commit().await?;
        Ok(result)
    }

    /// With `--wait`, waits until the agents have applied the change made by
    /// [`Session::change`].
    async fn finish_wait(&self, wait: &sync::WaitArgs) -> Result<()> {
        match &self.change {
            Some(change) => sync::wait_for(self, change, wait.timeout).await,
            None => Ok(()),
        }
    }

    /// Everything the agents serve, read as the agent reads it.
    async fn snapshot(&self) -> Result<Snapshot> {
        let pool = db::pool(self.connector.clone());
        Ok(db::take_snapshot(&pool, 0).await?)
    }
}

/// The database could not be reached at all (as opposed to refusing a statement).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Unreachable(DbError);

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    let config = match Config::from_process_env(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return report(&anyhow::Error::new(error)),
    };
    init_logging(&config.log_level);
    crate::memory::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return report(&anyhow::Error::new(error).context("cannot start the runtime"))
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent => service::run_agent(config).await,
            Command::Migrate => service::migrate(&config).await,
            Command::Render => service::render_files(&config).await,
            Command::CheckConfig => service::check_config(&config, cli.config),
            admin_command => run_admin(admin_command, &config).await,
        }
    });
    match result {
        Ok(()) => exit::OK,
        Err(error)
            if error
                .chain()
                .any(|cause| cause.is::<output::StdoutClosed>()) =>
        {
            exit::OK
        }
        Err(error) => report(&error),
    }
}

/// Prints the error with its whole cause chain and picks the exit code from its kind. A
/// closed stderr leaves only the exit code to tell.
fn report(error: &anyhow::Error) -> u8 {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "ipmanager: error: {error:#}");
    exit_code(error)
}

fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() {
            return exit::CONFIG;
        }
        if cause.is::<Unreachable>() {
            return exit::UNAVAILABLE;
        }
        if cause.is::<sync::TimedOut>() {
            return exit::TEMP_FAIL;
        }
        if let Some(admin) = cause.downcast_ref::<AdminError>() {
            return match admin {
                AdminError::NotFound(_) | AdminError::NothingToDo(_) => exit::NOT_FOUND,
                AdminError::Ambiguous(_) => exit::USAGE,
                AdminError::Invalid(_) => exit::DATA_ERR,
                AdminError::Db(db) => db_exit_code(db),
            };
        }
        if let Some(db) = cause.downcast_ref::<DbError>() {
            return db_exit_code(db);
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return db_exit_code_of(pg);
        }
        if cause.is::<FileError>() || cause.is::<std::io::Error>() {
            return exit::IO_ERR;
        }
    }
    exit::SOFTWARE
}

fn db_exit_code(db: &DbError) -> u8 {
    match db {
        DbError::Settings(_) | DbError::UnsupportedServer { .. } => exit::CONFIG,
        DbError::Postgres(e) => db_exit_code_of(e),
        _ => exit::UNAVAILABLE,
    }
}

fn db_exit_code_of(error: &tokio_postgres::Error) -> u8 {
    match error.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => exit::NO_PERM,
        // The schema is missing or older than this binary: see missing_schema_hint.
        Some(code) if schema_missing(code) => exit::UNAVAILABLE,
        Some(code) if transient(code) => exit::TEMP_FAIL,
        Some(code) if server_unavailable(code) => exit::UNAVAILABLE,
        Some(_) => exit::DATA_ERR,
        None => exit::UNAVAILABLE,
    }
}

/// A failure that says nothing about the data and may pass if the command is run again: the
/// server ran short of a resource (class 53: memory, disk, locks, connections), a lock or
/// statement timed out or was cancelled, or the transaction lost a serialization race or a
/// deadlock (class 40).
fn transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    class == "53"
        || class == "40"
        || [SqlState::LOCK_NOT_AVAILABLE, SqlState::QUERY_CANCELED].contains(code)
}

/// The server is shutting down, in recovery, or failed on its own side (classes 57, 58).
fn server_unavailable(code: &SqlState) -> bool {
    matches!(&code.code()[..2], "57" | "58")
}

/// Commands that administer the database's content through one connection.
async fn run_admin(command: Command, config: &Config) -> Result<()> {
    let name = match &command {
        Command::Host(_) => "host",
        Command::Subnet(_) => "subnet",
        Command::Site(_) => "site",
        Command::Status(_) => "status",
        Command::Compact(_) => "compact",
        Command::Log(_) => "log",
        Command::Import(_) => "import",
        Command::Export(_) => "export",
        _ => unreachable!("service commands are dispatched in run"),
    };
    let mut session = Session::connect(config, name).await?;
    let result = match command {
        Command::Host(command) => host::run(command, &mut session).await,
        Command::Subnet(command) => subnet::run(command, &mut session).await,
        Command::Site(command) => site::run(command, &mut session).await,
        Command::Status(args) => sync::status(args, &mut session).await,
        Command::Compact(args) => sync::compact(args, &mut session).await,
        Command::Log(args) => audit::run(args, &mut session).await,
        Command::Import(args) => exchange::import(args, &mut session).await,
        Command::Export(args) => exchange::export(args, &mut session).await,
        _ => unreachable!("service commands are dispatched in run"),
    };
    result.map_err(missing_schema_hint)
}

/// What PostgreSQL says when the schema, or a table or function of it, is not there.
fn schema_missing(code: &SqlState) -> bool {
    [
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_FUNCTION,
    ]
    .contains(code)
}

/// A missing table or function means `ipmanager migrate` has not run (or is older than this
/// binary); say so instead of leaving the admin with "relation does not exist".
fn missing_schema_hint(error: anyhow::Error) -> anyhow::Error {
    let missing = error.chain().any(|cause| {
        let pg = cause.downcast_ref::<tokio_postgres::Error>().or_else(|| {
            match cause.downcast_ref::<AdminError>() {
                Some(AdminError::Db(DbError::Postgres(e))) => Some(e),
                _ => None,
            }
        });
        pg.and_then(|e| e.code()).is_some_and(schema_missing)
    });
    if missing {
        error.context(
            "the ipmanager schema is missing or outdated in this database: run 'ipmanager migrate'",
        )
    } else {
        error
    }
}

/// Logs to stderr. Under systemd (JOURNAL_STREAM set) the journal adds its own timestamp, so
/// ours is left out. Colours only on a terminal and without NO_COLOR: escape codes in a log
/// file, a pipe or the journal are noise.
fn init_logging(configured_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(wants_colour());
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    drop(installed); // already installed (tests calling run twice) is fine
}

/// Whether log lines may carry colour: stderr is a terminal and NO_COLOR (no-color.org) is
/// unset or empty.
fn wants_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_and_race_failures_are_temporary_not_bad_data() {
        for (code, exit) in [
            (SqlState::OUT_OF_MEMORY, exit::TEMP_FAIL),
            (SqlState::from_code("53200"), exit::TEMP_FAIL),
            (SqlState::TOO_MANY_CONNECTIONS, exit::TEMP_FAIL),
            (SqlState::T_R_SERIALIZATION_FAILURE, exit::TEMP_FAIL),
            (SqlState::T_R_DEADLOCK_DETECTED, exit::TEMP_FAIL),
            (SqlState::LOCK_NOT_AVAILABLE, exit::TEMP_FAIL),
            (SqlState::QUERY_CANCELED, exit::TEMP_FAIL),
            (SqlState::ADMIN_SHUTDOWN, exit::UNAVAILABLE),
            (SqlState::CHECK_VIOLATION, exit::DATA_ERR),
        ] {
            let got = if transient(&code) {
                exit::TEMP_FAIL
            } else if server_unavailable(&code) {
                exit::UNAVAILABLE
            } else {
                exit::DATA_ERR
            };
            assert_eq!(got, exit, "{}", code.code());
        }
    }
}
