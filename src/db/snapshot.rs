//! Reads everything the agent serves in one REPEATABLE READ transaction, so subnets, hosts,
//! options, profiles, aliases and DNS-only names come from the same committed state, and names
//! that state with the transaction's `pg_current_snapshot()`, so that the agent can report
//! exactly which commits it serves.
//!
//! A delta read ([`take_delta_at`]) brings an earlier snapshot up to date by reading only the
//! hosts changed since it (`ipmanager.hosts_changed_since`), with the same filters as the full
//! read, and tells when only a full read will do. Options, profiles and aliases live in tables
//! of their own: a change to any of them makes the database ask for a full read.

use std::collections::HashSet;

use cidr::{IpCidr, IpInet};
use deadpool_postgres::{Pool, Transaction};
use eui48::MacAddress;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::DbError;
use crate::model::{
    DhcpOptionValue, DnsName, Extras, Host, HostSettings, OptionKind, Profile, Replaced, Snapshot,
    Subnet, SubnetSettings,
};

// $1: the sites served (NULL: every subnet); $2: also read the other subnets, for names only.
// `served` says which is which. Ordered, so that two reads of the same subnets are equal.
const SUBNETS: &str = "\
    SELECT id, cidr, range_start, range_end, gateway, \
           extract(epoch FROM lease_time)::bigint AS lease_seconds, domain, \
           ($1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) AS served, \
           default_profile_id \
    FROM ipmanager.subnets \
    WHERE enabled \
      AND ($2::bool OR $1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) \
    ORDER BY id";

/// The subnets and hosts a scope covers: the WHERE condition of the queries below.
macro_rules! in_scope {
    () => {
        "s.enabled AND ($2::bool OR $1::text[] IS NULL OR coalesce(s.site = ANY($1::text[]), false))"
    };
}

/// Each host's aliases as one array (`a.names`), for the few hosts that have any.
macro_rules! join_aliases {
    () => {
        " LEFT JOIN (SELECT a.host_id, array_agg(a.name ORDER BY lower(a.name), a.name) AS names \
                     FROM ipmanager.host_aliases a GROUP BY a.host_id) a ON a.host_id = h.id "
    };
}

// Sorting is left to the renderer, which must be deterministic whatever order it is given.
// A host without MAC is a DNS-only name (DNS_NAMES), never a reservation.
macro_rules! hosts_query {
    () => {
        concat!(
            "SELECT h.id, h.subnet_id, h.mac, h.ip, h.hostname, \
                    extract(epoch FROM h.lease_time)::bigint AS lease_seconds \
             FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
             WHERE h.enabled AND h.mac IS NOT NULL AND ",
            in_scope!()
        )
    };
}

// Only the hosts that have a profile, aliases, a client identifier or extra MACs: the partial
// and child-table indexes find them.
macro_rules! host_settings_query {
    () => {
        concat!(
            "SELECT h.id, h.profile_id, coalesce(a.names, '{}') AS aliases, h.client_id, \
                    ARRAY(SELECT m.mac FROM ipmanager.host_macs m WHERE m.host_id = h.id \
                          ORDER BY m.mac) AS macs \
             FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id",
            join_aliases!(),
            "WHERE h.enabled AND h.mac IS NOT NULL \
               AND h.id IN (SELECT x.host_id FROM ipmanager.host_aliases x \
                            UNION SELECT p.id FROM ipmanager.hosts p WHERE p.profile_id IS NOT NULL \
                            UNION SELECT c.id FROM ipmanager.hosts c WHERE c.client_id IS NOT NULL \
                            UNION SELECT m.host_id FROM ipmanager.host_macs m) \
               AND ",
            in_scope!()
        )
    };
}

macro_rules! dns_names_query {
    () => {
        concat!(
            "SELECT h.id, h.subnet_id, h.ip, h.hostname, coalesce(a.names, '{}') AS aliases \
             FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id",
            join_aliases!(),
            "WHERE h.enabled AND h.mac IS NULL AND ",
            in_scope!()
        )
    };
}

