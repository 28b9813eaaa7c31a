//! Sites (`ipmanager.sites`): named groups of subnets, each served by the agents configured
//! with `[agent] sites`. Add, remove, show and list; a subnet joins a site through
//! [`super::subnets`] (`subnet set --site`).

use std::time::SystemTime;

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::validate::quote;
use super::{AdminError, Result};

/// A site with the subnets that belong to it and the agents that report serving it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SiteRow {
    pub id: i64,
    pub name: String,
    pub comment: Option<String>,
    /// Names of its subnets, by address.
    pub subnets: Vec<String>,
    /// Agents whose `[agent] sites` include it (agents without sites serve every subnet and
    /// are not listed).
    pub agents: Vec<String>,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
}

const SELECT_SITES: &str = "\
    SELECT t.id, t.name, t.comment, t.created_at, t.updated_at, \
           ARRAY(SELECT s.name FROM ipmanager.subnets s WHERE s.site = t.name ORDER BY s.cidr) \
               AS subnets, \
           ARRAY(SELECT a.name FROM ipmanager.agent_status a \
                 WHERE a.sites @> ARRAY[t.name] ORDER BY a.name) AS agents \
    FROM ipmanager.sites t";

fn site_row(row: &Row) -> Result<SiteRow> {
    Ok(SiteRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        comment: row.try_get("comment")?,
        subnets: row.try_get("subnets")?,
        agents: row.try_get("agents")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The rule for site names, in the words of the `sites_validate` trigger.
pub fn validate_name(name: &str) -> Result<(), String> {
    if crate::model::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "sites.name {} is not a valid site name: 1 to 63 letters, digits, '-', '_' or '.', \
             starting with a letter or digit",
            quote(name)
        ))
    }
}

/// Adds a site; an empty comment is none.
pub async fn add(
    client: &impl GenericClient,
    name: &str,
    comment: Option<&str>,
) -> Result<SiteRow> {
    validate_name(name).map_err(AdminError::Invalid)?;
    let comment = comment.filter(|c| !c.is_empty());
    client
        .execute(
            "INSERT INTO ipmanager.sites (name, comment) VALUES ($1, $2)",
            &[&name, &comment],
        )
        .await?;
    show(client, name).await
}

/// One site by name.
pub async fn show(client: &impl GenericClient, name: &str) -> Result<SiteRow> {
    let row = client
        .query_opt(&format!("{SELECT_SITES} WHERE t.name = $1"), &[&name])
        .await?
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "site {} does not exist: give a site name as listed by 'ipmanager site list'",
                quote(name)
            ))
        })?;
    site_row(&row)
}

/// Every site, by name.
pub async fn list(client: &impl GenericClient) -> Result<Vec<SiteRow>> {
    let rows = client
        .query(&format!("{SELECT_SITES} ORDER BY t.name"), &[])
        .await?;
    rows.iter().map(site_row).collect()
}

/// Removes a site. The database refuses while subnets belong to it, naming them.
pub async fn remove(client: &impl GenericClient, name: &str) -> Result<SiteRow> {
    let row = show(client, name).await?;
    client
        .execute("DELETE FROM ipmanager.sites WHERE id = $1", &[&row.id])
        .await?;
    Ok(row)
}
