//! The values exchanged through [`LegacyMaster`](crate::LegacyMaster).

use std::collections::BTreeMap;
use std::fmt;

use bbb_tcvalues::Priority;
use serde::{Deserialize, Serialize};

/// A build request id: `buildrequests.id` in a 0.8 scheduler DB (a "brid").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildRequestId(pub u64);

impl fmt::Display for BuildRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A build id: `builds.id` in a 0.8 scheduler DB (one row per request a
/// build satisfied; several rows share a build number when requests were
/// merged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildId(pub u64);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Buildbot result codes, `0..=6`, as Buildbot 0.8 (Mozilla's fork) and
/// every later Buildbot define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub enum BuildResult {
    /// 0: the build passed.
    Success,
    /// 1: the build passed with warnings.
    Warnings,
    /// 2: the build failed. Upstream 0.8 and Mozilla's self-serve agent also
    /// wrote 2 when they cancelled a pending request.
    Failure,
    /// 3: the build was skipped.
    Skipped,
    /// 4: the build hit an infrastructure exception.
    Exception,
    /// 5: the build will be retried: the master puts the same request back
    /// in the queue, so the same build request runs again.
    Retry,
    /// 6: the build (or request) was cancelled.
    Cancelled,
}

impl BuildResult {
    /// Every result, in code order.
    pub const ALL: [BuildResult; 7] = [
        BuildResult::Success,
        BuildResult::Warnings,
        BuildResult::Failure,
        BuildResult::Skipped,
        BuildResult::Exception,
        BuildResult::Retry,
        BuildResult::Cancelled,
    ];

    /// The numeric code Buildbot stores (`0..=6`).
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The result for a numeric code, or `None` outside `0..=6`.
    pub fn from_code(code: i64) -> Option<BuildResult> {
        usize::try_from(code)
            .ok()
            .and_then(|index| Self::ALL.get(index).copied())
    }

    /// The upper-case name Buildbot uses (`SUCCESS`, `RETRY`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BuildResult::Success => "SUCCESS",
            BuildResult::Warnings => "WARNINGS",
            BuildResult::Failure => "FAILURE",
            BuildResult::Skipped => "SKIPPED",
            BuildResult::Exception => "EXCEPTION",
            BuildResult::Retry => "RETRY",
            BuildResult::Cancelled => "CANCELLED",
        }
    }

    /// Parses a name (case-insensitive, `CANCELED` accepted) or a numeric code.
    pub fn parse(text: &str) -> Option<BuildResult> {
        let text = text.trim();
        if let Ok(code) = text.parse::<i64>() {
            return Self::from_code(code);
        }
        let upper = text.to_ascii_uppercase();
        if upper == "CANCELED" {
            return Some(BuildResult::Cancelled);
        }
        Self::ALL.into_iter().find(|result| result.name() == upper)
    }
}

impl fmt::Display for BuildResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<i64> for BuildResult {
    type Error = String;

    fn try_from(code: i64) -> Result<Self, Self::Error> {
        BuildResult::from_code(code).ok_or_else(|| format!("unknown Buildbot result code {code}"))
    }
}

impl From<BuildResult> for i64 {
    fn from(result: BuildResult) -> i64 {
        result.code()
    }
}

/// The source stamp of a build request: what to build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// Branch, as a repository path (`integration/mozilla-inbound`) or a full
    /// URL; the scheduler-DB adapter stores the URL's path without slashes,
    /// as Mozilla's bridge did. `None` means the default branch.
    pub branch: Option<String>,
    /// Revision; `None` means the latest.
    pub revision: Option<String>,
    /// Repository URL; empty when unknown.
    pub repository: String,
    /// Project; empty when unknown.
    pub project: String,
}

/// Everything needed to inject one build request for one task run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildRequestSpec {
    /// The task id; stored as the `taskId` property, in the buildset's
    /// `external_idstring` (`taskId:<taskId>`) and in its reason.
    pub task_id: String,
    /// The run the request is for. It is not written to the master (a RETRY
    /// reuses the request for the next run); it is used in logs.
    pub run_id: u32,
    /// The builder to run on.
    pub buildername: String,
    /// Build properties; each becomes a `buildset_properties` row with the
    /// value `[value, "bbb"]`. A `taskId` entry is overwritten.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// What to build.
    pub sourcestamp: SourceStamp,
    /// Request priority; higher runs first. See [`priority_for_task`].
    pub priority: i32,
    /// Epoch seconds of the run's `scheduled` time (not the task's
    /// `created`: tasks with dependencies become pending much later, and
    /// masters rank requests by age).
    pub submitted_at: i64,
}

