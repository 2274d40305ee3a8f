//! Helpers shared by the queue's integration tests: official-client construction,
//! task definitions, polling.
#![allow(dead_code)]

use bbb_queue::testing::TestQueue;
use serde_json::{Value, json};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Queue, Retry};

fn builder(root_url: &str) -> ClientBuilder {
    ClientBuilder::new(root_url)
        .retry(Retry {
            retries: 0,
            ..Retry::default()
        })
        .timeout(Duration::from_secs(40))
}

/// The official client with root credentials.
pub fn root(q: &TestQueue) -> Queue {
    Queue::new(
        builder(&q.root_url).credentials(Credentials::new(&q.root_client_id, &q.root_access_token)),
    )
    .expect("client")
}

/// The official client with given credentials.
pub fn with_creds(q: &TestQueue, creds: Credentials) -> Queue {
    Queue::new(builder(&q.root_url).credentials(creds)).expect("client")
}

/// The official client without credentials.
pub fn anonymous(q: &TestQueue) -> Queue {
    Queue::new(builder(&q.root_url)).expect("client")
}

/// The task credentials in a claim or reclaim response.
pub fn task_creds(claim: &Value) -> Credentials {
    let c = &claim["credentials"];
    Credentials::new_with_certificate(
        c["clientId"].as_str().expect("clientId"),
        c["accessToken"].as_str().expect("accessToken"),
        c["certificate"].as_str().expect("certificate"),
    )
}

/// A fresh slugid.
pub fn slug() -> String {
    bbb_queue::validate::slugid()
}

/// A date `secs` from now in the queue's format.
pub fn from_now(secs: i64) -> String {
    bbb_queue::time::fmt_ms(chrono::Utc::now().timestamp_millis() + secs * 1000)
}

/// A minimal valid task definition for `task_queue_id`, with `extra` fields merged in.
pub fn task_def(task_queue_id: &str, extra: Value) -> Value {
    let mut t = json!({
        "taskQueueId": task_queue_id,
        "created": from_now(0),
        "deadline": from_now(3600),
        "payload": {},
        "metadata": {"name": "t", "description": "a test task", "owner": "tests@example.com", "source": "https://example.com/tests"},
    });
    if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    t
}

/// Creates a task on `task_queue_id` ([`task_def`] with `extra`) under a
/// fresh id, and returns the id.
pub async fn new_task(queue: &Queue, task_queue_id: &str, extra: Value) -> String {
    let id = slug();
    create(queue, &id, task_queue_id, extra).await;
    id
}

/// Creates task `id` on `task_queue_id` ([`task_def`] with `extra`); returns
/// the answer.
pub async fn create(queue: &Queue, id: &str, task_queue_id: &str, extra: Value) -> Value {
    queue
        .createTask(id, &task_def(task_queue_id, extra))
        .await
        .expect("createTask")
}

/// Claims one task from `tq` as `worker` ([`claim_one`]); returns the claim
/// and the official client with its task credentials.
pub async fn claim_as_task(q: &TestQueue, queue: &Queue, tq: &str, worker: &str) -> (Value, Queue) {
    let claim = claim_one(queue, tq, worker).await;
    let as_task = with_creds(q, task_creds(&claim));
    (claim, as_task)
}

/// The `createArtifact` body of a plain-text `s3` artifact expiring in
/// `secs` seconds.
pub fn s3_text(secs: i64) -> Value {
    json!({"storageType": "s3", "contentType": "text/plain", "expires": from_now(secs)})
}

/// GETs `path` (below the root URL) with `http`, which may or may not
/// follow redirects.
pub async fn get_path(http: &reqwest::Client, q: &TestQueue, path: &str) -> reqwest::Response {
    let url = format!("{}{path}", q.root_url);
    http.get(&url).send().await.expect(&url)
}

/// The HTTP status of a client error.
pub fn status_of(e: &anyhow::Error) -> u16 {
    taskcluster::err_status_code(e)
        .map(|s| s.as_u16())
        .unwrap_or(0)
}

/// The error text (it carries the TaskCluster `errorCode`).
pub fn text_of(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

pub use bbb_testdb::wait_for;

/// The state of a task.
pub async fn state(queue: &Queue, task_id: &str) -> String {
    queue.status(task_id).await.expect("status")["status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Wait until a task has the given state.
pub async fn wait_state(queue: &Queue, task_id: &str, want: &str) -> Value {
    wait_for(&format!("{task_id} to be {want}"), || async {
        let s = queue.status(task_id).await.expect("status");
        (s["status"]["state"] == want).then_some(s)
    })
    .await
}

/// Tries to create a task on `task_queue_id` ([`task_def`] with `extra`)
/// under a fresh id; the queue must refuse it. Returns the error.
pub async fn create_refused(queue: &Queue, task_queue_id: &str, extra: Value) -> anyhow::Error {
    let def = task_def(task_queue_id, extra);
    let refused = queue.createTask(&slug(), &def).await;
    refused.expect_err("the task is refused")
}

/// Claim exactly one task from `tq` as `worker`.
pub async fn claim_one(queue: &Queue, tq: &str, worker: &str) -> Value {
    let mut tasks = claim_work(queue, tq, worker, 1).await;
    assert_eq!(tasks.len(), 1, "expected one claimed task, got {tasks:?}");
    tasks.remove(0)
}

/// Claim up to `n` tasks from `tq` as `wg/worker` (one `claimWork` call).
pub async fn claim_work(queue: &Queue, tq: &str, worker: &str, n: usize) -> Vec<Value> {
    let mut r = queue
        .claimWork(
            tq,
            &json!({"workerGroup": "wg", "workerId": worker, "tasks": n}),
        )
        .await
        .expect("claimWork");
    match r["tasks"].take() {
        Value::Array(tasks) => tasks,
        other => panic!("no task list: {other}"),
    }
}
