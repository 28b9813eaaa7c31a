//! Reads everything the agent serves in one REPEATABLE READ transaction, so subnets and hosts
//! come from the same committed state, and names that state with the transaction's
//! `pg_current_snapshot()`, so that the agent can report exactly which commits it serves.
//!
//! A delta read ([`take_delta_at`]) brings an earlier snapshot up to date by reading only the
//! hosts changed since it (`ipmanager.hosts_changed_since`), with the same filter as the full
//! read, and tells when only a full read will do.

use std::collections::HashSet;

use cidr::{IpCidr, IpInet};
use deadpool_postgres::{Pool, Transaction};
use eui48::MacAddress;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::DbError;
use crate::model::{Host, Snapshot, Subnet};

// $1: the sites served (NULL: every subnet); $2: also read the other subnets, for names only.
// `served` says which is which. Ordered, so that two reads of the same subnets are equal.
const SUBNETS: &str = "\
    SELECT id, cidr, range_start, range_end, gateway, \
           extract(epoch FROM lease_time)::bigint AS lease_seconds, domain, \
           ($1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) AS served \
    FROM ipmanager.subnets \
    WHERE enabled \
      AND ($2::bool OR $1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) \
    ORDER BY id";

/// The full read's hosts query; the delta read adds a condition on the ids, so that both use
/// the one filter.
macro_rules! hosts_query {
    () => {
        "SELECT h.id, h.subnet_id, h.mac, h.ip, h.hostname, \
                extract(epoch FROM h.lease_time)::bigint AS lease_seconds \
         FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
         WHERE h.enabled AND s.enabled \
           AND ($2::bool OR $1::text[] IS NULL OR coalesce(s.site = ANY($1::text[]), false))"
    };
}

// Sorting is left to the renderer, which must be deterministic whatever order it is given.
const HOSTS: &str = hosts_query!();
// $3: the ids changed since the earlier snapshot.
const HOSTS_BY_ID: &str = concat!(hosts_query!(), " AND h.id = ANY($3::bigint[])");
// NULL: only a full read will do.
const CHANGED: &str = "SELECT ipmanager.hosts_changed_since($1::text::pg_snapshot) AS ids";

// The server's start names the xid sequence the snapshot belongs to: after a restart or a
// failover (a promoted standby may lack the last commits, and reuse their xids), deltas
// against an older snapshot cannot be trusted.
const CURRENT_SNAPSHOT: &str = "\
    SELECT pg_current_snapshot()::text AS snapshot, \
           pg_postmaster_start_time()::text AS server_started";

/// Which subnets a snapshot holds: an agent's `[agent] sites` and `[dnsmasq] dns_scope`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteScope {
    /// The sites whose subnets are served; `None`: every enabled subnet.
    pub sites: Option<Vec<String>>,
    /// Also read every other enabled subnet and its hosts, for their names only.
    pub names_of_all: bool,
}

/// A snapshot of the data together with the database snapshot it was read in.
#[derive(Debug, Clone)]
pub struct SnapshotAt {
    pub snapshot: Snapshot,
    /// Subnets of the snapshot that lie outside the scope's sites, read for their hosts' names
    /// only (see [`crate::render::render_scoped`]).
    pub names_only: Vec<i64>,
    /// `pg_current_snapshot()::text` of the reading transaction, e.g. `1234:1240:1236`: a
    /// transaction's changes are in `snapshot` exactly when it is visible in this one.
    pub db_snapshot: String,
    /// `pg_postmaster_start_time()` of the server it was read from: a delta read against
    /// another server, or the same one restarted, reads everything instead.
    pub server_started: String,
}

/// Takes a full, consistent snapshot. A partial read is an error, never a smaller snapshot.
/// `expected_hosts` (e.g. the previous snapshot's count) sizes the host list up front, so that
/// 100k hosts are not copied through ever larger buffers on the way in.
pub async fn take_snapshot(pool: &Pool, expected_hosts: usize) -> Result<Snapshot, DbError> {
    Ok(
        take_snapshot_at(pool, expected_hosts, &SiteScope::default())
            .await?
            .snapshot,
    )
}

/// [`take_snapshot`] of what `scope` covers, plus the `pg_current_snapshot()` of the
/// transaction it was read in.
pub async fn take_snapshot_at(
    pool: &Pool,
    expected_hosts: usize,
    scope: &SiteScope,
) -> Result<SnapshotAt, DbError> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    let (current, subnets, names_only) = read_subnets(&tx, scope).await?;
    let hosts_statement = tx.prepare_cached(HOSTS).await?;
    let filter: [&(dyn ToSql + Sync); 2] = [&scope.sites, &scope.names_of_all];
    let hosts = read_hosts(&tx, &hosts_statement, &filter, expected_hosts).await?;
    tx.commit().await?;
    Ok(SnapshotAt {
        snapshot: Snapshot { subnets, hosts },
        names_only,
        db_snapshot: current.snapshot,
        server_started: current.server_started,
    })
}

