//! Task queues: their records (`listTaskQueues`, `getTaskQueue`), how many runs
//! wait in them and which are claimed (`pendingTasks`, `taskQueueCounts`,
//! `listPendingTasks`, `listClaimedTasks`).

use crate::core::Queue;
use crate::db::{TASK_COLUMNS, task_from_row};
use crate::error::Result;
use crate::model::Task;
use crate::time::{Millis, fmt_ms};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::HashMap;

/// A task queue's record, written when a task is created into it or claimed
/// from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskQueue {
    /// `<provisionerId>/<workerType>`.
    pub task_queue_id: String,
    /// `experimental` unless configured otherwise.
    pub stability: String,
    /// A description (empty unless configured).
    pub description: String,
    /// When the record expires.
    pub expires: Millis,
    /// When the queue was last used.
    pub last_date_active: Millis,
}

impl TaskQueue {
    /// The record as upstream's JSON.
    pub fn json(&self) -> Value {
        json!({
            "taskQueueId": self.task_queue_id,
            "stability": self.stability,
            "description": self.description,
            "expires": fmt_ms(self.expires),
            "lastDateActive": fmt_ms(self.last_date_active),
        })
    }

    fn from_row(r: &sqlx::any::AnyRow) -> Result<TaskQueue> {
        Ok(TaskQueue {
            task_queue_id: r.try_get("task_queue_id")?,
            stability: r.try_get("stability")?,
            description: r.try_get("description")?,
            expires: r.try_get("expires")?,
            last_date_active: r.try_get("last_date_active")?,
        })
    }
}

/// A pending run as `listPendingTasks` shows it.
#[derive(Clone, Debug)]
pub struct PendingRun {
    /// The task.
    pub task: Task,
    /// The run waiting to be claimed.
    pub run_id: i64,
    /// When it became pending.
    pub inserted: Millis,
}

const TASK_QUEUE_COLUMNS: &str = "task_queue_id, expires, last_date_active, description, stability";

impl Queue {
    /// Whether the database answers (`__heartbeat__`).
    pub async fn check_database(&self) -> Result<()> {
        sqlx::query("SELECT 1 AS one")
            .fetch_one(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Up to `limit` task queues after `after`, ordered by id.
    pub async fn task_queues(&self, after: &str, limit: i64) -> Result<Vec<TaskQueue>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_QUEUE_COLUMNS} FROM task_queues \
             WHERE task_queue_id > $1 ORDER BY task_queue_id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(TaskQueue::from_row).collect()
    }

    /// One task queue's record, if it exists.
    pub async fn task_queue(&self, task_queue_id: &str) -> Result<Option<TaskQueue>> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_QUEUE_COLUMNS} FROM task_queues WHERE task_queue_id = $1"
        ))
        .bind(task_queue_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(TaskQueue::from_row).transpose()
    }

    /// How many runs of `task_queue_id` wait to be claimed (deadline not passed).
    pub async fn pending_count(&self, task_queue_id: &str) -> Result<i64> {
        self.count_now(
            "SELECT COUNT(*) AS n FROM pending WHERE task_queue_id = $1 AND deadline > $2",
            task_queue_id,
        )
        .await
    }

    /// How many runs of `task_queue_id` are claimed and their claim not expired.
    pub async fn claimed_count(&self, task_queue_id: &str) -> Result<i64> {
        self.count_now(
            "SELECT COUNT(*) AS n FROM tasks WHERE state = 'running' AND taken_until > $2 AND task_queue_id = $1",
            task_queue_id,
        )
        .await
    }

    /// The count `sql` gives for the task queue `$1` at the time `$2`, now.
    async fn count_now(&self, sql: &str, task_queue_id: &str) -> Result<i64> {
        Ok(sqlx::query(sql)
            .bind(task_queue_id)
            .bind(self.clock.now_ms())
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?)
    }

    /// Up to `limit` pending runs of `task_queue_id` whose task id is after
    /// `after`, ordered by task id, with their tasks (a run whose task is gone
    /// is left out).
    pub async fn pending_runs(
        &self,
        task_queue_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<PendingRun>> {
        let rows = sqlx::query(
            "SELECT task_id, run_id, inserted FROM pending WHERE task_queue_id = $1 AND deadline > $2 \
             AND task_id > $3 ORDER BY task_id LIMIT $4",
        )
        .bind(task_queue_id)
        .bind(self.clock.now_ms())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("task_id"))
            .collect::<Result<_, _>>()?;
        let tasks: HashMap<String, Task> = self
            .load_tasks(&ids)
            .await?
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("task_id")?;
            if let Some(task) = tasks.get(&id) {
                out.push(PendingRun {
                    task: task.clone(),
                    run_id: r.try_get("run_id")?,
                    inserted: r.try_get("inserted")?,
                });
            }
        }
        Ok(out)
    }

    /// Up to `limit` tasks of `task_queue_id` whose last run is claimed and
    /// its claim not expired, with task ids after `after`, ordered by task id.
    pub async fn claimed_tasks(
        &self,
        task_queue_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_queue_id = $1 AND state = 'running' AND taken_until > $2 \
             AND task_id > $3 ORDER BY task_id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(task_queue_id)
            .bind(self.clock.now_ms())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }
}
