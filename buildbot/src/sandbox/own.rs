//! The sandbox master's own scheduling and its finished builds: a build
//! request submitted as Buildbot's own schedulers would (no task behind it),
//! and the reading of finished builds the migration record polls.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SandboxMaster;
use super::config::SandboxBuilder;
use super::state::{BuilderState, Request, Status};
use crate::common::normalize_branch;
use crate::error::{LegacyError, Result};
use crate::finished::{FinishedBuild, FinishedCursor, property_text, task_of_reason};
use crate::types::{BuildId, BuildRequestId, SourceStamp};

/// A build request the master's own schedulers make (a change on a branch,
/// a nightly): no task, the reason its scheduler gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnRequest {
    /// The builder to run on.
    pub buildername: String,
    /// What to build (the branch is stored as the scheduler-DB adapter
    /// stores it).
    pub sourcestamp: SourceStamp,
    /// Its properties, plain JSON values; `sim_result` and
    /// `sim_duration_ms` script the build as for any request.
    pub properties: BTreeMap<String, Value>,
    /// The buildset's reason (e.g. `scheduler`).
    pub reason: String,
    /// Its priority (higher runs first).
    pub priority: i32,
}

impl SandboxMaster {
    /// Submits a request as one of the master's own schedulers would: it is
    /// queued and built like any other, but names no task, so the bridge
    /// never hears of it (its events carry no task id) and the migration
    /// record counts its builds as Buildbot's own. Refused for an unknown
    /// builder (unless any builder is accepted) and after `shutdown`.
    pub fn schedule(&self, request: OwnRequest) -> Result<BuildRequestId> {
        let brid = {
            let mut state = self.shared.lock();
            if state.shut_down {
                return Err(LegacyError::Invalid(
                    "the sandbox master is shut down".into(),
                ));
            }
            if !state.builders.contains_key(&request.buildername) {
                if !self.shared.accept_any_builder {
                    return Err(LegacyError::UnknownBuilder(request.buildername.clone()));
                }
                state.builders.insert(
                    request.buildername.clone(),
                    BuilderState::new(SandboxBuilder::new(request.buildername.clone())),
                );
            }
            let brid = state.next_brid;
            state.next_brid += 1;
            let buildset_id = state.next_buildset;
            state.next_buildset += 1;
            let stored = Request {
                brid,
                buildset_id,
                task_id: String::new(),
                builder: request.buildername.clone(),
                properties: request.properties,
                sourcestamp: SourceStamp {
                    branch: request.sourcestamp.branch.as_deref().map(normalize_branch),
                    ..request.sourcestamp
                },
                reason: request.reason,
                priority: request.priority,
                submitted_at: self.shared.clock.now_secs(),
                status: Status::Pending,
                builds: Vec::new(),
            };
            let key = stored.queue_key();
            if let Some(builder) = state.builders.get_mut(&request.buildername) {
                builder.queue.insert(key);
            }
            state.requests.insert(brid, stored);
            state.stats.submitted += 1;
            brid
        };
        tracing::info!(build_request.id = brid, builder = %request.buildername, "sandbox request scheduled by the master");
        self.shared.wake.notify_one();
        Ok(BuildRequestId(brid))
    }

    /// Finished builds after `after` by (finish time, build id), at most
    /// `limit`; a bridged request's builds name its task.
    pub(super) fn read_finished_builds(
        &self,
        after: FinishedCursor,
        limit: usize,
    ) -> Vec<FinishedBuild> {
        let state = self.shared.lock();
        let mut builds: Vec<FinishedBuild> = Vec::new();
        for request in state.requests.values() {
            let task_id = Some(request.task_id.clone())
                .filter(|t| !t.is_empty())
                .or_else(|| task_of_reason(&request.reason))
                .or_else(|| request.properties.get("taskId").and_then(property_text));
            for record in &request.builds {
                let Some(finished) = record.finish_time else {
                    continue;
                };
                if !after.is_before(finished, record.build_id) {
                    continue;
                }
                builds.push(FinishedBuild {
                    build_id: BuildId(record.build_id),
                    builder: request.builder.clone(),
                    number: record.number,
                    branch: request.sourcestamp.branch.clone(),
                    revision: request.sourcestamp.revision.clone(),
                    results: record.results,
                    started: record.start_time,
                    finished,
                    task_id: task_id.clone(),
                });
            }
        }
        builds.sort_by_key(|b| (b.finished, b.build_id));
        builds.truncate(limit);
        builds
    }
}
