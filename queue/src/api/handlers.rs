//! One function per API method: check input and the scopes the service
//! framework could not check alone, call the queue core, shape the response.

use super::Api;
use crate::error::{ApiError, Result};
use crate::model::{CreateTaskRequest, PRIORITIES, Task};
use crate::ops::claims::{EXCEPTION_REASONS, Resolution};
use crate::time::fmt_ms;
use crate::validate::{self, split_task_queue_id};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bbb_auth::ScopeExpr;
use bbb_service::paging::{encode_token, page, with_token};
use bbb_service::reply::bytes_response;
use bbb_service::{Call, Reply, ScopeParams};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::HashMap;
use std::time::Duration;

/// How long claimWork waits for work before answering `{tasks: []}`.
pub const CLAIM_WORK_WAIT: Duration = Duration::from_secs(20);

/// The header naming an artifact's storage type on its redirect or error.
const STORAGE_TYPE: &str = "x-taskcluster-artifact-storage-type";

/// The `runId` URL parameter (checked and normalised by the service).
fn run_id(call: &Call) -> i64 {
    call.param("runId").parse().unwrap_or_default()
}

/// `__heartbeat__`: the database answers.
pub async fn heartbeat(api: Api, _: Call) -> Result<Reply> {
    sqlx::query("SELECT 1 AS one")
        .fetch_one(&api.queue.db.pool)
        .await?;
    Ok(Reply::json(json!({})))
}

/// `__version__`: the source, version and commit of this build.
pub async fn version(api: Api, _: Call) -> Result<Reply> {
    Ok(Reply::json(json!({
        "source": api.queue.cfg.source_url,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("BBB_GIT_COMMIT").unwrap_or("unknown"),
        "build": "cargo",
    })))
}

/// `task`: a task's definition.
pub async fn task(api: Api, call: Call) -> Result<Reply> {
    let id = call.param("taskId");
    Ok(Reply::json(api.queue.task_or_404(id).await?.definition()))
}

/// `status`: a task's status.
pub async fn status(api: Api, call: Call) -> Result<Reply> {
    let id = call.param("taskId");
    Ok(Reply::json(
        json!({"status": api.queue.task_or_404(id).await?.status()}),
    ))
}

/// `tasks`: the definitions of the given tasks, paged.
pub async fn tasks(api: Api, call: Call) -> Result<Reply> {
    tasks_or_statuses(api, call, false).await
}

/// `statuses`: the statuses of the given tasks, paged.
pub async fn statuses(api: Api, call: Call) -> Result<Reply> {
    tasks_or_statuses(api, call, true).await
}

async fn tasks_or_statuses(api: Api, call: Call, is_status: bool) -> Result<Reply> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        task_ids: Vec<String>,
    }
    let req: Req = call.input_as()?;
    call.authorize_with(ScopeParams::new().list("taskIds", req.task_ids.iter().cloned()))?;
    let (limit, token) = call.paging()?;
    let start: usize = token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let ids: Vec<String> = req
        .task_ids
        .iter()
        .skip(start)
        .take(limit as usize)
        .cloned()
        .collect();
    let next = (start + ids.len() < req.task_ids.len())
        .then(|| encode_token(&(start + ids.len()).to_string()));
    let tasks = api.queue.load_tasks(&ids).await?;
    let items: Vec<Value> = tasks
        .iter()
        .map(|t| {
            if is_status {
                json!({"taskId": t.task_id, "status": t.status()})
            } else {
                json!({"taskId": t.task_id, "task": t.definition()})
            }
        })
        .collect();
    let key = if is_status { "statuses" } else { "tasks" };
    Ok(Reply::json(with_token(json!({ key: items }), next)))
}

/// `createTask`.
pub async fn create_task(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let id = call.param("taskId");
    let req: CreateTaskRequest = call.input_as()?;
    let max_deadline = q.cfg.max_task_deadline_days as i64 * 86_400_000;
    let def = validate::task_definition(id, req, q.clock.now_ms(), max_deadline)?;
    let rank = PRIORITIES
        .iter()
        .position(|p| *p == def.priority)
        .unwrap_or(PRIORITIES.len() - 1);
    call.authorize_with(
        ScopeParams::new()
            .list("scopes", def.scopes.iter().cloned())
            .list("routes", def.routes.iter().cloned())
            .set("projectId", def.project_id.clone())
            .set("schedulerId", def.scheduler_id.clone())
            .list("priorities", PRIORITIES[..=rank].iter().copied())
            .set("taskQueueId", def.task_queue_id.clone()),
    )?;
    Ok(Reply::json(q.create_task(id, &def).await?))
}

