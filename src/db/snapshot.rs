//! Reads everything the agent serves in one REPEATABLE READ transaction, so subnets and hosts
//! come from the same committed state, and names that state with the transaction's
//! `pg_current_snapshot()`, so that the agent can report exactly which commits it serves.

use cidr::{IpCidr, IpInet};
use deadpool_postgres::Pool;
use eui48::MacAddress;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::DbError;
use crate::model::{Host, Snapshot, Subnet};

// $1: the sites served (NULL: every subnet); $2: also read the other subnets, for names only.
// `served` says which is which.
const SUBNETS: &str = "\
    SELECT id, cidr, range_start, range_end, gateway, \
           extract(epoch FROM lease_time)::bigint AS lease_seconds, domain, \
           ($1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) AS served \
    FROM ipmanager.subnets \
    WHERE enabled \
      AND ($2::bool OR $1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false))";

// Sorting is left to the renderer, which must be deterministic whatever order it is given.
const HOSTS: &str = "\
    SELECT h.id, h.subnet_id, h.mac, h.ip, h.hostname, \
           extract(epoch FROM h.lease_time)::bigint AS lease_seconds \
    FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
    WHERE h.enabled AND s.enabled \
      AND ($2::bool OR $1::text[] IS NULL OR coalesce(s.site = ANY($1::text[]), false))";

const CURRENT_SNAPSHOT: &str = "SELECT pg_current_snapshot()::text AS snapshot";

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
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;

    // Cached statements save a round trip per query on every snapshot.
    let subnets_statement = tx.prepare_cached(SUBNETS).await?;
    let hosts_statement = tx.prepare_cached(HOSTS).await?;
    let current_statement = tx.prepare_cached(CURRENT_SNAPSHOT).await?;
    // REPEATABLE READ: every statement of the transaction sees this same snapshot.
    let db_snapshot: String = tx
        .query_one(&current_statement, &[])
        .await?
        .try_get("snapshot")?;
    let filter: [&(dyn ToSql + Sync); 2] = [&scope.sites, &scope.names_of_all];
    let mut names_only = Vec::new();
    let subnets = tx
        .query(&subnets_statement, &filter)
        .await?
        .iter()
        .map(|row| {
            let range_start: Option<IpInet> = row.try_get("range_start")?;
            let range_end: Option<IpInet> = row.try_get("range_end")?;
            if !row.try_get::<_, bool>("served")? {
                names_only.push(row.try_get("id")?);
            }
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
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;

    // Streamed so that 100k rows are decoded one at a time instead of buffered twice.
    let rows = tx.query_raw(&hosts_statement, filter).await?;
    pin_mut!(rows);
    let mut hosts = Vec::with_capacity(expected_hosts + expected_hosts / 64);
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
    tx.commit().await?;
    Ok(SnapshotAt {
        snapshot: Snapshot { subnets, hosts },
        names_only,
        db_snapshot,
    })
}
