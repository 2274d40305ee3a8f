//! `bbb task`: upstream's `taskcluster task` verbs (cmds/task/fetchers.go
//! and actors.go), with their output and their error messages.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use taskcluster::Credentials;

use crate::args::TaskCommand;
use crate::{CliError, Io, Result, Session, describe};

pub(crate) async fn run(session: &Session, command: &TaskCommand, io: &mut Io<'_>) -> Result<()> {
    match command {
        TaskCommand::Status {
            task_id,
            all_runs,
            run,
        } => status(session, task_id, *all_runs, *run, io).await,
        TaskCommand::Name { task_id } => {
            let task = task(session, task_id).await?;
            io.line(text(&task["metadata"]["name"]))
        }
        TaskCommand::Def { task_id } => {
            let task = task(session, task_id).await?;
            let def = serde_json::to_string_pretty(&task).map_err(|e| {
                CliError(format!("unable to marshal task {task_id} into json: {e}"))
            })?;
            io.line(def)
        }
        TaskCommand::Group { task_id } => {
            let task = task(session, task_id).await?;
            io.line(text(&task["taskGroupId"]))
        }
        TaskCommand::Artifacts { task_id, run } => artifacts(session, task_id, *run, io).await,
        TaskCommand::Log { task_id } => log(session, task_id, io).await,
        TaskCommand::Cancel {
            task_id,
            noop,
            confirm,
        } => cancel(session, task_id, *noop, *confirm, io).await,
        TaskCommand::Retrigger { task_id, exact } => retrigger(session, task_id, *exact, io).await,
        TaskCommand::Rerun {
            task_id,
            noop,
            confirm,
            force,
        } => rerun(session, task_id, *noop, *confirm, *force, io).await,
        TaskCommand::Complete {
            task_id,
            noop,
            confirm,
        } => complete(session, task_id, *noop, *confirm, io).await,
    }
}

/// A JSON string's text (other values as JSON).
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// `state`, or `state 'reasonResolved'` for a resolved run: upstream's
/// `getRunStatusString`.
pub(crate) fn run_status(run: &Value) -> String {
    let state = text(&run["state"]);
    match run.get("reasonResolved").and_then(Value::as_str) {
        Some(reason) if !reason.is_empty() => format!("{state} '{reason}'"),
        _ => state,
    }
}

async fn task(session: &Session, task_id: &str) -> Result<Value> {
    session.queue().task(task_id).await.map_err(|e| {
        CliError(format!(
            "could not get the task {task_id}: {}",
            describe(&e)
        ))
    })
}

/// The task's status (`status` of the queue's answer).
async fn task_status(session: &Session, task_id: &str) -> Result<Value> {
    let mut answer = session.queue().status(task_id).await.map_err(|e| {
        CliError(format!(
            "could not get the status of the task {task_id}: {}",
            describe(&e)
        ))
    })?;
    Ok(answer["status"].take())
}

