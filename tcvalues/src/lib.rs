#![doc = include_str!("../README.md")]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that is not one of the type's JSON spellings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The type expected.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {}", self.value, self.kind)
    }
}

impl std::error::Error for UnknownValue {}

/// Defines an enum with its JSON spellings (`Variant => "spelling"`),
/// `ALL`, `as_str`, `FromStr`, `Display` and serde.
macro_rules! values {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in the order upstream lists them.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The JSON spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

values! {
    /// A task's priority, highest first. (`normal` is no longer accepted
    /// upstream.)
    #[derive(Default)]
    Priority, "task priority" {
        /// `highest`.
        Highest => "highest",
        /// `very-high`.
        VeryHigh => "very-high",
        /// `high`.
        High => "high",
        /// `medium`.
        Medium => "medium",
        /// `low`.
        Low => "low",
        /// `very-low`.
        VeryLow => "very-low",
        /// `lowest`: the default of a task that names none.
        #[default]
        Lowest => "lowest",
    }
}

impl Priority {
    /// Rank for ordering pending runs: 7 for `highest` down to 1 for `lowest`.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Highest => 7,
            Priority::VeryHigh => 6,
            Priority::High => 5,
            Priority::Medium => 4,
            Priority::Low => 3,
            Priority::VeryLow => 2,
            Priority::Lowest => 1,
        }
    }
}

values! {
    /// A task's state: that of its last run, or `unscheduled`.
    TaskState, "task state" {
        /// No run yet: waiting for its dependencies or `scheduleTask`.
        Unscheduled => "unscheduled",
        /// The last run waits for a worker.
        Pending => "pending",
        /// The last run is claimed.
        Running => "running",
        /// The last run completed.
        Completed => "completed",
        /// The last run failed.
        Failed => "failed",
        /// The last run was resolved as an exception.
        Exception => "exception",
    }
}

impl TaskState {
    /// Whether the task is resolved (completed, failed or exception): it
    /// has runs and the last one is resolved.
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Exception
        )
    }
}

impl From<RunState> for TaskState {
    /// The state of a task whose last run is in `state`.
    fn from(state: RunState) -> TaskState {
        match state {
            RunState::Pending => TaskState::Pending,
            RunState::Running => TaskState::Running,
            RunState::Completed => TaskState::Completed,
            RunState::Failed => TaskState::Failed,
            RunState::Exception => TaskState::Exception,
        }
    }
}

values! {
    /// A run's state.
    RunState, "run state" {
        /// Waiting for a worker.
        Pending => "pending",
        /// Claimed by a worker.
        Running => "running",
        /// Resolved: the task's work succeeded.
        Completed => "completed",
        /// Resolved: the task's work failed.
        Failed => "failed",
        /// Resolved: something other than the task's work went wrong.
        Exception => "exception",
    }
}

impl RunState {
    /// Whether the run is resolved (completed, failed or exception).
    pub fn is_resolved(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }
}

values! {
    /// Why a run was created (`reasonCreated`).
    ReasonCreated, "creation reason" {
        /// The task's first run: created with no dependencies left, or by
        /// `scheduleTask`.
        Scheduled => "scheduled",
        /// The previous run's worker shut down or its claim expired.
        Retry => "retry",
        /// The previous run ended `intermittent-task`.
        TaskRetry => "task-retry",
        /// `rerunTask`.
        Rerun => "rerun",
        /// Created already resolved: an unscheduled task was cancelled or
        /// passed its deadline.
        Exception => "exception",
    }
}

values! {
    /// Why a run was resolved (`reasonResolved`).
    ReasonResolved, "resolution reason" {
        /// `reportCompleted`.
        Completed => "completed",
        /// `reportFailed`.
        Failed => "failed",
        /// The task passed its deadline.
        DeadlineExceeded => "deadline-exceeded",
        /// `cancelTask`.
        Canceled => "canceled",
        /// The worker reported the task superseded.
        Superseded => "superseded",
        /// The worker's claim expired.
        ClaimExpired => "claim-expired",
        /// The worker shut down: the run is retried.
        WorkerShutdown => "worker-shutdown",
        /// The worker could not read the payload.
        MalformedPayload => "malformed-payload",
        /// The worker lacked a resource the task needs.
        ResourceUnavailable => "resource-unavailable",
        /// The worker failed.
        InternalError => "internal-error",
        /// The task failed in a way a retry may fix: the run is retried.
        IntermittentTask => "intermittent-task",
    }
}

