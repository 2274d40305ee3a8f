//! The in-memory sandbox master: every `LegacyMaster` method and the
//! extras `bbb up` and the scenarios use.

use std::time::Duration;

use bbb_buildbot::sandbox::{
    SandboxBuilder, SandboxConfig, SandboxMaster, SandboxStats, StoredRequest,
};
use bbb_buildbot::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, EventSource,
    LegacyError, LegacyEvent, LegacyEventStream, LegacyMaster, RequestState, SourceStamp,
    StopOutcome, StopTarget,
};
use bbb_clock::Clock;
use futures::StreamExt;
use serde_json::{Value, json};

/// How long to wait for an event before failing. Generous: it only bounds a
/// hang.
const WAIT: Duration = Duration::from_secs(60);

/// A build that only ends when stopped (an hour).
const FOREVER_MS: u64 = 3_600_000;

const NOW: i64 = 1_700_000_000;

fn spec(task_id: &str, builder: &str, properties: &[(&str, Value)]) -> BuildRequestSpec {
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        run_id: 0,
        buildername: builder.to_owned(),
        properties: properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
        sourcestamp: SourceStamp::default(),
        priority: 0,
        submitted_at: NOW,
    }
}

fn fast(name: &str) -> SandboxBuilder {
    SandboxBuilder::new(name).with_duration(Duration::from_millis(10))
}

fn config(builders: impl IntoIterator<Item = SandboxBuilder>) -> SandboxConfig {
    SandboxConfig {
        clock: Clock::stopped_at(NOW * 1000),
        ..SandboxConfig::with_builders(builders)
    }
}

/// The properties of a request whose build runs until stopped.
fn forever() -> [(&'static str, Value); 1] {
    [("sim_duration_ms", json!(FOREVER_MS))]
}

/// Submits a request for `task_id` on `builder` whose attempts end with
/// `results` in turn (its `sim_result` property).
async fn submit_scripted(
    master: &SandboxMaster,
    task_id: &str,
    builder: &str,
    results: Value,
) -> BuildRequestId {
    submit(master, task_id, builder, &[("sim_result", results)]).await
}

/// Checks that `brid` is pending with no build yet, and cancels it.
async fn cancel_pending(master: &SandboxMaster, brid: BuildRequestId) {
    assert_eq!(
        master.request_state(brid).await.unwrap(),
        RequestState::Pending { builds: vec![] }
    );
    assert_eq!(
        master.cancel_request(brid).await.unwrap(),
        CancelOutcome::Cancelled
    );
}

/// Starts a master on `config` and subscribes to its events.
async fn started(config: SandboxConfig) -> anyhow::Result<(SandboxMaster, LegacyEventStream)> {
    let master = SandboxMaster::start(config).await;
    let events = master.events().await?;
    Ok((master, events))
}

/// A master whose one builder, `one`, has one slot, taken by a build that
/// runs until stopped; with the blocking request.
async fn one_slot_taken() -> anyhow::Result<(SandboxMaster, LegacyEventStream, BuildRequestId)> {
    let (master, mut events) = started(config([fast("one").with_slots(1)])).await?;
    let blocker = block_slot(&master, &mut events, "one").await;
    Ok((master, events, blocker))
}

/// [`one_slot_taken`], and a request for `task_id` waiting for the slot:
/// the master, its events, the running and the pending request.
async fn one_waiting(
    task_id: &str,
) -> anyhow::Result<(
    SandboxMaster,
    LegacyEventStream,
    BuildRequestId,
    BuildRequestId,
)> {
    let (master, events, running) = one_slot_taken().await?;
    let pending = submit(&master, task_id, "one", &[]).await;
    Ok((master, events, running, pending))
}

/// Submits a request for `task_id` on `builder` with `properties`.
async fn submit(
    master: &SandboxMaster,
    task_id: &str,
    builder: &str,
    properties: &[(&str, Value)],
) -> BuildRequestId {
    master
        .submit(&spec(task_id, builder, properties))
        .await
        .expect("the request is accepted")
}

async fn next_event(events: &mut LegacyEventStream) -> LegacyEvent {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("no event came in time")
        .expect("the event stream ended")
}

/// Reads events up to and including the first that matches; returns them
/// all.
async fn until(
    events: &mut LegacyEventStream,
    mut done: impl FnMut(&LegacyEvent) -> bool,
) -> Vec<LegacyEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let last = done(&event);
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn is_completed(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::RequestCompleted { build_request_id, .. } if *build_request_id == brid)
}

fn is_started(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::BuildStarted { build_request_ids, .. } if build_request_ids.contains(&brid))
}

/// The events about `brid`, in order.
fn about(events: &[LegacyEvent], brid: BuildRequestId) -> Vec<LegacyEvent> {
    events
        .iter()
        .filter(|event| event.build_request_ids().contains(&brid))
        .cloned()
        .collect()
}

/// A short name per event: `started`, `finished:SUCCESS`, `requeued`,
/// `completed:SUCCESS` (`completed-unclaimed:...` when not claimed).
fn kinds(events: &[LegacyEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            LegacyEvent::BuildStarted { .. } => "started".to_owned(),
            LegacyEvent::BuildFinished { results, .. } => format!("finished:{results}"),
            LegacyEvent::RequestRequeued { .. } => "requeued".to_owned(),
            LegacyEvent::RequestCompleted {
                results, claimed, ..
            } => {
                if *claimed {
                    format!("completed:{results}")
                } else {
                    format!("completed-unclaimed:{results}")
                }
            }
        })
        .collect()
}

