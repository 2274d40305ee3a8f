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

pub use bbb_queue::testing::wait_for;

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

/// Claim exactly one task from `tq` as `worker`.
pub async fn claim_one(queue: &Queue, tq: &str, worker: &str) -> Value {
    let r = queue
        .claimWork(
            tq,
            &json!({"workerGroup": "wg", "workerId": worker, "tasks": 1}),
        )
        .await
        .expect("claimWork");
    let tasks = r["tasks"].as_array().expect("tasks").clone();
    assert_eq!(tasks.len(), 1, "expected one claimed task, got {r}");
    tasks[0].clone()
}