/// Load the task and check the scopes of scheduling, rerunning or cancelling it.
async fn task_action(api: &Api, call: &Call) -> Result<()> {
    let task = api.queue.task_or_404(call.param("taskId")).await?;
    let d = &task.def;
    call.authorize_with(
        ScopeParams::new()
            .set("schedulerId", d.scheduler_id.clone())
            .set("taskGroupId", d.task_group_id.clone())
            .set("projectId", d.project_id.clone()),
    )
}

/// `scheduleTask`.
pub async fn schedule_task(api: Api, call: Call) -> Result<Reply> {
    task_action(&api, &call).await?;
    Ok(Reply::json(
        api.queue.schedule_task(call.param("taskId")).await?,
    ))
}

/// `rerunTask`.
pub async fn rerun_task(api: Api, call: Call) -> Result<Reply> {
    task_action(&api, &call).await?;
    Ok(Reply::json(
        api.queue.rerun_task(call.param("taskId")).await?,
    ))
}

/// `cancelTask`.
pub async fn cancel_task(api: Api, call: Call) -> Result<Reply> {
    task_action(&api, &call).await?;
    Ok(Reply::json(
        api.queue.cancel_task(call.param("taskId")).await?,
    ))
}

/// `listDependentTasks`: the tasks that depend on a task, paged.
pub async fn list_dependent_tasks(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let id = call.param("taskId");
    q.task_or_404(id).await?;
    let (limit, token) = call.paging()?;
    let tasks = q
        .dependents(id, token.as_deref().unwrap_or(""), limit)
        .await?;
    let (tasks, next) = page(tasks, limit, |t| t.task_id.clone());
    let items: Vec<Value> = tasks
        .iter()
        .map(|t| json!({"task": t.definition(), "status": t.status()}))
        .collect();
    Ok(Reply::json(with_token(
        json!({"taskId": id, "tasks": items}),
        next,
    )))
}

/// `getTaskGroup`.
pub async fn get_task_group(api: Api, call: Call) -> Result<Reply> {
    let g = call.param("taskGroupId");
    Ok(Reply::json(api.queue.task_group(g).await?))
}

/// `listTaskGroup`: a task group with its tasks, paged.
pub async fn list_task_group(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let g = call.param("taskGroupId");
    let mut group = q.task_group(g).await?;
    let (limit, token) = call.paging()?;
    let tasks = q
        .group_tasks(g, token.as_deref().unwrap_or(""), limit)
        .await?;
    let (tasks, next) = page(tasks, limit, |t| t.task_id.clone());
    group["tasks"] = tasks
        .iter()
        .map(|t| json!({"task": t.definition(), "status": t.status()}))
        .collect();
    Ok(Reply::json(with_token(group, next)))
}

/// Load the task group and check the scopes of sealing or cancelling it.
async fn group_action(api: &Api, call: &Call) -> Result<()> {
    let group = api.queue.task_group(call.param("taskGroupId")).await?;
    let sid = group["schedulerId"].as_str().unwrap_or("-");
    call.authorize_with(ScopeParams::new().set("schedulerId", sid))
}

/// `sealTaskGroup`.
pub async fn seal_task_group(api: Api, call: Call) -> Result<Reply> {
    group_action(&api, &call).await?;
    Ok(Reply::json(
        api.queue.seal_task_group(call.param("taskGroupId")).await?,
    ))
}

/// `cancelTaskGroup`.
pub async fn cancel_task_group(api: Api, call: Call) -> Result<Reply> {
    group_action(&api, &call).await?;
    Ok(Reply::json(
        api.queue
            .cancel_task_group(call.param("taskGroupId"))
            .await?,
    ))
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
    let how = Resolution::Completed;
    Ok(Reply::json(
        api.queue
            .resolve_run(call.param("taskId"), run_id(&call), how)
            .await?,
    ))
}

