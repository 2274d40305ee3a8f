//! The scheduler-DB adapter against a real MariaDB: injection, look-up,
//! state, cancellation and builder validation.

mod common;

use std::time::Duration;

use bbb_buildbot::testing::fresh_database;
use bbb_buildbot::{
    BuildRequestId, BuildResult, BuilderSource, CancelOutcome, LegacyError, LegacyMaster,
    RequestState, SchedulerDb, SchedulerDbConfig,
};
use mysql_async::prelude::Queryable;

/// An adapter (no polling) that reads its builder list from `list_url`.
fn with_builders_from(db_url: &str, list_url: String) -> SchedulerDb {
    let mut config = SchedulerDbConfig::new(db_url);
    config.poll = None;
    config.builders = BuilderSource::Url {
        url: list_url.into(),
        refresh: Duration::from_secs(300),
    };
    SchedulerDb::new(config).unwrap()
}

fn adapter(url: &str) -> SchedulerDb {
    let mut config = SchedulerDbConfig::new(url);
    config.poll = None;
    SchedulerDb::new(config).unwrap()
}

#[tokio::test]
async fn submit_writes_the_rows_mozilla_masters_expect() {
    common::init_tracing();
    let db = fresh_database("submit").await.unwrap();
    let master = adapter(&db.url);
    let mut spec = common::spec(
        "fQ3nBhLXRgKMLkL0nHh0Pw",
        "Linux x86-64 mozilla-inbound build",
    );
    spec.priority = bbb_buildbot::priority_for_task(bbb_tcvalues::Priority::High);
    spec.properties
        .insert("nested".to_owned(), serde_json::json!({"a": [1, 2]}));
    let brid = master.submit(&spec).await.unwrap();

    let mut conn = db.conn().await.unwrap();
    let request: (u64, String, i64, i64, i64, Option<i64>, i64) = conn
        .exec_first(
            "SELECT buildsetid, buildername, priority, claimed_at, complete, results, submitted_at \
             FROM buildrequests WHERE id = ?",
            (brid.0,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.1, "Linux x86-64 mozilla-inbound build");
    assert_eq!(request.2, 1, "high task priority gives priority 1");
    assert_eq!((request.3, request.4, request.5), (0, 0, None));
    assert_eq!(request.6, 1_700_000_000);

    let buildset: (String, String, u64, i64, i64) = conn
        .exec_first(
            "SELECT external_idstring, reason, sourcestampid, submitted_at, complete FROM buildsets WHERE id = ?",
            (request.0,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buildset.0, "taskId:fQ3nBhLXRgKMLkL0nHh0Pw");
    assert_eq!(buildset.1, "Created by BBB for task fQ3nBhLXRgKMLkL0nHh0Pw");
    assert_eq!((buildset.3, buildset.4), (1_700_000_000, 0));

    let sourcestamp: (Option<String>, Option<String>, Option<i64>, String, String) = conn
        .exec_first(
            "SELECT branch, revision, patchid, repository, project FROM sourcestamps WHERE id = ?",
            (buildset.2,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sourcestamp.0.as_deref(),
        Some("integration/mozilla-inbound")
    );
    assert_eq!(sourcestamp.1.as_deref(), Some("abcdef0123456789"));
    assert_eq!(sourcestamp.2, None);
    assert_eq!(sourcestamp.4, "mozilla-inbound");

    let properties: Vec<(String, String)> = conn
        .exec(
            "SELECT property_name, property_value FROM buildset_properties WHERE buildsetid = ? ORDER BY property_name",
            (request.0,),
        )
        .await
        .unwrap();
    let decoded: Vec<(String, serde_json::Value)> = properties
        .into_iter()
        .map(|(name, value)| (name, serde_json::from_str(&value).unwrap()))
        .collect();
    assert_eq!(
        decoded,
        vec![
            (
                "nested".to_owned(),
                serde_json::json!([{"a": [1, 2]}, "bbb"])
            ),
            ("product".to_owned(), serde_json::json!(["firefox", "bbb"])),
            (
                "taskId".to_owned(),
                serde_json::json!(["fQ3nBhLXRgKMLkL0nHh0Pw", "bbb"])
            ),
        ]
    );

    // find_requests_for_task finds it by external_idstring.
    let found = master
        .find_requests_for_task("fQ3nBhLXRgKMLkL0nHh0Pw")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].build_request_id, brid);
    assert_eq!(found[0].submitted_at, 1_700_000_000);
    assert!(!found[0].complete);
    assert!(
        master
            .find_requests_for_task("other")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        master.request_state(brid).await.unwrap(),
        RequestState::Pending { builds: vec![] }
    );
    assert_eq!(
        master
            .request_state(BuildRequestId(brid.0 + 100))
            .await
            .unwrap(),
        RequestState::Unknown
    );
    drop(conn);
    master.close().await.unwrap();
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_failed_injection_leaves_no_rows() {
    let db = fresh_database("atomic").await.unwrap();
    let master = adapter(&db.url);
    // The builder name is too long for buildrequests.buildername: the last
    // insert fails after the sourcestamp, buildset and properties were
    // written, and the transaction takes them all back.
    let spec = common::spec("T-atomic", &"b".repeat(300));
    let error = master.submit(&spec).await.unwrap_err();
    assert!(matches!(error, LegacyError::Db(_)), "{error}");
    let mut conn = db.conn().await.unwrap();
    for table in [
        "sourcestamps",
        "buildsets",
        "buildset_properties",
        "buildrequests",
    ] {
        let count: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap();
        assert_eq!(count, Some(0), "{table} must be empty");
    }
    // A property too long for its varchar(1024) column is refused up front.
    let mut spec = common::spec("T-long", "builder");
    spec.properties
        .insert("big".to_owned(), serde_json::json!("x".repeat(1100)));
    assert!(matches!(
        master.submit(&spec).await,
        Err(LegacyError::Invalid(_))
    ));
    drop(conn);
    master.close().await.unwrap();
}

#[tokio::test]
async fn cancel_cancels_pending_requests_and_refuses_claimed_ones() {
    let db = fresh_database("cancel").await.unwrap();
    let master = adapter(&db.url);
    let pending = master
        .submit(&common::spec("T-pending", "b"))
        .await
        .unwrap();
    let claimed = master
        .submit(&common::spec("T-claimed", "b"))
        .await
        .unwrap();
    let mut conn = db.conn().await.unwrap();
    // Play the master: claim the second request and start its build.
    conn.exec_drop(
        "UPDATE buildrequests SET claimed_at = UNIX_TIMESTAMP(), claimed_by_name = 'm1', claimed_by_incarnation = 'i1' WHERE id = ?",
        (claimed.0,),
    )
    .await
    .unwrap();
    conn.exec_drop(
        "INSERT INTO builds (number, brid, start_time) VALUES (7, ?, UNIX_TIMESTAMP())",
        (claimed.0,),
    )
    .await
    .unwrap();

    assert_eq!(
        master.cancel_request(pending).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let row: (i64, i64, i64, Option<i64>) = conn
        .exec_first(
            "SELECT complete, results, claimed_at, complete_at FROM buildrequests WHERE id = ?",
            (pending.0,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.0, row.1, row.2), (1, 6, 0));
    assert!(row.3.is_some());
    let buildset_of = "SELECT bs.complete FROM buildsets bs \
        JOIN buildrequests br ON br.buildsetid = bs.id WHERE br.id = ?";
    let buildset_complete: Option<i64> = conn.exec_first(buildset_of, (pending.0,)).await.unwrap();
    assert_eq!(buildset_complete, Some(1));
    assert!(matches!(
        master.request_state(pending).await.unwrap(),
        RequestState::Cancelled {
            results: BuildResult::Cancelled,
            ..
        }
    ));
    assert_eq!(
        master.cancel_request(pending).await.unwrap(),
        CancelOutcome::AlreadyComplete
    );

    assert_eq!(
        master.cancel_request(claimed).await.unwrap(),
        CancelOutcome::AlreadyClaimed
    );
    let complete_of = "SELECT complete FROM buildrequests WHERE id = ?";
    let complete: Option<i64> = conn.exec_first(complete_of, (claimed.0,)).await.unwrap();
    assert_eq!(complete, Some(0), "a claimed request is never cancelled");
    match master.request_state(claimed).await.unwrap() {
        RequestState::Running { master, builds, .. } => {
            assert_eq!(master.as_deref(), Some("m1"));
            assert_eq!(builds.len(), 1);
            assert_eq!(builds[0].number, 7);
        }
        other => panic!("expected running, got {other:?}"),
    }
    assert_eq!(
        master.cancel_request(BuildRequestId(9999)).await.unwrap(),
        CancelOutcome::NotFound
    );
    drop(conn);
    master.close().await.unwrap();
}

#[tokio::test]
async fn builders_are_validated_against_a_list() {
    let db = fresh_database("builders").await.unwrap();
    let mut config = SchedulerDbConfig::new(&db.url);
    config.poll = None;
    config.builders = BuilderSource::List(vec!["known".to_owned()]);
    let master = SchedulerDb::new(config).unwrap();
    assert_eq!(
        master.builders().await.unwrap(),
        Some(vec!["known".to_owned()])
    );
    assert!(master.submit(&common::spec("T1", "known")).await.is_ok());
    common::assert_unknown_builder_refused(&master, "T2", "unknown").await;

    // With no list, every builder is accepted.
    let open = adapter(&db.url);
    assert_eq!(open.builders().await.unwrap(), None);
    assert!(open.accepts_builder("anything").await.unwrap());
}

#[tokio::test]
async fn builders_are_validated_against_a_url() {
    let db = fresh_database("builders_url").await.unwrap();
    let app = axum::Router::new().route(
        "/allthethings.json",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({
                "builders": {"Linux build": {"slavepool": "a"}, "Windows build": {}},
                "slavepools": {}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let master = with_builders_from(&db.url, format!("http://{address}/allthethings.json"));
    let mut builders = master.builders().await.unwrap().unwrap();
    builders.sort();
    assert_eq!(builders, vec!["Linux build", "Windows build"]);
    assert!(
        master
            .submit(&common::spec("T1", "Linux build"))
            .await
            .is_ok()
    );
    assert!(matches!(
        master.submit(&common::spec("T2", "Mac build")).await,
        Err(LegacyError::UnknownBuilder(_))
    ));

    // The cached list survives the server going away.
    server.abort();
    let _ = server.await;
    assert!(master.accepts_builder("Windows build").await.unwrap());

    // A URL that serves no list is an error, not "accept everything".
    let broken = with_builders_from(&db.url, format!("http://{address}/missing.json"));
    assert!(matches!(
        broken.builders().await,
        Err(LegacyError::Http { .. })
    ));
}
