//! A typed client for the parts of the queue API the bridge uses.
//!
//! It wraps the official `taskcluster` crate, so the bridge works the same
//! against bbb's native queue and an upstream TaskCluster deployment. Every
//! error keeps the HTTP status when the queue answered, because the bridge
//! decides on it (409: the run moved on; 404: the task is gone).

use std::time::Duration;

use bbb_clock::{fmt_ms, parse_ms};
use bbb_tcvalues::{ExceptionReason, ReasonResolved, RunState, TaskState, UnknownValue};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};

/// An error from the queue.
#[derive(Debug, thiserror::Error)]
#[error("queue {call}: {message}")]
pub struct TcError {
    /// The API method.
    pub call: &'static str,
    /// The HTTP status, when the queue answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub message: String,
}

impl TcError {
    fn from_client(call: &'static str, err: anyhow::Error) -> TcError {
        let status = err
            .chain()
            .find_map(|e| e.downcast_ref::<reqwest_tc::Error>())
            .and_then(|e| e.status())
            .map(|s| s.as_u16());
        TcError {
            call,
            status,
            message: format!("{err:#}"),
        }
    }

    /// Whether the queue answered 409 (the run is not in a state that allows this).
    pub fn is_conflict(&self) -> bool {
        self.status == Some(409)
    }

    /// Whether the queue answered 404 (no such task).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// Whether trying again later may succeed (no answer, or a 5xx / 429).
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 || s == 429,
        }
    }
}

/// The result type of [`QueueClient`] calls.
pub type TcResult<T> = std::result::Result<T, TcError>;

/// One run of a task, from a task status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The run id.
    pub run_id: u32,
    /// Its state.
    pub state: RunState,
    /// Why the run was resolved, if it was.
    pub reason_resolved: Option<ReasonResolved>,
    /// When the run became pending (ms).
    pub scheduled: i64,
    /// The claim's `takenUntil` (ms), while running.
    pub taken_until: Option<i64>,
}

/// A task status: the task's deadline and its runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task id.
    pub task_id: String,
    /// The task queue, `provisionerId/workerType`.
    pub task_queue_id: String,
    /// The task's state (that of its last run, or `unscheduled`).
    pub state: TaskState,
    /// The task's deadline (ms).
    pub deadline: i64,
    /// The task's expiry (ms).
    pub expires: i64,
    /// Its runs, in order.
    pub runs: Vec<RunInfo>,
}

impl TaskStatus {
    /// Parses a `taskStatus` object (as in `status()` answers and Pulse messages).
    pub fn from_json(value: &Value) -> Result<TaskStatus, String> {
        let str_field = |name: &str| -> Result<String, String> {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("taskStatus.{name} is missing"))
        };
        let task_queue_id = match value.get("taskQueueId").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => format!(
                "{}/{}",
                str_field("provisionerId")?,
                str_field("workerType")?
            ),
        };
        let mut runs = Vec::new();
        for run in value
            .get("runs")
            .and_then(Value::as_array)
            .ok_or("taskStatus.runs is missing")?
        {
            let run_id = run
                .get("runId")
                .and_then(Value::as_u64)
                .and_then(|r| u32::try_from(r).ok())
                .ok_or("a run has no runId")?;
            runs.push(RunInfo {
                run_id,
                state: run
                    .get("state")
                    .and_then(Value::as_str)
                    .ok_or("a run has no state")?
                    .parse()
                    .map_err(|e: UnknownValue| e.to_string())?,
                reason_resolved: run
                    .get("reasonResolved")
                    .and_then(Value::as_str)
                    .map(str::parse)
                    .transpose()
                    .map_err(|e: UnknownValue| e.to_string())?,
                scheduled: run
                    .get("scheduled")
                    .and_then(Value::as_str)
                    .and_then(parse_ms)
                    .unwrap_or(0),
                taken_until: run
                    .get("takenUntil")
                    .and_then(Value::as_str)
                    .and_then(parse_ms),
            });
        }
        Ok(TaskStatus {
            task_id: str_field("taskId")?,
            task_queue_id,
            state: str_field("state")?
                .parse()
                .map_err(|e: UnknownValue| e.to_string())?,
            deadline: parse_ms(&str_field("deadline")?).ok_or("bad deadline")?,
            expires: parse_ms(&str_field("expires")?).ok_or("bad expires")?,
            runs,
        })
    }

    /// The run with this id.
    pub fn run(&self, run_id: u32) -> Option<&RunInfo> {
        self.runs.iter().find(|r| r.run_id == run_id)
    }
}

