//! Input validation matching upstream's schemas and semantic checks. The
//! identifiers every service shares, URL parameter checks and strict bodies are
//! [`bbb_service::validate`]'s; this module adds the queue's own.

use crate::error::{ApiError, Result};
use crate::model::{CreateTaskRequest, TaskDef};
use crate::time::{Millis, fmt_ms, parse_ms};
pub use bbb_service::validate::{is_identifier, is_slugid, param, schema_error, slugid, strict};
use bbb_tcvalues::Priority;
use regex::Regex;
use std::sync::LazyLock;

static WORKER_TYPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$").expect("regex"));
static PROJECT_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9._/-]{1,500}$").expect("regex"));
static SOURCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(https?://|ssh://|git@)").expect("regex"));

/// Upper bound on `dependencies`.
pub const MAX_DEPENDENCIES: usize = 10_000;
/// Upper bound on `routes`.
pub const MAX_ROUTES: usize = 64;
/// Allowed clock skew for `created`, and slack on the deadline bound.
pub const SKEW_MS: Millis = 15 * 60 * 1000;
/// Default `expires` after the deadline.
const YEAR_MS: Millis = 365 * 24 * 3600 * 1000;

/// Is `s` a workerType?
pub fn is_worker_type(s: &str) -> bool {
    WORKER_TYPE.is_match(s)
}

/// Split and check a `taskQueueId` (`provisionerId/workerType`).
pub fn split_task_queue_id(tq: &str) -> Option<(&str, &str)> {
    let (p, w) = tq.split_once('/')?;
    (is_identifier(p) && is_worker_type(w)).then_some((p, w))
}

/// Check a task id URL parameter.
pub fn task_id_param(value: &str) -> Result<()> {
    param("taskId", value, is_slugid(value))
}

/// Parse a `runId` URL parameter.
pub fn run_id_param(value: &str) -> Result<i64> {
    let ok = !value.is_empty() && value.len() <= 4 && value.bytes().all(|b| b.is_ascii_digit());
    param("runId", value, ok)?;
    value
        .parse::<i64>()
        .ok()
        .filter(|r| *r <= 1000)
        .ok_or_else(|| ApiError::InvalidRequestArguments(format!("runId {value} is out of range")))
}

/// Validate a `createTask` body for `task_id`, fill in defaults and normalise dates,
/// giving the definition to store. `max_deadline_ms` bounds `deadline - now`.
pub fn task_definition(
    task_id: &str,
    req: CreateTaskRequest,
    now: Millis,
    max_deadline_ms: Millis,
) -> Result<TaskDef> {
    let (provisioner_id, worker_type, task_queue_id) =
        match (&req.task_queue_id, &req.provisioner_id, &req.worker_type) {
            (Some(tq), p, w) => {
                let (tp, tw) = split_task_queue_id(tq).ok_or_else(|| {
                    schema_error(format!(
                        "taskQueueId {tq:?} must be <provisionerId>/<workerType>"
                    ))
                })?;
                if p.as_deref().is_some_and(|p| p != tp) || w.as_deref().is_some_and(|w| w != tw) {
                    return Err(ApiError::Input(format!(
                        "taskQueueId {tq:?} does not match provisionerId/workerType {}/{}",
                        p.as_deref().unwrap_or(tp),
                        w.as_deref().unwrap_or(tw)
                    )));
                }
                (tp.to_string(), tw.to_string(), tq.clone())
            }
            (None, Some(p), Some(w)) => {
                if !is_identifier(p) {
                    return Err(schema_error(format!(
                        "provisionerId {p:?} does not match ^[a-zA-Z0-9-_]{{1,38}}$"
                    )));
                }
                if !is_worker_type(w) {
                    return Err(schema_error(format!(
                        "workerType {w:?} does not match ^[a-z]([-a-z0-9]{{0,36}}[a-z0-9])?$"
                    )));
                }
                (p.clone(), w.clone(), format!("{p}/{w}"))
            }
            _ => {
                return Err(schema_error(
                    "either taskQueueId or both provisionerId and workerType are required",
                ));
            }
        };
    let scheduler_id = req.scheduler_id.unwrap_or_else(|| "-".into());
    if !is_identifier(&scheduler_id) {
        return Err(schema_error(format!(
            "schedulerId {scheduler_id:?} does not match ^[a-zA-Z0-9-_]{{1,38}}$"
        )));
    }
    let project_id = req.project_id.unwrap_or_else(|| "none".into());
    if !PROJECT_ID.is_match(&project_id) {
        return Err(schema_error(format!(
            "projectId {project_id:?} does not match ^[a-zA-Z0-9._/-]{{1,500}}$"
        )));
    }
    let task_group_id = req.task_group_id.unwrap_or_else(|| task_id.to_string());
    if !is_slugid(&task_group_id) {
        return Err(schema_error(format!(
            "taskGroupId {task_group_id:?} is not a slugid"
        )));
    }
    let dependencies = req.dependencies.unwrap_or_default();
    if dependencies.len() > MAX_DEPENDENCIES {
        return Err(schema_error(format!(
            "dependencies has {} items, at most {MAX_DEPENDENCIES} are allowed",
            dependencies.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(dependencies.len());
    for d in &dependencies {
        if !is_slugid(d) {
            return Err(schema_error(format!("dependency {d:?} is not a slugid")));
        }
        if !seen.insert(d.as_str()) {
            return Err(schema_error(format!(
                "dependencies must be unique; {d:?} appears twice"
            )));
        }
    }
    let requires = req.requires.unwrap_or_else(|| "all-completed".into());
    if requires != "all-completed" && requires != "all-resolved" {
        return Err(schema_error(format!(
            "requires must be all-completed or all-resolved, not {requires:?}"
        )));
    }
    let routes = req.routes.unwrap_or_default();
    if routes.len() > MAX_ROUTES {
        return Err(schema_error(format!(
            "routes has {} items, at most {MAX_ROUTES} are allowed",
            routes.len()
        )));
    }
    let mut seen_routes = std::collections::HashSet::new();
    for r in &routes {
        if r.is_empty() || r.len() > 249 {
            return Err(schema_error(format!(
                "route {r:?} must be 1 to 249 characters"
            )));
        }
        if !seen_routes.insert(r.as_str()) {
            return Err(schema_error(format!(
                "routes must be unique; {r:?} appears twice"
            )));
        }
    }
    let priority = match req.priority {
        None => Priority::default(),
        Some(text) => text.parse::<Priority>().map_err(|_| {
            let all: Vec<&str> = Priority::ALL.iter().map(|p| p.as_str()).collect();
            schema_error(format!(
                "priority {text:?} must be one of {}",
                all.join(", ")
            ))
        })?,
    };
    let retries = req.retries.unwrap_or(5);
    if !(0..=49).contains(&retries) {
        return Err(schema_error(format!(
            "retries must be between 0 and 49, not {retries}"
        )));
    }
    let scopes = req.scopes.unwrap_or_default();
    for s in &scopes {
        if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(schema_error(format!("scope {s:?} must be printable ASCII")));
        }
        if s.ends_with("**") {
            return Err(ApiError::Input(format!(
                "scope {s:?} must not end with `**`"
            )));
        }
    }
    let m = &req.metadata;
    if m.name.len() > 255
        || m.owner.len() > 255
        || m.description.len() > 32768
        || m.source.len() > 4096
    {
        return Err(schema_error(
            "metadata field too long (name/owner ≤ 255, description ≤ 32768, source ≤ 4096)",
        ));
    }
    if !SOURCE.is_match(&m.source) {
        return Err(schema_error(format!(
            "metadata.source {:?} must start with http://, https://, ssh:// or git@",
            m.source
        )));
    }
    let tags = req.tags.unwrap_or_default();
    for (k, v) in &tags {
        match v {
            serde_json::Value::String(s) if s.len() <= 4096 && k.len() <= 4096 => {}
            _ => {
                return Err(schema_error(format!(
                    "tag {k:?} must be a string of at most 4096 characters"
                )));
            }
        }
    }

    let date = |name: &str, s: &str| {
        parse_ms(s).ok_or_else(|| schema_error(format!("{name} {s:?} is not a date-time")))
    };
    let created = date("created", &req.created)?;
    let deadline = date("deadline", &req.deadline)?;
    let expires = match &req.expires {
        Some(e) => date("expires", e)?,
        None => deadline + YEAR_MS,
    };
    if (created - now).abs() > SKEW_MS {
        return Err(ApiError::Input(format!(
            "Created timestamp {} must be within 15 minutes of the server time {}",
            fmt_ms(created),
            fmt_ms(now)
        )));
    }
    if deadline < now {
        return Err(ApiError::Input(format!(
            "Deadline {} cannot be in the past (the server time is {})",
            fmt_ms(deadline),
            fmt_ms(now)
        )));
    }
    if deadline < created {
        return Err(ApiError::Input("Deadline cannot be before created".into()));
    }
    if deadline - now > max_deadline_ms + SKEW_MS {
        return Err(ApiError::Input(format!(
            "Deadline {} is more than {} days in the future",
            fmt_ms(deadline),
            max_deadline_ms / 86_400_000
        )));
    }
    if expires < deadline {
        return Err(ApiError::Input(
            "Expires cannot be before the deadline".into(),
        ));
    }

    Ok(TaskDef {
        provisioner_id,
        worker_type,
        task_queue_id,
        scheduler_id,
        project_id,
        task_group_id,
        dependencies,
        requires,
        routes,
        priority,
        retries,
        created: fmt_ms(created),
        deadline: fmt_ms(deadline),
        expires: fmt_ms(expires),
        scopes,
        payload: req.payload,
        metadata: req.metadata,
        tags,
        extra: req.extra.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_queue_ids() {
        assert_eq!(split_task_queue_id("proj/wt-1"), Some(("proj", "wt-1")));
        assert_eq!(split_task_queue_id("proj/Upper"), None);
        assert_eq!(split_task_queue_id("nope"), None);
    }

    #[test]
    fn run_ids() {
        assert_eq!(run_id_param("0").unwrap(), 0);
        assert_eq!(run_id_param("49").unwrap(), 49);
        assert!(run_id_param("-1").is_err());
        assert!(run_id_param("x").is_err());
        assert!(run_id_param("5000").is_err());
    }
}
