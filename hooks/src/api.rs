//! The HTTP API at `<rootUrl>/api/hooks/v1/`: upstream's endpoints, scopes,
//! bodies and error messages, on [`bbb_service`].

use crate::Hooks;
use crate::creator::{FireError, FireOptions};
use crate::model::{self, FiredBy, Hook, HookBinding};
use crate::schema::{self, Problem};
use bbb_auth::Authenticator;
use bbb_service::paging::encode_token;
use bbb_service::validate::{is_slugid, param, slugid};
use bbb_service::{ApiError, Call, Reply, Result, Service, all_of, delete, get, post, put, scope};
use regex::Regex;
use serde_json::{Map, Value, json};
use std::sync::{Arc, LazyLock};

static HOOK_GROUP_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]{1,1000}$").expect("regex"));
static HOOK_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_/-]{1,1000}$").expect("regex"));

/// The hooks service's endpoints and URL parameter checks.
pub fn service(hooks: Hooks, auth: Arc<Authenticator>) -> Service<Hooks> {
    let clock = hooks.clock.clone();
    let modify = || {
        all_of([
            scope("hooks:modify-hook:<hookGroupId>/<hookId>"),
            scope("assume:hook-id:<hookGroupId>/<hookId>"),
        ])
    };
    Service::new("hooks", "v1", hooks, auth, clock)
        .param("hookGroupId", |v| {
            param("hookGroupId", v, HOOK_GROUP_ID.is_match(v)).map(|()| v.to_string())
        })
        .param("hookId", |v| {
            param("hookId", v, HOOK_ID.is_match(v)).map(|()| v.to_string())
        })
        .endpoints([
            get("/__heartbeat__", "heartbeat").to(heartbeat),
            get("/__version__", "version").to(version),
            get("/hooks", "listHookGroups")
                .scopes(scope("hooks:list-hooks:"))
                .to(list_hook_groups),
            get("/hooks/<hookGroupId>", "listHooks")
                .scopes(scope("hooks:list-hooks:<hookGroupId>"))
                .to(list_hooks),
            get("/hooks/<hookGroupId>/<hookId>", "hook")
                .scopes(scope("hooks:get:<hookGroupId>:<hookId>"))
                .to(hook),
            get("/hooks/<hookGroupId>/<hookId>/status", "getHookStatus")
                .scopes(scope("hooks:status:<hookGroupId>/<hookId>"))
                .to(hook_status),
            put("/hooks/<hookGroupId>/<hookId>", "createHook")
                .scopes(modify())
                .to(create_hook),
            post("/hooks/<hookGroupId>/<hookId>", "updateHook")
                .scopes(modify())
                .to(update_hook),
            delete("/hooks/<hookGroupId>/<hookId>", "removeHook")
                .scopes(scope("hooks:modify-hook:<hookGroupId>/<hookId>"))
                .to(remove_hook),
            post("/hooks/<hookGroupId>/<hookId>/trigger", "triggerHook")
                .scopes(scope("hooks:trigger-hook:<hookGroupId>/<hookId>"))
                .to(trigger_hook),
            get("/hooks/<hookGroupId>/<hookId>/token", "getTriggerToken")
                .scopes(scope("hooks:get-trigger-token:<hookGroupId>/<hookId>"))
                .to(get_trigger_token),
            post("/hooks/<hookGroupId>/<hookId>/token", "resetTriggerToken")
                .scopes(scope("hooks:reset-trigger-token:<hookGroupId>/<hookId>"))
                .to(reset_trigger_token),
            post(
                "/hooks/<hookGroupId>/<hookId>/trigger/<token>",
                "triggerHookWithToken",
            )
            .to(trigger_hook_with_token),
            get("/hooks/<hookGroupId>/<hookId>/last-fires", "listLastFires")
                .scopes(scope("hooks:list-last-fires:<hookGroupId>/<hookId>"))
                .to(list_last_fires),
        ])
}

/// `(hookGroupId, hookId)` of a call.
fn ids(call: &Call) -> (String, String) {
    (
        call.param("hookGroupId").to_owned(),
        call.param("hookId").to_owned(),
    )
}

