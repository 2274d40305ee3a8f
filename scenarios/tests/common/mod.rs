//! The bridge on real parts, against either kind of legacy master.
//!
//! Every scenario gets its own native queue (SQLite, in-process bus), its own
//! mapping database (SQLite) and its own master:
//!
//! - [`MasterKind::Simulator`]: a fresh 0.8 scheduler DB on MariaDB, the
//!   scheduler-DB adapter (`SchedulerDb`, Pulse on the queue's bus plus DB
//!   polling) and the legacy-master simulator playing the master;
//! - [`MasterKind::Buildbot4`]: a real Buildbot 4.3 master and worker
//!   (`BuildbotMaster`: its own MariaDB database and RabbitMQ vhost) and the
//!   REST adapter (`RestMaster`, the reporter's messages on that vhost plus
//!   REST polling);
//! - [`MasterKind::Sandbox`]: the in-memory sandbox master `bbb up` runs
//!   (`SandboxMaster`), which is its own adapter.
//!
//! The bridge, its TC listener and its Buildbot listener run in-process.
//! What differs between the kinds (builder names, how a build's outcome is
//! scripted, how a RETRY happens, how a Buildbot user cancels or stops) is
//! behind the helpers of [`MasterKind`] and [`Env`].
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bbb_bridge::payload::BuilderRules;
use bbb_bridge::{Bridge, BridgeSettings, Metrics, QueueClient, TaskStatus};
use bbb_buildbot::sandbox::{SandboxBuilder, SandboxConfig, SandboxMaster};
use bbb_buildbot::simulator::{SimBuilder, Simulator, SimulatorConfig};
use bbb_buildbot::testing::{BuildbotMaster, BuildbotMasterOptions, TestDatabase, fresh_database};
use bbb_buildbot::{
    BuildRequestId, BuildResult, BuilderSource, CancelOutcome, LegacyMaster, PollOptions,
    PulseOptions, RequestState, RestMaster, SchedulerDb, SchedulerDbConfig, StopOutcome,
    StopTarget,
};
use bbb_listeners::bb_listener::{self, BbListenerSettings};
use bbb_listeners::tc_listener::{self, TcListenerSettings};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_state::{MappingRow, RowState, StateDb};
use bbb_testdb::TempDir;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Where the sandbox kind's build logs are said to be (nothing serves them:
/// the bridge asks the sandbox master for a build's log itself).
const SANDBOX_LOG_BASE: &str = "http://sandbox-master.invalid";

/// How long any wait may take before the scenario fails. Generous: it only
/// bounds a hang, on a loaded two-core machine running real masters.
pub const WAIT: Duration = Duration::from_secs(120);

/// Which legacy master a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterKind {
    /// The 0.8 scheduler schema on MariaDB, driven by the simulator.
    Simulator,
    /// A real Buildbot 4.3 master behind the REST adapter.
    Buildbot4,
    /// The in-memory sandbox master, scripted as the simulator.
    Sandbox,
}

