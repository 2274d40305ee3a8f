//! The semantic tests against RabbitMQ, each on a fresh vhost, plus checks
//! that only make sense with a broker.

mod common;

use bbb_pulse::testing::fresh_vhost;
use bbb_pulse::{Bus, BusError};

async fn env(name: &str) -> common::Env {
    common::Env::amqp(name).await
}

semantic_tests!(env);

#[tokio::test]
async fn debug_output_and_errors_mask_the_password() {
    let vhost = fresh_vhost("masking").await.expect("vhost");
    let bus = Bus::connect(Some(&vhost.url)).await.expect("connect");
    let shown = format!("{bus:?}");
    assert!(shown.contains("guest:***@"), "{shown}");
    assert!(!shown.contains("guest:guest"), "{shown}");

    let error = Bus::connect(Some("amqp://user:s3cret@[::1/vh"))
        .await
        .expect_err("malformed URL");
    assert!(matches!(error, BusError::InvalidUrl { .. }));
    assert!(!error.to_string().contains("s3cret"), "{error}");

    let refused = format!("amqp://guest:wrong-password@127.0.0.1:5672/{}", vhost.name);
    let error = Bus::connect(Some(&refused))
        .await
        .expect_err("bad credentials");
    assert!(!error.to_string().contains("wrong-password"), "{error}");
}

#[tokio::test]
async fn exchanges_and_queues_are_durable() {
    let vhost = fresh_vhost("durable").await.expect("vhost");
    let bus = Bus::connect(Some(&vhost.url)).await.expect("connect");
    bus.declare(
        "kept",
        &[bbb_pulse::Binding::new(common::COMPLETED, "primary.#")],
    )
    .await
    .expect("declare");
    bus.publish(&[common::numbered(common::FAILED, 1)])
        .await
        .expect("publish declares the exchange");

    let output = tokio::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_exchanges",
            "-p",
            &vhost.name,
            "name",
            "type",
            "durable",
        ])
        .output()
        .await
        .expect("rabbitmqctl");
    let exchanges = String::from_utf8_lossy(&output.stdout);
    for exchange in [common::COMPLETED, common::FAILED] {
        assert!(
            exchanges
                .lines()
                .any(|line| line.split_whitespace().collect::<Vec<_>>()
                    == [exchange, "topic", "true"]),
            "{exchange} is a durable topic exchange:\n{exchanges}"
        );
    }
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", &vhost.name, "name", "durable"])
        .output()
        .await
        .expect("rabbitmqctl");
    let queues = String::from_utf8_lossy(&output.stdout);
    assert!(
        queues
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["kept", "true"]),
        "kept is durable:\n{queues}"
    );
}
