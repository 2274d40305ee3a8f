//! The row type, its states and the outcomes of the operations.

use crate::error::StateError;
use std::fmt;
use std::str::FromStr;

/// Where a mapping row stands. Stored as lower-case text in `mappings.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowState {
    /// Inserted by a TC listener; no build request recorded yet.
    Pending,
    /// A build request is recorded; no build has started for this run.
    Requested,
    /// A build started and the run is claimed; `taken_until` is set.
    Running,
    /// The build ended RETRY: Buildbot resubmitted the same build request, the run is
    /// being resolved `exception/worker-shutdown` and the next run inherits the request.
    Retrying,
    /// Final: the run is resolved (or its request moved on). Kept for the retention period.
    Resolved,
}

impl RowState {
    /// Every state, in lifecycle order.
    pub const ALL: [RowState; 5] = [
        RowState::Pending,
        RowState::Requested,
        RowState::Running,
        RowState::Retrying,
        RowState::Resolved,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Requested => "requested",
            RowState::Running => "running",
            RowState::Retrying => "retrying",
            RowState::Resolved => "resolved",
        }
    }

    /// Whether the row still needs attention (every state but [`RowState::Resolved`]).
    pub fn is_active(self) -> bool {
        self != RowState::Resolved
    }
}

impl fmt::Display for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RowState {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        RowState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StateError::Corrupt(format!("unknown state {s:?}")))
    }
}

/// How a row came to [`RowState::Resolved`]. Stored as text in `mappings.resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowResolution {
    /// Reported completed (build SUCCESS).
    Completed,
    /// Reported failed (build WARNINGS or FAILURE).
    Failed,
    /// Reported exception (build EXCEPTION, invalid payload, deadline, ...).
    Exception,
    /// Cancelled, on either side.
    Canceled,
    /// The row's build request moved on to a later run of the same task (RETRY, or a
    /// rerun while the request still waited). Set by the carry-over itself.
    CarriedOver,
}

impl RowResolution {
    /// Every resolution.
    pub const ALL: [RowResolution; 5] = [
        RowResolution::Completed,
        RowResolution::Failed,
        RowResolution::Exception,
        RowResolution::Canceled,
        RowResolution::CarriedOver,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RowResolution::Completed => "completed",
            RowResolution::Failed => "failed",
            RowResolution::Exception => "exception",
            RowResolution::Canceled => "canceled",
            RowResolution::CarriedOver => "carried-over",
        }
    }
}

impl fmt::Display for RowResolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RowResolution {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        RowResolution::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| StateError::Corrupt(format!("unknown resolution {s:?}")))
    }
}

/// One row of `mappings`: a task run and the Buildbot build request that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingRow {
    /// Surrogate key, used by leases.
    pub id: i64,
    /// TaskCluster taskId.
    pub task_id: String,
    /// TaskCluster runId.
    pub run_id: i64,
    /// Where the row stands.
    pub state: RowState,
    /// Buildbot `buildrequests.id`, once injected (or carried over from an earlier run).
    pub build_request_id: Option<i64>,
    /// Buildbot build id, once a build started (when the event knew it).
    pub build_id: Option<i64>,
    /// The per-builder number of the build serving this run, once one started. A RETRY
    /// event names its build by number, so it is applied only to the run that build served.
    pub build_number: Option<i64>,
    /// The Buildbot master (or bridge instance) the row was inserted for.
    pub master: String,
    /// The task's deadline (ms); the same for every run of a task.
    pub deadline: i64,
    /// When the row was inserted (ms).
    pub created: i64,
    /// When the row last changed state or values (ms).
    pub updated: i64,
    /// The claim's `takenUntil` (ms), while running.
    pub taken_until: Option<i64>,
    /// How the row was resolved.
    pub resolution: Option<RowResolution>,
    /// When the row was resolved (ms); drives retention.
    pub resolved_at: Option<i64>,
    /// The lease: nobody else takes the row in a batch before this time (ms); 0 = free.
    pub leased_until: i64,
    /// Who holds (or last held) the lease.
    pub leased_by: Option<String>,
}

/// The build that started for a run ([`crate::StateDb::mark_started`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartedBuild {
    /// Its build id (`builds.id`), when the event knew it.
    pub build_id: Option<i64>,
    /// Its per-builder build number, when the event knew it.
    pub number: Option<i64>,
}

/// What to insert with [`crate::StateDb::claim_slot`].
#[derive(Clone, Debug)]
pub struct NewSlot<'a> {
    /// TaskCluster taskId.
    pub task_id: &'a str,
    /// TaskCluster runId (the pending run).
    pub run_id: i64,
    /// The Buildbot master the request will be injected into.
    pub master: &'a str,
    /// The task's deadline (ms).
    pub deadline: i64,
    /// The bridge instance that inserts; it holds the row's lease while it injects.
    pub instance: &'a str,
    /// Now (ms).
    pub now: i64,
    /// How long the inserter may take to inject before a reflector re-drives the row (ms).
    pub inject_lease_ms: i64,
}

/// The outcome of [`crate::StateDb::claim_slot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotClaim {
    /// This call inserted the row ([`RowState::Pending`], leased to the caller): inject a
    /// build request, then record it with [`crate::StateDb::set_build_request`].
    /// `previous` is the task's newest earlier run's row, if any, so the caller can
    /// decide to reuse a request that still waits ([`crate::StateDb::reuse_for_rerun`]).
    New {
        /// The inserted row.
        row: MappingRow,
        /// The newest earlier run's row.
        previous: Option<MappingRow>,
    },
    /// This call inserted the row and gave it the build request of the previous run,
    /// which ended RETRY ([`RowState::Retrying`]): inject nothing.
    CarriedOver {
        /// The inserted row, [`RowState::Requested`].
        row: MappingRow,
        /// The previous run's row, now [`RowState::Resolved`] / [`RowResolution::CarriedOver`].
        previous: MappingRow,
    },
    /// The row already existed (a duplicate delivery or another instance): inject nothing.
    Existing(MappingRow),
}

impl SlotClaim {
    /// The (task, run) row, whatever the outcome.
    pub fn row(&self) -> &MappingRow {
        match self {
            SlotClaim::New { row, .. } | SlotClaim::CarriedOver { row, .. } => row,
            SlotClaim::Existing(row) => row,
        }
    }
}

/// The outcome of a state change on one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// This call changed the row; here it is afterwards.
    Applied(MappingRow),
    /// The row already said so (a duplicate event); nothing was written.
    Unchanged(MappingRow),
    /// The row's state or values forbid the change (e.g. a different build request is
    /// recorded, or the run is resolved); nothing was written.
    Refused(MappingRow),
    /// There is no such row.
    NotFound,
}

impl Change {
    /// The row, unless there is none.
    pub fn row(&self) -> Option<&MappingRow> {
        match self {
            Change::Applied(r) | Change::Unchanged(r) | Change::Refused(r) => Some(r),
            Change::NotFound => None,
        }
    }

    /// Whether the row now reflects the change ([`Change::Applied`] or [`Change::Unchanged`]).
    pub fn holds(&self) -> bool {
        matches!(self, Change::Applied(_) | Change::Unchanged(_))
    }
}

/// A reflector's request for a batch: rows are leased to `owner` until
/// `now + duration_ms`, so no other reflector takes them in that time.
#[derive(Clone, Debug)]
pub struct Lease<'a> {
    /// The reflector instance.
    pub owner: &'a str,
    /// Now (ms).
    pub now: i64,
    /// Lease length (ms): also how long before an unreleased row is offered again.
    pub duration_ms: i64,
    /// At most this many rows.
    pub limit: i64,
}
