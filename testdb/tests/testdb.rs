//! Test databases go away with their handle, whether the test passed or
//! panicked; the both-backends macro runs a body on each engine.

use bbb_testdb::{Backend, PgDatabase, TempDir, on_both_backends, test_pg_url};
use futures::FutureExt;
use sqlx::Connection;
use std::panic::AssertUnwindSafe;

/// How many databases named `name` the test server has (0 or 1).
async fn databases_named(name: &str) -> i64 {
    let mut conn = sqlx::postgres::PgConnection::connect(&test_pg_url())
        .await
        .expect("connect to the PostgreSQL test server");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("count databases");
    conn.close().await.expect("close");
    n
}

#[tokio::test]
async fn a_database_is_dropped_with_its_handle() {
    let db = PgDatabase::create("bbb_testdb").await.unwrap();
    let name = db.name().to_owned();
    assert!(name.starts_with("bbb_testdb_"), "{name}");
    assert!(db.url().ends_with(&format!("/{name}")), "{}", db.url());
    assert_eq!(databases_named(&name).await, 1);
    // A connection left open does not keep it alive.
    let mut open = sqlx::postgres::PgConnection::connect(db.url())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER)")
        .execute(&mut open)
        .await
        .unwrap();
    drop(db);
    assert_eq!(databases_named(&name).await, 0, "{name} dropped");
    drop(open);
}

#[tokio::test]
async fn a_database_is_dropped_when_its_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = AssertUnwindSafe(async move {
        let db = PgDatabase::create("bbb_testdb_panic").await.unwrap();
        tx.send(db.name().to_owned()).unwrap();
        assert_eq!(databases_named(db.name()).await, 1);
        panic!("the test fails while its database is in use");
    })
    .catch_unwind()
    .await;
    assert!(failed.is_err(), "the body panicked");
    let name = rx.recv().unwrap();
    assert_eq!(databases_named(&name).await, 0, "{name} dropped");
}

#[test]
fn a_temp_dir_is_removed_on_drop() {
    let dir = TempDir::new("bbb-testdb");
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let path = dir.path().to_owned();
    assert!(path.is_dir());
    drop(dir);
    assert!(!path.exists());
}

/// The fixture of the macro test: a database URL on `backend`, gone afterwards.
async fn with_database(backend: Backend, test: impl AsyncFnOnce(String)) {
    match backend {
        Backend::Sqlite => {
            let dir = TempDir::new("bbb-testdb-macro");
            test(format!("sqlite://{}/t.sqlite", dir.path().display())).await;
        }
        Backend::Postgres => {
            let db = PgDatabase::create("bbb_testdb_macro").await.unwrap();
            test(db.url().to_owned()).await;
        }
    }
}

/// Runs on SQLite and on PostgreSQL: each gets a database it can write.
async fn a_body_gets_a_database_of_each_kind(url: String) {
    let (pool, backend) = bbb_sqlstore::connect(&url, 2).await.unwrap().unwrap();
    assert_eq!(Some(backend), Backend::of_url(&url));
    sqlx::query("CREATE TABLE t (v TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (v) VALUES ($1)")
        .bind("x")
        .execute(&pool)
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    pool.close().await;
}

on_both_backends!(crate::with_database; a_body_gets_a_database_of_each_kind);
