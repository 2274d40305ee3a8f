//! Errors of the mapping database.

/// An error from [`crate::StateDb`].
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database URL names no supported engine.
    #[error("unsupported database URL {0}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A database error (connection, statement, constraint).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (an unknown state or resolution text).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A carry-over named a build request that no earlier run of the task holds.
    #[error("no earlier run of task {task_id} holds build request {build_request_id}")]
    NotCarried {
        /// The task.
        task_id: String,
        /// The build request that was to be carried over.
        build_request_id: i64,
    },
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, StateError>;
