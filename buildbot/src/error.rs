//! Errors of the legacy-master adapters and the simulator.

/// Errors from a [`LegacyMaster`](crate::LegacyMaster) or the simulator.
#[derive(thiserror::Error, Debug)]
pub enum LegacyError {
    /// The scheduler database reported an error.
    #[error("scheduler DB error: {0}")]
    Db(#[from] mysql_async::Error),
    /// A database URL could not be parsed. The URL is masked.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An HTTP call (builder list, self-serve, master stop URL) failed.
    #[error("HTTP request to {url} failed: {reason}")]
    Http {
        /// The URL with its password masked.
        url: String,
        /// What went wrong (transport error or unexpected status).
        reason: String,
    },
    /// The event bus reported an error.
    #[error("event bus error: {0}")]
    Bus(#[from] bbb_pulse::BusError),
    /// The builder is not in the configured builder list.
    #[error("unknown builder {0:?}")]
    UnknownBuilder(String),
    /// The request cannot be written as the schema requires (for example a
    /// property longer than the 1024-character column).
    #[error("invalid build request: {0}")]
    Invalid(String),
    /// No web URL is configured for the master running a build, so it cannot
    /// be stopped.
    #[error("no stop URL configured for master {0:?}")]
    NoMasterUrl(String),
    /// A JSON document could not be read.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O error (for example binding the simulator's web port).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for this crate.
pub type Result<T, E = LegacyError> = std::result::Result<T, E>;