values! {
    /// What a worker may give `reportException`.
    ExceptionReason, "exception reason" {
        /// The worker is shutting down: the queue retries the task.
        WorkerShutdown => "worker-shutdown",
        /// The payload cannot be run.
        MalformedPayload => "malformed-payload",
        /// A resource the task needs is missing.
        ResourceUnavailable => "resource-unavailable",
        /// The worker itself failed.
        InternalError => "internal-error",
        /// Another task made this one unnecessary.
        Superseded => "superseded",
        /// The task failed in a way a retry may fix.
        IntermittentTask => "intermittent-task",
    }
}

impl ExceptionReason {
    /// Whether upstream's `reportException` still accepts it (`superseded`
    /// is no longer accepted).
    pub fn is_accepted(self) -> bool {
        self != ExceptionReason::Superseded
    }
}

impl From<ExceptionReason> for ReasonResolved {
    fn from(reason: ExceptionReason) -> ReasonResolved {
        match reason {
            ExceptionReason::WorkerShutdown => ReasonResolved::WorkerShutdown,
            ExceptionReason::MalformedPayload => ReasonResolved::MalformedPayload,
            ExceptionReason::ResourceUnavailable => ReasonResolved::ResourceUnavailable,
            ExceptionReason::InternalError => ReasonResolved::InternalError,
            ExceptionReason::Superseded => ReasonResolved::Superseded,
            ExceptionReason::IntermittentTask => ReasonResolved::IntermittentTask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + fmt::Debug + PartialEq + FromStr + Serialize + for<'de> Deserialize<'de>,
        T: fmt::Display,
    {
        for value in all {
            let text = value.to_string();
            assert_eq!(text.parse::<T>().ok(), Some(*value));
            let json = serde_json::to_value(value).unwrap();
            assert_eq!(json, serde_json::Value::String(text.clone()));
            assert_eq!(serde_json::from_value::<T>(json).unwrap(), *value);
        }
    }

    #[test]
    fn every_value_round_trips_through_its_spelling_and_json() {
        round_trips(Priority::ALL);
        round_trips(TaskState::ALL);
        round_trips(RunState::ALL);
        round_trips(ReasonCreated::ALL);
        round_trips(ReasonResolved::ALL);
        round_trips(ExceptionReason::ALL);
    }

    #[test]
    fn unknown_spellings_are_refused() {
        assert_eq!(
            "normal".parse::<Priority>(),
            Err(UnknownValue {
                kind: "task priority",
                value: "normal".into()
            })
        );
        assert!("canceled ".parse::<ReasonResolved>().is_err());
        assert!(serde_json::from_str::<RunState>("\"done\"").is_err());
    }

    #[test]
    fn priority_ranks_follow_upstream_order() {
        let ranks: Vec<i64> = Priority::ALL.iter().map(|p| p.rank()).collect();
        assert_eq!(ranks, vec![7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(Priority::default(), Priority::Lowest);
    }

    #[test]
    fn resolved_run_states() {
        assert!(!RunState::Pending.is_resolved());
        assert!(!RunState::Running.is_resolved());
        assert!(RunState::Exception.is_resolved());
    }

    #[test]
    fn a_task_is_in_its_last_runs_state() {
        for state in RunState::ALL {
            let task = TaskState::from(*state);
            assert_eq!(task.as_str(), state.as_str());
            assert_eq!(task.is_resolved(), state.is_resolved());
        }
        assert!(!TaskState::Unscheduled.is_resolved());
    }

    #[test]
    fn superseded_is_no_longer_accepted() {
        let accepted: Vec<&str> = ExceptionReason::ALL
            .iter()
            .filter(|r| r.is_accepted())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            accepted,
            [
                "worker-shutdown",
                "malformed-payload",
                "resource-unavailable",
                "internal-error",
                "intermittent-task"
            ]
        );
    }
}
