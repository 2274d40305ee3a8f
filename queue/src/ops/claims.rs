//! The worker interface: claimWork, claimTask, reclaimTask and run resolution.

use crate::batch::Outcome;
use crate::core::{Queue, Txn};
use crate::db::{Backend, TASK_COLUMNS, task_from_row};
use crate::error::{ApiError, Result};
use crate::model::{ClaimCall, ResolveCall, Run, RunResolution, Task};
use crate::time::fmt_ms;
use bbb_tcvalues::{ReasonCreated, ReasonResolved, RunState};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};

impl Queue {
    /// [`Queue::claim_pending`] in a transaction of its own: a batch of one call.
    pub(crate) async fn claim_pending_alone(&self, call: &ClaimCall) -> Result<Vec<Value>> {
        self.retrying(|| async {
            let mut t = self.batch_txn().await?;
            let mut claims = self.claim_batch(&mut t, std::slice::from_ref(call)).await?;
            self.commit(t).await?;
            claims
                .pop()
                .ok_or_else(|| ApiError::Internal("a claim got no answer".into()))
        })
        .await
    }

    /// pending → running for the last run of `task`, within `t`; returns the claim object.
    pub(crate) async fn start_run(
        &self,
        t: &mut Txn,
        task: &mut Task,
        worker_group: &str,
        worker_id: &str,
        now: i64,
    ) -> Result<Value> {
        let taken_until = now + self.claim_timeout_ms();
        let run = task.runs.last_mut().expect("pending run");
        run.state = RunState::Running;
        run.worker_group = Some(worker_group.into());
        run.worker_id = Some(worker_id.into());
        run.taken_until = Some(taken_until);
        run.started = Some(now);
        let run_id = run.run_id;
        task.taken_until = Some(taken_until);
        self.save_task(t, task).await?;
        self.emit(t, self.events.task_running(task, run_id)).await?;
        Ok(json!({
            "status": task.status(),
            "runId": run_id,
            "workerGroup": worker_group,
            "workerId": worker_id,
            "takenUntil": fmt_ms(taken_until),
            "task": task.definition(),
            "credentials": self.task_credentials(task, run_id, worker_group, worker_id, taken_until)?,
        }))
    }

    /// Temporary credentials for one claimed run, as upstream issues them.
    pub fn task_credentials(
        &self,
        task: &Task,
        run_id: i64,
        worker_group: &str,
        worker_id: &str,
        taken_until: i64,
    ) -> Result<Value> {
        let client_id = format!(
            "task-client/{}/{run_id}/on/{worker_group}/{worker_id}/until/{}",
            task.task_id,
            taken_until / 1000
        );
        let mut scopes = vec![
            format!("queue:reclaim-task:{}/{run_id}", task.task_id),
            format!("queue:resolve-task:{}/{run_id}", task.task_id),
            format!("queue:create-artifact:{}/{run_id}", task.task_id),
        ];
        scopes.extend(task.def.scopes.iter().cloned());
        let creds = bbb_auth::create_temporary_credentials(
            &self.issuer.0,
            &self.issuer.1,
            Some(&client_id),
            &scopes,
            self.clock.now() - chrono::Duration::minutes(5),
            crate::time::from_ms(taken_until),
        )
        .map_err(|e| ApiError::Internal(format!("issuing task credentials: {e}")))?;
        Ok(json!({
            "clientId": creds.client_id,
            "accessToken": creds.access_token,
            "certificate": creds.certificate.unwrap_or_default(),
        }))
    }

