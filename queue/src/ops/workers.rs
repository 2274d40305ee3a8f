//! Worker records (`listWorkers`, `getWorker`): when a worker was first and last
//! seen, and the runs it claimed most recently.
//!
//! Every claimed run is recorded, in the claim's own transaction: a batched
//! claim adds its rows to the batch's multi-row writes (no extra round trip on
//! PostgreSQL), so the record costs one small insert per claim. The rest of the
//! record (`lastDateActive`, `expires`, pruning the worker's older runs) is
//! written at most once a minute per worker and process, as upstream throttles
//! it.

use crate::core::{Queue, Txn};
use crate::error::Result;
use crate::writes::WorkerTaskRow;
use sqlx::Row;

/// How many of its most recent runs a worker's record shows (as upstream).
pub const RECENT_TASKS: i64 = 20;

/// How long a worker's record outlives its last activity.
pub const WORKER_EXPIRY_MS: i64 = 24 * 3600 * 1000;

/// A worker's record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The worker's group.
    pub worker_group: String,
    /// The worker's id.
    pub worker_id: String,
    /// When it first claimed.
    pub first_claim: i64,
    /// When it was last active (updated at most once a minute).
    pub last_date_active: i64,
    /// When the record expires.
    pub expires: i64,
    /// Until when it is quarantined, if it ever was.
    pub quarantine_until: Option<i64>,
    /// `(taskId, runId)` of the runs it claimed, oldest first: up to
    /// [`RECENT_TASKS`] for `getWorker`, only the latest for `listWorkers`.
    pub recent_tasks: Vec<(String, i64)>,
}

/// The columns [`record_from_row`] reads, besides the recent tasks.
const WORKER_COLUMNS: &str =
    "w.worker_group, w.worker_id, w.first_claim, w.last_date_active, w.expires, w.quarantine_until";

/// The conditions selecting the `worker_tasks` rows of the worker row `w`.
const OF_WORKER: &str = "k.task_queue_id = w.task_queue_id AND k.worker_group = w.worker_group \
                         AND k.worker_id = w.worker_id";

fn record_from_row(r: &sqlx::any::AnyRow) -> Result<WorkerRecord> {
    Ok(WorkerRecord {
        worker_group: r.try_get("worker_group")?,
        worker_id: r.try_get("worker_id")?,
        first_claim: r.try_get("first_claim")?,
        last_date_active: r.try_get("last_date_active")?,
        expires: r.try_get("expires")?,
        quarantine_until: r.try_get("quarantine_until")?,
        recent_tasks: Vec::new(),
    })
}

