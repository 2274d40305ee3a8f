//! The queue core: shared state and the transaction wrapper every operation uses.
//! Each operation commits its state change together with the Pulse messages it
//! causes (the outbox) and the work it hands to background resolvers.

use crate::config::QueueConfig;
use crate::db::{Db, TASK_COLUMNS, padded, placeholders, task_from_row};
use crate::error::{ApiError, Result};
use crate::events::Events;
use crate::model::Task;
use crate::time::Clock;
use bbb_pulse::Message;
use sqlx::{Any, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Wakes waiters: claimWork long polls per task queue, and the background loops.
#[derive(Debug)]
pub struct Signals {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    /// New outbox rows.
    pub outbox: Notify,
    /// New resolutions for the dependency resolver.
    pub resolutions: Notify,
    throttle: Mutex<HashMap<String, i64>>,
    /// This process's id in `NOTIFY` payloads, to skip its own notifications.
    pub instance: String,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            queues: Mutex::default(),
            outbox: Notify::new(),
            resolutions: Notify::new(),
            throttle: Mutex::default(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl Signals {
    /// The notifier for one task queue.
    pub fn queue(&self, task_queue_id: &str) -> Arc<Notify> {
        let mut m = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(task_queue_id.to_string()).or_default().clone()
    }

    /// Whether a throttled write keyed `key` is due: none committed by this
    /// process in the last minute ([`Signals::done`]).
    pub fn due(&self, key: &str, now: i64) -> bool {
        let m = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        !matches!(m.get(key), Some(last) if now - last < 60_000)
    }

    /// Record that the throttled write keyed `key` was committed at `now`.
    pub fn done(&self, key: &str, now: i64) {
        let mut m = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        let last = m.entry(key.to_string()).or_insert(now);
        *last = (*last).max(now);
    }

    /// Wake claimWork calls waiting on `task_queue_id` for `new_runs` newly pending
    /// runs: one waiter for one run (no thundering herd), every waiter for more.
    pub fn wake_queue(&self, task_queue_id: &str, new_runs: usize) {
        let n = {
            let m = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            m.get(task_queue_id).cloned()
        };
        if let Some(n) = n {
            if new_runs == 1 {
                n.notify_one();
            } else {
                n.notify_waiters();
            }
        }
    }
}

/// The queue service: database, clock, configuration and signals.
#[derive(Clone)]
pub struct Queue {
    /// The store.
    pub db: Db,
    /// The clock every decision reads.
    pub clock: Clock,
    /// The configuration.
    pub cfg: Arc<QueueConfig>,
    /// Wake-ups.
    pub signals: Arc<Signals>,
    /// Pulse message builder.
    pub events: Events,
    /// Client id and access token the queue issues task credentials with.
    pub issuer: Arc<(String, String)>,
    /// Calls waiting to be committed together.
    pub batches: Arc<crate::batch::Batches>,
    /// The feeds its commits write ([`crate::feeds`]).
    pub feeds: Arc<crate::feeds::Feeds>,
}

/// A transaction plus the side effects to announce once it commits.
pub struct Txn {
    /// The open transaction.
    pub tx: Transaction<'static, Any>,
    woke: BTreeMap<String, usize>,
    outbox: Vec<Message>,
    resolved: bool,
    deferred: Option<crate::writes::Writes>,
    throttled: Vec<(String, i64)>,
}

impl Txn {
    /// The writes held back to the commit, in a batched transaction.
    pub(crate) fn deferred_writes(&mut self) -> Option<&mut crate::writes::Writes> {
        self.deferred.as_mut()
    }
}

impl Queue {
    /// Begin an operation.
    pub async fn txn(&self) -> Result<Txn> {
        Ok(Txn {
            tx: self.db.begin().await?,
            woke: BTreeMap::new(),
            outbox: Vec::new(),
            resolved: false,
            deferred: None,
            throttled: Vec::new(),
        })
    }

    /// Begin a batched operation: task saves, `pending` changes and resolutions
    /// are held back and written at commit, one multi-row statement per kind.
    /// The operation must load everything it needs before it changes anything
    /// (what it saved is not visible to its own queries until commit).
    pub async fn batch_txn(&self) -> Result<Txn> {
        let mut t = self.txn().await?;
        t.deferred = Some(crate::writes::Writes::default());
        Ok(t)
    }

    /// Commit and announce: wake claims on queues that got pending work, the outbox
    /// relay and the dependency resolver.
    pub async fn commit(&self, mut t: Txn) -> Result<()> {
        let messages = std::mem::take(&mut t.outbox);
        let wrote_outbox = !messages.is_empty();
        let feed = self.feeds.matching(&messages);
        crate::writes::write(
            &mut t.tx,
            self.db.backend,
            t.deferred.take(),
            &messages,
            &feed,
            &t.woke,
            &self.signals.instance,
        )
        .await?;
        t.tx.commit().await?;
        self.feeds.wake(feed.iter().map(|(f, _)| f.as_str()));
        for (key, now) in &t.throttled {
            self.signals.done(key, *now);
        }
        for (q, n) in &t.woke {
            self.signals.wake_queue(q, *n);
        }
        if wrote_outbox {
            self.signals.outbox.notify_one();
        }
        if t.resolved {
            self.signals.resolutions.notify_one();
        }
        Ok(())
    }

    /// Whether `t` should make the throttled write keyed `key` (at most once a
    /// minute per key and process, and once per transaction). It counts as made
    /// only once `t` commits: a transaction that fails or is retried leaves it due.
    pub fn throttled(&self, t: &mut Txn, key: String, now: i64) -> bool {
        if !self.signals.due(&key, now) || t.throttled.iter().any(|(k, _)| *k == key) {
            return false;
        }
        t.throttled.push((key, now));
        true
    }

    /// Claim timeout in milliseconds.
    pub fn claim_timeout_ms(&self) -> i64 {
        self.cfg.claim_timeout_s as i64 * 1000
    }

    /// Load a task, locking its row (PostgreSQL) for the rest of the transaction.
    pub async fn load_task_for_update(&self, t: &mut Txn, task_id: &str) -> Result<Option<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1{}",
            self.db.for_update()
        );
        let row = sqlx::query(&sql)
            .bind(task_id)
            .fetch_optional(&mut *t.tx)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Load and lock (PostgreSQL) the tasks `ids`, in id order so concurrent
    /// batches lock rows in the same order.
    pub(crate) async fn load_tasks_for_update(
        &self,
        t: &mut Txn,
        ids: &[&str],
    ) -> Result<HashMap<String, Task>> {
        self.load_tasks_in(&mut t.tx, ids, true).await
    }

    /// Load the tasks `ids` within `tx`, locking them (PostgreSQL) when `lock`,
    /// in id order.
    pub async fn load_tasks_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: &[&str],
        lock: bool,
    ) -> Result<HashMap<String, Task>> {
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = HashMap::with_capacity(sorted.len());
        for chunk in sorted.chunks(500) {
            let chunk = padded(chunk);
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({}) ORDER BY task_id{}",
                placeholders(1, chunk.len()),
                if lock { self.db.for_update() } else { "" }
            );
            let mut q = sqlx::query(&sql);
            for id in &chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut **tx).await? {
                let task = task_from_row(&row)?;
                out.insert(task.task_id.clone(), task);
            }
        }
        Ok(out)
    }

    /// Load a task without locking.
    pub async fn load_task(&self, task_id: &str) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1");
        let row = sqlx::query(&sql)
            .bind(task_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Load a task or fail with 404.
    pub async fn task_or_404(&self, task_id: &str) -> Result<Task> {
        self.load_task(task_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("Task {task_id} not found")))
    }

    /// Write a task's mutable state back.
    pub async fn save_task(&self, t: &mut Txn, task: &Task) -> Result<()> {
        if let Some(w) = &mut t.deferred {
            w.saves.insert(task.task_id.clone(), task.clone());
            return Ok(());
        }
        let crate::writes::SavedState { state, open, runs } = crate::writes::SavedState::of(task)?;
        sqlx::query(
            "UPDATE tasks SET state = $2, open = $3, taken_until = $4, retries_left = $5, \
             runs = $6, ever_resolved = $7 WHERE task_id = $1",
        )
        .bind(&task.task_id)
        .bind(state)
        .bind(open)
        .bind(task.taken_until)
        .bind(task.retries_left)
        .bind(runs)
        .bind(task.ever_resolved as i64)
        .execute(&mut *t.tx)
        .await?;
        Ok(())
    }

    /// Queue a Pulse message in the outbox of this transaction (written, in one
    /// statement with the others, when the transaction commits).
    pub async fn emit(&self, t: &mut Txn, m: Message) -> Result<()> {
        t.outbox.push(m);
        Ok(())
    }

    /// Add a pending row for the task's last run, so claimWork finds it.
    pub async fn enqueue_pending(&self, t: &mut Txn, task: &Task) -> Result<()> {
        self.enqueue_row(t, crate::writes::PendingRow::of(task)?)
            .await
    }

    /// Add the pending row `row` (written at commit in a batched transaction).
    pub(crate) async fn enqueue_row(
        &self,
        t: &mut Txn,
        row: crate::writes::PendingRow,
    ) -> Result<()> {
        *t.woke.entry(row.task_queue_id.clone()).or_default() += 1;
        if let Some(w) = &mut t.deferred {
            w.enqueued.push(row);
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO pending (task_id, run_id, task_queue_id, priority, inserted, deadline, \
             coalesce_key, created, supersedes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT DO NOTHING",
        )
        .bind(row.task_id)
        .bind(row.run_id)
        .bind(row.task_queue_id)
        .bind(row.priority)
        .bind(row.inserted)
        .bind(row.deadline)
        .bind(row.coalesce_key)
        .bind(row.created)
        .bind(row.supersedes)
        .execute(&mut *t.tx)
        .await?;
        Ok(())
    }

    /// Remove a run's pending row (it was cancelled or resolved by a resolver).
    pub async fn dequeue_pending(&self, t: &mut Txn, task_id: &str, run_id: i64) -> Result<()> {
        if let Some(w) = &mut t.deferred {
            w.dequeued.push((task_id.to_string(), run_id));
            return Ok(());
        }
        sqlx::query("DELETE FROM pending WHERE task_id = $1 AND run_id = $2")
            .bind(task_id)
            .bind(run_id)
            .execute(&mut *t.tx)
            .await?;
        Ok(())
    }

    /// Record that a task resolved (no retry follows): marks it ever-resolved and hands
    /// the resolution to the dependency resolver, which unblocks dependents and checks
    /// whether its task group is resolved.
    pub async fn record_resolution(&self, t: &mut Txn, task: &mut Task) -> Result<()> {
        task.ever_resolved = true;
        let resolution = task.state();
        t.resolved = true;
        if let Some(w) = &mut t.deferred {
            w.resolutions.push((
                task.task_id.clone(),
                task.def.task_group_id.clone(),
                resolution,
            ));
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO resolutions (task_id, task_group_id, resolution) VALUES ($1, $2, $3)",
        )
        .bind(&task.task_id)
        .bind(&task.def.task_group_id)
        .bind(resolution.as_str())
        .execute(&mut *t.tx)
        .await?;
        Ok(())
    }

    /// Run an operation again when the database reports a deadlock or
    /// serialization failure (PostgreSQL under concurrency), up to a few times.
    pub async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_retryable_db() && attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                r => return r,
            }
        }
    }
}
