//! Subnets (`ipmanager.subnets`) with their utilisation (`ipmanager.subnet_usage`): add,
//! change, remove (with or without their reservations), show and list.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use cidr::IpCidr;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::options::{self, OptionArg, OptionRow, Owner};
use super::validate::{self, quote};
use super::{profiles, seconds, AdminError, Result};

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
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cidr: row.try_get("cidr")?,
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubnetRow {
    pub id: i64,
    pub name: String,
    #[schema(value_type = String)]
    pub cidr: IpCidr,
    #[schema(value_type = Option<String>)]
    pub range_start: Option<IpAddr>,
    #[schema(value_type = Option<String>)]
    pub range_end: Option<IpAddr>,
    #[schema(value_type = Option<String>)]
    pub gateway: Option<IpAddr>,
    pub domain: Option<String>,
    #[serde(serialize_with = "crate::lease::serialize")]
    #[schema(schema_with = crate::lease::schema)]
    pub lease_seconds: Option<i64>,
    pub enabled: bool,
    pub comment: Option<String>,
    /// The site whose agents serve it (`ipmanager.sites`), if any.
    pub site: Option<String>,
    /// The profile of its hosts that name none (`ipmanager.profiles`), if any.
    pub default_profile: Option<String>,
    /// DHCP options handed to its clients, by number.
    pub options: Vec<OptionRow>,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
    pub usage: Usage,
}

const SELECT_SUBNETS: &str = "\
    SELECT s.id, s.name, s.cidr, s.range_start, s.range_end, s.gateway, s.domain, \
           extract(epoch FROM s.lease_time)::bigint AS lease_seconds, s.enabled, s.comment, \
           s.created_at, s.updated_at, \
           u.addresses::text AS addresses, u.range_size::text AS range_size, \
           u.static_pool::text AS static_pool, u.reservations, u.free::text AS free, \
           u.used_percent::float8 AS used_percent, s.site, s.default_profile_id, \
           p.name AS default_profile \
    FROM ipmanager.subnets s JOIN ipmanager.subnet_usage u ON u.id = s.id \
    LEFT JOIN ipmanager.profiles p ON p.id = s.default_profile_id";

fn count(row: &Row, column: &str) -> Result<u128> {
    let text: String = row.try_get(column)?;
    // numeric without fraction; the view never produces anything else.
    text.parse()
        .map_err(|_| AdminError::Invalid(format!("unexpected address count {text}")))
}

