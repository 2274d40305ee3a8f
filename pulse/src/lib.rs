#![doc = include_str!("../README.md")]

mod amqp;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;
mod topic;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::topic::topic_matches;

/// Longest exchange name, routing key or queue name AMQP 0-9-1 accepts (a
/// short string).
pub const MAX_NAME_LEN: usize = 255;

/// Header carrying the reason a message was parked.
pub const PARKED_REASON_HEADER: &str = "x-bbb-parked-reason";
/// Header carrying the queue a parked message was taken from.
pub const PARKED_FROM_HEADER: &str = "x-bbb-parked-from";
/// Header carrying the exchange a parked message was originally published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-bbb-original-exchange";
/// Header carrying the routing key a parked message was originally published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-bbb-original-routing-key";

/// A Pulse-style event: a JSON payload published to a topic exchange under a
/// primary routing key, and CC'd under any number of extra routing keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Exchange name, e.g. `exchange/taskcluster-queue/v1/task-completed`.
    pub exchange: String,
    /// Primary routing key, e.g. `primary.<taskId>.<runId>.…`.
    pub routing_key: String,
    /// Extra routing keys (the AMQP `CC` header), e.g. `route.index.foo`.
    pub cc: Vec<String>,
    /// The message body, published as `application/json`.
    pub payload: serde_json::Value,
}

/// Binds a queue to an exchange with an AMQP topic pattern: `*` matches one
/// word and `#` zero or more words (see [`topic_matches`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Exchange to bind to. It is declared as a durable topic exchange if missing.
    pub exchange: String,
    /// Topic pattern matched against the primary routing key and every CC key.
    pub pattern: String,
}

impl Binding {
    /// A binding of `pattern` on `exchange`.
    pub fn new(exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            pattern: pattern.into(),
        }
    }
}

/// Errors from the bus.
#[derive(thiserror::Error, Debug)]
pub enum BusError {
    /// The AMQP URL could not be parsed. The URL in the message has its password masked.
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A message, queue or binding is malformed (for example a name longer than 255 bytes).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The broker or the client library reported an error.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a message (a publisher-confirm nack) or returned it as unroutable.
    #[error(
        "broker did not accept message for exchange {exchange:?} key {routing_key:?}: {reason}"
    )]
    NotConfirmed {
        /// Exchange the message was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
        /// What the broker said.
        reason: String,
    },
    /// An operation on the broker did not complete in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The channel a delivery came from is gone, so it can no longer be
    /// settled; the broker will redeliver the message.
    #[error("delivery can no longer be settled: its channel closed, the broker will redeliver it")]
    ChannelClosed,
    /// A payload could not be encoded or decoded as JSON.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The bus was closed with [`Bus::close`].
    #[error("the bus is closed")]
    Closed,
}

impl BusError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BusError::Amqp(_)
                | BusError::NotConfirmed { .. }
                | BusError::Timeout(..)
                | BusError::ChannelClosed
        )
    }
}

/// Tuning for an AMQP bus. The defaults suit a gateway publishing a few
/// events per task transition.
#[derive(Clone, Debug)]
pub struct BusOptions {
    /// Attempts per [`Bus::publish`] call, reconnecting between them.
    pub publish_attempts: u32,
    /// How long to wait for the broker to confirm one chunk of a batch.
    pub confirm_timeout: Duration,
    /// How long to wait for a TCP connection and AMQP handshake.
    pub connect_timeout: Duration,
    /// First delay before reconnecting; it doubles on every failure.
    pub initial_backoff: Duration,
    /// Upper bound for the reconnect delay.
    pub max_backoff: Duration,
    /// Largest number of unconfirmed messages in flight within one batch.
    pub max_in_flight: usize,
    /// Connection name shown by the broker (`rabbitmqctl list_connections client_properties`).
    pub connection_name: String,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            publish_attempts: 4,
            confirm_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            max_in_flight: 256,
            connection_name: "bbb-pulse".to_owned(),
        }
    }
}

