//! The store: one SQL dialect over SQLite and PostgreSQL through sqlx's `Any`
//! driver. Statements use `$n` placeholders (both engines accept them); the few
//! differences (row locks, notifications) go through [`Db`] helpers.

use crate::error::{ApiError, Result};
use crate::model::{Run, Task, TaskDef};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

pub use bbb_sqlstore::{Backend, placeholders};

/// A connection pool plus the engine it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The engine.
    pub backend: Backend,
    /// The URL it was opened with (for `LISTEN` connections).
    pub url: String,
}

/// The PostgreSQL channel that announces newly pending work: payload = taskQueueId.
pub const PENDING_CHANNEL: &str = "bbb_queue_pending";

impl Db {
    /// Open `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file if
    /// needed. `max_connections` applies to PostgreSQL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        let (pool, backend) = bbb_sqlstore::connect(url, max_connections)
            .await?
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "unsupported database URL {}: use sqlite://PATH or postgres://...",
                    bbb_secret::mask_url(url)
                ))
            })?;
        Ok(Db {
            pool,
            backend,
            url: url.to_string(),
        })
    }

    /// Apply pending migrations.
    ///
    /// The services served beside the queue keep their tables in the same
    /// database, each with migrations of its own version range (the queue
    /// below 1000, then a thousand per service: see the services' crates), so
    /// every migrator ignores the versions it does not know.
    pub async fn migrate(&self) -> Result<()> {
        let res = bbb_sqlstore::migrate_shared(
            &self.pool,
            self.backend,
            sqlx::migrate!("./migrations/sqlite"),
            sqlx::migrate!("./migrations/postgres"),
        )
        .await;
        res.map_err(|e| ApiError::Internal(format!("migration failed: {e}")))
    }

    /// Start a transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite (whose writers are serial).
    pub fn for_update(&self) -> &'static str {
        self.backend.for_update()
    }

    /// `FOR SHARE` on PostgreSQL; nothing on SQLite.
    pub fn for_share(&self) -> &'static str {
        self.backend.for_share()
    }

    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite.
    pub fn skip_locked(&self) -> &'static str {
        self.backend.skip_locked()
    }
}

/// The columns [`task_from_row`] reads.
pub const TASK_COLUMNS: &str =
    "task_id, definition, runs, retries_left, taken_until, ever_resolved, deadline, expires";

/// Decode a task row selected with [`TASK_COLUMNS`].
pub fn task_from_row(row: &AnyRow) -> Result<Task> {
    let def: TaskDef = serde_json::from_str(&row.try_get::<String, _>("definition")?)?;
    let runs: Vec<Run> = serde_json::from_str(&row.try_get::<String, _>("runs")?)?;
    Ok(Task {
        task_id: row.try_get("task_id")?,
        def,
        runs,
        retries_left: row.try_get("retries_left")?,
        taken_until: row.try_get("taken_until")?,
        ever_resolved: row.try_get::<i64, _>("ever_resolved")? != 0,
        deadline: row.try_get("deadline")?,
        expires: row.try_get("expires")?,
    })
}

/// `items` padded, by repeating the first, to the next power of two: for
/// `IN (...)` lists, where repeats change nothing, so a few statement texts
/// serve every list length and stay in the prepared-statement caches.
pub fn padded<T: Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    if let Some(first) = items.first() {
        v.resize(items.len().next_power_of_two(), first.clone());
    }
    v
}
