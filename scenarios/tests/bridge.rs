//! The bridge's end-to-end scenarios: bridged tasks through every path a
//! build can take, from the native queue through the TC and Buildbot
//! listeners to a legacy master and back. Each scenario runs three times:
//! against the 0.8 scheduler DB on MariaDB driven by the simulator
//! (`<scenario>::simulator`), against a real Buildbot 4.3 master through
//! the REST adapter (`<scenario>::buildbot4`), and against the in-memory
//! sandbox master `bbb up` runs (`<scenario>::sandbox`). See the crate
//! README for the list and what each checks on each kind.

#[macro_use]
mod common;

use std::time::Duration;

use bbb_bridge::Outcome;
use bbb_buildbot::{BuildRequestId, BuildResult, RequestState};
use bbb_reflector::{Reflector, ReflectorSettings};
use bbb_state::{RowResolution, RowState, StartedBuild};
use common::{Env, MasterKind, Options, payload, request_of};
use serde_json::{Value, json};

scenarios!(
    a_successful_build_completes_the_task_with_its_artifacts,
    build_results_map_to_task_resolutions,
    a_retried_build_continues_on_the_same_build_request_in_the_next_run,
    a_stale_view_of_a_retried_run_leaves_its_next_build_alone,
    a_retry_seen_before_its_build_start_still_retries_the_run,
    a_later_build_seen_from_a_stale_view_retries_the_run_it_follows,
    a_finish_applied_before_the_retry_resolves_the_next_run,
    a_deadline_passing_before_the_build_starts_cancels_the_request,
    cancelling_a_pending_task_cancels_its_build_request,
    cancelling_a_running_task_stops_its_build,
    cancelling_a_pending_request_on_the_buildbot_side_cancels_the_task,
    stopping_a_running_build_on_the_buildbot_side_cancels_the_task,
    an_invalid_payload_is_refused_with_a_readable_log,
    a_restricted_builder_runs_only_with_the_scope,
    an_unknown_builder_is_refused,
    a_high_priority_task_gets_request_priority_1,
    merged_requests_each_resolve_their_run,
    duplicate_and_concurrent_deliveries_make_one_build_request,
    the_reflector_catches_up_a_missed_build_start_and_cancel,
    the_reflector_catches_up_a_missed_finish_with_its_properties,
    a_finish_applied_twice_at_once_attaches_one_log_and_resolves_once,
    a_log_the_master_cannot_give_is_referenced_by_its_url,
    a_rerun_while_the_request_still_waits_reuses_it,
    ignored_builders_are_left_alone,
);