impl BuildRequestSpec {
    /// Logs (INFO) that the master stored the request for this spec as
    /// `brid`, in buildset `buildset_id` when the master said which.
    pub(crate) fn log_submitted(&self, brid: BuildRequestId, buildset_id: Option<u64>) {
        tracing::info!(
            task.id = %self.task_id,
            run.id = self.run_id,
            build_request.id = brid.0,
            buildset.id = buildset_id,
            builder = %self.buildername,
            "submitted build request"
        );
    }
}

/// Maps a TaskCluster task priority to a build request priority. `high` maps
/// to 1 as in Mozilla's bridge, `very-high` to 2 and `highest` to 3; every
/// other level (and anything unknown) maps to 0, Buildbot's default. The
/// levels below `medium` do not go below 0 because `lowest` is the queue's
/// default priority: a task that says nothing must not rank behind every
/// request the masters' own schedulers make.
pub fn priority_for_task(task_priority: Priority) -> i32 {
    match task_priority {
        Priority::Highest => 3,
        Priority::VeryHigh => 2,
        Priority::High => 1,
        Priority::Medium | Priority::Low | Priority::VeryLow | Priority::Lowest => 0,
    }
}

/// A build request found by [`LegacyMaster::find_requests_for_task`](crate::LegacyMaster::find_requests_for_task).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundRequest {
    /// The request.
    pub build_request_id: BuildRequestId,
    /// Its buildset.
    pub buildset_id: u64,
    /// Its builder.
    pub buildername: String,
    /// Its `submitted_at` (the scheduled time of the run it was made for:
    /// compare it with the run's `scheduled` to tell reruns apart).
    pub submitted_at: i64,
    /// Whether the request is complete.
    pub complete: bool,
}

/// One build of a request, as the scheduler DB records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// `builds.id`.
    pub build_id: BuildId,
    /// The per-builder build number.
    pub number: u64,
    /// Epoch seconds when it started.
    pub start_time: i64,
    /// Epoch seconds when it finished, if it has.
    pub finish_time: Option<i64>,
}

/// What the master says about a build request now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestState {
    /// Not claimed by any master yet (or requeued after a RETRY).
    Pending {
        /// Builds of earlier attempts (non-empty after a RETRY).
        builds: Vec<BuildInfo>,
    },
    /// Claimed by a master: a build is running or about to start.
    Running {
        /// The claiming master (`claimed_by_name`).
        master: Option<String>,
        /// Epoch seconds of the claim.
        claimed_at: i64,
        /// Builds of this request, the running one last.
        builds: Vec<BuildInfo>,
    },
    /// Complete, after having been claimed (a build ran and finished).
    Complete {
        /// The request's result.
        results: BuildResult,
        /// Epoch seconds of completion.
        complete_at: Option<i64>,
        /// Builds of this request.
        builds: Vec<BuildInfo>,
    },
    /// Complete without being claimed: cancelled before it started (or
    /// before its retry started). Mozilla's self-serve agent wrote FAILURE,
    /// bbb and Buildbot's own cancel write CANCELLED.
    Cancelled {
        /// The stored result (usually CANCELLED or FAILURE).
        results: BuildResult,
        /// Epoch seconds of cancellation.
        complete_at: Option<i64>,
    },
    /// No such request.
    Unknown,
}

/// What [`LegacyMaster::cancel_request`](crate::LegacyMaster::cancel_request) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    /// The pending request is now cancelled; it will not start.
    Cancelled,
    /// The cancellation was handed to an asynchronous service (self-serve),
    /// which answered that it accepted it; confirm with `request_state`.
    Requested,
    /// The request is claimed (running): nothing was changed. Use
    /// `stop_build` to stop its build.
    AlreadyClaimed,
    /// The request was already complete: nothing was changed.
    AlreadyComplete,
    /// No such request.
    NotFound,
}

/// What to stop with [`LegacyMaster::stop_build`](crate::LegacyMaster::stop_build).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopTarget {
    /// Every unfinished build of this request.
    Request(BuildRequestId),
    /// One build.
    Build(BuildId),
}

/// What [`LegacyMaster::stop_build`](crate::LegacyMaster::stop_build) did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopOutcome {
    /// A stop was sent for these builds; each finishes CANCELLED shortly
    /// (watch the events or `request_state`).
    Requested(Vec<BuildId>),
    /// Nothing is running for the target.
    NotRunning,
}

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventSource {
    /// A Pulse message on `exchange/build`.
    Pulse,
    /// Polling the scheduler DB.
    DbPoll,
    /// Polling a Buildbot master's REST API ([`RestMaster`](crate::RestMaster)).
    RestPoll,
}

