//! A legacy Buildbot 0.8 master, simulated on a real scheduler DB.
//!
//! The [`Simulator`] plays the master's part for the sandbox, the scenarios
//! and load tests. Like a 0.8 master it
//!
//! 1. polls `buildrequests` for unclaimed, incomplete requests of its
//!    builders (highest `priority` first, then oldest `submitted_at`),
//! 2. claims each with a guarded `UPDATE` (`claimed_at`, `claimed_by_name`,
//!    `claimed_by_incarnation`; a request completed or claimed meanwhile is
//!    not started) and inserts a `builds` row with the builder's next build
//!    number, in one transaction,
//! 3. publishes `build.<dir>.<n>.started` with `request_ids` on
//!    `exchange/build` (when it has a bus),
//! 4. "runs" the build for a scripted time, then in one transaction sets
//!    `builds.finish_time` and either completes the request (`complete=1`,
//!    `results`, `complete_at`, and the buildset once all its requests are
//!    complete) or, for RETRY, unclaims it (`claimed_at=0`,
//!    `claimed_by_*=NULL`) so the same request runs again,
//! 5. publishes `build.<dir>.<n>.finished` and `build.<dir>.<n>.log_uploaded`
//!    (the latter with the `postrun.py` properties `request_ids`,
//!    `request_times` and `log_url`).
//!
//! **Scripts.** A build's result and duration come from its properties,
//! else from its [`SimBuilder`], as the [`script`](crate::script) module
//! says: `sim_result` is a result name or code, or a comma-separated list
//! (or JSON list) used one per attempt, the last one repeating
//! (`"RETRY,SUCCESS"` retries once, then passes); `sim_duration_ms` is the
//! run time in milliseconds, one value or a list per attempt in the same way
//! (`"100,600000"`).
//!
//! **Web.** It serves, on [`Simulator::web_url`]:
//! - each finished build's log, gzipped, at the `log_url` its
//!   `log_uploaded` message carries, `GET /logs/<builder>/<n>.txt.gz`, as
//!   Mozilla's masters uploaded their logs for postrun.py
//!   (`application/gzip`, no content encoding: the file is the `.gz`); the
//!   text is a 0.8 master's log of its steps ([`BuildLog`](crate::BuildLog));
//! - the 0.8 stop URL `POST /builders/<builder>/builds/<n>/stop`: the build
//!   finishes CANCELLED (answer: a redirect to the build page);
//! - a self-serve (buildapi) subset under `/self-serve`:
//!   `DELETE /self-serve/<branch>/request/<brid>` and
//!   `DELETE /self-serve/<branch>/build/<build id>`, which need an
//!   `X-Remote-User` header (else 403), answer 404 for an unknown id and
//!   otherwise 202, doing what Mozilla's selfserve-agent did: a complete
//!   request or build is left alone, a running one is stopped, a pending
//!   request is cancelled with `complete=1, results=2 (FAILURE)`.
//!
//! Build numbers are counted per builder from the DB's highest at start, so
//! run one simulator per builder.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use bbb_secret::SecretUrl;

use crate::buildlog::{BuildLog, LogStep};
use crate::common::now_secs;
use crate::error::{LegacyError, Result};
use crate::messages::{
    BuildSnapshot, DEFAULT_BUILD_EXCHANGE, MasterIdentity, finished_message, log_uploaded_message,
    started_message,
};
use crate::scheduler_db::{complete_buildset_if_done, open_pool};
use crate::script::ScriptedBuilder;
use crate::types::{BuildRequestId, BuildResult, SourceStamp};

/// A builder the simulator serves, with its default script: its name is
/// `buildrequests.buildername` and its directory name in routing keys.
pub type SimBuilder = ScriptedBuilder;

/// Configuration of a [`Simulator`].
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// The scheduler DB (`mysql://...`), with the 0.8 tables (its password
    /// masked in `Debug`).
    pub db_url: SecretUrl,
    /// Where to publish `exchange/build` messages; `None` publishes nothing
    /// (a master without Pulse).
    pub bus: Option<bbb_pulse::Bus>,
    /// The exchange to publish to.
    pub exchange: String,
    /// The builders it serves.
    pub builders: Vec<SimBuilder>,
    /// The master's name: `claimed_by_name` and `_meta.master_name`.
    pub master_name: String,
    /// Time between polls for new requests (a 0.8 master's `db_poll_interval`).
    pub poll_interval: Duration,
    /// Address of the web server (port 0 picks a free port).
    pub web_addr: SocketAddr,
}