impl MasterKind {
    /// A builder whose builds run (scripted by the task's properties).
    pub fn builder(self) -> &'static str {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => "linux64-build",
            MasterKind::Buildbot4 => "bbb-linux",
        }
    }

    /// Another builder whose builds run (for restricted builders).
    pub fn other_builder(self) -> &'static str {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => "release-build",
            MasterKind::Buildbot4 => "bbb-mac",
        }
    }

    /// A builder the master knows but nothing ever runs: its requests stay
    /// pending (no simulator slot / no connected worker / no sandbox slot).
    pub fn offline_builder(self) -> &'static str {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => "offline-build",
            MasterKind::Buildbot4 => "bbb-offline",
        }
    }

    /// Whether the master answers for a finished build's properties
    /// (Buildbot 4's REST API and the sandbox do; a 0.8 scheduler database
    /// keeps none).
    pub fn serves_build_properties(self) -> bool {
        self != MasterKind::Simulator
    }

    /// Whether the master gives a finished build's log by itself (Buildbot
    /// 4's REST API and the sandbox do; a 0.8 master's log URL travels only
    /// in its `log_uploaded` message, so a finish known only from the
    /// scheduler DB has no log to fetch).
    pub fn serves_build_logs(self) -> bool {
        self != MasterKind::Simulator
    }

    /// Whether the master records the run's scheduled time as the request's
    /// own `submitted_at` (0.8 and the sandbox: yes; Buildbot 4 stamps the
    /// time of the `force` call and the adapter keeps the scheduled time in
    /// the `bbb_submitted_at` property).
    pub fn stores_submitted_at(self) -> bool {
        self != MasterKind::Buildbot4
    }

    /// Whether a build can be scripted to end with any result (SKIPPED
    /// too); Buildbot 4's test builders cannot end a build SKIPPED.
    pub fn scripts_every_result(self) -> bool {
        self != MasterKind::Buildbot4
    }

    /// Properties scripting a build that ends SUCCESS quickly.
    pub fn script_success(self) -> Value {
        self.script_result(BuildResult::Success)
    }

    /// Properties scripting a build that ends with `result` quickly.
    /// Buildbot 4's test builders map exit codes to SUCCESS, WARNINGS,
    /// FAILURE, EXCEPTION and CANCELLED only.
    pub fn script_result(self, result: BuildResult) -> Value {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => json!({"sim_result": result.name()}),
            MasterKind::Buildbot4 => {
                let code = match result {
                    BuildResult::Success => 0,
                    BuildResult::Warnings => 1,
                    BuildResult::Failure => 2,
                    BuildResult::Exception => 4,
                    BuildResult::Cancelled => 6,
                    other => panic!("a Buildbot 4 test build cannot end {other}"),
                };
                json!({"bb_exit": code})
            }
        }
    }

    /// Properties scripting a build that runs until stopped (ten minutes).
    pub fn script_long_build(self) -> Value {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => json!({"sim_duration_ms": 600_000}),
            MasterKind::Buildbot4 => json!({"bb_sleep": 600}),
        }
    }

    /// Properties scripting a build that hits RETRY once, then passes:
    /// the simulator and the sandbox script the RETRY themselves; on
    /// Buildbot 4 the first
    /// attempt sleeps until [`Env::cause_retry`] kills its worker.
    pub fn script_retry_then_success(self) -> Value {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => json!({"sim_result": "RETRY,SUCCESS"}),
            MasterKind::Buildbot4 => json!({"bb_sleep_first": 600}),
        }
    }

    /// Properties scripting a build that hits RETRY once, then runs until
    /// stopped (ten minutes): the retried request's next build is still
    /// running when the scenario looks at it.
    pub fn script_retry_then_long_build(self) -> Value {
        match self {
            MasterKind::Simulator | MasterKind::Sandbox => {
                json!({"sim_result": "RETRY,SUCCESS", "sim_duration_ms": "100,600000"})
            }
            MasterKind::Buildbot4 => json!({"bb_sleep_first": 600, "bb_sleep": 600}),
        }
    }
}

/// What to start besides the master.
pub struct Options {
    /// Restricted builder patterns.
    pub restricted: Vec<String>,
    /// Ignored builder patterns.
    pub ignored: Vec<String>,
    /// Run the TC and Buildbot listeners in the background.
    pub listeners: bool,
    /// Services served beside the queue (e.g. the migration record).
    pub mounts: Vec<bbb_queue::Mount>,
    /// More builders of the sandbox kind's master (with its defaults).
    pub sandbox_builders: Vec<String>,
}

impl Options {
    /// The default options without the listeners: every event is missed.
    pub fn without_listeners() -> Options {
        Options {
            listeners: false,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            restricted: vec![],
            ignored: vec![],
            listeners: true,
            mounts: Vec::new(),
            sandbox_builders: Vec::new(),
        }
    }
}

/// The simulator kind's parts.
struct SimParts {
    db: TestDatabase,
    sched: Arc<SchedulerDb>,
    sim: Simulator,
}

/// The Buildbot 4 kind's parts.
struct Bb4Parts {
    master: Mutex<Option<BuildbotMaster>>,
    api_url: String,
}