    /// `claimTask` (deprecated upstream, kept): claim one given run. Idempotent for
    /// the same worker identity: claiming a run this worker already holds returns
    /// the claim again (with fresh credentials).
    pub async fn claim_task(
        &self,
        task_id: &str,
        run_id: i64,
        worker_group: &str,
        worker_id: &str,
    ) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            let run = task
                .runs
                .get(run_id as usize)
                .ok_or_else(|| ApiError::NotFound(format!("Run {run_id} of task {task_id} not found")))?
                .clone();
            if task.deadline <= now {
                return Err(ApiError::Conflict(format!("Task {task_id} has passed its deadline")));
            }
            let latest = run_id as usize + 1 == task.runs.len();
            if latest && run.state == RunState::Pending {
                self.dequeue_pending(&mut t, task_id, run_id).await?;
                let claim = self.start_run(&mut t, &mut task, worker_group, worker_id, now).await?;
                let tq = task.def.task_queue_id.clone();
                self.touch_worker(&mut t, &tq, worker_group, worker_id, &[(task_id.to_string(), run_id)], now).await?;
                self.commit(t).await?;
                return Ok(claim);
            }
            if latest
                && run.state == RunState::Running
                && run.worker_group.as_deref() == Some(worker_group)
                && run.worker_id.as_deref() == Some(worker_id)
            {
                let taken_until = run.taken_until.unwrap_or(now);
                return Ok(json!({
                    "status": task.status(),
                    "runId": run_id,
                    "workerGroup": worker_group,
                    "workerId": worker_id,
                    "takenUntil": fmt_ms(taken_until),
                    "task": task.definition(),
                    "credentials": self.task_credentials(&task, run_id, worker_group, worker_id, taken_until)?,
                }));
            }
            Err(ApiError::Conflict(format!(
                "Run {run_id} of task {task_id} is {} and can't be claimed",
                run.state
            )))
        })
        .await
    }

    /// `reclaimTask`: extend a running claim and issue new credentials.
    pub async fn reclaim_task(&self, task_id: &str, run_id: i64) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            let n = task.runs.len();
            let run = task.runs.get_mut(run_id as usize).ok_or_else(|| {
                ApiError::NotFound(format!("Run {run_id} of task {task_id} not found"))
            })?;
            if run_id as usize + 1 != n || run.state != RunState::Running {
                return Err(ApiError::Conflict(format!(
                    "Run {run_id} of task {task_id} is {} and can't be reclaimed",
                    run.state
                )));
            }
            if task.deadline <= now {
                return Err(ApiError::Conflict(format!(
                    "Task {task_id} has passed its deadline {}",
                    fmt_ms(task.deadline)
                )));
            }
            let taken_until = (now + self.claim_timeout_ms()).max(run.taken_until.unwrap_or(0));
            run.taken_until = Some(taken_until);
            let (wg, wid) = (
                run.worker_group.clone().unwrap_or_default(),
                run.worker_id.clone().unwrap_or_default(),
            );
            task.taken_until = Some(taken_until);
            self.save_task(&mut t, &task).await?;
            self.commit(t).await?;
            Ok(json!({
                "status": task.status(),
                "runId": run_id,
                "workerGroup": wg,
                "workerId": wid,
                "takenUntil": fmt_ms(taken_until),
                "credentials": self.task_credentials(&task, run_id, &wg, &wid, taken_until)?,
            }))
        })
        .await
    }

    /// [`Queue::resolve_run`] in a transaction of its own.
    pub(crate) async fn resolve_run_alone(
        &self,
        task_id: &str,
        run_id: i64,
        how: RunResolution,
    ) -> Result<Value> {
        self.retrying(|| async {
            let now = self.clock.now_ms();
            let mut t = self.txn().await?;
            let mut task = self.existing(&mut t, task_id).await?;
            let reply = self
                .apply_resolution(&mut t, &mut task, run_id, how, now)
                .await?;
            self.commit(t).await?;
            Ok(reply)
        })
        .await
    }

    /// Resolve run `run_id` of the locked `task` within `t`. Refuses (404, 409)
    /// before changing anything; a repeat of the same resolution answers again
    /// without changes.
    pub(crate) async fn apply_resolution(
        &self,
        t: &mut Txn,
        task: &mut Task,
        run_id: i64,
        how: RunResolution,
        now: i64,
    ) -> Result<Value> {
        let task_id = task.task_id.clone();
        let (state, reason) = how.outcome();
        let n = task.runs.len();
        let run = task.runs.get_mut(run_id as usize).ok_or_else(|| {
            ApiError::NotFound(format!("Run {run_id} of task {task_id} not found"))
        })?;
        if run.state == state && run.reason_resolved == Some(reason) {
            return Ok(json!({"status": task.status()}));
        }
        if run_id as usize + 1 != n || run.state != RunState::Running {
            return Err(ApiError::Conflict(format!(
                "Run {run_id} of task {task_id} is {} and can't be resolved {state}/{reason}",
                run.state
            )));
        }
        run.resolve(state, reason, now);
        task.taken_until = None;
        self.emit_resolution_with_retry(t, task, run_id, now)
            .await?;
        Ok(json!({"status": task.status()}))
    }

    /// After the last run was resolved: add a retry run when the reason calls for one
    /// and retries are left, else record the task as resolved. Saves and emits.
    pub async fn emit_resolution_with_retry(
        &self,
        t: &mut Txn,
        task: &mut Task,
        run_id: i64,
        now: i64,
    ) -> Result<()> {
        let retry_as = match task.runs[run_id as usize].reason_resolved {
            Some(ReasonResolved::WorkerShutdown | ReasonResolved::ClaimExpired) => {
                Some(ReasonCreated::Retry)
            }
            Some(ReasonResolved::IntermittentTask) => Some(ReasonCreated::TaskRetry),
            _ => None,
        };
        let retry = retry_as.filter(|_| task.retries_left > 0);
        if let Some(reason_created) = retry {
            task.retries_left -= 1;
            task.runs
                .push(Run::pending(run_id + 1, reason_created, now));
            self.save_task(t, task).await?;
            // The resolved run's message carries the status with the new pending run.
            self.emit(t, self.events.task_resolved(task, run_id))
                .await?;
            self.enqueue_pending(t, task).await?;
            self.emit(t, self.events.task_pending(task, run_id + 1))
                .await?;
        } else {
            self.record_resolution(t, task).await?;
            self.save_task(t, task).await?;
            self.emit(t, self.events.task_resolved(task, run_id))
                .await?;
        }
        Ok(())
    }

    /// Record that a task queue was used (created into or claimed from).
    pub async fn touch_task_queue(&self, t: &mut Txn, task_queue_id: &str, now: i64) -> Result<()> {
        if !self.throttled(t, task_queue_id.to_string(), now) {
            return Ok(());
        }
        let expires = now + 5 * 24 * 3600 * 1000;
        sqlx::query(
            "INSERT INTO task_queues (task_queue_id, expires, last_date_active, description, stability) \
             VALUES ($1, $2, $3, '', 'experimental') ON CONFLICT (task_queue_id) DO UPDATE \
             SET expires = $2, last_date_active = $3 WHERE task_queues.last_date_active < $4",
        )
        .bind(task_queue_id)
        .bind(expires)
        .bind(now)
        .bind(now - 60_000)
        .execute(&mut *t.tx)
        .await?;
        Ok(())
    }

    /// Claims for several workers: per task queue one statement takes as many pending
    /// runs as the calls want together (highest priority, then oldest), handed out to
    /// the calls in the order they came. One list of claims per call, in order.
    pub(crate) async fn claim_batch(
        &self,
        t: &mut Txn,
        calls: &[ClaimCall],
    ) -> Result<Vec<Vec<Value>>> {
        let now = self.clock.now_ms();
        let mut by_queue: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in calls.iter().enumerate() {
            by_queue
                .entry(c.task_queue_id.as_str())
                .or_default()
                .push(i);
        }
        let pg = self.db.backend == Backend::Postgres;
        let mut picked: BTreeMap<&str, Vec<(String, i64)>> = BTreeMap::new();
        let mut tasks: HashMap<String, Task> = HashMap::new();
        for (tq, idx) in &by_queue {
            let want: i64 = idx.iter().map(|i| calls[*i].count).sum();
            let take = format!(
                "DELETE FROM pending WHERE (task_id, run_id) IN (SELECT task_id, run_id FROM pending \
                 WHERE task_queue_id = $1 AND deadline > $2 ORDER BY priority DESC, inserted, task_id \
                 LIMIT $3{}) RETURNING task_id, run_id, priority, inserted",
                self.db.skip_locked()
            );
            // PostgreSQL takes the runs and locks their tasks in one statement.
            let sql = if pg {
                let columns: Vec<String> =
                    TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect();
                format!(
                    "WITH p AS ({take}) SELECT p.run_id, p.priority AS pending_priority, p.inserted, {} \
                     FROM p JOIN tasks t ON t.task_id = p.task_id ORDER BY t.task_id FOR UPDATE OF t",
                    columns.join(", ")
                )
            } else {
                take
            };
            let rows = sqlx::query(&sql)
                .bind(*tq)
                .bind(now)
                .bind(want)
                .fetch_all(&mut *t.tx)
                .await?;
            let priority = if pg { "pending_priority" } else { "priority" };
            let mut runs: Vec<(i64, i64, String, i64)> = Vec::with_capacity(rows.len());
            for r in &rows {
                runs.push((
                    -r.try_get::<i64, _>(priority)?,
                    r.try_get("inserted")?,
                    r.try_get("task_id")?,
                    r.try_get("run_id")?,
                ));
                if pg {
                    let task = task_from_row(r)?;
                    tasks.insert(task.task_id.clone(), task);
                }
            }
            runs.sort();
            picked.insert(
                tq,
                runs.into_iter().map(|(_, _, id, run)| (id, run)).collect(),
            );
        }
        if !pg {
            let ids: Vec<&str> = picked
                .values()
                .flatten()
                .map(|(id, _)| id.as_str())
                .collect();
            tasks = self.load_tasks_for_update(t, &ids).await?;
        }

        let mut claims: Vec<Vec<Value>> = calls.iter().map(|_| Vec::new()).collect();
        for (tq, idx) in &by_queue {
            let mut runs = picked.remove(tq).unwrap_or_default().into_iter();
            for i in idx {
                let c = &calls[*i];
                while (claims[*i].len() as i64) < c.count {
                    let Some((task_id, run_id)) = runs.next() else {
                        break;
                    };
                    let Some(task) = tasks.get_mut(&task_id) else {
                        continue;
                    };
                    let is_current = task
                        .last_run()
                        .is_some_and(|r| r.run_id == run_id && r.state == RunState::Pending);
                    if !is_current {
                        continue;
                    }
                    let claim = self
                        .start_run(t, task, &c.worker_group, &c.worker_id, now)
                        .await?;
                    claims[*i].push(claim);
                }
            }
        }
        for (c, got) in calls.iter().zip(&claims) {
            let runs: Vec<(String, i64)> = got
                .iter()
                .filter_map(|c| {
                    Some((
                        c["status"]["taskId"].as_str()?.to_string(),
                        c["runId"].as_i64()?,
                    ))
                })
                .collect();
            self.touch_worker(
                t,
                &c.task_queue_id,
                &c.worker_group,
                &c.worker_id,
                &runs,
                now,
            )
            .await?;
        }
        Ok(claims)
    }

    /// Resolutions of runs of different tasks, their tasks loaded and locked
    /// together. A refusal (404, 409) stays with its call; the same task twice
    /// in one batch is left to the one-call path.
    pub(crate) async fn resolve_batch(
        &self,
        t: &mut Txn,
        calls: &[ResolveCall],
    ) -> Result<Vec<Outcome<Value>>> {
        let now = self.clock.now_ms();
        let ids: Vec<&str> = calls.iter().map(|c| c.task_id.as_str()).collect();
        let mut tasks = self.load_tasks_for_update(t, &ids).await?;
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            if !seen.insert(c.task_id.as_str()) {
                out.push(Outcome::Alone);
                continue;
            }
            let Some(task) = tasks.get_mut(&c.task_id) else {
                out.push(Outcome::Done(Err(ApiError::NotFound(format!(
                    "Task {} not found",
                    c.task_id
                )))));
                continue;
            };
            // Refusals (404, 409) come before any change, so they stay with their call.
            match self.apply_resolution(t, task, c.run_id, c.how, now).await {
                Err(e @ (ApiError::NotFound(_) | ApiError::Conflict(_))) => {
                    out.push(Outcome::Done(Err(e)))
                }
                r => out.push(Outcome::Done(Ok(r?))),
            }
        }
        Ok(out)
    }
}
