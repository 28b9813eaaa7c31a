//! `ipmanager serve`: the HTTP API. JSON resources under `/api/v1` over the admin library (the
//! same functions, rules and messages as the CLI), one error shape, ETags against lost
//! updates, `?wait=` as `--wait`, a change feed driven by LISTEN, and its OpenAPI document.

pub mod access;
mod changes;
pub mod error;
mod extract;
mod hosts;
mod others;
mod profiles;
mod server;
mod subnets;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_postgres::Transaction;
use utoipa::OpenApi;

use crate::admin::sync;
use crate::metrics::{track_requests, ApiMetrics, CONTENT_TYPE_TEXT};
use error::ApiError;

pub use server::serve;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pool: Pool,
    /// Counts the change notifications seen by the LISTEN connection of the change feed.
    changes: watch::Receiver<u64>,
    /// Longest `?wait=` granted: less than the request timeout, so that the answer says what
    /// happened instead of the connection being cut.
    max_wait: Duration,
    /// Request counts and latencies by route and status, served on `/metrics`.
    metrics: Arc<ApiMetrics>,
}

type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 't>>;

impl AppState {
    /// Runs `op` in a read-only transaction as the request's caller.
    async fn read<T>(
        &self,
        headers: &HeaderMap,
        op: impl for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
    ) -> Result<T, ApiError> {
        let mut object = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut object;
        let tx = client.build_transaction().read_only(true).start().await?;
        access::enter(headers, &tx).await?;
        let value = op(&tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Runs `op` in a transaction of its own as the request's caller; an error rolls all of it
    /// back. With `wait`, then waits until the agents serving the change have applied it.
    async fn change<T>(
        &self,
        headers: &HeaderMap,
        wait: Option<Duration>,
        op: impl for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
    ) -> Result<T, ApiError> {
        let mut object = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut object;
        let tx = client.transaction().await?;
        access::enter(headers, &tx).await?;
        let value = op(&tx).await?;
        let change = match wait {
            Some(_) => Some(sync::current_change(&tx).await?),
            None => None,
        };
        tx.commit().await?;
        if let (Some(timeout), Some(change)) = (wait, change) {
            self.wait_live(client, &change, timeout).await?;
        }
        Ok(value)
    }

    /// As `--wait`: every live agent serving what the change touched has applied it, or a 504
    /// naming those that did not.
    async fn wait_live(
        &self,
        client: &tokio_postgres::Client,
        change: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let timeout = timeout.min(self.max_wait);
        let agents = sync::wait_applied(client, change, timeout).await?;
        let missing: Vec<String> = agents
            .iter()
            .filter(|a| a.awaited() && !a.applied)
            .map(|a| match &a.last_error {
                Some(error) => format!("{} ({}: {error})", a.name, a.phase),
                None => format!("{} ({})", a.name, a.phase),
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the change is committed but not live after {}: not applied by {}",
                humantime::format_duration(timeout),
                missing.join(", ")
            ),
        ))
    }
}

/// A strong ETag of a resource's JSON, without the keys that other resources change (a
/// subnet's usage changes with its hosts, which is no edit of the subnet).
fn etag(value: &impl Serialize, volatile: &[&str]) -> Result<String, ApiError> {
    let mut json = serde_json::to_value(value).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })?;
    if let Some(object) = json.as_object_mut() {
        for key in volatile {
            object.remove(*key);
        }
    }
    let digest = Sha256::digest(json.to_string().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("\"{hex}\""))
}

/// Fails with 412 when the request's `If-Match` names neither `*` nor `current`.
fn check_if_match(headers: &HeaderMap, current: &str, what: &str) -> Result<(), ApiError> {
    let Some(given) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let given = given.to_str().unwrap_or_default();
    let matches = given
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current);
    if matches {
        Ok(())
    } else {
        Err(ApiError::stale(what))
    }
}

/// The `ETag` header of a resource.
fn etag_header(tag: &str) -> Result<[(header::HeaderName, HeaderValue); 1], ApiError> {
    let value = HeaderValue::from_str(tag).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })?;
    Ok([(header::ETAG, value)])
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ipmanager API",
        description = "Subnets and DHCP reservations served by dnsmasq, kept in PostgreSQL."
    ),
    paths(
        hosts::list,
        hosts::create,
        hosts::show,
        hosts::update,
        hosts::remove,
        subnets::list,
        subnets::create,
        subnets::show,
        subnets::update,
        subnets::remove,
        others::sites,
        others::add_site,
        others::site,
        others::remove_site,
        profiles::list,
        profiles::create,
        profiles::show,
        profiles::update,
        profiles::remove,
        others::agents,
        others::log,
        others::export,
        others::import,
        changes::feed,
        openapi,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerToken),
    security(("token" = []))
)]
struct ApiDoc;

/// Every operation but the document itself needs `Authorization: Bearer <token>`
/// (`ipmanager token create`).
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json")))]
async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The OpenAPI document, as `GET /api/v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Prometheus metrics of the API server (not under `/api/v1`, and without a token, as scrapers
/// expect; they say how many requests went where, nothing of the data).
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE_TEXT)],
        state.metrics.render(),
    )
}

/// Every route under `/api/v1`, and `/metrics`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/hosts", get(hosts::list).post(hosts::create))
        .route(
            "/hosts/{host}",
            get(hosts::show).patch(hosts::update).delete(hosts::remove),
        )
        .route("/subnets", get(subnets::list).post(subnets::create))
        .route(
            "/subnets/{subnet}",
            get(subnets::show)
                .patch(subnets::update)
                .delete(subnets::remove),
        )
        .route("/sites", get(others::sites).post(others::add_site))
        .route(
            "/sites/{site}",
            get(others::site).delete(others::remove_site),
        )
        .route("/profiles", get(profiles::list).post(profiles::create))
        .route(
            "/profiles/{profile}",
            get(profiles::show)
                .patch(profiles::update)
                .delete(profiles::remove),
        )
        .route("/agents", get(others::agents))
        .route("/log", get(others::log))
        .route("/export", get(others::export))
        .route("/import", axum::routing::post(others::import))
        .route("/changes", get(changes::feed))
        .route("/openapi.json", get(openapi));
    let tracked = state.metrics.clone();
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such resource: see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            tracked,
            track_requests,
        ))
        .with_state(state)
}
