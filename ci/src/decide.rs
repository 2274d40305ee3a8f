//! Deciding pushes: the loop that takes each pending push of the ledger in
//! order per branch, reads `.taskcluster.yml` at its revision, renders it
//! ([`crate::render_decision`]) and creates its tasks in the queue with the
//! branch's role, then records the decision task or the error against the
//! push.
//!
//! Tasks are created through the queue's `createTask` over HTTP, signed as
//! the service's client [`CLIENT_ID`] (temporary credentials issued with the
//! queue's own secret, as the hooks service does) restricted by
//! `authorizedScopes` to `assume:repo:<host>/<path>:branch:<branch>`, so the
//! task gets exactly what that role grants. Every id and time in the
//! rendered tasks derives from the push, so a decision tried again (after a
//! crash or a failure that may pass) creates the same tasks, which the queue
//! accepts as already created.

use crate::store::{Decided, Push, Repository};
use crate::{Ci, DecisionContext};
use bbb_clock::Clock;
use bbb_hooks::client::{HawkClient, IssuedCredentials};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The client id the service creates tasks as.
pub const CLIENT_ID: &str = "static/bbb/ci";

/// The scopes of [`CLIENT_ID`]'s credentials: every repository's roles (each
/// call is restricted to one).
pub const CLIENT_SCOPES: [&str; 1] = ["assume:repo:*"];

/// Creates decision tasks in the queue.
#[derive(Clone)]
pub struct Creator {
    client: HawkClient,
    creds: IssuedCredentials,
}

/// Why creating a task failed.
#[derive(Debug)]
pub enum CreateError {
    /// The queue refused it (4xx): its status and message.
    Refused(u16, String),
    /// The queue failed or could not be reached; trying again may work.
    Transient(String),
}

impl Creator {
    /// A creator calling the queue under `root_url` with credentials issued
    /// by `issuer` (the queue's client id and secret).
    pub fn new(root_url: &str, issuer: Arc<(String, String)>, clock: Clock) -> Creator {
        Creator {
            client: HawkClient::new(root_url, clock.clone()),
            creds: IssuedCredentials::new(issuer, CLIENT_ID, &CLIENT_SCOPES, clock),
        }
    }

    /// `createTask(task_id, task)` as `role` (`repo:...`).
    pub async fn create_task(
        &self,
        role: &str,
        task_id: &str,
        task: &Value,
    ) -> Result<(), CreateError> {
        let creds = self.creds.get().map_err(CreateError::Transient)?;
        let scopes = [format!("assume:{role}")];
        let url = self.client.url("queue", &format!("task/{task_id}"));
        match self
            .client
            .call(Some(&creds), Some(&scopes), "PUT", &url, Some(task))
            .await
        {
            Ok(a) if a.is_success() => Ok(()),
            Ok(a) if a.status < 500 => {
                let message = a
                    .body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let first = message.split("\n\n---").next().unwrap_or_default().trim();
                Err(CreateError::Refused(
                    a.status,
                    format!("createTask {task_id}: {} {first}", a.status),
                ))
            }
            Ok(a) => Err(CreateError::Transient(format!(
                "createTask {task_id}: {}",
                a.status
            ))),
            Err(e) => Err(CreateError::Transient(format!("createTask {task_id}: {e}"))),
        }
    }
}

/// The JSON-e context of `push` to `repo`.
pub fn push_context(repo: &Repository, push: &Push) -> DecisionContext {
    let mut repository = json!({
        "url": repo.url,
        "project": repo.project,
        "level": repo.level.to_string(),
    });
    if let Some(c) = &repo.clone_url {
        repository["clone_url"] = json!(c);
    }
    DecisionContext {
        tasks_for: repo.kind.tasks_for().to_owned(),
        push: json!({
            "owner": push.owner,
            "revision": push.revision,
            "base_revision": push.base_revision,
            "branch": push.branch,
            "pushlog_id": push.pushlog_id.unwrap_or(push.id).to_string(),
            "pushdate": push.pushdate / 1000,
        }),
        repository,
        now: push.recorded_at,
        seed: format!(
            "{}\n{}\n{}\n{}",
            repo.url, push.branch, push.revision, push.id
        ),
        extra: Map::new(),
    }
}

