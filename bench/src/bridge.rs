//! The bridge benchmark: task-pending → build-request-injected latency at rising
//! task rates, and the time of reflector passes over many running rows.
//!
//! Everything runs in this process: a native queue (SQLite, in-process bus), the
//! bridge's TC listener and reflector, the mapping database (SQLite or
//! PostgreSQL) and a legacy master (a 0.8 scheduler DB on MariaDB, or the
//! in-memory sandbox master). See the crate README for what each figure means.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bbb_bridge::{Bridge, BridgeSettings, DEFAULT_TASK_QUEUE, Metrics, Outcome, QueueClient};
use bbb_buildbot::sandbox::{SandboxBuilder, SandboxConfig, SandboxMaster};
use bbb_buildbot::testing::{TestDatabase, fresh_database_on};
use bbb_buildbot::{
    BuildId, BuildRequestId, BuildRequestSpec, CancelOutcome, FoundRequest, LegacyEventStream,
    LegacyMaster, RequestState, SchedulerDb, SchedulerDbConfig, StopOutcome, StopTarget,
};
use bbb_listeners::tc_listener::{self, TcListenerSettings};
use bbb_queue::{Clock, QueueConfig};
use bbb_reflector::{PassReport, Reflector, ReflectorSettings};
use bbb_state::{StartedBuild, StateDb};
use bbb_testdb::{PgDatabase, TempDir};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::client::{Api, Creds};

/// The builder every benchmark task asks for on the sandbox master.
const BUILDER: &str = "linux64-build";

/// On the scheduler DB (which accepts any builder), each task asks for
/// `<this><taskId>`, so the builder check can be timed per task.
const UNIQUE_BUILDER_PREFIX: &str = "bench-build-";

/// The reflector's default interval, which a pass should stay well under.
const INTERVAL: Duration = Duration::from_secs(60);

/// The latency goal at 200 tasks/s.
const GOAL_P99: Duration = Duration::from_millis(50);

/// Which legacy master the bridge injects into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKind {
    /// A Buildbot 0.8 scheduler DB on MariaDB/MySQL ([`SchedulerDb`]): a fresh
    /// database with the scheduler schema is created on the server of
    /// [`Options::mysql_url`] for each part, and dropped afterwards.
    SchedulerDb,
    /// The in-memory sandbox master ([`SandboxMaster`]).
    Sandbox,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The mapping database. `None`: a temporary SQLite file. A `postgres://`
    /// URL: a fresh database is created on that server (with those
    /// credentials) for each part, and dropped afterwards.
    pub state_db: Option<String>,
    /// The legacy master.
    pub master: MasterKind,
    /// The MariaDB/MySQL server for [`MasterKind::SchedulerDb`]; only its
    /// credentials, host and port are used.
    pub mysql_url: String,
    /// Offered task rates (tasks/s), one step each, in this order.
    pub rates: Vec<u32>,
    /// Tasks created per rate step.
    pub tasks_per_rate: usize,
    /// Messages the TC listener handles at once (its default is 16).
    pub listener_concurrency: usize,
    /// Running rows loaded for the reflector passes (0 skips that part).
    pub reflector_rows: usize,
    /// Concurrent calls while loading those rows.
    pub load_concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            state_db: None,
            master: MasterKind::SchedulerDb,
            mysql_url: bbb_buildbot::testing::DEFAULT_TEST_MYSQL_URL.to_owned(),
            rates: vec![50, 100, 200, 400],
            tasks_per_rate: 1000,
            listener_concurrency: TcListenerSettings::default().concurrency,
            reflector_rows: 10_000,
            load_concurrency: 16,
        }
    }
}

// ----- timing marks -------------------------------------------------------------------

