//! `/api/v1/profiles`: DHCP options and PXE boot settings for groups of hosts, through
//! [`crate::admin::profiles`] exactly as `ipmanager profile`.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ErrorBody};
use super::extract::{nullable, options, Body, Params, PathOf};
use super::hosts::WaitQuery;
use super::AppState;
use crate::admin::profiles::{self, ProfileFields, ProfileRow};
use crate::admin::AdminError;

/// A profile's settings. Creating needs `name`; in a PATCH absent fields stay, `null` removes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    /// Only when creating.
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    boot_file: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    boot_file_uefi: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    boot_file_arm64: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    boot_file_ipxe: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    next_server: Option<Option<IpAddr>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    tftp_server_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    comment: Option<Option<String>>,
    /// DHCP options to set or replace, as `--option` takes them: `mtu=1400`.
    #[serde(default)]
    options: Vec<String>,
    /// DHCP options (names or numbers) to remove.
    #[serde(default)]
    unset_options: Vec<String>,
}

impl ProfileBody {
    fn into_fields(self) -> Result<(Option<String>, ProfileFields), ApiError> {
        let fields = ProfileFields {
            boot_file: self.boot_file,
            boot_file_uefi: self.boot_file_uefi,
            boot_file_arm64: self.boot_file_arm64,
            boot_file_ipxe: self.boot_file_ipxe,
            next_server: self.next_server,
            tftp_server_name: self.tftp_server_name,
            comment: self.comment,
            options: options(&self.options)?,
            unset_options: self.unset_options,
        };
        Ok((self.name, fields))
    }
}

/// Every profile with its options.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles",
    responses((status = 200, body = Vec<ProfileRow>), (status = "default", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ProfileRow>>, ApiError> {
    let rows = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(profiles::list(tx).await?) })
        })
        .await?;
    Ok(Json(rows))
}

/// Adds a profile.
#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", params(WaitQuery), request_body = ProfileBody,
    responses((status = 201, body = ProfileRow), (status = "default", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<WaitQuery>,
    Body(body): Body<ProfileBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (name, fields) = body.into_fields()?;
    let name = name.ok_or_else(|| {
        ApiError::bad_request("a profile needs a name").with_field(Some("name".to_owned()))
    })?;
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move { Ok(profiles::add(tx, &name, &fields).await?) })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// One profile.
#[utoipa::path(get, path = "/api/v1/profiles/{profile}", tag = "profiles", params(("profile" = String, Path)),
    responses((status = 200, body = ProfileRow), (status = "default", body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(name): PathOf<String>,
) -> Result<Json<ProfileRow>, ApiError> {
    let row = state
        .read(&headers, |tx| {
            Box::pin(async move { Ok(profiles::show(tx, &name).await?) })
        })
        .await?;
    Ok(Json(row))
}

/// Changes a profile, as `profile set`.
#[utoipa::path(patch, path = "/api/v1/profiles/{profile}", tag = "profiles",
    params(("profile" = String, Path), WaitQuery), request_body = ProfileBody,
    responses((status = 200, body = ProfileRow), (status = "default", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(name): PathOf<String>,
    Params(q): Params<WaitQuery>,
    Body(body): Body<ProfileBody>,
) -> Result<Json<ProfileRow>, ApiError> {
    let (rename, fields) = body.into_fields()?;
    if rename.is_some() {
        return Err(
            ApiError::bad_request("a profile keeps its name (as with profile set)")
                .with_field(Some("name".to_owned())),
        );
    }
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move {
                match profiles::set(tx, &name, &fields).await {
                    Ok((_, new)) => Ok(new),
                    Err(AdminError::NothingToDo(_)) => Ok(profiles::show(tx, &name).await?),
                    Err(error) => Err(error.into()),
                }
            })
        })
        .await?;
    Ok(Json(row))
}

/// Removes a profile and returns it, as `profile rm`.
#[utoipa::path(delete, path = "/api/v1/profiles/{profile}", tag = "profiles",
    params(("profile" = String, Path), WaitQuery),
    responses((status = 200, body = ProfileRow), (status = "default", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathOf(name): PathOf<String>,
    Params(q): Params<WaitQuery>,
) -> Result<Json<ProfileRow>, ApiError> {
    let row = state
        .change(&headers, q.wait, |tx| {
            Box::pin(async move { Ok(profiles::remove(tx, &name).await?) })
        })
        .await?;
    Ok(Json(row))
}
