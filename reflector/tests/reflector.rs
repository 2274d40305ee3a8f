//! The reflector on real parts: the native queue, the mapping DB on SQLite and
//! the in-memory sandbox master, with no listener running, so every change
//! below is the reflector's own doing.

use std::sync::Arc;
use std::time::Duration;

use bbb_bridge::{Bridge, BridgeSettings, DEFAULT_TASK_QUEUE, Metrics, QueueClient, TaskStatus};
use bbb_buildbot::sandbox::{SandboxBuilder, SandboxConfig, SandboxMaster};
use bbb_buildbot::{BuildRequestId, LegacyMaster, RequestState};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_reflector::{Reflector, ReflectorSettings};
use bbb_state::{RowResolution, RowState, StateDb};
use bbb_testdb::TempDir;
use serde_json::json;

struct Env {
    q: TestQueue,
    client: taskcluster::Queue,
    master: Arc<SandboxMaster>,
    state: StateDb,
    reflector: Reflector,
    _dir: TempDir,
}

async fn env(build: Duration) -> Env {
    let q = TestQueue::with(TestOptions {
        claim_timeout_s: Some(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = taskcluster::Queue::new(taskcluster::ClientBuilder::new(&q.root_url).credentials(
        taskcluster::Credentials::new(&q.root_client_id, &q.root_access_token),
    ))
    .unwrap();
    let master = Arc::new(
        SandboxMaster::start(SandboxConfig::with_builders([SandboxBuilder::new(
            "linux.build",
        )
        .with_duration(build)]))
        .await,
    );
    let dir = TempDir::new("bbb-reflector-test");
    let state = StateDb::connect(&format!("sqlite://{}/state.sqlite", dir.0.display()), 1)
        .await
        .unwrap();
    state.migrate().await.unwrap();
    let settings = BridgeSettings::new(DEFAULT_TASK_QUEUE, "sandbox", "reflector-test");
    let queue = QueueClient::new(
        &q.root_url,
        &q.root_client_id,
        &q.root_access_token,
        &settings.worker_group,
        &settings.worker_id,
    )
    .unwrap();
    let bridge = Arc::new(Bridge::new(
        queue,
        state.clone(),
        master.clone() as Arc<dyn LegacyMaster>,
        settings,
        Arc::new(Metrics::default()),
    ));
    let reflector = Reflector::new(
        bridge,
        ReflectorSettings {
            settle_time: Duration::ZERO,
            recheck_interval: Duration::from_millis(1),
            ..ReflectorSettings::default()
        },
    );
    Env {
        q,
        client,
        master,
        state,
        reflector,
        _dir: dir,
    }
}

impl Env {
    async fn create_task(&self) -> String {
        let task_id = bbb_queue::validate::slugid();
        let now = chrono::Utc::now();
        self.client
            .createTask(
                &task_id,
                &json!({
                    "taskQueueId": DEFAULT_TASK_QUEUE,
                    "created": now.to_rfc3339(),
                    "deadline": (now + chrono::Duration::hours(1)).to_rfc3339(),
                    "payload": {"buildername": "linux.build", "properties": {"product": "firefox"}},
                    "metadata": {"name": "t", "description": "t", "owner": "t@example.com",
                                 "source": "https://example.com/t"},
                }),
            )
            .await
            .unwrap();
        task_id
    }

    /// How many build requests the master holds for the task.
    async fn request_count(&self, task_id: &str) -> usize {
        let requests = self.master.find_requests_for_task(task_id).await.unwrap();
        requests.len()
    }

    async fn status(&self, task_id: &str) -> TaskStatus {
        TaskStatus::from_json(&self.client.status(task_id).await.unwrap()["status"]).unwrap()
    }

    /// Runs passes until `pred` holds for run 0's row (the sandbox works in the background).
    async fn pass_until(
        &self,
        task_id: &str,
        what: &str,
        pred: impl Fn(&bbb_state::MappingRow) -> bool,
    ) -> bbb_state::MappingRow {
        for _ in 0..300 {
            self.reflector.pass().await;
            if let Some(row) = self.state.get(task_id, 0).await.unwrap()
                && pred(&row)
            {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no pass made the row {what}: {:?}",
            self.state.get(task_id, 0).await.unwrap()
        );
    }
}

#[tokio::test]
async fn a_task_whose_messages_were_all_lost_is_adopted_run_reclaimed_and_resolved() {
    let env = env(Duration::from_secs(3)).await;
    let task_id = env.create_task().await;

    // Adoption: no listener ever saw task-pending.
    let report = env.reflector.pass().await;
    assert_eq!(report.adopted, 1, "{report:?}");
    let row = env.state.get(&task_id, 0).await.unwrap().unwrap();
    let brid = BuildRequestId(row.build_request_id.expect("injected") as u64);
    assert_eq!(env.request_count(&task_id).await, 1);

    // The sandbox starts the build; a pass claims the run (the started event was never read).
    let row = env
        .pass_until(&task_id, "running", |r| r.state == RowState::Running)
        .await;
    assert_eq!(
        env.status(&task_id).await.run(0).unwrap().state.as_str(),
        "running"
    );
    let first_claim = row.taken_until.unwrap();

    // Within the reclaim window (claim timeout 300 s < window 600 s): reclaimed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = env.reflector.pass().await;
    assert!(report.reclaimed >= 1, "{report:?}");
    let row = env.state.get(&task_id, 0).await.unwrap().unwrap();
    assert!(row.taken_until.unwrap() > first_claim);

    // The build finishes; a pass resolves the run from the master's state.
    let row = env
        .pass_until(&task_id, "resolved", |r| r.state == RowState::Resolved)
        .await;
    assert_eq!(row.resolution, Some(RowResolution::Completed));
    assert_eq!(
        env.status(&task_id).await.run(0).unwrap().state.as_str(),
        "completed"
    );
    assert!(matches!(
        env.master.request_state(brid).await.unwrap(),
        RequestState::Complete { .. }
    ));
    // Nothing was injected twice.
    assert_eq!(env.request_count(&task_id).await, 1);
    env.q.stop().await;
}

#[tokio::test]
async fn a_run_cancelled_in_the_queue_has_its_build_stopped_by_a_pass() {
    let env = env(Duration::from_secs(600)).await;
    let task_id = env.create_task().await;
    env.pass_until(&task_id, "running", |r| r.state == RowState::Running)
        .await;
    // The task-exception message is lost too: only the reflector can notice.
    env.client.cancelTask(&task_id).await.unwrap();
    let row = env
        .pass_until(&task_id, "resolved", |r| r.state == RowState::Resolved)
        .await;
    assert_eq!(row.resolution, Some(RowResolution::Canceled));
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    for _ in 0..100 {
        if matches!(
            env.master.request_state(brid).await.unwrap(),
            RequestState::Complete { .. }
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        env.master.request_state(brid).await.unwrap(),
        RequestState::Complete {
            results: bbb_buildbot::BuildResult::Cancelled,
            ..
        }
    ));
    assert_eq!(env.master.stats().stopped, 1);
    env.q.stop().await;
}

/// A log writer keeping every line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The JSON lines written so far.
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn every_action_runs_in_a_span_naming_its_task_run_and_build_request() {
    let env = env(Duration::from_secs(600)).await;
    let task_id = env.create_task().await;
    env.reflector.pass().await;
    let row = env
        .pass_until(&task_id, "running", |r| r.state == RowState::Running)
        .await;

    // One pass reclaims the run, with JSON logs captured as `BBB_LOG_FORMAT=json` writes them.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter("bbb_bridge=debug")
        .with_writer(move || writer.clone())
        .finish();
    let report = {
        let _guard = tracing::subscriber::set_default(subscriber);
        env.reflector.pass().await
    };
    assert!(report.reclaimed >= 1, "{report:?}");
    let lines = captured.lines();
    let done = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "bridge action done" && l["span"]["action"] == "reclaim"
        })
        .unwrap_or_else(|| panic!("no reclaim action logged: {lines:#?}"));
    assert_eq!(done["span"]["name"], "bridge_action", "{done}");
    assert_eq!(done["span"]["task.id"], json!(task_id), "{done}");
    assert_eq!(done["span"]["run.id"], json!(0), "{done}");
    assert_eq!(
        done["span"]["build_request.id"],
        json!(row.build_request_id.unwrap()),
        "{done}"
    );
    assert_eq!(done["fields"]["outcome"], "reclaimed", "{done}");
    assert!(done["fields"]["duration_ms"].is_u64(), "{done}");
    env.q.stop().await;
}