/// `reportFailed`.
pub async fn report_failed(api: Api, call: Call) -> Result<Reply> {
    let how = Resolution::Failed;
    Ok(Reply::json(
        api.queue
            .resolve_run(call.param("taskId"), run_id(&call), how)
            .await?,
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
    if !EXCEPTION_REASONS.contains(&req.reason.as_str()) {
        return Err(ApiError::InputValidation(format!(
            "Schema validation error: reason {:?} must be one of {}",
            req.reason,
            EXCEPTION_REASONS.join(", ")
        )));
    }
    let how = Resolution::Exception(&req.reason);
    Ok(Reply::json(
        api.queue
            .resolve_run(call.param("taskId"), run_id(&call), how)
            .await?,
    ))
}

/// `createArtifact`; an `s3` artifact gets the URL to upload it to.
pub async fn create_artifact(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let now = q.clock.now_ms();
    let (id, run_id, name) = (call.param("taskId"), run_id(&call), call.param("name"));
    let (mut out, artifact) = q.create_artifact(id, run_id, name, call.input()?).await?;
    if artifact.storage_type == "s3" {
        let expires = now + crate::blob::PUT_URL_TTL_MS;
        out["putUrl"] = api
            .blobs
            .put_url((id, run_id, name), &artifact.content_type, now, expires)
            .into();
        out["contentType"] = artifact.content_type.clone().into();
        out["expires"] = fmt_ms(expires).into();
    }
    Ok(Reply::json(out))
}

/// `getArtifact`: a redirect to the artifact (following links).
pub async fn get_artifact(api: Api, call: Call) -> Result<Reply> {
    let run_id = run_id(&call);
    artifact_reply(
        &api,
        &call,
        call.param("taskId"),
        run_id,
        call.param("name"),
    )
    .await
}

/// `getLatestArtifact`: [`get_artifact`] on the task's last run.
pub async fn get_latest_artifact(api: Api, call: Call) -> Result<Reply> {
    let id = call.param("taskId");
    let run_id = latest_run(&api.queue, id).await?;
    artifact_reply(&api, &call, id, run_id, call.param("name")).await
}

/// `listArtifacts`: a run's artifacts, paged.
pub async fn list_artifacts(api: Api, call: Call) -> Result<Reply> {
    let (id, r) = (call.param("taskId"), run_id(&call));
    let task = api.queue.task_or_404(id).await?;
    if task.runs.len() <= r as usize {
        return Err(ApiError::NotFound(format!(
            "Run {r} of task {id} not found"
        )));
    }
    artifact_list(&api, &call, r).await
}

/// `listLatestArtifacts`: the last run's artifacts, paged.
pub async fn list_latest_artifacts(api: Api, call: Call) -> Result<Reply> {
    let run_id = latest_run(&api.queue, call.param("taskId")).await?;
    artifact_list(&api, &call, run_id).await
}

async fn artifact_list(api: &Api, call: &Call, run_id: i64) -> Result<Reply> {
    let (limit, token) = call.paging()?;
    let items = api
        .queue
        .artifacts(
            call.param("taskId"),
            run_id,
            token.as_deref().unwrap_or(""),
            limit,
        )
        .await?;
    let (items, next) = page(items, limit, |a| a.name.clone());
    let list: Vec<Value> = items.iter().map(|a| a.info()).collect();
    Ok(Reply::json(with_token(json!({"artifacts": list}), next)))
}

/// `artifactInfo`.
pub async fn artifact_info(api: Api, call: Call) -> Result<Reply> {
    let (id, run_id, name) = (call.param("taskId"), run_id(&call), call.param("name"));
    Ok(Reply::json(
        api.queue.artifact(id, run_id, name).await?.info(),
    ))
}

/// `latestArtifactInfo`.
pub async fn latest_artifact_info(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let id = call.param("taskId");
    let run_id = latest_run(q, id).await?;
    Ok(Reply::json(
        q.artifact(id, run_id, call.param("name")).await?.info(),
    ))
}

/// `listTaskQueues`, paged.
pub async fn list_task_queues(api: Api, call: Call) -> Result<Reply> {
    let (limit, token) = call.paging()?;
    let rows = sqlx::query(
        "SELECT task_queue_id, expires, last_date_active, description, stability FROM task_queues \
         WHERE task_queue_id > $1 ORDER BY task_queue_id LIMIT $2",
    )
    .bind(token.unwrap_or_default())
    .bind(limit)
    .fetch_all(&api.queue.db.pool)
    .await?;
    let items = rows
        .iter()
        .map(task_queue_json)
        .collect::<Result<Vec<_>>>()?;
    let (items, next) = page(items, limit, |v| {
        v["taskQueueId"].as_str().unwrap_or("").to_string()
    });
    Ok(Reply::json(with_token(json!({"taskQueues": items}), next)))
}

/// `getTaskQueue`.
pub async fn get_task_queue(api: Api, call: Call) -> Result<Reply> {
    let tq = call.param("taskQueueId");
    let row = sqlx::query(
        "SELECT task_queue_id, expires, last_date_active, description, stability FROM task_queues WHERE task_queue_id = $1",
    )
    .bind(tq)
    .fetch_optional(&api.queue.db.pool)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("Task queue {tq} not found")))?;
    Ok(Reply::json(task_queue_json(&row)?))
}