/// The queue, as the bridge uses it.
#[derive(Clone)]
pub struct QueueClient {
    queue: std::sync::Arc<Queue>,
    http: reqwest::Client,
    worker_group: String,
    worker_id: String,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("worker_group", &self.worker_group)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl QueueClient {
    /// A client for the queue at `root_url` with these credentials, claiming
    /// as `worker_group/worker_id` (one identity shared by every bridge
    /// instance, so claims are idempotent across instances).
    pub fn new(
        root_url: &str,
        client_id: &str,
        access_token: &str,
        worker_group: &str,
        worker_id: &str,
    ) -> anyhow::Result<QueueClient> {
        let queue = Queue::new(
            ClientBuilder::new(root_url)
                .credentials(Credentials::new(client_id, access_token))
                .timeout(Duration::from_secs(30)),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(QueueClient {
            queue: std::sync::Arc::new(queue),
            http,
            worker_group: worker_group.to_owned(),
            worker_id: worker_id.to_owned(),
        })
    }

    /// The task definition.
    pub async fn task(&self, task_id: &str) -> TcResult<Value> {
        self.queue
            .task(task_id)
            .await
            .map_err(|e| TcError::from_client("task", e))
    }

    /// The task's status.
    pub async fn status(&self, task_id: &str) -> TcResult<TaskStatus> {
        let answer = self
            .queue
            .status(task_id)
            .await
            .map_err(|e| TcError::from_client("status", e))?;
        parse_status("status", &answer["status"])
    }

    /// Claims a pending run (idempotent for the bridge's worker identity);
    /// returns the claim's `takenUntil` (ms).
    pub async fn claim(&self, task_id: &str, run_id: u32) -> TcResult<i64> {
        let answer = self
            .queue
            .claimTask(
                task_id,
                &run_id.to_string(),
                &json!({"workerGroup": self.worker_group, "workerId": self.worker_id}),
            )
            .await
            .map_err(|e| TcError::from_client("claimTask", e))?;
        taken_until("claimTask", &answer)
    }

    /// Reclaims a running run; returns the new `takenUntil` (ms).
    pub async fn reclaim(&self, task_id: &str, run_id: u32) -> TcResult<i64> {
        let answer = self
            .queue
            .reclaimTask(task_id, &run_id.to_string())
            .await
            .map_err(|e| TcError::from_client("reclaimTask", e))?;
        taken_until("reclaimTask", &answer)
    }

    /// Resolves a running run completed.
    pub async fn report_completed(&self, task_id: &str, run_id: u32) -> TcResult<TaskStatus> {
        let answer = self
            .queue
            .reportCompleted(task_id, &run_id.to_string())
            .await
            .map_err(|e| TcError::from_client("reportCompleted", e))?;
        parse_status("reportCompleted", &answer["status"])
    }

    /// Resolves a running run failed.
    pub async fn report_failed(&self, task_id: &str, run_id: u32) -> TcResult<TaskStatus> {
        let answer = self
            .queue
            .reportFailed(task_id, &run_id.to_string())
            .await
            .map_err(|e| TcError::from_client("reportFailed", e))?;
        parse_status("reportFailed", &answer["status"])
    }

    /// Resolves a running run as an exception with `reason`.
    pub async fn report_exception(
        &self,
        task_id: &str,
        run_id: u32,
        reason: ExceptionReason,
    ) -> TcResult<TaskStatus> {
        let answer = self
            .queue
            .reportException(task_id, &run_id.to_string(), &json!({"reason": reason}))
            .await
            .map_err(|e| TcError::from_client("reportException", e))?;
        parse_status("reportException", &answer["status"])
    }

    /// Every pending run of a task queue: `(taskId, runId, inserted ms)`, all pages.
    pub async fn list_pending(&self, task_queue_id: &str) -> TcResult<Vec<(String, u32, i64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .queue
                .listPendingTasks(task_queue_id, token.as_deref(), Some("1000"))
                .await
                .map_err(|e| TcError::from_client("listPendingTasks", e))?;
            for t in page["tasks"].as_array().into_iter().flatten() {
                let (Some(task_id), Some(run_id)) = (t["taskId"].as_str(), t["runId"].as_u64())
                else {
                    continue;
                };
                let inserted = t["inserted"].as_str().and_then(parse_ms).unwrap_or(0);
                out.push((
                    task_id.to_owned(),
                    u32::try_from(run_id).unwrap_or(u32::MAX),
                    inserted,
                ));
            }
            token = page["continuationToken"].as_str().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Cancels the task (its pending or running run resolves `exception/canceled`).
    pub async fn cancel(&self, task_id: &str) -> TcResult<TaskStatus> {
        let answer = self
            .queue
            .cancelTask(task_id)
            .await
            .map_err(|e| TcError::from_client("cancelTask", e))?;
        parse_status("cancelTask", &answer["status"])
    }

    /// Creates an `s3` artifact and uploads `body` to it.
    pub async fn upload_artifact(
        &self,
        task_id: &str,
        run_id: u32,
        name: &str,
        content_type: &str,
        expires_ms: i64,
        body: Vec<u8>,
    ) -> TcResult<()> {
        let answer = self
            .queue
            .createArtifact(
                task_id,
                &run_id.to_string(),
                name,
                &json!({
                    "storageType": "s3",
                    "contentType": content_type,
                    "expires": fmt_ms(expires_ms),
                }),
            )
            .await
            .map_err(|e| TcError::from_client("createArtifact", e))?;
        let put_url = answer
            .get("putUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| TcError {
                call: "createArtifact",
                status: None,
                message: "the answer has no putUrl".to_owned(),
            })?;
        let response = self
            .http
            .put(put_url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, body.len().to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| TcError {
                call: "artifact upload",
                status: None,
                message: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(TcError {
                call: "artifact upload",
                status: Some(status.as_u16()),
                message: response.text().await.unwrap_or_default(),
            })
        }
    }

    /// Creates a `reference` artifact pointing at `url`.
    pub async fn reference_artifact(
        &self,
        task_id: &str,
        run_id: u32,
        name: &str,
        url: &str,
        content_type: &str,
        expires_ms: i64,
    ) -> TcResult<()> {
        self.queue
            .createArtifact(
                task_id,
                &run_id.to_string(),
                name,
                &json!({
                    "storageType": "reference",
                    "url": url,
                    "contentType": content_type,
                    "expires": fmt_ms(expires_ms),
                }),
            )
            .await
            .map(|_| ())
            .map_err(|e| TcError::from_client("createArtifact", e))
    }
}

fn parse_status(call: &'static str, value: &Value) -> TcResult<TaskStatus> {
    TaskStatus::from_json(value).map_err(|message| TcError {
        call,
        status: None,
        message,
    })
}

fn taken_until(call: &'static str, answer: &Value) -> TcResult<i64> {
    answer
        .get("takenUntil")
        .and_then(Value::as_str)
        .and_then(parse_ms)
        .ok_or_else(|| TcError {
            call,
            status: None,
            message: "the answer has no takenUntil".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_task_status() {
        let status = TaskStatus::from_json(&json!({
            "taskId": "fN1TzfRBQkCoZUXYjLLKaQ",
            "provisionerId": "buildbot-bridge",
            "workerType": "buildbot-bridge",
            "state": "running",
            "deadline": "2026-11-29T10:00:00.000Z",
            "expires": "2027-11-29T10:00:00.000Z",
            "runs": [
                {"runId": 0, "state": "exception", "reasonCreated": "scheduled",
                 "reasonResolved": "worker-shutdown", "scheduled": "2026-11-28T10:00:00.000Z"},
                {"runId": 1, "state": "running", "reasonCreated": "retry",
                 "scheduled": "2026-11-28T10:05:00.000Z", "takenUntil": "2026-11-28T10:25:00.000Z"}
            ]
        }))
        .unwrap();
        assert_eq!(status.task_queue_id, "buildbot-bridge/buildbot-bridge");
        assert_eq!(status.runs.len(), 2);
        assert_eq!(
            status.run(0).unwrap().reason_resolved.map(|r| r.as_str()),
            Some("worker-shutdown")
        );
        let run1 = status.run(1).unwrap();
        assert_eq!(run1.state.as_str(), "running");
        assert_eq!(run1.taken_until, Some(run1.scheduled + 20 * 60 * 1000));
        assert_eq!(fmt_ms(run1.scheduled), "2026-11-28T10:05:00.000Z");
    }

    #[test]
    fn refuses_a_status_without_runs() {
        assert!(TaskStatus::from_json(&json!({"taskId": "x"})).is_err());
    }
}
