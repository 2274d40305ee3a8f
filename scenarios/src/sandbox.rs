//! The sandbox legacy master: a Buildbot 0.8 master played entirely in
//! memory.
//!
//! [`SandboxMaster`] implements [`LegacyMaster`] without a scheduler
//! database, a message bus or a web server, so `bbb up` can run the bridge
//! on a machine with nothing installed. It behaves like
//! [`bbb_buildbot::simulator::Simulator`] observed through a
//! [`bbb_buildbot::SchedulerDb`]; see the crate README for the details.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bbb_buildbot::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, EventSource,
    FoundRequest, LegacyError, LegacyEvent, LegacyEventStream, LegacyMaster, RequestState,
    SourceStamp, StopOutcome, StopTarget,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// The source recorded for the request's own properties, as the
/// scheduler-DB adapter writes them (`[value, "bbb"]`).
pub const PROPERTY_SOURCE: &str = "bbb";

/// Longest property value accepted, counted in characters of its JSON
/// `[value, "bbb"]` form: the 0.8 schema's `property_value` column.
pub const MAX_PROPERTY_VALUE_LEN: usize = 1024;

/// Longest property name accepted (the 0.8 schema's `property_name` column).
pub const MAX_PROPERTY_NAME_LEN: usize = 256;

/// The longest scripted build duration; longer `sim_duration_ms` values are
/// cut to it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The request property that scripts build results.
pub const RESULT_PROPERTY: &str = "sim_result";

/// The request property that scripts build durations, in milliseconds.
pub const DURATION_PROPERTY: &str = "sim_duration_ms";

/// The wall clock the sandbox stamps its times with (epoch seconds):
/// `claimed_at`, `start_time`, `finish_time` and `complete_at`. Build
/// durations are measured with Tokio's timer instead, so tests can also
/// pause and advance Tokio's clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        }))
    }

    /// A clock that reads `now` (epoch seconds) from a function.
    pub fn from_fn(now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// A clock stopped at `secs` epoch seconds.
    pub fn fixed(secs: i64) -> Self {
        Self::from_fn(move || secs)
    }

    /// The current time, in epoch seconds.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

/// A builder of the sandbox master, with its default script.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxBuilder {
    /// The builder's name.
    pub name: String,
    /// Builds it runs at once. A builder with 0 slots never starts a build.
    pub slots: usize,
    /// Results of successive attempts of a request (the last repeats) when
    /// the request has no usable `sim_result` property. Empty means SUCCESS.
    pub results: Vec<BuildResult>,
    /// Run time of a build when the request has no usable `sim_duration_ms`
    /// property.
    pub duration: Duration,
}

impl SandboxBuilder {
    /// A builder with 4 slots whose builds pass after 100 ms (the
    /// simulator's defaults).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            slots: 4,
            results: vec![BuildResult::Success],
            duration: Duration::from_millis(100),
        }
    }

    /// The same builder with `slots` slots.
    pub fn with_slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// The same builder with these default results (one per attempt, the
    /// last repeating).
    pub fn with_results(mut self, results: impl IntoIterator<Item = BuildResult>) -> Self {
        self.results = results.into_iter().collect();
        self
    }

    /// The same builder with this default build duration.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    fn result_for(&self, attempt: usize) -> BuildResult {
        self.results
            .get(attempt)
            .or(self.results.last())
            .copied()
            .unwrap_or(BuildResult::Success)
    }
}

/// Configuration of a [`SandboxMaster`].
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The master's name: `master` in events and
    /// [`RequestState::Running`], `claimed_by_name` on a real master.
    pub master_name: String,
    /// The builders it serves. When a name appears twice, the first wins.
    pub builders: Vec<SandboxBuilder>,
    /// Accept requests for any builder: [`LegacyMaster::builders`] answers
    /// `None`, and a builder not in [`builders`](Self::builders) is created
    /// on first use with [`SandboxBuilder::new`]'s defaults.
    pub accept_any_builder: bool,
    /// How many events each subscriber may fall behind before it loses the
    /// oldest (see [`SandboxMaster::events`](LegacyMaster::events)). At
    /// least 1.
    pub event_capacity: usize,
    /// Base of the `log_url` of finished builds:
    /// `<base>/builders/<builder>/builds/<number>/log`. `None` gives
    /// `sandbox://<master_name>`, which names the log but cannot be fetched;
    /// set an `http://` base when something serves
    /// [`SandboxMaster::build_log`] there.
    pub log_url_base: Option<String>,
    /// The wall clock for recorded times.
    pub clock: Clock,
}

