//! `/tasks/<taskId>`: a task's status and runs, each run's artifacts (links
//! to the queue's artifact URLs), the log of its last run (the live log
//! followed while the run runs, the backing log after), what can be done to
//! it, and its definition.
//!
//! `/tasks/<taskId>/runs/<runId>/log` serves a run's log from bbb's own
//! origin, so the page's script can read it as it grows: while the run runs,
//! the worker's live log (the `public/logs/live.log` reference, streamed
//! through, only from an origin the configuration allows: see
//! [`crate::LiveLogOrigins`]); after, `public/logs/live_backing.log`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bbb_login::SignedIn;
use bbb_queue::error::ApiError;
use bbb_queue::model::Task;
use bbb_queue::ops::artifacts::Artifact;
use bbb_queue::time::fmt_ms;
use bbb_queue::validate::is_slugid;
use bbb_tcvalues::RunState;
use maud::{Markup, PreEscaped, html};
use serde_json::Value;

use super::acting::{HUMAN_DECISION_QUEUE, is_human_decision};
use super::actions::{self, Actions};
use super::{artifact_url, group_href, state_class, task_href};
use crate::layout::{self, page};
use crate::{Web, counted, csrf};

/// The live log's name (the native worker's reference artifact).
pub(crate) const LIVE_LOG: &str = "public/logs/live.log";
/// The backing log's name.
pub(crate) const BACKING_LOG: &str = "public/logs/live_backing.log";

/// The script that follows a log: reads `data-src` as a stream and appends
/// what arrives to the `<pre>` as text.
const FOLLOW_LOG: &str = r#"
(function () {
  var pre = document.getElementById('log');
  var status = document.getElementById('log-status');
  if (!pre || !window.fetch) return;
  var live = pre.dataset.live === 'true';
  status.textContent = live ? 'Following the live log…' : 'Loading the log…';
  fetch(pre.dataset.src, {credentials: 'same-origin'}).then(function (r) {
    if (!r.ok) {
      return r.text().then(function (t) {
        status.textContent = r.status === 403 && t ? t : 'No log to show (HTTP ' + r.status + ').';
      });
    }
    var reader = r.body.getReader(), dec = new TextDecoder();
    function pump() {
      return reader.read().then(function (x) {
        var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        if (x.done) {
          pre.append(dec.decode());
          status.textContent = live ? 'The live log ended: reload the page for the backing log.' : 'End of the log.';
          pre.dataset.ended = 'true';
          return;
        }
        pre.append(dec.decode(x.value, {stream: true}));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
        return pump();
      });
    }
    return pump();
  }).catch(function (e) { status.textContent = 'The log could not be read: ' + e; });
})();
"#;

