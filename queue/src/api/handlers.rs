//! One function per API method: check input and scopes, call the queue core,
//! shape the response.

use super::routes::Route;
use super::{Api, Call, Reply, bytes_response, encode_token};
use crate::error::{QueueError, Result};
use crate::model::{CreateTaskRequest, PRIORITIES, Task};
use crate::ops::claims::{EXCEPTION_REASONS, Resolution};
use crate::time::fmt_ms;
use crate::validate::{self, run_id_param, split_task_queue_id, task_id_param};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bbb_auth::ScopeExpr;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::HashMap;
use std::time::Duration;

/// How long claimWork waits for work before answering `{tasks: []}`.
pub const CLAIM_WORK_WAIT: Duration = Duration::from_secs(20);

fn s(x: impl Into<String>) -> ScopeExpr {
    ScopeExpr::Scope(x.into())
}
fn all(v: Vec<ScopeExpr>) -> ScopeExpr {
    ScopeExpr::AllOf { all_of: v }
}
fn any(v: Vec<ScopeExpr>) -> ScopeExpr {
    ScopeExpr::AnyOf { any_of: v }
}

fn group_id_param(g: &str) -> Result<()> {
    validate::param("taskGroupId", g, validate::is_slugid(g))
}

fn queue_param(q: &str) -> Result<()> {
    validate::param("taskQueueId", q, split_task_queue_id(q).is_some())
}

/// The three ways to be allowed to schedule, rerun or cancel a task.
fn task_action_scopes(verb: &str, task: &Task) -> ScopeExpr {
    let d = &task.def;
    any(vec![
        s(format!(
            "queue:{verb}:{}/{}/{}",
            d.scheduler_id, d.task_group_id, task.task_id
        )),
        s(format!("queue:{verb}-in-project:{}", d.project_id)),
        all(vec![
            s(format!("queue:{verb}")),
            s(format!(
                "assume:scheduler-id:{}/{}",
                d.scheduler_id, d.task_group_id
            )),
        ]),
    ])
}

fn strict<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| QueueError::InputValidation(format!("Schema validation error: {e}")))
}

fn page<T>(items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let token = (items.len() as i64 == limit)
        .then(|| items.last().map(&key))
        .flatten()
        .map(|k| encode_token(&k));
    (items, token)
}

fn with_token(mut v: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        v["continuationToken"] = t.into();
    }
    v
}