/// The [`kinds`] of the events about `brid` from now up to its completion.
async fn history(events: &mut LegacyEventStream, brid: BuildRequestId) -> Vec<String> {
    kinds(&about(&until(events, is_completed(brid)).await, brid))
}

/// The [`kinds`] of the events of a request whose attempts ended with
/// `results` in turn (every one but the last requeued).
fn attempts(results: &[&str]) -> Vec<String> {
    let mut kinds = Vec::new();
    for (index, result) in results.iter().enumerate() {
        kinds.push("started".to_owned());
        kinds.push(format!("finished:{result}"));
        if index + 1 < results.len() {
            kinds.push("requeued".to_owned());
        } else {
            kinds.push(format!("completed:{result}"));
        }
    }
    kinds
}

fn completed_result(events: &[LegacyEvent], brid: BuildRequestId) -> Option<BuildResult> {
    events.iter().find_map(|event| match event {
        LegacyEvent::RequestCompleted {
            build_request_id,
            results,
            ..
        } if *build_request_id == brid => Some(*results),
        _ => None,
    })
}

fn build_numbers(events: &[LegacyEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match event {
            LegacyEvent::BuildStarted { build_number, .. } => Some(*build_number),
            _ => None,
        })
        .collect()
}

fn started_ids(events: &[LegacyEvent]) -> Vec<BuildRequestId> {
    events
        .iter()
        .filter_map(|event| match event {
            LegacyEvent::BuildStarted {
                build_request_ids, ..
            } => build_request_ids.first().copied(),
            _ => None,
        })
        .collect()
}

/// Submits a build that runs until stopped on a one-slot builder and waits
/// until it started.
async fn block_slot(
    master: &SandboxMaster,
    events: &mut LegacyEventStream,
    builder: &str,
) -> BuildRequestId {
    let blocker = submit(master, "blocker", builder, &forever()).await;
    until(events, is_started(blocker)).await;
    blocker
}

