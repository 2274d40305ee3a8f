//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod error;

pub use error::ErrorClass;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::time::Duration;

/// Which engine a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file: one connection, writes serialised by SQLite itself.
    Sqlite,
    /// PostgreSQL: row locks, `SKIP LOCKED`, `LISTEN/NOTIFY`; safe for several processes.
    Postgres,
}

/// Applies one of the migration sets that share a database: `sqlite` or
/// `postgres` as `backend` says. The queue and each service served beside it
/// keep their tables in one database, each set in a version range of its own
/// (the queue below 1000, the index from 1001, the auth service from 2001, the
/// hooks from 3001), so every set ignores the versions it does not know.
pub async fn migrate_shared(
    pool: &AnyPool,
    backend: Backend,
    sqlite: sqlx::migrate::Migrator,
    postgres: sqlx::migrate::Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    };
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

impl Backend {
    /// The engine a URL names, if supported (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// `FOR SHARE` on PostgreSQL; nothing on SQLite.
    pub fn for_share(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        }
    }

    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// `$from, $from+1, ...` placeholders for an `IN (...)` list of `n` items.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Open a pool on `url` (`sqlite://PATH`, created if missing, or `postgres://...`).
/// `max_connections` applies to PostgreSQL; SQLite always gets one connection.
/// Returns `None` for an unsupported URL.
pub async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<Option<(AnyPool, Backend)>, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let Some(backend) = Backend::of_url(url) else {
        return Ok(None);
    };
    let pool = match backend {
        Backend::Sqlite => {
            let mut u = url.to_string();
            if !u.contains("mode=") {
                u.push_str(if u.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        Ok(())
                    })
                })
                .connect(&u)
                .await?
        }
        Backend::Postgres => {
            AnyPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?
        }
    };
    Ok(Some((pool, backend)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_engines() {
        assert_eq!(Backend::of_url("sqlite://x"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://x"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://x"), None);
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(Backend::Sqlite.skip_locked(), "");
    }

    #[tokio::test]
    async fn sqlite_and_postgres_accept_the_same_placeholders() {
        let dir = bbb_testdb::TempDir::new("bbb-sqlstore");
        let pg = bbb_testdb::PgDatabase::create("bbb_sqlstore")
            .await
            .unwrap();
        for url in [
            format!("sqlite://{}/t.sqlite", dir.path().display()),
            pg.url().to_owned(),
        ] {
            let (pool, _) = connect(&url, 2).await.unwrap().unwrap();
            let row: (i64, String) = sqlx::query_as("SELECT $1 + 1, $2")
                .bind(41i64)
                .bind("x".to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(row, (42, "x".to_string()));
            pool.close().await;
        }
    }
}
