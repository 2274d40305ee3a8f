//! `features.taskclusterProxy`: tasks call the real queue (SQLite and
//! PostgreSQL) through their proxy, with the run's temporary credentials
//! restricted to the task's scopes, including after reclaims renewed them;
//! a task without the feature gets no proxy.

mod common;

use std::time::{Duration, Instant};

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::on_both_backends;
use bbb_workers::RunOutcome;
use serde_json::json;

use common::{
    backing_log, create_task, from_now, logged, one_worker, root, status, task_definition,
    task_queue, wait_for_file, wait_state,
};

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    calls_through_the_proxy_carry_the_task_scopes,
    no_proxy_without_the_feature,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_proxy_follows_reclaims_sqlite() {
    the_proxy_follows_reclaims(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_proxy_follows_reclaims_postgres() {
    the_proxy_follows_reclaims(true).await;
}

/// Calls through the proxy and prints `<what> <HTTP status>` lines.
const CALLER: &str = r#"
set -u
P="$TASKCLUSTER_PROXY_URL"
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
echo "own task: $(status "$P/api/queue/v1/task/$TASK_ID")"
echo "own task, short form: $(status "$P/queue/v1/task/$TASK_ID")"
printf '%s' "$CHILD" > child.json
echo "create child: $(status -X PUT -H 'Content-Type: application/json' --data @child.json "$P/api/queue/v1/task/$CHILD_ID")"
printf '%s' "$OTHER" > other.json
echo "create elsewhere: $(status -X PUT -H 'Content-Type: application/json' --data @other.json "$P/api/queue/v1/task/$OTHER_ID")"
echo "resolve own run: $(status -X POST "$P/api/queue/v1/task/$TASK_ID/runs/$RUN_ID/completed")"
ARTIFACT="api/queue/v1/task/$PRODUCER/artifacts/private/proxy-test/secret.txt"
echo "private artifact: $(curl -s -L "$P/$ARTIFACT")"
echo "private artifact without the proxy: $(status "$TASKCLUSTER_ROOT_URL/$ARTIFACT")"
signed=$(curl -s -o /dev/null -w '%{redirect_url}' --data "$TASKCLUSTER_ROOT_URL/$ARTIFACT" "$P/bewit")
case "$signed" in *bewit=*) echo "bewit: signed";; *) echo "bewit: $signed";; esac
echo "private artifact by bewit: $(curl -s -L "$signed")"
curl -s -D headers -o /dev/null "$P/api/queue/v1/task/$TASK_ID"
echo "proxy client: $(grep -i '^x-taskcluster-proxy-temp-clientid:' headers | cut -d' ' -f2 | tr -d '\r')"
echo "credentials in the environment: $(env | grep -c -i -e access -e TASKCLUSTER_CLIENT)"
"#;

async fn calls_through_the_proxy_carry_the_task_scopes(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let (child_tq, other_tq) = (task_queue(), task_queue());
    let (producer, _) = w
        .complete(
            q,
            &tq,
            json!({
                "command": [["sh", "-c", "echo proxy secret > secret.txt"]],
                "maxRunTime": 60,
                "artifacts": [{"type": "file", "path": "secret.txt", "name": "private/proxy-test/secret.txt"}]
            }),
        )
        .await;

    let child_id = bbb_queue::validate::slugid();
    let other_id = bbb_queue::validate::slugid();
    let child = task_definition(&child_tq, json!({}), 0, &[]);
    let other = task_definition(&other_tq, json!({}), 0, &[]);
    let scopes = vec![
        format!("queue:create-task:lowest:{child_tq}"),
        "queue:create-task:project:none".to_owned(),
        "queue:scheduler-id:-".to_owned(),
        "queue:get-artifact:private/proxy-test/*".to_owned(),
    ];
    let task_id = bbb_queue::validate::slugid();
    let def = task_definition(
        &tq,
        json!({
            "command": [["sh", "-c", CALLER]],
            "maxRunTime": 60,
            "features": {"taskclusterProxy": true},
            "env": {
                "CHILD": child.to_string(), "CHILD_ID": child_id,
                "OTHER": other.to_string(), "OTHER_ID": other_id,
                "PRODUCER": producer,
            }
        }),
        0,
        &scopes,
    );
    root(q).createTask(&task_id, &def).await.unwrap();
    assert_eq!(w.next_report().await.resolution, RunOutcome::Completed);
    let log = backing_log(q, &task_id).await;
    for (what, expected) in [
        ("own task: ", "200"),
        ("own task, short form: ", "200"),
        ("create child: ", "200"),
        // Scopes the task does not have, and the claim's scopes beyond the
        // task's (resolving its own run), are refused.
        ("create elsewhere: ", "403"),
        ("resolve own run: ", "403"),
        ("private artifact: ", "proxy secret"),
        ("private artifact without the proxy: ", "403"),
        ("bewit: ", "signed"),
        ("private artifact by bewit: ", "proxy secret"),
        ("credentials in the environment: ", "0"),
    ] {
        assert_eq!(logged(&log, what), Some(expected), "{what}\n{log}");
    }
    let client = logged(&log, "proxy client: ").unwrap();
    assert!(
        client.starts_with(&format!("task-client/{task_id}/0/on/tests/w1/until/")),
        "{client}"
    );
    assert!(
        log.contains("] Taskcluster proxy running at http://127.0.0.1:"),
        "{log}"
    );
    // The child exists, created with the task's credentials.
    let created = root(q).task(&child_id).await.unwrap();
    assert_eq!(created["taskQueueId"], child_tq.as_str());
    assert!(root(q).task(&other_id).await.is_err());
    w.stop().await;
}

