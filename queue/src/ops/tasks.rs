//! Task lifecycle operations: create, schedule, rerun, cancel.

use crate::batch::Outcome;
use crate::core::{Queue, Txn};
use crate::db::{TASK_COLUMNS, placeholders, task_from_row};
use crate::error::{ApiError, Result};
use crate::model::{CreateCall, Run, Task, TaskDef, stored};
use crate::time::{fmt_ms, parse_ms};
use bbb_tcvalues::{ReasonCreated, ReasonResolved, RunState, TaskState};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};

/// After its deadline a task is immutable: 409 for `action` (schedule, rerun, cancel).
fn refuse_past_deadline(task: &Task, action: &str, now: i64) -> Result<()> {
    if task.deadline <= now {
        return Err(ApiError::Conflict(format!(
            "Task {} can't be {action} past its deadline {}",
            task.task_id,
            fmt_ms(task.deadline)
        )));
    }
    Ok(())
}

/// A new task from its definition, with run 0 pending when `scheduled`.
pub(crate) fn new_task(task_id: &str, def: &TaskDef, scheduled: bool, now: i64) -> Task {
    let mut task = Task {
        task_id: task_id.to_string(),
        def: def.clone(),
        deadline: parse_ms(&def.deadline).unwrap_or(now),
        expires: parse_ms(&def.expires).unwrap_or(now),
        retries_left: def.retries,
        runs: vec![],
        taken_until: None,
        ever_resolved: false,
    };
    if scheduled {
        task.runs
            .push(Run::pending(0, ReasonCreated::Scheduled, now));
    }
    task
}

/// Most runs a task may have (`rerunTask` refuses beyond).
pub const MAX_RUNS: usize = 50;
/// A task group outlives its last task's `expires` by at least this (upstream: 1 h).
pub(crate) const GROUP_EXPIRY_MARGIN_MS: i64 = 3_600_000;
/// ...and at most this much more, so its row is rewritten rarely.
pub(crate) const GROUP_EXPIRY_SLACK_MS: i64 = 24 * 3_600_000;

impl Queue {
    /// [`Queue::create_task`] in a transaction of its own.
    pub(crate) async fn create_task_alone(&self, task_id: &str, def: &TaskDef) -> Result<Value> {
        self.retrying(|| self.create_task_once(task_id, def)).await
    }

