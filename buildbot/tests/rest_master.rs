//! The REST adapter against a real Buildbot 4.3 master (one per test, from
//! `buildbot/test-master/master.cfg`, with bbb's reporter plugin), on real
//! MariaDB and RabbitMQ.

mod common;

use std::time::Duration;

use bbb_buildbot::testing::{BuildbotMaster, BuildbotMasterOptions};
use bbb_buildbot::{
    BuildRequestId, BuildResult, CancelOutcome, EventSource, LegacyError, LegacyEvent,
    LegacyEventStream, LegacyMaster, RequestState, RestMaster, StopOutcome, StopTarget,
};
use common::{init_tracing, spec, wait_for};
use serde_json::json;

/// Generous: a loaded two-core machine runs several masters at once.
const WAIT: Duration = Duration::from_secs(120);

async fn master(reporter: bool) -> BuildbotMaster {
    init_tracing();
    let master = BuildbotMaster::start(BuildbotMasterOptions {
        reporter,
        ..BuildbotMasterOptions::default()
    })
    .await
    .expect("start a Buildbot master");
    eprintln!("Buildbot master started in {:?}", master.startup);
    master
}

/// An adapter reading the reporter's messages only (no REST polling).
async fn pulse_adapter(master: &BuildbotMaster) -> RestMaster {
    let mut config = master.rest_config();
    config.poll = None;
    config.pulse = Some(master.pulse_options().await.expect("connect to the vhost"));
    RestMaster::new(config).expect("adapter")
}

/// An adapter with both sources.
async fn full_adapter(master: &BuildbotMaster) -> RestMaster {
    let mut config = master.rest_config();
    config.pulse = Some(master.pulse_options().await.expect("connect to the vhost"));
    RestMaster::new(config).expect("adapter")
}

fn scripted(
    task_id: &str,
    builder: &str,
    properties: serde_json::Value,
) -> bbb_buildbot::BuildRequestSpec {
    let mut spec = spec(task_id, builder);
    if let serde_json::Value::Object(map) = properties {
        spec.properties.extend(map);
    }
    spec
}

fn started_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::BuildStarted { build_request_ids, .. } if build_request_ids.contains(&brid))
}

fn finished_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::BuildFinished { build_request_ids, .. } if build_request_ids.contains(&brid))
}

fn completed_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::RequestCompleted { build_request_id, .. } if *build_request_id == brid)
}

