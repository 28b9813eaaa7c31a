//! Reads everything the agent serves in one REPEATABLE READ transaction, so subnets, hosts,
//! options, profiles, aliases and DNS-only names come from the same committed state, and names
//! that state with the transaction's `pg_current_snapshot()`, so that the agent can report
//! exactly which commits it serves.

use cidr::{IpCidr, IpInet};
use deadpool_postgres::Pool;
use eui48::MacAddress;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;

use super::DbError;
use crate::model::{
    DhcpOptionValue, DnsName, Extras, Host, HostSettings, OptionKind, Profile, Snapshot, Subnet,
    SubnetSettings,
};

// $1: the sites served (NULL: every subnet); $2: also read the other subnets, for names only.
// `served` says which is which.
const SUBNETS: &str = "\
    SELECT id, cidr, range_start, range_end, gateway, \
           extract(epoch FROM lease_time)::bigint AS lease_seconds, domain, \
           ($1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false)) AS served, \
           default_profile_id \
    FROM ipmanager.subnets \
    WHERE enabled \
      AND ($2::bool OR $1::text[] IS NULL OR coalesce(site = ANY($1::text[]), false))";

/// The subnets and hosts a scope covers: the WHERE condition of the queries below.
macro_rules! in_scope {
    () => {
        "s.enabled AND ($2::bool OR $1::text[] IS NULL OR coalesce(s.site = ANY($1::text[]), false))"
    };
}

// Sorting is left to the renderer, which must be deterministic whatever order it is given.
// A host without MAC is a DNS-only name (DNS_NAMES), never a reservation.
const HOSTS: &str = concat!(
    "SELECT h.id, h.subnet_id, h.mac, h.ip, h.hostname, \
            extract(epoch FROM h.lease_time)::bigint AS lease_seconds \
     FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
     WHERE h.enabled AND h.mac IS NOT NULL AND ",
    in_scope!()
);

/// Each host's aliases as one array (`a.names`), for the few hosts that have any.
macro_rules! join_aliases {
    () => {
        " LEFT JOIN (SELECT a.host_id, array_agg(a.name ORDER BY lower(a.name), a.name) AS names \
                     FROM ipmanager.host_aliases a GROUP BY a.host_id) a ON a.host_id = h.id "
    };
}

// Only the hosts that have a profile, aliases, a client identifier or extra MACs: the partial
// and child-table indexes find them.
const HOST_SETTINGS: &str = concat!(
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
);

const DNS_NAMES: &str = concat!(
    "SELECT h.id, h.subnet_id, h.ip, h.hostname, coalesce(a.names, '{}') AS aliases \
     FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id",
    join_aliases!(),
    "WHERE h.enabled AND h.mac IS NULL AND ",
    in_scope!()
);

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
    let mut subnet_settings = Vec::new();
    let subnets = tx
        .query(&subnets_statement, &filter)
        .await?
        .iter()
        .map(|row| {
            let range_start: Option<IpInet> = row.try_get("range_start")?;
            let range_end: Option<IpInet> = row.try_get("range_end")?;
            let id = row.try_get("id")?;
            if !row.try_get::<_, bool>("served")? {
                names_only.push(id);
            }
            if let Some(profile) = row.try_get("default_profile_id")? {
                subnet_settings.push(SubnetSettings {
                    subnet_id: id,
                    default_profile: Some(profile),
                    ..SubnetSettings::default()
                });
            }
            Ok(Subnet {
                id,
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
    let extras = read_extras(&tx, &filter, subnet_settings).await?;
    tx.commit().await?;
    Ok(SnapshotAt {
        snapshot: Snapshot {
            subnets,
            hosts,
            extras,
        },
        names_only,
        db_snapshot,
    })
}

/// Options, profiles, aliases and DNS-only names, in the caller's transaction. `subnets` holds
/// the subnets' default profiles; their options are added to it.
async fn read_extras(
    tx: &tokio_postgres::Transaction<'_>,
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

    let hosts = tx
        .query(HOST_SETTINGS, filter)
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
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let dns_names = tx
        .query(DNS_NAMES, filter)
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
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(Extras {
        profiles,
        subnets,
        hosts,
        dns_names,
    })
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
    tx: &tokio_postgres::Transaction<'_>,
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
