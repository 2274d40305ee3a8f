//! The built-in workers: tasks on `built-in/succeed` and `built-in/fail`
//! resolve at once, on SQLite and PostgreSQL, and with two processes on one
//! PostgreSQL database each run is resolved once.

mod common;

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{Backend, PgDatabase, on_both_backends};
use common::*;
use serde_json::{Value, json};

/// A queue with the built-in workers beside it.
async fn start(opts: TestOptions) -> TestQueue {
    TestQueue::with_mounts(opts, vec![bbb_queue::builtin::mount()])
        .await
        .expect("start the queue with the built-in workers")
}

async fn with_built_in(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = start(TestOptions {
        postgres: backend == Backend::Postgres,
        ..Default::default()
    })
    .await;
    test(&q).await;
    q.stop().await;
}

on_both_backends!(crate::with_built_in; built_in_tasks_resolve_at_once);

/// Wait until a task is resolved; its status.
async fn resolved(q: &TestQueue, task_id: &str) -> Value {
    let queue = root(q);
    wait_for(&format!("{task_id} to resolve"), || async {
        let s = queue.status(task_id).await.expect("status")["status"].clone();
        ["completed", "failed", "exception"]
            .contains(&s["state"].as_str().unwrap_or_default())
            .then_some(s)
    })
    .await
}

async fn built_in_tasks_resolve_at_once(q: &TestQueue) {
    let queue = root(q);
    let mut want = Vec::new();
    for (tq, payload, state, reason) in [
        ("built-in/succeed", json!({}), "completed", "completed"),
        ("built-in/fail", json!({}), "failed", "failed"),
        (
            "built-in/succeed",
            json!({"command": "x"}),
            "exception",
            "malformed-payload",
        ),
        (
            "built-in/fail",
            json!({"command": "x"}),
            "exception",
            "malformed-payload",
        ),
    ] {
        let id = slug();
        queue
            .createTask(&id, &task_def(tq, json!({"payload": payload})))
            .await
            .unwrap();
        want.push((id, state, reason, tq.rsplit('/').next().unwrap()));
    }
    for (id, state, reason, worker) in &want {
        let status = resolved(q, id).await;
        assert_eq!(status["state"], *state, "{status}");
        let runs = status["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{status}");
        assert_eq!(runs[0]["reasonResolved"], *reason);
        assert_eq!(runs[0]["workerGroup"], "built-in");
        assert_eq!(runs[0]["workerId"], *worker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn built_in_workers_on_two_processes_resolve_each_task_once() {
    let db = PgDatabase::create("bbb_builtin_multi").await.unwrap();
    let opts = || TestOptions {
        database_url: Some(db.url().to_owned()),
        ..Default::default()
    };
    let (a, b) = (start(opts()).await, start(opts()).await);
    let mut ids = Vec::new();
    for i in 0..200 {
        let p = if i % 2 == 0 { &a } else { &b };
        let tq = if i % 3 == 0 {
            "built-in/fail"
        } else {
            "built-in/succeed"
        };
        let id = slug();
        root(p)
            .createTask(&id, &task_def(tq, json!({})))
            .await
            .unwrap();
        ids.push((id, tq));
    }
    for (id, tq) in &ids {
        let status = resolved(&a, id).await;
        let want = if *tq == "built-in/fail" {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(status["state"], want, "{status}");
        // One run, resolved once: a second claim would have made a second run
        // or a refused report.
        assert_eq!(status["runs"].as_array().unwrap().len(), 1, "{status}");
    }
    a.stop().await;
    b.stop().await;
}