/// `a` with the keys of `b` added.
fn with(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// An environment without listeners (every Buildbot event is missed) and a
/// reflector that compares every active row at each pass.
async fn unlistened(kind: MasterKind) -> (Env, Reflector) {
    let env = Env::start(kind, Options::without_listeners()).await;
    let reflector = Reflector::new(
        env.bridge.clone(),
        ReflectorSettings {
            settle_time: Duration::ZERO,
            recheck_interval: Duration::from_millis(1),
            ..Default::default()
        },
    );
    (env, reflector)
}

/// Runs a reflector pass, which must repair something without errors.
async fn repairing_pass(reflector: &Reflector) {
    let report = reflector.pass().await;
    assert!(report.repaired >= 1, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
}

/// Creates a task for `kind.builder()` with `properties` and injects its
/// request as the TC listener would; returns the task and its request.
async fn inject_by_hand(
    env: &Env,
    kind: MasterKind,
    properties: Value,
) -> (String, BuildRequestId) {
    let task_id = env.task(kind.builder(), properties).await;
    assert_eq!(
        env.bridge.task_pending(&task_id, 0, None).await.unwrap(),
        Outcome::Injected
    );
    let brid = env.wait_requested(&task_id, 0).await;
    (task_id, brid)
}

/// Starts everything for `kind` and creates a task for its offline builder,
/// whose request stays pending; returns the task and its request.
async fn pending_request(kind: MasterKind) -> (Env, String, BuildRequestId) {
    let (env, task_id) = Env::with_task(kind, kind.offline_builder(), json!({})).await;
    let brid = env.wait_requested(&task_id, 0).await;
    (env, task_id, brid)
}

/// Checks that the task's one run ends `exception/canceled` and that its
/// row is resolved canceled.
async fn assert_canceled_once(env: &Env, task_id: &str) {
    let status = env
        .wait_run(task_id, 0, "exception", Some("canceled"))
        .await;
    assert_eq!(status.runs.len(), 1, "{status:?}");
    let row = env.wait_resolved(task_id, 0).await;
    assert_eq!(row.resolution, Some(RowResolution::Canceled));
}

/// Run 0's `public/properties.json`.
async fn properties_json(env: &Env, task_id: &str) -> Value {
    serde_json::from_str(
        &env.artifact_text(task_id, 0, "public/properties.json")
            .await,
    )
    .unwrap()
}

/// Checks that run `run_id` has the log of its build as Treeherder reads
/// it: `public/logs/live_backing.log`, stored by the queue as
/// `text/plain; charset=utf-8`, whose text is the master's log of the
/// build, which names the task; returns the text.
async fn assert_build_log(env: &Env, task_id: &str, run_id: u32) -> String {
    let log = env
        .artifact(task_id, run_id, "public/logs/live_backing.log")
        .await;
    assert_eq!(log["storageType"], json!("s3"), "{log}");
    assert_eq!(
        log["contentType"],
        json!("text/plain; charset=utf-8"),
        "{log}"
    );
    let text = env
        .artifact_text(task_id, run_id, "public/logs/live_backing.log")
        .await;
    assert!(
        text.contains(&format!("the build of task {task_id}")),
        "{text}"
    );
    assert!(text.contains("========= Finished "), "{text}");
    text
}

/// Checks that a refused task is resolved `exception/malformed-payload`
/// with `wanted` in its log, and that nothing reached the master.
async fn assert_refused(env: &Env, task_id: &str, wanted: &str) {
    env.wait_run(task_id, 0, "exception", Some("malformed-payload"))
        .await;
    let log = env
        .artifact_text(task_id, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains(wanted), "{wanted:?} not in {log}");
    assert!(env.requests(task_id).await.is_empty());
    assert!(env.state.rows_for_task(task_id).await.unwrap().is_empty());
}

async fn a_successful_build_completes_the_task_with_its_artifacts(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let task_id = env
        .create_task(
            payload(
                kind.builder(),
                with(json!({"who": "me"}), kind.script_success()),
            ),
            json!({}),
        )
        .await;
    let status = env.wait_run(&task_id, 0, "completed", None).await;
    let row = env.wait_resolved(&task_id, 0).await;
    assert_eq!(row.resolution, Some(RowResolution::Completed));
    let requests = env.requests(&task_id).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let brid = requests[0].build_request_id;
    assert_eq!(row.build_request_id, Some(brid.0 as i64));
    assert_eq!(requests[0].buildername, kind.builder());
    // submitted_at is the run's scheduled time, not the task's created time.
    let scheduled = status.run(0).unwrap().scheduled / 1000;
    assert_eq!(requests[0].submitted_at, scheduled);
    if kind.stores_submitted_at() {
        assert_eq!(env.request_submitted_at(brid).await, scheduled);
    }
    assert_eq!(
        env.request_reason(brid).await,
        format!("Created by BBB for task {task_id}")
    );
    // The run resolves on the build's end; the request completes just after.
    env.wait_complete(brid, BuildResult::Success).await;
    let props = properties_json(&env, &task_id).await;
    assert_eq!(props["taskId"][0], json!(task_id));
    assert_eq!(props["who"][0], json!("me"));
    assert_eq!(props["product"][0], json!("firefox"));
    // The build's log, where Treeherder looks for every run's log: the
    // master's own text, uploaded (a 0.8 master's `.txt.gz` gunzipped).
    let text = assert_build_log(&env, &task_id, 0).await;
    assert!(text.contains("results: success (0)\n"), "{text}");
    assert!(
        text.contains(&format!("builder: {}\n", kind.builder())),
        "{text}"
    );
    let mut artifacts = env.artifacts(&task_id, 0).await;
    artifacts.sort();
    assert_eq!(
        artifacts,
        ["public/logs/live_backing.log", "public/properties.json"]
    );
    env.stop().await;
}

async fn build_results_map_to_task_resolutions(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let mut cases = vec![
        (BuildResult::Failure, "failed", None),
        (BuildResult::Warnings, "failed", None),
        (BuildResult::Exception, "exception", Some("internal-error")),
    ];
    if kind.scripts_every_result() {
        // Buildbot 4's test builders cannot end a build SKIPPED.
        cases.push((
            BuildResult::Skipped,
            "exception",
            Some("resource-unavailable"),
        ));
    }
    let mut ids = Vec::new();
    for (result, _, _) in &cases {
        ids.push(
            env.create_task(
                payload(kind.builder(), kind.script_result(*result)),
                json!({}),
            )
            .await,
        );
    }
    for (task_id, (result, state, reason)) in ids.iter().zip(cases) {
        env.wait_run(task_id, 0, state, reason).await;
        let row = env.wait_resolved(task_id, 0).await;
        let wanted = match state {
            "failed" => RowResolution::Failed,
            _ => RowResolution::Exception,
        };
        assert_eq!(row.resolution, Some(wanted), "{result}");
        let requests = env.requests(task_id).await;
        assert_eq!(requests.len(), 1, "{result}");
        env.wait_complete(requests[0].build_request_id, result)
            .await;
        assert!(
            env.artifacts(task_id, 0)
                .await
                .contains(&"public/properties.json".to_owned()),
            "{result}"
        );
        let text = assert_build_log(&env, task_id, 0).await;
        let header = format!(
            "results: {} ({})\n",
            result.name().to_ascii_lowercase(),
            result.code()
        );
        assert!(text.contains(&header), "{result}: {text}");
        assert_eq!(env.status(task_id).await.runs.len(), 1, "{result}");
    }
    env.stop().await;
}

async fn a_retried_build_continues_on_the_same_build_request_in_the_next_run(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let task_id = env
        .create_task(
            payload(kind.builder(), kind.script_retry_then_success()),
            json!({}),
        )
        .await;
    env.cause_retry(&task_id).await;
    let status = env.wait_run(&task_id, 1, "completed", None).await;
    let run0 = status.run(0).unwrap();
    assert_eq!(run0.state.as_str(), "exception");
    assert_eq!(
        run0.reason_resolved.map(|r| r.as_str()),
        Some("worker-shutdown")
    );
    assert_eq!(status.runs.len(), 2);
    let requests = env.requests(&task_id).await;
    assert_eq!(
        requests.len(),
        1,
        "a RETRY never makes a second request: {requests:?}"
    );
    let brid = requests[0].build_request_id;
    let rows = env.state.rows_for_task(&task_id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.build_request_id == Some(brid.0 as i64)),
        "{rows:#?}"
    );
    let row1 = env
        .wait_row(&task_id, 1, "completed", |r| {
            r.resolution == Some(RowResolution::Completed)
        })
        .await;
    let row0 = env.row(&task_id, 0).await;
    assert_ne!(row0.build_number, row1.build_number, "{row0:?} {row1:?}");
    let state = env
        .wait_request(brid, "complete SUCCESS", |s| {
            matches!(s, RequestState::Complete { .. })
        })
        .await;
    assert!(
        matches!(&state, RequestState::Complete { results: BuildResult::Success, builds, .. } if builds.len() == 2),
        "one request, two builds: {state:?}"
    );
    env.stop().await;
}

/// Makes the task's first build end RETRY ([`Env::cause_retry`]) and waits
/// until the master shows it finished; returns that build.
async fn first_build_retried(env: &Env, task_id: &str, brid: BuildRequestId) -> StartedBuild {
    env.cause_retry(task_id).await;
    let state = env
        .wait_request(brid, "its first build ended RETRY", |s| {
            matches!(s, RequestState::Pending { builds } | RequestState::Running { builds, .. }
                if builds.first().is_some_and(|b| b.finish_time.is_some()))
        })
        .await;
    let (RequestState::Pending { builds } | RequestState::Running { builds, .. }) = state else {
        unreachable!()
    };
    StartedBuild {
        build_id: Some(builds[0].build_id.0 as i64),
        number: Some(builds[0].number as i64),
    }
}

/// Waits until the request's second build runs, lets one reflector pass give
/// it run 1, and checks run 1 runs on it.
async fn next_build_runs_run_1(
    env: &Env,
    reflector: &Reflector,
    task_id: &str,
    brid: BuildRequestId,
    first: StartedBuild,
) {
    env.wait_request(brid, "its next build running", |s| {
        matches!(s, RequestState::Running { builds, .. }
            if builds.len() == 2 && builds[1].finish_time.is_none())
    })
    .await;
    let report = reflector.pass().await;
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(env.run_state(task_id, 1).await, "running");
    let row1 = env.row(task_id, 1).await;
    assert_eq!(row1.state, RowState::Running, "{row1:?}");
    assert_ne!(row1.build_number, first.number, "{row1:?}");
    assert_eq!(env.requests(task_id).await.len(), 1);
}

/// The race behind a retried build's next run being cancelled under load:
/// an action holding a copy of run 0's row read before the RETRY was
/// applied (the reflector's reclaim batch, a late duplicate of the first
/// build's start) finds run 0 resolved in the queue and settles it. The
/// request now serves run 1: nothing may stop or cancel it. Driven step by
/// step, without listeners, so the interleaving is the same every time.
async fn a_stale_view_of_a_retried_run_leaves_its_next_build_alone(kind: MasterKind) {
    let (env, reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_retry_then_long_build()).await;
    let first = first_build_retried(&env, &task_id, brid).await;

    // The Buildbot listener applies the first build's start, then its RETRY.
    let row0 = env.row(&task_id, 0).await;
    assert_eq!(
        env.bridge.build_started(row0, brid, first).await.unwrap(),
        Outcome::Claimed
    );
    let stale = env.row(&task_id, 0).await;
    assert_eq!(stale.state, RowState::Running, "{stale:?}");
    assert_eq!(
        env.bridge
            .build_retried(&stale, stale.build_number)
            .await
            .unwrap(),
        Outcome::Retried
    );

    // Actions still holding the row as it was before the RETRY.
    let outcomes = [
        env.bridge.reclaim(&stale).await.unwrap(),
        env.bridge
            .build_started(stale.clone(), brid, first)
            .await
            .unwrap(),
        env.bridge.reconcile(&stale).await.unwrap(),
    ];
    let state = env.request_state(brid).await;
    assert!(
        matches!(
            state,
            RequestState::Pending { .. } | RequestState::Running { .. }
        ),
        "the retried request was stopped or cancelled ({outcomes:?}): {state:?}"
    );
    let status = env.status(&task_id).await;
    let run1 = status.run(1).expect("run 1 exists");
    assert_eq!(run1.state.as_str(), "pending", "{outcomes:?}: {status:#?}");
    let row1 = env.row(&task_id, 1).await;
    assert_eq!(row1.state, RowState::Requested, "{row1:?}");
    assert_eq!(row1.build_request_id, Some(brid.0 as i64));

    // The next build starts and the reflector gives it run 1.
    next_build_runs_run_1(&env, &reflector, &task_id, brid, first).await;
    env.stop().await;
}

/// Events race across listeners and sources: the first build's RETRY can be
/// applied while run 0 is still `Requested` (its start not applied yet). The
/// RETRY must still retry run 0 (the run the build served), and the late
/// start and a late copy of the RETRY that follow must not touch run 1.
async fn a_retry_seen_before_its_build_start_still_retries_the_run(kind: MasterKind) {
    let (env, reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_retry_then_long_build()).await;
    let first = first_build_retried(&env, &task_id, brid).await;
    let row0 = env.row(&task_id, 0).await;
    assert_eq!(row0.state, RowState::Requested, "{row0:?}");

    // As the Buildbot listener on the RETRY.
    assert_eq!(
        env.bridge.build_retried(&row0, first.number).await.unwrap(),
        Outcome::Retried
    );
    let status = env.status(&task_id).await;
    let run0 = status.run(0).unwrap();
    assert_eq!(
        (
            run0.state.as_str(),
            run0.reason_resolved.map(|r| r.as_str())
        ),
        ("exception", Some("worker-shutdown")),
        "{status:#?}"
    );
    assert_eq!(
        status.run(1).unwrap().state.as_str(),
        "pending",
        "{status:#?}"
    );
    let row0 = env.row(&task_id, 0).await;
    assert_eq!(row0.build_number, first.number, "{row0:?}");

    // The late start, then a late copy of the RETRY, reach run 1's row (the
    // request serves run 1 now).
    let row1 = env.row(&task_id, 1).await;
    assert_eq!(row1.state, RowState::Requested, "{row1:?}");
    assert_eq!(
        env.bridge.build_started(row1, brid, first).await.unwrap(),
        Outcome::StaleBuild
    );
    let row1 = env.row(&task_id, 1).await;
    assert_eq!(
        env.bridge.build_retried(&row1, first.number).await.unwrap(),
        Outcome::StaleBuild
    );
    assert_eq!(env.status(&task_id).await.runs.len(), 2);

    next_build_runs_run_1(&env, &reflector, &task_id, brid, first).await;
    env.stop().await;
}

/// Applies late copies of the first build's start and RETRY to run 1's row
/// (the request serves run 1 now); returns their outcomes.
async fn late_copies_of_the_first_build(
    env: &Env,
    task_id: &str,
    brid: BuildRequestId,
    first: StartedBuild,
) -> [Outcome; 2] {
    [
        env.bridge
            .build_started(env.row(task_id, 1).await, brid, first)
            .await
            .unwrap(),
        env.bridge
            .build_retried(&env.row(task_id, 1).await, first.number)
            .await
            .unwrap(),
    ]
}

/// The race behind a retried task ending with two `worker-shutdown` runs under
/// load: one listener reads run 0's row while it is still `Requested`, another
/// applies the first build's start meanwhile, and the first then applies the
/// *next* build's start from its old copy. That must not replace the build
/// recorded on run 0 (a late copy of the first build's start would then find
/// no run that it served and give run 1 the retried build, which the reflector
/// then retries a second time): it retries run 0 and gives the next build to
/// run 1. Late copies of the first build's events then change nothing.
async fn a_later_build_seen_from_a_stale_view_retries_the_run_it_follows(kind: MasterKind) {
    let (env, reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_retry_then_long_build()).await;
    let stale = env.row(&task_id, 0).await;
    assert_eq!(stale.state, RowState::Requested, "{stale:?}");
    let first = first_build_retried(&env, &task_id, brid).await;
    // One listener applies the first build's start.
    assert_eq!(
        env.bridge
            .build_started(env.row(&task_id, 0).await, brid, first)
            .await
            .unwrap(),
        Outcome::Claimed
    );
    let state = env
        .wait_request(brid, "its next build running", |s| {
            matches!(s, RequestState::Running { builds, .. }
                if builds.len() == 2 && builds[1].finish_time.is_none())
        })
        .await;
    let RequestState::Running { builds, .. } = state else {
        unreachable!()
    };
    let next = StartedBuild {
        build_id: Some(builds[1].build_id.0 as i64),
        number: Some(builds[1].number as i64),
    };

    // Another applies the next build's start from its copy read before.
    let outcome = env.bridge.build_started(stale, brid, next).await.unwrap();
    let status = env.status(&task_id).await;
    let runs: Vec<_> = status
        .runs
        .iter()
        .map(|r| (r.state.as_str(), r.reason_resolved.map(|r| r.as_str())))
        .collect();
    assert_eq!(
        runs,
        [("exception", Some("worker-shutdown")), ("running", None)],
        "{outcome:?}"
    );
    let (row0, row1) = (env.row(&task_id, 0).await, env.row(&task_id, 1).await);
    assert_eq!(row0.build_number, first.number, "{row0:?}");
    assert_eq!(
        (row1.state, row1.build_number),
        (RowState::Running, next.number),
        "{row1:?}"
    );

    // Late copies of the first build's start and RETRY, and a reflector pass.
    let late = late_copies_of_the_first_build(&env, &task_id, brid, first).await;
    let report = reflector.pass().await;
    assert_eq!(report.errors, 0, "{report:?}");
    let status = env.status(&task_id).await;
    assert_eq!(status.runs.len(), 2, "{late:?} {report:?}: {status:#?}");
    assert_eq!(status.run(1).unwrap().state.as_str(), "running", "{late:?}");
    let row1 = env.row(&task_id, 1).await;
    assert_eq!(
        (row1.state, row1.build_number),
        (RowState::Running, next.number),
        "{late:?}"
    );
    assert_eq!(env.requests(&task_id).await.len(), 1);
    env.stop().await;
}

/// The race behind a retried task ending with one `completed` run under
/// load: the next build's finish (or the request's completion) is applied
/// before the first build's RETRY — by a listener whose copy of run 0's row
/// records the first build, or before any start was applied at all. The
/// finish must not resolve run 0: the run is retried first (the first build
/// ended RETRY) and the finish resolves run 1. Late copies of the first
/// build's events and a reflector pass then change nothing.
async fn a_finish_applied_before_the_retry_resolves_the_next_run(kind: MasterKind) {
    let (env, reflector) = unlistened(kind).await;
    for start_applied in [true, false] {
        let (task_id, brid) = inject_by_hand(&env, kind, kind.script_retry_then_success()).await;
        env.cause_retry(&task_id).await;
        let state = env
            .wait_request(
                brid,
                "complete after two builds",
                |s| matches!(s, RequestState::Complete { builds, .. } if builds.len() == 2),
            )
            .await;
        let RequestState::Complete { builds, .. } = state else {
            unreachable!()
        };
        let started = |i: usize| StartedBuild {
            build_id: Some(builds[i].build_id.0 as i64),
            number: Some(builds[i].number as i64),
        };
        let (first, next) = (started(0), started(1));
        let outcome = if start_applied {
            // One listener applied the first build's start; another, holding
            // that row, applies the next build's finish.
            env.bridge
                .build_started(env.row(&task_id, 0).await, brid, first)
                .await
                .unwrap();
            let row0 = env.row(&task_id, 0).await;
            assert_eq!(row0.build_number, first.number, "{row0:?}");
            env.bridge
                .build_finished(
                    &row0,
                    BuildResult::Success,
                    next.number,
                    &Default::default(),
                    None,
                )
                .await
                .unwrap()
        } else {
            // No start applied: the request's completion comes first.
            let row0 = env.row(&task_id, 0).await;
            assert_eq!(row0.state, RowState::Requested, "{row0:?}");
            env.bridge
                .build_finished(&row0, BuildResult::Success, None, &Default::default(), None)
                .await
                .unwrap()
        };
        let runs = |status: bbb_bridge::TaskStatus| -> Vec<(String, Option<String>)> {
            status
                .runs
                .iter()
                .map(|r| {
                    (
                        r.state.as_str().to_owned(),
                        r.reason_resolved.map(|r| r.as_str().to_owned()),
                    )
                })
                .collect()
        };
        let wanted = vec![
            ("exception".to_owned(), Some("worker-shutdown".to_owned())),
            ("completed".to_owned(), Some("completed".to_owned())),
        ];
        assert_eq!(
            runs(env.status(&task_id).await),
            wanted,
            "start applied: {start_applied}; {outcome:?}"
        );
        let (row0, row1) = (env.row(&task_id, 0).await, env.row(&task_id, 1).await);
        assert_eq!(row0.build_number, first.number, "{row0:?}");
        assert_eq!(
            (row1.state, row1.resolution, row1.build_number),
            (
                RowState::Resolved,
                Some(RowResolution::Completed),
                next.number
            ),
            "{row1:?}"
        );

        // Late copies of the first build's start and RETRY, of the
        // completion, and a reflector pass.
        let [started, retried] = late_copies_of_the_first_build(&env, &task_id, brid, first).await;
        let late = [
            started,
            retried,
            env.bridge
                .build_finished(
                    &env.row(&task_id, 1).await,
                    BuildResult::Success,
                    None,
                    &Default::default(),
                    None,
                )
                .await
                .unwrap(),
        ];
        let report = reflector.pass().await;
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(runs(env.status(&task_id).await), wanted, "{late:?}");
        assert_eq!(env.requests(&task_id).await.len(), 1);
    }
    env.stop().await;
}

async fn a_deadline_passing_before_the_build_starts_cancels_the_request(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    // Nothing runs the offline builder's requests: the build never starts.
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(10);
    let task_id = env
        .create_task(
            payload(kind.offline_builder(), json!({})),
            json!({"deadline": deadline.to_rfc3339()}),
        )
        .await;
    let brid = env.wait_requested(&task_id, 0).await;
    assert!(matches!(
        env.request_state(brid).await,
        RequestState::Pending { .. }
    ));
    // The deadline passes (the queue's clock moves 11 minutes on, which
    // stays within the 15 minutes of clock skew its clients may have).
    env.advance_clock(Duration::from_secs(11 * 60));
    env.wait_run(&task_id, 0, "exception", Some("deadline-exceeded"))
        .await;
    let row = env.wait_resolved(&task_id, 0).await;
    assert_eq!(row.resolution, Some(RowResolution::Exception));
    env.wait_cancelled(brid).await;
    assert_eq!(env.status(&task_id).await.runs.len(), 1);
    env.stop().await;
}

async fn cancelling_a_pending_task_cancels_its_build_request(kind: MasterKind) {
    let (env, task_id, brid) = pending_request(kind).await;
    env.client.cancelTask(&task_id).await.unwrap();
    env.wait_cancelled(brid).await;
    assert_canceled_once(&env, &task_id).await;
    env.stop().await;
}

async fn cancelling_a_running_task_stops_its_build(kind: MasterKind) {
    let (env, task_id) = Env::with_task(kind, kind.builder(), kind.script_long_build()).await;
    env.wait_run(&task_id, 0, "running", None).await;
    let row = env.wait_running(&task_id, 0).await;
    assert!(row.taken_until.is_some());
    let brid = request_of(&row);
    env.client.cancelTask(&task_id).await.unwrap();
    env.wait_complete(brid, BuildResult::Cancelled).await;
    assert_canceled_once(&env, &task_id).await;
    env.stop().await;
}

async fn cancelling_a_pending_request_on_the_buildbot_side_cancels_the_task(kind: MasterKind) {
    let (env, task_id, brid) = pending_request(kind).await;
    env.cancel_on_master(brid).await;
    assert_canceled_once(&env, &task_id).await;
    assert!(matches!(
        env.request_state(brid).await,
        RequestState::Cancelled { .. }
    ));
    env.stop().await;
}

async fn stopping_a_running_build_on_the_buildbot_side_cancels_the_task(kind: MasterKind) {
    let (env, task_id) = Env::with_task(kind, kind.builder(), kind.script_long_build()).await;
    let brid = request_of(&env.wait_running(&task_id, 0).await);
    env.stop_on_master(brid).await;
    assert_canceled_once(&env, &task_id).await;
    env.wait_complete(brid, BuildResult::Cancelled).await;
    env.stop().await;
}

async fn an_invalid_payload_is_refused_with_a_readable_log(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let no_product = env
        .create_task(
            json!({"buildername": kind.builder(), "properties": {}}),
            json!({}),
        )
        .await;
    let no_builder = env
        .create_task(json!({"properties": {"product": "firefox"}}), json!({}))
        .await;
    let bad_sourcestamp = env
        .create_task(
            with(
                payload(kind.builder(), json!({})),
                json!({"sourcestamp": {"branch": "integration/mozilla-inbound", "patch": "x"}}),
            ),
            json!({}),
        )
        .await;
    assert_refused(&env, &no_product, "payload.properties.product is required").await;
    assert_refused(&env, &no_builder, "payload.buildername is required").await;
    assert_refused(&env, &bad_sourcestamp, "payload.sourcestamp.patch").await;
    env.stop().await;
}

async fn a_restricted_builder_runs_only_with_the_scope(kind: MasterKind) {
    let env = Env::start(
        kind,
        Options {
            restricted: vec![kind.other_builder().to_owned()],
            ..Default::default()
        },
    )
    .await;
    let scoped = async |scope: &str| {
        env.create_task(
            payload(kind.other_builder(), kind.script_success()),
            json!({"scopes": [scope]}),
        )
        .await
    };
    let refused = scoped("project:releng:buildbot-bridge:builder-name:some-other-builder").await;
    assert_refused(
        &env,
        &refused,
        &format!("buildbot-bridge:builder-name:{}", kind.other_builder()),
    )
    .await;
    let allowed = scoped("project:releng:buildbot-bridge:builder-name:*").await;
    env.wait_run(&allowed, 0, "completed", None).await;
    let requests = env.requests(&allowed).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].buildername, kind.other_builder());
    // Other builders need no scope.
    let free = env.task(kind.builder(), kind.script_success()).await;
    env.wait_run(&free, 0, "completed", None).await;
    env.stop().await;
}