/// `pendingTasks`: the number of pending runs.
pub async fn pending_tasks(api: Api, call: Call) -> Result<Reply> {
    Ok(Reply::json(pending_count(&api, &call).await?))
}

/// `taskQueueCounts`: the numbers of pending and claimed runs.
pub async fn task_queue_counts(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let tq = call.param("taskQueueId");
    let mut out = pending_count(&api, &call).await?;
    let claimed: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM tasks WHERE state = 'running' AND taken_until > $2 AND task_queue_id = $1",
    )
    .bind(tq)
    .bind(q.clock.now_ms())
    .fetch_one(&q.db.pool)
    .await?
    .try_get("n")?;
    out["claimedTasks"] = claimed.into();
    Ok(Reply::json(out))
}

async fn pending_count(api: &Api, call: &Call) -> Result<Value> {
    let q = &api.queue;
    let tq = call.param("taskQueueId");
    let (p, w) = split_task_queue_id(tq).unwrap_or_default();
    let pending: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM pending WHERE task_queue_id = $1 AND deadline > $2")
            .bind(tq)
            .bind(q.clock.now_ms())
            .fetch_one(&q.db.pool)
            .await?
            .try_get("n")?;
    Ok(json!({"provisionerId": p, "workerType": w, "taskQueueId": tq, "pendingTasks": pending}))
}

/// `listPendingTasks`, paged.
pub async fn list_pending_tasks(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let tq = call.param("taskQueueId");
    let (limit, token) = call.paging()?;
    let rows = sqlx::query(
        "SELECT task_id, run_id, inserted FROM pending WHERE task_queue_id = $1 AND deadline > $2 \
         AND task_id > $3 ORDER BY task_id LIMIT $4",
    )
    .bind(tq)
    .bind(q.clock.now_ms())
    .bind(token.unwrap_or_default())
    .bind(limit)
    .fetch_all(&q.db.pool)
    .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("task_id"))
        .collect::<Result<_, _>>()?;
    let tasks: HashMap<String, Task> = q
        .load_tasks(&ids)
        .await?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    let mut items = Vec::new();
    for r in &rows {
        let id: String = r.try_get("task_id")?;
        if let Some(t) = tasks.get(&id) {
            items.push(json!({
                "taskId": id, "runId": r.try_get::<i64, _>("run_id")?,
                "task": t.definition(), "inserted": fmt_ms(r.try_get("inserted")?),
            }));
        }
    }
    let (items, next) = page(items, limit, |v| {
        v["taskId"].as_str().unwrap_or("").to_string()
    });
    Ok(Reply::json(with_token(json!({"tasks": items}), next)))
}

