//! The poller on a 0.8 scheduler database that is not there yet: each poll
//! fails, is retried and shows in `/sources` (the service keeps serving);
//! once the tables exist its builds are read, the bridge's passed over, and
//! the error cleared. On SQLite and PostgreSQL.

use std::sync::Arc;

use bbb_buildbot::{LegacyMaster, SchedulerDb, SchedulerDbConfig};
use bbb_migration::{LegacyMasters, MigrationConfig, PollSettings};
use bbb_queue::testing::{TestOptions, TestQueue, wait_for};
use bbb_testdb::{Backend, on_both_backends};
use mysql_async::prelude::Queryable;
use serde_json::Value;

on_both_backends!(
    crate::on;
    a_failing_master_is_retried_and_shown_until_it_answers,
);

async fn on(backend: Backend, test: impl AsyncFnOnce(Backend)) {
    test(backend).await;
}

async fn sources(root_url: &str) -> Value {
    let url = format!("{root_url}/api/migration/v1/sources");
    reqwest::get(&url)
        .await
        .expect("sources")
        .json()
        .await
        .expect("a body")
}

async fn a_failing_master_is_retried_and_shown_until_it_answers(backend: Backend) {
    let db = bbb_buildbot::testing::fresh_empty_database("mig_poller")
        .await
        .expect("a MariaDB database");
    let mut cfg = SchedulerDbConfig::new(db.url.as_str());
    cfg.poll = None;
    let master: Arc<dyn LegacyMaster> = Arc::new(SchedulerDb::new(cfg).expect("adapter"));
    let masters = LegacyMasters::default();
    masters.add("bb08", master);
    let q = TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            ..TestOptions::default()
        },
        vec![bbb_migration::mount_with_masters(
            MigrationConfig {
                poll: Some(PollSettings {
                    interval_ms: 50,
                    max_backoff_ms: 200,
                    first_lookback_s: 3600,
                }),
                ..MigrationConfig::default()
            },
            masters,
        )],
    )
    .await
    .expect("the record");

    // No tables: every poll fails, is recorded and retried.
    let failing = wait_for("failed polls shown", || async {
        let s = sources(&q.root_url).await;
        let row = s["sources"][0].clone();
        (row["failures"].as_i64() >= Some(3)).then_some(row)
    })
    .await;
    assert_eq!(failing["master"], "bb08");
    assert!(
        failing["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("builds")),
        "{failing}"
    );
    assert_eq!(failing["lastSuccess"], Value::Null);
    assert_eq!(failing["ingested"], 0);

    // The master's database comes up with a build of its own scheduler
    // (FAILURE) and one of a request the bridge injected.
    let now = q.clock.now_ms() / 1000;
    let mut conn = db.conn().await.expect("connection");
    bbb_buildbot::schema::apply(&mut conn)
        .await
        .expect("schema");
    for (i, (reason, idstring)) in [
        ("scheduler", "NULL"),
        ("Created by BBB for task abc", "'taskId:abc'"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = i + 1;
        for sql in [
            format!(
                "INSERT INTO sourcestamps (id, branch, revision) VALUES ({id}, 'integration/mozilla-inbound', 'rev{id}')"
            ),
            format!(
                "INSERT INTO buildsets (id, external_idstring, reason, sourcestampid, submitted_at, complete) \
                 VALUES ({id}, {idstring}, '{reason}', {id}, {now}, 1)"
            ),
            format!(
                "INSERT INTO buildrequests (id, buildsetid, buildername, claimed_at, complete, results, submitted_at, complete_at) \
                 VALUES ({id}, {id}, 'linux64-build', {now}, 1, 2, {now}, {now})"
            ),
            format!(
                "INSERT INTO builds (id, number, brid, start_time, finish_time) VALUES ({id}, {i}, {id}, {}, {now})",
                now - 60
            ),
        ] {
            conn.query_drop(sql).await.expect("insert");
        }
    }
    drop(conn);

    wait_for("the master read", || async {
        let s = sources(&q.root_url).await;
        let row = &s["sources"][0];
        (row["ingested"] == 1 && row["skippedBridged"] == 1).then_some(())
    })
    .await;
    let row = wait_for("the error cleared", || async {
        let s = sources(&q.root_url).await;
        let now = s["sources"][0].clone();
        (now["failures"] == 0 && now["lastError"].is_null()).then_some(now)
    })
    .await;
    assert!(row["lastSuccess"].as_i64().is_some());
    assert_eq!(row["cursor"]["buildId"], 2, "{row}");
    let url = format!(
        "{}/api/migration/v1/branches/mozilla-inbound/jobs",
        q.root_url
    );
    let jobs: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "{jobs}");
    let last = &jobs["jobs"][0]["last"]["buildbot"];
    assert_eq!(
        (&last["revision"], &last["result"], &last["sourceId"]),
        (
            &Value::from("rev1"),
            &Value::from("failure"),
            &Value::from("bb08/1")
        )
    );
    assert_eq!(last["finished"], now * 1000);
    assert_eq!(last["started"], (now - 60) * 1000);
    q.stop().await;
    db.drop_database().await.expect("drop");
}
