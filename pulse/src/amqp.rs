//! The AMQP 0-9-1 bus on top of lapin: one shared connection, a confirm-mode
//! publishing channel, and one channel per consumer, all re-established after
//! a connection loss.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{Mutex, watch};

use crate::{
    Binding, BusError, BusOptions, Delivery, Message, ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER, PARKED_FROM_HEADER, PARKED_REASON_HEADER, Settle,
    parked_queue_name, validate_message,
};

pub(crate) const CONTENT_TYPE: &str = "application/json";
const PERSISTENT: u8 = 2;
const CC_HEADER: &str = "CC";

/// A message ready to go on the wire.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    headers: FieldTable,
    /// Fail if no queue receives it (used for parking, never for events).
    mandatory: bool,
}

/// The confirm-mode channel used for publishing, with the exchanges already
/// declared on it.
struct Publisher {
    channel: Channel,
    declared_exchanges: HashSet<String>,
}

pub(crate) struct AmqpBus {
    uri: AMQPUri,
    masked_url: String,
    options: BusOptions,
    connection: Mutex<Option<Connection>>,
    publisher: Mutex<Option<Publisher>>,
    closed: watch::Sender<bool>,
}

fn durable_topic(channel: &Channel, exchange: &str) -> impl Future<Output = lapin::Result<()>> {
    channel.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
}

/// Whether the broker answered 404 NOT_FOUND (no such queue or exchange).
fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404)
}

fn is_predeclared(exchange: &str) -> bool {
    exchange.is_empty() || exchange.starts_with("amq.")
}

async fn declare_durable_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(drop)
}

