//! Background work: the dependency resolver, claim expiry, deadlines, the outbox
//! relay and expiry of old data. Every loop takes work in small batches with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes can run them at once.

use crate::core::Queue;
use crate::db::{TASK_COLUMNS, placeholders, task_from_row};
use crate::error::Result;
use crate::model::stored;
use bbb_pulse::Bus;
use bbb_tcvalues::{ReasonResolved, RunState, TaskState};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;

/// How many items one pass takes.
const BATCH: i64 = 500;

/// After a pass that found less than a full batch, the dependency resolver and the
/// outbox relay wait this long before the next one, so that under load each pass
/// takes the work of many commits (a pass costs a few round trips however little
/// it finds). An idle loop still answers the first new work at once.
const GATHER: Duration = Duration::from_millis(25);

/// How many expired `s3` artifacts one expiry pass hands out at a time.
pub const EXPIRED_BLOB_BATCH: i64 = 1000;

impl Queue {
    /// One pass of the dependency resolver: mark the dependencies of resolved tasks
    /// satisfied, schedule dependents that are no longer blocked, and announce task
    /// groups that have no unresolved task left. Returns how many resolutions it handled.
    pub async fn resolve_dependencies_once(&self) -> Result<usize> {
        self.retrying(|| self.resolve_dependencies_pass()).await
    }

