//! Coalescing on busy branches: when a task with a `coalesce.v1.<key>` route
//! becomes pending, it supersedes the older pending, never-claimed tasks of the
//! same key and task queue, at most `coalesce_limit` of them, in the transaction
//! that makes it pending. The README's "Coalescing" section gives the rules.
//!
//! A superseded task is taken the way `claimWork` takes a run: its `pending`
//! row is deleted with `FOR UPDATE SKIP LOCKED` (PostgreSQL) before its task
//! row is locked, so a run is either claimed or superseded, never both; SQLite
//! has a single writer. Its run 0 resolves `exception/superseded`, and the
//! reference artifact `public/superseded-by.json` points at the status of the
//! task that superseded it.

use crate::core::{Queue, Txn};
use crate::db::placeholders;
use crate::error::Result;
use crate::model::{Task, TaskDef};
use crate::time::parse_ms;
use crate::writes::PendingRow;
use bbb_tcvalues::{ReasonCreated, ReasonResolved, RunState};
use serde_json::{Value, json};
use sqlx::Row;

/// The artifact a superseded run gets: a reference to the status of the task
/// that superseded it.
pub const SUPERSEDED_BY: &str = "public/superseded-by.json";

impl Queue {
    /// Make run 0 of `task` (just added) pending, announce it, and supersede
    /// the older pending tasks of its coalescing key. Every way a task's first
    /// run becomes pending goes through here: `createTask` without unresolved
    /// dependencies (alone or batched), the dependency resolver and
    /// `scheduleTask`.
    pub(crate) async fn first_run_pending(&self, t: &mut Txn, task: &Task, now: i64) -> Result<()> {
        let mut row = PendingRow::of(task)?;
        let mut victims = Vec::new();
        if let Some(key) = self.coalescing_key(t, task).await? {
            row.created = created_ms(&task.def);
            (victims, row.supersedes) = self.take_older(t, task, &key, row.created).await?;
            row.coalesce_key = key;
        }
        self.enqueue_row(t, row).await?;
        self.emit(t, self.events.task_pending(task, 0)).await?;
        for mut old in victims {
            self.supersede(t, &mut old, &task.task_id, now).await?;
        }
        Ok(())
    }

