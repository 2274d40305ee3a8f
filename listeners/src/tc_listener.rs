//! The TC listener: task-pending and task-exception messages of the bridge's
//! task queue, consumed from shared durable queues (every instance competes
//! for the same messages), each acknowledged only after its effects commit.

use std::sync::Arc;
use std::time::Duration;

use bbb_pulse::{Binding, Bus, BusError, Delivery};
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use bbb_bridge::{ActionIds, Bridge, BridgeError, BridgeResult, Outcome, TaskStatus};

/// Where the TC listener reads from.
#[derive(Clone, Debug)]
pub struct TcListenerSettings {
    /// Prefix of the queue exchanges (`exchange/taskcluster-queue/v1/`).
    pub exchange_prefix: String,
    /// Prefix of the durable queue names; `task-pending` and `task-exception`
    /// are appended. Every instance must use the same names to share the work
    /// (on Pulse: `queue/<user>/...`).
    pub queue_prefix: String,
    /// Messages handled at once per queue (also the prefetch).
    pub concurrency: usize,
    /// Wait before putting back a message that failed for a transient reason.
    pub retry_delay: Duration,
}

impl Default for TcListenerSettings {
    fn default() -> Self {
        TcListenerSettings {
            exchange_prefix: "exchange/taskcluster-queue/v1/".to_owned(),
            queue_prefix: "queue/bbb-bridge".to_owned(),
            concurrency: 16,
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// The binding pattern of a task queue's messages: the primary routing key is
/// `primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.<schedulerId>.<taskGroupId>.<reserved>`.
pub fn routing_pattern(task_queue_id: &str) -> String {
    let (provisioner, worker_type) = task_queue_id
        .split_once('/')
        .unwrap_or((task_queue_id, "*"));
    format!("primary.*.*.*.*.{provisioner}.{worker_type}.#")
}

/// Runs the TC listener until `cancel` fires.
pub async fn run(
    bridge: Arc<Bridge>,
    bus: Bus,
    settings: TcListenerSettings,
    cancel: CancellationToken,
) -> Result<(), BusError> {
    let _ = start(bridge, bus, settings, cancel).await?.await;
    Ok(())
}

/// Subscribes to both durable queues (so every message published from now on
/// is kept for the bridge), then handles their messages in the background
/// until `cancel` fires. The handle ends when both loops have.
pub async fn start(
    bridge: Arc<Bridge>,
    bus: Bus,
    settings: TcListenerSettings,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let pattern = routing_pattern(&bridge.settings.task_queue_id);
    let prefetch = u16::try_from(settings.concurrency.max(1)).unwrap_or(u16::MAX);
    let mut loops = Vec::new();
    for kind in ["task-pending", "task-exception"] {
        let queue = format!("{}/{kind}", settings.queue_prefix.trim_end_matches('/'));
        let binding = Binding::new(format!("{}{kind}", settings.exchange_prefix), &pattern);
        let consumer = bus.consume(&queue, &[binding], prefetch).await?;
        let bridge = bridge.clone();
        let settings = settings.clone();
        let cancel = cancel.clone();
        loops.push(tokio::spawn(async move {
            consumer
                .into_stream()
                .take_until(cancel.cancelled_owned())
                .for_each_concurrent(settings.concurrency.max(1), |delivery| {
                    let bridge = bridge.clone();
                    let delay = settings.retry_delay;
                    async move { handle_delivery(&bridge, kind, delivery, delay).await }
                })
                .await;
        }));
    }
    Ok(tokio::spawn(async move {
        for handle in loops {
            let _ = handle.await;
        }
    }))
}

/// Handles one delivery: ack on success, put back after a delay on a
/// transient failure, park a message that can never be handled.
pub async fn handle_delivery(
    bridge: &Bridge,
    kind: &str,
    delivery: Delivery,
    retry_delay: Duration,
) {
    let result = match delivery.json::<Value>() {
        Ok(body) => {
            let ids = ActionIds {
                task_id: body.pointer("/status/taskId").and_then(Value::as_str),
                run_id: body.get("runId").and_then(Value::as_i64),
                build_request_id: None,
            };
            bridge
                .timed(kind, ids, handle_message(bridge, kind, &body))
                .await
        }
        Err(e) => Err(BridgeError::BadMessage(format!("not JSON: {e}"))),
    };
    let settled = match result {
        Ok(_) => delivery.ack().await,
        Err(e) if e.is_transient() => {
            warn!(kind, routing_key = %delivery.routing_key, error = %e, "will retry message");
            bridge.metrics.error("tc-listener");
            tokio::time::sleep(retry_delay).await;
            delivery.nack_requeue().await
        }
        Err(e) => {
            error!(kind, routing_key = %delivery.routing_key, error = %e, "parking message");
            bridge.metrics.error("tc-listener");
            let reason = e.to_string();
            bridge
                .metrics
                .parked(delivery.queue(), &reason, bridge.now());
            delivery.park(&reason).await
        }
    };
    if let Err(e) = settled {
        // The broker redelivers an unsettled message.
        warn!(kind, error = %e, "cannot settle message");
    }
}

/// Handles the body of a task-pending or task-exception message.
pub async fn handle_message(bridge: &Bridge, kind: &str, body: &Value) -> BridgeResult<Outcome> {
    let status_json = body
        .get("status")
        .ok_or_else(|| BridgeError::BadMessage("the message has no status".to_owned()))?;
    let status = TaskStatus::from_json(status_json).map_err(BridgeError::BadMessage)?;
    let run_id = body
        .get("runId")
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| BridgeError::BadMessage("the message has no runId".to_owned()))?;
    if status.task_queue_id != bridge.settings.task_queue_id {
        return Ok(Outcome::OtherQueue);
    }
    match kind {
        "task-pending" => {
            let task_id = status.task_id.clone();
            bridge.task_pending(&task_id, run_id, Some(status)).await
        }
        "task-exception" => {
            let reason = status.run(run_id).and_then(|r| r.reason_resolved);
            bridge
                .task_exception(&status.task_id, run_id, reason, status.deadline)
                .await
        }
        other => Err(BridgeError::BadMessage(format!("unexpected kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_the_task_queue() {
        let p = routing_pattern("buildbot-bridge/buildbot-bridge");
        assert_eq!(p, "primary.*.*.*.*.buildbot-bridge.buildbot-bridge.#");
        assert!(bbb_pulse::topic_matches(
            &p,
            "primary.abc.0._._.buildbot-bridge.buildbot-bridge.tc.grp._"
        ));
        assert!(!bbb_pulse::topic_matches(
            &p,
            "primary.abc.0._._.proj.other.tc.grp._"
        ));
    }
}
