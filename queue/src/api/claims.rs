//! The worker interface: `claimWork`, `claimTask`, `reclaimTask` and the
//! reports that resolve a run.

use super::{Api, run_id};
use crate::error::{ApiError, Result};
use crate::model::RunResolution;
use crate::validate;
use bbb_service::{Call, Reply, ScopeParams};
use bbb_tcvalues::ExceptionReason;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// How long claimWork waits for work before answering `{tasks: []}`.
pub const CLAIM_WORK_WAIT: Duration = Duration::from_secs(20);

/// `claimWork`: claim up to `tasks` pending runs, waiting up to
/// [`CLAIM_WORK_WAIT`] for work to come.
pub async fn claim_work(api: Api, call: Call) -> Result<Reply> {
    let tq = call.param("taskQueueId");
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        worker_group: String,
        worker_id: String,
        tasks: Option<i64>,
    }
    let req: Req = call.input_as()?;
    check_worker(&req.worker_group, &req.worker_id)?;
    let count = req.tasks.unwrap_or(1);
    if !(1..=32).contains(&count) {
        return Err(ApiError::InputValidation(format!(
            "Schema validation error: tasks must be between 1 and 32, not {count}"
        )));
    }
    call.authorize_with(
        ScopeParams::new()
            .set("workerGroup", req.worker_group.clone())
            .set("workerId", req.worker_id.clone()),
    )?;
    let q = &api.queue;
    let notify = q.signals.queue(tq);
    let give_up = tokio::time::Instant::now() + CLAIM_WORK_WAIT;
    let poll = Duration::from_millis(q.cfg.resolver_interval_ms.clamp(50, 5000));
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claims = q
            .claim_pending(tq, &req.worker_group, &req.worker_id, count)
            .await?;
        if !claims.is_empty() {
            return Ok(Reply::json(json!({"tasks": claims})));
        }
        let now = tokio::time::Instant::now();
        if now >= give_up {
            return Ok(Reply::json(json!({"tasks": []})));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(give_up.min(now + poll)) => {}
        }
    }
}

/// `claimTask`: claim one given run (idempotent for the same worker).
pub async fn claim_task(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let id = call.param("taskId");
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        worker_group: String,
        worker_id: String,
    }
    let req: Req = call.input_as()?;
    check_worker(&req.worker_group, &req.worker_id)?;
    let task = q.task_or_404(id).await?;
    call.authorize_with(
        ScopeParams::new()
            .set("taskQueueId", task.def.task_queue_id.clone())
            .set("workerGroup", req.worker_group.clone())
            .set("workerId", req.worker_id.clone()),
    )?;
    Ok(Reply::json(
        q.claim_task(id, run_id(&call), &req.worker_group, &req.worker_id)
            .await?,
    ))
}

/// `reclaimTask`.
pub async fn reclaim_task(api: Api, call: Call) -> Result<Reply> {
    Ok(Reply::json(
        api.queue
            .reclaim_task(call.param("taskId"), run_id(&call))
            .await?,
    ))
}

/// `reportCompleted`.
pub async fn report_completed(api: Api, call: Call) -> Result<Reply> {
    resolve(&api, &call, RunResolution::Completed).await
}

/// `reportFailed`.
pub async fn report_failed(api: Api, call: Call) -> Result<Reply> {
    resolve(&api, &call, RunResolution::Failed).await
}

/// Resolve the call's run `how`.
async fn resolve(api: &Api, call: &Call, how: RunResolution) -> Result<Reply> {
    let (task_id, run_id) = (call.param("taskId"), run_id(call));
    Ok(Reply::json(
        api.queue.resolve_run(task_id, run_id, how).await?,
    ))
}

/// `reportException`, with one of upstream's reasons.
pub async fn report_exception(api: Api, call: Call) -> Result<Reply> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        reason: String,
    }
    let req: Req = call.input_as()?;
    let reason = req
        .reason
        .parse::<ExceptionReason>()
        .ok()
        .filter(|r| r.is_accepted())
        .ok_or_else(|| {
            let accepted: Vec<&str> = ExceptionReason::ALL
                .iter()
                .filter(|r| r.is_accepted())
                .map(|r| r.as_str())
                .collect();
            ApiError::InputValidation(format!(
                "Schema validation error: reason {:?} must be one of {}",
                req.reason,
                accepted.join(", ")
            ))
        })?;
    resolve(&api, &call, RunResolution::Exception(reason)).await
}

/// A `workerGroup` and `workerId` from a body must be identifiers.
fn check_worker(group: &str, id: &str) -> Result<()> {
    if !validate::is_identifier(group) || !validate::is_identifier(id) {
        return Err(ApiError::InputValidation(format!(
            "Schema validation error: workerGroup {group:?} and workerId {id:?} must match ^[a-zA-Z0-9-_]{{1,38}}$"
        )));
    }
    Ok(())
}