impl Default for SandboxConfig {
    /// Master `sandbox-master` with the builders `linux.build`, `linux.test`,
    /// `win.build` and `win.test` ([`SandboxBuilder::new`]'s defaults), no
    /// other builder accepted, 4096 events of buffer, `sandbox://` log URLs
    /// and the system clock.
    fn default() -> Self {
        Self {
            master_name: "sandbox-master".to_owned(),
            builders: ["linux.build", "linux.test", "win.build", "win.test"]
                .into_iter()
                .map(SandboxBuilder::new)
                .collect(),
            accept_any_builder: false,
            event_capacity: 4096,
            log_url_base: None,
            clock: Clock::system(),
        }
    }
}

impl SandboxConfig {
    /// The defaults with these builders instead.
    pub fn with_builders(builders: impl IntoIterator<Item = SandboxBuilder>) -> Self {
        Self {
            builders: builders.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The defaults, accepting every builder (with [`SandboxBuilder::new`]'s
    /// defaults unless listed in [`builders`](Self::builders)).
    pub fn accepting_any_builder() -> Self {
        Self {
            accept_any_builder: true,
            ..Self::default()
        }
    }
}

/// Counters of a [`SandboxMaster`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Requests accepted by `submit`.
    pub submitted: u64,
    /// Builds started.
    pub started: u64,
    /// Builds finished (any result).
    pub finished: u64,
    /// Builds finished RETRY (their request was requeued).
    pub retried: u64,
    /// Builds stopped (finished CANCELLED because of a stop).
    pub stopped: u64,
    /// Pending requests cancelled without a build (by `cancel_request` or
    /// `cancel_from_master`).
    pub cancelled: u64,
}

/// A build running on the sandbox master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningBuild {
    /// The request it satisfies.
    pub build_request_id: BuildRequestId,
    /// Its builder.
    pub builder: String,
    /// Its per-builder build number.
    pub build_number: u64,
    /// Its build id.
    pub build_id: BuildId,
    /// Epoch seconds when it started.
    pub start_time: i64,
}

#[derive(Clone, Debug)]
struct BuildRecord {
    build_id: u64,
    number: u64,
    start_time: i64,
    finish_time: Option<i64>,
    results: Option<BuildResult>,
    /// The finished build's properties (what its build-finished event carried).
    properties: Option<BTreeMap<String, Value>>,
}

impl BuildRecord {
    fn info(&self) -> BuildInfo {
        BuildInfo {
            build_id: BuildId(self.build_id),
            number: self.number,
            start_time: self.start_time,
            finish_time: self.finish_time,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Running {
        claimed_at: i64,
    },
    Complete {
        results: BuildResult,
        complete_at: i64,
        claimed: bool,
    },
}

#[derive(Debug)]
struct Request {
    brid: u64,
    buildset_id: u64,
    task_id: String,
    builder: String,
    properties: BTreeMap<String, Value>,
    sourcestamp: SourceStamp,
    priority: i32,
    submitted_at: i64,
    status: Status,
    builds: Vec<BuildRecord>,
}

impl Request {
    fn queue_key(&self) -> QueueKey {
        (Reverse(self.priority), self.submitted_at, self.brid)
    }
}

/// Highest priority first, then oldest `submitted_at`, then lowest brid.
type QueueKey = (Reverse<i32>, i64, u64);

#[derive(Debug)]
struct BuilderState {
    config: SandboxBuilder,
    queue: BTreeSet<QueueKey>,
    in_use: usize,
    next_number: u64,
}

impl BuilderState {
    fn new(config: SandboxBuilder) -> Self {
        Self {
            config,
            queue: BTreeSet::new(),
            in_use: 0,
            next_number: 0,
        }
    }
}

#[derive(Debug)]
struct RunningEntry {
    brid: u64,
    builder: String,
    number: u64,
    start_time: i64,
    result: BuildResult,
    stop_requested: bool,
    stop: Arc<Notify>,
}

struct State {
    next_brid: u64,
    next_buildset: u64,
    next_build_id: u64,
    builders: HashMap<String, BuilderState>,
    requests: HashMap<u64, Request>,
    by_task: HashMap<String, Vec<u64>>,
    running: HashMap<u64, RunningEntry>,
    builds_by_number: HashMap<(String, u64), u64>,
    events: Option<broadcast::Sender<LegacyEvent>>,
    stats: SandboxStats,
    shut_down: bool,
}

impl State {
    fn emit(&self, event: LegacyEvent) {
        if let Some(events) = &self.events {
            // An error only means nobody is subscribed right now.
            let _ = events.send(event);
        }
    }
}

struct Shared {
    master_name: String,
    accept_any_builder: bool,
    builder_names: Vec<String>,
    log_url_base: String,
    clock: Clock,
    state: Mutex<State>,
    wake: Notify,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the
        // state is still consistent enough for a sandbox.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_url(&self, builder: &str, number: u64) -> String {
        format!(
            "{}/builders/{}/builds/{number}/log",
            self.log_url_base,
            encode_segment(builder)
        )
    }
}

/// What the scheduler hands to a build's task.
struct StartedBuild {
    build_id: u64,
    duration: Duration,
    stop: Arc<Notify>,
}

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
        let scheduler = tokio::spawn(schedule_loop(shared.clone(), shutdown_rx));
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