/// The hook of a call, or upstream's 404.
async fn existing(hooks: &Hooks, call: &Call) -> Result<Hook> {
    let (g, id) = ids(call);
    hooks
        .store
        .hook(&g, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such hook".into()))
}

/// `__heartbeat__`: the database answers.
async fn heartbeat(hooks: Hooks, _: Call) -> Result<Reply> {
    hooks.store.ping().await?;
    Ok(Reply::json(json!({})))
}

/// `__version__`: this build.
async fn version(hooks: Hooks, _: Call) -> Result<Reply> {
    Ok(Reply::json(json!({
        "source": hooks.queue.cfg.source_url,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("BBB_GIT_COMMIT").unwrap_or("unknown"),
        "build": "cargo",
    })))
}

/// `listHookGroups`.
async fn list_hook_groups(hooks: Hooks, _: Call) -> Result<Reply> {
    Ok(Reply::json(json!({"groups": hooks.store.groups().await?})))
}

/// `listHooks`: 404 for a group without hooks.
async fn list_hooks(hooks: Hooks, call: Call) -> Result<Reply> {
    let list = hooks.store.hooks(Some(call.param("hookGroupId"))).await?;
    if list.is_empty() {
        return Err(ApiError::NotFound("No such group".into()));
    }
    let defs: Vec<Value> = list.iter().map(Hook::definition).collect();
    Ok(Reply::json(json!({"hooks": defs})))
}

/// `hook`.
async fn hook(hooks: Hooks, call: Call) -> Result<Reply> {
    Ok(Reply::json(existing(&hooks, &call).await?.definition()))
}

/// `getHookStatus`: the latest firing, and the next scheduled date of a hook
/// with a schedule.
async fn hook_status(hooks: Hooks, call: Call) -> Result<Reply> {
    let hook = existing(&hooks, &call).await?;
    let latest = hooks
        .store
        .last_fires(&hook.hook_group_id, &hook.hook_id, 1, None)
        .await?;
    let last_fire = match latest.first() {
        None => json!({"result": "no-fire"}),
        Some(f) if f.result == "success" => json!({
            "result": f.result,
            "taskId": f.task_id,
            "time": bbb_clock::fmt_ms(f.task_create_time),
        }),
        Some(f) => {
            let error = serde_json::from_str::<Value>(&f.error)
                .unwrap_or_else(|_| json!({"message": f.error}));
            json!({"result": f.result, "error": error, "time": bbb_clock::fmt_ms(f.task_create_time)})
        }
    };
    let mut reply = json!({"lastFire": last_fire});
    if !hook.schedule.is_empty() {
        reply["nextScheduledDate"] = bbb_clock::fmt_ms(hook.next_scheduled_date).into();
    }
    Ok(Reply::json(reply))
}

/// The checks `createHook` and `updateHook` share once the hook's ids are
/// known: the ids in the body match the URL's, then are set.
fn with_ids(def: &mut Value, group: &str, id: &str) -> Result<()> {
    if def
        .get("hookGroupId")
        .is_some_and(|v| v.as_str() != Some(group))
    {
        return Err(ApiError::Input("Hook Group Ids do not match".into()));
    }
    if def.get("hookId").is_some_and(|v| v.as_str() != Some(id)) {
        return Err(ApiError::Input("Hook Ids do not match".into()));
    }
    def["hookGroupId"] = group.into();
    def["hookId"] = id.into();
    Ok(())
}

/// Every pattern of `schedule` parses.
fn check_schedule(schedule: &[String]) -> Result<()> {
    for pattern in schedule {
        crate::cron::parse(pattern)
            .map_err(|message| ApiError::Input(format!("{message} in {pattern}")))?;
    }
    Ok(())
}

/// `triggerSchema` is a usable JSON Schema.
fn check_trigger_schema(def: &Value) -> Result<()> {
    let problems = schema::schema_problems(&def["triggerSchema"]);
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|Problem { path, message }| format!(" * Property {path} {message}"))
        .collect();
    Err(ApiError::Input(format!(
        "triggerSchema is not a valid JSON schema:\n{}",
        lines.join("\n")
    )))
}

/// No binding is to an exchange of the denylist.
fn check_bindings(hooks: &Hooks, bindings: &[HookBinding]) -> Result<()> {
    let denied = bindings
        .iter()
        .any(|b| hooks.denylist.iter().any(|d| d.is_match(&b.exchange)));
    if denied {
        return Err(ApiError::Input(format!(
            "One or more of the exchanges below have been denied access to hooks\n{}",
            serde_json::to_string(bindings)?
        )));
    }
    Ok(())
}

