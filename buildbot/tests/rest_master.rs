//! The REST adapter against a real Buildbot 4.3 master (one per test, from
//! `buildbot/test-master/master.cfg`, with bbb's reporter plugin), on real
//! MariaDB and RabbitMQ.

mod common;

use std::time::Duration;

use bbb_buildbot::testing::{BuildbotMaster, BuildbotMasterOptions};
use bbb_buildbot::{
    BuildId, BuildRequestId, BuildResult, CancelOutcome, EventSource, LegacyEvent,
    LegacyEventStream, LegacyMaster, RequestState, RestMaster, StopOutcome, StopTarget,
};
use common::{assert_completed, assert_unknown_builder_refused, init_tracing, spec, wait_for};
use serde_json::{Value, json};

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

/// Where the adapter of a [`Setup`] reads build events from.
#[derive(Clone, Copy, PartialEq)]
enum Sources {
    /// The reporter's messages only (no REST polling).
    Reporter,
    /// The reporter's messages and REST polling.
    Both,
    /// REST polling only: no reporter on the master, no bus in the adapter.
    Polling,
}

/// A master, an adapter on it and the adapter's event stream.
struct Setup {
    master: BuildbotMaster,
    adapter: RestMaster,
    stream: LegacyEventStream,
}

impl Setup {
    async fn start(sources: Sources) -> Setup {
        let master = master(sources != Sources::Polling).await;
        let mut config = master.rest_config();
        if sources == Sources::Reporter {
            config.poll = None;
        }
        if sources != Sources::Polling {
            config.pulse = Some(master.pulse_options().await.expect("connect to the vhost"));
        }
        let adapter = RestMaster::new(config).expect("adapter");
        let stream = adapter.events().await.expect("start the event sources");
        Setup {
            master,
            adapter,
            stream,
        }
    }

    /// Starts a master and an adapter, and submits a request for `task_id`
    /// on `builder` with extra `properties`.
    async fn submitted(
        sources: Sources,
        task_id: &str,
        builder: &str,
        properties: Value,
    ) -> (Setup, BuildRequestId) {
        let setup = Setup::start(sources).await;
        let brid = setup.submit(task_id, builder, properties).await;
        (setup, brid)
    }

    /// Submits a request for `task_id` on `builder` with extra `properties`.
    async fn submit(&self, task_id: &str, builder: &str, properties: Value) -> BuildRequestId {
        self.adapter
            .submit(&scripted(task_id, builder, properties))
            .await
            .unwrap()
    }

    /// The first event from now on that `matches`.
    async fn event(&mut self, matches: impl FnMut(&LegacyEvent) -> bool) -> LegacyEvent {
        wait_for(&mut self.stream, WAIT, matches).await.0
    }

    /// The start of a build of `brid`.
    async fn started(&mut self, brid: BuildRequestId) -> LegacyEvent {
        self.event(move |event| matches!(event, LegacyEvent::BuildStarted { build_request_ids, .. } if build_request_ids.contains(&brid)))
            .await
    }

    /// The end of a build of `brid`.
    async fn finished(&mut self, brid: BuildRequestId) -> LegacyEvent {
        self.event(move |event| matches!(event, LegacyEvent::BuildFinished { build_request_ids, .. } if build_request_ids.contains(&brid)))
            .await
    }

    /// The completion of `brid`.
    async fn completed(&mut self, brid: BuildRequestId) -> LegacyEvent {
        self.event(move |event| matches!(event, LegacyEvent::RequestCompleted { build_request_id, .. } if *build_request_id == brid))
            .await
    }

    /// Waits for the end of a build of `brid` and checks its results.
    async fn expect_finished(&mut self, brid: BuildRequestId, expected: BuildResult) {
        let finished = self.finished(brid).await;
        assert!(
            matches!(finished, LegacyEvent::BuildFinished { results, .. } if results == expected),
            "{finished:?}"
        );
    }

