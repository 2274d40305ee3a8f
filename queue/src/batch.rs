//! Commit batching: concurrent `createTask`, `claimWork` and `report*` calls share
//! one transaction, written with one multi-row statement per table.
//!
//! Each call joins a waiting list for its kind. When fewer than [`LEADERS`]
//! batches of that kind are running, the call also starts a leader task, which
//! takes up to `commit_batch` waiting calls, runs them in one transaction and
//! answers each, then takes the next batch until none waits. Under load calls
//! pile up while a batch commits, so the next batch is bigger: the cost of a
//! commit and of each statement's round trip is shared. A lone call still runs
//! at once.
//!
//! Nothing changes for the caller: a call the batch cannot handle the common way
//! (a `taskId` already stored, a sealed group, the same task twice in one batch)
//! is answered by the one-call path after the batch commits, and if the batch's
//! transaction fails, every call in it runs alone, so one bad call never fails
//! its neighbours.

use crate::core::Queue;
use crate::db::{TASK_COLUMNS, placeholders, task_from_row};
use crate::error::{ApiError, Result};
use crate::model::{Task, TaskDef};
use crate::ops::claims::Resolution;
use crate::ops::tasks::{GROUP_EXPIRY_MARGIN_MS, GROUP_EXPIRY_SLACK_MS, new_task};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Batches of one kind that may run at once per process (each holds one
/// connection). One measured best on PostgreSQL: with more, batches get smaller
/// and contend on the same rows and index pages (64 workers: 1,640–1,680
/// lifecycles/s with one leader, 1,380–1,570 with two, 1,300 with three).
pub const LEADERS: usize = 1;

/// A boxed future (the batch operations are called through a trait).
type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One waiting call and where its answer goes.
pub struct Call<R: BatchOp> {
    req: R,
    reply: oneshot::Sender<Result<R::Out>>,
}

/// The waiting calls of one kind.
pub struct Combiner<R: BatchOp> {
    state: Mutex<Waiting<R>>,
}

struct Waiting<R: BatchOp> {
    calls: Vec<Call<R>>,
    leaders: usize,
}

impl<R: BatchOp> Default for Combiner<R> {
    fn default() -> Self {
        Combiner {
            state: Mutex::new(Waiting {
                calls: Vec::new(),
                leaders: 0,
            }),
        }
    }
}

impl<R: BatchOp> Combiner<R> {
    /// Add a call; true when the caller must start a leader.
    fn push(&self, call: Call<R>) -> bool {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        w.calls.push(call);
        if w.leaders < LEADERS {
            w.leaders += 1;
            true
        } else {
            false
        }
    }

    /// The next batch (oldest calls first), or `None` when nothing waits, in
    /// which case the asking leader stops.
    fn next(&self, max: usize) -> Option<Vec<Call<R>>> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.calls.is_empty() {
            w.leaders -= 1;
            return None;
        }
        let n = w.calls.len().min(max);
        Some(w.calls.drain(..n).collect())
    }
}

/// The waiting lists, one per batched operation.
#[derive(Default)]
pub struct Batches {
    create: Combiner<CreateCall>,
    claim: Combiner<ClaimCall>,
    resolve: Combiner<ResolveCall>,
}

/// What the batch decided for one call.
pub enum Outcome<T> {
    /// Answered within the batch.
    Done(Result<T>),
    /// To be run alone once the batch has committed.
    Alone,
}

/// An operation that can run batched.
pub trait BatchOp: Sized + Send + Sync + 'static {
    /// The answer of one call.
    type Out: Send + 'static;
    /// The waiting list of this operation.
    fn combiner(b: &Batches) -> &Combiner<Self>;
    /// Run `calls` in one transaction (committed when it returns `Ok`); one
    /// outcome per call, in order.
    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Self::Out>>>>;
    /// Run one call in a transaction of its own.
    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Self::Out>>;
}

impl Queue {
    /// Whether calls are batched (`commit_batch` above 1).
    pub fn batching(&self) -> bool {
        self.cfg.commit_batch > 1
    }

    /// Run `req` in the next batch of its kind and wait for its answer.
    pub async fn submit<R: BatchOp>(&self, req: R) -> Result<R::Out> {
        let (reply, answer) = oneshot::channel();
        if R::combiner(&self.batches).push(Call { req, reply }) {
            let q = self.clone();
            tokio::spawn(async move {
                use futures::FutureExt;
                let max = q.cfg.commit_batch.max(1);
                while let Some(calls) = R::combiner(&q.batches).next(max) {
                    // A panic fails only its own batch's calls (their answers are
                    // dropped); the leader goes on with the next batch.
                    let run = std::panic::AssertUnwindSafe(q.run_batch(calls));
                    if run.catch_unwind().await.is_err() {
                        tracing::error!("a batched transaction panicked; its calls failed");
                    }
                }
            });
        }
        answer
            .await
            .map_err(|_| ApiError::Internal("a batched call was dropped unanswered".into()))?
    }

