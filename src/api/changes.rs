//! `GET /api/v1/changes?after=ID&wait=30s`: audit entries after an id, long-polling until there
//! is one. Woken by the schema's notifications on one shared LISTEN connection, not by polling.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::extract::{duration, Params};
use super::AppState;
use crate::admin::audit::{self, AuditEntry};
use crate::db::Connector;
use crate::listen::{Interest, Listener};

/// Query of the change feed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Entries with a larger id (the last id seen; 0 for all).
    #[serde(default)]
    after: i64,
    /// Wait this long for an entry when there is none yet (e.g. `30s`).
    #[serde(default, deserialize_with = "duration")]
    #[param(value_type = Option<String>)]
    wait: Option<Duration>,
    /// At most this many (default 100).
    limit: Option<u32>,
}

/// Audit entries after `after`, oldest first; empty when `wait` passed without any.
#[utoipa::path(get, path = "/api/v1/changes", tag = "status", params(FeedQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = "default", body = ErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<FeedQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let deadline = Instant::now() + q.wait.unwrap_or_default().min(state.max_wait);
    let limit = i64::from(q.limit.unwrap_or(100));
    let mut changes = state.changes.clone();
    loop {
        // Marked seen before the query: a notification after it wakes the next round.
        changes.mark_unchanged();
        let after = q.after;
        let entries = state
            .read(&headers, |tx| {
                Box::pin(async move { Ok(audit::after(tx, after, limit).await?) })
            })
            .await?;
        if !entries.is_empty() {
            return Ok(Json(entries));
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            // Deadline passed, or the listener is gone (the server is stopping).
            Ok(Err(_)) | Err(_) => return Ok(Json(entries)),
        }
    }
}

/// Keeps a LISTEN connection open for the server's life, reconnecting after failures, and
/// counts the notifications it receives in the returned channel.
pub fn listen(connector: Connector, liveness: Duration) -> watch::Receiver<u64> {
    let (sender, receiver) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut count = 0u64;
        loop {
            match Listener::start(&connector, liveness, Interest::Everything).await {
                Ok(mut listener) => {
                    // Whatever happened while disconnected: have waiting requests look again.
                    count += 1;
                    sender.send_replace(count);
                    while listener.next().await.is_ok() {
                        count += 1;
                        sender.send_replace(count);
                    }
                    tracing::warn!("the change feed's LISTEN connection failed; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "the change feed cannot LISTEN; retrying"),
            }
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    receiver
}
