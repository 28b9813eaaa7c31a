//! "Is my change live?": the agents' sync status as they record it in `ipmanager.agent_status`,
//! read through `ipmanager.sync_status` and `ipmanager.change_applied`, and waiting until a
//! committed change has reached every live agent, or until every live agent has compacted.

use std::future::Future;
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
    /// Its `[dnsmasq] layout`; `None` for agents older than layouts (they write whole files).
    pub layout: Option<String>,
    /// Hosts whose change it wrote but dnsmasq serves only after its next compaction; `None`
    /// for agents older than layouts.
    pub awaiting_compaction: Option<i32>,
    /// Its last compaction on request.
    #[serde(serialize_with = "super::rfc3339::option")]
    pub compacted_at: Option<SystemTime>,
}

/// Every agent that has ever reported, by name.
pub async fn status(client: &impl GenericClient) -> Result<Vec<AgentSync>> {
    let rows = client
        .query(
            "SELECT name, db_user::text AS db_user, host, version, phase, alive, seen_at, started_at, \
                    applied_at, up_to_date, behind_since, pending_changes, files_hash, hosts, \
                    rows_skipped, last_error, last_error_at, sites, dns_scope, layout, \
                    awaiting_compaction, compacted_at \
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
                layout: row.try_get("layout")?,
                awaiting_compaction: row.try_get("awaiting_compaction")?,
                compacted_at: row.try_get("compacted_at")?,
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
    poll(
        timeout,
        POLL_INTERVAL,
        || change_applied(client, change),
        |agents| agents.iter().all(|a| a.applied || !a.awaited()),
    )
    .await
}

/// Asks every running agent for a compaction (`ipmanager.request_compaction()`, a notification
/// on [`crate::db::COMPACT_CHANNEL`]); returns the request's time, which an agent's
/// `compacted_at` reaches once it has compacted.
pub async fn request_compaction(client: &impl GenericClient) -> Result<SystemTime> {
    Ok(client
        .query_one("SELECT ipmanager.request_compaction() AS requested", &[])
        .await?
        .try_get("requested")?)
}

/// Where one agent stands with a compaction requested at some time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentCompaction {
    pub name: String,
    pub alive: bool,
    /// Its `[dnsmasq] layout`; `None`: an agent older than compaction requests.
    pub layout: Option<String>,
    /// Its last compaction on request.
    #[serde(serialize_with = "super::rfc3339::option")]
    pub compacted_at: Option<SystemTime>,
    /// `compacted_at` is at or after the request.
    pub compacted: bool,
    pub phase: String,
    pub last_error: Option<String>,
}

impl AgentCompaction {
    /// Alive and new enough to answer a request (it reports a layout): the agents `ipmanager
    /// compact` waits for. Older agents write whole files, which owe no compaction.
    pub fn awaited(&self) -> bool {
        self.alive && self.layout.is_some()
    }
}

/// Every agent, with whether it has compacted since `requested`.
pub async fn compactions(
    client: &impl GenericClient,
    requested: SystemTime,
) -> Result<Vec<AgentCompaction>> {
    let rows = client
        .query(
            "SELECT name, alive, layout, compacted_at, \
                    coalesce(compacted_at >= $1, false) AS compacted, phase, last_error \
             FROM ipmanager.sync_status ORDER BY name",
            &[&requested],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AgentCompaction {
                name: row.try_get("name")?,
                alive: row.try_get("alive")?,
                layout: row.try_get("layout")?,
                compacted_at: row.try_get("compacted_at")?,
                compacted: row.try_get("compacted")?,
                phase: row.try_get("phase")?,
                last_error: row.try_get("last_error")?,
            })
        })
        .collect()
}

/// How often [`wait_compacted`] looks: a compaction rewrites every shard and reloads dnsmasq,
/// which takes far longer than a change.
const COMPACTION_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls until every awaited agent (see [`AgentCompaction::awaited`]) has compacted since
/// `requested` or `timeout` passes; returns the last answer. An agent that stops reporting
/// while this waits is no longer waited for.
pub async fn wait_compacted(
    client: &impl GenericClient,
    requested: SystemTime,
    timeout: Duration,
) -> Result<Vec<AgentCompaction>> {
    poll(
        timeout,
        COMPACTION_POLL_INTERVAL,
        || compactions(client, requested),
        |agents| agents.iter().all(|a| a.compacted || !a.awaited()),
    )
    .await
}

/// Calls `look` every `interval` until `done` holds for its answer or `timeout` passes; returns
/// the last answer.
async fn poll<T, Fut>(
    timeout: Duration,
    interval: Duration,
    mut look: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let answer = look().await?;
        if done(&answer) || Instant::now() >= deadline {
            return Ok(answer);
        }
        tokio::time::sleep(interval.min(deadline - Instant::now())).await;
    }
}
