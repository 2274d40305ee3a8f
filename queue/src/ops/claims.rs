//! The worker interface: claimWork, claimTask, reclaimTask and run resolution.

use crate::core::{Queue, Txn};
use crate::error::{ApiError, Result};
use crate::model::{Run, Task};
use crate::time::fmt_ms;
use serde_json::{Value, json};

/// Reasons `reportException` accepts.
pub const EXCEPTION_REASONS: [&str; 5] = [
    "worker-shutdown",
    "malformed-payload",
    "resource-unavailable",
    "internal-error",
    "intermittent-task",
];

/// How a worker resolves a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// `reportCompleted`.
    Completed,
    /// `reportFailed`.
    Failed,
    /// `reportException` with a reason.
    Exception(&'a str),
}

impl Resolution<'_> {
    /// The same resolution with its reason from [`EXCEPTION_REASONS`] (`None` for
    /// a reason not there), so it can wait in a batch.
    pub fn to_static(self) -> Option<Resolution<'static>> {
        Some(match self {
            Resolution::Completed => Resolution::Completed,
            Resolution::Failed => Resolution::Failed,
            Resolution::Exception(r) => {
                Resolution::Exception(EXCEPTION_REASONS.iter().find(|x| **x == r)?)
            }
        })
    }
}

impl Queue {
    /// Claim up to `count` pending runs of `task_queue_id`, highest priority first
    /// then oldest. Returns the claim objects (possibly none): the caller long-polls.
    pub async fn claim_pending(
        &self,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        count: i64,
    ) -> Result<Vec<Value>> {
        if self.batching() {
            return self
                .submit(crate::batch::ClaimCall {
                    task_queue_id: task_queue_id.to_string(),
                    worker_group: worker_group.to_string(),
                    worker_id: worker_id.to_string(),
                    count,
                })
                .await;
        }
        self.claim_pending_alone(task_queue_id, worker_group, worker_id, count)
            .await
    }

    /// [`Queue::claim_pending`] in a transaction of its own: a batch of one call.
    pub(crate) async fn claim_pending_alone(
        &self,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        count: i64,
    ) -> Result<Vec<Value>> {
        let call = [crate::batch::ClaimCall {
            task_queue_id: task_queue_id.to_string(),
            worker_group: worker_group.to_string(),
            worker_id: worker_id.to_string(),
            count,
        }];
        self.retrying(|| crate::batch::claim_alone(self, &call))
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
        run.state = "running".into();
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
            if latest && run.state == "pending" {
                self.dequeue_pending(&mut t, task_id, run_id).await?;
                let claim = self.start_run(&mut t, &mut task, worker_group, worker_id, now).await?;
                let tq = task.def.task_queue_id.clone();
                self.touch_worker(&mut t, &tq, worker_group, worker_id, &[(task_id.to_string(), run_id)], now).await?;
                self.commit(t).await?;
                return Ok(claim);
            }
            if latest
                && run.state == "running"
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
            if run_id as usize + 1 != n || run.state != "running" {
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

    /// `reportCompleted` / `reportFailed` / `reportException`.
    pub async fn resolve_run(
        &self,
        task_id: &str,
        run_id: i64,
        how: Resolution<'_>,
    ) -> Result<Value> {
        if let Some(how) = how.to_static()
            && self.batching()
        {
            return self
                .submit(crate::batch::ResolveCall {
                    task_id: task_id.to_string(),
                    run_id,
                    how,
                })
                .await;
        }
        self.resolve_run_alone(task_id, run_id, how).await
    }

    /// [`Queue::resolve_run`] in a transaction of its own.
    pub(crate) async fn resolve_run_alone(
        &self,
        task_id: &str,
        run_id: i64,
        how: Resolution<'_>,
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
        how: Resolution<'_>,
        now: i64,
    ) -> Result<Value> {
        let task_id = task.task_id.clone();
        let (state, reason) = match how {
            Resolution::Completed => ("completed", "completed"),
            Resolution::Failed => ("failed", "failed"),
            Resolution::Exception(r) => ("exception", r),
        };
        let n = task.runs.len();
        let run = task.runs.get_mut(run_id as usize).ok_or_else(|| {
            ApiError::NotFound(format!("Run {run_id} of task {task_id} not found"))
        })?;
        if run.state == state && run.reason_resolved.as_deref() == Some(reason) {
            return Ok(json!({"status": task.status()}));
        }
        if run_id as usize + 1 != n || run.state != "running" {
            return Err(ApiError::Conflict(format!(
                "Run {run_id} of task {task_id} is {} and can't be resolved {state}/{reason}",
                run.state
            )));
        }
        run.state = state.into();
        run.reason_resolved = Some(reason.into());
        run.resolved = Some(now);
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
        let reason = task.runs[run_id as usize]
            .reason_resolved
            .clone()
            .unwrap_or_default();
        let retry_as = match reason.as_str() {
            "worker-shutdown" | "claim-expired" => Some("retry"),
            "intermittent-task" => Some("task-retry"),
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
}