    /// Waits for the completion of `brid` and checks its results and
    /// whether a build had claimed it.
    async fn expect_completed(
        &mut self,
        brid: BuildRequestId,
        expected: BuildResult,
        claimed: bool,
    ) {
        assert_completed(&self.completed(brid).await, expected, claimed);
    }

    /// Checks that the request completed SUCCESS after `builds` builds.
    async fn expect_success_after(&self, brid: BuildRequestId, builds: usize) {
        let state = self.state(brid).await;
        assert!(
            matches!(&state, RequestState::Complete { results: BuildResult::Success, builds: b, .. } if b.len() == builds),
            "{state:?}"
        );
    }

    /// The request's state on the master.
    async fn state(&self, brid: BuildRequestId) -> RequestState {
        self.adapter.request_state(brid).await.unwrap()
    }

    async fn stop(self) {
        drop(self.stream);
        self.master.stop().await.unwrap();
    }
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

/// GETs a JSON document from the master's REST API.
async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Checks that the state is complete with `expected` results.
fn assert_complete(state: &RequestState, expected: BuildResult) {
    assert!(
        matches!(state, RequestState::Complete { results, .. } if *results == expected),
        "{state:?}"
    );
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
    assert_unknown_builder_refused(&adapter, "taskUnknownBuilder", "bbb-solaris").await;
    master.stop().await.unwrap();
}

#[tokio::test]
async fn successful_build_is_reported_by_the_reporter() {
    let mut setup = Setup::start(Sources::Reporter).await;

    let mut spec = scripted(
        "taskSuccess1",
        "bbb-linux",
        json!({"bb_sleep": 1, "count": 3}),
    );
    spec.priority = 2;
    let brid = setup.adapter.submit(&spec).await.unwrap();

    // The request carries the priority, the buildset the exact reason and
    // the source stamp.
    let api_url = &setup.master.api_url;
    let request = get_json(format!("{api_url}/buildrequests/{}", brid.0)).await;
    let request = &request["buildrequests"][0];
    assert_eq!(request["priority"], json!(2));
    let buildset = get_json(format!("{api_url}/buildsets/{}", request["buildsetid"])).await;
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

    let LegacyEvent::BuildStarted {
        builder,
        task_id,
        build_ids,
        master: master_name,
        source,
        ..
    } = setup.started(brid).await
    else {
        unreachable!()
    };
    assert_eq!(builder, "bbb-linux");
    assert_eq!(task_id.as_deref(), Some("taskSuccess1"));
    assert_eq!(build_ids.len(), 1);
    assert!(master_name.is_some());
    assert_eq!(source, EventSource::Pulse);

    let LegacyEvent::BuildFinished {
        results,
        properties,
        task_id,
        ..
    } = setup.finished(brid).await
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
    // The build's log, every step's output read from the data API, for the
    // bridge's public/logs/live_backing.log (the same text when asked again).
    let log = setup
        .adapter
        .fetch_build_log(Some(build_ids[0]), None)
        .await
        .unwrap()
        .expect("the build's log");
    assert!(log.starts_with("builder: bbb-linux\n"), "{log}");
    assert!(log.contains("results: success (0)\n"), "{log}");
    assert!(log.contains("revision: abcdef0123456789\n"), "{log}");
    assert!(
        log.contains("the build of task taskSuccess1: sleep 1 s, then exit 0\n"),
        "{log}"
    );
    assert!(
        log.contains("========= Finished scripted (results: 0,"),
        "{log}"
    );
    assert_eq!(
        setup
            .adapter
            .fetch_build_log(Some(build_ids[0]), None)
            .await
            .unwrap()
            .as_deref(),
        Some(log.as_str())
    );
    assert_eq!(
        setup
            .adapter
            .fetch_build_log(Some(BuildId(999_999)), None)
            .await
            .unwrap(),
        None
    );

    let completed = setup.completed(brid).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Success,
            claimed: true,
            source: EventSource::Pulse,
            ..
        }
    ));
    setup.expect_success_after(brid, 1).await;
    setup.stop().await;
}