/// When each step of one task's injection happened (first occurrence only).
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    /// createTask sent.
    sent: Option<Instant>,
    /// createTask answered.
    created: Option<Instant>,
    /// The task-pending message seen by a second consumer on the same bus.
    published: Option<Instant>,
    /// The bridge asked the master whether it accepts the task's builder
    /// (after fetching the task; scheduler DB only, see [`UNIQUE_BUILDER_PREFIX`]).
    checked: Option<Instant>,
    /// The bridge asked the master for earlier requests of the task.
    find_start: Option<Instant>,
    /// The bridge called `submit`.
    submit_start: Option<Instant>,
    /// `submit` returned a build request id.
    submitted: Option<Instant>,
}

#[derive(Debug, Default)]
struct Timeline(Mutex<HashMap<String, Marks>>);

impl Timeline {
    fn mark(&self, task_id: &str, f: impl FnOnce(&mut Marks)) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(task_id.to_owned()).or_default());
    }

    fn get(&self, task_id: &str) -> Marks {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(task_id).copied().unwrap_or_default()
    }

    fn count_submitted(&self, ids: &[String]) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter()
            .filter(|id| map.get(*id).is_some_and(|m| m.submitted.is_some()))
            .count()
    }
}

fn first(slot: &mut Option<Instant>) {
    slot.get_or_insert_with(Instant::now);
}

/// A [`LegacyMaster`] that delegates to another and records, per task, when
/// the bridge looked for earlier requests and when `submit` started and
/// returned.
struct TimedMaster {
    inner: Arc<dyn LegacyMaster>,
    timeline: Arc<Timeline>,
}

#[async_trait]
impl LegacyMaster for TimedMaster {
    async fn builders(&self) -> bbb_buildbot::Result<Option<Vec<String>>> {
        self.inner.builders().await
    }

    async fn accepts_builder(&self, buildername: &str) -> bbb_buildbot::Result<bool> {
        if let Some(task_id) = buildername.strip_prefix(UNIQUE_BUILDER_PREFIX) {
            self.timeline.mark(task_id, |m| first(&mut m.checked));
        }
        self.inner.accepts_builder(buildername).await
    }

    async fn finished_builds(
        &self,
        after: bbb_buildbot::FinishedCursor,
        limit: usize,
    ) -> bbb_buildbot::Result<Vec<bbb_buildbot::FinishedBuild>> {
        self.inner.finished_builds(after, limit).await
    }

    async fn submit(&self, spec: &BuildRequestSpec) -> bbb_buildbot::Result<BuildRequestId> {
        self.timeline
            .mark(&spec.task_id, |m| first(&mut m.submit_start));
        let result = self.inner.submit(spec).await;
        if result.is_ok() {
            self.timeline
                .mark(&spec.task_id, |m| first(&mut m.submitted));
        }
        result
    }

    async fn find_requests_for_task(
        &self,
        task_id: &str,
    ) -> bbb_buildbot::Result<Vec<FoundRequest>> {
        self.timeline.mark(task_id, |m| first(&mut m.find_start));
        self.inner.find_requests_for_task(task_id).await
    }

    async fn request_state(&self, id: BuildRequestId) -> bbb_buildbot::Result<RequestState> {
        self.inner.request_state(id).await
    }

    async fn fetch_build_log(
        &self,
        build: Option<bbb_buildbot::BuildId>,
        log_url: Option<&str>,
    ) -> bbb_buildbot::Result<Option<String>> {
        self.inner.fetch_build_log(build, log_url).await
    }

    async fn cancel_request(&self, id: BuildRequestId) -> bbb_buildbot::Result<CancelOutcome> {
        self.inner.cancel_request(id).await
    }

    async fn stop_build(&self, target: StopTarget) -> bbb_buildbot::Result<StopOutcome> {
        self.inner.stop_build(target).await
    }

    async fn build_properties(
        &self,
        build: BuildId,
    ) -> bbb_buildbot::Result<Option<BTreeMap<String, Value>>> {
        self.inner.build_properties(build).await
    }

    async fn events(&self) -> bbb_buildbot::Result<LegacyEventStream> {
        self.inner.events().await
    }
}

