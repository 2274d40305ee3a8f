//! Results from the queue's own events: every `task-completed`,
//! `task-failed` and `task-exception` message reaches the feed `migration`
//! ([`bbb_queue::feeds`], bound to all messages of those exchanges), written
//! in the transaction that resolved the run. A pass takes a batch, records an
//! observation for each resolved run it can place and deletes the batch in
//! one transaction: a run is recorded once, and a re-delivered message
//! (keyed `<taskId>/<runId>`) replaces its row instead of adding one.
//!
//! What a task says about itself:
//! - **side**: bridged when its `taskQueueId` is one of the bridge's
//!   ([`crate::MigrationConfig::bridge_task_queues`]), else native;
//! - **job**: its label, `tags.label` (taskgraph sets it) or else `metadata.name`;
//! - **builder**: a bridged task's `payload.buildername`;
//! - **branch**: `tags.project` (taskgraph's `project`), else the project of a
//!   route `tc-treeherder.v2.<project>.<revision>…`, else a bridged payload's
//!   `sourcestamp.branch` or `properties.branch`;
//! - **revision**: the revision of that Treeherder route, else
//!   `tags.revision`, else a bridged payload's `sourcestamp.revision` or
//!   `properties.revision`;
//! - **symbol**: `extra.treeherder`'s `groupSymbol(symbol)` or `symbol`.
//!
//! A task without a branch or a revision is not part of any branch's
//! migration: it is left out, with a log line at DEBUG.

use crate::model::{Observation, Outcome, Side};
use crate::{FEED, Migration};
use bbb_queue::model::Task;
use bbb_service::Result;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// Most feed items one pass takes.
pub const BATCH: i64 = 500;

/// The observation the resolution of run `run_id` of `task` makes, or `None`
/// when the task names no branch or revision or the run is not resolved.
pub fn observe(task: &Task, run_id: i64, bridge_task_queues: &[String]) -> Option<Observation> {
    let def = &task.def;
    let run = task.runs.iter().find(|r| r.run_id == run_id)?;
    let result = Outcome::of_task_run(
        run.state.as_str(),
        run.reason_resolved.map(|r| r.as_str()).unwrap_or_default(),
    )?;
    let side = if bridge_task_queues.contains(&def.task_queue_id) {
        Side::Bridged
    } else {
        Side::Native
    };
    let tag = |k: &str| def.tags.get(k).and_then(Value::as_str).map(str::to_string);
    let payload = |path: &[&str]| {
        let mut v = def.payload.get(path[0])?;
        for k in &path[1..] {
            v = v.get(k)?;
        }
        v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    let treeherder = def.routes.iter().find_map(|r| {
        let mut parts = r.strip_prefix("tc-treeherder.v2.")?.splitn(3, '.');
        Some((parts.next()?.to_string(), parts.next()?.to_string()))
    });
    let bridged = side == Side::Bridged;
    let branch = tag("project")
        .or_else(|| treeherder.as_ref().map(|t| t.0.clone()))
        .or_else(|| {
            bridged
                .then(|| payload(&["sourcestamp", "branch"]))
                .flatten()
        })
        .or_else(|| {
            bridged
                .then(|| payload(&["properties", "branch"]))
                .flatten()
        })
        // A payload's branch is the master's (`integration/mozilla-inbound`):
        // the record's is its last component, as for the master's own builds.
        .map(|b| crate::poller::branch_of(&b).to_string())
        .filter(|b| !b.is_empty());
    let revision = treeherder
        .map(|t| t.1)
        .or_else(|| tag("revision"))
        .or_else(|| {
            bridged
                .then(|| payload(&["sourcestamp", "revision"]))
                .flatten()
        })
        .or_else(|| {
            bridged
                .then(|| payload(&["properties", "revision"]))
                .flatten()
        });
    let (Some(branch), Some(revision)) = (branch, revision) else {
        tracing::debug!(task.id = %task.task_id, "a resolved task names no branch or revision; not recorded");
        return None;
    };
    let th = def.extra.get("treeherder");
    let th_field = |k: &str| th.and_then(|t| t.get(k)).and_then(Value::as_str);
    let symbol = th_field("symbol").map(|s| match th_field("groupSymbol") {
        Some(g) if g != "?" => format!("{g}({s})"),
        _ => s.to_string(),
    });
    Some(Observation {
        side,
        source_id: format!("{}/{}", task.task_id, run_id),
        branch,
        revision,
        job: tag("label").unwrap_or_else(|| def.metadata.name.clone()),
        builder: if bridged {
            payload(&["buildername"])
        } else {
            None
        },
        symbol,
        result,
        started: run.started,
        finished: run.resolved.unwrap_or(run.scheduled),
    })
}

impl Migration {
    /// One pass over a batch of the feed: take, record, delete, commit (run
    /// again when it loses a race on PostgreSQL). Returns (items taken,
    /// observations recorded).
    pub async fn consume_once(&self) -> Result<(usize, usize)> {
        self.queue
            .retrying(|| async {
                let mut tx = self.queue.db.begin().await?;
                let items = self.queue.take_feed(&mut tx, FEED, BATCH).await?;
                if items.is_empty() {
                    return Ok((0, 0));
                }
                let mut wanted: Vec<(&str, i64)> = Vec::new();
                for item in &items {
                    let p = &item.message.payload;
                    match (p["status"]["taskId"].as_str(), p["runId"].as_i64()) {
                        (Some(t), Some(r)) => wanted.push((t, r)),
                        _ => tracing::warn!(
                            feed.id = item.id,
                            exchange = %item.message.exchange,
                            "a resolution message without a taskId or runId; not recorded"
                        ),
                    }
                }
                let ids: Vec<&str> = wanted.iter().map(|(t, _)| *t).collect();
                let tasks = self.queue.load_tasks_in(&mut tx, &ids, false).await?;
                let observations: Vec<Observation> = wanted
                    .iter()
                    .filter_map(|(t, r)| {
                        let Some(task) = tasks.get(*t) else {
                            tracing::warn!(task.id = %t, "a resolved task is gone; not recorded");
                            return None;
                        };
                        observe(task, *r, &self.cfg.bridge_task_queues)
                    })
                    .collect();
                crate::store::record(&mut tx, &observations).await?;
                let item_ids: Vec<i64> = items.iter().map(|i| i.id).collect();
                self.queue.delete_feed(&mut tx, &item_ids).await?;
                tx.commit().await?;
                Ok((items.len(), observations.len()))
            })
            .await
    }

    /// Consume the feed until `stop` turns true ([`bbb_queue::Queue::consume_feed`]):
    /// a pass whenever this process resolved a run, and every resolver
    /// interval (for other processes').
    pub async fn run_feed(self, stop: watch::Receiver<bool>) {
        let spec = bbb_queue::feeds::FeedLoop {
            feed: FEED,
            batch: BATCH as usize,
            gather: Duration::ZERO,
            what: "recording resolved tasks",
        };
        self.queue
            .consume_feed(spec, stop, || async {
                self.consume_once().await.map(|(n, _)| n)
            })
            .await;
    }
}
