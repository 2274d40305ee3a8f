//! Pulse messages: exchange names, routing keys and payloads exactly as upstream's
//! `exchange/taskcluster-queue/v1/*` exchanges.

use crate::model::Task;
use bbb_pulse::Message;
use bbb_tcvalues::{ReasonResolved, RunState, TaskState};
use serde_json::{Value, json};

fn word(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("_")
}

/// The primary routing key of a task message:
/// `primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.<schedulerId>.<taskGroupId>._`.
pub fn task_routing_key(task: &Task, run_id: Option<i64>, worker: Option<(&str, &str)>) -> String {
    let run = run_id.map(|r| r.to_string());
    format!(
        "primary.{}.{}.{}.{}.{}.{}.{}.{}._",
        task.task_id,
        word(run.as_deref()),
        word(worker.map(|w| w.0)),
        word(worker.map(|w| w.1)),
        task.def.provisioner_id,
        task.def.worker_type,
        task.def.scheduler_id,
        task.def.task_group_id
    )
}

/// Builds messages for one exchange prefix (`exchange/taskcluster-queue/v1/` by default).
#[derive(Clone, Debug)]
pub struct Events {
    prefix: String,
}

/// Every exchange of upstream's queue (`QueueEvents`), after the prefix:
/// declared when the queue starts, as upstream's publisher does, so that
/// consumers that declare them passively find them before the first message.
pub const EXCHANGES: &[&str] = &[
    "task-defined",
    "task-pending",
    "task-running",
    "artifact-created",
    "task-completed",
    "task-failed",
    "task-exception",
    "task-group-resolved",
    "task-group-sealed",
    "task-priority-changed",
    "task-group-priority-changed",
];

impl Events {
    /// The full names of [`EXCHANGES`].
    pub fn all_exchanges(&self) -> Vec<String> {
        EXCHANGES.iter().map(|name| self.exchange(name)).collect()
    }

    /// Messages go to exchanges named `<prefix><name>`.
    pub fn new(prefix: &str) -> Self {
        Events {
            prefix: prefix.to_string(),
        }
    }

    /// The full name of the exchange `name` (`task-completed`).
    pub fn exchange(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn task_msg(
        &self,
        name: &str,
        task: &Task,
        run_id: Option<i64>,
        worker: Option<(&str, &str)>,
        payload: Value,
    ) -> Message {
        Message {
            exchange: self.exchange(name),
            routing_key: task_routing_key(task, run_id, worker),
            cc: task
                .def
                .routes
                .iter()
                .map(|r| format!("route.{r}"))
                .collect(),
            payload,
        }
    }

    /// `task-defined`: status.state is always `unscheduled`, as upstream.
    pub fn task_defined(&self, task: &Task) -> Message {
        let mut status = task.status();
        status["state"] = TaskState::Unscheduled.as_str().into();
        status["runs"] = json!([]);
        self.task_msg(
            "task-defined",
            task,
            None,
            None,
            json!({"version": 1, "status": status, "task": task.tags_only()}),
        )
    }

    /// `task-pending` for `run_id`.
    pub fn task_pending(&self, task: &Task, run_id: i64) -> Message {
        self.task_msg(
            "task-pending",
            task,
            Some(run_id),
            None,
            json!({"version": 1, "status": task.status(), "runId": run_id, "task": task.tags_only()}),
        )
    }

    /// `task-running` for a claimed run.
    pub fn task_running(&self, task: &Task, run_id: i64) -> Message {
        let run = &task.runs[run_id as usize];
        let wg = run.worker_group.clone().unwrap_or_default();
        let wid = run.worker_id.clone().unwrap_or_default();
        self.task_msg(
            "task-running",
            task,
            Some(run_id),
            Some((&wg, &wid)),
            json!({
                "version": 1, "status": task.status(), "runId": run_id,
                "workerGroup": wg, "workerId": wid,
                "takenUntil": run.taken_until.map(crate::time::fmt_ms),
                "task": task.tags_only(),
            }),
        )
    }

    /// `task-completed`, `task-failed` or `task-exception` for a resolved run.
    /// Runs resolved without a worker (cancelled while pending, deadline) carry `_` words.
    pub fn task_resolved(&self, task: &Task, run_id: i64) -> Message {
        let run = &task.runs[run_id as usize];
        let name = match run.state {
            RunState::Completed => "task-completed",
            RunState::Failed => "task-failed",
            _ => "task-exception",
        };
        let worker = match (&run.worker_group, &run.worker_id) {
            (Some(g), Some(w)) if run.reason_resolved != Some(ReasonResolved::DeadlineExceeded) => {
                Some((g.as_str(), w.as_str()))
            }
            _ => None,
        };
        let mut payload = json!({"version": 1, "status": task.status(), "runId": run_id, "task": task.tags_only()});
        if let Some((g, w)) = worker {
            payload["workerGroup"] = g.into();
            payload["workerId"] = w.into();
        }
        self.task_msg(name, task, Some(run_id), worker, payload)
    }

    /// `artifact-created`.
    pub fn artifact_created(&self, task: &Task, run_id: i64, artifact: Value) -> Message {
        let run = &task.runs[run_id as usize];
        let wg = run.worker_group.clone().unwrap_or_default();
        let wid = run.worker_id.clone().unwrap_or_default();
        self.task_msg(
            "artifact-created",
            task,
            Some(run_id),
            Some((&wg, &wid)),
            json!({
                "version": 1, "status": task.status(), "runId": run_id,
                "workerGroup": wg, "workerId": wid, "artifact": artifact,
            }),
        )
    }

    /// `task-group-resolved` or `task-group-sealed` (`name`), routed
    /// `primary.<taskGroupId>.<schedulerId>._`, without CCs.
    pub fn task_group(&self, name: &str, group: &Value) -> Message {
        let gid = group["taskGroupId"].as_str().unwrap_or("_");
        let sid = group["schedulerId"].as_str().unwrap_or("_");
        let mut payload = group.clone();
        payload["version"] = 1.into();
        Message {
            exchange: self.exchange(name),
            routing_key: format!("primary.{gid}.{sid}._"),
            cc: vec![],
            payload,
        }
    }
}