/// Handle one authenticated call.
pub async fn handle(api: &Api, call: &Call) -> Result<Reply> {
    let q = &api.queue;
    let now = q.clock.now_ms();
    match &call.route {
        Route::Ping => Ok(Reply::Json(
            json!({"alive": true, "uptime": api.started.elapsed().as_secs_f64()}),
        )),
        Route::LbHeartbeat => Ok(Reply::Json(json!({}))),
        Route::Heartbeat => {
            sqlx::query("SELECT 1 AS one").fetch_one(&q.db.pool).await?;
            Ok(Reply::Json(json!({})))
        }
        Route::Version => Ok(Reply::Json(json!({
            "source": q.cfg.source_url,
            "version": env!("CARGO_PKG_VERSION"),
            "commit": option_env!("BBB_GIT_COMMIT").unwrap_or("unknown"),
            "build": "cargo",
        }))),
        Route::Task(id) => {
            task_id_param(id)?;
            call.authorize(&s(format!("queue:get-task:{id}")))?;
            Ok(Reply::Json(q.task_or_404(id).await?.definition()))
        }
        Route::Status(id) => {
            task_id_param(id)?;
            call.authorize(&s(format!("queue:status:{id}")))?;
            Ok(Reply::Json(
                json!({"status": q.task_or_404(id).await?.status()}),
            ))
        }
        Route::Tasks | Route::Statuses => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Req {
                task_ids: Vec<String>,
            }
            let req: Req = strict(call.input()?)?;
            let is_status = matches!(call.route, Route::Statuses);
            let verb = if is_status { "status" } else { "get-task" };
            call.authorize(&all(req
                .task_ids
                .iter()
                .map(|t| s(format!("queue:{verb}:{t}")))
                .collect()))?;
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
            let tasks = q.load_tasks(&ids).await?;
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
            Ok(Reply::Json(with_token(json!({ key: items }), next)))
        }
        Route::CreateTask(id) => {
            task_id_param(id)?;
            let req: CreateTaskRequest = strict(call.input()?)?;
            let max_deadline = q.cfg.max_task_deadline_days as i64 * 86_400_000;
            let def = validate::task_definition(id, req, now, max_deadline)?;
            let rank = PRIORITIES
                .iter()
                .position(|p| *p == def.priority)
                .unwrap_or(PRIORITIES.len() - 1);
            let mut required: Vec<ScopeExpr> = def.scopes.iter().map(|x| s(x.clone())).collect();
            required.extend(def.routes.iter().map(|r| s(format!("queue:route:{r}"))));
            required.push(s(format!("queue:create-task:project:{}", def.project_id)));
            required.push(s(format!("queue:scheduler-id:{}", def.scheduler_id)));
            required.push(any(PRIORITIES[..=rank]
                .iter()
                .map(|p| s(format!("queue:create-task:{p}:{}", def.task_queue_id)))
                .collect()));
            call.authorize(&all(required))?;
            Ok(Reply::Json(q.create_task(id, &def).await?))
        }
        Route::ScheduleTask(id) | Route::RerunTask(id) | Route::CancelTask(id) => {
            task_id_param(id)?;
            let task = q.task_or_404(id).await?;
            let verb = match call.route {
                Route::ScheduleTask(_) => "schedule-task",
                Route::RerunTask(_) => "rerun-task",
                _ => "cancel-task",
            };
            call.authorize(&task_action_scopes(verb, &task))?;
            let out = match call.route {
                Route::ScheduleTask(_) => q.schedule_task(id).await?,
                Route::RerunTask(_) => q.rerun_task(id).await?,
                _ => q.cancel_task(id).await?,
            };
            Ok(Reply::Json(out))
        }
        Route::ListDependentTasks(id) => {
            task_id_param(id)?;
            call.authorize(&s(format!("queue:list-dependent-tasks:{id}")))?;
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
            Ok(Reply::Json(with_token(
                json!({"taskId": id, "tasks": items}),
                next,
            )))
        }
        Route::GetTaskGroup(g) | Route::ListTaskGroup(g) => {
            group_id_param(g)?;
            call.authorize(&s(format!("queue:list-task-group:{g}")))?;
            let mut group = q.task_group(g).await?;
            if matches!(call.route, Route::ListTaskGroup(_)) {
                let (limit, token) = call.paging()?;
                let tasks = q
                    .group_tasks(g, token.as_deref().unwrap_or(""), limit)
                    .await?;
                let (tasks, next) = page(tasks, limit, |t| t.task_id.clone());
                group["tasks"] = tasks
                    .iter()
                    .map(|t| json!({"task": t.definition(), "status": t.status()}))
                    .collect();
                group = with_token(group, next);
            }
            Ok(Reply::Json(group))
        }
        Route::SealTaskGroup(g) | Route::CancelTaskGroup(g) => {
            group_id_param(g)?;
            let group = q.task_group(g).await?;
            let sid = group["schedulerId"].as_str().unwrap_or("-");
            let seal = matches!(call.route, Route::SealTaskGroup(_));
            let verb = if seal {
                "seal-task-group"
            } else {
                "cancel-task-group"
            };
            call.authorize(&s(format!("queue:{verb}:{sid}/{g}")))?;
            Ok(Reply::Json(if seal {
                q.seal_task_group(g).await?
            } else {
                q.cancel_task_group(g).await?
            }))
        }
        Route::ClaimWork(tq) => claim_work(api, call, tq).await,
        Route::ClaimTask(id, run) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Req {
                worker_group: String,
                worker_id: String,
            }
            let req: Req = strict(call.input()?)?;
            check_worker(&req.worker_group, &req.worker_id)?;
            let task = q.task_or_404(id).await?;
            call.authorize(&all(vec![
                s(format!("queue:claim-task:{}", task.def.task_queue_id)),
                s(format!(
                    "queue:worker-id:{}/{}",
                    req.worker_group, req.worker_id
                )),
            ]))?;
            Ok(Reply::Json(
                q.claim_task(id, run_id, &req.worker_group, &req.worker_id)
                    .await?,
            ))
        }
        Route::ReclaimTask(id, run) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            call.authorize(&s(format!("queue:reclaim-task:{id}/{run_id}")))?;
            Ok(Reply::Json(q.reclaim_task(id, run_id).await?))
        }
        Route::ReportCompleted(id, run)
        | Route::ReportFailed(id, run)
        | Route::ReportException(id, run) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            call.authorize(&s(format!("queue:resolve-task:{id}/{run_id}")))?;
            let reason;
            let how = match call.route {
                Route::ReportCompleted(..) => Resolution::Completed,
                Route::ReportFailed(..) => Resolution::Failed,
                _ => {
                    #[derive(Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Req {
                        reason: String,
                    }
                    let req: Req = strict(call.input()?)?;
                    if !EXCEPTION_REASONS.contains(&req.reason.as_str()) {
                        return Err(QueueError::InputValidation(format!(
                            "Schema validation error: reason {:?} must be one of {}",
                            req.reason,
                            EXCEPTION_REASONS.join(", ")
                        )));
                    }
                    reason = req.reason;
                    Resolution::Exception(&reason)
                }
            };
            Ok(Reply::Json(q.resolve_run(id, run_id, how).await?))
        }
        Route::CreateArtifact(id, run, name) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            call.authorize(&s(format!("queue:create-artifact:{id}/{run_id}")))?;
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
            Ok(Reply::Json(out))
        }
        Route::GetArtifact(id, run, name) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            call.authorize(&s(format!("queue:get-artifact:{name}")))?;
            get_artifact(api, call, id, run_id, name).await
        }
        Route::GetLatestArtifact(id, name) => {
            task_id_param(id)?;
            call.authorize(&s(format!("queue:get-artifact:{name}")))?;
            let run_id = latest_run(q, id).await?;
            get_artifact(api, call, id, run_id, name).await
        }
        Route::ListArtifacts(id, _) | Route::ListLatestArtifacts(id) => {
            task_id_param(id)?;
            let run_id = match &call.route {
                Route::ListArtifacts(_, run) => {
                    let r = run_id_param(run)?;
                    call.authorize(&s(format!("queue:list-artifacts:{id}:{r}")))?;
                    let task = q.task_or_404(id).await?;
                    if task.runs.len() <= r as usize {
                        return Err(QueueError::NotFound(format!(
                            "Run {r} of task {id} not found"
                        )));
                    }
                    r
                }
                _ => {
                    call.authorize(&s(format!("queue:list-artifacts:{id}")))?;
                    latest_run(q, id).await?
                }
            };
            let (limit, token) = call.paging()?;
            let items = q
                .artifacts(id, run_id, token.as_deref().unwrap_or(""), limit)
                .await?;
            let (items, next) = page(items, limit, |a| a.name.clone());
            let list: Vec<Value> = items.iter().map(|a| a.info()).collect();
            Ok(Reply::Json(with_token(json!({"artifacts": list}), next)))
        }
        Route::ArtifactInfo(id, run, name) => {
            task_id_param(id)?;
            let run_id = run_id_param(run)?;
            call.authorize(&s(format!("queue:list-artifacts:{id}:{run_id}")))?;
            Ok(Reply::Json(q.artifact(id, run_id, name).await?.info()))
        }
        Route::LatestArtifactInfo(id, name) => {
            task_id_param(id)?;
            call.authorize(&s(format!("queue:list-artifacts:{id}")))?;
            let run_id = latest_run(q, id).await?;
            Ok(Reply::Json(q.artifact(id, run_id, name).await?.info()))
        }
        Route::ListTaskQueues => {
            call.authorize(&s("queue:list-task-queues"))?;
            let (limit, token) = call.paging()?;
            let rows = sqlx::query(
                "SELECT task_queue_id, expires, last_date_active, description, stability FROM task_queues \
                 WHERE task_queue_id > $1 ORDER BY task_queue_id LIMIT $2",
            )
            .bind(token.unwrap_or_default())
            .bind(limit)
            .fetch_all(&q.db.pool)
            .await?;
            let items = rows
                .iter()
                .map(task_queue_json)
                .collect::<Result<Vec<_>>>()?;
            let (items, next) = page(items, limit, |v| {
                v["taskQueueId"].as_str().unwrap_or("").to_string()
            });
            Ok(Reply::Json(with_token(json!({"taskQueues": items}), next)))
        }
        Route::GetTaskQueue(tq) => {
            queue_param(tq)?;
            call.authorize(&s(format!("queue:get-task-queue:{tq}")))?;
            let row = sqlx::query(
                "SELECT task_queue_id, expires, last_date_active, description, stability FROM task_queues WHERE task_queue_id = $1",
            )
            .bind(tq)
            .fetch_optional(&q.db.pool)
            .await?
            .ok_or_else(|| QueueError::NotFound(format!("Task queue {tq} not found")))?;
            Ok(Reply::Json(task_queue_json(&row)?))
        }
        Route::TaskQueueCounts(tq) | Route::PendingTasks(tq) => {
            queue_param(tq)?;
            let (p, w) = split_task_queue_id(tq).unwrap_or_default();
            let pending: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM pending WHERE task_queue_id = $1 AND deadline > $2",
            )
            .bind(tq)
            .bind(now)
            .fetch_one(&q.db.pool)
            .await?
            .try_get("n")?;
            let mut out = json!({"provisionerId": p, "workerType": w, "taskQueueId": tq, "pendingTasks": pending});
            if matches!(call.route, Route::TaskQueueCounts(_)) {
                call.authorize(&all(vec![
                    s(format!("queue:pending-count:{tq}")),
                    s(format!("queue:claimed-count:{tq}")),
                ]))?;
                let claimed: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM tasks WHERE state = 'running' AND taken_until > $2 AND task_queue_id = $1",
                )
                .bind(tq)
                .bind(now)
                .fetch_one(&q.db.pool)
                .await?
                .try_get("n")?;
                out["claimedTasks"] = claimed.into();
            } else {
                call.authorize(&s(format!("queue:pending-count:{tq}")))?;
            }
            Ok(Reply::Json(out))
        }
        Route::ListPendingTasks(tq) => {
            queue_param(tq)?;
            call.authorize(&s(format!("queue:pending-list:{tq}")))?;
            let (limit, token) = call.paging()?;
            let rows = sqlx::query(
                "SELECT task_id, run_id, inserted FROM pending WHERE task_queue_id = $1 AND deadline > $2 \
                 AND task_id > $3 ORDER BY task_id LIMIT $4",
            )
            .bind(tq)
            .bind(now)
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
            Ok(Reply::Json(with_token(json!({"tasks": items}), next)))
        }
        Route::ListClaimedTasks(tq) => {
            queue_param(tq)?;
            call.authorize(&s(format!("queue:claimed-list:{tq}")))?;
            let (limit, token) = call.paging()?;
            let sql = format!(
                "SELECT {} FROM tasks WHERE task_queue_id = $1 AND state = 'running' AND taken_until > $2 \
                 AND task_id > $3 ORDER BY task_id LIMIT $4",
                crate::db::TASK_COLUMNS
            );
            let rows = sqlx::query(&sql)
                .bind(tq)
                .bind(now)
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
            Ok(Reply::Json(with_token(json!({"tasks": items}), next)))
        }
        Route::ListWorkers(p, w) => {
            call.authorize(&s(format!("queue:list-workers:{p}/{w}")))?;
            let (limit, token) = call.paging()?;
            let workers = q
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
            Ok(Reply::Json(with_token(json!({"workers": items}), next)))
        }
        Route::GetWorker(p, w, g, i) => {
            call.authorize(&s(format!("queue:get-worker:{p}/{w}/{g}/{i}")))?;
            let r = q.worker(&format!("{p}/{w}"), g, i).await?.ok_or_else(|| {
                QueueError::NotFound(format!("Worker {g}/{i} not found in {p}/{w}"))
            })?;
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
            Ok(Reply::Json(v))
        }
    }
}

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
        return Err(QueueError::InputValidation(format!(
            "Schema validation error: workerGroup {group:?} and workerId {id:?} must match ^[a-zA-Z0-9-_]{{1,38}}$"
        )));
    }
    Ok(())
}

