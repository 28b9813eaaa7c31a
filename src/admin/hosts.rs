//! Reservations (`ipmanager.hosts`): add with a given or allocated address, change, remove,
//! find by MAC, IP or name, and list; with their profile, aliases (`ipmanager.host_aliases`),
//! extra MACs (`ipmanager.host_macs`) and client identifier.
//! A host without MAC is a DNS-only name.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use eui48::MacAddress;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::profiles;
use super::subnets;
use super::validate::{self, format_mac};
use super::{seconds, AdminError, HostQuery, HostRef, Result};
use crate::client_id::ClientId;

/// One reservation as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HostRow {
    pub id: i64,
    pub subnet: String,
    /// `None`: a DNS-only name, served in DNS only. The primary MAC of a reservation.
    pub mac: Option<String>,
    /// More MACs of the reservation (`ipmanager.host_macs`), sorted: whichever interface asks
    /// gets the address.
    pub extra_macs: Vec<String>,
    /// The DHCPv4 client-id or DHCPv6 DUID the client is matched by before its MACs.
    pub client_id: Option<String>,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub hostname: String,
    /// Extra names of the address (A/AAAA), sorted.
    pub aliases: Vec<String>,
    /// The host's own profile, if any (else its subnet's default applies).
    pub profile: Option<String>,
    pub enabled: bool,
    /// Per-host lease time in seconds; `None` inherits the subnet's.
    #[serde(serialize_with = "crate::lease::serialize")]
    #[schema(schema_with = crate::lease::schema)]
    pub lease_seconds: Option<i64>,
    pub comment: Option<String>,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
}

const SELECT_HOSTS: &str = "\
    SELECT h.id, s.name AS subnet, h.mac, h.ip, h.hostname, h.enabled, \
           extract(epoch FROM h.lease_time)::bigint AS lease_seconds, h.comment, h.created_at, \
           h.updated_at, p.name AS profile, \
           ARRAY(SELECT a.name FROM ipmanager.host_aliases a WHERE a.host_id = h.id \
                 ORDER BY lower(a.name), a.name) AS aliases, h.client_id, \
           ARRAY(SELECT m.mac FROM ipmanager.host_macs m WHERE m.host_id = h.id \
                 ORDER BY m.mac) AS extra_macs \
    FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
    LEFT JOIN ipmanager.profiles p ON p.id = h.profile_id";

