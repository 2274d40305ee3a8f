//! Firing a hook: its task template rendered with JSON-e, upstream's defaults
//! filled in, and the task created through the queue's `createTask` as the
//! hook's role `assume:hook-id:<hookGroupId>/<hookId>`.
//!
//! The call is signed as the hooks service's own client,
//! `static/taskcluster/hooks` (upstream's scopes: `assume:hook-id:*`,
//! `notify:email:*`, `queue:create-task:*`), restricted by `authorizedScopes`
//! to the hook's role, so the queue expands that role like any other and the
//! task gets exactly what the role grants. The client's credentials are
//! temporary credentials named `static/taskcluster/hooks`, issued with the
//! queue's own secret (kept in the database, so every process on it agrees),
//! renewed before they expire.

use crate::client::{Answer, HawkClient, IssuedCredentials};
use crate::model::{FiredBy, Hook, LastFire};
use bbb_clock::{Clock, Millis, fmt_ms};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The client id the hooks service creates tasks as.
pub const CLIENT_ID: &str = "static/taskcluster/hooks";

/// The scopes of [`CLIENT_ID`], as upstream's static client has them.
pub const CLIENT_SCOPES: [&str; 3] = ["assume:hook-id:*", "notify:email:*", "queue:create-task:*"];

/// Upstream's `deadline` and `expires` defaults: 1 day and 1 month (30 days).
const DAY_MS: Millis = 24 * 3600 * 1000;
/// Longest error text kept in a firing's record (upstream's limit).
const MAX_ERROR_LEN: usize = 128 * 1024;
/// Attempts of a call that may be retried (scheduled firings): the first and 5 more.
const ATTEMPTS: u32 = 6;

/// Why a firing failed.
#[derive(Clone, Debug, PartialEq)]
pub enum FireError {
    /// The template did not render (the JSON-e error).
    Render(String),
    /// `createTask` answered an error: its status and body.
    CreateTask(Answer),
    /// `createTask` got no answer.
    Unreachable(String),
}

impl FireError {
    /// Whether trying again later may succeed (the queue failed or was
    /// unreachable), as upstream's scheduler decides on a 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            FireError::Render(_) => false,
            FireError::CreateTask(a) => a.status >= 500,
            FireError::Unreachable(_) => true,
        }
    }
}

/// What one firing did: the task created (`Ok(None)`: the template rendered
/// to nothing, so no task), and the record to keep of it (none when no task
/// was wanted).
#[derive(Clone, Debug)]
pub struct Fired {
    /// The created task's id, nothing, or why it failed.
    pub outcome: Result<Option<String>, FireError>,
    /// The record for `listLastFires`.
    pub record: Option<LastFire>,
}

/// How to fire: the task's id and creation time (`now` in the template).
#[derive(Clone, Debug)]
pub struct FireOptions {
    /// The taskId to create.
    pub task_id: String,
    /// The template's `now` and the default `created`.
    pub created: Millis,
    /// Whether to retry a failed call (scheduled firings).
    pub retry: bool,
}

/// Creates hooks' tasks.
#[derive(Clone)]
pub struct TaskCreator {
    client: HawkClient,
    clock: Clock,
    creds: IssuedCredentials,
}

