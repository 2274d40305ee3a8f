//! [`Outcome`]: what one action of the bridge did, for its callers, logs and
//! the `outcome` label of `bbb_bridge_events_total`.

/// What one action of the bridge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A build request was injected for the run.
    Injected,
    /// A request an earlier attempt injected but never recorded was found and recorded.
    Recovered,
    /// A rerun took over the previous run's request, which still waited.
    Reused,
    /// A retry run carries on with the RETRY'd run's request.
    CarriedOver,
    /// The run already has its row: nothing to do.
    Duplicate,
    /// The task cannot be bridged: resolved `exception/malformed-payload` with the reason in its log.
    Refused,
    /// The task was refused before: nothing to do.
    RefusedAlready,
    /// The builder is ignored by configuration.
    Ignored,
    /// The task belongs to another task queue.
    OtherQueue,
    /// The queue does not know the task.
    UnknownTask,
    /// Another instance recorded its request first (or the run was resolved): ours was cancelled.
    LostRace,
    /// The exception's reason needs nothing from the bridge.
    NothingToDo,
    /// A row was inserted resolved, so a late task-pending injects nothing.
    Blocked,
    /// The request was cancelled or its build stopped, and the row settled.
    Cancelled,
    /// The event is about requests the bridge did not inject.
    NotOurs,
    /// A request went back to the queue; the build's RETRY event is the one acted on.
    RequeueNoted,
    /// The build started: the run is claimed.
    Claimed,
    /// The event is about a build of an earlier run of the request: ignored.
    StaleBuild,
    /// The row is not in a state the event applies to.
    NotActive,
    /// The task no longer exists in the queue: its rows are forgotten.
    TaskGone,
    /// The queue resolved the run: its build was stopped and the row settled.
    Stopped,
    /// The queue refused the claim and the run is not resolved: the reflector looks again.
    ClaimRefused,
    /// The request serves a later run now: nothing of it is stopped.
    CarriedOn,
    /// The build ended RETRY: the run is resolved `exception/worker-shutdown` and the next run keeps the request.
    Retried,
    /// The build ended RETRY with no retry left: the request's next build is stopped.
    RetriesExhausted,
    /// The RETRY is recorded but the next run is not there yet: looked at again.
    RetryPending,
    /// The run was resolved before: only the row is settled.
    AlreadyResolved,
    /// The task has no such run.
    NoSuchRun,
    /// The build finished: artifacts attached, the run resolved.
    Resolved,
    /// The request was cancelled on the Buildbot side: the task is cancelled.
    CancelledByMaster,
    /// The claim was renewed.
    Reclaimed,
    /// The row, the request and the run agree: nothing to do.
    InStep,
    /// The master does not know the row's request.
    UnknownRequest,
    /// A row without a request whose run moved on was settled.
    Settled,
    /// The task passed its deadline: its build was stopped and the row settled.
    Deadline,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: &[Outcome] = &[
        Outcome::Injected,
        Outcome::Recovered,
        Outcome::Reused,
        Outcome::CarriedOver,
        Outcome::Duplicate,
        Outcome::Refused,
        Outcome::RefusedAlready,
        Outcome::Ignored,
        Outcome::OtherQueue,
        Outcome::UnknownTask,
        Outcome::LostRace,
        Outcome::NothingToDo,
        Outcome::Blocked,
        Outcome::Cancelled,
        Outcome::NotOurs,
        Outcome::RequeueNoted,
        Outcome::Claimed,
        Outcome::StaleBuild,
        Outcome::NotActive,
        Outcome::TaskGone,
        Outcome::Stopped,
        Outcome::ClaimRefused,
        Outcome::CarriedOn,
        Outcome::Retried,
        Outcome::RetriesExhausted,
        Outcome::RetryPending,
        Outcome::AlreadyResolved,
        Outcome::NoSuchRun,
        Outcome::Resolved,
        Outcome::CancelledByMaster,
        Outcome::Reclaimed,
        Outcome::InStep,
        Outcome::UnknownRequest,
        Outcome::Settled,
        Outcome::Deadline,
    ];

    /// The outcome's name in logs and metrics (`kebab-case`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Recovered => "recovered",
            Outcome::Reused => "reused",
            Outcome::CarriedOver => "carried-over",
            Outcome::Duplicate => "duplicate",
            Outcome::Refused => "refused",
            Outcome::RefusedAlready => "refused-already",
            Outcome::Ignored => "ignored",
            Outcome::OtherQueue => "other-queue",
            Outcome::UnknownTask => "unknown-task",
            Outcome::LostRace => "lost-race",
            Outcome::NothingToDo => "nothing-to-do",
            Outcome::Blocked => "blocked",
            Outcome::Cancelled => "cancelled",
            Outcome::NotOurs => "not-ours",
            Outcome::RequeueNoted => "requeue-noted",
            Outcome::Claimed => "claimed",
            Outcome::StaleBuild => "stale-build",
            Outcome::NotActive => "not-active",
            Outcome::TaskGone => "task-gone",
            Outcome::Stopped => "stopped",
            Outcome::ClaimRefused => "claim-refused",
            Outcome::CarriedOn => "carried-on",
            Outcome::Retried => "retried",
            Outcome::RetriesExhausted => "retries-exhausted",
            Outcome::RetryPending => "retry-pending",
            Outcome::AlreadyResolved => "already-resolved",
            Outcome::NoSuchRun => "no-such-run",
            Outcome::Resolved => "resolved",
            Outcome::CancelledByMaster => "cancelled-by-master",
            Outcome::Reclaimed => "reclaimed",
            Outcome::InStep => "in-step",
            Outcome::UnknownRequest => "unknown-request",
            Outcome::Settled => "settled",
            Outcome::Deadline => "deadline",
        }
    }

    /// Whether the action handed a pending run to the master: a request
    /// injected, recovered, reused or carried over, or the task refused.
    pub fn took_the_run(self) -> bool {
        matches!(
            self,
            Outcome::Injected
                | Outcome::Recovered
                | Outcome::Reused
                | Outcome::Refused
                | Outcome::CarriedOver
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_kebab_case() {
        let mut names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
    }
}
