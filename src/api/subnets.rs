//! `/api/v1/subnets`: subnets with their utilisation, through [`crate::admin::subnets`]
//! exactly as `ipmanager subnet`.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use cidr::IpCidr;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::extract::{duration, nullable, options, Body, Lease, Params, PathOf};
use super::hosts::WaitQuery;
use super::{check_if_match, etag, etag_header, AppState};
use crate::admin::subnets::{self, SubnetFields, SubnetRow};
use crate::admin::AdminError;

/// Query of `PATCH` and `DELETE` on one subnet.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuery {
    /// Wait until every live agent serving it has applied the change (e.g. `10s`).
    #[serde(default, deserialize_with = "duration")]
    #[param(value_type = Option<String>)]
    wait: Option<Duration>,
    /// DELETE: remove its reservations with it (as `subnet rm --cascade`).
    #[serde(default)]
    cascade: bool,
}

/// A subnet's settings. Creating needs `name` and `cidr`; in a PATCH absent fields stay and
/// `null` removes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetBody {
    name: Option<String>,
    #[schema(value_type = Option<String>)]
    cidr: Option<IpCidr>,
    /// With `range_end`; both `null`: reservations only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    range_start: Option<Option<IpAddr>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    range_end: Option<Option<IpAddr>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    gateway: Option<Option<IpAddr>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    domain: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Lease>)]
    lease_seconds: Option<Option<Lease>>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    site: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    default_profile: Option<Option<String>>,
    /// DHCP options to set or replace, as `--option` takes them: `mtu=1400`.
    #[serde(default)]
    options: Vec<String>,
    /// DHCP options (names or numbers) to remove.
    #[serde(default)]
    unset_options: Vec<String>,
}

impl SubnetBody {
    fn into_fields(self) -> Result<SubnetFields, ApiError> {
        let range = match (self.range_start, self.range_end) {
            (None, None) => None,
            (Some(Some(start)), Some(Some(end))) => Some(Some((start, end))),
            (Some(None), Some(None)) => Some(None),
            _ => {
                return Err(ApiError::bad_request(
                    "range_start and range_end go together: give both, or both null",
                )
                .with_field(Some("range_end".to_owned())))
            }
        };
        let lease = match self.lease_seconds {
            None => None,
            Some(None) => Some(None),
            Some(Some(lease)) => Some(Some(lease.duration("subnets.lease_time")?)),
        };
        Ok(SubnetFields {
            name: self.name,
            cidr: self.cidr,
            range,
            gateway: self.gateway,
            domain: self.domain,
            lease,
            enabled: self.enabled,
            comment: self.comment,
            site: self.site,
            default_profile: self.default_profile,
            options: options(&self.options)?,
            unset_options: self.unset_options,
        })
    }
}

fn subnet_etag(subnet: &SubnetRow) -> Result<String, ApiError> {
    etag(subnet, &["usage"])
}

/// Every subnet with its utilisation, as `subnet list -o json`.
#[utoipa::path(get, path = "/api/v1/subnets", tag = "subnets",
    responses((status = 200, body = Vec<SubnetRow>), (status = "default", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SubnetRow>>, ApiError> {
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(subnets::list(tx).await?) })
        })
        .await?;
    Ok(Json(rows))
}

/// Adds a subnet.
#[utoipa::path(post, path = "/api/v1/subnets", tag = "subnets", params(WaitQuery), request_body = SubnetBody,
    responses((status = 201, body = SubnetRow), (status = "default", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<WaitQuery>,
    Body(body): Body<SubnetBody>,
) -> Result<impl IntoResponse, ApiError> {
    let fields = body.into_fields()?;
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move { Ok(subnets::add(tx, &fields).await?) })
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        etag_header(&subnet_etag(&row)?)?,
        Json(row),
    ))
}

/// One subnet by name or CIDR.
#[utoipa::path(get, path = "/api/v1/subnets/{subnet}", tag = "subnets",
    params(("subnet" = String, Path, description = "name or CIDR")),
    responses((status = 200, body = SubnetRow), (status = "default", body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(subnets::show(tx, &reference).await?) })
        })
        .await?;
    Ok((etag_header(&subnet_etag(&row)?)?, Json(row)))
}

/// Changes a subnet, as `subnet set`. With `If-Match`, only if it is unchanged since.
#[utoipa::path(patch, path = "/api/v1/subnets/{subnet}", tag = "subnets",
    params(("subnet" = String, Path, description = "name or CIDR"), ChangeQuery), request_body = SubnetBody,
    responses((status = 200, body = SubnetRow), (status = "default", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
    Params(q): Params<ChangeQuery>,
    Body(body): Body<SubnetBody>,
) -> Result<impl IntoResponse, ApiError> {
    let fields = body.into_fields()?;
    let if_match = headers.clone();
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move {
                match subnets::set(tx, &reference, &fields).await {
                    Ok((old, new)) => {
                        check_if_match(&if_match, &subnet_etag(&old)?, "the subnet")?;
                        Ok(new)
                    }
                    Err(AdminError::NothingToDo(_)) => {
                        let row = subnets::show(tx, &reference).await?;
                        check_if_match(&if_match, &subnet_etag(&row)?, "the subnet")?;
                        Ok(row)
                    }
                    Err(error) => Err(error.into()),
                }
            })
        })
        .await?;
    Ok((etag_header(&subnet_etag(&row)?)?, Json(row)))
}

/// Removes a subnet and returns it; with reservations only with `?cascade=true`.
#[utoipa::path(delete, path = "/api/v1/subnets/{subnet}", tag = "subnets",
    params(("subnet" = String, Path, description = "name or CIDR"), ChangeQuery),
    responses((status = 200, body = SubnetRow), (status = "default", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(reference): PathOf<String>,
    Params(q): Params<ChangeQuery>,
) -> Result<Json<SubnetRow>, ApiError> {
    let if_match = headers.clone();
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move {
                let (row, _hosts) = subnets::remove(tx, &reference, q.cascade).await?;
                check_if_match(&if_match, &subnet_etag(&row)?, "the subnet")?;
                Ok(row)
            })
        })
        .await?;
    Ok(Json(row))
}