/// Name of the queue that [`Delivery::park`] moves messages of `queue` to.
pub fn parked_queue_name(queue: &str) -> String {
    format!("{queue}.parked")
}

fn check_name(kind: &str, name: &str) -> Result<(), BusError> {
    if name.len() > MAX_NAME_LEN {
        return Err(BusError::Invalid(format!(
            "{kind} is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn validate_message(message: &Message) -> Result<(), BusError> {
    check_name("exchange name", &message.exchange)?;
    check_name("routing key", &message.routing_key)?;
    for cc in &message.cc {
        check_name("CC routing key", cc)?;
    }
    Ok(())
}

pub(crate) fn validate_queue(queue: &str, bindings: &[Binding]) -> Result<(), BusError> {
    if queue.is_empty() {
        return Err(BusError::Invalid("queue name is empty".to_owned()));
    }
    check_name("queue name", queue)?;
    for binding in bindings {
        if binding.exchange.is_empty() {
            return Err(BusError::Invalid(
                "cannot bind to the default exchange".to_owned(),
            ));
        }
        check_name("exchange name", &binding.exchange)?;
        check_name("binding pattern", &binding.pattern)?;
    }
    Ok(())
}

#[derive(Clone)]
enum Backend {
    Amqp(Arc<amqp::AmqpBus>),
    Memory(Arc<memory::MemoryBus>),
}

/// The event bus: AMQP when a URL is given, else in-process. Cheap to clone;
/// clones share one connection (or one set of in-process queues).
#[derive(Clone)]
pub struct Bus {
    backend: Backend,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Amqp(bus) => f
                .debug_struct("Bus")
                .field("amqp", &bus.masked_url())
                .finish(),
            Backend::Memory(_) => f.debug_struct("Bus").field("in_process", &true).finish(),
        }
    }
}

impl Bus {
    /// Connects to the broker at `amqp_url` with default [`BusOptions`], or
    /// returns an in-process bus when `amqp_url` is `None`.
    ///
    /// The first connection is made eagerly so that a wrong URL, credentials or
    /// vhost is reported here; later connection losses are handled by
    /// reconnecting.
    pub async fn connect(amqp_url: Option<&str>) -> Result<Bus, BusError> {
        match amqp_url {
            Some(url) => Self::connect_with(url, BusOptions::default()).await,
            None => Ok(Self::in_process()),
        }
    }

    /// Connects to the broker at `amqp_url` with explicit options.
    pub async fn connect_with(amqp_url: &str, options: BusOptions) -> Result<Bus, BusError> {
        let bus = amqp::AmqpBus::connect(amqp_url, options).await?;
        Ok(Bus {
            backend: Backend::Amqp(Arc::new(bus)),
        })
    }

    /// A bus whose exchanges and queues live in this process only.
    pub fn in_process() -> Bus {
        Bus {
            backend: Backend::Memory(Arc::new(memory::MemoryBus::new())),
        }
    }

    /// Whether this is an in-process bus.
    pub fn is_in_process(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    /// Publishes a batch. Returns `Ok` only once the broker has confirmed every
    /// message (persistent, `application/json`, `CC` header set from
    /// [`Message::cc`]); exchanges are declared as durable topic exchanges on
    /// first use.
    ///
    /// On a broken connection it reconnects with backoff, a bounded number of
    /// times ([`BusOptions::publish_attempts`]), and returns `Err` if it could
    /// not get every message confirmed. Callers then retry the same batch:
    /// some messages may be delivered twice, none is lost.
    pub async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        match &self.backend {
            Backend::Amqp(bus) => bus.publish(batch).await,
            Backend::Memory(bus) => bus.publish(batch),
        }
    }

    /// Declares a durable queue and binds it, without consuming. Messages
    /// routed to it are kept until a consumer takes them.
    pub async fn declare(&self, queue: &str, bindings: &[Binding]) -> Result<(), BusError> {
        validate_queue(queue, bindings)?;
        match &self.backend {
            Backend::Amqp(bus) => bus.declare(queue, bindings).await,
            Backend::Memory(bus) => {
                bus.declare(queue, bindings);
                Ok(())
            }
        }
    }

    /// Declares `exchanges` as durable topic exchanges, as a publisher does at
    /// start-up, so that consumers which declare them passively (as
    /// Treeherder's listener does) find them before the first message. An
    /// exchange that exists already with these settings is no error. The
    /// in-process bus has nothing to declare.
    pub async fn declare_exchanges(&self, exchanges: &[String]) -> Result<(), BusError> {
        match &self.backend {
            Backend::Amqp(bus) => bus.declare_exchanges(exchanges).await,
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Removes bindings from a queue (a binding it does not have, or a queue
    /// that does not exist, is no error). Consumers of the queue keep
    /// consuming; a consumer started with those bindings binds them again
    /// when it reconnects, so queues whose bindings change are consumed with
    /// none and bound with [`Bus::declare`].
    pub async fn unbind(&self, queue: &str, bindings: &[Binding]) -> Result<(), BusError> {
        validate_queue(queue, bindings)?;
        match &self.backend {
            Backend::Amqp(bus) => bus.unbind(queue, bindings).await,
            Backend::Memory(bus) => {
                bus.unbind(queue, bindings);
                Ok(())
            }
        }
    }

    /// Deletes a queue and the messages in it (no error if it does not
    /// exist). Stop its consumers first.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BusError> {
        validate_queue(queue, &[])?;
        match &self.backend {
            Backend::Amqp(bus) => bus.delete_queue(queue).await,
            Backend::Memory(bus) => {
                bus.delete_queue(queue);
                Ok(())
            }
        }
    }

    /// Consumes from a durable named queue, declared if missing and bound to
    /// each binding. Several consumers on the same queue name, in this process
    /// or others, compete: each message goes to one of them. `prefetch`
    /// bounds the deliveries this consumer holds unsettled (0 = unbounded).
    pub async fn consume(
        &self,
        queue: &str,
        bindings: &[Binding],
        prefetch: u16,
    ) -> Result<Consumer, BusError> {
        validate_queue(queue, bindings)?;
        let inner = match &self.backend {
            Backend::Amqp(bus) => ConsumerInner::Amqp(Box::new(
                amqp::AmqpConsumer::start(bus, queue, bindings, prefetch).await?,
            )),
            Backend::Memory(bus) => ConsumerInner::Memory(bus.consume(queue, bindings, prefetch)?),
        };
        Ok(Consumer {
            queue: queue.to_owned(),
            inner,
        })
    }

    /// Shuts the bus down: consumers return `None`, later publishes fail with
    /// [`BusError::Closed`], and the AMQP connection is closed. Unsettled
    /// deliveries are returned to their queues by the broker.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Amqp(bus) => bus.close().await,
            Backend::Memory(bus) => bus.close(),
        }
    }
}

enum ConsumerInner {
    Amqp(Box<amqp::AmqpConsumer>),
    Memory(memory::MemoryConsumer),
}

/// A subscription to one named queue, created by [`Bus::consume`].
///
/// Read it with [`Consumer::next`]. An AMQP consumer survives connection
/// loss and broker restarts: it reconnects with backoff, re-declares its
/// queue and bindings and consumes again, so `next` simply waits meanwhile.
/// Deliveries still unsettled when the connection dropped are redelivered by
/// the broker (with `redelivered` set).
pub struct Consumer {
    queue: String,
    inner: ConsumerInner,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The next delivery. Waits (reconnecting as needed) until one is
    /// available; returns `None` only once the bus has been closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.inner {
            ConsumerInner::Amqp(consumer) => consumer.next().await,
            ConsumerInner::Memory(consumer) => consumer.next().await,
        }
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Turns the consumer into a stream of deliveries, ending when the bus closes.
    pub fn into_stream(self) -> impl futures::Stream<Item = Delivery> + Send {
        futures::stream::unfold(self, |mut consumer| async move {
            consumer.next().await.map(|delivery| (delivery, consumer))
        })
    }
}

pub(crate) enum Settle {
    Amqp(amqp::AmqpLease),
    Memory(memory::Lease),
}

/// One message handed to a consumer. Settle it with [`ack`](Delivery::ack),
/// [`nack_requeue`](Delivery::nack_requeue) or [`park`](Delivery::park);
/// dropping it unsettled puts it back on its queue for redelivery.
pub struct Delivery {
    /// Exchange the message was published to. For a message read from a
    /// parking queue, the exchange of the original message.
    pub exchange: String,
    /// Primary routing key (not the CC key that routed it). For a message read
    /// from a parking queue, the routing key of the original message.
    pub routing_key: String,
    /// The CC routing keys the message was published with.
    pub cc: Vec<String>,
    /// The raw body (JSON).
    pub payload: Vec<u8>,
    /// Whether this message was delivered before and not acknowledged.
    pub redelivered: bool,
    /// Whether the message was published as persistent (delivery mode 2).
    pub persistent: bool,
    /// The content type the message was published with.
    pub content_type: Option<String>,
    /// For a message read from a parking queue: why it was parked.
    pub parked_reason: Option<String>,
    queue: String,
    settle: Option<Settle>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("cc", &self.cc)
            .field("redelivered", &self.redelivered)
            .field("parked_reason", &self.parked_reason)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    fn from_memory(queue: &str, envelope: memory::Envelope, lease: Settle) -> Self {
        Self {
            exchange: envelope.exchange,
            routing_key: envelope.routing_key,
            cc: envelope.cc,
            payload: envelope.payload,
            redelivered: envelope.redelivered,
            persistent: true,
            content_type: Some(amqp::CONTENT_TYPE.to_owned()),
            parked_reason: envelope.parked_reason,
            queue: queue.to_owned(),
            settle: Some(lease),
        }
    }

    /// The queue this delivery was taken from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Decodes the payload as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, BusError> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// Acknowledges the message: it is removed from the queue.
    ///
    /// Fails with [`BusError::ChannelClosed`] if the connection was lost since
    /// the delivery; the broker then redelivers the message.
    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.settle.take() {
            Some(Settle::Amqp(lease)) => lease.ack().await,
            Some(Settle::Memory(lease)) => {
                lease.ack();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Puts the message back on its queue for another try (it comes back
    /// with `redelivered` set, possibly to another consumer).
    pub async fn nack_requeue(mut self) -> Result<(), BusError> {
        match self.settle.take() {
            Some(Settle::Amqp(lease)) => lease.requeue().await,
            Some(Settle::Memory(lease)) => {
                lease.requeue();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Moves a message that cannot be processed to the parking queue
    /// `<queue>.parked` (durable; the reason travels in the
    /// `x-bbb-parked-reason` header, see [`Delivery::parked_reason`]) and
    /// acknowledges the original. Logged at `warn`.
    ///
    /// If the parked copy cannot be confirmed, the original is returned to
    /// its queue instead, so the message is never lost.
    pub async fn park(mut self, reason: &str) -> Result<(), BusError> {
        tracing::warn!(
            queue = %self.queue,
            parked_queue = %parked_queue_name(&self.queue),
            exchange = %self.exchange,
            routing_key = %self.routing_key,
            reason,
            "parking message"
        );
        match self.settle.take() {
            Some(Settle::Amqp(lease)) => {
                lease
                    .park(
                        &self.queue,
                        &self.exchange,
                        &self.routing_key,
                        &self.cc,
                        &self.payload,
                        reason,
                    )
                    .await
            }
            Some(Settle::Memory(lease)) => {
                lease.park(reason);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        match self.settle.take() {
            Some(Settle::Amqp(lease)) => lease.requeue_in_background(),
            Some(Settle::Memory(lease)) => lease.requeue(),
            None => {}
        }
    }
}