#[tokio::test]
async fn a_request_runs_to_success() -> anyhow::Result<()> {
    let (master, mut events) = started(config([fast("linux.build")])).await?;
    let mut request = spec(
        "T-success",
        "linux.build",
        &[("product", json!("firefox")), ("taskId", json!("ignored"))],
    );
    request.sourcestamp = SourceStamp {
        branch: Some("https://hg.mozilla.org/integration/mozilla-inbound/".to_owned()),
        revision: Some("abcdef".to_owned()),
        repository: "https://hg.mozilla.org/integration/mozilla-inbound".to_owned(),
        project: "mozilla-inbound".to_owned(),
    };
    let brid = master.submit(&request).await?;
    assert_eq!(brid, BuildRequestId(1));

    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), attempts(&["SUCCESS"]));
    assert_eq!(
        seen[0],
        LegacyEvent::BuildStarted {
            build_request_ids: vec![brid],
            builder: "linux.build".to_owned(),
            build_number: 0,
            build_ids: vec![BuildId(1)],
            master: Some("sandbox-master".to_owned()),
            task_id: Some("T-success".to_owned()),
            source: EventSource::Pulse,
        }
    );
    let LegacyEvent::BuildFinished {
        build_request_ids,
        builder,
        build_number,
        build_ids,
        master: finished_on,
        task_id,
        properties,
        log_url,
        source,
        ..
    } = &seen[1]
    else {
        panic!("not a finish: {:?}", seen[1]);
    };
    assert_eq!(build_request_ids, &[brid]);
    assert_eq!(builder, "linux.build");
    assert_eq!(*build_number, 0);
    assert_eq!(build_ids, &[BuildId(1)]);
    assert_eq!(finished_on.as_deref(), Some("sandbox-master"));
    assert_eq!(task_id.as_deref(), Some("T-success"));
    assert_eq!(*source, EventSource::Pulse);
    let expected_log = "sandbox://sandbox-master/builders/linux.build/builds/0/log";
    assert_eq!(log_url.as_deref(), Some(expected_log));
    assert_eq!(properties["product"], json!(["firefox", "bbb"]));
    assert_eq!(properties["taskId"], json!(["T-success", "bbb"]));
    assert_eq!(
        properties["branch"],
        json!(["integration/mozilla-inbound", "Build"])
    );
    assert_eq!(properties["revision"], json!(["abcdef", "Build"]));
    assert_eq!(properties["buildername"], json!(["linux.build", "Builder"]));
    assert_eq!(properties["buildnumber"], json!([0, "Build"]));
    assert_eq!(properties["master"], json!(["sandbox-master", "Build"]));
    assert_eq!(properties["request_ids"], json!([[1], "postrun.py"]));
    assert_eq!(properties["log_url"], json!([expected_log, "postrun.py"]));
    // The master answers for a finished build's properties too (the bridge
    // asks when a finish reaches it without them); a build it never ran has none.
    assert_eq!(
        master.build_properties(BuildId(1)).await?.as_ref(),
        Some(properties)
    );
    assert_eq!(master.build_properties(BuildId(99)).await?, None);

    assert_eq!(
        master.request_state(brid).await?,
        RequestState::Complete {
            results: BuildResult::Success,
            complete_at: Some(NOW),
            builds: vec![BuildInfo {
                build_id: BuildId(1),
                number: 0,
                start_time: NOW,
                finish_time: Some(NOW),
            }],
        }
    );
    let found = master.find_requests_for_task("T-success").await?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].build_request_id, brid);
    assert_eq!(found[0].buildername, "linux.build");
    assert_eq!(found[0].submitted_at, NOW);
    assert!(found[0].complete);
    assert_eq!(
        master.stats(),
        SandboxStats {
            submitted: 1,
            started: 1,
            finished: 1,
            ..SandboxStats::default()
        }
    );
    assert!(master.running_builds().is_empty());
    let log = master.build_log("linux.build", 0).expect("a log");
    let at = "(at 2023-11-14 22:13:20.000000)";
    let step = |name: &str, text: &str| {
        format!(
            "\n========= Started {name} (results: 0, elapsed: 0 secs) {at} =========\n\
             {text}\
             ========= Finished {name} (results: 0, elapsed: 0 secs) {at} =========\n"
        )
    };
    let expected = [
        "builder: linux.build\nslave: linux.build-slave\nstarttime: 1700000000.0\n\
         results: success (0)\nbuildid: 1\nrevision: abcdef\n"
            .to_owned(),
        step("set props: master", "master: sandbox-master\n"),
        step(
            "set build properties",
            "product: firefox\ntaskId: T-success\n",
        ),
        step(
            "checkout",
            "repository: https://hg.mozilla.org/integration/mozilla-inbound\n\
             branch: integration/mozilla-inbound\nrevision: abcdef\nproject: mozilla-inbound\n",
        ),
        step(
            "run script",
            "the build of task T-success, build request 1, attempt 1\nthe script ends SUCCESS\n",
        ),
    ]
    .concat();
    assert_eq!(log, expected);
    // What the bridge asks, by build id: the same text, every time.
    for _ in 0..2 {
        assert_eq!(
            LegacyMaster::fetch_build_log(&master, Some(BuildId(1)), None).await?,
            Some(expected.clone())
        );
    }
    assert_eq!(
        LegacyMaster::fetch_build_log(&master, Some(BuildId(99)), None).await?,
        None
    );
    assert_eq!(
        LegacyMaster::fetch_build_log(&master, None, None).await?,
        None
    );
    assert_eq!(master.build_log("linux.build", 1), None);
    assert_eq!(master.build_log("nope", 0), None);
    assert_eq!(master.master_name(), "sandbox-master");
    master.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn failures_come_from_the_script_or_the_builder_defaults() -> anyhow::Result<()> {
    let (master, mut events) = started(config([
        fast("linux.build"),
        fast("broken").with_results([BuildResult::Failure]),
    ]))
    .await?;
    let cases = [
        ("broken", None, BuildResult::Failure),
        ("linux.build", Some(json!("FAILURE")), BuildResult::Failure),
        (
            "linux.build",
            Some(json!("exception")),
            BuildResult::Exception,
        ),
        ("linux.build", Some(json!(2)), BuildResult::Failure),
        ("linux.build", Some(json!("1")), BuildResult::Warnings),
        (
            "linux.build",
            Some(json!(["SKIPPED"])),
            BuildResult::Skipped,
        ),
        // An unreadable script falls back to the builder's default.
        ("linux.build", Some(json!("bogus")), BuildResult::Success),
        ("broken", Some(json!(null)), BuildResult::Failure),
        ("broken", Some(json!({"no": "list"})), BuildResult::Failure),
    ];
    for (index, (builder, script, expected)) in cases.into_iter().enumerate() {
        let mut properties = vec![("sim_duration_ms", json!("5"))];
        if let Some(script) = script.clone() {
            properties.push(("sim_result", script));
        }
        let brid = submit(&master, &format!("T-fail-{index}"), builder, &properties).await;
        let seen = until(&mut events, is_completed(brid)).await;
        assert_eq!(
            completed_result(&seen, brid),
            Some(expected),
            "{builder} {script:?}"
        );
        match master.request_state(brid).await? {
            RequestState::Complete {
                results, builds, ..
            } => {
                assert_eq!(results, expected);
                assert_eq!(builds.len(), 1);
            }
            other => panic!("{builder} {script:?}: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn retry_then_success_runs_the_same_request_again() -> anyhow::Result<()> {
    let (master, mut events) = started(config([
        fast("linux.build"),
        fast("flaky").with_results([BuildResult::Retry, BuildResult::Success]),
    ]))
    .await?;

    let brid = submit_scripted(&master, "T-retry", "linux.build", json!("RETRY,SUCCESS")).await;
    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), attempts(&["RETRY", "SUCCESS"]));
    let numbers = build_numbers(&seen);
    assert_eq!(numbers.len(), 2);
    assert!(numbers[1] > numbers[0], "{numbers:?}");
    assert!(
        seen.iter()
            .all(|event| event.build_request_ids() == vec![brid])
    );
    match master.request_state(brid).await? {
        RequestState::Complete {
            results, builds, ..
        } => {
            assert_eq!(results, BuildResult::Success);
            assert_eq!(builds.len(), 2);
            assert_ne!(builds[0].build_id, builds[1].build_id);
            assert!(builds.iter().all(|build| build.finish_time.is_some()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(master.stats().retried, 1);
    assert_eq!(master.stats().started, 2);

    // A JSON list, one result per attempt.
    let brid = submit_scripted(
        &master,
        "T-retry-list",
        "linux.build",
        json!(["RETRY", "RETRY", "WARNINGS"]),
    )
    .await;
    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), attempts(&["RETRY", "RETRY", "WARNINGS"]));

    // The builder's default list, the last result repeating.
    let brid = submit(&master, "T-flaky", "flaky", &[]).await;
    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), attempts(&["RETRY", "SUCCESS"]));
    assert_eq!(master.stats().retried, 4);
    Ok(())
}

#[tokio::test]
async fn one_slot_runs_highest_priority_then_oldest_then_lowest_brid() -> anyhow::Result<()> {
    let (master, mut events, blocker) = one_slot_taken().await?;

    let submit = async |task: &str, priority: i32, submitted_at: i64| {
        let mut request = spec(task, "one", &[]);
        request.priority = priority;
        request.submitted_at = submitted_at;
        master.submit(&request).await.unwrap()
    };
    let low = submit("low", -1, 100).await;
    let high_new = submit("high-new", 2, 300).await;
    let high_old = submit("high-old", 2, 200).await;
    let mid_a = submit("mid-a", 0, 100).await;
    let mid_b = submit("mid-b", 0, 100).await;
    assert!(matches!(
        master.request_state(low).await?,
        RequestState::Pending { builds } if builds.is_empty()
    ));

    assert_eq!(
        master.stop_build(StopTarget::Request(blocker)).await?,
        StopOutcome::Requested(vec![BuildId(1)])
    );
    let seen = until(&mut events, is_completed(low)).await;
    assert_eq!(
        completed_result(&seen, blocker),
        Some(BuildResult::Cancelled)
    );
    assert_eq!(started_ids(&seen), [high_old, high_new, mid_a, mid_b, low]);
    // One slot: each build started after the previous one finished.
    let mut running = 0;
    for event in &seen {
        match event {
            LegacyEvent::BuildStarted { .. } => running += 1,
            LegacyEvent::BuildFinished { .. } => running -= 1,
            _ => {}
        }
        assert!(running <= 1, "{seen:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_pending_request_is_cancelled_and_never_starts() -> anyhow::Result<()> {
    let (master, mut events, blocker, pending) = one_waiting("T-cancel").await?;
    cancel_pending(&master, pending).await;
    let seen = until(&mut events, is_completed(pending)).await;
    assert_eq!(
        about(&seen, pending),
        [LegacyEvent::RequestCompleted {
            build_request_id: pending,
            results: BuildResult::Cancelled,
            claimed: false,
            source: EventSource::Pulse,
        }]
    );
    assert_eq!(
        master.request_state(pending).await?,
        RequestState::Cancelled {
            results: BuildResult::Cancelled,
            complete_at: Some(NOW),
        }
    );
    assert!(master.find_requests_for_task("T-cancel").await?[0].complete);
    assert_eq!(
        master.cancel_request(pending).await?,
        CancelOutcome::AlreadyComplete
    );
    assert_eq!(
        master.cancel_request(BuildRequestId(999)).await?,
        CancelOutcome::NotFound
    );
    assert_eq!(master.stats().cancelled, 1);

    // Free the slot: the next request runs, the cancelled one never does.
    master.stop_build(StopTarget::Request(blocker)).await?;
    let next = submit(&master, "T-next", "one", &[]).await;
    let seen = until(&mut events, is_completed(next)).await;
    assert_eq!(started_ids(&seen), [next]);
    assert_eq!(completed_result(&seen, next), Some(BuildResult::Success));
    Ok(())
}

#[tokio::test]
async fn a_claimed_request_is_not_cancelled_but_can_be_stopped() -> anyhow::Result<()> {
    let (master, mut events) = started(config([fast("linux.build")])).await?;
    // Scripted to RETRY: a stopped build still ends CANCELLED, not requeued.
    let brid = submit(
        &master,
        "T-claimed",
        "linux.build",
        &[
            ("sim_duration_ms", json!(FOREVER_MS)),
            ("sim_result", json!("RETRY")),
        ],
    )
    .await;
    until(&mut events, is_started(brid)).await;

    assert_eq!(
        master.cancel_request(brid).await?,
        CancelOutcome::AlreadyClaimed
    );
    assert_eq!(
        master.request_state(brid).await?,
        RequestState::Running {
            master: Some("sandbox-master".to_owned()),
            claimed_at: NOW,
            builds: vec![BuildInfo {
                build_id: BuildId(1),
                number: 0,
                start_time: NOW,
                finish_time: None,
            }],
        }
    );
    let running = master.running_builds();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].build_request_id, brid);
    assert_eq!(running[0].builder, "linux.build");
    assert_eq!(running[0].build_number, 0);
    assert_eq!(running[0].build_id, BuildId(1));
    assert_eq!(running[0].start_time, NOW);
    let log = master.build_log("linux.build", 0).expect("a log");
    assert!(log.contains("results: running\n"), "{log}");
    assert!(!log.contains("========= Finished run script"), "{log}");
    // A running build's log is not given to the bridge.
    assert_eq!(
        LegacyMaster::fetch_build_log(&master, Some(BuildId(1)), None).await?,
        None
    );

    assert_eq!(
        master.stop_build(StopTarget::Request(brid)).await?,
        StopOutcome::Requested(vec![BuildId(1)])
    );
    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), ["finished:CANCELLED", "completed:CANCELLED"]);
    assert!(matches!(
        master.request_state(brid).await?,
        RequestState::Complete { results: BuildResult::Cancelled, builds, .. } if builds.len() == 1
    ));
    let stats = master.stats();
    assert_eq!((stats.stopped, stats.retried), (1, 0));
    assert!(master.running_builds().is_empty());
    Ok(())
}

