//! The sandbox's build scheduler: it starts builds on free slots, runs
//! them for their scripted time and finishes them with their scripted
//! result, sending the events a 0.8 master's messages carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::config::{DURATION_PROPERTY, MAX_DURATION, PROPERTY_SOURCE, RESULT_PROPERTY};
use super::state::{BuildRecord, Request, RunningEntry, Shared, StartedBuild, State, Status};
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
    let default_result = builder_state.config.result_for(attempt);
    let default_duration = builder_state.config.duration;
    let build_id = state.next_build_id;
    state.next_build_id += 1;
    let request = state.requests.get_mut(&brid)?;
    let result = request
        .properties
        .get(RESULT_PROPERTY)
        .and_then(|script| script_result(script, attempt))
        .unwrap_or(default_result);
    let duration = request
        .properties
        .get(DURATION_PROPERTY)
        .and_then(script_duration)
        .unwrap_or(default_duration)
        .min(MAX_DURATION);
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
    let Some(entry) = state.running.remove(&build_id) else {
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
    let properties = build_properties(shared, request, &entry, &log_url);
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

/// The build's properties as `name -> [value, source]`, as a 0.8 master's
/// `log_uploaded` message carries them: the request's (source `bbb`), the
/// build's own and `postrun.py`'s.
fn build_properties(
    shared: &Shared,
    request: &Request,
    entry: &RunningEntry,
    log_url: &str,
) -> BTreeMap<String, Value> {
    let mut properties: BTreeMap<String, Value> = request
        .properties
        .iter()
        .map(|(name, value)| (name.clone(), json!([value, PROPERTY_SOURCE])))
        .collect();
    let stamp = &request.sourcestamp;
    if let Some(branch) = &stamp.branch {
        properties.insert(
            "branch".to_owned(),
            json!([normalize_branch(branch), "Build"]),
        );
    }
    if let Some(revision) = &stamp.revision {
        properties.insert("revision".to_owned(), json!([revision, "Build"]));
    }
    if !stamp.repository.is_empty() {
        properties.insert("repository".to_owned(), json!([stamp.repository, "Build"]));
    }
    if !stamp.project.is_empty() {
        properties.insert("project".to_owned(), json!([stamp.project, "Build"]));
    }
    properties.insert("buildername".to_owned(), json!([entry.builder, "Builder"]));
    properties.insert("buildnumber".to_owned(), json!([entry.number, "Build"]));
    properties.insert("master".to_owned(), json!([shared.master_name, "Build"]));
    properties.insert(
        "slavename".to_owned(),
        json!([format!("{}-slave", entry.builder), "BuildSlave"]),
    );
    properties.insert(
        "request_ids".to_owned(),
        json!([[entry.brid], "postrun.py"]),
    );
    properties.insert(
        "request_times".to_owned(),
        json!([{ entry.brid.to_string(): request.submitted_at }, "postrun.py"]),
    );
    properties.insert("log_url".to_owned(), json!([log_url, "postrun.py"]));
    properties
}

/// The branch as the scheduler-DB adapter stores it: no trailing `/`, and
/// only the path of a URL.
pub(super) fn normalize_branch(branch: &str) -> String {
    let branch = branch.trim_end_matches('/');
    if let Some((_, rest)) = branch.split_once("://") {
        return rest
            .split_once('/')
            .map(|(_, path)| path.trim_matches('/').to_owned())
            .unwrap_or_default();
    }
    branch.to_owned()
}

/// The scripted result of attempt `attempt` (0-based): a result name or
/// code, or a comma-separated list or JSON list of them, the last repeating.
/// `None` when the script cannot be read.
pub fn script_result(script: &Value, attempt: usize) -> Option<BuildResult> {
    let items: Vec<String> = match script {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect(),
        Value::String(text) => text.split(',').map(str::to_owned).collect(),
        Value::Number(number) => vec![number.to_string()],
        _ => return None,
    };
    let item = items.get(attempt).or(items.last())?;
    BuildResult::parse(item)
}

/// The scripted duration: milliseconds as a non-negative number or a string
/// holding one, at most [`MAX_DURATION`]. `None` when it cannot be read.
pub fn script_duration(script: &Value) -> Option<Duration> {
    let millis = match script {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !millis.is_finite() || millis < 0.0 {
        return None;
    }
    let limit = MAX_DURATION.as_millis() as f64;
    Some(Duration::from_millis(millis.min(limit).round() as u64))
}
