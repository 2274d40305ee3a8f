//! Task groups: get, seal, cancel, list.

use crate::core::Queue;
use crate::db::{TASK_COLUMNS, task_from_row};
use crate::error::{ApiError, Result};
use crate::model::Task;
use crate::time::fmt_ms;
use bbb_tcvalues::ReasonResolved;
use serde_json::{Value, json};
use sqlx::Row;

impl Queue {
    /// The `task-group-response` object of a group, or 404.
    pub async fn task_group(&self, task_group_id: &str) -> Result<Value> {
        let row = sqlx::query(
            "SELECT scheduler_id, expires, sealed FROM task_groups WHERE task_group_id = $1",
        )
        .bind(task_group_id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Task group {task_group_id} not found")))?;
        group_json(task_group_id, &row)
    }

    /// `sealTaskGroup`: no more tasks may be added. Idempotent.
    pub async fn seal_task_group(&self, task_group_id: &str) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let changed = sqlx::query(
                "UPDATE task_groups SET sealed = $2 WHERE task_group_id = $1 AND sealed IS NULL",
            )
            .bind(task_group_id)
            .bind(now)
            .execute(&mut *t.tx)
            .await?
            .rows_affected();
            let row = sqlx::query(
                "SELECT scheduler_id, expires, sealed FROM task_groups WHERE task_group_id = $1",
            )
            .bind(task_group_id)
            .fetch_optional(&mut *t.tx)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("Task group {task_group_id} not found")))?;
            let group = group_json(task_group_id, &row)?;
            if changed > 0 {
                self.emit(&mut t, self.events.task_group("task-group-sealed", &group))
                    .await?;
            }
            self.commit(t).await?;
            Ok(group)
        })
        .await
    }

    /// `cancelTaskGroup`: cancel every unresolved task of a sealed group.
    pub async fn cancel_task_group(&self, task_group_id: &str) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let row = sqlx::query("SELECT sealed FROM task_groups WHERE task_group_id = $1")
                .bind(task_group_id)
                .fetch_optional(&mut *t.tx)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("Task group {task_group_id} not found")))?;
            if row.try_get::<Option<i64>, _>("sealed")?.is_none() {
                return Err(ApiError::Conflict(format!(
                    "Task group {task_group_id} must be sealed before it can be cancelled"
                )));
            }
            let size: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE task_group_id = $1")
                .bind(task_group_id)
                .fetch_one(&mut *t.tx)
                .await?
                .try_get("n")?;
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE task_group_id = $1 AND open = 1 AND deadline > $2 ORDER BY task_id{}",
                self.db.for_update()
            );
            let rows = sqlx::query(&sql).bind(task_group_id).bind(now).fetch_all(&mut *t.tx).await?;
            let mut ids = Vec::new();
            for row in rows {
                let mut task = task_from_row(&row)?;
                if self
                    .resolve_unfinished(&mut t, &mut task, ReasonResolved::Canceled, now)
                    .await?
                {
                    ids.push(task.task_id.clone());
                }
            }
            self.commit(t).await?;
            Ok(json!({
                "taskGroupId": task_group_id,
                "taskGroupSize": size,
                "cancelledCount": ids.len(),
                "taskIds": ids,
            }))
        })
        .await
    }

    /// Tasks of a group after `after` (by taskId), at most `limit`.
    pub async fn group_tasks(
        &self,
        task_group_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_group_id = $1 AND task_id > $2 ORDER BY task_id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(task_group_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }
}

/// A task group row as the API shows it.
pub fn group_json(task_group_id: &str, row: &sqlx::any::AnyRow) -> Result<Value> {
    let mut g = json!({
        "taskGroupId": task_group_id,
        "schedulerId": row.try_get::<String, _>("scheduler_id")?,
        "expires": fmt_ms(row.try_get("expires")?),
    });
    if let Some(s) = row.try_get::<Option<i64>, _>("sealed")? {
        g["sealed"] = fmt_ms(s).into();
    }
    Ok(g)
}
