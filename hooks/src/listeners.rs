//! Pulse bindings: a hook with `bindings` fires once per matching message.
//!
//! Each such hook has a durable queue on the bus, `queue/taskcluster-hooks/
//! <hookGroupId>/<hookId>` (upstream's name), bound to its bindings. Every
//! process consumes the queues of all hooks, so on RabbitMQ they compete and
//! each message fires the hook once. The hooks table is authoritative: a
//! reconciliation, run when this process changes a hook and every
//! `reconcile_ms` otherwise, binds what a hook gained, unbinds what it lost,
//! starts and stops consumers, and deletes the queues of hooks that have no
//! bindings any more; `hooks_queues` records what is bound on each queue.
//!
//! A message fires the hook (read afresh) with `firedBy: pulseMessage` and the
//! message body as `payload`, once the body matches the hook's trigger schema;
//! one that does not is discarded, as upstream.

use crate::Hooks;
use crate::creator::FireOptions;
use crate::db::QueueRow;
use crate::model::{FiredBy, Hook, HookBinding};
use crate::schema;
use bbb_pulse::{Binding, Delivery};
use bbb_service::validate::slugid;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many unsettled messages one hook's consumer holds.
const PREFETCH: u16 = 16;
/// A discarded message is logged once, then once every this many.
const DISCARD_LOG_INTERVAL: u64 = 100;

/// The bus queue of a hook.
pub fn queue_name(group: &str, id: &str) -> String {
    format!("queue/taskcluster-hooks/{group}/{id}")
}

/// A hook's bindings as the bus takes them.
fn bus_bindings(bindings: &[HookBinding]) -> Vec<Binding> {
    bindings
        .iter()
        .map(|b| Binding::new(b.exchange.clone(), b.routing_key_pattern.clone()))
        .collect()
}

