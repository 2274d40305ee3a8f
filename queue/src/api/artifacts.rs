//! Artifacts: create, get (following links to a redirect, or the content's
//! whereabouts as JSON), list, info, and the signed blob URLs where the queue
//! itself keeps `s3` artifacts' bytes.

use super::{Api, run_id};
use crate::error::{ApiError, Result};
use crate::ops::artifacts::Artifact;
use crate::time::fmt_ms;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bbb_auth::ScopeExpr;
use bbb_service::paging::{page, with_token};
use bbb_service::reply::bytes_response;
use bbb_service::{Call, Reply};
use serde::Deserialize;
use serde_json::{Value, json};

/// The header naming an artifact's storage type on its redirect or error.
const STORAGE_TYPE: &str = "x-taskcluster-artifact-storage-type";

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

/// `artifact`: how to get the artifact's content (following links), as JSON.
pub async fn artifact(api: Api, call: Call) -> Result<Reply> {
    let (id, run_id, name) = (call.param("taskId"), run_id(&call), call.param("name"));
    let a = follow_links(&api.queue, id, run_id, name, &caller_may_get(&call)).await?;
    Ok(Reply::json(api.content(&a)))
}

/// `latestArtifact`: [`artifact`] on the task's last run.
pub async fn latest_artifact(api: Api, call: Call) -> Result<Reply> {
    let id = call.param("taskId");
    let run_id = latest_run(&api.queue, id).await?;
    let a = follow_links(
        &api.queue,
        id,
        run_id,
        call.param("name"),
        &caller_may_get(&call),
    )
    .await?;
    Ok(Reply::json(api.content(&a)))
}

impl Api {
    /// What `latestArtifact` answers, for an in-process caller that may get
    /// every artifact (the index's `findArtifactFromTask`): `{storageType,
    /// url}`, or `{storageType: "error", reason, message}`.
    pub async fn latest_artifact_content(&self, task_id: &str, name: &str) -> Result<Value> {
        let run_id = latest_run(&self.queue, task_id).await?;
        let a = follow_links(&self.queue, task_id, run_id, name, &|_| Ok(())).await?;
        Ok(self.content(&a))
    }

    /// The artifact-content body of `a` (not a link): where to download it
    /// (a fresh signed URL for `s3`), or its error.
    fn content(&self, a: &Artifact) -> Value {
        match a.storage_type.as_str() {
            "error" => json!({
                "storageType": "error",
                "reason": a.details.get("reason"),
                "message": a.details.get("message"),
            }),
            "reference" => json!({
                "storageType": "reference",
                "url": a.details.get("url").and_then(Value::as_str).unwrap_or_default(),
            }),
            _ => {
                let now = self.queue.clock.now_ms();
                let url = self.blobs.get_url(
                    (&a.task_id, a.run_id, &a.name),
                    now,
                    now + crate::blob::GET_URL_TTL_MS,
                );
                json!({"storageType": "s3", "url": url})
            }
        }
    }
}

/// The check of each name a download follows: the caller's
/// `queue:get-artifact:<name>`.
fn caller_may_get(call: &Call) -> impl Fn(&str) -> Result<()> + Sync + '_ {
    move |name| call.authorize(&ScopeExpr::Scope(format!("queue:get-artifact:{name}")))
}

/// Follow links from `name` to the artifact they lead to, checking
/// `may_get` on each name on the way.
async fn follow_links(
    q: &crate::core::Queue,
    task_id: &str,
    run_id: i64,
    name: &str,
    may_get: &(dyn Fn(&str) -> Result<()> + Sync),
) -> Result<Artifact> {
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
        may_get(&name)?;
        let a = q.artifact(task_id, run_id, &name).await?;
        if a.expires < now {
            return Err(ApiError::Expired(format!(
                "Artifact {name} expired at {}",
                fmt_ms(a.expires)
            )));
        }
        if a.storage_type != "link" {
            return Ok(a);
        }
        name = a
            .details
            .get("artifact")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
}

/// The redirect to the artifact `name` leads to, or its error (424).
async fn artifact_reply(
    api: &Api,
    call: &Call,
    task_id: &str,
    run_id: i64,
    name: &str,
) -> Result<Reply> {
    let a = follow_links(&api.queue, task_id, run_id, name, &caller_may_get(call)).await?;
    let content = api.content(&a);
    if a.storage_type == "error" {
        return Ok(Reply::status(
            StatusCode::FAILED_DEPENDENCY,
            json!({"reason": content["reason"], "message": content["message"]}),
        )
        .header(STORAGE_TYPE, "error"));
    }
    let url = content["url"].as_str().unwrap_or_default().to_string();
    let storage_type = content["storageType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Reply::redirect(&url, content).header(STORAGE_TYPE, &storage_type))
}

async fn latest_run(q: &crate::core::Queue, task_id: &str) -> Result<i64> {
    let task = q.task_or_404(task_id).await?;
    task.last_run()
        .map(|r| r.run_id)
        .ok_or_else(|| ApiError::NotFound(format!("Task {task_id} has no runs")))
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