#[tokio::test]
async fn stop_build_by_build_id_and_when_nothing_runs() -> anyhow::Result<()> {
    let (master, mut events, blocker, pending) = one_waiting("T-pending").await?;
    assert_eq!(
        master.stop_build(StopTarget::Request(pending)).await?,
        StopOutcome::NotRunning
    );
    assert_eq!(
        master.stop_build(StopTarget::Build(BuildId(4242))).await?,
        StopOutcome::NotRunning
    );
    assert_eq!(
        master
            .stop_build(StopTarget::Request(BuildRequestId(4242)))
            .await?,
        StopOutcome::NotRunning
    );

    let build_id = master.running_builds()[0].build_id;
    assert_eq!(
        master.stop_build(StopTarget::Build(build_id)).await?,
        StopOutcome::Requested(vec![build_id])
    );
    let seen = until(&mut events, is_completed(pending)).await;
    assert_eq!(
        kinds(&about(&seen, blocker)),
        ["finished:CANCELLED", "completed:CANCELLED"]
    );
    assert_eq!(completed_result(&seen, pending), Some(BuildResult::Success));
    assert_eq!(
        master.stop_build(StopTarget::Build(build_id)).await?,
        StopOutcome::NotRunning
    );
    assert_eq!(
        master.stop_build(StopTarget::Request(blocker)).await?,
        StopOutcome::NotRunning
    );
    Ok(())
}