    /// The key under which `task`'s run 0 coalesces, or `None`: coalescing
    /// off, no `coalesce.v1.` route, not a first scheduled run, exempt by its
    /// definition ([`TaskDef::coalescing_exemption`]) or in the graph of a cron
    /// decision task (its group's task, the decision task, has `extra.cron`).
    async fn coalescing_key(&self, t: &mut Txn, task: &Task) -> Result<Option<String>> {
        if self.cfg.coalesce_limit == 0 {
            return Ok(None);
        }
        let Some(key) = task.def.coalesce_key() else {
            return Ok(None);
        };
        let first = task.runs.len() == 1 && task.runs[0].reason_created == ReasonCreated::Scheduled;
        if !first {
            return Ok(None);
        }
        if task.task_id != task.def.task_group_id {
            let decision = sqlx::query("SELECT definition FROM tasks WHERE task_id = $1")
                .bind(&task.def.task_group_id)
                .fetch_optional(&mut *t.tx)
                .await?;
            if let Some(row) = decision {
                let def: Value = serde_json::from_str(&row.try_get::<String, _>("definition")?)?;
                if def["extra"].get("cron").is_some_and(|c| !c.is_null()) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(key.to_owned()))
    }

    /// Take the pending runs `task` supersedes: the never-claimed tasks of
    /// `key` on its queue created no later than it (`created`), longest pending
    /// first, each costing one plus the tasks it stands for, within
    /// `coalesce_limit`. Their `pending` rows are removed. Returns them
    /// (locked) and how many tasks `task` then stands for.
    async fn take_older(
        &self,
        t: &mut Txn,
        task: &Task,
        key: &str,
        created: i64,
    ) -> Result<(Vec<Task>, i64)> {
        let mut budget = self.cfg.coalesce_limit as i64;
        let tq = &task.def.task_queue_id;
        // Committed pending rows; rows a claimer holds are skipped (it claims them).
        let sql = format!(
            "SELECT task_id, run_id, supersedes FROM pending WHERE coalesce_key = $1 \
             AND task_queue_id = $2 AND created <= $3 AND task_id <> $4 AND supersedes < $5 \
             ORDER BY created, inserted, task_id LIMIT $5{}",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(key)
            .bind(tq)
            .bind(created)
            .bind(&task.task_id)
            .bind(budget)
            .fetch_all(&mut *t.tx)
            .await?;
        let mut ids: Vec<String> = Vec::new();
        for r in &rows {
            let cost = 1 + r.try_get::<i64, _>("supersedes")?;
            if cost > budget {
                continue;
            }
            budget -= cost;
            let (id, run_id): (String, i64) = (r.try_get("task_id")?, r.try_get("run_id")?);
            sqlx::query("DELETE FROM pending WHERE task_id = $1 AND run_id = $2")
                .bind(&id)
                .bind(run_id)
                .execute(&mut *t.tx)
                .await?;
            ids.push(id);
        }
        // A batch's own pending rows are still held back: take them from there.
        let mut held: Vec<Task> = Vec::new();
        if let Some(w) = t.deferred_writes() {
            let mut taken = Vec::new();
            w.enqueued.retain(|p| {
                let cost = 1 + p.supersedes;
                let take = p.coalesce_key == key
                    && p.task_queue_id == *tq
                    && p.created <= created
                    && p.task_id != task.task_id
                    && cost <= budget;
                if take {
                    budget -= cost;
                    taken.push(p.task_id.clone());
                }
                !take
            });
            // Saved in this transaction (dependency resolver), or inserted (a
            // batch's createTask) and loaded below.
            for id in taken {
                match w.saves.get(&id) {
                    Some(saved) => held.push(saved.clone()),
                    None => ids.push(id),
                }
            }
        }
        let stands_for = self.cfg.coalesce_limit as i64 - budget;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut loaded = self.load_tasks_for_update(t, &id_refs).await?;
        let mut victims: Vec<Task> = ids.iter().filter_map(|id| loaded.remove(id)).collect();
        victims.extend(held);
        // A stale pending row (its run no longer pending) is dropped, as
        // claimWork drops it.
        victims.retain(|old| old.runs.len() == 1 && old.runs[0].state == RunState::Pending);
        Ok((victims, stands_for))
    }

    /// Resolve run 0 of `old` (pending, its `pending` row gone)
    /// `exception/superseded`, pointing at `by`.
    async fn supersede(&self, t: &mut Txn, old: &mut Task, by: &str, now: i64) -> Result<()> {
        old.runs[0].resolve(RunState::Exception, ReasonResolved::Superseded, now);
        old.taken_until = None;
        let url = format!("{}/api/queue/v1/task/{by}/status", self.cfg.root_url());
        sqlx::query(&format!(
            "INSERT INTO artifacts (task_id, run_id, name, storage_type, content_type, details, \
             expires, present, created) VALUES ({}) ON CONFLICT DO NOTHING",
            placeholders(1, 9)
        ))
        .bind(&old.task_id)
        .bind(0i64)
        .bind(SUPERSEDED_BY)
        .bind("reference")
        .bind("application/json")
        .bind(serde_json::to_string(&json!({ "url": url }))?)
        .bind(old.expires)
        .bind(1i64)
        .bind(now)
        .execute(&mut *t.tx)
        .await?;
        self.record_resolution(t, old).await?;
        self.save_task(t, old).await?;
        self.emit(t, self.events.task_resolved(old, 0)).await?;
        tracing::info!(task.id = %old.task_id, superseded_by = by, "superseded");
        Ok(())
    }
}

/// A definition's `created` in ms (validated when the task was created).
fn created_ms(def: &TaskDef) -> i64 {
    parse_ms(&def.created).unwrap_or(0)
}
