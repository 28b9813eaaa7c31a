//! Subnets (`ipmanager.subnets`) with their utilisation (`ipmanager.subnet_usage`): add,
//! change, remove (with or without their reservations), show and list.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use cidr::IpCidr;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::validate::{self, quote};
use super::{seconds, timestamp, AdminError, Result};

/// A subnet as `ipmanager.find_subnet` resolves a name or CIDR.
#[derive(Debug, Clone)]
pub struct SubnetRef {
    pub id: i64,
    pub name: String,
    pub cidr: IpCidr,
}

/// Resolves a subnet name or CIDR; unknown ones are [`AdminError::NotFound`].
pub async fn resolve(client: &impl GenericClient, reference: &str) -> Result<SubnetRef> {
    let row = client
        .query_one(
            "SELECT id, name, cidr FROM ipmanager.find_subnet($1)",
            &[&reference],
        )
        .await?;
    Ok(SubnetRef {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        cidr: row.try_get(2)?,
    })
}

/// The id of an optional subnet reference, for filters ("only in this subnet").
pub async fn resolve_id(
    client: &impl GenericClient,
    reference: Option<&str>,
) -> Result<Option<i64>> {
    Ok(match reference {
        Some(reference) => Some(resolve(client, reference).await?.id),
        None => None,
    })
}

/// Address counts of a subnet, from `ipmanager.subnet_usage`. u128 because an IPv6 /64 has
/// 2^64 addresses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Addresses a machine may use (IPv4: without network and broadcast).
    pub addresses: u128,
    /// Addresses in the dynamic range.
    pub range_size: u128,
    /// Addresses outside the range and other than the gateway: what reservations can use.
    pub static_pool: u128,
    pub reservations: i64,
    /// Addresses `host add --subnet` can still allocate.
    pub free: u128,
    /// Share of the static pool in use; `None` when there is no static pool.
    pub used_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubnetRow {
    pub id: i64,
    pub name: String,
    pub cidr: IpCidr,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub domain: Option<String>,
    pub lease_seconds: Option<i64>,
    pub enabled: bool,
    pub comment: Option<String>,
    /// The site whose agents serve it (`ipmanager.sites`), if any.
    pub site: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub usage: Usage,
}

const SELECT_SUBNETS: &str = "\
    SELECT s.id, s.name, s.cidr, s.range_start, s.range_end, s.gateway, s.domain, \
           extract(epoch FROM s.lease_time)::bigint, s.enabled, s.comment, \
           s.created_at, s.updated_at, \
           u.addresses::text, u.range_size::text, u.static_pool::text, u.reservations, \
           u.free::text, u.used_percent::float8, s.site \
    FROM ipmanager.subnets s JOIN ipmanager.subnet_usage u ON u.id = s.id";

fn count(row: &Row, index: usize) -> Result<u128> {
    let text: String = row.try_get(index)?;
    // numeric without fraction; the view never produces anything else.
    text.parse()
        .map_err(|_| AdminError::Invalid(format!("unexpected address count {text}")))
}

fn subnet_row(row: &Row) -> Result<SubnetRow> {
    Ok(SubnetRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        cidr: row.try_get(2)?,
        range_start: row.try_get(3)?,
        range_end: row.try_get(4)?,
        gateway: row.try_get(5)?,
        domain: row.try_get(6)?,
        lease_seconds: row.try_get(7)?,
        enabled: row.try_get(8)?,
        comment: row.try_get(9)?,
        site: row.try_get("site")?,
        created_at: timestamp(row.try_get::<_, SystemTime>(10)?),
        updated_at: timestamp(row.try_get::<_, SystemTime>(11)?),
        usage: Usage {
            addresses: count(row, 12)?,
            range_size: count(row, 13)?,
            static_pool: count(row, 14)?,
            reservations: row.try_get(15)?,
            free: count(row, 16)?,
            used_percent: row.try_get(17)?,
        },
    })
}

/// The settings of a subnet that `subnet add` takes and `subnet set` changes.
#[derive(Debug, Clone, Default)]
pub struct SubnetFields {
    pub name: Option<String>,
    pub cidr: Option<IpCidr>,
    /// `Some(None)` removes the dynamic range (reservations only).
    pub range: Option<Option<(IpAddr, IpAddr)>>,
    pub gateway: Option<Option<IpAddr>>,
    pub domain: Option<Option<String>>,
    pub lease: Option<Option<Duration>>,
    pub enabled: Option<bool>,
    pub comment: Option<Option<String>>,
    /// `Some(None)` takes the subnet out of its site.
    pub site: Option<Option<String>>,
}

impl SubnetFields {
    /// Checks what can be checked without the database, in the triggers' words.
    fn validate(&self) -> Result<()> {
        if let Some(name) = &self.name {
            validate::subnet_name(name).map_err(AdminError::Invalid)?;
        }
        if let Some(Some(domain)) = &self.domain {
            validate::domain(domain).map_err(AdminError::Invalid)?;
        }
        if let Some(Some(site)) = &self.site {
            super::sites::validate_name(site).map_err(AdminError::Invalid)?;
        }
        Ok(())
    }
}

