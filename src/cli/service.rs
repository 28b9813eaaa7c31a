//! The service-side commands: `agent`, `migrate`, `render` and `check-config`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::output::{outln, stdout_error};
use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::db;
use crate::render;

pub async fn run_agent(config: Config) -> Result<()> {
    refuse_an_old_server(&config).await?;
    crate::agent::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Exits (78) when the server answers and is older than PostgreSQL 13, rather than retrying
/// forever against it. An unreachable server is the agent's to wait for.
async fn refuse_an_old_server(config: &Config) -> Result<()> {
    let connector = config.connector("ipmanager-agent")?;
    match db::connect(&connector).await {
        Err(error @ db::DbError::UnsupportedServer { .. }) => Err(anyhow::Error::new(error)
            .context(format!("refusing to run against {}", connector.target()))),
        _ => Ok(()),
    }
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

pub async fn migrate(config: &Config) -> Result<()> {
    let connector = config.connector("ipmanager-migrate")?;
    let mut client = db::connect(&connector)
        .await
        .with_context(|| format!("cannot connect to {}", connector.target()))?;
    let report = db::migrate(&mut client).await?;
    if report.applied.is_empty() {
        outln!("schema is up to date")?;
    } else {
        for name in report.applied {
            outln!("applied {name}")?;
        }
    }
    Ok(())
}

pub async fn render_files(config: &Config) -> Result<()> {
    let connector = config.connector("ipmanager-render")?;
    let target = connector.target().to_owned();
    let pool = db::pool(connector);
    let snapshot = db::take_snapshot_at(&pool, 0, &crate::agent::site_scope(config))
        .await
        .with_context(|| format!("cannot read the database {target}"))?;
    let layout = config.dnsmasq.layout();
    let rendered = render::render_scoped(&snapshot.snapshot, &layout, &snapshot.names_only);
    let mut out = std::io::stdout().lock();
    let mut files = Vec::new();
    if let Some(hosts) = &rendered.hosts {
        files.push((layout.hosts_file.clone(), hosts));
    }
    if let Some(addn) = &rendered.addn_hosts {
        files.push((layout.addn_hosts_file.clone(), addn));
    }
    if let Some(sharded) = &rendered.sharded {
        for (dir, shards) in [
            (&layout.hosts_dir, &sharded.dhcp),
            (&layout.names_dir, &sharded.dns),
        ] {
            for (shard, content) in shards {
                files.push((dir.join(render::shard_file_name(*shard)), content));
            }
        }
    }
    files.push((config.dnsmasq.include_file.clone(), &rendered.include));
    for (path, content) in files {
        writeln!(out, "# ==> {} <==", path.display()).map_err(stdout_error)?;
        out.write_all(content.as_bytes()).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
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

pub fn check_config(config: &Config, file: Option<PathBuf>) -> Result<()> {
    let source = match file {
        Some(path) => path.display().to_string(),
        None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => DEFAULT_CONFIG_FILE.into(),
        None => "built-in defaults and the environment".into(),
    };
    let d = &config.dnsmasq;
    outln!("configuration is valid (from {source})")?;
    outln!("database_url = {}", config.database_target())?;
    outln!("log_level = {:?}", config.log_level)?;
    outln!("agent.name = {:?}", config.agent.name)?;
    outln!(
        "agent.resync_interval = {:?}",
        duration(config.agent.resync_interval)
    )?;
    outln!(
        "agent.liveness_interval = {:?}",
        duration(config.agent.liveness_interval)
    )?;
    outln!(
        "agent.burst_interval = {:?}",
        duration(config.agent.burst_interval)
    )?;
    outln!(
        "agent.max_backoff = {:?}",
        duration(config.agent.max_backoff)
    )?;
    // Unset means every enabled subnet; the line appears only when sites are configured.
    if let Some(sites) = &config.agent.sites {
        outln!("agent.sites = {sites:?}")?;
    }
    if let Some(listen) = config.agent.metrics_listen {
        outln!("agent.metrics_listen = \"{listen}\"")?;
    }
    outln!("dnsmasq.layout = {:?}", d.layout_name())?;
    outln!("dnsmasq.include_file = {:?}", d.include_file)?;
    outln!("dnsmasq.hosts_file = {:?}", d.hosts_file)?;
    outln!("dnsmasq.addn_hosts_file = {:?}", d.addn_hosts_file)?;
    outln!("dnsmasq.hosts_dir = {:?}", d.hosts_dir)?;
    outln!("dnsmasq.names_dir = {:?}", d.names_dir)?;
    outln!("dnsmasq.shards = {}", d.shards)?;
    outln!("dnsmasq.names_shards = {}", d.names_shards)?;
    outln!(
        "dnsmasq.compaction_interval = {:?}",
        duration(d.compaction_interval)
    )?;
    outln!("dnsmasq.pid_file = {:?}", d.pid_file)?;
    outln!("dnsmasq.dns_scope = {:?}", d.dns_scope.as_str())?;
    outln!("dnsmasq.reload_command = {:?}", d.reload_command)?;
    outln!("dnsmasq.restart_command = {:?}", d.restart_command)?;
    outln!("dnsmasq.check_command = {:?}", d.check_command)?;
    outln!("dnsmasq.lease_file = {:?}", d.lease_file)?;
    outln!("dnsmasq.release_command = {:?}", d.release_command)?;
    outln!("dnsmasq.release6_command = {:?}", d.release6_command)?;
    // Unset means the interface in each lease's network; the line appears only when set.
    if let Some(interface) = &d.release_interface {
        outln!("dnsmasq.release_interface = {interface:?}")?;
    }
    outln!("dnsmasq.file_mode = \"{:04o}\"", d.file_mode)?;
    outln!(
        "dnsmasq.command_timeout = {:?}",
        duration(d.command_timeout)
    )?;
    let api = &config.api;
    outln!("api.listen = \"{}\"", api.listen)?;
    if let (Some(cert), Some(key)) = (&api.tls_cert, &api.tls_key) {
        outln!("api.tls_cert = {cert:?}")?;
        outln!("api.tls_key = {key:?}")?;
    }
    outln!("api.allow_plain_http = {}", api.allow_plain_http)?;
    outln!("api.request_timeout = {:?}", duration(api.request_timeout))?;
    outln!("api.max_body_bytes = {}", api.max_body_bytes)?;
    outln!("api.pool_size = {}", api.pool_size)?;
    Ok(())
}
