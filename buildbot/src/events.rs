//! The merged event stream of an adapter: its sources (a Pulse consumer, a
//! poller) feed one channel, and the stream stops them when it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::PulseOptions;
use crate::error::Result;
use crate::messages::parse_build_message;
use crate::types::{BuildRequestId, BuildResult, EventSource, LegacyEvent};

/// Events buffered between the sources and the consumer.
const BUFFER: usize = 1024;

/// The merged stream of [`LegacyEvent`]s of a [`SchedulerDb`](crate::SchedulerDb)
/// or a [`RestMaster`](crate::RestMaster).
/// Dropping it stops its sources.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<LegacyEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stream for EventStream {
    type Item = LegacyEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LegacyEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A source read by polling: each call reports what changed since the last
/// one (and may report a change again: consumers are idempotent).
pub(crate) trait PollSource: Send + 'static {
    /// What is polled, for the warning logged when a poll fails.
    const WHAT: &'static str;

    /// One poll.
    fn poll_once(&mut self) -> impl Future<Output = Result<Vec<LegacyEvent>>> + Send;
}

/// A request found complete by a poll: its result code, or, without a
/// known one, EXCEPTION when a build ran it (`claimed`) and CANCELLED when
/// none did.
pub(crate) fn polled_completion(
    id: BuildRequestId,
    code: Option<i64>,
    claimed: bool,
    source: EventSource,
) -> LegacyEvent {
    let default = if claimed {
        BuildResult::Exception
    } else {
        BuildResult::Cancelled
    };
    LegacyEvent::RequestCompleted {
        build_request_id: id,
        results: code.and_then(BuildResult::from_code).unwrap_or(default),
        claimed,
        source,
    }
}

/// The sources of one [`EventStream`], started one by one.
pub(crate) struct EventSources {
    tx: mpsc::Sender<LegacyEvent>,
    rx: mpsc::Receiver<LegacyEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl EventSources {
    /// No source yet.
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        EventSources {
            tx,
            rx,
            tasks: Vec::new(),
        }
    }

    /// Consumes `pulse.queue`, bound to `patterns` on `pulse.exchange`.
    pub(crate) async fn pulse(&mut self, pulse: &PulseOptions, patterns: &[&str]) -> Result<()> {
        let bindings: Vec<bbb_pulse::Binding> = patterns
            .iter()
            .map(|pattern| bbb_pulse::Binding::new(&pulse.exchange, *pattern))
            .collect();
        let consumer = pulse
            .bus
            .consume(&pulse.queue, &bindings, pulse.prefetch)
            .await?;
        self.tasks
            .push(tokio::spawn(run_pulse(consumer, self.tx.clone())));
        Ok(())
    }

    /// Polls `poller` every `interval`.
    pub(crate) fn poll(&mut self, poller: impl PollSource, interval: Duration) {
        self.tasks
            .push(tokio::spawn(run_poller(poller, interval, self.tx.clone())));
    }

    /// The merged stream.
    pub(crate) fn stream(self) -> EventStream {
        EventStream {
            rx: self.rx,
            tasks: self.tasks,
        }
    }
}

/// Pulse deliveries are acknowledged once their events are in the stream's
/// buffer; a message that cannot be read is parked.
async fn run_pulse(mut consumer: bbb_pulse::Consumer, tx: mpsc::Sender<LegacyEvent>) {
    while let Some(delivery) = consumer.next().await {
        match parse_build_message(&delivery.routing_key, &delivery.payload) {
            Ok(events) => {
                for event in events {
                    tracing::debug!(routing_key = %delivery.routing_key, build_request.ids = ?event.build_request_ids(), "pulse build event");
                    if tx.send(event).await.is_err() {
                        // The stream is gone: the unsettled delivery goes back.
                        return;
                    }
                }
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "could not ack a build message; it will be redelivered");
                }
            }
            Err(error) => {
                let reason = error.to_string();
                if let Err(error) = delivery.park(&reason).await {
                    tracing::warn!(%error, "could not park a malformed build message");
                }
            }
        }
    }
}

async fn run_poller<P: PollSource>(
    mut poller: P,
    interval: Duration,
    tx: mpsc::Sender<LegacyEvent>,
) {
    loop {
        match poller.poll_once().await {
            Ok(events) => {
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "polling {} failed", P::WHAT),
        }
        tokio::time::sleep(interval).await;
    }
}
