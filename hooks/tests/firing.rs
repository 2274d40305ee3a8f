//! Hooks firing on their own: cron schedules (once per slot, also with two
//! processes on one PostgreSQL database, and a slot missed while nothing ran)
//! and Pulse bindings (on the in-process bus and on RabbitMQ).

mod common;

use bbb_pulse::Message;
use bbb_queue::testing::TestOptions;
use bbb_testdb::{Backend, PgDatabase, on_both_backends};
use common::{Env, Who, hook_def, options, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

on_both_backends!(
    crate::common::Env::on;
    a_scheduled_hook_fires_every_slot,
    a_slot_missed_while_nothing_ran_fires_once,
    a_pulse_binding_fires_the_hook_per_matching_message,
);

/// A hook firing every second into its own task group.
fn every_second(group_id: &str) -> Value {
    let mut def = hook_def(json!({"taskGroupId": group_id}));
    def["schedule"] = json!(["* * * * * *"]);
    def
}

/// The tasks of a task group: (taskId, created).
async fn group_tasks(env: &Env, group_id: &str) -> Vec<(String, String)> {
    let a = env
        .call(
            Who::Root,
            "queue",
            "GET",
            &format!("task-group/{group_id}/list"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["status"]["taskId"].as_str().unwrap().to_owned(),
                t["task"]["created"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every recorded firing created one task of the group, at a distinct slot
/// (a whole second), and the group has no other task.
async fn assert_one_task_per_slot(env: &Env, path: &str, group_id: &str) -> usize {
    let fires = env.fires(path).await;
    let tasks = group_tasks(env, group_id).await;
    assert!(
        fires
            .iter()
            .all(|f| f["result"] == "success" && f["firedBy"] == "schedule"),
        "{fires:?}"
    );
    let fired: BTreeSet<&str> = fires
        .iter()
        .map(|f| f["taskId"].as_str().unwrap())
        .collect();
    let created: BTreeSet<&str> = tasks.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(fired, created, "firings and tasks differ");
    assert_eq!(fired.len(), fires.len(), "a task was recorded twice");
    let slots: BTreeSet<&str> = tasks.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        slots.len(),
        tasks.len(),
        "two tasks for one slot: {tasks:?}"
    );
    assert!(slots.iter().all(|c| c.ends_with(".000Z")), "{slots:?}");
    tasks.len()
}

/// Create `g/cron` firing every second through `by`, wait until `watch`
/// sees `n` firings, and take the schedule away again through `watch`.
async fn fire_every_second(by: &Env, watch: &Env, group_id: &str, n: usize) {
    by.create("g/cron", &every_second(group_id)).await;
    wait_for(60, "scheduled firings", async || {
        (watch.fires("g/cron").await.len() >= n).then_some(())
    })
    .await;
    let mut stopped = every_second(group_id);
    stopped["schedule"] = json!([]);
    watch
        .ok(Who::Root, "POST", "hooks/g/cron", Some(&stopped))
        .await;
}

async fn a_scheduled_hook_fires_every_slot(env: &Env) {
    let group_id = bbb_service::validate::slugid();
    // Once stopped, nothing fires after the schedule is gone.
    fire_every_second(env, env, &group_id, 3).await;
    let status = env.ok(Who::Root, "GET", "hooks/g/cron/status", None).await;
    assert!(status.get("nextScheduledDate").is_none(), "{status}");
    assert_eq!(status["lastFire"]["result"], "success");
    // A firing under way when the schedule changed still finishes; wait for
    // the group to match the record before comparing.
    wait_for(30, "the last firing to be recorded", async || {
        (env.fires("g/cron").await.len() == group_tasks(env, &group_id).await.len()).then_some(())
    })
    .await;
    assert!(assert_one_task_per_slot(env, "g/cron", &group_id).await >= 3);
}

async fn a_slot_missed_while_nothing_ran_fires_once(env: &Env) {
    // Daily, half a day from now: no slot comes while the test runs unless
    // the clock is moved.
    let hour = (env.q.clock.now_ms() / 3_600_000 + 12) % 24;
    let mut def = hook_def(json!({}));
    def["schedule"] = json!([format!("0 0 {hour} * * *")]);
    env.create("g/daily", &def).await;
    let status = env.ok(Who::Root, "GET", "hooks/g/daily/status", None).await;
    let first = status["nextScheduledDate"].as_str().unwrap().to_owned();
    // Three slots pass while nothing fires: the first of them fires, once,
    // and the next slot is the one after the present.
    let ahead = bbb_clock::parse_ms(&first).unwrap() - env.q.clock.now_ms();
    env.q.clock.advance(Duration::from_millis(
        ahead as u64 + 2 * 86_400_000 + 3_600_000,
    ));
    let status = wait_for(30, "the missed slot to fire", async || {
        let s = env.ok(Who::Root, "GET", "hooks/g/daily/status", None).await;
        (s["nextScheduledDate"].as_str() != Some(first.as_str())).then_some(s)
    })
    .await;
    let next = bbb_clock::parse_ms(status["nextScheduledDate"].as_str().unwrap()).unwrap();
    assert!(next > env.q.clock.now_ms(), "{status}");
    let fires = env.fires("g/daily").await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    // Its task is created at the slot, more than 15 minutes ago by now: the
    // queue refuses it as upstream's does, and the refusal is the record.
    assert_eq!(fires[0]["result"], "error");
    assert!(
        fires[0]["error"].as_str().unwrap().contains("InputError"),
        "{}",
        fires[0]
    );
}

async fn a_pulse_binding_fires_the_hook_per_matching_message(env: &Env) {
    pulse_binding_fires(env).await;
}

/// A hook bound to `match.#` on a test exchange fires once per matching
/// message whose body fits its trigger schema, with the body as `payload`.
async fn pulse_binding_fires(env: &Env) {
    let exchange = "exchange/bbb-test/hooks";
    let mut def = hook_def(json!({"payload": {"n": "${payload.n}", "by": "${firedBy}"}}));
    def["bindings"] = json!([{"exchange": exchange, "routingKeyPattern": "match.#"}]);
    def["triggerSchema"] = json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    });
    env.create("g/pulse", &def).await;
    let bus = &env.q.running.bus;
    let publish = async |key: &str, payload: Value| {
        bus.publish(&[Message {
            exchange: exchange.into(),
            routing_key: key.into(),
            cc: Vec::new(),
            payload,
        }])
        .await
        .expect("publish");
    };
    // Messages published before the hook's queue is bound reach nothing; keep
    // publishing until one fires the hook.
    let mut sent = Vec::new();
    wait_for(30, "the binding to fire the hook", async || {
        let n = sent.len() as i64;
        sent.push(n);
        publish("match.first", json!({"n": n})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        (!env.fires("g/pulse").await.is_empty()).then_some(())
    })
    .await;
    // Then: a message the bindings do not match, one whose body fails the
    // trigger schema, and a matching one, in this order on one queue.
    publish("other.key", json!({"n": 1000})).await;
    publish("match.bad", json!({"n": "not a number"})).await;
    publish("match.last", json!({"n": 2000})).await;
    let fired = wait_for(30, "the matching message to fire the hook", async || {
        let ns = fired_ns(env).await;
        ns.contains(&2000).then_some(ns)
    })
    .await;
    let distinct: BTreeSet<i64> = fired.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        fired.len(),
        "a message fired twice: {fired:?}"
    );
    assert!(
        !fired.contains(&1000),
        "an unmatched message fired: {fired:?}"
    );
    assert!(
        fired.iter().all(|n| *n == 2000 || sent.contains(n)),
        "{fired:?}"
    );

    // Bound to another pattern instead, the hook fires for that one only.
    let mut moved = def.clone();
    moved["bindings"] = json!([{"exchange": exchange, "routingKeyPattern": "second.#"}]);
    env.ok(Who::Root, "POST", "hooks/g/pulse", Some(&moved))
        .await;
    let mut n = 4000;
    wait_for(30, "the new binding to fire the hook", async || {
        n += 1;
        publish("second.first", json!({"n": n})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        fired_ns(env).await.iter().any(|n| *n > 4000).then_some(())
    })
    .await;
    publish("match.old", json!({"n": 5000})).await;
    publish("second.last", json!({"n": 6000})).await;
    let fired = wait_for(30, "the last message to fire the hook", async || {
        let ns = fired_ns(env).await;
        ns.contains(&6000).then_some(ns)
    })
    .await;
    assert!(!fired.contains(&5000), "the old binding fired: {fired:?}");
}

/// The `n` of the message behind each of `g/pulse`'s firings.
async fn fired_ns(env: &Env) -> Vec<i64> {
    let mut ns = Vec::new();
    for f in env.fires("g/pulse").await {
        assert_eq!(f["firedBy"], "pulseMessage");
        assert_eq!(f["result"], "success", "{f}");
        let task = env.task(f["taskId"].as_str().unwrap()).await;
        assert_eq!(task["payload"]["by"], "pulseMessage");
        ns.push(
            task["payload"]["n"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap(),
        );
    }
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pulse_binding_fires_the_hook_on_rabbitmq() {
    let vhost = bbb_pulse::testing::fresh_vhost("hooks")
        .await
        .expect("vhost");
    let env = Env::start(TestOptions {
        amqp_url: Some(vhost.url.clone()),
        ..options(Backend::Postgres)
    })
    .await;
    pulse_binding_fires(&env).await;
    env.q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_database_fire_each_slot_once() {
    let pg = PgDatabase::create("bbbhooks").await.expect("database");
    let on_db = || TestOptions {
        database_url: Some(pg.url().to_owned()),
        ..options(Backend::Postgres)
    };
    let a = Env::start(on_db()).await;
    let b = Env::start(on_db()).await;
    let group_id = bbb_service::validate::slugid();
    fire_every_second(&a, &b, &group_id, 5).await;
    // Both stopped (a firing under way ends first), a third process looks.
    a.q.stop().await;
    b.q.stop().await;
    let c = Env::start(on_db()).await;
    assert!(assert_one_task_per_slot(&c, "g/cron", &group_id).await >= 5);
    c.q.stop().await;
}