async fn an_unknown_builder_is_refused(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let unknown = env.task("no-such-builder", json!({})).await;
    assert_refused(&env, &unknown, "does not exist").await;
    let builders = env
        .master
        .builders()
        .await
        .unwrap()
        .expect("a builder list");
    assert!(
        builders.contains(&kind.builder().to_owned()),
        "{builders:?}"
    );
    assert!(!builders.contains(&"no-such-builder".to_owned()));
    env.stop().await;
}

async fn a_high_priority_task_gets_request_priority_1(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let high = env
        .create_task(
            payload(kind.offline_builder(), json!({})),
            json!({"priority": "high"}),
        )
        .await;
    let normal = env
        .create_task(
            payload(kind.offline_builder(), json!({})),
            json!({"priority": "medium"}),
        )
        .await;
    let high_brid = env.wait_requested(&high, 0).await;
    let normal_brid = env.wait_requested(&normal, 0).await;
    assert_eq!(env.request_priority(high_brid).await, 1);
    assert_eq!(env.request_priority(normal_brid).await, 0);
    env.stop().await;
}

async fn merged_requests_each_resolve_their_run(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    match kind {
        MasterKind::Simulator | MasterKind::Sandbox => {
            // Two requests waiting on the same builder, merged into one build
            // as a 0.8 master does; the build runs until it is finished by
            // hand.
            let a = env
                .create_task(
                    payload(kind.offline_builder(), kind.script_long_build()),
                    json!({}),
                )
                .await;
            let b = env
                .create_task(
                    payload(kind.offline_builder(), kind.script_long_build()),
                    json!({}),
                )
                .await;
            let brids = [
                env.wait_requested(&a, 0).await,
                env.wait_requested(&b, 0).await,
            ];
            let number = env.start_merged_build(&brids).await;
            for task_id in [&a, &b] {
                env.wait_run(task_id, 0, "running", None).await;
                let row = env.wait_running(task_id, 0).await;
                assert_eq!(row.build_number, Some(number as i64));
            }
            env.finish_merged_build(&brids, BuildResult::Success).await;
            for task_id in [&a, &b] {
                env.wait_run(task_id, 0, "completed", None).await;
                env.wait_row(task_id, 0, "completed", |r| {
                    r.resolution == Some(RowResolution::Completed)
                })
                .await;
                assert_eq!(env.status(task_id).await.runs.len(), 1);
                assert_eq!(env.requests(task_id).await.len(), 1);
            }
        }
        MasterKind::Buildbot4 => {
            // A Buildbot 4 build serves exactly one request, and bbb's master
            // configuration turns collapsing off: two identical requests
            // waiting together still get a build each.
            env.set_worker_online(false).await;
            let a = env.task(kind.builder(), kind.script_success()).await;
            let b = env.task(kind.builder(), kind.script_success()).await;
            let brids = [
                env.wait_requested(&a, 0).await,
                env.wait_requested(&b, 0).await,
            ];
            env.set_worker_online(true).await;
            let mut numbers = Vec::new();
            for (task_id, brid) in [&a, &b].into_iter().zip(brids) {
                env.wait_run(task_id, 0, "completed", None).await;
                let row = env
                    .wait_row(task_id, 0, "completed", |r| {
                        r.resolution == Some(RowResolution::Completed)
                    })
                    .await;
                let state = env
                    .wait_request(brid, "complete", |s| {
                        matches!(s, RequestState::Complete { .. })
                    })
                    .await;
                let RequestState::Complete {
                    results: BuildResult::Success,
                    builds,
                    ..
                } = state
                else {
                    panic!("{state:?}");
                };
                assert_eq!(builds.len(), 1);
                assert_eq!(row.build_number, Some(builds[0].number as i64));
                numbers.push(builds[0].number);
            }
            assert_ne!(numbers[0], numbers[1], "one build per request");
        }
    }
    env.stop().await;
}