    async fn run_batch<R: BatchOp>(&self, calls: Vec<Call<R>>) {
        let (reqs, replies): (Vec<R>, Vec<_>) = calls.into_iter().map(|c| (c.req, c.reply)).unzip();
        let outcomes = match self.retrying(|| R::batch(self, &reqs)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, calls = reqs.len(), "batched transaction failed; running its calls one by one");
                reqs.iter().map(|_| Outcome::Alone).collect()
            }
        };
        for ((req, reply), outcome) in reqs.iter().zip(replies).zip(outcomes) {
            let answer = match outcome {
                Outcome::Done(r) => r,
                Outcome::Alone => req.alone(self).await,
            };
            let _ = reply.send(answer);
        }
    }

    /// Load and lock (PostgreSQL) the tasks `ids`, in id order so concurrent
    /// batches lock rows in the same order.
    pub(crate) async fn load_tasks_for_update(
        &self,
        t: &mut crate::core::Txn,
        ids: &[&str],
    ) -> Result<HashMap<String, Task>> {
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = HashMap::with_capacity(sorted.len());
        for chunk in sorted.chunks(500) {
            let chunk = crate::db::padded(chunk);
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE task_id IN ({}) ORDER BY task_id{}",
                placeholders(1, chunk.len()),
                self.db.for_update()
            );
            let mut q = sqlx::query(&sql);
            for id in &chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *t.tx).await? {
                let task = task_from_row(&row)?;
                out.insert(task.task_id.clone(), task);
            }
        }
        Ok(out)
    }
}

/// A `createTask` call without dependencies.
pub struct CreateCall {
    /// The new task's id.
    pub task_id: String,
    /// Its validated definition.
    pub def: TaskDef,
}

impl BatchOp for CreateCall {
    type Out = Value;

