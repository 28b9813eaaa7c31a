//! The `ipmanager` command line: argument parsing, logging set-up, and exit codes. Only the
//! binary uses this module; the library never imports it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_FILE};
use crate::db::{self, DbError};
use crate::render;
use crate::write::FileError;

/// sysexits-style exit codes, so that scripts and systemd can tell failures apart.
pub mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 2;
    pub const DATA_ERR: u8 = 65;
    pub const NO_PERM: u8 = 77;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const IO_ERR: u8 = 74;
    pub const CONFIG: u8 = 78;
}

const EXAMPLES: &str = "\
Examples:
  ipmanager migrate                          apply the schema (as a role that may create it)
  ipmanager check-config -c /etc/ipmanager/ipmanager.toml
  ipmanager render                           show what the agent would write
  IPMANAGER_DATABASE_URL=postgresql://ipmanager_agent@db/ipmanager ipmanager agent

Configuration: defaults, then the file, then the environment: IPMANAGER_DATABASE_URL
overrides database_url, IPMANAGER__SECTION__KEY any other key (IPMANAGER__AGENT__NAME=dhcp1).";

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
            Command::Agent => run_agent(config).await,
            Command::Migrate => migrate(&config).await,
            Command::Render => render_files(&config).await,
            Command::CheckConfig => check_config(&config, cli.config),
        }
    });
    match result {
        Ok(()) => exit::OK,
        Err(error) => report(&error),
    }
}

/// Prints the error with its whole cause chain and picks the exit code from its kind.
fn report(error: &anyhow::Error) -> u8 {
    eprintln!("ipmanager: error: {error:#}");
    exit_code(error)
}

fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() {
            return exit::CONFIG;
        }
        if let Some(db) = cause.downcast_ref::<DbError>() {
            return match db {
                DbError::InvalidUrl(_) => exit::CONFIG,
                DbError::Postgres(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
                {
                    exit::NO_PERM
                }
                DbError::Postgres(e) if e.as_db_error().is_some() => exit::DATA_ERR,
                _ => exit::UNAVAILABLE,
            };
        }
        if cause.is::<FileError>() || cause.is::<std::io::Error>() {
            return exit::IO_ERR;
        }
    }
    exit::SOFTWARE
}

/// Logs to stderr. Under systemd (JOURNAL_STREAM set) the journal adds its own timestamp, so
/// ours is left out, and so are colours.
fn init_logging(configured_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.try_init()
    };
    drop(installed); // already installed (tests calling run twice) is fine
}

async fn run_agent(config: Config) -> Result<()> {
    crate::agent::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn migrate(config: &Config) -> Result<()> {
    let pg = db::connection_config(config.database_url.expose(), "ipmanager-migrate")?;
    let mut client = db::connect(&pg)
        .await
        .with_context(|| format!("cannot connect to {}", config.database_url))?;
    let report = db::migrate(&mut client).await?;
    if report.applied.is_empty() {
        println!("schema is up to date");
    } else {
        for name in report.applied {
            println!("applied {name}");
        }
    }
    Ok(())
}

async fn render_files(config: &Config) -> Result<()> {
    let pool = db::pool(db::connection_config(
        config.database_url.expose(),
        "ipmanager-render",
    )?);
    let snapshot = db::take_snapshot(&pool, 0)
        .await
        .with_context(|| format!("cannot read the database {}", config.database_url))?;
    let layout = config.dnsmasq.layout();
    let rendered = render::render(&snapshot, &layout);
    let mut out = std::io::stdout().lock();
    let mut files = Vec::new();
    if let Some(hosts) = &rendered.hosts {
        files.push((&layout.hosts_file, hosts));
    }
    if let Some(addn) = &rendered.addn_hosts {
        files.push((&layout.addn_hosts_file, addn));
    }
    files.push((&config.dnsmasq.include_file, &rendered.include));
    for (path, content) in files {
        writeln!(out, "# ==> {} <==", path.display())?;
        out.write_all(content.as_bytes())?;
    }
    for skipped in &rendered.skipped {
        eprintln!(
            "ipmanager: warning: {:?} not served: {}",
            skipped.row, skipped.reason
        );
    }
    Ok(())
}

/// A duration as the configuration file writes it, e.g. `"1m 30s"`.
fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn check_config(config: &Config, file: Option<PathBuf>) -> Result<()> {
    let source = match file {
        Some(path) => path.display().to_string(),
        None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => DEFAULT_CONFIG_FILE.into(),
        None => "built-in defaults and the environment".into(),
    };
    let d = &config.dnsmasq;
    println!("configuration is valid (from {source})");
    println!("database_url = {}", config.database_url);
    println!("log_level = {:?}", config.log_level);
    println!("agent.name = {:?}", config.agent.name);
    println!(
        "agent.resync_interval = {:?}",
        duration(config.agent.resync_interval)
    );
    println!(
        "agent.liveness_interval = {:?}",
        duration(config.agent.liveness_interval)
    );
    println!(
        "agent.burst_interval = {:?}",
        duration(config.agent.burst_interval)
    );
    println!(
        "agent.max_backoff = {:?}",
        duration(config.agent.max_backoff)
    );
    println!(
        "dnsmasq.layout = {:?}",
        format!("{:?}", d.layout).to_lowercase()
    );
    println!("dnsmasq.include_file = {:?}", d.include_file);
    println!("dnsmasq.hosts_file = {:?}", d.hosts_file);
    println!("dnsmasq.addn_hosts_file = {:?}", d.addn_hosts_file);
    println!("dnsmasq.pid_file = {:?}", d.pid_file);
    println!("dnsmasq.reload_command = {:?}", d.reload_command);
    println!("dnsmasq.restart_command = {:?}", d.restart_command);
    println!("dnsmasq.check_command = {:?}", d.check_command);
    println!("dnsmasq.file_mode = \"{:04o}\"", d.file_mode);
    println!(
        "dnsmasq.command_timeout = {:?}",
        duration(d.command_timeout)
    );
    Ok(())
}