    /// Builds running now, oldest build id first.
    pub fn running_builds(&self) -> Vec<RunningBuild> {
        let state = self.shared.lock();
        let mut builds: Vec<RunningBuild> = state
            .running
            .iter()
            .map(|(build_id, entry)| RunningBuild {
                build_request_id: BuildRequestId(entry.brid),
                builder: entry.builder.clone(),
                build_number: entry.number,
                build_id: BuildId(*build_id),
                start_time: entry.start_time,
            })
            .collect();
        builds.sort_by_key(|build| build.build_id);
        builds
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
                let stopped = stop_request(&mut state, id.0);
                tracing::info!(build_request.id = id.0, builds = ?stopped, "sandbox build stopped on the master");
                CancelOutcome::Requested
            }
        }
    }

    /// The log of a build, by builder and build number: a short text saying
    /// what ran and how it ended (`None` for an unknown build). Something
    /// serving logs at [`SandboxConfig::log_url_base`] can answer with it.
    pub fn build_log(&self, builder: &str, number: u64) -> Option<String> {
        let state = self.shared.lock();
        let brid = *state.builds_by_number.get(&(builder.to_owned(), number))?;
        let request = state.requests.get(&brid)?;
        let (attempt, build) = request
            .builds
            .iter()
            .enumerate()
            .find(|(_, build)| build.number == number)?;
        let outcome = match build.results {
            Some(results) => format!("finished {results}"),
            None => "still running".to_owned(),
        };
        Some(format!(
            "sandbox build {builder} #{number} (build id {}) on {}\n\
             build request {brid}, task {}, attempt {}\n\
             started at {}{}\n\
             {outcome}\n",
            build.build_id,
            self.shared.master_name,
            request.task_id,
            attempt + 1,
            build.start_time,
            build
                .finish_time
                .map(|time| format!(", finished at {time}"))
                .unwrap_or_default(),
        ))
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

#[async_trait]
impl LegacyMaster for SandboxMaster {
    async fn builders(&self) -> bbb_buildbot::Result<Option<Vec<String>>> {
        Ok(if self.shared.accept_any_builder {
            None
        } else {
            Some(self.shared.builder_names.clone())
        })
    }

    async fn submit(&self, spec: &BuildRequestSpec) -> bbb_buildbot::Result<BuildRequestId> {
        validate_properties(spec)?;
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
                sourcestamp: spec.sourcestamp.clone(),
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

    async fn find_requests_for_task(
        &self,
        task_id: &str,
    ) -> bbb_buildbot::Result<Vec<FoundRequest>> {
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

    async fn request_state(&self, id: BuildRequestId) -> bbb_buildbot::Result<RequestState> {
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

    async fn cancel_request(&self, id: BuildRequestId) -> bbb_buildbot::Result<CancelOutcome> {
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

    async fn stop_build(&self, target: StopTarget) -> bbb_buildbot::Result<StopOutcome> {
        let mut state = self.shared.lock();
        let stopped = match target {
            StopTarget::Request(brid) => stop_request(&mut state, brid.0),
            StopTarget::Build(build_id) => match state.running.get_mut(&build_id.0) {
                Some(entry) => {
                    request_stop(entry);
                    vec![build_id]
                }
                None => Vec::new(),
            },
        };
        tracing::info!(?target, builds = ?stopped, "sandbox stop_build");
        Ok(if stopped.is_empty() {
            StopOutcome::NotRunning
        } else {
            StopOutcome::Requested(stopped)
        })
    }

    /// A new subscriber that sees every event from now on, all with
    /// [`EventSource::Pulse`]. A subscriber that falls more than
    /// [`SandboxConfig::event_capacity`] events behind loses the oldest ones
    /// (a warning is logged), like any at-least-once source: reconcile with
    /// `request_state`. After [`SandboxMaster::shutdown`] the stream is empty.
    async fn build_properties(
        &self,
        build: BuildId,
    ) -> bbb_buildbot::Result<Option<BTreeMap<String, Value>>> {
        let state = self.shared.lock();
        Ok(state
            .requests
            .values()
            .flat_map(|request| &request.builds)
            .find(|record| record.build_id == build.0)
            .and_then(|record| record.properties.clone()))
    }

    async fn events(&self) -> bbb_buildbot::Result<LegacyEventStream> {
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

/// Refuses what the 0.8 schema cannot hold, as the scheduler-DB adapter
/// does, so the sandbox does not accept requests a real master would not.
fn validate_properties(spec: &BuildRequestSpec) -> bbb_buildbot::Result<()> {
    let task_id = Value::String(spec.task_id.clone());
    let properties = spec
        .properties
        .iter()
        .filter(|(name, _)| name.as_str() != "taskId")
        .chain(std::iter::once((&"taskId".to_owned(), &task_id)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<Vec<_>>();
    for (name, value) in properties {
        let text = serde_json::to_string(&json!([value, PROPERTY_SOURCE]))?;
        let length = text.chars().count();
        if length > MAX_PROPERTY_VALUE_LEN {
            return Err(LegacyError::Invalid(format!(
                "property {name:?} is {length} characters as JSON, the column holds {MAX_PROPERTY_VALUE_LEN}"
            )));
        }
        if name.chars().count() > MAX_PROPERTY_NAME_LEN {
            return Err(LegacyError::Invalid(format!(
                "property name {name:?} is longer than {MAX_PROPERTY_NAME_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// Completes a pending request CANCELLED, unclaimed. The caller checked it
/// is pending.
fn cancel_pending(shared: &Shared, state: &mut State, brid: u64) {
    let now = shared.clock.now();
    let Some(request) = state.requests.get_mut(&brid) else {
        return;
    };
    let key = request.queue_key();
    let builder = request.builder.clone();
    request.status = Status::Complete {
        results: BuildResult::Cancelled,
        complete_at: now,
        claimed: false,
    };
    if let Some(builder) = state.builders.get_mut(&builder) {
        builder.queue.remove(&key);
    }
    state.stats.cancelled += 1;
    state.emit(LegacyEvent::RequestCompleted {
        build_request_id: BuildRequestId(brid),
        results: BuildResult::Cancelled,
        claimed: false,
        source: EventSource::Pulse,
    });
}

fn request_stop(entry: &mut RunningEntry) {
    entry.stop_requested = true;
    // `notify_one` keeps a permit, so a build that is not waiting yet still
    // sees it.
    entry.stop.notify_one();
}

/// Stops every running build of `brid`; returns their ids.
fn stop_request(state: &mut State, brid: u64) -> Vec<BuildId> {
    let mut stopped: Vec<BuildId> = state
        .running
        .iter_mut()
        .filter(|(_, entry)| entry.brid == brid)
        .map(|(build_id, entry)| {
            request_stop(entry);
            BuildId(*build_id)
        })
        .collect();
    stopped.sort();
    stopped
}

async fn schedule_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        for build in start_builds(&shared) {
            tokio::spawn(run_build(shared.clone(), build, shutdown.clone()));
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// Starts builds on every free slot, each builder's queue in order.
fn start_builds(shared: &Shared) -> Vec<StartedBuild> {
    let mut state = shared.lock();
    if state.shut_down {
        return Vec::new();
    }
    let mut picks = Vec::new();
    for (name, builder) in state.builders.iter_mut() {
        while builder.in_use < builder.config.slots {
            let Some(key) = builder.queue.pop_first() else {
                break;
            };
            builder.in_use += 1;
            picks.push((name.clone(), key.2));
        }
    }
    picks.sort_by_key(|(_, brid)| *brid);
    let mut started = Vec::with_capacity(picks.len());
    for (builder, brid) in picks {
        if let Some(build) = start_build(shared, &mut state, &builder, brid) {
            started.push(build);
        } else if let Some(builder) = state.builders.get_mut(&builder) {
            builder.in_use = builder.in_use.saturating_sub(1);
        }
    }
    started
}

fn start_build(
    shared: &Shared,
    state: &mut State,
    builder: &str,
    brid: u64,
) -> Option<StartedBuild> {
    let now = shared.clock.now();
    let attempt = match state.requests.get(&brid) {
        Some(request) if request.status == Status::Pending => request.builds.len(),
        _ => return None,
    };
    let builder_state = state.builders.get_mut(builder)?;
    let number = builder_state.next_number;
    builder_state.next_number += 1;
    let default_result = builder_state.config.result_for(attempt);
    let default_duration = builder_state.config.duration;
    let build_id = state.next_build_id;
    state.next_build_id += 1;
    let request = state.requests.get_mut(&brid)?;
    let result = request
        .properties
        .get(RESULT_PROPERTY)
        .and_then(|script| script_result(script, attempt))
        .unwrap_or(default_result);
    let duration = request
        .properties
        .get(DURATION_PROPERTY)
        .and_then(script_duration)
        .unwrap_or(default_duration)
        .min(MAX_DURATION);
    request.status = Status::Running { claimed_at: now };
    request.builds.push(BuildRecord {
        build_id,
        number,
        start_time: now,
        finish_time: None,
        results: None,
        properties: None,
    });
    let task_id = request.task_id.clone();
    let stop = Arc::new(Notify::new());
    state.running.insert(
        build_id,
        RunningEntry {
            brid,
            builder: builder.to_owned(),
            number,
            start_time: now,
            result,
            stop_requested: false,
            stop: stop.clone(),
        },
    );
    state
        .builds_by_number
        .insert((builder.to_owned(), number), brid);
    state.stats.started += 1;
    state.emit(LegacyEvent::BuildStarted {
        build_request_ids: vec![BuildRequestId(brid)],
        builder: builder.to_owned(),
        build_number: number,
        build_ids: vec![BuildId(build_id)],
        master: Some(shared.master_name.clone()),
        task_id: Some(task_id),
        source: EventSource::Pulse,
    });
    tracing::info!(build_request.id = brid, %builder, build.number = number, build.id = build_id, attempt, %result, ?duration, "sandbox build started");
    Some(StartedBuild {
        build_id,
        duration,
        stop,
    })
}

async fn run_build(shared: Arc<Shared>, build: StartedBuild, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(build.duration) => {}
        _ = build.stop.notified() => {}
        _ = shutdown.wait_for(|down| *down) => return,
    }
    finish_build(&shared, build.build_id);
    shared.wake.notify_one();
}

fn finish_build(shared: &Shared, build_id: u64) {
    let now = shared.clock.now();
    let mut state = shared.lock();
    if state.shut_down {
        return;
    }
    let Some(entry) = state.running.remove(&build_id) else {
        return;
    };
    let results = if entry.stop_requested {
        state.stats.stopped += 1;
        BuildResult::Cancelled
    } else {
        entry.result
    };
    if let Some(builder) = state.builders.get_mut(&entry.builder) {
        builder.in_use = builder.in_use.saturating_sub(1);
    }
    state.stats.finished += 1;
    let log_url = shared.log_url(&entry.builder, entry.number);
    let Some(request) = state.requests.get_mut(&entry.brid) else {
        return;
    };
    let properties = build_properties(shared, request, &entry, &log_url);
    if let Some(record) = request
        .builds
        .iter_mut()
        .find(|record| record.build_id == build_id)
    {
        record.finish_time = Some(now);
        record.results = Some(results);
        record.properties = Some(properties.clone());
    }
    let task_id = request.task_id.clone();
    let requeue = results == BuildResult::Retry && request.status != Status::Pending;
    let mut queue_key = None;
    if requeue {
        request.status = Status::Pending;
        queue_key = Some(request.queue_key());
    } else {
        request.status = Status::Complete {
            results,
            complete_at: now,
            claimed: true,
        };
    }
    if let Some(key) = queue_key {
        state.stats.retried += 1;
        if let Some(builder) = state.builders.get_mut(&entry.builder) {
            builder.queue.insert(key);
        }
    }
    state.emit(LegacyEvent::BuildFinished {
        build_request_ids: vec![BuildRequestId(entry.brid)],
        builder: entry.builder.clone(),
        build_number: entry.number,
        build_ids: vec![BuildId(build_id)],
        results,
        master: Some(shared.master_name.clone()),
        task_id: Some(task_id),
        properties,
        log_url: Some(log_url),
        source: EventSource::Pulse,
    });
    state.emit(if requeue {
        LegacyEvent::RequestRequeued {
            build_request_id: BuildRequestId(entry.brid),
            source: EventSource::Pulse,
        }
    } else {
        LegacyEvent::RequestCompleted {
            build_request_id: BuildRequestId(entry.brid),
            results,
            claimed: true,
            source: EventSource::Pulse,
        }
    });
    tracing::info!(build_request.id = entry.brid, builder = %entry.builder, build.number = entry.number, build.id = build_id, %results, "sandbox build finished");
}

/// The build's properties as `name -> [value, source]`, as a 0.8 master's
/// `log_uploaded` message carries them: the request's (source `bbb`), the
/// build's own and `postrun.py`'s.
fn build_properties(
    shared: &Shared,
    request: &Request,
    entry: &RunningEntry,
    log_url: &str,
) -> BTreeMap<String, Value> {
    let mut properties: BTreeMap<String, Value> = request
        .properties
        .iter()
        .map(|(name, value)| (name.clone(), json!([value, PROPERTY_SOURCE])))
        .collect();
    let stamp = &request.sourcestamp;
    if let Some(branch) = &stamp.branch {
        properties.insert(
            "branch".to_owned(),
            json!([normalize_branch(branch), "Build"]),
        );
    }
    if let Some(revision) = &stamp.revision {
        properties.insert("revision".to_owned(), json!([revision, "Build"]));
    }
    if !stamp.repository.is_empty() {
        properties.insert("repository".to_owned(), json!([stamp.repository, "Build"]));
    }
    if !stamp.project.is_empty() {
        properties.insert("project".to_owned(), json!([stamp.project, "Build"]));
    }
    properties.insert("buildername".to_owned(), json!([entry.builder, "Builder"]));
    properties.insert("buildnumber".to_owned(), json!([entry.number, "Build"]));
    properties.insert("master".to_owned(), json!([shared.master_name, "Build"]));
    properties.insert(
        "slavename".to_owned(),
        json!([format!("{}-slave", entry.builder), "BuildSlave"]),
    );
    properties.insert(
        "request_ids".to_owned(),
        json!([[entry.brid], "postrun.py"]),
    );
    properties.insert(
        "request_times".to_owned(),
        json!([{ entry.brid.to_string(): request.submitted_at }, "postrun.py"]),
    );
    properties.insert("log_url".to_owned(), json!([log_url, "postrun.py"]));
    properties
}

/// The branch as the scheduler-DB adapter stores it: no trailing `/`, and
/// only the path of a URL.
fn normalize_branch(branch: &str) -> String {
    let branch = branch.trim_end_matches('/');
    if let Some((_, rest)) = branch.split_once("://") {
        return rest
            .split_once('/')
            .map(|(_, path)| path.trim_matches('/').to_owned())
            .unwrap_or_default();
    }
    branch.to_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The scripted result of attempt `attempt` (0-based): a result name or
/// code, or a comma-separated list or JSON list of them, the last repeating.
/// `None` when the script cannot be read.
pub fn script_result(script: &Value, attempt: usize) -> Option<BuildResult> {
    let items: Vec<String> = match script {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect(),
        Value::String(text) => text.split(',').map(str::to_owned).collect(),
        Value::Number(number) => vec![number.to_string()],
        _ => return None,
    };
    let item = items.get(attempt).or(items.last())?;
    BuildResult::parse(item)
}

/// The scripted duration: milliseconds as a non-negative number or a string
/// holding one, at most [`MAX_DURATION`]. `None` when it cannot be read.
pub fn script_duration(script: &Value) -> Option<Duration> {
    let millis = match script {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !millis.is_finite() || millis < 0.0 {
        return None;
    }
    let limit = MAX_DURATION.as_millis() as f64;
    Some(Duration::from_millis(millis.min(limit).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pick_per_attempt() {
        let script = json!("RETRY, SUCCESS");
        assert_eq!(script_result(&script, 0), Some(BuildResult::Retry));
        assert_eq!(script_result(&script, 1), Some(BuildResult::Success));
        assert_eq!(script_result(&script, 7), Some(BuildResult::Success));
        assert_eq!(
            script_result(&json!(["EXCEPTION", 2]), 1),
            Some(BuildResult::Failure)
        );
        assert_eq!(script_result(&json!(6), 0), Some(BuildResult::Cancelled));
        assert_eq!(script_result(&json!("bogus"), 0), None);
        assert_eq!(script_result(&json!([]), 0), None);
        assert_eq!(script_result(&json!(null), 0), None);
        assert_eq!(script_result(&json!({"a": 1}), 0), None);
    }

    #[test]
    fn durations_are_read_leniently() {
        assert_eq!(
            script_duration(&json!(250)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            script_duration(&json!(" 40 ")),
            Some(Duration::from_millis(40))
        );
        assert_eq!(script_duration(&json!(1.6)), Some(Duration::from_millis(2)));
        assert_eq!(script_duration(&json!(-5)), None);
        assert_eq!(script_duration(&json!("soon")), None);
        assert_eq!(script_duration(&json!(true)), None);
        assert_eq!(script_duration(&json!(1e300)), Some(MAX_DURATION));
    }

    #[test]
    fn branches_and_segments() {
        assert_eq!(
            normalize_branch("https://hg.mozilla.org/integration/mozilla-inbound/"),
            "integration/mozilla-inbound"
        );
        assert_eq!(normalize_branch("try/"), "try");
        assert_eq!(normalize_branch("https://host"), "");
        assert_eq!(
            encode_segment("Linux x86-64 opt/é"),
            "Linux%20x86-64%20opt%2F%C3%A9"
        );
    }
}
