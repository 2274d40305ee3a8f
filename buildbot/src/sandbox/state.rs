//! The sandbox's scheduler DB: requests, builds and builders in memory,
//! behind one lock, and the changes made under it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, broadcast, watch};

use bbb_clock::Clock;

use super::config::{SandboxBuilder, SandboxStats};
use crate::messages::BuildSnapshot;
use crate::types::{
    BuildId, BuildInfo, BuildRequestId, BuildResult, EventSource, LegacyEvent, SourceStamp,
    StopTarget,
};

#[derive(Clone, Debug)]
pub(super) struct BuildRecord {
    pub(super) build_id: u64,
    pub(super) number: u64,
    pub(super) start_time: i64,
    pub(super) finish_time: Option<i64>,
    pub(super) results: Option<BuildResult>,
    /// The finished build's properties (what its build-finished event carried).
    pub(super) properties: Option<BTreeMap<String, Value>>,
    /// How the finished build ended (for its log).
    pub(super) ending: Option<Ending>,
}

/// How a sandbox build came to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// Its script ran out.
    Scripted,
    /// It was stopped (it finished CANCELLED).
    Stopped,
    /// `end_build` ended it with a result.
    EndedByHand,
}

impl BuildRecord {
    pub(super) fn info(&self) -> BuildInfo {
        BuildInfo {
            build_id: BuildId(self.build_id),
            number: self.number,
            start_time: self.start_time,
            finish_time: self.finish_time,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Pending,
    Running {
        claimed_at: i64,
    },
    Complete {
        results: BuildResult,
        complete_at: i64,
        claimed: bool,
    },
}

#[derive(Debug)]
pub(super) struct Request {
    pub(super) brid: u64,
    pub(super) buildset_id: u64,
    pub(super) task_id: String,
    pub(super) builder: String,
    pub(super) properties: BTreeMap<String, Value>,
    /// As a scheduler DB stores it (the branch normalised).
    pub(super) sourcestamp: SourceStamp,
    /// The buildset's reason.
    pub(super) reason: String,
    pub(super) priority: i32,
    pub(super) submitted_at: i64,
    pub(super) status: Status,
    pub(super) builds: Vec<BuildRecord>,
}

impl Request {
    pub(super) fn queue_key(&self) -> QueueKey {
        (Reverse(self.priority), self.submitted_at, self.brid)
    }
}

/// Highest priority first, then oldest `submitted_at`, then lowest brid.
pub(super) type QueueKey = (Reverse<i32>, i64, u64);

#[derive(Debug)]
pub(super) struct BuilderState {
    pub(super) config: SandboxBuilder,
    pub(super) queue: BTreeSet<QueueKey>,
    pub(super) in_use: usize,
    pub(super) next_number: u64,
}

impl BuilderState {
    pub(super) fn new(config: SandboxBuilder) -> Self {
        Self {
            config,
            queue: BTreeSet::new(),
            in_use: 0,
            next_number: 0,
        }
    }
}

/// A running build.
#[derive(Debug)]
pub(super) struct RunningEntry {
    /// The requests it serves, each with its build id (one `builds` row
    /// per request, as on a 0.8 master); the first is the one it was
    /// started for, and the `running` map's key.
    pub(super) requests: Vec<(u64, u64)>,
    pub(super) builder: String,
    pub(super) number: u64,
    pub(super) start_time: i64,
    pub(super) result: BuildResult,
    /// The build as its messages would describe it.
    pub(super) snapshot: BuildSnapshot,
    pub(super) stop_requested: bool,
    /// The result it was told to end with now, if any.
    pub(super) ended_as: Option<BuildResult>,
    pub(super) stop: Arc<Notify>,
}

impl RunningEntry {
    /// The build ids of `target` among the ones this build has.
    fn build_ids_of(&self, target: StopTarget) -> Vec<u64> {
        self.requests
            .iter()
            .filter(|(brid, build_id)| match target {
                StopTarget::Request(id) => *brid == id.0,
                StopTarget::Build(id) => *build_id == id.0,
            })
            .map(|(_, build_id)| *build_id)
            .collect()
    }

    /// How it ends (see [`final_result`](Self::final_result)).
    pub(super) fn ending(&self) -> Ending {
        if self.stop_requested {
            Ending::Stopped
        } else if self.ended_as.is_some() {
            Ending::EndedByHand
        } else {
            Ending::Scripted
        }
    }

    /// The result it finishes with: CANCELLED once stopped, else the one it
    /// was told to end with, else its script's.
    pub(super) fn final_result(&self) -> BuildResult {
        if self.stop_requested {
            BuildResult::Cancelled
        } else {
            self.ended_as.unwrap_or(self.result)
        }
    }
}

pub(super) struct State {
    pub(super) next_brid: u64,
    pub(super) next_buildset: u64,
    pub(super) next_build_id: u64,
    pub(super) builders: HashMap<String, BuilderState>,
    pub(super) requests: HashMap<u64, Request>,
    pub(super) by_task: HashMap<String, Vec<u64>>,
    pub(super) running: HashMap<u64, RunningEntry>,
    pub(super) builds_by_number: HashMap<(String, u64), u64>,
    pub(super) events: Option<broadcast::Sender<LegacyEvent>>,
    pub(super) stats: SandboxStats,
    pub(super) shut_down: bool,
}

impl State {
    pub(super) fn emit(&self, event: LegacyEvent) {
        if let Some(events) = &self.events {
            // An error only means nobody is subscribed right now.
            let _ = events.send(event);
        }
    }
}

pub(super) struct Shared {
    pub(super) master_name: String,
    pub(super) accept_any_builder: bool,
    pub(super) builder_names: Vec<String>,
    pub(super) log_url_base: String,
    pub(super) clock: Clock,
    pub(super) state: Mutex<State>,
    pub(super) wake: Notify,
    pub(super) shutdown: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the
        // state is still consistent enough for a sandbox.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn log_url(&self, builder: &str, number: u64) -> String {
        format!(
            "{}/builders/{}/builds/{number}/log",
            self.log_url_base,
            encode_segment(builder)
        )
    }
}

/// What the scheduler hands to a build's task.
pub(super) struct StartedBuild {
    pub(super) build_id: u64,
    pub(super) number: u64,
    pub(super) duration: Duration,
    pub(super) stop: Arc<Notify>,
}

/// Completes a pending request CANCELLED, unclaimed. The caller checked it
/// is pending.
pub(super) fn cancel_pending(shared: &Shared, state: &mut State, brid: u64) {
    let now = shared.clock.now_secs();
    let Some(request) = state.requests.get_mut(&brid) else {
        return;
    };
    let key = request.queue_key();
    let builder = request.builder.clone();
    request.status = Status::Complete {
        results: BuildResult::Cancelled,
        complete_at: now,
        claimed: false,
    };
    if let Some(builder) = state.builders.get_mut(&builder) {
        builder.queue.remove(&key);
    }
    state.stats.cancelled += 1;
    state.emit(LegacyEvent::RequestCompleted {
        build_request_id: BuildRequestId(brid),
        results: BuildResult::Cancelled,
        claimed: false,
        source: EventSource::Pulse,
    });
}

/// Stops a build: it finishes CANCELLED.
pub(super) fn request_stop(entry: &mut RunningEntry) {
    entry.stop_requested = true;
    // `notify_one` keeps a permit, so a build that is not waiting yet still
    // sees it.
    entry.stop.notify_one();
}

/// Ends a build now with `results` (unless it is being stopped).
pub(super) fn end_as(entry: &mut RunningEntry, results: BuildResult) {
    entry.ended_as = Some(results);
    entry.stop.notify_one();
}

/// Applies `signal` to every running build of `target` (a merged build
/// serves several requests); returns the target's build ids in them.
pub(super) fn signal_builds(
    state: &mut State,
    target: StopTarget,
    signal: impl Fn(&mut RunningEntry),
) -> Vec<BuildId> {
    let mut signalled = Vec::new();
    for entry in state.running.values_mut() {
        let ids = entry.build_ids_of(target);
        if !ids.is_empty() {
            signal(entry);
            signalled.extend(ids.into_iter().map(BuildId));
        }
    }
    signalled.sort();
    signalled
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn encode_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::encode_segment;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            encode_segment("Linux x86-64 opt/é"),
            "Linux%20x86-64%20opt%2F%C3%A9"
        );
    }
}
