//! Entries from routes: when a task completes, each of its routes
//! `index.<namespace>` makes an entry at `<namespace>`, as upstream's index
//! does on `task-completed` messages bound with `route.index.#`.
//!
//! The entry's rank is the task's `extra.index.rank` (default 0), its expiry
//! `extra.index.expires` (default the task's `expires`) and its data
//! `extra.index.data` (default `{}`). A task whose `extra.index.rank` is not a
//! number or whose `extra.index.data` is not an object makes no entry;
//! routes whose namespace is not valid are left out.
//!
//! The messages come from the queue's feed `index` ([`bbb_queue::feeds`]),
//! written in the transaction that completed the task. A [`FeedPass`] takes a
//! batch of them, writes their entries and deletes them in one transaction of
//! its own: an entry is made once per completed run, and a pass that does not
//! commit (an error, a process that stopped) leaves its batch to the next.

use crate::store::{self, Entry};
use crate::{FEED, Index, ROUTE_PREFIX, namespace};
use bbb_clock::{Millis, parse_ms};
use bbb_queue::feeds::FeedItem;
use bbb_queue::model::Task;
use bbb_service::Result;
use serde_json::{Map, Value};
use sqlx::{Any, Transaction};
use std::time::Duration;
use tokio::sync::watch;

/// Most feed items one pass takes.
pub const BATCH: i64 = 500;

/// After a pass that found less than a full batch, the loop waits this long,
/// so that under load a pass takes the messages of many commits.
const GATHER: Duration = Duration::from_millis(25);

/// A batch of the feed taken in a transaction of its own; [`FeedPass::apply`]
/// writes its entries, [`FeedPass::commit`] deletes its items and commits.
/// Dropped before it commits, it changes nothing and its items are taken again.
pub struct FeedPass {
    tx: Transaction<'static, Any>,
    items: Vec<FeedItem>,
    entries: usize,
}

impl FeedPass {
    /// How many feed items it took.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it took none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Write the entries its items call for, within its transaction. Returns
    /// how many (route, completed run) pairs it handled.
    pub async fn apply(&mut self, index: &Index) -> Result<usize> {
        let now = index.queue.clock.now_ms();
        let mut wanted: Vec<(&str, Vec<String>)> = Vec::new();
        for item in &self.items {
            let Some(task_id) = item.message.payload["status"]["taskId"].as_str() else {
                tracing::warn!(
                    feed.id = item.id,
                    "a task-completed message without a taskId"
                );
                continue;
            };
            let namespaces: Vec<String> = item
                .message
                .cc
                .iter()
                .filter_map(|cc| cc.strip_prefix("route.")?.strip_prefix(ROUTE_PREFIX))
                .filter_map(|r| r.strip_prefix('.'))
                .filter(|ns| namespace::is_valid(ns))
                .map(str::to_string)
                .collect();
            if !namespaces.is_empty() {
                wanted.push((task_id, namespaces));
            }
        }
        let ids: Vec<&str> = wanted.iter().map(|(id, _)| *id).collect();
        let tasks = index.queue.load_tasks_in(&mut self.tx, &ids, false).await?;
        let mut entries = Vec::new();
        for (task_id, namespaces) in &wanted {
            let Some(task) = tasks.get(*task_id) else {
                tracing::warn!(task.id = %task_id, "a completed task is gone; not indexed");
                continue;
            };
            let Some(options) = options(task) else {
                continue;
            };
            for path in namespaces {
                let (ns, name) = namespace::split(path);
                entries.push(Entry {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    rank: options.rank,
                    task_id: task_id.to_string(),
                    data: Value::Object(options.data.clone()),
                    expires: options.expires,
                });
            }
        }
        store::upsert(&mut self.tx, &entries, now).await?;
        self.entries = entries.len();
        Ok(self.entries)
    }

    /// Delete its items and commit. Returns how many entries it made.
    pub async fn commit(mut self, index: &Index) -> Result<usize> {
        let ids: Vec<i64> = self.items.iter().map(|i| i.id).collect();
        index.queue.delete_feed(&mut self.tx, &ids).await?;
        self.tx.commit().await?;
        Ok(self.entries)
    }
}

/// What a task's `extra.index` asks for.
struct Options {
    rank: i64,
    expires: Millis,
    data: Map<String, Value>,
}

/// The entry options of `task`, or `None` (logged) when they are not usable.
fn options(task: &Task) -> Option<Options> {
    let index = task.def.extra.get("index").and_then(Value::as_object);
    let field = |k: &str| index.and_then(|i| i.get(k));
    let id = &task.task_id;
    let rank = match field("rank") {
        None => 0,
        Some(r) => match r.as_i64().or_else(|| {
            r.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }) {
            Some(r) => r,
            None => {
                tracing::warn!(task.id = %id, rank = %r, "extra.index.rank is not an integer; not indexed");
                return None;
            }
        },
    };
    let data = match field("data") {
        None => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => {
            tracing::warn!(task.id = %id, "extra.index.data is not an object; not indexed");
            return None;
        }
    };
    let expires = match field("expires") {
        None => task.expires,
        Some(e) => match e.as_str().and_then(parse_ms).or_else(|| e.as_i64()) {
            Some(e) => e,
            None => {
                tracing::warn!(task.id = %id, expires = %e, "extra.index.expires is not a date; not indexed");
                return None;
            }
        },
    };
    Some(Options {
        rank,
        expires,
        data,
    })
}

impl Index {
    /// Take up to `limit` items of the feed (oldest first; on PostgreSQL
    /// skipping those another pass holds).
    pub async fn take(&self, limit: i64) -> Result<FeedPass> {
        let mut tx = self.queue.db.begin().await?;
        let items = self.queue.take_feed(&mut tx, FEED, limit).await?;
        Ok(FeedPass {
            tx,
            items,
            entries: 0,
        })
    }

    /// One pass over a batch of the feed: take, apply, commit (run again when
    /// it loses a race on PostgreSQL). Returns (items taken, entries made).
    pub async fn consume_once(&self) -> Result<(usize, usize)> {
        self.queue
            .retrying(|| async {
                let mut pass = self.take(BATCH).await?;
                if pass.is_empty() {
                    return Ok((0, 0));
                }
                pass.apply(self).await?;
                let items = pass.len();
                Ok((items, pass.commit(self).await?))
            })
            .await
    }

    /// Consume the feed until `stop` turns true ([`bbb_queue::Queue::consume_feed`]):
    /// a pass whenever this process completed a task with an index route, and
    /// every resolver interval (for what other processes completed); after a
    /// pass that indexed something, `GATHER` for more.
    pub async fn run_feed(self, stop: watch::Receiver<bool>) {
        let spec = bbb_queue::feeds::FeedLoop {
            feed: FEED,
            batch: BATCH as usize,
            gather: GATHER,
            what: "indexing completed tasks",
        };
        self.queue
            .consume_feed(spec, stop, || async {
                self.consume_once().await.map(|(n, _)| n)
            })
            .await;
    }
}