const HOSTS: &str = hosts_query!();
const HOST_SETTINGS: &str = host_settings_query!();
const DNS_NAMES: &str = dns_names_query!();
// The delta read's variants, with the same filters: $3 holds the ids changed since the
// earlier snapshot.
const HOSTS_BY_ID: &str = concat!(hosts_query!(), " AND h.id = ANY($3::bigint[])");
const HOST_SETTINGS_BY_ID: &str = concat!(host_settings_query!(), " AND h.id = ANY($3::bigint[])");
const DNS_NAMES_BY_ID: &str = concat!(dns_names_query!(), " AND h.id = ANY($3::bigint[])");
// NULL: only a full read will do.
const CHANGED: &str = "SELECT ipmanager.hosts_changed_since($1::text::pg_snapshot) AS ids";

// The catalogue's name (dnsmasq's) where it knows the number, for the option's family.
const SUBNET_OPTIONS: &str = concat!(
    "SELECT o.subnet_id AS owner, o.number, o.type, o.value, d.name \
     FROM ipmanager.subnet_options o JOIN ipmanager.subnets s ON s.id = o.subnet_id \
     LEFT JOIN ipmanager.dhcp_options d ON d.family = family(s.cidr) AND d.number = o.number \
     WHERE ",
    in_scope!(),
    " ORDER BY o.subnet_id, o.number"
);

// Every profile: any host may use one.
const PROFILES: &str = "\
    SELECT id, name, boot_file, boot_file_uefi, boot_file_arm64, boot_file_ipxe, \
           next_server, tftp_server_name \
    FROM ipmanager.profiles ORDER BY id";

