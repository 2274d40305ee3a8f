//! Pushes to real git repositories on disk become decision tasks in the
//! queue, once each, in the branch's mode; on SQLite and PostgreSQL.

mod common;

use bbb_ci::Mode;
use bbb_testdb::{Backend, on_both_backends, wait_for};
use common::{AUTHOR, Env, PROJECT, Who, World, assert_decision_task, repository};
use serde_json::{Value, json};

on_both_backends!(
    crate::common::World::on;
    modes_decide_per_branch,
    a_broken_taskcluster_yml_is_recorded_and_the_next_push_works,
    webhooks_need_a_good_signature,
    pushes_made_while_stopped_are_handled_after_restart_once,
    poll_failures_are_shown_and_retried,
);

async fn modes_decide_per_branch(w: &World) {
    let origin = w.origin(&["dev", "old"]);
    let repo = repository(
        &origin,
        &[
            ("main", Mode::Taskgraph),
            ("dev", Mode::Shadow),
            ("old", Mode::Buildbot),
        ],
    );
    let env = w.start("a", vec![repo]).await;
    env.polled().await;
    let main = origin.push("main", 1);
    let dev = origin.push("dev", 2);
    let old = origin.push("old", 3);
    for (branch, rev) in [("main", &main), ("dev", &dev)] {
        let pushes = env.handled(branch, 1).await;
        let p = &pushes[0];
        assert_eq!(p["state"], "decided", "{p}");
        assert_eq!(p["revision"], *rev);
        assert_eq!(p["owner"], AUTHOR);
        let id = p["decisionTaskId"].as_str().unwrap();
        assert_decision_task(id, &env.task(id).await, branch, rev);
    }
    let old_pushes = env.handled("old", 1).await;
    assert_eq!(old_pushes[0]["state"], "observed");
    assert_eq!(old_pushes[0]["revision"], old);
    assert_eq!(old_pushes[0]["decisionTaskId"], Value::Null);
    assert_eq!(old_pushes[0]["mode"], "buildbot");
    let main_id = env.pushes("main").await[0]["decisionTaskId"].clone();
    let dev_id = env.pushes("dev").await[0]["decisionTaskId"].clone();
    assert_ne!(main_id, dev_id);
    env.stop().await;
}

async fn a_broken_taskcluster_yml_is_recorded_and_the_next_push_works(w: &World) {
    let origin = w.origin(&[]);
    let env = w
        .start("a", vec![repository(&origin, &[("main", Mode::Taskgraph)])])
        .await;
    env.polled().await;
    origin.commit("main", ".taskcluster.yml", "version: 1\ntasks: [\n");
    let pushes = env.handled("main", 1).await;
    assert_eq!(pushes[0]["state"], "failed");
    let error = pushes[0]["error"].as_str().unwrap();
    assert!(error.contains("not valid YAML"), "{error}");
    assert_eq!(pushes[0]["decisionTaskId"], Value::Null);

    origin.commit(
        "main",
        ".taskcluster.yml",
        "version: 1\ntasks:\n  - {$eval: 'push.nosuch.x'}\n",
    );
    let pushes = env.handled("main", 2).await;
    assert_eq!(pushes[1]["state"], "failed");
    assert!(
        pushes[1]["error"]
            .as_str()
            .unwrap()
            .contains("rendering .taskcluster.yml failed")
    );

    let good = origin.commit("main", ".taskcluster.yml", &common::tcyml());
    let pushes = env.handled("main", 3).await;
    assert_eq!(pushes[2]["state"], "decided", "{}", pushes[2]);
    let id = pushes[2]["decisionTaskId"].as_str().unwrap();
    assert_decision_task(id, &env.task(id).await, "main", &good);
    env.stop().await;
}

/// A GitHub push event for `rev` on `branch`.
fn push_event(branch: &str, before: &str, rev: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": rev,
        "deleted": false,
        "pusher": {"name": "alice", "email": AUTHOR},
        "repository": {"full_name": "bbb/proj"},
    }))
    .unwrap()
}

