//! "Is my change live?": the agents' sync status as they record it in `ipmanager.agent_status`,
//! read through `ipmanager.sync_status` and `ipmanager.change_applied`, and waiting until a
//! committed change has reached every live agent.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::GenericClient;

use super::Result;

/// One agent's row of `ipmanager.sync_status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSync {
    pub name: String,
    pub db_user: String,
    pub host: Option<String>,
    pub version: Option<String>,
    pub phase: String,
    /// Reported within the last three heartbeats.
    pub alive: bool,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    pub seen_at: SystemTime,
    #[serde(serialize_with = "super::rfc3339::option")]
    pub started_at: Option<SystemTime>,
    #[serde(serialize_with = "super::rfc3339::option")]
    pub applied_at: Option<SystemTime>,
    /// Its applied snapshot includes every committed change.
    pub up_to_date: bool,
    /// When the oldest change it has not applied was made.
    #[serde(serialize_with = "super::rfc3339::option")]
    pub behind_since: Option<SystemTime>,
    /// Committed changes it has not applied; `None` before its first applied snapshot.
    pub pending_changes: Option<i64>,
    pub files_hash: Option<String>,
    pub hosts: Option<i32>,
    pub rows_skipped: Option<i32>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "super::rfc3339::option")]
    pub last_error_at: Option<SystemTime>,
    /// The sites it serves; `None`: every subnet.
    pub sites: Option<Vec<String>>,
    /// Its `dns_scope` (`sites` or `all`); `None` for agents older than sites.
    pub dns_scope: Option<String>,
}

/// Every agent that has ever reported, by name.
pub async fn status(client: &impl GenericClient) -> Result<Vec<AgentSync>> {
    let rows = client
        .query(
            "SELECT name, db_user::text AS db_user, host, version, phase, alive, seen_at, started_at, \
                    applied_at, up_to_date, behind_since, pending_changes, files_hash, hosts, \
                    rows_skipped, last_error, last_error_at, sites, dns_scope \
             FROM ipmanager.sync_status ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AgentSync {
                name: row.try_get("name")?,
                db_user: row.try_get("db_user")?,
                host: row.try_get("host")?,
                version: row.try_get("version")?,
                phase: row.try_get("phase")?,
                alive: row.try_get("alive")?,
                seen_at: row.try_get("seen_at")?,
                started_at: row.try_get("started_at")?,
                applied_at: row.try_get("applied_at")?,
                up_to_date: row.try_get("up_to_date")?,
                behind_since: row.try_get("behind_since")?,
                pending_changes: row.try_get("pending_changes")?,
                files_hash: row.try_get("files_hash")?,
                hosts: row.try_get("hosts")?,
                rows_skipped: row.try_get("rows_skipped")?,
                last_error: row.try_get("last_error")?,
                last_error_at: row.try_get("last_error_at")?,
                sites: row.try_get("sites")?,
                dns_scope: row.try_get("dns_scope")?,
            })
        })
        .collect()
}

/// The id of the caller's transaction (`pg_current_xact_id()`), to be taken inside the
/// transaction that makes a change and waited for after it commits.
pub async fn current_change(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_current_xact_id()::text AS change", &[])
        .await?
        .try_get("change")?)
}

/// Whether one agent has applied a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentApplied {
    pub name: String,
    pub alive: bool,
    pub applied: bool,
    pub phase: String,
    pub last_error: Option<String>,
    /// The sites it serves; `None`: every subnet.
    pub sites: Option<Vec<String>>,
    /// The change touches what it serves, so it has to apply it.
    pub concerned: bool,
}

impl AgentApplied {
    /// Alive and serving what the change touched: the agents `--wait` waits for.
    pub fn awaited(&self) -> bool {
        self.alive && self.concerned
    }
}

pub async fn change_applied(
    client: &impl GenericClient,
    change: &str,
) -> Result<Vec<AgentApplied>> {
    let rows = client
        .query(
            "SELECT name, alive, applied, phase, last_error, sites, concerned \
             FROM ipmanager.change_applied($1::text::xid8) ORDER BY name",
            &[&change],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AgentApplied {
                name: row.try_get("name")?,
                alive: row.try_get("alive")?,
                applied: row.try_get("applied")?,
                phase: row.try_get("phase")?,
                last_error: row.try_get("last_error")?,
                sites: row.try_get("sites")?,
                concerned: row.try_get("concerned")?,
            })
        })
        .collect()
}

/// The sites a committed change touched (`ipmanager.change_sites`), sorted; `None` stands for
/// subnets without a site.
pub async fn change_sites(
    client: &impl GenericClient,
    change: &str,
) -> Result<Vec<Option<String>>> {
    Ok(client
        .query_one(
            "SELECT ipmanager.change_sites($1::text::xid8) AS sites",
            &[&change],
        )
        .await?
        .try_get("sites")?)
}

/// How long `wait_applied` sleeps between looks. Agents apply a change within tens of
/// milliseconds, so a coarser poll would be most of the wait.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls until every live agent the change concerns has applied `change` or `timeout` passes;
/// returns the last answer. Agents that are not alive, or serve other sites, are not waited for
/// (the caller reports them).
pub async fn wait_applied(
    client: &impl GenericClient,
    change: &str,
    timeout: Duration,
) -> Result<Vec<AgentApplied>> {
    let deadline = Instant::now() + timeout;
    loop {
        let agents = change_applied(client, change).await?;
        let done = agents.iter().all(|a| a.applied || !a.awaited());
        if done || Instant::now() >= deadline {
            return Ok(agents);
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
}
