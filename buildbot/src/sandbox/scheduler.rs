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
        if let Some(build) = start_build(shared, &mut state, &builder, &[brid]) {
            started.push(build);
        } else if let Some(builder) = state.builders.get_mut(&builder) {
            builder.in_use = builder.in_use.saturating_sub(1);
        }
    }
    started
}

/// Starts one build of `builder` serving `brids` (one request, or several
/// merged), all pending on that builder; the build runs the first one's
/// script. `None` (nothing changed) when one is not.
pub(super) fn start_build(
    shared: &Shared,
    state: &mut State,
    builder: &str,
    brids: &[u64],
) -> Option<StartedBuild> {
    let now = shared.clock.now_secs();
    let &lead = brids.first()?;
    let pending_here = |brid: &u64| {
        state
            .requests
            .get(brid)
            .is_some_and(|request| request.status == Status::Pending && request.builder == builder)
    };
    if !brids.iter().all(pending_here) {
        return None;
    }
    let builder_state = state.builders.get_mut(builder)?;
    let number = builder_state.next_number;
    builder_state.next_number += 1;
    let request = state.requests.get(&lead)?;
    let attempt = request.builds.len();
    let (result, duration) = builder_state
        .config
        .script(|name| request.properties.get(name), attempt);
    let mut snapshot = BuildSnapshot::start(builder, number, &shared.master_name, now).serving(
        BuildRequestId(lead),
        request.submitted_at,
        request
            .properties
            .iter()
            .map(|(name, value)| (name.clone(), value.clone(), PROPERTY_SOURCE.to_owned())),
        &request.sourcestamp,
        &request.reason,
    );
    let task_id = request.task_id.clone();
    let mut served = Vec::with_capacity(brids.len());
    for &brid in brids {
        let build_id = state.next_build_id;
        state.next_build_id += 1;
        let request = state.requests.get_mut(&brid)?;
        request.status = Status::Running { claimed_at: now };
        request.builds.push(BuildRecord {
            build_id,
            number,
            start_time: now,
            finish_time: None,
            results: None,
            properties: None,
            ending: None,
        });
        if brid != lead {
            snapshot.request_ids.push(BuildRequestId(brid));
            snapshot
                .request_times
                .insert(BuildRequestId(brid), request.submitted_at);
        }
        let key = request.queue_key();
        if let Some(builder) = state.builders.get_mut(builder) {
            builder.queue.remove(&key);
        }
        served.push((brid, build_id));
    }
    let stop = Arc::new(Notify::new());
    let lead_build_id = served[0].1;
    state.running.insert(
        lead_build_id,
        RunningEntry {
            requests: served.clone(),
            builder: builder.to_owned(),
            number,
            start_time: now,
            result,
            snapshot,
            stop_requested: false,
            ended_as: None,
            stop: stop.clone(),
        },
    );
    state
        .builds_by_number
        .insert((builder.to_owned(), number), lead);
    state.stats.started += 1;
    state.emit(LegacyEvent::BuildStarted {
        build_request_ids: served
            .iter()
            .map(|(brid, _)| BuildRequestId(*brid))
            .collect(),
        builder: builder.to_owned(),
        build_number: number,
        build_ids: served.iter().map(|(_, id)| BuildId(*id)).collect(),
        master: Some(shared.master_name.clone()),
        // A request of the master's own schedulers names no task.
        task_id: Some(task_id).filter(|t| !t.is_empty()),
        source: EventSource::Pulse,
    });
    tracing::info!(build_request.ids = ?brids, %builder, build.number = number, build.id = lead_build_id, attempt, %result, ?duration, "sandbox build started");
    Some(StartedBuild {
        build_id: lead_build_id,
        number,
        duration,
        stop,
    })
}

pub(super) async fn run_build(
    shared: Arc<Shared>,
    build: StartedBuild,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep(build.duration) => {}
        _ = build.stop.notified() => {}
        _ = shutdown.wait_for(|down| *down) => return,
    }
    finish_build(&shared, build.build_id);
    shared.wake.notify_one();
}

fn finish_build(shared: &Shared, build_id: u64) {
    let now = shared.clock.now_secs();
    let mut state = shared.lock();
    if state.shut_down {
        return;
    }
    let Some(mut entry) = state.running.remove(&build_id) else {
        return;
    };
    let results = entry.final_result();
    let ending = entry.ending();
    if entry.stop_requested {
        state.stats.stopped += 1;
    }
    if let Some(builder) = state.builders.get_mut(&entry.builder) {
        builder.in_use = builder.in_use.saturating_sub(1);
    }
    state.stats.finished += 1;
    let log_url = shared.log_url(&entry.builder, entry.number);
    // What its `log_uploaded` message would carry (the build id standing
    // for the status-DB id).
    entry.snapshot.results = Some(results);
    entry.snapshot.finish_time = Some(now as f64);
    entry.snapshot.log_url = Some(log_url.clone());
    let properties = entry.snapshot.finished_properties(build_id);
    let mut task_id = None;
    let mut requeued = Vec::new();
    let mut outcomes = Vec::new();
    for &(brid, id) in &entry.requests {
        let Some(request) = state.requests.get_mut(&brid) else {
            continue;
        };
        if let Some(record) = request
            .builds
            .iter_mut()
            .find(|record| record.build_id == id)
        {
            record.finish_time = Some(now);
            record.results = Some(results);
            record.properties = Some(properties.clone());
            record.ending = Some(ending);
        }
        task_id.get_or_insert_with(|| request.task_id.clone());
        let requeue = results == BuildResult::Retry && request.status != Status::Pending;
        if requeue {
            request.status = Status::Pending;
            requeued.push(request.queue_key());
        } else {
            request.status = Status::Complete {
                results,
                complete_at: now,
                claimed: true,
            };
        }
        outcomes.push((BuildRequestId(brid), requeue));
    }
    if !requeued.is_empty() {
        state.stats.retried += 1;
        if let Some(builder) = state.builders.get_mut(&entry.builder) {
            builder.queue.extend(requeued);
        }
    }
    state.emit(LegacyEvent::BuildFinished {
        build_request_ids: outcomes.iter().map(|(brid, _)| *brid).collect(),
        builder: entry.builder.clone(),
        build_number: entry.number,
        build_ids: entry.requests.iter().map(|(_, id)| BuildId(*id)).collect(),
        results,
        master: Some(shared.master_name.clone()),
        task_id: task_id.filter(|t| !t.is_empty()),
        properties,
        log_url: Some(log_url),
        source: EventSource::Pulse,
    });
    for (brid, requeue) in outcomes {
        state.emit(if requeue {
            LegacyEvent::RequestRequeued {
                build_request_id: brid,
                source: EventSource::Pulse,
            }
        } else {
            LegacyEvent::RequestCompleted {
                build_request_id: brid,
                results,
                claimed: true,
                source: EventSource::Pulse,
            }
        });
    }
    let brids: Vec<u64> = entry.requests.iter().map(|(brid, _)| *brid).collect();
    tracing::info!(build_request.ids = ?brids, builder = %entry.builder, build.number = entry.number, build.id = build_id, %results, "sandbox build finished");
}
