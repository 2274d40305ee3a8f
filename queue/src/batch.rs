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
//!
//! This module is the machinery only: the waiting lists and their leaders,
//! for any [`BatchOp`]. It knows neither the queue nor its operations: the
//! operations (one transaction for many calls, or for one) are in `ops`, and
//! `facade` links each kind of call to them and chooses batched or
//! single-call.

use crate::error::{ApiError, Result};
use crate::model::{ClaimCall, CreateCall, ResolveCall};
use serde_json::Value;
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
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One waiting call and where its answer goes.
pub struct Call<Req, Out> {
    req: Req,
    reply: oneshot::Sender<Result<Out>>,
}

/// The waiting calls of one kind.
pub struct Combiner<Req, Out> {
    state: Mutex<Waiting<Req, Out>>,
}

struct Waiting<Req, Out> {
    calls: Vec<Call<Req, Out>>,
    leaders: usize,
}

impl<Req, Out> Default for Combiner<Req, Out> {
    fn default() -> Self {
        Combiner {
            state: Mutex::new(Waiting {
                calls: Vec::new(),
                leaders: 0,
            }),
        }
    }
}

impl<Req, Out> Combiner<Req, Out> {
    /// Add a call; true when the caller must start a leader.
    fn push(&self, call: Call<Req, Out>) -> bool {
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
    fn next(&self, max: usize) -> Option<Vec<Call<Req, Out>>> {
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
    /// `createTask` without dependencies.
    pub create: Combiner<CreateCall, Value>,
    /// `claimWork`.
    pub claim: Combiner<ClaimCall, Vec<Value>>,
    /// `reportCompleted`, `reportFailed`, `reportException`.
    pub resolve: Combiner<ResolveCall, Value>,
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
    /// What the operation runs on (the queue).
    type Ctx: Clone + Send + Sync + 'static;
    /// The answer of one call.
    type Out: Send + 'static;
    /// The waiting list of this operation.
    fn combiner(ctx: &Self::Ctx) -> &Combiner<Self, Self::Out>;
    /// Most calls in one batch.
    fn max_batch(ctx: &Self::Ctx) -> usize;
    /// Run `calls` in one transaction (committed when it returns `Ok`, run
    /// again when it lost a race); one outcome per call, in order.
    fn batch<'a>(ctx: &'a Self::Ctx, calls: &'a [Self])
    -> Fut<'a, Result<Vec<Outcome<Self::Out>>>>;
    /// Run one call in a transaction of its own.
    fn alone<'a>(&'a self, ctx: &'a Self::Ctx) -> Fut<'a, Result<Self::Out>>;
}

/// Run `req` in the next batch of its kind and wait for its answer.
pub async fn submit<R: BatchOp>(ctx: &R::Ctx, req: R) -> Result<R::Out> {
    let (reply, answer) = oneshot::channel();
    if R::combiner(ctx).push(Call { req, reply }) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            use futures::FutureExt;
            let max = R::max_batch(&ctx).max(1);
            while let Some(calls) = R::combiner(&ctx).next(max) {
                // A panic fails only its own batch's calls (their answers are
                // dropped); the leader goes on with the next batch.
                let run = std::panic::AssertUnwindSafe(run_batch::<R>(&ctx, calls));
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

async fn run_batch<R: BatchOp>(ctx: &R::Ctx, calls: Vec<Call<R, R::Out>>) {
    let (reqs, replies): (Vec<R>, Vec<_>) = calls.into_iter().map(|c| (c.req, c.reply)).unzip();
    let outcomes = match R::batch(ctx, &reqs).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, calls = reqs.len(), "batched transaction failed; running its calls one by one");
            reqs.iter().map(|_| Outcome::Alone).collect()
        }
    };
    for ((req, reply), outcome) in reqs.iter().zip(replies).zip(outcomes) {
        let answer = match outcome {
            Outcome::Done(r) => r,
            Outcome::Alone => req.alone(ctx).await,
        };
        let _ = reply.send(answer);
    }
}