fn host_row(row: &Row) -> Result<HostRow> {
    Ok(HostRow {
        id: row.try_get("id")?,
        subnet: row.try_get("subnet")?,
        mac: row
            .try_get::<_, Option<MacAddress>>("mac")?
            .map(|mac| format_mac(&mac.to_array())),
        extra_macs: row
            .try_get::<_, Vec<MacAddress>>("extra_macs")?
            .iter()
            .map(|mac| format_mac(&mac.to_array()))
            .collect(),
        client_id: row.try_get("client_id")?,
        ip: row.try_get("ip")?,
        hostname: row.try_get("hostname")?,
        aliases: row.try_get("aliases")?,
        profile: row.try_get("profile")?,
        enabled: row.try_get("enabled")?,
        lease_seconds: row.try_get("lease_seconds")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Where a new reservation's address comes from.
#[derive(Debug, Clone)]
pub enum Placement {
    /// This address; its subnet is the enabled one containing it unless one is named.
    Ip { ip: IpAddr, subnet: Option<String> },
    /// The next free address of this subnet (`ipmanager.allocate_host`).
    Allocate { subnet: String },
}

#[derive(Debug, Clone)]
pub struct NewHost {
    /// `None`: a DNS-only name.
    pub mac: Option<[u8; 6]>,
    /// More MACs of the reservation (`ipmanager.host_macs`).
    pub extra_macs: Vec<[u8; 6]>,
    pub client_id: Option<ClientId>,
    pub hostname: String,
    pub aliases: Vec<String>,
    pub profile: Option<String>,
    pub placement: Placement,
    pub lease: Option<Duration>,
    pub comment: Option<String>,
    pub enabled: bool,
}

/// Adds a reservation and returns it as stored (with its allocated or normalised address).
pub async fn add(client: &impl GenericClient, new: &NewHost) -> Result<HostRow> {
    validate::hostname(&new.hostname).map_err(AdminError::Invalid)?;
    check_aliases(&new.aliases)?;
    if !new.aliases.is_empty() || !new.extra_macs.is_empty() {
        lock_for_aliases(client).await?;
    }
    let client_id = new.client_id.as_ref().map(ClientId::to_string);
    let mac = new.mac.map(MacAddress::new);
    let lease = seconds(new.lease);
    let profile = match &new.profile {
        Some(name) => Some(profiles::resolve_id(client, name).await?),
        None => None,
    };
    let id: i64 = match &new.placement {
        Placement::Ip { ip, subnet } => {
            let subnet_id = match subnet {
                Some(reference) => {
                    let subnet = subnets::resolve(client, reference).await?;
                    validate::host_address("hosts.ip", *ip, &subnet.name, subnet.cidr)
                        .map_err(AdminError::Invalid)?;
                    Some(subnet.id)
                }
                None => None,
            };
            client
                .query_one(
                    "INSERT INTO ipmanager.hosts \
                         (subnet_id, mac, ip, hostname, enabled, lease_time, comment, profile_id, \
                          client_id) \
                     VALUES ($1, $2, $3, $4, $5, $6::bigint * interval '1 second', $7, $8, $9) \
                     RETURNING id",
                    &[
                        &subnet_id,
                        &mac,
                        ip,
                        &new.hostname,
                        &new.enabled,
                        &lease,
                        &new.comment,
                        &profile,
                        &client_id,
                    ],
                )
                .await?
                .try_get("id")?
        }
        Placement::Allocate { subnet } => {
            let id = client
                .query_one(
                    "SELECT (ipmanager.allocate_host($1::macaddr, $2, $3, \
                             $4::bigint * interval '1 second', $5, $6)).id",
                    &[
                        &mac,
                        &new.hostname,
                        subnet,
                        &lease,
                        &new.comment,
                        &new.enabled,
                    ],
                )
                .await?
                .try_get("id")?;
            if profile.is_some() || client_id.is_some() {
                client
                    .execute(
                        "UPDATE ipmanager.hosts SET profile_id = $2, client_id = $3 WHERE id = $1",
                        &[&id, &profile, &client_id],
                    )
                    .await?;
            }
            id
        }
    };
    insert_aliases(client, id, &new.aliases).await?;
    insert_macs(client, id, &new.extra_macs).await?;
    by_id(client, id).await
}

async fn insert_macs(client: &impl GenericClient, host: i64, macs: &[[u8; 6]]) -> Result<()> {
    if !macs.is_empty() {
        let macs: Vec<MacAddress> = macs.iter().map(|m| MacAddress::new(*m)).collect();
        client
            .execute(
                "INSERT INTO ipmanager.host_macs (host_id, subnet_id, mac) \
                 SELECT h.id, h.subnet_id, m.mac FROM ipmanager.hosts h, \
                        unnest($2::macaddr[]) WITH ORDINALITY m (mac, n) \
                 WHERE h.id = $1 ORDER BY m.n",
                &[&host, &macs],
            )
            .await?;
    }
    Ok(())
}

/// Aliases follow the hostname rule; checked here to answer in the trigger's words without a
/// round trip, and because a repeated alias in one list would otherwise be a duplicate.
fn check_aliases(aliases: &[String]) -> Result<()> {
    for (i, alias) in aliases.iter().enumerate() {
        validate::hostname(alias).map_err(|message| {
            AdminError::Invalid(message.replacen("hosts.hostname", "host_aliases.name", 1))
        })?;
        if aliases[..i].iter().any(|a| a.eq_ignore_ascii_case(alias)) {
            return Err(AdminError::Invalid(format!(
                "alias {} is given twice",
                validate::quote(alias)
            )));
        }
    }
    Ok(())
}

/// The lock the `host_aliases_lock_hosts` trigger takes, taken before this transaction writes
/// hosts: two commands that change a host and its aliases then queue instead of deadlocking.
async fn lock_for_aliases(client: &impl GenericClient) -> Result<()> {
    client
        .batch_execute("LOCK TABLE ipmanager.hosts IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    Ok(())
}

async fn insert_aliases(client: &impl GenericClient, host: i64, aliases: &[String]) -> Result<()> {
    if !aliases.is_empty() {
        client
            .execute(
                "INSERT INTO ipmanager.host_aliases (host_id, subnet_id, name) \
                 SELECT h.id, h.subnet_id, a.name FROM ipmanager.hosts h, unnest($2::text[]) a (name) \
                 WHERE h.id = $1",
                &[&host, &aliases],
            )
            .await?;
    }
    Ok(())
}

async fn by_id(client: &impl GenericClient, id: i64) -> Result<HostRow> {
    let row = client
        .query_one(&format!("{SELECT_HOSTS} WHERE h.id = $1"), &[&id])
        .await?;
    host_row(&row)
}

/// Every reservation `reference` names, optionally only in one subnet. A MAC address or a
/// name may have a reservation in several subnets; an IP address has at most one. A reference
/// that matches by more than one kind is ambiguous.
pub async fn find(
    client: &impl GenericClient,
    reference: &HostQuery,
    subnet: Option<&str>,
) -> Result<Vec<HostRow>> {
    find_rows(client, reference, subnet, "").await
}

/// The reservations of the one kind `reference` matches by; an error when it matches
/// reservations by two kinds (`deadbeef0001` is a MAC address of one host and the name of
/// another), listing both so that the user can say which with a prefix.
async fn find_rows(
    client: &impl GenericClient,
    reference: &HostQuery,
    subnet: Option<&str>,
    locking: &str,
) -> Result<Vec<HostRow>> {
    let subnet_id = subnets::resolve_id(client, subnet).await?;
    let mut matches = Vec::new();
    for reading in reference.readings() {
        let rows = rows_by(client, reading, subnet_id, locking).await?;
        if !rows.is_empty() {
            matches.push((reading, rows));
        }
    }
    match matches.len() {
        0 => Ok(Vec::new()),
        1 => Ok(matches.remove(0).1),
        _ => Err(ambiguous(reference, &matches)),
    }
}

async fn rows_by(
    client: &impl GenericClient,
    reading: &HostRef,
    subnet_id: Option<i64>,
    locking: &str,
) -> Result<Vec<HostRow>> {
    let (mac, ip, name) = match reading {
        HostRef::Mac(mac) => (Some(MacAddress::new(*mac)), None, None),
        HostRef::Ip(ip) => (None, Some(*ip), None),
        HostRef::Name(name) => (None, None, Some(name.as_str())),
    };
    let rows = client
        .query(
            &format!(
                "{SELECT_HOSTS} \
                 WHERE ($1::macaddr IS NULL OR h.mac = $1 \
                        OR h.id IN (SELECT m.host_id FROM ipmanager.host_macs m WHERE m.mac = $1)) \
                   AND ($2::inet IS NULL OR h.ip = $2) \
                   AND ($3::text IS NULL OR lower(h.hostname) = lower($3)) \
                   AND ($4::bigint IS NULL OR h.subnet_id = $4) \
                 ORDER BY s.name, h.ip {locking}"
            ),
            &[&mac, &ip, &name, &subnet_id],
        )
        .await?;
    rows.iter().map(host_row).collect()
}

fn ambiguous(reference: &HostQuery, matches: &[(&HostRef, Vec<HostRow>)]) -> AdminError {
    let candidates = matches
        .iter()
        .flat_map(|(reading, rows)| {
            rows.iter().map(move |h| {
                format!(
                    "as {} {}: {} {} {} in subnet {}",
                    reading.kind_name(),
                    reading.qualified(),
                    h.hostname,
                    h.ip,
                    h.mac.as_deref().unwrap_or("DNS only"),
                    validate::quote(&h.subnet)
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    AdminError::Ambiguous(format!(
        "host {reference} is ambiguous, it matches reservations by more than one kind ({candidates}): \
         give the reference with its prefix, e.g. {}",
        matches
            .iter()
            .map(|(reading, _)| reading.qualified())
            .collect::<Vec<_>>()
            .join(" or ")
    ))
}

/// The one reservation `reference` names, locked for the rest of the transaction.
async fn find_one_for_update(
    client: &impl GenericClient,
    reference: &HostQuery,
    subnet: Option<&str>,
) -> Result<HostRow> {
    let mut rows = find_rows(client, reference, subnet, "FOR UPDATE OF h").await?;
    match rows.len() {
        0 => Err(not_found(reference, subnet)),
        1 => Ok(rows.remove(0)),
        n => Err(AdminError::Ambiguous(format!(
            "host {reference} matches {n} reservations (in subnets {}): add --subnet to pick one",
            rows.iter()
                .map(|h| validate::quote(&h.subnet))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub fn not_found(reference: &HostQuery, subnet: Option<&str>) -> AdminError {
    let place = subnet
        .map(|s| format!(" in subnet {}", validate::quote(s)))
        .unwrap_or_default();
    AdminError::NotFound(format!(
        "host {reference} not found{place}: no reservation has this MAC address, IP address or \
         host name"
    ))
}

/// The fields `host set` may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct HostChange {
    pub ip: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// The new extra MACs (with `mac`, the reservation's MACs); `Some(vec![])` removes them.
    pub extra_macs: Option<Vec<[u8; 6]>>,
    /// `Some(None)` removes the client identifier.
    pub client_id: Option<Option<ClientId>>,
    pub hostname: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` returns to the subnet's lease time.
    pub lease: Option<Option<Duration>>,
    /// `Some(None)` removes the comment.
    pub comment: Option<Option<String>>,
    /// `Some(None)` takes the host out of its profile (its subnet's default applies).
    pub profile: Option<Option<String>>,
    /// The new set of aliases; `Some(vec![])` removes them all.
    pub aliases: Option<Vec<String>>,
}

impl HostChange {
    /// Whether the change names nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.mac.is_none()
            && self.extra_macs.is_none()
            && self.client_id.is_none()
            && self.hostname.is_none()
            && self.enabled.is_none()
            && self.lease.is_none()
            && self.comment.is_none()
            && self.profile.is_none()
            && self.aliases.is_none()
    }
}

/// Changes one reservation; returns it before and after. An IP address outside the current
/// subnet moves the reservation to the enabled subnet that contains it.
pub async fn set(
    client: &impl GenericClient,
    reference: &HostQuery,
    subnet: Option<&str>,
    change: &HostChange,
) -> Result<(HostRow, HostRow)> {
    if let Some(name) = &change.hostname {
        validate::hostname(name).map_err(AdminError::Invalid)?;
    }
    if let Some(aliases) = &change.aliases {
        check_aliases(aliases)?;
    }
    if change.aliases.is_some() || change.extra_macs.is_some() {
        lock_for_aliases(client).await?;
    }
    let old = find_one_for_update(client, reference, subnet).await?;
    let mac = change
        .mac
        .map(|m| format_mac(&m))
        .or_else(|| old.mac.clone());
    let profile = change
        .profile
        .clone()
        .unwrap_or_else(|| old.profile.clone());
    let profile_id = match &profile {
        Some(name) => Some(profiles::resolve_id(client, name).await?),
        None => None,
    };
    let mut aliases = change
        .aliases
        .clone()
        .unwrap_or_else(|| old.aliases.clone());
    aliases.sort_by_key(|a| (a.to_ascii_lowercase(), a.clone()));
    let ip = change.ip.unwrap_or(old.ip);
    let hostname = change
        .hostname
        .clone()
        .unwrap_or_else(|| old.hostname.clone());
    let enabled = change.enabled.unwrap_or(old.enabled);
    let lease_seconds = match change.lease {
        Some(lease) => seconds(lease),
        None => old.lease_seconds,
    };
    let comment = change
        .comment
        .clone()
        .unwrap_or_else(|| old.comment.clone());
    let extra_macs = change
        .extra_macs
        .as_ref()
        .map(|macs| {
            let mut texts: Vec<String> = macs.iter().map(format_mac).collect();
            texts.sort();
            texts
        })
        .unwrap_or_else(|| old.extra_macs.clone());
    let client_id = match &change.client_id {
        Some(id) => id.as_ref().map(ClientId::to_string),
        None => old.client_id.clone(),
    };
    let unchanged = mac == old.mac
        && extra_macs == old.extra_macs
        && client_id == old.client_id
        && ip == old.ip
        && hostname == old.hostname
        && enabled == old.enabled
        && lease_seconds == old.lease_seconds
        && comment == old.comment
        && profile == old.profile
        && aliases == old.aliases;
    if unchanged {
        return Err(AdminError::NothingToDo(format!(
            "host {reference} already has these values: nothing to change"
        )));
    }
    let new_mac = change.mac.map(MacAddress::new);
    // Old extra MACs go first, so that one may become the primary MAC.
    let macs_change = change
        .extra_macs
        .as_ref()
        .filter(|_| extra_macs != old.extra_macs);
    if macs_change.is_some() {
        client
            .execute(
                "DELETE FROM ipmanager.host_macs WHERE host_id = $1",
                &[&old.id],
            )
            .await?;
    }
    // Old aliases go first, so that the host may take one of them as its new name.
    if change.aliases.is_some() && aliases != old.aliases {
        client
            .execute(
                "DELETE FROM ipmanager.host_aliases WHERE host_id = $1",
                &[&old.id],
            )
            .await?;
    }
    client
        .execute(
            "UPDATE ipmanager.hosts h \
             SET mac = coalesce($2, h.mac), ip = $3, hostname = $4, enabled = $5, \
                 lease_time = $6::bigint * interval '1 second', comment = $7, \
                 subnet_id = CASE WHEN $3::inet <<= s.cidr THEN h.subnet_id END, \
                 profile_id = $8, client_id = $9 \
             FROM ipmanager.subnets s \
             WHERE h.id = $1 AND s.id = h.subnet_id",
            &[
                &old.id,
                &new_mac,
                &ip,
                &hostname,
                &enabled,
                &lease_seconds,
                &comment,
                &profile_id,
                &client_id,
            ],
        )
        .await?;
    if let Some(macs) = macs_change {
        insert_macs(client, old.id, macs).await?;
    }
    if change.aliases.is_some() && aliases != old.aliases {
        insert_aliases(client, old.id, &aliases).await?;
    }
    let new = by_id(client, old.id).await?;
    Ok((old, new))
}

/// Removes one reservation and returns it.
pub async fn remove(
    client: &impl GenericClient,
    reference: &HostQuery,
    subnet: Option<&str>,
) -> Result<HostRow> {
    let host = find_one_for_update(client, reference, subnet).await?;
    client
        .execute("DELETE FROM ipmanager.hosts WHERE id = $1", &[&host.id])
        .await?;
    Ok(host)
}

/// Which reservations [`list`] returns, and which page of them.
#[derive(Debug, Clone, Default)]
pub struct HostFilter<'a> {
    /// Only this subnet (name or CIDR).
    pub subnet: Option<&'a str>,
    /// Only subnets of this site.
    pub site: Option<&'a str>,
    /// Only hosts with this text in name, alias, MAC, IP or comment (ignoring case).
    pub search: Option<&'a str>,
    /// At most this many; `None`: all.
    pub limit: Option<i64>,
    /// Skip this many first.
    pub offset: i64,
}

/// Reservations matching `filter`, by subnet name and address.
pub async fn list(client: &impl GenericClient, filter: &HostFilter<'_>) -> Result<Vec<HostRow>> {
    let subnet_id = subnets::resolve_id(client, filter.subnet).await?;
    // strpos rather than LIKE, so that '%' and '_' in the search text mean themselves.
    let rows = client
        .query(
            &format!(
                "{SELECT_HOSTS} \
                 WHERE ($1::bigint IS NULL OR h.subnet_id = $1) \
                   AND ($2::text IS NULL \
                        OR strpos(lower(h.hostname), lower($2)) > 0 \
                        OR strpos(coalesce(h.mac::text, ''), lower($2)) > 0 \
                        OR EXISTS (SELECT 1 FROM ipmanager.host_aliases a \
                                   WHERE a.host_id = h.id AND strpos(lower(a.name), lower($2)) > 0) \
                        OR strpos(host(h.ip), lower($2)) > 0 \
                        OR strpos(lower(coalesce(h.comment, '')), lower($2)) > 0) \
                   AND ($3::text IS NULL OR s.site = $3) \
                 ORDER BY s.name, h.ip LIMIT $4 OFFSET $5"
            ),
            &[
                &subnet_id,
                &filter.search,
                &filter.site,
                &filter.limit,
                &filter.offset,
            ],
        )
        .await?;
    rows.iter().map(host_row).collect()
}
