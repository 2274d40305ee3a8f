//! Test databases: a fresh SQLite file or a fresh PostgreSQL database per test.

use bbb_state::{NewSlot, StateDb};
use bbb_testdb::{Backend, PgDatabase, TempDir};

/// A migrated database for one test; the SQLite file's directory, or the
/// PostgreSQL database, goes on drop.
pub struct TestDb {
    /// The database.
    pub db: StateDb,
    /// Its URL (to open a second pool on it).
    pub url: String,
    _pg: Option<PgDatabase>,
    _dir: Option<TempDir>,
}

/// A fresh SQLite file, migrated.
pub async fn sqlite() -> TestDb {
    let dir = TempDir::new("bbb-state-test");
    let url = format!("sqlite://{}/state.sqlite", dir.path().display());
    let db = StateDb::connect(&url, 1).await.expect("open sqlite");
    db.migrate().await.expect("migrate sqlite");
    TestDb {
        db,
        url,
        _pg: None,
        _dir: Some(dir),
    }
}

/// A fresh PostgreSQL database, migrated.
pub async fn postgres() -> TestDb {
    let pg = PgDatabase::create("bbbstate")
        .await
        .expect("create a test database on the PostgreSQL test server");
    let url = pg.url().to_owned();
    let db = StateDb::connect(&url, 16).await.expect("open postgres");
    db.migrate().await.expect("migrate postgres");
    TestDb {
        db,
        url,
        _pg: Some(pg),
        _dir: None,
    }
}

/// The fixture of [`bbb_testdb::on_both_backends!`]: runs `test` on a fresh
/// database of `backend`.
pub async fn on_backend(backend: Backend, test: impl AsyncFnOnce(TestDb)) {
    match backend {
        Backend::Sqlite => test(sqlite().await).await,
        Backend::Postgres => test(postgres().await).await,
    }
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
