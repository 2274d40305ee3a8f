//! Task groups: get, list, seal, cancel.

use super::Api;
use crate::error::Result;
use bbb_service::paging::{page, with_token};
use bbb_service::{Call, Reply, ScopeParams};
use serde_json::json;

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
