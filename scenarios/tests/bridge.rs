//! Bridged tasks through every path a build can take: the native queue, the
//! TC and Buildbot listeners, a 0.8 scheduler DB on MariaDB and the
//! legacy-master simulator.

mod common;

use std::time::Duration;

use bbb_buildbot::simulator::SimBuilder;
use bbb_buildbot::{BuildRequestId, CancelOutcome, LegacyMaster, RequestState, StopTarget};
use bbb_state::{Resolution, RowState};
use common::{Env, Options, payload};
use mysql_async::prelude::FromRow;
use serde_json::json;

fn slow_builder() -> SimBuilder {
    let mut b = SimBuilder::new("linux64-build");
    b.duration = Duration::from_secs(600);
    b
}

#[tokio::test]
async fn a_successful_build_completes_the_task_with_its_artifacts() {
    let env = Env::start(Options::default()).await;
    let task_id = env
        .create_task(payload("linux64-build", json!({"who": "me"})), json!({}))
        .await;
    let status = env.wait_run(&task_id, 0, "completed", None).await;
    let row = env
        .wait_row(&task_id, 0, "resolved", |r| r.state == RowState::Resolved)
        .await;
    assert_eq!(row.resolution, Some(Resolution::Completed));
    let requests = env.requests(&task_id).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        row.build_request_id,
        Some(requests[0].build_request_id.0 as i64)
    );
    // submitted_at is the run's scheduled time, not the task's created time.
    assert_eq!(
        requests[0].submitted_at,
        status.run(0).unwrap().scheduled / 1000
    );
    let props: serde_json::Value = serde_json::from_str(
        &env.artifact_text(&task_id, 0, "public/properties.json")
            .await,
    )
    .unwrap();
    assert_eq!(props["taskId"][0], json!(task_id));
    assert_eq!(props["who"][0], json!("me"));
    let reason: Vec<(String, String)> = env
        .sched_query(&format!(
            "SELECT reason, external_idstring FROM buildsets WHERE external_idstring = 'taskId:{task_id}'"
        ))
        .await
        .into_iter()
        .map(<(String, String)>::from_row)
        .collect();
    assert_eq!(
        reason,
        vec![(
            format!("Created by BBB for task {task_id}"),
            format!("taskId:{task_id}")
        )]
    );
    env.stop().await;
}

#[tokio::test]
async fn build_results_map_to_task_resolutions() {
    let env = Env::start(Options::default()).await;
    let cases = [
        ("FAILURE", "failed", None),
        ("WARNINGS", "failed", None),
        ("EXCEPTION", "exception", Some("internal-error")),
        ("SKIPPED", "exception", Some("resource-unavailable")),
    ];
    let mut ids = Vec::new();
    for (result, _, _) in cases {
        ids.push(
            env.create_task(
                payload("linux64-build", json!({"sim_result": result})),
                json!({}),
            )
            .await,
        );
    }
    for (task_id, (result, state, reason)) in ids.iter().zip(cases) {
        env.wait_run(task_id, 0, state, reason).await;
        let row = env
            .wait_row(task_id, 0, "resolved", |r| r.state == RowState::Resolved)
            .await;
        assert!(row.resolution.is_some(), "{result}: {row:?}");
        assert_eq!(env.requests(task_id).await.len(), 1, "{result}");
    }
    env.stop().await;
}

