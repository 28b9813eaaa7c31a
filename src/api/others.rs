//! The smaller resources: sites, profiles, agent status, the audit log, export and import,
//! each over the admin function the CLI command uses.

use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::extract::{read_body, Body, Params, PathOf};
use super::AppState;
use crate::admin::audit::{self, AuditEntry, LogFilter};
use crate::admin::import::{self, ImportOptions, ImportReport};
use crate::admin::sites::{self, SiteRow};
use crate::admin::sync::{self, AgentSync};
use crate::admin::{AdminError, HostRef};
use crate::exchange::{self, Format};

/// Every site with its subnets and agents.
#[utoipa::path(get, path = "/api/v1/sites", tag = "sites",
    responses((status = 200, body = Vec<SiteRow>), (status = "default", body = ErrorBody)))]
pub async fn sites(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SiteRow>>, ApiError> {
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(sites::list(tx).await?) })
        })
        .await?;
    Ok(Json(rows))
}

/// A new site.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteBody {
    name: String,
    comment: Option<String>,
}

/// Adds a site, as `site add`.
#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", request_body = SiteBody,
    responses((status = 201, body = SiteRow), (status = "default", body = ErrorBody)))]
pub async fn add_site(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<SiteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let row = state
        .change(&headers, None, |tx| {
            Box::pin(async move { Ok(sites::add(tx, &body.name, body.comment.as_deref()).await?) })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Removes a site and returns it, as `site rm` (refused while subnets belong to it).
#[utoipa::path(delete, path = "/api/v1/sites/{site}", tag = "sites", params(("site" = String, Path)),
    responses((status = 200, body = SiteRow), (status = "default", body = ErrorBody)))]
pub async fn remove_site(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(name): PathOf<String>,
) -> Result<Json<SiteRow>, ApiError> {
    let row = state
        .change(&headers, None, |tx| {
            Box::pin(async move { Ok(sites::remove(tx, &name).await?) })
        })
        .await?;
    Ok(Json(row))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{site}", tag = "sites", params(("site" = String, Path)),
    responses((status = 200, body = SiteRow), (status = "default", body = ErrorBody)))]
pub async fn site(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(name): PathOf<String>,
) -> Result<Json<SiteRow>, ApiError> {
    let row = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(sites::show(tx, &name).await?) })
        })
        .await?;
    Ok(Json(row))
}

/// Every agent: up to date or behind, since when, last error (`ipmanager status`).
#[utoipa::path(get, path = "/api/v1/agents", tag = "status",
    responses((status = 200, body = Vec<AgentSync>), (status = "default", body = ErrorBody)))]
pub async fn agents(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<AgentSync>>, ApiError> {
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(sync::status(tx).await?) })
        })
        .await?;
    Ok(Json(rows))
}

/// Filters of `GET /log`, as `ipmanager log`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Changes of reservations with this MAC, IP or name.
    host: Option<String>,
    /// Changes of this subnet and its reservations.
    subnet: Option<String>,
    /// A duration back from now (90m, 2d) or a UTC date or time.
    since: Option<String>,
    /// At most this many, the newest (default 100).
    limit: Option<u32>,
}

/// The audit log, oldest first.
#[utoipa::path(get, path = "/api/v1/log", tag = "status", params(LogQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = "default", body = ErrorBody)))]
pub async fn log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<LogQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let since: Option<SystemTime> = q
        .since
        .as_deref()
        .map(audit::parse_since)
        .transpose()
        .map_err(|m| ApiError::bad_request(m).with_field(Some("since".to_owned())))?;
    let filter = LogFilter {
        host: q.host.as_deref().map(HostRef::parse).transpose()?,
        subnet: q.subnet,
        since,
        limit: i64::from(q.limit.unwrap_or(100)),
    };
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(audit::log(tx, &filter).await?) })
        })
        .await?;
    Ok(Json(rows))
}

/// Query of export and import.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    format: Format,
    /// Import: the subnet to allocate addresses in for entries without one.
    subnet: Option<String>,
    /// Import: check every entry, change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Every served reservation in a dnsmasq, ethers, dhcp-hostsfile, Kea or hosts file.
#[utoipa::path(get, path = "/api/v1/export", tag = "exchange", params(FormatQuery),
    responses((status = 200, body = String, content_type = "text/plain"), (status = "default", body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<FormatQuery>,
) -> Result<impl IntoResponse, ApiError> {
    // Any valid token may read everything; the snapshot is then taken as the agent takes it.
    state.read(&headers, |_| Box::pin(async { Ok(()) })).await?;
    let snapshot = crate::db::take_snapshot(&state.pool, 0)
        .await
        .map_err(|e| ApiError::from(&e))?;
    let text = exchange::export(q.format, &snapshot);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// Imports a file (the request body) as `ipmanager import`: all or nothing, the same report.
/// Rejected lines make it 422 with the report.
#[utoipa::path(post, path = "/api/v1/import", tag = "exchange", params(FormatQuery),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 200, body = ImportReport), (status = 422, body = ImportReport), (status = "default", body = ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<FormatQuery>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = read_body(request, &()).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|e| ApiError::bad_request(format!("the file is not UTF-8: {e}")))?;
    let parsed = exchange::parse(q.format, &text)
        .map_err(|e| ApiError::from(AdminError::Invalid(e.to_string())))?;
    let mut object = state.pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut object;
    let options = ImportOptions {
        subnet: q.subnet,
        dry_run: q.dry_run,
        caller: Some(super::access::identify(&headers, &*client).await?),
    };
    let report = import::import(client, &parsed, &options).await?;
    let status = if report.rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(report)))
}
