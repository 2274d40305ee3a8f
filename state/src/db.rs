//! [`StateDb`]: the mapping table over SQLite or PostgreSQL through sqlx's `Any`
//! driver. Statements use `$n` placeholders (both engines accept them); row locks and
//! `SKIP LOCKED` are added on PostgreSQL only (SQLite has one connection, so its
//! writers are serial).

use crate::error::{Result, StateError};
use crate::model::{
    Change, Lease, MappingRow, NewSlot, RowResolution, RowState, SlotClaim, StartedBuild,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

pub use bbb_sqlstore::Backend;

/// The bridge's mapping database.
#[derive(Clone, Debug)]
pub struct StateDb {
    pool: AnyPool,
    backend: Backend,
}

/// The columns [`row_from`] reads, in table order.
const COLUMNS: &str = "id, task_id, run_id, state, build_request_id, build_id, build_number, master, deadline, \
     created, updated, taken_until, resolution, resolved_at, leased_until, leased_by";

/// [`StateDb::locked`]'s selection of the run itself.
const THIS_RUN: &str = "run_id = $2";
/// [`StateDb::locked`]'s selection of the latest run before it.
const PREVIOUS_RUN: &str = "run_id < $2 ORDER BY run_id DESC LIMIT 1";

/// The reclaim batch's selection (`$5` = now + window) and order.
const RECLAIM_FILTER: &str = "state = 'running' AND taken_until <= $5";
const RECLAIM_ORDER: &str = "taken_until, id";

fn row_from(r: &AnyRow) -> Result<MappingRow> {
    Ok(MappingRow {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        run_id: r.try_get("run_id")?,
        state: r.try_get::<String, _>("state")?.parse()?,
        build_request_id: r.try_get("build_request_id")?,
        build_id: r.try_get("build_id")?,
        build_number: r.try_get("build_number")?,
        master: r.try_get("master")?,
        deadline: r.try_get("deadline")?,
        created: r.try_get("created")?,
        updated: r.try_get("updated")?,
        taken_until: r.try_get("taken_until")?,
        resolution: r
            .try_get::<Option<String>, _>("resolution")?
            .map(|s| s.parse())
            .transpose()?,
        resolved_at: r.try_get("resolved_at")?,
        leased_until: r.try_get("leased_until")?,
        leased_by: r.try_get("leased_by")?,
    })
}

/// What a transition decides after reading the locked row (short-lived: one per
/// transition, so the size of `Write` does not matter).
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Write this row (every mutable column).
    Write(MappingRow),
    /// Already so; write nothing.
    Same,
    /// Forbidden; write nothing.
    Refuse,
}

/// Which rows a reflector batch selects, and in what order.
struct BatchQuery {
    filter: String,
    order: &'static str,
    binds: Vec<i64>,
}

