//! The queue's data model: task definitions, runs and statuses, in the exact JSON
//! shapes of the TaskCluster queue API v1. Priorities, states and reasons are
//! [`bbb_tcvalues`] enums: they are parsed at the API boundary and stored in their
//! JSON spelling.

use crate::time::{Millis, fmt_ms};
use bbb_tcvalues::{ExceptionReason, Priority, ReasonCreated, ReasonResolved, RunState, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A value read back from the store in its JSON spelling (a state or a
/// reason); one that is not is an internal error.
pub(crate) fn stored<T: std::str::FromStr<Err = bbb_tcvalues::UnknownValue>>(
    text: &str,
) -> crate::error::Result<T> {
    text.parse()
        .map_err(|e| crate::error::ApiError::Internal(format!("stored value: {e}")))
}

/// The body of `createTask`, exactly as upstream's `create-task-request` schema:
/// unknown fields are rejected.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CreateTaskRequest {
    pub provisioner_id: Option<String>,
    pub worker_type: Option<String>,
    pub task_queue_id: Option<String>,
    pub scheduler_id: Option<String>,
    pub project_id: Option<String>,
    pub task_group_id: Option<String>,
    pub dependencies: Option<Vec<String>>,
    pub requires: Option<String>,
    pub routes: Option<Vec<String>>,
    pub priority: Option<String>,
    pub retries: Option<i64>,
    pub created: String,
    pub deadline: String,
    pub expires: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub payload: Map<String, Value>,
    pub metadata: Metadata,
    pub tags: Option<Map<String, Value>>,
    pub extra: Option<Map<String, Value>>,
}

/// Human-readable task metadata.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub source: String,
}

/// A stored task definition with every default filled in: what `task()` returns.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct TaskDef {
    pub provisioner_id: String,
    pub worker_type: String,
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: String,
    pub dependencies: Vec<String>,
    pub requires: String,
    pub routes: Vec<String>,
    pub priority: Priority,
    pub retries: i64,
    pub created: String,
    pub deadline: String,
    pub expires: String,
    pub scopes: Vec<String>,
    pub payload: Map<String, Value>,
    pub metadata: Metadata,
    pub tags: Map<String, Value>,
    pub extra: Map<String, Value>,
}

/// The route prefix that gives a task its coalescing key: `coalesce.v1.<key>`
/// (as Mozilla's 2016 task graphs named it).
pub const COALESCE_ROUTE: &str = "coalesce.v1.";

impl TaskDef {
    /// The key under which this task may supersede, and be superseded by, the
    /// other tasks of its task queue (the first `coalesce.v1.<key>` route with
    /// a non-empty key), or `None` when it has none or is exempt by its own
    /// definition (see [`TaskDef::coalescing_exemption`]).
    pub fn coalesce_key(&self) -> Option<&str> {
        if self.coalescing_exemption().is_some() {
            return None;
        }
        self.routes
            .iter()
            .filter_map(|r| r.strip_prefix(COALESCE_ROUTE))
            .find(|k| !k.is_empty())
    }

    /// Why this task never coalesces, as far as its own definition tells:
    /// - `extra.action`: an action task;
    /// - `extra.parent` naming a task other than its task group's: a task an
    ///   action created (taskgraph sets `extra.parent` on every task to the
    ///   task that created it; in a push's graph that is the decision task,
    ///   whose id is the group's, while a retrigger's parent is the action task
    ///   and its group the original graph's);
    /// - `extra.cron`: a cron decision task.
    ///
    /// The tasks of a cron decision's graph are recognised by their group's
    /// decision task (`ops::coalesce`).
    pub fn coalescing_exemption(&self) -> Option<&'static str> {
        let set = |k: &str| self.extra.get(k).is_some_and(|v| !v.is_null());
        if set("action") {
            return Some("action");
        }
        if set("cron") {
            return Some("cron");
        }
        match self.extra.get("parent").and_then(Value::as_str) {
            Some(p) if !p.is_empty() && p != self.task_group_id => Some("retrigger"),
            _ => None,
        }
    }
}

/// One run of a task, as stored (timestamps in milliseconds).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Run {
    pub run_id: i64,
    pub state: RunState,
    pub reason_created: ReasonCreated,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_resolved: Option<ReasonResolved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_until: Option<Millis>,
    pub scheduled: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Millis>,
}

