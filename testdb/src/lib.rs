//! See the crate README.
#![doc = include_str!("../README.md")]

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub use bbb_sqlstore::Backend;

/// The variable that keeps test databases instead of dropping them.
pub const KEEP_ENV: &str = "BBB_KEEP_TEST_DB";

/// The PostgreSQL server tests use: `BBB_TEST_PG_URL`, default the local server.
pub fn test_pg_url() -> String {
    std::env::var("BBB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether `BBB_KEEP_TEST_DB` asks to keep test databases (set, and not
/// empty, `0` or `false`).
fn keep_requested() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A fresh PostgreSQL database for one test (or one benchmark run), dropped
/// when this handle is dropped, pass or fail, unless `BBB_KEEP_TEST_DB` is set.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
    server: String,
    keep: bool,
}

impl PgDatabase {
    /// Creates an empty database named `<prefix>_<random>` on the test server
    /// ([`test_pg_url`]).
    pub async fn create(prefix: &str) -> Result<PgDatabase, sqlx::Error> {
        Self::create_on(&test_pg_url(), prefix).await
    }

    /// Creates an empty database named `<prefix>_<random>` on the server
    /// `server` (a `postgres://` URL whose credentials may create databases).
    /// The prefix is lower-cased, and characters other than ASCII letters,
    /// digits and `_` become `_`.
    pub async fn create_on(server: &str, prefix: &str) -> Result<PgDatabase, sqlx::Error> {
        let clean = name_part(prefix, 30);
        let name = format!("{clean}_{}", uuid::Uuid::new_v4().simple());
        let mut url =
            url::Url::parse(server).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        url.set_path(&format!("/{name}"));
        let mut conn = PgConnection::connect(server).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(PgDatabase {
            name,
            url: url.to_string(),
            server: server.to_owned(),
            keep: keep_requested(),
        })
    }

    /// The database's URL (the server's, with the database's name as path).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Drops the database `name` on `server`, ending its connections.
async fn drop_database(server: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("{KEEP_ENV} is set: test database {} kept", self.name);
            return;
        }
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside an async runtime or outside one: a thread with a
        // runtime of its own works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(drop_database(&server, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!("could not drop test database {}: panicked", self.name),
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Creates `<temp dir>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long [`wait_for`] polls before it fails the test.
pub const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Poll `f` every 50 ms until it returns `Some`, and return that; fail the
/// test, naming `what`, when [`WAIT_LIMIT`] passes first. For what another
/// task or process does in its own time, so a test waits for the outcome,
/// never for a fixed time.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs each named test body once on SQLite and once on PostgreSQL:
/// `on_both_backends!(FIXTURE; name, other_name);` makes the tests
/// `name::sqlite` and `name::postgres` (multi-threaded Tokio runtimes), each
/// calling `FIXTURE(Backend::Sqlite, name)` or `FIXTURE(Backend::Postgres, name)`.
///
/// `FIXTURE` is the path, valid from inside a module declared beside the
/// macro call (an absolute path, or one starting with `crate::`), of an
/// `async fn(Backend, impl AsyncFnOnce(F))` that builds what the bodies take
/// (`F`) on that backend, runs the body and tears it down; its database is
/// a [`PgDatabase`] or a file in a [`TempDir`], so it goes away pass or fail.
#[macro_export]
macro_rules! on_both_backends {
    ($fixture:path; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $fixture($crate::Backend::Sqlite, super::$name).await
            }
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $fixture($crate::Backend::Postgres, super::$name).await
            }
        }
    )*};
}

/// `prefix` made safe inside a database name on any server: lower-cased,
/// characters other than ASCII letters, digits and `_` turned into `_`, and
/// cut to `max` characters.
pub fn name_part(prefix: &str, max: usize) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kept_database_outlives_its_handle() {
        let mut db = PgDatabase::create("bbb_testdb_kept").await.unwrap();
        db.keep = true;
        let (server, name) = (db.server.clone(), db.name.clone());
        drop(db);
        let mut conn = PgConnection::connect(&server).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1, "{name} kept");
        drop_database(&server, &name).await.unwrap();
    }
}
