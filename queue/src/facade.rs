//! The one way in to the operations that may be batched — `createTask`
//! without dependencies, `claimWork` and the reports that resolve a run: each
//! chooses between the batch of its kind ([`crate::batch`], when
//! `commit_batch` is above 1) and a transaction of its own, and links its kind
//! of call to the operations that run it, in [`crate::ops`].
//!
//! The layers depend one way: [`crate::model`] (the calls' types) ←
//! [`crate::batch`] (waiting lists and leaders) ← [`crate::core`] (the queue
//! handle, transactions) ← [`crate::ops`] (operations as functions on a
//! transaction) ← this module.

use crate::batch::{BatchOp, Combiner, Fut, Outcome, submit};
use crate::core::Queue;
use crate::error::Result;
use crate::model::{ClaimCall, CreateCall, ResolveCall, RunResolution, TaskDef};
use serde_json::Value;

impl Queue {
    /// Whether calls are batched (`commit_batch` above 1).
    pub fn batching(&self) -> bool {
        self.cfg.commit_batch > 1
    }

    /// `createTask`: store the task (idempotently), track its dependencies and
    /// schedule it at once when nothing blocks it. Returns `{status}`.
    pub async fn create_task(&self, task_id: &str, def: &TaskDef) -> Result<Value> {
        if def.dependencies.is_empty() && self.batching() {
            return submit(
                self,
                CreateCall {
                    task_id: task_id.to_string(),
                    def: def.clone(),
                },
            )
            .await;
        }
        self.create_task_alone(task_id, def).await
    }

    /// Claim up to `count` pending runs of `task_queue_id`, highest priority first
    /// then oldest. Returns the claim objects (possibly none): the caller long-polls.
    pub async fn claim_pending(
        &self,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        count: i64,
    ) -> Result<Vec<Value>> {
        let call = ClaimCall {
            task_queue_id: task_queue_id.to_string(),
            worker_group: worker_group.to_string(),
            worker_id: worker_id.to_string(),
            count,
        };
        if self.batching() {
            return submit(self, call).await;
        }
        self.claim_pending_alone(&call).await
    }

    /// `reportCompleted` / `reportFailed` / `reportException`.
    pub async fn resolve_run(
        &self,
        task_id: &str,
        run_id: i64,
        how: RunResolution,
    ) -> Result<Value> {
        if self.batching() {
            return submit(
                self,
                ResolveCall {
                    task_id: task_id.to_string(),
                    run_id,
                    how,
                },
            )
            .await;
        }
        self.resolve_run_alone(task_id, run_id, how).await
    }
}

impl BatchOp for CreateCall {
    type Ctx = Queue;
    type Out = Value;

    fn combiner(q: &Queue) -> &Combiner<Self, Value> {
        &q.batches.create
    }

    fn max_batch(q: &Queue) -> usize {
        q.cfg.commit_batch
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Value>>>> {
        Box::pin(q.retrying(|| async {
            let mut t = q.batch_txn().await?;
            let out = q.create_batch(&mut t, calls).await?;
            q.commit(t).await?;
            Ok(out)
        }))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Value>> {
        Box::pin(q.create_task_alone(&self.task_id, &self.def))
    }
}

impl BatchOp for ClaimCall {
    type Ctx = Queue;
    type Out = Vec<Value>;

    fn combiner(q: &Queue) -> &Combiner<Self, Vec<Value>> {
        &q.batches.claim
    }

    fn max_batch(q: &Queue) -> usize {
        q.cfg.commit_batch
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Vec<Value>>>>> {
        Box::pin(q.retrying(|| async {
            let mut t = q.batch_txn().await?;
            let claims = q.claim_batch(&mut t, calls).await?;
            q.commit(t).await?;
            Ok(claims.into_iter().map(|c| Outcome::Done(Ok(c))).collect())
        }))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Vec<Value>>> {
        Box::pin(q.claim_pending_alone(self))
    }
}

impl BatchOp for ResolveCall {
    type Ctx = Queue;
    type Out = Value;

    fn combiner(q: &Queue) -> &Combiner<Self, Value> {
        &q.batches.resolve
    }

    fn max_batch(q: &Queue) -> usize {
        q.cfg.commit_batch
    }

    fn batch<'a>(q: &'a Queue, calls: &'a [Self]) -> Fut<'a, Result<Vec<Outcome<Value>>>> {
        Box::pin(q.retrying(|| async {
            let mut t = q.batch_txn().await?;
            let out = q.resolve_batch(&mut t, calls).await?;
            q.commit(t).await?;
            Ok(out)
        }))
    }

    fn alone<'a>(&'a self, q: &'a Queue) -> Fut<'a, Result<Value>> {
        Box::pin(q.resolve_run_alone(&self.task_id, self.run_id, self.how))
    }
}