impl Queue {
    /// Record that a worker was active and which runs it just claimed (`claimed`:
    /// `(taskId, runId)`, in claim order; may be empty), within `t`.
    pub(crate) async fn touch_worker(
        &self,
        t: &mut Txn,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        claimed: &[(String, i64)],
        now: i64,
    ) -> Result<()> {
        self.record_claims(t, task_queue_id, worker_group, worker_id, claimed)
            .await?;
        // The rest of the record is informational (deprecated upstream): write it
        // at most once a minute per worker and process, like upstream's throttling.
        if !self.throttled(
            t,
            format!("{task_queue_id}\n{worker_group}\n{worker_id}"),
            now,
        ) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO workers (task_queue_id, worker_group, worker_id, first_claim, last_date_active, \
             expires, recent_tasks) VALUES ($1, $2, $3, $4, $4, $5, '[]') \
             ON CONFLICT (task_queue_id, worker_group, worker_id) \
             DO UPDATE SET last_date_active = $4, expires = $5",
        )
        .bind(task_queue_id)
        .bind(worker_group)
        .bind(worker_id)
        .bind(now)
        .bind(now + WORKER_EXPIRY_MS)
        .execute(&mut *t.tx)
        .await?;
        // Runs older than the newest RECENT_TASKS are never shown again.
        sqlx::query(
            "DELETE FROM worker_tasks WHERE task_queue_id = $1 AND worker_group = $2 AND worker_id = $3 \
             AND id <= (SELECT id FROM worker_tasks WHERE task_queue_id = $1 AND worker_group = $2 \
             AND worker_id = $3 ORDER BY id DESC LIMIT 1 OFFSET $4)",
        )
        .bind(task_queue_id)
        .bind(worker_group)
        .bind(worker_id)
        .bind(RECENT_TASKS)
        .execute(&mut *t.tx)
        .await?;
        self.touch_task_queue(t, task_queue_id, now).await
    }

    /// Add the runs a worker claimed to its record, within `t` (held back to the
    /// commit's multi-row writes in a batched transaction).
    async fn record_claims(
        &self,
        t: &mut Txn,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        claimed: &[(String, i64)],
    ) -> Result<()> {
        let rows = claimed.iter().map(|(task_id, run_id)| WorkerTaskRow {
            task_queue_id: task_queue_id.to_string(),
            worker_group: worker_group.to_string(),
            worker_id: worker_id.to_string(),
            task_id: task_id.clone(),
            run_id: *run_id,
        });
        if let Some(w) = t.deferred_writes() {
            w.worker_tasks.extend(rows);
            return Ok(());
        }
        for r in rows {
            sqlx::query(
                "INSERT INTO worker_tasks (task_queue_id, worker_group, worker_id, task_id, run_id) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(r.task_queue_id)
            .bind(r.worker_group)
            .bind(r.worker_id)
            .bind(r.task_id)
            .bind(r.run_id)
            .execute(&mut *t.tx)
            .await?;
        }
        Ok(())
    }

    /// Up to `limit` workers of `task_queue_id` after `after` (`<group>/<id>`),
    /// ordered by group then id, each with only its latest claimed run.
    pub async fn list_workers(
        &self,
        task_queue_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<WorkerRecord>> {
        let latest = |column: &str| {
            format!(
                "(SELECT k.{column} FROM worker_tasks k WHERE {OF_WORKER} ORDER BY k.id DESC LIMIT 1) \
                 AS latest_{column}"
            )
        };
        let sql = format!(
            "SELECT {WORKER_COLUMNS}, {}, {} FROM workers w WHERE w.task_queue_id = $1 \
             AND (w.worker_group || '/' || w.worker_id) > $2 ORDER BY w.worker_group, w.worker_id LIMIT $3",
            latest("task_id"),
            latest("run_id"),
        );
        let rows = sqlx::query(&sql)
            .bind(task_queue_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let mut w = record_from_row(r)?;
                let task_id: Option<String> = r.try_get("latest_task_id")?;
                let run_id: Option<i64> = r.try_get("latest_run_id")?;
                w.recent_tasks.extend(task_id.zip(run_id));
                Ok(w)
            })
            .collect()
    }

    /// One worker's record with its [`RECENT_TASKS`] most recent runs, if it exists.
    pub async fn worker(
        &self,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
    ) -> Result<Option<WorkerRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {WORKER_COLUMNS} FROM workers w \
             WHERE w.task_queue_id = $1 AND w.worker_group = $2 AND w.worker_id = $3"
        ))
        .bind(task_queue_id)
        .bind(worker_group)
        .bind(worker_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut w = record_from_row(&row)?;
        let runs = sqlx::query(
            "SELECT task_id, run_id FROM worker_tasks WHERE task_queue_id = $1 AND worker_group = $2 \
             AND worker_id = $3 ORDER BY id DESC LIMIT $4",
        )
        .bind(task_queue_id)
        .bind(worker_group)
        .bind(worker_id)
        .bind(RECENT_TASKS)
        .fetch_all(&self.db.pool)
        .await?;
        for r in runs.iter().rev() {
            w.recent_tasks
                .push((r.try_get("task_id")?, r.try_get("run_id")?));
        }
        Ok(Some(w))
    }
}