async fn deliver(env: &Env, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/ci/v1/github/{PROJECT}", env.q.root_url))
        .header("x-github-event", "push")
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn webhooks_need_a_good_signature(w: &World) {
    let origin = w.origin(&[]);
    let mut repo = repository(&origin, &[("main", Mode::Taskgraph)]);
    repo.poll = false;
    repo.webhook_secret = Some("hook-secret".into());
    let env = w.start("a", vec![repo]).await;
    let base = origin.head("main");
    let rev = origin.push("main", 1);
    let body = push_event("main", &base, &rev);

    for signature in [
        None,
        Some(bbb_ci::webhook::sign(b"wrong-secret", &body)),
        Some(bbb_ci::webhook::sign(b"hook-secret", b"another body")),
    ] {
        let (status, answer) = deliver(&env, &body, signature.as_deref()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["code"], "AuthenticationFailed");
    }
    assert!(env.pushes("main").await.is_empty());

    let good = bbb_ci::webhook::sign(b"hook-secret", &body);
    let (status, answer) = deliver(&env, &body, Some(&good)).await;
    assert_eq!(
        (status, answer["recorded"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (status, again) = deliver(&env, &body, Some(&good)).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["recorded"], false,
        "a redelivery is recorded once: {again}"
    );
    let pushes = env.handled("main", 1).await;
    assert_eq!(pushes[0]["source"], "webhook");
    assert_eq!(pushes[0]["baseRevision"], base);
    let id = pushes[0]["decisionTaskId"].as_str().unwrap();
    assert_decision_task(id, &env.task(id).await, "main", &rev);

    let other = env
        .call(Who::Root, "ci", "GET", "repositories/nosuch", None)
        .await;
    assert_eq!(other.status, 404);
    env.stop().await;
}

async fn pushes_made_while_stopped_are_handled_after_restart_once(w: &World) {
    let origin = w.origin(&["dev"]);
    let repo = repository(&origin, &[("main", Mode::Taskgraph), ("dev", Mode::Shadow)]);
    let env = w.start("a", vec![repo.clone()]).await;
    env.polled().await;
    let first = origin.push("main", 1);
    let before = env.handled("main", 1).await;
    env.stop().await;

    // While the service is down: one push on dev, two on main (git keeps no
    // push log, so the poller sees main's last head).
    let dev = origin.push("dev", 2);
    origin.push("main", 3);
    let main = origin.push("main", 4);

    let env = w.start("b", vec![repo]).await;
    let main_pushes = env.handled("main", 2).await;
    let dev_pushes = env.handled("dev", 1).await;
    assert_eq!(
        main_pushes[0], before[0],
        "the push handled before is untouched"
    );
    assert_eq!(main_pushes[0]["revision"], first);
    assert_eq!(main_pushes[1]["revision"], main);
    assert_eq!(main_pushes[1]["baseRevision"], first);
    assert_eq!(dev_pushes[0]["revision"], dev);
    for (branch, p) in [("main", &main_pushes[1]), ("dev", &dev_pushes[0])] {
        assert_eq!(p["state"], "decided", "{p}");
        assert_eq!(p["attempts"], 1);
        let id = p["decisionTaskId"].as_str().unwrap();
        assert_decision_task(
            id,
            &env.task(id).await,
            branch,
            p["revision"].as_str().unwrap(),
        );
    }
    // A later poll records nothing more.
    let next = origin.push("dev", 5);
    let dev_pushes = env.handled("dev", 2).await;
    assert_eq!(dev_pushes[1]["revision"], next);
    assert_eq!(env.pushes("main").await.len(), 2);
    env.stop().await;
}

async fn poll_failures_are_shown_and_retried(w: &World) {
    let missing = w.dir.path().join("not-yet");
    let mut repo = repository(
        &common::Origin {
            path: missing.clone(),
        },
        &[("main", Mode::Taskgraph)],
    );
    repo.clone_url = Some(missing.display().to_string());
    let env = w.start("a", vec![repo]).await;
    let error = wait_for("a poll error shown", || async {
        let r = env
            .ci("GET", &format!("repositories/{PROJECT}"), None)
            .await;
        (r["pollError"]["failuresInARow"].as_i64() >= Some(2)).then(|| r["pollError"].clone())
    })
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("git ls-remote failed"),
        "{error}"
    );
    assert!(error["time"].is_string());

    let origin = common::Origin::create(missing, &[]);
    env.polled().await;
    // A poll that works records the heads first and then clears the error
    // (the heads are written as each branch is read): wait for the second.
    let r = wait_for("the poll error cleared", || async {
        let r = env
            .ci("GET", &format!("repositories/{PROJECT}"), None)
            .await;
        r["pollError"].is_null().then_some(r)
    })
    .await;
    assert_eq!(r["pollError"], Value::Null);
    let rev = origin.push("main", 1);
    let pushes = env.handled("main", 1).await;
    assert_eq!(pushes[0]["revision"], rev);
    assert_eq!(pushes[0]["state"], "decided");
    env.stop().await;
}

/// Two services on one PostgreSQL database: every push recorded and decided
/// once, whichever service saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_database_decide_each_push_once() {
    World::on(Backend::Postgres, async |w: &World| {
        let origin = w.origin(&["dev", "rel"]);
        let repo = repository(
            &origin,
            &[
                ("main", Mode::Taskgraph),
                ("dev", Mode::Shadow),
                ("rel", Mode::Taskgraph),
            ],
        );
        let a = w.start("a", vec![repo.clone()]).await;
        let b = w.start("b", vec![repo]).await;
        a.polled().await;
        let mut revisions = Vec::new();
        for n in 0..4 {
            for branch in ["main", "dev", "rel"] {
                revisions.push((branch, origin.push(branch, n)));
            }
            // Let a poll see each round, so each is a push of its own.
            for branch in ["main", "dev", "rel"] {
                a.handled(branch, n + 1).await;
            }
        }
        let mut ids = std::collections::HashSet::new();
        for branch in ["main", "dev", "rel"] {
            let pushes = b.handled(branch, 4).await;
            let expected: Vec<&String> = revisions
                .iter()
                .filter(|(b, _)| *b == branch)
                .map(|(_, r)| r)
                .collect();
            let got: Vec<&str> = pushes
                .iter()
                .map(|p| p["revision"].as_str().unwrap())
                .collect();
            assert_eq!(got, expected, "{branch}: each push once, in order");
            for p in &pushes {
                assert_eq!(p["state"], "decided", "{p}");
                assert_eq!(p["attempts"], 1, "decided once: {p}");
                let id = p["decisionTaskId"].as_str().unwrap().to_owned();
                assert_decision_task(
                    &id,
                    &b.task(&id).await,
                    branch,
                    p["revision"].as_str().unwrap(),
                );
                assert!(ids.insert(id));
            }
        }
        assert_eq!(ids.len(), 12);
        a.stop().await;
        b.stop().await;
    })
    .await;
}
