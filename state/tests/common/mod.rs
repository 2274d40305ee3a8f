//! Test databases: a fresh SQLite file or a fresh PostgreSQL database per test.

use bbb_state::{NewSlot, StateDb};

/// A migrated database for one test; the SQLite file's directory goes on drop.
pub struct TestDb {
    /// The database.
    pub db: StateDb,
    /// Its URL (to open a second pool on it).
    pub url: String,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PostgreSQL server: `BBB_TEST_PG_URL`, default the local server.
pub fn test_pg_url() -> String {
    std::env::var("BBB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh SQLite file, migrated.
pub async fn sqlite() -> TestDb {
    let dir = std::env::temp_dir().join(format!("bbb-state-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/state.sqlite", dir.display());
    let db = StateDb::connect(&url, 1).await.expect("open sqlite");
    db.migrate().await.expect("migrate sqlite");
    TestDb {
        db,
        url,
        _dir: Some(TempDir(dir)),
    }
}

/// A fresh PostgreSQL database, migrated.
pub async fn postgres() -> TestDb {
    let url = bbb_sqlstore::fresh_pg_database("bbbstate")
        .await
        .expect("create a test database on the PostgreSQL test server");
    let db = StateDb::connect(&url, 16).await.expect("open postgres");
    db.migrate().await.expect("migrate postgres");
    TestDb {
        db,
        url,
        _dir: None,
    }
}

/// Drop a database made by [`postgres`] (closing its remaining connections).
pub async fn drop_pg_database(url: &str) {
    use sqlx::Connection;
    let name = url::Url::parse(url)
        .expect("database URL")
        .path()
        .trim_start_matches('/')
        .to_string();
    let mut conn = sqlx::postgres::PgConnection::connect(&test_pg_url())
        .await
        .expect("connect to the PostgreSQL test server");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop test database");
    conn.close().await.expect("close admin connection");
}

/// A slot for (task, run) on master `m1`, deadline far ahead, inserted at `now`.
pub fn slot<'a>(task_id: &'a str, run_id: i64, now: i64) -> NewSlot<'a> {
    NewSlot {
        task_id,
        run_id,
        master: "m1",
        deadline: now + 86_400_000,
        instance: "bridge-a",
        now,
        inject_lease_ms: 60_000,
    }
}

/// Run each named `async fn(TestDb)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::common::sqlite().await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    let t = $crate::common::postgres().await;
                    let url = t.url.clone();
                    super::$name(t).await;
                    // Only after success: a failed test leaves its database to inspect.
                    $crate::common::drop_pg_database(&url).await;
                }
            }
        )*
    };
}
