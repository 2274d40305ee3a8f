//! Task queues, provisioners and workers: the queues' records, their pending
//! and claimed runs, and the workers that claim from them.

use super::Api;
use crate::error::{ApiError, Result};
use crate::time::fmt_ms;
use crate::validate::split_task_queue_id;
use bbb_service::paging::{page, with_token};
use bbb_service::{Call, Reply};
use serde_json::{Value, json};

/// `listTaskQueues`, paged.
pub async fn list_task_queues(api: Api, call: Call) -> Result<Reply> {
    let (limit, token) = call.paging()?;
    let queues = api
        .queue
        .task_queues(&token.unwrap_or_default(), limit)
        .await?;
    let items: Vec<Value> = queues.iter().map(|q| q.json()).collect();
    let (items, next) = page(items, limit, |v| {
        v["taskQueueId"].as_str().unwrap_or("").to_string()
    });
    Ok(Reply::json(with_token(json!({"taskQueues": items}), next)))
}

/// `getTaskQueue`.
pub async fn get_task_queue(api: Api, call: Call) -> Result<Reply> {
    let tq = call.param("taskQueueId");
    let queue = api
        .queue
        .task_queue(tq)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Task queue {tq} not found")))?;
    Ok(Reply::json(queue.json()))
}

/// `pendingTasks`: the number of pending runs.
pub async fn pending_tasks(api: Api, call: Call) -> Result<Reply> {
    Ok(Reply::json(pending_count(&api, &call).await?))
}

/// `taskQueueCounts`: the numbers of pending and claimed runs.
pub async fn task_queue_counts(api: Api, call: Call) -> Result<Reply> {
    let mut out = pending_count(&api, &call).await?;
    let claimed = api.queue.claimed_count(call.param("taskQueueId")).await?;
    out["claimedTasks"] = claimed.into();
    Ok(Reply::json(out))
}

async fn pending_count(api: &Api, call: &Call) -> Result<Value> {
    let tq = call.param("taskQueueId");
    let (p, w) = split_task_queue_id(tq).unwrap_or_default();
    let pending = api.queue.pending_count(tq).await?;
    Ok(json!({"provisionerId": p, "workerType": w, "taskQueueId": tq, "pendingTasks": pending}))
}

/// `listPendingTasks`, paged.
pub async fn list_pending_tasks(api: Api, call: Call) -> Result<Reply> {
    let (limit, token) = call.paging()?;
    let runs = api
        .queue
        .pending_runs(call.param("taskQueueId"), &token.unwrap_or_default(), limit)
        .await?;
    let items: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "taskId": r.task.task_id, "runId": r.run_id,
                "task": r.task.definition(), "inserted": fmt_ms(r.inserted),
            })
        })
        .collect();
    let (items, next) = page(items, limit, |v| {
        v["taskId"].as_str().unwrap_or("").to_string()
    });
    Ok(Reply::json(with_token(json!({"tasks": items}), next)))
}

/// `listClaimedTasks`, paged.
pub async fn list_claimed_tasks(api: Api, call: Call) -> Result<Reply> {
    let (limit, token) = call.paging()?;
    let tasks = api
        .queue
        .claimed_tasks(call.param("taskQueueId"), &token.unwrap_or_default(), limit)
        .await?;
    let mut items = Vec::new();
    for t in &tasks {
        let run = t.last_run().cloned().expect("running task has a run");
        items.push(json!({
            "taskId": t.task_id, "runId": run.run_id,
            "workerGroup": run.worker_group, "workerId": run.worker_id,
            "claimed": run.started.map(fmt_ms), "task": t.definition(),
        }));
    }
    let (items, next) = page(items, limit, |v| {
        v["taskId"].as_str().unwrap_or("").to_string()
    });
    Ok(Reply::json(with_token(json!({"tasks": items}), next)))
}

/// `listWorkers`, paged.
pub async fn list_workers(api: Api, call: Call) -> Result<Reply> {
    let (p, w) = (call.param("provisionerId"), call.param("workerType"));
    let (limit, token) = call.paging()?;
    let workers = api
        .queue
        .list_workers(&format!("{p}/{w}"), token.as_deref().unwrap_or(""), limit)
        .await?;
    let (workers, next) = page(workers, limit, |w| {
        format!("{}/{}", w.worker_group, w.worker_id)
    });
    let items: Vec<Value> = workers
        .iter()
        .map(|r| {
            let mut v = json!({
                "workerGroup": r.worker_group,
                "workerId": r.worker_id,
                "firstClaim": fmt_ms(r.first_claim),
                "lastDateActive": fmt_ms(r.last_date_active),
            });
            if let Some((task_id, run_id)) = r.recent_tasks.last() {
                v["latestTask"] = json!({"taskId": task_id, "runId": run_id});
            }
            if let Some(qu) = r.quarantine_until {
                v["quarantineUntil"] = fmt_ms(qu).into();
            }
            v
        })
        .collect();
    Ok(Reply::json(with_token(json!({"workers": items}), next)))
}

/// `getWorker`, with its recent claims.
pub async fn get_worker(api: Api, call: Call) -> Result<Reply> {
    let (p, w) = (call.param("provisionerId"), call.param("workerType"));
    let (g, i) = (call.param("workerGroup"), call.param("workerId"));
    let r = api
        .queue
        .worker(&format!("{p}/{w}"), g, i)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Worker {g}/{i} not found in {p}/{w}")))?;
    let recent: Vec<Value> = r
        .recent_tasks
        .iter()
        .map(|(task_id, run_id)| json!({"taskId": task_id, "runId": run_id}))
        .collect();
    let mut v = json!({
        "provisionerId": p, "workerType": w, "taskQueueId": format!("{p}/{w}"),
        "workerGroup": g, "workerId": i,
        "recentTasks": recent,
        "expires": fmt_ms(r.expires),
        "firstClaim": fmt_ms(r.first_claim),
        "lastDateActive": fmt_ms(r.last_date_active),
        "actions": [],
    });
    if let Some(qu) = r.quarantine_until {
        v["quarantineUntil"] = fmt_ms(qu).into();
    }
    Ok(Reply::json(v))
}
