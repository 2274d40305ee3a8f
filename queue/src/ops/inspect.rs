//! Reads for the web UI's task-group inspector: a group's tasks counted by
//! state, a page of them filtered by state and name, and the dependency edges
//! around a selection. Each is one statement (or one per 500 ids), whatever
//! the size of the group: never one per task.
//!
//! The counts are answered from the index `tasks_group_state`
//! `(task_group_id, state)` alone, without reading the (wide) task rows; the
//! name filter reads the `name` column, the task's `metadata.name` written
//! when the task is created (migration 0005), not its definition's JSON.
//! There is deliberately no table of counts kept up to date on every state
//! change: one row per (group, state) would be a row every task of the group
//! updates, serializing the group's claims and resolutions on it.

use crate::core::Queue;
use crate::db::{TASK_COLUMNS, padded, placeholders, task_from_row};
use crate::error::Result;
use crate::model::Task;
use bbb_tcvalues::TaskState;
use sqlx::Row;

/// What a page of a group's tasks is narrowed to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose `metadata.name` contains this text (any case).
    pub name: Option<String>,
}

/// `text` as a `LIKE` pattern that matches it anywhere, lower-cased, with
/// `%`, `_` and the escape character `\` escaped.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Queue {
    /// How many tasks of a group are in each state, states without tasks left
    /// out, in the order of [`TaskState`]'s spelling.
    pub async fn group_state_counts(&self, task_group_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM tasks WHERE task_group_id = $1 GROUP BY state ORDER BY state",
        )
        .bind(task_group_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// The tasks of a group after `after` (by taskId) that `filter` lets
    /// through, at most `limit`, in taskId order (the group's index).
    pub async fn group_tasks_filtered(
        &self,
        task_group_id: &str,
        filter: &GroupFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Task>> {
        let mut sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_group_id = $1 AND task_id > $2");
        let mut n = 3;
        if filter.state.is_some() {
            sql.push_str(&format!(" AND state = ${n}"));
            n += 1;
        }
        if filter.name.is_some() {
            sql.push_str(&format!(" AND LOWER(name) LIKE ${n} ESCAPE '\\'"));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY task_id LIMIT ${n}"));
        let mut q = sqlx::query(&sql).bind(task_group_id).bind(after);
        if let Some(state) = filter.state {
            q = q.bind(state.as_str());
        }
        if let Some(name) = &filter.name {
            q = q.bind(contains_pattern(name));
        }
        let rows = q.bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The dependency edges `(required, dependent)` whose required task is
    /// one of `ids`: the tasks that depend on them, in any group.
    pub async fn dependent_edges(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::new();
        for chunk in sorted.chunks(500) {
            let chunk = padded(chunk);
            let sql = format!(
                "SELECT required_task_id, dependent_task_id FROM task_dependencies \
                 WHERE required_task_id IN ({}) ORDER BY required_task_id, dependent_task_id",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in &chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.db.pool).await? {
                out.push((
                    row.try_get("required_task_id")?,
                    row.try_get("dependent_task_id")?,
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn a_name_filter_matches_its_text_literally() {
        assert_eq!(contains_pattern("Build"), "%build%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