impl Run {
    /// A new pending run.
    pub fn pending(run_id: i64, reason_created: ReasonCreated, now: Millis) -> Self {
        Run {
            run_id,
            state: RunState::Pending,
            reason_created,
            reason_resolved: None,
            worker_group: None,
            worker_id: None,
            taken_until: None,
            scheduled: now,
            started: None,
            resolved: None,
        }
    }

    /// The run as the API shows it (dates in `toJSON()` form).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("runId".into(), self.run_id.into());
        m.insert("state".into(), self.state.as_str().into());
        m.insert("reasonCreated".into(), self.reason_created.as_str().into());
        if let Some(r) = self.reason_resolved {
            m.insert("reasonResolved".into(), r.as_str().into());
        }
        if let Some(w) = &self.worker_group {
            m.insert("workerGroup".into(), w.clone().into());
        }
        if let Some(w) = &self.worker_id {
            m.insert("workerId".into(), w.clone().into());
        }
        if let Some(t) = self.taken_until {
            m.insert("takenUntil".into(), fmt_ms(t).into());
        }
        m.insert("scheduled".into(), fmt_ms(self.scheduled).into());
        if let Some(t) = self.started {
            m.insert("started".into(), fmt_ms(t).into());
        }
        if let Some(t) = self.resolved {
            m.insert("resolved".into(), fmt_ms(t).into());
        }
        Value::Object(m)
    }

    /// Whether the run is finished.
    pub fn is_resolved(&self) -> bool {
        self.state.is_resolved()
    }

    /// Resolve the run `state`/`reason` at `now`.
    pub fn resolve(&mut self, state: RunState, reason: ReasonResolved, now: Millis) {
        self.state = state;
        self.reason_resolved = Some(reason);
        self.resolved = Some(now);
    }
}

/// A task as loaded from the store: its definition plus mutable state.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct Task {
    pub task_id: String,
    pub def: TaskDef,
    pub deadline: Millis,
    pub expires: Millis,
    pub retries_left: i64,
    pub runs: Vec<Run>,
    pub taken_until: Option<Millis>,
    pub ever_resolved: bool,
}

impl Task {
    /// The task's state: that of its last run, or `unscheduled` without runs.
    pub fn state(&self) -> TaskState {
        self.runs
            .last()
            .map_or(TaskState::Unscheduled, |r| r.state.into())
    }

    /// The last run, if any.
    pub fn last_run(&self) -> Option<&Run> {
        self.runs.last()
    }

    /// The `task-status` structure.
    pub fn status(&self) -> Value {
        let d = &self.def;
        serde_json::json!({
            "taskId": self.task_id,
            "provisionerId": d.provisioner_id,
            "workerType": d.worker_type,
            "taskQueueId": d.task_queue_id,
            "schedulerId": d.scheduler_id,
            "projectId": d.project_id,
            "taskGroupId": d.task_group_id,
            "priority": d.priority,
            "deadline": d.deadline,
            "expires": d.expires,
            "retriesLeft": self.retries_left,
            "state": self.state(),
            "runs": self.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
        })
    }

    /// The definition as `task()` returns it.
    pub fn definition(&self) -> Value {
        serde_json::to_value(&self.def).unwrap_or(Value::Null)
    }

    /// The `{tags}` sub-object carried in Pulse messages.
    pub fn tags_only(&self) -> Value {
        serde_json::json!({ "tags": self.def.tags })
    }
}

/// How a worker resolves a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResolution {
    /// `reportCompleted`.
    Completed,
    /// `reportFailed`.
    Failed,
    /// `reportException` with a reason.
    Exception(ExceptionReason),
}

impl RunResolution {
    /// The run's state and `reasonResolved` once resolved so.
    pub fn outcome(self) -> (RunState, ReasonResolved) {
        match self {
            RunResolution::Completed => (RunState::Completed, ReasonResolved::Completed),
            RunResolution::Failed => (RunState::Failed, ReasonResolved::Failed),
            RunResolution::Exception(reason) => (RunState::Exception, reason.into()),
        }
    }
}

/// A `createTask` call without dependencies, as it waits for a batch.
#[derive(Clone, Debug)]
pub struct CreateCall {
    /// The new task's id.
    pub task_id: String,
    /// Its validated definition.
    pub def: TaskDef,
}

