//! `/api/v1/hosts`: reservations, through [`crate::admin::hosts`] exactly as `ipmanager host`.

use crate::client_id::ClientId;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::extract::{duration, nullable, Body, Lease, Params, PathOf};
use super::{check_if_match, etag, etag_header, AppState};
use crate::admin::hosts::{self, HostChange, HostFilter, HostRow, NewHost, Placement};
use crate::admin::{validate, AdminError, HostQuery};

/// Query of `GET /hosts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this subnet (name or CIDR).
    subnet: Option<String>,
    /// Only subnets of this site.
    site: Option<String>,
    /// Only hosts whose name, alias, MAC, IP or comment contains this text (ignoring case).
    search: Option<String>,
    /// At most this many.
    limit: Option<i64>,
    /// Skip this many first (with `limit`: paging).
    offset: Option<i64>,
}

/// Query of the requests on one host.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Only look in this subnet (name or CIDR), for a MAC or name reserved in several.
    subnet: Option<String>,
    /// Changes: wait until every live agent serving it has applied the change (e.g. `10s`).
    #[serde(default, deserialize_with = "duration")]
    #[param(value_type = Option<String>)]
    wait: Option<Duration>,
}

/// Query of `POST /hosts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait until every live agent serving it has applied the change (e.g. `10s`).
    #[serde(default, deserialize_with = "duration")]
    #[param(value_type = Option<String>)]
    pub wait: Option<Duration>,
}

/// A new reservation: `ip`, or `subnet` alone to allocate its next free address.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCreate {
    /// Without it the name is DNS-only.
    mac: Option<String>,
    /// More MACs of the reservation: whichever interface asks gets the address.
    #[serde(default)]
    extra_macs: Vec<String>,
    /// DHCPv4 client-id or DHCPv6 DUID, hex octets separated by colons.
    client_id: Option<String>,
    hostname: String,
    #[serde(default)]
    aliases: Vec<String>,
    profile: Option<String>,
    #[schema(value_type = Option<String>)]
    ip: Option<IpAddr>,
    subnet: Option<String>,
    /// Seconds, or `12h`, `infinite`; absent or null: the subnet's.
    lease_seconds: Option<Lease>,
    comment: Option<String>,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

/// Changes to a reservation; absent fields stay, `null` removes (lease: back to the subnet's).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPatch {
    #[schema(value_type = Option<String>)]
    ip: Option<IpAddr>,
    mac: Option<String>,
    /// The new extra MACs; `[]` removes them.
    extra_macs: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    client_id: Option<Option<String>>,
    hostname: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Lease>)]
    lease_seconds: Option<Option<Lease>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    profile: Option<Option<String>>,
    aliases: Option<Vec<String>>,
}

fn mac(text: &str) -> Result<[u8; 6], ApiError> {
    validate::mac(text).map_err(|message| ApiError::from(AdminError::Invalid(message)))
}

fn macs(texts: &[String]) -> Result<Vec<[u8; 6]>, ApiError> {
    texts.iter().map(|text| mac(text)).collect()
}

fn client_id(text: &str) -> Result<ClientId, ApiError> {
    crate::client_id::parse(text).map_err(|e| {
        ApiError::from(AdminError::Invalid(e.to_string())).with_field(Some("client_id".to_owned()))
    })
}

impl HostCreate {
    fn into_new(self) -> Result<NewHost, ApiError> {
        let placement = match (self.ip, self.subnet) {
            (Some(ip), subnet) => Placement::Ip { ip, subnet },
            (None, Some(subnet)) => Placement::Allocate { subnet },
            (None, None) => {
                return Err(ApiError::bad_request(
                    "give ip, or subnet to allocate the next free address in",
                )
                .with_field(Some("ip".to_owned())))
            }
        };
        Ok(NewHost {
            mac: self.mac.as_deref().map(mac).transpose()?,
            extra_macs: macs(&self.extra_macs)?,
            client_id: self.client_id.as_deref().map(client_id).transpose()?,
            hostname: self.hostname,
            aliases: self.aliases,
            profile: self.profile,
            placement,
            lease: self
                .lease_seconds
                .map(|l| l.duration("hosts.lease_time"))
                .transpose()?,
            comment: self.comment,
            enabled: self.enabled,
        })
    }
}

impl HostPatch {
    fn into_change(self) -> Result<HostChange, ApiError> {
        let lease = match self.lease_seconds {
            None => None,
            Some(None) => Some(None),
            Some(Some(lease)) => Some(Some(lease.duration("hosts.lease_time")?)),
        };
        Ok(HostChange {
            ip: self.ip,
            mac: self.mac.as_deref().map(mac).transpose()?,
            extra_macs: self.extra_macs.as_deref().map(macs).transpose()?,
            client_id: self
                .client_id
                .map(|id| id.as_deref().map(client_id).transpose())
                .transpose()?,
            hostname: self.hostname,
            enabled: self.enabled,
            lease,
            comment: self.comment,
            profile: self.profile,
            aliases: self.aliases,
        })
    }
}

