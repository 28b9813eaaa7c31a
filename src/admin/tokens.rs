//! HTTP API tokens (`sql/V8__api.sql`): creating, listing and revoking them (`ipmanager token`),
//! and what the API server does with one per request: [`verify`] a bearer token, then
//! [`begin_as`] in the request's transaction, which switches to the token's database role and
//! makes the audit log name the token's owner.
//!
//! A token is `ipm_` and 64 hex digits (256 random bits). Only its SHA-256 leaves this module:
//! the database stores and compares hashes, so neither its tables nor its statement log hold a
//! usable token.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::{AdminError, Result};
use crate::db::DbError;

/// What every token starts with, so that leaked tokens are recognisable (secret scanners).
const PREFIX: &str = "ipm_";

/// What a token may do; each level is a database role the request's transaction runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Role `ipmanager_api_read`: reads, changes nothing.
    Read,
    /// Role `ipmanager_api_write`: what `ipmanager_admin` may do.
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// `SET LOCAL ROLE` for this level; a constant, so no name from outside reaches the SQL.
    fn set_role(self) -> &'static str {
        match self {
            Access::Read => "SET LOCAL ROLE ipmanager_api_read",
            Access::Write => "SET LOCAL ROLE ipmanager_api_write",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = AdminError;

    fn from_str(s: &str) -> Result<Access> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            other => Err(AdminError::Invalid(format!(
                "api_tokens.access {other:?} is not an access level: 'read' or 'write'"
            ))),
        }
    }
}

/// A token as `ipmanager token list` shows it (`ipmanager.api_token_list`); never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub owner: String,
    pub access: Access,
    /// `valid`, `expired` or `revoked`.
    pub state: String,
    #[serde(serialize_with = "super::rfc3339::serialize")]
    pub created_at: SystemTime,
    pub created_by: String,
    #[serde(serialize_with = "super::rfc3339::option")]
    pub expires_at: Option<SystemTime>,
    #[serde(serialize_with = "super::rfc3339::option")]
    pub revoked_at: Option<SystemTime>,
}