/// A `claimWork` attempt (one pass; the handler long-polls around it).
#[derive(Clone, Debug)]
pub struct ClaimCall {
    /// The task queue.
    pub task_queue_id: String,
    /// The worker's group.
    pub worker_group: String,
    /// The worker's id.
    pub worker_id: String,
    /// Most runs to claim.
    pub count: i64,
}

/// A `reportCompleted`, `reportFailed` or `reportException` call.
#[derive(Clone, Debug)]
pub struct ResolveCall {
    /// The task.
    pub task_id: String,
    /// The run.
    pub run_id: i64,
    /// How the run resolves.
    pub how: RunResolution,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs are stored as JSON in the `runs` column: the enums keep the
    /// spellings rows written before them hold, so those rows still load.
    #[test]
    fn runs_are_stored_in_their_json_spellings() {
        let mut run = Run::pending(1, ReasonCreated::TaskRetry, 1_000);
        run.worker_group = Some("g".into());
        run.worker_id = Some("w".into());
        run.resolve(RunState::Exception, ReasonResolved::ClaimExpired, 2_000);
        let text = r#"{"runId":1,"state":"exception","reasonCreated":"task-retry","reasonResolved":"claim-expired","workerGroup":"g","workerId":"w","scheduled":1000,"resolved":2000}"#;
        assert_eq!(serde_json::to_string(&run).unwrap(), text);
        assert_eq!(serde_json::from_str::<Run>(text).unwrap(), run);
        assert_eq!(
            run.to_json(),
            serde_json::json!({
                "runId": 1, "state": "exception", "reasonCreated": "task-retry",
                "reasonResolved": "claim-expired", "workerGroup": "g", "workerId": "w",
                "scheduled": fmt_ms(1_000), "resolved": fmt_ms(2_000),
            })
        );
        assert!(serde_json::from_str::<Run>(&text.replace("task-retry", "typo")).is_err());
    }

    #[test]
    fn a_resolution_gives_the_runs_state_and_reason() {
        assert_eq!(
            RunResolution::Completed.outcome(),
            (RunState::Completed, ReasonResolved::Completed)
        );
        assert_eq!(
            RunResolution::Failed.outcome(),
            (RunState::Failed, ReasonResolved::Failed)
        );
        assert_eq!(
            RunResolution::Exception(ExceptionReason::WorkerShutdown).outcome(),
            (RunState::Exception, ReasonResolved::WorkerShutdown)
        );
    }

    #[test]
    fn coalescing_keys_and_exemptions() {
        let def = |routes: Value, extra: Value| -> TaskDef {
            serde_json::from_value(serde_json::json!({
                "provisionerId": "p", "workerType": "w", "taskQueueId": "p/w",
                "schedulerId": "s", "projectId": "none", "taskGroupId": "G",
                "dependencies": [], "requires": "all-completed", "routes": routes,
                "priority": "lowest", "retries": 5, "created": "", "deadline": "",
                "expires": "", "scopes": [], "payload": {},
                "metadata": {"name": "", "description": "", "owner": "", "source": ""},
                "tags": {"retrigger": "true"}, "extra": extra,
            }))
            .unwrap()
        };
        let key = serde_json::json!(["index.x", "coalesce.v1.", "coalesce.v1.m-c.build"]);
        // The first non-empty key; a push's graph task (parent = its group).
        let push = def(key.clone(), serde_json::json!({"parent": "G"}));
        assert_eq!(push.coalesce_key(), Some("m-c.build"));
        assert_eq!(
            def(serde_json::json!(["index.x"]), serde_json::json!({})).coalesce_key(),
            None
        );
        for (extra, why) in [
            (serde_json::json!({"parent": "ActionTask"}), "retrigger"),
            (
                serde_json::json!({"parent": "G", "action": {"name": "retrigger"}}),
                "action",
            ),
            (serde_json::json!({"cron": "{}"}), "cron"),
        ] {
            let d = def(key.clone(), extra);
            assert_eq!(d.coalescing_exemption(), Some(why));
            assert_eq!(d.coalesce_key(), None);
        }
    }

    #[test]
    fn stored_values_are_checked() {
        assert_eq!(
            stored::<TaskState>("completed").unwrap(),
            TaskState::Completed
        );
        assert!(matches!(
            stored::<TaskState>("complete"),
            Err(crate::error::ApiError::Internal(_))
        ));
    }
}