async fn no_proxy_without_the_feature(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let (_, log) = w
        .complete(
            q,
            &tq,
            json!({
                "command": [["sh", "-c", "echo \"proxy: ${TASKCLUSTER_PROXY_URL-none}\"; echo \"root: $TASKCLUSTER_ROOT_URL\""]],
                "maxRunTime": 60,
                "features": {"taskclusterProxy": false}
            }),
        )
        .await;
    assert_eq!(logged(&log, "proxy: "), Some("none"), "{log}");
    assert_eq!(logged(&log, "root: "), Some(q.root_url.as_str()), "{log}");
    assert!(!log.contains("Taskcluster proxy running"), "{log}");
    w.stop().await;
}

/// Calls through the proxy, waits for the signal, calls again; each call
/// creates an artifact on its own run, which needs the run's credentials.
const RECLAIMED: &str = r#"
set -u
call() {
  body="{\"storageType\":\"reference\",\"expires\":\"$EXPIRES\",\"url\":\"https://example.com/$1\",\"contentType\":\"text/plain\"}"
  code=$(curl -s -D headers -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data "$body" \
    "$TASKCLUSTER_PROXY_URL/api/queue/v1/task/$TASK_ID/runs/$RUN_ID/artifacts/public/proxy/$1")
  echo "$1: $code $(grep -i '^x-taskcluster-proxy-temp-clientid:' headers | cut -d' ' -f2 | tr -d '\r')"
}
call first
echo called > "$SHARED/first"
i=0; while [ ! -e "$SHARED/go" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
call second
"#;

async fn the_proxy_follows_reclaims(postgres: bool) {
    let q = TestQueue::with(TestOptions {
        postgres,
        claim_timeout_s: Some(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let (scratch, tq, mut w) = one_worker(&q).await;
    let shared = scratch.shared("shared");
    let task_id = create_task(
        &q,
        &tq,
        json!({
            "command": [["sh", "-c", RECLAIMED]],
            "maxRunTime": 120,
            "features": {"taskclusterProxy": true},
            "env": {"SHARED": shared.display().to_string(), "EXPIRES": from_now(3600)}
        }),
        0,
    )
    .await;
    wait_for_file(&shared.join("first")).await;
    // Wait for a reclaim (the claim lasts 4 s): the worker gets new
    // credentials and must hand them to the proxy. (The old ones would still
    // be accepted for the queue's 5 minutes of clock skew, so the second
    // call shows the renewal by the client id it was signed with.)
    let s = wait_state(&q, &task_id, "running").await;
    let taken_until = s["runs"][0]["takenUntil"].clone();
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&q, &task_id).await;
        if s["runs"][0]["takenUntil"] != taken_until {
            break;
        }
        assert_eq!(s["state"], "running", "{s}");
        assert!(Instant::now() < give_up, "the task was not reclaimed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(shared.join("go"), "").unwrap();
    assert_eq!(w.next_report().await.resolution, RunOutcome::Completed);
    let log = backing_log(&q, &task_id).await;
    let first = logged(&log, "first: ").unwrap();
    let second = logged(&log, "second: ").unwrap();
    let (first_code, first_client) = first.split_once(' ').unwrap();
    let (second_code, second_client) = second.split_once(' ').unwrap();
    assert_eq!((first_code, second_code), ("200", "200"), "{log}");
    assert!(
        first_client.starts_with(&format!("task-client/{task_id}/0/")),
        "{log}"
    );
    assert_ne!(first_client, second_client, "credentials were not renewed");
    w.stop().await;
    q.stop().await;
}