impl StateDb {
    /// Open `url` (`sqlite://PATH`, creating the file if needed, or `postgres://...`).
    /// `max_connections` applies to PostgreSQL; SQLite always uses one connection.
    /// Does not migrate: call [`StateDb::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<StateDb> {
        let (pool, backend) = bbb_sqlstore::connect(url, max_connections)
            .await?
            .ok_or_else(|| StateError::UnsupportedUrl(bbb_secret::mask_url(url)))?;
        Ok(StateDb { pool, backend })
    }

    /// Apply pending migrations (`state/migrations/{sqlite,postgres}`); a no-op when
    /// they are all applied, so every instance may call it at start-up.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (for health checks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn for_update(&self) -> &'static str {
        self.backend.for_update()
    }

    fn skip_locked(&self) -> &'static str {
        self.backend.skip_locked()
    }

    // ----- reads ---------------------------------------------------------------------

    /// The row of (task, run), if any.
    pub async fn get(&self, task_id: &str, run_id: i64) -> Result<Option<MappingRow>> {
        let sql = format!("SELECT {COLUMNS} FROM mappings WHERE task_id = $1 AND run_id = $2");
        let row = sqlx::query(&sql)
            .bind(task_id)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_from).transpose()
    }

    /// Every row of a task, newest run first.
    pub async fn rows_for_task(&self, task_id: &str) -> Result<Vec<MappingRow>> {
        let sql = format!("SELECT {COLUMNS} FROM mappings WHERE task_id = $1 ORDER BY run_id DESC");
        let rows = sqlx::query(&sql)
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_from).collect()
    }

    /// Every row holding build request `brid`, newest run first. A RETRY carries one
    /// request across several runs of a task, so there may be more than one; the first
    /// is the run the request currently serves (see
    /// [`StateDb::current_for_build_request`]).
    pub async fn find_by_build_request(&self, brid: i64) -> Result<Vec<MappingRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mappings WHERE build_request_id = $1 \
             ORDER BY run_id DESC, id DESC"
        );
        let rows = sqlx::query(&sql).bind(brid).fetch_all(&self.pool).await?;
        rows.iter().map(row_from).collect()
    }

    /// The row of the newest run holding build request `brid`: the one Buildbot
    /// events about that request apply to.
    pub async fn current_for_build_request(&self, brid: i64) -> Result<Option<MappingRow>> {
        Ok(self.find_by_build_request(brid).await?.into_iter().next())
    }

    /// Row counts for every state (zeros included), in [`RowState::ALL`] order, for
    /// `/metrics`.
    pub async fn rows_by_state(&self) -> Result<Vec<(RowState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM mappings GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(RowState, i64)> = RowState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in &rows {
            let st: RowState = r.try_get::<String, _>("state")?.parse()?;
            let n: i64 = r.try_get("n")?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == st) {
                c.1 = n;
            }
        }
        Ok(counts)
    }

    // ----- TC listener -----------------------------------------------------------------

    /// Insert the row of a pending run before injecting anything (UNIQUE (task, run):
    /// of any number of concurrent calls for one run, exactly one gets a new row).
    ///
    /// - [`SlotClaim::New`]: the row is [`RowState::Pending`] and leased to
    ///   `slot.instance` for `inject_lease_ms`; inject, then [`StateDb::set_build_request`].
    /// - [`SlotClaim::CarriedOver`]: the task's newest earlier run is
    ///   [`RowState::Retrying`]; its build request was resubmitted by Buildbot and now
    ///   serves this run (recorded in the same transaction): inject nothing.
    /// - [`SlotClaim::Existing`]: a duplicate; inject nothing.
    pub async fn claim_slot(&self, slot: &NewSlot<'_>) -> Result<SlotClaim> {
        loop {
            let mut tx = self.pool.begin().await?;
            let sql = format!(
                "INSERT INTO mappings (task_id, run_id, state, master, deadline, created, updated, \
                 leased_until, leased_by) VALUES ($1, $2, 'pending', $3, $4, $5, $5, $6, $7) \
                 ON CONFLICT (task_id, run_id) DO NOTHING RETURNING {COLUMNS}"
            );
            let inserted = sqlx::query(&sql)
                .bind(slot.task_id)
                .bind(slot.run_id)
                .bind(slot.master)
                .bind(slot.deadline)
                .bind(slot.now)
                .bind(slot.now + slot.inject_lease_ms)
                .bind(slot.instance)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(inserted) = inserted else {
                tx.commit().await?;
                match self.get(slot.task_id, slot.run_id).await? {
                    Some(row) => {
                        tracing::debug!(task.id = %slot.task_id, run.id = slot.run_id,
                            state = %row.state, "mapping row already present");
                        return Ok(SlotClaim::Existing(row));
                    }
                    // Deleted between the two statements: try again.
                    None => continue,
                }
            };
            let row = row_from(&inserted)?;
            let previous = self
                .locked(&mut tx, PREVIOUS_RUN, slot.task_id, slot.run_id)
                .await?;
            let carry = previous.as_ref().and_then(|p| {
                (p.state == RowState::Retrying)
                    .then_some(p.build_request_id)
                    .flatten()
            });
            let (Some(brid), Some(prev)) = (carry, previous.clone()) else {
                tx.commit().await?;
                tracing::debug!(task.id = %slot.task_id, run.id = slot.run_id, "mapping row inserted");
                return Ok(SlotClaim::New { row, previous });
            };
            let row = self
                .write(
                    &mut tx,
                    MappingRow {
                        state: RowState::Requested,
                        build_request_id: Some(brid),
                        leased_until: 0,
                        leased_by: None,
                        updated: slot.now,
                        ..row
                    },
                )
                .await?;
            let prev = self.write(&mut tx, carried_over(prev, slot.now)).await?;
            tx.commit().await?;
            tracing::info!(task.id = %slot.task_id, run.id = slot.run_id, build_request.id = brid,
                previous_run.id = prev.run_id, "build request carried over to the new run");
            return Ok(SlotClaim::CarriedOver {
                row,
                previous: prev,
            });
        }
    }

    /// Record the build request injected for (task, run): [`RowState::Pending`] →
    /// [`RowState::Requested`], and free the inserter's lease. Applied only if no
    /// request is recorded yet; the same `brid` again is [`Change::Unchanged`]; a
    /// different one (or a run resolved before any was recorded) is [`Change::Refused`]
    /// and the caller must cancel the request it injected.
    pub async fn set_build_request(
        &self,
        task_id: &str,
        run_id: i64,
        brid: i64,
        now: i64,
    ) -> Result<Change> {
        self.transition(
            "set build request",
            task_id,
            run_id,
            Some(brid),
            |row| match row.build_request_id {
                Some(b) if b == brid => Step::Same,
                Some(_) => Step::Refuse,
                None if row.state == RowState::Pending => Step::Write(MappingRow {
                    state: RowState::Requested,
                    build_request_id: Some(brid),
                    leased_until: 0,
                    leased_by: None,
                    updated: now,
                    ..row.clone()
                }),
                None => Step::Refuse,
            },
        )
        .await
    }

    /// Give run `new_run_id` of a task the build request `brid` of an earlier run
    /// (a rerun while the request still waits, or the Buildbot listener recording a
    /// RETRY's new run): inserts the row as [`RowState::Requested`] (master and deadline
    /// copied from the earlier run), or fills a [`RowState::Pending`] row that has no
    /// request yet. The earlier run's row, if still active, becomes
    /// [`RowState::Resolved`] / [`RowResolution::CarriedOver`]. Same `brid` already there:
    /// [`Change::Unchanged`]; another request recorded: [`Change::Refused`]. Fails with
    /// [`StateError::NotCarried`] if no earlier run of the task holds `brid`.
    pub async fn reuse_for_rerun(
        &self,
        task_id: &str,
        new_run_id: i64,
        brid: i64,
        now: i64,
    ) -> Result<Change> {
        loop {
            if let Some(change) = self
                .reuse_for_rerun_once(task_id, new_run_id, brid, now)
                .await?
            {
                log_change(
                    &change,
                    "reuse build request",
                    task_id,
                    new_run_id,
                    Some(brid),
                );
                return Ok(change);
            }
        }
    }

    /// One attempt; `None` if the new run's row vanished between the statements. Locks
    /// the new run's row before the earlier run's, like [`StateDb::claim_slot`], so the
    /// two never deadlock.
    async fn reuse_for_rerun_once(
        &self,
        task_id: &str,
        new_run_id: i64,
        brid: i64,
        now: i64,
    ) -> Result<Option<Change>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM mappings WHERE task_id = $1 AND run_id < $2 \
             AND build_request_id = $3 ORDER BY run_id DESC LIMIT 1"
        );
        let prev = sqlx::query(&sql)
            .bind(task_id)
            .bind(new_run_id)
            .bind(brid)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(prev) = prev.as_ref().map(row_from).transpose()? else {
            tx.rollback().await?;
            return Err(StateError::NotCarried {
                task_id: task_id.to_string(),
                build_request_id: brid,
            });
        };
        let sql = format!(
            "INSERT INTO mappings (task_id, run_id, state, build_request_id, master, deadline, \
             created, updated) VALUES ($1, $2, 'requested', $3, $4, $5, $6, $6) \
             ON CONFLICT (task_id, run_id) DO NOTHING RETURNING {COLUMNS}"
        );
        let inserted = sqlx::query(&sql)
            .bind(task_id)
            .bind(new_run_id)
            .bind(brid)
            .bind(&prev.master)
            .bind(prev.deadline)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let change = match inserted {
            Some(r) => Change::Applied(row_from(&r)?),
            None => {
                let Some(row) = self.locked(&mut tx, THIS_RUN, task_id, new_run_id).await? else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                match row.build_request_id {
                    Some(b) if b == brid => Change::Unchanged(row),
                    None if row.state == RowState::Pending => {
                        let row = MappingRow {
                            state: RowState::Requested,
                            build_request_id: Some(brid),
                            leased_until: 0,
                            leased_by: None,
                            updated: now,
                            ..row
                        };
                        Change::Applied(self.write(&mut tx, row).await?)
                    }
                    _ => Change::Refused(row),
                }
            }
        };
        if change.holds() {
            // Re-read the earlier run under lock: it may have moved since the first read.
            let sql = format!(
                "SELECT {COLUMNS} FROM mappings WHERE id = $1{}",
                self.for_update()
            );
            let prev = sqlx::query(&sql)
                .bind(prev.id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(prev) = prev.as_ref().map(row_from).transpose()?
                && prev.state.is_active()
                && prev.build_request_id == Some(brid)
            {
                self.write(&mut tx, carried_over(prev, now)).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(change))
    }

    // ----- Buildbot listener -------------------------------------------------------------

    /// A build started for (task, run): [`RowState::Requested`] → [`RowState::Running`]
    /// with the build's id and number (when the event knew them) and the claim's
    /// `taken_until`. A duplicate keeps the first build id, fills a number the row
    /// lacked and keeps the later `taken_until` ([`Change::Unchanged`] if nothing
    /// moves). Refused for a row with no build request, one retrying or resolved,
    /// and a running row that records *another* build: a run is served by one
    /// build, and which one is the caller's decision on the row as it is now (the
    /// caller's copy was read before another action recorded that build).
    pub async fn mark_started(
        &self,
        task_id: &str,
        run_id: i64,
        build: StartedBuild,
        taken_until: i64,
        now: i64,
    ) -> Result<Change> {
        self.transition("mark started", task_id, run_id, None, |row| {
            match row.state {
                RowState::Requested => Step::Write(MappingRow {
                    state: RowState::Running,
                    build_id: row.build_id.or(build.build_id),
                    build_number: row.build_number.max(build.number),
                    taken_until: Some(taken_until),
                    updated: now,
                    ..row.clone()
                }),
                RowState::Running
                    if row.build_number.is_some()
                        && build.number.is_some()
                        && row.build_number != build.number =>
                {
                    Step::Refuse
                }
                RowState::Running => {
                    let newer = row.taken_until.is_none_or(|t| t < taken_until);
                    let number_learnt = row.build_number.is_none() && build.number.is_some();
                    if newer
                        || number_learnt
                        || (row.build_id.is_none() && build.build_id.is_some())
                    {
                        Step::Write(MappingRow {
                            build_id: row.build_id.or(build.build_id),
                            build_number: row.build_number.or(build.number),
                            taken_until: row.taken_until.max(Some(taken_until)),
                            updated: now,
                            ..row.clone()
                        })
                    } else {
                        Step::Same
                    }
                }
                _ => Step::Refuse,
            }
        })
        .await
    }

    /// Store a reclaim's `taken_until` on a [`RowState::Running`] row. It never moves
    /// back: an older value is [`Change::Unchanged`]. Refused in any other state (a
    /// retried run must not be reclaimed while its next run waits).
    pub async fn update_taken_until(
        &self,
        task_id: &str,
        run_id: i64,
        taken_until: i64,
        now: i64,
    ) -> Result<Change> {
        self.transition(
            "update takenUntil",
            task_id,
            run_id,
            None,
            |row| match row.state {
                RowState::Running if row.taken_until.is_none_or(|t| t < taken_until) => {
                    Step::Write(MappingRow {
                        taken_until: Some(taken_until),
                        updated: now,
                        ..row.clone()
                    })
                }
                RowState::Running => Step::Same,
                _ => Step::Refuse,
            },
        )
        .await
    }

    /// The build ended RETRY: mark the row [`RowState::Retrying`] *before* resolving
    /// the run `exception/worker-shutdown`, so that when the queue's new run arrives,
    /// [`StateDb::claim_slot`] hands it the same build request instead of injecting a
    /// second one. From [`RowState::Requested`] or [`RowState::Running`]; `taken_until`
    /// is cleared. `served_by`, the number of the build that ended RETRY, becomes the
    /// row's build number when it differs (the row had recorded a later build of the
    /// request, whose start was applied first): the row then names the build that
    /// served its run, which later copies of that build's events are checked
    /// against. Refused without a build request or once resolved.
    pub async fn mark_retrying(
        &self,
        task_id: &str,
        run_id: i64,
        served_by: Option<i64>,
        now: i64,
    ) -> Result<Change> {
        self.transition("mark retrying", task_id, run_id, None, |row| {
            match row.state {
                RowState::Requested | RowState::Running if row.build_request_id.is_some() => {
                    let other_build = served_by.is_some() && served_by != row.build_number;
                    Step::Write(MappingRow {
                        state: RowState::Retrying,
                        build_number: served_by.or(row.build_number),
                        build_id: if other_build { None } else { row.build_id },
                        taken_until: None,
                        updated: now,
                        ..row.clone()
                    })
                }
                RowState::Retrying => Step::Same,
                _ => Step::Refuse,
            }
        })
        .await
    }

    /// The run is resolved (any active state → [`RowState::Resolved`]). The row is kept
    /// until [`StateDb::purge_resolved_before`], so late duplicate events find it and do
    /// nothing. Resolving again is [`Change::Unchanged`] and keeps the first resolution.
    pub async fn mark_resolved(
        &self,
        task_id: &str,
        run_id: i64,
        resolution: RowResolution,
        now: i64,
    ) -> Result<Change> {
        self.transition("mark resolved", task_id, run_id, None, |row| {
            if row.state == RowState::Resolved {
                Step::Same
            } else {
                Step::Write(resolved(row.clone(), resolution, now))
            }
        })
        .await
    }

    // ----- removal -----------------------------------------------------------------------

    /// Delete the row of (task, run). Returns whether there was one.
    pub async fn delete(&self, task_id: &str, run_id: i64) -> Result<bool> {
        let n = sqlx::query("DELETE FROM mappings WHERE task_id = $1 AND run_id = $2")
            .bind(task_id)
            .bind(run_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Delete every row of a task (the queue no longer knows it). Returns how many.
    pub async fn forget_task(&self, task_id: &str) -> Result<u64> {
        let n = sqlx::query("DELETE FROM mappings WHERE task_id = $1")
            .bind(task_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n > 0 {
            tracing::info!(task.id = %task_id, rows = n, "mapping rows of an unknown task dropped");
        }
        Ok(n)
    }

    /// Delete up to `limit` [`RowState::Resolved`] rows resolved before `cutoff` (ms),
    /// oldest first. Returns how many; call until it returns less than `limit`.
    pub async fn purge_resolved_before(&self, cutoff: i64, limit: i64) -> Result<u64> {
        let sql = format!(
            "DELETE FROM mappings WHERE id IN (SELECT id FROM mappings WHERE state = 'resolved' \
             AND resolved_at < $1 ORDER BY resolved_at, id LIMIT $2{})",
            self.skip_locked()
        );
        let purged = sqlx::query(&sql)
            .bind(cutoff)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(purged.rows_affected())
    }

    // ----- reflector batches ---------------------------------------------------------------

    /// Lease up to `lease.limit` [`RowState::Running`] rows whose `taken_until` falls
    /// before `lease.now + window_ms`, soonest first: the runs to reclaim.
    pub async fn take_batch_needing_reclaim(
        &self,
        lease: &Lease<'_>,
        window_ms: i64,
    ) -> Result<Vec<MappingRow>> {
        let q = BatchQuery {
            filter: RECLAIM_FILTER.into(),
            order: RECLAIM_ORDER,
            binds: vec![lease.now + window_ms],
        };
        let mut rows = self.take(lease, q).await?;
        rows.sort_by_key(|r| (r.taken_until, r.id));
        Ok(rows)
    }

    /// Lease up to `lease.limit` [`RowState::Pending`] rows (no build request) not
    /// changed since `older_than` (ms) and whose inserter's lease ran out: half-done
    /// rows to re-drive (inject, or resolve if the run is no longer pending).
    pub async fn take_batch_without_build_request(
        &self,
        lease: &Lease<'_>,
        older_than: i64,
    ) -> Result<Vec<MappingRow>> {
        self.take_batch_in_state(lease, RowState::Pending, older_than)
            .await
    }

    /// Lease up to `lease.limit` rows in `state` not changed since `older_than` (ms),
    /// least recently leased first. With `older_than = now` and an unreleased lease of
    /// the check interval, this walks every row of a state once per interval across all
    /// reflectors: [`RowState::Requested`] rows for requests cancelled on the Buildbot
    /// side and missed started events, [`RowState::Retrying`] rows whose resolution
    /// never finished, [`RowState::Running`] rows for tasks the queue no longer knows.
    pub async fn take_batch_in_state(
        &self,
        lease: &Lease<'_>,
        state: RowState,
        older_than: i64,
    ) -> Result<Vec<MappingRow>> {
        let q = BatchQuery {
            filter: format!("state = '{}' AND updated <= $5", state.as_str()),
            order: "leased_until, id",
            binds: vec![older_than],
        };
        let mut rows = self.take(lease, q).await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Lease up to `lease.limit` active rows with a build request whose task deadline is
    /// at or before `lease.now`: builds to stop and rows to resolve.
    pub async fn take_batch_past_deadline(&self, lease: &Lease<'_>) -> Result<Vec<MappingRow>> {
        let q = BatchQuery {
            filter: "state IN ('requested', 'running', 'retrying') AND deadline <= $5".into(),
            order: "deadline, id",
            binds: vec![lease.now],
        };
        let mut rows = self.take(lease, q).await?;
        rows.sort_by_key(|r| (r.deadline, r.id));
        Ok(rows)
    }

    /// Give leases back early (the rows become available to every reflector again).
    /// Only leases held by `owner` are released. Returns how many.
    pub async fn release_leases(&self, ids: &[i64], owner: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = (2..ids.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("UPDATE mappings SET leased_until = 0 WHERE leased_by = $1 AND id IN ({list})");
        let mut q = sqlx::query(&sql).bind(owner);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// One statement: lease the selected rows whose lease is free. On PostgreSQL the
    /// inner `SELECT … FOR UPDATE SKIP LOCKED` makes concurrent reflectors take disjoint
    /// rows; a row leased by a committed batch fails `leased_until <= now` for the others.
    async fn take(&self, lease: &Lease<'_>, q: BatchQuery) -> Result<Vec<MappingRow>> {
        let sql = format!(
            "UPDATE mappings SET leased_until = $1, leased_by = $2 WHERE id IN \
             (SELECT id FROM mappings WHERE {} AND leased_until <= $3 ORDER BY {} LIMIT $4{}) \
             RETURNING {COLUMNS}",
            q.filter,
            q.order,
            self.skip_locked()
        );
        let mut query = sqlx::query(&sql)
            .bind(lease.now + lease.duration_ms)
            .bind(lease.owner)
            .bind(lease.now)
            .bind(lease.limit);
        for b in q.binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(row_from).collect()
    }

    /// The query plan of [`StateDb::take_batch_needing_reclaim`]'s row selection for
    /// `lease` and `window_ms`, one line per plan node (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL): shows which index serves it.
    pub async fn explain_reclaim_selection(
        &self,
        lease: &Lease<'_>,
        window_ms: i64,
    ) -> Result<Vec<String>> {
        let select = format!(
            "SELECT id FROM mappings WHERE {} AND leased_until <= {} ORDER BY {} LIMIT {}",
            RECLAIM_FILTER.replace("$5", &(lease.now + window_ms).to_string()),
            lease.now,
            RECLAIM_ORDER,
            lease.limit
        );
        let rows = match self.backend {
            Backend::Sqlite => {
                sqlx::query(&format!("EXPLAIN QUERY PLAN {select}"))
                    .fetch_all(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::query(&format!("EXPLAIN {select}"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let column = match self.backend {
            Backend::Sqlite => "detail",
            Backend::Postgres => "QUERY PLAN",
        };
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(column)?))
            .collect()
    }

    // ----- helpers -------------------------------------------------------------------------

    /// The first row of the task (`$1`) that `run` selects by the run id
    /// (`$2`: [`THIS_RUN`] or [`PREVIOUS_RUN`]), locked.
    async fn locked(
        &self,
        tx: &mut Transaction<'static, Any>,
        run: &str,
        task_id: &str,
        run_id: i64,
    ) -> Result<Option<MappingRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mappings WHERE task_id = $1 AND {run}{}",
            self.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(task_id)
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(row_from).transpose()
    }

    /// Write every mutable column of `row` (whose lock the transaction holds).
    async fn write(
        &self,
        tx: &mut Transaction<'static, Any>,
        row: MappingRow,
    ) -> Result<MappingRow> {
        sqlx::query(
            "UPDATE mappings SET state = $2, build_request_id = $3, build_id = $4, \
             updated = $5, taken_until = $6, resolution = $7, resolved_at = $8, \
             leased_until = $9, leased_by = $10, build_number = $11 WHERE id = $1",
        )
        .bind(row.id)
        .bind(row.state.as_str())
        .bind(row.build_request_id)
        .bind(row.build_id)
        .bind(row.updated)
        .bind(row.taken_until)
        .bind(row.resolution.map(|r| r.as_str()))
        .bind(row.resolved_at)
        .bind(row.leased_until)
        .bind(row.leased_by.clone())
        .bind(row.build_number)
        .execute(&mut **tx)
        .await?;
        Ok(row)
    }

    /// Read (task, run) under lock, let `decide` pick the step, write, commit.
    /// Locks the row of (task, run), lets `decide` what becomes of it, and
    /// logs the outcome as `what` (with `brid`, the build request the caller
    /// speaks of, if any).
    async fn transition(
        &self,
        what: &str,
        task_id: &str,
        run_id: i64,
        brid: Option<i64>,
        decide: impl FnOnce(&MappingRow) -> Step,
    ) -> Result<Change> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = self.locked(&mut tx, THIS_RUN, task_id, run_id).await? else {
            tx.rollback().await?;
            return Ok(Change::NotFound);
        };
        let change = match decide(&row) {
            Step::Write(new) => Change::Applied(self.write(&mut tx, new).await?),
            Step::Same => Change::Unchanged(row),
            Step::Refuse => Change::Refused(row),
        };
        tx.commit().await?;
        log_change(&change, what, task_id, run_id, brid);
        Ok(change)
    }
}

fn resolved(row: MappingRow, resolution: RowResolution, now: i64) -> MappingRow {
    MappingRow {
        state: RowState::Resolved,
        resolution: Some(resolution),
        resolved_at: Some(now),
        taken_until: None,
        leased_until: 0,
        updated: now,
        ..row
    }
}

fn carried_over(row: MappingRow, now: i64) -> MappingRow {
    resolved(row, RowResolution::CarriedOver, now)
}

fn log_change(change: &Change, what: &str, task_id: &str, run_id: i64, brid: Option<i64>) {
    match change {
        Change::Applied(r) => tracing::debug!(task.id = %task_id, run.id = run_id,
            build_request.id = r.build_request_id.or(brid), state = %r.state, "{what}: applied"),
        Change::Unchanged(r) => tracing::debug!(task.id = %task_id, run.id = run_id,
            build_request.id = r.build_request_id.or(brid), state = %r.state, "{what}: already so"),
        Change::Refused(r) => tracing::warn!(task.id = %task_id, run.id = run_id,
            build_request.id = brid, recorded_build_request = r.build_request_id,
            state = %r.state, "{what}: refused by the row's state"),
        Change::NotFound => {
            tracing::debug!(task.id = %task_id, run.id = run_id, build_request.id = brid,
                "{what}: no such row")
        }
    }
}