    async fn create_task_once(&self, task_id: &str, def: &TaskDef) -> Result<Value> {
        let now = self.clock.now_ms();
        let deadline = parse_ms(&def.deadline).unwrap_or(now);
        let expires = parse_ms(&def.expires).unwrap_or(now);
        let mut t = self.txn().await?;

        // The task group: same schedulerId for every task, closed once sealed.
        let group =
            sqlx::query("SELECT scheduler_id, sealed FROM task_groups WHERE task_group_id = $1")
                .bind(&def.task_group_id)
                .fetch_optional(&mut *t.tx)
                .await?;
        match group {
            Some(row) => {
                let sid: String = row.try_get("scheduler_id")?;
                if sid != def.scheduler_id {
                    return Err(ApiError::Conflict(format!(
                        "Task group {} already has schedulerId {sid}, not {}: every task in a group must have the same schedulerId",
                        def.task_group_id, def.scheduler_id
                    )));
                }
                if row.try_get::<Option<i64>, _>("sealed")?.is_some() {
                    // An identical replay of an existing task is still fine.
                    if let Some(existing) = self.load_task_for_update(&mut t, task_id).await?
                        && existing.def == *def
                    {
                        return Ok(json!({"status": existing.status()}));
                    }
                    return Err(ApiError::Conflict(format!(
                        "Task group {} is sealed: no more tasks can be added to it",
                        def.task_group_id
                    )));
                }
                // Only when the group would expire before this task: then push its
                // expiry a day further, so a stream of creates doesn't queue on the
                // group row (each new task expires a few ms after the previous one).
                sqlx::query(
                    "UPDATE task_groups SET expires = $3 WHERE task_group_id = $1 AND expires < $2",
                )
                .bind(&def.task_group_id)
                .bind(expires + GROUP_EXPIRY_MARGIN_MS)
                .bind(expires + GROUP_EXPIRY_MARGIN_MS + GROUP_EXPIRY_SLACK_MS)
                .execute(&mut *t.tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO task_groups (task_group_id, scheduler_id, expires) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&def.task_group_id)
                .bind(&def.scheduler_id)
                .bind(expires + GROUP_EXPIRY_MARGIN_MS + GROUP_EXPIRY_SLACK_MS)
                .execute(&mut *t.tx)
                .await?;
                // Another transaction may have created the group meanwhile, with
                // another schedulerId: the group as stored decides.
                let sid = self.group_scheduler_id(&mut t, &def.task_group_id).await?;
                if sid != def.scheduler_id {
                    return Err(ApiError::Conflict(format!(
                        "Task group {} already has schedulerId {sid}, not {}: every task in a group must have the same schedulerId",
                        def.task_group_id, def.scheduler_id
                    )));
                }
            }
        }

        // Dependencies: each must exist (or be the task itself) and outlive our deadline.
        // Locking them (PostgreSQL: FOR SHARE) orders us against their resolution.
        let mut states: HashMap<String, (i64, TaskState)> = HashMap::new();
        let others: Vec<&String> = def.dependencies.iter().filter(|d| *d != task_id).collect();
        for chunk in others.chunks(500) {
            let sql = format!(
                "SELECT task_id, expires, state FROM tasks WHERE task_id IN ({}){}",
                placeholders(1, chunk.len()),
                self.db.for_share()
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q.bind(d.as_str());
            }
            for row in q.fetch_all(&mut *t.tx).await? {
                let state = stored(&row.try_get::<String, _>("state")?)?;
                states.insert(row.try_get("task_id")?, (row.try_get("expires")?, state));
            }
        }
        let missing: Vec<&str> = others
            .iter()
            .filter(|d| !states.contains_key(d.as_str()))
            .map(|d| d.as_str())
            .collect();
        let expiring: Vec<&str> = others
            .iter()
            .filter(|d| states.get(d.as_str()).is_some_and(|(e, _)| *e < deadline))
            .map(|d| d.as_str())
            .collect();
        if !missing.is_empty() || !expiring.is_empty() {
            let mut msg = String::from("Task dependencies are not valid.");
            if !missing.is_empty() {
                msg.push_str(&format!(
                    "\n\nThese dependencies do not exist: {}",
                    missing.join(", ")
                ));
            }
            if !expiring.is_empty() {
                msg.push_str(&format!(
                    "\n\nThese dependencies expire before the deadline of this task: {}",
                    expiring.join(", ")
                ));
            }
            return Err(ApiError::Input(msg));
        }
        let satisfied = |state: TaskState| {
            state == TaskState::Completed || (def.requires == "all-resolved" && state.is_resolved())
        };
        let unsatisfied = def
            .dependencies
            .iter()
            .filter(|d| *d == task_id || !satisfied(states[d.as_str()].1))
            .count() as i64;

        // Insert, or compare with what is there.
        let task = new_task(task_id, def, unsatisfied == 0, now);
        let inserted = self
            .insert_tasks(&mut t, &[(&task, unsatisfied)])
            .await?
            .len();

        if inserted == 0 {
            let existing = self
                .load_task_for_update(&mut t, task_id)
                .await?
                .ok_or_else(|| ApiError::Internal("task vanished during createTask".into()))?;
            if existing.def != *def {
                return Err(ApiError::Conflict(format!(
                    "taskId {task_id} already used by another task: the new definition differs from the stored one"
                )));
            }
            // An identical replay: announce again, as upstream does; consumers tolerate duplicates.
            self.emit(&mut t, self.events.task_defined(&existing))
                .await?;
            if existing.state() == TaskState::Pending && existing.runs.len() == 1 {
                self.emit(&mut t, self.events.task_pending(&existing, 0))
                    .await?;
            }
            self.commit(t).await?;
            return Ok(json!({"status": existing.status()}));
        }

        for chunk in def.dependencies.chunks(400) {
            let mut sql = String::from(
                "INSERT INTO task_dependencies (required_task_id, dependent_task_id, requires, satisfied, expires) VALUES ",
            );
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, $1, $2, ${}, $3)", 4 + 2 * i, 5 + 2 * i))
                .collect();
            sql.push_str(&rows.join(", "));
            let mut q = sqlx::query(&sql)
                .bind(task_id)
                .bind(&def.requires)
                .bind(expires);
            for d in chunk {
                let sat = d != task_id && satisfied(states[d.as_str()].1);
                q = q.bind(d.as_str()).bind(sat as i64);
            }
            q.execute(&mut *t.tx).await?;
        }