async fn latest_run(q: &crate::core::Queue, task_id: &str) -> Result<i64> {
    let task = q.task_or_404(task_id).await?;
    task.last_run()
        .map(|r| r.run_id)
        .ok_or_else(|| QueueError::NotFound(format!("Task {task_id} has no runs")))
}

async fn claim_work(api: &Api, call: &Call, tq: &str) -> Result<Reply> {
    queue_param(tq)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        worker_group: String,
        worker_id: String,
        tasks: Option<i64>,
    }
    let req: Req = strict(call.input()?)?;
    check_worker(&req.worker_group, &req.worker_id)?;
    let count = req.tasks.unwrap_or(1);
    if !(1..=32).contains(&count) {
        return Err(QueueError::InputValidation(format!(
            "Schema validation error: tasks must be between 1 and 32, not {count}"
        )));
    }
    call.authorize(&all(vec![
        s(format!("queue:claim-work:{tq}")),
        s(format!(
            "queue:worker-id:{}/{}",
            req.worker_group, req.worker_id
        )),
    ]))?;
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
            return Ok(Reply::Json(json!({"tasks": claims})));
        }
        let now = tokio::time::Instant::now();
        if now >= give_up {
            return Ok(Reply::Json(json!({"tasks": []})));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(give_up.min(now + poll)) => {}
        }
    }
}

