//! Entries from routes: a completed task's routes `index.<namespace>` make
//! entries with its `extra.index` options, once per completion, fed from the
//! queue's transaction; two processes consuming the feed, and a consumer that
//! stops mid-way, make each entry exactly once.

mod common;

use bbb_index::{FEED, Index};
use bbb_queue::model::RunResolution;
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{PgDatabase, on_both_backends};
use common::*;
use serde_json::json;
use std::sync::Arc;

on_both_backends!(
    crate::common::on;
    completed_tasks_are_indexed_by_their_routes,
    only_completions_with_usable_options_make_entries,
);

async fn completed_tasks_are_indexed_by_their_routes(q: &TestQueue) {
    let queue = root_queue(q);
    let reader = index(q, None);
    let (ranked, plain) = (slug(), slug());
    let entry_expires = from_now(q, 7200);
    queue
        .createTask(
            &ranked,
            &task_def(
                q,
                "built-in/succeed",
                json!({
                    "routes": ["index.proj.app.latest", "index.proj.app.rev.abc", "index.bad..ns", "other.route"],
                    "extra": {"index": {"rank": 7, "data": {"rev": "abc"}, "expires": entry_expires}},
                }),
            ),
        )
        .await
        .unwrap();
    let task_expires = from_now(q, 86400);
    queue
        .createTask(
            &plain,
            &task_def(
                q,
                "built-in/succeed",
                json!({"routes": ["index.proj.plain"], "expires": task_expires}),
            ),
        )
        .await
        .unwrap();
    for path in ["proj.app.latest", "proj.app.rev.abc"] {
        let got = wait_for(&format!("an entry at {path}"), || async {
            reader.findTask(path).await.ok()
        })
        .await;
        assert_eq!(
            got,
            json!({"namespace": path, "taskId": ranked, "rank": 7, "data": {"rev": "abc"}, "expires": entry_expires})
        );
    }
    // Without options: rank 0, the task's expiry, no data.
    let got = wait_for("the plain entry", || async {
        reader.findTask("proj.plain").await.ok()
    })
    .await;
    assert_eq!(
        got,
        json!({"namespace": "proj.plain", "taskId": plain, "rank": 0, "data": {}, "expires": task_expires})
    );
    wait_feed_drained(q).await;
    // The invalid namespace made nothing; other routes are not the index's.
    let root = reader.listNamespaces("", None, None).await.unwrap();
    assert_eq!(root["namespaces"].as_array().unwrap().len(), 1, "{root}");

    // A higher-ranked entry inserted directly is not replaced by a lower-ranked completion.
    let blocker = slug();
    index(q, Some(root_creds(q)))
        .insertTask(
            "proj.held",
            &json!({"taskId": blocker, "rank": 100, "data": {}, "expires": from_now(q, 3600)}),
        )
        .await
        .unwrap();
    let later = slug();
    queue
        .createTask(
            &later,
            &task_def(
                q,
                "built-in/succeed",
                json!({"routes": ["index.proj.held"], "extra": {"index": {"rank": 99}}}),
            ),
        )
        .await
        .unwrap();
    wait_resolved(q, &later).await;
    wait_feed_drained(q).await;
    assert_eq!(
        reader.findTask("proj.held").await.unwrap()["taskId"],
        blocker
    );
}

async fn only_completions_with_usable_options_make_entries(q: &TestQueue) {
    let queue = root_queue(q);
    let reader = index(q, None);
    let mut ids = Vec::new();
    for (tq, extra) in [
        ("built-in/fail", json!({})),
        (
            "built-in/succeed",
            json!({"extra": {"index": {"rank": "high"}}}),
        ),
        (
            "built-in/succeed",
            json!({"extra": {"index": {"data": "text"}}}),
        ),
        (
            "built-in/succeed",
            json!({"extra": {"index": {"expires": "someday"}}}),
        ),
        ("built-in/succeed", json!({"payload": {"not": "empty"}})),
    ] {
        let id = slug();
        let mut extra = extra;
        extra["routes"] = json!([format!("index.unusable.t{}", ids.len())]);
        queue
            .createTask(&id, &task_def(q, tq, extra))
            .await
            .unwrap();
        ids.push(id);
    }
    let good = slug();
    queue
        .createTask(
            &good,
            &task_def(
                q,
                "built-in/succeed",
                json!({"routes": ["index.unusable.good"]}),
            ),
        )
        .await
        .unwrap();
    for id in ids.iter().chain([&good]) {
        wait_resolved(q, id).await;
    }
    wait_feed_drained(q).await;
    let listed = reader.listTasks("unusable", None, None).await.unwrap();
    let paths: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["unusable.good"]);
}