        self.touch_task_queue(&mut t, &def.task_queue_id, now)
            .await?;
        self.emit(&mut t, self.events.task_defined(&task)).await?;
        if unsatisfied == 0 {
            self.first_run_pending(&mut t, &task, now).await?;
        }
        self.commit(t).await?;
        Ok(json!({"status": task.status()}))
    }

    /// `scheduleTask`: give an unscheduled task its first run, ignoring dependencies.
    pub async fn schedule_task(&self, task_id: &str) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            refuse_past_deadline(&task, "scheduled", now)?;
            if task.runs.is_empty() {
                self.start_first_run(&mut t, &mut task, now).await?;
            }
            self.commit(t).await?;
            Ok(json!({"status": task.status()}))
        })
        .await
    }

    /// Add run 0 (`scheduled`) to an unscheduled task within `t`.
    pub async fn start_first_run(&self, t: &mut Txn, task: &mut Task, now: i64) -> Result<()> {
        task.runs
            .push(Run::pending(0, ReasonCreated::Scheduled, now));
        self.save_task(t, task).await?;
        self.first_run_pending(t, task, now).await
    }

    /// `rerunTask`: a new run for a resolved (or unscheduled) task.
    pub async fn rerun_task(&self, task_id: &str) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            refuse_past_deadline(&task, "rerun", now)?;
            if matches!(task.state(), TaskState::Pending | TaskState::Running) {
                return Ok(json!({"status": task.status()}));
            }
            if task.runs.len() >= MAX_RUNS {
                return Err(ApiError::Conflict(format!(
                    "Maximum number of runs reached ({MAX_RUNS}) for task {task_id}"
                )));
            }
            let run_id = task.runs.len() as i64;
            task.retries_left = task.def.retries.min(MAX_RUNS as i64 - run_id - 1).max(0);
            task.runs
                .push(Run::pending(run_id, ReasonCreated::Rerun, now));
            task.taken_until = None;
            self.save_task(&mut t, &task).await?;
            self.enqueue_pending(&mut t, &task).await?;
            self.emit(&mut t, self.events.task_pending(&task, run_id))
                .await?;
            self.commit(t).await?;
            Ok(json!({"status": task.status()}))
        })
        .await
    }

    /// `cancelTask`: resolve the task `exception/canceled`.
    pub async fn cancel_task(&self, task_id: &str) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            refuse_past_deadline(&task, "cancelled", now)?;
            self.resolve_unfinished(&mut t, &mut task, ReasonResolved::Canceled, now)
                .await?;
            self.commit(t).await?;
            Ok(json!({"status": task.status()}))
        })
        .await
    }

    /// Resolve an unresolved task `exception/<reason>` (`canceled` or
    /// `deadline-exceeded`) within `t`. Returns whether anything changed.
    pub async fn resolve_unfinished(
        &self,
        t: &mut Txn,
        task: &mut Task,
        reason: ReasonResolved,
        now: i64,
    ) -> Result<bool> {
        match task.state() {
            TaskState::Unscheduled => {
                let run_id = task.runs.len() as i64;
                let mut run = Run::pending(run_id, ReasonCreated::Exception, now);
                run.resolve(RunState::Exception, reason, now);
                task.runs.push(run);
            }
            TaskState::Pending | TaskState::Running => {
                let run = task
                    .runs
                    .last_mut()
                    .expect("a pending or running task has a run");
                if run.state == RunState::Pending {
                    let id = run.run_id;
                    self.dequeue_pending(t, &task.task_id, id).await?;
                }
                let run = task.runs.last_mut().expect("run");
                run.resolve(RunState::Exception, reason, now);
                task.taken_until = None;
            }
            TaskState::Completed | TaskState::Failed | TaskState::Exception => return Ok(false),
        }
        self.record_resolution(t, task).await?;
        self.save_task(t, task).await?;
        let run_id = task.runs.len() as i64 - 1;
        self.emit(t, self.events.task_resolved(task, run_id))
            .await?;
        Ok(true)
    }

    /// Insert `(task, deps_unsatisfied)` rows (with the task's `metadata.name`
    /// in a column of its own, for the inspector's name filter), skipping task
    /// ids already stored; returns the ids inserted.
    pub(crate) async fn insert_tasks(
        &self,
        t: &mut Txn,
        tasks: &[(&Task, i64)],
    ) -> Result<std::collections::HashSet<String>> {
        let mut inserted = std::collections::HashSet::new();
        for chunk in tasks.chunks(100) {
            // Padded with empty rows (filtered out) to a power of two, so a few
            // statement texts serve every batch size.
            let n = chunk.len().next_power_of_two();
            let rows: Vec<String> = (0..n)
                .map(|r| {
                    let p: Vec<String> = (1..=14).map(|c| format!("${}", r * 14 + c)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO tasks (task_id, task_group_id, scheduler_id, project_id, task_queue_id, priority, \
                 deadline, expires, retries_left, state, open, taken_until, ever_resolved, deps_unsatisfied, \
                 definition, runs, name) SELECT v.column1, v.column2, v.column3, v.column4, v.column5, \
                 v.column6, v.column7, v.column8, v.column9, v.column10, 1, CAST(NULL AS BIGINT), 0, \
                 v.column11, v.column12, v.column13, v.column14 FROM (VALUES {}) AS v WHERE v.column1 <> '' \
                 ON CONFLICT DO NOTHING RETURNING task_id",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (task, unsatisfied) in chunk {
                let def = &task.def;
                q = q
                    .bind(task.task_id.clone())
                    .bind(def.task_group_id.clone())
                    .bind(def.scheduler_id.clone())
                    .bind(def.project_id.clone())
                    .bind(def.task_queue_id.clone())
                    .bind(def.priority.rank())
                    .bind(task.deadline)
                    .bind(task.expires)
                    .bind(def.retries)
                    .bind(task.state().to_string())
                    .bind(*unsatisfied)
                    .bind(serde_json::to_string(def)?)
                    .bind(serde_json::to_string(&task.runs)?)
                    .bind(def.metadata.name.clone());
            }
            for _ in chunk.len()..n {
                q = q
                    .bind("")
                    .bind("")
                    .bind("")
                    .bind("")
                    .bind("")
                    .bind(0i64)
                    .bind(0i64)
                    .bind(0i64)
                    .bind(0i64)
                    .bind("")
                    .bind(0i64)
                    .bind("")
                    .bind("")
                    .bind("");
            }
            for row in q.fetch_all(&mut *t.tx).await? {
                inserted.insert(row.try_get::<String, _>("task_id")?);
            }
        }
        Ok(inserted)
    }

    /// The stored schedulerId of a task group (which must exist), read with a
    /// share lock (PostgreSQL) so it can't change before this transaction ends.
    pub(crate) async fn group_scheduler_id(&self, t: &mut Txn, group: &str) -> Result<String> {
        let sql = format!(
            "SELECT scheduler_id FROM task_groups WHERE task_group_id = $1{}",
            self.db.for_share()
        );
        let row = sqlx::query(&sql).bind(group).fetch_one(&mut *t.tx).await?;
        Ok(row.try_get("scheduler_id")?)
    }

    /// Load and lock a task, or 404.
    pub async fn existing(&self, t: &mut Txn, task_id: &str) -> Result<Task> {
        self.load_task_for_update(t, task_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("Task {task_id} not found")))
    }

    /// `tasks`/`statuses`: load many tasks at once (unknown ids are skipped).
    pub async fn load_tasks(&self, task_ids: &[String]) -> Result<Vec<Task>> {
        let mut out = Vec::with_capacity(task_ids.len());
        for chunk in task_ids.chunks(500) {
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            let mut by_id: HashMap<String, Task> = HashMap::new();
            for row in q.fetch_all(&self.db.pool).await? {
                let task = task_from_row(&row)?;
                by_id.insert(task.task_id.clone(), task);
            }
            for id in chunk {
                if let Some(task) = by_id.remove(id) {
                    out.push(task);
                }
            }
        }
        Ok(out)
    }

    /// `listDependentTasks`: dependents of `task_id` after `after`, at most `limit`.
    pub async fn dependents(&self, task_id: &str, after: &str, limit: i64) -> Result<Vec<Task>> {
        let rows = sqlx::query(
            "SELECT dependent_task_id FROM task_dependencies WHERE required_task_id = $1 \
             AND dependent_task_id > $2 ORDER BY dependent_task_id LIMIT $3",
        )
        .bind(task_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("dependent_task_id"))
            .collect::<Result<_, _>>()?;
        self.load_tasks(&ids).await
    }

    /// New tasks without dependencies: their groups checked (or created) together,
    /// the tasks inserted in one statement, their runs made pending. A call the
    /// batch cannot take the common way is left to the one-call path.
    pub(crate) async fn create_batch(
        &self,
        t: &mut Txn,
        calls: &[CreateCall],
    ) -> Result<Vec<Outcome<Value>>> {
        let now = self.clock.now_ms();
        let mut out: Vec<Outcome<Value>> = calls.iter().map(|_| Outcome::Alone).collect();

        // The groups as stored: (schedulerId, sealed, expires).
        let group_ids: Vec<&str> = {
            let mut g: Vec<&str> = calls.iter().map(|c| c.def.task_group_id.as_str()).collect();
            g.sort_unstable();
            g.dedup();
            g
        };
        let mut groups: HashMap<String, (String, bool, i64)> = HashMap::new();
        for chunk in group_ids.chunks(500) {
            let chunk = crate::db::padded(chunk);
            let sql = format!(
                "SELECT task_group_id, scheduler_id, sealed, expires FROM task_groups WHERE task_group_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for g in &chunk {
                query = query.bind(*g);
            }
            for row in query.fetch_all(&mut *t.tx).await? {
                groups.insert(
                    row.try_get("task_group_id")?,
                    (
                        row.try_get("scheduler_id")?,
                        row.try_get::<Option<i64>, _>("sealed")?.is_some(),
                        row.try_get("expires")?,
                    ),
                );
            }
        }

        // Which calls the batch takes: new groups get created, groups about to expire
        // pushed further; anything unusual is answered alone.
        let mut seen = HashSet::new();
        let mut new_groups: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
        let mut longer: BTreeMap<&str, i64> = BTreeMap::new();
        let mut taken: Vec<(usize, Task)> = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if !seen.insert(c.task_id.as_str()) {
                continue;
            }
            let task = new_task(&c.task_id, &c.def, true, now);
            let gid = c.def.task_group_id.as_str();
            let needed = task.expires + GROUP_EXPIRY_MARGIN_MS;
            match groups.get(gid) {
                Some((sid, sealed, _)) if *sid != c.def.scheduler_id || *sealed => continue,
                Some((_, _, expires)) => {
                    if *expires < needed {
                        let e = longer.entry(gid).or_insert(needed);
                        *e = (*e).max(needed);
                    }
                }
                None => {
                    let e = new_groups
                        .entry(gid)
                        .or_insert((c.def.scheduler_id.as_str(), needed));
                    if e.0 != c.def.scheduler_id {
                        continue;
                    }
                    e.1 = e.1.max(needed);
                }
            }
            taken.push((i, task));
        }
        let new_groups: Vec<(&str, (&str, i64))> = new_groups.into_iter().collect();
        for chunk in new_groups.chunks(200) {
            let sql = format!(
                "INSERT INTO task_groups (task_group_id, scheduler_id, expires) VALUES {} ON CONFLICT DO NOTHING",
                (0..chunk.len())
                    .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (gid, (sid, needed)) in chunk {
                query = query
                    .bind(*gid)
                    .bind(*sid)
                    .bind(needed + GROUP_EXPIRY_SLACK_MS);
            }
            query.execute(&mut *t.tx).await?;
        }
        // A group created meanwhile by another transaction may have another
        // schedulerId: its calls go the one-call way, which answers 409.
        let mut lost: HashSet<&str> = HashSet::new();
        for (gid, (sid, _)) in &new_groups {
            if self.group_scheduler_id(t, gid).await? != *sid {
                lost.insert(gid);
            }
        }
        if !lost.is_empty() {
            taken.retain(|(_, task)| !lost.contains(task.def.task_group_id.as_str()));
        }
        for (gid, needed) in longer {
            sqlx::query(
                "UPDATE task_groups SET expires = $3 WHERE task_group_id = $1 AND expires < $2",
            )
            .bind(gid)
            .bind(needed)
            .bind(needed + GROUP_EXPIRY_SLACK_MS)
            .execute(&mut *t.tx)
            .await?;
        }

        let rows: Vec<(&Task, i64)> = taken.iter().map(|(_, task)| (task, 0)).collect();
        let inserted = self.insert_tasks(t, &rows).await?;
        let mut queues_touched = HashSet::new();
        let mut done = Vec::with_capacity(taken.len());
        for (i, task) in &taken {
            if !inserted.contains(&task.task_id) {
                // Stored already: the one-call path compares the definitions.
                continue;
            }
            if queues_touched.insert(task.def.task_queue_id.as_str()) {
                self.touch_task_queue(t, &task.def.task_queue_id, now)
                    .await?;
            }
            self.emit(t, self.events.task_defined(task)).await?;
            self.first_run_pending(t, task, now).await?;
            done.push(*i);
        }
        // The answers, once every task is pending: a task may have been
        // superseded by a later one of the same batch (then saved).
        for (i, task) in &taken {
            if !done.contains(i) {
                continue;
            }
            let saved = t.deferred_writes().and_then(|w| w.saves.get(&task.task_id));
            let status = saved.unwrap_or(task).status();
            out[*i] = Outcome::Done(Ok(json!({ "status": status })));
        }
        Ok(out)
    }
}
