//! The store: one SQL dialect over SQLite and PostgreSQL through sqlx's `Any`
//! driver. Statements use `$n` placeholders (both engines accept them); the few
//! differences (row locks, notifications) go through [`Db`] helpers.

use crate::error::{QueueError, Result};
use crate::model::{Run, Task, TaskDef};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::time::Duration;

/// Which engine a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file: one connection, writes serialised by SQLite itself.
    Sqlite,
    /// PostgreSQL: row locks, `SKIP LOCKED`, `LISTEN/NOTIFY`; safe for several processes.
    Postgres,
}

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

/// Hide the password in a database URL, for logs.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Open `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file if
    /// needed. `max_connections` applies to PostgreSQL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(QueueError::Internal(format!(
                "unsupported database URL {}: use sqlite://PATH or postgres://...",
                mask_url(url)
            )));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let mut u = url.to_string();
                if !u.contains("mode=") {
                    u.push_str(if u.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    });
                }
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(60))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            Ok(())
                        })
                    })
                    .connect(&u)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?
            }
        };
        Ok(Db {
            pool,
            backend,
            url: url.to_string(),
        })
    }

    /// Apply pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        let res = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await
            }
        };
        res.map_err(|e| QueueError::Internal(format!("migration failed: {e}")))
    }

    /// Start a transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite (whose writers are serial).
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// `FOR SHARE` on PostgreSQL; nothing on SQLite.
    pub fn for_share(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        }
    }

    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite.
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// `$from, $from+1, ...` placeholders for an `IN (...)` list of `n` items.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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
