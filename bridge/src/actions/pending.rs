//! The TC listener's action on a pending run: insert its row, inject (or
//! recover, reuse, carry over) its build request, or refuse the task.

use bbb_buildbot::{BuildRequestId, CancelOutcome, LegacyError, RequestState, StopTarget};
use bbb_state::{Change, MappingRow, NewSlot, RowResolution, RowState, SlotClaim};
use bbb_tcvalues::ExceptionReason;
use serde_json::Value;
use tracing::{info, warn};

use super::{Bridge, BridgeError, BridgeResult, Outcome};
use crate::payload::{build_request_spec, parse_payload, task_scopes};
use crate::queue_client::{RunInfo, TaskStatus};

impl Bridge {
    /// A run of a task on the bridge's queue became pending: insert its row,
    /// then inject its build request (or reuse the previous run's request if it
    /// still waits, or carry over a RETRY's request). A task the bridge cannot
    /// run is claimed and resolved `exception/malformed-payload` with the reason
    /// in its log. `status` is the message's task status, if it carried one.
    pub async fn task_pending(
        &self,
        task_id: &str,
        run_id: u32,
        status: Option<TaskStatus>,
    ) -> BridgeResult<Outcome> {
        let task = match self.queue.task(task_id).await {
            Ok(task) => task,
            Err(e) if e.is_not_found() => return Ok(Outcome::UnknownTask),
            Err(e) => return Err(e.into()),
        };
        let queue_id = task
            .get("taskQueueId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "{}/{}",
                    task["provisionerId"].as_str().unwrap_or_default(),
                    task["workerType"].as_str().unwrap_or_default()
                )
            });
        if queue_id != self.settings.task_queue_id {
            return Ok(Outcome::OtherQueue);
        }
        let status = match status.filter(|s| s.run(run_id).is_some()) {
            Some(status) => status,
            None => self.queue.status(task_id).await?,
        };
        let Some(run) = status.run(run_id).cloned() else {
            return Err(BridgeError::BadMessage(format!(
                "task {task_id} has no run {run_id}"
            )));
        };
        let payload = &task["payload"];
        if let Some(name) = payload.get("buildername").and_then(Value::as_str)
            && self.settings.rules.is_ignored(name)
        {
            info!(
                task.id = task_id,
                run.id = run_id,
                builder = name,
                "ignored builder"
            );
            return Ok(Outcome::Ignored);
        }
        let parsed = match parse_payload(payload) {
            Ok(parsed) => parsed,
            Err(reason) => return self.refuse(task_id, run_id, &status, &reason).await,
        };
        if !self
            .settings
            .rules
            .is_authorized(&parsed.buildername, &task_scopes(&task))
        {
            let reason = format!(
                "builder {:?} is restricted: the task needs the scope \
                 buildbot-bridge:builder-name:{} (or project:releng:buildbot-bridge:builder-name:{})",
                parsed.buildername, parsed.buildername, parsed.buildername
            );
            return self.refuse(task_id, run_id, &status, &reason).await;
        }
        if !self.master.accepts_builder(&parsed.buildername).await? {
            let reason = format!(
                "builder {:?} does not exist on the Buildbot master",
                parsed.buildername
            );
            return self.refuse(task_id, run_id, &status, &reason).await;
        }
        let now = self.now();
        let claim = self
            .state
            .claim_slot(&NewSlot {
                task_id,
                run_id: i64::from(run_id),
                master: &self.settings.master,
                deadline: status.deadline,
                instance: &self.settings.instance,
                now,
                inject_lease_ms: self.settings.inject_lease_ms,
            })
            .await?;
        match claim {
            SlotClaim::CarriedOver { row, .. } => {
                info!(task.id = task_id, run.id = run_id, build_request.id = ?row.build_request_id,
                      "retry run carries on with the same build request");
                Ok(Outcome::CarriedOver)
            }
            SlotClaim::Existing(row) => {
                if row.state == RowState::Pending
                    && row.build_request_id.is_none()
                    && row.leased_until <= now
                {
                    // An earlier attempt failed half-way (it handed its lease back) or
                    // its owner died: finish it, recovering a request that was injected.
                    return self.inject(&row, &task, &run).await;
                }
                Ok(Outcome::Duplicate)
            }
            SlotClaim::New { row, previous } => {
                if let Some(prev) = previous
                    && let Some(brid) = prev.build_request_id
                    && prev.state != RowState::Retrying
                    && let RequestState::Pending { builds } = self
                        .master
                        .request_state(BuildRequestId(brid as u64))
                        .await?
                    && builds.is_empty()
                {
                    let change = self
                        .state
                        .reuse_for_rerun(task_id, i64::from(run_id), brid, self.now())
                        .await?;
                    if change.holds() {
                        info!(
                            task.id = task_id,
                            run.id = run_id,
                            build_request.id = brid,
                            "rerun reuses the build request that still waits"
                        );
                        return Ok(Outcome::Reused);
                    }
                }
                let result = self.inject(&row, &task, &run).await;
                if result.is_err() {
                    // Let the redelivery (or any reflector) try again at once.
                    let _ = self
                        .state
                        .release_leases(&[row.id], &self.settings.instance)
                        .await;
                }
                result
            }
        }
    }

    /// Injects the build request of a pending row and records it. Before
    /// injecting, looks for a request injected for this run by an earlier
    /// attempt that never recorded it (matched on the run's scheduled time).
    pub(super) async fn inject(
        &self,
        row: &MappingRow,
        task: &Value,
        run: &RunInfo,
    ) -> BridgeResult<Outcome> {
        let task_id = row.task_id.as_str();
        let run_id = run.run_id;
        let parsed = match parse_payload(&task["payload"]) {
            Ok(parsed) => parsed,
            Err(reason) => {
                return Err(BridgeError::BadMessage(format!("task {task_id}: {reason}")));
            }
        };
        let spec = build_request_spec(task_id, run_id, task, &parsed, run.scheduled);
        let used: Vec<i64> = self
            .state
            .rows_for_task(task_id)
            .await?
            .iter()
            .filter_map(|r| r.build_request_id)
            .collect();
        let found = self
            .master
            .find_requests_for_task(task_id)
            .await?
            .into_iter()
            .find(|f| {
                f.submitted_at == spec.submitted_at
                    && f.buildername == spec.buildername
                    && !used.contains(&(f.build_request_id.0 as i64))
            });
        let (brid, outcome) = match found {
            Some(found) => (found.build_request_id, Outcome::Recovered),
            None => match self.master.submit(&spec).await {
                Ok(brid) => {
                    self.metrics.inc("bbb_bridge_build_requests_total", "");
                    (brid, Outcome::Injected)
                }
                Err(e @ (LegacyError::UnknownBuilder(_) | LegacyError::Invalid(_))) => {
                    let reason = match e {
                        LegacyError::UnknownBuilder(name) => {
                            format!("builder {name:?} does not exist on the Buildbot master")
                        }
                        other => format!("the Buildbot master refused the build request: {other}"),
                    };
                    let status = self.queue.status(task_id).await?;
                    self.state
                        .mark_resolved(task_id, row.run_id, RowResolution::Exception, self.now())
                        .await?;
                    return self.refuse(task_id, run_id, &status, &reason).await;
                }
                Err(e) => return Err(e.into()),
            },
        };
        match self
            .state
            .set_build_request(task_id, row.run_id, brid.0 as i64, self.now())
            .await?
        {
            Change::Applied(_) | Change::Unchanged(_) => {
                info!(task.id = task_id, run.id = run_id, build_request.id = brid.0,
                      builder = %spec.buildername, "build request {outcome}");
                Ok(outcome)
            }
            Change::Refused(current) => {
                // Another instance recorded its request first, or the run was
                // cancelled meanwhile: ours must not run.
                warn!(task.id = task_id, run.id = run_id, build_request.id = brid.0,
                      row.state = %current.state, "injected request not needed; cancelling it");
                self.cancel_or_stop(brid).await?;
                Ok(Outcome::LostRace)
            }
            Change::NotFound => {
                warn!(
                    task.id = task_id,
                    run.id = run_id,
                    "row vanished while injecting"
                );
                self.cancel_or_stop(brid).await?;
                Ok(Outcome::LostRace)
            }
        }
    }

    /// Refuses a task: claims the run, writes `reason` to its log and resolves
    /// it `exception/malformed-payload`. Idempotent: a run already resolved is
    /// left alone.
    pub(super) async fn refuse(
        &self,
        task_id: &str,
        run_id: u32,
        status: &TaskStatus,
        reason: &str,
    ) -> BridgeResult<Outcome> {
        warn!(task.id = task_id, run.id = run_id, reason, "refusing task");
        match self.queue.claim(task_id, run_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => return Ok(Outcome::RefusedAlready),
            Err(e) => return Err(e.into()),
        }
        let log = format!(
            "[buildbot-bridge] task {task_id} run {run_id} was not handed to Buildbot:\n\
             {reason}\n\
             The task is resolved exception/malformed-payload. Fix the task and create it again.\n"
        );
        if let Err(e) = self
            .queue
            .upload_artifact(
                task_id,
                run_id,
                super::LOG_NAME,
                super::LOG_CONTENT_TYPE,
                status.expires,
                log.into_bytes(),
            )
            .await
            && !e.is_conflict()
        {
            warn!(task.id = task_id, run.id = run_id, error = %e, "cannot attach the refusal log");
        }
        match self
            .queue
            .report_exception(task_id, run_id, ExceptionReason::MalformedPayload)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        self.metrics.inc(
            "bbb_bridge_resolutions_total",
            "resolution=\"exception/malformed-payload\"",
        );
        Ok(Outcome::Refused)
    }

    /// Cancels a request that waits, or stops its build if it already runs.
    pub(super) async fn cancel_or_stop(&self, brid: BuildRequestId) -> BridgeResult<()> {
        match self.master.cancel_request(brid).await? {
            CancelOutcome::AlreadyClaimed => {
                self.master.stop_build(StopTarget::Request(brid)).await?;
            }
            CancelOutcome::Cancelled
            | CancelOutcome::Requested
            | CancelOutcome::AlreadyComplete
            | CancelOutcome::NotFound => {}
        }
        Ok(())
    }
}
