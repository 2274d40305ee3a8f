//! Error types of the crate.

use std::path::PathBuf;

/// A configuration that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for [`crate::WorkerConfig`].
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A `BBB_*` variable's value does not parse.
    #[error("invalid configuration: {0}")]
    Env(#[from] bbb_envlayer::EnvError),
    /// A value is missing or out of range.
    #[error("invalid configuration: {field} {message}")]
    Invalid {
        /// The field or variable concerned.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A task payload that does not follow the accepted format. The message is
/// written to the task log and the run resolves `exception/malformed-payload`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// Errors talking to the queue or uploading artifacts.
#[derive(Debug, thiserror::Error)]
pub enum QueueCallError {
    /// The queue answered with an HTTP status outside 2xx/3xx.
    #[error("{call}: HTTP {status}: {message}")]
    Status {
        /// The API call.
        call: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The error text.
        message: String,
    },
    /// The request failed without an HTTP answer, or the answer was unusable.
    #[error("{call}: {message}")]
    Other {
        /// The API call.
        call: &'static str,
        /// The error text.
        message: String,
    },
}

impl QueueCallError {
    /// The HTTP status code, when the queue answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            QueueCallError::Status { status, .. } => Some(*status),
            QueueCallError::Other { .. } => None,
        }
    }

    /// Converts an error of the `taskcluster` client into a [`QueueCallError`],
    /// keeping the HTTP status when there is one.
    pub fn from_client(call: &'static str, err: anyhow::Error) -> QueueCallError {
        let status = err
            .chain()
            .find_map(|e| e.downcast_ref::<reqwest_tc::Error>())
            .and_then(|e| e.status())
            .map(|s| s.as_u16());
        let message = format!("{err:#}");
        match status {
            Some(status) => QueueCallError::Status {
                call,
                status,
                message,
            },
            None => QueueCallError::Other { call, message },
        }
    }
}