async fn subnet_row(client: &impl GenericClient, row: &Row) -> Result<SubnetRow> {
    let id = row.try_get("id")?;
    Ok(SubnetRow {
        id,
        name: row.try_get("name")?,
        cidr: row.try_get("cidr")?,
        range_start: row.try_get("range_start")?,
        range_end: row.try_get("range_end")?,
        gateway: row.try_get("gateway")?,
        domain: row.try_get("domain")?,
        lease_seconds: row.try_get("lease_seconds")?,
        enabled: row.try_get("enabled")?,
        comment: row.try_get("comment")?,
        site: row.try_get("site")?,
        default_profile: row.try_get("default_profile")?,
        options: options::list(client, Owner::Subnet(id)).await?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        usage: Usage {
            addresses: count(row, "addresses")?,
            range_size: count(row, "range_size")?,
            static_pool: count(row, "static_pool")?,
            reservations: row.try_get("reservations")?,
            free: count(row, "free")?,
            used_percent: row.try_get("used_percent")?,
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
    /// `Some(None)`: its hosts have no default profile.
    pub default_profile: Option<Option<String>>,
    /// Options to set or replace.
    pub options: Vec<OptionArg>,
    /// Options (names or numbers) to remove.
    pub unset_options: Vec<String>,
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
        if let Some(Some(profile)) = &self.default_profile {
            profiles::validate_name(profile).map_err(AdminError::Invalid)?;
        }
        Ok(())
    }

    /// The id of the default profile this change names: `Some(None)` for none.
    async fn default_profile_id(&self, client: &impl GenericClient) -> Result<Option<Option<i64>>> {
        Ok(match &self.default_profile {
            None => None,
            Some(None) => Some(None),
            Some(Some(name)) => Some(Some(profiles::resolve_id(client, name).await?)),
        })
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
    let default_profile = fields.default_profile_id(client).await?.flatten();
    let id: i64 = client
        .query_one(
            "INSERT INTO ipmanager.subnets \
                 (name, cidr, range_start, range_end, gateway, domain, lease_time, enabled, comment, \
                  site, default_profile_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::bigint * interval '1 second', $8, $9, $10, $11) \
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
                &default_profile,
            ],
        )
        .await?
        .try_get("id")?;
    options::apply(client, Owner::Subnet(id), &fields.options, &[]).await?;
    by_id(client, id).await
}

async fn by_id(client: &impl GenericClient, id: i64) -> Result<SubnetRow> {
    let row = client
        .query_one(&format!("{SELECT_SUBNETS} WHERE s.id = $1"), &[&id])
        .await?;
    subnet_row(client, &row).await
}

/// One subnet by name or CIDR, locked against other edits for the rest of the transaction.
/// FOR NO KEY UPDATE, not FOR UPDATE: host writers hold FOR KEY SHARE on their subnet's row
/// (the foreign key check), and an edit must neither wait for them nor block them. A change of
/// the CIDR, a key, takes the stronger lock in its UPDATE, after the hosts lock of the
/// `subnets_lock_hosts` trigger, so the order stays deadlock-free.
async fn lock(client: &impl GenericClient, reference: &str) -> Result<SubnetRow> {
    let subnet = resolve(client, reference).await?;
    client
        .execute(
            "SELECT 1 FROM ipmanager.subnets WHERE id = $1 FOR NO KEY UPDATE",
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
    let mut subnets = Vec::with_capacity(rows.len());
    for row in &rows {
        subnets.push(subnet_row(client, row).await?);
    }
    Ok(subnets)
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
    let range_start = range.map(|r| r.0);
    let range_end = range.map(|r| r.1);
    // Only the columns that change are named: an UPDATE naming cidr fires subnets_lock_hosts
    // (LOCK hosts IN SHARE MODE), which waits for every open host transaction.
    let site = fields.site.clone().unwrap_or_else(|| old.site.clone());
    let old_profile: Option<i64> = client
        .query_one(
            "SELECT default_profile_id FROM ipmanager.subnets WHERE id = $1",
            &[&old.id],
        )
        .await?
        .try_get("default_profile_id")?;
    let default_profile = fields
        .default_profile_id(client)
        .await?
        .unwrap_or(old_profile);
    let mut changes = Changes::default();
    changes.add("name", &name, name != old.name);
    changes.add("cidr", &cidr, cidr != old.cidr);
    changes.add("range_start", &range_start, range_start != old.range_start);
    changes.add("range_end", &range_end, range_end != old.range_end);
    changes.add("gateway", &gateway, gateway != old.gateway);
    changes.add("domain", &domain, domain != old.domain);
    changes.add_lease(&lease_seconds, lease_seconds != old.lease_seconds);
    changes.add("enabled", &enabled, enabled != old.enabled);
    changes.add("comment", &comment, comment != old.comment);
    changes.add("site", &site, site != old.site);
    changes.add(
        "default_profile_id",
        &default_profile,
        default_profile != old_profile,
    );
    if !changes.columns.is_empty() {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&old.id];
        params.extend(changes.values.iter().copied());
        client
            .execute(
                &format!(
                    "UPDATE ipmanager.subnets SET {} WHERE id = $1",
                    changes.columns.join(", ")
                ),
                &params,
            )
            .await?;
    }
    let options_changed = options::apply(
        client,
        Owner::Subnet(old.id),
        &fields.options,
        &fields.unset_options,
    )
    .await?;
    if changes.columns.is_empty() && !options_changed {
        return Err(AdminError::NothingToDo(format!(
            "subnet {} already has these values: nothing to change",
            quote(&old.name)
        )));
    }
    let new = by_id(client, old.id).await?;
    Ok((old, new))
}

/// The `column = $n` assignments of an UPDATE and their values (`$1` is the row's id).
#[derive(Default)]
struct Changes<'a> {
    columns: Vec<String>,
    values: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Changes<'a> {
    fn add(&mut self, column: &str, value: &'a (dyn ToSql + Sync), changed: bool) {
        self.push(column, "", value, changed);
    }

    fn add_lease(&mut self, seconds: &'a Option<i64>, changed: bool) {
        self.push(
            "lease_time",
            "::bigint * interval '1 second'",
            seconds,
            changed,
        );
    }

    fn push(&mut self, column: &str, cast: &str, value: &'a (dyn ToSql + Sync), changed: bool) {
        if changed {
            self.values.push(value);
            self.columns
                .push(format!("{column} = ${}{cast}", self.values.len() + 1));
        }
    }
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
