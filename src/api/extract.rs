//! Request parts read into the one error shape: JSON bodies whose errors name the field, query
//! strings and paths whose errors are 400s like every other, and `?wait=` durations.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// A JSON body. Malformed JSON, unknown fields, wrong types and oversized bodies are 400s that
/// name the field; nothing has been done when they are answered.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut json)
            .map(Body)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.inner().to_string();
                let field = if path == "." {
                    quoted_field(&message)
                } else {
                    Some(path)
                };
                let text = match &field {
                    Some(field) => format!("invalid request body: field {field}: {message}"),
                    None => format!("invalid request body: {message}"),
                };
                ApiError::bad_request(text).with_field(field)
            })
    }
}

/// The request body, or a 400 when it is larger than the limit (axum says 413).
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::bad_request(format!(
                    "the request body is larger than the server accepts ([api] max_body_bytes): {}",
                    rejection.body_text()
                ))
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })
}

/// `foo` from serde's "unknown field `foo`, expected …" and "missing field `foo`".
fn quoted_field(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (field, _) = rest.split_once('`')?;
    Some(field.to_owned())
}

/// The query string, or a 400 naming what did not fit.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| Params(query.0))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// The path parameters, or a 400.
pub struct PathOf<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|path| PathOf(path.0))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// `?wait=10s` (humantime, as `--timeout`).
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Tells a field given as `null` (`Some(None)`: remove) from one left out (`None`: keep).
pub fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A lease time in a body: seconds, or text as the CLI takes it (`12h`, `infinite`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Lease {
    Seconds(u64),
    Text(String),
}

impl Lease {
    pub fn duration(&self, column: &str) -> Result<Duration, ApiError> {
        match self {
            Lease::Seconds(seconds) => Ok(Duration::from_secs(*seconds)),
            Lease::Text(text) => {
                crate::admin::validate::lease_time(column, text).map_err(ApiError::bad_request)
            }
        }
    }
}

/// DHCP options as the CLI's `--option` takes them (`mtu=1400`, `252:string=http://…`).
pub fn options(texts: &[String]) -> Result<Vec<crate::admin::options::OptionArg>, ApiError> {
    texts
        .iter()
        .map(|text| {
            crate::admin::options::OptionArg::parse(text)
                .map_err(|m| ApiError::bad_request(m).with_field(Some("options".to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            quoted_field("unknown field `colour`, expected one of `mac`, `ip`").as_deref(),
            Some("colour")
        );
        assert_eq!(quoted_field("expected value at line 1"), None);
    }
}