impl Ci {
    /// What deciding `push` comes to: fetch, read, render, create.
    pub async fn decide(&self, push: &Push) -> Decided {
        let retry =
            |e: String| Decided::Retry(e, self.clock.now_ms() + self.backoff(push.attempts));
        let repo = match self.store.repository(&push.project).await {
            Ok(Some(r)) => r,
            Ok(None) => return Decided::Failed("the repository is no longer configured".into()),
            Err(e) => return retry(format!("reading the repository: {e}")),
        };
        let text = match self
            .read_file(&repo, &push.revision, ".taskcluster.yml")
            .await
        {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => {
                return Decided::Failed(format!(
                    "there is no .taskcluster.yml at {}",
                    push.revision
                ));
            }
            Err(e) => return retry(e),
        };
        if let Err(e) = self.note_tcyml(&repo.project, text.as_bytes()).await {
            tracing::warn!(ci.project = %repo.project, error = %e, "recording the .taskcluster.yml failed");
        }
        // The branch moved: its action and cron hooks may change.
        self.hooks_changed.notify_one();
        let mut context = push_context(&repo, push);
        context.extra.insert(
            "tcyml_hash".into(),
            crate::actions::tcyml_hash(text.as_bytes()).into(),
        );
        let tasks = match crate::render_decision(&text, &context) {
            Ok(t) => t,
            Err(e) => return Decided::Failed(e.to_string()),
        };
        let Some(first) = tasks.first() else {
            return Decided::Failed(".taskcluster.yml rendered no tasks".into());
        };
        let decision_id = first["taskId"].as_str().unwrap_or_default().to_owned();
        let role = repo.branch_role(&push.branch);
        for mut task in tasks {
            let id = task
                .as_object_mut()
                .and_then(|o| o.remove("taskId"))
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match self.creator.create_task(&role, &id, &task).await {
                Ok(()) => {}
                Err(CreateError::Refused(_, m)) => return Decided::Failed(m),
                Err(CreateError::Transient(m)) => return retry(m),
            }
        }
        Decided::Task(decision_id)
    }

    /// Decide the next due push, if any: on PostgreSQL under its row lock
    /// (so no other process decides it meanwhile), on SQLite (one process)
    /// without holding the one connection while the queue is called.
    /// Returns whether there was one.
    pub async fn decide_next(&self) -> crate::store::Result<bool> {
        let now = self.clock.now_ms();
        let (push, outcome) = match self.store.backend {
            bbb_sqlstore::Backend::Postgres => {
                let mut tx = self.store.pool.begin().await?;
                let Some(push) = self.store.next_due(&mut tx, now).await? else {
                    return Ok(false);
                };
                let outcome = self.decide(&push).await;
                self.store
                    .decided(&mut tx, push.id, &outcome, self.clock.now_ms())
                    .await?;
                tx.commit().await?;
                (push, outcome)
            }
            bbb_sqlstore::Backend::Sqlite => {
                let mut conn = self.store.pool.acquire().await?;
                let Some(push) = self.store.next_due(&mut conn, now).await? else {
                    return Ok(false);
                };
                drop(conn);
                let outcome = self.decide(&push).await;
                let mut conn = self.store.pool.acquire().await?;
                self.store
                    .decided(&mut conn, push.id, &outcome, self.clock.now_ms())
                    .await?;
                (push, outcome)
            }
        };
        match &outcome {
            Decided::Task(t) => tracing::info!(
                ci.project = %push.project, ci.branch = %push.branch, push.id = push.id,
                task.id = %t, "decision task created"
            ),
            Decided::Failed(e) => tracing::warn!(
                ci.project = %push.project, ci.branch = %push.branch, push.id = push.id,
                error = %e, "decision failed"
            ),
            Decided::Retry(e, _) => tracing::warn!(
                ci.project = %push.project, ci.branch = %push.branch, push.id = push.id,
                error = %e, "decision failed; it will be tried again"
            ),
        }
        Ok(true)
    }
}

/// Decide pushes until `stop` turns true: at once when this process records
/// one, and every `handle_interval_ms` for those others recorded or that
/// are due to be tried again.
pub async fn run(ci: Ci, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(ci.cfg.handle_interval_ms.max(1));
    loop {
        if *stop.borrow() {
            return;
        }
        match ci.decide_next().await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "taking a push to decide failed"),
        }
        tokio::select! {
            _ = ci.pushed.notified() => {}
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
