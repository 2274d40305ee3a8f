//! The sandbox's build scheduler: it starts builds on free slots, runs
//! them for their scripted time and finishes them with their scripted
//! result, sending the events a 0.8 master's messages carry.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::state::{BuildRecord, RunningEntry, Shared, StartedBuild, State, Status};
use crate::messages::BuildSnapshot;
use crate::scheduler_db::PROPERTY_SOURCE;
use crate::types::{BuildId, BuildRequestId, BuildResult, EventSource, LegacyEvent};

pub(super) async fn schedule_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        for build in start_builds(&shared) {
            tokio::spawn(run_build(shared.clone(), build, shutdown.clone()));
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// Starts builds on every free slot, each builder's queue in order.
fn start_builds(shared: &Shared) -> Vec<StartedBuild> {
    let mut state = shared.lock();
    if state.shut_down {
        return Vec::new();
    }
    let mut picks = Vec::new();
    for (name, builder) in state.builders.iter_mut() {
        while builder.in_use < builder.config.slots {
            let Some(key) = builder.queue.pop_first() else {
                break;
            };
            builder.in_use += 1;
            picks.push((name.clone(), key.2));
        }
    }
    picks.sort_by_key(|(_, brid)| *brid);
    let mut started = Vec::with_capacity(picks.len());
    for (builder, brid) in picks {
        if let Some(build) = start_build(shared, &mut state, &builder, brid) {
            started.push(build);
        } else if let Some(builder) = state.builders.get_mut(&builder) {
            builder.in_use = builder.in_use.saturating_sub(1);
        }
    }
    started
}

fn start_build(
    shared: &Shared,
    state: &mut State,
    builder: &str,
    brid: u64,
) -> Option<StartedBuild> {
    let now = shared.clock.now();
    let attempt = match state.requests.get(&brid) {
        Some(request) if request.status == Status::Pending => request.builds.len(),
        _ => return None,
    };
    let builder_state = state.builders.get_mut(builder)?;
    let number = builder_state.next_number;
    builder_state.next_number += 1;
    let config = &builder_state.config;
    let build_id = state.next_build_id;
    state.next_build_id += 1;
    let request = state.requests.get_mut(&brid)?;
    let (result, duration) = config.script(|name| request.properties.get(name), attempt);
    let snapshot = BuildSnapshot::start(builder, number, &shared.master_name, now).serving(
        BuildRequestId(brid),
        request.submitted_at,
        request
            .properties
            .iter()
            .map(|(name, value)| (name.clone(), value.clone(), PROPERTY_SOURCE.to_owned())),
        &request.sourcestamp,
        &request.reason,
    );
    request.status = Status::Running { claimed_at: now };
    request.builds.push(BuildRecord {
        build_id,
        number,
        start_time: now,
        finish_time: None,
        results: None,
        properties: None,
    });
    let task_id = request.task_id.clone();
    let stop = Arc::new(Notify::new());
    state.running.insert(
        build_id,
        RunningEntry {
            brid,
            builder: builder.to_owned(),
            number,
            start_time: now,
            result,
            snapshot,
            stop_requested: false,
            stop: stop.clone(),
        },
    );
    state
        .builds_by_number
        .insert((builder.to_owned(), number), brid);
    state.stats.started += 1;
    state.emit(LegacyEvent::BuildStarted {
        build_request_ids: vec![BuildRequestId(brid)],
        builder: builder.to_owned(),
        build_number: number,
        build_ids: vec![BuildId(build_id)],
        master: Some(shared.master_name.clone()),
        task_id: Some(task_id),
        source: EventSource::Pulse,
    });
    tracing::info!(build_request.id = brid, %builder, build.number = number, build.id = build_id, attempt, %result, ?duration, "sandbox build started");
    Some(StartedBuild {
        build_id,
        duration,
        stop,
    })
}

async fn run_build(shared: Arc<Shared>, build: StartedBuild, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(build.duration) => {}
        _ = build.stop.notified() => {}
        _ = shutdown.wait_for(|down| *down) => return,
    }
    finish_build(&shared, build.build_id);
    shared.wake.notify_one();
}

fn finish_build(shared: &Shared, build_id: u64) {
    let now = shared.clock.now();
    let mut state = shared.lock();
    if state.shut_down {
        return;
    }
    let Some(mut entry) = state.running.remove(&build_id) else {
        return;
    };
    let results = if entry.stop_requested {
        state.stats.stopped += 1;
        BuildResult::Cancelled
    } else {
        entry.result
    };
    if let Some(builder) = state.builders.get_mut(&entry.builder) {
        builder.in_use = builder.in_use.saturating_sub(1);
    }
    state.stats.finished += 1;
    let log_url = shared.log_url(&entry.builder, entry.number);
    let Some(request) = state.requests.get_mut(&entry.brid) else {
        return;
    };
    // What its `log_uploaded` message would carry (the build id standing
    // for the status-DB id).
    entry.snapshot.results = Some(results);
    entry.snapshot.finish_time = Some(now as f64);
    entry.snapshot.log_url = Some(log_url.clone());
    let properties = entry.snapshot.finished_properties(build_id);
    if let Some(record) = request
        .builds
        .iter_mut()
        .find(|record| record.build_id == build_id)
    {
        record.finish_time = Some(now);
        record.results = Some(results);
        record.properties = Some(properties.clone());
    }
    let task_id = request.task_id.clone();
    let requeue = results == BuildResult::Retry && request.status != Status::Pending;
    let mut queue_key = None;
    if requeue {
        request.status = Status::Pending;
        queue_key = Some(request.queue_key());
    } else {
        request.status = Status::Complete {
            results,
            complete_at: now,
            claimed: true,
        };
    }
    if let Some(key) = queue_key {
        state.stats.retried += 1;
        if let Some(builder) = state.builders.get_mut(&entry.builder) {
            builder.queue.insert(key);
        }
    }
    state.emit(LegacyEvent::BuildFinished {
        build_request_ids: vec![BuildRequestId(entry.brid)],
        builder: entry.builder.clone(),
        build_number: entry.number,
        build_ids: vec![BuildId(build_id)],
        results,
        master: Some(shared.master_name.clone()),
        task_id: Some(task_id),
        properties,
        log_url: Some(log_url),
        source: EventSource::Pulse,
    });
    state.emit(if requeue {
        LegacyEvent::RequestRequeued {
            build_request_id: BuildRequestId(entry.brid),
            source: EventSource::Pulse,
        }
    } else {
        LegacyEvent::RequestCompleted {
            build_request_id: BuildRequestId(entry.brid),
            results,
            claimed: true,
            source: EventSource::Pulse,
        }
    });
    tracing::info!(build_request.id = entry.brid, builder = %entry.builder, build.number = entry.number, build.id = build_id, %results, "sandbox build finished");
}