#[tokio::test]
async fn a_retried_build_continues_on_the_same_build_request_in_the_next_run() {
    let env = Env::start(Options::default()).await;
    let task_id = env
        .create_task(
            payload("linux64-build", json!({"sim_result": "RETRY,SUCCESS"})),
            json!({}),
        )
        .await;
    let status = env.wait_run(&task_id, 1, "completed", None).await;
    let run0 = status.run(0).unwrap();
    assert_eq!(run0.state, "exception");
    assert_eq!(run0.reason_resolved.as_deref(), Some("worker-shutdown"));
    let requests = env.requests(&task_id).await;
    assert_eq!(
        requests.len(),
        1,
        "a RETRY never makes a second request: {requests:?}"
    );
    let rows = env.state.rows_for_task(&task_id).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.build_request_id == Some(requests[0].build_request_id.0 as i64))
    );
    env.wait_row(&task_id, 1, "completed", |r| {
        r.resolution == Some(Resolution::Completed)
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn invalid_restricted_and_unknown_builders_are_refused_with_a_readable_log() {
    let env = Env::start(Options {
        builder_list: Some(vec!["linux64-build".into(), "release-build".into()]),
        restricted: vec!["release-.*".into()],
        ..Default::default()
    })
    .await;
    let no_product = env
        .create_task(
            json!({"buildername": "linux64-build", "properties": {}}),
            json!({}),
        )
        .await;
    let restricted = env
        .create_task(payload("release-build", json!({})), json!({}))
        .await;
    let unknown = env
        .create_task(payload("no-such-builder", json!({})), json!({}))
        .await;
    for (task_id, wanted) in [
        (&no_product, "product"),
        (&restricted, "buildbot-bridge:builder-name:release-build"),
        (&unknown, "does not exist"),
    ] {
        env.wait_run(task_id, 0, "exception", Some("malformed-payload"))
            .await;
        let log = env
            .artifact_text(task_id, 0, "public/logs/live_backing.log")
            .await;
        assert!(log.contains(wanted), "{log}");
        assert!(env.requests(task_id).await.is_empty());
        assert!(env.state.rows_for_task(task_id).await.unwrap().is_empty());
    }
    // With the scope, the restricted builder runs.
    let allowed = env
        .create_task(
            payload("release-build", json!({})),
            json!({"scopes": ["project:releng:buildbot-bridge:builder-name:release-*"]}),
        )
        .await;
    env.wait_row(&allowed, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    assert_eq!(env.requests(&allowed).await.len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn ignored_builders_are_left_alone_and_high_priority_is_kept() {
    let env = Env::start(Options {
        builders: vec![],
        ignored: vec!["ignored-.*".into()],
        restricted: vec!["ignored-.*".into()],
        ..Default::default()
    })
    .await;
    let ignored = env
        .create_task(payload("ignored-builder", json!({})), json!({}))
        .await;
    let high = env
        .create_task(
            payload("linux64-build", json!({})),
            json!({"priority": "high"}),
        )
        .await;
    let row = env
        .wait_row(&high, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    let priority: Vec<i64> = env
        .sched_query(&format!(
            "SELECT priority FROM buildrequests WHERE id = {}",
            row.build_request_id.unwrap()
        ))
        .await
        .into_iter()
        .map(i64::from_row)
        .collect();
    assert_eq!(priority, vec![1]);
    // The ignored task got no row, no request, no claim: still pending.
    assert!(env.state.rows_for_task(&ignored).await.unwrap().is_empty());
    assert!(env.requests(&ignored).await.is_empty());
    assert_eq!(env.status(&ignored).await.run(0).unwrap().state, "pending");
    assert!(
        env.bridge.metrics.get(
            "bbb_bridge_events_total",
            "type=\"task-pending\",outcome=\"ignored\""
        ) >= 1
    );
    env.stop().await;
}

#[tokio::test]
async fn cancelling_a_pending_task_cancels_its_build_request() {
    let env = Env::start(Options {
        builders: vec![],
        ..Default::default()
    })
    .await;
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    let row = env
        .wait_row(&task_id, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    env.client.cancelTask(&task_id).await.unwrap();
    env.wait_row(&task_id, 0, "resolved", |r| r.state == RowState::Resolved)
        .await;
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    assert!(matches!(
        env.master.request_state(brid).await.unwrap(),
        RequestState::Cancelled { .. }
    ));
    let status = env.status(&task_id).await;
    assert_eq!(
        status.run(0).unwrap().reason_resolved.as_deref(),
        Some("canceled")
    );
    env.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_stops_its_build() {
    let env = Env::start(Options {
        builders: vec![slow_builder()],
        ..Default::default()
    })
    .await;
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    env.wait_run(&task_id, 0, "running", None).await;
    let row = env
        .wait_row(&task_id, 0, "running", |r| r.state == RowState::Running)
        .await;
    assert!(row.taken_until.is_some());
    env.client.cancelTask(&task_id).await.unwrap();
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if let RequestState::Complete { results, .. } =
            env.master.request_state(brid).await.unwrap()
        {
            assert_eq!(results, bbb_buildbot::BuildResult::Cancelled);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "build not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = env
        .wait_row(&task_id, 0, "resolved", |r| r.state == RowState::Resolved)
        .await;
    assert_eq!(row.resolution, Some(Resolution::Canceled));
    let status = env.status(&task_id).await;
    assert_eq!(status.runs.len(), 1);
    assert_eq!(
        status.run(0).unwrap().reason_resolved.as_deref(),
        Some("canceled")
    );
    env.stop().await;
}

#[tokio::test]
async fn cancelling_on_the_buildbot_side_cancels_the_task() {
    let env = Env::start(Options {
        builders: vec![],
        ..Default::default()
    })
    .await;
    // A pending request cancelled by a user on the Buildbot side.
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    let row = env
        .wait_row(&task_id, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    assert_eq!(
        env.master.cancel_request(brid).await.unwrap(),
        CancelOutcome::Cancelled
    );
    env.wait_run(&task_id, 0, "exception", Some("canceled"))
        .await;
    env.wait_row(&task_id, 0, "resolved", |r| {
        r.resolution == Some(Resolution::Canceled)
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn stopping_a_running_build_on_the_buildbot_side_cancels_the_task() {
    let env = Env::start(Options {
        builders: vec![slow_builder()],
        ..Default::default()
    })
    .await;
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    let row = env
        .wait_row(&task_id, 0, "running", |r| r.state == RowState::Running)
        .await;
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    env.master
        .stop_build(StopTarget::Request(brid))
        .await
        .unwrap();
    env.wait_run(&task_id, 0, "exception", Some("canceled"))
        .await;
    env.wait_row(&task_id, 0, "resolved", |r| {
        r.resolution == Some(Resolution::Canceled)
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn a_deadline_before_the_build_starts_cancels_the_request() {
    let env = Env::start(Options {
        builders: vec![],
        ..Default::default()
    })
    .await;
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(3);
    let task_id = env
        .create_task(
            payload("linux64-build", json!({})),
            json!({"deadline": deadline.to_rfc3339()}),
        )
        .await;
    let row = env
        .wait_row(&task_id, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    env.wait_run(&task_id, 0, "exception", Some("deadline-exceeded"))
        .await;
    env.wait_row(&task_id, 0, "resolved", |r| r.state == RowState::Resolved)
        .await;
    let brid = BuildRequestId(row.build_request_id.unwrap() as u64);
    assert!(matches!(
        env.master.request_state(brid).await.unwrap(),
        RequestState::Cancelled { .. }
    ));
    env.stop().await;
}

#[tokio::test]
async fn duplicate_and_concurrent_deliveries_make_one_build_request() {
    let env = Env::start(Options {
        builders: vec![],
        listeners: false,
        ..Default::default()
    })
    .await;
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let bridge = env.bridge.clone();
        let task_id = task_id.clone();
        handles.push(tokio::spawn(async move {
            bridge.task_pending(&task_id, 0, None).await
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == "injected").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(env.requests(&task_id).await.len(), 1);
    // A late redelivery after resolution injects nothing either.
    env.bridge.task_pending(&task_id, 0, None).await.unwrap();
    assert_eq!(env.requests(&task_id).await.len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_rerun_while_the_request_still_waits_reuses_it_and_a_later_rerun_gets_a_new_one() {
    let env = Env::start(Options {
        builders: vec![],
        ..Default::default()
    })
    .await;
    let task_id = env
        .create_task(payload("linux64-build", json!({})), json!({}))
        .await;
    env.wait_row(&task_id, 0, "requested", |r| r.build_request_id.is_some())
        .await;
    // Resolve run 0 behind the bridge's back, as an operator would; its request still waits.
    env.bridge.queue.claim(&task_id, 0).await.unwrap();
    env.bridge.queue.report_failed(&task_id, 0).await.unwrap();
    env.client.rerunTask(&task_id).await.unwrap();
    let row1 = env
        .wait_row(&task_id, 1, "requested", |r| r.build_request_id.is_some())
        .await;
    let row0 = env.state.get(&task_id, 0).await.unwrap().unwrap();
    assert_eq!(row1.build_request_id, row0.build_request_id);
    assert_eq!(env.requests(&task_id).await.len(), 1);
    env.stop().await;
}
