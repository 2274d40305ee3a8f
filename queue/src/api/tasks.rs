//! Tasks: definitions and statuses, `createTask`, scheduling, reruns and
//! cancellation, dependents.

use super::Api;
use crate::error::Result;
use crate::model::CreateTaskRequest;
use crate::validate;
use bbb_service::paging::{encode_token, page, with_token};
use bbb_service::{Call, Reply, ScopeParams};
use bbb_tcvalues::Priority;
use serde::Deserialize;
use serde_json::{Value, json};

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
    // The task's priority and every higher one: a scope for a priority allows
    // it and every lower one.
    let priorities = Priority::ALL
        .iter()
        .filter(|p| p.rank() >= def.priority.rank())
        .map(|p| p.as_str());
    call.authorize_with(
        ScopeParams::new()
            .list("scopes", def.scopes.iter().cloned())
            .list("routes", def.routes.iter().cloned())
            .set("projectId", def.project_id.clone())
            .set("schedulerId", def.scheduler_id.clone())
            .list("priorities", priorities)
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
