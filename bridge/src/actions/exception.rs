//! The TC listener's action on a run resolved as an exception: a waiting
//! request is cancelled, a running build stopped.

use bbb_buildbot::{BuildRequestId, RequestState, StopTarget};
use bbb_state::{NewSlot, RowResolution, RowState, SlotClaim};
use bbb_tcvalues::ReasonResolved;
use tracing::info;

use super::{Bridge, BridgeResult, Outcome};

impl Bridge {
    /// A run of a bridged task was resolved as an exception. For `canceled`,
    /// `deadline-exceeded` and `claim-expired`, the build must not go on: a
    /// waiting request is cancelled, a running build stopped. Other reasons
    /// (the bridge's own `worker-shutdown` and `malformed-payload`, ...) need
    /// nothing. A row is inserted if none exists yet, so a task-pending that
    /// arrives later injects nothing.
    pub async fn task_exception(
        &self,
        task_id: &str,
        run_id: u32,
        reason: Option<ReasonResolved>,
        deadline: i64,
    ) -> BridgeResult<Outcome> {
        let resolution = match reason {
            Some(ReasonResolved::Canceled) => RowResolution::Canceled,
            Some(ReasonResolved::DeadlineExceeded | ReasonResolved::ClaimExpired) => {
                RowResolution::Exception
            }
            _ => return Ok(Outcome::NothingToDo),
        };
        let now = self.now();
        let row = match self.state.get(task_id, i64::from(run_id)).await? {
            Some(row) => row,
            None => {
                // Block a task-pending still on its way; if a slot appears meanwhile, look again.
                match self
                    .state
                    .claim_slot(&NewSlot {
                        task_id,
                        run_id: i64::from(run_id),
                        master: &self.settings.master,
                        deadline,
                        instance: &self.settings.instance,
                        now,
                        inject_lease_ms: self.settings.inject_lease_ms,
                    })
                    .await?
                {
                    SlotClaim::New { row, .. } => {
                        self.state
                            .mark_resolved(task_id, row.run_id, resolution, now)
                            .await?;
                        self.count_exception(reason);
                        return Ok(Outcome::Blocked);
                    }
                    other => other.row().clone(),
                }
            }
        };
        if row.state == RowState::Resolved {
            return Ok(Outcome::AlreadyResolved);
        }
        if let Some(brid) = row.build_request_id {
            self.stop_work(BuildRequestId(brid as u64)).await?;
        }
        self.state
            .mark_resolved(task_id, row.run_id, resolution, self.now())
            .await?;
        self.count_exception(reason);
        info!(task.id = task_id, run.id = run_id, reason = reason.map(|r| r.as_str()), build_request.id = ?row.build_request_id,
              "build request cancelled or build stopped");
        Ok(Outcome::Cancelled)
    }

    /// Counts a run the bridge settled for the queue's exception `reason`
    /// (`bbb_bridge_run_exceptions_total{reason}`; once per row settled, so
    /// a redelivered message is not counted again).
    fn count_exception(&self, reason: Option<ReasonResolved>) {
        if let Some(r) = reason {
            self.metrics.inc(
                "bbb_bridge_run_exceptions_total",
                format!("reason=\"{}\"", r.as_str()),
            );
        }
    }

    /// Makes sure nothing runs for `brid`: cancels it while it waits, stops its build
    /// once it runs.
    pub(super) async fn stop_work(&self, brid: BuildRequestId) -> BridgeResult<()> {
        match self.master.request_state(brid).await? {
            RequestState::Pending { .. } => self.cancel_or_stop(brid).await,
            RequestState::Running { .. } => {
                self.master.stop_build(StopTarget::Request(brid)).await?;
                Ok(())
            }
            RequestState::Complete { .. }
            | RequestState::Cancelled { .. }
            | RequestState::Unknown => Ok(()),
        }
    }
}