/// `GET /tasks/<taskId>`.
pub(crate) async fn show(
    State(web): State<Web>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = web.login.signed_in(&headers);
    let who = who.as_ref();
    if !is_slugid(&task_id) {
        return layout::not_found(who, &format!("Task {task_id} (not a task id)"));
    }
    counted(1);
    let task = match web.queue.load_task(&task_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return layout::not_found(who, &format!("Task {task_id}")),
        Err(e) => return layout::error(who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    counted(1);
    let artifacts = match web.queue.task_artifacts(&task_id).await {
        Ok(a) => a,
        Err(e) => return layout::error(who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let acts = actions::load(&web, &task.def.task_group_id).await;
    let name = &task.def.metadata.name;
    let body = html! {
        (summary(&task))
        (what_can_be_done(&task, who, &acts))
        (runs(&web, &task, &artifacts))
        (log_section(&task, &artifacts))
        section aria-labelledby="def-h" {
            h2 #def-h { "Definition" }
            details {
                summary { "The task's definition (JSON)" }
                pre.json { (serde_json::to_string_pretty(&task.definition()).unwrap_or_default()) }
            }
        }
    };
    page(&format!("Task {name}"), who, body).into_response()
}

fn summary(t: &Task) -> Markup {
    let d = &t.def;
    html! {
        dl.summary {
            dt { "State" } dd { span class=(state_class(t.state())) { (t.state().as_str()) } }
            dt { "Task id" } dd { code { (t.task_id) } }
            dt { "Task group" } dd { a href=(group_href(&d.task_group_id)) { (d.task_group_id) } }
            dt { "Task queue" } dd { (d.task_queue_id) }
            dt { "Scheduler" } dd { (d.scheduler_id) }
            dt { "Description" } dd { (d.metadata.description) }
            dt { "Owner" } dd { (d.metadata.owner) }
            dt { "Source" } dd { (d.metadata.source) }
            dt { "Created" } dd { (d.created) }
            dt { "Deadline" } dd { (d.deadline) }
            dt { "Expires" } dd { (d.expires) }
            dt { "Retries left" } dd { (t.retries_left) }
            dt { "Dependencies" }
            dd {
                @if d.dependencies.is_empty() { "none" }
                @for (i, dep) in d.dependencies.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(task_href(dep)) { (dep) }
                }
                " · " a href=(format!("{}?task={}#graph", group_href(&d.task_group_id), t.task_id)) { "dependency graph" }
            }
        }
    }
}

/// The forms that act on the task: the group's actions for it, or (a group
/// without actions) rerun, cancel and retrigger through the queue; and for
/// a human-decision task, the decision.
fn what_can_be_done(
    t: &Task,
    who: Option<&SignedIn>,
    acts: &Result<Option<Actions>, String>,
) -> Markup {
    let act = format!("{}/act", task_href(&t.task_id));
    let Some(who) = who else {
        return html! {
            section.actions aria-labelledby="act-h" {
                h2 #act-h { "Actions" }
                p { a href="/login" { "Sign in" } " to act on this task: the services check your scopes." }
            }
        };
    };
    let token = csrf::token(who);
    let hidden = |what: &str| {
        html! {
            input type="hidden" name=(csrf::FIELD) value=(token);
            input type="hidden" name="do" value=(what);
        }
    };
    html! {
        @if is_human_decision(t) {
            section.decision aria-labelledby="decision-h" {
                h2 #decision-h { "Decision" }
                @if t.last_run().is_some_and(|r| r.state == RunState::Pending) {
                    p { "This task waits for a person (task queue " code { (HUMAN_DECISION_QUEUE) } "). Resolving it claims its run as you (worker " code { (t.def.worker_type) "/" (super::acting::worker_id_of(&who.user)) } ")." }
                    div.buttons {
                        form method="post" action=(act) { (hidden("complete")) button type="submit" { "Complete (go ahead)" } }
                        form method="post" action=(act) { (hidden("fail")) button.danger type="submit" { "Fail (stop)" } }
                    }
                } @else {
                    p { "No decision is waiting: the task is " (t.state().as_str()) "." }
                }
            }
        }
        section.actions aria-labelledby="act-h" {
            h2 #act-h { "Actions" }
            @match acts {
                Err(e) => p.error role="alert" { "The decision task's actions cannot be read: " (e) },
                Ok(Some(a)) => {
                    @let list = a.for_task(&t.def.tags);
                    @if list.is_empty() {
                        p { "The decision task offers no action on this task." }
                    }
                    @for (i, action) in list.iter().enumerate() {
                        (actions::form(action, &act, &token, i))
                    }
                }
                Ok(None) => {
                    p { "This group has no actions: these go straight to the queue." }
                    div.buttons {
                        form method="post" action=(act) { (hidden("rerun")) button type="submit" { "Rerun" } }
                        form method="post" action=(act) { (hidden("cancel")) button.danger type="submit" { "Cancel" } }
                    }
                    form.retrigger method="post" action=(act) {
                        (hidden("retrigger"))
                        fieldset {
                            legend { "Retrigger: a new task with the same definition" }
                            div.field {
                                input #rt-exact type="checkbox" name="exact" value="true";
                                label for="rt-exact" { "Keep its dependencies and routes (exact)" }
                            }
                            div.field {
                                input #rt-dependents type="checkbox" name="dependents" value="true";
                                label for="rt-dependents" { "Also clone the tasks below it (its dependents, theirs…), depending on the clones" }
                            }
                            button type="submit" { "Retrigger" }
                        }
                    }
                }
            }
        }
    }
}

fn runs(web: &Web, t: &Task, artifacts: &[Artifact]) -> Markup {
    html! {
        section aria-labelledby="runs-h" {
            h2 #runs-h { "Runs" }
            @if t.runs.is_empty() {
                p { "No run yet: the task waits for its dependencies." }
            }
            @for run in t.runs.iter().rev() {
                section.run {
                    h3 { "Run " (run.run_id) ": " span class=(state_class(run.state.into())) { (run.state.as_str()) } }
                    dl.summary {
                        dt { "Why" } dd { (run.reason_created.as_str()) @if let Some(r) = run.reason_resolved { " → " (r.as_str()) } }
                        @if let (Some(g), Some(w)) = (&run.worker_group, &run.worker_id) { dt { "Worker" } dd { (g) "/" (w) } }
                        dt { "Scheduled" } dd { (fmt_ms(run.scheduled)) }
                        @if let Some(s) = run.started { dt { "Started" } dd { (fmt_ms(s)) } }
                        @if let Some(r) = run.resolved { dt { "Resolved" } dd { (fmt_ms(r)) } }
                    }
                    @let mine: Vec<&Artifact> = artifacts.iter().filter(|a| a.run_id == run.run_id).collect();
                    @if mine.is_empty() {
                        p { "No artifacts." }
                    } @else {
                        ul.artifacts aria-label=(format!("Artifacts of run {}", run.run_id)) {
                            @for a in mine {
                                li {
                                    a href=(artifact_url(&web.root_url, &t.task_id, run.run_id, &a.name)) { (a.name) }
                                    " " small { (a.storage_type) ", " (a.content_type) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn log_section(t: &Task, artifacts: &[Artifact]) -> Markup {
    let Some(run) = t.last_run() else {
        return html! {};
    };
    let has = |name: &str| {
        artifacts
            .iter()
            .any(|a| a.run_id == run.run_id && a.name == name)
    };
    let live = run.state == RunState::Running && has(LIVE_LOG);
    if !live && !has(BACKING_LOG) && !has(LIVE_LOG) {
        return html! {
            section aria-labelledby="log-h" {
                h2 #log-h { "Log" }
                p { "Run " (run.run_id) " has no log" @if run.state == RunState::Running { " yet" } "." }
            }
        };
    }
    let src = format!("{}/runs/{}/log", task_href(&t.task_id), run.run_id);
    html! {
        section aria-labelledby="log-h" {
            h2 #log-h { @if live { "Live log" } @else { "Log" } " of run " (run.run_id) }
            p #log-status role="status" aria-live="polite" { "The log needs JavaScript; " a href=(src) { "read it as text" } "." }
            pre #log.log data-src=(src) data-live=(if live { "true" } else { "false" }) tabindex="0" aria-label="log" {}
            p { a href=(src) { "The log as text" } }
            script { (PreEscaped(FOLLOW_LOG)) }
        }
    }
}

/// `GET /tasks/<taskId>/runs/<runId>/log`: the run's log as text, streamed;
/// a 403 saying so, without any request made, when the only log is a
/// worker's at an origin not allowed.
pub(crate) async fn log(
    State(web): State<Web>,
    Path((task_id, run_id)): Path<(String, String)>,
) -> Response {
    let text = |status: StatusCode, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    };
    let Ok(run_id) = bbb_queue::validate::run_id_param(&run_id) else {
        return text(StatusCode::NOT_FOUND, format!("{run_id} is not a run id"));
    };
    if !is_slugid(&task_id) {
        return text(StatusCode::NOT_FOUND, format!("{task_id} is not a task id"));
    }
    counted(1);
    let task = match web.queue.load_task(&task_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return text(StatusCode::NOT_FOUND, format!("Task {task_id} not found")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(run) = task.runs.iter().find(|r| r.run_id == run_id) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("Task {task_id} has no run {run_id}"),
        );
    };
    let names: &[&str] = if run.state == RunState::Running {
        &[LIVE_LOG, BACKING_LOG]
    } else {
        &[BACKING_LOG, LIVE_LOG]
    };
    // A worker's URL outside the allowed origins, not fetched.
    let mut refused = None;
    for name in names {
        let Some(source) = log_url(&web, &task_id, run_id, name).await else {
            continue;
        };
        let (client, url) = match source {
            LogSource::Stored(url) => (&web.http, url),
            LogSource::Worker(url) if web.cfg.live_log_origins.allows(&url) => {
                (&web.live_http, url)
            }
            LogSource::Worker(url) => {
                tracing::info!(task.id = %task_id, run.id = run_id, url = %url, "live log not from an allowed origin: not read");
                refused.get_or_insert(url);
                continue;
            }
        };
        // No overall timeout: a live log lasts as long as its run.
        match client.get(&url).send().await {
            Ok(res) if res.status().is_success() => {
                return (
                    [
                        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    Body::from_stream(res.bytes_stream()),
                )
                    .into_response();
            }
            Ok(res) => {
                tracing::debug!(task.id = %task_id, run.id = run_id, status = %res.status(), "log not readable")
            }
            Err(e) => {
                tracing::debug!(task.id = %task_id, run.id = run_id, error = %e, "log not readable")
            }
        }
    }
    if let Some(url) = refused {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "The log of run {run_id} of task {task_id} is not from an allowed worker: {url} is \
                 not at one of the origins bbb reads live logs from (the [web] section's \
                 live_log_origins), so bbb did not fetch it."
            ),
        );
    }
    text(
        StatusCode::NOT_FOUND,
        format!("Run {run_id} of task {task_id} has no log to read"),
    )
}

/// Where a log's bytes are.
enum LogSource {
    /// A URL bbb made (an `s3` artifact's signed URL): read as it is.
    Stored(String),
    /// A reference artifact's URL, which whoever held the run's claim chose:
    /// read only at an allowed origin.
    Worker(String),
}

/// Where the bytes of log artifact `name` of a run are: a reference's URL
/// (http or https only), an `s3` artifact's signed URL, a link followed
/// once.
async fn log_url(web: &Web, task_id: &str, run_id: i64, name: &str) -> Option<LogSource> {
    let mut name = name.to_owned();
    for _ in 0..2 {
        counted(1);
        let a = match web.queue.artifact(task_id, run_id, &name).await {
            Ok(a) => a,
            Err(ApiError::NotFound(_)) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading a log artifact");
                return None;
            }
        };
        match a.storage_type.as_str() {
            "reference" => {
                let url = a.details.get("url").and_then(Value::as_str)?;
                return (url.starts_with("http://") || url.starts_with("https://"))
                    .then(|| LogSource::Worker(url.to_owned()));
            }
            "s3" => {
                let now = web.queue.clock.now_ms();
                return Some(LogSource::Stored(web.blobs.get_url(
                    (task_id, run_id, &name),
                    now,
                    now + bbb_queue::blob::GET_URL_TTL_MS,
                )));
            }
            "link" => {
                name = a
                    .details
                    .get("artifact")
                    .and_then(Value::as_str)?
                    .to_owned()
            }
            _ => return None,
        }
    }
    None
}
