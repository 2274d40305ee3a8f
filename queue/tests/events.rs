//! Pulse events on a real RabbitMQ: exchanges, routing keys, CC routes, payloads,
//! and no message lost across a broker outage.

mod common;

use bbb_pulse::{Binding, Bus, Consumer};
use bbb_queue::testing::{TestOptions, TestQueue};
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const X: &str = "exchange/taskcluster-queue/v1/";

async fn next_json(c: &mut Consumer) -> (String, String, Value) {
    let d = tokio::time::timeout(Duration::from_secs(30), c.next())
        .await
        .expect("an event within 30 s")
        .expect("consumer open");
    let out = (
        d.exchange.clone(),
        d.routing_key.clone(),
        d.json::<Value>().unwrap(),
    );
    d.ack().await.unwrap();
    out
}

/// A queue (on PostgreSQL if `postgres`) publishing on the vhost at
/// `vhost_url`, and a client of that vhost.
async fn queue_and_bus(vhost_url: &str, postgres: bool) -> (TestQueue, Bus) {
    let q = TestQueue::with(TestOptions {
        postgres,
        amqp_url: Some(vhost_url.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap();
    let bus = Bus::connect(Some(vhost_url)).await.unwrap();
    (q, bus)
}

async fn lifecycle_events(postgres: bool) {
    let vhost = bbb_pulse::testing::fresh_vhost("queue-events")
        .await
        .unwrap();
    let (q, bus) = queue_and_bus(&vhost.url, postgres).await;
    let group = slug();
    let names = [
        "task-defined",
        "task-pending",
        "task-running",
        "task-completed",
        "artifact-created",
    ];
    let mut bindings: Vec<Binding> = names
        .iter()
        .map(|n| {
            Binding::new(
                format!("{X}{n}"),
                format!("primary.*.*.*.*.*.*.*.{group}.#"),
            )
        })
        .collect();
    bindings.push(Binding::new(
        format!("{X}task-group-resolved"),
        format!("primary.{group}.#"),
    ));
    // Also bound to the route: the message must still arrive once on this queue.
    bindings.push(Binding::new(
        format!("{X}task-completed"),
        "route.index.test.#",
    ));
    let mut all = bus
        .consume(&format!("all-{group}"), &bindings, 50)
        .await
        .unwrap();
    let mut routed = bus
        .consume(
            &format!("routed-{group}"),
            &[Binding::new(
                format!("{X}task-completed"),
                "route.index.test.#",
            )],
            50,
        )
        .await
        .unwrap();

    let queue = root(&q);
    let id = new_task(
        &queue,
        "prov/ev",
        json!({"taskGroupId": group, "routes": ["index.test.latest"], "tags": {"kind": "build"}}),
    )
    .await;
    let (_, t) = claim_as_task(&q, &queue, "prov/ev", "w1").await;
    t.createArtifact(&id, "0", "public/ref", &json!({"storageType": "reference", "contentType": "text/plain", "url": "http://x.example/", "expires": from_now(600)}))
        .await
        .unwrap();
    t.reportCompleted(&id, "0").await.unwrap();

    let mut got: HashMap<String, (String, Value)> = HashMap::new();
    while got.len() < 6 {
        let (exchange, key, payload) = next_json(&mut all).await;
        let name = exchange.trim_start_matches(X).to_string();
        assert!(
            got.insert(name.clone(), (key, payload)).is_none(),
            "{name} arrived twice"
        );
    }
    let key = |n: &str| got[n].0.clone();
    assert_eq!(
        key("task-defined"),
        format!("primary.{id}._._._.prov.ev.-.{group}._")
    );
    assert_eq!(
        key("task-pending"),
        format!("primary.{id}.0._._.prov.ev.-.{group}._")
    );
    assert_eq!(
        key("task-running"),
        format!("primary.{id}.0.wg.w1.prov.ev.-.{group}._")
    );
    assert_eq!(
        key("task-completed"),
        format!("primary.{id}.0.wg.w1.prov.ev.-.{group}._")
    );
    assert_eq!(key("task-group-resolved"), format!("primary.{group}.-._"));
    let p = |n: &str| got[n].1.clone();
    assert_eq!(p("task-defined")["status"]["state"], "unscheduled");
    assert_eq!(p("task-defined")["version"], 1);
    assert_eq!(p("task-defined")["task"]["tags"]["kind"], "build");
    assert_eq!(p("task-pending")["runId"], 0);
    assert_eq!(p("task-running")["workerId"], "w1");
    assert!(p("task-running")["takenUntil"].is_string());
    assert_eq!(p("task-completed")["status"]["state"], "completed");
    assert_eq!(p("artifact-created")["artifact"]["name"], "public/ref");
    assert_eq!(
        p("artifact-created")["artifact"]["storageType"],
        "reference"
    );
    assert_eq!(p("task-group-resolved")["taskGroupId"], group.as_str());
    assert_eq!(p("task-group-resolved")["schedulerId"], "-");

    let (exchange, key, payload) = next_json(&mut routed).await;
    assert_eq!(exchange, format!("{X}task-completed"));
    assert_eq!(key, format!("primary.{id}.0.wg.w1.prov.ev.-.{group}._"));
    assert_eq!(payload["status"]["taskId"], id.as_str());
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_events_sqlite() {
    lifecycle_events(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_events_postgres() {
    lifecycle_events(true).await;
}

/// The broker goes away while tasks are created; the events wait in the outbox
/// and all arrive once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_event_lost_across_broker_outage() {
    let mut broker = bbb_pulse::testing::exclusive_broker().await.unwrap();
    let vhost = broker.fresh_vhost("queue-outage").await.unwrap();
    let (q, bus) = queue_and_bus(&vhost.url, false).await;
    let group = slug();
    let queue_name = format!("outage-{group}");
    let binding = [Binding::new(
        format!("{X}task-defined"),
        format!("primary.*.*.*.*.*.*.*.{group}.#"),
    )];
    bus.declare(&queue_name, &binding).await.unwrap();

    let queue = root(&q);
    let mut ids = Vec::new();
    for i in 0..60 {
        if i == 20 {
            broker.stop_app().await.unwrap();
        }
        if i == 40 {
            broker.start_app().await.unwrap();
        }
        let id = new_task(&queue, "prov/out", json!({"taskGroupId": group})).await;
        ids.push(id);
    }
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    let mut consumer = bus.consume(&queue_name, &binding, 100).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let (_, _, payload) = next_json(&mut consumer).await;
        seen.insert(payload["status"]["taskId"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert!(seen.contains(id), "task-defined for {id} was lost");
    }
    q.stop().await;
}