async fn get_artifact(
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
        return Err(QueueError::NotFound(format!(
            "Run {run_id} of task {task_id} not found"
        )));
    }
    let mut name = name.to_string();
    let mut seen = std::collections::HashSet::new();
    loop {
        if !seen.insert(name.clone()) {
            return Err(QueueError::Input(format!("Artifact link cycle at {name}")));
        }
        call.authorize(&s(format!("queue:get-artifact:{name}")))?;
        let a = q.artifact(task_id, run_id, &name).await?;
        if a.expires < now {
            return Err(QueueError::Expired(format!(
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
                return Ok(Reply::Redirect(
                    url.clone(),
                    json!({"storageType": "reference", "url": url}),
                    "reference".into(),
                ));
            }
            "error" => {
                return Ok(Reply::Status(
                    StatusCode::FAILED_DEPENDENCY,
                    json!({"reason": a.details.get("reason"), "message": a.details.get("message")}),
                    Some("error".into()),
                ));
            }
            _ => {
                let url = api.blobs.get_url(
                    (task_id, run_id, &name),
                    now,
                    now + crate::blob::GET_URL_TTL_MS,
                );
                return Ok(Reply::Redirect(
                    url.clone(),
                    json!({"storageType": "s3", "url": url}),
                    "s3".into(),
                ));
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