// ----- statistics -----------------------------------------------------------------------

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted durations between two marks, for the tasks that have both.
fn spans(
    marks: &[Marks],
    from: fn(&Marks) -> Option<Instant>,
    to: fn(&Marks) -> Option<Instant>,
) -> Vec<Duration> {
    let mut out: Vec<Duration> = marks
        .iter()
        .filter_map(|m| Some(to(m)?.saturating_duration_since(from(m)?)))
        .collect();
    out.sort();
    out
}

fn p50_p99(sorted: &[Duration]) -> String {
    format!("{:.1}/{:.1}", ms(pct(sorted, 0.5)), ms(pct(sorted, 0.99)))
}

// ----- the environment -------------------------------------------------------------------

/// The mapping database: a temporary SQLite file, or a fresh PostgreSQL
/// database on the server [`Options::state_db`] names, dropped with the
/// returned handle.
async fn fresh_state_db(
    opts: &Options,
    dir: &TempDir,
) -> anyhow::Result<(StateDb, Option<PgDatabase>)> {
    let (url, pg) = match &opts.state_db {
        None => (format!("sqlite://{}/state.sqlite", dir.0.display()), None),
        Some(server) => {
            let pg = PgDatabase::create_on(server, "bbb_bench_state")
                .await
                .context("PostgreSQL server")?;
            (pg.url().to_owned(), Some(pg))
        }
    };
    let state = StateDb::connect(&url, 20).await?;
    state.migrate().await?;
    Ok((state, pg))
}

/// The queue, the mapping database, the master and the bridge of one part.
struct Env {
    running: bbb_queue::Running,
    clock: Clock,
    api: Api,
    root: Creds,
    state: StateDb,
    sandbox: Option<Arc<SandboxMaster>>,
    unique_builders: bool,
    sched_url: Option<String>,
    bridge: Arc<Bridge>,
    timeline: Arc<Timeline>,
    /// The part's databases, dropped with it (on an error too).
    state_pg: Option<PgDatabase>,
    sched_db: Option<TestDatabase>,
    _dir: TempDir,
}

impl Env {
    /// `sandbox_slots`: build slots of the sandbox builder (0: no build starts).
    async fn start(opts: &Options, sandbox_slots: usize) -> anyhow::Result<Env> {
        let dir = TempDir::new("bbb-bench-bridge");
        let token = bbb_queue::server::random_token();
        let cfg = QueueConfig {
            listen: "127.0.0.1:0".into(),
            database_url: format!("sqlite://{}/queue.sqlite", dir.0.display()).into(),
            database_max_connections: 10,
            root_access_token: Some(token.clone().into()),
            blob_dir: dir.0.join("blobs"),
            ..QueueConfig::default()
        };
        let clock = Clock::system();
        let running = bbb_queue::start(cfg, clock.clone()).await?;
        let (state, state_pg) = fresh_state_db(opts, &dir).await?;
        let mut sched_db = None;
        let (master, sandbox, sched_url): (Arc<dyn LegacyMaster>, _, _) = match opts.master {
            MasterKind::SchedulerDb => {
                let db = fresh_database_on(&opts.mysql_url, "bench_sched")
                    .await
                    .context("a scheduler DB on the MariaDB server")?;
                let url = sched_db.insert(db).url.clone();
                let mut config = SchedulerDbConfig::new(url.clone());
                config.poll = None;
                (Arc::new(SchedulerDb::new(config)?), None, Some(url))
            }
            MasterKind::Sandbox => {
                let builder = SandboxBuilder::new(BUILDER)
                    .with_slots(sandbox_slots)
                    .with_duration(Duration::from_secs(24 * 3600));
                let sandbox =
                    Arc::new(SandboxMaster::start(SandboxConfig::with_builders([builder])).await);
                (
                    sandbox.clone() as Arc<dyn LegacyMaster>,
                    Some(sandbox),
                    None,
                )
            }
        };
        let timeline = Arc::new(Timeline::default());
        let timed = Arc::new(TimedMaster {
            inner: master,
            timeline: timeline.clone(),
        });
        let settings = BridgeSettings::new(DEFAULT_TASK_QUEUE, "bench-master", "bench-1");
        let queue = QueueClient::new(
            &running.root_url,
            "root",
            &token,
            &settings.worker_group,
            &settings.worker_id,
        )?;
        let bridge = Arc::new(Bridge::with_clock(
            queue,
            state.clone(),
            timed,
            settings,
            Arc::new(Metrics::default()),
            clock.clone(),
        ));
        Ok(Env {
            api: Api::new(&running.root_url)?,
            root: Creds {
                client_id: "root".into(),
                access_token: token,
                certificate: None,
            },
            running,
            clock,
            state,
            unique_builders: sched_url.is_some(),
            sandbox,
            sched_url,
            bridge,
            timeline,
            state_pg,
            sched_db,
            _dir: dir,
        })
    }

