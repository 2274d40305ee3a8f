//! What the pages' forms do, always through the services' public APIs with
//! the signed-in user's credentials, so the services check the user's
//! scopes exactly as for any client; each answer, the new tasks or the
//! refusal with the service's own message, is a page.
//!
//! - `POST /tasks/<taskId>/act`, field `do`:
//!   - `action`: an action of the group's `actions.json` ([`super::actions`]);
//!   - `rerun`, `cancel`: `rerunTask`, `cancelTask` (groups without actions);
//!   - `retrigger`: a clone of the task ([`retrigger`]), with `exact` its
//!     dependencies and routes kept, with `dependents` the tasks below it in
//!     its group cloned too, their dependencies rewritten to the clones;
//!   - `complete`, `fail`: a human-decision task resolved ([`resolve_human`]).
//! - `POST /groups/<taskGroupId>/act`: a group action of `actions.json`.
//!
//! Every form carries the session's token ([`crate::csrf`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bbb_auth::Credentials;
use bbb_hooks::client::Answer;
use bbb_login::SignedIn;
use bbb_queue::model::Task;
use bbb_queue::time::{fmt_ms, parse_ms};
use bbb_queue::validate::{is_slugid, slugid};
use bbb_tcvalues::RunState;
use maud::html;
use serde_json::{Value, json};

use super::actions::{self, form_value};
use super::{group_href, task_href};
use crate::layout::{self, page};
use crate::{Web, counted, csrf};

/// The task queue of human-decision tasks: Mozilla's release graphs gated
/// publishing on tasks there, which no worker claims and a person resolves.
pub(crate) const HUMAN_DECISION_QUEUE: &str = "null-provisioner/human-decision";

/// Most tasks one retrigger clones (the task and the tasks below it).
pub(crate) const MAX_CLONES: usize = 1000;

/// What an action came to: the message, the tasks it made, and its status.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The HTTP status the page is served with (the service's, on a refusal).
    pub status: StatusCode,
    /// What happened, or why not.
    pub message: String,
    /// The tasks it created.
    pub created: Vec<String>,
}

impl Outcome {
    /// A success.
    pub(crate) fn done(message: String, created: Vec<String>) -> Outcome {
        Outcome {
            status: StatusCode::OK,
            message,
            created,
        }
    }

    /// A refusal with `status`.
    pub(crate) fn refused(status: u16, message: String) -> Outcome {
        Outcome {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
            created: Vec::new(),
        }
    }

    /// Whether it succeeded.
    pub(crate) fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The outcome of a service call: `success` of its body when 2xx, else
    /// the service's error (`code: message`).
    pub(crate) fn from_answer(
        answer: Result<Answer, String>,
        success: impl FnOnce(&Value) -> (String, Vec<String>),
    ) -> Outcome {
        match answer {
            Ok(a) if a.is_success() => {
                let (message, created) = success(&a.body);
                Outcome::done(message, created)
            }
            Ok(a) => Outcome::refused(a.status, refusal(&a)),
            Err(e) => Outcome::refused(502, format!("The service did not answer: {e}")),
        }
    }
}

