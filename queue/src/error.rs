//! Errors: one enum for the queue's domain errors and one mapping to the
//! TaskCluster error body `{code, message, requestInfo}` with the right status.
//! Internal errors ([`QueueError::is_internal`]) never show their text to a
//! client: the API logs it under an incident id and answers with that id.

use axum::http::StatusCode;
use bbb_sqlstore::ErrorClass;

/// A queue error that becomes a TaskCluster API error response.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
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

impl QueueError {
    /// The TaskCluster error code.
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::MalformedPayload(_) => "MalformedPayload",
            QueueError::InvalidRequestArguments(_) => "InvalidRequestArguments",
            QueueError::InputValidation(_) => "InputValidationError",
            QueueError::Input(_) => "InputError",
            QueueError::Authentication(_) => "AuthenticationFailed",
            QueueError::InsufficientScopes(_) => "InsufficientScopes",
            QueueError::NotFound(_) => "ResourceNotFound",
            QueueError::Conflict(_) => "RequestConflict",
            QueueError::Expired(_) => "ResourceExpired",
            QueueError::TooLarge(_) => "InputTooLarge",
            QueueError::Internal(_) | QueueError::Database { .. } => "InternalServerError",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            QueueError::MalformedPayload(_)
            | QueueError::InvalidRequestArguments(_)
            | QueueError::InputValidation(_)
            | QueueError::Input(_) => StatusCode::BAD_REQUEST,
            QueueError::Authentication(_) => StatusCode::UNAUTHORIZED,
            QueueError::InsufficientScopes(_) => StatusCode::FORBIDDEN,
            QueueError::NotFound(_) => StatusCode::NOT_FOUND,
            QueueError::Conflict(_) => StatusCode::CONFLICT,
            QueueError::Expired(_) => StatusCode::GONE,
            QueueError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            QueueError::Internal(_) | QueueError::Database { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Whether this is the queue's own failure (500), whose text must not
    /// reach the client.
    pub fn is_internal(&self) -> bool {
        matches!(self, QueueError::Internal(_) | QueueError::Database { .. })
    }

    /// Whether the database said the transaction lost a race (deadlock,
    /// serialization failure, SQLite busy or locked) and may simply be retried.
    pub fn is_retryable_db(&self) -> bool {
        matches!(
            self,
            QueueError::Database {
                class: ErrorClass::Retryable,
                ..
            }
        )
    }
}

impl From<sqlx::Error> for QueueError {
    fn from(source: sqlx::Error) -> Self {
        QueueError::Database {
            class: ErrorClass::of(&source),
            source,
        }
    }
}

impl From<serde_json::Error> for QueueError {
    fn from(e: serde_json::Error) -> Self {
        QueueError::Internal(format!("json: {e}"))
    }
}

/// Shorthand for results in the queue.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
