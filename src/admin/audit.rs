//! Reading the audit log (`ipmanager.audit_log`), which triggers fill on every change of hosts
//! and subnets.

use std::net::IpAddr;
use std::time::SystemTime;

use eui48::MacAddress;
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{subnets, HostRef, Result};

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    pub db_user: String,
    /// Owner and name of the HTTP API token the change was made with (`db_user` is then the
    /// API server's login); `None` for changes made otherwise.
    pub api_owner: Option<String>,
    pub api_token: Option<String>,
    pub application_name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub client_addr: Option<IpAddr>,
    pub table_name: String,
    pub operation: String,
    pub row_id: i64,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
}

impl AuditEntry {
    /// Who made the change: the token's owner for changes through the HTTP API
    /// (`alice (token ci-provisioner)`), otherwise the database login.
    pub fn who(&self) -> String {
        match (&self.api_owner, &self.api_token) {
            (Some(owner), Some(token)) => format!("{owner} (token {token})"),
            _ => self.db_user.clone(),
        }
    }

    /// The row's state after the change, or before it for deletions.
    fn latest(&self) -> Option<&serde_json::Value> {
        self.new.as_ref().or(self.old.as_ref())
    }

    /// A short name for the changed row: `web1 (10.0.0.5)`, `lan (10.0.0.0/24)`, `profile pxe`,
    /// `option mtu of subnet #3`, `alias www of host #7`.
    pub fn subject(&self) -> String {
        let number = |name: &str| {
            self.latest()
                .and_then(|row| row.get(name))
                .and_then(|v| v.as_i64())
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        };
        let field = |name: &str| {
            self.latest()
                .and_then(|row| row.get(name))
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned()
        };
        match self.table_name.as_str() {
            "hosts" => format!("host {} ({})", field("hostname"), field("ip")),
            "subnets" => format!("subnet {} ({})", field("name"), field("cidr")),
            "profiles" => format!("profile {}", field("name")),
            "subnet_options" => format!(
                "option {} of subnet #{}",
                field("option"),
                number("subnet_id")
            ),
            "profile_options" => format!(
                "option {} of profile #{}",
                field("option"),
                number("profile_id")
            ),
            "host_aliases" => format!("alias {} of host #{}", field("name"), number("host_id")),
            "host_macs" => format!("MAC {} of host #{}", field("mac"), number("host_id")),
            other => format!("{other} {}", self.row_id),
        }
    }

    /// What changed: `ip: 10.0.0.5 -> 10.0.0.6` for updates; empty otherwise.
    pub fn changes(&self) -> Vec<String> {
        let (Some(old), Some(new)) = (
            self.old.as_ref().and_then(|v| v.as_object()),
            self.new.as_ref().and_then(|v| v.as_object()),
        ) else {
            return Vec::new();
        };
        new.iter()
            .filter(|(key, _)| key.as_str() != "updated_at")
            .filter(|(key, value)| old.get(*key) != Some(*value))
            .map(|(key, value)| {
                let show = |v: Option<&serde_json::Value>| match v {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "null".to_owned(),
                };
                format!("{key}: {} -> {}", show(old.get(key)), show(Some(value)))
            })
            .collect()
    }
}

/// `--since` and `?since=`: a duration back from now (90m, 2d) or a UTC date or time.
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(SystemTime::now() - ago);
    }
    let with_time = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&with_time).map_err(|_| {
        format!("{text:?} is neither a duration (90m, 2d) nor a UTC date or time (2026-11-25)")
    })
}

/// Which entries `log` returns.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Changes of reservations with this MAC, IP or name (before or after the change).
    pub host: Option<HostRef>,
    /// Changes of this subnet and of reservations in it.
    pub subnet: Option<String>,
    pub since: Option<SystemTime>,
    /// The newest this many entries.
    pub limit: i64,
}

/// Entries matching `filter`, oldest first.
pub async fn log(client: &impl GenericClient, filter: &LogFilter) -> Result<Vec<AuditEntry>> {
    let subnet_id = subnets::resolve_id(client, filter.subnet.as_deref()).await?;
    let (mac, ip, name) = match &filter.host {
        Some(HostRef::Mac(mac)) => (Some(MacAddress::new(*mac)), None, None),
        Some(HostRef::Ip(ip)) => (None, Some(*ip), None),
        Some(HostRef::Name(name)) => (None, None, Some(name.clone())),
        None => (None, None, None),
    };
    let host_filter = filter.host.is_some();
    // jsonb holds the canonical text forms (macaddr and inet output), so the parameters are
    // compared through the same casts.
    let rows = client
        .query(
            "SELECT id, at, db_user, api_owner, api_token, application_name, client_addr, table_name, operation, \
                    row_id, old, new \
             FROM ( \
                 SELECT * FROM ipmanager.audit_log a \
                 WHERE ($1::timestamptz IS NULL OR a.at >= $1) \
                   AND (NOT $2 OR (a.table_name = 'hosts' AND ( \
                        ($3::macaddr IS NOT NULL AND $3::text IN (a.old->>'mac', a.new->>'mac')) \
                     OR ($4::inet IS NOT NULL AND host($4) IN (a.old->>'ip', a.new->>'ip')) \
                     OR ($5::text IS NOT NULL AND lower($5) IN (lower(a.old->>'hostname'), \
                                                                lower(a.new->>'hostname')))))) \
                   AND ($6::bigint IS NULL \
                        OR (a.table_name = 'subnets' AND a.row_id = $6) \
                        OR (a.table_name = 'hosts' AND $6::text IN (a.old->>'subnet_id', \
                                                                    a.new->>'subnet_id'))) \
                 ORDER BY a.id DESC LIMIT $7 \
             ) newest ORDER BY id",
            &[
                &filter.since,
                &host_filter,
                &mac,
                &ip,
                &name,
                &subnet_id,
                &filter.limit,
            ],
        )
        .await?;
    rows.iter().map(entry).collect()
}

fn entry(row: &tokio_postgres::Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        db_user: row.try_get("db_user")?,
        api_owner: row.try_get("api_owner")?,
        api_token: row.try_get("api_token")?,
        application_name: row.try_get("application_name")?,
        client_addr: row.try_get("client_addr")?,
        table_name: row.try_get("table_name")?,
        operation: row.try_get("operation")?,
        row_id: row.try_get("row_id")?,
        old: row.try_get("old")?,
        new: row.try_get("new")?,
    })
}

/// Up to `limit` entries with an id above `after`, oldest first: the change feed of the API.
pub async fn after(client: &impl GenericClient, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
    let rows = client
        .query(
            "SELECT id, at, db_user, api_owner, api_token, application_name, client_addr, table_name, operation, \
                    row_id, old, new \
             FROM ipmanager.audit_log WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    rows.iter().map(entry).collect()
}
