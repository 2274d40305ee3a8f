//! The Buildbot listener's actions on build events: a build started (claim
//! the run), ended RETRY (the next run carries on with the same request),
//! finished (artifacts, then the resolution), or was cancelled on the
//! Buildbot side.

use std::collections::BTreeMap;

use bbb_buildbot::{BuildId, BuildInfo, BuildRequestId, BuildResult, LegacyEvent, RequestState};
use bbb_state::{Change, MappingRow, RowResolution, RowState, StartedBuild};
use bbb_tcvalues::{ExceptionReason, ReasonResolved, RunState};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{Bridge, BridgeError, BridgeResult, Outcome, is_resolved, resolution_of, run_u32};

impl Bridge {
    /// Applies one event from the legacy master. Events about requests the
    /// bridge did not inject are ignored.
    pub async fn legacy_event(&self, event: &LegacyEvent) -> BridgeResult<Outcome> {
        let mut outcome = Outcome::NotOurs;
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
                LegacyEvent::RequestRequeued { .. } => Outcome::RequeueNoted,
                LegacyEvent::BuildFinished {
                    results,
                    build_number,
                    properties,
                    log_url,
                    ..
                } => {
                    let number = i64::try_from(*build_number).ok();
                    self.build_finished(&row, *results, number, properties, log_url.as_deref())
                        .await?
                }
                LegacyEvent::RequestCompleted {
                    results, claimed, ..
                } => {
                    if *claimed {
                        self.build_finished(&row, *results, None, &BTreeMap::new(), None)
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
                _ => return Ok(Outcome::RetryPending),
            }
        }
        if !matches!(row.state, RowState::Requested | RowState::Running) {
            return Ok(Outcome::NotActive);
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
            return Ok(Outcome::StaleBuild);
        }
        if self.absorbed_build(&row, build.number).await? {
            // The start of an earlier build, applied after the start of a later one:
            // the earlier build ended RETRY while this run was its run. Retry the run;
            // the later build goes to the next run.
            return Box::pin(self.build_retried(&row, build.number)).await;
        }
        if row.state == RowState::Running
            && matches!((row.build_number, build.number), (Some(current), Some(number)) if number < current)
        {
            // An earlier build that served no run of the request we know of.
            return Ok(Outcome::StaleBuild);
        }
        let task_id = row.task_id.clone();
        match self.queue.claim(&task_id, run_u32(&row)).await {
            Ok(taken_until) => {
                let change = self
                    .state
                    .mark_started(&task_id, row.run_id, build, taken_until, self.now())
                    .await?;
                if let Change::Refused(fresh) = change
                    && fresh.state == RowState::Running
                {
                    // Another action recorded another build on this run since `row`
                    // was read: decide again on the row as it is now (this later
                    // build means the recorded one ended RETRY; an earlier one is
                    // an absorbed or a stale start).
                    debug!(task.id = %task_id, run.id = row.run_id, build_request.id = brid.0,
                           build.number = ?build.number, recorded = ?fresh.build_number,
                           "run records another build; deciding again");
                    return Box::pin(self.build_started(fresh, brid, build)).await;
                }
                debug!(task.id = %task_id, run.id = row.run_id, build_request.id = brid.0, "run claimed");
                Ok(Outcome::Claimed)
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
    pub(super) async fn absorbed_build(
        &self,
        row: &MappingRow,
        number: Option<i64>,
    ) -> BridgeResult<bool> {
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
    pub(super) async fn settle_with_queue(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
    ) -> BridgeResult<Outcome> {
        let status = match self.queue.status(&row.task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.stop_work(brid).await?;
                self.state.forget_task(&row.task_id).await?;
                return Ok(Outcome::TaskGone);
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
                Ok(Outcome::Stopped)
            }
            // Running under another identity or still pending: nothing safe to do now;
            // the reflector looks again.
            _ => Ok(Outcome::ClaimRefused),
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
    pub(super) async fn carried_on(
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
            if fresh.resolution == Some(RowResolution::CarriedOver) {
                return Ok(Some(Outcome::CarriedOn));
            }
        }
        let moved = self
            .state
            .current_for_build_request(brid.0 as i64)
            .await?
            .is_some_and(|current| current.task_id == row.task_id && current.run_id > row.run_id);
        Ok(moved.then_some(Outcome::CarriedOn))
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
            return Ok(Outcome::NotActive);
        };
        let absorbed = self.absorbed_build(row, build_number).await?;
        match row.state {
            RowState::Running if row.build_number == build_number || absorbed => {
                let change = self
                    .state
                    .mark_retrying(task_id, row.run_id, build_number, self.now())
                    .await?;
                if !change.holds() {
                    return Ok(Outcome::NotActive);
                }
            }
            RowState::Retrying => {}
            RowState::Requested if build_number.is_some() => {
                return self
                    .retried_before_started(row, BuildRequestId(brid as u64), build_number)
                    .await;
            }
            _ => return Ok(Outcome::NotActive),
        }
        // Make sure the run is ours and running (the started event may be lost).
        match self.queue.claim(task_id, run_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let status = match self
            .queue
            .report_exception(task_id, run_id, ExceptionReason::WorkerShutdown)
            .await
        {
            Ok(status) => status,
            Err(e) if e.is_conflict() => self.queue.status(task_id).await?,
            Err(e) if e.is_not_found() => {
                self.stop_work(BuildRequestId(brid as u64)).await?;
                self.state.forget_task(task_id).await?;
                return Ok(Outcome::TaskGone);
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.now();
        let this = status.run(run_id);
        let next = status.runs.iter().find(|r| r.run_id > run_id);
        match (this, next) {
            (Some(this), Some(next))
                if this.reason_resolved == Some(ReasonResolved::WorkerShutdown) =>
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
                Ok(Outcome::Retried)
            }
            (Some(this), _) if is_resolved(this) => {
                // No retry left (or the run was resolved otherwise): the request's
                // next build has no run to serve; stop it.
                self.stop_work(BuildRequestId(brid as u64)).await?;
                self.state
                    .mark_resolved(task_id, row.run_id, resolution_of(this), now)
                    .await?;
                Ok(Outcome::RetriesExhausted)
            }
            _ => Ok(Outcome::RetryPending),
        }
    }

    /// A build's RETRY applied before its start (events race across listeners
    /// and sources): the row's run is still `Requested`. The build served this
    /// run unless an earlier run of the request recorded it or a later build
    /// (build numbers only grow): then the event is a late copy about an earlier
    /// run and nothing is done. Otherwise the start is recorded first (the run
    /// claimed, the build number kept), then the run is retried as usual.
    async fn retried_before_started(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
        build_number: Option<i64>,
    ) -> BridgeResult<Outcome> {
        let Some(number) = build_number else {
            return Ok(Outcome::NotActive);
        };
        let earlier = self
            .state
            .find_by_build_request(brid.0 as i64)
            .await?
            .into_iter()
            .any(|r| r.run_id < row.run_id && r.build_number.is_some_and(|b| b >= number));
        if earlier {
            return Ok(Outcome::StaleBuild);
        }
        let task_id = row.task_id.as_str();
        match self.queue.claim(task_id, run_u32(row)).await {
            Ok(taken_until) => {
                let build = StartedBuild {
                    build_id: None,
                    number: Some(number),
                };
                self.state
                    .mark_started(task_id, row.run_id, build, taken_until, self.now())
                    .await?;
            }
            Err(e) if e.is_conflict() || e.is_not_found() => {
                return self.settle_with_queue(row, brid).await;
            }
            Err(e) => return Err(e.into()),
        }
        match self.state.get(task_id, row.run_id).await? {
            Some(started) if started.state != RowState::Requested => {
                Box::pin(self.build_retried(&started, build_number)).await
            }
            _ => Ok(Outcome::NotActive),
        }
    }

    /// The build finished (or the request completed) with a final result:
    /// attach `public/properties.json` and the log, then resolve the run.
    /// CANCELLED cancels the task only if its run is still pending or running
    /// (the bridge itself stops builds only of runs already resolved).
    ///
    /// `number` names the build that finished (`None` for a completed
    /// request: the request's last finished build is asked of the master).
    /// Only the build that served the row's run resolves it: a later build
    /// means the run's own build ended RETRY and that is not applied yet (the
    /// events race across listeners), so the run is retried first and the
    /// finish goes to the next run; an earlier build's finish is a late copy
    /// and changes nothing.
    pub async fn build_finished(
        &self,
        row: &MappingRow,
        results: BuildResult,
        number: Option<i64>,
        properties: &BTreeMap<String, Value>,
        log_url: Option<&str>,
    ) -> BridgeResult<Outcome> {
        if !row.state.is_active() {
            return Ok(Outcome::AlreadyResolved);
        }
        if results == BuildResult::Retry {
            return self.build_retried(row, row.build_number).await;
        }
        if results == BuildResult::Cancelled {
            return self.cancelled_on_master(row).await;
        }
        let brid = BuildRequestId(row.build_request_id.unwrap_or_default() as u64);
        // The request's builds, when the event does not say which build
        // finished, carries no properties, or the run's start is not applied.
        let builds = if number.is_none() || properties.is_empty() || row.state != RowState::Running
        {
            self.request_builds(brid).await
        } else {
            None
        };
        let finished_builds = || builds.iter().flatten().filter(|b| b.finish_time.is_some());
        let number = number.or_else(|| {
            finished_builds()
                .next_back()
                .and_then(|b| i64::try_from(b.number).ok())
        });
        if let Some(n) = number {
            match (row.state, row.build_number) {
                (RowState::Running, Some(current)) if n < current => {
                    return Ok(Outcome::StaleBuild);
                }
                (RowState::Running, Some(current)) if n > current => {
                    let retried = self.build_retried(row, Some(current)).await?;
                    return self
                        .finished_on_next_run(row, brid, retried, n, results, properties, log_url)
                        .await;
                }
                (RowState::Requested, _) => {
                    // An earlier build of the request that no earlier run
                    // recorded served this run and ended RETRY.
                    let earlier = self.state.find_by_build_request(brid.0 as i64).await?;
                    let unrecorded = finished_builds()
                        .filter_map(|b| i64::try_from(b.number).ok())
                        .filter(|b| *b < n)
                        .find(|b| {
                            !earlier.iter().any(|r| {
                                r.run_id < row.run_id && r.build_number.is_some_and(|x| x >= *b)
                            })
                        });
                    if let Some(retried_build) = unrecorded {
                        let retried = self
                            .retried_before_started(row, brid, Some(retried_build))
                            .await?;
                        return self
                            .finished_on_next_run(
                                row, brid, retried, n, results, properties, log_url,
                            )
                            .await;
                    }
                }
                _ => {}
            }
        }
        let fetched = if properties.is_empty() {
            self.build_properties_of(brid, builds.as_deref(), number)
                .await
        } else {
            None
        };
        let properties = fetched.as_ref().unwrap_or(properties);
        let finished = BuildFinish {
            number,
            builds: builds.as_deref(),
            log_url,
        };
        self.resolve_finished(row, brid, results, properties, finished)
            .await
    }

    /// The finish of build `number` after `row`'s run was retried (outcome
    /// `retried`): the build served the next run, which is started on it and
    /// then resolved. If the next run is not there yet, the event is tried
    /// again later.
    #[allow(clippy::too_many_arguments)]
    async fn finished_on_next_run(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
        retried: Outcome,
        number: i64,
        results: BuildResult,
        properties: &BTreeMap<String, Value>,
        log_url: Option<&str>,
    ) -> BridgeResult<Outcome> {
        let next = self
            .state
            .current_for_build_request(brid.0 as i64)
            .await?
            .filter(|next| next.task_id == row.task_id && next.run_id > row.run_id);
        let Some(next) = next else {
            if retried == Outcome::RetriesExhausted {
                return Ok(retried);
            }
            return Err(BridgeError::NotYet(format!(
                "build {number} of request {brid} finished; the next run of task {} is not recorded yet",
                row.task_id
            )));
        };
        let build = StartedBuild {
            build_id: None,
            number: Some(number),
        };
        let (task_id, run_id) = (next.task_id.clone(), next.run_id);
        Box::pin(self.build_started(next, brid, build)).await?;
        match self.state.get(&task_id, run_id).await? {
            Some(started) => {
                Box::pin(self.build_finished(&started, results, Some(number), properties, log_url))
                    .await
            }
            None => Ok(Outcome::NotActive),
        }
    }

    /// Resolves the run of `row` with the final `results` of its build, after
    /// attaching the build's properties and log.
    async fn resolve_finished(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
        results: BuildResult,
        properties: &BTreeMap<String, Value>,
        finished: BuildFinish<'_>,
    ) -> BridgeResult<Outcome> {
        let task_id = row.task_id.as_str();
        let run_id = run_u32(row);
        let status = match self.queue.status(task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.state.forget_task(task_id).await?;
                return Ok(Outcome::TaskGone);
            }
            Err(e) => return Err(e.into()),
        };
        match status.run(run_id) {
            Some(run) if is_resolved(run) => {
                self.state
                    .mark_resolved(task_id, row.run_id, resolution_of(run), self.now())
                    .await?;
                return Ok(Outcome::AlreadyResolved);
            }
            Some(run) if run.state == RunState::Pending => {
                match self.queue.claim(task_id, run_id).await {
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => return self.settle_with_queue(row, brid).await,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {}
            None => return Ok(Outcome::NoSuchRun),
        }
        let fetched_log_url = properties
            .get("log_url")
            .and_then(|p| p.get(0))
            .and_then(Value::as_str);
        let log_url = finished.log_url.or(fetched_log_url);
        let build = self
            .finished_build_id(row, brid, finished.builds, finished.number)
            .await;
        let log = BuildLogSource {
            brid,
            build,
            number: finished.number.or(row.build_number),
            log_url,
            results,
        };
        self.attach_artifacts(task_id, run_id, status.expires, properties, &log)
            .await;
        let (call, resolution, label) = match results {
            BuildResult::Success => (
                self.queue.report_completed(task_id, run_id).await,
                RowResolution::Completed,
                "completed".to_owned(),
            ),
            BuildResult::Warnings | BuildResult::Failure => (
                self.queue.report_failed(task_id, run_id).await,
                RowResolution::Failed,
                "failed".to_owned(),
            ),
            BuildResult::Exception | BuildResult::Skipped => {
                // SKIPPED: the build did not do its work; nothing to report as
                // completed or failed, and nothing a retry would change.
                let reason = if results == BuildResult::Skipped {
                    ExceptionReason::ResourceUnavailable
                } else {
                    ExceptionReason::InternalError
                };
                let call = self.queue.report_exception(task_id, run_id, reason).await;
                (
                    call,
                    RowResolution::Exception,
                    format!("exception/{reason}"),
                )
            }
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
        Ok(Outcome::Resolved)
    }

    /// A request was cancelled on the Buildbot side (or its build ended
    /// CANCELLED): cancel the task if its run is still pending or running;
    /// if the run is already resolved, the bridge asked for it, and only the
    /// row is settled.
    pub async fn cancelled_on_master(&self, row: &MappingRow) -> BridgeResult<Outcome> {
        if !row.state.is_active() {
            return Ok(Outcome::AlreadyResolved);
        }
        let task_id = row.task_id.as_str();
        let status = match self.queue.status(task_id).await {
            Ok(status) => status,
            Err(e) if e.is_not_found() => {
                self.state.forget_task(task_id).await?;
                return Ok(Outcome::TaskGone);
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
            return Ok(Outcome::AlreadyResolved);
        }
        match self.queue.cancel(task_id).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        self.state
            .mark_resolved(task_id, row.run_id, RowResolution::Canceled, self.now())
            .await?;
        self.metrics.inc(
            "bbb_bridge_resolutions_total",
            "resolution=\"exception/canceled\"",
        );
        info!(task.id = task_id, run.id = row.run_id, build_request.id = ?row.build_request_id,
              "cancelled on the Buildbot side; task cancelled");
        Ok(Outcome::CancelledByMaster)
    }

    /// The builds of request `brid`, where the master can tell. A failure is
    /// logged and gives `None`: the run's resolution does not wait for it.
    pub(super) async fn request_builds(&self, brid: BuildRequestId) -> Option<Vec<BuildInfo>> {
        match self.master.request_state(brid).await {
            Ok(
                RequestState::Complete { builds, .. }
                | RequestState::Running { builds, .. }
                | RequestState::Pending { builds },
            ) => Some(builds),
            Ok(_) => None,
            Err(e) => {
                warn!(build_request.id = brid.0, error = %e, "cannot read the request's builds");
                None
            }
        }
    }

    /// The properties of build `number` of the request (its last finished
    /// build without a number), from `builds` or else the master. A failure
    /// is logged and gives `None`.
    pub(super) async fn build_properties_of(
        &self,
        brid: BuildRequestId,
        builds: Option<&[BuildInfo]>,
        number: Option<i64>,
    ) -> Option<BTreeMap<String, Value>> {
        let asked;
        let builds = match builds {
            Some(builds) => builds,
            None => {
                asked = self.request_builds(brid).await?;
                &asked[..]
            }
        };
        let build = builds
            .iter()
            .rev()
            .filter(|b| b.finish_time.is_some())
            .find(|b| number.is_none_or(|n| i64::try_from(b.number).ok() == Some(n)))?;
        match self.master.build_properties(build.build_id).await {
            Ok(properties) => properties,
            Err(e) => {
                warn!(build_request.id = brid.0, build.id = build.build_id.0, error = %e, "cannot read the build's properties");
                None
            }
        }
    }

    /// The id of the build that finished for `row`'s run (build `number`,
    /// or the request's last finished build without a number), for its log:
    /// the one the run's start recorded, else the one the master lists.
    async fn finished_build_id(
        &self,
        row: &MappingRow,
        brid: BuildRequestId,
        builds: Option<&[BuildInfo]>,
        number: Option<i64>,
    ) -> Option<BuildId> {
        if let Some(id) = row.build_id
            && (number.is_none() || number == row.build_number)
        {
            return u64::try_from(id).ok().map(BuildId);
        }
        let asked;
        let builds = match builds {
            Some(builds) => builds,
            None => {
                asked = self.request_builds(brid).await?;
                &asked[..]
            }
        };
        builds
            .iter()
            .rev()
            .filter(|b| b.finish_time.is_some())
            .find(|b| number.is_none_or(|n| i64::try_from(b.number).ok() == Some(n)))
            .map(|b| b.build_id)
    }

    /// Attaches `public/properties.json` (every build property as
    /// `name: [value, source]`), then the build's log as
    /// `public/logs/live_backing.log` ([`attach_log`](Self::attach_log)).
    /// A failure is logged: it must not keep the run unresolved.
    pub(super) async fn attach_artifacts(
        &self,
        task_id: &str,
        run_id: u32,
        expires: i64,
        properties: &BTreeMap<String, Value>,
        log: &BuildLogSource<'_>,
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
            && !e.is_conflict()
        {
            warn!(task.id = task_id, run.id = run_id, error = %e, "cannot attach properties.json");
        }
        self.attach_log(task_id, run_id, expires, log).await;
    }

    /// Attaches the build's log as `public/logs/live_backing.log`, the name
    /// Treeherder links every run's log by (and the native worker's): the
    /// text the master gives ([`LegacyMaster::fetch_build_log`]) uploaded
    /// as `text/plain; charset=utf-8`; where it gives none, a reference to
    /// the build's `http(s)` log URL; where there is none either, a short
    /// text saying which build it was and that its log could not be
    /// fetched, so the run's log link never leads nowhere. Attaching again
    /// (a retried finish) uploads the same text again, which the queue
    /// accepts; if the first attempt attached something else (the master
    /// could not be reached then), the queue refuses the change and the
    /// first one stays.
    ///
    /// [`LegacyMaster::fetch_build_log`]: bbb_buildbot::LegacyMaster::fetch_build_log
    async fn attach_log(&self, task_id: &str, run_id: u32, expires: i64, log: &BuildLogSource<'_>) {
        let text = match self.master.fetch_build_log(log.build, log.log_url).await {
            Ok(text) => text,
            Err(e) => {
                warn!(task.id = task_id, run.id = run_id, build_request.id = log.brid.0,
                      build.id = ?log.build, error = %e, "cannot fetch the build's log");
                None
            }
        };
        let url = log.log_url.filter(|u| {
            reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        });
        let (attached, kind) = match (text, url) {
            (Some(text), _) => (
                self.queue
                    .upload_artifact(
                        task_id,
                        run_id,
                        LOG_NAME,
                        LOG_CONTENT_TYPE,
                        expires,
                        text.into_bytes(),
                    )
                    .await,
                "master",
            ),
            (None, Some(url)) => {
                let content_type = if url.ends_with(".gz") {
                    "application/gzip"
                } else {
                    LOG_CONTENT_TYPE
                };
                (
                    self.queue
                        .reference_artifact(task_id, run_id, LOG_NAME, url, content_type, expires)
                        .await,
                    "reference",
                )
            }
            (None, None) => (
                self.queue
                    .upload_artifact(
                        task_id,
                        run_id,
                        LOG_NAME,
                        LOG_CONTENT_TYPE,
                        expires,
                        no_log_text(&self.settings.master, log).into_bytes(),
                    )
                    .await,
                "none",
            ),
        };
        match attached {
            Ok(()) => {
                self.metrics
                    .inc("bbb_bridge_logs_total", format!("source=\"{kind}\""));
                debug!(
                    task.id = task_id,
                    run.id = run_id,
                    source = kind,
                    "log attached"
                );
            }
            Err(e) if e.is_conflict() => {
                debug!(
                    task.id = task_id,
                    run.id = run_id,
                    "the run already has its log"
                );
            }
            Err(e) => {
                warn!(task.id = task_id, run.id = run_id, error = %e, "cannot attach the log");
            }
        }
    }
}

/// The name of a run's log: what Treeherder links as the job's log
/// (`live_backing_log`) and what the native worker uploads.
pub const LOG_NAME: &str = "public/logs/live_backing.log";

/// The content type of the log text the bridge uploads (as the native
/// worker's).
pub const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Which build finished, as the finish told it: its number, the request's
/// builds when they were read, and its log URL.
#[derive(Clone, Copy, Debug)]
struct BuildFinish<'a> {
    number: Option<i64>,
    builds: Option<&'a [BuildInfo]>,
    log_url: Option<&'a str>,
}

/// What the bridge knows of a finished build's log.
#[derive(Clone, Copy, Debug)]
pub(super) struct BuildLogSource<'a> {
    /// The build's request.
    pub(super) brid: BuildRequestId,
    /// The build's id, where known.
    pub(super) build: Option<BuildId>,
    /// The build's number, where known.
    pub(super) number: Option<i64>,
    /// Its log URL, where the finish or its properties gave one.
    pub(super) log_url: Option<&'a str>,
    /// How it ended.
    pub(super) results: BuildResult,
}

/// The log of a run whose build's log the master could not give: which
/// build it was and where its log would be. The same build gives the same
/// text, so a retried finish uploads it again unchanged.
fn no_log_text(master: &str, log: &BuildLogSource<'_>) -> String {
    format!(
        "bbb: the log of this build could not be fetched from its Buildbot master.\n\
         master: {master}\n\
         build request: {}\n\
         build: {}\n\
         result: {}\n\
         log URL: {}\n\
         The build's properties are in public/properties.json.\n",
        log.brid,
        log.number
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        log.results,
        log.log_url.unwrap_or("none"),
    )
}
