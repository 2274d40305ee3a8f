#![doc = include_str!("../README.md")]

mod builders;
pub mod buildlog;
mod common;
mod error;
mod events;
mod finished;
pub mod messages;
mod rest;
pub mod sandbox;
mod scheduler_db;
pub mod schema;
pub mod script;
pub mod simulator;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use crate::builders::BuilderSource;
pub use crate::buildlog::{BuildLog, LogStep};
pub use crate::common::{PollOptions, PulseOptions};
pub use crate::error::{LegacyError, Result};
pub use crate::events::EventStream;
pub use crate::finished::{FinishedBuild, FinishedCursor, task_of_reason};
pub use crate::rest::{
    DEFAULT_PROPERTIES_PARAMETER, DEFAULT_SCHEDULER, REPORTER_BINDINGS, RestAuth, RestMaster,
    RestMasterConfig, SUBMITTED_AT_PROPERTY,
};
pub use crate::scheduler_db::{SchedulerDb, SchedulerDbConfig};
pub use crate::types::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, EventSource,
    FoundRequest, LegacyEvent, RequestState, SourceStamp, StopOutcome, StopTarget,
    priority_for_task,
};

/// A boxed stream of events, as returned by [`LegacyMaster::events`].
pub type LegacyEventStream = Pin<Box<dyn Stream<Item = LegacyEvent> + Send + 'static>>;

/// A legacy Buildbot master, as the bridge sees it.
///
/// The bridge's listeners and reflector are written against this trait only;
/// [`SchedulerDb`] implements it for a Buildbot 0.8 scheduler database and
/// [`RestMaster`] for a Buildbot 4 master's REST API. It is object-safe:
/// `Arc<dyn LegacyMaster>` is the usual way to hold one.
///
/// Contract, for every implementation:
///
/// - **Injection is atomic and findable.** [`submit`](Self::submit) either
///   creates one runnable build request or none, and the request can later be
///   found by task id with [`find_requests_for_task`](Self::find_requests_for_task),
///   so a caller that crashed after the injection committed but before it
///   recorded the brid can recover it instead of injecting twice.
/// - **Cancelling never touches running work.**
///   [`cancel_request`](Self::cancel_request) cancels a *pending* request
///   only, with a guard evaluated by the master's storage, so it cannot race
///   with a claim; a running build is stopped with
///   [`stop_build`](Self::stop_build) and then finishes CANCELLED.
/// - **Events are at least once, in any order.** [`events`](Self::events)
///   merges every source the adapter has; each event names its brids and
///   build so handlers can be idempotent, and
///   [`LegacyEvent::RequestCompleted`] is the authority for the outcome.
///   Consumers should also reconcile with [`request_state`](Self::request_state)
///   (what the reflector does), because no event source survives every
///   outage.
#[async_trait]
pub trait LegacyMaster: Send + Sync {
    /// The builders this master accepts, or `None` when no list is configured
    /// (then every builder is accepted). May fetch and cache a remote list.
    async fn builders(&self) -> Result<Option<Vec<String>>>;

    /// Whether `buildername` is accepted: it is in [`builders`](Self::builders),
    /// or no list is configured.
    async fn accepts_builder(&self, buildername: &str) -> Result<bool> {
        Ok(match self.builders().await? {
            Some(list) => list.iter().any(|name| name == buildername),
            None => true,
        })
    }

    /// Injects one build request for a task run and returns its id. Fails
    /// with [`LegacyError::UnknownBuilder`] for a builder that is not
    /// accepted, without writing anything.
    async fn submit(&self, spec: &BuildRequestSpec) -> Result<BuildRequestId>;

    /// Every build request injected for `task_id` (oldest first): reruns of
    /// a task create one request per run, told apart by `submitted_at`.
    async fn find_requests_for_task(&self, task_id: &str) -> Result<Vec<FoundRequest>>;

    /// The request's current state.
    async fn request_state(&self, id: BuildRequestId) -> Result<RequestState>;

    /// Cancels a request that no master has claimed. A claimed or complete
    /// request is left alone (see [`CancelOutcome`]).
    async fn cancel_request(&self, id: BuildRequestId) -> Result<CancelOutcome>;

    /// Asks the master to stop a running build (or every running build of a
    /// request). The build then finishes CANCELLED.
    async fn stop_build(&self, target: StopTarget) -> Result<StopOutcome>;

    /// Every property of a finished build, as `name: [value, source]`, for
    /// a build-finished that arrived without them (a request-completed event,
    /// or a finish the reflector catches up). `None` where the master keeps
    /// none to ask for: Buildbot 0.8's properties travel only in its build
    /// messages.
    async fn build_properties(
        &self,
        _build: BuildId,
    ) -> Result<Option<std::collections::BTreeMap<String, serde_json::Value>>> {
        Ok(None)
    }

    /// The text of a finished build's log, for the bridge to store as the
    /// run's `public/logs/live_backing.log`: `build` is the build's id where
    /// it is known, `log_url` the URL of its log that its finish carried (a
    /// 0.8 master's `log_uploaded` message). `None` when the master cannot
    /// give it (no such build, a build still running, a log that was never
    /// uploaded): the bridge then falls back to referencing `log_url`. Asking
    /// twice gives the same text.
    ///
    /// The sandbox renders its build's steps ([`BuildLog`]); Buildbot 4's
    /// REST adapter reads each step's logs from the data API; the 0.8
    /// adapter downloads `log_url` (`http`/`https`, gunzipped when it is
    /// gzip). Without an override, no master gives a log.
    async fn fetch_build_log(
        &self,
        _build: Option<BuildId>,
        _log_url: Option<&str>,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    /// Up to `limit` finished builds after `after`, in the order (finish
    /// time, build id), with their results, branch, revision and the task of
    /// the bridge's requests (for the migration record, which skips those
    /// and records the builds the master ran by itself). A build whose
    /// outcome the master has not written yet comes with `results: None`.
    /// Reading again from an earlier cursor gives the same builds again.
    async fn finished_builds(
        &self,
        after: FinishedCursor,
        limit: usize,
    ) -> Result<Vec<FinishedBuild>>;

    /// Starts the adapter's event sources and returns their merged stream.
    /// Dropping the stream stops the sources. Each call starts new sources,
    /// so call it once per consumer.
    async fn events(&self) -> Result<LegacyEventStream>;
}
