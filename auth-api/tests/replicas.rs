//! Two queue processes, each serving the auth service, on one PostgreSQL
//! database: what one changes, the other enforces shortly after.

mod common;

use bbb_testdb::{Backend, PgDatabase, wait_for};
use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_on_one_process_take_effect_on_the_other() {
    let db = PgDatabase::create("bbbauth_replicas").await.unwrap();
    let a = server(Backend::Postgres, Some(db.url().to_owned())).await;
    let b = server(Backend::Postgres, Some(db.url().to_owned())).await;
    let root_a = root(&a);
    let root_b = root(&b);

    // Created on A: accepted on B.
    let created = root_a
        .create_client("replicated", &["auth:current-scopes"])
        .await
        .ok();
    let on_b = Caller::of(&b.root_url, &created);
    let started = Instant::now();
    wait_for("B to accept the client created on A", || async {
        (on_b.current_scopes().await.status == 200).then_some(())
    })
    .await;
    eprintln!(
        "client created on A accepted on B after {:?}",
        started.elapsed()
    );

    // Disabled on A: refused on B.
    root_a.post_empty("/clients/replicated/disable").await.ok();
    let started = Instant::now();
    let m = wait_for("B to refuse the client disabled on A", || async {
        let answer = on_b.current_scopes().await;
        (answer.status == 401).then(|| answer.message().to_string())
    })
    .await;
    eprintln!(
        "client disabled on A refused on B after {:?}",
        started.elapsed()
    );
    assert!(m.contains("is disabled"), "{m}");

    // A role created on B, granted by an update on A, holds on B.
    root_b.post_empty("/clients/replicated/enable").await.ok();
    root_b
        .create_role("replicated-role", &["granted:1"])
        .await
        .ok();
    root_a
        .update_client(
            "replicated",
            &["auth:current-scopes", "assume:replicated-role"],
        )
        .await
        .ok();
    wait_for("B to grant the role's scopes", || async {
        let answer = on_b.current_scopes().await;
        (answer.status == 200 && strings(&answer.body["scopes"]).contains(&"granted:1".into()))
            .then_some(())
    })
    .await;
    // ... and B's expandScopes agrees with A's.
    let want = json!(["assume:replicated-role", "granted:1"]);
    wait_for("A to expand the role created on B", || async {
        let got = root_a
            .send(
                Method::POST,
                "/scopes/expand",
                &json!({"scopes": ["assume:replicated-role"]}),
            )
            .await
            .ok();
        (got["scopes"] == want).then_some(())
    })
    .await;

    // A new access token from A: B refuses the old one, accepts the new.
    let reset = root_a.post_empty("/clients/replicated/reset").await.ok();
    wait_for("B to refuse the old token", || async {
        (on_b.current_scopes().await.status == 401).then_some(())
    })
    .await;
    let renewed = Caller::of(&b.root_url, &reset);
    assert_eq!(renewed.current_scopes().await.status, 200);

    // Deleted on B: unknown on A.
    let deleted = root_b.delete("/clients/replicated").await;
    assert_eq!(deleted.status, 204);
    let on_a = Caller::of(&a.root_url, &reset);
    wait_for("A to forget the client deleted on B", || async {
        let answer = on_a.current_scopes().await;
        (answer.status == 401 && answer.message().contains("not found")).then_some(())
    })
    .await;

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_role_changes_on_two_processes_never_make_a_cycle() {
    let db = PgDatabase::create("bbbauth_rolerace").await.unwrap();
    let a = server(Backend::Postgres, Some(db.url().to_owned())).await;
    let b = server(Backend::Postgres, Some(db.url().to_owned())).await;
    // Each alone is fine; together they are a cycle. Many rounds, each
    // pair sent at once to the two processes: at most one of each pair
    // is created, never both.
    let (root_a, root_b) = (root(&a), root(&b));
    for round in 0..10 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let (assume_x, assume_y) = (format!("assume:{x}"), format!("assume:{y}"));
        let (grants_y, grants_x) = ([assume_y.as_str()], [assume_x.as_str()]);
        let (ra, rb) = tokio::join!(
            root_a.create_role(&x, &grants_y),
            root_b.create_role(&y, &grants_x),
        );
        let ok = [ra.status, rb.status].iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 1, "round {round}: {ra:?} {rb:?}");
        let refused = if ra.status == 200 { rb } else { ra };
        let m = refused.err(400, "InputError");
        assert!(m.contains("dependency cycles"), "{m}");
    }
    a.stop().await;
    b.stop().await;
}
