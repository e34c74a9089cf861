//! The API's error type: a status and a sentence a caller can act on, never SQL or internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// PostgreSQL's `query_canceled`: the statement timeout cut the query off.
const QUERY_CANCELED: &str = "57014";
/// `undefined_table` / `invalid_schema_name`: the analytics models are not built yet.
const UNDEFINED_TABLE: &str = "42P01";
const INVALID_SCHEMA: &str = "3F000";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is malformed or out of range; the sentence names it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// An event that is not a valid transaction, with every invalid field.
    #[error("the event is not a valid transaction")]
    Invalid(Vec<FieldProblem>),
    #[error("writes need the header `Authorization: Bearer <ETL_API_TOKEN>`")]
    Unauthorized,
    /// A dependency is down or too slow.
    #[error("{0}")]
    Unavailable(String),
    #[error("database request failed")]
    Database(#[from] sqlx::Error),
}

/// One reason an event was refused: the field, the validator's stable kind and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The JSON field, or `(document)` when the body as a whole is wrong.
    pub field: String,
    /// The rejection kind the sink would write to `error.kind`, e.g. `unknown_currency`.
    pub kind: String,
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// With 422 only: each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldProblem>>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// The status and public sentence; database details go to the log only.
    fn public(&self) -> (StatusCode, String) {
        match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, self.to_string()),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, self.to_string()),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            Self::Database(err) => database_status(err),
        }
    }
}

fn database_status(err: &sqlx::Error) -> (StatusCode, String) {
    let unavailable = |m: &str| (StatusCode::SERVICE_UNAVAILABLE, m.to_string());
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(QUERY_CANCELED) => unavailable(
                "the query took longer than the statement timeout; try a narrower range or again later",
            ),
            Some(UNDEFINED_TABLE | INVALID_SCHEMA) => {
                unavailable("the analytics models are not built yet; run `etl build-models`")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
        },
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            unavailable("the database is not answering; try again later")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.public();
        if let Self::Database(err) = &self {
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(%err, "request failed");
            } else {
                tracing::warn!(%err, "request answered {status}");
            }
        }
        let fields = match self {
            Self::Invalid(fields) => Some(fields),
            _ => None,
        };
        let mut response = (status, Json(ErrorBody { error, fields })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_do_not_leak_and_map_to_statuses() {
        let (status, message) = ApiError::Database(sqlx::Error::PoolTimedOut).public();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!message.contains("pool"), "{message}");
        let (status, message) =
            ApiError::Database(sqlx::Error::ColumnNotFound("secret_column".into())).public();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(message, "internal error");
    }
}