/// The service's error body as a person reads it.
fn refusal(a: &Answer) -> String {
    match (a.body["code"].as_str(), a.body["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ if a.body.is_null() => format!("The service refused (HTTP {}).", a.status),
        _ => format!("The service refused (HTTP {}): {}", a.status, a.body),
    }
}

/// The page showing an outcome, with a way back to `back`.
fn outcome_page(who: &SignedIn, title: &str, outcome: &Outcome, back: (&str, &str)) -> Response {
    let body = html! {
        @if outcome.ok() {
            p.ok role="status" { (outcome.message) }
            @if !outcome.created.is_empty() {
                h2 { "New tasks" }
                ul.created {
                    @for id in &outcome.created {
                        li { a href=(task_href(id)) { (id) } }
                    }
                }
            }
        } @else {
            p.error.refusal role="alert" { (outcome.message) }
        }
        p { a href=(back.0) { "Back to " (back.1) } }
    };
    (outcome.status, page(title, Some(who), body)).into_response()
}

/// The signed-in user of a form's request, with its token checked; or the
/// page that says why not.
fn checked_user(
    web: &Web,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<SignedIn, Box<Response>> {
    let Some(who) = web.login.signed_in(headers) else {
        return Err(Box::new(layout::error(
            None,
            StatusCode::UNAUTHORIZED,
            "Sign in to act on tasks: the services check your scopes.",
        )));
    };
    if !csrf::valid(&who, form_value(form, csrf::FIELD).unwrap_or_default()) {
        return Err(Box::new(layout::error(
            Some(&who),
            StatusCode::FORBIDDEN,
            "This form does not belong to your session (its token does not match). Reload the page and try again.",
        )));
    }
    Ok(who)
}

/// `POST /tasks/<taskId>/act`.
pub(crate) async fn task_act(
    State(web): State<Web>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let who = match checked_user(&web, &headers, &form) {
        Ok(w) => w,
        Err(page) => return *page,
    };
    if !is_slugid(&task_id) {
        return layout::not_found(Some(&who), &format!("Task {task_id}"));
    }
    counted(1);
    let task = match web.queue.load_task(&task_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return layout::not_found(Some(&who), &format!("Task {task_id}")),
        Err(e) => {
            return layout::error(
                Some(&who),
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            );
        }
    };
    let what = form_value(&form, "do").unwrap_or_default();
    let outcome = match what {
        "action" => task_action(&web, &who, &task, &form).await,
        "rerun" => {
            queue_call(
                &web,
                &who,
                &task_id,
                "rerun",
                "rerunTask",
                "scheduled",
                " again",
            )
            .await
        }
        "cancel" => {
            queue_call(
                &web,
                &who,
                &task_id,
                "cancel",
                "cancelTask",
                "cancelled",
                "",
            )
            .await
        }
        "retrigger" => {
            let exact = form_value(&form, "exact") == Some("true");
            let dependents = form_value(&form, "dependents") == Some("true");
            retrigger(&web, &who, &task, exact, dependents).await
        }
        "complete" => resolve_human(&web, &who, &task, true).await,
        "fail" => resolve_human(&web, &who, &task, false).await,
        other => Outcome::refused(400, format!("Unknown request {other:?}.")),
    };
    let title = match what {
        "action" => format!("Action {}", form_value(&form, "action").unwrap_or_default()),
        other => format!("{} {}", capitalised(other), task.def.metadata.name),
    };
    outcome_page(&who, &title, &outcome, (&task_href(&task_id), "the task"))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// An action of the group's `actions.json` on `task`.
async fn task_action(web: &Web, who: &SignedIn, task: &Task, form: &[(String, String)]) -> Outcome {
    let acts = match actions::load(web, &task.def.task_group_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Outcome::refused(404, "This task's group has no actions.".into()),
        Err(e) => return Outcome::refused(502, e),
    };
    let name = form_value(form, "action").unwrap_or_default();
    let Some(action) = acts
        .for_task(&task.def.tags)
        .into_iter()
        .find(|a| a["name"] == name)
        .cloned()
    else {
        return Outcome::refused(404, format!("No action {name} for this task."));
    };
    match actions::input_from_form(&action["schema"], form) {
        Ok(input) => actions::fire(web, who, &acts, &action, Some(task), input).await,
        Err(e) => Outcome::refused(400, format!("The input is not valid: {e}")),
    }
}

/// `POST /groups/<taskGroupId>/act`: a group action.
pub(crate) async fn group_act(
    State(web): State<Web>,
    Path(task_group_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let who = match checked_user(&web, &headers, &form) {
        Ok(w) => w,
        Err(page) => return *page,
    };
    if !is_slugid(&task_group_id) {
        return layout::not_found(Some(&who), &format!("Task group {task_group_id}"));
    }
    let name = form_value(&form, "action").unwrap_or_default().to_owned();
    let outcome = match actions::load(&web, &task_group_id).await {
        Ok(Some(acts)) => match acts
            .for_group()
            .into_iter()
            .find(|a| a["name"] == name.as_str())
            .cloned()
        {
            Some(action) => match actions::input_from_form(&action["schema"], &form) {
                Ok(input) => actions::fire(&web, &who, &acts, &action, None, input).await,
                Err(e) => Outcome::refused(400, format!("The input is not valid: {e}")),
            },
            None => Outcome::refused(404, format!("No group action {name}.")),
        },
        Ok(None) => Outcome::refused(404, "This group has no actions.".into()),
        Err(e) => Outcome::refused(502, e),
    };
    outcome_page(
        &who,
        &format!("Action {name}"),
        &outcome,
        (&group_href(&task_group_id), "the task group"),
    )
}

/// The tasks below `root` in its group (its dependents, theirs, ...), at
/// most [`MAX_CLONES`]; one query per level.
async fn below(web: &Web, root: &Task) -> Result<Vec<Task>, String> {
    let group = &root.def.task_group_id;
    let mut seen: BTreeSet<String> = BTreeSet::from([root.task_id.clone()]);
    let mut found = Vec::new();
    let mut frontier = vec![root.task_id.clone()];
    while !frontier.is_empty() {
        counted(frontier.len().div_ceil(500) as u64);
        let edges = web
            .queue
            .dependent_edges(&frontier)
            .await
            .map_err(|e| e.to_string())?;
        let new: Vec<String> = edges
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| seen.insert(d.clone()))
            .collect();
        if new.is_empty() {
            break;
        }
        counted(new.len().div_ceil(500) as u64);
        let tasks = web
            .queue
            .load_tasks(&new)
            .await
            .map_err(|e| e.to_string())?;
        frontier = Vec::new();
        for t in tasks.into_iter().filter(|t| &t.def.task_group_id == group) {
            frontier.push(t.task_id.clone());
            found.push(t);
        }
        if found.len() + 1 > MAX_CLONES {
            return Err(format!(
                "More than {MAX_CLONES} tasks depend on this one; clone fewer (without its dependents)."
            ));
        }
    }
    Ok(found)
}

/// The `createTask` body of a clone of `def` created at `now`: created,
/// deadline and expires shifted by the same amount (upstream's
/// `taskcluster task retrigger`), no retries; dependencies kept only with
/// `keep_dependencies` (those in `renamed` pointed at their clones in any
/// case), routes only with `keep_routes`.
pub(crate) fn clone_definition(
    task: &Task,
    now: i64,
    keep_dependencies: bool,
    keep_routes: bool,
    renamed: &HashMap<String, String>,
) -> Value {
    let d = &task.def;
    let created = parse_ms(&d.created).unwrap_or(now);
    let shift = |at: &str| fmt_ms(now + (parse_ms(at).unwrap_or(created) - created));
    let dependencies: Vec<String> = d
        .dependencies
        .iter()
        .filter_map(|dep| match renamed.get(dep) {
            Some(clone) => Some(clone.clone()),
            None if keep_dependencies => Some(dep.clone()),
            None => None,
        })
        .collect();
    json!({
        "taskQueueId": d.task_queue_id,
        "schedulerId": d.scheduler_id,
        "projectId": d.project_id,
        "taskGroupId": d.task_group_id,
        "dependencies": dependencies,
        "requires": d.requires,
        "routes": if keep_routes { d.routes.clone() } else { Vec::new() },
        "priority": d.priority,
        "retries": 0,
        "created": fmt_ms(now),
        "deadline": shift(&d.deadline),
        "expires": shift(&d.expires),
        "scopes": d.scopes,
        "payload": d.payload,
        "metadata": d.metadata,
        "tags": d.tags,
        "extra": d.extra,
    })
}

/// Retrigger without actions: a clone of `task` (see [`clone_definition`]),
/// and with `dependents` a clone of every task below it in its group, in
/// dependency order, as the user.
async fn retrigger(
    web: &Web,
    who: &SignedIn,
    task: &Task,
    exact: bool,
    dependents: bool,
) -> Outcome {
    let mut tasks = vec![task.clone()];
    if dependents {
        match below(web, task).await {
            Ok(more) => tasks.extend(more),
            Err(e) => return Outcome::refused(400, e),
        }
    }
    let renamed: HashMap<String, String> = tasks
        .iter()
        .map(|t| (t.task_id.clone(), slugid()))
        .collect();
    // Dependency order: a clone is created after the clones it depends on.
    let mut order = Vec::with_capacity(tasks.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut left: BTreeMap<&str, &Task> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, t)| {
                t.def
                    .dependencies
                    .iter()
                    .all(|d| !renamed.contains_key(d) || done.contains(d.as_str()))
            })
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            return Outcome::refused(
                400,
                "The tasks below this one depend on each other in a cycle.".into(),
            );
        }
        for id in ready {
            if let Some(t) = left.remove(id) {
                order.push(t);
                done.insert(id);
            }
        }
    }
    let now = web.queue.clock.now_ms();
    let mut created = Vec::new();
    for t in order {
        let new_id = &renamed[&t.task_id];
        // The retriggered task itself keeps its dependencies only when exact;
        // the clones below it always wait for the clones above them.
        let def = clone_definition(t, now, exact || t.task_id != task.task_id, exact, &renamed);
        let url = web.hawk.url("queue", &format!("task/{new_id}"));
        let answer = web
            .hawk
            .call(Some(&who.credentials), None, "PUT", &url, Some(&def))
            .await;
        match answer {
            Ok(a) if a.is_success() => created.push(new_id.clone()),
            other => {
                let mut out = Outcome::from_answer(other, |_| (String::new(), vec![]));
                if !created.is_empty() {
                    out.message = format!(
                        "{} (after {} of {} clones were created)",
                        out.message,
                        created.len(),
                        renamed.len()
                    );
                }
                out.created = created;
                return out;
            }
        }
    }
    let message = if created.len() == 1 {
        format!("Task {} retriggered as a new task.", task.task_id)
    } else {
        format!(
            "Task {} and the {} tasks below it retriggered as new tasks.",
            task.task_id,
            created.len() - 1
        )
    };
    Outcome::done(message, created)
}

