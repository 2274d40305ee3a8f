//! The whole task lifecycle through the official Rust client, on SQLite and
//! PostgreSQL: create, claim, reclaim, artifacts, resolve, retries, reruns.

mod common;

use bbb_queue::testing::TestQueue;
use bbb_testdb::on_both_backends;
use common::*;
use serde_json::json;

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    create_claim_reclaim_artifact_complete,
    create_is_idempotent,
    failure_and_exception_reports,
    retries_until_exhausted,
    rerun_after_completion,
    cancel_pending_and_running,
    claim_task_is_idempotent_per_worker,
    priority_then_fifo,
);

async fn create_claim_reclaim_artifact_complete(q: &TestQueue) {
    let queue = root(q);
    let id = slug();
    let created = create(&queue, &id, "prov/wt", json!({"routes": ["index.x"]})).await;
    assert_eq!(created["status"]["state"], "pending");
    assert_eq!(created["status"]["runs"][0]["reasonCreated"], "scheduled");
    assert_eq!(created["status"]["taskQueueId"], "prov/wt");
    assert_eq!(created["status"]["provisionerId"], "prov");
    let task = queue.task(&id).await.unwrap();
    assert_eq!(task["workerType"], "wt");
    assert_eq!(task["priority"], "lowest");
    assert_eq!(task["retries"], 5);
    assert_eq!(task["taskGroupId"], id.as_str());

    let claim = claim_one(&queue, "prov/wt", "w1").await;
    assert_eq!(claim["status"]["taskId"], id.as_str());
    assert_eq!(claim["runId"], 0);
    assert_eq!(claim["workerId"], "w1");
    assert_eq!(claim["task"]["metadata"]["name"], "t");
    assert!(claim["takenUntil"].as_str().unwrap().ends_with('Z'));
    let creds = task_creds(&claim);
    assert!(
        creds
            .client_id
            .starts_with(&format!("task-client/{id}/0/on/wg/w1/until/"))
    );
    let as_task = with_creds(q, creds);

    let reclaim = as_task.reclaimTask(&id, "0").await.unwrap();
    assert_eq!(reclaim["status"]["state"], "running");
    let as_task = with_creds(q, task_creds(&reclaim));

    // An s3 artifact: the put URL points back at the queue.
    let art = as_task
        .createArtifact(&id, "0", "public/hello.txt", &s3_text(600))
        .await
        .unwrap();
    let put = art["putUrl"].as_str().unwrap();
    assert!(put.starts_with(&q.root_url));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .put(put)
        .header("content-type", "text/plain")
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {}", r.status());
    let got = queue
        .getLatestArtifact(&id, "public/hello.txt")
        .await
        .unwrap();
    assert_eq!(got["storageType"], "s3");
    let body = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(body.headers()["content-type"], "text/plain");
    assert_eq!(body.text().await.unwrap(), "hello world");

    // The live-log pattern: a reference replaced by a link.
    as_task
        .createArtifact(&id, "0", "public/logs/live.log", &json!({"storageType": "reference", "contentType": "text/plain", "url": "http://worker.example/live", "expires": from_now(600)}))
        .await
        .unwrap();
    let path = format!("/api/queue/v1/task/{id}/runs/0/artifacts/public%2Flogs%2Flive.log");
    let r = get_path(&http, q, &path).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "http://worker.example/live");
    as_task
        .createArtifact(&id, "0", "public/logs/live.log", &json!({"storageType": "link", "artifact": "public/hello.txt", "expires": from_now(600)}))
        .await
        .unwrap();
    let got = queue
        .getArtifact(&id, "0", "public/logs/live.log")
        .await
        .unwrap();
    assert_eq!(got["storageType"], "s3");
    // An error artifact answers 424.
    as_task
        .createArtifact(&id, "0", "public/missing", &json!({"storageType": "error", "reason": "file-missing-on-worker", "message": "no such file", "expires": from_now(600)}))
        .await
        .unwrap();
    let path = format!("/api/queue/v1/task/{id}/artifacts/public/missing");
    let r = get_path(&http, q, &path).await;
    assert_eq!(r.status(), 424);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "file-missing-on-worker");
    let list = queue.listLatestArtifacts(&id, None, None).await.unwrap();
    let names: Vec<&str> = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["public/hello.txt", "public/logs/live.log", "public/missing"]
    );
    let info = queue
        .artifactInfo(&id, "0", "public/logs/live.log")
        .await
        .unwrap();
    assert_eq!(info["storageType"], "link");

    let done = as_task.reportCompleted(&id, "0").await.unwrap();
    assert_eq!(done["status"]["state"], "completed");
    assert_eq!(done["status"]["runs"][0]["reasonResolved"], "completed");
    // Idempotent repeat.
    as_task.reportCompleted(&id, "0").await.unwrap();
    // Reclaiming a resolved run is a conflict; so is failing it now.
    let e = as_task.reclaimTask(&id, "0").await.unwrap_err();
    assert_eq!(status_of(&e), 409);
    let e = as_task.reportFailed(&id, "0").await.unwrap_err();
    assert_eq!(status_of(&e), 409);
    // Artifacts are refused once the run completed.
    let e = as_task
        .createArtifact(&id, "0", "public/late", &s3_text(600))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 409);
}

