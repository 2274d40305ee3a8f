//! The built-in workers, as upstream's `built-in-workers` service: tasks on the
//! task queues `built-in/succeed` and `built-in/fail` are claimed at once
//! (worker group `built-in`, worker id `succeed` or `fail`) and reported
//! completed or failed; a task whose payload is not empty is reported
//! `exception/malformed-payload`.
//!
//! They run in the queue's process, on its in-process calls, as a service
//! mounted beside it ([`mount`]). Each run is claimed by one claim (claims take
//! pending runs with `FOR UPDATE SKIP LOCKED` on PostgreSQL), so any number of
//! processes may run them: a run is resolved once. A run claimed by a process
//! that stops before resolving it comes back when its claim expires.

use crate::core::Queue;
use crate::error::Result;
use crate::model::RunResolution;
use crate::server::{Mount, Mounted, Shared};
use bbb_tcvalues::ExceptionReason;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// The worker group of the built-in workers' claims.
pub const WORKER_GROUP: &str = "built-in";

/// Most runs one pass claims.
const CLAIM_BATCH: i64 = 32;

/// A built-in worker: what it reports for a task with an empty payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltIn {
    /// `built-in/succeed`: completed.
    Succeed,
    /// `built-in/fail`: failed.
    Fail,
}

impl BuiltIn {
    /// Both built-in workers.
    pub const ALL: [BuiltIn; 2] = [BuiltIn::Succeed, BuiltIn::Fail];

    /// Its worker id (`succeed`, `fail`).
    pub fn worker_id(self) -> &'static str {
        match self {
            BuiltIn::Succeed => "succeed",
            BuiltIn::Fail => "fail",
        }
    }

    /// The task queue it claims from (`built-in/succeed`).
    pub fn task_queue_id(self) -> String {
        format!("{WORKER_GROUP}/{}", self.worker_id())
    }

    /// How it resolves a claimed run whose task has the payload `payload`.
    fn resolution(self, payload: &Value) -> RunResolution {
        if !payload.as_object().is_some_and(|p| p.is_empty()) {
            return RunResolution::Exception(ExceptionReason::MalformedPayload);
        }
        match self {
            BuiltIn::Succeed => RunResolution::Completed,
            BuiltIn::Fail => RunResolution::Failed,
        }
    }
}

/// The built-in workers as a service mounted beside the queue (no routes, one
/// loop per worker until the queue stops).
pub fn mount() -> Mount {
    Box::new(|shared: Shared| {
        Box::pin(async move {
            let tasks = BuiltIn::ALL
                .into_iter()
                .map(|w| tokio::spawn(run(shared.queue.clone(), w, shared.stop.clone())))
                .collect();
            Ok(Mounted {
                routes: axum::Router::new(),
                tasks,
            })
        })
    })
}

impl Queue {
    /// One pass of the built-in worker `worker`: claim what is pending on its
    /// task queue (up to a batch) and resolve it. Returns how many runs it resolved.
    /// A report the queue refuses (the task was cancelled meanwhile) is logged.
    pub async fn built_in_pass(&self, worker: BuiltIn) -> Result<usize> {
        let claims = self
            .claim_pending(
                &worker.task_queue_id(),
                WORKER_GROUP,
                worker.worker_id(),
                CLAIM_BATCH,
            )
            .await?;
        let reports = claims.iter().map(|c| {
            let task_id = c["status"]["taskId"].as_str().unwrap_or_default();
            let run_id = c["runId"].as_i64().unwrap_or_default();
            let how = worker.resolution(&c["task"]["payload"]);
            async move {
                tracing::debug!(task.id = %task_id, run.id = run_id, ?how, "built-in worker resolves");
                self.resolve_run(task_id, run_id, how).await
            }
        });
        let mut resolved = 0;
        for r in futures::future::join_all(reports).await {
            match r {
                Ok(_) => resolved += 1,
                // Cancelled or past its deadline meanwhile, or a failed commit:
                // the run is resolved already or comes back when its claim expires.
                Err(e) => tracing::warn!(worker = worker.worker_id(), error = %e,
                    "a built-in worker's report failed"),
            }
        }
        Ok(resolved)
    }
}

/// Run the built-in worker `worker` until `stop` turns true: a pass whenever
/// its task queue gets pending work (or every resolver interval, for work made
/// pending by other processes without a notification).
async fn run(queue: Queue, worker: BuiltIn, mut stop: watch::Receiver<bool>) {
    let notify = queue.signals.queue(&worker.task_queue_id());
    let poll = Duration::from_millis(queue.cfg.resolver_interval_ms.clamp(50, 5000));
    let mut backoff = Duration::from_millis(100);
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = match queue.built_in_pass(worker).await {
            Ok(n) if n > 0 => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(_) => poll,
            Err(e) => {
                tracing::warn!(worker = worker.worker_id(), error = %e, "built-in worker pass failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                backoff
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