impl SimulatorConfig {
    /// Defaults: exchange `exchange/build`, master `sim-master`, polls every
    /// 50 ms, web server on a free loopback port.
    pub fn new(
        db_url: impl Into<SecretUrl>,
        bus: Option<bbb_pulse::Bus>,
        builders: Vec<SimBuilder>,
    ) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            exchange: DEFAULT_BUILD_EXCHANGE.to_owned(),
            builders,
            master_name: "sim-master".to_owned(),
            poll_interval: Duration::from_millis(50),
            web_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// Counters of a running simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// Builds started.
    pub started: u64,
    /// Builds finished (any result).
    pub finished: u64,
    /// Builds finished RETRY (their request was requeued).
    pub retried: u64,
    /// Builds stopped (finished CANCELLED).
    pub stopped: u64,
}

struct Running {
    brid: BuildRequestId,
    build_id: u64,
    stop: Option<oneshot::Sender<()>>,
}

struct Shared {
    pool: Pool,
    config: SimulatorConfig,
    master: MasterIdentity,
    web_url: String,
    numbers: Mutex<HashMap<String, u64>>,
    in_use: Mutex<HashMap<String, usize>>,
    running: Mutex<HashMap<(String, u64), Running>>,
    /// Each finished build's log, gzipped, by builder and number.
    logs: Mutex<HashMap<(String, u64), Vec<u8>>>,
    wake: Notify,
    started: AtomicU64,
    finished: AtomicU64,
    retried: AtomicU64,
    stopped: AtomicU64,
    statusdb_ids: AtomicU64,
}

