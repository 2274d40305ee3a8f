//! What the record holds: sides, normalised results, observations and the
//! label ↔ builder mapping.

use serde::{Deserialize, Serialize};

/// Where one result came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// A task run by a native worker (any task queue but the bridge's).
    Native,
    /// A task on the bridge's task queue, run by a legacy builder.
    Bridged,
    /// A build the legacy master ran by itself (its own schedulers).
    Buildbot,
}

impl Side {
    /// Every side, in the order the API lists them.
    pub const ALL: [Side; 3] = [Side::Native, Side::Bridged, Side::Buildbot];

    /// Its name in the API and the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Bridged => "bridged",
            Side::Buildbot => "buildbot",
        }
    }

    /// The side named `s`.
    pub fn parse(s: &str) -> Option<Side> {
        Side::ALL.into_iter().find(|side| side.as_str() == s)
    }
}

/// A result, normalised across the queue and Buildbot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Passed (a completed task; a build with SUCCESS).
    Success,
    /// Passed with warnings (Buildbot's WARNINGS).
    Warnings,
    /// Failed (a failed task; FAILURE).
    Failure,
    /// Skipped (Buildbot's SKIPPED).
    Skipped,
    /// An infrastructure problem (a task exception other than the ones below; EXCEPTION).
    Exception,
    /// Run again (a task run resolved `worker-shutdown` or `intermittent-task`; RETRY).
    Retry,
    /// Cancelled (a task `canceled` or `superseded`; CANCELLED).
    Cancelled,
}

/// What an outcome says about the job, for comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success or warnings.
    Pass,
    /// Failure.
    Fail,
    /// Anything else: says nothing about the job.
    Inconclusive,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Warnings,
        Outcome::Failure,
        Outcome::Skipped,
        Outcome::Exception,
        Outcome::Retry,
        Outcome::Cancelled,
    ];

    /// Its name in the API and the tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Warnings => "warnings",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
            Outcome::Exception => "exception",
            Outcome::Retry => "retry",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome named `s`.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A task run's outcome from its state (`completed`, `failed`,
    /// `exception`) and resolution reason.
    pub fn of_task_run(state: &str, reason: &str) -> Option<Outcome> {
        Some(match (state, reason) {
            ("completed", _) => Outcome::Success,
            ("failed", _) => Outcome::Failure,
            ("exception", "worker-shutdown" | "intermittent-task") => Outcome::Retry,
            ("exception", "canceled" | "superseded") => Outcome::Cancelled,
            ("exception", _) => Outcome::Exception,
            _ => return None,
        })
    }

    /// A Buildbot build's outcome from its `results` code (0 SUCCESS,
    /// 1 WARNINGS, 2 FAILURE, 3 SKIPPED, 4 EXCEPTION, 5 RETRY, 6 CANCELLED).
    pub fn of_buildbot_results(code: i64) -> Option<Outcome> {
        Some(match code {
            0 => Outcome::Success,
            1 => Outcome::Warnings,
            2 => Outcome::Failure,
            3 => Outcome::Skipped,
            4 => Outcome::Exception,
            5 => Outcome::Retry,
            6 => Outcome::Cancelled,
            _ => return None,
        })
    }

    /// What it says about the job.
    pub fn verdict(self) -> Verdict {
        match self {
            Outcome::Success | Outcome::Warnings => Verdict::Pass,
            Outcome::Failure => Verdict::Fail,
            _ => Verdict::Inconclusive,
        }
    }
}

/// One result of one job on one side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Where it ran.
    pub side: Side,
    /// What it is on its side, unique there: `<taskId>/<runId>` for a task's
    /// run, the build's id for a build. Recording the same one again replaces it.
    pub source_id: String,
    /// The branch (taskgraph's `project`; the build's branch).
    pub branch: String,
    /// The revision built.
    pub revision: String,
    /// The job's key on its side: a task's label, a build's builder name.
    pub job: String,
    /// The builder: a build's, or the one a bridged task's payload names.
    pub builder: Option<String>,
    /// The Treeherder symbol (`T(talos)`) of a task with `extra.treeherder`.
    pub symbol: Option<String>,
    /// The normalised result.
    pub result: Outcome,
    /// When it started (ms), if known.
    pub started: Option<i64>,
    /// When it finished (ms).
    pub finished: i64,
}

impl Observation {
    /// Its runtime in milliseconds, when it has a start.
    pub fn runtime_ms(&self) -> Option<i64> {
        self.started.map(|s| (self.finished - s).max(0))
    }
}

/// One entry of the mapping: `label` (a task's) and `builder` (the legacy
/// master's) are the same job on `branch`, or on every branch when `branch`
/// is [`ALL_BRANCHES`]. A branch's own entry wins over an all-branches one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pairing {
    /// The branch, or `*`.
    #[serde(default = "all_branches")]
    pub branch: String,
    /// The task label.
    pub label: String,
    /// The builder name.
    pub builder: String,
}

/// The branch of a mapping entry that holds for every branch.
pub const ALL_BRANCHES: &str = "*";

fn all_branches() -> String {
    ALL_BRANCHES.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_runs_and_builds_normalise_to_the_same_outcomes() {
        assert_eq!(
            Outcome::of_task_run("completed", "completed"),
            Some(Outcome::Success)
        );
        assert_eq!(
            Outcome::of_task_run("failed", "failed"),
            Some(Outcome::Failure)
        );
        assert_eq!(
            Outcome::of_task_run("exception", "worker-shutdown"),
            Some(Outcome::Retry)
        );
        assert_eq!(
            Outcome::of_task_run("exception", "canceled"),
            Some(Outcome::Cancelled)
        );
        assert_eq!(
            Outcome::of_task_run("exception", "deadline-exceeded"),
            Some(Outcome::Exception)
        );
        assert_eq!(Outcome::of_task_run("pending", ""), None);
        let codes: Vec<_> = (0..7)
            .map(|c| Outcome::of_buildbot_results(c).unwrap())
            .collect();
        assert_eq!(codes, Outcome::ALL);
        assert_eq!(Outcome::of_buildbot_results(7), None);
        assert_eq!(Outcome::Warnings.verdict(), Verdict::Pass);
        assert_eq!(Outcome::Failure.verdict(), Verdict::Fail);
        assert_eq!(Outcome::Retry.verdict(), Verdict::Inconclusive);
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for s in Side::ALL {
            assert_eq!(Side::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_mapping_entry_without_a_branch_holds_for_all() {
        let p: Pairing =
            toml::from_str("label = \"test-linux\"\nbuilder = \"linux.test\"").unwrap();
        assert_eq!(p.branch, ALL_BRANCHES);
        assert!(toml::from_str::<Pairing>("label = \"a\"\nbuilder = \"b\"\nx = 1").is_err());
    }
}
