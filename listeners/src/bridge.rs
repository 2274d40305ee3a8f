//! The bridge's shared context and every action it takes on a task run.
//!
//! The TC listener, the Buildbot listener and the reflector all act through
//! [`Bridge`]: each action reads the mapping row, does its effects on the
//! legacy master and the queue, and then records the outcome with one of the
//! guarded transitions of [`StateDb`]. Effects come before the record, so an
//! action cut short (a crash, an error) is simply done again by the next
//! delivery of the same message or by the reflector; every action is
//! idempotent, so doing it twice is harmless.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bbb_buildbot::{
    BuildRequestId, BuildResult, CancelOutcome, LegacyError, LegacyEvent, LegacyMaster,
    RequestState, StopTarget,
};
use bbb_state::{
    Change, MappingRow, NewSlot, Resolution, RowState, SlotClaim, StartedBuild, StateDb,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::payload::{BuilderRules, build_request_spec, parse_payload, task_scopes};
use crate::queue_client::{QueueClient, RunInfo, TaskStatus, TcError};

/// The default task queue the bridge serves.
pub const DEFAULT_TASK_QUEUE: &str = "buildbot-bridge/buildbot-bridge";

/// How the bridge identifies itself and what it accepts.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    /// The task queue whose tasks become build requests (`provisionerId/workerType`).
    pub task_queue_id: String,
    /// The worker group of the bridge's claims. Every instance uses the same
    /// identity, so a claim made twice (two instances, a redelivered event) is
    /// idempotent instead of a conflict.
    pub worker_group: String,
    /// The worker id of the bridge's claims (see `worker_group`).
    pub worker_id: String,
    /// The legacy master (or estate) this bridge injects into; stored on each row.
    pub master: String,
    /// This instance's name: leases and logs.
    pub instance: String,
    /// Restricted and ignored builders.
    pub rules: BuilderRules,
    /// How long an inserter may take to inject before others re-drive its row (ms).
    pub inject_lease_ms: i64,
}

impl BridgeSettings {
    /// Defaults for `task_queue_id`: worker `buildbot-bridge/buildbot-bridge`,
    /// no restricted or ignored builders, a 60 s injection lease.
    pub fn new(task_queue_id: &str, master: &str, instance: &str) -> BridgeSettings {
        BridgeSettings {
            task_queue_id: task_queue_id.to_owned(),
            worker_group: "buildbot-bridge".to_owned(),
            worker_id: "buildbot-bridge".to_owned(),
            master: master.to_owned(),
            instance: instance.to_owned(),
            rules: BuilderRules::default(),
            inject_lease_ms: 60_000,
        }
    }
}