#[tokio::test]
async fn a_build_is_ended_with_a_result_by_hand() -> anyhow::Result<()> {
    let (master, mut events) = started(config([fast("linux.build")])).await?;
    let brid = block_slot(&master, &mut events, "linux.build").await;
    assert_eq!(
        master.end_build(StopTarget::Build(BuildId(4242)), BuildResult::Success),
        StopOutcome::NotRunning
    );
    assert_eq!(
        master.end_build(StopTarget::Request(brid), BuildResult::Warnings),
        StopOutcome::Requested(vec![BuildId(1)])
    );
    let seen = about(&until(&mut events, is_completed(brid)).await, brid);
    assert_eq!(kinds(&seen), ["finished:WARNINGS", "completed:WARNINGS"]);
    assert_eq!(master.stats().stopped, 0);
    assert_eq!(
        master.end_build(StopTarget::Request(brid), BuildResult::Success),
        StopOutcome::NotRunning
    );

    // A stop wins over an end by hand.
    let stopped = block_slot(&master, &mut events, "linux.build").await;
    master.stop_build(StopTarget::Request(stopped)).await?;
    master.end_build(StopTarget::Request(stopped), BuildResult::Success);
    assert_eq!(
        completed_result(&until(&mut events, is_completed(stopped)).await, stopped),
        Some(BuildResult::Cancelled)
    );
    Ok(())
}

#[tokio::test]
async fn merged_requests_run_as_one_build() -> anyhow::Result<()> {
    let (master, mut events) = started(config([
        fast("offline").with_slots(0),
        fast("other").with_slots(0),
    ]))
    .await?;
    let a = submit(&master, "T-a", "offline", &forever()).await;
    let b = submit(&master, "T-b", "offline", &[]).await;
    let elsewhere = submit(&master, "T-c", "other", &[]).await;
    // Requests of two builders, or one that is not pending, are refused.
    assert!(master.start_merged_build(&[a, elsewhere]).is_err());
    assert!(
        master
            .start_merged_build(&[a, BuildRequestId(4242)])
            .is_err()
    );
    assert!(master.start_merged_build(&[]).is_err());
    assert!(matches!(
        master.request_state(a).await?,
        RequestState::Pending { .. }
    ));

    assert_eq!(master.start_merged_build(&[a, b])?, 0);
    let seen = until(&mut events, is_started(b)).await;
    let LegacyEvent::BuildStarted {
        build_request_ids,
        build_number,
        build_ids,
        task_id,
        ..
    } = seen.last().unwrap()
    else {
        panic!("not a start: {seen:?}");
    };
    assert_eq!(build_request_ids, &[a, b]);
    assert_eq!(*build_number, 0);
    assert_eq!(build_ids, &[BuildId(1), BuildId(2)]);
    assert_eq!(task_id.as_deref(), Some("T-a"));
    for (brid, id) in [(a, 1), (b, 2)] {
        assert!(matches!(
            master.request_state(brid).await?,
            RequestState::Running { builds, .. } if builds.len() == 1 && builds[0].number == 0 && builds[0].build_id == BuildId(id)
        ));
    }
    assert_eq!(master.running_builds().len(), 2);
    // A running request cannot be merged again.
    assert!(master.start_merged_build(&[b]).is_err());

    // Ending it through either request ends the one build, for both.
    assert_eq!(
        master.end_build(StopTarget::Request(b), BuildResult::Success),
        StopOutcome::Requested(vec![BuildId(2)])
    );
    let seen = until(&mut events, is_completed(b)).await;
    let finishes: Vec<&LegacyEvent> = seen
        .iter()
        .filter(|event| matches!(event, LegacyEvent::BuildFinished { .. }))
        .collect();
    assert_eq!(finishes.len(), 1, "{seen:?}");
    let LegacyEvent::BuildFinished {
        build_request_ids,
        build_ids,
        properties,
        ..
    } = finishes[0]
    else {
        unreachable!()
    };
    assert_eq!(build_request_ids, &[a, b]);
    assert_eq!(build_ids, &[BuildId(1), BuildId(2)]);
    assert_eq!(properties["request_ids"], json!([[1, 2], "postrun.py"]));
    assert_eq!(completed_result(&seen, a), Some(BuildResult::Success));
    assert_eq!(completed_result(&seen, b), Some(BuildResult::Success));
    for brid in [a, b] {
        assert!(matches!(
            master.request_state(brid).await?,
            RequestState::Complete {
                results: BuildResult::Success,
                ..
            }
        ));
    }
    assert_eq!(master.stats().started, 1);
    assert_eq!(master.stats().finished, 1);
    assert!(master.running_builds().is_empty());
    Ok(())
}