fn host_etag(host: &HostRow) -> Result<String, ApiError> {
    etag(host, &[])
}

fn query(reference: &str) -> Result<HostQuery, ApiError> {
    HostQuery::parse(reference).map_err(|e| ApiError::from(e).with_field(Some("host".to_owned())))
}

/// Reservations, filtered and paged.
#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts", params(ListQuery),
    responses((status = 200, body = Vec<HostRow>), (status = "default", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<ListQuery>,
) -> Result<Json<Vec<HostRow>>, ApiError> {
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move {
                let filter = HostFilter {
                    subnet: q.subnet.as_deref(),
                    site: q.site.as_deref(),
                    search: q.search.as_deref(),
                    limit: q.limit,
                    offset: q.offset.unwrap_or(0),
                };
                Ok(hosts::list(tx, &filter).await?)
            })
        })
        .await?;
    Ok(Json(rows))
}

/// Adds a reservation; with `subnet` and no `ip`, at the subnet's next free address.
#[utoipa::path(post, path = "/api/v1/hosts", tag = "hosts", params(WaitQuery), request_body = HostCreate,
    responses((status = 201, body = HostRow), (status = "default", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<WaitQuery>,
    Body(body): Body<HostCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let new = body.into_new()?;
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move { Ok(hosts::add(tx, &new).await?) })
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        etag_header(&host_etag(&row)?)?,
        Json(row),
    ))
}

/// The one reservation a MAC address, IP address or host name names, as `host show`.
#[utoipa::path(get, path = "/api/v1/hosts/{host}", tag = "hosts",
    params(("host" = String, Path, description = "MAC, IP or host name; mac:, ip: or name: to say which"), OneQuery),
    responses((status = 200, body = HostRow), (status = "default", body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
    Params(q): Params<OneQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let reference = query(&reference)?;
    let row = state
        .read(&headers, |tx| {
            Box::pin(async move {
                one(
                    hosts::find(tx, &reference, q.subnet.as_deref()).await?,
                    &reference,
                    q.subnet.as_deref(),
                )
            })
        })
        .await?;
    Ok((etag_header(&host_etag(&row)?)?, Json(row)))
}

/// Exactly one row, or why not.
fn one(
    mut rows: Vec<HostRow>,
    reference: &HostQuery,
    subnet: Option<&str>,
) -> Result<HostRow, ApiError> {
    match rows.len() {
        0 => Err(hosts::not_found(reference, subnet).into()),
        1 => Ok(rows.remove(0)),
        n => {
            Err(AdminError::Ambiguous(format!(
            "host {reference} matches {n} reservations (in subnets {}): add ?subnet= to pick one",
            rows.iter().map(|h| h.subnet.as_str()).collect::<Vec<_>>().join(", ")
        ))
            .into())
        }
    }
}

/// Changes a reservation, as `host set`. With `If-Match`, only if it is unchanged since.
#[utoipa::path(patch, path = "/api/v1/hosts/{host}", tag = "hosts",
    params(("host" = String, Path, description = "MAC, IP or host name"), OneQuery), request_body = HostPatch,
    responses((status = 200, body = HostRow), (status = "default", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
    Params(q): Params<OneQuery>,
    Body(body): Body<HostPatch>,
) -> Result<impl IntoResponse, ApiError> {
    let reference = query(&reference)?;
    let change = body.into_change()?;
    let if_match = headers.clone();
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move {
                let subnet = q.subnet.as_deref();
                match hosts::set(tx, &reference, subnet, &change).await {
                    Ok((old, new)) => {
                        check_if_match(&if_match, &host_etag(&old)?, "the host")?;
                        Ok(new)
                    }
                    // Nothing to change is no failure over HTTP: the host is as asked.
                    Err(AdminError::NothingToDo(_)) => {
                        let row = one(
                            hosts::find(tx, &reference, subnet).await?,
                            &reference,
                            subnet,
                        )?;
                        check_if_match(&if_match, &host_etag(&row)?, "the host")?;
                        Ok(row)
                    }
                    Err(error) => Err(error.into()),
                }
            })
        })
        .await?;
    Ok((etag_header(&host_etag(&row)?)?, Json(row)))
}

/// Removes a reservation and returns it, as `host rm`. With `If-Match`, only if unchanged.
#[utoipa::path(delete, path = "/api/v1/hosts/{host}", tag = "hosts",
    params(("host" = String, Path, description = "MAC, IP or host name"), OneQuery),
    responses((status = 200, body = HostRow), (status = "default", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
    Params(q): Params<OneQuery>,
) -> Result<Json<HostRow>, ApiError> {
    let reference = query(&reference)?;
    let if_match = headers.clone();
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move {
                let row = hosts::remove(tx, &reference, q.subnet.as_deref()).await?;
                check_if_match(&if_match, &host_etag(&row)?, "the host")?;
                Ok(row)
            })
        })
        .await?;
    Ok(Json(row))
}