    fn combiner(b: &Batches) -> &Combiner<Self> {
        &b.create
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Value>>>> {
        Box::pin(create_batch(q, calls))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Value>> {
        Box::pin(q.create_task_alone(&self.task_id, &self.def))
    }
}

/// New tasks without dependencies: their groups checked (or created) together,
/// the tasks inserted in one statement, their runs made pending.
async fn create_batch(q: &Queue, calls: &[CreateCall]) -> Result<Vec<Outcome<Value>>> {
    let now = q.clock.now_ms();
    let mut t = q.batch_txn().await?;
    let mut out: Vec<Outcome<Value>> = calls.iter().map(|_| Outcome::Alone).collect();

    // The groups as stored: (schedulerId, sealed, expires).
    let group_ids: Vec<&str> = {
        let mut g: Vec<&str> = calls.iter().map(|c| c.def.task_group_id.as_str()).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    let mut groups: HashMap<String, (String, bool, i64)> = HashMap::new();
    for chunk in group_ids.chunks(500) {
        let chunk = crate::db::padded(chunk);
        let sql = format!(
            "SELECT task_group_id, scheduler_id, sealed, expires FROM task_groups WHERE task_group_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for g in &chunk {
            query = query.bind(*g);
        }
        for row in query.fetch_all(&mut *t.tx).await? {
            groups.insert(
                row.try_get("task_group_id")?,
                (
                    row.try_get("scheduler_id")?,
                    row.try_get::<Option<i64>, _>("sealed")?.is_some(),
                    row.try_get("expires")?,
                ),
            );
        }
    }

    // Which calls the batch takes: new groups get created, groups about to expire
    // pushed further; anything unusual is answered alone.
    let mut seen = HashSet::new();
    let mut new_groups: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    let mut longer: BTreeMap<&str, i64> = BTreeMap::new();
    let mut taken: Vec<(usize, Task)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        if !seen.insert(c.task_id.as_str()) {
            continue;
        }
        let task = new_task(&c.task_id, &c.def, true, now);
        let gid = c.def.task_group_id.as_str();
        let needed = task.expires + GROUP_EXPIRY_MARGIN_MS;
        match groups.get(gid) {
            Some((sid, sealed, _)) if *sid != c.def.scheduler_id || *sealed => continue,
            Some((_, _, expires)) => {
                if *expires < needed {
                    let e = longer.entry(gid).or_insert(needed);
                    *e = (*e).max(needed);
                }
            }
            None => {
                let e = new_groups
                    .entry(gid)
                    .or_insert((c.def.scheduler_id.as_str(), needed));
                if e.0 != c.def.scheduler_id {
                    continue;
                }
                e.1 = e.1.max(needed);
            }
        }
        taken.push((i, task));
    }
    let new_groups: Vec<(&str, (&str, i64))> = new_groups.into_iter().collect();
    for chunk in new_groups.chunks(200) {
        let sql = format!(
            "INSERT INTO task_groups (task_group_id, scheduler_id, expires) VALUES {} ON CONFLICT DO NOTHING",
            (0..chunk.len())
                .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (gid, (sid, needed)) in chunk {
            query = query
                .bind(*gid)
                .bind(*sid)
                .bind(needed + GROUP_EXPIRY_SLACK_MS);
        }
        query.execute(&mut *t.tx).await?;
    }
    // A group created meanwhile by another transaction may have another
    // schedulerId: its calls go the one-call way, which answers 409.
    let mut lost: HashSet<&str> = HashSet::new();
    for (gid, (sid, _)) in &new_groups {
        if q.group_scheduler_id(&mut t, gid).await? != *sid {
            lost.insert(gid);
        }
    }
    if !lost.is_empty() {
        taken.retain(|(_, task)| !lost.contains(task.def.task_group_id.as_str()));
    }
    for (gid, needed) in longer {
        sqlx::query(
            "UPDATE task_groups SET expires = $3 WHERE task_group_id = $1 AND expires < $2",
        )
        .bind(gid)
        .bind(needed)
        .bind(needed + GROUP_EXPIRY_SLACK_MS)
        .execute(&mut *t.tx)
        .await?;
    }

    let rows: Vec<(&Task, i64)> = taken.iter().map(|(_, task)| (task, 0)).collect();
    let inserted = q.insert_tasks(&mut t, &rows).await?;
    let mut queues_touched = HashSet::new();
    for (i, task) in &taken {
        if !inserted.contains(&task.task_id) {
            // Stored already: the one-call path compares the definitions.
            continue;
        }
        if queues_touched.insert(task.def.task_queue_id.as_str()) {
            q.touch_task_queue(&mut t, &task.def.task_queue_id, now)
                .await?;
        }
        q.emit(&mut t, q.events.task_defined(task)).await?;
        q.enqueue_pending(&mut t, task).await?;
        q.emit(&mut t, q.events.task_pending(task, 0)).await?;
        out[*i] = Outcome::Done(Ok(json!({"status": task.status()})));
    }
    q.commit(t).await?;
    Ok(out)
}

/// `calls` in a transaction of their own, for the one-call path.
pub(crate) async fn claim_alone(q: &Queue, calls: &[ClaimCall]) -> Result<Vec<Value>> {
    let mut out = claim_batch(q, calls).await?;
    match out.pop() {
        Some(Outcome::Done(r)) => r,
        _ => Err(ApiError::Internal("a claim got no answer".into())),
    }
}

/// A `claimWork` attempt (one pass; the handler long-polls around it).
pub struct ClaimCall {
    /// The task queue.
    pub task_queue_id: String,
    /// The worker's group.
    pub worker_group: String,
    /// The worker's id.
    pub worker_id: String,
    /// Most runs to claim.
    pub count: i64,
}

impl BatchOp for ClaimCall {
    type Out = Vec<Value>;

    fn combiner(b: &Batches) -> &Combiner<Self> {
        &b.claim
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Vec<Value>>>>> {
        Box::pin(claim_batch(q, calls))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Vec<Value>>> {
        Box::pin(q.claim_pending_alone(
            &self.task_queue_id,
            &self.worker_group,
            &self.worker_id,
            self.count,
        ))
    }
}

/// Claims for several workers: per task queue one statement takes as many pending
/// runs as the calls want together (highest priority, then oldest), handed out to
/// the calls in the order they came.
async fn claim_batch(q: &Queue, calls: &[ClaimCall]) -> Result<Vec<Outcome<Vec<Value>>>> {
    let now = q.clock.now_ms();
    let mut t = q.batch_txn().await?;
    let mut by_queue: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in calls.iter().enumerate() {
        by_queue
            .entry(c.task_queue_id.as_str())
            .or_default()
            .push(i);
    }
    let pg = q.db.backend == crate::db::Backend::Postgres;
    let mut picked: BTreeMap<&str, Vec<(String, i64)>> = BTreeMap::new();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for (tq, idx) in &by_queue {
        let want: i64 = idx.iter().map(|i| calls[*i].count).sum();
        let take = format!(
            "DELETE FROM pending WHERE (task_id, run_id) IN (SELECT task_id, run_id FROM pending \
             WHERE task_queue_id = $1 AND deadline > $2 ORDER BY priority DESC, inserted, task_id \
             LIMIT $3{}) RETURNING task_id, run_id, priority, inserted",
            q.db.skip_locked()
        );
        // PostgreSQL takes the runs and locks their tasks in one statement.
        let sql = if pg {
            let columns: Vec<String> = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect();
            format!(
                "WITH p AS ({take}) SELECT p.run_id, p.priority AS pending_priority, p.inserted, {} \
                 FROM p JOIN tasks t ON t.task_id = p.task_id ORDER BY t.task_id FOR UPDATE OF t",
                columns.join(", ")
            )
        } else {
            take
        };
        let rows = sqlx::query(&sql)
            .bind(*tq)
            .bind(now)
            .bind(want)
            .fetch_all(&mut *t.tx)
            .await?;
        let priority = if pg { "pending_priority" } else { "priority" };
        let mut runs: Vec<(i64, i64, String, i64)> = Vec::with_capacity(rows.len());
        for r in &rows {
            runs.push((
                -r.try_get::<i64, _>(priority)?,
                r.try_get("inserted")?,
                r.try_get("task_id")?,
                r.try_get("run_id")?,
            ));
            if pg {
                let task = task_from_row(r)?;
                tasks.insert(task.task_id.clone(), task);
            }
        }
        runs.sort();
        picked.insert(
            tq,
            runs.into_iter().map(|(_, _, id, run)| (id, run)).collect(),
        );
    }
    if !pg {
        let ids: Vec<&str> = picked
            .values()
            .flatten()
            .map(|(id, _)| id.as_str())
            .collect();
        tasks = q.load_tasks_for_update(&mut t, &ids).await?;
    }

    let mut claims: Vec<Vec<Value>> = calls.iter().map(|_| Vec::new()).collect();
    for (tq, idx) in &by_queue {
        let mut runs = picked.remove(tq).unwrap_or_default().into_iter();
        for i in idx {
            let c = &calls[*i];
            while (claims[*i].len() as i64) < c.count {
                let Some((task_id, run_id)) = runs.next() else {
                    break;
                };
                let Some(task) = tasks.get_mut(&task_id) else {
                    continue;
                };
                let is_current = task
                    .last_run()
                    .is_some_and(|r| r.run_id == run_id && r.state == "pending");
                if !is_current {
                    continue;
                }
                let claim = q
                    .start_run(&mut t, task, &c.worker_group, &c.worker_id, now)
                    .await?;
                claims[*i].push(claim);
            }
        }
    }
    for (c, got) in calls.iter().zip(&claims) {
        let runs: Vec<(String, i64)> = got
            .iter()
            .filter_map(|c| {
                Some((
                    c["status"]["taskId"].as_str()?.to_string(),
                    c["runId"].as_i64()?,
                ))
            })
            .collect();
        q.touch_worker(
            &mut t,
            &c.task_queue_id,
            &c.worker_group,
            &c.worker_id,
            &runs,
            now,
        )
        .await?;
    }
    q.commit(t).await?;
    Ok(claims.into_iter().map(|c| Outcome::Done(Ok(c))).collect())
}

/// A `reportCompleted`, `reportFailed` or `reportException` call.
pub struct ResolveCall {
    /// The task.
    pub task_id: String,
    /// The run.
    pub run_id: i64,
    /// How the run resolves.
    pub how: Resolution<'static>,
}

impl BatchOp for ResolveCall {
    type Out = Value;

    fn combiner(b: &Batches) -> &Combiner<Self> {
        &b.resolve
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Value>>>> {
        Box::pin(resolve_batch(q, calls))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Value>> {
        Box::pin(q.resolve_run_alone(&self.task_id, self.run_id, self.how))
    }
}

/// Resolutions of runs of different tasks, their tasks loaded and locked together.
async fn resolve_batch(q: &Queue, calls: &[ResolveCall]) -> Result<Vec<Outcome<Value>>> {
    let now = q.clock.now_ms();
    let mut t = q.batch_txn().await?;
    let ids: Vec<&str> = calls.iter().map(|c| c.task_id.as_str()).collect();
    let mut tasks = q.load_tasks_for_update(&mut t, &ids).await?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        if !seen.insert(c.task_id.as_str()) {
            out.push(Outcome::Alone);
            continue;
        }
        let Some(task) = tasks.get_mut(&c.task_id) else {
            out.push(Outcome::Done(Err(ApiError::NotFound(format!(
                "Task {} not found",
                c.task_id
            )))));
            continue;
        };
        // Refusals (404, 409) come before any change, so they stay with their call.
        match q.apply_resolution(&mut t, task, c.run_id, c.how, now).await {
            Err(e @ (ApiError::NotFound(_) | ApiError::Conflict(_))) => {
                out.push(Outcome::Done(Err(e)))
            }
            r => out.push(Outcome::Done(Ok(r?))),
        }
    }
    q.commit(t).await?;
    Ok(out)
}