    async fn resolve_dependencies_pass(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        // Task saves and new pending runs are written together at commit.
        let mut t = self.batch_txn().await?;
        let sql = format!(
            "SELECT id, task_id, task_group_id, resolution FROM resolutions ORDER BY id LIMIT $1{}",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql).bind(BATCH).fetch_all(&mut *t.tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut groups = BTreeSet::new();
        let mut newly_satisfied: BTreeMap<String, i64> = BTreeMap::new();
        // Which tasks resolved, and which of them completed (a task may appear twice
        // after a rerun; one completion is enough to satisfy `all-completed` edges).
        let mut resolved = BTreeSet::new();
        let mut completed = BTreeSet::new();
        for row in &rows {
            ids.push(row.try_get::<i64, _>("id")?);
            groups.insert(row.try_get::<String, _>("task_group_id")?);
            let task_id: String = row.try_get("task_id")?;
            if stored::<TaskState>(&row.try_get::<String, _>("resolution")?)?
                == TaskState::Completed
            {
                completed.insert(task_id.clone());
            }
            resolved.insert(task_id);
        }
        // One statement per chunk marks every edge these resolutions satisfy.
        let resolved: Vec<String> = resolved.into_iter().collect();
        for chunk in resolved.chunks(400) {
            let done: Vec<&String> = chunk.iter().filter(|id| completed.contains(*id)).collect();
            let (chunk, done) = (crate::db::padded(chunk), crate::db::padded(&done));
            let mut sql = format!(
                "UPDATE task_dependencies SET satisfied = 1 WHERE satisfied = 0 \
                 AND dependent_task_id <> required_task_id AND required_task_id IN ({}) AND (requires = 'all-resolved'",
                placeholders(1, chunk.len())
            );
            if !done.is_empty() {
                sql.push_str(&format!(
                    " OR required_task_id IN ({})",
                    placeholders(chunk.len() + 1, done.len())
                ));
            }
            sql.push_str(") RETURNING dependent_task_id");
            let mut q = sqlx::query(&sql);
            for id in &chunk {
                q = q.bind(id.as_str());
            }
            for id in &done {
                q = q.bind(id.as_str());
            }
            for dep in q.fetch_all(&mut *t.tx).await? {
                *newly_satisfied
                    .entry(dep.try_get("dependent_task_id")?)
                    .or_default() += 1;
            }
        }
        // Count the satisfied edges off each dependent in one statement per chunk,
        // then schedule those with nothing left to wait for.
        let dependents: Vec<(String, i64)> = newly_satisfied.into_iter().collect();
        let mut ready: Vec<String> = Vec::new();
        for chunk in dependents.chunks(200) {
            // Padded with ('', 0) rows, which match no task.
            let n = chunk.len().next_power_of_two();
            let values: Vec<String> = (0..n)
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "UPDATE tasks SET deps_unsatisfied = tasks.deps_unsatisfied - v.column2 \
                 FROM (VALUES {}) AS v WHERE tasks.task_id = v.column1 \
                 RETURNING tasks.task_id, tasks.deps_unsatisfied",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (dependent, k) in chunk {
                q = q.bind(dependent.as_str()).bind(*k);
            }
            for _ in chunk.len()..n {
                q = q.bind("").bind(0i64);
            }
            for row in q.fetch_all(&mut *t.tx).await? {
                if row.try_get::<i64, _>("deps_unsatisfied")? <= 0 {
                    ready.push(row.try_get("task_id")?);
                }
            }
        }
        let ready_ids: Vec<&str> = ready.iter().map(String::as_str).collect();
        let mut tasks = self.load_tasks_for_update(&mut t, &ready_ids).await?;
        // Oldest first (by `created`), so that a task of a coalescing key
        // supersedes the older ones that become pending with it.
        ready.sort_by_cached_key(|id| {
            let created = tasks
                .get(id)
                .and_then(|t| crate::time::parse_ms(&t.def.created));
            (created, id.clone())
        });
        for id in &ready {
            if let Some(task) = tasks.get_mut(id)
                && task.runs.is_empty()
                && task.deadline > now
            {
                self.start_first_run(&mut t, task, now).await?;
            }
        }
        for group in groups {
            let open = sqlx::query(
                "SELECT task_id FROM tasks WHERE task_group_id = $1 AND ever_resolved = 0 LIMIT 1",
            )
            .bind(&group)
            .fetch_optional(&mut *t.tx)
            .await?;
            if open.is_some() {
                continue;
            }
            let row = sqlx::query(
                "SELECT scheduler_id, expires, sealed FROM task_groups WHERE task_group_id = $1",
            )
            .bind(&group)
            .fetch_optional(&mut *t.tx)
            .await?;
            if let Some(row) = row {
                let g = crate::ops::groups::group_json(&group, &row)?;
                self.emit(&mut t, self.events.task_group("task-group-resolved", &g))
                    .await?;
            }
        }
        let ids = crate::db::padded(&ids);
        let sql = format!(
            "DELETE FROM resolutions WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(*id);
        }
        q.execute(&mut *t.tx).await?;
        self.commit(t).await?;
        Ok(ids.len())
    }

    /// One pass of claim expiry: running runs whose `takenUntil` passed (and whose task
    /// is still inside its deadline) become `exception/claim-expired`, retried if
    /// retries are left. Returns how many runs expired.
    pub async fn expire_claims_once(&self) -> Result<usize> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'running' AND taken_until <= $1 AND deadline > $1 \
                 ORDER BY taken_until LIMIT $2{}",
                self.db.skip_locked()
            );
            let rows = sqlx::query(&sql).bind(now).bind(BATCH).fetch_all(&mut *t.tx).await?;
            let n = rows.len();
            for row in rows {
                let mut task = task_from_row(&row)?;
                let run = task.runs.last_mut().expect("running task has a run");
                run.resolve(RunState::Exception, ReasonResolved::ClaimExpired, now);
                let run_id = run.run_id;
                task.taken_until = None;
                tracing::info!(task.id = %task.task_id, run.id = run_id, "claim expired");
                self.emit_resolution_with_retry(&mut t, &mut task, run_id, now).await?;
            }
            if n > 0 {
                self.commit(t).await?;
            }
            Ok(n)
        })
        .await
    }

    /// One pass of the deadline resolver: unresolved tasks whose deadline passed
    /// (plus the configured delay) resolve `exception/deadline-exceeded`, running ones
    /// included. Returns how many tasks it resolved.
    pub async fn expire_deadlines_once(&self) -> Result<usize> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let cutoff = now - self.cfg.deadline_delay_s as i64 * 1000;
            let mut t = self.txn().await?;
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE open = 1 AND deadline <= $1 ORDER BY deadline LIMIT $2{}",
                self.db.skip_locked()
            );
            let rows = sqlx::query(&sql).bind(cutoff).bind(BATCH).fetch_all(&mut *t.tx).await?;
            let n = rows.len();
            for row in rows {
                let mut task = task_from_row(&row)?;
                tracing::info!(task.id = %task.task_id, state = %task.state(), "deadline exceeded");
                let reason = ReasonResolved::DeadlineExceeded;
                self.resolve_unfinished(&mut t, &mut task, reason, now).await?;
            }
            if n > 0 {
                self.commit(t).await?;
            }
            Ok(n)
        })
        .await
    }

    /// Delete tasks, dependencies, groups, artifacts and worker records past their
    /// `expires`. Returns (up to [`EXPIRED_BLOB_BATCH`]) expired `s3` artifacts, whose
    /// rows stay until their bytes are removed and [`Queue::forget_artifacts`] is
    /// called (see [`Queue::expire_old_data`]).
    pub async fn expire_old_data_once(&self) -> Result<Vec<(String, i64, String)>> {
        let now = self.clock.now_ms();
        let mut t = self.txn().await?;
        let rows = sqlx::query(
            "SELECT task_id, run_id, name FROM artifacts WHERE expires < $1 AND storage_type = 's3' \
             ORDER BY expires LIMIT $2",
        )
        .bind(now)
        .bind(EXPIRED_BLOB_BATCH)
        .fetch_all(&mut *t.tx)
        .await?;
        let blobs = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("task_id")?,
                    r.try_get("run_id")?,
                    r.try_get("name")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        for sql in [
            "DELETE FROM artifacts WHERE expires < $1 AND storage_type <> 's3'",
            "DELETE FROM pending WHERE task_id IN (SELECT task_id FROM tasks WHERE expires < $1)",
            "DELETE FROM tasks WHERE expires < $1",
            "DELETE FROM task_dependencies WHERE expires < $1",
            "DELETE FROM task_groups WHERE expires < $1",
            "DELETE FROM worker_tasks WHERE (task_queue_id, worker_group, worker_id) IN \
             (SELECT task_queue_id, worker_group, worker_id FROM workers WHERE expires < $1)",
            "DELETE FROM workers WHERE expires < $1",
            "DELETE FROM task_queues WHERE expires < $1",
        ] {
            sqlx::query(sql).bind(now).execute(&mut *t.tx).await?;
        }
        self.commit(t).await?;
        Ok(blobs)
    }

    /// Delete the rows of expired `s3` artifacts whose bytes are gone.
    pub async fn forget_artifacts(&self, artifacts: &[(String, i64, String)]) -> Result<()> {
        let now = self.clock.now_ms();
        for (task_id, run_id, name) in artifacts {
            sqlx::query(
                "DELETE FROM artifacts WHERE task_id = $1 AND run_id = $2 AND name = $3 AND expires < $4",
            )
            .bind(task_id)
            .bind(*run_id)
            .bind(name)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        }
        Ok(())
    }

    /// One expiry pass: delete expired records ([`Queue::expire_old_data_once`]),
    /// remove the bytes of expired `s3` artifacts from `blobs`, then their rows. An
    /// artifact whose bytes could not be removed keeps its row and is tried again on
    /// the next pass. Returns how many artifacts' bytes were removed.
    pub async fn expire_old_data(&self, blobs: &crate::blob::BlobStore) -> Result<usize> {
        let mut removed = 0;
        loop {
            let due = self.expire_old_data_once().await?;
            let mut gone = Vec::with_capacity(due.len());
            for (task_id, run_id, name) in due.iter() {
                match blobs.remove(task_id, *run_id, name).await {
                    Ok(()) => gone.push((task_id.clone(), *run_id, name.clone())),
                    Err(e) => {
                        tracing::warn!(task.id = %task_id, run.id = run_id, artifact = %name, error = %e,
                            "removing an expired artifact's bytes failed; trying again next pass");
                    }
                }
            }
            self.forget_artifacts(&gone).await?;
            removed += gone.len();
            if (due.len() as i64) < EXPIRED_BLOB_BATCH || gone.len() < due.len() {
                return Ok(removed);
            }
        }
    }

    /// One pass of the outbox relay: publish a batch of messages and delete them once
    /// the bus confirmed them. On a bus error nothing is deleted, so the same messages
    /// go again later (at least once, never lost). Returns how many were published.
    pub async fn relay_outbox_once(&self, bus: &Bus) -> Result<usize> {
        let mut t = self.txn().await?;
        let sql = format!(
            "SELECT id, exchange, routing_key, cc, payload FROM outbox ORDER BY id LIMIT $1{}",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql).bind(BATCH).fetch_all(&mut *t.tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<i64, _>("id")?);
            batch.push(crate::feeds::message_from_row(row)?);
        }
        if self.db.backend == crate::db::Backend::Sqlite {
            // SQLite has a single connection: don't hold it while the broker confirms.
            t.tx.commit().await?;
            bus.publish(&batch)
                .await
                .map_err(|e| crate::error::ApiError::Internal(format!("publishing events: {e}")))?;
            self.delete_outbox(&ids).await?;
        } else {
            bus.publish(&batch)
                .await
                .map_err(|e| crate::error::ApiError::Internal(format!("publishing events: {e}")))?;
            let ids = crate::db::padded(&ids);
            let sql = format!(
                "DELETE FROM outbox WHERE id IN ({})",
                placeholders(1, ids.len())
            );
            let mut q = sqlx::query(&sql);
            for id in &ids {
                q = q.bind(*id);
            }
            q.execute(&mut *t.tx).await?;
            t.tx.commit().await?;
        }
        Ok(ids.len())
    }

    async fn delete_outbox(&self, ids: &[i64]) -> Result<()> {
        let sql = format!(
            "DELETE FROM outbox WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        q.execute(&self.db.pool).await?;
        Ok(())
    }

    /// Run every background loop until `stop` turns true.
    pub async fn run_background(
        self,
        bus: Bus,
        blobs: crate::blob::BlobStore,
        mut stop: watch::Receiver<bool>,
    ) {
        let idle = Duration::from_millis(self.cfg.resolver_interval_ms.max(10));
        let q = self.clone();
        let mut s = stop.clone();
        let deps = tokio::spawn(async move {
            loop {
                let notified = q.signals.resolutions.notified();
                match q.resolve_dependencies_once().await {
                    Ok(n) if n as i64 >= BATCH => continue,
                    Ok(n) if n > 0 => {
                        tokio::select! {
                            _ = tokio::time::sleep(GATHER) => continue,
                            _ = s.changed() => return,
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "dependency resolver failed"),
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = s.changed() => return,
                }
            }
        });
        let q = self.clone();
        let mut s = stop.clone();
        let relay = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let notified = q.signals.outbox.notified();
                // A publish waiting on an unreachable broker must not hold up shutdown:
                // dropping it leaves the rows in the outbox for the next start.
                let pass = tokio::select! {
                    r = q.relay_outbox_once(&bus) => r,
                    _ = s.changed() => return,
                };
                match pass {
                    Ok(n) if n > 0 => {
                        backoff = Duration::from_millis(100);
                        if (n as i64) < BATCH {
                            tokio::select! {
                                _ = tokio::time::sleep(GATHER) => {}
                                _ = s.changed() => return,
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "event relay failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = s.changed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = s.changed() => return,
                }
            }
        });
        let q = self.clone();
        let mut s = stop.clone();
        let timers = tokio::spawn(async move {
            loop {
                let mut busy = false;
                match q.expire_claims_once().await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => tracing::error!(error = %e, "claim resolver failed"),
                }
                match q.expire_deadlines_once().await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => tracing::error!(error = %e, "deadline resolver failed"),
                }
                if busy {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = s.changed() => return,
                }
            }
        });
        let q = self.clone();
        let mut s = stop.clone();
        let expiry = tokio::spawn(async move {
            let every = Duration::from_secs(q.cfg.expire_interval_s.max(1));
            loop {
                if let Err(e) = q.expire_old_data(&blobs).await {
                    tracing::error!(error = %e, "expiry failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = s.changed() => return,
                }
            }
        });
        let _ = stop.changed().await;
        for h in [deps, relay, timers, expiry] {
            let _ = h.await;
        }
    }
}
