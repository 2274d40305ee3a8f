//! The in-process bus: named queues, topic bindings and competing consumers
//! held in memory, with the same delivery semantics as the AMQP bus.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, watch};

use crate::{Binding, BusError, Delivery, Message, Settle, parked_queue_name, topic_matches};

/// One message as stored in an in-process queue.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) cc: Vec<String>,
    pub(crate) payload: Vec<u8>,
    pub(crate) redelivered: bool,
    pub(crate) parked_reason: Option<String>,
}

/// A named in-process queue.
#[derive(Debug)]
pub(crate) struct MemQueue {
    name: String,
    ready: Mutex<VecDeque<Envelope>>,
    /// Woken whenever a message becomes ready or a consumer's in-flight count
    /// drops.
    changed: Notify,
}

impl MemQueue {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ready: Mutex::new(VecDeque::new()),
            changed: Notify::new(),
        }
    }

    fn ready(&self) -> MutexGuard<'_, VecDeque<Envelope>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, envelope: Envelope) {
        self.ready().push_back(envelope);
        self.changed.notify_waiters();
    }

    /// Puts an unsettled message back at the head of the queue, as a broker
    /// does when a consumer rejects it or goes away.
    fn requeue(&self, mut envelope: Envelope) {
        envelope.redelivered = true;
        self.ready().push_front(envelope);
        self.changed.notify_waiters();
    }
}

#[derive(Debug)]
struct QueueEntry {
    queue: Arc<MemQueue>,
    bindings: Vec<Binding>,
}

/// Shared state of an in-process bus.
#[derive(Debug)]
pub(crate) struct MemoryBus {
    queues: Mutex<BTreeMap<String, QueueEntry>>,
    closed: watch::Sender<bool>,
}

impl MemoryBus {
    pub(crate) fn new() -> Self {
        Self {
            queues: Mutex::new(BTreeMap::new()),
            closed: watch::Sender::new(false),
        }
    }

    fn queues(&self) -> MutexGuard<'_, BTreeMap<String, QueueEntry>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Creates the queue if missing and adds the bindings it does not have yet.
    pub(crate) fn declare(&self, queue: &str, bindings: &[Binding]) -> Arc<MemQueue> {
        let mut queues = self.queues();
        let entry = queues
            .entry(queue.to_owned())
            .or_insert_with(|| QueueEntry {
                queue: Arc::new(MemQueue::new(queue)),
                bindings: Vec::new(),
            });
        for binding in bindings {
            let known = entry
                .bindings
                .iter()
                .any(|b| b.exchange == binding.exchange && b.pattern == binding.pattern);
            if !known {
                entry.bindings.push(binding.clone());
            }
        }
        Arc::clone(&entry.queue)
    }

    /// Removes the given bindings from the queue, if it exists.
    pub(crate) fn unbind(&self, queue: &str, bindings: &[Binding]) {
        if let Some(entry) = self.queues().get_mut(queue) {
            entry.bindings.retain(|b| {
                !bindings
                    .iter()
                    .any(|u| u.exchange == b.exchange && u.pattern == b.pattern)
            });
        }
    }

    /// Forgets the queue and the messages in it. Its consumers get nothing
    /// more.
    pub(crate) fn delete_queue(&self, queue: &str) {
        self.queues().remove(queue);
    }

    pub(crate) fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        let mut prepared = Vec::with_capacity(batch.len());
        for message in batch {
            crate::validate_message(message)?;
            prepared.push(Envelope {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                cc: message.cc.clone(),
                payload: serde_json::to_vec(&message.payload)?,
                redelivered: false,
                parked_reason: None,
            });
        }
        let queues = self.queues();
        for envelope in prepared {
            if envelope.exchange.is_empty() {
                // The default exchange routes to the queue named by the key.
                if let Some(entry) = queues.get(&envelope.routing_key) {
                    entry.queue.push(envelope);
                }
                continue;
            }
            for entry in queues.values() {
                let routed = entry.bindings.iter().any(|binding| {
                    binding.exchange == envelope.exchange
                        && (topic_matches(&binding.pattern, &envelope.routing_key)
                            || envelope
                                .cc
                                .iter()
                                .any(|cc| topic_matches(&binding.pattern, cc)))
                });
                if routed {
                    entry.queue.push(envelope.clone());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn consume(
        self: &Arc<Self>,
        queue: &str,
        bindings: &[Binding],
        prefetch: u16,
    ) -> Result<MemoryConsumer, BusError> {
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        let queue = self.declare(queue, bindings);
        Ok(MemoryConsumer {
            bus: Arc::clone(self),
            closed: self.closed.subscribe(),
            queue,
            in_flight: Arc::new(AtomicUsize::new(0)),
            prefetch: usize::from(prefetch),
        })
    }

    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// A consumer on an in-process queue.
#[derive(Debug)]
pub(crate) struct MemoryConsumer {
    bus: Arc<MemoryBus>,
    closed: watch::Receiver<bool>,
    queue: Arc<MemQueue>,
    in_flight: Arc<AtomicUsize>,
    /// Zero means unlimited, as for AMQP `basic.qos`.
    prefetch: usize,
}

impl MemoryConsumer {
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            // Register interest before looking, so a push between the check
            // and the wait is not missed.
            changed.as_mut().enable();
            if *self.closed.borrow() {
                return None;
            }
            let has_room =
                self.prefetch == 0 || self.in_flight.load(Ordering::SeqCst) < self.prefetch;
            if has_room && let Some(envelope) = self.queue.ready().pop_front() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                let lease = Lease {
                    bus: Arc::clone(&self.bus),
                    queue: Arc::clone(&self.queue),
                    in_flight: Arc::clone(&self.in_flight),
                    envelope: envelope.clone(),
                };
                return Some(Delivery::from_memory(
                    &self.queue.name,
                    envelope,
                    Settle::Memory(lease),
                ));
            }
            tokio::select! {
                () = &mut changed => {}
                _ = self.closed.wait_for(|closed| *closed) => return None,
            }
        }
    }
}

/// The right to settle one in-process delivery.
#[derive(Debug)]
pub(crate) struct Lease {
    bus: Arc<MemoryBus>,
    queue: Arc<MemQueue>,
    in_flight: Arc<AtomicUsize>,
    envelope: Envelope,
}

impl Lease {
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.queue.changed.notify_waiters();
    }

    pub(crate) fn ack(self) {
        self.release();
    }

    pub(crate) fn requeue(self) {
        self.release();
        self.queue.requeue(self.envelope);
    }

    pub(crate) fn park(self, reason: &str) {
        let parked = self.bus.declare(&parked_queue_name(&self.queue.name), &[]);
        let mut envelope = self.envelope.clone();
        envelope.redelivered = false;
        envelope.parked_reason = Some(reason.to_owned());
        parked.push(envelope);
        self.ack();
    }
}
