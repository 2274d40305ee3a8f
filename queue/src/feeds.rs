//! Feeds: durable subscriptions of the services served beside the queue to
//! some of the queue's messages, kept in the queue's own database.
//!
//! A service binds a feed to an exchange and a route prefix
//! ([`Queue::bind_feed`]; the index binds `task-completed` messages with a
//! route `index.…`, as upstream's index binds its Pulse queue to
//! `route.index.#`), or to every message of an exchange
//! ([`Queue::bind_feed_all`]; the migration record takes every resolved task).
//! From then on, a transaction of this process that emits a
//! matching message also writes a copy of it into the table `feed`, at commit,
//! beside its outbox rows: an item exists exactly when the change that caused it
//! was committed, and one change makes one item.
//!
//! The service takes items in a transaction of its own ([`Queue::take_feed`]:
//! oldest first, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes
//! share the work without taking the same item), acts on them in that
//! transaction and deletes them there ([`Queue::delete_feed`]). An item is thus
//! handled once; one whose handling did not commit (an error, a process that
//! stopped) stays and is taken again.

use crate::core::Queue;
use crate::db::{padded, placeholders};
use crate::error::Result;
use bbb_pulse::Message;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// What one feed receives: the messages of one exchange, all of them or those
/// with a route that starts with a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedBinding {
    /// The feed's name (its consumer's: `index`).
    pub feed: String,
    /// The exchange's full name (`exchange/taskcluster-queue/v1/task-completed`).
    pub exchange: String,
    /// A message matches when one of its task's routes starts with this
    /// (`index.`); `None`: every message of the exchange matches.
    pub route_prefix: Option<String>,
}

impl FeedBinding {
    /// Whether `m` goes to this feed.
    pub fn matches(&self, m: &Message) -> bool {
        m.exchange == self.exchange
            && self.route_prefix.as_ref().is_none_or(|prefix| {
                m.cc.iter().any(|cc| {
                    cc.strip_prefix("route.")
                        .is_some_and(|r| r.starts_with(prefix))
                })
            })
    }
}

/// One message of a feed, as taken by [`Queue::take_feed`].
#[derive(Clone, Debug)]
pub struct FeedItem {
    /// Its id: give it to [`Queue::delete_feed`] once handled.
    pub id: i64,
    /// The message, as published on the bus.
    pub message: Message,
}

/// The feeds this process writes, and the signals that wake their consumers.
#[derive(Debug, Default)]
pub struct Feeds {
    bindings: RwLock<Vec<FeedBinding>>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Feeds {
    /// `(feed, message)` for each feed each message goes to.
    pub(crate) fn matching<'m>(&self, messages: &'m [Message]) -> Vec<(String, &'m Message)> {
        let bindings = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        if bindings.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for m in messages {
            for b in bindings.iter().filter(|b| b.matches(m)) {
                out.push((b.feed.clone(), m));
            }
        }
        out
    }

    /// The signal that wakes the consumers of `feed` in this process when a
    /// commit of this process wrote items to it.
    pub fn signal(&self, feed: &str) -> Arc<Notify> {
        let mut m = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(feed.to_string()).or_default().clone()
    }

    /// Wake the consumers of `feeds`.
    pub(crate) fn wake<'a>(&self, feeds: impl IntoIterator<Item = &'a str>) {
        for f in feeds {
            self.signal(f).notify_one();
        }
    }
}

/// How a service consumes its feed with [`Queue::consume_feed`].
#[derive(Clone, Copy, Debug)]
pub struct FeedLoop<'a> {
    /// The feed.
    pub feed: &'a str,
    /// The most items one pass takes: a full pass runs again at once.
    pub batch: usize,
    /// After a pass that took items (but not a full batch), how long to wait
    /// for more before the next pass, so that items written by commits close
    /// together are handled in one transaction; zero waits for the next
    /// signal instead.
    pub gather: std::time::Duration,
    /// What a pass does, for the warning when it fails (`indexing completed
    /// tasks`).
    pub what: &'a str,
}