/// An index over the database of `q`, whose queue has the index's feed bound,
/// without the loops the mounted service runs: the test drives the feed.
async fn index_of(q: &TestQueue) -> Index {
    let queue = q.running.queue.clone();
    bbb_index::migrate(&queue.db).await.unwrap();
    bbb_index::bind(&queue);
    Index {
        artifacts: bbb_queue::api::Api {
            queue: queue.clone(),
            blobs: q.running.blobs.clone(),
        },
        queue,
        auth: Arc::new(bbb_auth::Authenticator::new(bbb_auth::AuthConfig::default()).unwrap()),
        root_url: q.root_url.clone(),
    }
}

/// A queue process on the PostgreSQL database `db`, without the index mounted.
async fn process_on(db: &PgDatabase) -> TestQueue {
    TestQueue::with(TestOptions {
        database_url: Some(db.url().to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `n` tasks with routes `index.many.t<i>.a` and `index.many.t<i>.b`, created,
/// claimed and completed through `processes` in turn; their ids by `i`.
async fn complete_tasks(processes: &[&TestQueue], n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let p = processes[i % processes.len()];
        let queue = root_queue(p);
        let id = slug();
        queue
            .createTask(
                &id,
                &task_def(
                    p,
                    "prov/feed",
                    json!({"routes": [format!("index.many.t{i}.a"), format!("index.many.t{i}.b")]}),
                ),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    // Claimed and completed in-process (as the HTTP handlers do), through each
    // process in turn.
    let mut done = 0;
    while done < n {
        let queue = &processes[done % processes.len()].running.queue;
        for c in queue
            .claim_pending("prov/feed", "g", "w", 32)
            .await
            .unwrap()
        {
            let id = c["status"]["taskId"].as_str().unwrap();
            queue
                .resolve_run(id, 0, RunResolution::Completed)
                .await
                .unwrap();
            done += 1;
        }
    }
    ids
}

/// Consume the feed with `index` in passes of `batch` until it finds nothing;
/// how many entries it made.
async fn drain(index: Index, batch: i64) -> usize {
    let mut made = 0;
    loop {
        let mut pass = index.take(batch).await.unwrap();
        if pass.is_empty() {
            return made;
        }
        pass.apply(&index).await.unwrap();
        made += pass.commit(&index).await.unwrap();
    }
}

/// Every `many.t<i>.{a,b}` holds task `i`.
async fn assert_entries(index: &Index, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        for leaf in ["a", "b"] {
            let e = bbb_index::store::get(&index.queue.db, &format!("many.t{i}"), leaf)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no entry at many.t{i}.{leaf}"));
            assert_eq!(&e.task_id, id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_consuming_the_feed_make_each_entry_once() {
    let db = PgDatabase::create("bbb_index_feed").await.unwrap();
    let (a, b) = (process_on(&db).await, process_on(&db).await);
    let (ia, ib) = (index_of(&a).await, index_of(&b).await);
    let n = 400;
    let ids = complete_tasks(&[&a, &b], n).await;
    assert_eq!(
        ia.queue.feed_len(FEED).await.unwrap(),
        n as i64,
        "one item per completion"
    );
    // Both processes consume at once, in small passes so they meet.
    let (ma, mb) = tokio::join!(
        tokio::spawn(drain(ia.clone(), 7)),
        tokio::spawn(drain(ib.clone(), 7))
    );
    let made = ma.unwrap() + mb.unwrap();
    assert_eq!(
        made,
        2 * n,
        "each completion's two entries made exactly once"
    );
    assert_eq!(ia.queue.feed_len(FEED).await.unwrap(), 0);
    assert_entries(&ia, &ids).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_stops_mid_way_leaves_its_batch_to_the_next() {
    let db = PgDatabase::create("bbb_index_restart").await.unwrap();
    let a = process_on(&db).await;
    let ia = index_of(&a).await;
    let n = 120;
    let ids = complete_tasks(&[&a], n).await;
    // A pass takes the oldest 50 items and writes their entries, uncommitted...
    let mut stopped = ia.take(50).await.unwrap();
    assert_eq!(stopped.len(), 50);
    assert_eq!(stopped.apply(&ia).await.unwrap(), 100);
    // ...while another process consumes the feed, skipping the items it holds
    // (and waiting for the namespaces it is creating)...
    let b = process_on(&db).await;
    let ib = index_of(&b).await;
    let consumer_b = tokio::spawn(drain(ib.clone(), 25));
    // ...and the first process stops before committing (its connections
    // close): its pass changed nothing, and its items are free again.
    let pool = ia.queue.db.pool.clone();
    drop(stopped);
    drop(ia);
    a.stop().await;
    pool.close().await;
    let made_by_b = consumer_b.await.unwrap();
    // Restarted, it consumes what is left, if anything.
    let a2 = process_on(&db).await;
    let ia2 = index_of(&a2).await;
    let made_after_restart = drain(ia2.clone(), 500).await;
    assert_eq!(
        made_by_b + made_after_restart,
        2 * n,
        "each completion's entries made exactly once"
    );
    assert_eq!(ia2.queue.feed_len(FEED).await.unwrap(), 0);
    assert_entries(&ia2, &ids).await;
    b.stop().await;
    a2.stop().await;
}
