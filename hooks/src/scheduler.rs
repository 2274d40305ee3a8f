//! Scheduled hooks: each hook's next slot fires once, however many processes
//! run the scheduler on one database.
//!
//! A hook row holds its next slot: the date and the taskId that slot's task
//! gets, decided in advance. A scheduler that finds a slot due takes it with
//! a conditional update (a lease: nobody else fires it meanwhile), renders
//! the template with `now` = the slot's date (so every attempt renders the
//! same task), creates the task, and in one transaction records the firing
//! and moves the hook to the slot after *now*. Slots missed while nothing
//! ran are not caught up: the first due slot fires once and the next one is
//! the next after the present, as upstream's scheduler does. A failure the
//! queue may get over (5xx, no answer) gives the slot back to be tried again;
//! any other failure is recorded and the hook moves on. A process that dies
//! holding a lease leaves the slot to another once the lease ends; the taskId
//! being the slot's, a task it created already is not created twice.

use crate::Hooks;
use crate::creator::FireOptions;
use crate::model::{FiredBy, Hook};
use bbb_clock::Millis;
use bbb_service::ApiError;
use bbb_service::validate::slugid;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::sync::watch;

/// How long a scheduler holds a slot it is firing.
pub const LEASE_MS: Millis = 10 * 60 * 1000;
/// Due slots handled per look at the table.
const BATCH: i64 = 100;
/// How long firing records are kept (upstream: a year).
const KEEP_FIRES_MS: Millis = 365 * 24 * 3600 * 1000;
/// How often old firing records are removed.
const EXPIRE_EVERY_MS: Millis = 3600 * 1000;

/// Run the scheduler until `stop` turns true.
pub async fn run(hooks: Hooks, mut stop: watch::Receiver<bool>) {
    let mut last_expiry: Option<Millis> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = poll_once(&hooks).await {
            tracing::warn!(error = %e, "hooks scheduler pass failed; trying again");
        }
        let now = hooks.clock.now_ms();
        if last_expiry.is_none_or(|t| now - t >= EXPIRE_EVERY_MS) {
            match hooks.store.expire_fires(now - KEEP_FIRES_MS).await {
                Ok(n) => {
                    last_expiry = Some(now);
                    if n > 0 {
                        tracing::info!(count = n, "expired old hook firing records");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "expiring hook firing records failed"),
            }
        }
        let wait = match hooks.store.next_wakeup().await {
            Ok(Some(at)) => (at - hooks.clock.now_ms()).max(0) as u64,
            Ok(None) => hooks.cfg.scheduler_poll_ms,
            Err(_) => hooks.cfg.scheduler_poll_ms,
        }
        .min(hooks.cfg.scheduler_poll_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = hooks.schedule_changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Fire the slots due now (at most a batch: the next pass follows at once
/// when more are due); how many this process fired.
pub async fn poll_once(hooks: &Hooks) -> Result<usize, ApiError> {
    let mut fired = 0;
    for hook in hooks.store.due(hooks.clock.now_ms(), BATCH).await? {
        if fire_slot(hooks, &hook).await? {
            fired += 1;
        }
    }
    Ok(fired)
}

/// Take `hook`'s due slot and fire it; `false` if another scheduler has it.
async fn fire_slot(hooks: &Hooks, hook: &Hook) -> Result<bool, ApiError> {
    let now = hooks.clock.now_ms();
    let (group, id, task_id) = (&hook.hook_group_id, &hook.hook_id, &hook.next_task_id);
    if !hooks
        .store
        .take_slot(group, id, task_id, now, now + LEASE_MS)
        .await?
    {
        return Ok(false);
    }
    let mut context = Map::new();
    context.insert("firedBy".into(), Value::from(FiredBy::Schedule.as_str()));
    let opts = FireOptions {
        task_id: task_id.clone(),
        created: hook.next_scheduled_date,
        retry: true,
    };
    let fired = hooks
        .creator
        .fire(hook, FiredBy::Schedule, context, &opts)
        .await;
    if let Err(e) = &fired.outcome {
        if e.is_transient() {
            tracing::warn!(hook.group = %group, hook.id = %id, "scheduled hook not fired; trying again");
            hooks
                .store
                .release_slot(group, id, task_id, fired.record.as_ref())
                .await?;
            return Ok(false);
        }
        tracing::warn!(hook.group = %group, hook.id = %id, task.id = %task_id, "scheduled hook failed to create its task");
    }
    let next = crate::cron::next_date(&hook.schedule, hooks.clock.now_ms());
    hooks
        .store
        .finish_slot(group, id, task_id, fired.record.as_ref(), &slugid(), next)
        .await?;
    Ok(true)
}
