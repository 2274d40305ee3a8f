//! The repositories API: scopes, validation, branch modes and their record;
//! on SQLite and PostgreSQL.

mod common;

use bbb_testdb::on_both_backends;
use common::{Who, World};
use serde_json::{Value, json};

on_both_backends!(
    crate::common::World::on;
    repositories_and_mode_changes,
);

fn definition() -> Value {
    json!({
        "url": "https://git.example/bbb/proj",
        "kind": "git",
        "trustDomain": "bbbtest",
        "level": 1,
        "poll": false,
        "webhookSecret": "s3cret",
        "branches": [{"name": "main", "mode": "buildbot"}, {"name": "dev", "mode": "buildbot"}],
    })
}

async fn repositories_and_mode_changes(w: &World) {
    let env = w.start("a", vec![]).await;
    let put = |who, body: Value| {
        let env = &env;
        async move {
            env.call(who, "ci", "PUT", "repositories/proj", Some(&body))
                .await
        }
    };

    let a = put(Who::Client("nobody"), definition()).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.body["code"], "InsufficientScopes");
    let mut bad = definition();
    bad["level"] = json!(4);
    assert_eq!(put(Who::Client("manager"), bad).await.status, 400);
    let mut bad = definition();
    bad["branches"][0]["mode"] = json!("sometimes");
    assert_eq!(put(Who::Client("manager"), bad).await.status, 400);
    let mut bad = definition();
    bad["url"] = json!("not a url");
    assert_eq!(put(Who::Client("manager"), bad).await.status, 400);

    let a = put(Who::Client("manager"), definition()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["webhookSecretSet"], true);
    assert!(
        !a.body.to_string().contains("s3cret"),
        "the secret is never shown"
    );
    assert_eq!(
        a.body["branches"][0],
        json!({"name": "dev", "mode": "buildbot", "polledHead": null})
    );

    // The manager may set dev's mode, not main's.
    let mode = |branch: &str, mode: &str| json!({"branch": branch, "mode": mode});
    let a = env
        .call(
            Who::Client("manager"),
            "ci",
            "POST",
            "repositories/proj/branch-mode",
            Some(&mode("main", "taskgraph")),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = env
        .call(
            Who::Client("manager"),
            "ci",
            "POST",
            "repositories/proj/branch-mode",
            Some(&mode("dev", "shadow")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["changed"], true);
    let a = env
        .call(
            Who::Root,
            "ci",
            "POST",
            "repositories/proj/branch-mode",
            Some(&mode("nosuch", "shadow")),
        )
        .await;
    assert_eq!(a.status, 404);
    env.ci(
        "POST",
        "repositories/proj/branch-mode",
        Some(&mode("dev", "taskgraph")),
    )
    .await;
    let same = env
        .ci(
            "POST",
            "repositories/proj/branch-mode",
            Some(&mode("dev", "taskgraph")),
        )
        .await;
    assert_eq!(same["changed"], false);

    // An update without the secret keeps it and drops the branches it omits.
    let mut update = definition();
    update.as_object_mut().unwrap().remove("webhookSecret");
    update["branches"] = json!([{"name": "main", "mode": "shadow"}]);
    let r = put(Who::Client("manager"), update).await.body;
    assert_eq!(r["webhookSecretSet"], true);
    assert_eq!(
        r["branches"],
        json!([{"name": "main", "mode": "shadow", "polledHead": null}])
    );

    let changes =
        env.ci("GET", "repositories/proj/mode-changes", None).await["modeChanges"].clone();
    let summary: Vec<(String, Value, String, String)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["changed"].is_string());
            (
                c["branch"].as_str().unwrap().to_owned(),
                c["oldMode"].clone(),
                c["mode"].as_str().unwrap().to_owned(),
                c["changedBy"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s =
        |b: &str, old: Value, m: &str, who: &str| (b.to_owned(), old, m.to_owned(), who.to_owned());
    assert_eq!(
        summary,
        vec![
            s("main", Value::Null, "buildbot", "manager"),
            s("dev", Value::Null, "buildbot", "manager"),
            s("dev", json!("buildbot"), "shadow", "manager"),
            s("dev", json!("shadow"), "taskgraph", "root"),
            s("main", json!("buildbot"), "shadow", "manager"),
        ]
    );

    let list = env
        .call(Who::Client("manager"), "ci", "GET", "repositories", None)
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["repositories"][0]["project"], "proj");
    assert_eq!(
        env.call(
            Who::Client("nobody"),
            "ci",
            "GET",
            "repositories/proj",
            None
        )
        .await
        .status,
        403
    );
    assert_eq!(
        env.ci("GET", "repositories/proj/pushes", None).await,
        json!({"pushes": []})
    );
    env.stop().await;
}
