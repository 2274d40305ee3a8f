//! The sandbox legacy master: a Buildbot 0.8 master played entirely in
//! memory.
//!
//! [`SandboxMaster`] implements [`LegacyMaster`](crate::LegacyMaster)
//! without a scheduler database, a message bus or a web server, so `bbb up`
//! can run the bridge on a machine with nothing installed. It behaves like
//! the [`Simulator`](crate::simulator::Simulator) observed through a
//! [`SchedulerDb`](crate::SchedulerDb); see the crate README for the
//! details.
//!
//! `config` holds what it is made of, `state` its in-memory scheduler DB,
//! `scheduler` the task that starts and finishes builds, and `api` the
//! `LegacyMaster` methods the bridge calls.

mod api;
mod config;
mod log;
mod own;
mod scheduler;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

pub use self::config::{RunningBuild, SandboxBuilder, SandboxConfig, SandboxStats, StoredRequest};
pub use self::own::OwnRequest;
use self::state::{
    BuilderState, Shared, State, Status, cancel_pending, encode_segment, end_as, request_stop,
    signal_builds,
};
use crate::error::{LegacyError, Result};
use crate::types::{BuildId, BuildRequestId, BuildResult, CancelOutcome, StopOutcome, StopTarget};

/// The in-memory legacy master. Create it with [`SandboxMaster::start`]
/// (inside a Tokio runtime); stop it with [`SandboxMaster::shutdown`], or
/// drop it.
pub struct SandboxMaster {
    shared: Arc<Shared>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SandboxMaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxMaster")
            .field("master", &self.shared.master_name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SandboxMaster {
    /// Starts the master's scheduler. It spawns Tokio tasks, so call it from
    /// within a Tokio runtime.
    pub async fn start(config: SandboxConfig) -> SandboxMaster {
        let mut builders = HashMap::new();
        let mut builder_names = Vec::new();
        for builder in config.builders {
            if !builders.contains_key(&builder.name) {
                builder_names.push(builder.name.clone());
                builders.insert(builder.name.clone(), BuilderState::new(builder));
            }
        }
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let log_url_base = config
            .log_url_base
            .map(|base| base.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("sandbox://{}", encode_segment(&config.master_name)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            master_name: config.master_name,
            accept_any_builder: config.accept_any_builder,
            builder_names,
            log_url_base,
            clock: config.clock,
            state: Mutex::new(State {
                next_brid: 1,
                next_buildset: 1,
                next_build_id: 1,
                builders,
                requests: HashMap::new(),
                by_task: HashMap::new(),
                running: HashMap::new(),
                builds_by_number: HashMap::new(),
                events: Some(events),
                stats: SandboxStats::default(),
                shut_down: false,
            }),
            wake: Notify::new(),
            shutdown,
        });
        let scheduler = tokio::spawn(scheduler::schedule_loop(shared.clone(), shutdown_rx));
        tracing::info!(master = %shared.master_name, builders = shared.builder_names.len(), accept_any_builder = shared.accept_any_builder, "sandbox legacy master started");
        SandboxMaster {
            shared,
            scheduler: Mutex::new(Some(scheduler)),
        }
    }

    /// The master's name.
    pub fn master_name(&self) -> &str {
        &self.shared.master_name
    }

    /// Counters so far.
    pub fn stats(&self) -> SandboxStats {
        self.shared.lock().stats
    }

    /// Builds running now, oldest build id first (a merged build once per
    /// request it serves).
    pub fn running_builds(&self) -> Vec<RunningBuild> {
        let state = self.shared.lock();
        let mut builds: Vec<RunningBuild> = state
            .running
            .values()
            .flat_map(|entry| {
                entry.requests.iter().map(|(brid, build_id)| RunningBuild {
                    build_request_id: BuildRequestId(*brid),
                    builder: entry.builder.clone(),
                    build_number: entry.number,
                    build_id: BuildId(*build_id),
                    start_time: entry.start_time,
                })
            })
            .collect();
        builds.sort_by_key(|build| build.build_id);
        builds
    }

    /// The request as the scheduler DB holds it (`None` for an unknown
    /// brid).
    pub fn stored_request(&self, id: BuildRequestId) -> Option<StoredRequest> {
        let state = self.shared.lock();
        let request = state.requests.get(&id.0)?;
        Some(StoredRequest {
            build_request_id: id,
            buildset_id: request.buildset_id,
            task_id: request.task_id.clone(),
            buildername: request.builder.clone(),
            reason: request.reason.clone(),
            priority: request.priority,
            submitted_at: request.submitted_at,
            properties: request.properties.clone(),
            sourcestamp: request.sourcestamp.clone(),
        })
    }

    /// Merges pending requests of one builder into one build and starts it
    /// now, as a 0.8 master does when it merges requests (the sandbox's own
    /// scheduler never merges): each request gets a build id of its own and
    /// they share one build number; one `BuildStarted` names them all, and
    /// the build's end completes (or, for RETRY, requeues) each. The build
    /// runs the first request's script, even on a builder without a free
    /// slot. Returns the build number; requests that are not all pending on
    /// one builder are refused ([`LegacyError::Invalid`]) and left alone.
    pub fn start_merged_build(&self, requests: &[BuildRequestId]) -> Result<u64> {
        let build = {
            let mut state = self.shared.lock();
            if state.shut_down {
                return Err(LegacyError::Invalid("the master is shut down".to_owned()));
            }
            let builder = requests
                .first()
                .and_then(|id| state.requests.get(&id.0))
                .map(|request| request.builder.clone())
                .ok_or_else(|| LegacyError::Invalid(format!("no such requests: {requests:?}")))?;
            let brids: Vec<u64> = requests.iter().map(|id| id.0).collect();
            let build = scheduler::start_build(&self.shared, &mut state, &builder, &brids)
                .ok_or_else(|| {
                    LegacyError::Invalid(format!(
                        "requests {requests:?} are not all pending on {builder}"
                    ))
                })?;
            if let Some(builder) = state.builders.get_mut(&builder) {
                builder.in_use += 1;
            }
            build
        };
        let number = build.number;
        let shutdown = self.shared.shutdown.subscribe();
        tokio::spawn(scheduler::run_build(self.shared.clone(), build, shutdown));
        Ok(number)
    }

    /// Ends the running builds of `target` now with `results`, as if their
    /// steps had ended so: [`StopOutcome::Requested`] with their ids (they
    /// then finish with `results`: their requests complete, or go back to
    /// the queue for RETRY), or [`StopOutcome::NotRunning`]. A build being
    /// stopped still finishes CANCELLED.
    pub fn end_build(&self, target: StopTarget, results: BuildResult) -> StopOutcome {
        let mut state = self.shared.lock();
        let ended = signal_builds(&mut state, target, |entry| end_as(entry, results));
        tracing::info!(?target, %results, builds = ?ended, "sandbox build ended by hand");
        if ended.is_empty() {
            StopOutcome::NotRunning
        } else {
            StopOutcome::Requested(ended)
        }
    }

    /// A user cancelling the request on the Buildbot side (the master's web
    /// page or self-serve): a pending request completes CANCELLED without a
    /// build ([`CancelOutcome::Cancelled`]); a running one has its build
    /// stopped, which then finishes CANCELLED ([`CancelOutcome::Requested`]);
    /// a complete one is left alone ([`CancelOutcome::AlreadyComplete`]).
    pub fn cancel_from_master(&self, id: BuildRequestId) -> CancelOutcome {
        let mut state = self.shared.lock();
        match state.requests.get(&id.0).map(|request| request.status) {
            None => CancelOutcome::NotFound,
            Some(Status::Complete { .. }) => CancelOutcome::AlreadyComplete,
            Some(Status::Pending) => {
                cancel_pending(&self.shared, &mut state, id.0);
                tracing::info!(
                    build_request.id = id.0,
                    "sandbox request cancelled on the master"
                );
                CancelOutcome::Cancelled
            }
            Some(Status::Running { .. }) => {
                let stopped = signal_builds(&mut state, StopTarget::Request(id), request_stop);
                tracing::info!(build_request.id = id.0, builds = ?stopped, "sandbox build stopped on the master");
                CancelOutcome::Requested
            }
        }
    }

    /// The log of a build, by builder and build number: the steps it ran
    /// (its properties, its source stamp, its script) and how each ended,
    /// as a Buildbot 0.8 master's log reads ([`BuildLog`](crate::BuildLog));
    /// a build still running has its last step unfinished. `None` for an
    /// unknown build. [`LegacyMaster::fetch_build_log`](crate::LegacyMaster::fetch_build_log)
    /// gives the same text by build id, once the build finished.
    pub fn build_log(&self, builder: &str, number: u64) -> Option<String> {
        let state = self.shared.lock();
        let brid = *state.builds_by_number.get(&(builder.to_owned(), number))?;
        let request = state.requests.get(&brid)?;
        let (attempt, build) = request
            .builds
            .iter()
            .enumerate()
            .find(|(_, build)| build.number == number)?;
        Some(log::render(
            &self.shared.master_name,
            request,
            attempt,
            build,
        ))
    }

    /// The log of the finished build `build_id` (any of a merged build's
    /// ids), or `None`.
    pub(super) fn finished_build_log(&self, build_id: u64) -> Option<String> {
        let state = self.shared.lock();
        state.requests.values().find_map(|request| {
            let (attempt, build) = request
                .builds
                .iter()
                .enumerate()
                .find(|(_, build)| build.build_id == build_id)?;
            build.finish_time?;
            Some(log::render(
                &self.shared.master_name,
                request,
                attempt,
                build,
            ))
        })
    }

    /// Stops the master: no build starts or finishes any more, and every
    /// event stream ends once it has delivered what it buffered. Builds
    /// still running are abandoned, as when a real master dies: their
    /// requests stay claimed (`Running`). Requests can still be submitted,
    /// cancelled and inspected, as in a scheduler DB whose master is down.
    pub async fn shutdown(&self) {
        self.close();
        let scheduler = self
            .scheduler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
    }

    fn close(&self) {
        {
            let mut state = self.shared.lock();
            if !state.shut_down {
                state.shut_down = true;
                state.events = None;
                state.running.clear();
                tracing::info!(master = %self.shared.master_name, "sandbox legacy master stopped");
            }
        }
        self.shared.shutdown.send_replace(true);
    }
}

impl Drop for SandboxMaster {
    fn drop(&mut self) {
        self.close();
    }
}