impl std::fmt::Debug for TaskCreator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCreator")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Render a hook's task template with `context` plus `now` and `taskId`, and
/// fill in upstream's defaults (`created`, `deadline` a day and `expires` a
/// month after `now`, `taskGroupId` the task's id) where the result leaves them
/// out. `Ok(None)` when the template renders to nothing.
pub fn task_for_hook(
    template: &Value,
    context: Map<String, Value>,
    task_id: &str,
    now: Millis,
) -> Result<Option<Value>, String> {
    let now_text = Value::String(fmt_ms(now));
    let mut context = context;
    context.entry("now").or_insert_with(|| now_text.clone());
    context
        .entry("taskId")
        .or_insert_with(|| Value::String(task_id.to_owned()));
    // The renderer sets `now` to the wall clock over the context's own; a
    // `$let` around the template puts the context's `now` back in scope for
    // `$fromNow` and `${now}`.
    let wrapped = json!({"$let": {"now": context["now"].clone()}, "in": template});
    let task = json_e::render(&wrapped, &Value::Object(context)).map_err(|e| e.to_string())?;
    if !truthy(&task) {
        return Ok(None);
    }
    let mut task = task;
    if let Some(obj) = task.as_object_mut() {
        let mut default = |key: &str, value: Value| {
            if !obj.get(key).is_some_and(truthy) {
                obj.insert(key.to_owned(), value);
            }
        };
        default("created", now_text.clone());
        default("deadline", Value::String(fmt_ms(now + DAY_MS)));
        default("expires", Value::String(fmt_ms(now + 30 * DAY_MS)));
        default("taskGroupId", Value::String(task_id.to_owned()));
    }
    Ok(Some(task))
}

/// JavaScript's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A failed call as upstream records it: the client error's name, message,
/// code, status and body, as indented JSON.
#[derive(Serialize)]
struct CallFailure<'a> {
    name: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(rename = "statusCode", skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Value::is_null")]
    body: &'a Value,
}

