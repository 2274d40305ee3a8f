//! Helpers for tests that need a real MySQL/MariaDB scheduler DB, or a real
//! Buildbot 4.3 master.
//!
//! [`fresh_database`] creates a database with a random name, creates the 0.8
//! tables in it ([`crate::schema`]) and drops it when the returned value is
//! dropped, so tests run in parallel without seeing each other's rows. The
//! server comes from `BBB_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`; only its credentials, host and port
//! are used); [`fresh_database_on`] takes the server as an argument (the
//! benchmarks' `--mysql-url`). [`fresh_empty_database`] does the same
//! without the tables.
//!
//! [`BuildbotMaster::start`] runs a Buildbot 4.3 master and its workers for
//! one test (see its docs).

mod master;

pub use master::{BuildbotMaster, BuildbotMasterOptions, buildbot_venv};

use std::sync::atomic::{AtomicU64, Ordering};

use mysql_async::prelude::Queryable;

use bbb_secret::mask_url;

use crate::error::{LegacyError, Result};

/// The server tests use when `BBB_TEST_MYSQL_URL` is not set.
pub const DEFAULT_TEST_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A database created for one test; dropped on drop (or with
/// [`TestDatabase::drop_database`]).
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the database, with credentials.
    pub url: String,
    /// The database's name.
    pub name: String,
    server_url: String,
    dropped: bool,
}

fn server_url() -> String {
    std::env::var("BBB_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_TEST_MYSQL_URL.to_owned())
}

fn with_database(server: &str, name: &str) -> Result<String> {
    let mut url = url::Url::parse(server).map_err(|e| LegacyError::InvalidUrl {
        url: mask_url(server),
        reason: e.to_string(),
    })?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Creates a database named `bbb_<prefix>_<pid>_<seq>_<random>` with the
/// scheduler-DB tables.
pub async fn fresh_database(prefix: &str) -> Result<TestDatabase> {
    fresh_database_on(&server_url(), prefix).await
}

/// [`fresh_database`] on the server `server` (a `mysql://` URL; only its
/// credentials, host and port are used) instead of `BBB_TEST_MYSQL_URL`'s.
pub async fn fresh_database_on(server: &str, prefix: &str) -> Result<TestDatabase> {
    let database = fresh_empty_database_on(server, prefix).await?;
    let mut conn = mysql_async::Conn::from_url(&database.url).await?;
    crate::schema::apply(&mut conn).await?;
    conn.disconnect().await?;
    Ok(database)
}

/// Creates an empty database named `bbb_<prefix>_<pid>_<seq>_<random>`
/// (for a Buildbot 4 master, which creates its own tables).
pub async fn fresh_empty_database(prefix: &str) -> Result<TestDatabase> {
    fresh_empty_database_on(&server_url(), prefix).await
}

async fn fresh_empty_database_on(server: &str, prefix: &str) -> Result<TestDatabase> {
    let clean = bbb_testdb::name_part(prefix, 24);
    let name = format!(
        "bbb_{clean}_{}_{}_{:08x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let mut conn = mysql_async::Conn::from_url(server).await?;
    conn.query_drop(format!("CREATE DATABASE `{name}`")).await?;
    conn.disconnect().await?;
    let url = with_database(server, &name)?;
    Ok(TestDatabase {
        url,
        name,
        server_url: server.to_owned(),
        dropped: false,
    })
}

async fn drop_db(server: &str, name: &str) -> Result<()> {
    let mut conn = mysql_async::Conn::from_url(server).await?;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await?;
    conn.disconnect().await?;
    Ok(())
}

impl TestDatabase {
    /// A connection to the database.
    pub async fn conn(&self) -> Result<mysql_async::Conn> {
        Ok(mysql_async::Conn::from_url(&self.url).await?)
    }

    /// Drops the database now, reporting failures.
    pub async fn drop_database(mut self) -> Result<()> {
        self.dropped = true;
        drop_db(&self.server_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let server = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside a runtime or not: use a thread with its own.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime
                && let Err(error) = runtime.block_on(drop_db(&server, &name))
            {
                tracing::warn!(database = %name, %error, "could not drop test database");
            }
        });
        let _ = handle.join();
    }
}