async fn duplicate_and_concurrent_deliveries_make_one_build_request(kind: MasterKind) {
    let env = Env::start(kind, Options::without_listeners()).await;
    let task_id = env.task(kind.offline_builder(), json!({})).await;
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
        outcomes.iter().filter(|o| **o == Outcome::Injected).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(env.requests(&task_id).await.len(), 1);
    // A late redelivery injects nothing either.
    assert_eq!(
        env.bridge.task_pending(&task_id, 0, None).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(env.requests(&task_id).await.len(), 1);
    env.stop().await;
}

async fn the_reflector_catches_up_a_missed_build_start_and_cancel(kind: MasterKind) {
    // No listeners: the build's start and the task's cancellation are missed.
    let (env, reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_long_build()).await;
    env.wait_request(brid, "a running build", |s| {
        matches!(s, RequestState::Running { builds, .. } if builds.iter().any(|b| b.finish_time.is_none()))
    })
    .await;
    assert_eq!(env.run_state(&task_id, 0).await, "pending");
    repairing_pass(&reflector).await;
    let row = env.row(&task_id, 0).await;
    assert_eq!(row.state, RowState::Running, "{row:?}");
    assert!(row.build_number.is_some());
    assert_eq!(env.run_state(&task_id, 0).await, "running");

    env.client.cancelTask(&task_id).await.unwrap();
    let report = reflector.pass().await;
    assert_eq!(report.errors, 0, "{report:?}");
    let row = env.row(&task_id, 0).await;
    assert_eq!(row.state, RowState::Resolved, "{row:?}");
    assert_eq!(row.resolution, Some(RowResolution::Canceled));
    env.wait_complete(brid, BuildResult::Cancelled).await;
    env.stop().await;
}

async fn the_reflector_catches_up_a_missed_finish_with_its_properties(kind: MasterKind) {
    // No listeners: the build's start and finish are both missed.
    let (env, reflector) = unlistened(kind).await;
    let script = with(json!({"who": "me"}), kind.script_success());
    let (task_id, brid) = inject_by_hand(&env, kind, script).await;
    env.wait_complete(brid, BuildResult::Success).await;
    assert_eq!(env.run_state(&task_id, 0).await, "pending");
    repairing_pass(&reflector).await;
    let row = env.row(&task_id, 0).await;
    assert_eq!(row.state, RowState::Resolved, "{row:?}");
    assert_eq!(row.resolution, Some(RowResolution::Completed));
    assert_eq!(env.run_state(&task_id, 0).await, "completed");
    let props = properties_json(&env, &task_id).await;
    if kind.serves_build_properties() {
        assert_eq!(props["taskId"][0], json!(task_id), "{props}");
        assert_eq!(props["who"][0], json!("me"), "{props}");
        assert!(props["buildnumber"][0].is_u64(), "{props}");
    } else {
        // A 0.8 master's properties travel only in its build messages.
        assert_eq!(props, json!({}));
    }
    assert_missed_finish_log(&env, kind, &task_id).await;
    env.stop().await;
}

/// The log of a run whose finish only the reflector saw: the master's text
/// where the master keeps its builds' logs (Buildbot 4, the sandbox); a 0.8
/// master's log URL travels only in its `log_uploaded` message, so the
/// run's log says which build it was and that its log could not be fetched.
async fn assert_missed_finish_log(env: &Env, kind: MasterKind, task_id: &str) {
    if kind.serves_build_logs() {
        assert_build_log(env, task_id, 0).await;
    } else {
        let log = env
            .artifact(task_id, 0, "public/logs/live_backing.log")
            .await;
        assert_eq!(log["storageType"], json!("s3"), "{log}");
        let text = env
            .artifact_text(task_id, 0, "public/logs/live_backing.log")
            .await;
        assert!(text.contains("could not be fetched"), "{text}");
        assert!(text.contains("result: SUCCESS\n"), "{text}");
        assert!(text.contains("log URL: none\n"), "{text}");
    }
}

async fn a_finish_applied_twice_at_once_attaches_one_log_and_resolves_once(kind: MasterKind) {
    // No listeners: the finish is applied by hand, twice at once, as two
    // listeners (or a listener and the reflector) would apply one event
    // delivered twice.
    let (env, _reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_success()).await;
    env.wait_complete(brid, BuildResult::Success).await;
    let row = env.row(&task_id, 0).await;
    let no_properties = std::collections::BTreeMap::new();
    let finish = || {
        env.bridge
            .build_finished(&row, BuildResult::Success, None, &no_properties, None)
    };
    let (first, second) = tokio::join!(finish(), finish());
    let outcomes = [first.unwrap(), second.unwrap()];
    assert!(outcomes.contains(&Outcome::Resolved), "{outcomes:?}");
    let status = env.wait_run(&task_id, 0, "completed", None).await;
    assert_eq!(status.runs.len(), 1);
    let row = env.wait_resolved(&task_id, 0).await;
    assert_eq!(row.resolution, Some(RowResolution::Completed));
    let mut artifacts = env.artifacts(&task_id, 0).await;
    artifacts.sort();
    assert_eq!(
        artifacts,
        ["public/logs/live_backing.log", "public/properties.json"]
    );
    assert_missed_finish_log(&env, kind, &task_id).await;
    // Applied again once resolved: nothing changes.
    let row = env.row(&task_id, 0).await;
    assert_eq!(
        env.bridge
            .build_finished(&row, BuildResult::Success, None, &no_properties, None)
            .await
            .unwrap(),
        Outcome::AlreadyResolved
    );
    assert_eq!(env.artifacts(&task_id, 0).await.len(), 2);
    env.stop().await;
}

async fn a_rerun_while_the_request_still_waits_reuses_it(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    let task_id = env.task(kind.offline_builder(), json!({})).await;
    let brid0 = env.wait_requested(&task_id, 0).await;
    // Resolve run 0 behind the bridge's back, as an operator would; its request still waits.
    env.bridge.queue.claim(&task_id, 0).await.unwrap();
    env.bridge.queue.report_failed(&task_id, 0).await.unwrap();
    env.client.rerunTask(&task_id).await.unwrap();
    let brid1 = env.wait_requested(&task_id, 1).await;
    assert_eq!(brid0, brid1);
    assert_eq!(env.requests(&task_id).await.len(), 1);
    assert!(matches!(
        env.request_state(brid1).await,
        RequestState::Pending { .. }
    ));
    env.stop().await;
}

async fn ignored_builders_are_left_alone(kind: MasterKind) {
    let env = Env::start(
        kind,
        Options {
            ignored: vec!["ignored-.*".into()],
            restricted: vec!["ignored-.*".into()],
            ..Default::default()
        },
    )
    .await;
    let ignored = env.task("ignored-builder", json!({})).await;
    // A task created after it is handled: the ignored one was seen first.
    let handled = env.task(kind.offline_builder(), json!({})).await;
    env.wait_requested(&handled, 0).await;
    let seen = |m: &bbb_bridge::Metrics| {
        m.get(
            "bbb_bridge_events_total",
            "type=\"task-pending\",outcome=\"ignored\"",
        )
    };
    let what = "the ignored task-pending";
    common::poll_until(what, async || seen(&env.bridge.metrics), |n| *n >= 1).await;
    // No row, no request, no claim: still pending.
    assert!(env.state.rows_for_task(&ignored).await.unwrap().is_empty());
    assert!(env.requests(&ignored).await.is_empty());
    assert_eq!(env.run_state(&ignored, 0).await, "pending");
    env.stop().await;
}

async fn a_log_the_master_cannot_give_is_referenced_by_its_url(kind: MasterKind) {
    // A finish whose log URL cannot be fetched (nothing listens there), as
    // when a 0.8 master's log server is down.
    let (env, _reflector) = unlistened(kind).await;
    let (task_id, brid) = inject_by_hand(&env, kind, kind.script_success()).await;
    env.wait_complete(brid, BuildResult::Success).await;
    let row = env.row(&task_id, 0).await;
    let unreachable = "http://127.0.0.1:9/logs/linux64-build/0.txt.gz";
    let outcome = env
        .bridge
        .build_finished(
            &row,
            BuildResult::Success,
            None,
            &std::collections::BTreeMap::new(),
            Some(unreachable),
        )
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Resolved);
    env.wait_run(&task_id, 0, "completed", None).await;
    if kind.serves_build_logs() {
        // Buildbot 4 and the sandbox give the log by build id.
        assert_build_log(&env, &task_id, 0).await;
    } else {
        let log = env
            .artifact(&task_id, 0, "public/logs/live_backing.log")
            .await;
        assert_eq!(log["storageType"], json!("reference"), "{log}");
        assert_eq!(log["contentType"], json!("application/gzip"), "{log}");
        assert_eq!(
            env.artifact_location(&task_id, 0, "public/logs/live_backing.log")
                .await,
            unreachable
        );
    }
    env.stop().await;
}
