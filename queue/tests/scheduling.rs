//! Dependencies, deadlines, claim expiry and task groups, on SQLite and PostgreSQL.

mod common;

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::on_both_backends;
use common::*;
use serde_json::json;

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    dependencies_all_completed,
    dependencies_all_resolved_and_late_satisfaction,
    dependency_validation,
    self_dependency_waits_for_schedule,
    deadline_resolves_unscheduled_pending_and_running,
    seal_and_cancel_task_group,
    list_task_group_pages,
    claim_work_wakes_on_new_work,
);

async fn dependencies_all_completed(q: &TestQueue) {
    let queue = root(q);
    let (a, b, c) = (slug(), slug(), slug());
    create(&queue, &a, "prov/deps", json!({})).await;
    create(&queue, &b, "prov/deps", json!({})).await;
    let s = create(&queue, &c, "prov/deps", json!({"dependencies": [a, b]})).await;
    assert_eq!(s["status"]["state"], "unscheduled");
    let deps = queue.listDependentTasks(&a, None, None).await.unwrap();
    assert_eq!(deps["tasks"][0]["status"]["taskId"], c.as_str());

    let mut claims = claim_work(&queue, "prov/deps", "w", 5).await;
    assert_eq!(claims.len(), 2, "only the two roots are pending");
    claims.sort_by_key(|c| c["status"]["taskId"] != a.as_str());
    for claim in &claims {
        let id = claim["status"]["taskId"].as_str().unwrap();
        with_creds(q, task_creds(claim))
            .reportCompleted(id, "0")
            .await
            .unwrap();
        if id == a {
            // One of two dependencies done: still blocked.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert_eq!(state(&queue, &c).await, "unscheduled");
        }
    }
    let s = wait_state(&queue, &c, "pending").await;
    assert_eq!(s["status"]["runs"][0]["reasonCreated"], "scheduled");
}

async fn dependencies_all_resolved_and_late_satisfaction(q: &TestQueue) {
    let queue = root(q);
    let (a, resolved, completed) = (slug(), slug(), slug());
    create(&queue, &a, "prov/dep2", json!({})).await;
    create(
        &queue,
        &resolved,
        "prov/dep2",
        json!({"dependencies": [a], "requires": "all-resolved"}),
    )
    .await;
    let after = json!({"dependencies": [a]});
    create(&queue, &completed, "prov/dep2", after).await;
    let claim = claim_one(&queue, "prov/dep2", "w").await;
    with_creds(q, task_creds(&claim))
        .reportFailed(&a, "0")
        .await
        .unwrap();
    wait_state(&queue, &resolved, "pending").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        state(&queue, &completed).await,
        "unscheduled",
        "all-completed stays blocked by a failure"
    );
    // Rerun the failed prerequisite; its completion unblocks the waiting dependent.
    queue.rerunTask(&a).await.unwrap();
    let mut claimed = None;
    for _ in 0..2 {
        let c = claim_one(&queue, "prov/dep2", "w").await;
        if c["status"]["taskId"] == a.as_str() {
            claimed = Some(c);
        } else {
            let id = c["status"]["taskId"].as_str().unwrap().to_string();
            with_creds(q, task_creds(&c))
                .reportCompleted(&id, "0")
                .await
                .unwrap();
        }
    }
    let c = claimed.expect("the rerun was claimed");
    assert_eq!(c["runId"], 1);
    with_creds(q, task_creds(&c))
        .reportCompleted(&a, "1")
        .await
        .unwrap();
    wait_state(&queue, &completed, "pending").await;
}

async fn dependency_validation(q: &TestQueue) {
    let queue = root(q);
    let missing = slug();
    let e = create_refused(&queue, "prov/dv", json!({"dependencies": [missing]})).await;
    assert_eq!(status_of(&e), 400);
    assert!(
        text_of(&e).contains("InputError") && text_of(&e).contains(&missing),
        "{}",
        text_of(&e)
    );
    // A dependency expiring before our deadline is refused.
    let short = slug();
    create(
        &queue,
        &short,
        "prov/dv",
        json!({"deadline": from_now(60), "expires": from_now(120)}),
    )
    .await;
    let e = create_refused(&queue, "prov/dv", json!({"dependencies": [short]})).await;
    assert_eq!(status_of(&e), 400);
    assert!(text_of(&e).contains("expire"), "{}", text_of(&e));
    // A failed create leaves nothing behind.
    let id = slug();
    assert!(
        queue
            .createTask(&id, &task_def("prov/dv", json!({"dependencies": [slug()]})))
            .await
            .is_err()
    );
    assert_eq!(status_of(&queue.status(&id).await.unwrap_err()), 404);
}

async fn self_dependency_waits_for_schedule(q: &TestQueue) {
    let queue = root(q);
    let id = slug();
    let s = create(&queue, &id, "prov/self", json!({"dependencies": [id]})).await;
    assert_eq!(s["status"]["state"], "unscheduled");
    let s = queue.scheduleTask(&id).await.unwrap();
    assert_eq!(s["status"]["state"], "pending");
    // Scheduling again is a no-op.
    let s = queue.scheduleTask(&id).await.unwrap();
    assert_eq!(s["status"]["runs"].as_array().unwrap().len(), 1);
}

