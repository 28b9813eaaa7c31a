//! Who makes a request, and what the database lets them do: the one place where a request's
//! credentials meet its transaction.

use axum::http::HeaderMap;
use tokio_postgres::Transaction;

use super::error::ApiError;

/// Prepares the request's transaction for its caller. Until API tokens exist, every request
/// runs as the server's own database login, which is why plain HTTP is served on loopback
/// only unless the admin says otherwise.
pub async fn enter(_headers: &HeaderMap, _tx: &Transaction<'_>) -> Result<(), ApiError> {
    Ok(())
}

/// As [`enter`], for operations that run their own transactions (import).
pub async fn enter_client(
    _headers: &HeaderMap,
    _client: &tokio_postgres::Client,
) -> Result<(), ApiError> {
    Ok(())
}