#[tokio::test]
async fn stored_requests_show_what_a_scheduler_db_holds() -> anyhow::Result<()> {
    let master = SandboxMaster::start(config([fast("offline").with_slots(0)])).await;
    let mut request = spec("T-stored", "offline", &[("product", json!("firefox"))]);
    request.priority = 1;
    request.sourcestamp.branch =
        Some("https://hg.mozilla.org/integration/mozilla-inbound/".to_owned());
    let brid = master.submit(&request).await?;
    assert_eq!(
        master.stored_request(brid),
        Some(StoredRequest {
            build_request_id: brid,
            buildset_id: 1,
            task_id: "T-stored".to_owned(),
            buildername: "offline".to_owned(),
            reason: "Created by BBB for task T-stored".to_owned(),
            priority: 1,
            submitted_at: NOW,
            properties: [
                ("product".to_owned(), json!("firefox")),
                ("taskId".to_owned(), json!("T-stored")),
            ]
            .into_iter()
            .collect(),
            sourcestamp: SourceStamp {
                branch: Some("integration/mozilla-inbound".to_owned()),
                ..SourceStamp::default()
            },
        })
    );
    assert_eq!(master.stored_request(BuildRequestId(4242)), None);
    Ok(())
}

#[tokio::test]
async fn cancelling_on_the_master_side() -> anyhow::Result<()> {
    let (master, mut events, running, pending) = one_waiting("T-user").await?;

    assert_eq!(master.cancel_from_master(pending), CancelOutcome::Cancelled);
    assert_eq!(
        history(&mut events, pending).await,
        ["completed-unclaimed:CANCELLED"]
    );
    assert!(matches!(
        master.request_state(pending).await?,
        RequestState::Cancelled {
            results: BuildResult::Cancelled,
            ..
        }
    ));

    assert_eq!(master.cancel_from_master(running), CancelOutcome::Requested);
    assert_eq!(
        history(&mut events, running).await,
        ["finished:CANCELLED", "completed:CANCELLED"]
    );
    assert_eq!(
        master.cancel_from_master(running),
        CancelOutcome::AlreadyComplete
    );
    assert_eq!(
        master.cancel_from_master(BuildRequestId(77)),
        CancelOutcome::NotFound
    );
    let stats = master.stats();
    assert_eq!((stats.cancelled, stats.stopped), (1, 1));
    Ok(())
}

