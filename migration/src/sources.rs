//! The polled legacy masters' rows (migration `5002`): each master's cursor,
//! counts, last poll and error, and the lease that lets one process at a
//! time poll it.

use bbb_queue::db::Db;
use bbb_service::Result;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Where a master's reading resumes: after the build finished at `finished`
/// (the master's epoch seconds) with id `build_id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// Finish time of the last build read, epoch seconds.
    pub finished: i64,
    /// Its build id.
    pub build_id: i64,
}

/// A polled master as the `sources` endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The master's configured name.
    pub master: String,
    /// Where its reading resumes.
    pub cursor: Cursor,
    /// Builds of the master's own recorded so far.
    pub ingested: i64,
    /// Builds of the bridge's requests passed over (their runs are recorded
    /// from the queue's events).
    pub skipped_bridged: i64,
    /// When it was last polled (ms), if ever.
    pub last_poll: Option<i64>,
    /// When a poll last succeeded (ms), if ever.
    pub last_success: Option<i64>,
    /// The last poll's error, `null` when it succeeded.
    pub last_error: Option<String>,
    /// Polls failed in a row.
    pub failures: i64,
}

fn source(row: &AnyRow) -> Result<Source> {
    Ok(Source {
        master: row.try_get("master")?,
        cursor: Cursor {
            finished: row.try_get("cursor_finished")?,
            build_id: row.try_get("cursor_build_id")?,
        },
        ingested: row.try_get("ingested")?,
        skipped_bridged: row.try_get("skipped_bridged")?,
        last_poll: row.try_get("last_poll")?,
        last_success: row.try_get("last_success")?,
        last_error: row.try_get("last_error")?,
        failures: row.try_get("failures")?,
    })
}

/// Every polled master, by name.
pub async fn sources(db: &Db) -> Result<Vec<Source>> {
    let rows = sqlx::query("SELECT * FROM migration_sources ORDER BY master")
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(source).collect()
}

/// One master's row, if it was ever polled.
pub async fn get(db: &Db, master: &str) -> Result<Option<Source>> {
    let row = sqlx::query("SELECT * FROM migration_sources WHERE master = $1")
        .bind(master)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(source).transpose()
}

/// Takes (or renews) the lease on `master` for `owner` until `until`, when
/// nobody else holds it at `now`; whether `owner` holds it. Creates the
/// master's row on its first poll.
pub async fn lease(db: &Db, master: &str, owner: &str, now: i64, until: i64) -> Result<bool> {
    sqlx::query(
        "INSERT INTO migration_sources (master) VALUES ($1) ON CONFLICT (master) DO NOTHING",
    )
    .bind(master)
    .execute(&db.pool)
    .await?;
    let done = sqlx::query(
        "UPDATE migration_sources SET lease_owner = $1, lease_until = $2 \
         WHERE master = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(master)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease up (on shutdown), so another process polls at once.
pub async fn release(db: &Db, master: &str, owner: &str) -> Result<()> {
    sqlx::query(
        "UPDATE migration_sources SET lease_owner = NULL, lease_until = 0 \
         WHERE master = $1 AND lease_owner = $2",
    )
    .bind(master)
    .bind(owner)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Records a failed poll: its time and error, one more failure in a row.
pub async fn failed(db: &Db, master: &str, now: i64, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE migration_sources SET last_poll = $1, last_error = $2, failures = failures + 1 \
         WHERE master = $3",
    )
    .bind(now)
    .bind(error)
    .bind(master)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Records a successful poll (the cursor and counts were written with the
/// builds they cover).
pub async fn succeeded(db: &Db, master: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE migration_sources SET last_poll = $1, last_success = $1, last_error = NULL, \
         failures = 0 WHERE master = $2",
    )
    .bind(now)
    .bind(master)
    .execute(&db.pool)
    .await?;
    Ok(())
}
