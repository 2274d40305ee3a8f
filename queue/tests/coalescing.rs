//! Coalescing on busy branches, on SQLite and PostgreSQL: pending tasks of a
//! `coalesce.v1.<key>` route superseded by newer ones, within the configured
//! limit, with their pointers, and the tasks that are exempt.

mod common;

use bbb_pulse::{Binding, Bus};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{Backend, on_both_backends};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// The limit the tests run with: a task stands for at most 3 superseded tasks.
const LIMIT: usize = 3;
const TQ: &str = "prov/busy";

async fn limited(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = TestQueue::with(TestOptions {
        postgres: backend == Backend::Postgres,
        coalesce_limit: Some(LIMIT),
        ..Default::default()
    })
    .await
    .expect("start test queue");
    test(&q).await;
    q.stop().await;
}

/// A queue publishing on a fresh RabbitMQ vhost, and a client of that vhost.
async fn with_bus(backend: Backend, test: impl AsyncFnOnce(&TestQueue, &Bus)) {
    let vhost = bbb_pulse::testing::fresh_vhost("queue-coalesce")
        .await
        .unwrap();
    let q = TestQueue::with(TestOptions {
        postgres: backend == Backend::Postgres,
        amqp_url: Some(vhost.url.clone()),
        coalesce_limit: Some(LIMIT),
        ..Default::default()
    })
    .await
    .expect("start test queue");
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    test(&q, &bus).await;
    q.stop().await;
}

on_both_backends!(
    super::limited;
    ten_pushes_in_a_burst_with_one_worker,
    a_task_with_dependencies_coalesces_when_it_becomes_pending,
);

on_both_backends!(
    super::with_bus;
    a_superseded_task_is_announced_once,
);

/// The `created` of push `n`: pushes are ordered by it.
fn created(base: i64, n: i64) -> String {
    bbb_queue::time::fmt_ms(base + n * 10)
}

/// Creates a task of push `n` on [`TQ`] with the route `coalesce.v1.<key>`
/// and `fields` merged in; returns its id.
async fn push(queue: &taskcluster::Queue, base: i64, n: i64, key: &str, fields: Value) -> String {
    let mut extra = json!({"routes": [format!("coalesce.v1.{key}")], "created": created(base, n)});
    for (k, v) in fields.as_object().unwrap() {
        extra[k] = v.clone();
    }
    new_task(queue, TQ, extra).await
}

/// Asserts `id` was superseded by `by`: run 0 `exception/superseded`, never
/// claimed, with `public/superseded-by.json` referring to `by`'s status.
async fn assert_superseded(q: &TestQueue, queue: &taskcluster::Queue, id: &str, by: &str) {
    let s = queue.status(id).await.unwrap();
    let runs = s["status"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{id}: {s}");
    assert_eq!(runs[0]["state"], "exception", "{id}: {s}");
    assert_eq!(runs[0]["reasonResolved"], "superseded", "{id}: {s}");
    assert!(runs[0].get("workerId").is_none(), "{id} was never claimed");
    let listed = queue.listArtifacts(id, "0", None, None).await.unwrap();
    assert_eq!(
        listed["artifacts"][0]["name"], "public/superseded-by.json",
        "{listed}"
    );
    assert_eq!(listed["artifacts"][0]["storageType"], "reference");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let path = format!("/api/queue/v1/task/{id}/runs/0/artifacts/public%2Fsuperseded-by.json");
    let r = get_path(&http, q, &path).await;
    assert_eq!(r.status(), 303, "{path}");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("{}/api/queue/v1/task/{by}/status", q.root_url)
    );
    // The pointer leads to the superseding task.
    let pointed = reqwest::get(&location).await.unwrap();
    let pointed: Value = pointed.json().await.unwrap();
    assert_eq!(pointed["status"]["taskId"], by);
}

async fn assert_pending(queue: &taskcluster::Queue, id: &str, run: usize) {
    let s = queue.status(id).await.unwrap();
    assert_eq!(s["status"]["state"], "pending", "{id}: {s}");
    assert_eq!(s["status"]["runs"].as_array().unwrap().len(), run + 1);
}

