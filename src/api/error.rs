//! The API's one error shape, `{"error": {"code", "message", "field"}}`, and how admin and
//! database errors map to HTTP statuses that mean what the CLI's exit codes mean.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::admin::AdminError;
use crate::db::DbError;

/// An error answer: status, a stable code for programs, the message for people, and the
/// `table.column` or JSON field it is about, when known.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// bad_request, ambiguous, unauthorized, forbidden, not_found, conflict,
    /// precondition_failed, invalid, unavailable, timeout or internal.
    pub code: String,
    pub message: String,
    /// The JSON field or `table.column` the error is about.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status,
            code,
            field: column_of(&message),
            message,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn with_field(mut self, field: Option<String>) -> ApiError {
        self.field = field.or(self.field);
        self
    }

    pub fn stale(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("{what} changed since it was read (If-Match does not match its ETag): read it again"),
        )
    }
}

/// `hosts.hostname` from "hosts.hostname 'x' is already used …": the database's and the
/// validators' messages start with the column they are about.
fn column_of(message: &str) -> Option<String> {
    let first = message.split_whitespace().next()?;
    let (table, column) = first.split_once('.')?;
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    (word(table) && word(column)).then(|| first.to_owned())
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        let (status, code) = match &error {
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            // Reached only where the API does not turn it into the unchanged row.
            AdminError::NothingToDo(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::Ambiguous(_) => (StatusCode::BAD_REQUEST, "ambiguous"),
            AdminError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            AdminError::Duplicate(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::Db(db) => return db.into(),
            AdminError::Os(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<&DbError> for ApiError {
    fn from(error: &DbError) -> Self {
        let (status, code) = match error {
            DbError::Postgres(pg) => postgres_status(pg),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, format!("{error:#}"))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        AdminError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the database is unavailable: {error}"),
        )
    }
}

/// The status of a statement's failure, as the CLI picks its exit code: no privilege 403,
/// a server or resource problem 503, anything else about the data 422.
fn postgres_status(error: &tokio_postgres::Error) -> (StatusCode, &'static str) {
    let Some(code) = error.code() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return (StatusCode::FORBIDDEN, "forbidden");
    }
    if matches!(&code.code()[..2], "40" | "53" | "57" | "58" | "3F" | "42") {
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_the_column_a_message_starts_with() {
        assert_eq!(
            column_of("hosts.hostname 'web' is already used in this subnet").as_deref(),
            Some("hosts.hostname")
        );
        assert_eq!(column_of("host web not found"), None);
        assert_eq!(column_of("10.0.0.5 is taken"), None);
    }
}
