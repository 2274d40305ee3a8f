//! Worker records: every run a worker claims reaches its `recentTasks` (and
//! `listWorkers`' `latestTask`) with its real run id, however close together
//! the claims come.

mod common;

use bbb_queue::ops::workers::RECENT_TASKS;
use bbb_queue::testing::TestQueue;
use bbb_testdb::{PgDatabase, TempDir, on_both_backends};
use common::*;
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Duration;

const TQ: &str = "prov/records";

fn runs_json(runs: &[(String, i64)]) -> Value {
    runs.iter()
        .map(|(task_id, run_id)| json!({"taskId": task_id, "runId": run_id}))
        .collect()
}

/// `(taskId, runId)` of the claims in a `claimWork` or `claimTask` answer.
fn claimed(claims: &[Value]) -> Vec<(String, i64)> {
    claims
        .iter()
        .map(|c| {
            (
                c["status"]["taskId"].as_str().unwrap().to_string(),
                c["runId"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Claim `n` tasks of [`TQ`] as worker `wg/w1`, in as many calls as it takes.
async fn claim_n(queue: &taskcluster::Queue, n: usize) -> Vec<(String, i64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = queue
            .claimWork(
                TQ,
                &json!({"workerGroup": "wg", "workerId": "w1", "tasks": n - got.len()}),
            )
            .await
            .unwrap();
        got.extend(claimed(r["tasks"].as_array().unwrap()));
    }
    got
}

/// A new pending task on [`TQ`].
async fn pending_task(queue: &taskcluster::Queue) -> String {
    new_task(queue, TQ, json!({})).await
}

/// Checks that the worker `wg/w1` lists `runs` as its recent tasks.
async fn assert_recent_tasks(queue: &taskcluster::Queue, runs: &[(String, i64)]) {
    let worker = queue
        .getWorker("prov", "records", "wg", "w1")
        .await
        .unwrap();
    assert_eq!(worker["recentTasks"], runs_json(runs), "{worker}");
}

async fn every_claim_reaches_the_worker_record(q: &TestQueue) {
    let queue = root(q);
    let mut expected: Vec<(String, i64)> = Vec::new();

    // Run 0 of a task, then run 1 after a rerun, by claimWork.
    let a = pending_task(&queue).await;
    expected.extend(claim_n(&queue, 1).await);
    queue.reportCompleted(&a, "0").await.unwrap();
    queue.rerunTask(&a).await.unwrap();
    expected.extend(claim_n(&queue, 1).await);
    assert_eq!(expected, [(a.clone(), 0), (a.clone(), 1)]);

    // Two runs in one claimWork call, then one by claimTask.
    for _ in 0..2 {
        pending_task(&queue).await;
    }
    let two = claim_n(&queue, 2).await;
    assert_eq!(two.len(), 2);
    expected.extend(two);
    let d = pending_task(&queue).await;
    let claim = queue
        .claimTask(&d, "0", &json!({"workerGroup": "wg", "workerId": "w1"}))
        .await
        .unwrap();
    expected.extend(claimed(&[claim]));

    assert_recent_tasks(&queue, &expected).await;
    let workers = queue
        .listWorkers("prov", "records", None, None, None)
        .await
        .unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    assert_eq!(
        workers["workers"][0]["latestTask"],
        json!({"taskId": d, "runId": 0})
    );

    // Only the newest RECENT_TASKS are shown.
    let more = RECENT_TASKS as usize + 3 - expected.len();
    for _ in 0..more {
        pending_task(&queue).await;
    }
    expected.extend(claim_n(&queue, more).await);
    let newest = &expected[expected.len() - RECENT_TASKS as usize..];
    assert_recent_tasks(&queue, newest).await;

    // A minute later the next claim also prunes the runs no longer shown: the
    // newest RECENT_TASKS stay, plus the run this claim adds.
    q.clock.advance(Duration::from_secs(61));
    pending_task(&queue).await;
    expected.extend(claim_n(&queue, 1).await);
    let stored: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM worker_tasks WHERE task_queue_id = $1 AND worker_id = 'w1'",
    )
    .bind(TQ)
    .fetch_one(&q.running.queue.db.pool)
    .await
    .unwrap()
    .try_get("n")
    .unwrap();
    assert_eq!(stored, RECENT_TASKS + 1);
    let newest = &expected[expected.len() - RECENT_TASKS as usize..];
    assert_recent_tasks(&queue, newest).await;
}

on_both_backends!(bbb_queue::testing::TestQueue::on; every_claim_reaches_the_worker_record);

/// Claims made one call per transaction (no batching) are recorded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_without_batching_reach_the_worker_record() {
    let q = TestQueue::with(bbb_queue::testing::TestOptions {
        commit_batch: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = root(&q);
    for _ in 0..3 {
        pending_task(&queue).await;
    }
    let mut expected = claim_n(&queue, 1).await;
    expected.extend(claim_n(&queue, 2).await);
    assert_recent_tasks(&queue, &expected).await;
    q.stop().await;
}

/// The migration to `worker_tasks` keeps the task ids a record already had,
/// with the run of each task the worker claimed last.
async fn migrating_keeps_recent_tasks(url: &str) {
    let (pool, backend) = bbb_sqlstore::connect(url, 2).await.unwrap().unwrap();
    let mut before = match backend {
        bbb_sqlstore::Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        bbb_sqlstore::Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    before.migrations = before.migrations[..1].to_vec().into();
    before.run(&pool).await.unwrap();

    let run = |n: i64, worker: &str| json!({"runId": n, "state": "completed", "reasonCreated": "scheduled", "workerGroup": "wg", "workerId": worker, "scheduled": 0});
    let tasks = [
        ("X", json!([run(0, "w1"), run(1, "other"), run(2, "w1")])),
        ("Y", json!([run(0, "w1")])),
        ("V", json!([run(0, "other")])),
    ];
    for (id, runs) in &tasks {
        sqlx::query(
            "INSERT INTO tasks (task_id, task_group_id, scheduler_id, project_id, task_queue_id, priority, \
             deadline, expires, retries_left, state, open, definition, runs) \
             VALUES ($1, 'g', '-', 'none', $2, 1, 0, 0, 0, 'completed', 0, '{}', $3)",
        )
        .bind(*id)
        .bind(TQ)
        .bind(runs.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    // Y, X, then Z (gone) and V (never claimed by this worker): dropped.
    let recent = json!([{"taskId": "Y"}, {"taskId": "X"}, {"taskId": "Z"}, {"taskId": "V"}]);
    sqlx::query(
        "INSERT INTO workers (task_queue_id, worker_group, worker_id, first_claim, last_date_active, \
         expires, recent_tasks) VALUES ($1, 'wg', 'w1', 0, 0, 0, $2)",
    )
    .bind(TQ)
    .bind(recent.to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let db = bbb_queue::db::Db::connect(url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let rows = sqlx::query(
        "SELECT task_queue_id, worker_group, worker_id, task_id, run_id FROM worker_tasks ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, String, String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.get("task_queue_id"),
                r.get("worker_group"),
                r.get("worker_id"),
                r.get("task_id"),
                r.get("run_id"),
            )
        })
        .collect();
    let row = |task: &str, run: i64| {
        (
            TQ.to_string(),
            "wg".to_string(),
            "w1".to_string(),
            task.to_string(),
            run,
        )
    };
    assert_eq!(got, [row("Y", 0), row("X", 2)]);
    db.pool.close().await;
}

#[tokio::test]
async fn migrating_keeps_recent_tasks_sqlite() {
    let dir = TempDir::new("bbb-queue-migration");
    migrating_keeps_recent_tasks(&format!("sqlite://{}/q.sqlite", dir.0.display())).await;
}

#[tokio::test]
async fn migrating_keeps_recent_tasks_postgres() {
    let db = PgDatabase::create("bbbq").await.unwrap();
    migrating_keeps_recent_tasks(db.url()).await;
}
