//! The harness the worker tests share: a scratch directory, tasks created
//! with the root client, workers started and stopped, task states and
//! artifacts read back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bbb_queue::testing::TestQueue;
use bbb_workers::{TaskReport, Worker, WorkerConfig};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory, removed on drop.
    pub fn new() -> Scratch {
        let p = std::env::temp_dir().join(format!("bbb-worker-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Scratch {
    /// A directory in the scratch space every task can write to: tasks run
    /// as OS users of their own when the tests run as root.
    pub fn shared(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn root(q: &TestQueue) -> Queue {
    Queue::new(
        ClientBuilder::new(&q.root_url)
            .credentials(Credentials::new(&q.root_client_id, &q.root_access_token)),
    )
    .unwrap()
}

pub fn task_queue() -> String {
    format!(
        "bbb-test/w{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn from_now(secs: i64) -> String {
    bbb_queue::time::fmt_ms(chrono::Utc::now().timestamp_millis() + secs * 1000)
}

pub async fn create_task(q: &TestQueue, tq: &str, payload: Value, retries: u32) -> String {
    let task_id = bbb_queue::validate::slugid();
    root(q)
        .createTask(&task_id, &task_definition(tq, payload, retries, &[]))
        .await
        .unwrap();
    task_id
}

/// A task definition on `tq` with `scopes`.
pub fn task_definition(tq: &str, payload: Value, retries: u32, scopes: &[String]) -> Value {
    json!({
        "taskQueueId": tq,
        "created": from_now(0),
        "deadline": from_now(3600),
        "expires": from_now(86400),
        "retries": retries,
        "scopes": scopes,
        "payload": payload,
        "metadata": {"name": "worker test", "description": "a worker test task", "owner": "tests@example.com", "source": "https://example.com/tests"},
    })
}

/// Whether the tests run as root, so that the worker runs tasks as task users.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The backing log of the task's latest run.
pub async fn backing_log(q: &TestQueue, task_id: &str) -> String {
    let (code, log) = latest_artifact(q, task_id, "public/logs/live_backing.log").await;
    assert_eq!(code, 200, "{log}");
    log
}

/// The value after `key` up to the end of its line in `log` (the task
/// scripts print `key value` lines).
pub fn logged<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// Waits for a file a task writes.
pub async fn wait_for_file(path: &Path) -> String {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < give_up,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn config(q: &TestQueue, tq: &str, worker_id: &str, scratch: &Path) -> WorkerConfig {
    WorkerConfig {
        root_url: q.root_url.clone(),
        client_id: q.root_client_id.clone(),
        access_token: q.root_access_token.clone().into(),
        task_queue_id: tq.to_owned(),
        worker_group: "tests".into(),
        worker_id: worker_id.into(),
        tasks_dir: scratch.join(worker_id),
        min_poll_interval_ms: 100,
        shutdown_grace_s: 1,
        ..WorkerConfig::default()
    }
}

/// A worker `w1` on a fresh task queue of `q`, with the scratch directory
/// that holds its task directories.
pub async fn one_worker(q: &TestQueue) -> (Scratch, String, RunningWorker) {
    let scratch = Scratch::new();
    let tq = task_queue();
    let worker = RunningWorker::start(config(q, &tq, "w1", &scratch.0)).await;
    (scratch, tq, worker)
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub reports: broadcast::Receiver<TaskReport>,
    pub tasks_dir: PathBuf,
}

impl RunningWorker {
    pub async fn start(cfg: WorkerConfig) -> RunningWorker {
        let tasks_dir = cfg.tasks_dir.clone();
        let worker = Worker::new(cfg).await.unwrap();
        let reports = worker.subscribe();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        RunningWorker {
            shutdown,
            handle,
            reports,
            tasks_dir,
        }
    }

    pub async fn next_report(&mut self) -> TaskReport {
        tokio::time::timeout(Duration::from_secs(60), self.reports.recv())
            .await
            .expect("no task finished in time")
            .unwrap()
    }

    /// Creates a task on `tq` with `retries` and waits until this worker
    /// ended its first run with `want`; returns the task's id.
    pub async fn run(
        &mut self,
        q: &TestQueue,
        tq: &str,
        payload: Value,
        retries: u32,
        want: bbb_workers::RunOutcome,
    ) -> String {
        let task_id = create_task(q, tq, payload, retries).await;
        let report = self.next_report().await;
        assert_eq!(report.task_id, task_id);
        assert_eq!(report.resolution, want);
        task_id
    }

    /// Creates a task on `tq` and waits until this worker completed it;
    /// returns its id and its backing log.
    pub async fn complete(&mut self, q: &TestQueue, tq: &str, payload: Value) -> (String, String) {
        let task_id = self
            .run(q, tq, payload, 0, bbb_workers::RunOutcome::Completed)
            .await;
        let log = backing_log(q, &task_id).await;
        (task_id, log)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker did not stop")
            .unwrap()
            .unwrap();
    }
}

pub async fn status(q: &TestQueue, task_id: &str) -> Value {
    root(q).status(task_id).await.unwrap()["status"].clone()
}

pub async fn wait_state(q: &TestQueue, task_id: &str, want: &str) -> Value {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(q, task_id).await;
        if s["state"] == want {
            return s;
        }
        assert!(
            Instant::now() < give_up,
            "{task_id} never became {want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs the latest run's artifact through `getLatestArtifact`, following
/// redirects; returns the status and the body.
pub async fn latest_artifact(q: &TestQueue, task_id: &str, name: &str) -> (u16, String) {
    let url = root(q)
        .getLatestArtifact_signed_url(task_id, name, Duration::from_secs(600))
        .unwrap();
    let resp = reqwest_tc::get(&url).await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap())
}

/// How long a live log may stay silent before a test fails.
const STALL: Duration = Duration::from_secs(30);

/// Reads the streamed log `resp` into `seen` until it holds `text`; the log
/// must not end before.
pub async fn read_until(resp: &mut reqwest_tc::Response, seen: &mut Vec<u8>, text: &str) {
    while !String::from_utf8_lossy(seen).contains(text) {
        let chunk = next_chunk(resp)
            .await
            .unwrap_or_else(|| panic!("the live log ended before {text:?}"));
        seen.extend_from_slice(&chunk);
    }
}

/// Reads the rest of the streamed log `resp` into `seen`.
pub async fn read_to_end(resp: &mut reqwest_tc::Response, seen: &mut Vec<u8>) {
    while let Some(chunk) = next_chunk(resp).await {
        seen.extend_from_slice(&chunk);
    }
}

/// The next chunk of `resp`, `None` at its end.
async fn next_chunk(resp: &mut reqwest_tc::Response) -> Option<bytes::Bytes> {
    tokio::time::timeout(STALL, resp.chunk())
        .await
        .expect("live log stalled")
        .expect("read the live log")
}