#[tokio::test]
async fn failed_build_is_reported() {
    let mut setup = Setup::start(Sources::Both).await;

    let mut spec = scripted("taskFailure1", "bbb-mac", json!({"bb_exit": 2}));
    spec.priority = -3;
    let brid = setup.adapter.submit(&spec).await.unwrap();
    let request = get_json(format!(
        "{}/buildrequests/{}?field=priority",
        setup.master.api_url, brid.0
    ))
    .await;
    assert_eq!(request["buildrequests"][0]["priority"], json!(-3));
    setup.expect_finished(brid, BuildResult::Failure).await;
    setup
        .expect_completed(brid, BuildResult::Failure, true)
        .await;
    assert_complete(&setup.state(brid).await, BuildResult::Failure);
    setup.stop().await;
}

#[tokio::test]
async fn request_state_goes_pending_running_complete_and_requests_are_found() {
    let mut setup = Setup::start(Sources::Both).await;
    let adapter = &setup.adapter;

    // No worker: the request waits.
    setup.master.stop_worker(0).await.unwrap();
    let mut first = scripted("taskStates1", "bbb-win", json!({"bb_sleep": 8}));
    first.submitted_at = 1_700_000_100;
    let brid = adapter.submit(&first).await.unwrap();
    let state = adapter.request_state(brid).await.unwrap();
    assert_eq!(state, RequestState::Pending { builds: Vec::new() });

    // A rerun of the same task, and another task.
    let mut rerun = scripted("taskStates1", "bbb-offline", json!({}));
    rerun.submitted_at = 1_700_000_200;
    let rerun_brid = adapter.submit(&rerun).await.unwrap();
    setup.submit("taskStates2", "bbb-offline", json!({})).await;
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

    setup.master.start_worker(0).await.unwrap();
    setup.started(brid).await;
    let state = setup.state(brid).await;
    assert!(
        matches!(&state, RequestState::Running { master: Some(_), builds, .. } if builds.len() == 1 && builds[0].finish_time.is_none()),
        "{state:?}"
    );
    setup.completed(brid).await;
    let state = setup.state(brid).await;
    assert!(
        matches!(&state, RequestState::Complete { results: BuildResult::Success, builds, .. } if builds[0].finish_time.is_some()),
        "{state:?}"
    );
    let found = setup
        .adapter
        .find_requests_for_task("taskStates1")
        .await
        .unwrap();
    assert!(found[0].complete);
    assert_eq!(
        setup.state(BuildRequestId(999_999)).await,
        RequestState::Unknown
    );
    setup.stop().await;
}

