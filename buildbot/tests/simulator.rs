//! The simulator playing a 0.8 master, and the adapter's event sources
//! (Pulse on RabbitMQ or the in-process bus, DB polling) observing it.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bbb_buildbot::simulator::{SimBuilder, Simulator, SimulatorConfig};
use bbb_buildbot::testing::fresh_database;
use bbb_buildbot::{
    BuildRequestId, BuildResult, CancelOutcome, EventSource, LegacyEvent, LegacyMaster,
    PollOptions, PulseOptions, RequestState, SchedulerDb, SchedulerDbConfig, StopOutcome,
    StopTarget,
};

const WAIT: Duration = Duration::from_secs(20);

fn started_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::BuildStarted { build_request_ids, .. } if build_request_ids.contains(&brid))
}

fn finished_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::BuildFinished { build_request_ids, .. } if build_request_ids.contains(&brid))
}

fn completed_for(brid: BuildRequestId) -> impl FnMut(&LegacyEvent) -> bool {
    move |event| matches!(event, LegacyEvent::RequestCompleted { build_request_id, .. } if *build_request_id == brid)
}

/// The simulator on the scheduler DB at `db_url` with one builder,
/// publishing its build messages on `bus` if given.
async fn simulate(db_url: &str, bus: Option<bbb_pulse::Bus>, builder: &str) -> Simulator {
    let builders = vec![SimBuilder::new(builder)];
    let config = SimulatorConfig::new(db_url, bus, builders);
    Simulator::start(config).await.expect("start the simulator")
}