/// One scenario's world: queue, mapping DB, master, bridge and listeners.
pub struct Env {
    /// Which master this is.
    pub kind: MasterKind,
    /// The native queue.
    pub q: TestQueue,
    /// A root client of the queue (creates and cancels tasks).
    pub client: taskcluster::Queue,
    /// The adapter the bridge uses.
    pub master: Arc<dyn LegacyMaster>,
    /// The mapping database.
    pub state: StateDb,
    /// The bridge.
    pub bridge: Arc<Bridge>,
    http: reqwest::Client,
    sim: Option<SimParts>,
    bb4: Option<Bb4Parts>,
    sandbox: Option<Arc<SandboxMaster>>,
    cancel: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

/// Installs a test subscriber once (`RUST_LOG` controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Reads a value with `probe` until it satisfies `done`, and returns it;
/// after [`WAIT`], fails with `what` and the last value read.
pub async fn poll_until<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: waited {WAIT:?}; last read {value:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Env {
    /// Starts everything for `kind`.
    pub async fn start(kind: MasterKind, mut opts: Options) -> Env {
        init_tracing();
        let q = TestQueue::with_mounts(TestOptions::default(), std::mem::take(&mut opts.mounts))
            .await
            .unwrap();
        let client =
            taskcluster::Queue::new(taskcluster::ClientBuilder::new(&q.root_url).credentials(
                taskcluster::Credentials::new(&q.root_client_id, &q.root_access_token),
            ))
            .unwrap();
        let bus = q.running.bus.clone();
        let (master, sim, bb4, sandbox): (Arc<dyn LegacyMaster>, _, _, _) = match kind {
            MasterKind::Simulator => {
                let db = fresh_database("scenario").await.unwrap();
                let mut config = SchedulerDbConfig::new(&db.url);
                config.pulse = Some(PulseOptions::new(bus.clone()));
                config.poll = Some(PollOptions {
                    interval: Duration::from_millis(200),
                    lookback: Duration::from_secs(60),
                });
                config.builders = BuilderSource::List(vec![
                    kind.builder().to_owned(),
                    kind.other_builder().to_owned(),
                    kind.offline_builder().to_owned(),
                ]);
                let sim = Simulator::start(SimulatorConfig::new(
                    &db.url,
                    Some(bus.clone()),
                    vec![
                        SimBuilder::new(kind.builder()),
                        SimBuilder::new(kind.other_builder()),
                    ],
                ))
                .await
                .unwrap();
                config.default_master_url = Some(sim.web_url().to_owned());
                let sched = Arc::new(SchedulerDb::new(config).unwrap());
                (
                    sched.clone() as Arc<dyn LegacyMaster>,
                    Some(SimParts { db, sched, sim }),
                    None,
                    None,
                )
            }
            MasterKind::Buildbot4 => {
                let bb = BuildbotMaster::start(BuildbotMasterOptions::default())
                    .await
                    .expect("start a Buildbot 4.3 master");
                eprintln!("Buildbot master started in {:?}", bb.startup);
                let mut config = bb.rest_config();
                config.pulse = Some(bb.pulse_options().await.expect("the reporter's vhost"));
                let rest = RestMaster::new(config).unwrap();
                let api_url = bb.api_url.clone();
                (
                    Arc::new(rest) as Arc<dyn LegacyMaster>,
                    None,
                    Some(Bb4Parts {
                        master: Mutex::new(Some(bb)),
                        api_url,
                    }),
                    None,
                )
            }
            MasterKind::Sandbox => {
                let sandbox = Arc::new(
                    SandboxMaster::start(SandboxConfig {
                        log_url_base: Some(SANDBOX_LOG_BASE.to_owned()),
                        ..SandboxConfig::with_builders(
                            [
                                SandboxBuilder::new(kind.builder()),
                                SandboxBuilder::new(kind.other_builder()),
                                SandboxBuilder::new(kind.offline_builder()).with_slots(0),
                            ]
                            .into_iter()
                            .chain(opts.sandbox_builders.iter().map(SandboxBuilder::new)),
                        )
                    })
                    .await,
                );
                (
                    sandbox.clone() as Arc<dyn LegacyMaster>,
                    None,
                    None,
                    Some(sandbox),
                )
            }
        };
        let dir = TempDir::new("bbb-scenario");
        let state = StateDb::connect(&format!("sqlite://{}/state.sqlite", dir.0.display()), 1)
            .await
            .unwrap();
        state.migrate().await.unwrap();
        let master_name = match kind {
            MasterKind::Simulator => "sim-master",
            MasterKind::Buildbot4 => "bb4-master",
            MasterKind::Sandbox => "sandbox-master",
        };
        let mut settings =
            BridgeSettings::new(bbb_bridge::DEFAULT_TASK_QUEUE, master_name, "test-1");
        settings.rules = BuilderRules::new(&opts.restricted, &opts.ignored).unwrap();
        let queue = QueueClient::new(
            &q.root_url,
            &q.root_client_id,
            &q.root_access_token,
            &settings.worker_group,
            &settings.worker_id,
        )
        .unwrap();
        let bridge = Arc::new(Bridge::with_clock(
            queue,
            state.clone(),
            master.clone(),
            settings,
            Arc::new(Metrics::default()),
            q.clock.clone(),
        ));
        let cancel = CancellationToken::new();
        let mut handles = Vec::new();
        if opts.listeners {
            let (b, c, bus2) = (bridge.clone(), cancel.clone(), bus.clone());
            handles.push(tokio::spawn(async move {
                let settings = TcListenerSettings {
                    retry_delay: Duration::from_millis(200),
                    ..Default::default()
                };
                tc_listener::run(b, bus2, settings, c).await.unwrap();
            }));
            let (b, c) = (bridge.clone(), cancel.clone());
            handles.push(tokio::spawn(async move {
                bb_listener::run(b, BbListenerSettings::default(), c)
                    .await
                    .unwrap();
            }));
        }
        Env {
            kind,
            q,
            client,
            master,
            state,
            bridge,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            sim,
            bb4,
            sandbox,
            cancel,
            handles,
            _dir: dir,
        }
    }

    /// Starts everything for `kind` with the default options, and creates a
    /// task for `builder` with `properties`.
    pub async fn with_task(kind: MasterKind, builder: &str, properties: Value) -> (Env, String) {
        let env = Env::start(kind, Options::default()).await;
        let task_id = env.task(builder, properties).await;
        (env, task_id)
    }

    // ----- tasks ------------------------------------------------------------------------

    /// Creates a task for `builder` with `properties` (a valid [`payload`]).
    pub async fn task(&self, builder: &str, properties: Value) -> String {
        self.create_task(payload(builder, properties), json!({}))
            .await
    }

    /// Creates a task on the bridge's queue; `extra` is merged into the definition.
    pub async fn create_task(&self, payload: Value, extra: Value) -> String {
        let task_id = slug();
        let now = chrono::Utc::now();
        let mut def = json!({
            "taskQueueId": bbb_bridge::DEFAULT_TASK_QUEUE,
            "schedulerId": "test",
            "taskGroupId": task_id,
            "created": now.to_rfc3339(),
            "deadline": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "expires": (now + chrono::Duration::days(1)).to_rfc3339(),
            "payload": payload,
            "metadata": {"name": "bridged", "description": "a bridged task",
                         "owner": "tests@example.com", "source": "https://example.com/bbb"},
        });
        if let (Some(def), Some(extra)) = (def.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                def.insert(k.clone(), v.clone());
            }
        }
        self.client.createTask(&task_id, &def).await.unwrap();
        task_id
    }

    /// The task's status.
    pub async fn status(&self, task_id: &str) -> TaskStatus {
        TaskStatus::from_json(&self.client.status(task_id).await.unwrap()["status"]).unwrap()
    }

    /// The state of the task's run `run_id` (`pending`, `running`, ...).
    pub async fn run_state(&self, task_id: &str, run_id: u32) -> String {
        let status = self.status(task_id).await;
        let run = status.run(run_id).expect("the run exists");
        run.state.as_str().to_owned()
    }

    /// Run `run_id`'s row in the mapping database.
    pub async fn row(&self, task_id: &str, run_id: i64) -> MappingRow {
        let row = self.state.get(task_id, run_id).await.unwrap();
        row.unwrap_or_else(|| panic!("task {task_id} has no row {run_id}"))
    }

    /// Waits until the task's status satisfies `pred`.
    pub async fn wait_status(
        &self,
        task_id: &str,
        what: &str,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        let what = format!("task {task_id}: {what}");
        poll_until(&what, async || self.status(task_id).await, pred).await
    }

    /// Waits until run `run_id` is in `state` (with `reason`, if given).
    pub async fn wait_run(
        &self,
        task_id: &str,
        run_id: u32,
        state: &str,
        reason: Option<&str>,
    ) -> TaskStatus {
        self.wait_status(task_id, &format!("run {run_id} {state} {reason:?}"), |s| {
            s.run(run_id).is_some_and(|r| {
                r.state.as_str() == state
                    && (reason.is_none() || r.reason_resolved.map(|r| r.as_str()) == reason)
            })
        })
        .await
    }

    /// Waits until a row of the task satisfies `pred`.
    pub async fn wait_row(
        &self,
        task_id: &str,
        run_id: i64,
        what: &str,
        pred: impl Fn(&MappingRow) -> bool,
    ) -> MappingRow {
        let matching = |row: &MappingRow| row.run_id == run_id && pred(row);
        let rows = poll_until(
            &format!("task {task_id}: row {run_id} {what}"),
            async || self.state.rows_for_task(task_id).await.unwrap(),
            |rows| rows.iter().any(matching),
        )
        .await;
        rows.into_iter().find(matching).unwrap()
    }

    /// Waits until run `run_id`'s row records its build request, and returns it.
    pub async fn wait_requested(&self, task_id: &str, run_id: i64) -> BuildRequestId {
        let row = self
            .wait_row(task_id, run_id, "with a build request", |r| {
                r.build_request_id.is_some()
            })
            .await;
        request_of(&row)
    }

    /// Waits until run `run_id`'s row is [`RowState::Running`], and returns it.
    pub async fn wait_running(&self, task_id: &str, run_id: i64) -> MappingRow {
        self.wait_row(task_id, run_id, "running", |r| r.state == RowState::Running)
            .await
    }

    /// Waits until run `run_id`'s row is [`RowState::Resolved`], and returns it.
    pub async fn wait_resolved(&self, task_id: &str, run_id: i64) -> MappingRow {
        self.wait_row(task_id, run_id, "resolved", |r| {
            r.state == RowState::Resolved
        })
        .await
    }

    /// The run's artifacts as the queue lists them (one page).
    async fn artifact_list(&self, task_id: &str, run_id: u32) -> Vec<Value> {
        let mut list = self
            .client
            .listArtifacts(task_id, &run_id.to_string(), None, None)
            .await
            .unwrap();
        match list["artifacts"].take() {
            Value::Array(artifacts) => artifacts,
            other => panic!("not a list of artifacts: {other}"),
        }
    }

    /// Names of the run's artifacts.
    pub async fn artifacts(&self, task_id: &str, run_id: u32) -> Vec<String> {
        let list = self.artifact_list(task_id, run_id).await;
        list.iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The run's artifact `name` as the queue lists it (storage type, URL...).
    pub async fn artifact(&self, task_id: &str, run_id: u32, name: &str) -> Value {
        let list = self.artifact_list(task_id, run_id).await;
        list.into_iter()
            .find(|a| a["name"] == json!(name))
            .unwrap_or_else(|| panic!("task {task_id} run {run_id} has no artifact {name}"))
    }

    /// Where the queue redirects a reader of an artifact (not followed).
    pub async fn artifact_location(&self, task_id: &str, run_id: u32, name: &str) -> String {
        let url = self
            .client
            .getArtifact_signed_url(task_id, &run_id.to_string(), name, Duration::from_secs(300))
            .unwrap();
        let response = self.http.get(url).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{name}: {}",
            response.status()
        );
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The bytes of an artifact (following the redirect).
    pub async fn artifact_text(&self, task_id: &str, run_id: u32, name: &str) -> String {
        let url = self
            .client
            .getArtifact_signed_url(task_id, &run_id.to_string(), name, Duration::from_secs(300))
            .unwrap();
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    /// The queue moves its clock forward (deadlines, claim expiry); the
    /// bridge reads the same clock.
    pub fn advance_clock(&self, by: Duration) {
        self.q.clock.advance(by);
    }

    // ----- the master, through the adapter ----------------------------------------------

    /// The requests the master holds for the task.
    pub async fn requests(&self, task_id: &str) -> Vec<bbb_buildbot::FoundRequest> {
        self.master.find_requests_for_task(task_id).await.unwrap()
    }

    /// The request's state on the master.
    pub async fn request_state(&self, brid: BuildRequestId) -> RequestState {
        self.master.request_state(brid).await.unwrap()
    }

    /// Waits until the request's state satisfies `pred`.
    pub async fn wait_request(
        &self,
        brid: BuildRequestId,
        what: &str,
        pred: impl Fn(&RequestState) -> bool,
    ) -> RequestState {
        let what = format!("request {brid}: {what}");
        poll_until(&what, async || self.request_state(brid).await, pred).await
    }

    /// Waits until the request is cancelled.
    pub async fn wait_cancelled(&self, brid: BuildRequestId) -> RequestState {
        self.wait_request(brid, "cancelled", |s| {
            matches!(s, RequestState::Cancelled { .. })
        })
        .await
    }

    /// Waits until the request is complete with `results`.
    pub async fn wait_complete(&self, brid: BuildRequestId, results: BuildResult) -> RequestState {
        self.wait_request(
            brid,
            &format!("complete {}", results.name()),
            |s| matches!(s, RequestState::Complete { results: r, .. } if *r == results),
        )
        .await
    }

    // ----- the master, directly -----------------------------------------------------------

    fn bb4(&self) -> &Bb4Parts {
        self.bb4.as_ref().expect("a Buildbot 4 scenario")
    }

    fn sim(&self) -> &SimParts {
        self.sim.as_ref().expect("a simulator scenario")
    }

    fn sandbox(&self) -> &SandboxMaster {
        self.sandbox.as_ref().expect("a sandbox scenario")
    }

    /// Submits a build request as the master's own schedulers would (no
    /// task behind it): `builder` at `revision` of `branch`, scripted to end
    /// with `result` after about `duration_ms`. On 0.8 the rows a scheduler
    /// writes (source stamp, buildset with its reason, properties, request);
    /// on Buildbot 4 a `force` call with another reason and no `taskId`; on
    /// the sandbox its own scheduling.
    pub async fn schedule_own_build(
        &self,
        builder: &str,
        branch: &str,
        revision: &str,
        result: BuildResult,
        duration_ms: u64,
    ) {
        match self.kind {
            MasterKind::Simulator => {
                let now = chrono::Utc::now().timestamp();
                let prop = |name: &str, value: Value| {
                    format!(
                        "INSERT INTO buildset_properties (buildsetid, property_name, property_value) \
                         VALUES (@bs, '{name}', '{}')",
                        json!([value, "Scheduler"])
                    )
                };
                self.sched_transaction([
                    format!(
                        "INSERT INTO sourcestamps (branch, revision, repository, project) \
                         VALUES ('{branch}', '{revision}', '', '')"
                    ),
                    "SET @ss = LAST_INSERT_ID()".to_owned(),
                    format!(
                        "INSERT INTO buildsets (external_idstring, reason, sourcestampid, submitted_at) \
                         VALUES (NULL, 'scheduler', @ss, {now})"
                    ),
                    "SET @bs = LAST_INSERT_ID()".to_owned(),
                    prop("sim_result", json!(result.name())),
                    prop("sim_duration_ms", json!(duration_ms)),
                    format!(
                        "INSERT INTO buildrequests (buildsetid, buildername, priority, submitted_at) \
                         VALUES (@bs, '{builder}', 0, {now})"
                    ),
                ])
                .await;
            }
            MasterKind::Buildbot4 => {
                let mut props = self.kind.script_result(result);
                props["bb_sleep"] = json!((duration_ms as f64 / 1000.0).ceil() as u64);
                let url = format!("{}/forceschedulers/bbb", self.bb4().api_url);
                let call = json!({"jsonrpc": "2.0", "id": 1, "method": "force", "params": {
                    "builderNames": [builder], "reason": "scheduler", "branch": branch,
                    "revision": revision, "repository": "", "project": "",
                    "bbb_properties": props,
                }});
                let answer: Value = self
                    .http
                    .post(&url)
                    .json(&call)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(
                    answer.get("error").is_none_or(Value::is_null),
                    "force on {url}: {answer}"
                );
            }
            MasterKind::Sandbox => {
                let mut properties = std::collections::BTreeMap::new();
                properties.insert("sim_result".to_owned(), json!(result.name()));
                properties.insert("sim_duration_ms".to_owned(), json!(duration_ms));
                self.sandbox()
                    .schedule(bbb_buildbot::sandbox::OwnRequest {
                        buildername: builder.to_owned(),
                        sourcestamp: bbb_buildbot::SourceStamp {
                            branch: Some(branch.to_owned()),
                            revision: Some(revision.to_owned()),
                            ..Default::default()
                        },
                        properties,
                        reason: "scheduler".to_owned(),
                        priority: 0,
                    })
                    .unwrap();
            }
        }
    }

    /// The request as the sandbox stores it.
    fn sandbox_request(&self, brid: BuildRequestId) -> bbb_buildbot::sandbox::StoredRequest {
        self.sandbox()
            .stored_request(brid)
            .expect("the sandbox has the request")
    }

    /// A Buildbot user cancels the request on the sandbox, which answers
    /// `expected`.
    fn sandbox_cancel(&self, brid: BuildRequestId, expected: CancelOutcome) {
        assert_eq!(self.sandbox().cancel_from_master(brid), expected);
    }

    /// The Buildbot 4 master, locked.
    async fn bb4_master(&self) -> tokio::sync::MappedMutexGuard<'_, BuildbotMaster> {
        tokio::sync::MutexGuard::map(self.bb4().master.lock().await, |master| {
            master.as_mut().expect("the master runs")
        })
    }

    async fn rest_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.bb4().api_url);
        let response = self.http.get(&url).send().await.unwrap();
        assert!(response.status().is_success(), "GET {url}: {response:?}");
        response.json().await.unwrap()
    }