#[tokio::test]
async fn pending_requests_are_cancelled_by_bbb_and_on_the_master() {
    // bbb-offline's worker never connects: its requests stay pending.
    let (mut setup, brid) =
        Setup::submitted(Sources::Both, "taskCancel1", "bbb-offline", json!({})).await;
    assert_eq!(
        setup.state(brid).await,
        RequestState::Pending { builds: Vec::new() }
    );
    assert_eq!(
        setup.adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let state = setup.state(brid).await;
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
    setup
        .expect_completed(brid, BuildResult::Cancelled, false)
        .await;
    assert_eq!(
        setup.adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::AlreadyComplete
    );
    assert_eq!(
        setup
            .adapter
            .cancel_request(BuildRequestId(999_999))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );

    // Cancelled by someone on the Buildbot side (the web UI's call).
    let other = setup.submit("taskCancel2", "bbb-offline", json!({})).await;
    let response = reqwest::Client::new()
        .post(format!("{}/buildrequests/{}", setup.master.api_url, other.0))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "cancel", "params": {"reason": "by hand"}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    setup
        .expect_completed(other, BuildResult::Cancelled, false)
        .await;
    setup.stop().await;
}

#[tokio::test]
async fn running_build_is_not_cancelled_but_stopped() {
    let sleep = json!({"bb_sleep": 600});
    let (mut setup, brid) = Setup::submitted(Sources::Both, "taskStop1", "bbb-linux", sleep).await;
    let LegacyEvent::BuildStarted { build_ids, .. } = setup.started(brid).await else {
        unreachable!()
    };

    // The guard: a claimed request is left alone.
    assert_eq!(
        setup.adapter.cancel_request(brid).await.unwrap(),
        CancelOutcome::AlreadyClaimed
    );
    assert!(matches!(
        setup.state(brid).await,
        RequestState::Running { .. }
    ));

    assert_eq!(
        setup
            .adapter
            .stop_build(StopTarget::Request(brid))
            .await
            .unwrap(),
        StopOutcome::Requested(build_ids.clone())
    );
    setup.expect_finished(brid, BuildResult::Cancelled).await;
    setup
        .expect_completed(brid, BuildResult::Cancelled, true)
        .await;
    let state = wait_state(&setup.adapter, brid, |s| {
        matches!(s, RequestState::Complete { .. })
    })
    .await;
    assert_complete(&state, BuildResult::Cancelled);
    assert_eq!(
        setup
            .adapter
            .stop_build(StopTarget::Build(build_ids[0]))
            .await
            .unwrap(),
        StopOutcome::NotRunning
    );
    setup.stop().await;
}

#[tokio::test]
async fn killed_worker_gives_retry_and_the_request_runs_again() {
    // Long on its first attempt only.
    let sleep_first = json!({"bb_sleep_first": 600});
    let (mut setup, brid) =
        Setup::submitted(Sources::Both, "taskRetry1", "bbb-linux", sleep_first).await;
    let LegacyEvent::BuildStarted {
        build_number: first_number,
        ..
    } = setup.started(brid).await
    else {
        unreachable!()
    };

    // Kill it once the step is in its long first-attempt sleep.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !setup.master.first_attempt_started(0, "taskRetry1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never reached its step"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    setup.master.kill_worker(0).await.unwrap();

    let finished = setup.finished(brid).await;
    assert!(
        matches!(finished, LegacyEvent::BuildFinished { results: BuildResult::Retry, build_number, .. } if build_number == first_number),
        "{finished:?}"
    );
    setup
        .event(|event| {
            matches!(event, LegacyEvent::RequestRequeued { build_request_id, .. } if *build_request_id == brid)
        })
        .await;
    let LegacyEvent::BuildStarted {
        build_number: second_number,
        ..
    } = setup
        .event(|event| {
            matches!(event, LegacyEvent::BuildStarted { build_request_ids, build_number, .. }
                if build_request_ids.contains(&brid) && *build_number != first_number)
        })
        .await
    else {
        unreachable!()
    };
    let finished = setup
        .event(|event| {
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
    setup
        .expect_completed(brid, BuildResult::Success, true)
        .await;
    setup.expect_success_after(brid, 2).await;
    setup.stop().await;
}

#[tokio::test]
async fn rest_polling_reports_everything_without_the_bus() {
    // No reporter on the master, no bus in the adapter: polling only.
    let sleep = json!({"bb_sleep": 1});
    let (mut setup, brid) = Setup::submitted(Sources::Polling, "taskPoll1", "bbb-win", sleep).await;
    let started = setup.started(brid).await;
    assert!(
        matches!(&started, LegacyEvent::BuildStarted { task_id: Some(t), source: EventSource::RestPoll, master: Some(_), .. } if t == "taskPoll1"),
        "{started:?}"
    );
    let finished = setup.finished(brid).await;
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
    assert_eq!(
        setup.completed(brid).await,
        LegacyEvent::RequestCompleted {
            build_request_id: brid,
            results: BuildResult::Success,
            claimed: true,
            source: EventSource::RestPoll,
        }
    );

    let pending = setup.submit("taskPoll2", "bbb-offline", json!({})).await;
    assert_eq!(
        setup.adapter.cancel_request(pending).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        setup.completed(pending).await,
        LegacyEvent::RequestCompleted {
            build_request_id: pending,
            results: BuildResult::Cancelled,
            claimed: false,
            source: EventSource::RestPoll,
        }
    );
    setup.stop().await;
}