/// A running consumer of one hook's queue, and the bindings this process made.
struct Listener {
    bound: Vec<HookBinding>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The consumers of this process, by hook.
#[derive(Default)]
pub struct Listeners(HashMap<(String, String), Listener>);

/// Keep the bus in step with the hooks table until `stop` turns true.
pub async fn run(hooks: Hooks, mut stop: watch::Receiver<bool>) {
    let mut listeners = Listeners::default();
    loop {
        if let Err(e) = reconcile(&hooks, &mut listeners).await {
            tracing::warn!(error = %e, "reconciling hook bindings failed; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(hooks.cfg.reconcile_ms)) => {}
            _ = hooks.bindings_changed.notified() => {}
            _ = stop.changed() => break,
        }
    }
    for (_, l) in listeners.0.drain() {
        l.stop().await;
    }
}

/// One reconciliation of the bus and this process's consumers with the hooks
/// table. A hook that cannot be reconciled now is left for the next time.
pub async fn reconcile(hooks: &Hooks, listeners: &mut Listeners) -> Result<(), String> {
    let wanted: Vec<Hook> = hooks
        .store
        .hooks(None)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|h| !h.bindings.is_empty())
        .collect();
    let recorded = hooks.store.queues().await.map_err(|e| e.to_string())?;
    for hook in &wanted {
        let old = recorded
            .iter()
            .find(|q| q.hook_group_id == hook.hook_group_id && q.hook_id == hook.hook_id);
        if let Err(e) = reconcile_hook(hooks, listeners, hook, old).await {
            tracing::warn!(
                hook.group = %hook.hook_group_id, hook.id = %hook.hook_id, error = %e,
                "binding a hook's queue failed; trying again later"
            );
        }
    }
    let is_wanted = |g: &str, id: &str| {
        wanted
            .iter()
            .any(|h| h.hook_group_id == g && h.hook_id == id)
    };
    for q in recorded
        .iter()
        .filter(|q| !is_wanted(&q.hook_group_id, &q.hook_id))
    {
        if let Some(l) = listeners
            .0
            .remove(&(q.hook_group_id.clone(), q.hook_id.clone()))
        {
            l.stop().await;
        }
        hooks
            .bus
            .delete_queue(&q.queue_name)
            .await
            .map_err(|e| e.to_string())?;
        hooks
            .store
            .delete_queue(&q.hook_group_id, &q.hook_id)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(hook.group = %q.hook_group_id, hook.id = %q.hook_id, "hook's queue deleted");
    }
    let gone: Vec<(String, String)> = listeners
        .0
        .keys()
        .filter(|(g, id)| !is_wanted(g, id))
        .cloned()
        .collect();
    for key in gone {
        if let Some(l) = listeners.0.remove(&key) {
            l.stop().await;
        }
    }
    Ok(())
}

/// Bind `hook`'s queue as the hook says (`old`: what is recorded as bound),
/// and consume it in this process.
async fn reconcile_hook(
    hooks: &Hooks,
    listeners: &mut Listeners,
    hook: &Hook,
    old: Option<&QueueRow>,
) -> Result<(), String> {
    let key = (hook.hook_group_id.clone(), hook.hook_id.clone());
    let name = queue_name(&hook.hook_group_id, &hook.hook_id);
    let bound_here = listeners.0.get(&key).map(|l| &l.bound);
    if bound_here != Some(&hook.bindings) {
        hooks
            .bus
            .declare(&name, &bus_bindings(&hook.bindings))
            .await
            .map_err(|e| e.to_string())?;
    }
    let stale: Vec<HookBinding> = old
        .map(|q| {
            q.bindings
                .iter()
                .filter(|b| !hook.bindings.contains(b))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !stale.is_empty() {
        hooks
            .bus
            .unbind(&name, &bus_bindings(&stale))
            .await
            .map_err(|e| e.to_string())?;
    }
    if old.is_none_or(|q| q.bindings != hook.bindings || q.queue_name != name) {
        hooks
            .store
            .save_queue(&QueueRow {
                hook_group_id: hook.hook_group_id.clone(),
                hook_id: hook.hook_id.clone(),
                queue_name: name.clone(),
                bindings: hook.bindings.clone(),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    match listeners.0.get_mut(&key) {
        Some(l) => l.bound = hook.bindings.clone(),
        None => {
            let consumer = hooks
                .bus
                .consume(&name, &[], PREFETCH)
                .await
                .map_err(|e| e.to_string())?;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(listen(hooks.clone(), key.clone(), consumer, stopped));
            tracing::info!(hook.group = %key.0, hook.id = %key.1, queue = %name, "listening for the hook's messages");
            listeners.0.insert(
                key,
                Listener {
                    bound: hook.bindings.clone(),
                    stop,
                    task,
                },
            );
        }
    }
    Ok(())
}

/// Consume one hook's queue until `stop` turns true.
async fn listen(
    hooks: Hooks,
    (group, id): (String, String),
    mut consumer: bbb_pulse::Consumer,
    mut stop: watch::Receiver<bool>,
) {
    let mut discarded = 0u64;
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = stop.changed() => return,
        };
        let Some(delivery) = delivery else { return };
        handle(&hooks, &group, &id, delivery, &mut discarded).await;
    }
}

/// Fire the hook for one message, and settle it.
async fn handle(hooks: &Hooks, group: &str, id: &str, delivery: Delivery, discarded: &mut u64) {
    let payload: Value = match delivery.json() {
        Ok(v) => v,
        Err(e) => {
            let _ = delivery.park(&format!("undecodable payload: {e}")).await;
            return;
        }
    };
    let hook = match hooks.store.hook(group, id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            let _ = delivery.ack().await;
            return;
        }
        Err(e) => {
            tracing::warn!(hook.group = %group, hook.id = %id, error = %e, "reading the hook failed; the message goes back");
            let _ = delivery.nack_requeue().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    let problems = schema::check(&hook.trigger_schema, &payload);
    if !problems.is_empty() {
        *discarded += 1;
        if *discarded == 1 || discarded.is_multiple_of(DISCARD_LOG_INTERVAL) {
            tracing::info!(
                hook.group = %group, hook.id = %id, exchange = %delivery.exchange,
                routing_key = %delivery.routing_key, discarded = *discarded,
                reason = %schema::errors_text(&problems, "; "),
                "Pulse message discarded because payload does not match hook triggerSchema"
            );
        }
        let _ = delivery.ack().await;
        return;
    }
    let mut context = Map::new();
    context.insert("firedBy".into(), FiredBy::PulseMessage.as_str().into());
    context.insert("payload".into(), payload);
    let opts = FireOptions {
        task_id: slugid(),
        created: hooks.clock.now_ms(),
        retry: false,
    };
    let fired = hooks
        .creator
        .fire(&hook, FiredBy::PulseMessage, context, &opts)
        .await;
    if let Some(record) = &fired.record
        && let Err(e) = hooks.store.record_fire(record).await
    {
        tracing::warn!(hook.group = %group, hook.id = %id, error = %e, "recording a hook's firing failed");
    }
    let _ = delivery.ack().await;
}
