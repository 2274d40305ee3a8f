//! The reflector's actions: reclaims before claims expire, catching up with
//! anything the listeners missed, re-driving half-done rows, adopting
//! unseen pending runs, and settling rows past their deadline.

use std::collections::BTreeMap;

use bbb_buildbot::{BuildRequestId, RequestState};
use bbb_state::{MappingRow, RowResolution, RowState, StartedBuild};
use bbb_tcvalues::RunState;
use tracing::{info, warn};

use super::{Bridge, BridgeResult, Outcome, is_resolved, resolution_of, run_u32};

impl Bridge {
    /// Reclaims a running row's claim before it expires, after checking the run
    /// and the deadline in the queue. A run resolved meanwhile has its build
    /// stopped; a vanished task is forgotten.
    pub async fn reclaim(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        let brid = BuildRequestId(row.build_request_id.unwrap_or_default() as u64);
        let status = match self.queue.status(&row.task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => return self.settle_with_queue(row, brid).await,
            Err(e) => return Err(e.into()),
        };
        let Some(run) = status.run(run_u32(row)) else {
            return Ok(Outcome::NoSuchRun);
        };
        if run.state != RunState::Running || status.deadline <= self.now() {
            self.metrics
                .inc("bbb_bridge_reclaims_total", "outcome=\"not-running\"");
            return self.settle_with_queue(row, brid).await;
        }
        match self.queue.reclaim(&row.task_id, run_u32(row)).await {
            Ok(taken_until) => {
                self.state
                    .update_taken_until(&row.task_id, row.run_id, taken_until, self.now())
                    .await?;
                self.metrics
                    .inc("bbb_bridge_reclaims_total", "outcome=\"ok\"");
                Ok(Outcome::Reclaimed)
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                self.metrics
                    .inc("bbb_bridge_reclaims_total", "outcome=\"refused\"");
                self.settle_with_queue(row, brid).await
            }
            Err(e) => {
                self.metrics
                    .inc("bbb_bridge_reclaims_total", "outcome=\"error\"");
                Err(e.into())
            }
        }
    }

    /// Compares an active row with its request on the master and catches up
    /// with anything the listeners missed: a start, a finish, a RETRY, a
    /// cancellation on either side.
    pub async fn reconcile(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        if row.state == RowState::Retrying {
            return self.build_retried(row, row.build_number).await;
        }
        let Some(brid) = row.build_request_id.map(|b| BuildRequestId(b as u64)) else {
            return self.redrive(row).await;
        };
        let state = self.master.request_state(brid).await?;
        if let RequestState::Pending { builds } | RequestState::Running { builds, .. } = &state {
            for b in builds.iter().filter(|b| b.finish_time.is_some()) {
                let number = i64::try_from(b.number).ok();
                if self.absorbed_build(row, number).await? {
                    // A RETRY'd build of this run that the row never recorded.
                    return self.build_retried(row, number).await;
                }
            }
        }
        match state {
            RequestState::Cancelled { .. } => self.cancelled_on_master(row).await,
            RequestState::Complete { results, .. } => {
                self.build_finished(row, results, None, &BTreeMap::new(), None)
                    .await
            }
            RequestState::Running { builds, .. } if row.state == RowState::Requested => {
                let build = builds.last().map(|b| StartedBuild {
                    build_id: Some(b.build_id.0 as i64),
                    number: i64::try_from(b.number).ok(),
                });
                self.build_started(row.clone(), brid, build.unwrap_or_default())
                    .await
            }
            RequestState::Pending { builds } | RequestState::Running { builds, .. }
                if row.state == RowState::Running
                    && builds.iter().any(|b| {
                        i64::try_from(b.number).ok() == row.build_number && b.finish_time.is_some()
                    }) =>
            {
                // The run's build ended and the request went back to the queue (or
                // already runs again): a RETRY we never heard of.
                self.build_retried(row, row.build_number).await
            }
            RequestState::Pending { .. } | RequestState::Running { .. } => {
                // In step with the master; check the queue side.
                match self.queue.status(&row.task_id).await {
                    Ok(status) => match status.run(run_u32(row)) {
                        Some(run) if is_resolved(run) => self.settle_with_queue(row, brid).await,
                        _ => Ok(Outcome::InStep),
                    },
                    Err(e) if e.is_not_found() => self.settle_with_queue(row, brid).await,
                    Err(e) => Err(e.into()),
                }
            }
            RequestState::Unknown => {
                warn!(task.id = %row.task_id, run.id = row.run_id, build_request.id = brid.0,
                      "the master does not know the row's build request");
                self.metrics.error("reflector-unknown-request");
                Ok(Outcome::UnknownRequest)
            }
        }
    }

    /// Re-drives a row left without a build request (its inserter died or
    /// failed): injects (or recovers) the request if the run still waits, else
    /// settles the row.
    pub async fn redrive(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        let (task, status) = match (
            self.queue.task(&row.task_id).await,
            self.queue.status(&row.task_id).await,
        ) {
            (Ok(task), Ok(status)) => (task, status),
            (Err(e), _) | (_, Err(e)) if e.is_not_found() => {
                self.state.forget_task(&row.task_id).await?;
                return Ok(Outcome::TaskGone);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        match status.run(run_u32(row)) {
            Some(run) if run.state == RunState::Pending => self.inject(row, &task, run).await,
            Some(run) => {
                let resolution = if is_resolved(run) {
                    resolution_of(run)
                } else {
                    RowResolution::Exception
                };
                self.state
                    .mark_resolved(&row.task_id, row.run_id, resolution, self.now())
                    .await?;
                Ok(Outcome::Settled)
            }
            None => Ok(Outcome::NoSuchRun),
        }
    }

    /// Adopts pending runs of the bridge's task queue that no listener has seen
    /// (their task-pending message was lost, or published before the bridge's
    /// durable queues existed): every pending run older than `settle_ms` without
    /// a mapping row goes through [`Bridge::task_pending`]. Returns how many
    /// pending runs were looked at and how many were adopted.
    pub async fn adopt_pending(&self, settle_ms: i64) -> BridgeResult<(u64, u64)> {
        let pending = self
            .queue
            .list_pending(&self.settings.task_queue_id)
            .await?;
        let cutoff = self.now() - settle_ms;
        let (mut seen, mut adopted) = (0, 0);
        for (task_id, run_id, inserted) in pending {
            seen += 1;
            if inserted > cutoff || self.state.get(&task_id, i64::from(run_id)).await?.is_some() {
                continue;
            }
            match self.task_pending(&task_id, run_id, None).await {
                Ok(outcome) => {
                    if outcome.took_the_run() {
                        adopted += 1;
                        info!(task.id = %task_id, run.id = run_id, %outcome, "adopted a pending run no listener had seen");
                    }
                }
                Err(e) => {
                    warn!(task.id = %task_id, run.id = run_id, error = %e, "cannot adopt pending run");
                    self.metrics.error("reflector");
                }
            }
        }
        Ok((seen, adopted))
    }

    /// A row whose task passed its deadline: make sure its build does not go on,
    /// then settle the row.
    pub async fn past_deadline(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        if let Some(brid) = row.build_request_id {
            self.stop_work(BuildRequestId(brid as u64)).await?;
        }
        self.state
            .mark_resolved(
                &row.task_id,
                row.run_id,
                RowResolution::Exception,
                self.now(),
            )
            .await?;
        Ok(Outcome::Deadline)
    }
}
