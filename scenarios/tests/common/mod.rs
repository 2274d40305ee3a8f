//! A bridge on real parts for the tests: the native queue (SQLite, in-process
//! bus), a 0.8 scheduler DB on MariaDB with the legacy-master simulator, and
//! the mapping database on SQLite.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bbb_buildbot::simulator::{SimBuilder, Simulator, SimulatorConfig};
use bbb_buildbot::testing::{TestDatabase, fresh_database};
use bbb_buildbot::{
    BuilderSource, LegacyMaster, PollOptions, PulseOptions, SchedulerDb, SchedulerDbConfig,
};
use bbb_listeners::bb_listener::{self, BbListenerSettings};
use bbb_listeners::payload::BuilderRules;
use bbb_listeners::tc_listener::{self, TcListenerSettings};
use bbb_listeners::{Bridge, BridgeSettings, Metrics, QueueClient, TaskStatus};
use bbb_queue::testing::{TempDir, TestOptions, TestQueue};
use bbb_state::{MappingRow, StateDb};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

/// What to start.
pub struct Options {
    /// Builders the simulator serves (none: no simulator, requests stay pending).
    pub builders: Vec<SimBuilder>,
    /// Builder list the adapter accepts (`None`: any).
    pub builder_list: Option<Vec<String>>,
    /// Restricted builder patterns.
    pub restricted: Vec<String>,
    /// Ignored builder patterns.
    pub ignored: Vec<String>,
    /// Run the TC and Buildbot listeners in the background.
    pub listeners: bool,
    /// The queue's claim timeout.
    pub claim_timeout_s: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            builders: vec![SimBuilder::new("linux64-build")],
            builder_list: None,
            restricted: vec![],
            ignored: vec![],
            listeners: true,
            claim_timeout_s: None,
        }
    }
}

pub struct Env {
    pub q: TestQueue,
    pub client: taskcluster::Queue,
    pub db: TestDatabase,
    pub master: Arc<SchedulerDb>,
    pub sim: Option<Simulator>,
    pub state: StateDb,
    pub bridge: Arc<Bridge>,
    cancel: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Env {
    pub async fn start(opts: Options) -> Env {
        init_tracing();
        let q = TestQueue::with(TestOptions {
            claim_timeout_s: opts.claim_timeout_s,
            ..Default::default()
        })
        .await
        .unwrap();
        let client =
            taskcluster::Queue::new(taskcluster::ClientBuilder::new(&q.root_url).credentials(
                taskcluster::Credentials::new(&q.root_client_id, &q.root_access_token),
            ))
            .unwrap();
        let db = fresh_database("bridge").await.unwrap();
        let bus = q.running.bus.clone();
        let mut config = SchedulerDbConfig::new(&db.url);
        config.pulse = Some(PulseOptions::new(bus.clone()));
        config.poll = Some(PollOptions {
            interval: Duration::from_millis(200),
            lookback: Duration::from_secs(60),
        });
        if let Some(list) = &opts.builder_list {
            config.builders = BuilderSource::List(list.clone());
        }
        let sim = if opts.builders.is_empty() {
            None
        } else {
            Some(
                Simulator::start(SimulatorConfig::new(
                    &db.url,
                    Some(bus.clone()),
                    opts.builders.clone(),
                ))
                .await
                .unwrap(),
            )
        };
        if let Some(sim) = &sim {
            config.default_master_url = Some(sim.web_url().to_owned());
        }
        let master = Arc::new(SchedulerDb::new(config).unwrap());
        let dir = TempDir::new("bbb-bridge-test");
        let state = StateDb::connect(&format!("sqlite://{}/state.sqlite", dir.0.display()), 1)
            .await
            .unwrap();
        state.migrate().await.unwrap();
        let mut settings =
            BridgeSettings::new(bbb_listeners::DEFAULT_TASK_QUEUE, "sim-master", "test-1");
        settings.rules = BuilderRules::new(&opts.restricted, &opts.ignored).unwrap();
        let queue = QueueClient::new(
            &q.root_url,
            &q.root_client_id,
            &q.root_access_token,
            &settings.worker_group,
            &settings.worker_id,
        )
        .unwrap();
        let clock = q.clock.clone();
        let bridge = Arc::new(Bridge::with_clock(
            queue,
            state.clone(),
            master.clone() as Arc<dyn LegacyMaster>,
            settings,
            Arc::new(Metrics::default()),
            Arc::new(move || clock.now_ms()),
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
            q,
            client,
            db,
            master,
            sim,
            state,
            bridge,
            cancel,
            handles,
            _dir: dir,
        }
    }

    /// Creates a task on the bridge's queue; `extra` is merged into the definition.
    pub async fn create_task(&self, payload: Value, extra: Value) -> String {
        let task_id = slug();
        let now = chrono::Utc::now();
        let mut def = json!({
            "taskQueueId": bbb_listeners::DEFAULT_TASK_QUEUE,
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

    pub async fn status(&self, task_id: &str) -> TaskStatus {
        TaskStatus::from_json(&self.client.status(task_id).await.unwrap()["status"]).unwrap()
    }

    /// Waits until the task's status satisfies `pred`.
    pub async fn wait_status(
        &self,
        task_id: &str,
        what: &str,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status(task_id).await;
            if pred(&status) {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("task {task_id}: waited {WAIT:?} for {what}; status {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
                r.state == state && (reason.is_none() || r.reason_resolved.as_deref() == reason)
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
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(row) = self.state.get(task_id, run_id).await.unwrap()
                && pred(&row)
            {
                return row;
            }
            if tokio::time::Instant::now() > deadline {
                let rows = self.state.rows_for_task(task_id).await.unwrap();
                panic!("task {task_id}: waited for row {run_id} {what}; rows {rows:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn requests(&self, task_id: &str) -> Vec<bbb_buildbot::FoundRequest> {
        self.master.find_requests_for_task(task_id).await.unwrap()
    }

    /// Names of the run's artifacts.
    pub async fn artifacts(&self, task_id: &str, run_id: u32) -> Vec<String> {
        let list = self
            .client
            .listArtifacts(task_id, &run_id.to_string(), None, None)
            .await
            .unwrap();
        list["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The bytes of an artifact (following the redirect).
    pub async fn artifact_text(&self, task_id: &str, run_id: u32, name: &str) -> String {
        let url = self
            .client
            .getArtifact_signed_url(task_id, &run_id.to_string(), name, Duration::from_secs(300))
            .unwrap();
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    /// A raw query on the scheduler DB.
    pub async fn sched_query(&self, sql: &str) -> Vec<mysql_async::Row> {
        use mysql_async::prelude::Queryable;
        let mut conn = self.db.conn().await.unwrap();
        conn.query(sql).await.unwrap()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for h in self.handles {
            let _ = h.await;
        }
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
        self.q.stop().await;
    }
}

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

pub fn slug() -> String {
    use base64::Engine;
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