    /// Calls `method` on the resource at `path` of Buildbot 4's REST API
    /// (JSON-RPC, as the web UI does) with a `reason`.
    async fn rest_rpc(&self, path: &str, method: &str, reason: &str) -> Value {
        let url = format!("{}{path}", self.bb4().api_url);
        let call =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"reason": reason}});
        let response = self.http.post(&url).json(&call).send().await.unwrap();
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer.get("error").is_none_or(Value::is_null),
            "{method} on {url}: {answer}"
        );
        answer
    }

    async fn sched_query<T: mysql_async::prelude::FromRow + Send + 'static>(
        &self,
        sql: &str,
    ) -> Vec<T> {
        let mut conn = self.sim().db.conn().await.unwrap();
        conn.query(sql).await.unwrap()
    }

    /// Runs `statements` on the simulator's scheduler DB in one
    /// transaction; returns how many rows each changed.
    async fn sched_transaction(&self, statements: impl IntoIterator<Item = String>) -> Vec<u64> {
        let mut conn = self.sim().db.conn().await.unwrap();
        let mut tx = conn
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        let mut changed = Vec::new();
        for sql in statements {
            tx.query_drop(sql).await.unwrap();
            changed.push(tx.affected_rows());
        }
        tx.commit().await.unwrap();
        changed
    }

    async fn sched_exec(&self, sql: &str) {
        let mut conn = self.sim().db.conn().await.unwrap();
        conn.query_drop(sql).await.unwrap();
    }

    /// The first row `sql` selects from the simulator's scheduler DB.
    async fn sched_first<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> T {
        self.sched_query::<T>(sql)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no row for {sql}"))
    }

    /// The request as Buildbot 4's REST API shows it.
    async fn rest_request(&self, brid: BuildRequestId) -> Value {
        let mut requests = self.rest_get(&format!("/buildrequests/{}", brid.0)).await;
        requests["buildrequests"][0].take()
    }

    /// The reason of the request's buildset, as the master stored it.
    pub async fn request_reason(&self, brid: BuildRequestId) -> String {
        match self.kind {
            MasterKind::Simulator => {
                self.sched_first(&format!(
                    "SELECT bs.reason FROM buildsets bs JOIN buildrequests br \
                     ON br.buildsetid = bs.id WHERE br.id = {}",
                    brid.0
                ))
                .await
            }
            MasterKind::Buildbot4 => {
                let bsid = self.rest_request(brid).await["buildsetid"]
                    .as_u64()
                    .unwrap();
                let buildset = self.rest_get(&format!("/buildsets/{bsid}")).await;
                buildset["buildsets"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            MasterKind::Sandbox => self.sandbox_request(brid).reason,
        }
    }

    /// An integer column of the request, as the master stored it: `column`
    /// of the scheduler DB's `buildrequests` row or of Buildbot 4's REST
    /// resource, or what `sandbox` reads from the sandbox's request.
    async fn request_number(
        &self,
        brid: BuildRequestId,
        column: &str,
        sandbox: impl Fn(bbb_buildbot::sandbox::StoredRequest) -> i64,
    ) -> i64 {
        match self.kind {
            MasterKind::Simulator => {
                let sql = format!("SELECT {column} FROM buildrequests WHERE id = {}", brid.0);
                self.sched_first(&sql).await
            }
            MasterKind::Buildbot4 => self.rest_request(brid).await[column].as_i64().unwrap(),
            MasterKind::Sandbox => sandbox(self.sandbox_request(brid)),
        }
    }

    /// The request's priority, as the master stored it.
    pub async fn request_priority(&self, brid: BuildRequestId) -> i64 {
        self.request_number(brid, "priority", |r| r.priority.into())
            .await
    }

    /// The request's own `submitted_at` on the master (epoch seconds).
    pub async fn request_submitted_at(&self, brid: BuildRequestId) -> i64 {
        self.request_number(brid, "submitted_at", |r| r.submitted_at)
            .await
    }

    /// A Buildbot user cancels the pending request: on 0.8 through
    /// self-serve (which completes it FAILURE without a build, as Mozilla's
    /// selfserve-agent did), on Buildbot 4 with the web UI's `cancel` call,
    /// on the sandbox with its `cancel_from_master` (CANCELLED, no build).
    pub async fn cancel_on_master(&self, brid: BuildRequestId) {
        match self.kind {
            MasterKind::Simulator => {
                let url = format!(
                    "{}/mozilla-inbound/request/{}",
                    self.sim().sim.selfserve_url(),
                    brid.0
                );
                let response = self
                    .http
                    .delete(&url)
                    .header("X-Remote-User", "sheriff@example.com")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 202, "DELETE {url}");
            }
            MasterKind::Buildbot4 => {
                let path = format!("/buildrequests/{}", brid.0);
                self.rest_rpc(&path, "cancel", "cancelled by a sheriff")
                    .await;
            }
            MasterKind::Sandbox => self.sandbox_cancel(brid, CancelOutcome::Cancelled),
        }
    }

    /// A Buildbot user stops the running build of the request: on 0.8 the
    /// web stop URL of the build, on Buildbot 4 the web UI's `stop` call, on
    /// the sandbox its `cancel_from_master`, which stops a running build.
    pub async fn stop_on_master(&self, brid: BuildRequestId) {
        match self.kind {
            MasterKind::Simulator => {
                let (builder, number): (String, u64) = self
                    .sched_first(&format!(
                        "SELECT br.buildername, b.number FROM builds b JOIN buildrequests br \
                         ON br.id = b.brid WHERE b.brid = {} AND b.finish_time IS NULL",
                        brid.0
                    ))
                    .await;
                let url = format!(
                    "{}/builders/{builder}/builds/{number}/stop",
                    self.sim().sim.web_url()
                );
                let response = self.http.post(&url).send().await.unwrap();
                assert!(response.status().is_redirection(), "POST {url}");
            }
            MasterKind::Buildbot4 => {
                let builds = self
                    .rest_get(&format!("/builds?buildrequestid={}&complete=false", brid.0))
                    .await;
                let id = builds["builds"][0]["buildid"]
                    .as_u64()
                    .expect("a running build");
                self.rest_rpc(&format!("/builds/{id}"), "stop", "stopped by a sheriff")
                    .await;
            }
            MasterKind::Sandbox => self.sandbox_cancel(brid, CancelOutcome::Requested),
        }
    }

    /// Makes the build of a task scripted with
    /// [`MasterKind::script_retry_then_success`] end RETRY: the simulator
    /// does it by itself; on Buildbot 4 the worker is killed once the build
    /// is in its first-attempt sleep (the master then ends the build RETRY
    /// and requeues its request), and started again.
    pub async fn cause_retry(&self, task_id: &str) {
        if self.kind != MasterKind::Buildbot4 {
            return;
        }
        let mut bb = self.bb4_master().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !bb.first_attempt_started(0, task_id) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the build of {task_id} never reached its first-attempt sleep"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bb.kill_worker(0)
            .await
            .expect("kill and restart the worker");
    }

    /// Takes the Buildbot 4 master's worker away (`online: false`):
    /// requests of its builders stay pending until it is brought back
    /// (`online: true`).
    pub async fn set_worker_online(&self, online: bool) {
        let mut master = self.bb4_master().await;
        if online {
            master.start_worker(0).await.expect("start the worker");
        } else {
            master.stop_worker(0).await.expect("stop the worker");
        }
    }

    /// Merges pending requests into one build, as a 0.8 master does (the
    /// simulator and the sandbox's scheduler never merge), and returns its
    /// build number. On the simulator's scheduler DB it does what the master
    /// would: claims them in one transaction and inserts one `builds` row per
    /// request, all with the same build number; the sandbox does the same
    /// with `start_merged_build`, and the build runs the first request's
    /// script.
    pub async fn start_merged_build(&self, brids: &[BuildRequestId]) -> u64 {
        if self.kind == MasterKind::Sandbox {
            return self
                .sandbox()
                .start_merged_build(brids)
                .expect("every request was pending");
        }
        let ids = id_list(brids);
        // The builder is served by no simulator: its numbers start at 0.
        let number = 0;
        let now = chrono::Utc::now().timestamp();
        let claim = format!(
            "UPDATE buildrequests SET claimed_at = {now}, claimed_by_name = 'sim-master', \
             claimed_by_incarnation = 'merging' \
             WHERE id IN ({ids}) AND complete = 0 AND (claimed_at IS NULL OR claimed_at = 0)"
        );
        let builds = brids.iter().map(|brid| {
            format!(
                "INSERT INTO builds (number, brid, start_time, finish_time) \
                 VALUES ({number}, {}, {now}, NULL)",
                brid.0
            )
        });
        let changed = self
            .sched_transaction(std::iter::once(claim).chain(builds))
            .await;
        assert_eq!(changed[0], brids.len() as u64, "every request was pending");
        number
    }

    /// Finishes a merged build started by
    /// [`start_merged_build`](Self::start_merged_build) with `result`: on the
    /// simulator's scheduler DB, sets its `finish_time` and completes every
    /// request (and their buildsets), as a 0.8 master does; the sandbox ends
    /// the build with `result` (`end_build`).
    pub async fn finish_merged_build(&self, brids: &[BuildRequestId], result: BuildResult) {
        if self.kind == MasterKind::Sandbox {
            let ended = self
                .sandbox()
                .end_build(StopTarget::Request(brids[0]), result);
            assert!(matches!(ended, StopOutcome::Requested(_)), "{ended:?}");
            return;
        }
        let ids = id_list(brids);
        let now = chrono::Utc::now().timestamp();
        let code = result.code();
        self.sched_transaction([
            format!("UPDATE builds SET finish_time = {now} WHERE brid IN ({ids})"),
            format!(
                "UPDATE buildrequests SET complete = 1, results = {code}, complete_at = {now} \
                 WHERE id IN ({ids})"
            ),
            format!(
                "UPDATE buildsets SET complete = 1, results = {code}, complete_at = {now} \
                 WHERE id IN (SELECT buildsetid FROM buildrequests WHERE id IN ({ids}))"
            ),
        ])
        .await;
    }

    /// Stops the listeners, the master and the queue.
    pub async fn stop(self) {
        self.cancel.cancel();
        for h in self.handles {
            let _ = h.await;
        }
        if let Some(parts) = self.sim {
            parts.sim.shutdown().await;
            drop(parts.sched);
            let _ = parts.db.drop_database().await;
        }
        if let Some(parts) = self.bb4
            && let Some(bb) = parts.master.into_inner()
        {
            bb.stop().await.expect("stop the Buildbot master");
        }
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
        self.q.stop().await;
    }
}

