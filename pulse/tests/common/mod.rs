//! Semantic tests written once and run against both the AMQP bus (on a fresh
//! vhost of the local RabbitMQ) and the in-process bus.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bbb_pulse::testing::{TestVhost, fresh_vhost};
use bbb_pulse::{Binding, Bus, Consumer, Delivery, Message};
use serde_json::json;

/// How long to wait for a message that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(20);
/// How long to wait to be reasonably sure that no further message arrives.
pub const QUIET: Duration = Duration::from_millis(400);

pub const COMPLETED: &str = "exchange/taskcluster-queue/v1/task-completed";
pub const FAILED: &str = "exchange/taskcluster-queue/v1/task-failed";

/// Where the buses of one test live.
pub struct Env {
    shared: Option<Bus>,
    vhost: Option<TestVhost>,
}

impl Env {
    pub async fn amqp(prefix: &str) -> Env {
        let vhost = fresh_vhost(prefix).await.expect("create a test vhost");
        Env {
            shared: None,
            vhost: Some(vhost),
        }
    }

    pub fn in_process() -> Env {
        Env {
            shared: Some(Bus::in_process()),
            vhost: None,
        }
    }

    /// A bus handle. For AMQP each call opens a new connection, like a
    /// separate service instance; in-process handles share one bus.
    pub async fn bus(&self) -> Bus {
        match (&self.shared, &self.vhost) {
            (Some(bus), _) => bus.clone(),
            (None, Some(vhost)) => Bus::connect(Some(&vhost.url)).await.expect("connect"),
            (None, None) => unreachable!("an Env has a bus or a vhost"),
        }
    }
}

pub fn primary_key(task_id: &str, group: &str) -> String {
    format!("primary.{task_id}.0.wg.wid.prov.wt.sched.{group}._")
}

pub fn message(exchange: &str, task_id: &str, group: &str, cc: &[&str]) -> Message {
    Message {
        exchange: exchange.to_owned(),
        routing_key: primary_key(task_id, group),
        cc: cc.iter().map(|r| format!("route.{r}")).collect(),
        payload: json!({"version": 1, "status": {"taskId": task_id, "taskGroupId": group}}),
    }
}

pub fn numbered(exchange: &str, n: u64) -> Message {
    Message {
        exchange: exchange.to_owned(),
        routing_key: format!("primary.t{n}.0._._._._._.G._"),
        cc: Vec::new(),
        payload: json!({"n": n}),
    }
}

pub async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(ARRIVAL, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
}

pub async fn assert_quiet(consumer: &mut Consumer) {
    if let Ok(Some(delivery)) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("unexpected delivery {delivery:?}");
    }
}

fn task_id(delivery: &Delivery) -> String {
    let payload: serde_json::Value = delivery.json().expect("JSON payload");
    payload["status"]["taskId"]
        .as_str()
        .expect("taskId")
        .to_owned()
}

/// Upstream-style bindings: a task-group pattern on the primary key, and CC
/// routes; each message reaches each queue once.
pub async fn routes_upstream_bindings(env: &Env) {
    let publisher = env.bus().await;
    let consumers = env.bus().await;
    let mut by_group = consumers
        .consume(
            "by-group",
            &[Binding::new(COMPLETED, "primary.*.*.*.*.*.*.*.G1.#")],
            10,
        )
        .await
        .expect("consume by-group");
    let mut index = consumers
        .consume(
            "index",
            &[
                Binding::new(COMPLETED, "route.index.#"),
                Binding::new(COMPLETED, "route.index.gecko.#"),
                Binding::new(FAILED, "route.index.#"),
            ],
            10,
        )
        .await
        .expect("consume index");

    let batch = vec![
        message(
            COMPLETED,
            "t1",
            "G1",
            &["index.gecko.v2.latest", "notify.email.x"],
        ),
        message(COMPLETED, "t2", "G2", &[]),
        message(FAILED, "t3", "G1", &[]),
        message(COMPLETED, "t4", "G2", &["index.a", "index.gecko.b"]),
        message(COMPLETED, "t5", "G2", &["notify.irc"]),
    ];
    publisher.publish(&batch).await.expect("publish");

    let first = next(&mut by_group).await;
    assert_eq!(task_id(&first), "t1");
    assert_eq!(first.exchange, COMPLETED);
    assert_eq!(first.routing_key, primary_key("t1", "G1"));
    assert_eq!(
        first.cc,
        vec!["route.index.gecko.v2.latest", "route.notify.email.x"]
    );
    assert!(first.persistent, "published as persistent");
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert!(!first.redelivered);
    assert_eq!(first.queue(), "by-group");
    first.ack().await.expect("ack");
    assert_quiet(&mut by_group).await;

    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut index).await;
        seen.push(task_id(&delivery));
        delivery.ack().await.expect("ack");
    }
    seen.sort();
    assert_eq!(seen, ["t1", "t4"], "each CC'd message once");
    assert_quiet(&mut index).await;
}

