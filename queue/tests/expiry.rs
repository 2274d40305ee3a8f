//! Expiry of old tasks, dependencies, groups and artifacts, with a moved clock.

mod common;

use bbb_queue::testing::TestQueue;
use bbb_testdb::on_both_backends;
use common::*;
use serde_json::json;
use std::time::Duration;

async fn expired_data_is_removed(q: &TestQueue) {
    let queue = root(q);
    let (a, b) = (slug(), slug());
    let short = json!({"deadline": from_now(120), "expires": from_now(180)});
    create(&queue, &a, "prov/expire", short.clone()).await;
    let mut def = task_def("prov/expire", short);
    def["dependencies"] = json!([a]);
    queue.createTask(&b, &def).await.unwrap();
    let claim = claim_one(&queue, "prov/expire", "w").await;
    assert_eq!(
        claim["status"]["taskId"],
        a.as_str(),
        "only the root is pending"
    );
    let keep = new_task(&queue, "prov/expire", json!({})).await;
    let t = with_creds(q, task_creds(&claim));
    t.createArtifact(&a, "0", "public/x", &s3_text(150))
        .await
        .unwrap();

    // Nothing is due yet.
    let core = &q.running.queue;
    assert!(core.expire_old_data_once().await.unwrap().is_empty());
    assert!(core.load_task(&a).await.unwrap().is_some());

    q.clock.advance(Duration::from_secs(3600));
    let blobs = core.expire_old_data_once().await.unwrap();
    assert_eq!(blobs, vec![(a.clone(), 0, "public/x".to_string())]);
    assert!(core.load_task(&a).await.unwrap().is_none());
    assert!(core.load_task(&b).await.unwrap().is_none());
    assert!(
        core.load_task(&keep).await.unwrap().is_some(),
        "an unexpired task stays"
    );
    let deps = core.dependents(&a, "", 10).await.unwrap();
    assert!(deps.is_empty());
}

on_both_backends!(bbb_queue::testing::TestQueue::on; expired_data_is_removed);
