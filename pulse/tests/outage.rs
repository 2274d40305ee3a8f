//! Broker outage: a publisher keeps sending numbered messages while the
//! broker is stopped and started again; the consumer ends up with every
//! number.
//!
//! This stops the whole local broker, so it lives in its own test binary and
//! holds the broker lock exclusively (`testing::exclusive_broker`): it waits
//! for every other test using a `testing::fresh_vhost` to finish, and they
//! wait for it. The guard restarts the broker when dropped, even if the test
//! fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bbb_pulse::testing::exclusive_broker;
use bbb_pulse::{Binding, Bus, BusOptions, Message};
use serde_json::json;

const EXCHANGE: &str = "exchange/taskcluster-queue/v1/task-pending";
const COUNT: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(240);

fn numbered(n: u64) -> Message {
    Message {
        exchange: EXCHANGE.to_owned(),
        routing_key: format!("primary.t{n}.0._._.prov.wt.sched.G._"),
        cc: vec![format!("route.index.n.{n}")],
        payload: json!({"version": 1, "n": n}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_lost_across_a_broker_restart() {
    let mut broker = exclusive_broker().await.expect("broker lock");
    let vhost = broker.fresh_vhost("outage").await.expect("vhost");
    let options = BusOptions {
        publish_attempts: 2,
        connect_timeout: Duration::from_secs(5),
        confirm_timeout: Duration::from_secs(10),
        ..BusOptions::default()
    };
    let publisher = Bus::connect_with(&vhost.url, options.clone())
        .await
        .expect("publisher connects");
    let consumer_bus = Bus::connect_with(&vhost.url, options)
        .await
        .expect("consumer connects");
    let mut consumer = consumer_bus
        .consume("outage", &[Binding::new(EXCHANGE, "route.index.n.#")], 50)
        .await
        .expect("consume");

    let confirmed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn({
        let confirmed = Arc::clone(&confirmed);
        let failures = Arc::clone(&failures);
        async move {
            for n in 0..COUNT {
                // Retry the same message until the broker confirms it.
                while let Err(error) = publisher.publish(&[numbered(n)]).await {
                    assert!(error.is_transient(), "unexpected error {error}");
                    failures.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                confirmed.store(n + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let consuming = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut deliveries = 0u64;
        while (seen.len() as u64) < COUNT {
            let delivery = consumer.next().await.expect("consumer stays open");
            let payload: serde_json::Value = delivery.json().expect("JSON");
            seen.insert(payload["n"].as_u64().expect("n"));
            deliveries += 1;
            // An ack lost with the connection only means a redelivery.
            let _ = delivery.ack().await;
        }
        (seen, deliveries)
    });

    tokio::time::timeout(DEADLINE, async {
        while confirmed.load(Ordering::SeqCst) < COUNT / 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("first third published");
    broker.stop_app().await.expect("stop_app");
    let before_restart = confirmed.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.start_app().await.expect("start_app");

    tokio::time::timeout(DEADLINE, publishing)
        .await
        .expect("publisher finishes in time")
        .expect("publisher task");
    let (seen, deliveries) = tokio::time::timeout(DEADLINE, consuming)
        .await
        .expect("consumer receives everything in time")
        .expect("consumer task");

    let expected: BTreeSet<u64> = (0..COUNT).collect();
    assert_eq!(seen, expected, "every number at least once");
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "publishing failed while the broker was down"
    );
    assert!(before_restart < COUNT, "the outage happened mid-stream");
    eprintln!(
        "{deliveries} deliveries for {COUNT} messages, {} failed publish calls",
        failures.load(Ordering::SeqCst)
    );
    consumer_bus.close().await;
    drop(vhost);
}