fn poll_fast() -> PollOptions {
    PollOptions {
        interval: Duration::from_millis(100),
        lookback: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_request_runs_to_success_with_events_from_rabbitmq() {
    common::init_tracing();
    let db = fresh_database("sim_success").await.unwrap();
    let vhost = bbb_pulse::testing::fresh_vhost("buildbot-sim")
        .await
        .unwrap();
    let bus = bbb_pulse::Bus::connect(Some(&vhost.url)).await.unwrap();

    let mut config = SchedulerDbConfig::new(&db.url);
    config.poll = None;
    config.pulse = Some(PulseOptions::new(bus.clone()));
    let master = SchedulerDb::new(config).unwrap();
    let mut events = master.events().await.unwrap();

    let simulator = simulate(&db.url, Some(bus.clone()), "linux.build").await;
    let brid = master
        .submit(&common::spec("T-success", "linux.build"))
        .await
        .unwrap();

    let (started, _) = common::wait_for(&mut events, WAIT, started_for(brid)).await;
    match started {
        LegacyEvent::BuildStarted {
            builder,
            master: name,
            task_id,
            source,
            ..
        } => {
            assert_eq!(builder, "linux.build");
            assert_eq!(name.as_deref(), Some("sim-master"));
            assert_eq!(task_id.as_deref(), Some("T-success"));
            assert_eq!(source, EventSource::Pulse);
        }
        other => panic!("{other:?}"),
    }
    let (finished, _) = common::wait_for(&mut events, WAIT, finished_for(brid)).await;
    match finished {
        LegacyEvent::BuildFinished {
            results,
            log_url,
            properties,
            ..
        } => {
            assert_eq!(results, BuildResult::Success);
            assert_eq!(properties["product"], serde_json::json!(["firefox", "bbb"]));
            // The log postrun.py uploaded, gzipped at its URL; the adapter
            // downloads and gunzips it for the bridge.
            let log_url = log_url.expect("a log URL");
            assert_eq!(
                log_url,
                format!("{}/logs/linux.build/0.txt.gz", simulator.web_url())
            );
            let served = reqwest::get(&log_url).await.unwrap();
            assert_eq!(served.headers()["content-type"], "application/gzip");
            assert!(served.bytes().await.unwrap().starts_with(&[0x1f, 0x8b]));
            let text = master
                .fetch_build_log(None, Some(&log_url))
                .await
                .unwrap()
                .expect("the build's log");
            assert!(text.starts_with("builder: linux.build\n"), "{text}");
            assert!(text.contains("results: success (0)\n"), "{text}");
            assert!(
                text.contains("the build of task T-success, build request 1, attempt 1\n"),
                "{text}"
            );
            assert!(
                text.contains("========= Finished run script (results: 0,"),
                "{text}"
            );
            // A build that uploaded no log, and a URL nothing can fetch.
            let missing = log_url.replace("/0.txt.gz", "/7.txt.gz");
            assert_eq!(
                master.fetch_build_log(None, Some(&missing)).await.unwrap(),
                None
            );
            assert_eq!(
                master
                    .fetch_build_log(None, Some("sandbox://m/builders/b/builds/0/log"))
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(master.fetch_build_log(None, None).await.unwrap(), None);
        }
        other => panic!("{other:?}"),
    }
    let (completed, _) = common::wait_for(&mut events, WAIT, completed_for(brid)).await;
    common::assert_completed(&completed, BuildResult::Success, true);
    match master.request_state(brid).await.unwrap() {
        RequestState::Complete {
            results, builds, ..
        } => {
            assert_eq!(results, BuildResult::Success);
            assert_eq!(builds.len(), 1);
            assert!(builds[0].finish_time.is_some());
        }
        other => panic!("{other:?}"),
    }
    simulator.shutdown().await;
    drop(events);
    bus.close().await;
}

/// RETRY puts the same request back; it starts again and then passes. Run
/// once with Pulse (in-process bus) only and once with DB polling only: both
/// sources yield the same sequence.
async fn retry_requeues_the_same_request(pulse: bool) {
    let db = fresh_database(if pulse { "retry_pulse" } else { "retry_poll" })
        .await
        .unwrap();
    let bus = bbb_pulse::Bus::in_process();
    let mut config = SchedulerDbConfig::new(&db.url);
    if pulse {
        config.poll = None;
        config.pulse = Some(PulseOptions::new(bus.clone()));
    } else {
        config.poll = Some(poll_fast());
    }
    let master = SchedulerDb::new(config).unwrap();
    let mut events = master.events().await.unwrap();
    let simulator = simulate(&db.url, pulse.then(|| bus.clone()), "win.test").await;
    let mut spec = common::spec("T-retry", "win.test");
    spec.properties
        .insert("sim_result".to_owned(), serde_json::json!("RETRY,SUCCESS"));
    spec.properties
        .insert("sim_duration_ms".to_owned(), serde_json::json!(300));
    let brid = master.submit(&spec).await.unwrap();
    let expected_source = if pulse {
        EventSource::Pulse
    } else {
        EventSource::DbPoll
    };

    // Collect everything up to the completion: the order across the retry
    // is not fixed (a poll can see the second start before the first
    // finish), so check what arrived, then the order per build.
    let (completed, mut seen) = common::wait_for(&mut events, WAIT, completed_for(brid)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Success,
            ..
        }
    ));
    seen.push(completed);
    assert!(
        seen.iter().all(|e| e.source() == expected_source),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|e| e.build_request_ids() == vec![brid]));
    // Both sources name the task of a start (the DB from the bridge's
    // buildset), so a start that comes before the bridge recorded the
    // request's id is retried rather than dropped.
    assert!(
        seen.iter().all(|e| !matches!(e, LegacyEvent::BuildStarted { task_id, .. } if task_id.as_deref() != Some("T-retry"))),
        "{seen:#?}"
    );
    let started: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            LegacyEvent::BuildStarted { build_number, .. } => Some(*build_number),
            _ => None,
        })
        .collect();
    let finished: Vec<(u64, BuildResult)> = seen
        .iter()
        .filter_map(|e| match e {
            LegacyEvent::BuildFinished {
                build_number,
                results,
                ..
            } => Some((*build_number, *results)),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![0, 1],
        "the same brid runs again as a new build: {seen:#?}"
    );
    assert_eq!(
        finished,
        vec![(0, BuildResult::Retry), (1, BuildResult::Success)]
    );
    let position = |wanted: &dyn Fn(&LegacyEvent) -> bool| seen.iter().position(wanted).unwrap();
    let requeued = position(&|e| matches!(e, LegacyEvent::RequestRequeued { .. }));
    let first_finish = position(&|e| {
        matches!(
            e,
            LegacyEvent::BuildFinished {
                build_number: 0,
                ..
            }
        )
    });
    let second_start = position(&|e| {
        matches!(
            e,
            LegacyEvent::BuildStarted {
                build_number: 1,
                ..
            }
        )
    });
    let second_finish = position(&|e| {
        matches!(
            e,
            LegacyEvent::BuildFinished {
                build_number: 1,
                ..
            }
        )
    });
    assert!(
        first_finish < requeued && second_start < second_finish,
        "{seen:#?}"
    );

    match master.request_state(brid).await.unwrap() {
        RequestState::Complete {
            results: BuildResult::Success,
            builds,
            ..
        } => assert_eq!(builds.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        master
            .find_requests_for_task("T-retry")
            .await
            .unwrap()
            .len(),
        1
    );
    let stats = simulator.stats();
    assert_eq!((stats.started, stats.finished, stats.retried), (2, 2, 1));
    simulator.shutdown().await;
}

#[tokio::test]
async fn retry_requeues_the_same_request_seen_on_pulse() {
    retry_requeues_the_same_request(true).await;
}

#[tokio::test]
async fn retry_requeues_the_same_request_seen_by_polling_alone() {
    retry_requeues_the_same_request(false).await;
}

#[tokio::test]
async fn stop_build_stops_a_running_build_through_the_master_and_self_serve() {
    let db = fresh_database("sim_stop").await.unwrap();
    let mut slow = SimBuilder::new("slow");
    slow.duration = Duration::from_secs(60);
    let idle = SimBuilder {
        slots: 0,
        ..SimBuilder::new("idle")
    };
    let simulator = Simulator::start(SimulatorConfig::new(&db.url, None, vec![slow, idle]))
        .await
        .unwrap();

    // Through the master's stop URL.
    let mut config = SchedulerDbConfig::new(&db.url);
    config.poll = Some(poll_fast());
    config.master_urls.insert(
        simulator.master_name().to_owned(),
        simulator.web_url().to_owned(),
    );
    let master = SchedulerDb::new(config).unwrap();
    let mut events = master.events().await.unwrap();
    let brid = master
        .submit(&common::spec("T-stop", "slow"))
        .await
        .unwrap();
    common::wait_for(&mut events, WAIT, started_for(brid)).await;
    assert_eq!(
        master.cancel_request(brid).await.unwrap(),
        CancelOutcome::AlreadyClaimed
    );
    let StopOutcome::Requested(stopped) =
        master.stop_build(StopTarget::Request(brid)).await.unwrap()
    else {
        panic!("nothing to stop");
    };
    assert_eq!(stopped.len(), 1);
    let (finished, _) = common::wait_for(&mut events, WAIT, finished_for(brid)).await;
    assert!(matches!(
        finished,
        LegacyEvent::BuildFinished {
            results: BuildResult::Cancelled,
            ..
        }
    ));
    let (completed, _) = common::wait_for(&mut events, WAIT, completed_for(brid)).await;
    common::assert_completed(&completed, BuildResult::Cancelled, true);
    assert_eq!(
        master.stop_build(StopTarget::Request(brid)).await.unwrap(),
        StopOutcome::NotRunning
    );

    // Through self-serve: a running build by build id, a pending request.
    let mut config = SchedulerDbConfig::new(&db.url);
    config.poll = None;
    config.selfserve_url = Some(simulator.selfserve_url().into());
    let selfserve = SchedulerDb::new(config).unwrap();
    let running = selfserve
        .submit(&common::spec("T-ss-build", "slow"))
        .await
        .unwrap();
    common::wait_for(&mut events, WAIT, started_for(running)).await;
    let build_id = match selfserve.request_state(running).await.unwrap() {
        RequestState::Running { builds, .. } => builds[0].build_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        selfserve
            .stop_build(StopTarget::Build(build_id))
            .await
            .unwrap(),
        StopOutcome::Requested(vec![build_id])
    );
    let (completed, _) = common::wait_for(&mut events, WAIT, completed_for(running)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted {
            results: BuildResult::Cancelled,
            ..
        }
    ));

    let pending = selfserve
        .submit(&common::spec("T-ss-request", "idle"))
        .await
        .unwrap();
    assert_eq!(
        selfserve.cancel_request(pending).await.unwrap(),
        CancelOutcome::Requested
    );
    // Mozilla's self-serve agent cancelled pending requests with FAILURE.
    assert!(matches!(
        selfserve.request_state(pending).await.unwrap(),
        RequestState::Cancelled {
            results: BuildResult::Failure,
            ..
        }
    ));
    let (completed, _) = common::wait_for(&mut events, WAIT, completed_for(pending)).await;
    assert!(matches!(
        completed,
        LegacyEvent::RequestCompleted { claimed: false, .. }
    ));
    simulator.shutdown().await;
}

