//! What the bridge calls: the [`LegacyMaster`] methods of the sandbox.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::SandboxMaster;
use super::config::SandboxBuilder;
use super::state::{
    BuildRecord, BuilderState, Request, Status, cancel_pending, request_stop, signal_builds,
};
use crate::common::{buildset_reason, normalize_branch};
use crate::error::{LegacyError, Result};
use crate::scheduler_db::encode_properties;
use crate::types::{
    BuildId, BuildRequestId, BuildRequestSpec, CancelOutcome, FoundRequest, RequestState,
    SourceStamp, StopOutcome, StopTarget,
};
use crate::{LegacyEventStream, LegacyMaster};

#[async_trait]
impl LegacyMaster for SandboxMaster {
    async fn builders(&self) -> Result<Option<Vec<String>>> {
        Ok(if self.shared.accept_any_builder {
            None
        } else {
            Some(self.shared.builder_names.clone())
        })
    }

    async fn submit(&self, spec: &BuildRequestSpec) -> Result<BuildRequestId> {
        // Refuses what the 0.8 schema cannot hold, as the scheduler-DB
        // adapter does, so the sandbox accepts no request a real master
        // would not.
        encode_properties(spec)?;
        let brid = {
            let mut state = self.shared.lock();
            if !state.builders.contains_key(&spec.buildername) {
                if !self.shared.accept_any_builder {
                    return Err(LegacyError::UnknownBuilder(spec.buildername.clone()));
                }
                state.builders.insert(
                    spec.buildername.clone(),
                    BuilderState::new(SandboxBuilder::new(spec.buildername.clone())),
                );
            }
            let brid = state.next_brid;
            state.next_brid += 1;
            let buildset_id = state.next_buildset;
            state.next_buildset += 1;
            let mut properties = spec.properties.clone();
            properties.insert("taskId".to_owned(), Value::String(spec.task_id.clone()));
            let request = Request {
                brid,
                buildset_id,
                task_id: spec.task_id.clone(),
                builder: spec.buildername.clone(),
                properties,
                sourcestamp: SourceStamp {
                    branch: spec.sourcestamp.branch.as_deref().map(normalize_branch),
                    ..spec.sourcestamp.clone()
                },
                reason: buildset_reason(&spec.task_id),
                priority: spec.priority,
                submitted_at: spec.submitted_at,
                status: Status::Pending,
                builds: Vec::new(),
            };
            let key = request.queue_key();
            if let Some(builder) = state.builders.get_mut(&spec.buildername) {
                builder.queue.insert(key);
            }
            state.requests.insert(brid, request);
            state
                .by_task
                .entry(spec.task_id.clone())
                .or_default()
                .push(brid);
            state.stats.submitted += 1;
            brid
        };
        tracing::info!(build_request.id = brid, task.id = %spec.task_id, run.id = spec.run_id, builder = %spec.buildername, priority = spec.priority, "sandbox request submitted");
        self.shared.wake.notify_one();
        Ok(BuildRequestId(brid))
    }

    async fn find_requests_for_task(&self, task_id: &str) -> Result<Vec<FoundRequest>> {
        let state = self.shared.lock();
        let Some(brids) = state.by_task.get(task_id) else {
            return Ok(Vec::new());
        };
        Ok(brids
            .iter()
            .filter_map(|brid| state.requests.get(brid))
            .map(|request| FoundRequest {
                build_request_id: BuildRequestId(request.brid),
                buildset_id: request.buildset_id,
                buildername: request.builder.clone(),
                submitted_at: request.submitted_at,
                complete: matches!(request.status, Status::Complete { .. }),
            })
            .collect())
    }

    async fn request_state(&self, id: BuildRequestId) -> Result<RequestState> {
        let state = self.shared.lock();
        let Some(request) = state.requests.get(&id.0) else {
            return Ok(RequestState::Unknown);
        };
        let builds = request.builds.iter().map(BuildRecord::info).collect();
        Ok(match request.status {
            Status::Pending => RequestState::Pending { builds },
            Status::Running { claimed_at } => RequestState::Running {
                master: Some(self.shared.master_name.clone()),
                claimed_at,
                builds,
            },
            Status::Complete {
                results,
                complete_at,
                claimed: true,
            } => RequestState::Complete {
                results,
                complete_at: Some(complete_at),
                builds,
            },
            Status::Complete {
                results,
                complete_at,
                claimed: false,
            } => RequestState::Cancelled {
                results,
                complete_at: Some(complete_at),
            },
        })
    }

    async fn cancel_request(&self, id: BuildRequestId) -> Result<CancelOutcome> {
        let mut state = self.shared.lock();
        let outcome = match state.requests.get(&id.0).map(|request| request.status) {
            None => CancelOutcome::NotFound,
            Some(Status::Complete { .. }) => CancelOutcome::AlreadyComplete,
            Some(Status::Running { .. }) => CancelOutcome::AlreadyClaimed,
            Some(Status::Pending) => {
                cancel_pending(&self.shared, &mut state, id.0);
                CancelOutcome::Cancelled
            }
        };
        tracing::info!(build_request.id = id.0, ?outcome, "sandbox cancel_request");
        Ok(outcome)
    }

    async fn stop_build(&self, target: StopTarget) -> Result<StopOutcome> {
        let mut state = self.shared.lock();
        let stopped = signal_builds(&mut state, target, request_stop);
        tracing::info!(?target, builds = ?stopped, "sandbox stop_build");
        Ok(if stopped.is_empty() {
            StopOutcome::NotRunning
        } else {
            StopOutcome::Requested(stopped)
        })
    }

    async fn finished_builds(
        &self,
        after: crate::FinishedCursor,
        limit: usize,
    ) -> Result<Vec<crate::FinishedBuild>> {
        Ok(self.read_finished_builds(after, limit))
    }

    async fn build_properties(&self, build: BuildId) -> Result<Option<BTreeMap<String, Value>>> {
        let state = self.shared.lock();
        Ok(state
            .requests
            .values()
            .flat_map(|request| &request.builds)
            .find(|record| record.build_id == build.0)
            .and_then(|record| record.properties.clone()))
    }

    /// The log of the finished build `build` ([`SandboxMaster::build_log`]'s
    /// text); the log URL is not needed (a `sandbox://` one cannot be
    /// fetched anyway).
    async fn fetch_build_log(
        &self,
        build: Option<BuildId>,
        _log_url: Option<&str>,
    ) -> Result<Option<String>> {
        Ok(build.and_then(|build| self.finished_build_log(build.0)))
    }

    /// A new subscriber that sees every event from now on, all with
    /// [`EventSource::Pulse`](crate::EventSource::Pulse). A subscriber that
    /// falls more than
    /// [`SandboxConfig::event_capacity`](super::SandboxConfig::event_capacity)
    /// events behind loses the oldest ones (a warning is logged), like any
    /// at-least-once source: reconcile with `request_state`. After
    /// [`SandboxMaster::shutdown`] the stream is empty.
    async fn events(&self) -> Result<LegacyEventStream> {
        let receiver = self
            .shared
            .lock()
            .events
            .as_ref()
            .map(|events| events.subscribe());
        let Some(receiver) = receiver else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let master = self.shared.master_name.clone();
        Ok(Box::pin(BroadcastStream::new(receiver).filter_map(
            move |item| {
                let event = match item {
                    Ok(event) => Some(event),
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        tracing::warn!(%master, missed, "a sandbox event subscriber fell behind and lost events");
                        None
                    }
                };
                futures::future::ready(event)
            },
        )))
    }
}
