//! The bridge's shared context and every action it takes on a task run.
//!
//! The TC listener, the Buildbot listener and the reflector all act through
//! [`Bridge`]: each action reads the mapping row, does its effects on the
//! legacy master and the queue, and then records the outcome with one of the
//! guarded transitions of [`StateDb`]. Effects come before the record, so an
//! action cut short (a crash, an error) is simply done again by the next
//! delivery of the same message or by the reflector; every action is
//! idempotent, so doing it twice is harmless.
//!
//! The actions are grouped by who calls them: [`pending`] (the TC listener on
//! task-pending), [`exception`] (the TC listener on task-exception),
//! [`builds`] (the Buildbot listener on build events) and [`reconcile`] (the
//! reflector).

use std::sync::Arc;
use std::time::Instant;

use bbb_buildbot::{LegacyError, LegacyMaster};
use tracing::{Instrument, debug};

use bbb_state::{MappingRow, RowResolution, StateDb};
use bbb_tcvalues::{ReasonResolved, RunState};

mod builds;
mod exception;
mod pending;
mod reconcile;

use crate::metrics::Metrics;
use crate::payload::BuilderRules;
use crate::queue_client::{QueueClient, RunInfo, TcError};

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

/// The source of "now": the clock the queue reads too (tests advance it).
pub use bbb_clock::Clock;

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

pub use crate::outcome::Outcome;
pub use builds::{LOG_CONTENT_TYPE, LOG_NAME};

fn resolution_of(run: &RunInfo) -> RowResolution {
    match (run.state, run.reason_resolved) {
        (RunState::Completed, _) => RowResolution::Completed,
        (RunState::Failed, _) => RowResolution::Failed,
        (_, Some(ReasonResolved::Canceled)) => RowResolution::Canceled,
        _ => RowResolution::Exception,
    }
}

fn is_resolved(run: &RunInfo) -> bool {
    run.state.is_resolved()
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
        Bridge::with_clock(queue, state, master, settings, metrics, Clock::system())
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
        self.clock.now_ms()
    }
}

impl Bridge {
    /// Runs one action inside a `bridge_action` span (the action's kind and the
    /// ids of [`ActionIds`], so every log line it writes names its task, run
    /// and build request), times it for the metrics, counts errors, and
    /// returns its result. The span's `outcome` and `duration_ms` are
    /// recorded when it ends, in a DEBUG event.
    pub async fn timed<F>(&self, kind: &str, ids: ActionIds<'_>, action: F) -> BridgeResult<Outcome>
    where
        F: std::future::Future<Output = BridgeResult<Outcome>>,
    {
        let span = tracing::info_span!(
            "bridge_action",
            action = kind,
            task.id = ids.task_id,
            run.id = ids.run_id,
            build_request.id = ids.build_request_id,
        );
        let start = Instant::now();
        let result = action.instrument(span.clone()).await;
        let elapsed = start.elapsed();
        let outcome = match &result {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "error",
        };
        self.metrics.event(kind, outcome, elapsed);
        span.in_scope(|| {
            debug!(
                outcome,
                duration_ms = elapsed.as_millis() as u64,
                "bridge action done"
            )
        });
        result
    }
}

/// What a bridge action is about, for its span: whichever of the task, run
/// and build request the caller knows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActionIds<'a> {
    /// The task.
    pub task_id: Option<&'a str>,
    /// The run.
    pub run_id: Option<i64>,
    /// The build request.
    pub build_request_id: Option<u64>,
}

impl<'a> ActionIds<'a> {
    /// The ids of a mapping row.
    pub fn of_row(row: &'a MappingRow) -> ActionIds<'a> {
        ActionIds {
            task_id: Some(&row.task_id),
            run_id: Some(row.run_id),
            build_request_id: row.build_request_id.and_then(|b| u64::try_from(b).ok()),
        }
    }
}