/// Whether a task is a human-decision task: on [`HUMAN_DECISION_QUEUE`].
pub(crate) fn is_human_decision(task: &Task) -> bool {
    task.def.task_queue_id == HUMAN_DECISION_QUEUE
}

/// The worker id a user claims a human-decision task as: their name with
/// what an identifier may not hold replaced by `-`, at most 38 characters.
pub(crate) fn worker_id_of(user: &str) -> String {
    let id: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(38)
        .collect();
    if id.is_empty() { "user".into() } else { id }
}

/// Resolve a human-decision task as upstream's `taskcluster task complete`
/// does: `claimTask` of its pending run with the user's credentials, as
/// worker group the task's worker type and worker id the user's name, then
/// `reportCompleted` (or `reportFailed`) with the credentials the claim
/// returned. Without `queue:claim-task:null-provisioner/human-decision` and
/// `queue:worker-id:human-decision/<user>`, the claim is refused.
async fn resolve_human(web: &Web, who: &SignedIn, task: &Task, complete: bool) -> Outcome {
    if !is_human_decision(task) {
        return Outcome::refused(
            400,
            format!("Task {} is not a human-decision task.", task.task_id),
        );
    }
    let Some(run) = task.last_run() else {
        return Outcome::refused(
            409,
            "The task has no run yet: its dependencies are not resolved.".into(),
        );
    };
    if run.state != RunState::Pending {
        return Outcome::refused(
            409,
            format!(
                "Run {} is {}: only a pending decision can be made.",
                run.run_id,
                run.state.as_str()
            ),
        );
    }
    let worker_id = worker_id_of(&who.user);
    let url = web.hawk.url(
        "queue",
        &format!("task/{}/runs/{}/claim", task.task_id, run.run_id),
    );
    let body = json!({"workerGroup": task.def.worker_type, "workerId": worker_id});
    let claim = match web
        .hawk
        .call(Some(&who.credentials), None, "POST", &url, Some(&body))
        .await
    {
        Ok(a) if a.is_success() => a.body,
        other => return Outcome::from_answer(other, |_| (String::new(), vec![])),
    };
    let creds = Credentials {
        client_id: claim["credentials"]["clientId"]
            .as_str()
            .unwrap_or_default()
            .into(),
        access_token: claim["credentials"]["accessToken"]
            .as_str()
            .unwrap_or_default()
            .into(),
        certificate: claim["credentials"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    };
    let report = if complete { "completed" } else { "failed" };
    let url = web.hawk.url(
        "queue",
        &format!("task/{}/runs/{}/{report}", task.task_id, run.run_id),
    );
    let answer = web.hawk.call(Some(&creds), None, "POST", &url, None).await;
    Outcome::from_answer(answer, |_| {
        (
            format!(
                "Decision made: task {} is {report}, resolved by {}.",
                task.task_id, who.user
            ),
            vec![],
        )
    })
}

/// `POST task/<taskId>/<verb>` on the queue as the user (rerunTask,
/// cancelTask): the outcome names the task's state after it, or the refusal.
async fn queue_call(
    web: &Web,
    who: &SignedIn,
    task_id: &str,
    verb: &str,
    name: &str,
    assumed_state: &str,
    again: &str,
) -> Outcome {
    let url = web.hawk.url("queue", &format!("task/{task_id}/{verb}"));
    let answer = web
        .hawk
        .call(Some(&who.credentials), None, "POST", &url, None)
        .await;
    Outcome::from_answer(answer, |b| {
        (
            format!(
                "Task {task_id} is {}{again} ({name}).",
                b["status"]["state"].as_str().unwrap_or(assumed_state)
            ),
            vec![],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_name_becomes_a_worker_id() {
        assert_eq!(worker_id_of("alice"), "alice");
        assert_eq!(worker_id_of("a.b@example.com"), "a-b-example-com");
        assert_eq!(worker_id_of(""), "user");
        assert_eq!(worker_id_of(&"x".repeat(50)).len(), 38);
    }
}