async fn create_is_idempotent(q: &TestQueue) {
    let queue = root(q);
    let id = slug();
    let def = task_def("prov/wt", json!({}));
    queue.createTask(&id, &def).await.unwrap();
    let again = queue.createTask(&id, &def).await.unwrap();
    assert_eq!(again["status"]["taskId"], id.as_str());
    assert_eq!(again["status"]["runs"].as_array().unwrap().len(), 1);
    let mut other = def.clone();
    other["metadata"]["name"] = "different".into();
    let e = queue.createTask(&id, &other).await.unwrap_err();
    assert_eq!(status_of(&e), 409);
    assert!(text_of(&e).contains("RequestConflict"), "{}", text_of(&e));
}

async fn failure_and_exception_reports(q: &TestQueue) {
    let queue = root(q);
    let a = new_task(&queue, "prov/fail", json!({})).await;
    let (_, t) = claim_as_task(q, &queue, "prov/fail", "w").await;
    let s = t.reportFailed(&a, "0").await.unwrap();
    assert_eq!(s["status"]["state"], "failed");
    assert_eq!(s["status"]["runs"][0]["reasonResolved"], "failed");

    let b = new_task(&queue, "prov/fail", json!({})).await;
    let (_, t) = claim_as_task(q, &queue, "prov/fail", "w").await;
    let s = t
        .reportException(&b, "0", &json!({"reason": "malformed-payload"}))
        .await
        .unwrap();
    assert_eq!(s["status"]["state"], "exception");
    assert_eq!(
        s["status"]["runs"].as_array().unwrap().len(),
        1,
        "malformed-payload is never retried"
    );
    let e = t
        .reportException(&b, "0", &json!({"reason": "superseded"}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400);
}

async fn retries_until_exhausted(q: &TestQueue) {
    let queue = root(q);
    let id = new_task(&queue, "prov/retry", json!({"retries": 2})).await;
    for (run, reason, created) in [
        (0, "worker-shutdown", "retry"),
        (1, "intermittent-task", "task-retry"),
    ] {
        let claim = claim_one(&queue, "prov/retry", "w").await;
        assert_eq!(claim["runId"], run);
        let t = with_creds(q, task_creds(&claim));
        let s = t
            .reportException(&id, &run.to_string(), &json!({"reason": reason}))
            .await
            .unwrap();
        let runs = s["status"]["runs"].as_array().unwrap();
        assert_eq!(runs[run as usize]["reasonResolved"], reason);
        assert_eq!(runs[run as usize + 1]["reasonCreated"], created);
        assert_eq!(s["status"]["state"], "pending");
    }
    let claim = claim_one(&queue, "prov/retry", "w").await;
    assert_eq!(claim["runId"], 2);
    let t = with_creds(q, task_creds(&claim));
    let s = t
        .reportException(&id, "2", &json!({"reason": "worker-shutdown"}))
        .await
        .unwrap();
    assert_eq!(s["status"]["state"], "exception");
    assert_eq!(s["status"]["retriesLeft"], 0);
    assert_eq!(s["status"]["runs"].as_array().unwrap().len(), 3);
}

async fn rerun_after_completion(q: &TestQueue) {
    let queue = root(q);
    let id = new_task(&queue, "prov/rerun", json!({})).await;
    // Rerunning a pending task just returns its status.
    let s = queue.rerunTask(&id).await.unwrap();
    assert_eq!(s["status"]["runs"].as_array().unwrap().len(), 1);
    let claim = claim_one(&queue, "prov/rerun", "w").await;
    with_creds(q, task_creds(&claim))
        .reportCompleted(&id, "0")
        .await
        .unwrap();
    let s = queue.rerunTask(&id).await.unwrap();
    assert_eq!(s["status"]["state"], "pending");
    assert_eq!(s["status"]["runs"][1]["reasonCreated"], "rerun");
    let claim = claim_one(&queue, "prov/rerun", "w").await;
    assert_eq!(claim["runId"], 1);
}

async fn cancel_pending_and_running(q: &TestQueue) {
    let queue = root(q);
    let pending = new_task(&queue, "prov/cancel", json!({})).await;
    let s = queue.cancelTask(&pending).await.unwrap();
    assert_eq!(s["status"]["state"], "exception");
    assert_eq!(s["status"]["runs"][0]["reasonResolved"], "canceled");
    // Cancelled work is not handed out.
    let counts = queue.taskQueueCounts("prov/cancel").await.unwrap();
    assert_eq!(counts["pendingTasks"], 0);

    let running = new_task(&queue, "prov/cancel", json!({})).await;
    let claim = claim_one(&queue, "prov/cancel", "w").await;
    queue.cancelTask(&running).await.unwrap();
    let t = with_creds(q, task_creds(&claim));
    assert_eq!(
        status_of(&t.reclaimTask(&running, "0").await.unwrap_err()),
        409
    );
    assert_eq!(
        status_of(&t.reportCompleted(&running, "0").await.unwrap_err()),
        409
    );
    // Cancelling again is a no-op.
    let s = queue.cancelTask(&running).await.unwrap();
    assert_eq!(s["status"]["runs"].as_array().unwrap().len(), 1);

    let unscheduled = slug();
    let after = json!({"dependencies": [unscheduled]});
    create(&queue, &unscheduled, "prov/cancel", after).await;
    let s = queue.cancelTask(&unscheduled).await.unwrap();
    assert_eq!(s["status"]["runs"][0]["reasonCreated"], "exception");
    assert_eq!(s["status"]["runs"][0]["reasonResolved"], "canceled");
}

async fn claim_task_is_idempotent_per_worker(q: &TestQueue) {
    let queue = root(q);
    let id = new_task(&queue, "prov/ct", json!({})).await;
    let body = json!({"workerGroup": "bridge", "workerId": "bbb"});
    let first = queue.claimTask(&id, "0", &body).await.unwrap();
    assert_eq!(first["status"]["state"], "running");
    let second = queue.claimTask(&id, "0", &body).await.unwrap();
    assert_eq!(second["runId"], 0);
    assert_eq!(second["takenUntil"], first["takenUntil"]);
    let e = queue
        .claimTask(&id, "0", &json!({"workerGroup": "other", "workerId": "x"}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 409);
    // Nothing is left to claimWork.
    let counts = queue.taskQueueCounts("prov/ct").await.unwrap();
    assert_eq!(counts["pendingTasks"], 0);
    assert_eq!(counts["claimedTasks"], 1);
}

async fn priority_then_fifo(q: &TestQueue) {
    let queue = root(q);
    let mut ids = vec![];
    for p in ["low", "high", "low", "highest"] {
        let id = new_task(&queue, "prov/prio", json!({"priority": p})).await;
        ids.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let claimed = claim_work(&queue, "prov/prio", "w", 4).await;
    let got: Vec<&str> = claimed
        .iter()
        .map(|t| t["status"]["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 4);
    // Order of the claim list is not part of the contract; which runs come first is.
    let r1 = queue
        .listPendingTasks("prov/prio", None, None)
        .await
        .unwrap();
    assert_eq!(r1["tasks"].as_array().unwrap().len(), 0);
    let mut ids2 = vec![];
    for p in ["low", "high", "low", "highest"] {
        let id = new_task(&queue, "prov/prio2", json!({"priority": p})).await;
        ids2.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut order = vec![];
    for _ in 0..4 {
        let c = claim_one(&queue, "prov/prio2", "w").await;
        order.push(c["status"]["taskId"].as_str().unwrap().to_string());
    }
    assert_eq!(
        order,
        [
            ids2[3].clone(),
            ids2[1].clone(),
            ids2[0].clone(),
            ids2[2].clone()
        ]
    );
}

async fn rerun_is_capped_at_fifty_runs(q: &TestQueue) {
    let queue = root(q);
    let id = new_task(&queue, "prov/cap", json!({"retries": 0})).await;
    for run in 0..50 {
        let claim = claim_one(&queue, "prov/cap", "w").await;
        assert_eq!(claim["runId"], run);
        with_creds(q, task_creds(&claim))
            .reportFailed(&id, &run.to_string())
            .await
            .unwrap();
        if run < 49 {
            let s = queue.rerunTask(&id).await.unwrap();
            assert_eq!(
                s["status"]["runs"].as_array().unwrap().len() as i64,
                run + 2
            );
        }
    }
    let e = queue.rerunTask(&id).await.unwrap_err();
    assert_eq!(status_of(&e), 409);
    assert!(
        text_of(&e).contains("Maximum number of runs"),
        "{}",
        text_of(&e)
    );
}

on_both_backends!(bbb_queue::testing::TestQueue::on; rerun_is_capped_at_fifty_runs);
