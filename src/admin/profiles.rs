//! Profiles (`ipmanager.profiles`): named DHCPv4 option sets and PXE boot settings that hosts
//! use (`host set --profile`) and subnets default to (`subnet set --default-profile`). Add,
//! change, remove, show and list; the database refuses to remove a profile in use, counting
//! its users.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::options::{self, OptionArg, OptionRow, Owner};
use super::validate::quote;
use super::{AdminError, Result};

/// A profile as admins see it, with who uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProfileRow {
    pub id: i64,
    pub name: String,
    pub boot_file: Option<String>,
    pub boot_file_uefi: Option<String>,
    pub boot_file_arm64: Option<String>,
    pub boot_file_ipxe: Option<String>,
    #[schema(value_type = Option<String>)]
    pub next_server: Option<IpAddr>,
    pub tftp_server_name: Option<String>,
    pub comment: Option<String>,
    pub options: Vec<OptionRow>,
    /// Hosts that name this profile.
    pub hosts: i64,
    /// Subnets whose hosts default to it, by address.
    pub default_of: Vec<String>,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
}

const SELECT_PROFILES: &str = "\
    SELECT p.id, p.name, p.boot_file, p.boot_file_uefi, p.boot_file_arm64, p.boot_file_ipxe, \
           p.next_server, p.tftp_server_name, p.comment, p.created_at, p.updated_at, \
           (SELECT count(*) FROM ipmanager.hosts h WHERE h.profile_id = p.id) AS hosts, \
           ARRAY(SELECT s.name FROM ipmanager.subnets s WHERE s.default_profile_id = p.id \
                 ORDER BY s.cidr) AS default_of \
    FROM ipmanager.profiles p";

async fn profile_row(client: &impl GenericClient, row: &Row) -> Result<ProfileRow> {
    let id = row.try_get("id")?;
    Ok(ProfileRow {
        id,
        name: row.try_get("name")?,
        boot_file: row.try_get("boot_file")?,
        boot_file_uefi: row.try_get("boot_file_uefi")?,
        boot_file_arm64: row.try_get("boot_file_arm64")?,
        boot_file_ipxe: row.try_get("boot_file_ipxe")?,
        next_server: row.try_get("next_server")?,
        tftp_server_name: row.try_get("tftp_server_name")?,
        comment: row.try_get("comment")?,
        options: options::list(client, Owner::Profile(id)).await?,
        hosts: row.try_get("hosts")?,
        default_of: row.try_get("default_of")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The rule for profile names, in the words of the `profiles_validate` trigger.
pub fn validate_name(name: &str) -> Result<(), String> {
    if crate::model::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "profiles.name {} is not a valid profile name: 1 to 63 letters, digits, '-', '_' or \
             '.', starting with a letter or digit",
            quote(name)
        ))
    }
}

/// The id of the profile named `name`; an unknown name is [`AdminError::NotFound`] in
/// `ipmanager.profile_id`'s words.
pub async fn resolve_id(client: &impl GenericClient, name: &str) -> Result<i64> {
    Ok(client
        .query_one("SELECT ipmanager.profile_id($1) AS id", &[&name])
        .await?
        .try_get("id")?)
}

/// What `profile add` takes and `profile set` changes; `Some(None)` clears a setting.
#[derive(Debug, Clone, Default)]
pub struct ProfileFields {
    pub boot_file: Option<Option<String>>,
    pub boot_file_uefi: Option<Option<String>>,
    pub boot_file_arm64: Option<Option<String>>,
    pub boot_file_ipxe: Option<Option<String>>,
    pub next_server: Option<Option<IpAddr>>,
    pub tftp_server_name: Option<Option<String>>,
    pub comment: Option<Option<String>>,
    pub options: Vec<OptionArg>,
    pub unset_options: Vec<String>,
}