impl TokenInfo {
    fn from_row(row: &Row) -> Result<TokenInfo> {
        Ok(TokenInfo {
            name: row.try_get("name")?,
            owner: row.try_get("owner")?,
            access: row.try_get::<_, String>("access")?.parse()?,
            state: row.try_get("state")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

/// A token just created: `secret` is shown once and exists nowhere else.
#[derive(Debug)]
pub struct NewToken {
    pub info: TokenInfo,
    pub secret: String,
}

/// Creates a token `name` for `owner`; it expires `expires` from now (`None`: never).
pub async fn create(
    client: &impl GenericClient,
    name: &str,
    owner: &str,
    access: Access,
    expires: Option<Duration>,
) -> Result<NewToken> {
    let secret = generate()?;
    let expires_at = expires.map(|after| SystemTime::now() + after);
    let row = client
        .query_one(
            "SELECT * FROM ipmanager.create_api_token($1, $2, $3, $4, $5)",
            &[
                &name,
                &owner,
                &access.as_str(),
                &hash(&secret).as_slice(),
                &expires_at,
            ],
        )
        .await?;
    Ok(NewToken {
        info: TokenInfo::from_row(&row)?,
        secret,
    })
}

/// Every token, oldest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<TokenInfo>> {
    let rows = client
        .query("SELECT * FROM ipmanager.api_token_list ORDER BY id", &[])
        .await?;
    rows.iter().map(TokenInfo::from_row).collect()
}

/// Revokes token `name`; [`AdminError::NothingToDo`] when it already was revoked.
pub async fn revoke(client: &impl GenericClient, name: &str) -> Result<()> {
    let row = client
        .query_one("SELECT ipmanager.revoke_api_token($1)", &[&name])
        .await?;
    if row.try_get::<_, bool>(0)? {
        Ok(())
    } else {
        Err(AdminError::NothingToDo(format!(
            "api token {} was already revoked",
            super::validate::quote(name)
        )))
    }
}

/// 256 random bits from the operating system, as `ipm_` and hex digits.
fn generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AdminError::Os(e.into()))?;
    Ok(format!("{PREFIX}{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the token as presented: what the database stores and looks up.
fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a request is not authenticated (HTTP 401), except [`AuthError::Db`] (503 or 500).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header, or another scheme.
    #[error("no API token: send Authorization: Bearer <token>")]
    Missing,
    /// No token has this hash.
    #[error("unknown API token")]
    Unknown,
    #[error("API token {0:?} was revoked")]
    Revoked(String),
    #[error("API token {0:?} has expired")]
    Expired(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// For operations of the admin library that start their own transactions (import): a token
/// refused there is refused data, a database failure stays one.
impl From<AuthError> for super::AdminError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Db(db) => super::AdminError::Db(db),
            refused => super::AdminError::Invalid(refused.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(error: tokio_postgres::Error) -> Self {
        AuthError::Db(DbError::Postgres(error))
    }
}

/// Who a request acts as: a valid token's name, owner and access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub name: String,
    pub owner: String,
    pub access: Access,
    hash: [u8; 32],
}

/// The token of an `Authorization` header's value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> std::result::Result<&str, AuthError> {
    let (scheme, token) = header
        .and_then(|h| h.trim().split_once(' '))
        .ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Checks `token` as the API's login (a member of `ipmanager_api`), outside any transaction.
pub async fn verify(
    client: &impl GenericClient,
    token: &str,
) -> std::result::Result<TokenIdentity, AuthError> {
    let hash = hash(token);
    let row = client
        .query_opt(
            "SELECT name, owner, access, revoked_at IS NOT NULL AS revoked, \
                    coalesce(expired, false) AS expired \
             FROM ipmanager.api_token_check($1)",
            &[&hash.as_slice()],
        )
        .await?
        .ok_or(AuthError::Unknown)?;
    let name: String = row.try_get("name")?;
    if row.try_get("revoked")? {
        return Err(AuthError::Revoked(name));
    }
    if row.try_get("expired")? {
        return Err(AuthError::Expired(name));
    }
    // The table allows only 'read' and 'write'; anything else gets the lesser access.
    let access = match row.try_get::<_, &str>("access")? {
        "write" => Access::Write,
        _ => Access::Read,
    };
    Ok(TokenIdentity {
        name,
        owner: row.try_get("owner")?,
        access,
        hash,
    })
}

/// First in a request's transaction `tx`: verifies the token again (it may have been revoked
/// since [`verify`]), makes the audit log name it for the rest of the transaction and switches
/// to its role. Everything after runs with the token's privileges only; both end with the
/// transaction.
pub async fn begin_as(
    tx: &impl GenericClient,
    identity: &TokenIdentity,
) -> std::result::Result<(), AuthError> {
    tx.query_one(
        "SELECT ipmanager.api_begin($1)",
        &[&identity.hash.as_slice()],
    )
    .await
    .map_err(|e| refused(e, &identity.name))?;
    tx.batch_execute(identity.access.set_role()).await?;
    Ok(())
}

/// api_begin's refusal (28000) as the reason [`verify`] would give; anything else as it is.
fn refused(error: tokio_postgres::Error, name: &str) -> AuthError {
    let Some(db) = error.as_db_error() else {
        return AuthError::from(error);
    };
    if *db.code() != SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        return AuthError::from(error);
    }
    if db.message().ends_with("has expired") {
        AuthError::Expired(name.to_owned())
    } else if db.message().ends_with("was revoked") {
        AuthError::Revoked(name.to_owned())
    } else {
        AuthError::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_random_bits_with_a_prefix() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 64);
        assert!(a[PREFIX.len()..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_only() {
        assert_eq!(bearer(Some("Bearer ipm_ab")).unwrap(), "ipm_ab");
        assert_eq!(bearer(Some("bearer  ipm_ab ")).unwrap(), "ipm_ab");
        for bad in [None, Some(""), Some("Basic dXNlcjpwdw=="), Some("Bearer ")] {
            assert!(matches!(bearer(bad), Err(AuthError::Missing)), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_token_text() {
        assert_eq!(
            hex(&hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