/// A source of "now", in milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The queue refused or could not be reached.
    #[error(transparent)]
    Queue(#[from] TcError),
    /// The mapping database failed.
    #[error("state database: {0}")]
    State(#[from] bbb_state::StateError),
    /// The legacy master failed.
    #[error("legacy master: {0}")]
    Legacy(#[from] LegacyError),
    /// The message cannot be handled, now or ever.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// The event came before the state it applies to (a build started before
    /// its request's id was recorded): try again shortly.
    #[error("not yet: {0}")]
    NotYet(String),
}

impl BridgeError {
    /// Whether the same action may succeed later (a redelivery should be tried).
    pub fn is_transient(&self) -> bool {
        match self {
            BridgeError::Queue(e) => e.is_transient(),
            BridgeError::State(_) | BridgeError::NotYet(_) => true,
            // Configuration and input errors do not heal by themselves.
            BridgeError::Legacy(e) => !matches!(
                e,
                LegacyError::Invalid(_)
                    | LegacyError::NoMasterUrl(_)
                    | LegacyError::UnknownBuilder(_)
                    | LegacyError::InvalidUrl { .. }
                    | LegacyError::Json(_)
            ),
            BridgeError::BadMessage(_) => false,
        }
    }
}

/// The result type of the bridge's actions.
pub type BridgeResult<T> = std::result::Result<T, BridgeError>;

/// The shared context: queue client, mapping database, legacy master, settings.
pub struct Bridge {
    /// The queue.
    pub queue: QueueClient,
    /// The mapping database.
    pub state: StateDb,
    /// The legacy master.
    pub master: Arc<dyn LegacyMaster>,
    /// Who the bridge is and what it accepts.
    pub settings: BridgeSettings,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    clock: Clock,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a handler did, for logs and metrics.
pub type Outcome = &'static str;

fn resolution_of(run: &RunInfo) -> Resolution {
    match (run.state.as_str(), run.reason_resolved.as_deref()) {
        ("completed", _) => Resolution::Completed,
        ("failed", _) => Resolution::Failed,
        (_, Some("canceled")) => Resolution::Canceled,
        _ => Resolution::Exception,
    }
}

fn is_resolved(run: &RunInfo) -> bool {
    !matches!(run.state.as_str(), "pending" | "running")
}

fn run_u32(row: &MappingRow) -> u32 {
    u32::try_from(row.run_id).unwrap_or(u32::MAX)
}

impl Bridge {
    /// A bridge on the system clock.
    pub fn new(
        queue: QueueClient,
        state: StateDb,
        master: Arc<dyn LegacyMaster>,
        settings: BridgeSettings,
        metrics: Arc<Metrics>,
    ) -> Bridge {
        Bridge::with_clock(queue, state, master, settings, metrics, system_clock())
    }

    /// A bridge on a given clock (tests move it forward).
    pub fn with_clock(
        queue: QueueClient,
        state: StateDb,
        master: Arc<dyn LegacyMaster>,
        settings: BridgeSettings,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Bridge {
        Bridge {
            queue,
            state,
            master,
            settings,
            metrics,
            clock,
        }
    }

    /// Now, in ms.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    // ----- task-pending ----------------------------------------------------------------

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
            Err(e) if e.is_not_found() => return Ok("unknown-task"),
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
            return Ok("other-queue");
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
            return Ok("ignored");
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
                Ok("carried-over")
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
                Ok("duplicate")
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
                        return Ok("reused");
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
    async fn inject(&self, row: &MappingRow, task: &Value, run: &RunInfo) -> BridgeResult<Outcome> {
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
            Some(found) => (found.build_request_id, "recovered"),
            None => match self.master.submit(&spec).await {
                Ok(brid) => {
                    self.metrics.inc("bbb_bridge_build_requests_total", "");
                    (brid, "injected")
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
                        .mark_resolved(task_id, row.run_id, Resolution::Exception, self.now())
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
                Ok("lost-race")
            }
            Change::NotFound => {
                warn!(
                    task.id = task_id,
                    run.id = run_id,
                    "row vanished while injecting"
                );
                self.cancel_or_stop(brid).await?;
                Ok("lost-race")
            }
        }
    }

    /// Refuses a task: claims the run, writes `reason` to its log and resolves
    /// it `exception/malformed-payload`. Idempotent: a run already resolved is
    /// left alone.
    async fn refuse(
        &self,
        task_id: &str,
        run_id: u32,
        status: &TaskStatus,
        reason: &str,
    ) -> BridgeResult<Outcome> {
        warn!(task.id = task_id, run.id = run_id, reason, "refusing task");
        match self.queue.claim(task_id, run_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => return Ok("refused-already"),
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
                "public/logs/live_backing.log",
                "text/plain; charset=utf-8",
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
            .report_exception(task_id, run_id, "malformed-payload")
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
        Ok("refused")
    }

    /// Cancels a request that waits, or stops its build if it already runs.
    async fn cancel_or_stop(&self, brid: BuildRequestId) -> BridgeResult<()> {
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

    // ----- task-exception --------------------------------------------------------------

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
        reason: &str,
        deadline: i64,
    ) -> BridgeResult<Outcome> {
        let resolution = match reason {
            "canceled" => Resolution::Canceled,
            "deadline-exceeded" | "claim-expired" => Resolution::Exception,
            _ => return Ok("nothing-to-do"),
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
                        return Ok("blocked");
                    }
                    other => other.row().clone(),
                }
            }
        };
        if row.state == RowState::Resolved {
            return Ok("already-resolved");
        }
        if let Some(brid) = row.build_request_id {
            self.stop_work(BuildRequestId(brid as u64)).await?;
        }
        self.state
            .mark_resolved(task_id, row.run_id, resolution, self.now())
            .await?;
        info!(task.id = task_id, run.id = run_id, reason, build_request.id = ?row.build_request_id,
              "build request cancelled or build stopped");
        Ok("cancelled")
    }

    /// Makes sure nothing runs for `brid`: cancels it while it waits, stops its build
    /// once it runs.
    async fn stop_work(&self, brid: BuildRequestId) -> BridgeResult<()> {
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

    // ----- Buildbot events -------------------------------------------------------------

    /// Applies one event from the legacy master. Events about requests the
    /// bridge did not inject are ignored.
    pub async fn legacy_event(&self, event: &LegacyEvent) -> BridgeResult<Outcome> {
        let mut outcome = "not-ours";
        for brid in event.build_request_ids() {
            let Some(row) = self.state.current_for_build_request(brid.0 as i64).await? else {
                if let LegacyEvent::BuildStarted {
                    task_id: Some(task_id),
                    ..
                } = event
                    && self.state.rows_for_task(task_id).await?.iter().any(|r| {
                        (r.state == RowState::Pending && r.build_request_id.is_none())
                            || r.build_request_id == Some(brid.0 as i64)
                    })
                {
                    // The master started the build before the injecting listener
                    // recorded the request's id (or it recorded it between the two
                    // reads): try again once it is recorded.
                    return Err(BridgeError::NotYet(format!(
                        "build request {brid} of task {task_id} is not recorded yet"
                    )));
                }
                continue;
            };
            outcome = match event {
                LegacyEvent::BuildStarted {
                    build_ids,
                    build_number,
                    ..
                } => {
                    let build = StartedBuild {
                        build_id: build_ids.first().map(|b| b.0 as i64),
                        number: i64::try_from(*build_number).ok(),
                    };
                    self.build_started(row, brid, build).await?
                }
                LegacyEvent::BuildFinished {
                    results: BuildResult::Retry,
                    build_number,
                    ..
                } => {
                    self.build_retried(&row, i64::try_from(*build_number).ok())
                        .await?
                }
                // The build's own RETRY event (above) names the build, so it is the
                // one acted on; a requeue alone cannot tell which run's build it was.
                // The reflector catches up if the RETRY event is lost.
                LegacyEvent::RequestRequeued { .. } => "requeue-noted",
                LegacyEvent::BuildFinished {
                    results,
                    properties,
                    log_url,
                    ..
                } => {
                    self.build_finished(&row, *results, properties, log_url.as_deref())
                        .await?
                }
                LegacyEvent::RequestCompleted {
                    results, claimed, ..
                } => {
                    if *claimed {
                        self.build_finished(&row, *results, &BTreeMap::new(), None)
                            .await?
                    } else {
                        // Completed without a build that ran it: cancelled before it
                        // (re)started, whatever result the canceller wrote (0.8
                        // self-serve writes FAILURE), as `request_state` says too.
                        self.cancelled_on_master(&row).await?
                    }
                }
            };
        }
        Ok(outcome)
    }

    /// A build started for a request: claim the run (idempotent for the shared
    /// worker identity) and record `takenUntil`. If the run was resolved in the
    /// queue meanwhile (cancelled, deadline), the build is stopped instead.
    pub async fn build_started(
        &self,
        mut row: MappingRow,
        brid: BuildRequestId,
        build: StartedBuild,
    ) -> BridgeResult<Outcome> {
        // A later build of the request while the row's run still runs: the run's
        // build ended RETRY (the request runs again) and that event is not
        // applied yet. Recording the new build on this run would hide the RETRY.
        let requeued = row.state == RowState::Running
            && matches!((row.build_number, build.number), (Some(old), Some(new)) if new > old);
        if row.state == RowState::Retrying || requeued {
            // The retried request started again before the next run's row existed.
            self.build_retried(&row, row.build_number).await?;
            match self.state.current_for_build_request(brid.0 as i64).await? {
                Some(next) if next.run_id != row.run_id => row = next,
                _ => return Ok("retry-pending"),
            }
        }
        if !matches!(row.state, RowState::Requested | RowState::Running) {
            return Ok("not-active");
        }
        if row.run_id > 0
            && let Some(number) = build.number
            && self
                .state
                .find_by_build_request(brid.0 as i64)
                .await?
                .iter()
                .any(|r| r.run_id < row.run_id && r.build_number == Some(number))
        {
            // A late copy of the start of the build that served an earlier run
            // (it ended RETRY): recording it on this run would let that build's
            // RETRY retry this run too.
            debug!(task.id = %row.task_id, run.id = row.run_id, build_request.id = brid.0,
                   build.number = number, "start of an earlier run's build ignored");
            return Ok("stale-build");
        }
        if self.absorbed_build(&row, build.number).await? {
            // The start of an earlier build, applied after the start of a later one:
            // the earlier build ended RETRY while this run was its run. Retry the run;
            // the later build goes to the next run.
            return Box::pin(self.build_retried(&row, build.number)).await;
        }
        let task_id = row.task_id.clone();
        match self.queue.claim(&task_id, run_u32(&row)).await {
            Ok(taken_until) => {
                self.state
                    .mark_started(&task_id, row.run_id, build, taken_until, self.now())
                    .await?;
                debug!(task.id = %task_id, run.id = row.run_id, build_request.id = brid.0, "run claimed");
                Ok("claimed")
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                self.settle_with_queue(&row, brid).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether build `number` of a running row's request served this row's run
    /// although the row records a later build: its start was applied after the
    /// later build's (events race across listeners), so its RETRY was never seen
    /// as this run's. True when no earlier run of the request accounts for the
    /// build (every earlier row holding the request records an older build).
    async fn absorbed_build(&self, row: &MappingRow, number: Option<i64>) -> BridgeResult<bool> {
        let (Some(number), Some(current), Some(brid)) =
            (number, row.build_number, row.build_request_id)
        else {
            return Ok(false);
        };
        if row.state != RowState::Running || number >= current {
            return Ok(false);
        }
        Ok(self
            .state
            .find_by_build_request(brid)
            .await?
            .iter()
            .filter(|r| r.run_id < row.run_id)
            .all(|r| r.build_number.is_none_or(|b| b < number)))
    }

    /// The queue refused a claim or reclaim: find out why and settle the row.
    /// A resolved run's build is stopped; a vanished task's rows are forgotten.
    async fn settle_with_queue(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
    ) -> BridgeResult<Outcome> {
        let status = match self.queue.status(&row.task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.stop_work(brid).await?;
                self.state.forget_task(&row.task_id).await?;
                return Ok("task-gone");
            }
            Err(e) => return Err(e.into()),
        };
        match status.run(run_u32(row)) {
            Some(run) if is_resolved(run) => {
                if let Some(outcome) = self.carried_on(row, brid).await? {
                    return Ok(outcome);
                }
                self.stop_work(brid).await?;
                self.state
                    .mark_resolved(&row.task_id, row.run_id, resolution_of(run), self.now())
                    .await?;
                Ok("stopped")
            }
            // Running under another identity or still pending: nothing safe to do now;
            // the reflector looks again.
            _ => Ok("claim-refused"),
        }
    }

    /// Whether the request `brid` has moved on from `row`'s run to a later run
    /// of the task since `row` was read: the run was retried (a RETRY the
    /// bridge reported, or is reporting now) or rerun on the request that still
    /// waited. Callers holding an old copy of the row (a reflector batch, a
    /// late duplicate of a build's start) must then leave the request alone:
    /// stopping it would cancel the run it serves now. A row caught retrying
    /// is carried over to its next run here; `None` if the request still
    /// serves `row`'s run.
    async fn carried_on(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
    ) -> BridgeResult<Option<Outcome>> {
        let fresh = self.state.get(&row.task_id, row.run_id).await?;
        if let Some(fresh) = &fresh {
            if fresh.state == RowState::Retrying {
                return Box::pin(self.build_retried(fresh, fresh.build_number))
                    .await
                    .map(Some);
            }
            if fresh.resolution == Some(Resolution::CarriedOver) {
                return Ok(Some("carried-on"));
            }
        }
        let moved = self
            .state
            .current_for_build_request(brid.0 as i64)
            .await?
            .is_some_and(|current| current.task_id == row.task_id && current.run_id > row.run_id);
        Ok(moved.then_some("carried-on"))
    }

    /// The build ended RETRY (or its request was requeued): Buildbot runs the
    /// same request again. The row is marked retrying first, then the run is
    /// resolved `exception/worker-shutdown`, so the queue makes the next run
    /// itself, and that run is given the same request.
    ///
    /// `build_number` names the build that ended RETRY: only the run that build
    /// served is retried (a late copy of the event must not retry the next run,
    /// which holds the same request).
    pub async fn build_retried(
        &self,
        row: &MappingRow,
        build_number: Option<i64>,
    ) -> BridgeResult<Outcome> {
        let task_id = row.task_id.as_str();
        let run_id = run_u32(row);
        let Some(brid) = row.build_request_id else {
            return Ok("not-active");
        };
        let absorbed = self.absorbed_build(row, build_number).await?;
        match row.state {
            RowState::Running if row.build_number == build_number || absorbed => {
                let change = self
                    .state
                    .mark_retrying(task_id, row.run_id, self.now())
                    .await?;
                if !change.holds() {
                    return Ok("not-active");
                }
            }
            RowState::Retrying => {}
            _ => return Ok("not-active"),
        }
        // Make sure the run is ours and running (the started event may be lost).
        match self.queue.claim(task_id, run_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let status = match self
            .queue
            .report_exception(task_id, run_id, "worker-shutdown")
            .await
        {
            Ok(status) => status,
            Err(e) if e.is_conflict() => self.queue.status(task_id).await?,
            Err(e) if e.is_not_found() => {
                self.stop_work(BuildRequestId(brid as u64)).await?;
                self.state.forget_task(task_id).await?;
                return Ok("task-gone");
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.now();
        let this = status.run(run_id);
        let next = status.runs.iter().find(|r| r.run_id > run_id);
        match (this, next) {
            (Some(this), Some(next))
                if this.reason_resolved.as_deref() == Some("worker-shutdown") =>
            {
                let change = self
                    .state
                    .reuse_for_rerun(task_id, i64::from(next.run_id), brid, now)
                    .await?;
                info!(
                    task.id = task_id,
                    run.id = run_id,
                    next_run.id = next.run_id,
                    build_request.id = brid,
                    ?change,
                    "build retried; next run carries on"
                );
                self.metrics.inc(
                    "bbb_bridge_resolutions_total",
                    "resolution=\"exception/worker-shutdown\"",
                );
                if absorbed
                    && let Some(next_row) = self.state.get(task_id, i64::from(next.run_id)).await?
                {
                    // The row's recorded build is the retried request's next build: it
                    // serves the next run.
                    let later = StartedBuild {
                        build_id: row.build_id,
                        number: row.build_number,
                    };
                    Box::pin(self.build_started(next_row, BuildRequestId(brid as u64), later))
                        .await?;
                }
                Ok("retried")
            }
            (Some(this), _) if is_resolved(this) => {
                // No retry left (or the run was resolved otherwise): the request's
                // next build has no run to serve; stop it.
                self.stop_work(BuildRequestId(brid as u64)).await?;
                self.state
                    .mark_resolved(task_id, row.run_id, resolution_of(this), now)
                    .await?;
                Ok("retries-exhausted")
            }
            _ => Ok("retry-pending"),
        }
    }

    /// The build finished (or the request completed) with a final result:
    /// attach `public/properties.json` and the log, then resolve the run.
    /// CANCELLED cancels the task only if its run is still pending or running
    /// (the bridge itself stops builds only of runs already resolved).
    pub async fn build_finished(
        &self,
        row: &MappingRow,
        results: BuildResult,
        properties: &BTreeMap<String, Value>,
        log_url: Option<&str>,
    ) -> BridgeResult<Outcome> {
        if !row.state.is_active() {
            return Ok("already-resolved");
        }
        if results == BuildResult::Retry {
            return self.build_retried(row, row.build_number).await;
        }
        if results == BuildResult::Cancelled {
            return self.cancelled_on_master(row).await;
        }
        let task_id = row.task_id.as_str();
        let run_id = run_u32(row);
        let brid = BuildRequestId(row.build_request_id.unwrap_or_default() as u64);
        let status = match self.queue.status(task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.state.forget_task(task_id).await?;
                return Ok("task-gone");
            }
            Err(e) => return Err(e.into()),
        };
        match status.run(run_id) {
            Some(run) if is_resolved(run) => {
                self.state
                    .mark_resolved(task_id, row.run_id, resolution_of(run), self.now())
                    .await?;
                return Ok("already-resolved");
            }
            Some(run) if run.state == "pending" => match self.queue.claim(task_id, run_id).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => return self.settle_with_queue(row, brid).await,
                Err(e) => return Err(e.into()),
            },
            Some(_) => {}
            None => return Ok("no-such-run"),
        }
        // A request-completed event, or a finish the reflector caught up,
        // carries no properties: ask the master for its build's.
        let fetched = if properties.is_empty() {
            self.finished_build_properties(brid).await
        } else {
            None
        };
        let properties = fetched.as_ref().unwrap_or(properties);
        let fetched_log_url = properties
            .get("log_url")
            .and_then(|p| p.get(0))
            .and_then(Value::as_str);
        let log_url = log_url.or(fetched_log_url);
        self.attach_artifacts(task_id, run_id, status.expires, properties, log_url)
            .await;
        let (call, resolution, label) = match results {
            BuildResult::Success => (
                self.queue.report_completed(task_id, run_id).await,
                Resolution::Completed,
                "completed",
            ),
            BuildResult::Warnings | BuildResult::Failure => (
                self.queue.report_failed(task_id, run_id).await,
                Resolution::Failed,
                "failed",
            ),
            BuildResult::Exception => (
                self.queue
                    .report_exception(task_id, run_id, "internal-error")
                    .await,
                Resolution::Exception,
                "exception/internal-error",
            ),
            // The build did not do its work: nothing to report as completed or
            // failed, and nothing a retry would change.
            BuildResult::Skipped => (
                self.queue
                    .report_exception(task_id, run_id, "resource-unavailable")
                    .await,
                Resolution::Exception,
                "exception/resource-unavailable",
            ),
            BuildResult::Retry | BuildResult::Cancelled => unreachable!("handled above"),
        };
        match call {
            Ok(_) => {}
            Err(e) if e.is_conflict() => return self.settle_with_queue(row, brid).await,
            Err(e) => return Err(e.into()),
        }
        self.state
            .mark_resolved(task_id, row.run_id, resolution, self.now())
            .await?;
        self.metrics.inc(
            "bbb_bridge_resolutions_total",
            format!("resolution=\"{label}\""),
        );
        info!(task.id = task_id, run.id = run_id, build_request.id = brid.0, result = %results, "run resolved {label}");
        Ok("resolved")
    }

    /// A request was cancelled on the Buildbot side (or its build ended
    /// CANCELLED): cancel the task if its run is still pending or running;
    /// if the run is already resolved, the bridge asked for it, and only the
    /// row is settled.
    pub async fn cancelled_on_master(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        if !row.state.is_active() {
            return Ok("already-resolved");
        }
        let task_id = row.task_id.as_str();
        let status = match self.queue.status(task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.state.forget_task(task_id).await?;
                return Ok("task-gone");
            }
            Err(e) => return Err(e.into()),
        };
        let run = status.run(run_u32(row));
        if let Some(run) = run
            && is_resolved(run)
        {
            self.state
                .mark_resolved(task_id, row.run_id, resolution_of(run), self.now())
                .await?;
            return Ok("already-resolved");
        }
        match self.queue.cancel(task_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        self.state
            .mark_resolved(task_id, row.run_id, Resolution::Canceled, self.now())
            .await?;
        self.metrics.inc(
            "bbb_bridge_resolutions_total",
            "resolution=\"exception/canceled\"",
        );
        info!(task.id = task_id, run.id = row.run_id, build_request.id = ?row.build_request_id,
              "cancelled on the Buildbot side; task cancelled");
        Ok("cancelled-by-master")
    }

    /// The properties of the request's last finished build, where the master
    /// can tell. A failure is logged and gives `None`: the run's resolution
    /// does not wait for its properties.
    async fn finished_build_properties(
        &self,
        brid: BuildRequestId,
    ) -> Option<BTreeMap<String, Value>> {
        let builds = match self.master.request_state(brid).await {
            Ok(
                RequestState::Complete { builds, .. }
                | RequestState::Running { builds, .. }
                | RequestState::Pending { builds },
            ) => builds,
            Ok(_) => return None,
            Err(e) => {
                warn!(build_request.id = brid.0, error = %e, "cannot read the request's builds for their properties");
                return None;
            }
        };
        let build = builds.iter().rev().find(|b| b.finish_time.is_some())?;
        match self.master.build_properties(build.build_id).await {
            Ok(properties) => properties,
            Err(e) => {
                warn!(build_request.id = brid.0, build.id = build.build_id.0, error = %e, "cannot read the build's properties");
                None
            }
        }
    }

    /// Attaches `public/properties.json` (every build property as
    /// `name: [value, source]`) and, when the build uploaded one, a reference
    /// to its log. A failure is logged: it must not keep the run unresolved.
    async fn attach_artifacts(
        &self,
        task_id: &str,
        run_id: u32,
        expires: i64,
        properties: &BTreeMap<String, Value>,
        log_url: Option<&str>,
    ) {
        let body = serde_json::to_vec_pretty(properties).unwrap_or_else(|_| b"{}".to_vec());
        if let Err(e) = self
            .queue
            .upload_artifact(
                task_id,
                run_id,
                "public/properties.json",
                "application/json",
                expires,
                body,
            )
            .await
        {
            warn!(task.id = task_id, run.id = run_id, error = %e, "cannot attach properties.json");
        }
        if let Some(url) = log_url.filter(|u| {
            reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        }) && let Err(e) = self
            .queue
            .reference_artifact(
                task_id,
                run_id,
                "public/logs/live_backing.log.gz",
                url,
                "application/gzip",
                expires,
            )
            .await
        {
            warn!(task.id = task_id, run.id = run_id, error = %e, "cannot attach the log reference");
        }
    }

    // ----- reconciliation (the reflector's actions) ------------------------------------

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
            return Ok("no-such-run");
        };
        if run.state != "running" || status.deadline <= self.now() {
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
                Ok("reclaimed")
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
                self.build_finished(row, results, &BTreeMap::new(), None)
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
                        _ => Ok("in-step"),
                    },
                    Err(e) if e.is_not_found() => self.settle_with_queue(row, brid).await,
                    Err(e) => Err(e.into()),
                }
            }
            RequestState::Unknown => {
                warn!(task.id = %row.task_id, run.id = row.run_id, build_request.id = brid.0,
                      "the master does not know the row's build request");
                self.metrics.error("reflector-unknown-request");
                Ok("unknown-request")
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
                return Ok("task-gone");
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        match status.run(run_u32(row)) {
            Some(run) if run.state == "pending" => self.inject(row, &task, run).await,
            Some(run) => {
                let resolution = if is_resolved(run) {
                    resolution_of(run)
                } else {
                    Resolution::Exception
                };
                self.state
                    .mark_resolved(&row.task_id, row.run_id, resolution, self.now())
                    .await?;
                Ok("settled")
            }
            None => Ok("no-such-run"),
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
                    if matches!(
                        outcome,
                        "injected" | "recovered" | "reused" | "refused" | "carried-over"
                    ) {
                        adopted += 1;
                        info!(task.id = %task_id, run.id = run_id, outcome, "adopted a pending run no listener had seen");
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
            .mark_resolved(&row.task_id, row.run_id, Resolution::Exception, self.now())
            .await?;
        Ok("deadline")
    }

    /// Times one action for the metrics, counts errors, and returns its result.
    pub async fn timed<F>(&self, kind: &str, action: F) -> BridgeResult<Outcome>
    where
        F: std::future::Future<Output = BridgeResult<Outcome>>,
    {
        let start = Instant::now();
        let result = action.await;
        match &result {
            Ok(outcome) => self.metrics.event(kind, outcome, start.elapsed()),
            Err(_) => {
                self.metrics.event(kind, "error", start.elapsed());
            }
        }
        result
    }
}