/// Declares the queue, the exchanges of its bindings, and the bindings.
async fn declare_topology(
    channel: &Channel,
    queue: &str,
    bindings: &[Binding],
) -> lapin::Result<()> {
    declare_durable_queue(channel, queue).await?;
    let mut exchanges = HashSet::new();
    for binding in bindings {
        if !is_predeclared(&binding.exchange) && exchanges.insert(binding.exchange.as_str()) {
            durable_topic(channel, &binding.exchange).await?;
        }
        channel
            .queue_bind(
                queue.into(),
                binding.exchange.as_str().into(),
                binding.pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn header_string(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_strings(headers: Option<&FieldTable>, name: &str) -> Vec<String> {
    let Some(AMQPValue::FieldArray(values)) = headers.and_then(|h| h.inner().get(name)) else {
        return Vec::new();
    };
    values
        .as_slice()
        .iter()
        .filter_map(|value| match value {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

fn cc_headers(cc: &[String]) -> FieldTable {
    let mut headers = FieldTable::default();
    if !cc.is_empty() {
        let values: Vec<AMQPValue> = cc.iter().map(|key| long_string(key)).collect();
        headers.insert(
            ShortString::from(CC_HEADER),
            AMQPValue::FieldArray(FieldArray::from(values)),
        );
    }
    headers
}

/// Sleeps for `delay`, or returns `true` early if the bus gets closed.
async fn sleep_unless_closed(closed: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let woken_by_close = tokio::select! {
        () = tokio::time::sleep(delay) => false,
        closing = async { closed.wait_for(|closed| *closed).await.is_ok() } => closing,
    };
    woken_by_close || *closed.borrow()
}

impl AmqpBus {
    pub(crate) async fn connect(url: &str, options: BusOptions) -> Result<Self, BusError> {
        let masked_url = bbb_secret::mask_url(url);
        let uri: AMQPUri = url.parse().map_err(|reason| BusError::InvalidUrl {
            url: masked_url.clone(),
            reason,
        })?;
        let bus = Self {
            uri,
            masked_url,
            options,
            connection: Mutex::new(None),
            publisher: Mutex::new(None),
            closed: watch::Sender::new(false),
        };
        // Fail fast on a wrong host, credentials or vhost.
        drop(bus.channel().await?);
        Ok(bus)
    }

    pub(crate) fn masked_url(&self) -> &str {
        &self.masked_url
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn next_backoff(&self, backoff: Duration) -> Duration {
        (backoff * 2).min(self.options.max_backoff)
    }

    /// Opens a channel on the shared connection, first (re)connecting if the
    /// connection is missing or broken.
    async fn channel(&self) -> Result<Channel, BusError> {
        let mut slot = self.connection.lock().await;
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(error) => {
                    tracing::warn!(url = %self.masked_url, %error, "cannot open a channel; reconnecting");
                }
            }
        }
        *slot = None;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.options.connection_name.as_str().into());
        let connection = tokio::time::timeout(
            self.options.connect_timeout,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await
        .map_err(|_| BusError::Timeout(self.options.connect_timeout, "an AMQP connection"))??;
        tracing::info!(url = %self.masked_url, "connected to AMQP broker");
        let channel = connection.create_channel().await?;
        *slot = Some(connection);
        Ok(channel)
    }

    async fn open_publisher(&self) -> Result<Publisher, BusError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            declared_exchanges: HashSet::new(),
        })
    }

    pub(crate) async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        let mut outgoing = Vec::with_capacity(batch.len());
        for message in batch {
            validate_message(message)?;
            outgoing.push(Outgoing {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                body: serde_json::to_vec(&message.payload)?,
                headers: cc_headers(&message.cc),
                mandatory: false,
            });
        }
        self.publish_outgoing(&outgoing, None).await
    }

    /// Publishes with retries: a failed attempt drops the publishing channel
    /// (and the connection, if that is what broke) and tries the whole batch
    /// again after a backoff.
    async fn publish_outgoing(
        &self,
        outgoing: &[Outgoing],
        declare_queue: Option<&str>,
    ) -> Result<(), BusError> {
        if outgoing.is_empty() {
            return Ok(());
        }
        let attempts = self.options.publish_attempts.max(1);
        let mut backoff = self.options.initial_backoff;
        let mut closed = self.closed.subscribe();
        for attempt in 1..=attempts {
            let error = match self.try_publish(outgoing, declare_queue).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !error.is_transient() || attempt == attempts {
                tracing::warn!(url = %self.masked_url, attempt, %error, "publish failed");
                return Err(error);
            }
            tracing::warn!(
                url = %self.masked_url,
                attempt,
                %error,
                retry_in_ms = backoff.as_millis() as u64,
                "publish failed; retrying"
            );
            if sleep_unless_closed(&mut closed, backoff).await {
                return Err(BusError::Closed);
            }
            backoff = self.next_backoff(backoff);
        }
        Err(BusError::Closed)
    }

    async fn try_publish(
        &self,
        outgoing: &[Outgoing],
        declare_queue: Option<&str>,
    ) -> Result<(), BusError> {
        let mut slot = self.publisher.lock().await;
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        let usable = slot
            .as_ref()
            .is_some_and(|publisher| publisher.channel.status().connected());
        if !usable {
            *slot = None;
            *slot = Some(self.open_publisher().await?);
        }
        let Some(publisher) = slot.as_mut() else {
            return Err(BusError::Closed);
        };
        let result = self.publish_on(publisher, outgoing, declare_queue).await;
        if result.is_err() {
            // The channel may have been closed by the broker or hold
            // unconfirmed messages; start the next attempt from a fresh one.
            *slot = None;
        }
        result
    }

    async fn publish_on(
        &self,
        publisher: &mut Publisher,
        outgoing: &[Outgoing],
        declare_queue: Option<&str>,
    ) -> Result<(), BusError> {
        if let Some(queue) = declare_queue {
            declare_durable_queue(&publisher.channel, queue).await?;
        }
        for chunk in outgoing.chunks(self.options.max_in_flight.max(1)) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for message in chunk {
                if !is_predeclared(&message.exchange)
                    && !publisher.declared_exchanges.contains(&message.exchange)
                {
                    durable_topic(&publisher.channel, &message.exchange).await?;
                    publisher
                        .declared_exchanges
                        .insert(message.exchange.clone());
                }
                let properties = BasicProperties::default()
                    .with_delivery_mode(PERSISTENT)
                    .with_content_type(CONTENT_TYPE.into())
                    .with_headers(message.headers.clone());
                let confirm = publisher
                    .channel
                    .basic_publish(
                        message.exchange.as_str().into(),
                        message.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: message.mandatory,
                            ..BasicPublishOptions::default()
                        },
                        &message.body,
                        properties,
                    )
                    .await?;
                confirms.push((message, confirm));
            }
            let timeout = self.options.confirm_timeout;
            let wait_all = async {
                for (message, confirm) in confirms {
                    let rejected = |reason: String| BusError::NotConfirmed {
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                        reason,
                    };
                    match confirm.await? {
                        Confirmation::Ack(None) => {}
                        Confirmation::Ack(Some(returned)) => {
                            return Err(rejected(format!(
                                "returned: {} {}",
                                returned.reply_code, returned.reply_text
                            )));
                        }
                        Confirmation::Nack(_) => return Err(rejected("nacked".to_owned())),
                        Confirmation::NotRequested => {
                            return Err(rejected("channel not in confirm mode".to_owned()));
                        }
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeout, wait_all)
                .await
                .map_err(|_| BusError::Timeout(timeout, "publisher confirms"))??;
        }
        Ok(())
    }

    pub(crate) async fn declare(&self, queue: &str, bindings: &[Binding]) -> Result<(), BusError> {
        let channel = self.channel().await?;
        declare_topology(&channel, queue, bindings).await?;
        channel.close(200, "OK".into()).await?;
        Ok(())
    }

    pub(crate) async fn declare_exchanges(&self, exchanges: &[String]) -> Result<(), BusError> {
        let channel = self.channel().await?;
        for exchange in exchanges.iter().filter(|e| !is_predeclared(e)) {
            durable_topic(&channel, exchange).await?;
        }
        channel.close(200, "OK".into()).await?;
        Ok(())
    }

    pub(crate) async fn unbind(&self, queue: &str, bindings: &[Binding]) -> Result<(), BusError> {
        for binding in bindings {
            // One channel per binding: the broker closes the channel of a
            // refused operation.
            let channel = self.channel().await?;
            let unbound = channel
                .queue_unbind(
                    queue.into(),
                    binding.exchange.as_str().into(),
                    binding.pattern.as_str().into(),
                    FieldTable::default(),
                )
                .await;
            match unbound {
                Ok(()) => channel.close(200, "OK".into()).await?,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_queue(&self, queue: &str) -> Result<(), BusError> {
        let channel = self.channel().await?;
        match channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
        {
            Ok(_) => Ok(channel.close(200, "OK".into()).await?),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn close(&self) {
        self.closed.send_replace(true);
        *self.publisher.lock().await = None;
        if let Some(connection) = self.connection.lock().await.take()
            && connection.status().connected()
            && let Err(error) = connection.close(200, "OK".into()).await
        {
            tracing::debug!(url = %self.masked_url, %error, "closing AMQP connection");
        }
    }
}

static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(0);

/// A consumer with its own channel, re-subscribed after connection loss.
pub(crate) struct AmqpConsumer {
    bus: Arc<AmqpBus>,
    closed: watch::Receiver<bool>,
    queue: String,
    bindings: Vec<Binding>,
    prefetch: u16,
    current: Option<(Channel, lapin::Consumer)>,
}

impl AmqpConsumer {
    pub(crate) async fn start(
        bus: &Arc<AmqpBus>,
        queue: &str,
        bindings: &[Binding],
        prefetch: u16,
    ) -> Result<Self, BusError> {
        let mut consumer = Self {
            bus: Arc::clone(bus),
            closed: bus.closed.subscribe(),
            queue: queue.to_owned(),
            bindings: bindings.to_vec(),
            prefetch,
            current: None,
        };
        consumer.current = Some(consumer.subscribe().await?);
        Ok(consumer)
    }

    async fn subscribe(&self) -> Result<(Channel, lapin::Consumer), BusError> {
        let channel = self.bus.channel().await?;
        declare_topology(&channel, &self.queue, &self.bindings).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!(
            "bbb-pulse-{}-{}",
            std::process::id(),
            CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = self.bus.options.initial_backoff;
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let Some((_, consumer)) = self.current.as_mut() else {
                match self.subscribe().await {
                    Ok(current) => {
                        tracing::info!(queue = %self.queue, "consuming again");
                        self.current = Some(current);
                        backoff = self.bus.options.initial_backoff;
                    }
                    Err(error) => {
                        tracing::warn!(
                            queue = %self.queue,
                            %error,
                            retry_in_ms = backoff.as_millis() as u64,
                            "cannot consume; retrying"
                        );
                        if sleep_unless_closed(&mut self.closed, backoff).await {
                            return None;
                        }
                        backoff = self.bus.next_backoff(backoff);
                    }
                }
                continue;
            };
            let item = tokio::select! {
                item = consumer.next() => item,
                _ = self.closed.wait_for(|closed| *closed) => return None,
            };
            match item {
                Some(Ok(delivery)) => {
                    return Some(self.delivery(delivery));
                }
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer lost its channel; re-subscribing");
                    self.current = None;
                }
                None => {
                    tracing::warn!(queue = %self.queue, "consumer cancelled by the broker; re-subscribing");
                    self.current = None;
                }
            }
        }
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let headers = delivery.properties.headers().as_ref();
        let parked_reason = header_string(headers, PARKED_REASON_HEADER);
        let (exchange, routing_key) = if parked_reason.is_some() {
            (
                header_string(headers, ORIGINAL_EXCHANGE_HEADER).unwrap_or_default(),
                header_string(headers, ORIGINAL_ROUTING_KEY_HEADER).unwrap_or_default(),
            )
        } else {
            (
                delivery.exchange.as_str().to_owned(),
                delivery.routing_key.as_str().to_owned(),
            )
        };
        Delivery {
            exchange,
            routing_key,
            cc: header_strings(headers, CC_HEADER),
            redelivered: delivery.redelivered,
            persistent: *delivery.properties.delivery_mode() == Some(PERSISTENT),
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|ct| ct.as_str().to_owned()),
            parked_reason,
            queue: self.queue.clone(),
            settle: Some(Settle::Amqp(AmqpLease {
                acker: delivery.acker,
                bus: Arc::clone(&self.bus),
            })),
            payload: delivery.data,
        }
    }
}

/// The right to settle one AMQP delivery.
pub(crate) struct AmqpLease {
    acker: Acker,
    bus: Arc<AmqpBus>,
}

fn settled(done: lapin::Result<bool>) -> Result<(), BusError> {
    match done {
        Ok(true) => Ok(()),
        Ok(false) => Err(BusError::ChannelClosed),
        Err(error) => Err(error.into()),
    }
}

impl AmqpLease {
    pub(crate) async fn ack(self) -> Result<(), BusError> {
        settled(self.acker.ack(BasicAckOptions::default()).await)
    }

    pub(crate) async fn requeue(self) -> Result<(), BusError> {
        settled(self.acker.nack(requeue_options()).await)
    }

    /// Requeues from a synchronous context (a dropped delivery). If the
    /// channel is already gone, the broker has requeued the message itself.
    pub(crate) fn requeue_in_background(self) {
        if !self.acker.usable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = self.acker.nack(requeue_options()).await {
                tracing::debug!(%error, "requeueing a dropped delivery");
            }
        });
    }

    pub(crate) async fn park(
        self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        cc: &[String],
        payload: &[u8],
        reason: &str,
    ) -> Result<(), BusError> {
        let parked = parked_queue_name(queue);
        let mut headers = cc_headers(cc);
        for (name, value) in [
            (PARKED_REASON_HEADER, reason),
            (PARKED_FROM_HEADER, queue),
            (ORIGINAL_EXCHANGE_HEADER, exchange),
            (ORIGINAL_ROUTING_KEY_HEADER, routing_key),
        ] {
            headers.insert(ShortString::from(name), long_string(value));
        }
        let outgoing = [Outgoing {
            exchange: String::new(),
            routing_key: parked.clone(),
            body: payload.to_vec(),
            headers,
            mandatory: true,
        }];
        match self.bus.publish_outgoing(&outgoing, Some(&parked)).await {
            Ok(()) => self.ack().await,
            Err(error) => {
                tracing::warn!(%queue, %error, "could not park message; returning it to its queue");
                // Best effort: if the channel is gone the broker requeues it anyway.
                let _ = self.acker.nack(requeue_options()).await;
                Err(error)
            }
        }
    }
}

fn requeue_options() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}