/// A change on the legacy master, as seen by the bridge.
///
/// Events are delivered **at least once and in any order**: the same change
/// can arrive from Pulse and from DB polling, twice from either, and a
/// finish can arrive before its start. Handlers must therefore be
/// idempotent on the brid and the build (see [`LegacyEvent::dedupe_key`]),
/// and treat [`LegacyEvent::RequestCompleted`] as the authority for a
/// request's outcome, build events as progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LegacyEvent {
    /// A build started for these requests (several when the master merged
    /// requests).
    BuildStarted {
        /// The requests the build satisfies.
        build_request_ids: Vec<BuildRequestId>,
        /// The builder's name.
        builder: String,
        /// The per-builder build number.
        build_number: u64,
        /// `builds.id` rows of this build, when known (DB polling knows
        /// them; Pulse messages do not carry them).
        build_ids: Vec<BuildId>,
        /// The master running it, when known (Pulse: `_meta.master_name`;
        /// DB polling: `claimed_by_name`).
        master: Option<String>,
        /// The `taskId` build property, when the event carries properties.
        task_id: Option<String>,
        /// Where the event came from.
        source: EventSource,
    },
    /// A build finished. With [`BuildResult::Retry`] the requests go back to
    /// the queue and will start again (with a new build number).
    BuildFinished {
        /// The requests the build satisfied.
        build_request_ids: Vec<BuildRequestId>,
        /// The builder's name.
        builder: String,
        /// The per-builder build number.
        build_number: u64,
        /// `builds.id` rows of this build, when known.
        build_ids: Vec<BuildId>,
        /// The build's result.
        results: BuildResult,
        /// The master that ran it, when known.
        master: Option<String>,
        /// The `taskId` build property, when known.
        task_id: Option<String>,
        /// Build properties as `name -> [value, source]`, when the event
        /// carries them (Pulse); empty otherwise.
        properties: BTreeMap<String, serde_json::Value>,
        /// The uploaded log's URL (`log_url` property), when known.
        log_url: Option<String>,
        /// Where the event came from.
        source: EventSource,
    },
    /// The request was put back in the queue (its build ended RETRY); the
    /// same brid will start again.
    RequestRequeued {
        /// The request.
        build_request_id: BuildRequestId,
        /// Where the event came from.
        source: EventSource,
    },
    /// The request is complete: final for this brid.
    RequestCompleted {
        /// The request.
        build_request_id: BuildRequestId,
        /// Its result.
        results: BuildResult,
        /// Whether it was claimed when it completed. `false` means it was
        /// cancelled before (re)starting: `complete=1 AND claimed_at=0`.
        claimed: bool,
        /// Where the event came from.
        source: EventSource,
    },
}

impl LegacyEvent {
    /// The build requests this event is about.
    pub fn build_request_ids(&self) -> Vec<BuildRequestId> {
        match self {
            LegacyEvent::BuildStarted {
                build_request_ids, ..
            }
            | LegacyEvent::BuildFinished {
                build_request_ids, ..
            } => build_request_ids.clone(),
            LegacyEvent::RequestRequeued {
                build_request_id, ..
            }
            | LegacyEvent::RequestCompleted {
                build_request_id, ..
            } => vec![*build_request_id],
        }
    }

    /// Where the event came from.
    pub fn source(&self) -> EventSource {
        match self {
            LegacyEvent::BuildStarted { source, .. }
            | LegacyEvent::BuildFinished { source, .. }
            | LegacyEvent::RequestRequeued { source, .. }
            | LegacyEvent::RequestCompleted { source, .. } => *source,
        }
    }

    /// A key equal for every copy of the same change, whatever its source:
    /// `started/<builder>/<number>`, `finished/<builder>/<number>`,
    /// `completed/<brid>`. Useful to drop duplicates cheaply; correctness
    /// must still come from idempotent handlers, because keys are only
    /// remembered for so long. `requeued/<brid>` is not unique over time (a
    /// request can be requeued several times, each followed by a new
    /// `started/...`), so dedupe it only within a short window.
    pub fn dedupe_key(&self) -> String {
        match self {
            LegacyEvent::BuildStarted {
                builder,
                build_number,
                ..
            } => format!("started/{builder}/{build_number}"),
            LegacyEvent::BuildFinished {
                builder,
                build_number,
                ..
            } => format!("finished/{builder}/{build_number}"),
            LegacyEvent::RequestRequeued {
                build_request_id, ..
            } => format!("requeued/{build_request_id}"),
            LegacyEvent::RequestCompleted {
                build_request_id, ..
            } => format!("completed/{build_request_id}"),
        }
    }
}