/// The check: one worker, ten pushes in a burst. Push 0 is claimed
/// at once; of pushes 1-9 each supersedes the previous one while the task it
/// then stands for stays within the limit (3): 1←2←3←4, 5←6←7←8, 9 alone.
/// A retrigger and a cron task of the same key are exempt, another key is
/// independent, a rerun is never superseded, and the worker then claims
/// exactly what is left.
async fn ten_pushes_in_a_burst_with_one_worker(q: &TestQueue) {
    let queue = root(q);
    let base = chrono::Utc::now().timestamp_millis();
    let mut pushes = Vec::new();
    pushes.push(push(&queue, base, 0, "m-c.build", json!({})).await);
    let claim = claim_one(&queue, TQ, "w").await;
    assert_eq!(claim["status"]["taskId"], pushes[0].as_str());
    for n in 1..10 {
        pushes.push(push(&queue, base, n, "m-c.build", json!({})).await);
    }
    // Pushes on another branch: their own key.
    let other1 = push(&queue, base, 1, "autoland.build", json!({})).await;
    let other2 = push(&queue, base, 2, "autoland.build", json!({})).await;
    // A retrigger (created by an action task: `extra.parent` is not its
    // group) and a cron graph's task (its decision task has `extra.cron`).
    let group = slug();
    let retrigger = push(
        &queue,
        base,
        10,
        "m-c.build",
        json!({"taskGroupId": group, "extra": {"parent": slug()}}),
    )
    .await;
    let cron_decision = slug();
    create(
        &queue,
        &cron_decision,
        "prov/decision",
        json!({"taskGroupId": cron_decision, "extra": {"cron": "{\"job_name\": \"nightly\"}"}}),
    )
    .await;
    let cron_task = push(
        &queue,
        base,
        11,
        "m-c.build",
        json!({"taskGroupId": cron_decision, "extra": {"parent": cron_decision}}),
    )
    .await;
    // A push's graph task (its parent is its group's decision task) coalesces.
    let graph_task = push(
        &queue,
        base,
        12,
        "m-c.build",
        json!({"taskGroupId": group, "extra": {"parent": group}}),
    )
    .await;

    assert_eq!(
        state(&queue, &pushes[0]).await,
        "running",
        "a claimed task is never superseded"
    );
    for (old, by) in [(1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8)] {
        assert_superseded(q, &queue, &pushes[old], &pushes[by]).await;
    }
    for n in [4, 8] {
        assert_pending(&queue, &pushes[n], 0).await;
    }
    // The graph task took push 9 (push 4 and 8 already stand for three each).
    assert_superseded(q, &queue, &pushes[9], &graph_task).await;
    assert_superseded(q, &queue, &other1, &other2).await;
    for id in [&other2, &retrigger, &cron_task, &graph_task] {
        assert_pending(&queue, id, 0).await;
    }

    // Push 0 completes and is rerun: its new run is never superseded.
    with_creds(q, task_creds(&claim))
        .reportCompleted(&pushes[0], "0")
        .await
        .unwrap();
    queue.rerunTask(&pushes[0]).await.unwrap();
    let last = push(&queue, base, 13, "m-c.build", json!({})).await;
    assert_superseded(q, &queue, &graph_task, &last).await;
    assert_pending(&queue, &pushes[0], 1).await;

    // The one worker gets exactly what is left.
    let claimed: BTreeSet<String> = claim_work(&queue, TQ, "w", 32)
        .await
        .iter()
        .map(|c| c["status"]["taskId"].as_str().unwrap().to_string())
        .collect();
    let left: BTreeSet<String> = [
        &pushes[0], &pushes[4], &pushes[8], &other2, &retrigger, &cron_task, &last,
    ]
    .into_iter()
    .cloned()
    .collect();
    assert_eq!(claimed, left);
}

/// A task waiting on a dependency supersedes nothing, and is not superseded,
/// until it becomes pending; then it supersedes the older pending task.
async fn a_task_with_dependencies_coalesces_when_it_becomes_pending(q: &TestQueue) {
    let queue = root(q);
    let base = chrono::Utc::now().timestamp_millis();
    let gate = new_task(&queue, "prov/gate", json!({})).await;
    let older = push(&queue, base, 0, "try.test", json!({})).await;
    let waiting = push(&queue, base, 1, "try.test", json!({"dependencies": [gate]})).await;
    assert_eq!(state(&queue, &waiting).await, "unscheduled");
    assert_pending(&queue, &older, 0).await;
    // A newer push while it waits: it supersedes the older one, not the waiting one.
    let newer = push(&queue, base, 2, "try.test", json!({})).await;
    assert_superseded(q, &queue, &older, &newer).await;
    assert_eq!(state(&queue, &waiting).await, "unscheduled");

    let claim = claim_one(&queue, "prov/gate", "w").await;
    with_creds(q, task_creds(&claim))
        .reportCompleted(&gate, "0")
        .await
        .unwrap();
    // Pending now, it supersedes nothing: `newer` was created after it (and
    // `older` is gone), so both run.
    wait_state(&queue, &waiting, "pending").await;
    assert_pending(&queue, &newer, 0).await;

    // A later push that waits too: when it becomes pending it supersedes both.
    let gate2 = new_task(&queue, "prov/gate", json!({})).await;
    let latest = push(
        &queue,
        base,
        3,
        "try.test",
        json!({"dependencies": [gate2]}),
    )
    .await;
    assert_pending(&queue, &newer, 0).await;
    let claim = claim_one(&queue, "prov/gate", "w").await;
    with_creds(q, task_creds(&claim))
        .reportCompleted(&gate2, "0")
        .await
        .unwrap();
    wait_state(&queue, &latest, "pending").await;
    assert_superseded(q, &queue, &waiting, &latest).await;
    assert_superseded(q, &queue, &newer, &latest).await;
}

/// The `task-exception` message of a superseded task is published once, with
/// run 0 resolved `superseded` and no worker.
async fn a_superseded_task_is_announced_once(q: &TestQueue, bus: &Bus) {
    const X: &str = "exchange/taskcluster-queue/v1/";
    let name = format!("exceptions-{}", slug());
    let binding = Binding::new(format!("{X}task-exception"), "#");
    let mut consumer = bus.consume(&name, &[binding], 50).await.unwrap();
    let queue = root(q);
    let base = chrono::Utc::now().timestamp_millis();
    let old = push(&queue, base, 0, "m-c.lint", json!({})).await;
    let new = push(&queue, base, 1, "m-c.lint", json!({})).await;
    // A later exception marks the end of what the supersession published.
    let marker = new_task(&queue, "prov/other", json!({})).await;
    queue.cancelTask(&marker).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("an event within 30 s")
            .expect("consumer open");
        let payload: Value = d.json().unwrap();
        let key = d.routing_key.clone();
        d.ack().await.unwrap();
        let id = payload["status"]["taskId"].as_str().unwrap().to_string();
        if id == marker {
            break;
        }
        seen.push((id, key, payload));
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (id, key, payload) = &seen[0];
    assert_eq!(*id, old);
    assert!(key.starts_with(&format!("primary.{old}.0._._.")), "{key}");
    assert_eq!(payload["runId"], 0);
    assert_eq!(payload["status"]["runs"][0]["reasonResolved"], "superseded");
    assert!(payload.get("workerId").is_none());
    assert_pending(&queue, &new, 0).await;
}
