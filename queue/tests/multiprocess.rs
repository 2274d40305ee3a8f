//! Two queue servers on one PostgreSQL database, many workers claiming at once:
//! every run is handed out exactly once and every task completes.

mod common;

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::PgDatabase;
use common::*;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_hand_out_a_run_twice() {
    let db = PgDatabase::create("bbbq_multi").await.unwrap();
    let a = TestQueue::with(TestOptions {
        database_url: Some(db.url().to_owned()),
        ..Default::default()
    })
    .await
    .unwrap();
    let b = TestQueue::with(TestOptions {
        database_url: Some(db.url().to_owned()),
        ..Default::default()
    })
    .await
    .unwrap();
    let tasks = 300;
    let mut ids = HashSet::new();
    let creator = root(&a);
    for _ in 0..tasks {
        let id = new_task(&creator, "prov/multi", json!({})).await;
        ids.insert(id);
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let queue = if w % 2 == 0 { root(&a) } else { root(&b) };
        workers.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let r = queue
                    .claimWork(
                        "prov/multi",
                        &json!({"workerGroup": "g", "workerId": format!("w{w}"), "tasks": 4}),
                    )
                    .await
                    .unwrap();
                let batch = r["tasks"].as_array().unwrap().clone();
                if batch.is_empty() {
                    return claimed;
                }
                for c in batch {
                    let id = c["status"]["taskId"].as_str().unwrap().to_string();
                    claimed.push((id, c["runId"].as_i64().unwrap(), c));
                }
            }
        }));
    }
    // A worker stops once a claimWork returns nothing (after the 20 s long poll).
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let mut seen = HashSet::new();
    for (id, run, _) in &all {
        assert!(seen.insert((id.clone(), *run)), "{id}/{run} claimed twice");
    }
    assert_eq!(seen.len(), tasks, "every task claimed once");
    for (i, (id, _, c)) in all.iter().enumerate() {
        let server = if i % 2 == 0 { &a } else { &b };
        with_creds(server, task_creds(c))
            .reportCompleted(id, "0")
            .await
            .unwrap();
    }
    let reader = root(&b);
    for id in &ids {
        assert_eq!(state(&reader, id).await, "completed");
    }
    a.stop().await;
    b.stop().await;
}