    /// Creates one bridged task with id `task_id`.
    async fn create_task(&self, task_id: &str, group: &str) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let builder = if self.unique_builders {
            format!("{UNIQUE_BUILDER_PREFIX}{task_id}")
        } else {
            BUILDER.to_owned()
        };
        let def = json!({
            "taskQueueId": DEFAULT_TASK_QUEUE,
            "schedulerId": "bench",
            "taskGroupId": group,
            "created": bbb_queue::time::fmt_ms(now),
            "deadline": bbb_queue::time::fmt_ms(now + 6 * 3600 * 1000),
            "expires": bbb_queue::time::fmt_ms(now + 48 * 3600 * 1000),
            "payload": {
                "buildername": builder,
                "properties": {"product": "firefox"},
                "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abcdef012345",
                                "repository": "https://hg.mozilla.org/integration/mozilla-inbound"},
            },
            "metadata": {"name": "bench", "description": "bridge benchmark task",
                         "owner": "bench@example.com", "source": "https://example.com/bench"},
        });
        self.api
            .call(&self.root, "PUT", &format!("task/{task_id}"), Some(&def))
            .await?;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some(sandbox) = &self.sandbox {
            sandbox.shutdown().await;
        }
        self.state.close().await;
        self.running.shutdown().await;
        drop(self.state_pg);
        if let Some(db) = self.sched_db {
            db.drop_database().await?;
        }
        Ok(())
    }
}

// ----- part 1: injection latency ------------------------------------------------------------

/// What one rate step measured.
struct StepResult {
    rate: u32,
    offered: usize,
    created: usize,
    injected: usize,
    achieved: f64,
    injected_rate: f64,
    from_published: Vec<Duration>,
    from_created: Vec<Duration>,
    pickup: Vec<Duration>,
    fetch: Vec<Duration>,
    mapping: Vec<Duration>,
    find: Vec<Duration>,
    submit: Vec<Duration>,
    relay: Vec<Duration>,
    observer_late: usize,
}