/// What a delta read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaStats {
    /// Hosts changed since the earlier snapshot, in any subnet.
    pub changed: usize,
    /// Rows of them read: the changed hosts that the scope covers and that are enabled.
    pub fetched: usize,
}

/// Brings `previous` (read with the same `scope`) up to date with the hosts changed since it,
/// in one REPEATABLE READ transaction: `Some` when it was patched, `None` (and `previous`
/// untouched) when only a full read will do: the subnets read differ from its subnets in any
/// way, the server is not the one it was read from (restarted, or another after a failover),
/// the database cannot tell the changes by host ids, or more than `max_changed` hosts changed.
pub async fn take_delta_at(
    pool: &Pool,
    previous: &mut SnapshotAt,
    scope: &SiteScope,
    max_changed: usize,
) -> Result<Option<DeltaStats>, DbError> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    let (current, subnets, names_only) = read_subnets(&tx, scope).await?;
    if subnets != previous.snapshot.subnets
        || names_only != previous.names_only
        || current.server_started != previous.server_started
    {
        return Ok(None);
    }
    let changed_statement = tx.prepare_cached(CHANGED).await?;
    let changed: Option<Vec<i64>> = tx
        .query_one(&changed_statement, &[&previous.db_snapshot])
        .await?
        .try_get("ids")?;
    let Some(changed) = changed.filter(|ids| ids.len() <= max_changed) else {
        return Ok(None);
    };
    let hosts = if changed.is_empty() {
        Vec::new()
    } else {
        let statement = tx.prepare_cached(HOSTS_BY_ID).await?;
        let params: [&(dyn ToSql + Sync); 3] = [&scope.sites, &scope.names_of_all, &changed];
        read_hosts(&tx, &statement, &params, changed.len()).await?
    };
    tx.commit().await?;
    let stats = DeltaStats {
        changed: changed.len(),
        fetched: hosts.len(),
    };
    previous
        .snapshot
        .patch(&changed.into_iter().collect::<HashSet<_>>(), hosts);
    previous.db_snapshot = current.snapshot;
    Ok(Some(stats))
}

/// A read-only REPEATABLE READ transaction: every statement in it sees one snapshot.
async fn begin(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>, DbError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The transaction's snapshot and server.
struct Current {
    snapshot: String,
    server_started: String,
}

/// The transaction's [`Current`], the subnets `scope` covers, and the ids of those read for
/// names only.
async fn read_subnets(
    tx: &Transaction<'_>,
    scope: &SiteScope,
) -> Result<(Current, Vec<Subnet>, Vec<i64>), DbError> {
    // Cached statements save a round trip per query on every snapshot.
    let subnets_statement = tx.prepare_cached(SUBNETS).await?;
    let current_statement = tx.prepare_cached(CURRENT_SNAPSHOT).await?;
    let row = tx.query_one(&current_statement, &[]).await?;
    let current = Current {
        snapshot: row.try_get("snapshot")?,
        server_started: row.try_get("server_started")?,
    };
    let filter: [&(dyn ToSql + Sync); 2] = [&scope.sites, &scope.names_of_all];
    let mut names_only = Vec::new();
    let mut subnets = Vec::new();
    for row in tx.query(&subnets_statement, &filter).await? {
        if !row.try_get::<_, bool>("served")? {
            names_only.push(row.try_get("id")?);
        }
        subnets.push(subnet(&row)?);
    }
    Ok((current, subnets, names_only))
}

fn subnet(row: &Row) -> Result<Subnet, tokio_postgres::Error> {
    let range_start: Option<IpInet> = row.try_get("range_start")?;
    let range_end: Option<IpInet> = row.try_get("range_end")?;
    Ok(Subnet {
        id: row.try_get("id")?,
        cidr: row.try_get::<_, IpCidr>("cidr")?,
        range: range_start
            .zip(range_end)
            .map(|(start, end)| (start.address(), end.address())),
        gateway: row
            .try_get::<_, Option<IpInet>>("gateway")?
            .map(|g| g.address()),
        lease_seconds: row.try_get("lease_seconds")?,
        domain: row.try_get("domain")?,
    })
}

/// The hosts `statement` returns, streamed so that 100k rows are decoded one at a time instead
/// of buffered twice; `expected` sizes the list up front.
async fn read_hosts(
    tx: &Transaction<'_>,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    expected: usize,
) -> Result<Vec<Host>, DbError> {
    let rows = tx.query_raw(statement, params.iter().copied()).await?;
    pin_mut!(rows);
    let mut hosts = Vec::with_capacity(expected + expected / 64);
    while let Some(row) = rows.try_next().await? {
        let ip: IpInet = row.try_get("ip")?;
        hosts.push(Host {
            id: row.try_get("id")?,
            subnet_id: row.try_get("subnet_id")?,
            mac: row.try_get::<_, MacAddress>("mac")?.to_array(),
            ip: ip.address(),
            hostname: row.try_get("hostname")?,
            lease_seconds: row.try_get("lease_seconds")?,
        });
    }
    Ok(hosts)
}