/// `createHook`: idempotent (the same definition again is 200), another
/// definition under the same ids is 409.
async fn create_hook(hooks: Hooks, call: Call) -> Result<Reply> {
    let mut def = model::hook_request(&hooks.root_url, call.input()?)?;
    let (group, id) = ids(&call);
    with_ids(&mut def, &group, &id)?;
    let (bindings, schedule) = model::bindings_and_schedule(&def);
    check_schedule(&schedule)?;
    check_trigger_schema(&def)?;
    let bindings = bindings.unwrap_or_default();
    check_bindings(&hooks, &bindings)?;
    let now = hooks.clock.now_ms();
    let hook = Hook {
        hook_group_id: group.clone(),
        hook_id: id.clone(),
        metadata: def["metadata"].clone(),
        task: def["task"].clone(),
        bindings,
        schedule: schedule.clone(),
        trigger_schema: def["triggerSchema"].clone(),
        trigger_token: slugid(),
        next_task_id: slugid(),
        next_scheduled_date: crate::cron::next_date(&schedule, now),
    };
    if !hooks.store.create(&hook).await? {
        let same = hooks
            .store
            .hook(&group, &id)
            .await?
            .is_some_and(|existing| existing.definition() == hook.definition());
        if !same {
            return Err(ApiError::Conflict(format!(
                "hook `{group}/{id}` already exists."
            )));
        }
    } else {
        tracing::info!(hook.group = %group, hook.id = %id, client.id = ?call.client_id, "hook created");
    }
    hooks.changed(&group, &id, "hook-created").await?;
    Ok(Reply::json(def))
}

/// `updateHook`: every field but the ids; the bindings stay when the body
/// has none; the next scheduled slot is computed anew.
async fn update_hook(hooks: Hooks, call: Call) -> Result<Reply> {
    let mut def = model::hook_request(&hooks.root_url, call.input()?)?;
    let (group, id) = ids(&call);
    with_ids(&mut def, &group, &id)?;
    let existing = existing(&hooks, &call).await?;
    check_trigger_schema(&def)?;
    let (bindings, schedule) = model::bindings_and_schedule(&def);
    check_schedule(&schedule)?;
    let bindings = bindings.unwrap_or(existing.bindings.clone());
    check_bindings(&hooks, &bindings)?;
    let now = hooks.clock.now_ms();
    let hook = Hook {
        metadata: def["metadata"].clone(),
        task: def["task"].clone(),
        bindings,
        next_scheduled_date: crate::cron::next_date(&schedule, now),
        schedule,
        trigger_schema: def["triggerSchema"].clone(),
        next_task_id: slugid(),
        ..existing
    };
    let updated = hooks
        .store
        .update(&hook)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such hook".into()))?;
    tracing::info!(hook.group = %group, hook.id = %id, client.id = ?call.client_id, "hook updated");
    hooks.changed(&group, &id, "hook-updated").await?;
    Ok(Reply::json(updated.definition()))
}

/// `removeHook`: the hook and the record of its firings; nothing to remove
/// is no error.
async fn remove_hook(hooks: Hooks, call: Call) -> Result<Reply> {
    let (group, id) = ids(&call);
    hooks.store.delete(&group, &id).await?;
    tracing::info!(hook.group = %group, hook.id = %id, client.id = ?call.client_id, "hook removed");
    hooks.changed(&group, &id, "hook-deleted").await?;
    Ok(Reply::json(json!({})))
}

/// The trigger payload: a JSON object (upstream's `trigger-hook` schema).
fn trigger_payload(hooks: &Hooks, call: &Call) -> Result<Value> {
    let payload = call.input()?;
    if !payload.is_object() {
        return Err(model::input_validation_error(
            &hooks.root_url,
            "trigger-hook",
            &[Problem {
                path: String::new(),
                message: "must be object".into(),
            }],
        ));
    }
    Ok(payload.clone())
}

/// `triggerHook`.
async fn trigger_hook(hooks: Hooks, call: Call) -> Result<Reply> {
    let payload = trigger_payload(&hooks, &call)?;
    let hook = existing(&hooks, &call).await?;
    trigger(
        &hooks,
        &hook,
        payload,
        call.client_id.as_deref(),
        FiredBy::TriggerHook,
    )
    .await
}

/// `triggerHookWithToken`: no credentials, the hook's secret token in the URL.
async fn trigger_hook_with_token(hooks: Hooks, call: Call) -> Result<Reply> {
    let payload = trigger_payload(&hooks, &call)?;
    let hook = existing(&hooks, &call).await?;
    if call.param("token") != hook.trigger_token {
        return Err(ApiError::Authentication("invalid hook token".into()));
    }
    trigger(&hooks, &hook, payload, None, FiredBy::TriggerHookWithToken).await
}