async fn deadline_resolves_unscheduled_pending_and_running(q: &TestQueue) {
    let queue = root(q);
    let short = json!({"deadline": from_now(2)});
    let (unscheduled, pending, running) = (slug(), slug(), slug());
    let mut def = task_def("prov/dl", short.clone());
    def["dependencies"] = json!([unscheduled]);
    queue.createTask(&unscheduled, &def).await.unwrap();
    create(&queue, &running, "prov/dl", short.clone()).await;
    let claim = claim_one(&queue, "prov/dl", "w").await;
    assert_eq!(claim["status"]["taskId"], running.as_str());
    create(&queue, &pending, "prov/dl", short.clone()).await;
    for id in [&unscheduled, &pending, &running] {
        let s = wait_state(&queue, id, "exception").await;
        let runs = s["status"]["runs"].as_array().unwrap();
        assert_eq!(
            runs.last().unwrap()["reasonResolved"],
            "deadline-exceeded",
            "{id}"
        );
    }
    // After the deadline the task is immutable.
    let t = with_creds(q, task_creds(&claim));
    assert_eq!(
        status_of(&t.reclaimTask(&running, "0").await.unwrap_err()),
        409
    );
    assert_eq!(
        status_of(&queue.rerunTask(&running).await.unwrap_err()),
        409
    );
    assert_eq!(
        status_of(&queue.cancelTask(&running).await.unwrap_err()),
        409
    );
}

async fn seal_and_cancel_task_group(q: &TestQueue) {
    let queue = root(q);
    let group = slug();
    let ids: Vec<String> = (0..3).map(|_| slug()).collect();
    for id in &ids {
        queue
            .createTask(
                id,
                &task_def(
                    "prov/grp",
                    json!({"taskGroupId": group, "schedulerId": "sched"}),
                ),
            )
            .await
            .unwrap();
    }
    // The same group needs the same schedulerId.
    let e = create_refused(&queue, "prov/grp", json!({"taskGroupId": group})).await;
    assert_eq!(status_of(&e), 409);
    // cancelTaskGroup needs a sealed group.
    assert_eq!(
        status_of(&queue.cancelTaskGroup(&group).await.unwrap_err()),
        409
    );
    let g = queue.sealTaskGroup(&group).await.unwrap();
    assert_eq!(g["taskGroupId"], group.as_str());
    assert_eq!(g["schedulerId"], "sched");
    assert!(g["sealed"].is_string());
    let e = create_refused(
        &queue,
        "prov/grp",
        json!({"taskGroupId": group, "schedulerId": "sched"}),
    )
    .await;
    assert_eq!(status_of(&e), 409);
    // Replaying an existing task's creation is still fine.
    let claim = claim_one(&queue, "prov/grp", "w").await;
    let done = claim["status"]["taskId"].as_str().unwrap().to_string();
    with_creds(q, task_creds(&claim))
        .reportCompleted(&done, "0")
        .await
        .unwrap();
    let c = queue.cancelTaskGroup(&group).await.unwrap();
    assert_eq!(c["taskGroupSize"], 3);
    assert_eq!(c["cancelledCount"], 2);
    let cancelled: Vec<&str> = c["taskIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!cancelled.contains(&done.as_str()));
    for id in cancelled {
        assert_eq!(state(&queue, id).await, "exception");
    }
    let g = queue.getTaskGroup(&group).await.unwrap();
    assert_eq!(g["schedulerId"], "sched");
}

async fn list_task_group_pages(q: &TestQueue) {
    let queue = root(q);
    let group = slug();
    let mut ids: Vec<String> = (0..7).map(|_| slug()).collect();
    for id in &ids {
        queue
            .createTask(id, &task_def("prov/list", json!({"taskGroupId": group})))
            .await
            .unwrap();
    }
    ids.sort();
    let mut seen = vec![];
    let mut token: Option<String> = None;
    loop {
        let page = queue
            .listTaskGroup(&group, token.as_deref(), Some("3"))
            .await
            .unwrap();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 3);
        seen.extend(
            tasks
                .iter()
                .map(|t| t["status"]["taskId"].as_str().unwrap().to_string()),
        );
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

async fn claim_work_wakes_on_new_work(q: &TestQueue) {
    let queue = root(q);
    let waiter = {
        let queue = root(q);
        tokio::spawn(async move {
            queue
                .claimWork("prov/wake", &json!({"workerGroup": "g", "workerId": "w"}))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let id = new_task(&queue, "prov/wake", json!({})).await;
    // The call already waiting when the task appeared returns it (one that ran
    // out its 20 s would return no task); how fast is `bbb-bench queue`'s job.
    let r = waiter.await.unwrap();
    assert_eq!(r["tasks"][0]["status"]["taskId"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_expiry_retries_then_resolves() {
    for postgres in [false, true] {
        let q = TestQueue::with(TestOptions {
            postgres,
            claim_timeout_s: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
        let queue = root(&q);
        let id = new_task(&queue, "prov/exp", json!({"retries": 1})).await;
        let claim = claim_one(&queue, "prov/exp", "w").await;
        let s = wait_for("claim-expired retry", || async {
            let s = queue.status(&id).await.unwrap();
            (s["status"]["runs"].as_array().unwrap().len() == 2).then_some(s)
        })
        .await;
        assert_eq!(s["status"]["runs"][0]["reasonResolved"], "claim-expired");
        assert_eq!(s["status"]["runs"][1]["reasonCreated"], "retry");
        let t = with_creds(&q, task_creds(&claim));
        assert_eq!(
            status_of(&t.reportCompleted(&id, "0").await.unwrap_err()),
            409
        );
        claim_one(&queue, "prov/exp", "w").await;
        let s = wait_state(&queue, &id, "exception").await;
        assert_eq!(s["status"]["runs"][1]["reasonResolved"], "claim-expired");
        assert_eq!(
            s["status"]["runs"].as_array().unwrap().len(),
            2,
            "no retries left"
        );
        q.stop().await;
    }
}