/// With Pulse and polling together every change arrives (at least) twice,
/// from both sources, and started/finished may interleave across sources.
/// Consumers dedupe with `dedupe_key` (or, better, idempotent handlers);
/// the set of keys is the same whatever the source.
#[tokio::test]
async fn duplicate_events_from_both_sources_collapse_by_dedupe_key() {
    let db = fresh_database("sim_dupes").await.unwrap();
    let bus = bbb_pulse::Bus::in_process();
    let mut config = SchedulerDbConfig::new(&db.url);
    config.pulse = Some(PulseOptions::new(bus.clone()));
    config.poll = Some(poll_fast());
    let master = SchedulerDb::new(config).unwrap();
    let mut events = master.events().await.unwrap();
    let simulator = simulate(&db.url, Some(bus.clone()), "dup").await;
    let brid = master.submit(&common::spec("T-dup", "dup")).await.unwrap();

    let mut seen = Vec::new();
    let mut completed_sources = HashSet::new();
    while completed_sources.len() < 2 {
        let (event, before) = common::wait_for(&mut events, WAIT, completed_for(brid)).await;
        completed_sources.insert(event.source());
        seen.extend(before);
        seen.push(event);
    }
    let keys: HashSet<String> = seen.iter().map(LegacyEvent::dedupe_key).collect();
    let expected: HashSet<String> = [
        "started/dup/0".to_owned(),
        "finished/dup/0".to_owned(),
        format!("completed/{brid}"),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    for key in &expected {
        let sources: HashSet<EventSource> = seen
            .iter()
            .filter(|e| &e.dedupe_key() == key)
            .map(LegacyEvent::source)
            .collect();
        assert_eq!(sources.len(), 2, "{key} from both sources");
    }
    simulator.shutdown().await;
}

#[tokio::test]
async fn the_simulator_runs_higher_priority_requests_first_and_skips_cancelled_ones() {
    let db = fresh_database("sim_priority").await.unwrap();
    let mut config = SchedulerDbConfig::new(&db.url);
    config.poll = Some(poll_fast());
    let master = SchedulerDb::new(config).unwrap();
    let mut events = master.events().await.unwrap();
    let low = master.submit(&common::spec("T-low", "one")).await.unwrap();
    let cancelled = master
        .submit(&common::spec("T-cancel", "one"))
        .await
        .unwrap();
    let mut high = common::spec("T-high", "one");
    high.priority = 1;
    let high = master.submit(&high).await.unwrap();
    assert_eq!(
        master.cancel_request(cancelled).await.unwrap(),
        CancelOutcome::Cancelled
    );

    let builder = SimBuilder {
        slots: 1,
        ..SimBuilder::new("one")
    };
    let simulator = Simulator::start(SimulatorConfig::new(&db.url, None, vec![builder]))
        .await
        .unwrap();
    let (first, _) = common::wait_for(&mut events, WAIT, |e| {
        matches!(e, LegacyEvent::BuildStarted { .. })
    })
    .await;
    assert_eq!(first.build_request_ids(), vec![high]);
    let (second, _) = common::wait_for(&mut events, WAIT, |e| {
        matches!(e, LegacyEvent::BuildStarted { .. })
    })
    .await;
    assert_eq!(second.build_request_ids(), vec![low]);
    common::wait_for(&mut events, WAIT, completed_for(low)).await;
    assert!(matches!(
        master.request_state(cancelled).await.unwrap(),
        RequestState::Cancelled { .. }
    ));
    assert_eq!(simulator.stats().started, 2);
    simulator.shutdown().await;
}
