//! Errors: one enum for what a service refuses or fails at, and one mapping to
//! the TaskCluster error body `{code, message, requestInfo}` with the right
//! status. Internal errors ([`ApiError::is_internal`]) never show their text to
//! a client: [`error_response`] logs it under an incident id and answers with
//! that id.

use crate::reply::json_response;
use axum::http::StatusCode;
use axum::response::Response;
use bbb_clock::{Clock, fmt_ms};
use bbb_sqlstore::ErrorClass;
use serde_json::{Value, json};

/// An error that becomes a TaskCluster API error response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `MalformedPayload`: JSON parse error or wrong content type.
    #[error("{0}")]
    MalformedPayload(String),
    /// 400 `InvalidRequestArguments`: bad URL parameter or query.
    #[error("{0}")]
    InvalidRequestArguments(String),
    /// 400 `InputValidationError`: schema mismatch.
    #[error("{0}")]
    InputValidation(String),
    /// 400 `InputError`: semantic checks.
    #[error("{0}")]
    Input(String),
    /// 401 `AuthenticationFailed`.
    #[error("{0}")]
    Authentication(String),
    /// 403 `InsufficientScopes`.
    #[error("{0}")]
    InsufficientScopes(String),
    /// 404 `ResourceNotFound`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `RequestConflict`.
    #[error("{0}")]
    Conflict(String),
    /// 410 `ResourceExpired`.
    #[error("{0}")]
    Expired(String),
    /// 413 `InputTooLarge`.
    #[error("{0}")]
    TooLarge(String),
    /// 500 `InternalServerError`: the text is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
    /// 500 `InternalServerError`: a database statement failed. Classified once,
    /// when it is converted, so callers decide on `class` (e.g. whether to run
    /// the transaction again), never on the text, which is for the log only.
    #[error("database: {source}{}", code_suffix(.source))]
    Database {
        /// What the failure means for the transaction.
        class: ErrorClass,
        /// The error the driver reported.
        source: sqlx::Error,
    },
}

/// ` [<code>]` for an error the engine reported with a code, for the log.
fn code_suffix(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| format!(" [{c}]"))
        .unwrap_or_default()
}

impl ApiError {
    /// The TaskCluster error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedPayload(_) => "MalformedPayload",
            ApiError::InvalidRequestArguments(_) => "InvalidRequestArguments",
            ApiError::InputValidation(_) => "InputValidationError",
            ApiError::Input(_) => "InputError",
            ApiError::Authentication(_) => "AuthenticationFailed",
            ApiError::InsufficientScopes(_) => "InsufficientScopes",
            ApiError::NotFound(_) => "ResourceNotFound",
            ApiError::Conflict(_) => "RequestConflict",
            ApiError::Expired(_) => "ResourceExpired",
            ApiError::TooLarge(_) => "InputTooLarge",
            ApiError::Internal(_) | ApiError::Database { .. } => "InternalServerError",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedPayload(_)
            | ApiError::InvalidRequestArguments(_)
            | ApiError::InputValidation(_)
            | ApiError::Input(_) => StatusCode::BAD_REQUEST,
            ApiError::Authentication(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScopes(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Expired(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) | ApiError::Database { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is the service's own failure (500), whose text must not
    /// reach the client.
    pub fn is_internal(&self) -> bool {
        matches!(self, ApiError::Internal(_) | ApiError::Database { .. })
    }

    /// Whether the database said the transaction lost a race (deadlock,
    /// serialization failure, SQLite busy or locked) and may simply be retried.
    pub fn is_retryable_db(&self) -> bool {
        matches!(
            self,
            ApiError::Database {
                class: ErrorClass::Retryable,
                ..
            }
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(source: sqlx::Error) -> Self {
        ApiError::Database {
            class: ErrorClass::of(&source),
            source,
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("json: {e}"))
    }
}

/// Shorthand for results whose error is an [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The TaskCluster error body for `e`, as the API method `method` called with
/// the URL parameters `params` and the body `payload` gets it. An internal
/// error's text stays out of the body: it is logged at ERROR with a new
/// incident id (field `incident.id`), and the body's message gives only that
/// id, as upstream does.
pub fn error_response(
    e: &ApiError,
    method: &str,
    params: Value,
    payload: Value,
    clock: &Clock,
) -> Response {
    let time = fmt_ms(clock.now_ms());
    let status = e.status();
    let text = if e.is_internal() {
        let incident = uuid::Uuid::new_v4();
        tracing::error!(incident.id = %incident, method, error = %e, "request failed");
        format!("Internal Server Error, incidentId {incident}.")
    } else {
        e.to_string()
    };
    let message = format!(
        "{text}\n\n---\n\n* method:     {method}\n* errorCode:  {}\n* statusCode: {}\n* time:       {time}",
        e.code(),
        status.as_u16()
    );
    json_response(
        status,
        &json!({
            "code": e.code(),
            "message": message,
            "requestInfo": {"method": method, "params": params, "payload": payload, "time": time},
        }),
    )
}