/// Adds a subnet; `fields.name` and `fields.cidr` are required.
pub async fn add(client: &impl GenericClient, fields: &SubnetFields) -> Result<SubnetRow> {
    fields.validate()?;
    let (Some(name), Some(cidr)) = (&fields.name, &fields.cidr) else {
        return Err(AdminError::Invalid(
            "a subnet needs a name and a CIDR".to_owned(),
        ));
    };
    let range = fields.range.flatten();
    let id: i64 = client
        .query_one(
            "INSERT INTO ipmanager.subnets \
                 (name, cidr, range_start, range_end, gateway, domain, lease_time, enabled, comment, \
                  site) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::bigint * interval '1 second', $8, $9, $10) \
             RETURNING id",
            &[
                name,
                cidr,
                &range.map(|r| r.0),
                &range.map(|r| r.1),
                &fields.gateway.flatten(),
                &fields.domain.clone().flatten(),
                &seconds(fields.lease.flatten()),
                &fields.enabled.unwrap_or(true),
                &fields.comment.clone().flatten(),
                &fields.site.clone().flatten(),
            ],
        )
        .await?
        .try_get(0)?;
    by_id(client, id).await
}

async fn by_id(client: &impl GenericClient, id: i64) -> Result<SubnetRow> {
    let row = client
        .query_one(&format!("{SELECT_SUBNETS} WHERE s.id = $1"), &[&id])
        .await?;
    subnet_row(&row)
}

/// One subnet by name or CIDR, locked for the rest of the transaction.
async fn lock(client: &impl GenericClient, reference: &str) -> Result<SubnetRow> {
    let subnet = resolve(client, reference).await?;
    client
        .execute(
            "SELECT 1 FROM ipmanager.subnets WHERE id = $1 FOR UPDATE",
            &[&subnet.id],
        )
        .await?;
    by_id(client, subnet.id).await
}

/// One subnet by name or CIDR.
pub async fn show(client: &impl GenericClient, reference: &str) -> Result<SubnetRow> {
    let subnet = resolve(client, reference).await?;
    by_id(client, subnet.id).await
}

/// Every subnet, by address.
pub async fn list(client: &impl GenericClient) -> Result<Vec<SubnetRow>> {
    let rows = client
        .query(&format!("{SELECT_SUBNETS} ORDER BY s.cidr"), &[])
        .await?;
    rows.iter().map(subnet_row).collect()
}

/// Changes a subnet; returns it before and after.
pub async fn set(
    client: &impl GenericClient,
    reference: &str,
    fields: &SubnetFields,
) -> Result<(SubnetRow, SubnetRow)> {
    fields.validate()?;
    let old = lock(client, reference).await?;
    let name = fields.name.clone().unwrap_or_else(|| old.name.clone());
    let cidr = fields.cidr.unwrap_or(old.cidr);
    let range = fields.range.unwrap_or(old.range_start.zip(old.range_end));
    let gateway = fields.gateway.unwrap_or(old.gateway);
    let domain = fields.domain.clone().unwrap_or_else(|| old.domain.clone());
    let lease_seconds = match fields.lease {
        Some(lease) => seconds(lease),
        None => old.lease_seconds,
    };
    let enabled = fields.enabled.unwrap_or(old.enabled);
    let comment = fields
        .comment
        .clone()
        .unwrap_or_else(|| old.comment.clone());
    let site = fields.site.clone().unwrap_or_else(|| old.site.clone());
    let unchanged = name == old.name
        && site == old.site
        && cidr == old.cidr
        && range == old.range_start.zip(old.range_end)
        && gateway == old.gateway
        && domain == old.domain
        && lease_seconds == old.lease_seconds
        && enabled == old.enabled
        && comment == old.comment;
    if unchanged {
        return Err(AdminError::NothingToDo(format!(
            "subnet {} already has these values: nothing to change",
            quote(&old.name)
        )));
    }
    client
        .execute(
            "UPDATE ipmanager.subnets \
             SET name = $2, cidr = $3, range_start = $4, range_end = $5, gateway = $6, \
                 domain = $7, lease_time = $8::bigint * interval '1 second', enabled = $9, \
                 comment = $10, site = $11 \
             WHERE id = $1",
            &[
                &old.id,
                &name,
                &cidr,
                &range.map(|r| r.0),
                &range.map(|r| r.1),
                &gateway,
                &domain,
                &lease_seconds,
                &enabled,
                &comment,
                &site,
            ],
        )
        .await?;
    let new = by_id(client, old.id).await?;
    Ok((old, new))
}

/// Removes a subnet. With reservations in it, refuses unless `cascade`, which removes them
/// too (in the caller's transaction). Returns the subnet and how many hosts went with it.
pub async fn remove(
    client: &impl GenericClient,
    reference: &str,
    cascade: bool,
) -> Result<(SubnetRow, u64)> {
    let row = lock(client, reference).await?;
    let reservations = row.usage.reservations;
    if reservations > 0 && !cascade {
        return Err(AdminError::Invalid(format!(
            "subnet {} ({}) still has {reservations} reservation{}: remove them first, or give \
             --cascade to remove them with the subnet",
            quote(&row.name),
            row.cidr,
            if reservations == 1 { "" } else { "s" }
        )));
    }
    let removed_hosts = client
        .execute(
            "DELETE FROM ipmanager.hosts WHERE subnet_id = $1",
            &[&row.id],
        )
        .await?;
    client
        .execute("DELETE FROM ipmanager.subnets WHERE id = $1", &[&row.id])
        .await?;
    Ok((row, removed_hosts))
}