/// Several consumers on one queue share the messages; each message is
/// handled exactly once overall.
pub async fn competing_consumers(env: &Env) {
    const COUNT: u64 = 60;
    const CONSUMERS: usize = 3;
    let binding = [Binding::new(COMPLETED, "primary.#")];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for id in 0..CONSUMERS {
        let bus = env.bus().await;
        let mut consumer = bus.consume("work", &binding, 1).await.expect("consume");
        let tx = tx.clone();
        workers.push(tokio::spawn(async move {
            let _bus = bus;
            while let Some(delivery) = consumer.next().await {
                let payload: serde_json::Value = delivery.json().expect("JSON");
                tokio::time::sleep(Duration::from_millis(3)).await;
                delivery.ack().await.expect("ack");
                if tx.send((id, payload["n"].as_u64().expect("n"))).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let publisher = env.bus().await;
    let batch: Vec<Message> = (0..COUNT).map(|n| numbered(COMPLETED, n)).collect();
    publisher.publish(&batch).await.expect("publish");

    let mut handled: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_consumer = [0usize; CONSUMERS];
    for _ in 0..COUNT {
        let (id, n) = tokio::time::timeout(ARRIVAL, rx.recv())
            .await
            .expect("all messages handled in time")
            .expect("workers alive");
        *handled.entry(n).or_default() += 1;
        per_consumer[id] += 1;
    }
    if let Ok(Some(extra)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("message handled twice: {extra:?}");
    }
    for worker in &workers {
        worker.abort();
    }
    assert_eq!(handled.len() as u64, COUNT, "every message handled");
    assert!(handled.values().all(|&times| times == 1), "{handled:?}");
    assert!(
        per_consumer.iter().all(|&count| count > 0),
        "every consumer got a share: {per_consumer:?}"
    );
}

/// `nack_requeue` and dropping a delivery both put the message back, marked
/// redelivered.
pub async fn nack_and_drop_redeliver(env: &Env) {
    let bus = env.bus().await;
    let mut consumer = bus
        .consume("retry", &[Binding::new(COMPLETED, "#")], 5)
        .await
        .expect("consume");
    bus.publish(&[message(COMPLETED, "t1", "G", &[])])
        .await
        .expect("publish");

    let first = next(&mut consumer).await;
    assert!(!first.redelivered);
    first.nack_requeue().await.expect("nack");

    let second = next(&mut consumer).await;
    assert_eq!(task_id(&second), "t1");
    assert!(second.redelivered, "nacked message comes back redelivered");
    drop(second);

    let third = next(&mut consumer).await;
    assert_eq!(task_id(&third), "t1");
    assert!(third.redelivered, "dropped message comes back redelivered");
    third.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;
}

/// A message that cannot be processed is parked with its reason, and the
/// parking queue can be consumed.
pub async fn park_moves_to_parking_queue(env: &Env) {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Expected {
        required: String,
    }
    let bus = env.bus().await;
    let mut consumer = bus
        .consume("bridge", &[Binding::new(COMPLETED, "#")], 5)
        .await
        .expect("consume");
    bus.publish(&[
        message(COMPLETED, "bad", "G", &["index.x"]),
        Message {
            payload: json!({"required": "yes"}),
            ..message(COMPLETED, "good", "G", &[])
        },
    ])
    .await
    .expect("publish");

    let bad = next(&mut consumer).await;
    let error = bad
        .json::<Expected>()
        .expect_err("payload lacks `required`");
    let reason = format!("invalid payload: {error}");
    bad.park(&reason).await.expect("park");
    let good = next(&mut consumer).await;
    assert_eq!(good.json::<Expected>().expect("good").required, "yes");
    good.ack().await.expect("ack");
    assert_quiet(&mut consumer).await;

    let mut parked = bus
        .consume("bridge.parked", &[], 5)
        .await
        .expect("consume parked");
    let delivery = next(&mut parked).await;
    assert_eq!(delivery.parked_reason.as_deref(), Some(reason.as_str()));
    assert_eq!(delivery.exchange, COMPLETED);
    assert_eq!(delivery.routing_key, primary_key("bad", "G"));
    assert_eq!(delivery.cc, vec!["route.index.x"]);
    assert_eq!(task_id(&delivery), "bad");
    assert!(delivery.persistent);
    assert_eq!(delivery.queue(), "bridge.parked");
    delivery.ack().await.expect("ack parked");
    assert_quiet(&mut parked).await;
}

/// A declared queue keeps messages published before its first consumer; a
/// queue name nobody declared receives nothing, as in AMQP.
pub async fn declared_queue_keeps_early_messages(env: &Env) {
    let bus = env.bus().await;
    let binding = [Binding::new(COMPLETED, "primary.#")];
    bus.declare("early", &binding).await.expect("declare");
    bus.publish(&[numbered(COMPLETED, 1)])
        .await
        .expect("publish");

    let mut early = bus.consume("early", &binding, 5).await.expect("consume");
    let delivery = next(&mut early).await;
    assert_eq!(delivery.json::<serde_json::Value>().expect("json")["n"], 1);
    delivery.ack().await.expect("ack");

    let mut late = bus.consume("late", &binding, 5).await.expect("consume");
    assert_quiet(&mut late).await;
}

/// `prefetch` bounds the unsettled deliveries a consumer holds.
pub async fn prefetch_bounds_unacked(env: &Env) {
    let bus = env.bus().await;
    let mut consumer = bus
        .consume("bounded", &[Binding::new(COMPLETED, "#")], 2)
        .await
        .expect("consume");
    let batch: Vec<Message> = (0..5).map(|n| numbered(COMPLETED, n)).collect();
    bus.publish(&batch).await.expect("publish");

    let a = next(&mut consumer).await;
    let b = next(&mut consumer).await;
    assert_quiet(&mut consumer).await;
    a.ack().await.expect("ack");
    let c = next(&mut consumer).await;
    let mut numbers = BTreeSet::new();
    for delivery in [b, c] {
        numbers.insert(delivery.json::<serde_json::Value>().expect("json")["n"].as_u64());
        delivery.ack().await.expect("ack");
    }
    assert_eq!(numbers.len(), 2);
}

/// After `close`, consumers end and publishing fails.
pub async fn close_ends_consumers(env: &Env) {
    let bus = env.bus().await;
    let mut consumer = bus
        .consume("closing", &[Binding::new(COMPLETED, "#")], 5)
        .await
        .expect("consume");
    bus.close().await;
    let ended = tokio::time::timeout(ARRIVAL, consumer.next())
        .await
        .expect("consumer ends in time");
    assert!(ended.is_none());
    assert!(matches!(
        bus.publish(&[numbered(COMPLETED, 1)]).await,
        Err(bbb_pulse::BusError::Closed)
    ));
}

/// The number a [`numbered`] delivery carries.
fn number(delivery: &Delivery) -> u64 {
    delivery.json::<serde_json::Value>().expect("json")["n"]
        .as_u64()
        .expect("n")
}

/// Bindings removed from a queue route nothing more to it; a deleted queue
/// loses its messages and starts empty when declared again; neither is an
/// error when there is nothing to remove.
pub async fn unbind_and_delete_queue(env: &Env) {
    let bus = env.bus().await;
    let (completed, failed) = (Binding::new(COMPLETED, "#"), Binding::new(FAILED, "#"));
    let mut consumer = bus.consume("moving", &[], 5).await.expect("consume");
    bus.declare("moving", &[completed.clone(), failed.clone()])
        .await
        .expect("declare");
    bus.unbind("moving", std::slice::from_ref(&completed))
        .await
        .expect("unbind");
    bus.unbind("moving", std::slice::from_ref(&completed))
        .await
        .expect("unbind again");
    bus.unbind("never-declared", std::slice::from_ref(&failed))
        .await
        .expect("unbind from no queue");
    bus.publish(&[numbered(COMPLETED, 1), numbered(FAILED, 2)])
        .await
        .expect("publish");
    let delivery = next(&mut consumer).await;
    assert_eq!(
        number(&delivery),
        2,
        "the unbound exchange's message arrived"
    );
    delivery.ack().await.expect("ack");

    bus.publish(&[numbered(FAILED, 3)]).await.expect("publish");
    drop(consumer);
    bus.delete_queue("moving").await.expect("delete");
    bus.delete_queue("moving").await.expect("delete again");
    bus.declare("moving", std::slice::from_ref(&failed))
        .await
        .expect("declare again");
    bus.publish(&[numbered(FAILED, 4)]).await.expect("publish");
    let mut consumer = bus.consume("moving", &[], 5).await.expect("consume");
    let delivery = next(&mut consumer).await;
    assert_eq!(
        number(&delivery),
        4,
        "a message of the deleted queue survived"
    );
    delivery.ack().await.expect("ack");
}

/// Generates one `#[tokio::test]` per semantic test, each on its own `Env`.
#[macro_export]
macro_rules! semantic_tests {
    ($make_env:expr) => {
        $crate::semantic_tests!(@each $make_env,
            routes_upstream_bindings,
            competing_consumers,
            nack_and_drop_redeliver,
            park_moves_to_parking_queue,
            declared_queue_keeps_early_messages,
            prefetch_bounds_unacked,
            close_ends_consumers,
            unbind_and_delete_queue,
        );
    };
    (@each $make_env:expr, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let env = $make_env(stringify!($name)).await;
                common::$name(&env).await;
            }
        )+
    };
}