/// `listClaimedTasks`, paged.
pub async fn list_claimed_tasks(api: Api, call: Call) -> Result<Reply> {
    let q = &api.queue;
    let tq = call.param("taskQueueId");
    let (limit, token) = call.paging()?;
    let sql = format!(
        "SELECT {} FROM tasks WHERE task_queue_id = $1 AND state = 'running' AND taken_until > $2 \
         AND task_id > $3 ORDER BY task_id LIMIT $4",
        crate::db::TASK_COLUMNS
    );
    let rows = sqlx::query(&sql)
        .bind(tq)
        .bind(q.clock.now_ms())
        .bind(token.unwrap_or_default())
        .bind(limit)
        .fetch_all(&q.db.pool)
        .await?;
    let mut items = Vec::new();
    for r in &rows {
        let t = crate::db::task_from_row(r)?;
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

/// A task queue row as upstream's JSON.
fn task_queue_json(r: &sqlx::any::AnyRow) -> Result<Value> {
    Ok(json!({
        "taskQueueId": r.try_get::<String, _>("task_queue_id")?,
        "stability": r.try_get::<String, _>("stability")?,
        "description": r.try_get::<String, _>("description")?,
        "expires": fmt_ms(r.try_get("expires")?),
        "lastDateActive": fmt_ms(r.try_get("last_date_active")?),
    }))
}

fn check_worker(group: &str, id: &str) -> Result<()> {
    if !validate::is_identifier(group) || !validate::is_identifier(id) {
        return Err(ApiError::InputValidation(format!(
            "Schema validation error: workerGroup {group:?} and workerId {id:?} must match ^[a-zA-Z0-9-_]{{1,38}}$"
        )));
    }
    Ok(())
}

async fn latest_run(q: &crate::core::Queue, task_id: &str) -> Result<i64> {
    let task = q.task_or_404(task_id).await?;
    task.last_run()
        .map(|r| r.run_id)
        .ok_or_else(|| ApiError::NotFound(format!("Task {task_id} has no runs")))
}

/// Follow links from `name` to the artifact to redirect to (checking the
/// scope of each name on the way), or its error.
async fn artifact_reply(
    api: &Api,
    call: &Call,
    task_id: &str,
    run_id: i64,
    name: &str,
) -> Result<Reply> {
    let q = &api.queue;
    let now = q.clock.now_ms();
    let task = q.task_or_404(task_id).await?;
    if task.runs.len() <= run_id as usize {
        return Err(ApiError::NotFound(format!(
            "Run {run_id} of task {task_id} not found"
        )));
    }
    let mut name = name.to_string();
    let mut seen = std::collections::HashSet::new();
    loop {
        if !seen.insert(name.clone()) {
            return Err(ApiError::Input(format!("Artifact link cycle at {name}")));
        }
        call.authorize(&ScopeExpr::Scope(format!("queue:get-artifact:{name}")))?;
        let a = q.artifact(task_id, run_id, &name).await?;
        if a.expires < now {
            return Err(ApiError::Expired(format!(
                "Artifact {name} expired at {}",
                fmt_ms(a.expires)
            )));
        }
        match a.storage_type.as_str() {
            "link" => {
                name = a
                    .details
                    .get("artifact")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            "reference" => {
                let url = a
                    .details
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return Ok(
                    Reply::redirect(&url, json!({"storageType": "reference", "url": url}))
                        .header(STORAGE_TYPE, "reference"),
                );
            }
            "error" => {
                return Ok(Reply::status(
                    StatusCode::FAILED_DEPENDENCY,
                    json!({"reason": a.details.get("reason"), "message": a.details.get("message")}),
                )
                .header(STORAGE_TYPE, "error"));
            }
            _ => {
                let url = api.blobs.get_url(
                    (task_id, run_id, &name),
                    now,
                    now + crate::blob::GET_URL_TTL_MS,
                );
                return Ok(
                    Reply::redirect(&url, json!({"storageType": "s3", "url": url}))
                        .header(STORAGE_TYPE, "s3"),
                );
            }
        }
    }
}

/// Query string of a signed blob URL.
#[derive(Deserialize)]
pub struct BlobQuery {
    expires: i64,
    method: String,
    signature: String,
}

/// `PUT`/`GET <rootUrl>/blobs/<taskId>/<runId>/<name>?expires&method&signature`:
/// the upload and download ends of `s3` artifacts.
pub async fn blob(
    State(api): State<Api>,
    method: Method,
    Path((task_id, run_id, name)): Path<(String, i64, String)>,
    Query(bq): Query<BlobQuery>,
    body: axum::body::Bytes,
) -> Response {
    let now = api.queue.clock.now_ms();
    let Some(blobs) = api.blobs.local() else {
        return (
            StatusCode::NOT_FOUND,
            "artifacts are in an S3-compatible store",
        )
            .into_response();
    };
    if bq.method != method.as_str()
        || !blobs.verify(
            &bq.method,
            (&task_id, run_id, &name),
            bq.expires,
            &bq.signature,
            now,
        )
    {
        return (StatusCode::FORBIDDEN, "invalid or expired signature").into_response();
    }
    if method == Method::PUT {
        match blobs.put(&task_id, run_id, &name, &body).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => {
                tracing::error!(task.id = %task_id, error = %e, "storing artifact failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "storage failed").into_response()
            }
        }
    } else if method == Method::GET {
        let ct = api
            .queue
            .artifact(&task_id, run_id, &name)
            .await
            .map(|a| a.content_type)
            .unwrap_or_else(|_| "application/octet-stream".into());
        match blobs.get(&task_id, run_id, &name).await {
            Ok(Some(b)) => bytes_response(StatusCode::OK, &ct, b),
            Ok(None) => (StatusCode::NOT_FOUND, "not uploaded").into_response(),
            Err(e) => {
                tracing::error!(task.id = %task_id, error = %e, "reading artifact failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "storage failed").into_response()
            }
        }
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}