async fn wait_state(
    adapter: &RestMaster,
    brid: BuildRequestId,
    mut done: impl FnMut(&RequestState) -> bool,
) -> RequestState {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = adapter.request_state(brid).await.expect("request_state");
        if done(&state) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request {brid} stayed {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(adapter: &RestMaster) -> LegacyEventStream {
    adapter.events().await.expect("start the event sources")
}

#[tokio::test]
async fn lists_the_masters_builders() {
    let master = master(false).await;
    let adapter = RestMaster::new(master.rest_config()).unwrap();
    let mut builders = adapter.builders().await.unwrap().expect("a builder list");
    builders.sort();
    assert_eq!(builders, ["bbb-linux", "bbb-mac", "bbb-offline", "bbb-win"]);
    assert!(adapter.accepts_builder("bbb-win").await.unwrap());
    assert!(!adapter.accepts_builder("bbb-solaris").await.unwrap());
    master.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_builder_is_refused_without_submitting() {
    let master = master(false).await;
    let adapter = RestMaster::new(master.rest_config()).unwrap();
    let error = adapter
        .submit(&spec("taskUnknownBuilder", "bbb-solaris"))
        .await
        .expect_err("an unknown builder is refused");
    assert!(matches!(error, LegacyError::UnknownBuilder(name) if name == "bbb-solaris"));
    assert!(
        adapter
            .find_requests_for_task("taskUnknownBuilder")
            .await
            .unwrap()
            .is_empty()
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn successful_build_is_reported_by_the_reporter() {
    let master = master(true).await;
    let adapter = pulse_adapter(&master).await;
    let mut stream = events(&adapter).await;

    let mut spec = scripted(
        "taskSuccess1",
        "bbb-linux",
        json!({"bb_sleep": 1, "count": 3}),
    );
    spec.priority = 2;
    let brid = adapter.submit(&spec).await.unwrap();

    // The request carries the priority, the buildset the exact reason and
    // the source stamp.
    let http = reqwest::Client::new();
    let request: serde_json::Value = http
        .get(format!("{}/buildrequests/{}", master.api_url, brid.0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request = &request["buildrequests"][0];
    assert_eq!(request["priority"], json!(2));
    let buildset: serde_json::Value = http
        .get(format!(
            "{}/buildsets/{}",
            master.api_url, request["buildsetid"]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let buildset = &buildset["buildsets"][0];
    assert_eq!(
        buildset["reason"],
        json!("Created by BBB for task taskSuccess1")
    );
    let stamp = &buildset["sourcestamps"][0];
    assert_eq!(stamp["branch"], json!("integration/mozilla-inbound"));
    assert_eq!(stamp["revision"], json!("abcdef0123456789"));
    assert_eq!(
        stamp["repository"],
        json!("https://hg.mozilla.org/integration/mozilla-inbound")
    );
    assert_eq!(stamp["project"], json!("mozilla-inbound"));

    let (started, _) = wait_for(&mut stream, WAIT, started_for(brid)).await;
    let LegacyEvent::BuildStarted {
        builder,
        task_id,
        build_ids,
        master: master_name,
        source,
        ..
    } = started
    else {
        unreachable!()
    };
    assert_eq!(builder, "bbb-linux");
    assert_eq!(task_id.as_deref(), Some("taskSuccess1"));
    assert_eq!(build_ids.len(), 1);
    assert!(master_name.is_some());
    assert_eq!(source, EventSource::Pulse);

    let (finished, _) = wait_for(&mut stream, WAIT, finished_for(brid)).await;
    let LegacyEvent::BuildFinished {
        results,
        properties,
        task_id,
        ..
    } = finished
    else {
        unreachable!()
    };
    assert_eq!(results, BuildResult::Success);
    assert_eq!(task_id.as_deref(), Some("taskSuccess1"));
    // Properties keep their JSON types; the reason is the one Treeherder reads.
    assert_eq!(properties["count"][0], json!(3));
    assert_eq!(properties["product"][0], json!("firefox"));
    assert_eq!(
        properties["reason"][0],
        json!("Created by BBB for task taskSuccess1")
    );
    assert_eq!(
        properties["branch"][0],
        json!("integration/mozilla-inbound")
    );
    assert_eq!(properties["revision"][0], json!("abcdef0123456789"));

    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Success,
            claimed: true,
            source: EventSource::Pulse,
            ..
        }
    ));
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(&state, RequestState::Complete { results: BuildResult::Success, builds, .. } if builds.len() == 1),
        "{state:?}"
    );
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn failed_build_is_reported() {
    let master = master(true).await;
    let adapter = full_adapter(&master).await;
    let mut stream = events(&adapter).await;

    let mut spec = scripted("taskFailure1", "bbb-mac", json!({"bb_exit": 2}));
    spec.priority = -3;
    let brid = adapter.submit(&spec).await.unwrap();
    let request: serde_json::Value = reqwest::get(format!(
        "{}/buildrequests/{}?field=priority",
        master.api_url, brid.0
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(request["buildrequests"][0]["priority"], json!(-3));
    let (finished, _) = wait_for(&mut stream, WAIT, finished_for(brid)).await;
    assert!(matches!(
        finished,
        LegacyEvent::BuildFinished {
            results: BuildResult::Failure,
            ..
        }
    ));
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Failure,
            claimed: true,
            ..
        }
    ));
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(
            state,
            RequestState::Complete {
                results: BuildResult::Failure,
                ..
            }
        ),
        "{state:?}"
    );
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn request_state_goes_pending_running_complete_and_requests_are_found() {
    let mut master = master(true).await;
    let adapter = full_adapter(&master).await;
    let mut stream = events(&adapter).await;

    // No worker: the request waits.
    master.stop_worker(0).await.unwrap();
    let mut first = scripted("taskStates1", "bbb-win", json!({"bb_sleep": 8}));
    first.submitted_at = 1_700_000_100;
    let brid = adapter.submit(&first).await.unwrap();
    let state = adapter.request_state(brid).await.unwrap();
    assert_eq!(state, RequestState::Pending { builds: Vec::new() });

    // A rerun of the same task, and another task.
    let mut rerun = scripted("taskStates1", "bbb-offline", json!({}));
    rerun.submitted_at = 1_700_000_200;
    let rerun_brid = adapter.submit(&rerun).await.unwrap();
    adapter
        .submit(&scripted("taskStates2", "bbb-offline", json!({})))
        .await
        .unwrap();
    let found = adapter.find_requests_for_task("taskStates1").await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].build_request_id, brid);
    assert_eq!(found[0].buildername, "bbb-win");
    assert_eq!(found[0].submitted_at, 1_700_000_100);
    assert!(!found[0].complete);
    assert_eq!(found[1].build_request_id, rerun_brid);
    assert_eq!(found[1].buildername, "bbb-offline");
    assert_eq!(found[1].submitted_at, 1_700_000_200);
    assert!(
        adapter
            .find_requests_for_task("taskStates3")
            .await
            .unwrap()
            .is_empty()
    );

    master.start_worker(0).await.unwrap();
    wait_for(&mut stream, WAIT, started_for(brid)).await;
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(&state, RequestState::Running { master: Some(_), builds, .. } if builds.len() == 1 && builds[0].finish_time.is_none()),
        "{state:?}"
    );
    wait_for(&mut stream, WAIT, completed_for(brid)).await;
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(&state, RequestState::Complete { results: BuildResult::Success, builds, .. } if builds[0].finish_time.is_some()),
        "{state:?}"
    );
    let found = adapter.find_requests_for_task("taskStates1").await.unwrap();
    assert!(found[0].complete);
    assert_eq!(
        adapter
            .request_state(BuildRequestId(999_999))
            .await
            .unwrap(),
        RequestState::Unknown
    );
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn pending_requests_are_cancelled_by_bbb_and_on_the_master() {
    let master = master(true).await;
    let adapter = full_adapter(&master).await;
    let mut stream = events(&adapter).await;

    // bbb-offline's worker never connects: its requests stay pending.
    let brid = adapter
        .submit(&scripted("taskCancel1", "bbb-offline", json!({})))
        .await
        .unwrap();
    assert_eq!(
        adapter.request_state(brid).await.unwrap(),
        RequestState::Pending { builds: Vec::new() }
    );
    assert_eq!(
        adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(
            state,
            RequestState::Cancelled {
                results: BuildResult::Cancelled,
                complete_at: Some(_)
            }
        ),
        "{state:?}"
    );
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Cancelled,
            claimed: false,
            ..
        }
    ));
    assert_eq!(
        adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::AlreadyComplete
    );
    assert_eq!(
        adapter
            .cancel_request(BuildRequestId(999_999))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );

    // Cancelled by someone on the Buildbot side (the web UI's call).
    let other = adapter
        .submit(&scripted("taskCancel2", "bbb-offline", json!({})))
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/buildrequests/{}", master.api_url, other.0))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "cancel", "params": {"reason": "by hand"}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(other)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Cancelled,
            claimed: false,
            ..
        }
    ));
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn running_build_is_not_cancelled_but_stopped() {
    let master = master(true).await;
    let adapter = full_adapter(&master).await;
    let mut stream = events(&adapter).await;

    let brid = adapter
        .submit(&scripted(
            "taskStop1",
            "bbb-linux",
            json!({"bb_sleep": 600}),
        ))
        .await
        .unwrap();
    let (started, _) = wait_for(&mut stream, WAIT, started_for(brid)).await;
    let LegacyEvent::BuildStarted { build_ids, .. } = started else {
        unreachable!()
    };

    // The guard: a claimed request is left alone.
    assert_eq!(
        adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::AlreadyClaimed
    );
    assert!(matches!(
        adapter.request_state(brid).await.unwrap(),
        RequestState::Running { .. }
    ));

    assert_eq!(
        adapter.stop_build(StopTarget::Request(brid)).await.unwrap(),
        StopOutcome::Requested(build_ids.clone())
    );
    let (finished, _) = wait_for(&mut stream, WAIT, finished_for(brid)).await;
    assert!(matches!(
        finished,
        LegacyEvent::BuildFinished {
            results: BuildResult::Cancelled,
            ..
        }
    ));
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Cancelled,
            claimed: true,
            ..
        }
    ));
    let state = wait_state(&adapter, brid, |s| {
        matches!(s, RequestState::Complete { .. })
    })
    .await;
    assert!(
        matches!(
            state,
            RequestState::Complete {
                results: BuildResult::Cancelled,
                ..
            }
        ),
        "{state:?}"
    );
    assert_eq!(
        adapter
            .stop_build(StopTarget::Build(build_ids[0]))
            .await
            .unwrap(),
        StopOutcome::NotRunning
    );
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn killed_worker_gives_retry_and_the_request_runs_again() {
    let mut master = master(true).await;
    let adapter = full_adapter(&master).await;
    let mut stream = events(&adapter).await;

    // Long on its first attempt only.
    let brid = adapter
        .submit(&scripted(
            "taskRetry1",
            "bbb-linux",
            json!({"bb_sleep_first": 600}),
        ))
        .await
        .unwrap();
    let (started, _) = wait_for(&mut stream, WAIT, started_for(brid)).await;
    let LegacyEvent::BuildStarted {
        build_number: first_number,
        ..
    } = started
    else {
        unreachable!()
    };

    // Kill it once the step is in its long first-attempt sleep.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !master.first_attempt_started(0, "taskRetry1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never reached its step"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    master.kill_worker(0).await.unwrap();

    let (finished, _) = wait_for(&mut stream, WAIT, finished_for(brid)).await;
    assert!(
        matches!(finished, LegacyEvent::BuildFinished { results: BuildResult::Retry, build_number, .. } if build_number == first_number),
        "{finished:?}"
    );
    wait_for(&mut stream, WAIT, |event| {
        matches!(event, LegacyEvent::RequestRequeued { build_request_id, .. } if *build_request_id == brid)
    })
    .await;
    let (restarted, _) = wait_for(&mut stream, WAIT, |event| {
        matches!(event, LegacyEvent::BuildStarted { build_request_ids, build_number, .. }
            if build_request_ids.contains(&brid) && *build_number != first_number)
    })
    .await;
    let LegacyEvent::BuildStarted {
        build_number: second_number,
        ..
    } = restarted
    else {
        unreachable!()
    };
    let (finished, _) = wait_for(&mut stream, WAIT, |event| {
        matches!(event, LegacyEvent::BuildFinished { build_request_ids, build_number, .. }
            if build_request_ids.contains(&brid) && *build_number == second_number)
    })
    .await;
    assert!(matches!(
        finished,
        LegacyEvent::BuildFinished {
            results: BuildResult::Success,
            ..
        }
    ));
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Success,
            claimed: true,
            ..
        }
    ));
    let state = adapter.request_state(brid).await.unwrap();
    assert!(
        matches!(&state, RequestState::Complete { results: BuildResult::Success, builds, .. } if builds.len() == 2),
        "{state:?}"
    );
    drop(stream);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn rest_polling_reports_everything_without_the_bus() {
    // No reporter on the master, no bus in the adapter: polling only.
    let master = master(false).await;
    let adapter = RestMaster::new(master.rest_config()).unwrap();
    let mut stream = events(&adapter).await;

    let brid = adapter
        .submit(&scripted("taskPoll1", "bbb-win", json!({"bb_sleep": 1})))
        .await
        .unwrap();
    let (started, _) = wait_for(&mut stream, WAIT, started_for(brid)).await;
    assert!(
        matches!(&started, LegacyEvent::BuildStarted { task_id: Some(t), source: EventSource::RestPoll, master: Some(_), .. } if t == "taskPoll1"),
        "{started:?}"
    );
    let (finished, _) = wait_for(&mut stream, WAIT, finished_for(brid)).await;
    assert!(
        matches!(
            &finished,
            LegacyEvent::BuildFinished {
                results: BuildResult::Success,
                source: EventSource::RestPoll,
                ..
            }
        ),
        "{finished:?}"
    );
    // A polled finished build carries all its properties, not only the few
    // the build lists fetch.
    let LegacyEvent::BuildFinished { properties, .. } = &finished else {
        unreachable!()
    };
    assert_eq!(
        properties["taskId"][0],
        json!("taskPoll1"),
        "{properties:?}"
    );
    assert_eq!(properties["bb_sleep"][0], json!(1), "{properties:?}");
    assert!(properties.contains_key("buildername"), "{properties:?}");
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(brid)).await;
    assert_eq!(
        completed,
        LegacyEvent::RequestCompleted {
            build_request_id: brid,
            results: BuildResult::Success,
            claimed: true,
            source: EventSource::RestPoll,
        }
    );

    let pending = adapter
        .submit(&scripted("taskPoll2", "bbb-offline", json!({})))
        .await
        .unwrap();
    assert_eq!(
        adapter.cancel_request(pending).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let (completed, _) = wait_for(&mut stream, WAIT, completed_for(pending)).await;
    assert_eq!(
        completed,
        LegacyEvent::RequestCompleted {
            build_request_id: pending,
            results: BuildResult::Cancelled,
            claimed: false,
            source: EventSource::RestPoll,
        }
    );
    drop(stream);
    master.stop().await.unwrap();
}