/// The `error` of a firing's record for `e`.
fn error_record(e: &FireError) -> String {
    let mut text = match e {
        FireError::Render(message) => message.clone(),
        FireError::CreateTask(answer) => {
            let fallback = match answer.status {
                401 => "Authentication Error",
                500 => "Internal Server Error",
                300..=399 => "Unexpected Redirect",
                _ => "Unknown Server Error",
            };
            let field = |name: &str| answer.body.get(name).and_then(Value::as_str);
            let failure = CallFailure {
                name: "Error",
                message: field("message").unwrap_or(fallback).to_owned(),
                code: Some(field("code").unwrap_or("UnknownError").to_owned()),
                status_code: Some(answer.status),
                body: &answer.body,
            };
            serde_json::to_string_pretty(&failure).unwrap_or_default()
        }
        FireError::Unreachable(message) => serde_json::to_string_pretty(&CallFailure {
            name: "Error",
            message: message.clone(),
            code: None,
            status_code: None,
            body: &Value::Null,
        })
        .unwrap_or_default(),
    };
    if text.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

impl TaskCreator {
    /// A creator calling the queue under `root_url`, with credentials issued
    /// by `issuer` (the queue's client id and secret), on `clock`'s time.
    pub fn new(root_url: &str, issuer: Arc<(String, String)>, clock: Clock) -> TaskCreator {
        TaskCreator {
            client: HawkClient::new(root_url, clock.clone()),
            creds: IssuedCredentials::new(issuer, CLIENT_ID, &CLIENT_SCOPES, clock.clone()),
            clock,
        }
    }

    /// `createTask(task_id, task)` as the hook's role, retried on failures
    /// that may pass when `retry`.
    async fn create_task(
        &self,
        hook: &Hook,
        task_id: &str,
        task: &Value,
        retry: bool,
    ) -> Result<(), FireError> {
        let creds = self.creds.get().map_err(FireError::Unreachable)?;
        let role = [hook.role_scope()];
        let url = self.client.url("queue", &format!("task/{task_id}"));
        let attempts = if retry { ATTEMPTS } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self
                .client
                .call(Some(&creds), Some(&role), "PUT", &url, Some(task))
                .await
            {
                Ok(answer) if answer.is_success() => return Ok(()),
                Ok(answer) => FireError::CreateTask(answer),
                Err(e) => FireError::Unreachable(e),
            };
            if attempt >= attempts || !result.is_transient() {
                return Err(result);
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
    }

    /// Fire `hook` with the JSON-e `context` (which names `firedBy`): render,
    /// create the task, and say what to record. Nothing is recorded here.
    pub async fn fire(
        &self,
        hook: &Hook,
        fired_by: FiredBy,
        context: Map<String, Value>,
        opts: &FireOptions,
    ) -> Fired {
        let mut record = LastFire {
            hook_group_id: hook.hook_group_id.clone(),
            hook_id: hook.hook_id.clone(),
            fired_by: fired_by.as_str().to_owned(),
            task_id: opts.task_id.clone(),
            task_create_time: self.clock.now_ms(),
            result: "error".into(),
            error: String::new(),
        };
        let outcome = match task_for_hook(&hook.task, context, &opts.task_id, opts.created) {
            Ok(None) => {
                tracing::info!(
                    hook.group = %hook.hook_group_id, hook.id = %hook.hook_id,
                    fired_by = fired_by.as_str(), "hook declined to create a task"
                );
                return Fired {
                    outcome: Ok(None),
                    record: None,
                };
            }
            Ok(Some(task)) => self
                .create_task(hook, &opts.task_id, &task, opts.retry)
                .await
                .map(|()| Some(opts.task_id.clone())),
            Err(e) => Err(FireError::Render(e)),
        };
        match &outcome {
            Ok(_) => record.result = "success".into(),
            Err(e) => record.error = error_record(e),
        }
        tracing::info!(
            hook.group = %hook.hook_group_id, hook.id = %hook.hook_id,
            fired_by = fired_by.as_str(), task.id = %opts.task_id,
            result = if outcome.is_ok() { "success" } else { "failure" },
            "hook fired"
        );
        Fired {
            outcome,
            record: Some(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_clock::parse_ms;

    fn ctx(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_follow_now() {
        let now = parse_ms("2026-05-01T10:00:00.000Z").unwrap();
        let task = task_for_hook(&json!({"a": "${taskId}"}), ctx(json!({})), "TID", now)
            .unwrap()
            .unwrap();
        assert_eq!(
            task,
            json!({
                "a": "TID",
                "created": "2026-05-01T10:00:00.000Z",
                "deadline": "2026-05-02T10:00:00.000Z",
                "expires": "2026-05-31T10:00:00.000Z",
                "taskGroupId": "TID",
            })
        );
    }

    #[test]
    fn the_template_sees_the_context_and_our_now() {
        let now = parse_ms("2026-05-01T10:00:00.000Z").unwrap();
        let template = json!({
            "created": {"$fromNow": "0 seconds"},
            "deadline": {"$fromNow": "2 hours"},
            "taskGroupId": "G",
            "who": "${firedBy}:${payload.x}",
            "at": "${now}",
        });
        let task = task_for_hook(
            &template,
            ctx(json!({"firedBy": "triggerHook", "payload": {"x": 1}})),
            "TID",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(task["created"], "2026-05-01T10:00:00.000Z");
        assert_eq!(task["deadline"], "2026-05-01T12:00:00.000Z");
        assert_eq!(task["taskGroupId"], "G");
        assert_eq!(task["who"], "triggerHook:1");
        assert_eq!(task["at"], "2026-05-01T10:00:00.000Z");
    }

    #[test]
    fn nothing_rendered_is_no_task_and_errors_are_text() {
        let none = json!({"$if": "false", "then": {"a": 1}});
        assert_eq!(task_for_hook(&none, ctx(json!({})), "T", 0), Ok(None));
        let bad = json!({"a": {"$eval": "nosuchvar + 1"}});
        let e = task_for_hook(&bad, ctx(json!({})), "T", 0).unwrap_err();
        assert!(e.contains("nosuchvar"), "{e}");
    }

    #[test]
    fn call_failures_are_recorded_as_upstream() {
        let e = FireError::CreateTask(Answer {
            status: 403,
            body: json!({"code": "InsufficientScopes", "message": "no"}),
        });
        let text = error_record(&e);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"name": "Error", "message": "no", "code": "InsufficientScopes",
                   "statusCode": 403, "body": {"code": "InsufficientScopes", "message": "no"}})
        );
        assert!(text.starts_with("{\n  \"name\": \"Error\",\n  \"message\""));
        assert!(!e.is_transient());
        assert!(FireError::Unreachable("refused".into()).is_transient());
    }
}