const PROFILE_OPTIONS: &str = "\
    SELECT o.profile_id AS owner, o.number, o.type, o.value, d.name \
    FROM ipmanager.profile_options o \
    LEFT JOIN ipmanager.dhcp_options d ON d.family = 4 AND d.number = o.number \
    ORDER BY o.profile_id, o.number";

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
    /// After a delta read, what it replaced in `snapshot` (see [`Snapshot::patch`]); `None`
    /// after a full read.
    pub replaced: Option<Replaced>,
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
    let read = read_subnets(&tx, scope).await?;
    let hosts_statement = tx.prepare_cached(HOSTS).await?;
    let filter: [&(dyn ToSql + Sync); 2] = [&scope.sites, &scope.names_of_all];
    let hosts = read_hosts(&tx, &hosts_statement, &filter, expected_hosts).await?;
    let extras = read_extras(&tx, &filter, read.default_profiles).await?;
    tx.commit().await?;
    Ok(SnapshotAt {
        snapshot: Snapshot {
            subnets: read.subnets,
            hosts,
            extras,
        },
        names_only: read.names_only,
        db_snapshot: read.current.snapshot,
        server_started: read.current.server_started,
        replaced: None,
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
/// untouched) when only a full read will do: the subnets read (or their default profiles)
/// differ from its subnets in any way, the server is not the one it was read from (restarted, or another after a failover),
/// the database cannot tell the changes by host ids, or more than `max_changed` hosts changed.
pub async fn take_delta_at(
    pool: &Pool,
    previous: &mut SnapshotAt,
    scope: &SiteScope,
    max_changed: usize,
) -> Result<Option<DeltaStats>, DbError> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    let read = read_subnets(&tx, scope).await?;
    if read.subnets != previous.snapshot.subnets
        || read.names_only != previous.names_only
        || read.current.server_started != previous.server_started
        || !same_default_profiles(&read.default_profiles, &previous.snapshot.extras.subnets)
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
    let fetched = if changed.is_empty() {
        Fetched::default()
    } else {
        let params: [&(dyn ToSql + Sync); 3] = [&scope.sites, &scope.names_of_all, &changed];
        read_by_id(&tx, &params, changed.len()).await?
    };
    tx.commit().await?;
    let stats = DeltaStats {
        changed: changed.len(),
        fetched: fetched.hosts.len() + fetched.dns_names.len(),
    };
    previous.replaced = Some(previous.snapshot.patch(
        &changed.into_iter().collect::<HashSet<_>>(),
        fetched.hosts,
        fetched.settings,
        fetched.dns_names,
    ));
    previous.db_snapshot = read.current.snapshot;
    Ok(Some(stats))
}

/// The rows of the changed hosts: reservations, their profiles and aliases, DNS-only names.
#[derive(Default)]
struct Fetched {
    hosts: Vec<Host>,
    settings: Vec<HostSettings>,
    dns_names: Vec<DnsName>,
}

/// The changed hosts (`params`: the scope's filter and the ids), with the full read's filters.
async fn read_by_id(
    tx: &Transaction<'_>,
    params: &[&(dyn ToSql + Sync); 3],
    expected: usize,
) -> Result<Fetched, DbError> {
    let statement = tx.prepare_cached(HOSTS_BY_ID).await?;
    let hosts = read_hosts(tx, &statement, params, expected).await?;
    let statement = tx.prepare_cached(HOST_SETTINGS_BY_ID).await?;
    let settings = read_host_settings(tx, &statement, params).await?;
    let statement = tx.prepare_cached(DNS_NAMES_BY_ID).await?;
    let dns_names = read_dns_names(tx, &statement, params).await?;
    Ok(Fetched {
        hosts,
        settings,
        dns_names,
    })
}

/// Whether the subnets' default profiles just read are those of the earlier snapshot.
fn same_default_profiles(read: &[SubnetSettings], previous: &[SubnetSettings]) -> bool {
    let defaults = |settings: &[SubnetSettings]| -> Vec<(i64, i64)> {
        let mut pairs: Vec<(i64, i64)> = settings
            .iter()
            .filter_map(|s| s.default_profile.map(|p| (s.subnet_id, p)))
            .collect();
        pairs.sort_unstable();
        pairs
    };
    defaults(read) == defaults(previous)
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

/// What [`read_subnets`] returns.
struct SubnetsRead {
    current: Current,
    subnets: Vec<Subnet>,
    /// The ids of the subnets read for their hosts' names only.
    names_only: Vec<i64>,
    /// The subnets that have a default profile (their options are read later).
    default_profiles: Vec<SubnetSettings>,
}

/// The transaction's [`Current`] and the subnets `scope` covers.
async fn read_subnets(tx: &Transaction<'_>, scope: &SiteScope) -> Result<SubnetsRead, DbError> {
    // Cached statements save a round trip per query on every snapshot.
    let subnets_statement = tx.prepare_cached(SUBNETS).await?;
    let current_statement = tx.prepare_cached(CURRENT_SNAPSHOT).await?;
    let row = tx.query_one(&current_statement, &[]).await?;
    let current = Current {
        snapshot: row.try_get("snapshot")?,
        server_started: row.try_get("server_started")?,
    };
    let filter: [&(dyn ToSql + Sync); 2] = [&scope.sites, &scope.names_of_all];
    let mut read = SubnetsRead {
        current,
        subnets: Vec::new(),
        names_only: Vec::new(),
        default_profiles: Vec::new(),
    };
    for row in tx.query(&subnets_statement, &filter).await? {
        let id = row.try_get("id")?;
        if !row.try_get::<_, bool>("served")? {
            read.names_only.push(id);
        }
        if let Some(profile) = row.try_get("default_profile_id")? {
            read.default_profiles.push(SubnetSettings {
                subnet_id: id,
                default_profile: Some(profile),
                ..SubnetSettings::default()
            });
        }
        read.subnets.push(subnet(&row)?);
    }
    Ok(read)
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

/// Options, profiles, aliases and DNS-only names, in the caller's transaction. `subnets` holds
/// the subnets' default profiles; their options are added to it.
async fn read_extras(
    tx: &Transaction<'_>,
    filter: &[&(dyn ToSql + Sync); 2],
    mut subnets: Vec<SubnetSettings>,
) -> Result<Extras, DbError> {
    for (owner, option) in options(tx, SUBNET_OPTIONS, filter).await? {
        match subnets.iter_mut().find(|s| s.subnet_id == owner) {
            Some(settings) => settings.options.push(option),
            None => subnets.push(SubnetSettings {
                subnet_id: owner,
                options: vec![option],
                default_profile: None,
            }),
        }
    }
    subnets.sort_by_key(|s| s.subnet_id);

    let mut profiles = tx
        .query(PROFILES, &[])
        .await?
        .iter()
        .map(|row| {
            let next_server: Option<IpInet> = row.try_get("next_server")?;
            Ok(Profile {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                boot_file: row.try_get("boot_file")?,
                boot_file_uefi: row.try_get("boot_file_uefi")?,
                boot_file_arm64: row.try_get("boot_file_arm64")?,
                boot_file_ipxe: row.try_get("boot_file_ipxe")?,
                // The database refuses anything but IPv4; a stray IPv6 address is left out.
                next_server: next_server.and_then(|ip| match ip.address() {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                }),
                tftp_server_name: row.try_get("tftp_server_name")?,
                options: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    for (owner, option) in options(tx, PROFILE_OPTIONS, &[]).await? {
        if let Some(profile) = profiles.iter_mut().find(|p| p.id == owner) {
            profile.options.push(option);
        }
    }

    let statement = tx.prepare_cached(HOST_SETTINGS).await?;
    let hosts = read_host_settings(tx, &statement, filter).await?;
    let statement = tx.prepare_cached(DNS_NAMES).await?;
    let dns_names = read_dns_names(tx, &statement, filter).await?;
    Ok(Extras {
        profiles,
        subnets,
        hosts,
        dns_names,
    })
}

/// The profiles and aliases of the hosts `statement` returns.
async fn read_host_settings(
    tx: &Transaction<'_>,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<HostSettings>, DbError> {
    tx.query(statement, params)
        .await?
        .iter()
        .map(|row| {
            Ok(HostSettings {
                host_id: row.try_get("id")?,
                profile: row.try_get("profile_id")?,
                aliases: row.try_get("aliases")?,
                client_id: client_id(row.try_get("client_id")?),
                macs: row
                    .try_get::<_, Vec<MacAddress>>("macs")?
                    .into_iter()
                    .map(|mac| mac.to_array())
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// The DNS-only names `statement` returns.
async fn read_dns_names(
    tx: &Transaction<'_>,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<DnsName>, DbError> {
    tx.query(statement, params)
        .await?
        .iter()
        .map(|row| {
            Ok(DnsName {
                id: row.try_get("id")?,
                subnet_id: row.try_get("subnet_id")?,
                ip: row.try_get::<_, IpInet>("ip")?.address(),
                hostname: row.try_get("hostname")?,
                aliases: row.try_get("aliases")?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// A stored client identifier; the database keeps it in the canonical form, so one that does
/// not parse (a newer schema) is left out with a warning, and the host is matched by MAC.
fn client_id(stored: Option<String>) -> Option<crate::client_id::ClientId> {
    let text = stored?;
    crate::client_id::parse(&text)
        .inspect_err(|e| tracing::warn!(error = %e, "client identifier left out"))
        .ok()
}

/// The `(owner, option)` rows of SUBNET_OPTIONS or PROFILE_OPTIONS. An option whose type or
/// number this version does not know (a newer schema) is left out with a warning rather than
/// failing the whole snapshot.
async fn options(
    tx: &Transaction<'_>,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<(i64, DhcpOptionValue)>, DbError> {
    let mut options = Vec::new();
    for row in tx.query(query, params).await? {
        let owner: i64 = row.try_get("owner")?;
        let number: i32 = row.try_get("number")?;
        let kind: String = row.try_get("type")?;
        match (u16::try_from(number), OptionKind::from_name(&kind)) {
            (Ok(number), Some(kind)) => options.push((
                owner,
                DhcpOptionValue {
                    number,
                    name: row.try_get("name")?,
                    kind,
                    value: row.try_get("value")?,
                },
            )),
            _ => tracing::warn!(
                owner,
                number,
                kind = kind.as_str(),
                "DHCP option of unknown number or type left out"
            ),
        }
    }
    Ok(options)
}