async fn rate_step(env: &Arc<Env>, rate: u32, n: usize) -> anyhow::Result<StepResult> {
    let group = bbb_queue::validate::slugid();
    let ids: Vec<String> = (0..n).map(|_| bbb_queue::validate::slugid()).collect();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut creates = Vec::with_capacity(n);
    for id in &ids {
        ticker.tick().await;
        let (env, id, group) = (env.clone(), id.clone(), group.clone());
        creates.push(tokio::spawn(async move {
            env.timeline.mark(&id, |m| first(&mut m.sent));
            let result = env.create_task(&id, &group).await;
            env.timeline.mark(&id, |m| first(&mut m.created));
            result
        }));
    }
    let mut created = 0;
    for c in futures::future::join_all(creates).await {
        match c? {
            Ok(()) => created += 1,
            Err(e) => eprintln!("createTask failed: {e:#}"),
        }
    }
    let last_answer = Instant::now();
    // Wait for the injections (a failed one is retried by the listener after 2 s).
    let give_up = Instant::now()
        + Duration::from_secs(30).max(Duration::from_secs_f64(
            n as f64 / f64::from(rate.max(1)) * 3.0,
        ));
    while env.timeline.count_submitted(&ids) < created && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let marks: Vec<Marks> = ids.iter().map(|id| env.timeline.get(id)).collect();
    let injected = marks.iter().filter(|m| m.submitted.is_some()).count();
    let last_injected = marks.iter().filter_map(|m| m.submitted).max();
    let first_published = marks.iter().filter_map(|m| m.published).min();
    let injected_rate = match (first_published, last_injected) {
        (Some(a), Some(b)) if b > a => injected as f64 / b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let observer_late = marks
        .iter()
        .filter(|m| matches!((m.published, m.submitted), (Some(p), Some(s)) if p > s))
        .count();
    // createTask answered → message seen; negative (message first) counts as 0.
    let relay = spans(&marks, |m| m.created, |m| m.published);
    Ok(StepResult {
        rate,
        offered: n,
        created,
        injected,
        achieved: created as f64 / last_answer.duration_since(started).as_secs_f64(),
        injected_rate,
        from_published: spans(&marks, |m| m.published, |m| m.submitted),
        from_created: spans(&marks, |m| m.created, |m| m.submitted),
        pickup: spans(&marks, |m| m.published, |m| m.find_start),
        fetch: spans(&marks, |m| m.published, |m| m.checked),
        mapping: spans(&marks, |m| m.checked, |m| m.find_start),
        find: spans(&marks, |m| m.find_start, |m| m.submit_start),
        submit: spans(&marks, |m| m.submit_start, |m| m.submitted),
        relay,
        observer_late,
    })
}

async fn injection_latency(opts: &Options) -> anyhow::Result<Vec<StepResult>> {
    let env = Arc::new(Env::start(opts, 0).await?);
    let bus = env.running.bus.clone();
    let cancel = CancellationToken::new();
    // A second consumer on the same exchange and pattern marks when each
    // task-pending message is published (delivered to it).
    let listener_settings = TcListenerSettings {
        concurrency: opts.listener_concurrency.max(1),
        ..TcListenerSettings::default()
    };
    let binding = bbb_pulse::Binding::new(
        format!("{}task-pending", listener_settings.exchange_prefix),
        tc_listener::routing_pattern(DEFAULT_TASK_QUEUE),
    );
    let mut observer = bus
        .consume("queue/bbb-bench/observer", &[binding], 0)
        .await?;
    let timeline = env.timeline.clone();
    let observe = tokio::spawn(async move {
        while let Some(delivery) = observer.next().await {
            let at = Instant::now();
            if let Ok(body) = delivery.json::<Value>()
                && let Some(task_id) = body["status"]["taskId"].as_str()
            {
                timeline.mark(task_id, |m| {
                    m.published.get_or_insert(at);
                });
            }
            let _ = delivery.ack().await;
        }
    });
    let listener = {
        let (bridge, bus, cancel) = (env.bridge.clone(), bus.clone(), cancel.clone());
        tokio::spawn(async move { tc_listener::run(bridge, bus, listener_settings, cancel).await })
    };
    let mut results = Vec::new();
    for &rate in &opts.rates {
        let step = rate_step(&env, rate, opts.tasks_per_rate).await?;
        print_step(&step);
        results.push(step);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cancel.cancel();
    let _ = listener.await;
    observe.abort();
    let _ = observe.await;
    match Arc::try_unwrap(env) {
        Ok(env) => env.stop().await?,
        Err(_) => anyhow::bail!("the environment is still in use"),
    }
    Ok(results)
}

fn print_step(s: &StepResult) {
    let lat = &s.from_published;
    println!(
        "{:>6} {:>9.1} {:>9.1} {:>7}/{:<6} {:>8.1} {:>8.1} {:>8.1}   {:>8.1} {:>8.1} {:>6}",
        s.rate,
        s.achieved,
        s.injected_rate,
        s.injected,
        s.offered,
        ms(pct(lat, 0.5)),
        ms(pct(lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        ms(pct(&s.from_created, 0.5)),
        ms(pct(&s.from_created, 0.99)),
        load_average(),
    );
    if s.created < s.offered {
        println!("       ({} createTask calls failed)", s.offered - s.created);
    }
}

fn print_breakdown(results: &[StepResult]) {
    println!(
        "\nwhere the time goes (p50/p99 ms per segment; segments are separate distributions):"
    );
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "rate", "A relay", "B pickup", "B1 fetch", "B2 mapping", "C find", "D submit", "late"
    );
    let or_dash = |v: &[Duration]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            p50_p99(v)
        }
    };
    for s in results {
        println!(
            "{:>6} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>6}",
            s.rate,
            or_dash(&s.relay),
            or_dash(&s.pickup),
            or_dash(&s.fetch),
            or_dash(&s.mapping),
            or_dash(&s.find),
            or_dash(&s.submit),
            s.observer_late
        );
    }
    println!(
        "  A relay:   createTask answered → task-pending seen (the queue's outbox relay; 0 when the message came first)\n  \
         B pickup:  task-pending seen → the bridge asks the master for earlier requests; it is B1 + B2:\n  \
         B1 fetch:  → builder check: the listener's pickup and queue.task() (scheduler DB only)\n  \
         B2 mapping: builder check → earlier requests: claim_slot and rows_for_task on the mapping DB\n  \
         C find:    find_requests_for_task on the master\n  \
         D submit:  the master's submit\n  \
         late:      tasks injected before the observer saw their message (their latency counts as 0)"
    );
}

// ----- part 2: reflector passes --------------------------------------------------------------

/// Runs `f` over `items` with `concurrency` at once; returns (ok, errors, elapsed).
async fn each<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> (usize, usize, Duration)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let errors: Vec<&anyhow::Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(e) = errors.first() {
        eprintln!("{} of {} failed; first: {e:#}", errors.len(), results.len());
    }
    (
        results.len() - errors.len(),
        errors.len(),
        started.elapsed(),
    )
}

