//! Who makes a request, and what the database lets them do: the request's bearer token is
//! verified, and its transaction runs as the token's database role with the audit log naming
//! the token's owner ([`crate::admin::tokens`]). The database, not this server, enforces what
//! a read or write token may do.

use axum::http::{header, HeaderMap, StatusCode};
use tokio_postgres::Transaction;

use super::error::ApiError;
use crate::admin::tokens::{self, AuthError, TokenIdentity};

/// Verifies the request's token and makes the transaction act as it.
pub async fn enter(headers: &HeaderMap, tx: &Transaction<'_>) -> Result<(), ApiError> {
    let identity = identify(headers, tx).await?;
    tokens::begin_as(tx, &identity).await?;
    Ok(())
}

/// The valid token of the request, for operations that start their own transactions (import
/// passes it on to [`tokens::begin_as`] in each).
pub async fn identify(
    headers: &HeaderMap,
    client: &impl tokio_postgres::GenericClient,
) -> Result<TokenIdentity, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let token = tokens::bearer(header)?;
    Ok(tokens::verify(client, token).await?)
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Db(db) => (&db).into(),
            refused => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                refused.to_string(),
            ),
        }
    }
}