fn runs(status: &Value) -> &[Value] {
    status["runs"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Run `run` of `status` (`-1`: the last), as upstream picks it.
fn pick_run(status: &Value, run: i64) -> Result<usize> {
    let count = runs(status).len() as i64;
    let run = if run == -1 { count - 1 } else { run };
    if run < 0 {
        return Err(CliError("task has no runs".to_owned()));
    }
    if run >= count {
        return Err(CliError(format!("there is no run #{run}")));
    }
    Ok(run as usize)
}

async fn status(
    session: &Session,
    task_id: &str,
    all_runs: bool,
    run: i64,
    io: &mut Io<'_>,
) -> Result<()> {
    let status = task_status(session, task_id).await?;
    if all_runs && run != -1 {
        return Err(CliError(
            "can't specify both all-runs and a specific run".to_owned(),
        ));
    }
    if all_runs {
        for r in runs(&status) {
            io.line(format!("Run #{}: {}", r["runId"], run_status(r)))?;
        }
        return Ok(());
    }
    let run = pick_run(&status, run)?;
    io.line(run_status(&runs(&status)[run]))
}

async fn artifacts(session: &Session, task_id: &str, run: i64, io: &mut Io<'_>) -> Result<()> {
    let status = task_status(session, task_id).await?;
    let run = pick_run(&status, run)?.to_string();
    let mut names = String::new();
    let mut token: Option<String> = None;
    loop {
        let page = session
            .queue()
            .listArtifacts(task_id, &run, token.as_deref(), None)
            .await
            .map_err(|e| {
                CliError(format!(
                    "could not fetch artifacts for task {task_id} run {run}: {}",
                    describe(&e)
                ))
            })?;
        for artifact in page["artifacts"].as_array().into_iter().flatten() {
            names.push_str(&text(&artifact["name"]));
            names.push('\n');
        }
        token = page["continuationToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    io.part(names.as_bytes())
}

/// The latest run's `public/logs/live.log` (which a native worker serves
/// while the task runs, and links to the backing log afterwards), else its
/// `public/logs/live_backing.log`, streamed as it comes: the request is
/// unsigned, as upstream's (public logs need no credentials).
async fn log(session: &Session, task_id: &str, io: &mut Io<'_>) -> Result<()> {
    let status = task_status(session, task_id).await?;
    let state = text(&status["state"]);
    if state == "unscheduled" || state == "pending" {
        return Err(CliError(format!(
            "could not fetch the logs of task {task_id} because it's in a {state} state"
        )));
    }
    let mut response = None;
    for name in ["live.log", "live_backing.log"] {
        let url = session
            .queue()
            .getLatestArtifact_url(task_id, &format!("public/logs/{name}"))
            .map_err(|e| CliError(format!("{e:#}")))?;
        let answer = session
            .http()
            .get(&url)
            .send()
            .await
            .map_err(|e| CliError(format!("error making request to {url}: {e}")))?;
        let missing = answer.status() == reqwest_tc::StatusCode::NOT_FOUND;
        response = Some(answer);
        if !missing {
            break;
        }
    }
    let Some(mut response) = response else {
        unreachable!("two names were tried");
    };
    let code = response.status();
    if code != reqwest_tc::StatusCode::NOT_FOUND {
        let mut last = b'\n';
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CliError(format!("error reading the log of task {task_id}: {e}")))?
        {
            if let Some(&byte) = chunk.last() {
                last = byte;
            }
            io.part(&chunk)?;
        }
        if last != b'\n' {
            io.part(b"\n")?;
        }
    }
    if !code.is_success() {
        return Err(CliError(format!(
            "received unexpected response code {}",
            code.as_u16()
        )));
    }
    Ok(())
}

/// `--noop`: what would be done, and to which task.
async fn noop(session: &Session, command: &str, task_id: &str, io: &mut Io<'_>) -> Result<()> {
    let (name, state) = describe_task(session, task_id).await?;
    io.line(format!(
        "{command} {name} taskid: {task_id} (state: {state})"
    ))
}

/// The task's name and the state of its last run (its own state when it
/// has no run).
async fn describe_task(session: &Session, task_id: &str) -> Result<(String, String)> {
    let status = task_status(session, task_id).await?;
    let state = runs(&status)
        .last()
        .map_or_else(|| text(&status["state"]), |run| text(&run["state"]));
    let task = task(session, task_id).await?;
    Ok((text(&task["metadata"]["name"]), state))
}

/// `--confirm`: asks until the answer is yes or no (an empty answer, or the
/// end of the input, is no).
pub(crate) async fn confirm(
    session: &Session,
    command: &str,
    task_id: &str,
    io: &mut Io<'_>,
) -> Result<bool> {
    let (name, state) = describe_task(session, task_id).await?;
    loop {
        io.part(
            format!(
                "{command} {name} taskId: {task_id} (state: {state}). Are you sure you want to proceed?(y/N) "
            )
            .as_bytes(),
        )?;
        let Some(answer) = io.read_line()? else {
            io.part(b"\n")?;
            return Ok(false);
        };
        match answer.trim().to_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" | "" => return Ok(false),
            _ => {}
        }
    }
}

/// The status string of the last run of the `status` in a queue answer.
fn last_run_status(answer: &Value) -> String {
    runs(&answer["status"])
        .last()
        .map(run_status)
        .unwrap_or_default()
}

async fn cancel(
    session: &Session,
    task_id: &str,
    noop_only: bool,
    ask: bool,
    io: &mut Io<'_>,
) -> Result<()> {
    if noop_only {
        return noop(session, "Would cancel", task_id, io).await;
    }
    if ask && !confirm(session, "Cancels", task_id, io).await? {
        return Ok(());
    }
    let answer = session.queue().cancelTask(task_id).await.map_err(|e| {
        CliError(format!(
            "could not cancel the task {task_id}: {}",
            describe(&e)
        ))
    })?;
    io.line(last_run_status(&answer))
}

async fn rerun(
    session: &Session,
    task_id: &str,
    noop_only: bool,
    ask: bool,
    force: bool,
    io: &mut Io<'_>,
) -> Result<()> {
    if noop_only {
        return noop(session, "Would re-run", task_id, io).await;
    }
    if ask && !confirm(session, "Will re-run", task_id, io).await? {
        return Ok(());
    }
    if !force {
        let status = session.queue().status(task_id).await.map_err(|e| {
            CliError(format!(
                "could not get status of the task {task_id}: {}",
                describe(&e)
            ))
        })?;
        let state = text(&status["status"]["state"]);
        if state != "failed" && state != "exception" {
            return Err(CliError(format!(
                "task {task_id} is in state {state}. Disallowing rerun of a non-failed and non-exception task without --force"
            )));
        }
    }
    let answer = session.queue().rerunTask(task_id).await.map_err(|e| {
        CliError(format!(
            "could not rerun the task {task_id}: {}",
            describe(&e)
        ))
    })?;
    io.line(last_run_status(&answer))
}

async fn retrigger(session: &Session, task_id: &str, exact: bool, io: &mut Io<'_>) -> Result<()> {
    let task = task(session, task_id).await?;
    let new_task_id = slugid();
    let definition = retriggered(&task, exact, Utc::now())?;
    let answer = session
        .queue()
        .createTask(&new_task_id, &definition)
        .await
        .map_err(|e| CliError(format!("could not create task: {}", describe(&e))))?;
    io.line(format!(
        "Task {} created",
        text(&answer["status"]["taskId"])
    ))
}

/// The definition of a retrigger of `task` created at `now`, as upstream's:
/// the same task with new times (its deadline and expiry as far from `now`
/// as they were from its creation) and no retries, without its dependencies
/// and routes unless `exact`.
pub(crate) fn retriggered(task: &Value, exact: bool, now: DateTime<Utc>) -> Result<Value> {
    let time = |name: &str| {
        task[name]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| CliError(format!("could not parse {name} date: {}", task[name])))
    };
    let created = time("created")?;
    let deadline = time("deadline")?;
    let expires = time("expires")?;
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let kept = |name: &str| {
        if exact { task[name].clone() } else { json!([]) }
    };
    let mut definition = json!({
        "created": stamp(now),
        "deadline": stamp(now + (deadline - created)),
        "expires": stamp(now + (expires - created)),
        "taskGroupId": task["taskGroupId"],
        "schedulerId": task["schedulerId"],
        "priority": task["priority"],
        "dependencies": kept("dependencies"),
        "extra": task["extra"],
        "metadata": task["metadata"],
        "payload": task["payload"],
        "requires": task["requires"],
        "retries": 0,
        "routes": kept("routes"),
        "scopes": task["scopes"],
        "tags": task["tags"],
    });
    match task["taskQueueId"].as_str() {
        Some(queue) => definition["taskQueueId"] = json!(queue),
        None => {
            definition["provisionerId"] = task["provisionerId"].clone();
            definition["workerType"] = task["workerType"].clone();
        }
    }
    if let Some(fields) = definition.as_object_mut() {
        // What the task does not have stays out (the queue's defaults apply).
        fields.retain(|_, v| !v.is_null());
    }
    Ok(definition)
}

/// A new "nice" slugid: a v4 UUID in URL-safe base64 whose first bit is
/// clear, as upstream's `slugid.Nice()`.
fn slugid() -> String {
    use base64::Engine as _;
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn complete(
    session: &Session,
    task_id: &str,
    noop_only: bool,
    ask: bool,
    io: &mut Io<'_>,
) -> Result<()> {
    let status = task_status(session, task_id).await?;
    if noop_only {
        return noop(session, "Would complete", task_id, io).await;
    }
    if ask && !confirm(session, "Will complete", task_id, io).await? {
        return Ok(());
    }
    let run_id = (runs(&status).len() as i64 - 1).to_string();
    let claim = session
        .queue()
        .claimTask(
            task_id,
            &run_id,
            &json!({"workerGroup": status["workerType"], "workerId": "taskcluster-cli"}),
        )
        .await
        .map_err(|e| {
            CliError(format!(
                "could not claim the task {task_id}: {}",
                describe(&e)
            ))
        })?;
    let credentials = &claim["credentials"];
    let credentials = match credentials["certificate"].as_str() {
        Some(certificate) => Credentials::new_with_certificate(
            text(&credentials["clientId"]),
            text(&credentials["accessToken"]),
            certificate,
        ),
        None => Credentials::new(
            text(&credentials["clientId"]),
            text(&credentials["accessToken"]),
        ),
    };
    let claimed_run = claim["runId"].as_u64().unwrap_or_default();
    let answer = session
        .queue_with(credentials)?
        .reportCompleted(task_id, &claimed_run.to_string())
        .await
        .map_err(|e| {
            CliError(format!(
                "could not complete the task {task_id}: {}",
                describe(&e)
            ))
        })?;
    let run = runs(&answer["status"])
        .get(claimed_run as usize)
        .map(run_status)
        .unwrap_or_default();
    io.line(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_status_names_the_reason() {
        assert_eq!(run_status(&json!({"state": "pending"})), "pending");
        assert_eq!(
            run_status(&json!({"state": "exception", "reasonResolved": "canceled"})),
            "exception 'canceled'"
        );
    }

    #[test]
    fn runs_are_picked_as_upstream() {
        let status = json!({"runs": [{"runId": 0}, {"runId": 1}]});
        assert_eq!(pick_run(&status, -1).unwrap(), 1);
        assert_eq!(pick_run(&status, 0).unwrap(), 0);
        assert_eq!(pick_run(&status, 2).unwrap_err().0, "there is no run #2");
        assert_eq!(
            pick_run(&json!({"runs": []}), -1).unwrap_err().0,
            "task has no runs"
        );
    }

    #[test]
    fn a_retrigger_moves_the_times_and_drops_routes_and_dependencies() {
        let task = json!({
            "taskQueueId": "bbb/native",
            "provisionerId": "bbb",
            "workerType": "native",
            "schedulerId": "s",
            "taskGroupId": "G",
            "created": "2026-01-01T00:00:00.000Z",
            "deadline": "2026-01-01T01:00:00.000Z",
            "expires": "2026-01-02T00:00:00.000Z",
            "priority": "high",
            "dependencies": ["D"],
            "routes": ["tc-treeherder.v2.p.abc"],
            "retries": 5,
            "scopes": [],
            "requires": "all-completed",
            "payload": {"command": []},
            "metadata": {"name": "n"},
            "tags": {},
            "extra": {},
        });
        let now = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let new = retriggered(&task, false, now).unwrap();
        assert_eq!(new["created"], "2026-06-01T12:00:00.000Z");
        assert_eq!(new["deadline"], "2026-06-01T13:00:00.000Z");
        assert_eq!(new["expires"], "2026-06-02T12:00:00.000Z");
        assert_eq!(new["dependencies"], json!([]));
        assert_eq!(new["routes"], json!([]));
        assert_eq!(new["retries"], 0);
        assert_eq!(new["taskQueueId"], "bbb/native");
        assert!(new.get("provisionerId").is_none());
        assert_eq!(new["payload"], task["payload"]);
        let exact = retriggered(&task, true, now).unwrap();
        assert_eq!(exact["dependencies"], json!(["D"]));
        assert_eq!(exact["routes"], task["routes"]);
        assert!(retriggered(&json!({"created": "x"}), false, now).is_err());
    }

    #[test]
    fn slugids_are_nice() {
        for _ in 0..50 {
            let id = slugid();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with(['-', '_']), "{id}");
        }
    }
}