fn rate_of(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

async fn leased_count(env: &Env) -> anyhow::Result<i64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mappings WHERE leased_until > $1")
        .bind(env.bridge.now())
        .fetch_one(env.state.pool())
        .await?;
    Ok(n)
}

async fn rows_summary(env: &Env) -> anyhow::Result<String> {
    let rows = env.state.rows_by_state().await?;
    Ok(rows
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Loads `n` running rows: tasks created in the queue, injected by
/// `Bridge::task_pending`, started on the master, then claimed in the queue
/// and marked started by `Bridge::build_started`.
async fn load_running_rows(env: &Arc<Env>, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let group = bbb_queue::validate::slugid();
    let ids: Vec<String> = (0..n).map(|_| bbb_queue::validate::slugid()).collect();
    let (ok, _, took) = each(ids.clone(), concurrency, |id| {
        let (env, group) = (env.clone(), group.clone());
        async move { env.create_task(&id, &group).await }
    })
    .await;
    println!(
        "  {ok} tasks created in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        rate_of(ok, took)
    );
    let (ok, _, took) = each(ids.clone(), concurrency, |id| {
        let env = env.clone();
        async move {
            let outcome = env.bridge.task_pending(&id, 0, None).await?;
            anyhow::ensure!(outcome == Outcome::Injected, "task {id}: {outcome}");
            Ok(())
        }
    })
    .await;
    println!(
        "  {ok} build requests injected with Bridge::task_pending in {:.1} s ({:.0}/s, {concurrency} at once)",
        took.as_secs_f64(),
        rate_of(ok, took)
    );
    if let Some(url) = &env.sched_url {
        // A master claims every request and starts a build for it.
        let now = chrono::Utc::now().timestamp();
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await?;
        conn.exec_drop(
            "UPDATE buildrequests SET claimed_at = ?, claimed_by_name = 'bench-master:/builds', \
             claimed_by_incarnation = 'bench' WHERE complete = 0",
            (now,),
        )
        .await?;
        conn.exec_drop(
            "INSERT INTO builds (number, brid, start_time) SELECT id, id, ? FROM buildrequests",
            (now,),
        )
        .await?;
        conn.disconnect().await?;
    }
    // Let the sandbox's scheduler start its builds.
    if let Some(sandbox) = &env.sandbox {
        let give_up = Instant::now() + Duration::from_secs(60);
        while (sandbox.stats().started as usize) < n && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (ok, _, took) = each(ids, concurrency, |id| {
        let env = env.clone();
        async move {
            let row = env
                .state
                .get(&id, 0)
                .await?
                .with_context(|| format!("no row for {id}"))?;
            let brid = BuildRequestId(row.build_request_id.context("no build request")? as u64);
            let build = match env.bridge.master.request_state(brid).await? {
                RequestState::Running { builds, .. } => builds.last().map(|b| StartedBuild {
                    build_id: Some(b.build_id.0 as i64),
                    number: i64::try_from(b.number).ok(),
                }),
                other => anyhow::bail!("request {brid} is not running: {other:?}"),
            };
            let outcome = env
                .bridge
                .build_started(row, brid, build.unwrap_or_default())
                .await?;
            anyhow::ensure!(outcome == Outcome::Claimed, "task {id}: {outcome}");
            Ok(())
        }
    })
    .await;
    println!(
        "  {ok} runs claimed and marked started with Bridge::build_started in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        rate_of(ok, took)
    );
    Ok(())
}

fn print_pass(label: &str, r: &PassReport, leased: i64) {
    let handled = r.past_deadline + r.reclaimed + r.redriven + r.reconciled;
    println!(
        "{label:<34} {:>8.2} s {:>7.3} {:>8} {:>9} {:>10} {:>8} {:>6} {:>8}",
        r.elapsed.as_secs_f64(),
        r.elapsed.as_secs_f64() / INTERVAL.as_secs_f64(),
        handled,
        r.reclaimed,
        r.reconciled,
        r.repaired,
        r.errors,
        leased
    );
}

async fn reflector_passes(opts: &Options) -> anyhow::Result<Vec<(String, PassReport)>> {
    let n = opts.reflector_rows;
    let env = Arc::new(Env::start(opts, n + 16).await?);
    println!("loading {n} running rows:");
    load_running_rows(&env, n, opts.load_concurrency).await?;
    println!("  rows: {}", rows_summary(&env).await?);
    let settings = ReflectorSettings::default();
    let reflector = Reflector::new(env.bridge.clone(), settings.clone());
    println!(
        "\nreflector passes (default settings: batch {}, {} at once, reclaim window {} s, recheck {} s, settle {} s):",
        settings.batch_size,
        settings.concurrency,
        settings.reclaim_window.as_secs(),
        settings.recheck_interval.as_secs(),
        settings.settle_time.as_secs()
    );
    println!(
        "{:<34} {:>10} {:>7} {:>8} {:>9} {:>10} {:>8} {:>6} {:>8}",
        "pass",
        "elapsed",
        "/60 s",
        "handled",
        "reclaimed",
        "reconciled",
        "repaired",
        "errors",
        "leased"
    );
    let mut out = Vec::new();
    // The claims (takenUntil = claim + 20 min) enter the 10-minute reclaim window.
    env.clock.advance(Duration::from_secs(11 * 60));
    for label in ["1 claims due (clock +11 min)", "2 right after pass 1"] {
        let report = reflector.pass().await;
        print_pass(label, &report, leased_count(&env).await?);
        out.push((label.to_owned(), report));
    }
    // Past the settle time, every running row is due for its walk.
    env.clock
        .advance(settings.settle_time + Duration::from_secs(1));
    for label in ["3 walk due (clock +31 s)", "4 right after pass 3"] {
        let report = reflector.pass().await;
        print_pass(label, &report, leased_count(&env).await?);
        out.push((label.to_owned(), report));
    }
    println!("  rows: {}", rows_summary(&env).await?);
    drop(reflector);
    match Arc::try_unwrap(env) {
        Ok(env) => env.stop().await?,
        Err(_) => anyhow::bail!("the environment is still in use"),
    }
    Ok(out)
}

// ----- the program ------------------------------------------------------------------------------

async fn mariadb_version(server: &str) -> String {
    async fn version(server: &str) -> anyhow::Result<String> {
        let mut conn = mysql_async::Conn::from_url(server).await?;
        let v: Option<String> = conn.query_first("SELECT VERSION()").await?;
        conn.disconnect().await?;
        Ok(v.unwrap_or_default())
    }
    version(server)
        .await
        .unwrap_or_else(|e| format!("unreachable: {e}"))
}

/// The 1-minute load average, when the system tells it: other work on the
/// machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let state = match &opts.state_db {
        None => "SQLite (temporary file)".to_owned(),
        Some(url) => format!(
            "PostgreSQL ({}; a fresh database per part)",
            bbb_secret::mask_url(url)
        ),
    };
    let master = match opts.master {
        MasterKind::SchedulerDb => format!(
            "0.8 scheduler DB on MariaDB {} ({}; a fresh database per part)",
            mariadb_version(&opts.mysql_url).await,
            bbb_secret::mask_url(&opts.mysql_url)
        ),
        MasterKind::Sandbox => "sandbox (in memory)".to_owned(),
    };
    println!(
        "bbb bridge benchmark: {cores} cores (load average {}); everything in this one process",
        load_average()
    );
    println!("  queue:         native queue on SQLite, in-process bus, on loopback HTTP");
    println!("  mapping DB:    {state}");
    println!("  legacy master: {master}");
    println!(
        "\n== task-pending → build request injected ==\n\
         Tasks are created on {DEFAULT_TASK_QUEUE} over HTTP by a ticker at each offered rate\n\
         (open loop: a slow answer does not delay the next task), {} per step. The TC listener\n\
         ({} messages at once) injects them; no build runs. Latency runs from the task-pending\n\
         message's publication (its delivery to a second consumer bound like the listener) to\n\
         the return of the master's submit (timed in a wrapper around the master); the mapping\n\
         row's update follows. 'answer50/99' start at createTask's answer instead, so they also\n\
         count the queue's outbox relay. 'achieved': createTask answers per second over the step;\n\
         'injected': submits per second from the first message to the last submit;\n\
         'load': the 1-minute load average after the step (other work on the machine).\n",
        opts.tasks_per_rate, opts.listener_concurrency
    );
    println!(
        "{:>6} {:>9} {:>9} {:>14} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>6}",
        "rate",
        "achieved",
        "injected",
        "injected/sent",
        "p50 ms",
        "p99 ms",
        "max ms",
        "answer50",
        "answer99",
        "load"
    );
    let steps = injection_latency(&opts).await?;
    print_breakdown(&steps);
    if let Some(s) = steps.iter().find(|s| s.rate == 200) {
        let p99 = pct(&s.from_published, 0.99);
        println!(
            "\ngoal p99 < {} ms at 200 tasks/s: p99 {:.1} ms, {}",
            GOAL_P99.as_millis(),
            ms(p99),
            if p99 < GOAL_P99 && s.injected == s.offered {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    if opts.reflector_rows > 0 {
        println!(
            "\n== one reflector pass over {} running rows ==",
            opts.reflector_rows
        );
        println!(
            "Each row: a task created and claimed in the queue by the bridge's identity, its build\n\
             request injected and running on the master. The queue's and bridge's clock is then\n\
             moved forward so the claims fall due for reclaim (pass 1), and again past the settle\n\
             time so every row is due for its comparison with the master and the queue (pass 3).\n\
             'handled' = rows acted on; 'leased' = rows whose lease is still held after the pass\n\
             (the reflector hands reclaim leases back after each batch and keeps walk leases for\n\
             the recheck interval).\n"
        );
        let passes = reflector_passes(&opts).await?;
        if let Some(worst) = passes.iter().map(|(_, r)| r.elapsed).max() {
            println!(
                "\nslowest pass: {:.2} s = {:.1}% of the {} s interval (load average now {})",
                worst.as_secs_f64(),
                worst.as_secs_f64() / INTERVAL.as_secs_f64() * 100.0,
                INTERVAL.as_secs(),
                load_average()
            );
        }
    }
    Ok(())
}