/// Fire `hook` for a trigger call and answer as upstream: the payload checked
/// against the trigger schema, an optional `taskId` in it, the task created
/// (or none), or the failure explained.
async fn trigger(
    hooks: &Hooks,
    hook: &Hook,
    payload: Value,
    client_id: Option<&str>,
    fired_by: FiredBy,
) -> Result<Reply> {
    let problems = schema::check(&hook.trigger_schema, &payload);
    if !problems.is_empty() {
        return Err(ApiError::Input(schema::errors_text(&problems, "; ")));
    }
    let task_id = match payload.get("taskId") {
        Some(Value::Null) | Some(Value::Bool(false)) | None => slugid(),
        Some(Value::String(s)) if s.is_empty() => slugid(),
        Some(Value::String(s)) if is_slugid(s) => s.clone(),
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string());
            return Err(ApiError::Input(format!("Invalid taskId format: {shown}")));
        }
    };
    let mut context = Map::new();
    context.insert("firedBy".into(), fired_by.as_str().into());
    context.insert("payload".into(), payload);
    if let Some(c) = client_id {
        context.insert("clientId".into(), c.into());
    }
    let opts = FireOptions {
        task_id,
        created: hooks.clock.now_ms(),
        retry: false,
    };
    let fired = hooks.creator.fire(hook, fired_by, context, &opts).await;
    if let Some(record) = &fired.record {
        hooks.store.record_fire(record).await?;
    }
    match fired.outcome {
        Ok(Some(task_id)) => Ok(Reply::json(
            json!({"taskId": task_id, "status": {"taskId": task_id}}),
        )),
        Ok(None) => Ok(Reply::json(json!({}))),
        Err(e) => Err(trigger_error(hook, e)),
    }
}

/// Upstream's answer to a failed trigger: the queue's refusal of the hook's
/// role as 403, its other errors and every other failure as 400.
pub fn trigger_error(hook: &Hook, e: FireError) -> ApiError {
    match e {
        FireError::CreateTask(answer) if answer.body["requestInfo"].is_object() => {
            let text = |v: &Value| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            };
            let code = text(&answer.body["code"]);
            let method = text(&answer.body["requestInfo"]["method"]);
            let message = text(&answer.body["message"]);
            if method == "createTask" && code == "InsufficientScopes" {
                ApiError::InsufficientScopes(format!(
                    "The role `hook-id:{}/{}` does not have sufficient scopes to create the task:\n\n{message}",
                    hook.hook_group_id, hook.hook_id
                ))
            } else {
                ApiError::Input(format!("While calling {method}: {code}\n\n{message}"))
            }
        }
        FireError::CreateTask(answer) => {
            let message = answer.body["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {}", answer.status));
            ApiError::Input(format!("While firing hook:\n\nError: {message}"))
        }
        FireError::Render(e) | FireError::Unreachable(e) => {
            ApiError::Input(format!("While firing hook:\n\n{e}"))
        }
    }
}

/// `getTriggerToken`.
async fn get_trigger_token(hooks: Hooks, call: Call) -> Result<Reply> {
    let hook = existing(&hooks, &call).await?;
    Ok(Reply::json(json!({"token": hook.trigger_token})))
}

/// `resetTriggerToken`: a new token; the old one no longer triggers.
async fn reset_trigger_token(hooks: Hooks, call: Call) -> Result<Reply> {
    let (group, id) = ids(&call);
    let token = slugid();
    if !hooks.store.set_trigger_token(&group, &id, &token).await? {
        return Err(ApiError::NotFound("No such hook".into()));
    }
    Ok(Reply::json(json!({"token": token})))
}

/// `listLastFires`: newest first, paged; 404 when there is nothing to list.
async fn list_last_fires(hooks: Hooks, call: Call) -> Result<Reply> {
    let (group, id) = ids(&call);
    let (limit, token) = call.paging()?;
    let after = token
        .map(|t| {
            t.split_once('/')
                .and_then(|(ms, task)| Some((ms.parse::<i64>().ok()?, task.to_owned())))
                .ok_or_else(|| ApiError::Input(format!("Invalid continuationToken {t:?}")))
        })
        .transpose()?;
    let fires = hooks.store.last_fires(&group, &id, limit, after).await?;
    if fires.is_empty() {
        return Err(ApiError::NotFound("No such hook or never fired".into()));
    }
    let next = (fires.len() as i64 == limit)
        .then(|| fires.last())
        .flatten()
        .map(|f| encode_token(&format!("{}/{}", f.task_create_time, f.task_id)));
    let mut list = Vec::with_capacity(fires.len());
    for f in fires {
        let state = hooks
            .queue
            .load_task(&f.task_id)
            .await?
            .and_then(|t| t.runs.last().map(|r| r.state.as_str().to_owned()))
            .unwrap_or_else(|| "unknown".into());
        list.push(json!({
            "hookGroupId": f.hook_group_id,
            "hookId": f.hook_id,
            "firedBy": f.fired_by,
            "taskId": f.task_id,
            "taskCreateTime": bbb_clock::fmt_ms(f.task_create_time),
            "result": f.result,
            "error": f.error,
            "taskState": state,
        }));
    }
    Ok(Reply::json(bbb_service::paging::with_token(
        json!({"lastFires": list}),
        next,
    )))
}