/// A running legacy-master simulator. Stop it with [`Simulator::shutdown`]
/// (dropping it stops it too, abruptly).
pub struct Simulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("master", &self.shared.master.name)
            .field("web_url", &self.shared.web_url)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts polling, and serving the web endpoints.
    pub async fn start(config: SimulatorConfig) -> Result<Simulator> {
        let pool = open_pool(config.db_url.expose())?;
        let mut numbers = HashMap::new();
        {
            let mut conn = pool.get_conn().await?;
            for builder in &config.builders {
                let highest: Option<Option<u64>> = conn
                    .exec_first(
                        "SELECT MAX(b.number) FROM builds b JOIN buildrequests br ON br.id = b.brid \
                         WHERE br.buildername = ?",
                        (builder.name.as_str(),),
                    )
                    .await?;
                let next = highest.flatten().map_or(0, |n| n + 1);
                numbers.insert(builder.name.clone(), next);
            }
        }
        let listener = tokio::net::TcpListener::bind(config.web_addr).await?;
        let web_url = format!("http://{}", listener.local_addr()?);
        let master = MasterIdentity {
            name: config.master_name.clone(),
            incarnation: format!("pid{}-{}", std::process::id(), now_secs()),
        };
        let shared = Arc::new(Shared {
            pool,
            config,
            master,
            web_url,
            numbers: Mutex::new(numbers),
            in_use: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            statusdb_ids: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/logs/{builder}/{file}", get(log_handler))
            .route(
                "/builders/{builder}/builds/{number}/stop",
                post(stop_handler),
            )
            .route(
                "/self-serve/{branch}/request/{id}",
                delete(selfserve_request_handler),
            )
            .route(
                "/self-serve/{branch}/build/{id}",
                delete(selfserve_build_handler),
            )
            .with_state(shared.clone());
        let web = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "simulator web server failed");
            }
        });
        let poller = tokio::spawn(poll_loop(shared.clone()));
        tracing::info!(master = %shared.master.name, web_url = %shared.web_url, builders = shared.config.builders.len(), "legacy-master simulator started");
        Ok(Simulator {
            shared,
            tasks: vec![web, poller],
        })
    }

    /// Base URL of its web server (the master's web URL, for stop URLs).
    pub fn web_url(&self) -> &str {
        &self.shared.web_url
    }

    /// Base URL of its self-serve API (`{web_url}/self-serve`).
    pub fn selfserve_url(&self) -> String {
        format!("{}/self-serve", self.shared.web_url)
    }

    /// The master's name (`claimed_by_name`).
    pub fn master_name(&self) -> &str {
        &self.shared.master.name
    }

    /// Counters so far.
    pub fn stats(&self) -> SimulatorStats {
        SimulatorStats {
            started: self.shared.started.load(Ordering::Relaxed),
            finished: self.shared.finished.load(Ordering::Relaxed),
            retried: self.shared.retried.load(Ordering::Relaxed),
            stopped: self.shared.stopped.load(Ordering::Relaxed),
        }
    }

    /// Builds running now.
    pub fn running_builds(&self) -> usize {
        self.shared.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Stops polling and serving. Builds still running are abandoned, as
    /// when a master dies: their requests stay claimed.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn poll_loop(shared: Arc<Shared>) {
    loop {
        for builder in shared.config.builders.clone() {
            if let Err(error) = fill_slots(&shared, &builder).await {
                tracing::warn!(builder = %builder.name, %error, "simulator poll failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = shared.wake.notified() => {}
        }
    }
}

fn free_slots(shared: &Shared, builder: &SimBuilder) -> usize {
    let in_use = shared
        .in_use
        .lock()
        .map(|m| m.get(&builder.name).copied().unwrap_or(0));
    builder
        .slots
        .saturating_sub(in_use.unwrap_or(builder.slots))
}

fn change_slots(shared: &Shared, builder: &str, delta: isize) {
    if let Ok(mut map) = shared.in_use.lock() {
        let entry = map.entry(builder.to_owned()).or_default();
        *entry = entry.saturating_add_signed(delta);
    }
}

async fn fill_slots(shared: &Arc<Shared>, builder: &SimBuilder) -> Result<()> {
    let free = free_slots(shared, builder);
    if free == 0 {
        return Ok(());
    }
    let mut conn = shared.pool.get_conn().await?;
    let candidates: Vec<(u64, u64, i64)> = conn
        .exec(
            "SELECT id, buildsetid, submitted_at FROM buildrequests \
             WHERE buildername = ? AND complete = 0 AND (claimed_at IS NULL OR claimed_at = 0) \
             ORDER BY priority DESC, submitted_at, id LIMIT ?",
            (builder.name.as_str(), free as u64),
        )
        .await?;
    drop(conn);
    for (brid, buildset_id, submitted_at) in candidates {
        if let Some(build) =
            claim_and_start(shared, builder, brid, buildset_id, submitted_at).await?
        {
            change_slots(shared, &builder.name, 1);
            let shared = shared.clone();
            let builder = builder.clone();
            tokio::spawn(async move { run_build(shared, builder, build).await });
        }
    }
    Ok(())
}

struct StartedBuild {
    brid: BuildRequestId,
    build_id: u64,
    attempt: usize,
    snapshot: BuildSnapshot,
    result: BuildResult,
    duration: Duration,
    stop: oneshot::Receiver<()>,
}

async fn claim_and_start(
    shared: &Arc<Shared>,
    builder: &SimBuilder,
    brid: u64,
    buildset_id: u64,
    submitted_at: i64,
) -> Result<Option<StartedBuild>> {
    let now = now_secs();
    let mut conn = shared.pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE buildrequests SET claimed_at = ?, claimed_by_name = ?, claimed_by_incarnation = ? \
         WHERE id = ? AND complete = 0 AND (claimed_at IS NULL OR claimed_at = 0)",
        (
            now,
            shared.master.name.as_str(),
            shared.master.incarnation.as_str(),
            brid,
        ),
    )
    .await?;
    if tx.affected_rows() != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    let attempts: Option<u64> = tx
        .exec_first("SELECT COUNT(*) FROM builds WHERE brid = ?", (brid,))
        .await?;
    let number = {
        let mut numbers = shared
            .numbers
            .lock()
            .map_err(|_| LegacyError::Invalid("build number lock poisoned".to_owned()))?;
        let next = numbers.entry(builder.name.clone()).or_insert(0);
        let number = *next;
        *next += 1;
        number
    };
    tx.exec_drop(
        "INSERT INTO builds (number, brid, start_time, finish_time) VALUES (?, ?, ?, NULL)",
        (number, brid, now),
    )
    .await?;
    let build_id = tx.last_insert_id().unwrap_or_default();
    let properties: Vec<(String, String)> = tx
        .exec(
            "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = ?",
            (buildset_id,),
        )
        .await?;
    type BuildsetRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let buildset: Option<BuildsetRow> = tx
        .exec_first(
            "SELECT bs.reason, ss.branch, ss.revision, ss.repository, ss.project \
             FROM buildsets bs LEFT JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
             WHERE bs.id = ?",
            (buildset_id,),
        )
        .await?;
    tx.commit().await?;

    let (reason, branch, revision, repository, project) = buildset.unwrap_or_default();
    let sourcestamp = SourceStamp {
        branch,
        revision,
        repository: repository.unwrap_or_default(),
        project: project.unwrap_or_default(),
    };
    let properties: Vec<(String, Value, String)> = properties
        .into_iter()
        .map(
            |(name, encoded)| match serde_json::from_str::<Value>(&encoded) {
                Ok(Value::Array(pair)) if pair.len() == 2 => (
                    name,
                    pair[0].clone(),
                    pair[1].as_str().unwrap_or_default().to_owned(),
                ),
                _ => (name, Value::String(encoded), String::new()),
            },
        )
        .collect();
    let attempt = attempts.unwrap_or(0) as usize;
    let (result, duration) = builder.script(
        |name| {
            properties
                .iter()
                .find(|(property, _, _)| property == name)
                .map(|(_, value, _)| value)
        },
        attempt,
    );
    let snapshot = BuildSnapshot::start(&builder.name, number, &shared.master.name, now).serving(
        BuildRequestId(brid),
        submitted_at,
        properties,
        &sourcestamp,
        &reason.unwrap_or_default(),
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    if let Ok(mut running) = shared.running.lock() {
        running.insert(
            (builder.name.clone(), number),
            Running {
                brid: BuildRequestId(brid),
                build_id,
                stop: Some(stop_tx),
            },
        );
    }
    shared.started.fetch_add(1, Ordering::Relaxed);
    tracing::info!(build_request.id = brid, builder = %builder.name, build.number = number, %result, "simulated build started");
    publish(
        shared,
        started_message(&shared.config.exchange, &snapshot, &shared.master),
    )
    .await;
    Ok(Some(StartedBuild {
        brid: BuildRequestId(brid),
        build_id,
        attempt,
        snapshot,
        result,
        duration,
        stop: stop_rx,
    }))
}

async fn publish(shared: &Shared, message: bbb_pulse::Message) {
    if let Some(bus) = &shared.config.bus {
        // A real master's queuedir publisher retries; a few attempts suffice here.
        for attempt in 0..3 {
            match bus.publish(std::slice::from_ref(&message)).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(routing_key = %message.routing_key, attempt, %error, "simulator could not publish");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn run_build(shared: Arc<Shared>, builder: SimBuilder, mut build: StartedBuild) {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(build.duration) => false,
        received = &mut build.stop => received.is_ok(),
    };
    let result = if stopped {
        shared.stopped.fetch_add(1, Ordering::Relaxed);
        BuildResult::Cancelled
    } else {
        build.result
    };
    let mut attempt = 0;
    while let Err(error) = finish_build(&shared, &build, result).await {
        attempt += 1;
        tracing::warn!(build_request.id = build.brid.0, %error, attempt, "simulator could not record a finished build, retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Ok(mut running) = shared.running.lock() {
        running.remove(&(builder.name.clone(), build.snapshot.number));
    }
    change_slots(&shared, &builder.name, -1);
    shared.finished.fetch_add(1, Ordering::Relaxed);
    if result == BuildResult::Retry {
        shared.retried.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(build_request.id = build.brid.0, builder = %builder.name, build.number = build.snapshot.number, %result, "simulated build finished");
    let mut snapshot = build.snapshot;
    snapshot.results = Some(result);
    snapshot.finish_time = Some(now_secs() as f64);
    snapshot.log_url = Some(format!(
        "{}/logs/{}/{}.txt.gz",
        shared.web_url, builder.name, snapshot.number
    ));
    // postrun.py uploads the log before it sends `log_uploaded`.
    let log = build_log(&snapshot, build.build_id, build.attempt, stopped);
    if let Ok(mut logs) = shared.logs.lock() {
        logs.insert(
            (builder.name.clone(), snapshot.number),
            gzip(log.as_bytes()),
        );
    }
    publish(
        &shared,
        finished_message(&shared.config.exchange, &snapshot, &shared.master),
    )
    .await;
    let statusdb_id = shared.statusdb_ids.fetch_add(1, Ordering::Relaxed);
    publish(
        &shared,
        log_uploaded_message(
            &shared.config.exchange,
            &snapshot,
            &shared.master,
            statusdb_id,
        ),
    )
    .await;
    shared.wake.notify_one();
}

/// The text of a finished simulated build's log: the master's properties,
/// the request's, and the script's end.
fn build_log(snapshot: &BuildSnapshot, build_id: u64, attempt: usize, stopped: bool) -> String {
    let start = snapshot.start_time as i64;
    let finish = snapshot.finish_time.map_or(start, |t| t as i64);
    let property = |name: &str| {
        snapshot
            .properties
            .iter()
            .rev()
            .find(|(property, _, _)| property == name)
            .map(|(_, value, _)| {
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            })
    };
    let mut properties = String::new();
    for (name, value, source) in &snapshot.properties {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        properties.push_str(&format!("{name}: {value} ({source})\n"));
    }
    let results = snapshot.results.unwrap_or(BuildResult::Success);
    let brid = snapshot.request_ids.first().map_or(0, |id| id.0);
    let mut script = match property("taskId") {
        Some(task) => format!(
            "the build of task {task}, build request {brid}, attempt {}\n",
            attempt + 1
        ),
        None => format!("build request {brid}, attempt {}\n", attempt + 1),
    };
    script.push_str(&if stopped {
        format!("the build was stopped: it ends {results}\n")
    } else {
        format!("the script ends {results}\n")
    });
    let done = |name: &str, text: String| LogStep {
        name: name.to_owned(),
        results: Some(BuildResult::Success),
        started: start,
        finished: Some(start),
        text,
    };
    BuildLog {
        builder: snapshot.builder.clone(),
        slave: snapshot.slave.clone(),
        start_time: start,
        results: Some(results),
        build_id: build_id.to_string(),
        revision: property("revision"),
        steps: vec![
            done(
                "set props: master",
                format!("master: {}\n", property("master").unwrap_or_default()),
            ),
            done("set build properties", properties),
            LogStep {
                name: "run script".to_owned(),
                results: Some(results),
                started: start,
                finished: Some(finish),
                text: script,
            },
        ],
    }
    .render()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// `GET /logs/<builder>/<n>.txt.gz`: a finished build's gzipped log.
async fn log_handler(
    State(shared): State<Arc<Shared>>,
    Path((builder, file)): Path<(String, String)>,
) -> Response {
    let number = file
        .strip_suffix(".txt.gz")
        .and_then(|n| n.parse::<u64>().ok());
    let log = number.and_then(|number| {
        shared
            .logs
            .lock()
            .ok()
            .and_then(|logs| logs.get(&(builder, number)).cloned())
    });
    match log {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn finish_build(shared: &Shared, build: &StartedBuild, result: BuildResult) -> Result<()> {
    let now = now_secs();
    let mut conn = shared.pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE builds SET finish_time = ? WHERE id = ?",
        (now, build.build_id),
    )
    .await?;
    if result == BuildResult::Retry {
        tx.exec_drop(
            "UPDATE buildrequests SET claimed_at = 0, claimed_by_name = NULL, \
             claimed_by_incarnation = NULL WHERE id = ? AND complete = 0",
            (build.brid.0,),
        )
        .await?;
    } else {
        tx.exec_drop(
            "UPDATE buildrequests SET complete = 1, results = ?, complete_at = ? \
             WHERE id = ? AND complete = 0",
            (result.code(), now, build.brid.0),
        )
        .await?;
        complete_buildset_if_done(&mut tx, build.brid, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Signals the running build `(builder, number)` to stop; `false` if it is
/// not running.
fn signal_stop(shared: &Shared, builder: &str, number: u64) -> bool {
    let Ok(mut running) = shared.running.lock() else {
        return false;
    };
    match running.get_mut(&(builder.to_owned(), number)) {
        Some(entry) => entry.stop.take().is_some_and(|stop| stop.send(()).is_ok()),
        None => false,
    }
}

async fn stop_handler(
    State(shared): State<Arc<Shared>>,
    Path((builder, number)): Path<(String, u64)>,
) -> Response {
    let stopped = signal_stop(&shared, &builder, number);
    tracing::info!(%builder, build.number = number, stopped, "stop requested on the web");
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("/builders/{builder}/builds/{number}"),
        )],
    )
        .into_response()
}

fn selfserve_accepted(shared: &Shared) -> Response {
    let job = shared.statusdb_ids.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "OK", "request_id": job})),
    )
        .into_response()
}

fn remote_user_missing(headers: &HeaderMap) -> bool {
    headers
        .get("x-remote-user")
        .is_none_or(|value| value.is_empty())
}

/// Stops the running builds of `brid`; returns how many.
fn stop_request_builds(shared: &Shared, brid: BuildRequestId) -> usize {
    let Ok(mut running) = shared.running.lock() else {
        return 0;
    };
    running
        .values_mut()
        .filter(|entry| entry.brid == brid)
        .filter_map(|entry| entry.stop.take())
        .map(|stop| stop.send(()).is_ok())
        .filter(|sent| *sent)
        .count()
}

async fn selfserve_request_handler(
    State(shared): State<Arc<Shared>>,
    Path((_branch, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if remote_user_missing(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match selfserve_cancel_request(&shared, BuildRequestId(id)).await {
        Ok(true) => selfserve_accepted(&shared),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            tracing::warn!(build_request.id = id, %error, "self-serve cancel failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn selfserve_cancel_request(shared: &Shared, brid: BuildRequestId) -> Result<bool> {
    let mut conn = shared.pool.get_conn().await?;
    let row: Option<(Option<i64>, Option<i64>)> = conn
        .exec_first(
            "SELECT complete, claimed_at FROM buildrequests WHERE id = ?",
            (brid.0,),
        )
        .await?;
    let Some((complete, claimed_at)) = row else {
        return Ok(false);
    };
    if complete.unwrap_or(0) != 0 {
        return Ok(true);
    }
    if claimed_at.unwrap_or(0) != 0 {
        stop_request_builds(shared, brid);
        return Ok(true);
    }
    let now = now_secs();
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "UPDATE buildrequests SET complete = 1, results = ?, complete_at = ? \
         WHERE id = ? AND complete = 0 AND (claimed_at IS NULL OR claimed_at = 0)",
        (BuildResult::Failure.code(), now, brid.0),
    )
    .await?;
    if tx.affected_rows() == 1 {
        complete_buildset_if_done(&mut tx, brid, now).await?;
    } else {
        // Claimed meanwhile: stop it instead, as the agent would.
        stop_request_builds(shared, brid);
    }
    tx.commit().await?;
    Ok(true)
}

async fn selfserve_build_handler(
    State(shared): State<Arc<Shared>>,
    Path((_branch, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if remote_user_missing(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let exists = async {
        let mut conn = shared.pool.get_conn().await?;
        let row: Option<u64> = conn
            .exec_first("SELECT id FROM builds WHERE id = ?", (id,))
            .await?;
        Ok::<_, LegacyError>(row.is_some())
    }
    .await;
    match exists {
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Ok(true) => {
            let target = shared.running.lock().ok().and_then(|mut running| {
                running
                    .values_mut()
                    .find(|entry| entry.build_id == id)
                    .and_then(|entry| entry.stop.take())
            });
            if let Some(stop) = target {
                let _ = stop.send(());
            }
            selfserve_accepted(&shared)
        }
        Err(error) => {
            tracing::warn!(build.id = id, %error, "self-serve stop failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
