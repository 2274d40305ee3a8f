//! `bbb group`: upstream's `taskcluster group` verbs (cmds/group/actors.go),
//! over every page of `listTaskGroup`.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::args::GroupCommand;
use crate::template::Template;
use crate::{CliError, Io, Result, Session, describe};

/// Cancellations sent at once by `group cancel`.
const CONCURRENT_CANCELS: usize = 16;

pub(crate) async fn run(session: &Session, command: &GroupCommand, io: &mut Io<'_>) -> Result<()> {
    match command {
        GroupCommand::Cancel {
            task_group_id,
            worker_type,
            force,
        } => cancel(session, task_group_id, worker_type.as_deref(), *force, io).await,
        GroupCommand::Status { task_group_id } => status(session, task_group_id, io).await,
        GroupCommand::List {
            task_group_id,
            all,
            running,
            failed,
            exception,
            completed,
            unscheduled,
            pending,
            format_string,
        } => {
            let template = Template::parse(format_string).map_err(CliError)?;
            let wanted = |state: &str| {
                *all || match state {
                    "running" => *running,
                    "failed" => *failed,
                    "exception" => *exception,
                    "completed" => *completed,
                    "unscheduled" => *unscheduled,
                    "pending" => *pending,
                    _ => false,
                }
            };
            for entry in tasks(session, task_group_id).await? {
                if wanted(state(&entry)) {
                    io.line(template.render(&entry))?;
                }
            }
            Ok(())
        }
    }
}

/// Every entry (`{"status": …, "task": …}`) of the group, all pages.
async fn tasks(session: &Session, task_group_id: &str) -> Result<Vec<Value>> {
    let mut entries = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut page = session
            .queue()
            .listTaskGroup(task_group_id, token.as_deref(), None)
            .await
            .map_err(|e| {
                CliError(format!(
                    "could not fetch tasks for group {task_group_id}: {}",
                    describe(&e)
                ))
            })?;
        if let Value::Array(tasks) = page["tasks"].take() {
            entries.extend(tasks);
        }
        token = page["continuationToken"].as_str().map(str::to_owned);
        if token.is_none() {
            return Ok(entries);
        }
    }
}

fn state(entry: &Value) -> &str {
    entry["status"]["state"].as_str().unwrap_or_default()
}

/// How many tasks are in each state, one `state: count` line per state
/// (sorted by state; upstream prints them in Go's map order).
async fn status(session: &Session, task_group_id: &str, io: &mut Io<'_>) -> Result<()> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for entry in tasks(session, task_group_id).await? {
        *counts.entry(state(&entry).to_owned()).or_default() += 1;
    }
    for (state, count) in counts {
        io.line(format!("{state}: {count}"))?;
    }
    Ok(())
}

/// Cancels every unscheduled, pending or running task of the group (of
/// `worker_type` only, when given), after listing them and asking, unless
/// `force`; the cancellations go out concurrently, and the first that
/// fails fails the command.
async fn cancel(
    session: &Session,
    task_group_id: &str,
    worker_type: Option<&str>,
    force: bool,
    io: &mut Io<'_>,
) -> Result<()> {
    let chosen: Vec<(String, String)> = tasks(session, task_group_id)
        .await?
        .iter()
        .filter(|entry| matches!(state(entry), "unscheduled" | "pending" | "running"))
        .filter(|entry| {
            worker_type.is_none_or(|w| entry["status"]["workerType"].as_str() == Some(w))
        })
        .map(|entry| {
            (
                entry["status"]["taskId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                entry["task"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    if chosen.is_empty() {
        return io.line("No suitable tasks found for cancellation.");
    }
    if !force && !confirm_cancellation(&chosen, io)? {
        return io.line("Cancellation of tasks aborted.");
    }
    for (task_id, _) in &chosen {
        io.line(format!("cancelling task {task_id}"))?;
    }
    futures::stream::iter(chosen.iter().map(|(task_id, _)| async move {
        session
            .queue()
            .cancelTask(task_id)
            .await
            .map(|_| ())
            .map_err(|e| format!("could not cancel task {task_id}: {}", describe(&e)))
    }))
    .buffer_unordered(CONCURRENT_CANCELS)
    .try_collect::<Vec<()>>()
    .await
    .map_err(|e| CliError(format!("could not cancel all tasks: {e}")))?;
    Ok(())
}

/// Lists the tasks to cancel and asks until the answer is y or n (the end
/// of the input is n; upstream asks forever).
fn confirm_cancellation(chosen: &[(String, String)], io: &mut Io<'_>) -> Result<bool> {
    io.line(format!(
        "The following {} tasks will be cancelled:",
        chosen.len()
    ))?;
    for (task_id, name) in chosen {
        io.line(format!("\tTask {task_id}: {name}"))?;
    }
    loop {
        io.part(b"Are you sure you want to cancel these tasks? [y/n] ")?;
        let Some(answer) = io.read_line()? else {
            io.part(b"\n")?;
            return Ok(false);
        };
        match answer.trim() {
            "y" | "Y" => return Ok(true),
            "n" | "N" => return Ok(false),
            _ => {}
        }
    }
}
