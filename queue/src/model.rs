//! The queue's data model: task definitions, runs and statuses, in the exact JSON
//! shapes of the TaskCluster queue API v1.

use crate::time::{Millis, fmt_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Task priorities, highest first. `normal` is no longer accepted (upstream v102).
pub const PRIORITIES: [&str; 7] = [
    "highest",
    "very-high",
    "high",
    "medium",
    "low",
    "very-low",
    "lowest",
];

/// Numeric rank of a priority: 7 for `highest` down to 1 for `lowest`.
pub fn priority_rank(p: &str) -> i64 {
    PRIORITIES
        .iter()
        .position(|x| *x == p)
        .map(|i| 7 - i as i64)
        .unwrap_or(1)
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
    pub priority: String,
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

/// One run of a task, as stored (timestamps in milliseconds).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Run {
    pub run_id: i64,
    pub state: String,
    pub reason_created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_resolved: Option<String>,
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
    pub fn pending(run_id: i64, reason_created: &str, now: Millis) -> Self {
        Run {
            run_id,
            state: "pending".into(),
            reason_created: reason_created.into(),
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
        m.insert("state".into(), self.state.clone().into());
        m.insert("reasonCreated".into(), self.reason_created.clone().into());
        if let Some(r) = &self.reason_resolved {
            m.insert("reasonResolved".into(), r.clone().into());
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
        matches!(self.state.as_str(), "completed" | "failed" | "exception")
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
    pub fn state(&self) -> &str {
        self.runs
            .last()
            .map(|r| r.state.as_str())
            .unwrap_or("unscheduled")
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

/// Reasons `reportException` accepts.
pub const EXCEPTION_REASONS: [&str; 5] = [
    "worker-shutdown",
    "malformed-payload",
    "resource-unavailable",
    "internal-error",
    "intermittent-task",
];

/// How a worker resolves a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResolution<'a> {
    /// `reportCompleted`.
    Completed,
    /// `reportFailed`.
    Failed,
    /// `reportException` with a reason.
    Exception(&'a str),
}

impl RunResolution<'_> {
    /// The same resolution with its reason from [`EXCEPTION_REASONS`] (`None` for
    /// a reason not there), so it can wait in a batch.
    pub fn to_static(self) -> Option<RunResolution<'static>> {
        Some(match self {
            RunResolution::Completed => RunResolution::Completed,
            RunResolution::Failed => RunResolution::Failed,
            RunResolution::Exception(r) => {
                RunResolution::Exception(EXCEPTION_REASONS.iter().find(|x| **x == r)?)
            }
        })
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
    pub how: RunResolution<'static>,
}