impl ProfileFields {
    /// The columns this change names, with their new values.
    fn columns(&self) -> Vec<(&'static str, &(dyn ToSql + Sync))> {
        let mut columns: Vec<(&'static str, &(dyn ToSql + Sync))> = Vec::new();
        let texts = [
            ("boot_file", &self.boot_file),
            ("boot_file_uefi", &self.boot_file_uefi),
            ("boot_file_arm64", &self.boot_file_arm64),
            ("boot_file_ipxe", &self.boot_file_ipxe),
            ("tftp_server_name", &self.tftp_server_name),
            ("comment", &self.comment),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                columns.push((column, value));
            }
        }
        if let Some(next_server) = &self.next_server {
            columns.push(("next_server", next_server));
        }
        columns
    }
}

/// Adds a profile with its settings and options.
pub async fn add(
    client: &impl GenericClient,
    name: &str,
    fields: &ProfileFields,
) -> Result<ProfileRow> {
    validate_name(name).map_err(AdminError::Invalid)?;
    let columns = fields.columns();
    let mut names = vec!["name"];
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&name];
    for (column, value) in &columns {
        names.push(column);
        values.push(*value);
    }
    let placeholders: Vec<String> = (1..=values.len()).map(|n| format!("${n}")).collect();
    let id: i64 = client
        .query_one(
            &format!(
                "INSERT INTO ipmanager.profiles ({}) VALUES ({}) RETURNING id",
                names.join(", "),
                placeholders.join(", ")
            ),
            &values,
        )
        .await?
        .try_get("id")?;
    options::apply(client, Owner::Profile(id), &fields.options, &[]).await?;
    by_id(client, id).await
}

async fn by_id(client: &impl GenericClient, id: i64) -> Result<ProfileRow> {
    let row = client
        .query_one(&format!("{SELECT_PROFILES} WHERE p.id = $1"), &[&id])
        .await?;
    profile_row(client, &row).await
}

/// One profile by name.
pub async fn show(client: &impl GenericClient, name: &str) -> Result<ProfileRow> {
    let id = resolve_id(client, name).await?;
    by_id(client, id).await
}

/// Every profile, by name.
pub async fn list(client: &impl GenericClient) -> Result<Vec<ProfileRow>> {
    let rows = client
        .query(&format!("{SELECT_PROFILES} ORDER BY p.name"), &[])
        .await?;
    let mut profiles = Vec::with_capacity(rows.len());
    for row in &rows {
        profiles.push(profile_row(client, row).await?);
    }
    Ok(profiles)
}

/// Changes a profile's settings and options; returns it before and after.
pub async fn set(
    client: &impl GenericClient,
    name: &str,
    fields: &ProfileFields,
) -> Result<(ProfileRow, ProfileRow)> {
    let id = resolve_id(client, name).await?;
    client
        .execute(
            "SELECT 1 FROM ipmanager.profiles WHERE id = $1 FOR NO KEY UPDATE",
            &[&id],
        )
        .await?;
    let old = by_id(client, id).await?;
    let columns = fields.columns();
    if !columns.is_empty() {
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&id];
        let assignments: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (column, value))| {
                values.push(*value);
                format!("{column} = ${}", i + 2)
            })
            .collect();
        client
            .execute(
                &format!(
                    "UPDATE ipmanager.profiles SET {} WHERE id = $1",
                    assignments.join(", ")
                ),
                &values,
            )
            .await?;
    }
    options::apply(
        client,
        Owner::Profile(id),
        &fields.options,
        &fields.unset_options,
    )
    .await?;
    let new = by_id(client, id).await?;
    if same_but_time(&old, &new) {
        return Err(AdminError::NothingToDo(format!(
            "profile {} already has these values: nothing to change",
            quote(name)
        )));
    }
    Ok((old, new))
}

/// Equal apart from `updated_at`, which an UPDATE that rewrites the same values still moves.
fn same_but_time(old: &ProfileRow, new: &ProfileRow) -> bool {
    let mut new = new.clone();
    new.updated_at = old.updated_at;
    &new == old
}

/// Removes a profile and its options. The database refuses while hosts or subnets use it.
pub async fn remove(client: &impl GenericClient, name: &str) -> Result<ProfileRow> {
    let row = show(client, name).await?;
    client
        .execute("DELETE FROM ipmanager.profiles WHERE id = $1", &[&row.id])
        .await?;
    Ok(row)
}