/// A message stored as the outbox and the feeds store it (the columns
/// `exchange`, `routing_key`, `cc`, `payload`).
pub(crate) fn message_from_row(row: &AnyRow) -> Result<Message> {
    Ok(Message {
        exchange: row.try_get("exchange")?,
        routing_key: row.try_get("routing_key")?,
        cc: serde_json::from_str(&row.try_get::<String, _>("cc")?)?,
        payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
    })
}

impl Queue {
    /// Consumes a feed until `stop` turns true: `pass` takes and handles at
    /// most `spec.batch` items in one transaction and says how many it took.
    /// A pass runs whenever a commit of this process wrote items to the feed,
    /// and every resolver interval (for the items of other processes); a full
    /// batch runs again at once; a failed pass is logged and tried again
    /// after a backoff (doubling from 100 ms to 10 s).
    pub async fn consume_feed<F, Fut, E>(
        &self,
        spec: FeedLoop<'_>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut pass: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<usize, E>>,
        E: std::fmt::Display,
    {
        use std::time::Duration;
        let signal = self.feeds.signal(spec.feed);
        let idle = Duration::from_millis(self.cfg.resolver_interval_ms.max(10));
        let mut backoff = Duration::from_millis(100);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match pass().await {
                Ok(n) if n >= spec.batch => continue,
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n > 0 && !spec.gather.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(spec.gather) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(feed = spec.feed, error = %e, "{} failed; retrying", spec.what);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Subscribe the feed `feed` to the messages of the exchange `exchange`
    /// (the name after the queue's prefix: `task-completed`) with a route
    /// starting with `route_prefix`. Binding the same feed twice changes nothing.
    /// The binding holds for this process: every process that commits such
    /// messages must bind it (a service does when it is mounted, before the
    /// queue serves requests).
    pub fn bind_feed(&self, feed: &str, exchange: &str, route_prefix: &str) {
        self.add_binding(feed, exchange, Some(route_prefix.to_string()));
    }

    /// Subscribe the feed `feed` to every message of the exchange `exchange`
    /// (the name after the queue's prefix), whatever its routes; otherwise as
    /// [`Queue::bind_feed`].
    pub fn bind_feed_all(&self, feed: &str, exchange: &str) {
        self.add_binding(feed, exchange, None);
    }

    fn add_binding(&self, feed: &str, exchange: &str, route_prefix: Option<String>) {
        let binding = FeedBinding {
            feed: feed.to_string(),
            exchange: self.events.exchange(exchange),
            route_prefix,
        };
        let mut bindings = self
            .feeds
            .bindings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !bindings.contains(&binding) {
            bindings.push(binding);
        }
    }

    /// Take up to `limit` items of `feed`, oldest first, locking them for the
    /// rest of `tx` (and skipping those another transaction holds) on PostgreSQL.
    pub async fn take_feed(
        &self,
        tx: &mut Transaction<'static, Any>,
        feed: &str,
        limit: i64,
    ) -> Result<Vec<FeedItem>> {
        let sql = format!(
            "SELECT id, exchange, routing_key, cc, payload FROM feed WHERE feed = $1 \
             ORDER BY id LIMIT $2{}",
            self.db.skip_locked()
        );
        let rows = sqlx::query(&sql)
            .bind(feed)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedItem {
                    id: r.try_get("id")?,
                    message: message_from_row(r)?,
                })
            })
            .collect()
    }

    /// Delete handled items, within the transaction that handled them.
    pub async fn delete_feed(&self, tx: &mut Transaction<'static, Any>, ids: &[i64]) -> Result<()> {
        for chunk in ids.chunks(500) {
            let chunk = padded(chunk);
            let sql = format!(
                "DELETE FROM feed WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in &chunk {
                q = q.bind(*id);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// How many items `feed` holds.
    pub async fn feed_len(&self, feed: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM feed WHERE feed = $1")
            .bind(feed)
            .fetch_one(&self.db.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