#[tokio::test]
async fn unknown_builders_and_oversized_properties_are_refused() -> anyhow::Result<()> {
    let master = SandboxMaster::start(SandboxConfig::default()).await;
    assert_eq!(
        master.builders().await?,
        Some(vec![
            "linux.build".to_owned(),
            "linux.test".to_owned(),
            "win.build".to_owned(),
            "win.test".to_owned(),
        ])
    );
    assert!(master.accepts_builder("win.test").await?);
    assert!(!master.accepts_builder("mac.build").await?);

    match master.submit(&spec("T-unknown", "mac.build", &[])).await {
        Err(LegacyError::UnknownBuilder(name)) => assert_eq!(name, "mac.build"),
        other => panic!("{other:?}"),
    }
    let long = "x".repeat(2000);
    match master
        .submit(&spec("T-long", "linux.build", &[("big", json!(long))]))
        .await
    {
        Err(LegacyError::Invalid(reason)) => assert!(reason.contains("big"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match master
        .submit(&spec("T-long", "linux.build", &[(&long, json!(1))]))
        .await
    {
        Err(LegacyError::Invalid(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(master.find_requests_for_task("T-unknown").await?.is_empty());
    assert!(master.find_requests_for_task("T-long").await?.is_empty());
    assert_eq!(master.stats(), SandboxStats::default());
    assert_eq!(
        master.request_state(BuildRequestId(1)).await?,
        RequestState::Unknown
    );
    Ok(())
}

#[tokio::test]
async fn any_builder_is_accepted_when_configured() -> anyhow::Result<()> {
    let master = SandboxMaster::start(SandboxConfig {
        log_url_base: Some("http://localhost:8080/sandbox/".to_owned()),
        ..SandboxConfig::accepting_any_builder()
    })
    .await;
    assert_eq!(master.builders().await?, None);
    assert!(master.accepts_builder("Linux x86-64 try build").await?);
    let mut events = master.events().await?;
    let brid = submit(
        &master,
        "T-any",
        "Linux x86-64 try build",
        &[("sim_duration_ms", json!("5"))],
    )
    .await;
    let seen = until(&mut events, is_completed(brid)).await;
    let log_url = seen.iter().find_map(|event| match event {
        LegacyEvent::BuildFinished { log_url, .. } => log_url.clone(),
        _ => None,
    });
    assert_eq!(
        log_url.as_deref(),
        Some("http://localhost:8080/sandbox/builders/Linux%20x86-64%20try%20build/builds/0/log")
    );
    assert_eq!(completed_result(&seen, brid), Some(BuildResult::Success));
    assert!(master.build_log("Linux x86-64 try build", 0).is_some());
    Ok(())
}

#[tokio::test]
async fn every_subscriber_gets_every_event() -> anyhow::Result<()> {
    let master = SandboxMaster::start(config([fast("linux.build")])).await;
    let mut first = master.events().await?;
    let mut second = master.events().await?;
    let mut third = master.events().await?;
    let brid = submit_scripted(&master, "T-fanout", "linux.build", json!("RETRY,FAILURE")).await;
    let a = until(&mut first, is_completed(brid)).await;
    let b = until(&mut second, is_completed(brid)).await;
    let c = until(&mut third, is_completed(brid)).await;
    assert_eq!(kinds(&a), attempts(&["RETRY", "FAILURE"]));
    assert_eq!(a, b);
    assert_eq!(a, c);

    // A subscriber sees the events from its subscription on.
    let mut late = master.events().await?;
    let next = submit(&master, "T-late", "linux.build", &[]).await;
    let seen = until(&mut late, is_completed(next)).await;
    assert_eq!(kinds(&seen), attempts(&["SUCCESS"]));
    assert!(seen.iter().all(|event| event.build_request_ids() == [next]));
    let again = until(&mut first, is_completed(next)).await;
    assert_eq!(again, seen);
    Ok(())
}

#[tokio::test]
async fn find_requests_for_task_lists_reruns_oldest_first() -> anyhow::Result<()> {
    let master = SandboxMaster::start(config([fast("linux.build"), fast("win.test")])).await;
    let mut run0 = spec("T-reruns", "linux.build", &[]);
    run0.submitted_at = 100;
    let mut other = spec("T-other", "win.test", &[]);
    other.submitted_at = 150;
    let mut run1 = spec("T-reruns", "win.test", &[]);
    run1.run_id = 1;
    run1.submitted_at = 200;
    let first = master.submit(&run0).await?;
    let unrelated = master.submit(&other).await?;
    let second = master.submit(&run1).await?;

    let found = master.find_requests_for_task("T-reruns").await?;
    let ids: Vec<_> = found.iter().map(|f| f.build_request_id).collect();
    assert_eq!(ids, [first, second]);
    assert_eq!(found[0].submitted_at, 100);
    assert_eq!(found[1].submitted_at, 200);
    assert_eq!(found[1].buildername, "win.test");
    assert_ne!(found[0].buildset_id, found[1].buildset_id);
    let others = master.find_requests_for_task("T-other").await?;
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].build_request_id, unrelated);
    assert!(master.find_requests_for_task("T-none").await?.is_empty());
    assert!(master.find_requests_for_task("").await?.is_empty());
    Ok(())
}

/// Tokio's clock is paused: the build times (a second, an hour) pass as
/// soon as nothing else can run, so no real time is spent.
#[tokio::test(start_paused = true)]
async fn a_requeued_request_waits_behind_higher_priority_and_can_be_cancelled() -> anyhow::Result<()>
{
    let (master, mut events) = started(config([SandboxBuilder::new("one")
        .with_slots(1)
        .with_duration(Duration::from_secs(1))]))
    .await?;
    let flaky = submit_scripted(&master, "T-flaky", "one", json!("RETRY,SUCCESS")).await;
    until(&mut events, is_started(flaky)).await;
    let mut urgent = spec("T-urgent", "one", &forever());
    urgent.priority = 5;
    let urgent = master.submit(&urgent).await?;

    let seen = until(&mut events, is_started(urgent)).await;
    assert_eq!(kinds(&about(&seen, flaky)), ["finished:RETRY", "requeued"]);
    match master.request_state(flaky).await? {
        RequestState::Pending { builds } => {
            assert_eq!(builds.len(), 1);
            assert_eq!(builds[0].finish_time, Some(NOW));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        master.cancel_request(flaky).await?,
        CancelOutcome::Cancelled
    );
    assert_eq!(
        history(&mut events, flaky).await,
        ["completed-unclaimed:CANCELLED"]
    );
    assert!(matches!(
        master.request_state(flaky).await?,
        RequestState::Cancelled { .. }
    ));

    master.stop_build(StopTarget::Request(urgent)).await?;
    let seen = until(&mut events, is_completed(urgent)).await;
    assert_eq!(
        completed_result(&seen, urgent),
        Some(BuildResult::Cancelled)
    );
    assert!(!started_ids(&seen).contains(&flaky));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn long_builds_finish_on_a_paused_clock() -> anyhow::Result<()> {
    let (master, mut events) = started(config([SandboxBuilder::new("nightly")
        .with_duration(Duration::from_secs(50))
        .with_results([BuildResult::Warnings])]))
    .await?;
    let brid = submit(&master, "T-nightly", "nightly", &[]).await;
    let seen = until(&mut events, is_completed(brid)).await;
    assert_eq!(completed_result(&seen, brid), Some(BuildResult::Warnings));
    Ok(())
}

#[tokio::test]
async fn a_lagging_subscriber_loses_the_oldest_events_and_goes_on() -> anyhow::Result<()> {
    let master = SandboxMaster::start(SandboxConfig {
        event_capacity: 2,
        ..config([fast("linux.build")])
    })
    .await;
    let mut slow = master.events().await?;
    let brid = submit(&master, "T-lag", "linux.build", &[]).await;
    // Wait by looking at the state, without reading the stream.
    tokio::time::timeout(WAIT, async {
        while !matches!(
            master.request_state(brid).await.unwrap(),
            RequestState::Complete { .. }
        ) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    // Three events were sent; the oldest (the start) is lost.
    let seen = until(&mut slow, is_completed(brid)).await;
    assert_eq!(kinds(&seen), ["finished:SUCCESS", "completed:SUCCESS"]);

    // A capacity of 0 is taken as 1.
    let tiny = SandboxMaster::start(SandboxConfig {
        event_capacity: 0,
        ..config([fast("idle").with_slots(0)])
    })
    .await;
    let mut tiny_events = tiny.events().await?;
    let idle = submit(&tiny, "T-tiny", "idle", &[]).await;
    assert_eq!(tiny.cancel_request(idle).await?, CancelOutcome::Cancelled);
    assert_eq!(
        kinds(&until(&mut tiny_events, is_completed(idle)).await),
        ["completed-unclaimed:CANCELLED"]
    );

    // The stream goes on.
    let next = submit(&master, "T-lag-2", "linux.build", &[]).await;
    let seen = until(&mut slow, is_completed(next)).await;
    assert!(
        kinds(&seen).ends_with(&[
            "finished:SUCCESS".to_owned(),
            "completed:SUCCESS".to_owned()
        ]),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_the_streams_and_abandons_running_builds() -> anyhow::Result<()> {
    let (master, mut events) = started(config([fast("linux.build")])).await?;
    let running = submit(&master, "T-abandoned", "linux.build", &forever()).await;
    until(&mut events, is_started(running)).await;

    master.shutdown().await;
    let rest = tokio::time::timeout(WAIT, events.collect::<Vec<_>>()).await?;
    assert!(rest.is_empty(), "{rest:?}");
    assert!(master.events().await?.next().await.is_none());

    assert!(matches!(
        master.request_state(running).await?,
        RequestState::Running { .. }
    ));
    assert!(master.running_builds().is_empty());
    assert_eq!(
        master.stop_build(StopTarget::Request(running)).await?,
        StopOutcome::NotRunning
    );
    assert_eq!(
        master.cancel_request(running).await?,
        CancelOutcome::AlreadyClaimed
    );
    // Like a scheduler DB whose master is down: requests are stored, never
    // started.
    let later = submit(&master, "T-later", "linux.build", &[]).await;
    cancel_pending(&master, later).await;
    // Shutting down twice is harmless.
    master.shutdown().await;
    assert_eq!(master.stats().started, 1);
    Ok(())
}

#[tokio::test]
async fn odd_input_is_handled() -> anyhow::Result<()> {
    let master = SandboxMaster::start(SandboxConfig {
        master_name: "odd master/1".to_owned(),
        builders: vec![
            fast("idle").with_slots(0),
            SandboxBuilder::new("empty")
                .with_results([])
                .with_duration(Duration::ZERO),
            fast("empty").with_results([BuildResult::Failure]),
        ],
        ..config([])
    })
    .await;
    assert_eq!(
        master.builders().await?,
        Some(vec!["idle".to_owned(), "empty".to_owned()])
    );
    let mut events = master.events().await?;

    // No slots: the request stays pending, and can be cancelled.
    let idle = submit(&master, "", "idle", &[]).await;
    cancel_pending(&master, idle).await;

    // Extreme numbers and unreadable scripts.
    let mut odd = spec(
        "T-odd",
        "empty",
        &[
            ("sim_duration_ms", json!(-40)),
            ("sim_result", json!("")),
            ("unicode ✓", json!({"nested": [1, 2, {"x": null}]})),
        ],
    );
    odd.priority = i32::MIN;
    odd.submitted_at = i64::MIN;
    odd.properties.insert("empty".to_owned(), Value::Null);
    let odd = master.submit(&odd).await?;
    let mut max = spec("T-max", "empty", &[("sim_duration_ms", json!(u64::MAX))]);
    max.priority = i32::MAX;
    max.submitted_at = i64::MAX;
    let max = master.submit(&max).await?;

    // Until the odd request completed and the long one started, in any order.
    let (mut odd_done, mut max_started) = (is_completed(odd), is_started(max));
    let (mut done, mut started) = (false, false);
    let seen = until(&mut events, |event| {
        done |= odd_done(event);
        started |= max_started(event);
        done && started
    })
    .await;
    assert_eq!(kinds(&about(&seen, max)), ["started"]);
    // The first builder of a name wins: no results means SUCCESS.
    assert_eq!(completed_result(&seen, odd), Some(BuildResult::Success));
    let properties = seen
        .iter()
        .find_map(|event| match event {
            LegacyEvent::BuildFinished { properties, .. } => Some(properties.clone()),
            _ => None,
        })
        .unwrap_or_default();
    assert_eq!(
        properties.get("unicode ✓"),
        Some(&json!([{"nested": [1, 2, {"x": null}]}, "bbb"]))
    );
    assert_eq!(properties.get("empty"), Some(&json!([null, "bbb"])));
    assert_eq!(
        properties.get("master"),
        Some(&json!(["odd master/1", "Build"]))
    );

    assert_eq!(
        master.stop_build(StopTarget::Request(max)).await?,
        StopOutcome::Requested(vec![BuildId(2)])
    );
    // Stopping twice before it finished asks again, harmlessly.
    let again = master.stop_build(StopTarget::Request(max)).await?;
    assert!(matches!(
        again,
        StopOutcome::Requested(_) | StopOutcome::NotRunning
    ));
    let seen = until(&mut events, is_completed(max)).await;
    assert_eq!(completed_result(&seen, max), Some(BuildResult::Cancelled));
    Ok(())
}