/// A valid payload for `builder`; `extra_props` are added to its properties.
pub fn payload(builder: &str, extra_props: Value) -> Value {
    let mut props = json!({"product": "firefox"});
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra_props.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!({
        "buildername": builder,
        "properties": props,
        "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abcdef012345",
                        "repository": "https://hg.mozilla.org/integration/mozilla-inbound"},
    })
}

/// The build request a row records.
pub fn request_of(row: &MappingRow) -> BuildRequestId {
    BuildRequestId(row.build_request_id.expect("a build request") as u64)
}

/// The requests' ids, comma-separated (for `IN (...)`).
fn id_list(brids: &[BuildRequestId]) -> String {
    let ids: Vec<String> = brids.iter().map(|b| b.0.to_string()).collect();
    ids.join(",")
}

/// A fresh taskId.
pub fn slug() -> String {
    use base64::Engine;
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs each scenario `async fn name(kind: MasterKind)` once per kind:
/// `scenarios!(name, ...)` makes the tests `name::simulator`,
/// `name::buildbot4` and `name::sandbox`.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn simulator() {
                super::$name(crate::common::MasterKind::Simulator).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn buildbot4() {
                super::$name(crate::common::MasterKind::Buildbot4).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sandbox() {
                super::$name(crate::common::MasterKind::Sandbox).await;
            }
        }
    )*};
}
