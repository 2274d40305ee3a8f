//! The Buildbot listener: the legacy master's event stream, applied to the
//! task runs the bridge handles.
//!
//! Events are spread over a few workers by build request id, so the events of
//! one request are applied in the order they arrived while different requests
//! proceed in parallel. An event whose action fails for a transient reason is
//! tried again a few times; after that it is dropped with an error counted,
//! and the reflector catches up from the master's state (no event source
//! survives every outage, so the reflector is the backstop anyway).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bbb_buildbot::{LegacyError, LegacyEvent};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use bbb_bridge::{ActionIds, Bridge};

/// How the Buildbot listener works.
#[derive(Clone, Debug)]
pub struct BbListenerSettings {
    /// Parallel workers (events of one build request always go to the same one).
    pub workers: usize,
    /// Attempts per event before leaving it to the reflector.
    pub attempts: u32,
    /// First delay between attempts; doubles each time.
    pub retry_delay: Duration,
    /// How long an applied event's key is remembered to skip exact duplicates.
    pub dedupe_window: Duration,
}

impl Default for BbListenerSettings {
    fn default() -> Self {
        BbListenerSettings {
            workers: 8,
            attempts: 5,
            retry_delay: Duration::from_millis(500),
            dedupe_window: Duration::from_secs(600),
        }
    }
}

/// The name of an event's type, for logs and metrics.
pub fn event_kind(event: &LegacyEvent) -> &'static str {
    match event {
        LegacyEvent::BuildStarted { .. } => "build-started",
        LegacyEvent::BuildFinished { .. } => "build-finished",
        LegacyEvent::RequestRequeued { .. } => "request-requeued",
        LegacyEvent::RequestCompleted { .. } => "request-completed",
    }
}

/// Runs the Buildbot listener until `cancel` fires or the stream ends.
pub async fn run(
    bridge: Arc<Bridge>,
    settings: BbListenerSettings,
    cancel: CancellationToken,
) -> Result<(), LegacyError> {
    let _ = start(bridge, settings, cancel).await?.await;
    Ok(())
}

/// Opens the master's event stream (so no event from now on is missed), then
/// applies its events in the background until `cancel` fires or the stream
/// ends.
pub async fn start(
    bridge: Arc<Bridge>,
    settings: BbListenerSettings,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, LegacyError> {
    let events = bridge.master.events().await?;
    Ok(tokio::spawn(async move {
        let workers = settings.workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::channel::<LegacyEvent>(256);
            senders.push(tx);
            handles.push(tokio::spawn(worker(bridge.clone(), settings.clone(), rx)));
        }
        let mut events = std::pin::pin!(events.take_until(cancel.cancelled_owned()));
        while let Some(event) = events.next().await {
            let shard = event
                .build_request_ids()
                .first()
                .map(|b| (b.0 as usize) % workers)
                .unwrap_or(0);
            if senders[shard].send(event).await.is_err() {
                break;
            }
        }
        drop(senders);
        for handle in handles {
            let _ = handle.await;
        }
    }))
}

async fn worker(
    bridge: Arc<Bridge>,
    settings: BbListenerSettings,
    mut rx: mpsc::Receiver<LegacyEvent>,
) {
    let mut seen: HashMap<String, Instant> = HashMap::new();
    while let Some(event) = rx.recv().await {
        let key = event.dedupe_key();
        let dedupable = !matches!(event, LegacyEvent::RequestRequeued { .. });
        if dedupable
            && seen
                .get(&key)
                .is_some_and(|at| at.elapsed() < settings.dedupe_window)
        {
            debug!(key, "duplicate event skipped");
            bridge
                .metrics
                .event(event_kind(&event), "duplicate", Duration::ZERO);
            continue;
        }
        if apply(&bridge, &settings, &event).await && dedupable {
            if seen.len() > 50_000 {
                seen.retain(|_, at| at.elapsed() < settings.dedupe_window);
            }
            seen.insert(key, Instant::now());
        }
    }
}

/// Applies one event, trying again on transient failures. Returns whether it
/// was applied.
pub async fn apply(bridge: &Bridge, settings: &BbListenerSettings, event: &LegacyEvent) -> bool {
    let kind = event_kind(event);
    let ids = ActionIds {
        build_request_id: event.build_request_ids().first().map(|b| b.0),
        ..ActionIds::default()
    };
    let mut delay = settings.retry_delay;
    for attempt in 1..=settings.attempts.max(1) {
        match bridge.timed(kind, ids, bridge.legacy_event(event)).await {
            Ok(_) => return true,
            Err(e) => {
                bridge.metrics.error("bb-listener");
                warn!(kind, attempt, error = %e, build_request.ids = ?event.build_request_ids(),
                      "cannot apply Buildbot event");
                if !e.is_transient() || attempt == settings.attempts.max(1) {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    false
}
